"""The WebSocket fast path: XMPP's frames (RFC 7395 §3.3) between Twisted's
socket and the XMPP stream, past autobahn's general frame machinery and
Daphne's ASGI queue. This is the one module that relies on how Daphne,
autobahn and Twisted work inside; the rest of the code uses only their
documented interfaces.

Why: an XMPP stream over WebSocket is one short text message per element,
each in one frame. autobahn, under Daphne, takes every frame through a
general state machine (a masker object, traffic statistics, debug-log
arguments formatted before each log call: 20-30 us a frame here, more than a
whole stanza costs over TCP) and writes every message with a call as heavy;
Daphne then hands each message to the consumer through an asyncio queue and
a task switch. No documented interface of either avoids that cost (README,
"WebSocket fast path: supported versions").

What this module does, once the Channels consumer has accepted a stream and
attached its stream (the handshake, Origin and subprotocol checks, accept
and close stay with the consumer):

- incoming: while autobahn holds no partial frame or message, whole final
  masked text frames of under 64 KiB (RFC 6455 §5.2) are unmasked here
  (§5.3), their UTF-8 checked (§8.1), and handed to the stream; anything
  else (a control frame, a fragment, a binary or longer frame, a frame cut
  by the read, text that is not UTF-8) goes to autobahn from that frame on,
  and the messages autobahn assembles go to the stream the same way;
- outgoing: each loop turn's text messages to a client leave as final
  unmasked frames (§5.1: a server never masks) in one write, on plain TCP
  with one send() when Twisted has nothing buffered.

What it relies on beyond documented interfaces (CONTRACT), checked by
contract_problems() when runxmpp installs it, and more closely, with
behaviour, by tests/test_websocket_contract.py:

- autobahn: `state == STATE_OPEN` (handshake done, no Close sent or
  received); `current_frame is None`, `not inside_message`, `data == b""`
  (no partial frame or message held);
- Daphne: its WebSocketProtocol, subclassed here (it documents no
  extension point); `Server.ws_factory`, made in run(), whose protocol
  class its HTTP upgrade builds (runxmpp puts this one there); `muted`, honoured
  as Daphne's onMessage does; `last_ping`, which Daphne's onMessage
  refreshes and its ping timer reads; it sends whole messages only, never
  with autobahn's streaming or synchronous sends, so no half-sent message
  is in the way of ours;
- Twisted: a TCP transport's unsent bytes are `len(dataBuffer) - offset
  + _tempDataLen` (abstract.FileDescriptor).

The rest is documented: Twisted's dataReceived, connectionMade,
connectionLost, write(), getHandle(), ISSLTransport; autobahn's
onMessage(payload, isBinary) and sendMessage(); the ASGI scope's client and
server, which are the connection's addresses (the consumer claims its
protocol by them: runxmpp sets no proxy header, which would change client).

If any of that does not hold at start, install() logs one WARNING and
leaves Daphne's own protocol: every message then takes the Channels
consumer's path, with the same behaviour, slower.
"""

from __future__ import annotations

import inspect
import logging
import os
import struct
import time
from base64 import b64encode
from collections.abc import Callable

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection

log = logging.getLogger(__name__)

_FINAL_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (RFC 6455 §5.2)
_MASKED = 0x80
_OPEN = getattr(WebSocketProtocol, "STATE_OPEN", None)  # checked by contract_problems()

# Protocols whose consumer has not claimed them yet, by the connection's
# addresses as the ASGI scope gives them (client, then server).
_unclaimed: dict[tuple, XmppWebSocketProtocol] = {}


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR the payload with the 4-byte masking key repeated (RFC 6455 §5.3)."""
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little"
    )


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((_FINAL_TEXT, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", _FINAL_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FINAL_TEXT, 127, size) + payload


def twisted_unsent(transport: FileDescriptor) -> int:
    """Bytes written to a Twisted TCP transport that its socket has not taken."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def install(http_server) -> bool:
    """Give Daphne's WebSocket factory (made in Server.run) this module's
    protocol if the contract holds; else log one WARNING and keep Daphne's."""
    problems = contract_problems(http_server)
    if problems:
        log.warning(
            "WebSocket fast path off, every frame takes the Channels consumer's path "
            "(slower): %s. See README, 'WebSocket fast path: supported versions'.",
            "; ".join(problems),
        )
        return False
    http_server.ws_factory.protocol = XmppWebSocketProtocol
    return True


def claim(scope) -> XmppWebSocketProtocol | None:
    """The protocol of the connection `scope` describes, for its consumer;
    None when the fast path is not installed (or under another server)."""
    client, server = scope.get("client"), scope.get("server")
    if not client or not server:
        return None
    return _unclaimed.pop((client[0], client[1], server[0], server[1]), None)


def _addresses(transport) -> tuple | None:
    # As Daphne's onConnect makes the scope's client and server.
    peer, host = transport.getPeer(), transport.getHost()
    if not all(hasattr(a, "host") and hasattr(a, "port") for a in (peer, host)):
        return None  # not TCP: Daphne's scope has no addresses either
    return (str(peer.host), peer.port, str(host.host), host.port)


class XmppWebSocketProtocol(WebSocketProtocol):
    """Daphne's WebSocket protocol with the fast path described above.

    Once attached, every message goes straight to the stream, in order,
    without the ASGI queue and a task switch each way; the consumer still
    gets connect and disconnect through Daphne."""

    _receiver: Callable[[bytes], None] | None = None
    _queued = 0  # messages ever given to Daphne's queue
    _addresses: tuple | None = None
    _tcp: Connection | None = None  # found by _find_tcp()
    _plain_socket = None

    # -- the consumer's side ------------------------------------------------

    def attach(self, receiver: Callable[[bytes], None] | None) -> None:
        """Send every message from now on to `receiver` (None: to the consumer).
        If a message is already queued for the consumer (a client that sent
        frames before the handshake's answer), all keep going there, in order."""
        self._receiver = receiver if not self._queued else None

    def can_send_text(self) -> bool:
        """Whether a text message may go out as a frame now: the WebSocket is
        open and no Close has been sent (RFC 6455 §5.5.1: no data after it).
        Daphne sends whole messages only, so autobahn never has half a
        message out when ours go (CONTRACT)."""
        return self.state == _OPEN

    def send_texts(self, payloads: list[bytes]) -> bool:
        """Write text messages, a frame each, in one write; False if they may not go now."""
        if self.state != _OPEN:
            return False
        data = b"".join([text_frame(payload) for payload in payloads])
        tcp = self._tcp or self._find_tcp()
        if self._plain_socket is not None and not twisted_unsent(tcp):
            # Plain TCP with nothing waiting in Twisted: send now, one system
            # call, instead of buffering for the reactor's next turn (a send
            # and two epoll changes); what the socket does not take, Twisted
            # keeps and sends as usual.
            try:
                sent = self._plain_socket.send(data)
            except OSError:  # EAGAIN, or an error Twisted meets on its own write
                sent = 0
            if sent == len(data):
                return True
            data = data[sent:]
        self.transport.write(data)
        return True

    def buffered(self) -> int:
        """Bytes written and not yet taken by the socket (Twisted's buffer,
        under TLS the one below it): what a client that does not read grows."""
        tcp = self._tcp or self._find_tcp()
        return 0 if tcp is None else twisted_unsent(tcp)

    def _find_tcp(self) -> Connection | None:
        """Twisted's TCP transport: ours, or under TLS (wss) the one beneath
        it (the TLS wrapper passes attribute look-ups through, so test the
        type); and its socket, when ours is that TCP transport without TLS
        (else Twisted's TLS layer must encrypt what is written)."""
        tcp = self.transport
        while tcp is not None and not isinstance(tcp, Connection):
            tcp = getattr(tcp, "transport", None)
        self._tcp = tcp
        if tcp is not None and tcp is self.transport and not ISSLTransport.providedBy(tcp):
            self._plain_socket = tcp.getHandle()
        return tcp

    # -- Twisted's and autobahn's callbacks -------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self._addresses = _addresses(self.transport)
        if self._addresses is not None:
            _unclaimed[self._addresses] = self

    def connectionLost(self, reason=connectionDone) -> None:
        if _unclaimed.get(self._addresses) is self:
            del _unclaimed[self._addresses]
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if (
            self.state == _OPEN
            and self.current_frame is None
            and not self.inside_message
            and not self.data
        ):
            data = self._whole_text_frames(data)
            if not data:
                return
        super().dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A message autobahn assembled goes where the fast path's go."""
        if self._attached():
            self._receiver(payload)
        else:
            self._queue_for_consumer(payload, isBinary)

    def sendMessage(
        self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False
    ):
        # What the consumer sends through ASGI (Daphne's serverSend) takes the
        # fast path too when it is a plain text message.
        if isBinary or fragmentSize is not None or sync or not self.send_texts([payload]):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    # -- the fast path ------------------------------------------------------

    def _attached(self) -> bool:
        """Whether messages go straight to the stream now (else to Daphne)."""
        if self._receiver is None or self.muted:
            return False
        self.last_ping = time.time()  # as Daphne's onMessage, for its ping timer
        return True

    def _queue_for_consumer(self, payload: bytes, isBinary: bool = False) -> None:
        self._queued += 1
        WebSocketProtocol.onMessage(self, payload, isBinary)

    def _whole_text_frames(self, data: bytes) -> bytes:
        """Deliver the whole text frames at the start of `data`; return the rest."""
        receiver = self._receiver if self._attached() else self._queue_for_consumer
        offset, size = 0, len(data)
        while size - offset >= 6 and data[offset] == _FINAL_TEXT:
            length = data[offset + 1]
            if not length & _MASKED:
                break  # an unmasked client frame: autobahn fails the connection (§5.1)
            length &= 0x7F
            start = offset + 2
            if length == 126:
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length == 127:
                break
            end = start + 4 + length
            if end > size:
                break
            payload = unmask(data[start + 4 : end], data[start : start + 4])
            if not payload.isascii():
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # autobahn fails it with 1007 (§8.1)
            offset = end
            receiver(payload)
            if self.state != _OPEN:
                return b""
        return data[offset:]


# -- the contract ---------------------------------------------------------------


def contract_problems(http_server=None) -> list[str]:
    """What of CONTRACT does not hold in the installed daphne, autobahn and
    Twisted, each problem naming what changed; [] when all holds. Cheap:
    names and signatures, and an in-memory handshake and frame."""
    problems = []
    for check in (_signatures, _daphne_names, _autobahn_receive_state, _twisted_unsent):
        try:
            problems += check()
        except Exception as exc:  # a changed library fails in ways of its own
            problems.append(f"{check.__doc__.strip()}: {type(exc).__name__}: {exc}")
    if http_server is not None and not isinstance(
        getattr(http_server, "ws_factory", None), WebSocketFactory
    ):
        problems.append("daphne Server.ws_factory is not a daphne WebSocketFactory after run()")
    return problems


_OVERRIDDEN = {
    # method: the parameters this module's override takes (and passes on)
    "connectionMade": ["self"],
    "connectionLost": ["self", "reason"],
    "dataReceived": ["self", "data"],
    "onMessage": ["self", "payload", "isBinary"],
    "sendMessage": ["self", "payload", "isBinary", "fragmentSize", "sync", "doNotCompress"],
}


def _signatures() -> list[str]:
    """daphne/autobahn: the methods this module overrides"""
    problems = []
    for name, expected in _OVERRIDDEN.items():
        parameters = list(inspect.signature(getattr(WebSocketProtocol, name)).parameters)
        if parameters != expected:
            problems.append(
                f"WebSocketProtocol.{name}{tuple(parameters)}, expected {tuple(expected)}"
            )
    return problems


def _daphne_names() -> list[str]:
    """daphne: muted and last_ping"""
    problems = []
    if WebSocketProtocol.__dict__.get("muted") is not False:
        problems.append("daphne WebSocketProtocol.muted is no longer a class attribute False")
    for method in (WebSocketProtocol.onMessage, WebSocketProtocol.check_timeouts):
        if "last_ping" not in method.__code__.co_names:
            problems.append(f"daphne WebSocketProtocol.{method.__name__} no longer uses last_ping")
    return problems


def open_autobahn_protocol(on_message: Callable[[bytes], None]):
    """An autobahn server protocol, opened by a handshake in memory; its
    messages go to `on_message`. For the contract, in a throwaway factory."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet.testing import StringTransport

    class Probe(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            on_message(payload)

    factory = WebSocketServerFactory()
    factory.protocol = Probe
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    key = b64encode(os.urandom(16))
    protocol.dataReceived(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return protocol


def masked_text_frame(payload: bytes, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client's final text frame (RFC 6455 §5.2, masked as §5.3 requires)."""
    assert len(payload) < 126
    return bytes((_FINAL_TEXT, _MASKED | len(payload))) + key + unmask(payload, key)


def _autobahn_receive_state() -> list[str]:
    """autobahn: state, current_frame, inside_message, data"""
    problems = []
    received = []
    protocol = open_autobahn_protocol(received.append)

    def at_frame_boundary() -> bool:
        return protocol.current_frame is None and not protocol.inside_message and not protocol.data

    if protocol.state != _OPEN:
        problems.append(f"autobahn state is {protocol.state!r} after the handshake, not STATE_OPEN")
    if not at_frame_boundary():
        problems.append("autobahn current_frame/inside_message/data show a frame before any")
    frame = masked_text_frame(b"<presence/>")
    protocol.dataReceived(frame[:5])
    if at_frame_boundary():
        problems.append("autobahn current_frame/data do not show a frame cut by the read")
    protocol.dataReceived(frame[5:])
    if received != [b"<presence/>"] or not at_frame_boundary():
        problems.append("autobahn current_frame/data do not show a completed frame as done")
    protocol.sendClose(1000)
    if protocol.state == _OPEN:
        problems.append("autobahn state stays STATE_OPEN after sendClose")
    protocol.connectionLost(connectionDone)
    return problems


def _twisted_unsent() -> list[str]:
    """twisted: FileDescriptor dataBuffer, offset, _tempDataLen"""

    class NoReactor:
        def addWriter(self, writer) -> None:
            pass

        removeWriter = addWriter

    if not issubclass(Connection, FileDescriptor):
        return ["twisted tcp.Connection is no longer an abstract.FileDescriptor"]
    transport = FileDescriptor(reactor=NoReactor())
    transport.connected = True
    transport.write(b"12345")
    transport.writeSequence([b"678", b"9"])
    before = twisted_unsent(transport)
    transport.writeSomeData = lambda data: 4  # the socket takes 4 bytes
    transport.doWrite()
    after = twisted_unsent(transport)
    if (before, after) != (9, 5):
        return [
            "twisted FileDescriptor len(dataBuffer) - offset + _tempDataLen gave "
            f"{before} then {after} unsent bytes, expected 9 then 5"
        ]
    return []
