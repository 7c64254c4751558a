"""The server's own IQ services, asked by a real client: ping (XEP-0199),
service discovery (XEP-0030), software version (XEP-0092), entity time
(XEP-0202), and disco#info and ping answered on behalf of an account
(RFC 6121 §8.5.2.1.3, XEP-0199 §4.2 and §4.4)."""

from __future__ import annotations

import asyncio
import datetime
import re
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from .clients import connect, disconnect

NS_TIME = "urn:xmpp:time"


def ask(xmpp_server, resource: str, request):
    """Log in as alice with `resource`, await `request(client)` and return its result."""

    async def scenario():
        client = await connect(xmpp_server, "alice", resource)
        try:
            return await request(client)
        finally:
            await disconnect(client)

    return asyncio.run(scenario())


def test_server_answers_ping(xmpp_server):
    """A ping to the server's domain gets an empty IQ result from the domain
    (XEP-0199 §4.2)."""
    result = ask(
        xmpp_server,
        "iq-ping",
        lambda client: client.plugin["xep_0199"].send_ping(xmpp_server.domain, timeout=10),
    )
    assert result["type"] == "result"
    assert result["from"].full == xmpp_server.domain
    assert len(result.xml) == 0


def test_server_disco_info_lists_identity_and_features(xmpp_server):
    """disco#info of the server gives the identity server/im and the features
    disco#info, disco#items, ping, version and time (XEP-0030 §3.1)."""
    result = ask(
        xmpp_server,
        "iq-disco-info",
        lambda client: client.plugin["xep_0030"].get_info(
            jid=xmpp_server.domain, local=False, timeout=10
        ),
    )
    info = result["disco_info"]
    assert ("server", "im") in {(category, kind) for category, kind, _, _ in info["identities"]}
    features = set(info["features"])
    for feature in (
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
    ):
        assert feature in features


def test_server_disco_items_answers(xmpp_server):
    """disco#items of the server is answered with a result (XEP-0030 §4.1), listing
    only JIDs of this server's services."""
    result = ask(
        xmpp_server,
        "iq-disco-items",
        lambda client: client.plugin["xep_0030"].get_items(
            jid=xmpp_server.domain, local=False, timeout=10
        ),
    )
    assert result["type"] == "result"
    assert result["from"].full == xmpp_server.domain
    for jid, _node, _name in result["disco_items"]["items"]:
        assert str(jid).endswith("." + xmpp_server.domain)  # a service of this domain


def test_server_software_version_is_imserver(xmpp_server):
    """The server's software version (XEP-0092) names it "imserver", with a version."""
    result = ask(
        xmpp_server,
        "iq-version",
        lambda client: client.plugin["xep_0092"].get_version(xmpp_server.domain, timeout=10),
    )
    assert result["from"].full == xmpp_server.domain
    assert result["software_version"]["name"] == "imserver"
    assert result["software_version"]["version"]


def test_server_entity_time_is_utc_now_with_offset(xmpp_server):
    """Entity time (XEP-0202 §4) gives the server's UTC time, close to now, in the
    XEP-0082 format, and its zone offset as ±hh:mm or Z."""
    result = ask(
        xmpp_server,
        "iq-time",
        lambda client: client.plugin["xep_0202"].get_entity_time(xmpp_server.domain, timeout=10),
    )
    time_el = result.xml.find(f"{{{NS_TIME}}}time")
    utc_text = time_el.findtext(f"{{{NS_TIME}}}utc")
    tzo_text = time_el.findtext(f"{{{NS_TIME}}}tzo")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", utc_text)
    assert re.fullmatch(r"[+-]\d\d:\d\d|Z", tzo_text)
    utc = datetime.datetime.fromisoformat(utc_text)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - utc).total_seconds()) < 30


def test_account_disco_info_is_answered_by_the_server(xmpp_server):
    """disco#info to a user's bare JID is answered by the server on the account's
    behalf, with the identity account/registered (RFC 6121 §8.5.2.1.3, XEP-0030),
    whether or not the user is online."""
    result = ask(
        xmpp_server,
        "iq-account-info",
        lambda client: client.plugin["xep_0030"].get_info(
            jid=xmpp_server.jid("bob"), local=False, timeout=10
        ),
    )
    assert result["from"].full == xmpp_server.jid("bob")
    identities = {(category, kind) for category, kind, _, _ in result["disco_info"]["identities"]}
    assert ("account", "registered") in identities


def test_disco_info_to_nonexistent_account_gets_service_unavailable(xmpp_server):
    """disco#info to the bare JID of an account that does not exist is answered
    with <service-unavailable/> (RFC 6121 §8.5.1)."""

    async def request(client):
        with pytest.raises(IqError) as raised:
            await client.plugin["xep_0030"].get_info(
                jid=xmpp_server.jid("nobody"), local=False, timeout=10
            )
        return raised.value.iq

    error = ask(xmpp_server, "iq-nobody-info", request)
    assert error["from"].full == xmpp_server.jid("nobody")
    assert error["error"]["condition"] == "service-unavailable"


NS_PING = "urn:xmpp:ping"
PING = f"<ping xmlns='{NS_PING}'/>"


async def iq_get(client, payload: str, to: str | None):
    """Send an IQ-get carrying `payload`, with no 'to' when `to` is None; return
    the answer, a result or an error <iq/>."""
    iq = client.make_iq(ito=to, itype="get")
    iq.append(ET.fromstring(payload))
    try:
        return await iq.send(timeout=10)
    except IqError as error:
        return error.iq


@pytest.mark.parametrize("addressed", ["no 'to'", "own bare JID"])
def test_ping_to_the_own_account_is_answered_by_the_server(xmpp_server, addressed):
    """A ping with no 'to', or to the sender's bare JID, is handled by the server
    on behalf of the account and answered with an empty result (XEP-0199 §4.2,
    RFC 6120 §10.3.3), from the account's bare JID or with no 'from'
    (RFC 6120 §8.1.2.1), not with <service-unavailable/>."""
    to = None if addressed == "no 'to'" else xmpp_server.jid("alice")
    answer = ask(xmpp_server, "iq-ping-self", lambda client: iq_get(client, PING, to))
    assert answer["type"] == "result"
    assert len(answer.xml) == 0
    assert answer.xml.get("from") in (None, xmpp_server.jid("alice"))


def test_ping_to_another_users_bare_jid_is_answered_on_their_behalf(xmpp_server):
    """A ping to another (offline) user's bare JID is answered by the server on
    that account's behalf (XEP-0199 §4.4, RFC 6121 §8.5.2.2.3), from the bare JID."""
    answer = ask(
        xmpp_server, "iq-ping-carol", lambda client: iq_get(client, PING, xmpp_server.jid("carol"))
    )
    assert answer["type"] == "result"
    assert answer["from"].full == xmpp_server.jid("carol")


def test_ping_to_another_online_users_bare_jid_is_answered_by_the_server(xmpp_server):
    """With bob online, a ping to bob's bare JID is still answered by the server
    (RFC 6121 §8.5.2.1.3: not delivered to a resource), so bob sees no ping."""

    async def scenario():
        alice = await connect(xmpp_server, "alice", "iq-ping-bob")
        bob = await connect(xmpp_server, "bob", "iq-pinged")
        pinged = asyncio.Event()
        bob.add_event_handler("xmpp_ping", lambda _: pinged.set())
        try:
            answer = await iq_get(alice, PING, xmpp_server.jid("bob"))
            await asyncio.sleep(0.3)
            return answer, pinged.is_set()
        finally:
            await disconnect(alice, bob)

    answer, bob_was_pinged = asyncio.run(scenario())
    assert answer["type"] == "result"
    assert answer["from"].full == xmpp_server.jid("bob")
    assert not bob_was_pinged


def test_ping_to_a_nonexistent_account_gets_service_unavailable(xmpp_server):
    """A ping to the bare JID of no account gets <service-unavailable/> (RFC 6121 §8.5.1)."""
    nobody = xmpp_server.jid("nobody")
    answer = ask(xmpp_server, "iq-ping-nobody", lambda client: iq_get(client, PING, nobody))
    assert answer["type"] == "error"
    assert answer["error"]["condition"] == "service-unavailable"


def test_account_disco_info_lists_ping(xmpp_server):
    """An account's disco#info lists urn:xmpp:ping, which the server answers for
    it (XEP-0199 §5), so a client that checks before pinging keeps pinging."""
    result = ask(
        xmpp_server,
        "iq-account-ping-feature",
        lambda client: client.plugin["xep_0030"].get_info(jid=None, local=False, timeout=10),
    )
    assert NS_PING in result["disco_info"]["features"]


@pytest.mark.parametrize(
    "payload", ["<query xmlns='jabber:iq:version'/>", f"<time xmlns='{NS_TIME}'/>"]
)
@pytest.mark.parametrize("addressed", ["no 'to'", "own bare JID"])
def test_version_and_time_of_an_account_get_service_unavailable(xmpp_server, payload, addressed):
    """Software version and entity time describe a client (a full JID), which the
    server cannot answer for on the account's behalf: <service-unavailable/>
    (RFC 6121 §8.5.2.1.3), as Prosody and ejabberd answer."""
    to = None if addressed == "no 'to'" else xmpp_server.jid("alice")
    answer = ask(xmpp_server, "iq-account-version", lambda client: iq_get(client, payload, to))
    assert answer["type"] == "error"
    assert answer["error"]["condition"] == "service-unavailable"
