"""muc#admin requests: roles (XEP-0045 §8: kick, voice, the voice list) and
affiliations (§9: ban, membership, moderators and their lists; §10.3-§10.8:
owners and admins and their lists).

A get asks for one list by role or affiliation; a set carries one or more
<item/>s, each checked against the privilege rules of muc.rooms before any
of them is applied, so that a request is applied whole or not at all.
Errors: <forbidden/> when the requester lacks the privilege, <not-allowed/>
when the target outranks it, <conflict/> when the last owner would go,
<item-not-found/> for a nickname not in the room, <bad-request/> for an
item the XEP does not define.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID

from .rooms import (
    ADMIN,
    AFFILIATION_RANK,
    AFFILIATIONS,
    MEMBER,
    MODERATOR,
    NO_AFFILIATION,
    NO_ROLE,
    OUTCAST,
    OWNER,
    ROLES,
    Occupant,
    Room,
    affiliation_change_error,
    role_change_error,
)
from .stanzas import NS_MUC_ADMIN

if TYPE_CHECKING:
    from .service import MucService

QUERY = f"{{{NS_MUC_ADMIN}}}query"
ITEM = f"{{{NS_MUC_ADMIN}}}item"
REASON = f"{{{NS_MUC_ADMIN}}}reason"


def handle(
    service: MucService, room: Room, stanza: Element, sender: JID, occupant: Occupant | None
) -> Element | None:
    query = stanza[0]
    items = query.findall(ITEM)
    if not items:
        raise StanzaError("bad-request", "no item")
    if stanza.get("type") == "get":
        return _get(room, items[0], sender, occupant)
    _set(service, room, items, sender, occupant)
    return None


def _get(room: Room, item: Element, sender: JID, occupant: Occupant | None) -> Element:
    actor_affiliation = room.affiliation(sender.bare)
    actor_role = occupant.role if occupant is not None else NO_ROLE
    result = Element(QUERY)
    role = item.get("role")
    affiliation = item.get("affiliation")
    if role is not None:
        # §8.5 the voice list, §9.8 the moderator list: moderators only.
        if role not in ROLES or role == NO_ROLE:
            raise StanzaError("bad-request", f"no list for role {role!r}")
        if actor_role != MODERATOR:
            raise StanzaError("forbidden", "moderators only")
        for other in room.occupants.values():
            if other.role == role:
                attrs = {
                    "nick": other.nick,
                    "role": other.role,
                    "affiliation": room.affiliation(other.bare),
                    "jid": str(other.jid),
                }
                SubElement(result, ITEM, attrs)
        return result
    if affiliation not in AFFILIATIONS or affiliation == NO_AFFILIATION:
        raise StanzaError("bad-request", f"no list for affiliation {affiliation!r}")
    privileged = actor_affiliation in (ADMIN, OWNER)
    if affiliation == MEMBER:
        # §9.5, muc#roomconfig_getmemberlist: which roles may see the member list.
        if not privileged and actor_role not in room.config.get_member_list:
            raise StanzaError("forbidden")
    elif not privileged:
        raise StanzaError("forbidden", "admins and owners only")  # §9.2, §10.5, §10.8
    for jid, value in sorted(room.affiliations.items()):
        if value != affiliation:
            continue
        attrs = {"affiliation": value, "jid": str(jid)}
        nick = room.reserved_nicks.get(jid)
        if nick:
            attrs["nick"] = nick
        el = SubElement(result, ITEM, attrs)
        reason = room.reasons.get(jid)
        if reason:
            SubElement(el, REASON).text = reason
    return result


def _set(
    service: MucService,
    room: Room,
    items: list[Element],
    sender: JID,
    occupant: Occupant | None,
) -> None:
    actor_affiliation = room.affiliation(sender.bare)
    actor_role = occupant.role if occupant is not None else NO_ROLE
    actor_nick = occupant.nick if occupant is not None else None
    changes = []
    owners = set(room.owners())
    for item in items:
        reason = item.findtext(REASON)
        role = item.get("role")
        affiliation = item.get("affiliation")
        if role is not None and affiliation is None:
            if role not in ROLES:
                raise StanzaError("bad-request", f"unknown role {role!r}")
            target = room.occupants.get(item.get("nick", ""))
            if target is None:
                raise StanzaError("item-not-found", "no occupant with that nickname")
            error = role_change_error(
                actor_affiliation,
                actor_role,
                room.affiliation(target.bare),
                target.role,
                role,
            )
            if error:
                raise StanzaError(error)
            changes.append(("role", target, role, reason, None))
            continue
        if affiliation is None or affiliation not in AFFILIATIONS:
            raise StanzaError("bad-request", "an item needs a role or an affiliation")
        jid = _target_jid(room, item)
        current = room.affiliation(jid)
        error = affiliation_change_error(actor_affiliation, current, affiliation)
        if error:
            raise StanzaError(error)
        if current == OWNER and affiliation != OWNER:
            owners.discard(jid)
            if not owners:
                raise StanzaError("conflict", "a room needs an owner")  # §10.4
        elif affiliation == OWNER:
            owners.add(jid)
        if affiliation == OUTCAST and AFFILIATION_RANK[current] >= AFFILIATION_RANK[ADMIN]:
            if actor_affiliation != OWNER:
                raise StanzaError("not-allowed")
        changes.append(("affiliation", jid, affiliation, reason, item.get("nick")))
    for kind, target, value, reason, nick in changes:
        if kind == "role":
            if target.nick in room.occupants:
                service.set_role(room, target, value, actor_nick, reason)
        else:
            service.set_affiliation(room, target, value, actor_nick, reason, nick)


def _target_jid(room: Room, item: Element) -> JID:
    if item.get("jid"):
        try:
            return JID.parse(item.get("jid")).bare
        except InvalidJID:
            raise StanzaError("jid-malformed") from None
    target = room.occupants.get(item.get("nick", ""))
    if target is None:
        raise StanzaError("item-not-found", "no occupant with that nickname")
    return target.bare
