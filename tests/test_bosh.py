"""BOSH (XEP-0124, XEP-0206) at /http-bind/, with raw HTTP requests (httpx)
against the server started by the fixture."""

from __future__ import annotations

import asyncio
import re
import secrets
import xml.etree.ElementTree as ET

import httpx
import pytest
from slixmpp.exceptions import IqError

from .clients import connect, disconnect
from .conftest import PASSWORD, start_server, stop_server
from .scram_client import ScramSha256Client

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class Bosh:
    """One BOSH session spoken by hand: every request a <body/>, rid by rid."""

    def __init__(self, server, wait: int = 10, hold: int = 1) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{server.http_port}/http-bind/"
        self.http = httpx.AsyncClient(timeout=30)
        self.rid = secrets.randbelow(2**40) + 1
        self.sid: str | None = None
        self.wait = wait
        self.hold = hold

    def body(self, payload: str = "", **attrs: str) -> str:
        self.rid += 1
        attrs = {"rid": str(self.rid), **({"sid": self.sid} if self.sid else {}), **attrs}
        text = "".join(f" {k.replace('__', ':')}='{v}'" for k, v in attrs.items())
        return f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'{text}>{payload}</body>"

    async def post(self, data: str) -> httpx.Response:
        return await self.http.post(
            self.url, content=data, headers={"Content-Type": "text/xml; charset=utf-8"}
        )

    async def send(self, payload: str = "", **attrs: str) -> str:
        response = await self.post(self.body(payload, **attrs))
        assert response.status_code == 200, response.text
        return response.text

    async def create(self) -> ET.Element:
        text = await self.send(
            to=self.server.domain,
            wait=str(self.wait),
            hold=str(self.hold),
            ver="1.11",
            xmpp__version="1.0",
        )
        body = ET.fromstring(text)
        self.sid = body.get("sid")
        return body

    async def send_until(self, payload: str, pattern: str) -> str:
        """Send `payload`, then poll until `pattern` shows up in a response."""
        text = await self.send(payload)
        while not re.search(pattern, text):
            text += await self.send()
        return text

    async def login(self, user: str, resource: str, password: str = PASSWORD) -> str:
        """SASL SCRAM-SHA-256 by hand, the restart of XEP-0206 §5, then bind."""
        features = ET.tostring(await self.create()).decode()
        assert "SCRAM-SHA-256" in features
        scram = ScramSha256Client(user, password)
        challenge = await self.send_until(
            f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{scram.first_message()}</auth>",
            "</challenge>",
        )
        server_first = re.search(r">([^<]+)</challenge>", challenge).group(1)
        result = await self.send_until(
            f"<response xmlns='{NS_SASL}'>{scram.final_message(server_first)}</response>",
            "<success|<failure",
        )
        assert "<success" in result
        restarted = await self.send_until_restart()
        assert "urn:ietf:params:xml:ns:xmpp-bind" in restarted
        bound = await self.send_until(
            "<iq xmlns='jabber:client' type='set' id='bind'>"
            "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>",
            "</iq>",
        )
        return re.search(r"<jid>([^<]+)</jid>", bound).group(1)

    async def send_until_restart(self) -> str:
        text = await self.send(to=self.server.domain, xmpp__restart="true")
        while "<stream:features" not in text:
            text += await self.send()
        return text

    async def close(self) -> None:
        await self.http.aclose()


def run(coro):
    return asyncio.run(coro)


def test_session_creation_returns_sid_and_features(xmpp_server):
    """XEP-0124 §7 and XEP-0206 §5: the creation response carries the session's
    parameters, xmpp:restartlogic, and the stream features (no STARTTLS)."""

    async def scenario():
        bosh = Bosh(xmpp_server, wait=30, hold=1)
        try:
            body = await bosh.create()
            assert body.tag == f"{{{NS_HTTPBIND}}}body"
            assert body.get("sid")
            assert body.get("wait") == "30" and body.get("hold") == "1"
            assert body.get("requests") == "2"
            for name in ("inactivity", "polling", "maxpause"):
                assert int(body.get(name)) > 0
            assert body.get(f"{{{NS_XBOSH}}}version") == "1.0"
            assert body.get(f"{{{NS_XBOSH}}}restartlogic") == "true"
            assert body.get("from") == "localhost"
            features = body.find("{http://etherx.jabber.org/streams}features")
            mechanisms = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
            assert "SCRAM-SHA-256" in mechanisms and "PLAIN" not in mechanisms
            assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
            # §14.3: a repeated rid gets the response it had.
            again = await bosh.post(
                f"<body xmlns='{NS_HTTPBIND}' rid='{bosh.rid}' sid='{bosh.sid}'/>"
            )
            assert ET.fromstring(again.text).get("sid") == bosh.sid
        finally:
            await bosh.close()

    run(scenario())


def test_get_and_cors(xmpp_server):
    async def scenario():
        async with httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{xmpp_server.http_port}/http-bind/"
            assert "BOSH" in (await http.get(url)).text
            preflight = await http.options(
                url,
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert preflight.status_code < 300
            assert preflight.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    run(scenario())


def test_bosh_client_chats_with_a_tcp_client(xmpp_server):
    """A BOSH client logs in by hand and exchanges messages with a slixmpp TCP
    client both ways, its output arriving in held (long-polling) requests."""

    async def scenario():
        bosh = Bosh(xmpp_server, wait=10, hold=1)
        bob = None
        try:
            jid = await bosh.login("alice", "bosh")
            assert jid == "alice@localhost/bosh"
            bob = await connect(xmpp_server, "bob", "bosh-peer")
            poll = asyncio.create_task(bosh.send())  # held until there is output
            await asyncio.sleep(0.3)
            assert not poll.done()
            bob.send_message(mto=jid, mbody="to the browser", mtype="chat")
            text = await asyncio.wait_for(poll, 10)
            assert "to the browser" in text
            assert re.search(r"<message[^>]* xmlns=\"jabber:client\"", text)
            assert 'from="bob@localhost/bosh-peer"' in text

            # The request that carries alice's message is held in turn, and
            # answered with bob's reply.
            sending = asyncio.create_task(
                bosh.send(
                    "<message xmlns='jabber:client' type='chat' to='bob@localhost/bosh-peer'>"
                    "<body>from the browser</body></message>"
                )
            )
            message = await asyncio.wait_for(bob.messages.get(), 10)
            assert message["body"] == "from the browser"
            assert message["from"].full == jid
            bob.send_message(mto=jid, mbody="and back", mtype="chat")
            assert "and back" in await asyncio.wait_for(sending, 10)
        finally:
            if bob is not None:
                await disconnect(bob)
            await bosh.close()

    run(scenario())


def test_rid_outside_the_window_ends_only_that_session(xmpp_server):
    """XEP-0124 §14.3: a rid outside the window terminates the session with
    item-not-found; other sessions go on."""

    async def scenario():
        broken, other = Bosh(xmpp_server), Bosh(xmpp_server)
        try:
            await broken.create()
            await other.create()
            broken.rid += 10
            body = ET.fromstring(await broken.send())
            assert body.get("type") == "terminate"
            assert body.get("condition") == "item-not-found"
            broken.rid -= 11  # the right rid now: the session is gone all the same
            body = ET.fromstring(await broken.send())
            assert body.get("condition") == "item-not-found"
            other.sid = None  # log the other one in from a fresh session
            assert await other.login("carol", "bosh-other") == "carol@localhost/bosh-other"
        finally:
            await broken.close()
            await other.close()

    run(scenario())


def test_requests_are_processed_in_rid_order(xmpp_server):
    """XEP-0124 §14.2: a request that overtook the one before it (within the
    window) waits for it; the one beyond `hold` is answered at once (§11)."""

    async def scenario():
        bosh = Bosh(xmpp_server, wait=1, hold=1)
        try:
            await bosh.create()
            first, second = bosh.body(), bosh.body()
            later = asyncio.create_task(bosh.post(second))
            await asyncio.sleep(0.3)
            assert not later.done()
            earlier = await bosh.post(first)
            for response in (earlier, await later):
                assert response.status_code == 200
                assert ET.fromstring(response.text).get("type") is None
            assert ET.fromstring(await bosh.send()).get("type") is None
        finally:
            await bosh.close()

    run(scenario())


def test_unknown_sid_is_item_not_found(xmpp_server):
    async def scenario():
        bosh = Bosh(xmpp_server)
        bosh.sid = "no-such-session"
        try:
            body = ET.fromstring(await bosh.send())
            assert body.get("type") == "terminate"
            assert body.get("condition") == "item-not-found"
        finally:
            await bosh.close()

    run(scenario())


@pytest.mark.parametrize(
    "data",
    [
        f"<body xmlns='{NS_HTTPBIND}' rid='1' to='localhost'><unclosed></body>",
        "<message xmlns='jabber:client'/>",
        f"<body xmlns='{NS_HTTPBIND}' to='localhost'/>",  # no rid
        "plain text",
    ],
    ids=["malformed", "not-a-body", "no-rid", "not-xml"],
)
def test_bad_request_is_400(xmpp_server, data):
    async def scenario():
        bosh = Bosh(xmpp_server)
        try:
            response = await bosh.post(data)
            assert response.status_code == 400
            body = ET.fromstring(response.text)
            assert body.get("type") == "terminate"
            assert body.get("condition") == "bad-request"
        finally:
            await bosh.close()

    run(scenario())


def test_pause_longer_than_maxpause_is_a_policy_violation(xmpp_server):
    async def scenario():
        bosh = Bosh(xmpp_server)
        try:
            maxpause = int((await bosh.create()).get("maxpause"))
            body = ET.fromstring(await bosh.send(pause="1"))
            assert body.get("type") is None  # accepted, answered at once
            body = ET.fromstring(await bosh.send(pause=str(maxpause + 1)))
            assert body.get("condition") == "policy-violation"
        finally:
            await bosh.close()

    run(scenario())


async def _assert_resource_gone(peer, jid: str) -> None:
    """RFC 6121 §8.5.3.2.1: an IQ to a full JID with no such resource is
    answered with <service-unavailable/>."""
    with pytest.raises(IqError) as error:
        await peer.plugin["xep_0199"].send_ping(jid, timeout=5)
    assert error.value.iq["error"]["condition"] == "service-unavailable"


def test_terminate_ends_the_session(xmpp_server):
    """XEP-0124 §13: type='terminate' ends the stream; the resource is gone and
    the sid is no longer known."""

    async def scenario():
        bosh = Bosh(xmpp_server)
        bob = None
        try:
            jid = await bosh.login("alice", "bosh-leaving")
            bob = await connect(xmpp_server, "bob", "bosh-witness")
            body = ET.fromstring(
                await bosh.send(
                    "<presence xmlns='jabber:client' type='unavailable'/>", type="terminate"
                )
            )
            assert body.get("type") == "terminate"
            assert body.get("condition") is None
            await _assert_resource_gone(bob, jid)
            body = ET.fromstring(await bosh.send())
            assert body.get("condition") == "item-not-found"
        finally:
            if bob is not None:
                await disconnect(bob)
            await bosh.close()

    run(scenario())


def test_inactivity_ends_the_session(tmp_path):
    """XEP-0124 §7: a session with no request for `inactivity` seconds ends as a
    dropped TCP connection would."""
    server = start_server(tmp_path / "bosh-inactivity", XMPP_BOSH_INACTIVITY="2")
    try:
        # Names of its own: on PostgreSQL this server shares the test database.
        for user in ("bosh-idle", "bosh-witness"):
            server.manage("register", user, PASSWORD)

        async def scenario():
            bosh = Bosh(server, wait=1)
            bob = None
            try:
                body = await bosh.create()
                assert body.get("inactivity") == "2"
                bosh.sid = None
                jid = await bosh.login("bosh-idle", "idle")
                bob = await connect(server, "bosh-witness", "witness")
                for _ in range(8):  # output alone does not keep the session alive
                    bob.send_message(mto=jid, mbody="anyone there?", mtype="chat")
                    await asyncio.sleep(0.5)
                await _assert_resource_gone(bob, jid)
                body = ET.fromstring(await bosh.send())
                assert body.get("condition") == "item-not-found"
            finally:
                if bob is not None:
                    await disconnect(bob)
                await bosh.close()

        run(scenario())
    finally:
        stop_server(server)
