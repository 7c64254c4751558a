"""Presence with rosters over the wire (RFC 6121 §4, §3.1.3, §3.4): who hears
a user's presence, probes, directed presence, subscription requests kept for
an offline user, and subscription pre-approval."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import PASSWORD
from .roster_clients import (
    RosterClient,
    barrier,
    drive_to_state,
    login,
    logout,
    roster_set,
    send_available,
    send_subscription,
    server_roster,
    stream_features_after_login,
)

# The user's state towards each contact, named after the user's subscription.
CONTACT_STATES = {"from": "From", "both": "Both", "to": "To", "none": "None"}


def names(prefix: str) -> dict[str, str]:
    """The user and one contact per subscription, for one test."""
    return {"user": f"{prefix}-user", **{sub: f"{prefix}-{sub}" for sub in CONTACT_STATES}}


TESTS_WITH_A_ROSTER = (
    "pres-initial",
    "pres-unsubscribed",
    "pres-probe",
    "pres-noprobe",
    "pres-priority",
    "pres-negative",
    "pres-logout",
    "pres-drop",
)
SINGLES = (
    "pres-directed-user",
    "pres-directed-stranger",
    "pres-offline-sender",
    "pres-offline-target",
    "pres-feature",
    "pres-preapprove-user",
    "pres-preapprove-contact",
    "pres-preapproved-user",
    "pres-preapproved-contact",
    "pres-approved-user",
    "pres-approved-contact",
)


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    all_names = [n for prefix in TESTS_WITH_A_ROSTER for n in names(prefix).values()]
    all_names += SINGLES
    lines = "".join(f"{name} {PASSWORD}\n" for name in all_names)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return all_names


async def user_with_contacts(server, prefix: str) -> tuple[RosterClient, dict[str, RosterClient]]:
    """The user (resource 'roster') and one online contact per subscription
    'from', 'both', 'to', 'none' (the last only in the user's roster)."""
    accounts = names(prefix)
    user = await login(server, accounts["user"])
    contacts = {}
    for sub, state in CONTACT_STATES.items():
        contacts[sub] = await login(server, accounts[sub])
        await drive_to_state(user, contacts[sub], state)
    await roster_set(user, f"<item jid='{contacts['none'].boundjid.bare}'/>")
    roster = await server_roster(user)
    assert {jid: item.subscription for jid, item in roster.items()} == {
        c.boundjid.bare: sub for sub, c in contacts.items()
    }
    return user, contacts


async def next_presence_from(client: RosterClient, jid: str, timeout: float = 10):
    """The next presence in the client's queue from the full JID `jid`."""

    async def find():
        while True:
            presence = await client.presences.get()
            if presence["from"].full == jid:
                return presence

    return await asyncio.wait_for(find(), timeout)


# -- §4.2 initial presence, §4.3 probes ----------------------------------------


def test_initial_presence_goes_to_subscribers_and_own_resources(xmpp_server, accounts):
    """A resource's initial presence is broadcast to the contacts with a
    'from' or 'both' subscription and to the user's other available
    resources (RFC 6121 §4.2.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-initial")
        fresh = await login(xmpp_server, names("pres-initial")["user"], "fresh", presence=False)
        clients = [user, fresh, *contacts.values()]
        try:
            fresh.send_presence()
            await barrier(fresh, *clients)
            jid = fresh.boundjid.full
            assert contacts["from"].presences_from(jid) == ["available"]
            assert contacts["both"].presences_from(jid) == ["available"]
            assert user.presences_from(jid) == ["available"]
        finally:
            await logout(*clients)

    asyncio.run(scenario())


def test_no_presence_to_contacts_without_a_subscription_to_the_user(xmpp_server, accounts):
    """Contacts whose subscription is 'to' or 'none' from the user's side are
    not subscribed to the user and receive none of its presence (§4.2.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-unsubscribed")
        fresh = await login(
            xmpp_server, names("pres-unsubscribed")["user"], "fresh", presence=False
        )
        clients = [user, fresh, *contacts.values()]
        try:
            fresh.send_presence()
            await barrier(fresh, *clients)
            assert contacts["both"].presences_from(fresh.boundjid.full) == ["available"]
            assert contacts["to"].presences_from(user.boundjid.bare) == []
            assert contacts["none"].presences_from(user.boundjid.bare) == []
        finally:
            await logout(*clients)

    asyncio.run(scenario())


def test_new_resource_receives_presence_of_its_subscriptions_and_own_resources(
    xmpp_server, accounts
):
    """A newly available resource receives the current presence of each contact
    it is subscribed to ('to', 'both'), answered for the probes the server
    sends on its behalf, and of the user's other resources (§4.2.2, §4.3.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-probe")
        fresh = await login(xmpp_server, names("pres-probe")["user"], "fresh", presence=False)
        clients = [user, fresh, *contacts.values()]
        try:
            fresh.send_presence()
            await barrier(fresh, *clients)
            assert fresh.presences_from(contacts["to"].boundjid.full) == ["available"]
            assert fresh.presences_from(contacts["both"].boundjid.full) == ["available"]
            assert "available" in fresh.presences_from(user.boundjid.full)
        finally:
            await logout(*clients)

    asyncio.run(scenario())


def test_probe_is_not_answered_for_contacts_the_user_is_not_subscribed_to(xmpp_server, accounts):
    """A new resource receives no presence from contacts whose subscription is
    'from' or 'none' from the user's side: they do not let the user see
    their presence (§4.3.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-noprobe")
        fresh = await login(xmpp_server, names("pres-noprobe")["user"], "fresh", presence=False)
        clients = [user, fresh, *contacts.values()]
        try:
            fresh.send_presence()
            await barrier(fresh, *clients)
            assert fresh.presences_from(contacts["both"].boundjid.full) == ["available"]
            assert fresh.presences_from(contacts["from"].boundjid.bare) == []
            assert fresh.presences_from(contacts["none"].boundjid.bare) == []
        finally:
            await logout(*clients)

    asyncio.run(scenario())


# -- §4.7.2.3 priority -----------------------------------------------------------


def test_presence_broadcast_carries_the_resources_priority(xmpp_server, accounts):
    """The presence a subscriber receives carries the priority the resource
    sent, and a later presence with another priority is broadcast too
    (§4.4.2, §4.7.2.3)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-priority")
        fresh = await login(xmpp_server, names("pres-priority")["user"], "fresh", presence=False)
        watcher = contacts["both"]
        clients = [user, fresh, *contacts.values()]
        try:
            await send_available(fresh, 5)
            presence = await next_presence_from(watcher, fresh.boundjid.full)
            assert presence["priority"] == 5
            await send_available(fresh, -3)
            presence = await next_presence_from(watcher, fresh.boundjid.full)
            assert presence["priority"] == -3
        finally:
            await logout(*clients)

    asyncio.run(scenario())


def test_negative_priority_resource_still_receives_contacts_presence(xmpp_server, accounts):
    """A resource with negative priority gets no messages for the bare JID, but
    it does receive its contacts' presence, by probe and by broadcast
    (§4.7.2.3)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-negative")
        negative = await login(xmpp_server, names("pres-negative")["user"], "negative", priority=-1)
        both = contacts["both"]
        clients = [user, negative, *contacts.values()]
        try:
            await barrier(negative)
            assert negative.presences_from(both.boundjid.full) == ["available"]
            both.send_presence(pstatus="still here")
            await barrier(both, negative)
            assert negative.presences_from(both.boundjid.full) == ["available", "available"]
        finally:
            await logout(*clients)

    asyncio.run(scenario())


# -- §4.5 unavailable --------------------------------------------------------------


def test_unavailable_goes_to_subscribers_on_logout(xmpp_server, accounts):
    """When a resource closes its stream, the contacts subscribed to the user
    receive unavailable presence from that resource (§4.5.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-logout")
        leaving = await login(xmpp_server, names("pres-logout")["user"], "leaving")
        jid = leaving.boundjid.full
        clients = [user, *contacts.values()]
        try:
            await logout(leaving)
            await barrier(*clients)
            assert contacts["from"].presences_from(jid) == ["available", "unavailable"]
            assert contacts["both"].presences_from(jid) == ["available", "unavailable"]
            assert contacts["to"].presences_from(jid) == []
        finally:
            await logout(*clients)

    asyncio.run(scenario())


def test_unavailable_goes_to_subscribers_when_the_connection_drops(xmpp_server, accounts):
    """When a resource's TCP connection dies without a closing stream, the
    contacts subscribed to the user receive unavailable presence from it
    (§4.5.2)."""

    async def scenario():
        user, contacts = await user_with_contacts(xmpp_server, "pres-drop")
        dropped = await login(xmpp_server, names("pres-drop")["user"], "dropped")
        jid = dropped.boundjid.full
        clients = [user, *contacts.values()]
        try:
            dropped.transport.abort()
            watcher = contacts["both"]
            presence = await next_presence_from(watcher, jid)
            assert presence["type"] == "available"
            presence = await next_presence_from(watcher, jid)
            assert presence["type"] == "unavailable"
            await barrier(*clients)
            assert contacts["from"].presences_from(jid) == ["available", "unavailable"]
        finally:
            await logout(*clients, dropped)

    asyncio.run(scenario())


# -- §4.6 directed presence ------------------------------------------------------


def test_directed_presence_reaches_a_non_contact_and_unavailable_follows(xmpp_server, accounts):
    """Available presence sent to an entity not in the roster reaches it, and
    when the sender's session ends that entity receives unavailable presence
    from it too (§4.6.2, §4.6.3)."""

    async def scenario():
        user = await login(xmpp_server, "pres-directed-user")
        stranger = await login(xmpp_server, "pres-directed-stranger")
        jid = user.boundjid.full
        try:
            await barrier(user, stranger)
            assert stranger.presences_from(jid) == []
            user.send_presence(pto=stranger.boundjid.bare, pstatus="just for you")
            await barrier(user, stranger)
            assert stranger.presences_from(jid) == ["available"]
            await logout(user)
            await barrier(stranger)
            assert stranger.presences_from(jid) == ["available", "unavailable"]
        finally:
            await logout(user, stranger)

    asyncio.run(scenario())


# -- §3.1.3 a request for an offline user -----------------------------------------


def test_subscription_request_to_offline_user_is_delivered_at_next_presence(xmpp_server, accounts):
    """A subscribe for a user with no session is kept by the server and
    delivered, from the requester's bare JID, once that user logs in and
    sends available presence; not before (§3.1.3)."""

    async def scenario():
        sender = await login(xmpp_server, "pres-offline-sender")
        target_jid = xmpp_server.jid("pres-offline-target")
        try:
            await send_subscription(sender, "subscribe", target_jid)
            target = await login(xmpp_server, "pres-offline-target", presence=False)
            try:
                await barrier(target)
                assert target.received == []
                await send_available(target)
                await barrier(target)
                assert target.received == [("subscribe", sender.boundjid.bare)]
            finally:
                await logout(target)
        finally:
            await logout(sender)

    asyncio.run(scenario())


# -- §3.4 pre-approval, §3.1.3 auto-reply --------------------------------------------


def test_preapproval_is_offered_as_a_stream_feature(xmpp_server, accounts):
    """After authentication the server offers
    <sub xmlns='urn:xmpp:features:pre-approval'/> (§3.4.1)."""
    features = stream_features_after_login(xmpp_server, "pres-feature")
    assert features.find("{urn:xmpp:features:pre-approval}sub") is not None


def test_subscribed_before_a_request_is_recorded_as_preapproval(xmpp_server, accounts):
    """A "subscribed" to a contact that has not asked is a pre-approval: the
    user's roster item gets approved='true' (created with subscription 'none')
    and the stanza is not routed to the contact (§3.4.2)."""

    async def scenario():
        user = await login(xmpp_server, "pres-preapprove-user")
        contact = await login(xmpp_server, "pres-preapprove-contact")
        contact_jid = contact.boundjid.bare
        try:
            await send_subscription(user, "subscribed", contact_jid)
            await barrier(user, contact)
            pushed = user.pushes_for(contact_jid)
            assert [(i.subscription, i.approved) for i in pushed] == [("none", True)]
            assert (await server_roster(user))[contact_jid].approved
            assert contact.received == []
        finally:
            await logout(user, contact)

    asyncio.run(scenario())


def test_preapproved_subscribe_is_approved_without_asking_the_user(xmpp_server, accounts):
    """A subscribe from a pre-approved contact is approved by the server: the
    contact receives "subscribed" and the user's presence, its item becomes
    'to'; the user's item becomes 'from' and the user never sees the request
    (§3.4.2, §3.1.3)."""

    async def scenario():
        user = await login(xmpp_server, "pres-preapproved-user")
        contact = await login(xmpp_server, "pres-preapproved-contact")
        user_jid, contact_jid = user.boundjid.bare, contact.boundjid.bare
        try:
            await send_subscription(user, "subscribed", contact_jid)
            await send_subscription(contact, "subscribe", user_jid)
            await barrier(user, contact)
            assert contact.received == [("subscribed", user_jid)]
            assert "available" in contact.presences_from(user.boundjid.full)
            assert contact.pushes_for(user_jid)[-1].subscription == "to"
            assert user.received == []
            assert user.pushes_for(contact_jid)[-1].subscription == "from"
            assert (await server_roster(user))[contact_jid].subscription == "from"
        finally:
            await logout(user, contact)

    asyncio.run(scenario())


def test_subscribe_from_an_already_approved_contact_is_answered_by_the_server(
    xmpp_server, accounts
):
    """When a user who already has a subscription to the contact asks again
    (here: the user's roster lost the item), the contact's server answers
    "subscribed" itself and does not deliver the request to the contact
    (§3.1.3, A.3.1)."""

    async def scenario():
        user = await login(xmpp_server, "pres-approved-user")
        contact = await login(xmpp_server, "pres-approved-contact")
        contact_jid = contact.boundjid.bare
        try:
            await drive_to_state(user, contact, "To")
        finally:
            await logout(user)
        xmpp_server.manage(
            "shell",
            "-c",
            "from xmpp.models import RosterItem\n"
            "RosterItem.objects.filter(user__username='pres-approved-user').delete()\n",
        )
        user = await login(xmpp_server, "pres-approved-user")
        try:
            assert await server_roster(user) == {}
            received_mark = len(contact.received)
            await send_subscription(user, "subscribe", contact_jid)
            await barrier(user, contact)
            assert user.received == [("subscribed", contact_jid)]
            assert user.pushes_for(contact_jid)[-1].subscription == "to"
            assert contact.received[received_mark:] == []
        finally:
            await logout(user, contact)

    asyncio.run(scenario())
