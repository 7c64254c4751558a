"""Private XML storage (XEP-0049): a user stores XML under a namespace of its
own and gets it back; nobody else can, and reserved namespaces are refused."""

from __future__ import annotations

import asyncio

import pytest

from .clients import as_user, connect, disconnect, iq_error, send_iq
from .conftest import PASSWORD

NS_PRIVATE = "jabber:iq:private"
OWNER = "private-owner"
OTHER = "private-other"
PREFS = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    xmpp_server.manage(
        "register", "--from-file", "-", input=f"{OWNER} {PASSWORD}\n{OTHER} {PASSWORD}\n"
    )
    return OWNER, OTHER


def query(inner: str = "") -> str:
    return f"<query xmlns='{NS_PRIVATE}'>{inner}</query>"


def test_stored_xml_is_returned_by_a_get_of_its_namespace(xmpp_server, accounts):
    """A set stores the child under its namespace; a get naming that namespace
    returns it whole (XEP-0049 §2.3)."""

    async def scenario(client):
        assert await send_iq(client, "set", query(PREFS)) is None
        return await send_iq(client, "get", query("<exodus xmlns='exodus:prefs'/>"))

    result = as_user(xmpp_server, OWNER, "store", scenario)
    assert result.tag == f"{{{NS_PRIVATE}}}query"
    assert result.findtext("{exodus:prefs}exodus/{exodus:prefs}defaultnick") == "Hamlet"


def test_nothing_stored_gives_back_the_empty_element(xmpp_server, accounts):
    """A get of a namespace with nothing stored returns the empty element asked for."""

    async def scenario(client):
        return await send_iq(client, "get", query("<prefs xmlns='urn:example:never-stored'/>"))

    result = as_user(xmpp_server, OWNER, "empty", scenario)
    assert [child.tag for child in result] == ["{urn:example:never-stored}prefs"]
    assert len(result[0]) == 0


def test_a_set_replaces_what_its_namespace_held(xmpp_server, accounts):
    """A new set for a namespace replaces the earlier data of that namespace only."""

    async def scenario(client):
        await send_iq(client, "set", query("<a xmlns='urn:example:one'><v>1</v></a>"))
        await send_iq(client, "set", query("<b xmlns='urn:example:two'><v>2</v></b>"))
        await send_iq(client, "set", query("<a xmlns='urn:example:one'><v>3</v></a>"))
        one = await send_iq(client, "get", query("<a xmlns='urn:example:one'/>"))
        two = await send_iq(client, "get", query("<b xmlns='urn:example:two'/>"))
        return one, two

    one, two = as_user(xmpp_server, OWNER, "replace", scenario)
    assert one.findtext("{urn:example:one}a/{urn:example:one}v") == "3"
    assert two.findtext("{urn:example:two}b/{urn:example:two}v") == "2"


def test_each_user_has_its_own_storage(xmpp_server, accounts):
    """What one user stored is not what another user gets for the same namespace."""

    async def scenario():
        owner = await connect(xmpp_server, OWNER, "mine")
        other = await connect(xmpp_server, OTHER, "theirs")
        try:
            await send_iq(owner, "set", query("<s xmlns='urn:example:shared'>owner's</s>"))
            return await send_iq(other, "get", query("<s xmlns='urn:example:shared'/>"))
        finally:
            await disconnect(owner, other)

    result = asyncio.run(scenario())
    assert not result.findtext("{urn:example:shared}s")


@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_another_users_storage_is_forbidden(xmpp_server, accounts, iq_type):
    """A get or set addressed to another user's bare JID is <forbidden/> (XEP-0049 §3)."""

    async def scenario(client):
        return await iq_error(client, iq_type, query(PREFS), to=xmpp_server.jid(OWNER))

    assert as_user(xmpp_server, OTHER, f"snoop-{iq_type}", scenario) == "forbidden"


@pytest.mark.parametrize(
    "namespace", ["jabber:iq:roster", "http://jabber.org/protocol/disco#info", "vcard-temp"]
)
def test_reserved_namespaces_are_not_acceptable(xmpp_server, accounts, namespace):
    """Namespaces beginning with jabber: or http://jabber.org/, and vcard-temp, are
    reserved: storing them is <not-acceptable/> (XEP-0049 §2.3)."""

    async def scenario(client):
        return await iq_error(client, "set", query(f"<query xmlns='{namespace}'/>"))

    assert as_user(xmpp_server, OWNER, "reserved", scenario) == "not-acceptable"


def test_query_without_child_is_not_acceptable(xmpp_server, accounts):
    """A query that names no namespace is <not-acceptable/> (XEP-0049 §2.3)."""

    async def scenario(client):
        return await iq_error(client, "get", query())

    assert as_user(xmpp_server, OWNER, "no-child", scenario) == "not-acceptable"


def test_get_of_two_namespaces_is_bad_request(xmpp_server, accounts):
    """A get names one namespace only (XEP-0049 §2.3); two are <bad-request/>."""

    async def scenario(client):
        return await iq_error(
            client, "get", query("<a xmlns='urn:example:one'/><b xmlns='urn:example:two'/>")
        )

    assert as_user(xmpp_server, OWNER, "two", scenario) == "bad-request"
