"""Registering with a room (XEP-0045 §7.10): a user asks for membership and
reserves a nickname with a muc#register data form (jabber:iq:register).

In an open room registration makes the user a member with that nickname
reserved (§7.12); a member may change the nickname it reserved. A
members-only room grants membership through its admins only, so a
non-member gets <registration-required/> there; an outcast gets
<forbidden/>; a nickname someone else holds or reserved is a <conflict/>.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID, resourceprep

from .rooms import AFFILIATION_RANK, MEMBER, NO_AFFILIATION, OUTCAST, Room
from .stanzas import NS_DATA, add_field, data_form, form_values

if TYPE_CHECKING:
    from .service import MucService

NS_REGISTER = "jabber:iq:register"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
QUERY = f"{{{NS_REGISTER}}}query"


def handle(service: MucService, room: Room, stanza: Element, sender: JID) -> Element | None:
    bare = sender.bare
    affiliation = room.affiliation(bare)
    if affiliation == OUTCAST:
        raise StanzaError("forbidden", "you are banned from this room")
    if stanza.get("type") == "get":
        query = Element(QUERY)
        reserved = room.reserved_nicks.get(bare)
        if reserved and AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK[MEMBER]:
            SubElement(query, f"{{{NS_REGISTER}}}registered")
            SubElement(query, f"{{{NS_REGISTER}}}username").text = reserved
            return query
        SubElement(
            query, f"{{{NS_REGISTER}}}instructions"
        ).text = "Choose the nickname to reserve in this room."
        form = data_form(NS_MUC_REGISTER, "form", "Room registration")
        field = add_field(form, "muc#register_roomnick", reserved or "", "text-single", "Nickname")
        SubElement(field, f"{{{NS_DATA}}}required")
        query.append(form)
        return query
    form = stanza[0].find(f"{{{NS_DATA}}}x")
    if form is None or form.get("type") != "submit":
        raise StanzaError("bad-request", "submit the muc#register form")
    raw = (form_values(form).get("muc#register_roomnick") or [""])[0].strip()
    try:
        nick = resourceprep(raw) if raw else ""
    except InvalidJID:
        nick = ""
    if not nick:
        raise StanzaError("not-acceptable", "a nickname is required")
    holder = room.occupants.get(nick)
    reserved_by = room.nick_owner(nick)
    if (holder is not None and holder.bare != bare) or (
        reserved_by is not None and reserved_by != bare
    ):
        raise StanzaError("conflict", "that nickname is taken")
    if room.config.members_only and affiliation == NO_AFFILIATION:
        raise StanzaError("registration-required", "the admins grant membership here")
    service.set_affiliation(
        room, bare, affiliation if affiliation != NO_AFFILIATION else MEMBER, nick=nick
    )
    return None
