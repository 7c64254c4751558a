"""In-band registration (XEP-0077): creating an account before logging in when
the operator enables it, and, for any logged-in user, changing its password
and removing its account."""

from __future__ import annotations

import asyncio
import re
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from .clients import Client, RawStream, connect, disconnect, raw_login, send_iq
from .conftest import PASSWORD, start_server, stop_server
from .test_c2s_login import stream_features

NS_REGISTER = "jabber:iq:register"
NS_FEATURE = "http://jabber.org/features/iq-register"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A server of its own (SQLite) with XMPP_REGISTRATION_ENABLED=true."""
    server = start_server(
        tmp_path_factory.mktemp("registration-server"),
        XMPP_REGISTRATION_ENABLED="true",
        DATABASE_URL="",
        REDIS_URL="",
    )
    server.manage("register", "taken", PASSWORD)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (
        "reg-change",
        "reg-meddler",
        "reg-other",
        "reg-empty",
        "reg-remove",
        "reg-remove-raw",
        "reg-get",
    )
    xmpp_server.manage(
        "register", "--from-file", "-", input="".join(f"{n} {PASSWORD}\n" for n in names)
    )
    return names


def pre_auth_iq(server, iq: str) -> ET.Element:
    """Send `iq` on a fresh stream after STARTTLS, before authenticating; return the answer."""
    stream = RawStream(server)
    try:
        stream.starttls()
        stream.send(iq)
        data = stream.read_until("</iq>|<iq[^>]*/>")
    finally:
        stream.close()
    match = re.search(rb"<iq.*(</iq>|/>)", data, re.S)
    # Inside the stream the IQ inherits jabber:client; give the fragment its own.
    return ET.fromstring(match.group(0).replace(b"<iq", b"<iq xmlns='jabber:client'", 1))


def register_iq(username: str | None, password: str | None) -> str:
    fields = ""
    if username is not None:
        fields += f"<username>{username}</username>"
    if password is not None:
        fields += f"<password>{password}</password>"
    return f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'>{fields}</query></iq>"


def error_condition(iq: ET.Element) -> str | None:
    error = iq.find("{jabber:client}error")
    if error is None:
        return None
    return next(
        child.tag.split("}")[1] for child in error if child.tag.startswith(f"{{{STANZA_ERRORS}}}")
    )


async def login_fails(server, user: str, password: str) -> bool:
    """True if logging in as `user` with `password` is refused by SASL."""
    client = Client(server.jid(user, "refused"), password, "SCRAM-SHA-256")
    client.enable_direct_tls = False
    try:
        client.connect(server.host, server.c2s_port)
        done = asyncio.ensure_future(client.auth_failed.wait())
        started = asyncio.ensure_future(client.started.wait())
        await asyncio.wait({done, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        started.cancel()
        return client.auth_failed.is_set() and not client.started.is_set()
    finally:
        await disconnect(client)


# -- registration off (the default) ----------------------------------------------


def test_registration_is_not_offered_by_default(xmpp_server):
    """Without XMPP_REGISTRATION_ENABLED the stream features after STARTTLS do not
    offer <register xmlns='http://jabber.org/features/iq-register'/> (XEP-0077 §8)."""
    stream = RawStream(xmpp_server)
    try:
        features = stream_features(stream.starttls())
    finally:
        stream.close()
    assert features.find(f"{{{NS_FEATURE}}}register") is None


def test_registration_off_answers_service_unavailable(xmpp_server):
    """Without XMPP_REGISTRATION_ENABLED a registration attempt before authentication
    is <service-unavailable/> and no account is made."""
    answer = pre_auth_iq(xmpp_server, register_iq("reg-uninvited", PASSWORD))
    assert answer.get("type") == "error"
    assert error_condition(answer) == "service-unavailable"
    assert asyncio.run(login_fails(xmpp_server, "reg-uninvited", PASSWORD))


# -- registration on ----------------------------------------------------------


def test_enabled_registration_is_a_stream_feature(open_server):
    """With XMPP_REGISTRATION_ENABLED=true the features after STARTTLS offer
    <register xmlns='http://jabber.org/features/iq-register'/> (XEP-0077 §8)."""
    stream = RawStream(open_server)
    try:
        features = stream_features(stream.starttls())
    finally:
        stream.close()
    assert features.find(f"{{{NS_FEATURE}}}register") is not None


def test_get_returns_the_fields_to_fill_in(open_server):
    """A get before authentication returns the fields username and password
    (XEP-0077 §3.1)."""
    answer = pre_auth_iq(
        open_server, f"<iq type='get' id='fields'><query xmlns='{NS_REGISTER}'/></iq>"
    )
    assert answer.get("type") == "result"
    query = answer.find(f"{{{NS_REGISTER}}}query")
    assert query.find(f"{{{NS_REGISTER}}}username") is not None
    assert query.find(f"{{{NS_REGISTER}}}password") is not None
    assert query.find(f"{{{NS_REGISTER}}}registered") is None


def test_registered_account_can_log_in(open_server):
    """A set with username and password creates the account (an empty result), and
    the new account logs in with that password (XEP-0077 §3.1)."""
    answer = pre_auth_iq(open_server, register_iq("newcomer", "a new password"))
    assert answer.get("type") == "result", ET.tostring(answer)

    async def scenario():
        client = await connect(open_server, "newcomer", "first", password="a new password")
        await disconnect(client)
        return client.boundjid.bare

    assert asyncio.run(scenario()) == open_server.jid("newcomer")


def test_taken_username_is_a_conflict(open_server):
    """Registering a name that already has an account is <conflict/> (XEP-0077 §3.1)."""
    answer = pre_auth_iq(open_server, register_iq("taken", "another password"))
    assert error_condition(answer) == "conflict"


def test_missing_password_is_not_acceptable(open_server):
    """A set without a password, or with an empty one, is <not-acceptable/>
    (XEP-0077 §3.1)."""
    assert error_condition(pre_auth_iq(open_server, register_iq("nopass", None))) == (
        "not-acceptable"
    )
    assert error_condition(pre_auth_iq(open_server, register_iq("nopass", ""))) == (
        "not-acceptable"
    )


def test_invalid_username_is_not_acceptable(open_server):
    """A name that is not a valid JID localpart (RFC 7622 §3.3) is <not-acceptable/>."""
    answer = pre_auth_iq(open_server, register_iq("no spaces allowed", PASSWORD))
    assert error_condition(answer) == "not-acceptable"


def test_error_does_not_echo_the_password(open_server):
    """An error answer never carries the password back (XEP-0077 §3.3)."""
    answer = pre_auth_iq(open_server, register_iq("taken", "secret-do-not-echo"))
    assert answer.get("type") == "error"
    assert b"secret-do-not-echo" not in ET.tostring(answer)


# -- logged in: any server ------------------------------------------------------


def test_server_disco_lists_jabber_iq_register(xmpp_server):
    """disco#info of the server lists jabber:iq:register (XEP-0077 §9)."""

    async def scenario():
        client = await connect(xmpp_server, "alice", "register-disco")
        try:
            return await client.plugin["xep_0030"].get_info(
                jid=xmpp_server.domain, local=False, timeout=10
            )
        finally:
            await disconnect(client)

    assert NS_REGISTER in asyncio.run(scenario())["disco_info"]["features"]


def test_logged_in_get_says_registered(xmpp_server, accounts):
    """A logged-in user's get is answered with <registered/> and its username
    (XEP-0077 §3.1)."""

    async def scenario():
        client = await connect(xmpp_server, "reg-get", "get")
        try:
            return await send_iq(
                client, "get", f"<query xmlns='{NS_REGISTER}'/>", to=xmpp_server.domain
            )
        finally:
            await disconnect(client)

    query = asyncio.run(scenario())
    assert query.find(f"{{{NS_REGISTER}}}registered") is not None
    assert query.findtext(f"{{{NS_REGISTER}}}username") == "reg-get"


def test_password_change_then_login_with_the_new_one(xmpp_server, accounts):
    """A set with the user's own username and a new password changes the password:
    the new one logs in, the old one no longer does (XEP-0077 §3.3)."""

    async def scenario():
        client = await connect(xmpp_server, "reg-change", "change")
        client.register_plugin("xep_0077")
        try:
            result = await client.plugin["xep_0077"].change_password(
                "a brand new password", jid=xmpp_server.domain, timeout=10
            )
            assert result["type"] == "result"
        finally:
            await disconnect(client)
        again = await connect(xmpp_server, "reg-change", "again", password="a brand new password")
        await disconnect(again)
        return await login_fails(xmpp_server, "reg-change", PASSWORD)

    assert asyncio.run(scenario())


def test_password_change_for_another_user_is_forbidden(xmpp_server, accounts):
    """A password change naming another user is <forbidden/>; that user's password
    stays (XEP-0077 §3.3)."""

    async def scenario():
        client = await connect(xmpp_server, "reg-meddler", "meddler")
        try:
            with pytest.raises(IqError) as raised:
                await send_iq(
                    client,
                    "set",
                    f"<query xmlns='{NS_REGISTER}'><username>reg-other</username>"
                    "<password>hijacked</password></query>",
                    to=xmpp_server.domain,
                )
        finally:
            await disconnect(client)
        other = await connect(xmpp_server, "reg-other", "still-mine")
        await disconnect(other)
        return raised.value.iq["error"]["condition"]

    assert asyncio.run(scenario()) == "forbidden"


def test_empty_password_keeps_the_old_one(xmpp_server, accounts):
    """A password change with an empty <password/> is refused with <bad-request/>
    and the old password still logs in (XEP-0077 §3.3)."""

    async def scenario():
        client = await connect(xmpp_server, "reg-empty", "empty")
        try:
            with pytest.raises(IqError) as raised:
                await send_iq(
                    client,
                    "set",
                    f"<query xmlns='{NS_REGISTER}'><username>reg-empty</username>"
                    "<password/></query>",
                    to=xmpp_server.domain,
                )
        finally:
            await disconnect(client)
        again = await connect(xmpp_server, "reg-empty", "again")
        await disconnect(again)
        return raised.value.iq["error"]["condition"]

    assert asyncio.run(scenario()) == "bad-request"


def test_account_removal_ends_the_session_and_login_fails(xmpp_server, accounts):
    """<remove/> deletes the account: the IQ is answered, the session is closed,
    and the account can no longer log in (XEP-0077 §3.2)."""

    async def scenario():
        client = await connect(xmpp_server, "reg-remove", "leaving")
        client.register_plugin("xep_0077")
        result = await client.plugin["xep_0077"].cancel_registration(
            jid=xmpp_server.domain, timeout=10
        )
        assert result["type"] == "result"
        await asyncio.wait_for(client.disconnected_event.wait(), 10)
        return await login_fails(xmpp_server, "reg-remove", PASSWORD)

    assert asyncio.run(scenario())


def test_account_removal_answers_before_the_not_authorized_stream_error(xmpp_server, accounts):
    """A <remove/> without 'to' (as XEP-0077 §3.2 sends it) gets its IQ result first,
    then the stream ends with a <not-authorized/> stream error."""
    stream = raw_login(xmpp_server, "reg-remove-raw", "raw")
    try:
        stream.send(
            f"<iq type='set' id='unreg1'><query xmlns='{NS_REGISTER}'><remove/></query></iq>"
        )
        data = stream.read_to_close()
    finally:
        stream.close()
    result = re.search(rb"<iq[^>]*id=.unreg1.[^>]*>", data)
    assert result is not None and b"result" in result.group(0), data
    error = data.find(b"<not-authorized")
    assert error > result.start(), data
    assert data.rstrip().endswith(b"</stream:stream>")
