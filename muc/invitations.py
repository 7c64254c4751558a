"""Invitations (XEP-0045 §7.8.2 mediated, §7.8.3 declines) and voice
requests (§7.13, approved as in §8.6).

Direct invitations (XEP-0249) need nothing from the service: they go from
user to user like any message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID
from xmpp.protocol.xml import NS_CLIENT

from .broadcast import broadcast_presence, send
from .rooms import (
    ADMIN,
    MEMBER,
    MODERATOR,
    NO_AFFILIATION,
    OWNER,
    PARTICIPANT,
    VISITOR,
    Occupant,
    Room,
)
from .stanzas import (
    MESSAGE,
    NS_DATA,
    NS_MUC_REQUEST,
    X_USER,
    Outgoing,
    add_field,
    data_form,
    form_boolean,
    form_values,
    user_tag,
)

if TYPE_CHECKING:
    from .service import MucService

BODY = f"{{{NS_CLIENT}}}body"


def invite(
    service: MucService,
    room: Room,
    occupant: Occupant | None,
    sender: JID,
    invites: list[Element],
    stanza: Element,
) -> None:
    """§7.8.2: a mediated invitation, sent on from the room. In a
    members-only room only admins and owners may invite unless
    muc#roomconfig_allowinvites; the invitee then becomes a member."""
    if occupant is None:
        service.router.bounce(stanza, StanzaError("not-acceptable", "you are not in the room"))
        return
    affiliation = room.affiliation(sender.bare)
    privileged = affiliation in (OWNER, ADMIN)
    if room.config.members_only and not (room.config.allow_invites or privileged):
        service.router.bounce(stanza, StanzaError("forbidden", "you may not invite"))
        return
    targets = []
    for invite in invites:
        try:
            targets.append((JID.parse(invite.get("to", "")), invite.findtext(user_tag("reason"))))
        except InvalidJID:
            service.router.bounce(stanza, StanzaError("jid-malformed"))
            return
    for invitee, reason in targets:
        if room.config.members_only and room.affiliation(invitee.bare) == NO_AFFILIATION:
            service.set_affiliation(room, invitee.bare, MEMBER, actor=occupant.nick)
        message = Element(MESSAGE, {"from": str(room.jid), "to": str(invitee)})
        x = SubElement(message, X_USER)
        sent = SubElement(x, user_tag("invite"), {"from": str(sender)})
        if reason:
            SubElement(sent, user_tag("reason")).text = reason
        if room.config.password:
            SubElement(x, user_tag("password")).text = room.config.password
        SubElement(message, BODY).text = f"{sender.bare} invites you to the room {room.jid}" + (
            f": {reason}" if reason else ""
        )
        service.router.route(message, room.jid)


def decline(service: MucService, room: Room, sender: JID, decline: Element) -> None:
    """§7.8.3: the invitee's decline, sent on to the inviter."""
    try:
        to = JID.parse(decline.get("to", ""))
    except InvalidJID:
        return
    message = Element(MESSAGE, {"from": str(room.jid), "to": str(to)})
    x = SubElement(message, X_USER)
    sent = SubElement(x, user_tag("decline"), {"from": str(sender.bare)})
    reason = decline.findtext(user_tag("reason"))
    if reason:
        SubElement(sent, user_tag("reason")).text = reason
    service.router.route(message, room.jid)


def voice_request(
    service: MucService, room: Room, occupant: Occupant | None, stanza: Element, form: Element
) -> None:
    """§7.13: a visitor asks for voice: the moderators get an approval form.
    §8.6: a moderator's submitted form with muc#request_allow grants it."""
    if occupant is None:
        service.router.bounce(stanza, StanzaError("not-acceptable", "you are not in the room"))
        return
    values = form_values(form)
    if form.get("type") == "submit" and "muc#request_allow" in values:
        if occupant.role != MODERATOR:
            service.router.bounce(stanza, StanzaError("forbidden"))
            return
        if not form_boolean(values["muc#request_allow"]):
            return
        nick = (values.get("muc#roomnick") or [""])[0]
        target = room.occupants.get(nick)
        if target is not None and target.role == VISITOR:
            target.role = PARTICIPANT
            broadcast_presence(service.delivery, room, target, actor=occupant.nick)
        return
    if occupant.role != VISITOR:
        return  # already has voice
    request = data_form(NS_MUC_REQUEST, "form", "Voice request")
    SubElement(
        request, f"{{{NS_DATA}}}instructions"
    ).text = "To approve this request for voice, select the checkbox and submit the form."
    add_field(request, "muc#role", "participant", "list-single", "Requested role")
    add_field(request, "muc#jid", str(occupant.jid), "jid-single", "User ID")
    add_field(request, "muc#roomnick", occupant.nick, "text-single", "Room nickname")
    add_field(request, "muc#request_allow", False, "boolean", "Grant voice to this person?")
    message = Element(MESSAGE, {"from": str(room.jid)})
    message.append(request)
    out = Outgoing(message)
    for other in tuple(room.occupants.values()):
        if other.role == MODERATOR:
            send(service.delivery, out, tuple(other.targets.values()), room.jid)
