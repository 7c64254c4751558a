"""The XMPP server of one process: listeners, limits, sessions and the router.

`XmppServer.start()` opens the client-to-server listeners on the running
event loop (5222 with STARTTLS, 5223 with direct TLS per XEP-0368); the
runxmpp command adds the HTTP side in the same loop. Per-address limits
(connections, failed logins) live here because they span sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .authentication import CredentialStore
from .c2s import ClientSession
from .plugins import PluginRegistry, plugins
from .protocol.errors import StreamError
from .router import Router
from .runtime_settings import runtime_settings
from .sessions import SessionManager
from .tls import TlsConfig, load_tls_config
from .transport.batching import WriteBatcher
from .transport.tcp import TcpStream

log = logging.getLogger(__name__)

AUTH_FAILURE_WINDOW = 300.0  # seconds during which failures from one address add up
MAX_AUTH_FAILURE_DELAY = 30.0


@dataclass(frozen=True)
class Limits:
    max_stanza_size: int
    max_depth: int
    max_attributes: int
    max_connections_per_ip: int
    stanzas_per_second: int
    auth_timeout: float
    max_outgoing_buffer: int
    auth_failure_delay: float
    require_tls: bool

    @classmethod
    def from_settings(cls) -> Limits:
        # Through runtime_settings: an administrator's run-time overrides win.
        get = runtime_settings.get
        return cls(
            max_stanza_size=get("XMPP_MAX_STANZA_SIZE"),
            max_depth=get("XMPP_MAX_DEPTH"),
            max_attributes=get("XMPP_MAX_ATTRIBUTES"),
            max_connections_per_ip=get("XMPP_MAX_CONNECTIONS_PER_IP"),
            stanzas_per_second=get("XMPP_STANZAS_PER_SECOND"),
            auth_timeout=get("XMPP_AUTH_TIMEOUT"),
            max_outgoing_buffer=get("XMPP_MAX_OUTGOING_BUFFER"),
            auth_failure_delay=get("XMPP_AUTH_FAILURE_DELAY"),
            require_tls=get("XMPP_REQUIRE_TLS"),
        )


class XmppServer:
    # The server of this process, for the transports that Channels creates
    # (WebSocket); set by runxmpp.
    current: XmppServer | None = None

    def __init__(
        self,
        domain: str,
        tls: TlsConfig | None,
        limits: Limits,
        registry: PluginRegistry = plugins,
    ) -> None:
        self.domain = domain
        self.tls = tls
        self.limits = limits
        self.registry = registry
        self.sessions = SessionManager()
        self.router = Router(domain, registry, self.sessions)
        self.accounts = CredentialStore()
        # Unknown users get a stable made-up salt (RFC 5802 §9), keyed per installation.
        self.scram_options = {
            "unknown_user_key": hashlib.sha256(
                b"scram-unknown:" + settings.SECRET_KEY.encode()
            ).digest(),
            "unknown_user_iterations": settings.XMPP_SCRAM_ITERATIONS,
        }
        self.listeners: list[asyncio.Server] = []
        self._connections: dict[str, int] = defaultdict(int)
        self._auth_failures: dict[str, tuple[int, float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._open_sessions: set[ClientSession] = set()
        self.write_batcher = WriteBatcher()
        # Stanzas received from bound clients since start; the console samples it.
        self.stanzas_received = 0
        self.started = time.time()

    @classmethod
    def from_settings(cls) -> XmppServer:
        tls = load_tls_config(
            settings.XMPP_DOMAIN,
            Path(settings.XMPP_DATA_DIR),
            settings.XMPP_TLS_CERT,
            settings.XMPP_TLS_KEY,
        )
        return cls(settings.XMPP_DOMAIN, tls, Limits.from_settings())

    async def start(self, host: str, c2s_port: int, c2s_tls_port: int) -> None:
        """Listen for clients; a port of 0 disables that listener."""
        loop = asyncio.get_running_loop()
        for port, direct_tls in ((c2s_port, False), (c2s_tls_port, True)):
            if not port:
                continue
            server = await loop.create_server(
                lambda direct_tls=direct_tls: self._new_stream(direct_tls),
                host,
                port,
                reuse_address=True,
                backlog=1024,
            )
            self.listeners.append(server)
            kind = "direct TLS" if direct_tls else "STARTTLS"
            log.info("client connections (%s) on %s:%d", kind, host, port)

    def _new_stream(self, direct_tls: bool) -> TcpStream:
        return TcpStream(self, direct_tls)

    async def stop(self, grace: float = 2.0) -> None:
        """Close every stream with <system-shutdown/> and </stream:stream> (RFC 6120
        §4.9.3.20, §4.4), so that clients know why and wait before reconnecting;
        then the listeners."""
        for listener in self.listeners:
            listener.close()
        sessions = self.all_sessions()
        shutdown = StreamError("system-shutdown", "the server is shutting down")
        for session in sessions:
            session.close_stream(shutdown)
        deadline = time.monotonic() + grace
        while self._open_sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in sessions:
            session.transport.close()
        # Writes still in flight (offline messages, roster changes) finish
        # before the process exits, within what is left of the grace period.
        pending = self.router.pending_tasks() | set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=max(0.5, deadline - time.monotonic()))
        for listener in self.listeners:
            await listener.wait_closed()

    def all_sessions(self) -> list[ClientSession]:
        """Every open stream, bound or not."""
        return list(self._open_sessions)

    # -- limits spanning sessions --------------------------------------------

    def session_opened(self, session: ClientSession) -> None:
        self._open_sessions.add(session)

    def session_closed(self, session: ClientSession) -> None:
        self._open_sessions.discard(session)

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False if over the per-address limit."""
        if self._connections[address] >= self.limits.max_connections_per_ip:
            log.warning("refusing a connection from %s: per-address limit reached", address)
            return False
        self._connections[address] += 1
        return True

    def release(self, address: str) -> None:
        count = self._connections.get(address, 0) - 1
        if count <= 0:
            self._connections.pop(address, None)
        else:
            self._connections[address] = count

    def auth_failed(self, address: str) -> float:
        """Record a failed login; return how long to wait before answering it.
        The first failure is answered at once, then each waits twice as long."""
        now = time.monotonic()
        count, last = self._auth_failures.get(address, (0, now))
        if now - last > AUTH_FAILURE_WINDOW:
            count = 0
        count += 1
        self._auth_failures[address] = (count, now)
        if count == 1:
            return 0.0
        return min(self.limits.auth_failure_delay * 2 ** (count - 2), MAX_AUTH_FAILURE_DELAY)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
