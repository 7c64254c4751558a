"""Rooms of every kind (XEP-0045 §4.2, §10): the configuration form with
every muc#roomconfig field (§10.2), password-protected, members-only,
moderated (voice requests, §7.13, §8.6), non-anonymous and semi-anonymous,
maximum occupants, temporary rooms that end with their last occupant,
destruction with an alternate venue (§10.9), and persistent rooms, their
configuration, affiliations and history kept across a server restart."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from .conftest import start_server, stop_server
from .muc_clients import (
    NS_DATA,
    NS_DISCO_INFO,
    NS_OWNER,
    NS_USER,
    SERVICE,
    connect_muc,
    disconnect,
    error_condition,
    iq_error,
    item_of,
    register,
    send_iq,
    status_codes,
)

USERS = ("room-ann", "room-ben", "room-cat")

ROOMCONFIG_FIELDS = {
    "muc#roomconfig_roomname",
    "muc#roomconfig_roomdesc",
    "muc#roomconfig_lang",
    "muc#roomconfig_enablelogging",
    "muc#roomconfig_changesubject",
    "muc#roomconfig_allowinvites",
    "muc#roomconfig_allowpm",
    "muc#roomconfig_maxusers",
    "muc#roomconfig_presencebroadcast",
    "muc#roomconfig_getmemberlist",
    "muc#roomconfig_publicroom",
    "muc#roomconfig_persistentroom",
    "muc#roomconfig_moderatedroom",
    "muc#roomconfig_membersonly",
    "muc#roomconfig_passwordprotectedroom",
    "muc#roomconfig_roomsecret",
    "muc#roomconfig_whois",
    "muc#maxhistoryfetch",
    "muc#roomconfig_roomadmins",
    "muc#roomconfig_roomowners",
    "muc#roomconfig_pubsub",
}


@pytest.fixture(scope="module")
def server(xmpp_server):
    register(xmpp_server, *USERS)
    return xmpp_server


def run(scenario):
    return asyncio.run(scenario)


async def clients(server, *users: str):
    return [await connect_muc(server, user) for user in users]


async def features(client, room: str) -> set[str]:
    info = await send_iq(client, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", f"{room}@{SERVICE}")
    return {f.get("var") for f in info.findall(f"{{{NS_DISCO_INFO}}}feature")}


def test_configuration_form_has_every_field(server):
    """§10.2: the owner gets a muc#roomconfig form with every field of the
    registry (§15.5.3); a non-owner gets <forbidden/>."""

    async def scenario():
        ann, ben = await clients(server, "room-ann", "room-ben")
        try:
            await ann.create_instant("formal", "ann")
            await ben.enter("formal", "ben")
            query = await send_iq(ann, "get", f"<query xmlns='{NS_OWNER}'/>", f"formal@{SERVICE}")
            form = query.find(f"{{{NS_DATA}}}x")
            assert form.get("type") == "form"
            fields = {f.get("var") for f in form.findall(f"{{{NS_DATA}}}field")}
            assert ROOMCONFIG_FIELDS | {"FORM_TYPE"} <= fields
            owners = [
                f
                for f in form.findall(f"{{{NS_DATA}}}field")
                if f.get("var") == "muc#roomconfig_roomowners"
            ][0]
            assert owners.findtext(f"{{{NS_DATA}}}value") == "room-ann@localhost"
            refused = await iq_error(
                ben, "get", f"<query xmlns='{NS_OWNER}'/>", f"formal@{SERVICE}"
            )
            assert refused == "forbidden"
            bad = await iq_error(
                ann,
                "set",
                f"<query xmlns='{NS_OWNER}'><x xmlns='{NS_DATA}' type='submit'>"
                "<field var='muc#roomconfig_whois'><value>everybody</value></field></x></query>",
                f"formal@{SERVICE}",
            )
            assert bad == "not-acceptable"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_configuration_change_is_announced(server):
    """§10.2.1: status 104 to the occupants; 172 when the room becomes
    non-anonymous, and then everyone sees real JIDs (status 100 on entry)."""

    async def scenario():
        ann, ben, cat = await clients(server, "room-ann", "room-ben", "room-cat")
        try:
            await ann.create_instant("announce", "ann")
            await ben.enter("announce", "ben")
            await ann.configure("announce", whois="anyone")
            notice = await ben.wait_for(lambda s: "104" in status_codes(s))
            assert "172" in status_codes(notice)
            own = await cat.enter("announce", "cat")
            assert "100" in status_codes(own)
            ann_seen = await cat.presence_of("announce", "ann")
            assert item_of(ann_seen).get("jid") == str(ann.boundjid)
            assert "muc_nonanonymous" in await features(cat, "announce")
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_password_protected_room(server):
    """§7.2.5: without the right password: <not-authorized/>."""

    async def scenario():
        ann, ben = await clients(server, "room-ann", "room-ben")
        try:
            await ann.create_instant("secret", "ann")
            await ann.configure("secret", passwordprotectedroom=True, roomsecret="sesame")
            assert "muc_passwordprotected" in await features(ben, "secret")
            refused = await ben.enter("secret", "ben")
            assert error_condition(refused) == "not-authorized"
            refused = await ben.enter("secret", "ben", password="wrong")
            assert error_condition(refused) == "not-authorized"
            own = await ben.enter("secret", "ben", password="sesame")
            assert own.get("type") is None
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_members_only_room(server):
    """§7.2.6: a non-member gets <registration-required/>; a member enters.
    Making a room members-only removes non-members (status 322, §15.6)."""

    async def scenario():
        ann, ben, cat = await clients(server, "room-ann", "room-ben", "room-cat")
        try:
            await ann.create_instant("club", "ann")
            await cat.enter("club", "cat")
            await ann.configure("club", membersonly=True)
            removed = await cat.presence_of("club", "cat", unavailable=True)
            assert "322" in status_codes(removed)
            refused = await ben.enter("club", "ben")
            assert error_condition(refused) == "registration-required"
            await ann.admin("club", "<item affiliation='member' jid='room-ben@localhost'/>")
            own = await ben.enter("club", "ben")
            assert item_of(own).get("affiliation") == "member"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_moderated_room_and_voice_requests(server):
    """§7.4: visitors of a moderated room cannot speak (<forbidden/>); §7.13
    a voice request goes to the moderators as a form; §8.6 approving it
    makes the visitor a participant."""

    async def scenario():
        ann, ben = await clients(server, "room-ann", "room-ben")
        try:
            await ann.create_instant("stage", "ann")
            await ann.configure("stage", moderatedroom=True)
            own = await ben.enter("stage", "ben")
            assert item_of(own).get("role") == "visitor"
            ben.say("stage", "can I talk?")
            assert await ben.error_to("message") == "forbidden"
            ben.send_xml(
                f"<message to='stage@{SERVICE}'><x xmlns='{NS_DATA}' type='submit'>"
                "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
                "<field var='muc#role'><value>participant</value></field></x></message>"
            )
            request = await ann.wait_for(lambda s: s.find(f"{{{NS_DATA}}}x") is not None)
            fields = {
                f.get("var"): f.findtext(f"{{{NS_DATA}}}value")
                for f in request.find(f"{{{NS_DATA}}}x").findall(f"{{{NS_DATA}}}field")
            }
            assert fields["muc#roomnick"] == "ben"
            assert fields["muc#request_allow"] == "0"
            ann.send_xml(
                f"<message to='stage@{SERVICE}'><x xmlns='{NS_DATA}' type='submit'>"
                "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
                "<field var='muc#role'><value>participant</value></field>"
                "<field var='muc#roomnick'><value>ben</value></field>"
                "<field var='muc#request_allow'><value>true</value></field></x></message>"
            )
            voiced = await ben.wait_for(
                lambda s: (
                    s.get("from") == f"stage@{SERVICE}/ben"
                    and item_of(s) is not None
                    and item_of(s).get("role") == "participant"
                )
            )
            assert "110" in status_codes(voiced)
            ben.say("stage", "thank you")
            await ann.heard("stage", "thank you")
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_maximum_occupants(server):
    """§7.2.10: a full room answers <service-unavailable/>."""

    async def scenario():
        ann, ben, cat = await clients(server, "room-ann", "room-ben", "room-cat")
        try:
            await ann.create_instant("small", "ann")
            await ann.configure("small", maxusers="2")
            await ben.enter("small", "ben")
            refused = await cat.enter("small", "cat")
            assert error_condition(refused) == "service-unavailable"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_temporary_room_ends_with_its_last_occupant(server):
    """§10.1: a temporary room is destroyed when empty: the next to enter
    creates a new one and owns it."""

    async def scenario():
        ann, ben = await clients(server, "room-ann", "room-ben")
        try:
            await ann.create_instant("fleeting", "ann")
            ann.send_xml(f"<presence to='fleeting@{SERVICE}/ann' type='unavailable'/>")
            await ann.presence_of("fleeting", "ann", unavailable=True)
            own = await ben.enter("fleeting", "ben")
            assert "201" in status_codes(own)
            assert item_of(own).get("affiliation") == "owner"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_destroying_a_room_with_an_alternate_venue(server):
    """§10.9: the occupants leave with <destroy jid=''><reason/></destroy>;
    only owners may destroy (<forbidden/>)."""

    async def scenario():
        ann, ben = await clients(server, "room-ann", "room-ben")
        try:
            await ann.create_instant("doomed", "ann")
            await ann.configure("doomed", persistentroom=True)
            await ben.enter("doomed", "ben")
            destroy = (
                f"<query xmlns='{NS_OWNER}'><destroy jid='haven@{SERVICE}'>"
                "<reason>moving</reason></destroy></query>"
            )
            assert await iq_error(ben, "set", destroy, f"doomed@{SERVICE}") == "forbidden"
            await send_iq(ann, "set", destroy, f"doomed@{SERVICE}")
            gone = await ben.presence_of("doomed", "ben", unavailable=True)
            venue = gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy")
            assert venue.get("jid") == f"haven@{SERVICE}"
            assert venue.findtext(f"{{{NS_USER}}}reason") == "moving"
            missing = await iq_error(
                ben, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", f"doomed@{SERVICE}"
            )
            assert missing == "item-not-found"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_persistent_room_survives_a_restart(tmp_path):
    """A persistent room keeps its configuration, affiliations, subject and
    history (§7.2.15) in the database: after a restart it is there, empty,
    and a newcomer gets the history."""
    tag = secrets.token_hex(3)
    owner, member = f"keep-own-{tag}", f"keep-mem-{tag}"
    room = f"archive-{tag}"
    server = start_server(tmp_path / "muc-restart")
    try:
        register(server, owner, member)

        async def before():
            ann = await connect_muc(server, owner)
            try:
                await ann.create_instant(room, "ann")
                await ann.configure(room, persistentroom=True, roomname="Archive", membersonly=True)
                await ann.admin(room, f"<item affiliation='member' jid='{member}@localhost'/>")
                ann.send_xml(
                    f"<message to='{room}@{SERVICE}' type='groupchat'>"
                    "<subject>Kept</subject></message>"
                )
                for n in range(3):
                    ann.say(room, f"old {n}")
                    await ann.heard(room, f"old {n}")
            finally:
                await disconnect(ann)

        asyncio.run(before())
        assert stop_server(server, drop_database=False) == 0
        server = start_server(tmp_path / "muc-restart")

        async def after():
            ben = await connect_muc(server, member)
            try:
                ben.send_xml(ben.enter_stanza(room, "ben"))
                subject = await ben.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
                assert subject.findtext("{jabber:client}subject") == "Kept"
                bodies = [
                    s.findtext("{jabber:client}body")
                    for s in ben.inbox
                    if s.findtext("{jabber:client}body")
                ]
                assert bodies == ["old 0", "old 1", "old 2"]
                own = [s for s in ben.inbox if "110" in status_codes(s)][0]
                assert item_of(own).get("affiliation") == "member"
                info = await send_iq(
                    ben, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", f"{room}@{SERVICE}"
                )
                identity = info.find(f"{{{NS_DISCO_INFO}}}identity")
                assert identity.get("name") == "Archive"
                feats = {f.get("var") for f in info.findall(f"{{{NS_DISCO_INFO}}}feature")}
                assert {"muc_persistent", "muc_membersonly"} <= feats
            finally:
                await disconnect(ben)

        asyncio.run(after())
    finally:
        stop_server(server)
