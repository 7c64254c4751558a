"""Offline messages over the wire: storage and delivery at the next available
presence (XEP-0160, RFC 6121 §8.5.2.2.1), the per-account quota, what is not
kept (XEP-0085 chat states, XEP-0334 hints), survival across a restart, and
flexible retrieval (XEP-0013)."""

from __future__ import annotations

import asyncio
import datetime
import time
from xml.etree import ElementTree

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .clients import Client, connect, disconnect
from .conftest import PASSWORD, RunningServer, start_server, stop_server

NS_DELAY = "urn:xmpp:delay"
NS_OFFLINE = "http://jabber.org/protocol/offline"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_HINTS = "urn:xmpp:hints"

DELIVERED = "offline-delivered"
ORDERED = "offline-ordered"
ONCE = "offline-once"
NEGATIVE = "offline-negative"
CHATSTATE = "offline-chatstate"
HINTS = "offline-hints"
FLEXIBLE = "offline-flexible"
FLEXIBLE_VIEW = "offline-flexible-view"
FLEXIBLE_OTHER = "offline-flexible-other"
DISCO = "offline-disco"
DISCO_FLOOD = "offline-disco-flood"
SENDER = "offline-sender"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (
        DELIVERED,
        ORDERED,
        ONCE,
        NEGATIVE,
        CHATSTATE,
        HINTS,
        FLEXIBLE,
        FLEXIBLE_VIEW,
        FLEXIBLE_OTHER,
        DISCO,
        DISCO_FLOOD,
        SENDER,
    )
    register(xmpp_server, *names)
    return names


def register(server: RunningServer, *names: str) -> None:
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    server.manage("register", "--from-file", "-", input=lines)


async def settle(client: Client, server: RunningServer) -> None:
    """A round trip to the server: everything `client` sent before has been
    routed, and everything the server had queued for it has arrived. A session
    reads nothing while its initial presence is handled, so after presence
    this also means the offline messages have been delivered."""
    await client.plugin["xep_0199"].send_ping(server.domain, timeout=10)


async def open_session(server: RunningServer, user: str, resource: str) -> Client:
    """Log in without presence, recording every message that arrives; slixmpp's
    own "message" event skips messages without a body."""
    client = await connect(server, user, resource, presence=False)
    client.all_messages = asyncio.Queue()
    client.register_handler(
        Callback(
            "every message", MatchXPath("{jabber:client}message"), client.all_messages.put_nowait
        )
    )
    return client


async def login(server: RunningServer, user: str, resource: str, priority: int = 0) -> Client:
    """Log in, send initial presence with `priority`, and settle."""
    client = await open_session(server, user, resource)
    client.send_presence(ppriority=priority)
    await settle(client, server)
    return client


def received(client: Client) -> list:
    """The messages other than errors `client` has received so far."""
    messages = []
    while not client.all_messages.empty():
        message = client.all_messages.get_nowait()
        if message["type"] != "error":
            messages.append(message)
    return messages


def bodies(messages) -> list[str]:
    return [message["body"] for message in messages]


async def send_messages(sender: Client, server: RunningServer, to: str, texts) -> None:
    """Send chat messages to `to` and settle, so that they have been routed."""
    for text in texts:
        sender.send_message(mto=to, mbody=text, mtype="chat")
    await settle(sender, server)


def collect_errors(client: Client) -> asyncio.Queue:
    errors: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("message_error", errors.put_nowait)
    return errors


def send_payload_message(sender: Client, to: str, *payload: str, body: str | None = None) -> None:
    """A chat message with raw child elements (chat states, hints)."""
    message = sender.make_message(mto=to, mbody=body, mtype="chat")
    for xml in payload:
        message.append(ElementTree.fromstring(xml))
    message.send()


def test_offline_message_is_delivered_at_initial_presence_with_a_delay(xmpp_server, accounts):
    """A chat message to an account with no session is stored and delivered when
    the account next sends available presence, with its sender's 'from' and a
    XEP-0203 delay from the server's domain stamped with the time it arrived
    (XEP-0160 §2)."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "delivered")
        try:
            before = datetime.datetime.now(datetime.UTC)
            await send_messages(sender, xmpp_server, xmpp_server.jid(DELIVERED), ["while away"])
            after = datetime.datetime.now(datetime.UTC)
            recipient = await login(xmpp_server, DELIVERED, "back")
            try:
                [message] = received(recipient)
                assert message["body"] == "while away"
                assert message["type"] == "chat"
                assert message["from"].full == sender.boundjid.full
                delay = message.xml.find(f"{{{NS_DELAY}}}delay")
                assert delay is not None
                assert delay.get("from") == xmpp_server.domain
                stamp = datetime.datetime.fromisoformat(delay.get("stamp").replace("Z", "+00:00"))
                slack = datetime.timedelta(seconds=2)
                assert before - slack <= stamp <= after + slack
                assert delay.get("stamp").endswith("Z")
            finally:
                await disconnect(recipient)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_a_message_stored_while_the_account_is_loaded_reaches_its_next_resource(
    xmpp_server, accounts
):
    """The account is loaded (a session bound, never available) when it has
    no stored message; a message then goes to offline storage; a second
    resource's initial presence still gets it (the account's "nothing
    stored" mark from its load is not trusted past a store)."""
    register(xmpp_server, "offline-loaded")

    async def scenario():
        idle = await open_session(xmpp_server, "offline-loaded", "idle")
        sender = await connect(xmpp_server, SENDER, "loaded")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid("offline-loaded"), ["kept"])
            await asyncio.sleep(0.3)  # committed (group commit, no timer)
            back = await login(xmpp_server, "offline-loaded", "back")
            try:
                assert bodies(received(back)) == ["kept"]
                assert received(idle) == []
            finally:
                await disconnect(back)
        finally:
            await disconnect(idle, sender)

    asyncio.run(scenario())


def test_offline_messages_arrive_in_the_order_they_were_sent(xmpp_server, accounts):
    """Stored messages are delivered oldest first (XEP-0160 §2)."""
    texts = [f"message {n}" for n in range(20)]

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "ordered")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(ORDERED), texts)
            recipient = await login(xmpp_server, ORDERED, "reader")
            try:
                assert bodies(received(recipient)) == texts
            finally:
                await disconnect(recipient)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_offline_messages_are_delivered_once(xmpp_server, accounts):
    """Delivered messages are removed: the next login gets none of them again,
    while live messages still arrive."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "once")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(ONCE), ["only once"])
            first = await login(xmpp_server, ONCE, "first")
            assert bodies(received(first)) == ["only once"]
            await disconnect(first)
            second = await login(xmpp_server, ONCE, "second")
            try:
                await send_messages(sender, xmpp_server, second.boundjid.full, ["live"])
                await settle(second, xmpp_server)
                assert bodies(received(second)) == ["live"]
            finally:
                await disconnect(second)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_negative_priority_session_gets_no_offline_messages(xmpp_server, accounts):
    """Only available presence with a non-negative priority gets the stored
    messages (XEP-0160 §2 step 5); a bare-JID message meanwhile is stored too
    (RFC 6121 §8.5.2.1.1), and a later non-negative session gets both."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "negative")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(NEGATIVE), ["stored"])
            shy = await login(xmpp_server, NEGATIVE, "shy", priority=-1)
            try:
                await send_messages(sender, xmpp_server, xmpp_server.jid(NEGATIVE), ["also"])
                await send_messages(sender, xmpp_server, shy.boundjid.full, ["direct"])
                await settle(shy, xmpp_server)
                assert bodies(received(shy)) == ["direct"]
                open_ = await login(xmpp_server, NEGATIVE, "open", priority=0)
                try:
                    assert bodies(received(open_)) == ["stored", "also"]
                finally:
                    await disconnect(open_)
            finally:
                await disconnect(shy)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


async def expect_error(errors: asyncio.Queue, message_id: str, condition: str, sender_of: str):
    error = await asyncio.wait_for(errors.get(), 10)
    assert error["id"] == message_id
    assert error["from"].full == sender_of
    assert error["error"]["condition"] == condition
    assert error["error"]["type"] == "cancel"


def test_message_to_nonexistent_account_gets_service_unavailable(xmpp_server, accounts):
    """A message to an account that does not exist is not stored but answered
    with <service-unavailable/> (RFC 6121 §8.5.1)."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "nobody")
        errors = collect_errors(sender)
        try:
            to = xmpp_server.jid("offline-nobody")
            message = sender.make_message(mto=to, mbody="anyone?", mtype="chat")
            message["id"] = "to-nobody"
            message.send()
            await expect_error(errors, "to-nobody", "service-unavailable", to)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_chat_state_only_messages_are_not_stored(xmpp_server, accounts):
    """A message with only a chat state notification is neither stored (XEP-0160
    §3, XEP-0085) nor bounced; one with a body and a chat state is stored."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "chatstate")
        errors = collect_errors(sender)
        to = xmpp_server.jid(CHATSTATE)
        try:
            send_payload_message(sender, to, f"<composing xmlns='{NS_CHATSTATES}'/>")
            send_payload_message(sender, to, f"<paused xmlns='{NS_CHATSTATES}'/>")
            send_payload_message(sender, to, f"<active xmlns='{NS_CHATSTATES}'/>", body="text")
            await settle(sender, xmpp_server)
            recipient = await login(xmpp_server, CHATSTATE, "reader")
            try:
                assert bodies(received(recipient)) == ["text"]
                assert errors.empty()
            finally:
                await disconnect(recipient)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_storage_hints_are_honoured(xmpp_server, accounts):
    """XEP-0334 §4: a <store/> hint keeps even a chat-state-only message; a
    <no-store/> hint keeps a message out of offline storage, and its sender
    hears <service-unavailable/> as for any message that is not stored."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "hints")
        errors = collect_errors(sender)
        to = xmpp_server.jid(HINTS)
        try:
            send_payload_message(
                sender, to, f"<gone xmlns='{NS_CHATSTATES}'/>", f"<store xmlns='{NS_HINTS}'/>"
            )
            message = sender.make_message(mto=to, mbody="do not keep", mtype="chat")
            message["id"] = "no-store"
            message.append(ElementTree.fromstring(f"<no-store xmlns='{NS_HINTS}'/>"))
            message.send()
            await expect_error(errors, "no-store", "service-unavailable", to)
            recipient = await login(xmpp_server, HINTS, "reader")
            try:
                [kept] = received(recipient)
                assert kept.xml.find(f"{{{NS_CHATSTATES}}}gone") is not None
                assert kept["body"] == ""
            finally:
                await disconnect(recipient)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_quota_full_answers_service_unavailable(tmp_path):
    """Once an account holds XMPP_OFFLINE_QUOTA messages, further ones are
    answered with <service-unavailable/> (XEP-0160 §2 step 3) and the stored
    ones are still delivered."""
    server = start_server(tmp_path, XMPP_OFFLINE_QUOTA="2")
    try:
        register(server, "quota-sender", "quota-full")

        async def scenario():
            sender = await connect(server, "quota-sender", "quota")
            errors = collect_errors(sender)
            to = server.jid("quota-full")
            try:
                for n in range(3):
                    message = sender.make_message(mto=to, mbody=f"number {n}", mtype="chat")
                    message["id"] = f"quota-{n}"
                    message.send()
                await expect_error(errors, "quota-2", "service-unavailable", to)
                recipient = await login(server, "quota-full", "reader")
                try:
                    assert bodies(received(recipient)) == ["number 0", "number 1"]
                finally:
                    await disconnect(recipient)
                # Delivered messages no longer count against the quota.
                await send_messages(sender, server, to, ["after"])
                recipient = await login(server, "quota-full", "again")
                try:
                    assert bodies(received(recipient)) == ["after"]
                finally:
                    await disconnect(recipient)
                assert errors.empty()
            finally:
                await disconnect(sender)

        asyncio.run(scenario())
    finally:
        stop_server(server)


def stored_count(server: RunningServer, user: str) -> int:
    code = (
        "from xmpp.models import OfflineMessage; "
        f"print(OfflineMessage.objects.filter(user__username={user!r}).count())"
    )
    return int(server.manage("shell", "-v", "0", "-c", code).stdout.split()[-1])


def test_offline_messages_survive_a_restart(tmp_path):
    """Stored messages are in the database: after the server stops and starts
    again on the same data, the recipient still gets them, with their delay."""
    server = start_server(tmp_path)
    try:
        register(server, "restart-sender", "restart-recipient")

        async def send():
            sender = await connect(server, "restart-sender", "before")
            try:
                await send_messages(
                    sender, server, server.jid("restart-recipient"), ["before the restart"]
                )
            finally:
                await disconnect(sender)

        asyncio.run(send())
        deadline = time.monotonic() + 20
        while stored_count(server, "restart-recipient") != 1:
            assert time.monotonic() < deadline, "the message was never stored"
            time.sleep(0.2)
    finally:
        assert stop_server(server, drop_database=False) == 0
    server = start_server(tmp_path)
    try:

        async def receive():
            recipient = await login(server, "restart-recipient", "after")
            try:
                [message] = received(recipient)
                assert message["body"] == "before the restart"
                assert message["from"].bare == server.jid("restart-sender")
                assert message.xml.find(f"{{{NS_DELAY}}}delay") is not None
            finally:
                await disconnect(recipient)

        asyncio.run(receive())
    finally:
        stop_server(server)


# -- XEP-0013 --------------------------------------------------------------------


async def offline_request(client: Client, iq_type: str, *children: str):
    """Send <offline/> with `children` in an IQ of `iq_type` to the account."""
    iq = client.make_iq_get() if iq_type == "get" else client.make_iq_set()
    iq.append(
        ElementTree.fromstring(f"<offline xmlns='{NS_OFFLINE}'>{''.join(children)}</offline>")
    )
    return await iq.send(timeout=10)


def node_of(message) -> str:
    """XEP-0013 §2.4: the node a retrieved message carries."""
    item = message.xml.find(f"{{{NS_OFFLINE}}}offline/{{{NS_OFFLINE}}}item")
    assert item is not None, "a retrieved message carries its node"
    return item.get("node")


def test_server_advertises_offline_features(xmpp_server, accounts):
    """disco#info of the server lists msgoffline (XEP-0160 §4) and the XEP-0013
    namespace (§2.1); the account's disco#info lists XEP-0013 too."""

    async def scenario():
        client = await connect(xmpp_server, SENDER, "disco-features")
        try:
            disco = client.plugin["xep_0030"]
            info = await disco.get_info(jid=xmpp_server.domain, local=False, timeout=10)
            assert {"msgoffline", NS_OFFLINE} <= set(info["disco_info"]["features"])
            info = await disco.get_info(jid=client.boundjid.bare, local=False, timeout=10)
            assert NS_OFFLINE in set(info["disco_info"]["features"])
        finally:
            await disconnect(client)

    asyncio.run(scenario())


def test_fetch_retrieves_without_removing_and_stops_the_flood(xmpp_server, accounts):
    """XEP-0013 §2.6: <fetch/> sends every stored message, each with its node,
    then the result; they stay stored, and initial presence afterwards brings no
    flood (§2.2) while live messages still arrive. <purge/> removes them (§2.7)."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "flexible")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(FLEXIBLE), ["one", "two"])
            reader = await open_session(xmpp_server, FLEXIBLE, "reader")
            try:
                result = await offline_request(reader, "get", "<fetch/>")
                assert result["type"] == "result"
                fetched = received(reader)
                assert bodies(fetched) == ["one", "two"]
                assert len({node_of(message) for message in fetched}) == 2
                assert all(m.xml.find(f"{{{NS_DELAY}}}delay") is not None for m in fetched)

                reader.send_presence()
                await settle(reader, xmpp_server)
                await send_messages(sender, xmpp_server, reader.boundjid.full, ["live"])
                await settle(reader, xmpp_server)
                assert bodies(received(reader)) == ["live"]

                # Another resource of the account is not flooded either (§2.2).
                other = await login(xmpp_server, FLEXIBLE, "other")
                assert received(other) == []
                await disconnect(other)

                await offline_request(reader, "get", "<fetch/>")
                assert bodies(received(reader)) == ["one", "two"]
                await offline_request(reader, "set", "<purge/>")
                await offline_request(reader, "get", "<fetch/>")
                assert received(reader) == []
            finally:
                await disconnect(reader)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_fetch_in_an_iq_set_is_accepted(xmpp_server, accounts):
    """slixmpp's XEP-0013 plugin sends <fetch/> in an IQ set; it works as a get."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "flexible-set")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(FLEXIBLE_OTHER), ["set"])
            reader = await open_session(xmpp_server, FLEXIBLE_OTHER, "reader")
            try:
                await offline_request(reader, "set", "<fetch/>")
                assert bodies(received(reader)) == ["set"]
                await offline_request(reader, "set", "<purge/>")
            finally:
                await disconnect(reader)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_view_and_remove_specific_messages(xmpp_server, accounts):
    """XEP-0013 §2.4: <item action='view'/> sends that message; §2.5: <item
    action='remove'/> removes it; an unknown node is <item-not-found/>. The
    choice of XEP-0013 lasts for its session: a later plain login gets the
    messages that are left."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "view")
        try:
            texts = ["first", "second", "third"]
            await send_messages(sender, xmpp_server, xmpp_server.jid(FLEXIBLE_VIEW), texts)
            reader = await open_session(xmpp_server, FLEXIBLE_VIEW, "reader")
            try:
                await offline_request(reader, "get", "<fetch/>")
                nodes = {m["body"]: node_of(m) for m in received(reader)}
                assert list(nodes) == texts

                await offline_request(
                    reader, "get", f"<item action='view' node='{nodes['second']}'/>"
                )
                [viewed] = received(reader)
                assert viewed["body"] == "second"
                assert node_of(viewed) == nodes["second"]

                await offline_request(
                    reader,
                    "set",
                    f"<item action='remove' node='{nodes['first']}'/>",
                    f"<item action='remove' node='{nodes['second']}'/>",
                )
                for action, iq_type in (("view", "get"), ("remove", "set")):
                    with pytest.raises(IqError) as raised:
                        await offline_request(
                            reader, iq_type, f"<item action='{action}' node='{nodes['first']}'/>"
                        )
                    assert raised.value.iq["error"]["condition"] == "item-not-found"
                with pytest.raises(IqError) as raised:
                    await offline_request(reader, "get", "<item action='view' node='nonsense'/>")
                assert raised.value.iq["error"]["condition"] == "item-not-found"
            finally:
                await disconnect(reader)
            # The choice of XEP-0013 lasted for that session only.
            plain = await login(xmpp_server, FLEXIBLE_VIEW, "plain")
            try:
                assert bodies(received(plain)) == ["third"]
            finally:
                await disconnect(plain)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_offline_requests_for_another_account_are_forbidden(xmpp_server, accounts):
    """XEP-0013 §2.4-§2.7: only the user's own resources may read or remove its
    offline messages; anyone else gets <forbidden/>."""

    async def scenario():
        intruder = await connect(xmpp_server, SENDER, "intruder")
        try:
            for iq_type, payload in (("get", "<fetch/>"), ("set", "<purge/>")):
                iq = intruder.make_iq_get() if iq_type == "get" else intruder.make_iq_set()
                iq["to"] = xmpp_server.jid(FLEXIBLE)
                iq.append(
                    ElementTree.fromstring(f"<offline xmlns='{NS_OFFLINE}'>{payload}</offline>")
                )
                with pytest.raises(IqError) as raised:
                    await iq.send(timeout=10)
                assert raised.value.iq["error"]["condition"] == "forbidden"
        finally:
            await disconnect(intruder)

    asyncio.run(scenario())


def test_disco_info_on_the_offline_node_counts_messages(xmpp_server, accounts):
    """XEP-0013 §2.2: disco#info on the node http://jabber.org/protocol/offline
    gives the message-list identity and number_of_messages."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "disco-count")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(DISCO), ["a", "b", "c"])
            reader = await open_session(xmpp_server, DISCO, "count")
            try:
                info = await reader.plugin["xep_0030"].get_info(
                    node=NS_OFFLINE, local=False, timeout=10
                )
                identities = info["disco_info"]["identities"]
                assert ("automation", "message-list") in {(c, t) for c, t, _, _ in identities}
                form = info.xml.find(".//{jabber:x:data}x")
                values = {
                    field.get("var"): field.findtext("{jabber:x:data}value")
                    for field in form.findall("{jabber:x:data}field")
                }
                assert values == {"FORM_TYPE": NS_OFFLINE, "number_of_messages": "3"}
            finally:
                await disconnect(reader)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_disco_items_on_the_offline_node_lists_headers(xmpp_server, accounts):
    """XEP-0013 §2.3: disco#items on the offline node lists one item per message,
    the sender's full JID as name and a node to view it by."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "disco-headers")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(DISCO), ["header"])
            reader = await open_session(xmpp_server, DISCO, "headers")
            try:
                items = await reader.plugin["xep_0030"].get_items(
                    node=NS_OFFLINE, local=False, timeout=10
                )
                headers = items["disco_items"]["items"]
                assert sender.boundjid.full in {name for _, _, name in headers}
                assert all(node for _, node, _ in headers)
                assert {jid for jid, _, _ in headers} == {reader.boundjid.bare}
            finally:
                await disconnect(reader)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


def test_disco_on_the_offline_node_stops_the_flood(xmpp_server, accounts):
    """XEP-0013 §2.2: after a disco request to the offline node, initial presence
    brings no flood; the messages stay for the client to fetch."""

    async def scenario():
        sender = await connect(xmpp_server, SENDER, "disco-flood")
        try:
            await send_messages(sender, xmpp_server, xmpp_server.jid(DISCO_FLOOD), ["kept"])
            reader = await open_session(xmpp_server, DISCO_FLOOD, "reader")
            try:
                await reader.plugin["xep_0030"].get_items(node=NS_OFFLINE, local=False, timeout=10)
                reader.send_presence()
                await settle(reader, xmpp_server)
                assert received(reader) == []
                await offline_request(reader, "get", "<fetch/>")
                assert bodies(received(reader)) == ["kept"]
            finally:
                await disconnect(reader)
        finally:
            await disconnect(sender)

    asyncio.run(scenario())


# -- the path to online users stays free of the database ------------------------


def test_messages_to_online_users_run_no_query(tmp_path):
    """Offline storage is only for accounts without an available resource: a
    message to an online user, to its bare or full JID, runs no SQL at all
    (XMPP_LOG_SQL logs every statement)."""
    server = start_server(tmp_path, XMPP_LOG_SQL="true")
    try:
        register(server, "online-sender", "online-recipient")

        async def scenario():
            sender = await login(server, "online-sender", "a")
            recipient = await login(server, "online-recipient", "b")
            try:
                await settle(sender, server)
                mark = len(server.log())
                texts = [f"live {n}" for n in range(10)]
                await send_messages(sender, server, server.jid("online-recipient"), texts)
                await send_messages(sender, server, recipient.boundjid.full, ["full"])
                await settle(recipient, server)
                assert bodies(received(recipient)) == [*texts, "full"]
                assert "xmpp.sql" not in server.log()[mark:]
            finally:
                await disconnect(sender, recipient)

        asyncio.run(scenario())
        assert "xmpp.sql" in server.log(), "the query log is on"
    finally:
        stop_server(server)
