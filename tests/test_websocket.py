"""XMPP over WebSocket (RFC 7395) at /xmpp-websocket, over a real WebSocket
(the `websockets` library) against the server started by the fixture."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

from .clients import connect, disconnect
from .conftest import PASSWORD, start_server, stop_server
from .scram_client import ScramSha256Client

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class WsStream:
    """One WebSocket speaking RFC 7395 frames."""

    def __init__(self, server, subprotocol: str = "xmpp", max_queue: int = 16) -> None:
        self.server = server
        self.ws = ws_connect(
            f"ws://127.0.0.1:{server.http_port}/xmpp-websocket",
            subprotocols=[subprotocol],
            open_timeout=10,
            max_queue=max_queue,  # frames read ahead; beyond it the socket is not read
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

    def login(
        self, user: str, resource: str, password: str = PASSWORD, *, bind: bool = True
    ) -> str:
        """SASL SCRAM-SHA-256 (RFC 5802, 7677) by hand, then bind; returns the full
        JID (with `bind=False`, the features after the restart, unbound)."""
        self.open()
        scram = ScramSha256Client(user, password)
        self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{scram.first_message()}</auth>"
        )
        challenge = self.recv_until("<challenge")
        server_first = re.search(r">([^<]+)</challenge>", challenge).group(1)
        self.send(f"<response xmlns='{NS_SASL}'>{scram.final_message(server_first)}</response>")
        assert "<success" in self.recv_until("<success|<failure")
        features = self.open()  # §3.5: the stream restarts with a new <open/>
        if not bind:
            return features
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


def test_client_that_does_not_read_is_disconnected_and_others_carry_on(tmp_path):
    """ARCHITECTURE.md backpressure: a WebSocket client that stops reading is
    disconnected once XMPP_MAX_OUTGOING_BUFFER bytes wait for it, instead of
    growing the server's memory; its sender's session carries on."""
    server = start_server(
        tmp_path / "server",
        DATABASE_URL="",
        REDIS_URL="",
        XMPP_MAX_OUTGOING_BUFFER="262144",
        XMPP_STANZAS_PER_SECOND="100000",
        XMPP_C2S_BYTES_PER_SECOND="0",
    )
    try:
        server.manage("register", "--from-file", "-", input=f"slow {PASSWORD}\nfast {PASSWORD}\n")
        reader = WsStream(server, max_queue=1)
        reader_jid = reader.login("slow", "r")
        sender = WsStream(server)
        sender.login("fast", "s")
        body = "x" * 8192
        deadline = time.monotonic() + 60
        sent = 0
        # Loopback socket buffers take a few MiB before the server's own
        # buffer grows: send until the server gives up on the reader.
        while "is not reading; disconnecting" not in server.log():
            assert time.monotonic() < deadline, "the reader was never disconnected"
            for _ in range(50):
                sender.send(
                    f"<message xmlns='jabber:client' type='chat' to='{reader_jid}' "
                    f"id='m{sent}'><body>{body}</body></message>"
                )
                sent += 1
        sender.send(
            "<iq xmlns='jabber:client' type='get' id='alive' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert re.search(r"type=.result.", sender.recv_until(r"id=.alive."))
        sender.close()
    finally:
        stop_server(server)


def test_fragmented_message_and_control_frames_keep_their_order(xmpp_server):
    """RFC 6455 §5.4, §5.5: a message split over continuation frames, with a
    ping between its fragments' deliveries and whole messages after it, is one
    element to the server, answered in order (the fragments take autobahn's
    path, the whole frames the fast one)."""
    stream = WsStream(xmpp_server)
    stream.login("alice", "fragments")
    ping = (
        "<iq xmlns='jabber:client' type='get' to='localhost' id='{}'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>"
    )
    stream.ws.send(iter([ping.format("f1")[:40], ping.format("f1")[40:]]))
    stream.ws.ping().wait(10)
    stream.send(ping.format("f2"))
    stream.send(ping.format("f3"))
    answers = stream.recv_until(r"id=.f3.")
    assert [m for m in re.findall(r"id=.(f\d).", answers)] == ["f1", "f2", "f3"]
    stream.close()


def test_text_frame_that_is_not_utf8_closes_with_1007(xmpp_server):
    """RFC 6455 §8.1: text that is not UTF-8 fails the WebSocket (1007)."""
    stream = WsStream(xmpp_server)
    stream.open()
    # The client library refuses to send bad text; write the frame beneath it.
    with stream.ws.protocol_mutex:
        stream.ws.protocol.send_text(b"<message xmlns='jabber:client'>\xff\xfe</message>")
        stream.ws.send_data()
    with pytest.raises(ConnectionClosed) as closed:
        stream.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
