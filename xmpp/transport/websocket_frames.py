"""The WebSocket frames XMPP sends, on Daphne's WebSocket protocol, without
autobahn's general frame machinery.

An XMPP stream over WebSocket is one short text message per element, each
in one frame (RFC 7395 §3.3). autobahn, under Daphne, handles every frame
with a general state machine: a new XOR masker object per frame, traffic
statistics, and debug-log arguments formatted before each log call. That is
most of a WebSocket stanza's cost (bench/load.py --scenario websocket).
Its Twisted adapter also formats a debug-log line for every read.

This subclass takes the common case off that path and leaves everything
else to autobahn unchanged:

- incoming: while no frame is half read, whole final masked text frames of
  under 64 KiB (RFC 6455 §5.2) are unmasked here (§5.3) and handed to
  Daphne's onMessage, as autobahn would; a control frame, a fragment, a
  longer frame, a frame not yet complete, or text that is not UTF-8 (which
  autobahn fails with 1007, §8.1) stops the fast path and autobahn takes
  the rest of the bytes from there;
- outgoing: a text message, when no fragmented message or queued data is
  in the way and nothing is compressed, is one final unmasked frame (§5.1:
  a server never masks) written straight to the transport.

runxmpp installs it on Daphne's WebSocket factory; the Channels consumer
(xmpp.transport.websocket) behind it is unchanged.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet.tcp import Connection

_FINAL_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (RFC 6455 §5.2)
_MASKED = 0x80
_OPEN = AutobahnProtocol.STATE_OPEN
_SEND_GROUND = AutobahnProtocol.SEND_STATE_GROUND


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


class XmppWebSocketProtocol(WebSocketProtocol):
    """Daphne's WebSocket protocol with the fast path described above.

    Once the consumer has accepted the stream it may also attach the session
    (attach()): whole text frames then go straight to it and its frames
    straight to the socket, without the ASGI queue and a task switch each
    way. Order is kept: a frame goes straight only when nothing is queued
    for the consumer."""

    frame_receiver: Callable[[bytes], None] | None = None
    _socket_transport = None  # Twisted's TCP transport, found by buffered()

    def attach(self, frame_receiver: Callable[[bytes], None] | None) -> None:
        self.frame_receiver = frame_receiver

    def can_send_text(self) -> bool:
        """Whether a text message may go out as one frame now: nothing of
        autobahn's (a fragmented message, queued data) stands before it."""
        return (
            self.state == _OPEN
            and self.send_state == _SEND_GROUND
            and self._perMessageCompress is None
            and not self.autoFragmentSize
            and not self.send_queue
        )

    def send_text_now(self, payload: bytes) -> bool:
        """Write one text message as a frame now, if nothing stands before it."""
        if self.can_send_text():
            self.transport.write(text_frame(payload))
            return True
        return False

    def send_texts(self, payloads: list[bytes]) -> bool:
        """Write text messages, a frame each, in one write; False if they may not go now."""
        if not self.can_send_text():
            return False
        data = b"".join([text_frame(payload) for payload in payloads])
        transport = self.transport
        # Plain TCP only: under TLS (wss) the transport is Twisted's TLS
        # wrapper (or a Connection with TLS started), which encrypts in its write.
        if (
            isinstance(transport, Connection)
            and not transport.TLS
            and not self._twisted_buffered(transport)
        ):
            # Plain TCP with nothing waiting in Twisted: send now, one system
            # call, instead of buffering for the reactor's next turn (a send
            # and two epoll changes); what the socket does not take, Twisted
            # keeps and sends as usual.
            try:
                sent = transport.socket.send(data)
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
        socket = self._socket_transport or self._find_socket_transport()
        return 0 if socket is None else self._twisted_buffered(socket)

    def _find_socket_transport(self):
        """Twisted's TCP transport: ours, or under TLS the one beneath it
        (the TLS wrapper passes attribute look-ups through, so test the type)."""
        socket = self.transport
        while socket is not None and not isinstance(socket, Connection):
            socket = getattr(socket, "transport", None)
        self._socket_transport = socket
        return socket

    @staticmethod
    def _twisted_buffered(socket) -> int:
        return len(socket.dataBuffer) - socket.offset + socket._tempDataLen

    def dataReceived(self, data: bytes) -> None:
        # autobahn's Twisted adapter formats a debug-log line for every read,
        # logged or not; the bytes go to the same place.
        self._dataReceived(data)

    def _dataReceived(self, data: bytes) -> None:
        if (
            self.state == _OPEN
            and self.current_frame is None
            and not self.inside_message
            and not self.data
            and self._perMessageCompress is None
        ):
            data = self._whole_text_frames(data)
            if not data:
                return
        super()._dataReceived(data)

    def _whole_text_frames(self, data: bytes) -> bytes:
        """Deliver the whole text frames at the start of `data`; return the rest."""
        # Straight to the session only when nothing waits in the consumer's
        # queue; what this call delivers never goes there, so it stays empty.
        receiver = self.frame_receiver
        if receiver is None or self.muted or not self.application_queue.empty():
            receiver = self._to_consumer
        else:
            self.last_ping = time.time()  # as Daphne's onMessage, for its ping timeout
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
                    break
            offset = end
            receiver(payload)
            if self.state != _OPEN:
                return b""
        return data[offset:]

    def _to_consumer(self, payload: bytes) -> None:
        self.onMessage(payload, False)

    def sendMessage(
        self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False
    ):
        if isBinary or fragmentSize is not None or sync or not self.send_text_now(payload):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
