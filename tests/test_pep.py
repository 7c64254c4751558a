"""PEP (XEP-0163) between slixmpp clients: every account is a virtual pubsub
service; publishing auto-creates the node; contacts with a presence
subscription get notifications filtered by the +notify features of their
entity capabilities (XEP-0115, resolved once per hash), and the last item
when they become available. User avatars (XEP-0084), nicknames (XEP-0172)
and bookmarks (XEP-0402) as PEP nodes.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from .clients import disconnect, send_iq
from .test_pubsub import (
    NS,
    befriend,
    next_event,
    no_event,
    pubsub_client,
    pubsub_error,
    register,
    run,
)

NICK = "http://jabber.org/protocol/nick"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_META = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PEP_PLUGINS = (
    "xep_0004",
    "xep_0128",
    "xep_0059",
    "xep_0060",
    "xep_0115",
    "xep_0163",
    "xep_0172",
    "xep_0084",
    "xep_0402",
)


# Without the payload plugins, which register their own +notify interests.
BARE_PLUGINS = ("xep_0004", "xep_0128", "xep_0060", "xep_0115", "xep_0163")


async def pep_client(
    server, user, resource="pep", interests=(), presence=True, plugins=PEP_PLUGINS
):
    def interested(client):
        for ns in interests:
            client.plugin["xep_0163"].add_interest(ns)

    client = await pubsub_client(
        server, user, resource, plugins, presence=False, before_connect=interested
    )
    client.disco_queries = []
    client.add_filter("in", lambda s: _count_caps_query(client, s))
    if presence:
        client.send_presence()
    return client


def _count_caps_query(client, stanza):
    query = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
    if stanza.xml.get("type") == "get" and query is not None and "#" in (query.get("node") or ""):
        client.disco_queries.append(query.get("node"))
    return stanza


def nick(text: str) -> ET.Element:
    el = ET.Element(f"{{{NICK}}}nick")
    el.text = text
    return el


def event_node(msg) -> str:
    return msg["pubsub_event"]["items"]["node"]


def event_payload(msg) -> ET.Element:
    return msg["pubsub_event"]["items"]["item"].xml[0]


def test_pep_notifications_follow_presence_subscription_and_caps(xmpp_server):
    """§4.3: contacts with +notify hear; one without it, or without a
    subscription, does not; the service asks for a caps hash once."""
    owner_name, friend_name, deaf_name, stranger_name = "pepown", "pepfriend", "pepdeaf", "pepstr"
    register(xmpp_server, owner_name, friend_name, deaf_name, stranger_name)

    async def scenario():
        owner = await pep_client(xmpp_server, owner_name)
        friend = await pep_client(xmpp_server, friend_name, interests=[NICK])
        deaf = await pep_client(xmpp_server, deaf_name, plugins=BARE_PLUGINS)
        stranger = await pep_client(xmpp_server, stranger_name, interests=[NICK])
        owner_jid = xmpp_server.jid(owner_name)
        try:
            await befriend(owner, friend, xmpp_server.jid(friend_name), owner_jid)
            await befriend(owner, deaf, xmpp_server.jid(deaf_name), owner_jid)
            await asyncio.sleep(0.5)  # caps resolved
            # XEP-0172 through slixmpp's plugin: the node is created on first publish.
            await owner.plugin["xep_0172"].publish_nick("Owner")
            msg = await next_event(friend, "publish")
            assert msg["from"].bare == owner_jid
            assert event_node(msg) == NICK
            assert event_payload(msg).text == "Owner"
            await no_event(deaf)
            await no_event(stranger)
            # A second client with the same software: the hash is known, no question.
            again = await pep_client(xmpp_server, friend_name, "second", interests=[NICK])
            assert event_payload(await next_event(again, "publish")).text == "Owner"  # the last
            await owner.plugin["xep_0172"].publish_nick("Owner 2")
            assert event_payload(await next_event(again, "publish")).text == "Owner 2"
            assert again.disco_queries == []
            assert len(friend.disco_queries) <= 1
            await disconnect(again)
            # Items: the contact may read them, a stranger may not (access model presence).
            items = await friend.plugin["xep_0060"].get_items(owner_jid, NICK)
            assert [i.xml[0].text for i in items["pubsub"]["items"]] == ["Owner 2"]
            assert await pubsub_error(
                stranger, "get", f"<pubsub xmlns='{NS}'><items node='{NICK}'/></pubsub>", owner_jid
            ) == ("not-authorized", "presence-subscription-required")
            # Nobody but the owner publishes on its PEP service.
            assert await pubsub_error(
                friend,
                "set",
                f"<pubsub xmlns='{NS}'><publish node='{NICK}'><item>"
                f"<nick xmlns='{NICK}'>x</nick></item></publish></pubsub>",
                owner_jid,
            ) == ("forbidden", None)
        finally:
            await disconnect(owner, friend, deaf, stranger)

    run(scenario)


def test_last_item_is_sent_when_a_contact_becomes_available(xmpp_server):
    """§4.3.3: the last published item at the contact's first available presence."""
    owner_name, friend_name = "peplastown", "peplastfr"
    register(xmpp_server, owner_name, friend_name)

    async def scenario():
        owner = await pep_client(xmpp_server, owner_name)
        friend = await pep_client(xmpp_server, friend_name, interests=[NICK])
        owner_jid = xmpp_server.jid(owner_name)
        try:
            await befriend(owner, friend, xmpp_server.jid(friend_name), owner_jid)
            await disconnect(friend)
            await owner.plugin["xep_0172"].publish_nick("While you were away")
            friend = await pep_client(xmpp_server, friend_name, interests=[NICK])
            msg = await next_event(friend, "publish")
            assert event_payload(msg).text == "While you were away"
            assert msg.xml.find("{urn:xmpp:delay}delay") is not None
            # And the owner's own new resource, too (it hears its own account).
            other = await pep_client(xmpp_server, owner_name, "other", interests=[NICK])
            assert event_payload(await next_event(other, "publish")).text == "While you were away"
            await disconnect(other)
        finally:
            await disconnect(owner, friend)

    run(scenario)


def test_avatars_are_published_and_retrieved(xmpp_server):
    """XEP-0084: data and metadata nodes; the contact hears the metadata and fetches the data."""
    owner_name, friend_name = "pepavown", "pepavfr"
    register(xmpp_server, owner_name, friend_name)

    async def scenario():
        owner = await pep_client(xmpp_server, owner_name)
        friend = await pep_client(xmpp_server, friend_name, interests=[AVATAR_META])
        owner_jid = xmpp_server.jid(owner_name)
        try:
            await befriend(owner, friend, xmpp_server.jid(friend_name), owner_jid)
            await asyncio.sleep(0.3)
            image = b"\x89PNG fake image bytes"
            avatar_id = owner.plugin["xep_0084"].generate_id(image)
            await owner.plugin["xep_0084"].publish_avatar(image)
            await owner.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": avatar_id, "type": "image/png", "bytes": len(image)}]
            )
            msg = await next_event(friend, "publish")
            assert event_node(msg) == AVATAR_META
            assert msg["pubsub_event"]["items"]["item"]["id"] == avatar_id
            data = await friend.plugin["xep_0084"].retrieve_avatar(owner_jid, avatar_id)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == image
        finally:
            await disconnect(owner, friend)

    run(scenario)


def test_bookmarks_are_private_with_publish_options(xmpp_server):
    """XEP-0402 §3: whitelist, max items, publish-options; only the owner's resources hear."""
    owner_name, friend_name = "pepbkown", "pepbkfr"
    register(xmpp_server, owner_name, friend_name)
    room = "room@conference.localhost"

    def publish(item_id: str, name: str) -> str:
        return (
            f"<pubsub xmlns='{NS}'><publish node='{BOOKMARKS}'><item id='{item_id}'>"
            f"<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'><nick>me</nick>"
            "</conference></item></publish><publish-options>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS}#publish-options</value></field>"
            "<field var='pubsub#persist_items'><value>true</value></field>"
            "<field var='pubsub#max_items'><value>max</value></field>"
            "<field var='pubsub#send_last_published_item'><value>never</value></field>"
            "<field var='pubsub#access_model'><value>whitelist</value></field>"
            "</x></publish-options></pubsub>"
        )

    async def scenario():
        owner = await pep_client(xmpp_server, owner_name, interests=[BOOKMARKS])
        mine = await pep_client(xmpp_server, owner_name, "phone", interests=[BOOKMARKS])
        friend = await pep_client(xmpp_server, friend_name, interests=[BOOKMARKS])
        owner_jid = xmpp_server.jid(owner_name)
        try:
            await befriend(owner, friend, xmpp_server.jid(friend_name), owner_jid)
            await asyncio.sleep(0.3)
            await send_iq(owner, "set", publish(room, "The Room"))
            await send_iq(owner, "set", publish("other@conference.localhost", "Other"))
            msg = await next_event(mine, "publish")
            assert event_node(msg) == BOOKMARKS
            await no_event(friend)
            items = await owner.plugin["xep_0060"].get_items(owner_jid, BOOKMARKS)
            assert sorted(i["id"] for i in items["pubsub"]["items"]) == [
                "other@conference.localhost",
                room,
            ]
            assert await pubsub_error(
                friend,
                "get",
                f"<pubsub xmlns='{NS}'><items node='{BOOKMARKS}'/></pubsub>",
                owner_jid,
            ) == ("not-allowed", "closed-node")
            # A client asking for open access is told the node differs (§7.1.5).
            wrong = publish(room, "x").replace(">whitelist<", ">open<")
            assert await pubsub_error(owner, "set", wrong, owner_jid) == (
                "conflict",
                "precondition-not-met",
            )
            await owner.plugin["xep_0060"].retract(owner_jid, BOOKMARKS, room, notify=True)
            assert (await next_event(mine, "retract"))["pubsub_event"]["items"]["retract"][
                "id"
            ] == room
        finally:
            await disconnect(owner, mine, friend)

    run(scenario)


def test_account_advertises_pep_features(xmpp_server):
    """XEP-0163 §4, §9: the account's disco#info has the pubsub/pep identity
    (what Conversations looks for before it uses PEP) and the pubsub
    features; its disco#items lists its nodes."""
    register(xmpp_server, "pepdisco")

    async def scenario():
        client = await pep_client(xmpp_server, "pepdisco")
        try:
            own = xmpp_server.jid("pepdisco")
            info = await client.plugin["xep_0030"].get_info(jid=own)
            assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
            features = info["disco_info"]["features"]
            for feature in ("publish", "publish-options", "auto-create", "access-whitelist"):
                assert f"{NS}#{feature}" in features
            await client.plugin["xep_0172"].publish_nick("Disco")
            items = await client.plugin["xep_0030"].get_items(jid=own)
            nodes = [node for _jid, node, _name in items["disco_items"]["items"]]
            assert nodes == ["http://jabber.org/protocol/nick"]
        finally:
            await disconnect(client)

    run(scenario)


def test_an_explicit_subscriber_who_blocked_the_owner_hears_nothing(xmpp_server):
    """XEP-0191 §3.3 past the router: a PEP node with the open access model
    notifies its explicit subscribers (XEP-0060 §6.1), but not one who has
    blocked the owner; the same subscriber hears it before the block."""
    from .test_blocking import block

    owner_name, subscriber_name = "pepblkown", "pepblksub"
    register(xmpp_server, owner_name, subscriber_name)
    node = "urn:example:pep-open"

    def publish(text: str) -> str:
        return (
            f"<pubsub xmlns='{NS}'><publish node='{node}'><item>"
            f"<entry xmlns='urn:example:test'>{text}</entry></item></publish>"
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field>"
            "</x></publish-options></pubsub>"
        )

    async def scenario():
        owner = await pep_client(xmpp_server, owner_name, plugins=BARE_PLUGINS)
        subscriber = await pep_client(
            xmpp_server, subscriber_name, plugins=(*BARE_PLUGINS, "xep_0191")
        )
        owner_jid = xmpp_server.jid(owner_name)
        try:
            await send_iq(owner, "set", publish("first"))
            await send_iq(
                subscriber,
                "set",
                f"<pubsub xmlns='{NS}'><subscribe node='{node}'"
                f" jid='{xmpp_server.jid(subscriber_name)}'/></pubsub>",
                owner_jid,
            )
            # The last item on subscription (XEP-0060 §6.1.7), then the next one.
            assert event_payload(await next_event(subscriber, "publish")).text == "first"
            await send_iq(owner, "set", publish("second"))
            assert event_payload(await next_event(subscriber, "publish")).text == "second"
            await block(subscriber, owner_jid)
            await send_iq(owner, "set", publish("third"))
            await no_event(subscriber)
        finally:
            await disconnect(owner, subscriber)

    run(scenario)
