"""XMPP over WebSocket (RFC 7395) as a Channels consumer at /xmpp-websocket.

Frames in, frames out: each message is one element (§3.3), framed by
xmpp.protocol.framing.WebSocketFraming; the ClientStream behind it is the
same one a TCP client gets, with the same router and limits. There is no
STARTTLS on a WebSocket: the stream is secure when the HTTP side is (wss),
or when the operator says so for a development server on loopback
(XMPP_WEBSOCKET_CONSIDER_SECURE, as Prosody's consider_websocket_secure).

Cost: Daphne's WebSocket layer (autobahn) handles every frame with a general
state machine; runxmpp gives Daphne xmpp.transport.websocket_frames'
protocol instead, which takes XMPP's whole text frames off that path, and
once a stream is accepted this consumer attaches its stream to that
protocol, so frames go straight between socket and stream. The consumer
still does everything else: the handshake, Origin and subprotocol checks,
and the messages that cannot go straight (read before its stream was
attached, or every one when runxmpp kept Daphne's own protocol because the
installed libraries do not match what websocket_frames relies on), which
reach receive() in order. It also reads no channel layer and closes no
database connections around frames (a worker-thread hop each).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from ..protocol.framing import WebSocketFraming

if TYPE_CHECKING:
    from ..c2s import ClientStream

log = logging.getLogger(__name__)

SUBPROTOCOL = "xmpp"  # RFC 7395 §3.1


class WebSocketTransport:
    """The transport a ClientStream writes to, over one WebSocket."""

    framing = WebSocketFraming()
    # XEP-0198 stream management on this transport (xmpp/stream_management.py).
    offers_stream_management = True
    channel_bindings: dict[str, bytes] = {}

    __slots__ = (
        "consumer",
        "server",
        "stream",
        "peer",
        "secure",
        "direct",
        "_batch",
        "_queued",
        "_out",
        "_sending",
        "_closed",
    )

    def __init__(self, consumer: XmppWebSocketConsumer, server, peer: str, secure: bool) -> None:
        self.consumer = consumer
        self.server = server
        self.stream: ClientStream | None = None
        self.peer = peer
        self.secure = secure
        # Daphne's protocol when it can take frames straight (websocket_frames).
        self.direct = None
        self._batch: list[bytes] | None = None  # frames of this loop turn, for direct
        self._queued = 0  # bytes in _out
        self._out: deque[bytes | None] = deque()
        self._sending = False
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes not yet taken by the client's socket, for the session's limit."""
        direct = self.direct
        queued = self._queued + sum(map(len, self._batch)) if self._batch else self._queued
        return queued + (direct.buffered() if direct is not None else 0)

    def write(self, data: bytes) -> None:
        """Send one frame. When Daphne's protocol can take frames straight and
        nothing is queued before it, the frames of this loop turn leave
        together at its end, in one write (transport/batching.py); else the
        frame is queued for the ASGI send, in order, from one task at a time."""
        if self._closed:
            return
        if self.direct is not None and not self._out and self.direct.can_send_text():
            if self._batch is None:
                self._batch = [data]
                self.server.write_batcher.mark(self)
            else:
                self._batch.append(data)
            return
        self.flush()
        self._out.append(data)
        self._queued += len(data)
        self._start_sending()

    def flush(self) -> None:
        """Write this turn's frames straight (WriteBatcher calls it)."""
        batch, self._batch = self._batch, None
        if not batch or self._closed:  # gone meanwhile: nobody to write to
            return
        if self.direct is not None and not self._out and self.direct.send_texts(batch):
            return
        self._out.extend(batch)
        self._queued += sum(map(len, batch))
        self._start_sending()

    def close(self) -> None:
        """Close the WebSocket once the frames queued before have been sent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._out.append(None)
        self._start_sending()

    def abort(self) -> None:
        self._closed = True
        self._batch = None
        self._out.clear()
        self._queued = 0
        self._out.append(None)
        self._start_sending()

    def pause_reading(self) -> None:
        """Stop reading the socket (Twisted's transport is a push producer);
        frames already read reach the stream, which keeps them in order.
        Under a server other than runxmpp's Daphne there is no socket to
        pause, and the stream only queues."""
        if self.direct is not None and not self._closed:
            self.direct.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self.direct is not None and not self._closed:
            self.direct.transport.resumeProducing()

    def _start_sending(self) -> None:
        if not self._sending:
            self._sending = True
            self.server.spawn(self._send_all())

    async def _send_all(self) -> None:
        send = self.consumer.base_send
        try:
            while self._out:
                frame = self._out.popleft()
                if frame is None:
                    await self.consumer.close()
                    self._out.clear()
                    self._queued = 0
                    return
                self._queued -= len(frame)
                # RFC 7395 §3.3: each message is UTF-8 text.
                await send({"type": "websocket.send", "text": frame.decode("utf-8")})
        except Exception:
            log.debug("WebSocket to %s went away while sending", self.peer, exc_info=True)
        finally:
            self._sending = False


class XmppWebSocketConsumer(AsyncWebsocketConsumer):
    transport: WebSocketTransport | None = None

    async def __call__(self, scope, receive, send) -> None:
        """As Channels' AsyncConsumer, for a consumer without a channel layer:
        stanzas go through the router, never the layer, so messages are read
        one after the other instead of racing a layer's receive (a task and an
        asyncio.wait per frame), and no database connection is closed around
        each frame (Channels' aclose_old_connections is a worker-thread hop;
        a session's database work runs through the ORM's own async calls)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    await self.websocket_receive(message)
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass

    async def dispatch(self, message) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        await self.disconnect(message.get("code", 1006))
        raise StopConsumer()

    async def connect(self) -> None:
        from ..server import XmppServer

        server = XmppServer.current
        if server is None or SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self.close()  # §3.1: only the 'xmpp' subprotocol is spoken here
            return
        if not _origin_allowed(self.scope):
            await self.close()
            return
        client = self.scope.get("client") or ("", 0)
        peer = client[0] or ""
        if not server.admit(peer):
            await self.close()
            return
        secure = self.scope.get("scheme") == "wss" or settings.XMPP_WEBSOCKET_CONSIDER_SECURE
        transport = self.transport = WebSocketTransport(self, server, peer, secure)
        await self.accept(subprotocol=SUBPROTOCOL)
        stream = transport.stream = server.attach(transport)
        protocol = _daphne_protocol(self.scope)
        if protocol is not None:
            transport.direct = protocol
            protocol.attach(stream.data_received)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.transport is None or self.transport.stream is None:
            return
        data = text_data.encode("utf-8") if text_data is not None else (bytes_data or b"")
        self.transport.stream.data_received(data)

    async def disconnect(self, code: int) -> None:
        transport = self.transport
        if transport is None or transport.stream is None:
            return
        stream, transport.stream = transport.stream, None
        transport._closed = True
        if transport.direct is not None:
            transport.direct.attach(None)
            transport.direct = None
        stream.connection_lost()
        await asyncio.sleep(0)


def _daphne_protocol(scope):
    """The fast path's protocol for this connection (xmpp/transport/websocket_frames.py),
    found by the addresses in the ASGI scope; None when runxmpp did not install it
    (another server, or a Daphne, autobahn or Twisted it was not verified on)."""
    from .websocket_frames import claim

    return claim(scope)


def _origin_allowed(scope) -> bool:
    """XMPP_WEBSOCKET_ORIGINS: '*' (the default, for development) or a list."""
    allowed = settings.XMPP_WEBSOCKET_ORIGINS
    if "*" in allowed:
        return True
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1")
    return not origin or origin in allowed
