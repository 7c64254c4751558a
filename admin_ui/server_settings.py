"""The server settings an administrator may change at run time.

Each is a setting the core reads at call time through
xmpp.runtime_settings (its default comes from the environment, see
imserver/settings.py). An override is a ServerSetting row; `apply()` puts
the rows into runtime_settings and rebuilds the live server's Limits, so
the routing path keeps reading plain attributes and never the database.
runxmpp loads the rows once at start (admin_ui.apps); the console and the
API call `save()` in the same process, which applies at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from xmpp.runtime_settings import runtime_settings

from .models import ServerSetting


@dataclass(frozen=True)
class Editable:
    name: str
    label: str
    kind: type  # bool, int or str
    help: str = ""
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 2000

    def clean(self, value: Any) -> Any:
        """The value in this setting's type, or raise ValueError."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", ""):
                return value.lower() in ("true", "1", "on")
            raise ValueError("a boolean is required")
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError("an integer is required")
            try:
                number = int(value)
            except ValueError:
                raise ValueError("an integer is required") from None
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"at least {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"at most {self.maximum}")
            return number
        if not isinstance(value, str):
            raise ValueError("a string is required")
        if len(value) > self.max_length:
            raise ValueError(f"at most {self.max_length} characters")
        return value

    @property
    def default(self) -> Any:
        return getattr(settings, self.name, self.kind())


EDITABLE = {
    e.name: e
    for e in (
        Editable(
            "XMPP_REGISTRATION_ENABLED",
            "In-band registration open",
            bool,
            "Anyone who connects may create an account (XEP-0077).",
        ),
        Editable(
            "XMPP_STANZAS_PER_SECOND",
            "Stanzas per second per session",
            int,
            "A client over this rate is read more slowly (never disconnected); "
            "a burst of twice the rate passes at once.",
            minimum=1,
            maximum=1_000_000,
        ),
        Editable(
            "XMPP_C2S_BYTES_PER_SECOND",
            "Bytes per second per session",
            int,
            "A client sending more is read more slowly; 0 for no limit.",
            minimum=0,
            maximum=1_000_000_000,
        ),
        Editable(
            "XMPP_MAX_UNAUTHENTICATED_PER_IP",
            "Unauthenticated connections per IP address",
            int,
            "Connections from one address that have not logged in yet; a new one "
            "past this closes the oldest of them. Applies to new connections.",
            minimum=1,
            maximum=1_000_000,
        ),
        Editable(
            "XMPP_MAX_SESSIONS_PER_IP",
            "Logged-in sessions per IP address",
            int,
            "0 for no cap (many users may share one address). A login past the "
            "cap is refused with <policy-violation/>. Applies to new logins.",
            minimum=0,
            maximum=1_000_000,
        ),
        Editable(
            "XMPP_MOTD",
            "Message of the day",
            str,
            "Sent to every user at login; empty for none.",
        ),
    )
}


def current() -> dict[str, Any]:
    """Every editable setting's value in force."""
    return {name: runtime_settings.get(name, e.default) for name, e in EDITABLE.items()}


def load_overrides() -> dict[str, Any]:
    """The stored overrides (sync ORM); rows that no longer validate are ignored."""
    overrides = {}
    for row in ServerSetting.objects.filter(name__in=list(EDITABLE)):
        try:
            overrides[row.name] = EDITABLE[row.name].clean(row.value)
        except ValueError:
            continue
    return overrides


def apply(overrides: dict[str, Any]) -> None:
    """Make `overrides` the run-time settings of this process."""
    runtime_settings.update(overrides, replace=True)
    from xmpp.server import Limits, XmppServer

    server = XmppServer.current
    if server is not None:
        # A new frozen Limits: sessions read server.limits at call time.
        server.limits = Limits.from_settings()


def save(values: dict[str, Any], user=None) -> dict[str, tuple[Any, Any]]:
    """Store and apply `values` (already cleaned); a value equal to the
    environment's default removes the override. Returns {name: (old, new)}
    for what changed."""
    before = current()
    with transaction.atomic():
        for name, value in values.items():
            if value == EDITABLE[name].default:
                ServerSetting.objects.filter(name=name).delete()
            else:
                ServerSetting.objects.update_or_create(
                    name=name, defaults={"value": value, "updated_by": user}
                )
    apply(load_overrides())
    after = current()
    return {name: (before[name], after[name]) for name in values if before[name] != after[name]}
