"""An XmppServer in this process, for unit tests of the core's pure parts:
streams on a fake transport, fed bytes, with a plugin registry of their own
(no apps, so nothing touches the database).

Authentication is the one step taken by hand (`open_stream(authenticated=
True)` marks the stream authenticated, as SASL success would): SASL itself
needs the account database and is covered over real sockets in
test_c2s_login.py.
"""

from __future__ import annotations

import asyncio

from xmpp.bound_session import BoundSession
from xmpp.c2s import ClientStream
from xmpp.plugins import PluginRegistry
from xmpp.protocol.framing import StreamFraming
from xmpp.server import Limits, XmppServer

DOMAIN = "stream.test"
HEADER = (
    f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    f" to='{DOMAIN}' version='1.0'>"
).encode()
BIND = (
    b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>r</resource></bind></iq>"
)


class FakeTransport:
    """What a transport gives a stream, recording what it is told."""

    framing = StreamFraming()
    channel_bindings: dict[str, bytes] = {}
    secure = True
    peer = "192.0.2.1"
    buffered = 0

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def limits() -> Limits:
    return Limits(
        max_stanza_size=65536,
        max_depth=32,
        max_attributes=64,
        max_connections=100,
        max_unauthenticated_per_ip=10,
        max_sessions_per_ip=0,
        stanzas_per_second=1000,
        stanzas_burst=2000,
        bytes_per_second=1 << 20,
        bytes_burst=2 << 20,
        auth_timeout=60,
        max_outgoing_buffer=1 << 20,
        auth_failure_delay=0,
        auth_failure_max_delay=0,
        require_tls=False,
    )


def run(scenario) -> None:
    async def main():
        registry = PluginRegistry()
        server = XmppServer(DOMAIN, None, limits(), registry)
        await scenario(server, registry)

    asyncio.run(main())


def open_stream(
    server: XmppServer, authenticated: bool, user: str = "alice"
) -> tuple[ClientStream, FakeTransport]:
    transport = FakeTransport()
    stream = server.attach(transport)
    stream.data_received(HEADER)
    if authenticated:
        stream.authenticated = True  # as SASL success would, see the docstring
        stream.username = user
        stream.restart()  # the stream restart after SASL (RFC 6120 §6.4.6)
        stream.data_received(HEADER)
    transport.written.clear()
    return stream, transport


def bind(stream: ClientStream, transport: FakeTransport, resource: str = "r") -> BoundSession:
    stream.data_received(BIND.replace(b">r<", f">{resource}<".encode()))
    assert f"<jid>{stream.username}@{DOMAIN}/{resource}</jid>".encode() in transport.written
    transport.written.clear()
    assert isinstance(stream.session, BoundSession)
    return stream.session
