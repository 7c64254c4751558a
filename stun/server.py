"""The STUN/TURN listeners on an asyncio loop: UDP, TCP and TLS, and relay sockets.

This module owns the sockets. UDP (RFC 8489 §6.2.1) is read straight off a
non-blocking socket with `loop.add_reader`, up to `BATCH` datagrams a
wake-up, instead of asyncio's datagram transport (one callback and one
poll per datagram): under load a wake-up answers many requests. A plain
Binding request (20 bytes, magic cookie, no attributes) is answered there
from precomputed bytes; everything else goes to stun/service.py.

TCP and TLS (RFC 8489 §6.2.2, §6.2.3; TURN's §12.5 ChannelData framing) are
asyncio protocols that cut the stream into messages by their length fields.
Relay sockets (RFC 8656 §7.2: one relayed transport address per
allocation) are UDP sockets from XMPP_TURN_MIN_PORT..XMPP_TURN_MAX_PORT.

A malformed or truncated datagram is dropped or answered with an error by
the service; an unexpected exception while answering one is logged and the
listener goes on.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import codec
from .service import ServiceSettings, StunService
from .turn import Address

log = logging.getLogger(__name__)

BATCH = 256  # datagrams read per wake-up of the loop
RECV_SIZE = 65536
MAX_STREAM_BUFFER = 65536 + 24  # one STUN message at most (16-bit length) and a header
PLAIN_BINDING = b"\x00\x01\x00\x00" + codec.MAGIC_COOKIE_BYTES
EXPIRY_INTERVAL = 5.0
TAIL_CACHE = 65536


class UdpRelay:
    """The relay socket of one allocation."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Address):
        self.loop = loop
        self.sock = sock
        self.address = address
        self.on_datagram: Callable[[bytes, Address], None] = lambda data, peer: None
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(BATCH):
            try:
                data, peer = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ECONNREFUSED from an ICMP error of an earlier send
            try:
                self.on_datagram(data, (peer[0], peer[1]))
            except Exception:
                log.exception("relaying a datagram from %s failed", peer)

    def sendto(self, data: bytes, peer: Address) -> None:
        try:
            self.sock.sendto(data, peer)
        except OSError:
            pass  # UDP: a full buffer or an unreachable peer loses the datagram

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class UdpListener:
    def __init__(self, server: StunServer, sock: socket.socket) -> None:
        self.server = server
        self.service = server.service
        self.sock = sock
        self.tails: dict[Address, bytes] = {}
        self.software_attr = codec.attribute(codec.SOFTWARE, self.service.config.software)
        server.loop.add_reader(sock.fileno(), self._readable)

    def _tail(self, addr: Address) -> bytes:
        """XOR-MAPPED-ADDRESS (which for IPv4 does not depend on the transaction
        id, RFC 8489 §14.2) and SOFTWARE: the response after its header."""
        attrs = codec.attribute(
            codec.XOR_MAPPED_ADDRESS, codec.encode_xor_address(addr[0], addr[1], b"")
        )
        tail = attrs + self.software_attr
        if len(self.tails) >= TAIL_CACHE:
            self.tails.clear()
        self.tails[addr] = tail
        return tail

    def _readable(self) -> None:
        sock = self.sock
        recv = sock.recvfrom
        sendto = sock.sendto
        tails = self.tails
        handle = self.service.handle
        head = None
        for _ in range(BATCH):
            try:
                data, addr = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                if len(data) == 20 and data[:8] == PLAIN_BINDING and len(addr) == 2:
                    tail = tails.get(addr) or self._tail(addr)
                    if head is None:
                        head = struct.pack("!HH", 0x0101, len(tail)) + codec.MAGIC_COOKIE_BYTES
                    sendto(head + data[8:] + tail, addr)
                    continue
                if data:
                    client = _client(addr)
                    handle(data, client, "udp", lambda reply, a=addr: self._send(reply, a))
            except (BlockingIOError, InterruptedError):
                pass  # the socket's send buffer is full: the client retransmits
            except OSError:
                pass
            except Exception:
                log.exception("answering a STUN datagram from %s failed", addr)

    def _send(self, data: bytes, addr) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            pass

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.server.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class StreamConnection(asyncio.Protocol):
    """STUN/TURN over TCP or TLS: messages framed by their own length."""

    def __init__(self, server: StunServer, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client: Address = ("", 0)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.client = _client(transport.get_extra_info("peername") or ("", 0))
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            first = buffer[0]
            (length,) = struct.unpack_from("!H", buffer, 2)
            if 0x40 <= first <= 0x7F:
                if (self.kind, self.client) not in self.server.service.table.allocations:
                    self._abort()  # ChannelData needs an allocation: this is not TURN
                    return
                # RFC 8656 §12.5: ChannelData over a stream is padded to 4 bytes.
                size = 4 + length
                total = (size + 3) & ~3
            elif first < 0x40:
                if len(buffer) >= 8 and buffer[4:8] != codec.MAGIC_COOKIE_BYTES:
                    self._abort()  # over a stream, only RFC 5389/8489 messages (with the cookie)
                    return
                size = total = codec.HEADER_SIZE + length
            else:
                self._abort()  # RFC 8489 §6.2.2: not STUN on a STUN stream
                return
            if len(buffer) < total:
                if len(buffer) > MAX_STREAM_BUFFER:
                    self._abort()
                return
            message = bytes(buffer[:size])
            del buffer[:total]
            try:
                self.server.service.handle(message, self.client, self.kind, self._write)
            except Exception:
                log.exception("answering a STUN message over %s failed", self.kind)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        # RFC 8656 §5: an allocation over TCP/TLS ends with its connection.
        service = self.server.service
        allocation = service.table.allocations.get((self.kind, self.client))
        if allocation is not None:
            service.table.remove(allocation)


class StunServer:
    """The listeners and relay sockets of one process around one StunService."""

    def __init__(
        self,
        service: StunService,
        *,
        relay_address: str = "",
        external_ip: str = "",
        min_port: int = 49152,
        max_port: int = 65535,
    ) -> None:
        self.service = service
        service.open_relay = self.open_relay
        self.relay_address = relay_address
        self.external_ip = external_ip
        self.min_port = min_port
        self.max_port = max_port
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment] - set by start()
        self.udp: list[UdpListener] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[StreamConnection] = set()
        self.addresses: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._host = ""

    @classmethod
    def from_settings(cls) -> StunServer:
        from django.conf import settings

        return cls(
            StunService(ServiceSettings.from_settings()),
            relay_address=settings.XMPP_TURN_RELAY_ADDRESS,
            external_ip=settings.XMPP_TURN_EXTERNAL_IP,
            min_port=settings.XMPP_TURN_MIN_PORT,
            max_port=settings.XMPP_TURN_MAX_PORT,
        )

    async def start(
        self, host: str, port: int, tls_port: int = 0, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._host = host
        if port:
            sock = _udp_socket(host, port)
            self.udp.append(UdpListener(self, sock))
            self.addresses.append(f"udp {host}:{port}")
            self.servers.append(
                await self.loop.create_server(
                    lambda: StreamConnection(self, "tcp"), host, port, reuse_address=True
                )
            )
            self.addresses.append(f"tcp {host}:{port}")
        if tls_port and tls_context is not None:
            self.servers.append(
                await self.loop.create_server(
                    lambda: StreamConnection(self, "tls"),
                    host,
                    tls_port,
                    ssl=tls_context,
                    reuse_address=True,
                )
            )
            self.addresses.append(f"tls {host}:{tls_port}")
        self._timer = self.loop.call_later(EXPIRY_INTERVAL, self._expire)

    def _expire(self) -> None:
        try:
            self.service.expire()
        finally:
            self._timer = self.loop.call_later(EXPIRY_INTERVAL, self._expire)

    def open_relay(self, client: Address, even: bool) -> UdpRelay:
        """A relay socket for a new allocation (RFC 8656 §7.2 step 9)."""
        bind = self.relay_address or (self._host if _concrete(self._host) else "0.0.0.0")
        advertised = self.external_ip or (bind if _concrete(bind) else _local_ip_towards(client[0]))
        in_use = {a.relay.address[1] for a in self.service.table.allocations.values()}
        for _ in range(64):
            port = random.randint(self.min_port, self.max_port)
            if even:
                port &= ~1
                if port < self.min_port:
                    continue
            if port in in_use:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((bind, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            sock.setblocking(False)
            return UdpRelay(self.loop, sock, (advertised, port))
        raise OSError(errno.EADDRINUSE, "no free relay port")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for listener in self.udp:
            listener.close()
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection._abort()
        self.service.close()
        for server in self.servers:
            await server.wait_closed()


def _client(addr) -> Address:
    """(host, port) of a socket address; an IPv4-mapped IPv6 address (a dual-stack
    socket) is the IPv4 client it stands for."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, addr[1])


def _concrete(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _local_ip_towards(ip: str) -> str:
    """The local address the kernel would use to reach `ip` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Room for bursts: requests queue in the kernel while a batch is answered.
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
            except OSError:
                pass
        sock.bind((host, port))
        sock.setblocking(False)
    except Exception:
        sock.close()
        raise
    return sock


def tls_context() -> ssl.SSLContext:
    """The server's certificate (as for XMPP, xmpp/tls.py) for STUN over TLS (RFC 8489 §6.2.3),
    with the ALPN ids of RFC 7443."""
    from django.conf import settings

    from xmpp.tls import load_tls_config

    load_tls_config(
        settings.XMPP_DOMAIN, settings.XMPP_DATA_DIR, settings.XMPP_TLS_CERT, settings.XMPP_TLS_KEY
    )  # makes the self-signed certificate if there is none yet
    if settings.XMPP_TLS_CERT and settings.XMPP_TLS_KEY:
        cert, key = Path(settings.XMPP_TLS_CERT), Path(settings.XMPP_TLS_KEY)
    else:
        data_dir = Path(settings.XMPP_DATA_DIR)
        cert, key = (
            data_dir / f"{settings.XMPP_DOMAIN}.crt",
            data_dir / f"{settings.XMPP_DOMAIN}.key",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["stun.turn", "stun.nat-discovery"])
    return context


async def start_listeners(host: str) -> Callable[[], Awaitable[None]]:
    """Start STUN/TURN as XMPP_STUN_PORT and XMPP_STUN_TLS_PORT say, on the running loop;
    return the coroutine function that stops them. Registered with
    xmpp.plugins by StunConfig.ready(), called by runxmpp and runstun."""
    from django.conf import settings

    port, tls_port = settings.XMPP_STUN_PORT, settings.XMPP_STUN_TLS_PORT
    if not settings.XMPP_STUN_IN_RUNXMPP:
        port = tls_port = 0  # `manage.py runstun` serves them; XEP-0215 still advertises them
    server = StunServer.from_settings()
    if port or tls_port:
        try:
            await server.start(host, port, tls_port, tls_context() if tls_port else None)
            log.info(
                "STUN%s on %s",
                "/TURN" if server.service.config.turn_enabled else "",
                ", ".join(server.addresses),
            )
        except OSError as exc:
            # Another STUN server on the port must not stop the XMPP server.
            log.error("STUN listeners not started on %s:%s: %s", host, port, exc)
            await server.stop()
    return server.stop
