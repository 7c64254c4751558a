"""XMPP over WebSocket (RFC 7395) at /xmpp-websocket, over a real WebSocket
(the `websockets` library) against the server started by the fixture."""

from __future__ import annotations

import asyncio
import re

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

from .clients import connect, disconnect
from .conftest import PASSWORD
from .scram_client import ScramSha256Client

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class WsStream:
    """One WebSocket speaking RFC 7395 frames."""

    def __init__(self, server, subprotocol: str = "xmpp") -> None:
        self.server = server
        self.ws = ws_connect(
            f"ws://127.0.0.1:{server.http_port}/xmpp-websocket",
            subprotocols=[subprotocol],
            open_timeout=10,
        )

    def send(self, frame: str) -> None:
        self.ws.send(frame)

    def recv(self, timeout: float = 10) -> str:
        return self.ws.recv(timeout=timeout)

    def recv_until(self, pattern: str, timeout: float = 10) -> str:
        frames = []
        while True:
            frame = self.recv(timeout)
            frames.append(frame)
            if re.search(pattern, frame):
                return "".join(frames)

    def open(self) -> str:
        self.send(f"<open xmlns='{NS_FRAMING}' to='{self.server.domain}' version='1.0'/>")
        return self.recv_until("<stream:features")

    def login(self, user: str, resource: str, password: str = PASSWORD) -> str:
        """SASL SCRAM-SHA-256 (RFC 5802, 7677) by hand, then bind; returns the full JID."""
        self.open()
        scram = ScramSha256Client(user, password)
        self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{scram.first_message()}</auth>"
        )
        challenge = self.recv_until("<challenge")
        server_first = re.search(r">([^<]+)</challenge>", challenge).group(1)
        self.send(f"<response xmlns='{NS_SASL}'>{scram.final_message(server_first)}</response>")
        assert "<success" in self.recv_until("<success|<failure")
        self.open()  # §3.5: the stream restarts with a new <open/>
        self.send(
            "<iq xmlns='jabber:client' type='set' id='bind'>"
            "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        bound = self.recv_until("</iq>")
        return re.search(r"<jid>([^<]+)</jid>", bound).group(1)

    def close(self) -> None:
        self.ws.close()


def test_subprotocol_other_than_xmpp_is_refused(xmpp_server):
    """RFC 7395 §3.1: the server speaks only the 'xmpp' subprotocol."""
    with pytest.raises((InvalidHandshake, ConnectionClosed)):
        stream = WsStream(xmpp_server, subprotocol="chat")
        stream.recv(timeout=5)


def test_open_is_answered_with_open_and_features(xmpp_server):
    """§3.3.2: <open/> gets an <open/> from the domain, then the features in their
    own frame, with SASL offered (no STARTTLS on a WebSocket) and no PLAIN over ws://."""
    stream = WsStream(xmpp_server)
    try:
        stream.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
        opened = stream.recv()
        assert opened.startswith(f"<open xmlns='{NS_FRAMING}'")
        assert "from='localhost'" in opened and "version='1.0'" in opened
        features = stream.recv()
        assert features.startswith("<stream:features xmlns:stream=")
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in features
        assert "starttls" not in features
        assert "<mechanism>PLAIN</mechanism>" not in features
    finally:
        stream.close()


def test_websocket_client_chats_with_a_tcp_client(xmpp_server):
    """The same session, router and stanzas as over TCP: a WebSocket client and a
    slixmpp TCP client exchange messages, each stanza its own namespaced frame."""
    stream = WsStream(xmpp_server)

    async def scenario():
        jid = await asyncio.to_thread(stream.login, "alice", "websocket")
        assert jid == "alice@localhost/websocket"
        bob = await connect(xmpp_server, "bob", "ws-peer")
        try:
            bob.send_message(mto=jid, mbody="to the browser", mtype="chat")
            frame = await asyncio.to_thread(stream.recv_until, "to the browser")
            assert re.search(r"<message[^>]* xmlns=\"jabber:client\"", frame)
            assert 'from="bob@localhost/ws-peer"' in frame
            await asyncio.to_thread(
                stream.send,
                "<message xmlns='jabber:client' type='chat' to='bob@localhost/ws-peer'>"
                "<body>from the browser</body></message>",
            )
            message = await asyncio.wait_for(bob.messages.get(), 10)
            assert message["body"] == "from the browser"
            assert message["from"].full == jid
        finally:
            await disconnect(bob)

    try:
        asyncio.run(scenario())
    finally:
        stream.close()


def test_close_is_answered_with_close(xmpp_server):
    """§3.6: the client's <close/> is answered with <close/> and the WebSocket ends."""
    stream = WsStream(xmpp_server)
    try:
        stream.login("carol", "closing")
        stream.send(f"<close xmlns='{NS_FRAMING}'/>")
        assert stream.recv_until("<close").strip().endswith(f"<close xmlns='{NS_FRAMING}'/>")
        with pytest.raises(ConnectionClosed):
            stream.recv(timeout=5)
    finally:
        stream.close()


@pytest.mark.parametrize(
    "frame",
    [
        "<message xmlns='jabber:client'><body>unclosed</message>",
        "<message xmlns='jabber:client'/><message xmlns='jabber:client'/>",
        "plain text",
    ],
    ids=["malformed", "two-elements", "not-xml"],
)
def test_bad_frame_is_a_stream_error_and_others_carry_on(xmpp_server, frame):
    """§3.3.3: a message is exactly one well-formed element; anything else ends
    that stream with <not-well-formed/> and a <close/>, and other sessions go on."""

    async def scenario():
        witness = await connect(xmpp_server, "bob", "ws-witness")
        stream = WsStream(xmpp_server)
        try:
            await asyncio.to_thread(stream.open)
            await asyncio.to_thread(stream.send, frame)
            error = await asyncio.to_thread(stream.recv_until, "<close")
            assert '<not-well-formed xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>' in error
            assert "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>" in error
            witness.send_message(mto=witness.boundjid.full, mbody="still here", mtype="chat")
            message = await asyncio.wait_for(witness.messages.get(), 10)
            assert message["body"] == "still here"
        finally:
            stream.close()
            await disconnect(witness)

    asyncio.run(scenario())
