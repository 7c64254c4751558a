"""`python manage.py runxmpp`: every listener of the server in one event loop.

Daphne (HTTP now, WebSocket and BOSH later) runs on Twisted's asyncio
reactor, and the XMPP listeners are opened on that same asyncio loop, so
the whole server is one process and one loop. SIGINT/SIGTERM close every
stream with </stream:stream> (RFC 6120 §4.4) before the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import resource

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

log = logging.getLogger("imserver.runxmpp")


def raise_open_files_limit() -> int:
    """Each client is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1048576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


class Command(BaseCommand):
    help = "Run the XMPP server: client connections, HTTP admin, in one process."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=None, help="address to listen on (XMPP_BIND_ADDRESS)")
        parser.add_argument("--c2s-port", type=int, default=None, help="STARTTLS port, 0 = off")
        parser.add_argument(
            "--c2s-tls-port", type=int, default=None, help="direct TLS port, 0 = off"
        )
        parser.add_argument("--http-port", type=int, default=None, help="HTTP port, 0 = off")
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="do not apply database migrations before starting",
        )

    def handle(self, *args, **options) -> None:
        host = options["host"] or settings.XMPP_BIND_ADDRESS
        c2s_port = _pick(options["c2s_port"], settings.XMPP_C2S_PORT)
        c2s_tls_port = _pick(options["c2s_tls_port"], settings.XMPP_C2S_TLS_PORT)
        http_port = _pick(options["http_port"], settings.XMPP_HTTP_PORT)
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        files = raise_open_files_limit()
        if settings.XMPP_LOG_SQL:
            from django.db import connections

            from xmpp.query_log import install_query_logger

            connections.close_all()  # so the next queries open logged connections
            install_query_logger()

        # Importing daphne.server installs Twisted's asyncio reactor on a loop
        # of its own; that loop becomes the loop of the whole server.
        import daphne.server  # noqa: F401
        from twisted.internet import defer, reactor

        from xmpp.server import XmppServer

        loop = reactor._asyncioEventloop
        asyncio.set_event_loop(loop)
        xmpp_server = XmppServer.from_settings()
        XmppServer.current = xmpp_server
        loop.run_until_complete(xmpp_server.start(host, c2s_port, c2s_tls_port))

        def shutdown():
            log.info("closing every stream")
            return defer.Deferred.fromFuture(asyncio.ensure_future(xmpp_server.stop()))

        reactor.addSystemEventTrigger("before", "shutdown", shutdown)
        log.info(
            "serving %s: c2s %s, c2s direct TLS %s, http %s (open files limit %d)",
            settings.XMPP_DOMAIN,
            c2s_port or "off",
            c2s_tls_port or "off",
            http_port or "off",
            files,
        )
        if http_port:
            from channels.routing import get_default_application
            from daphne.server import Server

            interface = host.replace(":", r"\:")
            Server(
                application=get_default_application(),
                endpoints=[f"tcp:port={http_port}:interface={interface}"],
                signal_handlers=True,
            ).run()
        else:
            reactor.run(installSignalHandlers=True)
        log.info("stopped")


def _pick(option: int | None, setting: int) -> int:
    return setting if option is None else option
