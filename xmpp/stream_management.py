"""Stream management (XEP-0198 v1.6) for client streams: acknowledgements
both ways, and resumption of a session whose connection dropped.

What this module owns:

- the stream feature `<sm xmlns='urn:xmpp:sm:3'/>` after SASL (§2), on the
  transports that can carry it (TCP, direct TLS, WebSocket; not BOSH,
  which has its own acknowledgements);
- the nonzas: <enable/> after bind (§3), <r/> and <a/> (§4), <resume/>
  after SASL and before bind (§5);
- `StreamManagement`, the state of one bound session, kept on it
  (`BoundSession.sm`): it outlives the stream, because a session that
  resumes is the same object on a new stream (docs/architecture.md);
- the resumable sessions by id, and the ids of expired ones (§5's
  <failed h=''/> for a session this server knew).

Counting. Inbound, `h` is the number of stanzas from the client that are
handled (xmpp/handled.py: delivered to a session, or committed to storage);
outbound, every stanza written to the session is counted and kept, as
bytes, until the client acknowledges it. A detached session keeps counting
and keeping what is routed to it, up to XMPP_SM_MAX_QUEUE stanzas; past
that, its oldest go where they would go if it had ended (`give_up`).

The server asks for an acknowledgement itself (§4 "SHOULD request") when
XMPP_SM_ACK_EVERY stanzas are unacknowledged, or XMPP_SM_ACK_DELAY seconds
after the first of them, one request at a time.

Ends. A session whose stream dropped without a close handshake stays
detached for the resumption time it was given (XMPP_SM_RESUME_TIMEOUT, or
the client's `max` up to XMPP_SM_MAX_RESUME_TIMEOUT). When it expires, or
ends any other way with stanzas unacknowledged, those are not lost (§5
"handle unacknowledged stanzas"; RFC 6121 §8.5.3.2 for a full JID that is
gone): a message with content goes to the account's other resources or to
offline storage, an IQ request gets an error to its sender, presence and
chat states are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from django.conf import settings

from .plugins import plugins
from .protocol.errors import StanzaError, StreamError
from .protocol.jid import JID, InvalidJID
from .protocol.xml import escape_attr

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .c2s import ClientStream

log = logging.getLogger(__name__)

NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CARBON_WRAPPER_PREFIX = "{urn:xmpp:carbons:2}"
H_MODULO = 2**32  # §4: h wraps at 2^32
REQUEST = f"<r xmlns='{NS_SM}'/>".encode()
# §5: the ids of sessions that expired, so that a late <resume/> learns the
# h they reached; bounded, oldest forgotten first.
EXPIRED_IDS_KEPT = 10_000


def _offered(transport) -> bool:
    """§2: TCP, direct TLS and WebSocket carry stream management; BOSH does not."""
    return getattr(transport, "offers_stream_management", False)


def _h(el: Element) -> int:
    """§4: 'h' is an unsigned 32-bit integer."""
    h = el.get("h", "")
    if not h.isdigit() or int(h) >= H_MODULO:
        raise StreamError("invalid-xml", "h is an unsigned 32-bit integer")
    return int(h)


def _failed(condition: str, h: int | None = None) -> bytes:
    h_attr = f" h='{h % H_MODULO}'" if h is not None else ""
    return (
        f"<failed xmlns='{NS_SM}'{h_attr}><{condition} xmlns='{NS_STANZAS}'/></failed>"
    ).encode()


class StreamManagement:
    """XEP-0198 state of one bound session, whichever stream carries it."""

    __slots__ = (
        "id",
        "resume_seconds",
        "ack_every",
        "ack_delay",
        "max_queue",
        "received",
        "_unhandled",
        "sent",
        "acked",
        "unacked",
        "requested",
        "_request_timer",
        "_expiry",
    )

    def __init__(self, resume_id: str | None, resume_seconds: int) -> None:
        self.id = resume_id  # None: acknowledgements only, no resumption
        self.resume_seconds = resume_seconds
        self.ack_every = settings.XMPP_SM_ACK_EVERY
        self.ack_delay = settings.XMPP_SM_ACK_DELAY
        self.max_queue = settings.XMPP_SM_MAX_QUEUE
        self.received = 0  # stanzas from the client since <enable/>
        self._unhandled: set[int] = set()  # of those, the ones still being handled
        self.sent = 0  # stanzas to the client since <enable/>
        self.acked = 0  # of those, acknowledged by the client
        self.unacked: deque[tuple[int, bytes]] = deque()  # (number, stanza) not acknowledged
        self.requested = False  # an <r/> is out
        self._request_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # -- inbound (§4) --------------------------------------------------------

    def stanza_received(self, waits: list[asyncio.Future]) -> None:
        """One more stanza from the client; handled now, or when `waits` are done."""
        self.received += 1
        if waits:
            number = self.received
            self._unhandled.add(number)
            gathered = asyncio.gather(*waits, return_exceptions=True)
            gathered.add_done_callback(lambda _: self._unhandled.discard(number))

    @property
    def handled(self) -> int:
        """§4 'h': the stanzas handled, counting up to the first still being handled."""
        if self._unhandled:
            return min(self._unhandled) - 1
        return self.received

    # -- outbound (§4) -------------------------------------------------------

    def stanza_sent(self, data: bytes) -> None:
        self.sent += 1
        self.unacked.append((self.sent, data))

    def acknowledged(self, h: int) -> None:
        """The client's <a h=''/>: forget what it has; §4 names the error
        for an h above what was sent."""
        count = self.acked + (h - self.acked) % H_MODULO
        if count > self.sent:
            raise StreamError(
                "undefined-condition",
                f"acknowledged {h} stanzas, {self.sent % H_MODULO} sent",
                f"<handled-count-too-high xmlns='{NS_SM}' h='{h}' "
                f"send-count='{self.sent % H_MODULO}'/>",
            )
        self.acked = count
        unacked = self.unacked
        while unacked and unacked[0][0] <= count:
            unacked.popleft()

    def answer(self) -> bytes:
        return f"<a xmlns='{NS_SM}' h='{self.handled % H_MODULO}'/>".encode()

    # -- the server's own requests for acks ----------------------------------

    def after_send(self, session: BoundSession) -> None:
        """Ask for an ack when enough is unacknowledged, or soon after the first."""
        if self.requested:
            return
        if len(self.unacked) >= self.ack_every:
            self._request(session)
        elif self._request_timer is None:
            # One timer at a time, left to run out rather than re-armed per
            # burst: a request it finds already out costs nothing.
            self._request_timer = asyncio.get_running_loop().call_later(
                self.ack_delay, self._timer_fired, session
            )

    def _timer_fired(self, session: BoundSession) -> None:
        self._request_timer = None
        self._request(session)

    def _request(self, session: BoundSession) -> None:
        if not self.unacked or self.requested:
            return
        if session.write_nonza(REQUEST):
            self.requested = True

    def answered(self, session: BoundSession) -> None:
        """An <a/> came: the request (if any) is answered."""
        self.requested = False
        if self.unacked:
            self.after_send(session)

    def stream_changed(self) -> None:
        """A new stream (resumption) or none (detached): no request is out on it."""
        self.requested = False
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    # -- detached (§5) -------------------------------------------------------

    def start_expiry(self, session: BoundSession) -> None:
        self.stream_changed()
        self.cancel_expiry()
        self._expiry = asyncio.get_running_loop().call_later(self.resume_seconds, _expire, session)

    def cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def take_unacked(self) -> list[bytes]:
        """What the client never acknowledged, in order; forgotten here."""
        stanzas = [data for _number, data in self.unacked]
        self.unacked.clear()
        self.acked = self.sent
        return stanzas


# -- the resumable sessions (§5) ------------------------------------------------

_resumable: dict[str, BoundSession] = {}
_expired: OrderedDict[str, tuple[str, int]] = OrderedDict()  # id -> (bare JID, h)


def _expire(session: BoundSession) -> None:
    if session.detached:
        log.info("%r was not resumed in time; ending it", session)
        session.end()


def forget(session: BoundSession) -> None:
    """The session ended: its id may not resume it any more."""
    sm = session.sm
    if sm is None:
        return
    sm.cancel_expiry()
    sm.stream_changed()
    if sm.id is not None and _resumable.pop(sm.id, None) is not None:
        _expired[sm.id] = (session.bare_str, sm.handled)
        while len(_expired) > EXPIRED_IDS_KEPT:
            _expired.popitem(last=False)


def give_up(session: BoundSession, stanzas: list[bytes], *, still_bound: bool) -> None:
    """Stanzas a session will never acknowledge (it ended, or its detached
    queue is full): what has content is not lost (§5; RFC 6121 §8.5.3.2).
    `still_bound`: the session still holds its JID, so a message goes
    straight to offline storage instead of to the account's resources."""
    from .offline import parse_stored, storage_decision

    router = session.server.router
    for data in stanzas:
        stanza = parse_stored(data.decode("utf-8", "replace"))
        if stanza is None:
            continue
        kind = stanza.tag.rpartition("}")[2]
        stanza_type = stanza.get("type")
        if kind == "iq":
            if stanza_type in ("get", "set"):
                router.bounce(stanza, StanzaError("service-unavailable"))
            continue
        if kind != "message" or stanza_type in ("error", "groupchat", "headline"):
            continue  # presence and room traffic are current state, not mail
        if storage_decision(stanza) != "keep":
            continue  # chat states only
        if any(child.tag.startswith(CARBON_WRAPPER_PREFIX) for child in stanza):
            continue  # a carbon copy (XEP-0280): the original reached another resource
        try:
            sender = JID.parse(stanza.get("from") or router.domain)
        except InvalidJID:
            continue
        to = session.account.jid if session.account is not None else None
        if to is None:
            continue
        if still_bound:
            offline = router.registry.offline_handler
            if offline is not None:
                offline(stanza, to, router)
        else:
            router.to_account(stanza, sender, to)


# -- the stream feature and the nonzas ----------------------------------------


@plugins.stream_feature
def sm_feature(stream: ClientStream) -> Element | None:
    if not _offered(stream.transport):
        return None
    return Element(f"{{{NS_SM}}}sm")


@plugins.nonza(f"{{{NS_SM}}}enable", before_bind=True, after_bind=True)
def enable(stream: ClientStream, el: Element) -> None:
    session = stream.session
    transport = stream.transport
    if session is None or not _offered(transport):
        # §3: before binding, or where it was not offered.
        transport.write(_failed("unexpected-request"))
        return
    if session.sm is not None:
        transport.write(_failed("unexpected-request"))  # §3: enabled already
        return
    resume_id = None
    seconds = 0
    if el.get("resume") in ("true", "1"):
        seconds = settings.XMPP_SM_RESUME_TIMEOUT
        wanted = el.get("max")
        if wanted is not None and wanted.isdigit():
            # §5: the client's preference, within what this server allows.
            seconds = min(int(wanted), settings.XMPP_SM_MAX_RESUME_TIMEOUT)
        if seconds > 0:
            resume_id = secrets.token_urlsafe(18)
    sm = StreamManagement(resume_id, seconds)
    session.sm = sm
    if resume_id is None:
        transport.write(f"<enabled xmlns='{NS_SM}'/>".encode())
        return
    _resumable[resume_id] = session
    transport.write(
        f"<enabled xmlns='{NS_SM}' id='{escape_attr(resume_id)}' resume='true' "
        f"max='{seconds}'/>".encode()
    )


@plugins.nonza(f"{{{NS_SM}}}r")
def request(stream: ClientStream, el: Element) -> None:
    sm = stream.session.sm
    if sm is None:
        raise StreamError("unsupported-stanza-type", "stream management is not enabled")
    stream.transport.write(sm.answer())


@plugins.nonza(f"{{{NS_SM}}}a")
def acknowledgement(stream: ClientStream, el: Element) -> None:
    session = stream.session
    sm = session.sm
    if sm is None:
        raise StreamError("unsupported-stanza-type", "stream management is not enabled")
    sm.acknowledged(_h(el))
    sm.answered(session)


@plugins.nonza(f"{{{NS_SM}}}resume", before_bind=True, after_bind=True)
def resume(stream: ClientStream, el: Element) -> None:
    transport = stream.transport
    if stream.session is not None or not _offered(transport):
        transport.write(_failed("unexpected-request"))  # §5: after SASL, before bind
        return
    previd = el.get("previd", "")
    h = _h(el)
    session = _resumable.get(previd)
    own_bare = f"{stream.username}@{stream.server.domain}"
    if session is None or session.jid is None or session.bare_str != own_bare:
        # §5: unknown, expired, or (answered the same, so that ids of other
        # accounts cannot be probed) someone else's.
        expired = _expired.get(previd)
        known_h = expired[1] if expired is not None and expired[0] == own_bare else None
        transport.write(_failed("item-not-found", known_h))
        return
    sm = session.sm
    try:
        sm.acknowledged(h)
    except StreamError:
        transport.write(_failed("unexpected-request"))
        return
    old = session.stream
    if old is not None:
        # The old connection has not been seen to drop yet (a phone that
        # changed networks): this stream takes the session over.
        session.detach(old)
        old.stream_error(StreamError("conflict", "the session was resumed elsewhere"))
    sm.cancel_expiry()
    sm.stream_changed()
    stream.resume_session(session)
    transport.write(
        f"<resumed xmlns='{NS_SM}' h='{sm.handled % H_MODULO}' "
        f"previd='{escape_attr(previd)}'/>".encode()
    )
    # §5: then everything the client had not acknowledged, in order.
    session.resend_unacked()
    for hook in stream.server.registry.session_resumed_hooks:
        try:
            hook(session)
        except Exception:
            log.exception("session-resumed hook failed for %r", session)
