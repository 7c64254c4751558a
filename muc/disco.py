"""Service discovery of the MUC service and its rooms (XEP-0045 §6, XEP-0030).

§6.1 the service's identity and features; §6.3 its public rooms as
disco#items; §6.4 a room's identity, the features of its type and the
muc#roominfo form (XEP-0128); §6.5 a room's items (its occupants, shown to
occupants of a non-hidden room only, which §6.5 allows).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from .config import room_features, room_info_form
from .rooms import Room
from .stanzas import NS_MUC, NS_OCCUPANT_ID

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_SELF_PING = "urn:xmpp:muc:selfping:0"  # not a registered feature; see XEP-0410 §4
DISCO_INFO = f"{{{NS_DISCO_INFO}}}query"
ROOMUSER_NODE = "x-roomuser-item"  # XEP-0045 §7.12
DISCO_ITEMS = f"{{{NS_DISCO_ITEMS}}}query"

SERVICE_FEATURES = (
    NS_MUC,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    "http://jabber.org/protocol/muc#unique",
    "jabber:x:conference",
)
ROOM_FEATURES = (
    NS_MUC,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_OCCUPANT_ID,
    NS_PING,
    "http://jabber.org/protocol/muc#request",
    "http://jabber.org/protocol/muc#self-ping-optimization",
    "muc_stable_id",  # XEP-0045 §15.5.2: message ids are kept
    "jabber:iq:register",  # §7.10
)


def service_info(name: str) -> Element:
    query = Element(DISCO_INFO)
    SubElement(
        query,
        f"{{{NS_DISCO_INFO}}}identity",
        {"category": "conference", "type": "text", "name": name},
    )
    for var in sorted(SERVICE_FEATURES):
        SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": var})
    return query


def service_items(rooms: list[tuple[str, str]]) -> Element:
    """§6.3: (room JID, name) of the public rooms."""
    query = Element(DISCO_ITEMS)
    for jid, name in sorted(rooms):
        attrs = {"jid": jid}
        if name:
            attrs["name"] = name
        SubElement(query, f"{{{NS_DISCO_ITEMS}}}item", attrs)
    return query


def room_info(room: Room) -> Element:
    query = Element(DISCO_INFO)
    SubElement(
        query,
        f"{{{NS_DISCO_INFO}}}identity",
        {"category": "conference", "type": "text", "name": room.config.title or room.name},
    )
    for var in sorted(set(ROOM_FEATURES) | set(room_features(room))):
        SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": var})
    query.append(room_info_form(room))
    return query


def room_items(room: Room, for_occupant: bool) -> Element:
    query = Element(DISCO_ITEMS)
    if for_occupant and room.config.public:
        for nick in room.occupants:
            SubElement(query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": f"{room.jid}/{nick}"})
    return query


def reserved_nick(nick: str | None) -> Element:
    """§7.12: disco#info on node x-roomuser-item names the reserved nickname."""
    query = Element(DISCO_INFO, {"node": ROOMUSER_NODE})
    if nick:
        SubElement(
            query,
            f"{{{NS_DISCO_INFO}}}identity",
            {"category": "conference", "type": "text", "name": nick},
        )
    return query
