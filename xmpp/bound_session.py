"""A bound session (RFC 6120 §7): one full JID and what the server keeps of
it, apart from the stream that carries it.

A BoundSession is what the router, presence, MUC, pubsub and plugins see
and keep: it is the key of SessionManager, of room occupants and of
blocking's interest set. Its stream (xmpp/c2s.py) is replaceable: the
session is attached to one stream at a time, and the stream tells it when
it is gone (`stream_lost`). Without stream management a session ends with
its stream; with XEP-0198 resumption it stays detached and is attached to the
new stream instead, with its JID, presence, roster interest and rooms.

The interface is narrow on purpose. Readers: `jid`, `jid_str`, `account`,
`available`, `priority`, `last_presence`, `directed`, `roster_requested`,
`secure`, `stream`. Writes go through methods (`became_available`,
`remember_presence`, `add_directed`, ...), so what the session holds stays
consistent and the next feature (stream management's counters) has one
place to hook in. Output: `deliver`, `send_serialized`, `deliver_before_held`.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .protocol.errors import StreamError
from .protocol.jid import JID
from .protocol.xml import serialize

if TYPE_CHECKING:
    from .csi import OutputGate
    from .server import XmppServer
    from .sessions import AccountState
    from .stream import XmlStream
    from .stream_management import StreamManagement

log = logging.getLogger(__name__)


class BoundSession:
    __slots__ = (
        "server",
        "jid",
        "jid_str",
        "bare_str",
        "account",
        "available",
        "priority",
        "presence_sent",
        "roster_requested",
        "csi",
        "_last_presence",
        "_directed",
        "_held",
        "_stream",
        "_transport",
        "sm",
    )

    def __init__(self, server: XmppServer, jid: JID, account: AccountState) -> None:
        self.server = server
        self.jid: JID | None = jid  # None once the session has ended
        self.jid_str = str(jid)
        self.bare_str = str(jid.bare)
        self.account = account
        self.available = False
        self.priority = 0
        self.presence_sent = False
        self.roster_requested = False  # RFC 6121 §2.1.6: gets roster pushes
        self.csi: OutputGate | None = None  # XEP-0352: set while inactive (xmpp/csi.py)
        self._last_presence: Element | None = None  # answers probes (§4.3.2)
        self._directed: set[JID] | None = None  # directed presence (§4.6)
        self._held: list[bytes] | None = None
        self._stream: XmlStream | None = None
        self._transport = None  # the attached stream's, while it can be written to
        # XEP-0198 state once the client enabled it (xmpp/stream_management.py).
        self.sm: StreamManagement | None = None

    def __repr__(self) -> str:
        return f"<BoundSession {self.jid_str}>"

    # -- the stream that carries it ------------------------------------------

    @property
    def stream(self) -> XmlStream | None:
        """The stream this session is attached to; None when detached or ended."""
        return self._stream

    @property
    def secure(self) -> bool:
        stream = self._stream
        return stream is not None and stream.secure

    def attach(self, stream: XmlStream) -> None:
        self._stream = stream
        self._transport = stream.transport

    def detach(self, stream: XmlStream) -> None:
        """Leave `stream` (it dropped, or the session resumes elsewhere)."""
        if stream is self._stream:
            self._stream = None
            self._transport = None

    @property
    def detached(self) -> bool:
        """Bound, with no stream: waiting to be resumed (XEP-0198 §5)."""
        return self._stream is None and self.jid is not None

    def stream_lost(self, stream: XmlStream, dropped: bool = False) -> None:
        """Its stream has ended (closed, failed or dropped). The session ends
        with it (RFC 6120 §4.4), unless the connection dropped and the client
        asked for resumption (XEP-0198 §5): then it waits, detached, with
        its JID, presence, roster interest and rooms."""
        if stream is not self._stream:
            return
        self.detach(stream)
        sm = self.sm
        if dropped and sm is not None and sm.id is not None:
            log.debug("%r detached; resumable for %d s", self, sm.resume_seconds)
            sm.start_expiry(self)
            self._trim_detached()
            return
        self.end()

    def resend_unacked(self) -> None:
        """XEP-0198 §5: after <resumed/>, what the client had not acknowledged."""
        transport = self._transport
        framing = transport.framing
        for _number, data in self.sm.unacked:
            transport.write(framing.stanza(data))
        if self.sm.unacked:
            self.sm.after_send(self)

    def write_nonza(self, data: bytes) -> bool:
        """A nonza (XEP-0198's <r/>) on the attached stream; False if none."""
        transport = self._transport
        if transport is None or self._stream.closing:
            return False
        transport.write(data)
        return True

    def _trim_detached(self) -> None:
        """XMPP_SM_MAX_QUEUE: a detached session's oldest unacknowledged
        stanzas go where they would go if it had ended."""
        sm = self.sm
        excess = len(sm.unacked) - sm.max_queue
        if excess <= 0:
            return
        from .stream_management import give_up

        oldest = [sm.unacked.popleft()[1] for _ in range(excess)]
        give_up(self, oldest, still_bound=True)

    def stream_error(self, error: StreamError) -> None:
        """End the session's stream with `error` (a kick, a removed account)."""
        stream = self._stream
        if stream is not None:
            stream.stream_error(error)
        else:
            self.end()

    def replaced(self) -> None:
        """A new session binds this full JID (RFC 6120 §7.7.2.2): this one is
        told <conflict/> and ends before the new one is bound."""
        self.stream_error(StreamError("conflict", "replaced by a new session"))
        self.end()  # in case its stream was already closing and did nothing

    # -- what the server knows of it (RFC 6121 §4) ---------------------------

    @property
    def last_presence(self) -> Element | None:
        """The last available presence it broadcast, else None."""
        return self._last_presence

    @property
    def directed(self) -> set[JID] | None:
        """Who got directed presence from it (§4.6.3), to tell when it goes;
        read it, change it through add_directed/remove_directed/take_directed."""
        return self._directed

    def became_available(self, priority: int) -> bool:
        """An available broadcast presence; True if it is the first (§4.2)."""
        self.priority = max(-128, min(127, priority))  # RFC 6121 §4.7.2.3
        initial = not self.available and not self.presence_sent
        self.available = True
        self.presence_sent = True
        return initial

    def became_unavailable(self) -> None:
        self.available = False

    def remember_presence(self, presence: Element | None) -> None:
        self._last_presence = presence

    def add_directed(self, to: JID) -> None:
        if self._directed is None:
            self._directed = set()
        self._directed.add(to)

    def remove_directed(self, to: JID) -> None:
        if self._directed:
            self._directed.discard(to)

    def take_directed(self) -> set[JID]:
        """Forget, and return, who got directed presence."""
        directed, self._directed = self._directed, None
        return directed or set()

    def request_roster(self) -> None:
        """It asked for the roster: it gets pushes from now on (§2.1.6)."""
        self.roster_requested = True

    # -- bytes out -----------------------------------------------------------

    def deliver(self, stanza: Element) -> None:
        """Write a routed stanza; a client that does not read is disconnected."""
        self.send_serialized(serialize(stanza))

    def send_serialized(self, data: bytes) -> None:
        """deliver() for a stanza serialised once for many recipients."""
        transport = self._transport
        if self.csi is not None and self.csi.holds(data):  # XEP-0352 output gate, xmpp/csi.py
            return  # held: not written, so not counted by XEP-0198 yet
        if (
            (self.csi is not None or self._stream is None)
            and data[:8] == b"<message"
            and self.server.registry.message_waits_hooks
        ):
            self._message_waits(data)
        sm = self.sm
        writable = transport is not None and not self._stream.closing
        if sm is None and not writable:
            return
        if self._held is not None:
            self._held.append(data)
            return
        if sm is not None:
            # XEP-0198: counted and kept until acknowledged, whether it can
            # be written now or waits for the session to be resumed.
            sm.stanza_sent(data)
            if not writable:
                if self.detached:
                    self._trim_detached()
                return
        if transport.buffered > self.server.limits.max_outgoing_buffer:
            self._transport = None
            self._stream.too_slow()
            return
        transport.write(transport.framing.stanza(data))
        if sm is not None and not sm.requested:
            sm.after_send(self)

    def _message_waits(self, data: bytes) -> None:
        """A message for a client that may not see it now (detached or
        inactive): the hooks that would wake it (XEP-0357 push)."""
        if self.jid is None:
            return
        for hook in self.server.registry.message_waits_hooks:
            try:
                hook(self, data)
            except Exception:
                log.exception("message-waits hook failed for %r", self)

    def deliver_before_held(self, stanza: Element) -> None:
        """deliver() for an initial-presence hook: ahead of stanzas held meanwhile."""
        held, self._held = self._held, None
        self.send_serialized(serialize(stanza))
        self._held = held

    def run_initial_presence_hooks(self):
        """The hooks after the first available presence (offline messages), as
        an awaitable; stanzas routed to it from now until they are done wait
        behind what they deliver."""
        self._held = []
        return self._initial_presence_hooks()

    async def _initial_presence_hooks(self) -> None:
        try:
            for hook in self.server.registry.initial_presence_hooks:
                result = hook(self)
                if inspect.isawaitable(result):
                    await result
        finally:
            held, self._held = self._held, None
            for data in held or ():
                self.send_serialized(data)

    # -- the end (RFC 6121 §4.5.2) -------------------------------------------

    def end(self) -> None:
        """The session is over: unbound, unavailable presence to whoever saw
        it, the session-closed hooks. Once."""
        if self.jid is None:
            return
        was_available = self.available
        self.available = False
        self.server.sessions.unbind(self)
        try:
            self.server.registry.presence.session_ended(self, was_available)
        except Exception:
            log.exception("presence handler failed for %r", self)
        for hook in self.server.registry.session_closed_hooks:
            try:
                result = hook(self)
                if inspect.isawaitable(result):
                    self.server.spawn(result)
            except Exception:
                log.exception("session-closed hook failed")
        sm = self.sm
        if sm is not None:
            from .stream_management import forget, give_up

            forget(self)
            unacked = sm.take_unacked()
            if unacked:
                try:
                    give_up(self, unacked, still_bound=False)
                except Exception:
                    log.exception("could not hand on what %r never acknowledged", self)
        self.jid = None
