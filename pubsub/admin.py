"""Nodes, items, subscriptions and affiliations in the Django admin."""

from django.contrib import admin

from .models import Affiliation, Item, Node, Subscription


class AffiliationInline(admin.TabularInline):
    model = Affiliation
    extra = 0


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    extra = 0


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("service", "name", "kind", "created")
    list_filter = ("kind",)
    search_fields = ("service", "name")
    inlines = [AffiliationInline, SubscriptionInline]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("node", "item_id", "publisher", "published")
    search_fields = ("item_id", "publisher", "node__name", "node__service")
    list_select_related = ("node",)
