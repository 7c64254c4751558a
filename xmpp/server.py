"""The XMPP server of one process: listeners, limits, sessions and the router.

`XmppServer.start()` opens the client-to-server listeners on the running
event loop (5222 with STARTTLS, 5223 with direct TLS per XEP-0368); the
runxmpp command adds the HTTP side in the same loop. Limits that span
sessions live here: which streams are admitted (admission.py: the global
cap, unauthenticated streams and sessions per address) and the slowing of
failed logins (failed_logins.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .admission import Admission
from .authentication import CredentialStore
from .c2s import ClientStream
from .failed_logins import FailedLogins
from .plugins import PluginRegistry, plugins
from .protocol.errors import StreamError
from .router import Router
from .runtime_settings import runtime_settings
from .sessions import SessionManager
from .tls import TlsConfig, load_tls_config
from .transport.batching import WriteBatcher
from .transport.tcp import TcpTransport
from .writer import flush_all, writers

log = logging.getLogger(__name__)

# File descriptors kept for what is not a client: listeners, the database,
# logs, the HTTP side's own sockets.
RESERVED_FILES = 256


@dataclass(frozen=True)
class Limits:
    max_stanza_size: int
    max_depth: int
    max_attributes: int
    max_connections: int
    max_unauthenticated_per_ip: int
    max_sessions_per_ip: int
    stanzas_per_second: int
    stanzas_burst: int
    bytes_per_second: int
    bytes_burst: int
    auth_timeout: float
    max_outgoing_buffer: int
    auth_failure_delay: float
    auth_failure_max_delay: float
    require_tls: bool

    @classmethod
    def from_settings(cls) -> Limits:
        # Through runtime_settings: an administrator's run-time overrides win.
        get = runtime_settings.get
        stanza_rate = get("XMPP_STANZAS_PER_SECOND")
        byte_rate = get("XMPP_C2S_BYTES_PER_SECOND")
        return cls(
            max_stanza_size=get("XMPP_MAX_STANZA_SIZE"),
            max_depth=get("XMPP_MAX_DEPTH"),
            max_attributes=get("XMPP_MAX_ATTRIBUTES"),
            max_connections=min(get("XMPP_MAX_CONNECTIONS"), _open_files_limit() - RESERVED_FILES),
            max_unauthenticated_per_ip=get("XMPP_MAX_UNAUTHENTICATED_PER_IP"),
            max_sessions_per_ip=get("XMPP_MAX_SESSIONS_PER_IP"),
            stanzas_per_second=stanza_rate,
            stanzas_burst=get("XMPP_STANZAS_BURST") or 2 * stanza_rate,
            bytes_per_second=byte_rate,
            bytes_burst=get("XMPP_C2S_BYTES_BURST") or 2 * byte_rate,
            auth_timeout=get("XMPP_AUTH_TIMEOUT"),
            max_outgoing_buffer=get("XMPP_MAX_OUTGOING_BUFFER"),
            auth_failure_delay=get("XMPP_AUTH_FAILURE_DELAY"),
            auth_failure_max_delay=get("XMPP_AUTH_FAILURE_MAX_DELAY"),
            require_tls=get("XMPP_REQUIRE_TLS"),
        )


def _queued_writes() -> str:
    """The writers holding writes not yet committed, e.g. "muc: 3", or ""."""
    return ", ".join(f"{w.name}: {len(w)}" for w in writers() if len(w))


def _open_files_limit() -> int:
    """The soft RLIMIT_NOFILE (runxmpp raises it to the hard limit at start):
    each client stream is one file descriptor."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


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
        self.admission: Admission[ClientStream] = Admission()
        self.failed_logins = FailedLogins()
        self._tasks: set[asyncio.Task] = set()
        self._open_streams: set[ClientStream] = set()
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
                lambda direct_tls=direct_tls: self._new_transport(direct_tls),
                host,
                port,
                reuse_address=True,
                backlog=1024,
            )
            self.listeners.append(server)
            kind = "direct TLS" if direct_tls else "STARTTLS"
            log.info("client connections (%s) on %s:%d", kind, host, port)

    def _new_transport(self, direct_tls: bool) -> TcpTransport:
        return TcpTransport(self, direct_tls)

    async def stop(self, grace: float = 2.0) -> None:
        """Close every stream with <system-shutdown/> and </stream:stream> (RFC 6120
        §4.9.3.20, §4.4), so that clients know why and wait before reconnecting;
        then the listeners."""
        for listener in self.listeners:
            listener.close()
        streams = self.all_streams()
        shutdown = StreamError("system-shutdown", "the server is shutting down")
        for stream in streams:
            stream.close_stream(shutdown)
        deadline = time.monotonic() + grace
        while self._open_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for stream in streams:
            stream.transport.close()
        # Sessions left are detached ones (XEP-0198): they end now, and what
        # they never acknowledged goes to offline storage with the writes below.
        for session in self.sessions.all():
            session.end()
        # Writes still in flight (offline messages, roster changes) finish
        # before the process exits, within what is left of the grace period;
        # the batched writers commit what they hold without waiting out
        # their flush interval (xmpp/writer.py).
        loop = asyncio.get_running_loop()
        pending = self.router.pending_tasks() | set(self._tasks) | {loop.create_task(flush_all())}
        await asyncio.wait(pending, timeout=max(0.5, deadline - time.monotonic()))
        if _queued_writes():  # queued by tasks that ended after the flush began
            await asyncio.wait(
                {loop.create_task(flush_all())}, timeout=max(0.2, deadline - time.monotonic())
            )
        if _queued_writes():
            log.warning("shutting down with writes not committed: %s", _queued_writes())
        for listener in self.listeners:
            await listener.wait_closed()

    def all_streams(self) -> list[ClientStream]:
        """Every open stream, bound or not."""
        return list(self._open_streams)

    # -- limits spanning sessions --------------------------------------------

    def admit(self, address: str) -> bool:
        """Whether a new connection from `address` may be served: False over the
        global cap (XMPP_MAX_CONNECTIONS), to be refused before any XML. The
        per-address rules apply when its stream is attached (attach)."""
        if not self.admission.has_room(self.limits.max_connections):
            log.warning(
                "refusing a connection from %s: %d streams open", address, self.admission.streams
            )
            return False
        return True

    def attach(self, transport) -> ClientStream:
        """A transport's connection, admitted (admit()), gets its stream: the
        one way every transport (TCP, WebSocket, BOSH) attaches. The stream
        tells the server when it ends (stream_closed)."""
        stream = ClientStream(self, transport)
        self._open_streams.add(stream)
        address = transport.peer
        oldest = self.admission.opened(stream, address, self.limits.max_unauthenticated_per_ip)
        if oldest is not None:
            # RFC 6120 §4.9.3.18 <policy-violation/>: the local policy of
            # §13.12 item 1 (streams per address) ends the oldest stream that
            # has not authenticated, so that the newest is served.
            log.debug("%s has too many unauthenticated streams; closing its oldest", address)
            oldest.stream_error(
                StreamError(
                    "policy-violation", "too many unauthenticated connections from your address"
                )
            )
        return stream

    def stream_authenticated(self, stream: ClientStream) -> bool:
        """At SASL success: the stream now counts as a session of its address.
        False if the address has XMPP_MAX_SESSIONS_PER_IP sessions already, or
        the stream is no longer counted (evicted meanwhile)."""
        address = stream.transport.peer
        if not self.admission.authenticated(stream, address, self.limits.max_sessions_per_ip):
            return False
        self.failed_logins.succeeded(address, stream.username)
        return True

    def stream_closed(self, stream: ClientStream) -> None:
        self._open_streams.discard(stream)
        self.admission.closed(stream, stream.transport.peer)

    def login_failed(self, address: str, account: str) -> float:
        """Record a failed login of `account` from `address`; return how long
        to wait before answering it (failed_logins.py)."""
        return self.failed_logins.failed(
            address,
            account,
            self.limits.auth_failure_delay,
            self.limits.auth_failure_max_delay,
        )

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
