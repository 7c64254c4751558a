"""XEP-0352 Client State Indication (xmpp/csi.py).

In process first (tests/inprocess.py: a stream on a fake transport, bytes
handed to the bound session's output path), for the classification, the
order of flushes, the bound and the session's end; then over real sockets
with slixmpp's xep_0352 plugin against the server fixture, for the feature,
what an inactive client gets at once and what waits, and the measurement of
bytes saved in a presence storm.
"""

from __future__ import annotations

import asyncio

import pytest

from xmpp import csi
from xmpp.protocol.jid import JID

from .clients import Client, RawStream, disconnect, raw_login
from .conftest import PASSWORD
from .inprocess import DOMAIN, bind, open_stream, run
from .roster_clients import RosterClient, barrier, drive_to_state, roster_get

CSI = "urn:xmpp:csi:0"
INACTIVE = f"<inactive xmlns='{CSI}'/>".encode()
ACTIVE = f"<active xmlns='{CSI}'/>".encode()
CHATSTATES = "http://jabber.org/protocol/chatstates"
ROOM = f"room@conference.{DOMAIN}"


def presence(sender: str, show: str = "away") -> bytes:
    return f'<presence from="{sender}"><show>{show}</show></presence>'.encode()


def chat_state(sender: str, state: str = "composing") -> bytes:
    return (
        f'<message from="{sender}" type="chat"><{state} xmlns="{CHATSTATES}"/></message>'.encode()
    )


def chat(sender: str, body: str) -> bytes:
    return f'<message from="{sender}" type="chat"><body>{body}</body></message>'.encode()


def inactive_session(server, registry, nick_lookup=None):
    csi.register(registry)
    if nick_lookup is not None:
        registry.room_nick(nick_lookup)
    stream, transport = open_stream(server, authenticated=True)
    session = bind(stream, transport)
    stream.data_received(INACTIVE)
    assert session.csi is not None
    return stream, transport, session


# -- in process: the rules ------------------------------------------------------


def test_csi_is_offered_after_authentication_only():
    """XEP-0352 §4: <csi/> is among the features after SASL, not before."""

    async def scenario(server, registry):
        csi.register(registry)
        before, _ = open_stream(server, authenticated=False)
        after, _ = open_stream(server, authenticated=True)
        assert f"{{{CSI}}}csi" not in [f.tag for f in before.features()]
        assert f"{{{CSI}}}csi" in [f.tag for f in after.features()]

    run(scenario)


def test_inactive_before_bind_is_an_unsupported_stanza_type():
    """The nonzas are registered after bind only: before binding, the
    registry's answer for a nonza of the wrong phase, <unsupported-stanza-type/>
    (RFC 6120 §4.9.3.24), and the stream ends."""

    async def scenario(server, registry):
        csi.register(registry)
        stream, transport = open_stream(server, authenticated=True)
        stream.data_received(INACTIVE)
        assert b"<unsupported-stanza-type" in transport.written
        assert transport.closed

    run(scenario)


def test_presence_and_chat_states_are_held_and_coalesced_in_order():
    """While inactive nothing of presence or chat states is written; on
    <active/> the latest of each sender comes, each where its latest was
    queued, so the order is a subsequence of what would have been sent."""

    async def scenario(server, registry):
        stream, transport, session = inactive_session(server, registry)
        bob, carol = f"bob@{DOMAIN}/r", f"carol@{DOMAIN}/r"
        for show in ("away", "xa", "dnd", "chat", "away"):
            session.send_serialized(presence(bob, show))
        session.send_serialized(chat_state(carol, "composing"))
        session.send_serialized(presence(carol, "dnd"))
        session.send_serialized(chat_state(carol, "paused"))
        session.send_serialized(presence(bob, "xa"))
        assert transport.written == b""
        assert len(session.csi) == 3
        stream.data_received(ACTIVE)
        assert bytes(transport.written) == (
            presence(carol, "dnd") + chat_state(carol, "paused") + presence(bob, "xa")
        )
        assert session.csi is None
        transport.written.clear()
        session.send_serialized(presence(bob, "away"))  # active again: at once
        assert bytes(transport.written) == presence(bob, "away")

    run(scenario)


def test_an_urgent_stanza_flushes_what_is_held_before_it():
    """A message with a body goes out at once, after the held presence
    (which it may depend on), and the session stays inactive."""

    async def scenario(server, registry):
        _, transport, session = inactive_session(server, registry)
        bob = f"bob@{DOMAIN}/r"
        session.send_serialized(presence(bob))
        session.send_serialized(chat_state(bob))
        session.send_serialized(chat(bob, "hi"))
        assert bytes(transport.written) == presence(bob) + chat_state(bob) + chat(bob, "hi")
        transport.written.clear()
        session.send_serialized(presence(bob, "xa"))
        assert transport.written == b""

    run(scenario)


@pytest.mark.parametrize(
    "data",
    [
        b'<iq type="result" id="1" from="stream.test"/>',
        b'<iq type="get" id="2" from="bob@stream.test/r"><ping xmlns="urn:xmpp:ping"/></iq>',
        b'<presence from="bob@stream.test" type="subscribe"/>',
        b'<presence from="bob@stream.test" type="subscribed"/>',
        b'<presence from="bob@stream.test" type="unsubscribed"/>',
        b'<presence from="bob@stream.test/r" type="error"><error type="cancel"/></presence>',
        b'<message from="bob@stream.test/r" type="headline"><body>news</body></message>',
        b'<message from="bob@stream.test/r" type="error"><composing xmlns="'
        + CHATSTATES.encode()
        + b'"/><error type="cancel"/></message>',
        # a receipt (XEP-0184) has no body and no chat state: not ours to hold
        b'<message from="bob@stream.test/r"><received xmlns="urn:xmpp:receipts" id="x"/></message>',
        # a chat state beside a payload the client may need (an encrypted one)
        b'<message from="bob@stream.test/r" type="chat"><active xmlns="'
        + CHATSTATES.encode()
        + b'"/><encrypted xmlns="eu.siacs.conversations.axolotl"/></message>',
        # the chatstates namespace only as text: no chat state at all
        b'<message from="bob@stream.test/r"><x xmlns="urn:example">'
        + CHATSTATES.encode()
        + b"</x></message>",
        # MUC self-presence (status 110): the answer to the client's own join
        b'<presence from="room@conference.stream.test/me"><x xmlns="'
        b'http://jabber.org/protocol/muc#user"><item affiliation="none" role="participant"/>'
        b'<status code="110"/></x></presence>',
    ],
    ids=[
        "iq-result",
        "iq-ping",
        "subscribe",
        "subscribed",
        "unsubscribed",
        "presence-error",
        "headline-with-body",
        "message-error",
        "receipt",
        "chat-state-with-encrypted",
        "namespace-in-text",
        "muc-self-presence",
    ],
)
def test_what_goes_out_at_once_while_inactive(data):
    """Everything but presence updates, chat-state-only messages and
    unmentioned groupchat is written at once while inactive."""

    async def scenario(server, registry):
        _, transport, session = inactive_session(server, registry)
        session.send_serialized(data)
        assert bytes(transport.written) == data

    run(scenario)


@pytest.mark.parametrize(
    "data",
    [
        b'<presence from="bob@stream.test/r" type="unavailable"/>',
        b'<presence from="bob@stream.test/r"/>',
        # escaped text that looks like a body is not a body
        b'<message from="bob@stream.test/r" type="chat"><paused xmlns="'
        + CHATSTATES.encode()
        + b'"/><thread>&lt;body&gt;</thread></message>',
        # a carbon (XEP-0280) of a chat state
        b'<message from="alice@stream.test" to="alice@stream.test/r" type="chat">'
        b'<received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
        b'<message xmlns="jabber:client" from="bob@stream.test/r" to="alice@stream.test/o"'
        b' type="chat"><composing xmlns="' + CHATSTATES.encode() + b'"/></message>'
        b"</forwarded></received></message>",
    ],
    ids=["unavailable", "available", "escaped-body-text", "carbon-of-chat-state"],
)
def test_what_is_held_while_inactive(data):
    """Presence updates (available, unavailable) and chat-state-only
    messages, however they look, are held."""

    async def scenario(server, registry):
        stream, transport, session = inactive_session(server, registry)
        session.send_serialized(data)
        assert transport.written == b""
        stream.data_received(ACTIVE)
        assert bytes(transport.written) == data

    run(scenario)


def test_groupchat_is_held_unless_it_mentions_the_nick_or_is_ones_own():
    """Groupchat with a body waits unless it mentions the session's nick in
    the room (case-insensitively) or is its own reflected message; then it
    goes out after the held ones. Held groupchat is never coalesced."""

    def nick_lookup(session_jid: JID, room: JID):
        return "Alice" if str(room) == ROOM else None

    def groupchat(nick: str, body: str) -> bytes:
        return (
            f'<message from="{ROOM}/{nick}" type="groupchat"><body>{body}</body></message>'
        ).encode()

    async def scenario(server, registry):
        _, transport, session = inactive_session(server, registry, nick_lookup)
        first, second = groupchat("bob", "one"), groupchat("bob", "two")
        session.send_serialized(first)
        session.send_serialized(second)
        assert transport.written == b""
        mention = groupchat("bob", "hey alice, look")
        session.send_serialized(mention)
        assert bytes(transport.written) == first + second + mention
        transport.written.clear()
        own = groupchat("Alice", "my own words")
        session.send_serialized(own)
        assert bytes(transport.written) == own
        transport.written.clear()
        # a room whose nick is unknown: at once (no mention test possible)
        other = (
            b'<message from="x@conference.stream.test/bob" type="groupchat">'
            b"<body>b</body></message>"
        )
        session.send_serialized(other)
        assert bytes(transport.written) == other

    run(scenario)


def test_the_held_queue_is_bounded(settings):
    """Past XMPP_CSI_MAX_HELD stanzas everything held is sent, in order."""
    settings.XMPP_CSI_MAX_HELD = 3

    async def scenario(server, registry):
        _, transport, session = inactive_session(server, registry)
        senders = [f"u{i}@{DOMAIN}/r" for i in range(4)]
        for sender in senders[:3]:
            session.send_serialized(presence(sender))
        assert transport.written == b""
        session.send_serialized(presence(senders[3]))
        assert bytes(transport.written) == b"".join(presence(s) for s in senders)
        assert len(session.csi) == 0

    run(scenario)


def test_held_stanzas_are_dropped_when_the_session_ends():
    """A session that ends with presence held: nothing more is written and
    the queue is gone, without an error."""

    async def scenario(server, registry):
        stream, transport, session = inactive_session(server, registry)
        session.send_serialized(presence(f"bob@{DOMAIN}/r"))
        gate = session.csi
        stream.connection_lost()
        assert session.jid is None and session.csi is None
        assert len(gate) == 0
        assert transport.written == b""

    run(scenario)


# -- over real sockets -----------------------------------------------------------


class CsiClient(RosterClient):
    """A roster client with XEP-0352 that counts the bytes it reads."""

    def __init__(self, jid: str) -> None:
        super().__init__(jid)
        self.register_plugin("xep_0352")
        self.register_plugin("xep_0085")
        self.bytes_received = 0
        self.log: list[tuple[str, str, str]] = []  # (kind, from, detail) in arrival order
        self.add_event_handler("presence_available", self._log_presence)
        self.add_event_handler("presence_unavailable", self._log_presence)
        self.add_event_handler("message", self._log_message)
        self.add_event_handler("chatstate", self._log_chat_state)

    def data_received(self, data) -> None:
        self.bytes_received += len(data)
        super().data_received(data)

    def _log_presence(self, stanza) -> None:
        self.log.append(("presence", stanza["from"].full, stanza["status"]))

    def _log_message(self, stanza) -> None:
        if stanza["body"]:
            self.log.append(("message", stanza["from"].full, stanza["body"]))

    def _log_chat_state(self, stanza) -> None:
        if not stanza["body"]:
            self.log.append(("chatstate", stanza["from"].full, stanza["chat_state"]))

    def entries(self, kind: str, sender: str | None = None) -> list[tuple[str, str, str]]:
        return [e for e in self.log if e[0] == kind and (sender is None or e[1] == sender)]


async def csi_login(server, user: str, resource: str = "csi") -> CsiClient:
    client = CsiClient(server.jid(user, resource))
    client.enable_direct_tls = False
    client.connect(server.host, server.c2s_port)
    await asyncio.wait_for(client.started.wait(), 10)
    result = await roster_get(client)
    client.event("roster_update", result)
    client.send_presence()
    await barrier(client)
    return client


async def settle(client: CsiClient, seconds: float = 0.3) -> None:
    """Let what the server wrote reach the client (after a barrier)."""
    await barrier(client)
    await asyncio.sleep(seconds)


@pytest.fixture(scope="module")
def csi_accounts(xmpp_server):
    names = ["csi-watcher", "csi-bob", "csi-storm-a", "csi-storm-i"]
    names += [f"csi-contact{i}" for i in range(10)]
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return names


def test_slixmpp_sees_the_feature_and_can_go_inactive(xmpp_server, csi_accounts):
    """slixmpp's xep_0352 enables itself only if <csi/> is advertised; its
    <inactive/> and <active/> keep the stream up (no error, pings answered)."""

    async def scenario():
        client = await csi_login(xmpp_server, "csi-watcher", "feature")
        try:
            assert client.plugin["xep_0352"].enabled
            client.plugin["xep_0352"].send_inactive()
            await barrier(client)
            client.plugin["xep_0352"].send_active()
            await barrier(client)
            assert not client.disconnected_event.is_set()
        finally:
            await disconnect(client)

    asyncio.run(scenario())


def test_raw_inactive_before_bind_ends_the_stream(xmpp_server, csi_accounts):
    """<inactive/> on an authenticated stream before binding is refused as
    any nonza of the wrong phase: <unsupported-stanza-type/>."""
    import base64

    stream = RawStream(xmpp_server)
    try:
        features = stream.starttls()
        assert b"urn:xmpp:csi:0" not in features  # not before authentication
        token = base64.b64encode(f"\0csi-watcher\0{PASSWORD}".encode()).decode()
        stream.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        stream.read_until("<success")
        features = stream.open()
        assert b"urn:xmpp:csi:0" in features
        stream.send(INACTIVE)
        assert b"unsupported-stanza-type" in stream.read_to_close()
    finally:
        stream.close()


def test_inactive_client_gets_messages_and_pings_at_once_presence_later(xmpp_server, csi_accounts):
    """While inactive: bob's presence changes and chat states wait, coalesced
    to the latest; bob's message with a body arrives at once, after the held
    presence and chat state it may depend on; an IQ ping from bob arrives at
    once (answered), after what was held; after <active/> the rest comes,
    latest only. (The watcher sends nothing meanwhile: its own IQs would be
    answered at once, and flush the queue before their answer.)"""

    async def scenario():
        watcher = await csi_login(xmpp_server, "csi-watcher")
        bob = await csi_login(xmpp_server, "csi-bob")
        try:
            await drive_to_state(watcher, bob, "Both")
            await settle(watcher)
            watcher.plugin["xep_0352"].send_inactive()
            await barrier(watcher)
            bob_jid = bob.boundjid.full
            mark = len(watcher.log)

            for i in range(5):
                bob.send_presence(pstatus=f"status {i}")
            msg = bob.make_message(mto=watcher.boundjid.full, mtype="chat")
            msg["chat_state"] = "composing"
            msg.send()
            await settle(bob)
            assert watcher.log[mark:] == [], "presence and chat states are held"

            bob.send_message(mto=watcher.boundjid.full, mtype="chat", mbody="hello")
            await settle(bob)
            assert watcher.log[mark:] == [
                ("presence", bob_jid, "status 4"),
                ("chatstate", bob_jid, "composing"),
                ("message", bob_jid, "hello"),
            ]

            bob.send_presence(pstatus="status 5")
            bob.send_presence(pstatus="status 6")
            await settle(bob)
            assert len(watcher.log) == mark + 3
            started = asyncio.get_running_loop().time()
            await bob.plugin["xep_0199"].ping(watcher.boundjid.full, timeout=5)
            assert asyncio.get_running_loop().time() - started < 2
            await asyncio.sleep(0.3)
            assert watcher.log[mark + 3 :] == [("presence", bob_jid, "status 6")]

            bob.send_presence(pstatus="later 1")
            bob.send_presence(pstatus="later 2")
            await settle(bob)
            assert len(watcher.log) == mark + 4
            watcher.plugin["xep_0352"].send_active()
            await settle(watcher)
            assert watcher.log[mark + 4 :] == [("presence", bob_jid, "later 2")]
        finally:
            await disconnect(watcher, bob)

    asyncio.run(scenario())


def test_a_presence_storm_costs_an_inactive_client_ten_times_fewer_bytes(xmpp_server, csi_accounts):
    """10 contacts change presence 20 times each (200 broadcasts). An
    inactive watcher is sent, in all, the latest presence of each contact
    (when it becomes active again): at least 10 times fewer bytes than an
    active watcher of the same storm, which is sent all 200."""

    async def scenario():
        active = await csi_login(xmpp_server, "csi-storm-a")
        inactive = await csi_login(xmpp_server, "csi-storm-i")
        contacts = [await csi_login(xmpp_server, f"csi-contact{i}") for i in range(10)]
        try:
            for contact in contacts:
                await drive_to_state(active, contact, "To")
                await drive_to_state(inactive, contact, "To")
            await settle(active)
            await settle(inactive)
            inactive.plugin["xep_0352"].send_inactive()
            await barrier(inactive)
            await asyncio.sleep(0.3)

            start_active, start_inactive = active.bytes_received, inactive.bytes_received
            mark_active, mark_inactive = len(active.log), len(inactive.log)
            for round_ in range(20):
                for contact in contacts:
                    contact.send_presence(pstatus=f"round {round_} of a long presence storm")
            for contact in contacts:
                await barrier(contact)
            await settle(active, 0.5)
            await asyncio.sleep(0.3)  # no barrier: the watcher's own IQ would flush
            during_inactive = inactive.bytes_received - start_inactive
            inactive.plugin["xep_0352"].send_active()
            await settle(inactive, 0.5)

            active_bytes = active.bytes_received - start_active
            inactive_bytes = inactive.bytes_received - start_inactive
            inactive_presences = inactive.log[mark_inactive:]
            print(
                f"\npresence storm: active {active_bytes} B ({len(active.log) - mark_active}"
                f" presences), inactive {inactive_bytes} B ({len(inactive_presences)}"
                f" presences; {during_inactive} B while inactive), ratio"
                f" {active_bytes / max(inactive_bytes, 1):.1f}x"
            )
            assert len(active.log) - mark_active == 200
            # The inactive watcher got each contact's latest only, none while inactive.
            assert during_inactive == 0
            assert [e[2] for e in inactive_presences] == ["round 19 of a long presence storm"] * 10
            assert sorted(e[1] for e in inactive_presences) == sorted(
                c.boundjid.full for c in contacts
            )
            assert inactive_bytes * 10 <= active_bytes
        finally:
            await disconnect(active, inactive, *contacts)

    asyncio.run(scenario())


def test_raw_client_gets_a_body_message_at_once_while_inactive(xmpp_server, csi_accounts):
    """Over a raw socket (no client library): after <inactive/>, a message
    with a body from another user is read at once."""

    async def scenario():
        bob = Client(xmpp_server.jid("csi-bob", "raw-sender"))
        bob.enable_direct_tls = False
        bob.connect(xmpp_server.host, xmpp_server.c2s_port)
        await asyncio.wait_for(bob.started.wait(), 10)
        return bob

    raw = raw_login(xmpp_server, "csi-watcher", "raw")
    try:
        raw.send("<presence/>")
        raw.send(INACTIVE)
        raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        raw.read_until(b"p1")

        async def send_and_wait():
            bob = await scenario()
            bob.send_message(mto=xmpp_server.jid("csi-watcher", "raw"), mbody="wake up")
            await bob.plugin["xep_0199"].ping(xmpp_server.domain, timeout=5)
            data = await asyncio.to_thread(raw.read_until, b"wake up", 5)
            bob.disconnect()
            await asyncio.sleep(0.2)
            return data

        assert b"wake up" in asyncio.run(send_and_wait())
    finally:
        raw.close()


def test_groupchat_waits_until_it_mentions_the_nick(xmpp_server, csi_accounts):
    """In a room (muc/ tells CSI the nick): groupchat that does not mention
    the inactive occupant's nick waits; a message that mentions it arrives at
    once, after the ones that waited, in the room's order."""
    from .muc_clients import connect_muc

    async def scenario():
        watcher = await connect_muc(xmpp_server, "csi-watcher", "muc")
        bob = await connect_muc(xmpp_server, "csi-bob", "muc")
        try:
            await watcher.create_instant("csi-room", "Watcher")
            await bob.enter("csi-room", "Bob")
            await watcher.presence_of("csi-room", "Bob")
            watcher.send_xml(INACTIVE.decode())
            await asyncio.sleep(0.3)
            watcher.clear()

            def groupchat_bodies():
                return [
                    s.findtext("{jabber:client}body")
                    for s in watcher.inbox
                    if s.tag == "{jabber:client}message" and s.get("type") == "groupchat"
                ]

            bob.say("csi-room", "one")
            bob.say("csi-room", "two")
            await bob.heard("csi-room", "two")
            await asyncio.sleep(0.3)
            assert groupchat_bodies() == []
            bob.say("csi-room", "what do you think, watcher?")
            for _ in range(50):
                if len(groupchat_bodies()) == 3:
                    break
                await asyncio.sleep(0.1)
            assert groupchat_bodies() == ["one", "two", "what do you think, watcher?"]
        finally:
            await disconnect(watcher, bob)

    asyncio.run(scenario())
