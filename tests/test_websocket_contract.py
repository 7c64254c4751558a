"""The WebSocket fast path's contract with Daphne, autobahn and Twisted
(xmpp/transport/websocket_frames.py, CONTRACT): each private name and
behaviour it relies on, checked in the installed versions, so that an
upgrade that changes one fails here with a message naming it (README,
"WebSocket fast path: supported versions"). In memory through Daphne's own
HTTP upgrade, with real sockets only where the socket is the point; and the
server's fallback to the Channels consumer's path when the contract breaks."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import socket
import time

# Daphne's server module installs Twisted's asyncio reactor, as in runxmpp.
import daphne.server  # noqa: F401, I001
import daphne.ws_protocol
import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import abstract, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol

from xmpp.transport import websocket_frames
from xmpp.transport.websocket_frames import (
    XmppWebSocketProtocol,
    claim,
    contract_problems,
    install,
    masked_text_frame,
    twisted_unsent,
)

from .conftest import private_server
from .test_websocket import WsStream

PEER = IPv4Address("TCP", "127.0.0.1", 40001)
HOST = IPv4Address("TCP", "127.0.0.1", 5280)
PING = 0x89  # a server's Ping frame (RFC 6455 §5.5.2), first byte


def test_the_contract_holds_in_the_installed_versions():
    """What runxmpp checks at start holds: names, signatures, autobahn's
    frame state around an in-memory frame, Twisted's unsent-byte count."""
    assert contract_problems() == []


def _renamed_on_message(self, message):
    pass


def _check_timeouts_without_last_ping(self):
    pass


def _write_without_counting(self, data):
    self._tempDataBuffer.append(data)


_succeed_handshake = WebSocketServerProtocol.succeedHandshake


def _handshake_forgetting_current_frame(self, res):
    _succeed_handshake(self, res)
    del self.current_frame  # as an autobahn that renamed it


@pytest.mark.parametrize(
    ("owner", "name", "changed", "named"),
    [
        (WebSocketProtocol, "onMessage", _renamed_on_message, "WebSocketProtocol.onMessage"),
        (WebSocketProtocol, "muted", None, "muted"),
        (WebSocketProtocol, "check_timeouts", _check_timeouts_without_last_ping, "last_ping"),
        (WebSocketServerProtocol, "sendClose", lambda self, code: None, "after sendClose"),
        (
            WebSocketServerProtocol,
            "succeedHandshake",
            _handshake_forgetting_current_frame,
            "no attribute 'current_frame'",
        ),
        (abstract.FileDescriptor, "write", _write_without_counting, "_tempDataLen"),
    ],
    ids=["onMessage-signature", "muted", "last_ping", "state", "current_frame", "unsent-bytes"],
)
def test_a_changed_library_is_named(monkeypatch, owner, name, changed, named):
    """An upgrade that changes what the fast path relies on is caught, and the
    problem names what changed (as a new Daphne, autobahn or Twisted would)."""
    monkeypatch.setattr(owner, name, changed)
    problems = contract_problems()
    assert any(named in problem for problem in problems), problems


def test_a_broken_contract_keeps_daphnes_protocol_with_one_warning(monkeypatch, caplog):
    """The server falls back to the plain consumer path: Daphne's protocol
    stays on its factory and one WARNING says why."""
    monkeypatch.setattr(WebSocketProtocol, "muted", None)  # as a Daphne that changed it
    http_server = Server(application=None, endpoints=["tcp:0"])
    http_server.ws_factory = WebSocketFactory(http_server)
    with caplog.at_level(logging.WARNING, logger=websocket_frames.__name__):
        assert install(http_server) is False
    assert http_server.ws_factory.protocol is WebSocketProtocol
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "WebSocket fast path off" in warnings[0].getMessage()
    assert "muted" in warnings[0].getMessage()


# -- Daphne's HTTP upgrade, in memory ---------------------------------------------


class Opened:
    """One WebSocket through Daphne's HTTP upgrade onto this module's protocol,
    with what the ASGI application was given."""

    def __init__(self) -> None:
        self.scope = self.receive = self.send = None
        self.protocol: XmppWebSocketProtocol | None = None
        self.transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        self.session: list[bytes] = []

    async def application(self, scope, receive, send) -> None:
        self.scope, self.receive, self.send = scope, receive, send

    def frames_written(self) -> bytes:
        written = self.transport.value()
        self.transport.clear()
        return written

    async def for_the_consumer(self) -> list[dict]:
        """The ASGI messages Daphne has queued for the application."""
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(self.receive(), 0.01))
            except TimeoutError:
                return messages


async def open_through_daphne() -> Opened:
    """Daphne's HTTP factory, given an upgrade request, builds the protocol
    from Server.ws_factory (where runxmpp installs it) and makes the
    application; then the application accepts the 'xmpp' subprotocol."""
    opened = Opened()
    http_server = Server(application=opened.application, endpoints=["tcp:0"])
    http_server.connections = {}  # as Server.run() starts
    http_server.ws_factory = WebSocketFactory(http_server, server="daphne")
    assert install(http_server)
    http = HTTPFactory(http_server).buildProtocol(PEER)
    http.makeConnection(opened.transport)
    http.dataReceived(
        b"GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
    )
    await asyncio.sleep(0)  # the application instance starts
    assert opened.scope is not None, "Daphne did not start the application"
    opened.protocol = claim(opened.scope)
    await opened.send({"type": "websocket.accept", "subprotocol": "xmpp"})
    assert opened.frames_written().startswith(b"HTTP/1.1 101")
    return opened


def test_daphnes_scope_finds_the_protocol():
    """Daphne's upgrade builds the protocol runxmpp installs; the scope's
    client and server are the transport's peer and host, by which the
    consumer claims that protocol, once."""

    async def scenario():
        opened = await open_through_daphne()
        assert isinstance(opened.protocol, XmppWebSocketProtocol)
        assert opened.protocol.transport is opened.transport
        assert claim(opened.scope) is None
        assert opened.scope["client"] == ["127.0.0.1", 40001]
        assert opened.scope["server"] == ["127.0.0.1", 5280]
        assert await opened.for_the_consumer() == [{"type": "websocket.connect"}]

    asyncio.run(scenario())


def test_open_state_and_frames_in_order_with_autobahns_between():
    """After accept autobahn is in STATE_OPEN at a frame boundary; whole
    frames take the fast path, a fragmented message (RFC 6455 §5.4) with a
    Ping between its fragments (§5.5) takes autobahn's, and the session gets
    all three in order, with the Pong sent; after the server's Close the
    fast path stops (§5.5.1)."""

    async def scenario():
        opened = await open_through_daphne()
        protocol = opened.protocol
        assert protocol.state == protocol.STATE_OPEN
        protocol.attach(opened.session.append)
        key = b"\x0a\x0b\x0c\x0d"
        first_fragment = bytes((0x01, 0x80 | 3)) + key + websocket_frames.unmask(b"<b ", key)
        last_fragment = bytes((0x80, 0x80 | 2)) + key + websocket_frames.unmask(b"/>", key)
        ping = bytes((0x89, 0x80 | 1)) + key + websocket_frames.unmask(b"p", key)
        protocol.dataReceived(masked_text_frame(b"<a/>") + first_fragment + ping)
        protocol.dataReceived(last_fragment + masked_text_frame(b"<c/>"))
        assert opened.session == [b"<a/>", b"<b />", b"<c/>"]
        assert opened.frames_written() == bytes((0x8A, 1)) + b"p"  # the Pong
        assert protocol.send_texts([b"<d/>", b"<e/>"])
        assert opened.frames_written() == bytes((0x81, 4)) + b"<d/>" + bytes((0x81, 4)) + b"<e/>"
        protocol.sendClose(1000)
        assert not protocol.can_send_text()
        assert not protocol.send_texts([b"<f/>"])

    asyncio.run(scenario())


def test_daphnes_ping_timer_reads_last_ping():
    """Daphne pings a WebSocket that has sent nothing for ping_interval,
    judged by last_ping, which the fast path refreshes as Daphne's onMessage
    does: a stream whose frames skip Daphne is not pinged for nothing."""

    async def scenario():
        opened = await open_through_daphne()
        protocol = opened.protocol
        protocol.attach(opened.session.append)
        protocol.last_ping = time.time() - 3600
        protocol.dataReceived(masked_text_frame(b"<a/>"))
        assert time.time() - protocol.last_ping < 60
        protocol.check_timeouts()
        assert opened.frames_written() == b""
        protocol.last_ping = time.time() - 3600
        protocol.check_timeouts()
        assert opened.frames_written()[:1] == bytes((PING,))

    asyncio.run(scenario())


def test_a_muted_protocol_gives_nothing_to_the_session_or_the_consumer():
    """Daphne's `muted` drops incoming messages; the fast path honours it."""

    async def scenario():
        opened = await open_through_daphne()
        protocol = opened.protocol
        protocol.attach(opened.session.append)
        await opened.for_the_consumer()  # websocket.connect
        protocol.muted = True
        protocol.dataReceived(masked_text_frame(b"<a/>"))
        assert opened.session == []
        assert await opened.for_the_consumer() == []

    asyncio.run(scenario())


def test_messages_queued_before_attach_keep_the_consumer_path():
    """A frame read before the consumer attached its session waits in Daphne's
    queue; so the ones after it go there too, behind it, never ahead."""

    async def scenario():
        opened = await open_through_daphne()
        protocol = opened.protocol
        protocol.dataReceived(masked_text_frame(b"<a/>"))
        protocol.attach(opened.session.append)
        protocol.dataReceived(masked_text_frame(b"<b/>"))
        assert opened.session == []
        texts = [m.get("text") for m in await opened.for_the_consumer()]
        assert texts == [None, "<a/>", "<b/>"]  # after websocket.connect

    asyncio.run(scenario())


def test_daphne_sends_whole_messages_only():
    """Daphne never uses autobahn's streaming or synchronous sends, so no
    half-sent message of autobahn's stands where the fast path writes frames."""
    tree = ast.parse(inspect.getsource(daphne.ws_protocol))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    called = {call.func.attr for call in calls if isinstance(call.func, ast.Attribute)}
    streaming = {"beginMessage", "beginMessageFrame", "sendMessageFrame", "endMessage"}
    assert not called & streaming, f"daphne.ws_protocol now calls {called & streaming}"
    sends = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "sendMessage"]
    assert sends, "daphne.ws_protocol no longer calls sendMessage"
    for send in sends:
        assert len(send.args) == 2 and not send.keywords, (
            f"daphne.ws_protocol line {send.lineno} calls sendMessage with more than "
            "(payload, isBinary)"
        )


# -- Twisted's TCP transport, on a real socket -------------------------------------


class NoReactor:
    def addWriter(self, writer) -> None:
        pass

    removeWriter = addReader = removeReader = addWriter


def test_twisted_tcp_transport_counts_unsent_bytes_and_gives_its_socket():
    """On a real socket pair: what the transport holds is what the socket
    has not taken yet; getHandle() is the socket the fast path sends on; a
    plain TCP transport is no ISSLTransport, Twisted's TLS wrapper is."""
    ours, theirs = socket.socketpair()
    try:
        transport = tcp.Connection(ours, Protocol(), reactor=NoReactor())
        transport.connected = True
        assert transport.getHandle() is ours
        transport.write(b"x" * 1000)
        transport.writeSequence([b"y" * 10, b"z"])
        assert twisted_unsent(transport) == 1011
        transport.doWrite()
        assert twisted_unsent(transport) == 0
        theirs.settimeout(5)
        received = b""
        while len(received) < 1011:
            received += theirs.recv(4096)
        assert received == b"x" * 1000 + b"y" * 10 + b"z"
        assert not ISSLTransport.providedBy(transport)
        assert ISSLTransport.implementedBy(TLSMemoryBIOProtocol)
    finally:
        ours.close()
        theirs.close()


# -- the server ----------------------------------------------------------------------


def test_runxmpp_installs_the_fast_path(xmpp_server):
    """Under the server, on the installed versions, the fast path is on."""
    WsStream(xmpp_server).close()  # the HTTP side has started
    assert "WebSocket fast path off" not in xmpp_server.log()


SIMULATED_UPGRADE = """
# A Daphne whose onMessage changed shape (loaded first by Python: sitecustomize).
import daphne.ws_protocol

_on_message = daphne.ws_protocol.WebSocketProtocol.onMessage


def onMessage(self, *message):
    return _on_message(self, *message)


daphne.ws_protocol.WebSocketProtocol.onMessage = onMessage
"""


def test_without_the_contract_websocket_works_on_the_consumer_path(tmp_path_factory):
    """A Daphne that no longer matches: one WARNING at start naming what
    changed, and XMPP over WebSocket still works, frames in order, through
    the Channels consumer alone (fragments and whole frames)."""
    hook = tmp_path_factory.mktemp("simulated-upgrade")
    (hook / "sitecustomize.py").write_text(SIMULATED_UPGRADE)
    with private_server(tmp_path_factory, "fallback", PYTHONPATH=str(hook)) as server:
        stream = WsStream(server)
        try:
            jid = stream.login("alice", "fallback")
            assert jid == "alice@localhost/fallback"
            ping = (
                "<iq xmlns='jabber:client' type='get' to='localhost' id='{}'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>"
            )
            stream.ws.send(iter([ping.format("p1")[:30], ping.format("p1")[30:]]))
            stream.send(ping.format("p2"))
            answers = stream.recv_until(r"id=.p2.")
            assert re.findall(r"id=.(p\d).", answers) == ["p1", "p2"]
        finally:
            stream.close()
        log = server.log()
        assert log.count("WebSocket fast path off") == 1
        assert "WebSocketProtocol.onMessage" in log
