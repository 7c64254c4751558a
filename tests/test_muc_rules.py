"""The MUC rules without a socket: the privilege tables of XEP-0045 §8-§10,
history selection (§7.2.15), the configuration form (§10.2) and the
one-serialisation fan-out bytes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from muc.config import apply_config_form, config_form
from muc.history import select_history
from muc.rooms import (
    ADMIN,
    MEMBER,
    MODERATOR,
    NO_AFFILIATION,
    NO_ROLE,
    OUTCAST,
    OWNER,
    PARTICIPANT,
    VISITOR,
    Room,
    RoomConfig,
    affiliation_change_error,
    role_change_error,
    to_attribute,
)
from muc.stanzas import NS_DATA, Outgoing
from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID

ROOM = "room@conference.localhost"


@pytest.mark.parametrize(
    "actor_aff, actor_role, target_aff, target_role, new_role, expected",
    [
        # §8.2 kick
        (NO_AFFILIATION, MODERATOR, NO_AFFILIATION, PARTICIPANT, NO_ROLE, None),
        (NO_AFFILIATION, PARTICIPANT, NO_AFFILIATION, PARTICIPANT, NO_ROLE, "forbidden"),
        (ADMIN, MODERATOR, OWNER, MODERATOR, NO_ROLE, "not-allowed"),
        (OWNER, MODERATOR, ADMIN, MODERATOR, NO_ROLE, "not-allowed"),
        (NO_AFFILIATION, MODERATOR, MEMBER, PARTICIPANT, NO_ROLE, "not-allowed"),
        # §8.3/§8.4 voice
        (NO_AFFILIATION, MODERATOR, NO_AFFILIATION, VISITOR, PARTICIPANT, None),
        (MEMBER, MODERATOR, ADMIN, MODERATOR, VISITOR, "not-allowed"),
        # §9.6/§9.7 moderator role
        (ADMIN, MODERATOR, MEMBER, PARTICIPANT, MODERATOR, None),
        (NO_AFFILIATION, MODERATOR, NO_AFFILIATION, PARTICIPANT, MODERATOR, "forbidden"),
        (ADMIN, MODERATOR, NO_AFFILIATION, MODERATOR, PARTICIPANT, None),
        (MEMBER, MODERATOR, NO_AFFILIATION, MODERATOR, PARTICIPANT, "forbidden"),
    ],
)
def test_role_changes(actor_aff, actor_role, target_aff, target_role, new_role, expected):
    assert role_change_error(actor_aff, actor_role, target_aff, target_role, new_role) == expected


@pytest.mark.parametrize(
    "actor, target, new, expected",
    [
        (ADMIN, NO_AFFILIATION, MEMBER, None),  # §9.3
        (ADMIN, MEMBER, OUTCAST, None),  # §9.1
        (MEMBER, NO_AFFILIATION, OUTCAST, "forbidden"),
        (ADMIN, OWNER, OUTCAST, "not-allowed"),
        (ADMIN, ADMIN, NO_AFFILIATION, "not-allowed"),
        (ADMIN, MEMBER, ADMIN, "forbidden"),  # §10.6: owners only
        (OWNER, MEMBER, ADMIN, None),
        (OWNER, ADMIN, OWNER, None),  # §10.3
        (NO_AFFILIATION, NO_AFFILIATION, MEMBER, "forbidden"),
    ],
)
def test_affiliation_changes(actor, target, new, expected):
    assert affiliation_change_error(actor, target, new) == expected


def history(count: int, start: float = 1000.0) -> list[tuple[float, bytes]]:
    return [
        (
            start + n,
            f'<message from="{ROOM}/a" type="groupchat"><body>{n}</body></message>'.encode(),
        )
        for n in range(count)
    ]


def bodies(stanzas: list[bytes]) -> list[str]:
    return [ET.fromstring(s).findtext("{jabber:client}body") for s in stanzas]


def test_history_limits_combine():
    """§7.2.15: every limit applies; the room's maximum too."""
    to = to_attribute(JID.parse("u@localhost/r"))
    entries = history(10)

    def pick(attrs: dict | None, maximum: int = 20, now: float = 1010.0) -> list[str]:
        request = ET.Element("history", attrs) if attrs is not None else None
        chosen = select_history(entries, request, maximum, ROOM, to, now=now)
        return bodies(
            [s.replace(b"<message", b'<message xmlns="jabber:client"', 1) for s in chosen]
        )

    assert pick(None) == [str(n) for n in range(10)]
    assert pick(None, maximum=3) == ["7", "8", "9"]
    assert pick({"maxstanzas": "2"}) == ["8", "9"]
    assert pick({"maxstanzas": "0"}) == []
    assert pick({"seconds": "3"}) == ["7", "8", "9"]
    assert pick({"since": "1970-01-01T00:16:45Z"}) == ["6", "7", "8", "9"]
    assert pick({"seconds": "5", "maxstanzas": "1"}) == ["9"]
    assert pick({"maxchars": "0"}) == []
    one = select_history(entries, ET.Element("history"), 20, ROOM, to)[-1]
    assert pick({"maxchars": str(len(one))}) == ["9"]


def test_history_stanza_has_delay_and_recipient():
    to = to_attribute(JID.parse("u@localhost/r"))
    (stanza,) = select_history(history(1), None, 20, ROOM, to)
    el = ET.fromstring(stanza)
    assert el.get("to") == "u@localhost/r"
    delay = el.find("{urn:xmpp:delay}delay")
    assert delay.get("from") == ROOM and delay.get("stamp") == "1970-01-01T00:16:40.000Z"


def test_outgoing_inserts_only_the_recipient():
    message = ET.Element("{jabber:client}message", {"from": f"{ROOM}/a", "type": "groupchat"})
    ET.SubElement(message, "{jabber:client}body").text = "hi & bye"
    out = Outgoing(message)
    data = out.to_bytes(to_attribute(JID.parse("u@localhost/r")))
    el = ET.fromstring(data.replace(b"<message", b'<message xmlns="jabber:client"', 1))
    assert el.get("to") == "u@localhost/r" and el.get("from") == f"{ROOM}/a"
    assert el.findtext("{jabber:client}body") == "hi & bye"


def test_config_form_round_trip():
    """§10.2: what the form shows, submitted back, changes nothing; each
    field maps onto the configuration."""
    room = Room("r", JID.parse(ROOM), RoomConfig())
    room.affiliations[JID.parse("o@localhost")] = OWNER
    form = config_form(room)
    form.set("type", "submit")
    new, owners, admins = apply_config_form(room.config, form)
    assert new == room.config
    assert owners == [JID.parse("o@localhost")] and admins == []

    def submit(**fields: str) -> RoomConfig:
        x = ET.Element(f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in fields.items():
            field = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": var.replace("__", "#")})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        return apply_config_form(RoomConfig(), x)[0]

    assert submit(muc__roomconfig_maxusers="30").max_occupants == 30
    assert submit(muc__roomconfig_maxusers="none").max_occupants == 0
    assert submit(muc__maxhistoryfetch="5").history_length == 5
    assert submit(muc__roomconfig_whois="anyone").non_anonymous
    assert submit(muc__roomconfig_membersonly="true").members_only
    protected = submit(muc__roomconfig_passwordprotectedroom="1", muc__roomconfig_roomsecret="s")
    assert protected.password == "s"
    with pytest.raises(StanzaError) as error:
        submit(muc__roomconfig_passwordprotectedroom="1")
    assert error.value.condition == "not-acceptable"
    with pytest.raises(StanzaError):
        submit(muc__roomconfig_allowpm="sometimes")


class FakeSession:
    """A session whose delivery may end it (as a BOSH abort does, synchronously)."""

    def __init__(self, jid: JID) -> None:
        self.jid = jid
        self.account = None  # not bound here: no block list
        self.received: list[bytes] = []
        self.on_send = None

    def send_serialized(self, data: bytes) -> None:
        self.received.append(data)
        if self.on_send is not None:
            callback, self.on_send = self.on_send, None
            callback()


def test_a_session_ending_during_a_fan_out_does_not_break_it():
    """An occupant whose session ends while a message is being delivered
    leaves the room at once; the delivery to the others goes on."""
    from muc.broadcast import groupchat
    from muc.rooms import Occupant
    from muc.service import MucService
    from xmpp.delivery import Delivery
    from xmpp.plugins import plugins
    from xmpp.sessions import SessionManager

    service = MucService()
    service.delivery = Delivery("localhost", plugins, SessionManager())
    room = Room("r", JID.parse(ROOM), RoomConfig())
    sessions = {}
    for nick in ("a", "b", "c"):
        jid = JID.parse(f"{nick}@localhost/x")
        occupant = Occupant(nick, jid.bare, PARTICIPANT, nick)
        sessions[nick] = FakeSession(jid)
        occupant.add_session(jid, sessions[nick])
        room.occupants[nick] = occupant
        room.by_jid[jid] = occupant
    leaver = JID.parse("b@localhost/x")
    sessions["b"].on_send = lambda: service._leave(room, room.by_jid[leaver], leaver, None)
    message = ET.Element("{jabber:client}message", {"type": "groupchat"})
    ET.SubElement(message, "{jabber:client}body").text = "hello"
    groupchat(service.delivery, room, room.occupants["a"], message)
    assert set(room.occupants) == {"a", "c"}
    for nick in ("a", "c"):
        kinds = [
            ET.fromstring(d.replace(b" ", b' xmlns="jabber:client" ', 1)).tag
            for d in sessions[nick].received
        ]
        assert kinds.count("{jabber:client}message") == 1
        assert kinds.count("{jabber:client}presence") == 1  # b left
