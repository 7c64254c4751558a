"""The XMPP core app: registers the server's own handlers with the router."""

from django.apps import AppConfig


class XmppConfig(AppConfig):
    name = "xmpp"
    verbose_name = "XMPP core"

    def ready(self) -> None:
        from . import features  # noqa: F401  (registers disco, ping, version, time)
        from . import presence, roster  # noqa: F401  (RFC 6121 rosters and presence)
