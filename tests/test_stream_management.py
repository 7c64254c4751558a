"""Stream management (XEP-0198 v1.6): acknowledgements, resumption over TCP and
WebSocket and across them, what happens to what a session never acknowledged,
and what an acknowledgement promises across a kill -9."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
from slixmpp.exceptions import IqError

from .clients import connect, disconnect, raw_login
from .conftest import PASSWORD, private_server, start_server, stop_server
from .test_websocket import WsStream

NS_SM = "urn:xmpp:sm:3"
ENABLE_RESUME = f"<enable xmlns='{NS_SM}' resume='true'/>"


def enabled(stream, enable: str = ENABLE_RESUME) -> str:
    """Send <enable/>; return the resumption id of the <enabled/> answer."""
    stream.send(enable)
    answer = stream.read_until("<enabled[^>]*/>").decode()
    found = re.search(r"id='([^']+)'", answer)
    return found.group(1) if found else ""


def ack(stream) -> int:
    """<r/>; the h of the server's <a/>."""
    stream.send(f"<r xmlns='{NS_SM}'/>")
    answer = stream.read_until(r"<a xmlns='urn:xmpp:sm:3' h='\d+'/>").decode()
    return int(re.findall(r"<a xmlns='urn:xmpp:sm:3' h='(\d+)'/>", answer)[-1])


def bodies(data: bytes | str) -> list[str]:
    text = data.decode() if isinstance(data, bytes) else data
    return re.findall(r"<body>([^<]*)</body>", text)


def message_to(jid: str, body: str) -> str:
    return f"<message to='{jid}' type='chat'><body>{body}</body></message>"


def test_sm_is_a_stream_feature_after_sasl(xmpp_server):
    """§2: <sm xmlns='urn:xmpp:sm:3'/> is offered after authentication (so that
    <resume/> can come before bind), not before it."""
    stream = raw_login(xmpp_server, "alice", "features", bind=False)
    try:
        assert f'<sm xmlns="{NS_SM}"' in stream.features.decode()
    finally:
        stream.close()


def test_enable_before_bind_fails(xmpp_server):
    """§3: <enable/> before a resource is bound gets <failed><unexpected-request/>."""
    stream = raw_login(xmpp_server, "alice", "early", bind=False)
    try:
        stream.send(ENABLE_RESUME)
        failed = stream.read_until(b"</failed>").decode()
        assert "unexpected-request" in failed
    finally:
        stream.close()


def test_enable_counts_handled_stanzas_both_ways(xmpp_server):
    """§3, §4: <enabled/> with an id, resume and max; <r/> answers the count
    of stanzas handled since <enable/>, and a second <enable/> fails."""
    stream = raw_login(xmpp_server, "alice", "counting")
    try:
        stream.send(ENABLE_RESUME)
        answer = stream.read_until("<enabled[^>]*/>").decode()
        assert "<enabled" in answer and "resume='true'" in answer and "max='300'" in answer
        assert ack(stream) == 0
        stream.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        stream.send("<presence/>")
        stream.read_until(b'id="p1"')
        assert ack(stream) == 2
        stream.send(ENABLE_RESUME)
        assert "unexpected-request" in stream.read_until(b"</failed>").decode()
    finally:
        stream.close()


def test_enable_without_resume_has_no_id(xmpp_server):
    """§3: without resume='true' the server acknowledges but gives no id to resume."""
    stream = raw_login(xmpp_server, "bob", "no-resume")
    try:
        assert enabled(stream, f"<enable xmlns='{NS_SM}'/>") == ""
        assert ack(stream) == 0
    finally:
        stream.close()


def test_server_requests_acks_itself(xmpp_server):
    """§4: past XMPP_SM_ACK_EVERY unacknowledged stanzas the server sends <r/>."""
    stream = raw_login(xmpp_server, "carol", "asked")
    try:
        enabled(stream)
        for n in range(30):
            stream.send(message_to("carol@localhost/asked", f"self {n}"))
        received = stream.read_until(f"<r xmlns='{NS_SM}'/>").decode()
        assert len(bodies(received)) >= 25
    finally:
        stream.close()


def test_ack_of_more_than_was_sent_is_a_stream_error(xmpp_server):
    """§4: an h above the number of stanzas sent ends the stream with
    <undefined-condition/> and <handled-count-too-high/>."""
    stream = raw_login(xmpp_server, "alice", "too-high")
    try:
        enabled(stream)
        stream.send(f"<a xmlns='{NS_SM}' h='5'/>")
        error = stream.read_to_close().decode()
        assert "<undefined-condition" in error
        assert "handled-count-too-high" in error and "h='5'" in error and "send-count='0'" in error
    finally:
        stream.close()


def test_resume_resends_what_was_not_acknowledged(xmpp_server):
    """§5: a dropped stream's session waits; <resume/> on a new connection gets
    <resumed h=''/>, the same full JID, and exactly the stanzas the client had
    not acknowledged, including those routed to it while it was detached."""

    async def scenario():
        bob = await asyncio.to_thread(raw_login, xmpp_server, "bob", "phone")
        previd = await asyncio.to_thread(enabled, bob)
        alice = await connect(xmpp_server, "alice", "sender")
        try:
            for n in range(3):
                alice.send_message(mto="bob@localhost/phone", mbody=f"before {n}", mtype="chat")
            got = await asyncio.to_thread(bob.read_until, b"before 2</body>")
            assert bodies(got) == ["before 0", "before 1", "before 2"]
            bob.send(f"<a xmlns='{NS_SM}' h='1'/>")  # only the first one is kept
            bob.send("<message to='alice@localhost/sender'><body>from bob</body></message>")
            await asyncio.wait_for(alice.messages.get(), 10)
            bob.close()  # no </stream:stream>: the connection just goes
            await asyncio.sleep(0.5)
            alice.send_message(mto="bob@localhost/phone", mbody="while away", mtype="chat")
            await asyncio.sleep(0.3)

            again = await asyncio.to_thread(raw_login, xmpp_server, "bob", "x", bind=False)
            again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='1'/>")
            resumed = await asyncio.to_thread(again.read_until, b"while away</body>")
            text = resumed.decode()
            assert re.search(r"<resumed xmlns='urn:xmpp:sm:3' h='1' previd=", text)
            assert bodies(text) == ["before 1", "before 2", "while away"]
            assert 'to="bob@localhost/phone"' in text
            alice.send_message(mto="bob@localhost/phone", mbody="after", mtype="chat")
            assert bodies(await asyncio.to_thread(again.read_until, b"after</body>")) == ["after"]
            again.close()
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_resume_of_an_unknown_id_fails(xmpp_server):
    """§5: <failed><item-not-found/></failed> for an id the server never gave."""
    stream = raw_login(xmpp_server, "alice", "unknown", bind=False)
    try:
        stream.send(f"<resume xmlns='{NS_SM}' previd='no-such-id' h='0'/>")
        assert "item-not-found" in stream.read_until(b"</failed>").decode()
    finally:
        stream.close()


def test_resume_by_another_account_is_refused(xmpp_server):
    """§5 and §9: a session is resumed by its own account only; another gets
    item-not-found, and the session is still there for its owner."""
    bob = raw_login(xmpp_server, "bob", "mine")
    previd = enabled(bob)
    bob.close()
    time.sleep(0.3)
    intruder = raw_login(xmpp_server, "carol", "thief", bind=False)
    try:
        intruder.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        assert "item-not-found" in intruder.read_until(b"</failed>").decode()
    finally:
        intruder.close()
    owner = raw_login(xmpp_server, "bob", "x", bind=False)
    try:
        owner.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        assert "<resumed" in owner.read_until(b"<resumed").decode()
    finally:
        owner.send("</stream:stream>")
        owner.close()


def test_a_clean_close_ends_the_session(xmpp_server):
    """§5: a stream closed with </stream:stream> cannot be resumed."""
    bob = raw_login(xmpp_server, "bob", "clean")
    previd = enabled(bob)
    bob.send("</stream:stream>")
    bob.read_to_close()
    bob.close()
    again = raw_login(xmpp_server, "bob", "x", bind=False)
    try:
        again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        failed = again.read_until(b"</failed>").decode()
        assert "item-not-found" in failed
    finally:
        again.close()


def test_expired_session_keeps_nothing_but_loses_nothing(tmp_path_factory):
    """A detached session that is not resumed within its time ends: the
    messages it never acknowledged go to offline storage (the next login gets
    them), an IQ waiting for it gets an error; its id then gets
    <failed h=''><item-not-found/>."""
    with private_server(tmp_path_factory, "sm-expiry", XMPP_SM_RESUME_TIMEOUT="2") as server:

        async def scenario():
            bob = await asyncio.to_thread(raw_login, server, "bob", "phone")
            previd = await asyncio.to_thread(enabled, bob)
            bob.send("<presence/>")
            alice = await connect(server, "alice", "sender")
            try:
                for n in range(2):
                    alice.send_message(mto="bob@localhost", mbody=f"unacked {n}", mtype="chat")
                await asyncio.to_thread(bob.read_until, b"unacked 1</body>")
                bob.close()
                await asyncio.sleep(0.3)
                # An IQ kept for the detached session is answered with an
                # error when it expires (RFC 6121 §8.5.3.2.3).
                ping = alice.plugin["xep_0199"].send_ping("bob@localhost/phone", timeout=10)
                with pytest.raises(IqError) as refused:
                    await ping
                assert refused.value.iq["error"]["condition"] == "service-unavailable"
                await asyncio.sleep(0.5)
                stale = await asyncio.to_thread(raw_login, server, "bob", "x", bind=False)
                stale.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
                failed = (await asyncio.to_thread(stale.read_until, b"</failed>")).decode()
                assert "item-not-found" in failed and "h='1'" in failed
                stale.close()
                later = await connect(server, "bob", "laptop")
                got = [await asyncio.wait_for(later.messages.get(), 10) for _ in range(2)]
                assert [m["body"] for m in got] == ["unacked 0", "unacked 1"]
                await disconnect(later)
            finally:
                await disconnect(alice)

        asyncio.run(scenario())


def test_a_new_bind_replaces_a_detached_session_and_takes_its_messages(xmpp_server):
    """RFC 6120 §7.7.2.2 with §5: binding the resource of a detached session
    replaces it, and what it never acknowledged is delivered to the new one."""

    async def scenario():
        bob = await asyncio.to_thread(raw_login, xmpp_server, "bob", "tablet")
        await asyncio.to_thread(enabled, bob)
        alice = await connect(xmpp_server, "alice", "replacer")
        try:
            alice.send_message(mto="bob@localhost/tablet", mbody="keep me", mtype="chat")
            await asyncio.to_thread(bob.read_until, b"keep me</body>")
            bob.close()
            await asyncio.sleep(0.5)
            fresh = await asyncio.to_thread(raw_login, xmpp_server, "bob", "x", bind=False)
            fresh.send(
                "<iq type='set' id='rebind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>tablet</resource></bind></iq>"
            )
            got = (await asyncio.to_thread(fresh.read_until, b"keep me</body>")).decode()
            assert "<jid>bob@localhost/tablet</jid>" in got
            assert bodies(got) == ["keep me"]
            fresh.close()
        finally:
            await disconnect(alice)

    asyncio.run(scenario())


def test_resume_over_websocket_of_a_tcp_session(xmpp_server):
    """A session opened over TCP is resumed over WebSocket (RFC 7395): the
    unacknowledged stanzas come in WebSocket frames, each naming its namespace."""

    async def scenario():
        bob = await asyncio.to_thread(raw_login, xmpp_server, "bob", "roaming")
        previd = await asyncio.to_thread(enabled, bob)
        alice = await connect(xmpp_server, "alice", "ws-sender")
        ws = WsStream(xmpp_server)
        try:
            alice.send_message(mto="bob@localhost/roaming", mbody="over tcp", mtype="chat")
            await asyncio.to_thread(bob.read_until, b"over tcp</body>")
            bob.close()
            await asyncio.sleep(0.5)
            features = await asyncio.to_thread(ws.login, "bob", "x", bind=False)
            assert f'<sm xmlns="{NS_SM}"' in features
            ws.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
            frames = await asyncio.to_thread(ws.recv_until, "over tcp")
            assert "<resumed" in frames
            assert re.search(r'<message[^>]* xmlns="jabber:client"', frames)
            alice.send_message(mto="bob@localhost/roaming", mbody="over ws", mtype="chat")
            assert "over ws" in await asyncio.to_thread(ws.recv_until, "over ws")
        finally:
            ws.close()
            await disconnect(alice)

    asyncio.run(scenario())


def test_acknowledged_messages_survive_kill_9(tmp_path):
    """§4 'h': the server acknowledges a message only once it is delivered or
    committed. Messages to an offline user are acknowledged, the server is
    killed (SIGKILL) right after the <a/>, and after a restart every
    acknowledged message is in offline storage."""
    data_dir = tmp_path / "sm-kill"
    server = start_server(data_dir)
    server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
    count = 200
    try:
        alice = raw_login(server, "alice", "burst")
        enabled(alice)
        for n in range(count):
            alice.send(f"<message to='bob@localhost' type='chat'><body>kept {n}</body></message>")
        deadline = time.monotonic() + 20
        h = 0
        while h < count and time.monotonic() < deadline:
            h = ack(alice)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        assert h == count
    finally:
        stop_server(server, drop_database=False)
    again = start_server(data_dir, **{"DATABASE_URL": server.env.get("DATABASE_URL", "")})
    try:

        async def read_offline():
            bob = await connect(again, "bob", "after")
            got = []
            try:
                while len(got) < count:
                    got.append((await asyncio.wait_for(bob.messages.get(), 10))["body"])
            finally:
                await disconnect(bob)
            return got

        assert asyncio.run(read_offline()) == [f"kept {n}" for n in range(count)]
    finally:
        stop_server(again)


def test_slixmpp_receiver_cut_five_times_gets_everything_once_in_order(xmpp_server):
    """With slixmpp's own XEP-0198 (resumption on), a receiver whose TCP
    connection is cut five times (no close) while a sender streams 2,000
    messages resumes each time, and ends with every message exactly once, in
    order."""
    total = 2000

    async def scenario():
        from .clients import Client

        receiver = Client(xmpp_server.jid("carol", "train"))
        receiver.register_plugin("xep_0198")
        receiver.enable_direct_tls = False
        received: list[str] = []
        receiver.add_event_handler(
            "message", lambda m: received.append(m["body"]) if m["body"] else None
        )
        resumed = asyncio.Event()
        receiver.add_event_handler("session_resumed", lambda _: resumed.set())
        receiver.connect(xmpp_server.host, xmpp_server.c2s_port)
        await asyncio.wait_for(receiver.started.wait(), 10)
        sender = await connect(xmpp_server, "alice", "streamer")
        try:
            sent = 0
            for _cut in range(5):
                for _ in range(total // 5):
                    sender.send_message(mto=receiver.boundjid.full, mbody=f"m{sent}", mtype="chat")
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                resumed.clear()
                receiver.transport.abort()  # the network goes: no close, no ack
                await asyncio.sleep(0.2)
                receiver.connect(xmpp_server.host, xmpp_server.c2s_port)
                await asyncio.wait_for(resumed.wait(), 15)
            deadline = time.monotonic() + 30
            while len(received) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert received == [f"m{n}" for n in range(total)]
        finally:
            await disconnect(sender, receiver)

    asyncio.run(scenario())


class WsReceiver:
    """A raw RFC 7395 client with XEP-0198: counts the stanzas it receives,
    answers the server's <r/>, and resumes on a new WebSocket after a cut."""

    def __init__(self, server, user: str) -> None:
        self.server = server
        self.user = user
        self.bodies: list[str] = []
        self.stanzas = 0
        self.ws = WsStream(server)
        self.ws.login(user, "ws-train")
        self.ws.send(ENABLE_RESUME)
        self.previd = re.search(r"id='([^']+)'", self.ws.recv_until("<enabled")).group(1)

    def read_until(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < deadline:
            try:
                frame = self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            self._take(frame)

    def _take(self, frame: str) -> None:
        if frame.startswith(("<message", "<presence", "<iq")):
            self.stanzas += 1
            self.bodies.extend(bodies(frame))
        elif frame.startswith(f"<r xmlns='{NS_SM}'"):
            self.ws.send(f"<a xmlns='{NS_SM}' h='{self.stanzas}'/>")

    def cut_and_resume(self) -> None:
        self.ws.ws.socket.close()  # the network goes: no <close/>, no WebSocket close
        time.sleep(0.2)
        self.ws = WsStream(self.server)
        self.ws.login(self.user, "x", bind=False)
        self.ws.send(f"<resume xmlns='{NS_SM}' previd='{self.previd}' h='{self.stanzas}'/>")
        while True:
            frame = self.ws.recv(timeout=10)
            if "<resumed" in frame:
                return
            assert "<failed" not in frame, frame


def test_websocket_receiver_cut_five_times_gets_everything_once_in_order(xmpp_server):
    """The stress test over WebSocket: a receiver cut five times (the socket
    closed under it, no close frames) while 2,000 messages stream to it
    resumes each time and ends with every message exactly once, in order."""
    total = 2000

    async def scenario():
        receiver = await asyncio.to_thread(WsReceiver, xmpp_server, "carol")
        to = "carol@localhost/ws-train"
        sender = await connect(xmpp_server, "alice", "ws-streamer")
        try:
            sent = 0
            for cut in range(5):
                for _ in range(total // 5):
                    sender.send_message(mto=to, mbody=f"w{sent}", mtype="chat")
                    sent += 1
                await asyncio.to_thread(receiver.read_until, (cut * total) // 5 + 100, 10)
                await asyncio.to_thread(receiver.cut_and_resume)
            await asyncio.to_thread(receiver.read_until, total, 30)
            assert receiver.bodies == [f"w{n}" for n in range(total)]
        finally:
            await disconnect(sender)
            receiver.ws.close()

    asyncio.run(scenario())


def test_a_resumed_session_stays_in_its_rooms(xmpp_server):
    """§5: the session keeps its MUC occupancy while detached and after
    <resume/>: the room sees no leave and no join, and its messages reach
    the resumed stream."""
    room = "sm-train@conference.localhost"
    join = "<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    alice = raw_login(xmpp_server, "alice", "in-room")
    bob = raw_login(xmpp_server, "bob", "in-room")
    try:
        alice.send(join.format(room=room, nick="alice"))
        alice.read_until("status code=.110.")
        # XEP-0045 §10.1.2: an instant room, unlocked for others.
        alice.send(
            f"<iq type='set' id='unlock' to='{room}'><query "
            "xmlns='http://jabber.org/protocol/muc#owner'>"
            "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
        )
        alice.read_until("id=.unlock.")
        bob.send(ENABLE_RESUME)
        previd = re.search(r"id='([^']+)'", bob.read_until("<enabled[^>]*/>").decode()).group(1)
        bob.send(join.format(room=room, nick="bob"))
        bob.read_until("status code=.110.")
        alice.read_until(f'from="{room}/bob"')
        bob.close()
        time.sleep(0.5)
        resumed = raw_login(xmpp_server, "bob", "x", bind=False)
        resumed.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        resumed.read_until(b"<resumed")
        alice.send(f"<message to='{room}' type='groupchat'><body>still here?</body></message>")
        assert b"still here?" in resumed.read_until(b"still here?</body>")
        seen_by_alice = alice.read_until(b"still here?</body>").decode()
        assert f'from="{room}/bob" type="unavailable"' not in seen_by_alice
        assert f'from="{room}/bob"' not in seen_by_alice
        resumed.send("</stream:stream>")
        resumed.close()
    finally:
        alice.close()


def test_resume_over_direct_tls_of_a_starttls_session(xmpp_server):
    """A session opened over STARTTLS is resumed on the direct TLS port (XEP-0368)."""
    bob = raw_login(xmpp_server, "bob", "tls-roam")
    previd = enabled(bob)
    bob.close()
    time.sleep(0.3)
    again = raw_login(xmpp_server, "bob", "x", bind=False, direct_tls=True)
    try:
        again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        assert "<resumed" in again.read_until(b"<resumed").decode()
        again.send("<iq type='get' id='who' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert 'to="bob@localhost/tls-roam"' in again.read_until("id=.who.").decode()
    finally:
        again.send("</stream:stream>")
        again.close()


def test_a_full_detached_queue_sends_its_oldest_messages_to_offline_storage(tmp_path_factory):
    """XMPP_SM_MAX_QUEUE bounds what a detached session keeps: past it, its
    oldest unacknowledged messages go to offline storage (the account's next
    initial presence gets them); the rest are resent on resumption."""
    with private_server(tmp_path_factory, "sm-queue", XMPP_SM_MAX_QUEUE="3") as server:

        async def scenario():
            bob = await asyncio.to_thread(raw_login, server, "bob", "phone")
            previd = await asyncio.to_thread(enabled, bob)
            bob.close()
            await asyncio.sleep(0.5)
            alice = await connect(server, "alice", "sender")
            try:
                for n in range(5):
                    alice.send_message(mto="bob@localhost/phone", mbody=f"q{n}", mtype="chat")
                await asyncio.sleep(0.5)
                again = await asyncio.to_thread(raw_login, server, "bob", "x", bind=False)
                again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
                resent = await asyncio.to_thread(again.read_until, b"q4</body>")
                assert bodies(resent) == ["q2", "q3", "q4"]
                laptop = await connect(server, "bob", "laptop")
                got = [await asyncio.wait_for(laptop.messages.get(), 10) for _ in range(2)]
                assert [m["body"] for m in got] == ["q0", "q1"]
                again.close()
                await disconnect(laptop)
            finally:
                await disconnect(alice)

        asyncio.run(scenario())


def test_a_carbon_copy_counts_as_a_stanza(xmpp_server):
    """XEP-0280 with XEP-0198: a carbon copy is a stanza like any other: an
    <a/> that counts every stanza received, the copy included, is accepted,
    and one more is too high."""
    phone = raw_login(xmpp_server, "carol", "phone")
    try:
        enabled(phone)
        phone.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        seen = phone.read_until("id=.carbons.").decode()
        phone.send("<presence/>")
        seen += phone.read_until('from="carol@localhost/phone"').decode()

        async def scenario():
            alice = await connect(xmpp_server, "alice", "carbon-sender")
            try:
                alice.send_message(mto="carol@localhost", mbody="copied", mtype="chat")
                # carol/desk, of higher priority, gets it; the phone a copy.
                return await asyncio.to_thread(phone.read_until, b"copied</body>")
            finally:
                await disconnect(alice)

        desk = raw_login(xmpp_server, "carol", "desk")
        desk.send("<presence><priority>1</priority></presence>")
        seen += asyncio.run(scenario()).decode()
        assert '<received xmlns="urn:xmpp:carbons:2"' in seen
        counted = len(re.findall(r"<(?:message|presence|iq)[ >/]", seen)) - len(
            re.findall(r"<forwarded[^>]*><message", seen)
        )
        phone.send(f"<a xmlns='{NS_SM}' h='{counted}'/>")
        assert ack(phone) == 2  # accepted, the stream goes on: its IQ and presence
        phone.send(f"<a xmlns='{NS_SM}' h='{counted + 1}'/>")
        assert "handled-count-too-high" in phone.read_to_close().decode()
        desk.close()
    finally:
        phone.close()


def test_an_expired_session_does_not_store_its_carbon_copies(tmp_path_factory):
    """What an expired session never acknowledged goes to offline storage,
    but not the carbon copies (XEP-0280) among it: their originals reached
    another resource, and storing them would deliver a message twice."""
    with private_server(tmp_path_factory, "sm-carbons", XMPP_SM_RESUME_TIMEOUT="1") as server:

        async def scenario():
            phone = await asyncio.to_thread(raw_login, server, "bob", "phone")
            await asyncio.to_thread(enabled, phone)
            phone.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            await asyncio.to_thread(phone.read_until, "id=.carbons.")
            phone.send("<presence/>")
            desk = await connect(server, "bob", "desk")
            desk.send_presence(ppriority=1)
            alice = await connect(server, "alice", "sender")
            try:
                await asyncio.sleep(0.3)
                alice.send_message(mto="bob@localhost", mbody="to the desk", mtype="chat")
                assert (await asyncio.wait_for(desk.messages.get(), 10))["body"] == "to the desk"
                await asyncio.to_thread(phone.read_until, b"to the desk</body>")
                await disconnect(desk)
                phone.close()  # the carbon is never acknowledged
                await asyncio.sleep(2.0)  # the phone's session expires
                laptop = await asyncio.to_thread(raw_login, server, "bob", "laptop")
                try:
                    laptop.send("<presence/>")
                    laptop.send(
                        "<iq type='get' id='last' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                    )
                    # The initial presence's offline delivery comes before the ping's answer.
                    seen = (await asyncio.to_thread(laptop.read_until, "id=.last.")).decode()
                    assert "carbons" not in seen and "to the desk" not in seen, seen
                finally:
                    laptop.close()
            finally:
                await disconnect(alice)

        asyncio.run(scenario())


def test_a_resumed_stream_is_active_again(xmpp_server):
    """XEP-0352 §6 with XEP-0198: the CSI state is not restored by a
    resumption; the stream is active, so what was held for the inactive
    client (a chat state) comes right after <resumed/>."""
    bob = raw_login(xmpp_server, "bob", "asleep")
    previd = enabled(bob)
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    composing = (
        "<message to='bob@localhost/asleep' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )

    async def send_chat_state():
        alice = await connect(xmpp_server, "alice", "typing")
        try:
            alice.send_raw(composing)
            await alice.plugin["xep_0199"].send_ping(xmpp_server.domain, timeout=10)
        finally:
            await disconnect(alice)

    asyncio.run(send_chat_state())
    bob.close()
    time.sleep(0.3)
    again = raw_login(xmpp_server, "bob", "x", bind=False)
    try:
        again.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        got = again.read_until(b"composing", timeout=5).decode()
        assert got.index("<resumed") < got.index("composing")
    finally:
        again.send("</stream:stream>")
        again.close()
