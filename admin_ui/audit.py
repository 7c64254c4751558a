"""The audit log: every change made through the console or the API is recorded."""

from __future__ import annotations

from .models import AuditLogEntry


def client_address(request) -> str | None:
    address = request.META.get("REMOTE_ADDR") or None
    return address if address and address != "unknown" else None


def record(request, action: str, target: str = "", via: str = "console", **detail) -> None:
    """Record that request.user did `action` to `target` (sync ORM)."""
    user = request.user if request.user.is_authenticated else None
    AuditLogEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else "",
        action=action,
        target=target,
        detail=detail,
        address=client_address(request),
        via=via,
    )
