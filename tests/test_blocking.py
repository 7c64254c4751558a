"""The blocking command (XEP-0191), driven by slixmpp clients: the block list and
its pushes (§3.2-§3.5), what happens to stanzas between a user and a JID it
blocked (§3.3), the JID matching rules (§6) and the list's persistence."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0191 import BlockItem

from .clients import Client, connect, disconnect
from .conftest import PASSWORD

NS_BLOCKING = "urn:xmpp:blocking"
BLOCKED_ERROR = "{jabber:client}error/{urn:xmpp:blocking:errors}blocked"

CONTACT = "blocking-contact"
STRANGER = "blocking-stranger"
OWNERS = (
    "blocking-empty",
    "blocking-list",
    "blocking-push",
    "blocking-msg-in",
    "blocking-msg-out",
    "blocking-iq",
    "blocking-iq-offline",
    "blocking-presence",
    "blocking-unavailable",
    "blocking-unblock",
    "blocking-unblock-all",
    "blocking-persist",
    "blocking-domain",
    "blocking-resource",
    "blocking-bad",
    "blocking-private",
)


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (CONTACT, STRANGER, *OWNERS)
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return names


async def login(server, user: str, resource: str, presence: bool = True) -> Client:
    """A client with the XEP-0191 plugin; block and unblock pushes go to `pushes`."""
    client = await connect(server, user, resource, presence=presence)
    client.register_plugin("xep_0191")
    client.pushes = asyncio.Queue()
    client.errors = asyncio.Queue()
    client.add_event_handler("blocked", client.pushes.put_nowait)
    client.add_event_handler("unblocked", client.pushes.put_nowait)
    client.add_event_handler("message_error", client.errors.put_nowait)
    return client


async def block_list(client: Client) -> set[str]:
    jids = await client.plugin["xep_0191"].get_blocked_jids(timeout=10)
    return {jid.full for jid in jids}


async def block(client: Client, *jids: str) -> None:
    await client.plugin["xep_0191"].block(list(jids), timeout=10)


async def unblock(client: Client, *jids: str) -> None:
    """Unblock `jids`, or every JID when none is given (§3.5)."""
    iq = client.make_iq_set()
    iq.enable("unblock")
    for jid in jids:
        BlockItem(parent=iq["unblock"])["jid"] = jid
    await iq.send(timeout=10)


async def settle(server, *clients: Client) -> None:
    """A ping round trip to the server by each client, in order: whatever the
    server routed to a client before its answer has been received by then."""
    for client in clients:
        await client.plugin["xep_0199"].send_ping(server.domain, timeout=10)


async def next_from(queue: asyncio.Queue, jid: str, timeout: float = 10):
    async def find():
        while True:
            stanza = await queue.get()
            if stanza["from"].full == jid:
                return stanza

    return await asyncio.wait_for(find(), timeout)


def from_others(queue: asyncio.Queue, client: Client) -> list:
    """What is queued that the client's own account did not send."""
    items = []
    while not queue.empty():
        stanza = queue.get_nowait()
        if stanza["from"].bare != client.boundjid.bare:
            items.append(stanza)
    return items


def run(coro_factory):
    asyncio.run(coro_factory())


def test_block_list_is_empty_at_first(xmpp_server, accounts):
    """A user who blocked nobody gets an empty <blocklist/> (§3.2)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-empty", "empty")
        try:
            assert await block_list(owner) == set()
        finally:
            await disconnect(owner)

    run(scenario)


def test_blocked_jids_are_listed(xmpp_server, accounts):
    """After a block command with several items, the block list holds each of
    them, normalised (§3.3, §3.2)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-list", "list")
        try:
            await block(owner, xmpp_server.jid(CONTACT), "Romeo@Example.NET", "example.org")
            assert await block_list(owner) == {
                xmpp_server.jid(CONTACT),
                "romeo@example.net",
                "example.org",
            }
        finally:
            await disconnect(owner)

    run(scenario)


def test_changes_are_pushed_to_the_resources_that_asked_for_the_list(xmpp_server, accounts):
    """A block or unblock is pushed to every resource that retrieved the list,
    the one that made it included, and to no other resource (§3.3, §3.4)."""

    async def scenario():
        first = await login(xmpp_server, "blocking-push", "first")
        second = await login(xmpp_server, "blocking-push", "second")
        silent = await login(xmpp_server, "blocking-push", "silent")
        try:
            await block_list(first)
            await block_list(second)
            await block(first, "iago@example.net")
            for client in (first, second):
                push = await asyncio.wait_for(client.pushes.get(), 10)
                assert push["type"] == "set"
                assert {str(item["jid"]) for item in push["block"]} == {"iago@example.net"}
            await unblock(second, "iago@example.net")
            for client in (first, second):
                push = await asyncio.wait_for(client.pushes.get(), 10)
                assert {str(item["jid"]) for item in push["unblock"]} == {"iago@example.net"}
            await settle(xmpp_server, silent)
            assert silent.pushes.empty()
        finally:
            await disconnect(first, second, silent)

    run(scenario)


def test_messages_from_a_blocked_jid_are_not_delivered(xmpp_server, accounts):
    """A message from a blocked JID does not reach the user; its sender gets
    <service-unavailable/>, as for a user who is offline (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-msg-in", "owner")
        contact = await login(xmpp_server, CONTACT, "msg-in")
        try:
            await block(owner, xmpp_server.jid(CONTACT))
            message = contact.make_message(mto=owner.boundjid.full, mbody="hi", mtype="chat")
            message["id"] = "blocked-in"
            message.send()
            error = await asyncio.wait_for(contact.errors.get(), 10)
            assert error["id"] == "blocked-in"
            assert error["from"].full == owner.boundjid.full
            assert error["error"]["condition"] == "service-unavailable"
            contact.send_message(mto=xmpp_server.jid("blocking-msg-in"), mbody="bare", mtype="chat")
            await settle(xmpp_server, contact, owner)
            assert from_others(owner.messages, owner) == []
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_messages_to_a_blocked_jid_are_refused_as_blocked(xmpp_server, accounts):
    """A message from the user to a JID it blocked is not routed; the user gets
    <not-acceptable/> with <blocked xmlns='urn:xmpp:blocking:errors'/> (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-msg-out", "owner")
        contact = await login(xmpp_server, CONTACT, "msg-out")
        try:
            await block(owner, xmpp_server.jid(CONTACT))
            message = owner.make_message(mto=contact.boundjid.full, mbody="psst", mtype="chat")
            message["id"] = "blocked-out"
            message.send()
            error = await asyncio.wait_for(owner.errors.get(), 10)
            assert error["id"] == "blocked-out"
            assert error["from"].full == contact.boundjid.full
            assert error["error"]["condition"] == "not-acceptable"
            assert error["error"]["type"] == "cancel"
            assert error.xml.find(BLOCKED_ERROR) is not None
            await settle(xmpp_server, owner, contact)
            assert from_others(contact.messages, contact) == []
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_iq_requests_to_a_blocked_jid_are_refused_as_blocked(xmpp_server, accounts):
    """An IQ get from the user to a JID it blocked gets the same refusal (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-iq", "owner")
        contact = await login(xmpp_server, CONTACT, "iq-out")
        try:
            await block(owner, xmpp_server.jid(CONTACT))
            with pytest.raises(IqError) as raised:
                await owner.plugin["xep_0092"].get_version(contact.boundjid.full, timeout=10)
            assert raised.value.iq["error"]["condition"] == "not-acceptable"
            assert raised.value.iq.xml.find(BLOCKED_ERROR) is not None
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_iq_requests_from_a_blocked_jid_get_service_unavailable(xmpp_server, accounts):
    """An IQ get from a blocked JID, to a resource or to the account, is answered
    with <service-unavailable/> by the server and never reaches the user (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-iq", "target")
        contact = await login(xmpp_server, CONTACT, "iq-in")
        try:
            await block(owner, xmpp_server.jid(CONTACT))
            with pytest.raises(IqError) as raised:
                await contact.plugin["xep_0092"].get_version(owner.boundjid.full, timeout=10)
            assert raised.value.iq["error"]["condition"] == "service-unavailable"
            assert raised.value.iq["from"].full == owner.boundjid.full
            with pytest.raises(IqError) as raised:
                await contact.plugin["xep_0030"].get_info(
                    jid=xmpp_server.jid("blocking-iq"), local=False, timeout=10
                )
            assert raised.value.iq["error"]["condition"] == "service-unavailable"
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_iq_requests_from_a_blocked_jid_to_an_offline_user_get_service_unavailable(
    xmpp_server, accounts
):
    """The block holds while the user is offline: an IQ the server would answer
    for the account gets <service-unavailable/> for the blocked JID only (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-iq-offline", "owner")
        await block(owner, xmpp_server.jid(CONTACT))
        await disconnect(owner)
        contact = await login(xmpp_server, CONTACT, "iq-offline")
        stranger = await login(xmpp_server, STRANGER, "iq-offline")
        try:
            account = xmpp_server.jid("blocking-iq-offline")
            with pytest.raises(IqError) as raised:
                await contact.plugin["xep_0030"].get_info(jid=account, local=False, timeout=10)
            assert raised.value.iq["error"]["condition"] == "service-unavailable"
            info = await stranger.plugin["xep_0030"].get_info(jid=account, local=False, timeout=10)
            assert info["type"] == "result"
        finally:
            await disconnect(contact, stranger)

    run(scenario)


def test_presence_from_a_blocked_jid_is_dropped_without_error(xmpp_server, accounts):
    """Presence from a blocked JID is not delivered and not answered (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-presence", "owner")
        contact = await login(xmpp_server, CONTACT, "presence-in")
        try:
            await block(owner, xmpp_server.jid(CONTACT))
            await settle(xmpp_server, owner)
            from_others(owner.presences, owner)
            contact.send_presence(pto=owner.boundjid.full, pstatus="see me")
            contact.send_presence(pto=xmpp_server.jid("blocking-presence"), ptype="subscribe")
            await settle(xmpp_server, contact, owner)
            assert from_others(owner.presences, owner) == []
            answers = from_others(contact.presences, contact)
            assert [p for p in answers if p["type"] == "error"] == []
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_blocking_sends_unavailable_presence_to_the_blocked_jid(xmpp_server, accounts):
    """A JID that could see the user's presence (here: it got directed presence)
    receives unavailable presence from each of the user's resources when it is
    blocked (§3.3)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-unavailable", "owner")
        contact = await login(xmpp_server, CONTACT, "presence-watcher")
        try:
            owner.send_presence(pto=contact.boundjid.full, pstatus="hello")
            seen = await next_from(contact.presences, owner.boundjid.full)
            assert seen["type"] == "available"
            await block(owner, xmpp_server.jid(CONTACT))
            gone = await next_from(contact.presences, owner.boundjid.full)
            assert gone["type"] == "unavailable"
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_unblocking_restores_delivery(xmpp_server, accounts):
    """After an unblock, stanzas from that JID reach the user again and it leaves
    the list (§3.4)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-unblock", "owner")
        contact = await login(xmpp_server, CONTACT, "unblock")
        try:
            await block(owner, xmpp_server.jid(CONTACT), "other@example.net")
            contact.send_message(mto=owner.boundjid.full, mbody="while blocked", mtype="chat")
            await asyncio.wait_for(contact.errors.get(), 10)
            await unblock(owner, xmpp_server.jid(CONTACT))
            assert await block_list(owner) == {"other@example.net"}
            contact.send_message(mto=owner.boundjid.full, mbody="after unblock", mtype="chat")
            message = await next_from(owner.messages, contact.boundjid.full)
            assert message["body"] == "after unblock"
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_an_empty_unblock_unblocks_every_jid(xmpp_server, accounts):
    """An <unblock/> without items empties the list, pushed as an empty <unblock/>,
    and every JID gets through again (§3.5)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-unblock-all", "owner")
        contact = await login(xmpp_server, CONTACT, "unblock-all")
        try:
            await block_list(owner)
            await block(owner, xmpp_server.jid(CONTACT), "a@example.net", "example.com")
            await asyncio.wait_for(owner.pushes.get(), 10)
            await unblock(owner)
            push = await asyncio.wait_for(owner.pushes.get(), 10)
            assert push.xml.find(f"{{{NS_BLOCKING}}}unblock") is not None
            assert list(push["unblock"]) == []
            assert await block_list(owner) == set()
            contact.send_message(mto=owner.boundjid.full, mbody="hello again", mtype="chat")
            message = await next_from(owner.messages, contact.boundjid.full)
            assert message["body"] == "hello again"
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_the_block_list_survives_logout(xmpp_server, accounts):
    """The list is stored: after the user's last session ends and a new one
    begins, it is the same and still enforced (§3.3: the block "applies across
    sessions")."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-persist", "before")
        await block(owner, xmpp_server.jid(CONTACT))
        await disconnect(owner)
        owner = await login(xmpp_server, "blocking-persist", "after")
        contact = await login(xmpp_server, CONTACT, "persist")
        try:
            assert await block_list(owner) == {xmpp_server.jid(CONTACT)}
            contact.send_message(mto=owner.boundjid.full, mbody="remember me?", mtype="chat")
            error = await asyncio.wait_for(contact.errors.get(), 10)
            assert error["error"]["condition"] == "service-unavailable"
        finally:
            await disconnect(owner, contact)

    run(scenario)


def test_a_domain_item_blocks_everyone_at_that_domain(xmpp_server, accounts):
    """An item that is a domain blocks every JID at it (§6), but never the
    user's own resources nor the server itself."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-domain", "owner")
        own = await login(xmpp_server, "blocking-domain", "own")
        contact = await login(xmpp_server, CONTACT, "domain")
        stranger = await login(xmpp_server, STRANGER, "domain")
        try:
            await block(owner, xmpp_server.domain)
            for sender in (contact, stranger):
                sender.send_message(mto=owner.boundjid.full, mbody="hi", mtype="chat")
                error = await asyncio.wait_for(sender.errors.get(), 10)
                assert error["error"]["condition"] == "service-unavailable"
            owner.send_message(mto=stranger.boundjid.full, mbody="out", mtype="chat")
            error = await asyncio.wait_for(owner.errors.get(), 10)
            assert error["error"]["condition"] == "not-acceptable"
            own.send_message(mto=owner.boundjid.full, mbody="from myself", mtype="chat")
            message = await next_from(owner.messages, own.boundjid.full)
            assert message["body"] == "from myself"
            await settle(xmpp_server, owner)  # the server still answers
            assert from_others(owner.messages, owner) == []
        finally:
            await disconnect(owner, own, contact, stranger)

    run(scenario)


def test_a_full_jid_item_blocks_only_that_resource(xmpp_server, accounts):
    """An item user@domain/resource blocks that resource and no other (§6)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-resource", "owner")
        blocked = await login(xmpp_server, CONTACT, "blocked-resource")
        other = await login(xmpp_server, CONTACT, "other-resource")
        try:
            await block(owner, blocked.boundjid.full)
            blocked.send_message(mto=owner.boundjid.full, mbody="from blocked", mtype="chat")
            error = await asyncio.wait_for(blocked.errors.get(), 10)
            assert error["error"]["condition"] == "service-unavailable"
            other.send_message(mto=owner.boundjid.full, mbody="from other", mtype="chat")
            message = await next_from(owner.messages, other.boundjid.full)
            assert message["body"] == "from other"
        finally:
            await disconnect(owner, blocked, other)

    run(scenario)


def test_a_block_without_items_is_a_bad_request(xmpp_server, accounts):
    """<block/> must hold at least one item, else <bad-request/> (§3.3); an item
    whose 'jid' is not a JID gets <jid-malformed/>."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-bad", "owner")
        try:
            iq = owner.make_iq_set()
            iq.enable("block")
            with pytest.raises(IqError) as raised:
                await iq.send(timeout=10)
            assert raised.value.iq["error"]["condition"] == "bad-request"
            with pytest.raises(IqError) as raised:
                await block(owner, "@example.net")
            assert raised.value.iq["error"]["condition"] == "jid-malformed"
            assert await block_list(owner) == set()
        finally:
            await disconnect(owner)

    run(scenario)


def test_another_entity_cannot_read_or_change_the_list(xmpp_server, accounts):
    """The block list IQs sent to someone else's account are not served
    (<service-unavailable/>), and change nothing."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-private", "owner")
        stranger = await login(xmpp_server, STRANGER, "private")
        try:
            account = xmpp_server.jid("blocking-private")
            get = stranger.make_iq_get(ito=account)
            get.enable("blocklist")
            change = stranger.make_iq_set(ito=account)
            BlockItem(parent=change["block"])["jid"] = "x@example.net"
            for iq in (get, change):
                with pytest.raises(IqError) as raised:
                    await iq.send(timeout=10)
                assert raised.value.iq["error"]["condition"] == "service-unavailable"
            assert await block_list(owner) == set()
        finally:
            await disconnect(owner, stranger)

    run(scenario)


def test_blocking_is_advertised(xmpp_server, accounts):
    """disco#info of the server and of the user's account list urn:xmpp:blocking (§3.1)."""

    async def scenario():
        owner = await login(xmpp_server, "blocking-empty", "disco")
        try:
            for jid in (xmpp_server.domain, owner.boundjid.bare):
                info = await owner.plugin["xep_0030"].get_info(jid=jid, local=False, timeout=10)
                assert NS_BLOCKING in info["disco_info"]["features"]
        finally:
            await disconnect(owner)

    run(scenario)
