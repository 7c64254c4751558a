"""`python manage.py runstun`: the STUN/TURN listeners alone, for operators who run
them apart from runxmpp (set XMPP_STUN_IN_RUNXMPP=false for runxmpp then, which
keeps advertising them through XEP-0215), with the same settings and the
same TURN secret as the XMPP server that issues the credentials."""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the STUN/TURN server (RFC 8489, RFC 8656) on its own."
    # It serves no HTTP: the URL configuration and the admin are not its business.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=None, help="address to listen on (XMPP_BIND_ADDRESS)")
        parser.add_argument(
            "--port", type=int, default=None, help="UDP and TCP port (XMPP_STUN_PORT)"
        )
        parser.add_argument(
            "--tls-port", type=int, default=None, help="TLS port, 0 = off (XMPP_STUN_TLS_PORT)"
        )

    def handle(self, *args, **options) -> None:
        host = options["host"] or settings.XMPP_BIND_ADDRESS
        port = settings.XMPP_STUN_PORT if options["port"] is None else options["port"]
        tls_port = (
            settings.XMPP_STUN_TLS_PORT if options["tls_port"] is None else options["tls_port"]
        )
        if not port and not tls_port:
            raise CommandError("no STUN port: set XMPP_STUN_PORT or --port")
        asyncio.run(self.serve(host, port, tls_port))

    async def serve(self, host: str, port: int, tls_port: int) -> None:
        from stun.server import StunServer, tls_context

        server = StunServer.from_settings()
        await server.start(host, port, tls_port, tls_context() if tls_port else None)
        self.stdout.write(f"STUN/TURN serving {', '.join(server.addresses)}", ending="\n")
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
