"""Multi-user chat as an occupant sees it (XEP-0045 §6, §7): discovering the
service and its rooms, entering (§7.2) with its status codes and history
(§7.2.15), the subject (§7.2.16, §8.1), groupchat and private messages
(§7.4, §7.5), nickname conflicts and changes (§7.2.9, §7.6), presence
changes (§7.7), leaving (§7.14), occupant-id (XEP-0421) and self-ping
(XEP-0410). Several slixmpp clients over real sockets."""

from __future__ import annotations

import asyncio
import datetime
import xml.etree.ElementTree as ET

import pytest

from .muc_clients import (
    NS_DATA,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_OCCUPANT_ID,
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

USERS = ("muc-ann", "muc-ben", "muc-cat", "muc-dan")


@pytest.fixture(scope="module")
def server(xmpp_server):
    register(xmpp_server, *USERS)
    return xmpp_server


def run(scenario):
    return asyncio.run(scenario)


async def clients(server, *users: str):
    return [await connect_muc(server, user) for user in users]


def occupant_id(stanza: ET.Element) -> str | None:
    el = stanza.find(f"{{{NS_OCCUPANT_ID}}}occupant-id")
    return el.get("id") if el is not None else None


def test_service_is_listed_and_describes_itself(server):
    """§6.1: the server lists conference.<domain>; it is a conference/text service."""

    async def scenario():
        (ann,) = await clients(server, "muc-ann")
        try:
            items = await send_iq(ann, "get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", "localhost")
            assert SERVICE in [i.get("jid") for i in items]
            info = await send_iq(ann, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", SERVICE)
            identity = info.find(f"{{{NS_DISCO_INFO}}}identity")
            assert (identity.get("category"), identity.get("type")) == ("conference", "text")
            features = {f.get("var") for f in info.findall(f"{{{NS_DISCO_INFO}}}feature")}
            assert "http://jabber.org/protocol/muc" in features
        finally:
            await disconnect(ann)

    run(scenario())


def test_new_room_is_locked_until_configured(server):
    """§10.1.1: the creator owns a locked room (status 201) that others cannot
    enter (<item-not-found/>) until it is configured; §10.1.2 instant room."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            own = await ann.enter("locked", "ann")
            assert {"110", "201"} <= status_codes(own)
            item = item_of(own)
            assert (item.get("affiliation"), item.get("role")) == ("owner", "moderator")
            refused = await ben.enter("locked", "ben")
            assert refused.get("type") == "error"
            assert error_condition(refused) == "item-not-found"
            await ann.configure("locked")
            own = await ben.enter("locked", "ben")
            assert item_of(own).get("role") == "participant"
            assert item_of(own).get("affiliation") == "none"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_entering_gets_occupants_then_own_presence_then_subject(server):
    """§7.2.3: the occupants' presence, then one's own with status 110, then
    history, then the subject (§7.2.16), in that order; the others see the
    newcomer. Semi-anonymous: only moderators see the real JID (§7.2.4)."""

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("order", "ann")
            await ben.enter("order", "ben")
            ben.clear()
            ann.clear()
            cat.send_xml(cat.enter_stanza("order", "cat"))
            subject = await cat.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
            assert subject.get("type") == "groupchat"
            assert subject.find("{jabber:client}body") is None
            sequence = [
                s
                for s in cat.inbox
                if s.tag == "{jabber:client}presence" and s.get("from").startswith("order@")
            ]
            froms = [s.get("from") for s in sequence]
            assert froms[-1] == f"order@{SERVICE}/cat"
            assert set(froms[:-1]) == {f"order@{SERVICE}/ann", f"order@{SERVICE}/ben"}
            assert "110" in status_codes(sequence[-1])
            # cat is a participant in a semi-anonymous room: no real JIDs.
            assert all(item_of(s).get("jid") is None for s in sequence)
            # The moderator sees cat's real JID, the participant does not.
            to_ann = await ann.presence_of("order", "cat")
            assert item_of(to_ann).get("jid") == str(cat.boundjid)
            to_ben = await ben.presence_of("order", "cat")
            assert item_of(to_ben).get("jid") is None
            assert occupant_id(to_ben) and occupant_id(to_ben) == occupant_id(to_ann)
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_groupchat_message_reaches_every_occupant(server):
    """§7.4: from room@service/nick to every occupant (the sender too), the
    id kept, with the sender's occupant-id (XEP-0421), never one it forged."""

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("talk", "ann")
            await ben.enter("talk", "ben")
            await cat.enter("talk", "cat")
            ben.send_xml(
                f"<message to='talk@{SERVICE}' type='groupchat' id='hello-1'><body>hello</body>"
                f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/></message>"
            )
            got = [await c.heard("talk", "hello") for c in (ann, ben, cat)]
            for message in got:
                assert message.get("from") == f"talk@{SERVICE}/ben"
                assert message.get("id") == "hello-1"
                ids = [e.get("id") for e in message.findall(f"{{{NS_OCCUPANT_ID}}}occupant-id")]
                assert len(ids) == 1 and ids[0] != "forged"
            assert got[0].get("to") == str(ann.boundjid)
            assert got[2].get("to") == str(cat.boundjid)
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_only_occupants_may_send_to_the_room(server):
    """§7.4: a groupchat message from someone not in the room: <not-acceptable/>."""

    async def scenario():
        ann, dan = await clients(server, "muc-ann", "muc-dan")
        try:
            await ann.create_instant("closed-door", "ann")
            dan.say("closed-door", "let me in")
            assert await dan.error_to("message") == "not-acceptable"
        finally:
            await disconnect(ann, dan)

    run(scenario())


def test_history_is_sent_on_entry_within_the_limits_asked(server):
    """§7.2.15: history with a <delay/> from the room; maxstanzas, maxchars,
    seconds and since limit it; maxchars='0' asks for none."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("history", "ann")
            for n in range(5):
                ann.say("history", f"line {n}")
                await ann.heard("history", f"line {n}")

            async def entered(**history) -> list[str]:
                attrs = " ".join(f"{k}='{v}'" for k, v in history.items())
                ben.clear()
                await ben.enter("history", "ben", history=f"<history {attrs}/>" if history else "")
                await ben.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
                bodies = [
                    s.findtext("{jabber:client}body")
                    for s in ben.inbox
                    if s.findtext("{jabber:client}body")
                ]
                delays = [
                    s.find("{urn:xmpp:delay}delay")
                    for s in ben.inbox
                    if s.findtext("{jabber:client}body")
                ]
                assert all(d is not None and d.get("from") == f"history@{SERVICE}" for d in delays)
                ben.send_xml(f"<presence to='history@{SERVICE}/ben' type='unavailable'/>")
                await ben.presence_of("history", "ben", unavailable=True)
                return bodies

            assert await entered() == [f"line {n}" for n in range(5)]
            assert await entered(maxstanzas=2) == ["line 3", "line 4"]
            assert await entered(maxchars=0) == []
            assert await entered(seconds=3600) == [f"line {n}" for n in range(5)]
            future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            assert await entered(since=future.strftime("%Y-%m-%dT%H:%M:%SZ")) == []
            one = await entered(maxchars=400)
            assert one and len(one) < 5 and one[-1] == "line 4"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_nickname_in_use_is_a_conflict(server):
    """§7.2.9: <conflict/> when the nickname belongs to someone else."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("nicks", "ann")
            refused = await ben.enter("nicks", "ann")
            assert error_condition(refused) == "conflict"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_changing_nickname(server):
    """§7.6: unavailable with status 303 and the new nick, then available
    under the new one; a taken nickname is a <conflict/>."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("renames", "ann")
            await ben.enter("renames", "ben")
            ann.clear()
            ben.send_xml(f"<presence to='renames@{SERVICE}/benjamin'/>")
            gone = await ann.presence_of("renames", "ben", unavailable=True)
            assert "303" in status_codes(gone) and item_of(gone).get("nick") == "benjamin"
            await ann.presence_of("renames", "benjamin", unavailable=False)
            own_gone = await ben.presence_of("renames", "ben", unavailable=True)
            assert {"303", "110"} <= status_codes(own_gone)
            ben.send_xml(f"<presence to='renames@{SERVICE}/ann'/>")
            assert await ben.error_to("presence") == "conflict"
            ann.clear()
            ben.say("renames", "still here")
            message = await ann.heard("renames", "still here")
            assert message.get("from") == f"renames@{SERVICE}/benjamin"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_presence_change_is_broadcast(server):
    """§7.7: a new status reaches every occupant."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("moods", "ann")
            await ben.enter("moods", "ben")
            ann.clear()
            ben.send_xml(
                f"<presence to='moods@{SERVICE}/ben'><show>away</show>"
                "<status>lunch</status></presence>"
            )
            changed = await ann.wait_for(
                lambda s: (
                    s.get("from") == f"moods@{SERVICE}/ben"
                    and s.find("{jabber:client}show") is not None
                )
            )
            assert changed.findtext("{jabber:client}show") == "away"
            assert changed.findtext("{jabber:client}status") == "lunch"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_leaving_and_disconnecting(server):
    """§7.14: leaving sends unavailable (role none) to all, 110 to oneself;
    a session that ends without leaving leaves too (RFC 6121 §4.6.3)."""

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("exits", "ann")
            await ben.enter("exits", "ben")
            await cat.enter("exits", "cat")
            ben.send_xml(
                f"<presence to='exits@{SERVICE}/ben' type='unavailable'>"
                "<status>bye</status></presence>"
            )
            gone = await ann.presence_of("exits", "ben", unavailable=True)
            assert item_of(gone).get("role") == "none"
            assert gone.findtext("{jabber:client}status") == "bye"
            own = await ben.presence_of("exits", "ben", unavailable=True)
            assert "110" in status_codes(own)
            await disconnect(cat)
            dropped = await ann.presence_of("exits", "cat", unavailable=True)
            assert item_of(dropped).get("role") == "none"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_private_messages_between_occupants(server):
    """§7.5: through the room, from the sender's occupant JID; unknown nick:
    <item-not-found/>; muc#roomconfig_allowpm 'none': <forbidden/>."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("whispers", "ann")
            await ben.enter("whispers", "ben")
            ben.send_xml(
                f"<message to='whispers@{SERVICE}/ann' type='chat'><body>psst</body></message>"
            )
            got = await ann.wait_for(lambda s: s.findtext("{jabber:client}body") == "psst")
            assert got.get("from") == f"whispers@{SERVICE}/ben"
            assert got.find(f"{{{NS_USER}}}x") is not None
            ben.send_xml(
                f"<message to='whispers@{SERVICE}/nobody' type='chat'><body>?</body></message>"
            )
            assert await ben.error_to("message") == "item-not-found"
            await ann.configure("whispers", allowpm="none")
            ben.send_xml(
                f"<message to='whispers@{SERVICE}/ann' type='chat'><body>again</body></message>"
            )
            assert await ben.error_to("message") == "forbidden"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_subject(server):
    """§8.1: moderators change the subject (participants only when
    muc#roomconfig_changesubject); newcomers get it (§7.2.16)."""

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("topics", "ann")
            await ben.enter("topics", "ben")
            ben.send_xml(
                f"<message to='topics@{SERVICE}' type='groupchat'><subject>mine</subject></message>"
            )
            assert await ben.error_to("message") == "forbidden"
            ann.send_xml(
                f"<message to='topics@{SERVICE}' type='groupchat'>"
                "<subject>Plans</subject></message>"
            )
            changed = await ben.wait_for(lambda s: s.findtext("{jabber:client}subject") == "Plans")
            assert changed.get("from") == f"topics@{SERVICE}/ann"
            cat.send_xml(cat.enter_stanza("topics", "cat"))
            told = await cat.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
            assert told.findtext("{jabber:client}subject") == "Plans"
            # The subject change is not history.
            assert not [s for s in cat.inbox if s.find("{urn:xmpp:delay}delay") is not None]
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_room_discovery(server):
    """§6.3 public rooms in disco#items (hidden ones not); §6.4 a room's
    disco#info: identity, type features, occupant-id, muc#roominfo."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("lobby", "ann")
            await ann.configure("lobby", roomname="The Lobby", roomdesc="Say hi")
            await ann.create_instant("backroom", "ann")
            await ann.configure("backroom", publicroom=False)
            items = await send_iq(ben, "get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", SERVICE)
            listed = {i.get("jid"): i.get("name") for i in items}
            assert listed.get(f"lobby@{SERVICE}") == "The Lobby"
            assert f"backroom@{SERVICE}" not in listed
            info = await send_iq(
                ben, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", f"lobby@{SERVICE}"
            )
            identity = info.find(f"{{{NS_DISCO_INFO}}}identity")
            assert identity.get("name") == "The Lobby"
            features = {f.get("var") for f in info.findall(f"{{{NS_DISCO_INFO}}}feature")}
            assert {
                "http://jabber.org/protocol/muc",
                NS_OCCUPANT_ID,
                "muc_public",
                "muc_open",
                "muc_unmoderated",
                "muc_semianonymous",
                "muc_unsecured",
                "muc_temporary",
            } <= features
            form = info.find(f"{{{NS_DATA}}}x")
            fields = {
                f.get("var"): f.findtext(f"{{{NS_DATA}}}value")
                for f in form.findall(f"{{{NS_DATA}}}field")
            }
            assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
            assert fields["muc#roominfo_description"] == "Say hi"
            assert fields["muc#roominfo_occupants"] == "1"
            missing = await iq_error(
                ben, "get", f"<query xmlns='{NS_DISCO_INFO}'/>", f"nowhere@{SERVICE}"
            )
            assert missing == "item-not-found"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_self_ping(server):
    """XEP-0410 §3: a ping to one's own occupant JID: a result while joined,
    <not-acceptable/> when not."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("pings", "ann")
            await send_iq(ann, "get", "<ping xmlns='urn:xmpp:ping'/>", f"pings@{SERVICE}/ann")
            condition = await iq_error(
                ben, "get", "<ping xmlns='urn:xmpp:ping'/>", f"pings@{SERVICE}/ben"
            )
            assert condition == "not-acceptable"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_occupant_id_is_stable_for_a_user(server):
    """XEP-0421 §4: the same real bare JID gets the same id when it comes
    back, and two users get different ones."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("ids", "ann")
            first = occupant_id(await ben.enter("ids", "ben"))
            ann_id = occupant_id(await ben.presence_of("ids", "ann"))
            ben.send_xml(f"<presence to='ids@{SERVICE}/ben' type='unavailable'/>")
            await ben.presence_of("ids", "ben", unavailable=True)
            again = occupant_id(await ben.enter("ids", "benny"))
            assert first and first == again and ann_id != first
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_one_nickname_from_several_sessions(server):
    """The same user may be in a room under one nickname from several
    sessions (clients); each gets the messages, and one session leaving is
    not the occupant leaving."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        phone = await connect_muc(server, "muc-ben", "phone")
        try:
            await ann.create_instant("devices", "ann")
            await ben.enter("devices", "ben")
            own = await phone.enter("devices", "ben")
            assert own.get("type") is None
            ann.say("devices", "to both")
            await ben.heard("devices", "to both")
            await phone.heard("devices", "to both")
            ann.clear()
            phone.send_xml(f"<presence to='devices@{SERVICE}/ben' type='unavailable'/>")
            await phone.presence_of("devices", "ben", unavailable=True)
            assert await ann.nothing_matching(
                lambda s: (
                    s.get("from") == f"devices@{SERVICE}/ben" and s.get("type") == "unavailable"
                )
            )
            ann.say("devices", "still there")
            await ben.heard("devices", "still there")
        finally:
            await disconnect(ann, ben, phone)

    run(scenario())


def test_entering_again_resends_the_room_state(server):
    """A client that lost track of the room (XEP-0410 §3) sends its entering
    presence again: it gets the occupants, its own presence and the subject
    again, and stays the same occupant."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            await ann.create_instant("again", "ann")
            await ben.enter("again", "ben")
            ben.clear()
            ann.clear()
            own = await ben.enter("again", "ben")
            assert "110" in status_codes(own)
            await ben.presence_of("again", "ann")
            await ben.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
            assert await ann.nothing_matching(
                lambda s: s.get("from") == f"again@{SERVICE}/ben" and s.get("type") == "unavailable"
            )
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_session_without_presence_leaves_when_it_ends(server):
    """A session that entered a room without ever sending broadcast presence
    still leaves the room when it ends (the session-closed hook)."""

    async def scenario():
        ann = await connect_muc(server, "muc-ann")
        ben = await connect_muc(server, "muc-ben", presence=False)
        try:
            await ann.create_instant("silent", "ann")
            await ben.enter("silent", "ben")
            await disconnect(ben)
            gone = await ann.presence_of("silent", "ben", unavailable=True)
            assert item_of(gone).get("role") == "none"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_groupchat_1_0_client_gets_an_instant_room(server):
    """§10.1.1: presence without <x/> (an old groupchat client) creates an
    unlocked room at once, which others can enter."""

    async def scenario():
        ann, ben = await clients(server, "muc-ann", "muc-ben")
        try:
            own = await ann.enter("oldschool", "ann", muc=False)
            assert "201" in status_codes(own)
            other = await ben.enter("oldschool", "ben")
            assert other.get("type") is None
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_reserved_nickname(server):
    """§7.12: a nickname reserved with a membership is that member's: others
    get <conflict/>, and disco#info on x-roomuser-item tells the member."""

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("reserved", "ann")
            await ann.admin(
                "reserved", "<item affiliation='member' jid='muc-ben@localhost' nick='benji'/>"
            )
            refused = await cat.enter("reserved", "benji")
            assert error_condition(refused) == "conflict"
            info = await send_iq(
                ben,
                "get",
                f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>",
                f"reserved@{SERVICE}",
            )
            assert info.find(f"{{{NS_DISCO_INFO}}}identity").get("name") == "benji"
            assert (await ben.enter("reserved", "benji")).get("type") is None
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_registering_with_a_room(server):
    """§7.10: the muc#register form reserves a nickname and makes the user a
    member; someone else's nickname is a <conflict/>; in a members-only
    room a non-member gets <registration-required/>."""
    form = (
        "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
        "<field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
    )

    async def scenario():
        ann, ben, cat = await clients(server, "muc-ann", "muc-ben", "muc-cat")
        try:
            await ann.create_instant("signup", "ann")
            asked = await send_iq(
                ben, "get", "<query xmlns='jabber:iq:register'/>", f"signup@{SERVICE}"
            )
            fields = {f.get("var") for f in asked.iter(f"{{{NS_DATA}}}field")}
            assert "muc#register_roomnick" in fields
            await send_iq(ben, "set", form.format(nick="bee"), f"signup@{SERVICE}")
            done = await send_iq(
                ben, "get", "<query xmlns='jabber:iq:register'/>", f"signup@{SERVICE}"
            )
            assert done.find("{jabber:iq:register}registered") is not None
            assert done.findtext("{jabber:iq:register}username") == "bee"
            own = await ben.enter("signup", "bee")
            assert item_of(own).get("affiliation") == "member"
            taken = await iq_error(cat, "set", form.format(nick="bee"), f"signup@{SERVICE}")
            assert taken == "conflict"
            await ann.configure("signup", membersonly=True)
            closed = await iq_error(cat, "set", form.format(nick="cat"), f"signup@{SERVICE}")
            assert closed == "registration-required"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_normalised_nickname_is_announced(server):
    """§7.2.3 status 210: the service changed the nickname asked for; here
    RFC 7622's OpaqueString profile normalises "e" + a combining acute
    accent to the single character U+00E9."""

    async def scenario():
        (ann,) = await clients(server, "muc-ann")
        try:
            own = await ann.enter("norm", "e\u0301")
            assert "210" in status_codes(own)
            assert own.get("from") == f"norm@{SERVICE}/\u00e9"
        finally:
            await disconnect(ann)

    run(scenario())
