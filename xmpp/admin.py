from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import PushRegistration, RosterItem, SharedGroup, User

admin.site.register(User, UserAdmin)


@admin.register(SharedGroup)
class SharedGroupAdmin(admin.ModelAdmin):
    """Shared roster groups: members see each other without subscription requests."""

    list_display = ["name"]
    filter_horizontal = ["members"]


@admin.register(RosterItem)
class RosterItemAdmin(admin.ModelAdmin):
    list_display = ["user", "jid", "name", "subscription", "pending_out", "pending_in"]
    list_filter = ["subscription"]
    search_fields = ["user__username", "jid", "name"]


@admin.register(PushRegistration)
class PushRegistrationAdmin(admin.ModelAdmin):
    """XEP-0357 app servers the accounts enabled; a change here reaches a
    running server at the account's next login (xmpp/push.py)."""

    list_display = ["user", "service", "node", "created"]
    search_fields = ["user__username", "service", "node"]
    readonly_fields = ["created"]
