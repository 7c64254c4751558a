"""Fan-out of what a room says to its occupants (XEP-0045 §7.2.3, §7.2.15,
§7.2.16, §7.4): occupant presence in its variants, the entry sequence of a
new occupant, and groupchat messages.

Every broadcast is serialised once per kind of recipient (with or without
the real JID, one's own copy with status 110) by muc.stanzas.Outgoing, and
each delivery is those bytes with only ` to="..."` inserted, handed as a
batch to the delivery service (xmpp/delivery.py `Delivery.fan_out`), which
writes them into the occupant sessions' outgoing buffers unless the
recipient's block list refuses the sender (XEP-0191 §3.3: the occupant's
room JID, the room, or the service): no router hop, no database, no
re-serialisation per occupant.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.jid import JID
from xmpp.protocol.xml import NS_CLIENT

from .history import HISTORY, select_history
from .rooms import NO_ROLE, Occupant, Room
from .stanzas import (
    MESSAGE,
    OCCUPANT_ID,
    PRESENCE,
    STATUS_LOGGING,
    STATUS_NON_ANONYMOUS,
    STATUS_SELF,
    Outgoing,
    muc_user,
    occupant_id_element,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from xmpp.bound_session import BoundSession
    from xmpp.delivery import Delivery

SUBJECT = f"{{{NS_CLIENT}}}subject"


def occupant_jid(room: Room, nick: str) -> JID:
    """room@service/nick: whom an occupant's stanzas are from (§7.2.3, §7.4)."""
    return room.jid.with_resource(nick)


def send(
    delivery: Delivery,
    out: Outgoing,
    targets: Iterable[tuple[BoundSession | None, bytes]],
    sender: JID,
) -> None:
    """`out`, from `sender`, to each (session, b' to="..."') of `targets`."""
    delivery.fan_out(out.prefix, out.suffix, targets, sender)


def to_everyone(delivery: Delivery, room: Room, out: Outgoing) -> None:
    """One stanza from the room to every session of every occupant."""
    send(delivery, out, room.fanout(), room.jid)


def groupchat(delivery: Delivery, room: Room, occupant: Occupant, stanza: Element) -> bytes:
    """§7.4: the message to every occupant, from room@service/nick, with the
    sender's occupant-id (XEP-0421 §4; one the client sent is removed); its
    id is kept (muc_stable_id). Returns the bytes without 'to', for history."""
    attrib = stanza.attrib
    attrib.pop("to", None)
    attrib["from"] = f"{room.jid}/{occupant.nick}"
    for child in stanza.findall(OCCUPANT_ID):
        stanza.remove(child)
    stanza.append(occupant_id_element(occupant.occupant_id))
    out = Outgoing(stanza)
    send(delivery, out, room.fanout(), occupant_jid(room, occupant.nick))
    return out.prefix + out.suffix


def send_entry(
    delivery: Delivery,
    room: Room,
    occupant: Occupant,
    jid: JID,
    x: Element | None,
    codes: list[str],
) -> None:
    """§7.2.3: the occupants' presence, then the new occupant's own with
    status 110, then the history (§7.2.15) and the subject (§7.2.16),
    all to the entering session."""
    target = (occupant.targets[jid],)
    to_attr = target[0][1]
    with_jid = room.sees_real_jids(occupant)
    for other in tuple(room.occupants.values()):
        if other is occupant or not room.presence_broadcast(other):
            continue
        out = other.shown.get(with_jid)
        if out is None:
            out = other.shown[with_jid] = presence_stanza(room, other, with_jid=with_jid)
        send(delivery, out, target, occupant_jid(room, other.nick))
    self_codes = list(codes)
    if room.config.non_anonymous:
        self_codes.append(STATUS_NON_ANONYMOUS)
    if room.config.enable_logging:
        self_codes.append(STATUS_LOGGING)
    own = presence_stanza(room, occupant, with_jid=with_jid, codes=self_codes, own=True)
    me = occupant_jid(room, occupant.nick)
    send(delivery, own, target, me)
    if room.locked:
        return  # nothing to tell before the owner configures the room
    request = x.find(HISTORY) if x is not None else None
    for data in select_history(
        room.history, request, room.config.history_length, str(room.jid), to_attr
    ):
        # Kept with its 'to' in place (muc.history): the room is its sender here.
        delivery.fan_out(data, b"", ((target[0][0], b""),), room.jid)
    subject = Element(
        MESSAGE,
        {
            "from": f"{room.jid}/{room.subject_by}" if room.subject_by else str(room.jid),
            "type": "groupchat",
            "id": f"subject-{int(time.time() * 1000)}",
        },
    )
    SubElement(subject, SUBJECT).text = room.subject or None
    by = occupant_jid(room, room.subject_by) if room.subject_by else room.jid
    send(delivery, Outgoing(subject), target, by)


def presence_stanza(
    room: Room,
    occupant: Occupant,
    *,
    with_jid: bool,
    codes: list[str] | tuple[str, ...] = (),
    own: bool = False,
    unavailable: bool = False,
    payload: list[Element] | None = None,
    new_nick: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    destroy: Element | None = None,
    affiliation: str | None = None,
) -> Outgoing:
    presence = Element(PRESENCE, {"from": f"{room.jid}/{occupant.nick}"})
    if unavailable:
        presence.set("type", "unavailable")
    presence.extend(occupant.presence if payload is None else payload)
    x = muc_user(
        room.affiliation(occupant.bare) if affiliation is None else affiliation,
        NO_ROLE if unavailable else occupant.role,
        jid=str(occupant.jid) if with_jid and occupant.targets else None,
        nick=new_nick,
        actor=actor,
        reason=reason,
        codes=([STATUS_SELF] if own else []) + list(codes),
    )
    if destroy is not None:
        x.append(destroy)
    presence.append(x)
    presence.append(occupant_id_element(occupant.occupant_id))
    return Outgoing(presence)


def broadcast_presence(
    delivery: Delivery,
    room: Room,
    occupant: Occupant,
    *,
    skip_self: bool = False,
    departed: dict | None = None,
    self_codes: tuple[str, ...] = (),
    **variant,
) -> None:
    """The occupant's presence to everyone who should see it (§7.2.3,
    presencebroadcast), serialised once per kind of recipient (with or
    without the real JID; the occupant's own copy with status 110)."""
    cache: dict[tuple[bool, bool], Outgoing] = {}
    base_codes = tuple(variant.pop("codes", ()))
    # Something changed (presence, role, affiliation, nick): what newcomers
    # are shown is this broadcast's plain available presence, if it is one.
    occupant.shown.clear()

    def stanza_for(own: bool, with_jid: bool) -> Outgoing:
        out = cache.get((own, with_jid))
        if out is None:
            codes = base_codes + (self_codes if own else ())
            out = cache[(own, with_jid)] = presence_stanza(
                room, occupant, with_jid=with_jid, codes=codes, own=own, **variant
            )
        return out

    broadcast = room.presence_broadcast(occupant)
    sender = occupant_jid(room, occupant.nick)
    for other in tuple(room.occupants.values()):
        own = other is occupant
        if own:
            if skip_self:
                continue
        elif not broadcast:
            continue
        out = stanza_for(own, room.sees_real_jids(other))
        send(delivery, out, tuple(other.targets.values()), sender)
    if departed:
        out = stanza_for(True, room.sees_real_jids(occupant))
        send(delivery, out, tuple(departed.values()), sender)
    if not variant and not base_codes:
        for (own, with_jid), out in cache.items():
            if not own:
                occupant.shown[with_jid] = out
