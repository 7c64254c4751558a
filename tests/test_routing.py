"""Stanza routing between local sessions (RFC 6120 §8, §10; RFC 6121 §8.5):
full and bare JIDs, presence priority, the errors for unreachable addresses,
IQs between clients and the presence a user's own resources hear."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from .clients import Client, connect, disconnect
from .conftest import PASSWORD

# Accounts of their own, so that no other test's session is among their resources.
HIGHEST = "routing-highest"
EQUAL = "routing-equal"
NEGATIVE = "routing-negative"
OFFLINE = "routing-offline"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (HIGHEST, EQUAL, NEGATIVE, OFFLINE)
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return names


def collect_errors(client: Client) -> asyncio.Queue:
    """Message errors (slixmpp reports them apart from messages with a body)."""
    errors: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("message_error", errors.put_nowait)
    return errors


async def next_from(queue: asyncio.Queue, jid: str, timeout: float = 10):
    """The next stanza in `queue` whose 'from' is `jid`, skipping the others."""

    async def find():
        while True:
            stanza = await queue.get()
            if stanza["from"].full == jid:
                return stanza

    return await asyncio.wait_for(find(), timeout)


async def available(client: Client, priority: int) -> None:
    """Send available presence with `priority` and wait for the server's echo
    (RFC 6121 §4.2.2), after which the server routes by that priority."""
    client.send_presence(ppriority=priority)
    while True:
        presence = await next_from(client.presences, client.boundjid.full)
        if presence["type"] == "available" and presence["priority"] == priority:
            return


async def connect_with_priority(server, user: str, resource: str, priority: int) -> Client:
    client = await connect(server, user, resource, presence=False)
    await available(client, priority)
    return client


async def bodies_until_marker(client: Client, marker: str) -> list[str]:
    """The bodies `client` received, up to and including `marker`."""
    bodies = []
    while not bodies or bodies[-1] != marker:
        message = await asyncio.wait_for(client.messages.get(), 10)
        bodies.append(message["body"])
    return bodies


def test_message_to_full_jid_carries_the_senders_full_jid(xmpp_server):
    """A message to a full JID reaches that resource, with the 'from' the server
    stamped: the sender's full JID (RFC 6120 §8.1.2.1, RFC 6121 §8.5.3.1)."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "full-jid-sender")
        bob = await connect(xmpp_server, "bob", "full-jid-recipient")
        try:
            alice.send_message(mto=bob.boundjid.full, mbody="hello bob", mtype="chat")
            message = await asyncio.wait_for(bob.messages.get(), 10)
            assert message["body"] == "hello bob"
            assert message["from"].full == xmpp_server.jid("alice", "full-jid-sender")
            assert message["to"].full == bob.boundjid.full
        finally:
            await disconnect(alice, bob)

    asyncio.run(scenario())


def test_message_to_bare_jid_goes_to_the_highest_priority_resource(xmpp_server, accounts):
    """A chat message to a bare JID goes to the available resource with the highest
    priority only (RFC 6121 §8.5.2.1.1)."""

    async def scenario():
        high = await connect_with_priority(xmpp_server, HIGHEST, "high", 5)
        low = await connect_with_priority(xmpp_server, HIGHEST, "low", 1)
        alice = await connect(xmpp_server, "alice", "highest-sender")
        try:
            alice.send_message(mto=xmpp_server.jid(HIGHEST), mbody="to the bare JID", mtype="chat")
            # Then one to `low` directly: it arrives after anything the first produced.
            alice.send_message(mto=low.boundjid.full, mbody="marker", mtype="chat")
            assert await bodies_until_marker(high, "to the bare JID") == ["to the bare JID"]
            assert await bodies_until_marker(low, "marker") == ["marker"]
        finally:
            await disconnect(alice, high, low)

    asyncio.run(scenario())


def test_message_to_bare_jid_goes_to_every_resource_of_equal_top_priority(xmpp_server, accounts):
    """When the top priority is shared, a chat message to the bare JID goes to each
    of those resources (RFC 6121 §8.5.2.1.1)."""

    async def scenario():
        first = await connect_with_priority(xmpp_server, EQUAL, "first", 3)
        second = await connect_with_priority(xmpp_server, EQUAL, "second", 3)
        alice = await connect(xmpp_server, "alice", "equal-sender")
        try:
            alice.send_message(mto=xmpp_server.jid(EQUAL), mbody="to both", mtype="chat")
            for client in (first, second):
                message = await asyncio.wait_for(client.messages.get(), 10)
                assert message["body"] == "to both"
                assert message["from"].full == alice.boundjid.full
        finally:
            await disconnect(alice, first, second)

    asyncio.run(scenario())


def test_negative_priority_resource_gets_no_bare_jid_chat(xmpp_server, accounts):
    """A resource with negative priority never receives a chat message sent to the
    bare JID (RFC 6121 §4.7.2.3, §8.5.2.1.1), even when it is the only one."""

    async def scenario():
        negative = await connect_with_priority(xmpp_server, NEGATIVE, "negative", -1)
        alice = await connect(xmpp_server, "alice", "negative-sender")
        try:
            alice.send_message(mto=xmpp_server.jid(NEGATIVE), mbody="to the bare JID", mtype="chat")
            alice.send_message(mto=negative.boundjid.full, mbody="marker", mtype="chat")
            assert await bodies_until_marker(negative, "marker") == ["marker"]
        finally:
            await disconnect(alice, negative)

    asyncio.run(scenario())


async def expect_message_error(
    sender: Client, to: str, condition: str, mtype: str = "chat"
) -> None:
    """Send a message to `to` and expect the stanza error `condition` back,
    addressed from `to` and carrying the message's id (RFC 6120 §8.3.1)."""
    errors = collect_errors(sender)
    message = sender.make_message(mto=to, mbody="anyone there?", mtype=mtype)
    message["id"] = f"error-{condition}"
    message.send()
    error = await asyncio.wait_for(errors.get(), 10)
    assert error["type"] == "error"
    assert error["id"] == f"error-{condition}"
    assert error["from"].full == to
    assert error["error"]["condition"] == condition
    assert error["error"]["type"] == "cancel"


def test_groupchat_message_to_user_without_session_gets_service_unavailable(xmpp_server, accounts):
    """A groupchat message to an account with no available resource is answered
    with <service-unavailable/>; it is never stored offline (RFC 6121 §8.5.2.2.1)."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "offline-sender")
        try:
            await expect_message_error(
                alice, xmpp_server.jid(OFFLINE), "service-unavailable", mtype="groupchat"
            )
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_message_to_nonexistent_user_gets_service_unavailable(xmpp_server):
    """A message to an account that does not exist is answered with
    <service-unavailable/> (RFC 6121 §8.5.1), the same as for an offline one."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "nobody-sender")
        try:
            await expect_message_error(alice, xmpp_server.jid("nobody"), "service-unavailable")
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_message_to_remote_domain_gets_remote_server_not_found(xmpp_server):
    """Without server-to-server, a message to another domain is answered with
    <remote-server-not-found/> (RFC 6120 §8.3.3.16)."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "remote-sender")
        try:
            await expect_message_error(alice, "juliet@example.net", "remote-server-not-found")
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_iq_between_full_jids_is_delivered_and_answered(xmpp_server):
    """An IQ get to another user's full JID reaches that client, whose result comes
    back to the requester (RFC 6121 §8.5.3.1): a XEP-0092 query answered by bob's
    slixmpp, not by the server."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "iq-requester")
        bob = await connect(xmpp_server, "bob", "iq-responder")
        try:
            result = await alice.plugin["xep_0092"].get_version(bob.boundjid.full, timeout=10)
            assert result["type"] == "result"
            assert result["from"].full == bob.boundjid.full
            assert result["software_version"]["name"] == "Slixmpp"
        finally:
            await disconnect(alice, bob)

    asyncio.run(scenario())


def test_iq_with_unknown_namespace_to_server_gets_service_unavailable(xmpp_server):
    """An IQ get to the server whose payload namespace it does not know is answered
    with <service-unavailable/> (RFC 6120 §8.4)."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "unknown-iq")
        try:
            iq = alice.make_iq_get(queryxmlns="urn:example:unknown", ito=xmpp_server.domain)
            with pytest.raises(IqError) as raised:
                await iq.send(timeout=10)
            error = raised.value.iq
            assert error["from"].full == xmpp_server.domain
            assert error["error"]["condition"] == "service-unavailable"
            assert error["error"]["type"] == "cancel"
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_presence_reaches_the_users_other_resources(xmpp_server):
    """Available presence from one resource is broadcast to the user's other
    available resources (RFC 6121 §4.2.2)."""

    async def scenario():
        watcher = await connect(xmpp_server, "carol", "presence-watcher")
        other = await connect(xmpp_server, "carol", "presence-other", presence=False)
        try:
            other.send_presence(pstatus="here", ppriority=2)
            presence = await next_from(watcher.presences, other.boundjid.full)
            assert presence["type"] == "available"
            assert presence["status"] == "here"
            assert presence["priority"] == 2
        finally:
            await disconnect(watcher, other)

    asyncio.run(scenario())


def test_unavailable_presence_when_a_resource_disconnects(xmpp_server):
    """When a resource closes its stream, the user's other resources receive
    unavailable presence from it (RFC 6121 §4.5.2)."""

    async def scenario():
        watcher = await connect(xmpp_server, "carol", "disconnect-watcher")
        leaving = await connect(xmpp_server, "carol", "disconnect-leaving")
        try:
            assert (await next_from(watcher.presences, leaving.boundjid.full))[
                "type"
            ] == "available"
            await disconnect(leaving)
            presence = await next_from(watcher.presences, leaving.boundjid.full)
            assert presence["type"] == "unavailable"
        finally:
            await disconnect(watcher, leaving)

    asyncio.run(scenario())


def test_unavailable_presence_when_a_connection_is_killed(xmpp_server):
    """When a resource's TCP connection dies without a closing stream, the user's
    other resources receive unavailable presence from it (RFC 6121 §4.5.2)."""

    async def scenario():
        watcher = await connect(xmpp_server, "carol", "killed-watcher")
        killed = await connect(xmpp_server, "carol", "killed")
        try:
            assert (await next_from(watcher.presences, killed.boundjid.full))["type"] == "available"
            killed.transport.abort()
            presence = await next_from(watcher.presences, killed.boundjid.full)
            assert presence["type"] == "unavailable"
        finally:
            await disconnect(watcher, killed)

    asyncio.run(scenario())
