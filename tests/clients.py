"""Real XMPP clients for the tests: slixmpp, configured to trust the test
server's self-signed certificate, and a raw TLS/TCP socket for what a
well-behaved library would never send."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

from .conftest import PASSWORD, RunningServer

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives."""

    def __init__(self, jid: str, password: str = PASSWORD, mechanism: str | None = None) -> None:
        super().__init__(jid, password)
        self.ssl_context = insecure_context()
        if mechanism:
            self.plugin["feature_mechanisms"].use_mech = mechanism
        for name in ("xep_0030", "xep_0199", "xep_0092", "xep_0202"):
            self.register_plugin(name)
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.auth_failed = asyncio.Event()
        self.disconnected_event = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("failed_auth", lambda _: self.auth_failed.set())
        self.add_event_handler("disconnected", lambda _: self.disconnected_event.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)


async def connect(
    server: RunningServer,
    user: str,
    resource: str = "test",
    *,
    mechanism: str | None = None,
    direct_tls: bool = False,
    password: str = PASSWORD,
    presence: bool = True,
    timeout: float = 10,
    plugins: tuple[str, ...] = (),
) -> Client:
    """Log in as `user` over STARTTLS (or direct TLS) and wait for the session;
    `plugins`: more slixmpp plugins to register first (e.g. "xep_0198")."""
    client = Client(server.jid(user, resource), password, mechanism)
    for name in plugins:
        client.register_plugin(name)
    if direct_tls:
        client.enable_starttls = False
        client.enable_direct_tls = True
        client.connect(server.host, server.tls_port)
    else:
        client.enable_direct_tls = False
        client.connect(server.host, server.c2s_port)
    await asyncio.wait_for(client.started.wait(), timeout)
    if presence:
        client.send_presence()
    return client


async def disconnect(*clients: Client) -> None:
    for client in clients:
        client.disconnect()
    for client in clients:
        try:
            await asyncio.wait_for(client.disconnected_event.wait(), 5)
        except TimeoutError:
            pass


class RawStream:
    """A blocking socket speaking raw XML, optionally upgraded with STARTTLS."""

    def __init__(
        self,
        server: RunningServer,
        direct_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        source: str = "",
    ) -> None:
        """`tls_context` (for direct TLS and STARTTLS) defaults to insecure_context();
        `source`: the local address to connect from (127.0.0.2, ... on loopback)."""
        self.server = server
        self.tls_context = tls_context or insecure_context()
        port = server.tls_port if direct_tls else server.c2s_port
        sock = socket.create_connection(
            (server.host, port), timeout=10, source_address=(source, 0) if source else None
        )
        if direct_tls:
            sock = self.tls_context.wrap_socket(sock, server_hostname=server.domain)
        self.sock = sock
        self.buffer = b""
        self.features = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def open(self) -> bytes:
        self.send(STREAM_HEADER.format(domain=self.server.domain))
        return self.read_until(b"</stream:features>")

    def starttls(self) -> bytes:
        """Negotiate TLS on the plain port; returns the features after the restart."""
        self.open()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(b"<proceed")
        self.buffer = b""
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.server.domain)
        return self.open()

    def read_until(self, marker: bytes | str, timeout: float = 10) -> bytes:
        """Read until `marker` (bytes or a regex string) appears; return all read."""
        pattern = re.compile(marker.encode() if isinstance(marker, str) else re.escape(marker))
        deadline = time.monotonic() + timeout
        while not pattern.search(self.buffer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not seen in {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return data

    def read_to_close(self, timeout: float = 10) -> bytes:
        """Everything until the server closes the connection."""
        deadline = time.monotonic() + timeout
        data = self.buffer
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, ssl.SSLError):
                return data
            if not chunk:
                return data
            data += chunk
        raise TimeoutError(f"the server did not close the connection; got {data!r}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def raw_login(
    server: RunningServer,
    user: str,
    resource: str = "raw",
    password: str = PASSWORD,
    *,
    bind: bool = True,
    direct_tls: bool = False,
) -> RawStream:
    """A RawStream logged in as user/resource: STARTTLS, SASL PLAIN (RFC 4616),
    the stream restart and resource binding (RFC 6120 §7); `bind=False` stops
    after the restart (XEP-0198's <resume/> comes there); `direct_tls`: on the
    direct TLS port (XEP-0368) instead of STARTTLS. The features after
    the restart are kept in `stream.features`."""
    stream = RawStream(server, direct_tls=direct_tls)
    if direct_tls:
        stream.open()
    else:
        stream.starttls()
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    stream.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    stream.read_until("<success[^>]*(/>|>[^<]*</success>)")
    stream.features = stream.open()
    if not bind:
        return stream
    stream.send(
        "<iq type='set' id='raw-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    )
    reply = stream.read_until(b"</iq>")
    if b"result" not in reply:
        raise ConnectionError(f"binding {resource!r} failed: {reply!r}")
    return stream


async def send_iq(client: Client, iq_type: str, payload: str, to: str | None = None):
    """Send an IQ carrying `payload` (XML text); return the result's payload or None."""
    iq = client.make_iq(ito=to, itype=iq_type)
    iq.append(ET.fromstring(payload))
    result = await iq.send(timeout=10)
    return result.xml[0] if len(result.xml) else None


async def iq_error(client: Client, iq_type: str, payload: str, to: str | None = None) -> str:
    """Send an IQ that must fail; return its error condition."""
    try:
        await send_iq(client, iq_type, payload, to)
    except IqError as error:
        return error.iq["error"]["condition"]
    raise AssertionError(f"the IQ {payload[:60]!r} succeeded")


def as_user(server: RunningServer, user: str, resource: str, scenario):
    """Run `scenario(client)` with a client logged in as user/resource."""

    async def run():
        client = await connect(server, user, resource)
        try:
            return await scenario(client)
        finally:
            await disconnect(client)

    return asyncio.run(run())
