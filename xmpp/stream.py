"""An XML stream over one connection (RFC 6120 §4): what every kind of stream
shares, whatever it carries.

Theory of operation. A transport (TCP, WebSocket, BOSH) is attached to one
stream (`XmppServer.attach`) and hands it bytes (`data_received`) and the
connection's end (`connection_lost`); the stream answers through
`transport.write()`. The stream owns the parser, the stream id and header,
the shaping budgets (xmpp/shaping.py) and the pump that pauses and replays:

    data_received -> parser -> events -> _process -> handle_element()
                                      \\-> a step that needs I/O, or shaping:
                                          pause_reading, then _release replays
                                          the rest in order

Most events are handled synchronously. A step that needs I/O (the credential
lookup of SASL) returns an awaitable; it runs as a task while the stream
holds whatever arrives meanwhile (and the transport's reading is paused as
soon as anything does), and the held events are replayed in order
afterwards, so no stanza is lost or reordered and no task lives per idle
stream.

What a stream carries is its subclass's: `jabber:client` (xmpp/c2s.py) now;
`jabber:server` and `jabber:component:accept` streams are further
subclasses. A subclass names its content namespace, checks the header it
received, offers its features and handles each element; the base knows
nothing of SASL, binding or sessions. Top-level elements that are neither
stanzas nor the subclass's negotiation (XEP-0198's <r/>, <a/>, <enable/>)
go to the nonza handlers plugins registered (`plugins.nonza`).

Teardown is written once, here: whatever ends a stream (a stream error,
the peer's </stream:stream>, a dropped connection) comes to `_closed_down`,
which tells the server and then the subclass (`stream_ended`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .protocol.errors import StreamError
from .protocol.jid import JID, InvalidJID
from .protocol.parser import StreamClosed, StreamOpened, StreamParser
from .protocol.xml import NS_STREAMS, escape_attr, serialize
from .shaping import StreamShaper

if TYPE_CHECKING:
    from .server import XmppServer

log = logging.getLogger(__name__)


class XmlStream:
    """One stream on one transport. Subclasses set `namespace` and implement
    the methods marked "for subclasses"."""

    namespace = ""  # the stream's content namespace (RFC 6120 §4.8.2)
    stanza_tags: frozenset[str] = frozenset()  # set from `namespace`

    __slots__ = (
        "server",
        "transport",
        "parser",
        "stream_id",
        "_header_sent",
        "_closing",
        "_ended",
        "dropped",
        "_pending",
        "_paused",
        "_restart",
        "_shaper",
        "_resume_timer",
    )

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.namespace:
            ns = cls.namespace
            cls.stanza_tags = frozenset({f"{{{ns}}}message", f"{{{ns}}}presence", f"{{{ns}}}iq"})

    def __init__(self, server: XmppServer, transport) -> None:
        self.server = server
        self.transport = transport
        self.parser = self._new_parser()
        self.stream_id = ""
        self._header_sent = False
        self._closing = False
        self._ended = False
        # The connection went without a close handshake (or was cut for not
        # reading): what it carried may be resumed elsewhere (XEP-0198 §5).
        self.dropped = False
        self._pending: list | None = None
        self._paused = False  # the transport's reading is paused
        self._restart = False
        self._shaper = StreamShaper(server.limits, time.monotonic())
        self._resume_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transport.peer}>"

    @property
    def secure(self) -> bool:
        return bool(self.transport.secure)

    @property
    def closing(self) -> bool:
        """True once the stream is ending: nothing more is written to it."""
        return self._closing

    # -- for subclasses ------------------------------------------------------

    def check_header(self, attrs: dict[str, str]) -> None:
        """Raise StreamError if the peer's stream header is not acceptable."""

    def features(self) -> list[Element]:
        """The <stream:features/> children to offer after a header."""
        return []

    def handle_element(self, el: Element):
        """A top-level element of the stream; may return an awaitable (an I/O
        step, during which reading pauses)."""
        raise StreamError("unsupported-stanza-type", el.tag)

    def shaped(self) -> bool:
        """Whether the elements now arriving take a stanza token (XMPP_STANZAS_PER_SECOND)."""
        return False

    def stream_ended(self) -> None:
        """The stream is over (after the server has forgotten it)."""

    # -- bytes in ------------------------------------------------------------

    def _new_parser(self) -> StreamParser:
        limits = self.server.limits
        return self.transport.framing.parser(
            limits.max_stanza_size, limits.max_depth, limits.max_attributes
        )

    def data_received(self, data, size: int | None = None) -> None:
        """What the transport read: bytes, or for BOSH a parsed <body/> of
        `size` bytes."""
        if self._closing and self.parser.closed:
            return
        limits = self.server.limits
        now = time.monotonic()
        in_debt = self._shaper.read(len(data) if size is None else size, limits, now)
        try:
            events = self.parser.feed(data)
        except StreamError as exc:
            self.stream_error(exc)
            return
        if self._pending is not None:
            # Events behind a hold or an I/O step wait, in order; the
            # transport stops reading until they are handled.
            self._pending.extend(events)
            self._pause()
            return
        if events:
            self._process(events, now)
        if in_debt and self._pending is None and not self._closing:
            self._hold([], self._shaper.pause(limits, now, stanza_waiting=False))

    def _process(self, events: list, now: float | None = None, shaped: bool = True) -> None:
        limits = self.server.limits
        if now is None:
            now = time.monotonic()
        for index, event in enumerate(events):
            if self._closing and not isinstance(event, StreamClosed):
                return
            if (
                shaped
                and isinstance(event, Element)
                and self.shaped()
                and not self._shaper.admit_stanza(limits, now)
            ):
                # Over XMPP_STANZAS_PER_SECOND: this stanza and what follows
                # wait, in order, while the transport stops reading.
                self._hold(events[index:], self._shaper.pause(limits, now, stanza_waiting=True))
                return
            try:
                pending_work = self._handle_event(event)
            except StreamError as exc:
                self.stream_error(exc)
                return
            if self._restart:
                # A stream restart (after STARTTLS or SASL) discards whatever
                # followed in the old stream (RFC 6120 §5.4.3.3, §6.4.6).
                self._restart = False
                return
            if pending_work is not None:
                # Reading pauses only if more arrives meanwhile (data_received):
                # a client that waits for the answer, as every client does at
                # each login step, costs no pause and resume.
                self._pending = list(events[index + 1 :])
                if self._pending:
                    self._pause()
                self.server.spawn(self._complete(pending_work))
                return

    def _handle_event(self, event):
        if isinstance(event, Element):
            return self.handle_element(event)
        if isinstance(event, StreamOpened):
            return self._stream_opened(event)
        if isinstance(event, StreamClosed):
            self._peer_closed()
        return None

    def nonza(self, el: Element, bound: bool):
        """A nonza a plugin handles (plugins.nonza), before or after the
        stream carries stanzas; else <unsupported-stanza-type/>."""
        handler = self.server.registry.nonzas.get((el.tag, bound))
        if handler is None:
            raise StreamError("unsupported-stanza-type", el.tag)
        return handler(self, el)

    # -- the pause-and-replay pump (shaping and I/O steps) -------------------

    def _hold(self, events: list, delay: float) -> None:
        """Stop reading for `delay` seconds (shaping, xmpp/shaping.py): the
        client's TCP window fills and it slows down; nothing is refused."""
        self._pending = list(events)
        self._pause()
        self._resume_timer = asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        """Resume reading once the budgets allow, then handle what waited."""
        self._resume_timer = None
        if self._closing:
            return
        pending = self._pending or []
        limits = self.server.limits
        stanza_waiting = self.shaped() and bool(pending) and isinstance(pending[0], Element)
        delay = self._shaper.pause(limits, time.monotonic(), stanza_waiting)
        if delay:
            self._pause()
            self._resume_timer = asyncio.get_running_loop().call_later(delay, self._release)
            return
        self._pending = None
        self._resume()
        if pending:
            self._process(pending)

    async def _complete(self, work) -> None:
        try:
            await work
        except StreamError as exc:
            self.stream_error(exc)
        except Exception:
            log.exception("stream %r failed", self)
            self.stream_error(StreamError("internal-server-error"))
        if self._restart:
            self._restart = False
            self._pending = []  # the old stream's leftovers (RFC 6120 §6.4.6)
        if self._closing:
            return
        self._release()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resume_reading()

    def _drain_held(self) -> None:
        """Handle, unshaped, what a shaping hold keeps: it was taken from the
        client, and is not lost because the stream ends."""
        if self._resume_timer is None:
            return
        self._resume_timer.cancel()
        self._resume_timer = None
        pending, self._pending = self._pending or [], None
        self._process(pending, shaped=False)

    def restart(self) -> None:
        """A stream restart (RFC 6120 §5.4.3.3, §6.4.6): a new parser; what
        followed in the old stream is discarded."""
        self.parser.discard()
        self.parser = self._new_parser()
        self._restart = True

    # -- stream header and features (RFC 6120 §4.7, §4.3.2) ------------------

    def _stream_opened(self, event: StreamOpened) -> None:
        attrs = event.attrs
        self._send_header(attrs.get("from"))
        if event.default_ns != self.namespace:
            raise StreamError(
                "invalid-namespace", f"the default namespace must be {self.namespace}"
            )
        self.check_header(attrs)
        version = attrs.get("version", "0.9")
        if version.partition(".")[0] != "1":
            raise StreamError("unsupported-version", "this server speaks XMPP 1.0")
        features = b"".join(serialize(child, NS_STREAMS) for child in self.features())
        self.transport.write(self.transport.framing.features(features))

    def _send_header(self, peer_from: str | None) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        to = ""
        if peer_from:
            try:
                to = f" to='{escape_attr(str(JID.parse(peer_from)))}'"
            except InvalidJID:
                to = ""
        attributes = (
            f"id='{self.stream_id}' from='{self.server.domain}'{to} version='1.0' xml:lang='en'"
        )
        self.transport.write(self.transport.framing.header(attributes, self.namespace))
        self._header_sent = True

    # -- the end of the stream (RFC 6120 §4.4) -------------------------------

    def stream_error(self, error: StreamError) -> None:
        if self._closing:
            return
        log.debug("stream error to %r: %s", self, error)
        if not self._header_sent:
            self._send_header(None)
        framing = self.transport.framing
        self.transport.write(framing.error(error.to_bytes()) + framing.close())
        self._close_now()

    def close_stream(self, error: StreamError) -> None:
        """Close the stream from our side (shutdown: <system-shutdown/>, RFC 6120
        §4.9.3.20): the stream error, then </stream:stream>, and give the peer a
        moment to answer with its own before the transport is closed (§4.4)."""
        if self._closing:
            return
        self._drain_held()
        self._resume()  # for the peer's </stream:stream>
        self._closing = True
        if not self._header_sent:
            self._send_header(None)
        framing = self.transport.framing
        self.transport.write(framing.error(error.to_bytes()) + framing.close())

    def too_slow(self) -> None:
        """The peer does not read what it is sent (XMPP_MAX_OUTGOING_BUFFER):
        drop the connection; nothing more can reach it."""
        log.info("%r is not reading; disconnecting", self)
        self._closing = True
        self.dropped = True
        self.transport.abort()

    def _peer_closed(self) -> None:
        if not self._closing:
            self.transport.write(self.transport.framing.close())
        self._close_now()

    def _close_now(self) -> None:
        self._closing = True
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._closed_down()
        self.transport.close()

    def connection_lost(self) -> None:
        """The transport is gone (whichever: TCP, WebSocket, BOSH)."""
        self._drain_held()
        if not self._closing:
            self.dropped = True  # no close handshake: a session may outlive it (XEP-0198)
        self._closing = True
        self.parser.discard()
        self._closed_down()

    def _closed_down(self) -> None:
        """The one teardown: once per stream, however it ended."""
        if self._ended:
            return
        self._ended = True
        self.server.stream_closed(self)
        self.stream_ended()
