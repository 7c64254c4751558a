"""XEP-0215 external service discovery, asked by slixmpp: the server lists its
own STUN and TURN services (on the port runxmpp opened), hands out
time-limited TURN credentials, and those credentials work for a TURN
round trip through runxmpp's own listener."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from slixmpp.exceptions import IqError

from .clients import connect, disconnect, send_iq
from .conftest import PASSWORD, start_server, stop_server
from .test_turn import turn_round_trip

NS = "urn:xmpp:extdisco:2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """runxmpp with STUN/TURN on a free port, loopback peers allowed (the test's
    peer is a loopback socket), and the account alice."""
    running = start_server(
        tmp_path_factory.mktemp("extdisco"),
        XMPP_TURN_ALLOW_PRIVATE_PEERS="true",
        XMPP_STUN_HOST="127.0.0.1",
    )
    running.manage("register", "alice", PASSWORD)
    yield running
    stop_server(running)


def as_alice(server, scenario):
    async def run():
        client = await connect(server, "alice", "extdisco")
        try:
            return await scenario(client)
        finally:
            await disconnect(client)

    return asyncio.run(run())


def services_of(payload) -> list[dict[str, str]]:
    return [dict(service.attrib) for service in payload.findall(f"{{{NS}}}service")]


def test_disco_info_advertises_external_service_discovery(server):
    """XEP-0215 §5: the server's disco#info lists urn:xmpp:extdisco:2."""

    async def scenario(client):
        info = await client.plugin["xep_0030"].get_info(jid=server.domain, local=False, timeout=10)
        return set(info["disco_info"]["features"])

    assert NS in as_alice(server, scenario)


def test_services_lists_stun_and_turn_with_credentials(server):
    """XEP-0215 §3.1: STUN over UDP and TCP on the STUN port, TURN restricted
    with a REST-API username `<expiry>:alice@localhost`, a password and an
    `expires` about XMPP_TURN_CREDENTIAL_TTL (a day) ahead."""
    port = server.env["XMPP_STUN_PORT"]

    async def scenario(client):
        return await send_iq(client, "get", f"<services xmlns='{NS}'/>", to=server.domain)

    services = services_of(as_alice(server, scenario))
    kinds = {(s["type"], s["transport"], s["host"], s["port"]) for s in services}
    assert ("stun", "udp", "127.0.0.1", port) in kinds
    assert ("stun", "tcp", "127.0.0.1", port) in kinds
    assert ("turn", "udp", "127.0.0.1", port) in kinds
    turn = next(s for s in services if s["type"] == "turn" and s["transport"] == "udp")
    assert turn["restricted"] == "1"
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice@localhost"
    expires = datetime.datetime.strptime(turn["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC
    )
    assert int(expires.timestamp()) == int(expiry)
    ahead = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23) < ahead <= datetime.timedelta(days=1)
    stun = next(s for s in services if s["type"] == "stun")
    assert "username" not in stun and "password" not in stun


def test_services_of_one_type(server):
    """XEP-0215 §3.2: with type='stun' only STUN services come back."""

    async def scenario(client):
        return await send_iq(
            client, "get", f"<services xmlns='{NS}' type='stun'/>", to=server.domain
        )

    payload = as_alice(server, scenario)
    assert payload.get("type") == "stun"
    assert {s["type"] for s in services_of(payload)} == {"stun"}


def test_credentials_request(server):
    """XEP-0215 §3.3: credentials for one TURN service by host and type; an
    unknown service gets <item-not-found/>."""
    host, port = "127.0.0.1", server.env["XMPP_STUN_PORT"]

    async def scenario(client):
        good = await send_iq(
            client,
            "get",
            f"<credentials xmlns='{NS}'><service host='{host}' type='turn'/></credentials>",
            to=server.domain,
        )
        try:
            await send_iq(
                client,
                "get",
                f"<credentials xmlns='{NS}'><service host='elsewhere.example' type='turn'/>"
                "</credentials>",
                to=server.domain,
            )
        except IqError as error:
            return good, error.iq["error"]["condition"]
        return good, None

    good, condition = as_alice(server, scenario)
    (service,) = services_of(good)
    assert (service["type"], service["port"]) == ("turn", port)
    assert service["username"].endswith(":alice@localhost") and service["password"]
    assert condition == "item-not-found"


def test_discovered_turn_credentials_relay_through_runxmpp(server):
    """A slixmpp client discovers TURN through XEP-0215; with those credentials
    a TURN client allocates on runxmpp's listener, permits a loopback peer,
    sends it a Send indication and gets its answer back as a Data indication."""

    async def scenario(client):
        return await send_iq(
            client, "get", f"<services xmlns='{NS}' type='turn'/>", to=server.domain
        )

    services = services_of(as_alice(server, scenario))
    turn = next(s for s in services if s["transport"] == "udp")
    relayed = turn_round_trip((turn["host"], int(turn["port"])), turn["username"], turn["password"])
    assert relayed[0] == "127.0.0.1"
