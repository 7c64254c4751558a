"""`python manage.py runxmpp`: every listener of the server in one event loop.

Daphne (HTTP and, on XMPP_HTTPS_PORT, HTTPS; WebSocket and BOSH) runs on Twisted's asyncio
reactor, and the XMPP listeners are opened on that same asyncio loop, so
the whole server is one process and one loop. SIGINT/SIGTERM close every
stream with <system-shutdown/> and </stream:stream> (RFC 6120 §4.9.3.20,
§4.4) before the process exits 0. SIGHUP reloads the TLS certificate (for
new connections, XMPP and HTTPS) and the run-time settings without dropping
a session (xmpp/reload.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from pathlib import Path

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
    help = (
        "Run the XMPP server: client connections, HTTP admin, in one process. "
        "Pending database migrations are applied first, unless --no-migrate."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=None, help="address to listen on (XMPP_BIND_ADDRESS)")
        parser.add_argument("--c2s-port", type=int, default=None, help="STARTTLS port, 0 = off")
        parser.add_argument(
            "--c2s-tls-port", type=int, default=None, help="direct TLS port, 0 = off"
        )
        parser.add_argument("--http-port", type=int, default=None, help="HTTP port, 0 = off")
        parser.add_argument(
            "--https-port", type=int, default=None, help="HTTPS and wss:// port, 0 = off"
        )
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="start on the database as it is, without applying migrations: for a "
            "database known to be migrated (the tests copy one migrated template per server)",
        )

    def handle(self, *args, **options) -> None:
        host = options["host"] or settings.XMPP_BIND_ADDRESS
        c2s_port = _pick(options["c2s_port"], settings.XMPP_C2S_PORT)
        c2s_tls_port = _pick(options["c2s_tls_port"], settings.XMPP_C2S_TLS_PORT)
        http_port = _pick(options["http_port"], settings.XMPP_HTTP_PORT)
        https_port = _pick(options["https_port"], settings.XMPP_HTTPS_PORT)
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
        _reload_on_sighup(loop, xmpp_server)
        loop.run_until_complete(xmpp_server.start(host, c2s_port, c2s_tls_port))
        from xmpp.plugins import plugins

        # Listeners apps registered (STUN/TURN over UDP, ...) share the loop.
        stoppers = [loop.run_until_complete(start(host)) for start in plugins.listeners]

        def shutdown():
            log.info("closing every stream")
            return defer.Deferred.fromFuture(
                asyncio.ensure_future(_stop_all(xmpp_server, stoppers))
            )

        reactor.addSystemEventTrigger("before", "shutdown", shutdown)
        log.info(
            "serving %s: c2s %s, c2s direct TLS %s, http %s, https %s (open files limit %d)",
            settings.XMPP_DOMAIN,
            c2s_port or "off",
            c2s_tls_port or "off",
            http_port or "off",
            https_port or "off",
            files,
        )
        if http_port or https_port:
            from channels.routing import get_default_application
            from daphne.server import Server
            from twisted.internet.endpoints import quoteStringArgument

            endpoints = []
            if http_port:
                endpoints.append(f"tcp:port={http_port}:interface={quoteStringArgument(host)}")
            application = get_default_application()
            https_certificate = None
            if https_port:
                application = WebSocketSchemeFromPort(application, https_port)
                https_certificate = _https_certificate()

            def listen_https() -> None:
                if https_certificate is not None:
                    _listen_https(http_server, host, https_port, https_certificate)

            http_server = Server(
                application=application,
                # Daphne will not start without an endpoint string; the HTTPS
                # port is opened by listen_https, so HTTPS alone passes it a
                # placeholder, removed before run() reads the list.
                endpoints=endpoints or ["https"],
                signal_handlers=True,
                ready_callable=listen_https,
            )
            http_server.endpoints = endpoints
            reactor.callWhenRunning(_use_xmpp_websocket_frames, http_server)
            http_server.run()
        else:
            reactor.run(installSignalHandlers=True)
        log.info("stopped")


def _use_xmpp_websocket_frames(http_server) -> None:
    """Daphne makes its WebSocket factory in run(); give it the protocol with
    the fast path for XMPP's frames (xmpp.transport.websocket_frames), which
    keeps Daphne's own, with a WARNING, if the installed libraries do not
    hold to what it relies on."""
    from xmpp.transport.websocket_frames import install

    install(http_server)
    # RFC 6455 §7.1.7: a failed connection SHOULD get a Close frame with the
    # reason (1007 for text that is not UTF-8...), not a bare TCP reset.
    http_server.ws_factory.setProtocolOptions(failByDrop=False)


def _https_certificate():
    """The certificate for HTTPS and wss://: the XMPP listeners' (xmpp.tls), in a
    connection creator that SIGHUP can give a new one (imserver/https_certificate.py)."""
    from imserver.https_certificate import ReloadableCertificate
    from xmpp.plugins import plugins
    from xmpp.tls import certificate_files

    certificate = ReloadableCertificate(
        *certificate_files(
            settings.XMPP_DOMAIN,
            Path(settings.XMPP_DATA_DIR),
            settings.XMPP_TLS_CERT,
            settings.XMPP_TLS_KEY,
        )
    )

    @plugins.on_reload("HTTPS certificate")
    async def reload_https_certificate() -> str:
        await asyncio.to_thread(certificate.reload)
        return "HTTPS certificate"

    return certificate


def _listen_https(http_server, host: str, port: int, certificate) -> None:
    """Open the HTTPS port for Daphne's HTTP factory (it exists once run() has
    begun: Daphne calls this just before the reactor runs), through
    SSL4ServerEndpoint with our connection creator rather than an ssl: string."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import SSL4ServerEndpoint

    listening = SSL4ServerEndpoint(reactor, port, certificate, interface=host).listen(
        http_server.http_factory
    )
    listening.addCallback(http_server.listen_success)
    listening.addErrback(http_server.listen_error)
    http_server.listeners.append(listening)


def _reload_on_sighup(loop, xmpp_server) -> None:
    """SIGHUP reloads (xmpp/reload.py) instead of ending the process. A plain
    signal handler hands over to the loop, as Twisted's own for SIGTERM does:
    asyncio's add_signal_handler would take the wakeup fd Twisted sets."""
    from xmpp.reload import reload

    def on_sighup(signum, frame) -> None:
        loop.call_soon_threadsafe(lambda: xmpp_server.spawn(reload(xmpp_server)))

    signal.signal(signal.SIGHUP, on_sighup)


class WebSocketSchemeFromPort:
    """Daphne puts no 'scheme' in a WebSocket scope; a connection to the HTTPS
    port is wss (RFC 7395 over TLS), which the XMPP consumer counts as secure."""

    def __init__(self, application, https_port: int) -> None:
        self.application = application
        self.https_port = https_port

    async def __call__(self, scope, receive, send):
        server = scope.get("server")
        if scope["type"] == "websocket" and server and server[1] == self.https_port:
            scope = dict(scope, scheme="wss")
        return await self.application(scope, receive, send)


async def _stop_all(xmpp_server, stoppers) -> None:
    for stop in stoppers:
        await stop()
    await xmpp_server.stop()


def _pick(option: int | None, setting: int) -> int:
    return setting if option is None else option
