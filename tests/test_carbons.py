"""Message Carbons (XEP-0280 v1.0.1), driven by slixmpp clients over real
sockets: enabling and disabling per session (§4, §5, §10.1), the feature on
the server's disco#info (§3), received (§7) and sent (§8) carbons and which
messages get them (§6), <private/> and XEP-0334 <no-copy/> (§9), MUC
private and groupchat messages (§6), and forged carbons (§11).

Most tests use one account with three resources: `on1` and `on2` enable
carbons, `off` does not and has the highest priority (so a message to the
bare JID reaches `off` alone, RFC 6121 §8.5.2.1.1), plus a contact. What
must not arrive is checked after a ping round trip of the sender and then
of each recipient (`settle`): whatever the server routed before has arrived
by then.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from .clients import disconnect, iq_error
from .muc_clients import SERVICE, MucClient, connect_muc, register

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
MESSAGE = "{jabber:client}message"
BODY = "{jabber:client}body"

USERS = [f"carbons-{n}" for n in range(1, 15)]
CONTACTS = [f"carbons-contact-{n}" for n in range(1, 15)]
_next = iter(range(len(USERS)))


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    register(xmpp_server, *USERS, *CONTACTS)


@pytest.fixture
def pair(accounts):
    """A fresh (owner, contact) pair of account names for one test."""
    index = next(_next)
    return USERS[index], CONTACTS[index]


async def login(server, user: str, resource: str, priority: int = 0) -> MucClient:
    client = await connect_muc(server, user, resource, presence=False)
    client.register_plugin("xep_0280")
    client.carbon_events = []
    client.add_event_handler("carbon_received", client.carbon_events.append)
    client.add_event_handler("carbon_sent", client.carbon_events.append)
    client.send_presence(ppriority=priority)
    return client


async def three_resources(server, user: str):
    """on1 and on2 with carbons enabled, off without and with priority 1."""
    on1 = await login(server, user, "on1")
    on2 = await login(server, user, "on2")
    off = await login(server, user, "off", priority=1)
    await on1.plugin["xep_0280"].enable(timeout=10)
    await on2.plugin["xep_0280"].enable(timeout=10)
    await settle(server, on1, on2, off)
    for client in (on1, on2, off):
        client.clear()  # the resources' presence to each other
    return on1, on2, off


async def settle(server, *clients: MucClient) -> None:
    """A ping round trip of each client in turn (see the module docstring)."""
    for client in clients:
        await client.plugin["xep_0199"].send_ping(server.domain, timeout=10)


def send(client: MucClient, to: str, body: str | None, mtype: str = "chat", extra: str = ""):
    type_attr = f" type='{mtype}'" if mtype else ""
    body_xml = f"<body>{body}</body>" if body is not None else ""
    client.send_xml(f"<message to='{to}'{type_attr}>{body_xml}{extra}</message>")


def carbon(kind: str, body: str):
    """A <received/> or <sent/> carbon of a message with `body`."""

    def matches(stanza: ET.Element) -> bool:
        inner = forwarded(stanza, kind)
        return inner is not None and inner.findtext(BODY) == body

    return matches


def forwarded(stanza: ET.Element, kind: str) -> ET.Element | None:
    if stanza.tag != MESSAGE:
        return None
    return stanza.find(f"{{{NS_CARBONS}}}{kind}/{{{NS_FORWARD}}}forwarded/{MESSAGE}")


def original(body: str):
    """The message itself, not a carbon of it."""

    def matches(stanza: ET.Element) -> bool:
        return stanza.tag == MESSAGE and stanza.findtext(BODY) == body

    return matches


def any_carbon(stanza: ET.Element) -> bool:
    return forwarded(stanza, "received") is not None or forwarded(stanza, "sent") is not None


def received_anything(client: MucClient, body: str) -> bool:
    return any(original(body)(s) or carbon("received", body)(s) for s in client.inbox) or any(
        carbon("sent", body)(s) for s in client.inbox
    )


def run(scenario):
    asyncio.run(scenario())


def test_enable_and_disable_are_answered_with_a_result(xmpp_server, pair):
    """§4, §5: enable and disable are IQ sets to one's own account, answered
    with a result; enabling or disabling twice is no error (§10.1)."""
    user, _ = pair

    async def scenario():
        client = await login(xmpp_server, user, "r")
        try:
            carbons = client.plugin["xep_0280"]
            for toggle in (carbons.enable, carbons.enable, carbons.disable, carbons.disable):
                result = await toggle(timeout=10)
                assert result["type"] == "result"
                assert result["from"].full in ("", xmpp_server.jid(user))
        finally:
            await disconnect(client)

    run(scenario)


def test_enabling_for_another_account_is_not_allowed(xmpp_server, pair):
    """§4.1, §5.1: an <enable/> or <disable/> sent to someone else's bare JID
    gets <not-allowed/>; an IQ get of <enable/> is not served."""
    user, contact = pair

    async def scenario():
        owner = await login(xmpp_server, user, "r")
        other = await login(xmpp_server, contact, "r")
        try:
            for payload in ("enable", "disable"):
                condition = await iq_error(
                    other, "set", f"<{payload} xmlns='{NS_CARBONS}'/>", xmpp_server.jid(user)
                )
                assert condition == "not-allowed"
            condition = await iq_error(other, "get", f"<enable xmlns='{NS_CARBONS}'/>")
            assert condition == "service-unavailable"
        finally:
            await disconnect(owner, other)

    run(scenario)


def test_server_disco_info_lists_carbons(xmpp_server, pair):
    """§3: the server's disco#info has the urn:xmpp:carbons:2 feature."""
    user, _ = pair

    async def scenario():
        client = await login(xmpp_server, user, "r")
        try:
            info = await client.plugin["xep_0030"].get_info(jid=xmpp_server.domain, timeout=10)
            assert NS_CARBONS in info["disco_info"]["features"]
        finally:
            await disconnect(client)

    run(scenario)


def test_message_to_the_bare_jid_is_copied_to_the_enabled_resources(xmpp_server, pair):
    """§7: a chat to the bare JID reaches the highest-priority resource (off);
    each carbons-enabled resource that did not get it (on1, on2) gets one
    <received/> carbon from the bare JID to its full JID, of the same type,
    forwarding the original message (XEP-0297)."""
    user, contact = pair
    bare = xmpp_server.jid(user)

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, bare, "to the bare JID")
            await settle(xmpp_server, other, on1, on2, off)
            await off.wait_for(original("to the bare JID"), timeout=1)
            for client in (on1, on2):
                copy = await client.wait_for(carbon("received", "to the bare JID"), timeout=1)
                assert copy.get("from") == bare
                assert copy.get("to") == client.boundjid.full
                assert copy.get("type") == "chat"
                inner = forwarded(copy, "received")
                assert inner.get("from") == other.boundjid.full
                assert inner.get("to") == bare
                assert not received_anything(client, "to the bare JID")  # exactly one
            assert not received_anything(off, "to the bare JID")
            assert off.carbon_events == []
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_message_to_a_full_jid_is_copied_to_the_other_enabled_resource(xmpp_server, pair):
    """§7: a chat to on1's full JID goes to on1 alone; on2 gets a <received/>
    carbon; on1 (the addressee) gets no carbon, off (not enabled) nothing."""
    user, contact = pair

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, on1.boundjid.full, "to on1")
            await settle(xmpp_server, other, on1, on2, off)
            await on1.wait_for(original("to on1"), timeout=1)
            copy = await on2.wait_for(carbon("received", "to on1"), timeout=1)
            assert forwarded(copy, "received").get("to") == on1.boundjid.full
            assert not any(any_carbon(s) for s in on1.inbox)
            assert not received_anything(off, "to on1")
            assert len(on2.carbon_events) == 1  # slixmpp trusts it: from the bare JID
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_chat_to_a_gone_full_jid_is_copied_as_to_the_bare_jid(xmpp_server, pair):
    """RFC 6121 §8.5.3.2.1: a chat to a resource that is not online is handled
    as sent to the bare JID (off gets it), and §7's carbons follow that
    delivery (on1 and on2 each get one)."""
    user, contact = pair

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, xmpp_server.jid(user, "gone"), "to a gone resource")
            await settle(xmpp_server, other, on1, on2, off)
            await off.wait_for(original("to a gone resource"), timeout=1)
            for client in (on1, on2):
                await client.wait_for(carbon("received", "to a gone resource"), timeout=1)
                assert not received_anything(client, "to a gone resource")
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_sent_messages_are_copied_to_the_other_enabled_resources(xmpp_server, pair):
    """§8: what on1 sends reaches on2 as a <sent/> carbon (not on1 itself, not
    off); what off sends, though off did not enable carbons, reaches on1 and
    on2. The contact gets each original once."""
    user, contact = pair

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(on1, other.boundjid.bare, "from on1")
            send(off, other.boundjid.full, "from off")
            await settle(xmpp_server, on1, off, other, on2)
            copy = await on2.wait_for(carbon("sent", "from on1"), timeout=1)
            assert copy.get("from") == xmpp_server.jid(user)
            assert copy.get("to") == on2.boundjid.full
            inner = forwarded(copy, "sent")
            assert inner.get("from") == on1.boundjid.full
            assert inner.get("to") == other.boundjid.bare
            await on1.wait_for(carbon("sent", "from off"), timeout=1)
            await on2.wait_for(carbon("sent", "from off"), timeout=1)
            assert not received_anything(on1, "from on1")
            assert not received_anything(off, "from on1")
            assert not received_anything(off, "from off")
            for body in ("from on1", "from off"):
                await other.wait_for(original(body), timeout=1)
                assert not any(original(body)(s) for s in other.inbox)
            assert not any(any_carbon(s) for s in other.inbox)
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_private_and_no_copy_messages_are_not_copied(xmpp_server, pair):
    """§9: a message with <private xmlns='urn:xmpp:carbons:2'/> is not copied,
    sent or received, and the local recipient gets it without <private/>;
    XEP-0334's <no-copy/> is not copied either. A plain message is."""
    user, contact = pair
    private = f"<private xmlns='{NS_CARBONS}'/>"
    no_copy = "<no-copy xmlns='urn:xmpp:hints'/>"

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(on1, other.boundjid.full, "private out", extra=private)
            send(on1, other.boundjid.full, "no-copy out", extra=no_copy)
            send(other, on1.boundjid.full, "private in", extra=private)
            send(other, on1.boundjid.full, "no-copy in", extra=no_copy)
            send(other, on1.boundjid.full, "plain in")
            await settle(xmpp_server, on1, other, on2, off)
            await on2.wait_for(carbon("received", "plain in"), timeout=1)
            assert not any(any_carbon(s) for s in on2.inbox)
            delivered = await other.wait_for(original("private out"), timeout=1)
            assert delivered.find(f"{{{NS_CARBONS}}}private") is None
            delivered = await on1.wait_for(original("private in"), timeout=1)
            assert delivered.find(f"{{{NS_CARBONS}}}private") is None
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_only_chat_and_normal_with_a_body_are_copied(xmpp_server, pair):
    """§6: headlines, normal messages without a body (a chat state alone) and
    errors are not copied; a normal message with a body is."""
    user, contact = pair
    chat_state = "<active xmlns='http://jabber.org/protocol/chatstates'/>"

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, on1.boundjid.full, "headline", mtype="headline")
            send(other, on1.boundjid.full, None, mtype="", extra=chat_state)
            send(other, on1.boundjid.full, "error", mtype="error")
            send(on1, other.boundjid.full, "headline out", mtype="headline")
            send(other, on1.boundjid.full, "normal", mtype="normal")
            await settle(xmpp_server, other, on1, on2, off)
            await on2.wait_for(carbon("received", "normal"), timeout=1)
            assert not any(any_carbon(s) for s in on2.inbox), [ET.tostring(s) for s in on2.inbox]
            assert len(on2.carbon_events) == 1
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_a_direct_invitation_without_a_body_is_copied(xmpp_server, pair):
    """§6: a direct invitation (XEP-0249), a normal message with no body, is
    copied all the same."""
    user, contact = pair
    invitation = "<x xmlns='jabber:x:conference' jid='somewhere@conference.localhost'/>"

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, on1.boundjid.full, None, mtype="", extra=invitation)
            await settle(xmpp_server, other, on1, on2, off)
            copy = await on2.wait_for(lambda s: forwarded(s, "received") is not None, timeout=1)
            inner = forwarded(copy, "received")
            assert inner.find("{jabber:x:conference}x") is not None
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_disable_stops_the_copies_of_that_session(xmpp_server, pair):
    """§5: once on2 disables carbons it gets no more copies; on1 still does."""
    user, contact = pair

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            await on2.plugin["xep_0280"].disable(timeout=10)
            send(other, xmpp_server.jid(user), "after disable")
            send(off, other.boundjid.full, "sent after disable")
            await settle(xmpp_server, other, off, on1, on2)
            await on1.wait_for(carbon("received", "after disable"), timeout=1)
            await on1.wait_for(carbon("sent", "sent after disable"), timeout=1)
            assert not any(any_carbon(s) for s in on2.inbox)
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_enabling_lasts_for_the_session_only(xmpp_server, pair):
    """§4: a resource that logs in again has carbons disabled until it enables
    them in its new session."""
    user, contact = pair

    async def scenario():
        first = await login(xmpp_server, user, "again")
        await first.plugin["xep_0280"].enable(timeout=10)
        await disconnect(first)
        again = await login(xmpp_server, user, "again")
        main = await login(xmpp_server, user, "main", priority=1)
        other = await login(xmpp_server, contact, "r")
        try:
            await settle(xmpp_server, again, main, other)
            send(other, xmpp_server.jid(user), "not yet")
            await settle(xmpp_server, other, main, again)
            await main.wait_for(original("not yet"), timeout=1)
            assert not any(any_carbon(s) for s in again.inbox)
            await again.plugin["xep_0280"].enable(timeout=10)
            send(other, xmpp_server.jid(user), "now")
            await settle(xmpp_server, other, again)
            await again.wait_for(carbon("received", "now"), timeout=1)
        finally:
            await disconnect(again, main, other)

    run(scenario)


def test_a_forged_carbon_from_a_contact_is_not_made_a_carbon(xmpp_server, pair):
    """§11: carbons come from the user's own bare JID. A contact's message
    carrying a <received/> wrapper is delivered as the contact's (its 'from'
    the contact's full JID, so a client ignores the wrapper) and is not
    wrapped again as a carbon of the server's for the other resources."""
    user, contact = pair
    bare = xmpp_server.jid(user)
    forged = (
        f"<received xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
        f"<message xmlns='jabber:client' from='{bare}/on1' to='someone@elsewhere' type='chat'>"
        "<body>forged</body></message></forwarded></received>"
    )

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            send(other, bare, None, extra=forged)
            send(other, on1.boundjid.full, None, extra=forged)
            await settle(xmpp_server, other, on1, on2, off)
            for client in (off, on1):
                stanza = await client.wait_for(
                    lambda s: forwarded(s, "received") is not None, timeout=1
                )
                assert stanza.get("from") == other.boundjid.full
                assert client.carbon_events == []  # slixmpp applies §11's rule
            for client in (on1, on2, off):
                assert not any(s.get("from") == bare and any_carbon(s) for s in client.inbox), (
                    client.boundjid
                )
            assert on2.carbon_events == []
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)


def test_muc_private_messages_sent_are_copied_groupchat_and_received_are_not(xmpp_server, pair):
    """§6: a private message on1 sends to an occupant is its own and is
    copied to on2 as sent; one it receives from an occupant is from a MUC
    room and is not copied; a room's mediated invitation (XEP-0045 §7.8.2)
    to the bare JID is copied, as received, to the enabled resources it did
    not reach; groupchat messages are never copied."""
    user, contact = pair
    room = f"carbons-room-{contact}"
    room_jid = f"{room}@{SERVICE}"

    async def scenario():
        on1, on2, off = await three_resources(xmpp_server, user)
        other = await login(xmpp_server, contact, "r")
        try:
            await other.create_instant(room, "contact")
            await on1.enter(room, "owner")
            await settle(xmpp_server, on1, other, on2, off)
            send(on1, f"{room_jid}/contact", "pm out")
            send(other, f"{room_jid}/owner", "pm in")
            send(on1, room_jid, "groupchat out", mtype="groupchat")
            send(other, room_jid, "groupchat in", mtype="groupchat")
            other.send_xml(
                f"<message to='{room_jid}'><x xmlns='http://jabber.org/protocol/muc#user'>"
                f"<invite to='{xmpp_server.jid(user)}'/></x></message>"
            )
            await settle(xmpp_server, on1, other, on2, off)
            await other.wait_for(original("pm out"), timeout=1)
            await on1.wait_for(original("pm in"), timeout=1)
            await on1.wait_for(original("groupchat in"), timeout=1)
            await off.wait_for(lambda s: s.get("from") == room_jid, timeout=1)  # the invitation
            copy = await on2.wait_for(carbon("sent", "pm out"), timeout=1)
            assert forwarded(copy, "sent").get("to") == f"{room_jid}/contact"
            for resource in (on1, on2):
                invitation = await resource.wait_for(
                    lambda s: any_carbon(s) and forwarded(s, "received") is not None, timeout=1
                )
                assert forwarded(invitation, "received").get("from") == room_jid
            assert not any(any_carbon(s) for s in on2.inbox), [ET.tostring(s) for s in on2.inbox]
            assert not any(any_carbon(s) for s in on1.inbox)
        finally:
            await disconnect(on1, on2, off, other)

    run(scenario)
