"""Rooms in Django admin: configuration, affiliations and history.

Django admin runs in the same process and event loop as the XMPP server
(runxmpp serves it through Daphne), so an edit or a destruction here
reaches a live room: after a save the room reloads its configuration and
affiliations (occupants stay); "Destroy" deletes the room and, if it is
live, removes its occupants as XEP-0045 §10.9 says (unavailable presence
with <destroy/>). When the admin runs in a process without the XMPP server
(`manage.py runserver`), only the database changes; a live room elsewhere
keeps its in-memory state until that server restarts.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction

from .models import Room, RoomAffiliation, RoomMessage
from .service import MucService


def _in_loop(method: str, *args) -> bool:
    """Run `MucService.current.<method>(*args)` in the server's event loop."""
    service = MucService.current
    loop = service.loop if service is not None else None
    if loop is None or loop.is_closed():
        return False
    loop.call_soon_threadsafe(getattr(service, method), *args)
    return True


class RoomAffiliationInline(admin.TabularInline):
    model = RoomAffiliation
    extra = 0
    fields = ["jid", "affiliation", "nick", "reason"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "title",
        "public",
        "members_only",
        "moderated",
        "whois",
        "max_occupants",
        "created",
    ]
    list_filter = ["public", "members_only", "moderated", "whois"]
    search_fields = ["name", "title", "description"]
    inlines = [RoomAffiliationInline]
    actions = ["destroy_rooms"]
    readonly_fields = ["created"]

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        name = form.instance.name
        transaction.on_commit(lambda: _in_loop("refresh_from_admin", name))

    def delete_model(self, request, obj) -> None:
        name = obj.name
        super().delete_model(request, obj)
        _in_loop("destroy_from_admin", name, "")

    def delete_queryset(self, request, queryset) -> None:
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            _in_loop("destroy_from_admin", name, "")

    @admin.action(description="Destroy the selected rooms (occupants are removed)")
    def destroy_rooms(self, request, queryset) -> None:
        names = list(queryset.values_list("name", flat=True))
        queryset.delete()
        live = False
        for name in names:
            live = _in_loop("destroy_from_admin", name, "") or live
        where = "" if live else " (no XMPP server in this process: database only)"
        self.message_user(request, f"Destroyed {len(names)} room(s){where}.", messages.SUCCESS)


@admin.register(RoomMessage)
class RoomMessageAdmin(admin.ModelAdmin):
    list_display = ["room", "nick", "sender", "sent"]
    list_filter = ["room"]
    search_fields = ["room__name", "nick", "sender", "stanza"]
    readonly_fields = ["room", "nick", "sender", "stanza", "sent"]

    def has_add_permission(self, request) -> bool:
        return False
