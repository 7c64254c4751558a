"""Rosters over the wire: RFC 6121 §2 (get, set, push, remove, errors),
roster versioning (XEP-0237) and shared roster groups."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from .conftest import PASSWORD
from .roster_clients import (
    ROSTER_QUERY,
    Item,
    barrier,
    drive_to_state,
    items_of,
    login,
    logout,
    roster_get,
    roster_set,
    server_roster,
    stream_features_after_login,
)

EMPTY = "roster-empty"
ADD = "roster-add"
TWO_RESOURCES = "roster-two-resources"
UNINTERESTED = "roster-uninterested"
UPDATE = "roster-update"
REMOVER = "roster-remover"
REMOVED = "roster-removed"
REMOVE_MISSING = "roster-remove-missing"
BAD = "roster-bad"
VER_FEATURE = "roster-ver-feature"
VER_RETURNED = "roster-ver-returned"
VER_CURRENT = "roster-ver-current"
VER_OLDER = "roster-ver-older"
VER_UNKNOWN = "roster-ver-unknown"
PERSIST = "roster-persist"
SHARED_A = "roster-shared-a"
SHARED_B = "roster-shared-b"
OUTSIDER = "roster-outsider"
SHARED_GROUP = "Roster test team"

ACCOUNTS = (
    EMPTY,
    ADD,
    TWO_RESOURCES,
    UNINTERESTED,
    UPDATE,
    REMOVER,
    REMOVED,
    REMOVE_MISSING,
    BAD,
    VER_FEATURE,
    VER_RETURNED,
    VER_CURRENT,
    VER_OLDER,
    VER_UNKNOWN,
    PERSIST,
    SHARED_A,
    SHARED_B,
    OUTSIDER,
)


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    lines = "".join(f"{name} {PASSWORD}\n" for name in ACCOUNTS)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return ACCOUNTS


def contact(server, name: str) -> str:
    return server.jid(name)


async def expect_error(pending, condition: str) -> None:
    with pytest.raises(IqError) as raised:
        await pending
    assert raised.value.iq["error"]["condition"] == condition


# -- §2.2 get, §2.3 set, §2.1.6 push -------------------------------------------


def test_roster_get_of_a_new_account_is_empty(xmpp_server, accounts):
    """A roster get answers with a <query/> that has no items when the account
    has no contacts (RFC 6121 §2.2)."""

    async def scenario():
        client = await login(xmpp_server, EMPTY, roster=False)
        try:
            result = await roster_get(client)
            assert result["type"] == "result"
            assert result.xml.find(ROSTER_QUERY) is not None
            assert items_of(result) == {}
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_set_adds_an_item_with_name_and_groups(xmpp_server, accounts):
    """A roster set adds the item with its name and groups and subscription
    'none'; the server answers with an empty result and pushes the item to
    the resource (RFC 6121 §2.3.2, §2.1.6)."""
    jid = contact(xmpp_server, "juliet-add")

    async def scenario():
        client = await login(xmpp_server, ADD)
        try:
            result = await roster_set(
                client,
                f"<item jid='{jid}' name='Juliet'><group>Friends</group>"
                "<group>Capulets</group></item>",
            )
            assert result["type"] == "result"
            assert len(result.xml) == 0
            expected = Item("none", name="Juliet", groups=("Capulets", "Friends"))
            await barrier(client)
            assert client.pushes_for(jid) == [expected]
            assert (await server_roster(client)) == {jid: expected}
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_push_reaches_every_interested_resource(xmpp_server, accounts):
    """A change made from one resource is pushed to every resource of the
    account that asked for the roster, the other one included (§2.1.6)."""
    jid = contact(xmpp_server, "juliet-two")

    async def scenario():
        first = await login(xmpp_server, TWO_RESOURCES, "first")
        second = await login(xmpp_server, TWO_RESOURCES, "second")
        try:
            await roster_set(first, f"<item jid='{jid}' name='J'/>")
            await barrier(second)
            assert second.pushes_for(jid) == [Item("none", name="J")]
            assert first.pushes_for(jid) == [Item("none", name="J")]
        finally:
            await logout(first, second)

    asyncio.run(scenario())


def test_roster_push_skips_a_resource_that_never_asked_for_the_roster(xmpp_server, accounts):
    """Pushes go to interested resources only: one that has not requested the
    roster receives none (§2.1.6, §2.2)."""
    jid = contact(xmpp_server, "juliet-uninterested")

    async def scenario():
        setter = await login(xmpp_server, UNINTERESTED, "setter")
        quiet = await login(xmpp_server, UNINTERESTED, "quiet", roster=False)
        try:
            await roster_set(setter, f"<item jid='{jid}'/>")
            await barrier(setter, quiet)
            assert quiet.pushes == []
            assert setter.pushes_for(jid) == [Item("none")]
        finally:
            await logout(setter, quiet)

    asyncio.run(scenario())


def test_roster_set_of_an_existing_item_updates_it(xmpp_server, accounts):
    """A roster set for a contact already in the roster replaces its name and
    groups, keeps its subscription, and is pushed (§2.4)."""
    jid = contact(xmpp_server, "juliet-update")

    async def scenario():
        client = await login(xmpp_server, UPDATE)
        try:
            await roster_set(client, f"<item jid='{jid}' name='Old'><group>A</group></item>")
            await roster_set(client, f"<item jid='{jid}' name='New'><group>B</group></item>")
            await barrier(client)
            expected = Item("none", name="New", groups=("B",))
            assert client.pushes_for(jid)[-1] == expected
            assert len(client.pushes_for(jid)) == 2
            assert (await server_roster(client)) == {jid: expected}
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_remove_cancels_subscriptions_both_ways(xmpp_server, accounts):
    """Removing a contact with a 'both' subscription pushes subscription='remove'
    to the user, and sends the contact "unsubscribe" and "unsubscribed" from
    the user's bare JID; the contact's roster item drops to 'none' (§2.5.2)."""

    async def scenario():
        user = await login(xmpp_server, REMOVER)
        other = await login(xmpp_server, REMOVED)
        user_jid, other_jid = user.boundjid.bare, other.boundjid.bare
        try:
            await drive_to_state(user, other, "Both")
            user_mark, other_mark = len(user.pushes), len(other.pushes)
            received_mark = len(other.received)
            result = await roster_set(user, f"<item jid='{other_jid}' subscription='remove'/>")
            assert result["type"] == "result"
            await barrier(user, other)
            assert user.pushes_for(other_jid, user_mark)[-1] == Item("remove")
            assert other_jid not in await server_roster(user)
            assert sorted(other.received_from(user_jid, received_mark)) == [
                "unsubscribe",
                "unsubscribed",
            ]
            assert other.pushes_for(user_jid, other_mark)[-1].subscription == "none"
            assert (await server_roster(other))[user_jid].subscription == "none"
        finally:
            await logout(user, other)

    asyncio.run(scenario())


def test_roster_remove_of_an_unknown_item_is_item_not_found(xmpp_server, accounts):
    """Removing a contact that is not in the roster is answered with
    <item-not-found/> (§2.5.3)."""

    async def scenario():
        client = await login(xmpp_server, REMOVE_MISSING)
        try:
            jid = contact(xmpp_server, "nobody-here")
            await expect_error(
                roster_set(client, f"<item jid='{jid}' subscription='remove'/>"), "item-not-found"
            )
        finally:
            await logout(client)

    asyncio.run(scenario())


# -- §2.3.3 errors ---------------------------------------------------------------


def run_bad_set(server, item_xml: str, condition: str) -> None:
    async def scenario():
        client = await login(server, BAD, presence=False)
        try:
            await expect_error(roster_set(client, item_xml), condition)
            assert await server_roster(client) == {}
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_set_with_two_items_is_bad_request(xmpp_server, accounts):
    """A roster set whose <query/> holds more than one <item/> is refused with
    <bad-request/> and changes nothing (§2.3.3)."""
    run_bad_set(
        xmpp_server,
        "<item jid='one@localhost'/><item jid='two@localhost'/>",
        "bad-request",
    )


def test_roster_set_with_a_duplicate_group_is_bad_request(xmpp_server, accounts):
    """An item naming the same group twice is refused with <bad-request/> (§2.3.3)."""
    run_bad_set(
        xmpp_server,
        "<item jid='dup@localhost'><group>G</group><group>G</group></item>",
        "bad-request",
    )


def test_roster_set_with_an_empty_group_is_not_acceptable(xmpp_server, accounts):
    """An item with a <group/> of zero length is refused with <not-acceptable/>
    (§2.3.3)."""
    run_bad_set(xmpp_server, "<item jid='empty@localhost'><group/></item>", "not-acceptable")


def test_roster_set_with_a_full_jid_is_bad_request(xmpp_server, accounts):
    """A roster item is a bare JID; an item for a full JID is refused with
    <bad-request/>."""
    run_bad_set(xmpp_server, "<item jid='full@localhost/resource'/>", "bad-request")


def test_roster_of_another_user_is_forbidden(xmpp_server, accounts):
    """A roster get or set addressed to another account is refused with
    <forbidden/> (§2.1.5)."""

    async def scenario():
        alice = await login(xmpp_server, "alice", "roster-snoop", presence=False)
        try:
            await expect_error(roster_get(alice, to=xmpp_server.jid(BAD)), "forbidden")
        finally:
            await logout(alice)

    asyncio.run(scenario())


# -- XEP-0237 roster versioning ------------------------------------------------


def test_roster_versioning_is_offered_as_a_stream_feature(xmpp_server, accounts):
    """After authentication the server offers <ver xmlns='urn:xmpp:features:rosterver'/>
    (XEP-0237 §2.1)."""
    features = stream_features_after_login(xmpp_server, VER_FEATURE)
    assert features.find("{urn:xmpp:features:rosterver}ver") is not None


def test_roster_get_with_ver_returns_the_version(xmpp_server, accounts):
    """A roster get carrying 'ver' (empty: no cache) is answered with the whole
    roster and its version in 'ver' (XEP-0237 §2.2, §2.3)."""
    jid = contact(xmpp_server, "juliet-ver")

    async def scenario():
        client = await login(xmpp_server, VER_RETURNED)
        try:
            await roster_set(client, f"<item jid='{jid}'/>")
            result = await roster_get(client, ver="")
            query = result.xml.find(ROSTER_QUERY)
            assert query is not None and query.get("ver")
            assert list(items_of(result)) == [jid]
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_get_with_the_current_ver_is_an_empty_result(xmpp_server, accounts):
    """A roster get with the version the server holds is answered with an empty
    IQ result, without a <query/>, and no pushes follow (XEP-0237 §2.4)."""
    jid = contact(xmpp_server, "juliet-current")

    async def scenario():
        client = await login(xmpp_server, VER_CURRENT)
        try:
            await roster_set(client, f"<item jid='{jid}'/>")
            current = (await roster_get(client, ver="")).xml.find(ROSTER_QUERY).get("ver")
            mark = len(client.pushes)
            result = await roster_get(client, ver=current)
            assert result["type"] == "result"
            assert len(result.xml) == 0
            await barrier(client)
            assert client.pushes[mark:] == []
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_get_with_an_older_ver_sends_only_the_changes_as_pushes(xmpp_server, accounts):
    """A roster get with an older version is answered with an empty result,
    then one push per item changed since, removals included, and nothing for
    the items that did not change (XEP-0237 §2.4)."""
    kept, removed, added = (contact(xmpp_server, f"ver-{n}") for n in ("kept", "removed", "added"))

    async def scenario():
        client = await login(xmpp_server, VER_OLDER)
        try:
            await roster_set(client, f"<item jid='{kept}'/>")
            await roster_set(client, f"<item jid='{removed}'/>")
            older = (await roster_get(client, ver="")).xml.find(ROSTER_QUERY).get("ver")
            await roster_set(client, f"<item jid='{added}' name='New'/>")
            await roster_set(client, f"<item jid='{removed}' subscription='remove'/>")
            current = (await roster_get(client, ver="")).xml.find(ROSTER_QUERY).get("ver")
            assert current != older
            mark = len(client.pushes)
            result = await roster_get(client, ver=older)
            assert len(result.xml) == 0
            await barrier(client)
            pushes = client.pushes[mark:]
            assert sorted((p.jid, p.item.subscription) for p in pushes) == [
                (added, "none"),
                (removed, "remove"),
            ]
            assert pushes[-1].ver == current
        finally:
            await logout(client)

    asyncio.run(scenario())


def test_roster_get_with_an_unknown_ver_returns_the_whole_roster(xmpp_server, accounts):
    """A version the server cannot interpret gets the whole roster with the
    current 'ver', as if the client had no cache (XEP-0237 §2.3)."""
    jids = [contact(xmpp_server, f"unknown-ver-{n}") for n in (1, 2)]

    async def scenario():
        client = await login(xmpp_server, VER_UNKNOWN)
        try:
            for jid in jids:
                await roster_set(client, f"<item jid='{jid}'/>")
            result = await roster_get(client, ver="not-a-version-we-gave")
            query = result.xml.find(ROSTER_QUERY)
            assert query is not None and query.get("ver")
            assert sorted(items_of(result)) == sorted(jids)
        finally:
            await logout(client)

    asyncio.run(scenario())


# -- persistence -----------------------------------------------------------------


def test_roster_persists_across_logout_and_login(xmpp_server, accounts):
    """A roster item set in one session is in the roster of the next session
    after every resource logged out (§2.1: the roster is stored on the server)."""
    jid = contact(xmpp_server, "juliet-persist")

    async def scenario():
        client = await login(xmpp_server, PERSIST)
        await roster_set(client, f"<item jid='{jid}' name='Kept'><group>G</group></item>")
        await logout(client)
        client = await login(xmpp_server, PERSIST)
        try:
            assert (await server_roster(client)) == {jid: Item("none", name="Kept", groups=("G",))}
        finally:
            await logout(client)

    asyncio.run(scenario())


# -- shared roster groups ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_group(xmpp_server, accounts):
    code = (
        "from xmpp.models import SharedGroup, User\n"
        f"group = SharedGroup.objects.create(name={SHARED_GROUP!r})\n"
        f"group.members.set(User.objects.filter(username__in=[{SHARED_A!r}, {SHARED_B!r}]))\n"
    )
    xmpp_server.manage("shell", "-c", code)
    return SHARED_GROUP


def test_shared_group_members_see_each_other_with_subscription_both(xmpp_server, shared_group):
    """Members of a shared group find each other in their rosters with
    subscription 'both' and the group's name, without any request."""

    async def scenario():
        a = await login(xmpp_server, SHARED_A, presence=False)
        b = await login(xmpp_server, SHARED_B, presence=False)
        try:
            expected = Item("both", groups=(shared_group,))
            roster_a = {
                j: Item(i.subscription, i.ask, groups=i.groups)
                for j, i in (await server_roster(a)).items()
            }
            roster_b = {
                j: Item(i.subscription, i.ask, groups=i.groups)
                for j, i in (await server_roster(b)).items()
            }
            assert roster_a == {b.boundjid.bare: expected}
            assert roster_b == {a.boundjid.bare: expected}
        finally:
            await logout(a, b)

    asyncio.run(scenario())


def test_shared_group_members_see_each_others_presence(xmpp_server, shared_group):
    """A member coming online receives the presence of the members already
    online (probe answered) and they receive its presence, with no
    subscription request exchanged."""

    async def scenario():
        a = await login(xmpp_server, SHARED_A, "presence")
        b = await login(xmpp_server, SHARED_B, "presence")
        try:
            await barrier(a, b)
            assert "available" in b.presences_from(a.boundjid.full)
            assert "available" in a.presences_from(b.boundjid.full)
            assert a.received == [] and b.received == []
        finally:
            await logout(a, b)

    asyncio.run(scenario())


def test_shared_group_is_invisible_to_a_non_member(xmpp_server, shared_group):
    """An account outside the group has none of its members in its roster and
    receives none of their presence."""

    async def scenario():
        outsider = await login(xmpp_server, OUTSIDER)
        a = await login(xmpp_server, SHARED_A, "outsider-test")
        b = await login(xmpp_server, SHARED_B, "outsider-test")
        try:
            await barrier(a, b, outsider)
            assert await server_roster(outsider) == {}
            assert outsider.presences_from(a.boundjid.bare) == []
            assert outsider.presences_from(b.boundjid.bare) == []
            assert outsider.boundjid.bare not in await server_roster(a)
        finally:
            await logout(outsider, a, b)

    asyncio.run(scenario())
