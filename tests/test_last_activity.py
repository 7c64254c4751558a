"""Last Activity (XEP-0012): the server's uptime, and how long ago a user
logged out, told only to the user and to contacts it shares presence with."""

from __future__ import annotations

import asyncio
import datetime
import time
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from xmpp.last_activity import _store_logouts
from xmpp.models import LastActivity, User

from .clients import connect, disconnect
from .conftest import PASSWORD

NS_LAST = "jabber:iq:last"
QUERY = f"<query xmlns='{NS_LAST}'/>"
ONLINE = "last-online"
RETURNING = "last-returning"
NEVER = "last-never"
OWNER = "last-owner"
CONTACT = "last-contact"
STRANGER = "last-stranger"
STATUS_OWNER = "last-status-owner"
STATUS_CONTACT = "last-status-contact"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (ONLINE, RETURNING, NEVER, OWNER, CONTACT, STRANGER, STATUS_OWNER, STATUS_CONTACT)
    xmpp_server.manage(
        "register", "--from-file", "-", input="".join(f"{n} {PASSWORD}\n" for n in names)
    )
    return names


async def last_activity(client, to: str):
    """The result of a last-activity get to `to`: its <query/> element."""
    iq = client.make_iq(ito=to, itype="get")
    iq.append(ET.fromstring(QUERY))
    result = await iq.send(timeout=10)
    return result.xml.find(f"{{{NS_LAST}}}query")


async def last_activity_error(client, to: str) -> str:
    with pytest.raises(IqError) as raised:
        await last_activity(client, to)
    return raised.value.iq["error"]["condition"]


async def last_logout(client, to: str, timeout: float = 10):
    """The answer once the logout is recorded (it is written just after the
    session ends, so the first asks may find nothing yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await last_activity(client, to)
        except IqError as exc:
            if exc.iq["error"]["condition"] != "item-not-found" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def share_presence(owner, contact) -> None:
    """`contact` subscribes to `owner`'s presence and `owner` approves (slixmpp
    approves subscription requests by itself), so that the owner's roster has
    the contact with subscription 'from' or 'both' (RFC 6121 §3.1)."""
    contact.send_presence(pto=owner.boundjid.bare, ptype="subscribe")
    while True:
        presence = await asyncio.wait_for(contact.presences.get(), 10)
        if presence["from"].bare == owner.boundjid.bare and presence["type"] == "subscribed":
            return


def test_server_answers_with_its_uptime(xmpp_server):
    """A get to the server's domain is answered with the seconds the server has been
    up, which grow, and no character data (XEP-0012 §5)."""

    async def scenario():
        client = await connect(xmpp_server, "alice", "uptime")
        try:
            first = await last_activity(client, xmpp_server.domain)
            await asyncio.sleep(1.1)
            second = await last_activity(client, xmpp_server.domain)
            return first, second
        finally:
            await disconnect(client)

    first, second = asyncio.run(scenario())
    assert int(first.get("seconds")) >= 0
    assert int(second.get("seconds")) >= int(first.get("seconds")) + 1
    assert not first.text


def test_user_online_is_zero_seconds(xmpp_server, accounts):
    """While the user has an available resource the answer is seconds='0'
    (XEP-0012 §3); a user may always ask about itself."""

    async def scenario():
        client = await connect(xmpp_server, ONLINE, "here")
        try:
            return await last_activity(client, xmpp_server.jid(ONLINE))
        finally:
            await disconnect(client)

    query = asyncio.run(scenario())
    assert query.get("seconds") == "0"


def test_seconds_since_the_last_session_ended(xmpp_server, accounts):
    """After the account's last session ends, the answer is the seconds since then
    (XEP-0012 §3); a session without available presence does not count as online."""

    async def scenario():
        first = await connect(xmpp_server, RETURNING, "first")
        await disconnect(first)
        await asyncio.sleep(1.1)
        again = await connect(xmpp_server, RETURNING, "again", presence=False)
        try:
            return await last_logout(again, xmpp_server.jid(RETURNING))
        finally:
            await disconnect(again)

    query = asyncio.run(scenario())
    assert 1 <= int(query.get("seconds")) < 60


def test_user_who_never_logged_out_is_item_not_found(xmpp_server, accounts):
    """An account that has never ended a session has no last activity: <item-not-found/>."""

    async def scenario():
        client = await connect(xmpp_server, NEVER, "first-time", presence=False)
        try:
            return await last_activity_error(client, xmpp_server.jid(NEVER))
        finally:
            await disconnect(client)

    assert asyncio.run(scenario()) == "item-not-found"


def test_subscribed_contact_gets_seconds_since_logout(xmpp_server, accounts):
    """A contact to whom the user grants its presence (subscription 'from' or 'both'
    in the user's roster) gets the seconds since the user logged out (XEP-0012 §3)."""

    async def scenario():
        owner = await connect(xmpp_server, OWNER, "owner")
        contact = await connect(xmpp_server, CONTACT, "contact")
        try:
            await share_presence(owner, contact)
            online = await last_activity(contact, xmpp_server.jid(OWNER))
            await disconnect(owner)
            return online, await last_logout(contact, xmpp_server.jid(OWNER))
        finally:
            await disconnect(owner, contact)

    online, offline = asyncio.run(scenario())
    assert online.get("seconds") == "0"
    assert 0 <= int(offline.get("seconds")) < 60


def test_user_without_subscription_is_forbidden(xmpp_server, accounts):
    """Someone the user does not share its presence with gets <forbidden/>
    (XEP-0012 §3, §8)."""

    async def scenario():
        owner = await connect(xmpp_server, OWNER, "private")
        stranger = await connect(xmpp_server, STRANGER, "stranger")
        try:
            return await last_activity_error(stranger, xmpp_server.jid(OWNER))
        finally:
            await disconnect(owner, stranger)

    assert asyncio.run(scenario()) == "forbidden"


def test_no_such_account_is_service_unavailable(xmpp_server, accounts):
    """A get to an account that does not exist is <service-unavailable/> (RFC 6121 §8.5.1)."""

    async def scenario():
        client = await connect(xmpp_server, STRANGER, "nobody")
        try:
            return await last_activity_error(client, xmpp_server.jid("last-nobody"))
        finally:
            await disconnect(client)

    assert asyncio.run(scenario()) == "service-unavailable"


def test_answer_carries_the_last_unavailable_status(xmpp_server, accounts):
    """The answer's character data is the status of the unavailable presence the
    user sent when logging out (XEP-0012 §3)."""

    async def scenario():
        owner = await connect(xmpp_server, STATUS_OWNER, "leaving")
        contact = await connect(xmpp_server, STATUS_CONTACT, "asking")
        try:
            await share_presence(owner, contact)
            owner.send_presence(ptype="unavailable", pstatus="Heading Home")
            await disconnect(owner)
            return await last_logout(contact, xmpp_server.jid(STATUS_OWNER))
        finally:
            await disconnect(owner, contact)

    query = asyncio.run(scenario())
    assert query.text == "Heading Home"


# -- the logout records, as the logout writer stores a batch ---------------------


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_logouts_keeps_each_accounts_last_and_updates_older_records():
    """One record per account: the last of the batch wins, an earlier record is
    replaced, and an account that was removed meanwhile drops out (XEP-0012 §3)."""
    juliet = User.objects.create(username="store-juliet")
    romeo = User.objects.create(username="store-romeo")
    then = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
    LastActivity.objects.create(user=romeo, logout=then, status="old")
    first, last = then + datetime.timedelta(hours=1), then + datetime.timedelta(hours=2)

    _store_logouts(
        [
            ("store-juliet", first, "away"),
            ("store-romeo", first, "bye"),
            ("store-removed", first, "gone"),
            ("store-juliet", last, "asleep"),
        ]
    )

    stored = {a.user_id: (a.logout, a.status) for a in LastActivity.objects.all()}
    assert stored == {juliet.id: (last, "asleep"), romeo.id: (first, "bye")}
