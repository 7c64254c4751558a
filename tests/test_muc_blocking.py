"""Block lists (XEP-0191 §3.3) on what a room fans out (XEP-0045 §7.4,
§7.5, §7.7): a user who blocked an occupant's room JID gets nothing from
it, whether the room broadcasts it or relays it privately, while the rest
of the room is heard as before. Slixmpp clients over real sockets."""

from __future__ import annotations

import asyncio

import pytest

from .muc_clients import SERVICE, connect_muc, disconnect, register, send_iq

USERS = ("mucblock-ann", "mucblock-ben", "mucblock-cat")
NS_BLOCKING = "urn:xmpp:blocking"
BODY = "{jabber:client}body"


@pytest.fixture(scope="module")
def server(xmpp_server):
    register(xmpp_server, *USERS)
    return xmpp_server


def run(scenario):
    return asyncio.run(scenario)


async def block(client, jid: str) -> None:
    await send_iq(client, "set", f"<block xmlns='{NS_BLOCKING}'><item jid='{jid}'/></block>")


async def unblock(client, jid: str) -> None:
    await send_iq(client, "set", f"<unblock xmlns='{NS_BLOCKING}'><item jid='{jid}'/></unblock>")


async def settle(server, *clients) -> None:
    """A ping round trip each: what the server wrote before its answer has arrived."""
    for client in clients:
        await client.plugin["xep_0199"].send_ping(server.domain, timeout=10)


async def ann_blocks_ben_in(ann, ben, cat, room: str) -> None:
    """ann, ben and cat enter a new `room`; ann blocks ben's occupant JID."""
    await ann.create_instant(room, "ann")
    await ben.enter(room, "ben")
    await cat.enter(room, "cat")
    await block(ann, f"{room}@{SERVICE}/ben")
    ann.clear()


def private(room: str, nick: str, body: str) -> str:
    return f"<message to='{room}@{SERVICE}/{nick}' type='chat'><body>{body}</body></message>"


def bodies(client) -> list[str]:
    return [s.findtext(BODY) for s in client.inbox if s.findtext(BODY) is not None]


def test_groupchat_from_a_blocked_occupant_is_not_delivered(server):
    """Blocking room@service/nick keeps that occupant's groupchat messages
    away; the others' messages still arrive, and unblocking lets it in again."""

    async def scenario():
        ann, ben, cat = [await connect_muc(server, user) for user in USERS]
        try:
            await ann_blocks_ben_in(ann, ben, cat, "blockroom")
            ben.say("blockroom", "from-ben")
            await cat.heard("blockroom", "from-ben")
            cat.say("blockroom", "from-cat")
            await ann.heard("blockroom", "from-cat")
            await settle(server, ann)
            assert "from-ben" not in bodies(ann)
            await unblock(ann, f"blockroom@{SERVICE}/ben")
            ben.say("blockroom", "again-from-ben")
            await ann.heard("blockroom", "again-from-ben")
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_private_message_from_a_blocked_occupant_is_not_delivered(server):
    """§7.5 relayed through the room: a blocked occupant's private message
    does not reach the user; another occupant's does."""

    async def scenario():
        ann, ben, cat = [await connect_muc(server, user) for user in USERS]
        try:
            await ann_blocks_ben_in(ann, ben, cat, "blockpm")
            ben.send_xml(
                f"<message to='blockpm@{SERVICE}/ann' type='chat'><body>psst</body></message>"
            )
            await settle(server, ben)
            cat.send_xml(
                f"<message to='blockpm@{SERVICE}/ann' type='chat'><body>hi</body></message>"
            )
            await ann.wait_for(lambda s: s.findtext(BODY) == "hi")
            await settle(server, ann)
            assert "psst" not in bodies(ann)
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_presence_of_a_blocked_occupant_is_not_delivered(server):
    """§7.7: a blocked occupant's presence change is not broadcast to the
    user; another occupant's change is."""

    async def scenario():
        ann, ben, cat = [await connect_muc(server, user) for user in USERS]
        try:
            await ann_blocks_ben_in(ann, ben, cat, "blockpres")
            ben.send_xml(f"<presence to='blockpres@{SERVICE}/ben'><show>away</show></presence>")
            await cat.presence_of("blockpres", "ben")
            cat.send_xml(f"<presence to='blockpres@{SERVICE}/cat'><show>dnd</show></presence>")
            await ann.presence_of("blockpres", "cat")
            await settle(server, ann)
            assert not [s for s in ann.inbox if s.get("from") == f"blockpres@{SERVICE}/ben"]
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_blocking_the_room_takes_the_user_out_of_it(server):
    """Blocking room@service: the room got the user's directed presence, so
    it gets unavailable presence (XEP-0191 §3.3) and the user leaves; nothing
    said in the room afterwards reaches the user."""

    async def scenario():
        ann, ben = [await connect_muc(server, user) for user in USERS[:2]]
        try:
            await ann.create_instant("blockall", "ann")
            await ben.enter("blockall", "ben")
            await block(ann, f"blockall@{SERVICE}")
            await ben.presence_of("blockall", "ann", unavailable=True)
            ann.clear()
            ben.say("blockall", "anyone-there")
            await ben.heard("blockall", "anyone-there")
            await settle(server, ann)
            assert "anyone-there" not in bodies(ann)
        finally:
            await disconnect(ann, ben)

    run(scenario())
