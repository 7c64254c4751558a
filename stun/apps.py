"""STUN (RFC 8489) and TURN (RFC 8656), advertised through XEP-0215.

ready() registers, through xmpp.plugins, the XEP-0215 IQ handlers and the
listener starter that runxmpp calls on its loop (stun/server.py); the core
never names this app.
"""

from django.apps import AppConfig


class StunConfig(AppConfig):
    name = "stun"
    verbose_name = "STUN/TURN service"

    def ready(self) -> None:
        from xmpp.plugins import plugins

        from . import external_services  # noqa: F401 - registers the XEP-0215 handlers
        from .server import start_listeners

        plugins.listener(start_listeners)
