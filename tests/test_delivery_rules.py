"""RFC 6121 §8.5, message delivery rules, as a table: message type × destination.

Destinations, all on the local domain:

- bare-online: the bare JID of an account with available resources
  (§8.5.2.1.1). The account has three: `high` (priority 5), `low` (0) and
  `negative` (-1), so that "most available", "every non-negative resource"
  and "never a negative one" can be told apart.
- full-online: the full JID of its available resource `low` (§8.5.3.1),
  which is not the most available one: a full JID is delivered as addressed.
- full-unknown: the full JID of a resource the same account does not have
  (§8.5.3.2.1).
- bare-offline: the bare JID of an existing account with no session
  (§8.5.2.2.1); the account then logs in, which is when stored messages
  arrive (XEP-0160 §2).
- bare-nonexistent: the bare JID of an account that does not exist (§8.5.1).

For each cell the test asserts what every resource of the recipient receives
(nothing more), and the one error the sender gets or that it gets none.

Proving a negative without sleeping: after the message under test, the
sender sends a chat "marker" to each recipient resource's full JID (or, for
bare-offline, to the bare JID, where it is stored after the message under
test); what a resource receives before its marker is all it got. For the
sender, a ping to the server is the barrier: the server handles the sender's
stanzas in order, so once the ping's result is back every error for an
earlier stanza is already there. The one error produced later, by the
offline store's queue, is either awaited (bare-nonexistent, where an error
is expected) or settled by the recipient's login, which that queue runs
after the store (bare-offline).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .clients import Client, connect, disconnect
from .conftest import PASSWORD, RunningServer

NS_DELAY = "urn:xmpp:delay"
MARKER = "marker"
TYPES = ("chat", "normal", "headline", "groupchat", "error")
SENDER = "rules-sender"
# Resources of the online account and their priorities.
RESOURCES = {"high": 5, "low": 0, "negative": -1}
FULL_TARGET = "low"  # the resource full-online addresses
UNKNOWN_RESOURCE = "gone"
LOGIN = "login"  # the resource bare-offline's account logs in with

BARE_ONLINE = "bare-online"
FULL_ONLINE = "full-online"
FULL_UNKNOWN = "full-unknown"
BARE_OFFLINE = "bare-offline"
BARE_NONEXISTENT = "bare-nonexistent"
DESTINATIONS = (BARE_ONLINE, FULL_ONLINE, FULL_UNKNOWN, BARE_OFFLINE, BARE_NONEXISTENT)
ONLINE_DESTINATIONS = (BARE_ONLINE, FULL_ONLINE, FULL_UNKNOWN)
UNAVAILABLE = "service-unavailable"


@dataclass(frozen=True)
class Cell:
    destination: str
    mtype: str
    # resource -> the types of the messages under test it receives, in order.
    # Resources not named receive nothing. For bare-offline the only resource
    # is LOGIN, and what it receives must carry a XEP-0203 delay.
    received: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None  # the condition the sender gets back, if any
    section: str = ""


def cell(destination, mtype, section, error=None, **received) -> pytest.param:
    return pytest.param(
        Cell(destination, mtype, received, error, section), id=f"{mtype}-to-{destination}"
    )


CELLS = [
    # §8.5.2.1.1: chat and normal to the most available resource(s); headline
    # to every available resource of non-negative priority; groupchat refused
    # (SHOULD be <service-unavailable/>); error silently ignored.
    cell(BARE_ONLINE, "chat", "8.5.2.1.1", high=["chat"]),
    cell(BARE_ONLINE, "normal", "8.5.2.1.1", high=["normal"]),
    cell(BARE_ONLINE, "headline", "8.5.2.1.1", high=["headline"], low=["headline"]),
    cell(BARE_ONLINE, "groupchat", "8.5.2.1.1", error=UNAVAILABLE),
    cell(BARE_ONLINE, "error", "8.5.2.1.1"),
    # §8.5.3.1: a resource that matches gets the stanza, whatever its type.
    cell(FULL_ONLINE, "chat", "8.5.3.1", low=["chat"]),
    cell(FULL_ONLINE, "normal", "8.5.3.1", low=["normal"]),
    cell(FULL_ONLINE, "headline", "8.5.3.1", low=["headline"]),
    cell(FULL_ONLINE, "groupchat", "8.5.3.1", low=["groupchat"]),
    cell(FULL_ONLINE, "error", "8.5.3.1", low=["error"]),
    # §8.5.3.2.1: chat is handled as if sent to the bare JID (a non-negative
    # resource exists, so the most available gets it); normal, groupchat and
    # headline are silently ignored or refused (SHOULD be
    # <service-unavailable/>): this server refuses normal and groupchat and
    # ignores headline; error is silently ignored.
    cell(FULL_UNKNOWN, "chat", "8.5.3.2.1", high=["chat"]),
    cell(FULL_UNKNOWN, "normal", "8.5.3.2.1", error=UNAVAILABLE),
    cell(FULL_UNKNOWN, "headline", "8.5.3.2.1"),
    cell(FULL_UNKNOWN, "groupchat", "8.5.3.2.1", error=UNAVAILABLE),
    cell(FULL_UNKNOWN, "error", "8.5.3.2.1"),
    # §8.5.2.2.1: chat and normal stored offline (delivered at the next
    # available presence, XEP-0160 §2); headline and error silently ignored;
    # groupchat refused (SHOULD be <service-unavailable/>).
    cell(BARE_OFFLINE, "chat", "8.5.2.2.1", login=["chat"]),
    cell(BARE_OFFLINE, "normal", "8.5.2.2.1", login=["normal"]),
    cell(BARE_OFFLINE, "headline", "8.5.2.2.1"),
    cell(BARE_OFFLINE, "groupchat", "8.5.2.2.1", error=UNAVAILABLE),
    cell(BARE_OFFLINE, "error", "8.5.2.2.1"),
    # §8.5.1: a message to no such user is silently ignored or answered with
    # <service-unavailable/>. The router cannot tell an account without a
    # session from no account without the database, so it decides as for
    # §8.5.2.2.1: chat and normal reach the offline store, which refuses them;
    # groupchat is refused; headline (and error, always) silently ignored.
    cell(BARE_NONEXISTENT, "chat", "8.5.1", error=UNAVAILABLE),
    cell(BARE_NONEXISTENT, "normal", "8.5.1", error=UNAVAILABLE),
    cell(BARE_NONEXISTENT, "headline", "8.5.1"),
    cell(BARE_NONEXISTENT, "groupchat", "8.5.1", error=UNAVAILABLE),
    cell(BARE_NONEXISTENT, "error", "8.5.1"),
]


def recipient_account(destination: str, mtype: str) -> str:
    """Each cell has an account of its own: no session or stored message of
    another cell (or of another test module) can be among what it receives."""
    return f"rules-{destination}-{mtype}"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = [SENDER]
    for destination in DESTINATIONS:
        if destination != BARE_NONEXISTENT:
            names += [recipient_account(destination, mtype) for mtype in TYPES]
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return names


def test_the_table_covers_every_type_and_destination():
    cells = {(param.values[0].destination, param.values[0].mtype) for param in CELLS}
    assert cells == {(d, t) for d in DESTINATIONS for t in TYPES}
    assert len(CELLS) == len(cells)


# -- clients --------------------------------------------------------------------


async def open_session(server: RunningServer, user: str, resource: str) -> Client:
    """Log in without presence, recording every <message/> that arrives, errors
    and messages without a body included (slixmpp's events split them)."""
    client = await connect(server, user, resource, presence=False)
    client.all_messages = asyncio.Queue()
    client.register_handler(
        Callback(
            "every message", MatchXPath("{jabber:client}message"), client.all_messages.put_nowait
        )
    )
    return client


async def ping(client: Client, server: RunningServer) -> None:
    """The barrier: everything `client` sent before has been handled, and what
    the server had for it before the result has arrived."""
    await client.plugin["xep_0199"].send_ping(server.domain, timeout=10)


async def available(client: Client, server: RunningServer, priority: int) -> None:
    """Available presence with `priority`; after the barrier the server routes by
    it (and, for initial presence, has delivered the stored messages)."""
    client.send_presence(ppriority=priority)
    await ping(client, server)


async def until_marker(client: Client) -> list:
    """The messages `client` received before the marker (which is consumed)."""
    messages = []
    while True:
        message = await asyncio.wait_for(client.all_messages.get(), 10)
        if message["body"] == MARKER and message["type"] == "chat":
            return messages
        messages.append(message)


def drain(client: Client) -> list:
    messages = []
    while not client.all_messages.empty():
        messages.append(client.all_messages.get_nowait())
    return messages


def send_under_test(sender: Client, to: str, mtype: str, stanza_id: str) -> None:
    message = sender.make_message(mto=to, mbody=f"{mtype} to {to}", mtype=mtype)
    message["id"] = stanza_id
    if mtype == "error":
        # RFC 6120 §8.3.2: an error stanza carries an <error/>.
        message["error"]["type"] = "cancel"
        message["error"]["condition"] = "item-not-found"
    message.send()


# -- the table ------------------------------------------------------------------


@pytest.mark.parametrize("case", CELLS)
def test_message_delivery(xmpp_server, accounts, case: Cell):
    server = xmpp_server
    account = recipient_account(case.destination, case.mtype)
    stanza_id = f"rules-{case.destination}-{case.mtype}"

    async def scenario():
        sender = await open_session(server, SENDER, f"{case.destination}-{case.mtype}")
        recipients: dict[str, Client] = {}
        try:
            await available(sender, server, 0)
            if case.destination in ONLINE_DESTINATIONS:
                for resource, priority in RESOURCES.items():
                    recipients[resource] = await open_session(server, account, resource)
                    await available(recipients[resource], server, priority)
            to = {
                BARE_ONLINE: server.jid(account),
                FULL_ONLINE: server.jid(account, FULL_TARGET),
                FULL_UNKNOWN: server.jid(account, UNKNOWN_RESOURCE),
                BARE_OFFLINE: server.jid(account),
                BARE_NONEXISTENT: server.jid(f"rules-nobody-{case.mtype}"),
            }[case.destination]

            send_under_test(sender, to, case.mtype, stanza_id)
            if case.destination == BARE_OFFLINE:
                sender.send_message(mto=to, mbody=MARKER, mtype="chat")  # stored after it
            for client in recipients.values():
                sender.send_message(mto=client.boundjid.full, mbody=MARKER, mtype="chat")

            # What each recipient resource got.
            got: dict[str, list] = {}
            for resource, client in recipients.items():
                got[resource] = await until_marker(client)
            if case.destination == BARE_OFFLINE:
                recipients[LOGIN] = await open_session(server, account, LOGIN)
                await available(recipients[LOGIN], server, 0)
                got[LOGIN] = await until_marker(recipients[LOGIN])
            for resource, messages in got.items():
                expected = case.received.get(resource, [])
                assert [m["type"] for m in messages] == expected, resource
                for message in messages:
                    assert message["id"] == stanza_id
                    assert message["from"].full == sender.boundjid.full
                    assert message["body"] == f"{case.mtype} to {to}"
                    if case.mtype == "error":
                        assert message["error"]["condition"] == "item-not-found"
                    delay = message.xml.find(f"{{{NS_DELAY}}}delay")
                    if resource == LOGIN:
                        assert delay is not None and delay.get("from") == server.domain
                    else:
                        assert delay is None
            assert set(case.received) <= set(got)

            # What the sender got back: the expected error, then nothing.
            errors = []
            if case.error is not None:
                errors.append(await asyncio.wait_for(sender.all_messages.get(), 10))
            await ping(sender, server)
            errors += drain(sender)
            if case.error is None:
                assert errors == []
            else:
                [error] = errors
                assert error["type"] == "error"
                assert error["id"] == stanza_id
                assert error["from"].full == to
                assert error["to"].full == sender.boundjid.full
                assert error["error"]["condition"] == case.error
                assert error["error"]["type"] == "cancel"

            # And no recipient got anything after its marker either.
            for resource, client in recipients.items():
                await ping(client, server)
                assert drain(client) == [], resource
        finally:
            await disconnect(sender, *recipients.values())

    asyncio.run(scenario())
