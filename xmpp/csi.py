"""XEP-0352 Client State Indication: while a client says it is <inactive/>,
the server holds what it does not need at once, and sends it when it does.

Owns: the stream feature `<csi xmlns='urn:xmpp:csi:0'/>` (offered with the
features after authentication, beside <bind/>, XEP-0352 §4), the nonzas
`<active/>` and `<inactive/>` (accepted only on a bound stream: before
binding they are <unsupported-stanza-type/>, as the nonza registry answers
every nonza of the wrong phase), and `OutputGate`, the hold-and-flush queue a
bound session consults at the top of its output path
(`BoundSession.send_serialized`: `session.csi`, None while active).

What is held, and what is not (§5 leaves it to the server; Prosody's
mod_csi_simple was the model):

    held, coalesced to the latest per sender ('from' full JID):
        presence without a type or of type unavailable (§1: the presence
        updates of contacts are the traffic CSI is for)
        chat-state-only messages (XEP-0085: a chatstates child, no <body/>;
        also inside a XEP-0280 carbon)
    held, each kept (no coalescing):
        groupchat messages with a body that do not mention the session's nick
        in that room (busy rooms are the other big source of wake-ups); the
        nick comes from the MUC app (plugins.room_nick, registered by muc/)
    sent at once, after everything held (so nothing overtakes what it
    depends on):
        everything else: messages with a body (chat, normal, headline with a
        body), groupchat mentions and the session's own reflected groupchat
        messages, message errors, IQs of any kind (results, pings, pushes),
        subscription presence (subscribe, subscribed, unsubscribe,
        unsubscribed), presence errors, MUC self-presence (status 110: the
        answer to the client's own join or nick change), and whatever this
        module does not recognise
    not through here at all: stream errors and the stream's close, which the
    stream writes itself; the session then ends and what is held is dropped

Order. A stanza that goes out at once first flushes what is held, in the
order it was queued; so does <active/>. A coalesced stanza replaces the one
it supersedes by moving to the end of the queue (the older one is removed,
the newer one queued in its own place), so what the client gets is always a
subsequence of what the server would have sent, in the same order.

Bounds. At most XMPP_CSI_MAX_HELD stanzas are held, and no more bytes than
XMPP_MAX_OUTGOING_BUFFER; past either the queue is flushed (read at every
use, so a change applies to sessions already inactive).

Classification works on the serialised bytes that reach send_serialized,
as xmpp/protocol/xml.py `serialize` writes them (every stanza is, including
MUC fan-out and pubsub renderings): the element name at the start, the start
tag's attributes (double-quoted, '>' escaped inside values, so the first '>'
ends the start tag), and substring tests for `<body` and the chatstates and
muc#user namespaces. Text content cannot fake a tag (serialize escapes '<'),
so `<body` is always an element, though it may be another namespace's body
(XHTML-IM's): a false "has a body" only sends a stanza at once, which is
the safe side. A namespace URI in text or an attribute value can fake the
chatstates test, so a message that passes it is parsed before it is held,
and is held only if every child is a chat state or a known companion
(thread, hints, delay, stanza/origin id, occupant id). Groupchat messages
with a body are parsed for the mention test, since the nick must be found in
the body's text; presence is never parsed.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, ParseError, fromstring

from django.conf import settings

from .plugins import PluginRegistry, plugins
from .protocol.jid import JID, InvalidJID
from .protocol.xml import NS_CLIENT

if TYPE_CHECKING:
    from collections.abc import Hashable

    from .bound_session import BoundSession
    from .c2s import ClientStream

NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"

# Children a chat-state-only message may carry besides its chat state
# (XEP-0085 §5.1 thread, XEP-0334 hints, XEP-0203 delay, XEP-0359 ids,
# XEP-0421 occupant id); anything else makes the message go out at once.
_COMPANION_NAMESPACES = frozenset(
    {NS_CHATSTATES, "urn:xmpp:hints", "urn:xmpp:delay", "urn:xmpp:sid:0", "urn:xmpp:occupant-id:0"}
)
_COMPANION_TAGS = frozenset({"thread", f"{{{NS_CLIENT}}}thread"})

_ATTRIBUTE = re.compile(rb"""\s([A-Za-z_:][\w.:-]*)=(?:"([^"]*)"|'([^']*)')""")
_BODY = re.compile(rb"<body[\s/>]")
_CHATSTATES = NS_CHATSTATES.encode()
_MUC_USER = NS_MUC_USER.encode()
_SELF_PRESENCE = re.compile(rb"""<status\s+code=["']110["']""")

PRESENCE = "presence"
CHAT_STATE = "chat state"
GROUPCHAT = "groupchat"

_groupchat_order = itertools.count()


class OutputGate:
    """What an inactive session holds back (see the module docstring)."""

    __slots__ = ("session", "_held", "_held_bytes", "_flushing")

    def __init__(self, session: BoundSession) -> None:
        self.session = session
        # key -> serialised stanza, in the order they were (re)queued
        self._held: dict[Hashable, bytes] = {}
        self._held_bytes = 0
        self._flushing = False

    def __len__(self) -> int:
        return len(self._held)

    def holds(self, data: bytes) -> bool:
        """True if `data` is taken care of here (held, or written in a
        flush); False if the caller writes it now, after what was held."""
        if self._flushing:
            return False
        key = hold_key(self.session, data)
        if key is None:
            self.flush()
            return False
        held = self._held
        older = held.pop(key, None)
        if older is not None:
            self._held_bytes -= len(older)
        held[key] = data
        self._held_bytes += len(data)
        if (
            len(held) > settings.XMPP_CSI_MAX_HELD
            or self._held_bytes > self.session.server.limits.max_outgoing_buffer
        ):
            self.flush()
        return True

    def flush(self) -> None:
        """Write what is held, in order, through the session's normal path."""
        held = self._held
        if not held:
            return
        self._held = {}
        self._held_bytes = 0
        self._flushing = True
        try:
            for data in held.values():
                self.session.send_serialized(data)
        finally:
            self._flushing = False

    def drop(self) -> None:
        """Forget what is held (the session has ended)."""
        self._held = {}
        self._held_bytes = 0


# -- classification -----------------------------------------------------------


def hold_key(session: BoundSession, data: bytes) -> Hashable | None:
    """The key under which `data` may be held (stanzas with equal keys
    coalesce), or None if it must go out now."""
    end = data.find(b">")
    if end < 0:
        return None
    head = data[:end]
    if data.startswith(b"<presence") and data[9:10] in (b" ", b"/", b">"):
        attributes = _attributes(head)
        if attributes.get(b"type") not in (None, b"unavailable"):
            return None  # subscription requests and answers, errors (RFC 6121 §3)
        if _MUC_USER in data and _SELF_PRESENCE.search(data):
            return None  # XEP-0045 §7.2.2 self-presence: the answer to a join
        return (PRESENCE, attributes.get(b"from"))
    if data.startswith(b"<message") and data[8:9] in (b" ", b"/", b">"):
        attributes = _attributes(head)
        message_type = attributes.get(b"type")
        if message_type == b"error":
            return None
        if _BODY.search(data) is None:
            if _CHATSTATES in data:
                return _chat_state_key(data, attributes)
            return None
        if message_type == b"groupchat":
            return _groupchat_key(session, data, attributes)
        return None
    return None


def _attributes(head: bytes) -> dict[bytes, bytes]:
    return {m[1]: m[2] if m[2] is not None else m[3] for m in _ATTRIBUTE.finditer(head)}


def _chat_state_key(data: bytes, attributes: dict[bytes, bytes]) -> Hashable | None:
    """A message without <body/> that names the chatstates namespace: held
    if, parsed, it is nothing but a chat state (XEP-0085), or a carbon of one."""
    message = _parse(data)
    if message is None:
        return None
    inner = _carbon_payload(message)
    if inner is not None:
        if not _only_chat_state(inner) or inner.find(f"{{{NS_CLIENT}}}body") is not None:
            return None
        # A carbon comes from the user's bare JID; its conversation is the
        # forwarded message's addresses.
        return (CHAT_STATE, attributes.get(b"from"), inner.get("from"), inner.get("to"))
    if not _only_chat_state(message):
        return None
    return (CHAT_STATE, attributes.get(b"from"))


def _only_chat_state(message: Element) -> bool:
    has_state = False
    for child in message:
        tag = child.tag
        if tag in _COMPANION_TAGS:
            continue
        namespace = tag[1:].partition("}")[0] if tag[:1] == "{" else ""
        if namespace not in _COMPANION_NAMESPACES:
            return False
        has_state = has_state or namespace == NS_CHATSTATES
    return has_state


def _carbon_payload(message: Element) -> Element | None:
    """The forwarded message of a XEP-0280 carbon (its only child), else None."""
    if len(message) != 1 or message[0].tag not in (
        f"{{{NS_CARBONS}}}received",
        f"{{{NS_CARBONS}}}sent",
    ):
        return None
    forwarded = message[0].find(f"{{{NS_FORWARD}}}forwarded")
    if forwarded is None:
        return None
    for child in forwarded:
        if child.tag == f"{{{NS_CLIENT}}}message":
            return child
    return None


def _groupchat_key(
    session: BoundSession, data: bytes, attributes: dict[bytes, bytes]
) -> Hashable | None:
    """A groupchat message with a body: held unless it mentions the session's
    nick in the room, or is the session's own message reflected (XEP-0045
    §7.4), or the nick cannot be known."""
    sender = attributes.get(b"from")
    if sender is None or session.jid is None:
        return None
    try:
        occupant = JID.parse(sender.decode())
    except (InvalidJID, UnicodeDecodeError):
        return None
    nick = room_nick(session, occupant.bare)
    if not nick or occupant.resource == nick:
        return None
    message = _parse(data)
    if message is None:
        return None
    body = message.findtext(f"{{{NS_CLIENT}}}body") or ""
    if nick.casefold() in body.casefold():
        return None
    return (GROUPCHAT, next(_groupchat_order))


def room_nick(session: BoundSession, room: JID) -> str | None:
    """The session's nick in `room`, from the apps that know (plugins.room_nick)."""
    for lookup in session.server.registry.room_nick_lookups:
        nick = lookup(session.jid, room)
        if nick:
            return nick
    return None


def _parse(data: bytes) -> Element | None:
    """The stanza as elements, with jabber:client as the default namespace
    (serialize leaves it implicit). The bytes are this server's own
    serialisation of a parsed stanza: no DTD, no entities beyond the five."""
    try:
        root = fromstring(b"<wrapper xmlns='" + NS_CLIENT.encode() + b"'>" + data + b"</wrapper>")
    except ParseError:
        return None
    return root[0] if len(root) else None


# -- the protocol -------------------------------------------------------------


def csi_feature(stream: ClientStream) -> Element | None:
    """XEP-0352 §4: advertised to authenticated streams."""
    return Element(f"{{{NS_CSI}}}csi")


def client_inactive(stream: ClientStream, el: Element) -> None:
    """XEP-0352 §5: hold what the client does not need now."""
    session = stream.session
    if session.csi is None:
        session.csi = OutputGate(session)


def client_active(stream: ClientStream, el: Element) -> None:
    """XEP-0352 §5: send what was held, in order, and hold nothing more."""
    become_active(stream.session)


def become_active(session: BoundSession) -> None:
    """Active again: what was held goes out, in order. Also on a XEP-0198
    resumption, which "always defaults to 'active'" (XEP-0352 §6)."""
    gate, session.csi = session.csi, None
    if gate is not None:
        gate.flush()


def session_closed(session: BoundSession) -> None:
    """Presence and chat states held for a session that ended are dropped."""
    gate, session.csi = session.csi, None
    if gate is not None:
        gate.drop()


def register(registry: PluginRegistry) -> None:
    registry.stream_feature(csi_feature)
    registry.nonza(f"{{{NS_CSI}}}inactive", before_bind=False, after_bind=True)(client_inactive)
    registry.nonza(f"{{{NS_CSI}}}active", before_bind=False, after_bind=True)(client_active)
    registry.on_session_closed(session_closed)
    registry.on_session_resumed(become_active)


register(plugins)
