"""Logging in over the wire (RFC 6120 §5 STARTTLS, §6 SASL, §7 resource binding;
XEP-0368 direct TLS), driven by slixmpp and, for the stream features, by a raw
socket."""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree

import pytest

from .clients import Client, RawStream, connect, disconnect

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def stream_features(data: bytes) -> ElementTree.Element:
    """The <stream:features/> element in what the server sent after a stream header."""
    start = data.index(b"<stream:features")
    end = data.index(b"</stream:features>") + len(b"</stream:features>")
    # The stream header declares the `stream` prefix; give the fragment its own.
    fragment = data[start:end].replace(
        b"<stream:features", f"<stream:features xmlns:stream='{NS_STREAMS}'".encode(), 1
    )
    return ElementTree.fromstring(fragment)


async def next_presence_from(client: Client, jid: str, timeout: float = 10):
    """The next presence `client` received from `jid`, skipping the others."""

    async def find():
        while True:
            presence = await client.presences.get()
            if presence["from"].full == jid:
                return presence

    return await asyncio.wait_for(find(), timeout)


def offered_mechanisms(features: ElementTree.Element) -> list[str]:
    return [m.text for m in features.iterfind(f"{{{NS_SASL}}}mechanisms/{{{NS_SASL}}}mechanism")]


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_login_with_each_mechanism(xmpp_server, mechanism, direct_tls):
    """A client logs in with SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, over STARTTLS on
    the c2s port and over direct TLS on the TLS port (XEP-0368), and gets a
    working session: the mechanism it asked for is the one used, and the
    server answers a ping."""

    async def scenario():
        resource = f"login-{mechanism.lower()}-{'direct' if direct_tls else 'starttls'}"
        client = await connect(
            xmpp_server, "alice", resource, mechanism=mechanism, direct_tls=direct_tls
        )
        try:
            assert client.plugin["feature_mechanisms"].mech.name == mechanism
            assert client.boundjid.full == xmpp_server.jid("alice", resource)
            result = await client.plugin["xep_0199"].send_ping(xmpp_server.domain, timeout=5)
            assert result["type"] == "result"
        finally:
            await disconnect(client)

    asyncio.run(scenario())


def test_wrong_password_fails_and_other_sessions_stay(xmpp_server):
    """A wrong password is refused with a SASL failure (RFC 6120 §6.4.5) and no
    session starts; another client of the same account stays logged in."""

    async def scenario():
        witness = await connect(xmpp_server, "alice", "wrong-password-witness")
        intruder = Client(
            xmpp_server.jid("alice", "wrong-password"), "not the password", "SCRAM-SHA-256"
        )
        intruder.enable_direct_tls = False
        try:
            intruder.connect(xmpp_server.host, xmpp_server.c2s_port)
            await asyncio.wait_for(intruder.auth_failed.wait(), 10)
            assert not intruder.started.is_set()
            await asyncio.wait_for(intruder.disconnected_event.wait(), 10)
            assert not intruder.started.is_set()
            assert not witness.disconnected_event.is_set()
            result = await witness.plugin["xep_0199"].send_ping(xmpp_server.domain, timeout=5)
            assert result["type"] == "result"
        finally:
            await disconnect(intruder, witness)

    asyncio.run(scenario())


def test_client_chosen_resource_is_bound_as_asked(xmpp_server):
    """A resource the client asks for is the one bound (RFC 6120 §7.7)."""

    async def scenario():
        client = await connect(xmpp_server, "alice", "Chosen Résource")
        try:
            assert client.boundjid.full == xmpp_server.jid("alice", "Chosen Résource")
        finally:
            await disconnect(client)

    asyncio.run(scenario())


def test_server_generates_a_resource_when_none_is_asked(xmpp_server):
    """A client that asks for no resource gets one made by the server
    (RFC 6120 §7.6), different for each session."""

    async def scenario():
        clients = []
        try:
            for _ in range(2):
                client = Client(xmpp_server.jid("alice"))
                client.enable_direct_tls = False
                client.connect(xmpp_server.host, xmpp_server.c2s_port)
                clients.append(client)
                await asyncio.wait_for(client.started.wait(), 10)
            first, second = (c.boundjid for c in clients)
            assert first.bare == second.bare == xmpp_server.jid("alice")
            assert first.resource and second.resource
            assert first.resource != second.resource
        finally:
            await disconnect(*clients)

    asyncio.run(scenario())


def test_resource_conflict_new_session_wins(xmpp_server):
    """When a second session binds the same full JID, the server's policy is the
    one of RFC 6120 §7.7.2.2 "override": the first session ends with a
    <conflict/> stream error and the new one receives the messages sent to it."""

    async def scenario():
        resource = "conflict"
        first = await connect(xmpp_server, "bob", resource)
        errors: list = []
        first.add_event_handler("stream_error", errors.append)
        second = await connect(xmpp_server, "bob", resource)
        alice = await connect(xmpp_server, "alice", "conflict-sender")
        try:
            await asyncio.wait_for(first.disconnected_event.wait(), 10)
            assert [e["condition"] for e in errors] == ["conflict"]
            assert second.boundjid.full == xmpp_server.jid("bob", resource)
            alice.send_message(mto=xmpp_server.jid("bob", resource), mbody="to the winner")
            message = await asyncio.wait_for(second.messages.get(), 10)
            assert message["body"] == "to the winner"
            assert not second.disconnected_event.is_set()
        finally:
            await disconnect(alice, second, first)

    asyncio.run(scenario())


def test_features_before_tls_offer_only_required_starttls(xmpp_server):
    """On the plain port the first stream features are <starttls><required/></starttls>
    and nothing else: no SASL before TLS (RFC 6120 §5.3.1, §13.8)."""
    stream = RawStream(xmpp_server)
    try:
        features = stream_features(stream.open())
    finally:
        stream.close()
    assert [child.tag for child in features] == [f"{{{NS_TLS}}}starttls"]
    assert [child.tag for child in features[0]] == [f"{{{NS_TLS}}}required"]


def test_features_after_starttls_offer_scram_and_plain(xmpp_server):
    """After STARTTLS the stream features offer SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN
    (RFC 6120 §6.3.3) and no second STARTTLS."""
    stream = RawStream(xmpp_server)
    try:
        features = stream_features(stream.starttls())
    finally:
        stream.close()
    assert features.find(f"{{{NS_TLS}}}starttls") is None
    mechanisms = offered_mechanisms(features)
    for name in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        assert name in mechanisms


def test_features_over_direct_tls_offer_scram_and_plain(xmpp_server):
    """On the direct TLS port (XEP-0368) the first stream features already offer
    SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN, and no STARTTLS."""
    stream = RawStream(xmpp_server, direct_tls=True)
    try:
        features = stream_features(stream.open())
    finally:
        stream.close()
    assert features.find(f"{{{NS_TLS}}}starttls") is None
    mechanisms = offered_mechanisms(features)
    for name in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        assert name in mechanisms


def test_resource_conflict_ends_the_old_session_like_any_other(xmpp_server):
    """The session a conflict replaces ends as any session does: the user's other
    resources receive unavailable presence from it (RFC 6121 §4.5.2) before the
    new session's own presence."""

    async def scenario():
        resource = "conflict-presence"
        replaced_jid = xmpp_server.jid("carol", resource)
        watcher = await connect(xmpp_server, "carol", "conflict-watcher")
        first = await connect(xmpp_server, "carol", resource)
        second = None
        try:
            presence = await next_presence_from(watcher, replaced_jid)
            assert presence["type"] == "available"
            second = await connect(xmpp_server, "carol", resource, presence=False)
            await asyncio.wait_for(first.disconnected_event.wait(), 10)
            second.send_presence(pstatus="the new session")
            presence = await next_presence_from(watcher, replaced_jid)
            assert presence["type"] == "unavailable"
            presence = await next_presence_from(watcher, replaced_jid)
            assert (presence["type"], presence["status"]) == ("available", "the new session")
        finally:
            await disconnect(watcher, first, *([second] if second else []))

    asyncio.run(scenario())


def test_session_establishment_after_bind_is_a_no_op_result(xmpp_server):
    """RFC 6121 Appendix E: the legacy session IQ is answered with an empty result
    after binding too, where Strophe-based clients (Converse.js) send it."""
    from .clients import raw_login

    stream = raw_login(xmpp_server, "carol", "legacy-session")
    try:
        stream.send(
            "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        )
        answer = stream.read_until('id="sess"[^>]*>')
        assert b'type="result"' in answer and b'id="sess"' in answer
    finally:
        stream.close()
