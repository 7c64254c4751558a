"""Rate limits shape, they do not drop (RFC 6120 §13.12 item 5, xmpp/shaping.py).

A client over XMPP_STANZAS_PER_SECOND or XMPP_C2S_BYTES_PER_SECOND is read
more slowly: its stream stays up, everything it sent arrives in order, at
about the configured rate, and other clients chat at normal speed meanwhile.
Over TCP, WebSocket and BOSH; and a rate changed at run time applies to the
streams already open.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
import pytest

from xmpp.shaping import StreamShaper, TokenBucket

from .clients import RawStream, connect, disconnect, raw_login
from .conftest import PASSWORD, start_server, stop_server
from .test_bosh import Bosh
from .test_websocket import WsStream

BODY = re.compile(rb"<body>(\d+)(?: [^<]*)?</body>")


# -- the arithmetic, without I/O ------------------------------------------------


class Limits:
    stanzas_per_second = 10
    stanzas_burst = 20
    bytes_per_second = 1000
    bytes_burst = 2000


def test_a_full_bucket_lets_a_burst_through_then_the_rate():
    shaper = StreamShaper(Limits, now=0.0)
    assert sum(shaper.admit_stanza(Limits, 0.0) for _ in range(30)) == 20
    assert shaper.pause(Limits, 0.0, stanza_waiting=True) > 0
    # One second refills ten stanzas.
    assert sum(shaper.admit_stanza(Limits, 1.0) for _ in range(30)) == 10


def test_a_read_may_go_into_debt_and_the_pause_pays_it_back():
    bucket = TokenBucket(2000, now=0.0)
    bucket.take(5000, 1000, 2000, 0.0)  # one read brought more than the burst
    wait = bucket.wait(1000, 2000, 0.0)
    assert 3.0 <= wait <= 3.0 + 0.05 * 2  # 3,000 bytes of debt at 1,000 a second
    assert bucket.wait(1000, 2000, wait) == 0.0


def test_a_rate_of_zero_is_no_limit():
    bucket = TokenBucket(0, now=0.0)
    bucket.take(10**9, 0, 0, 0.0)
    assert bucket.wait(0, 0, 0.0) == 0.0


# -- over real streams ---------------------------------------------------------


class Receiver(threading.Thread):
    """Reads a logged-in RawStream in a thread: the numbers of the message
    bodies in arrival order, with the time each arrived."""

    def __init__(self, stream: RawStream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.numbers: list[int] = []
        self.times: list[float] = []
        self.raw = b""
        self.stop = threading.Event()

    def run(self) -> None:
        sock = self.stream.sock
        sock.settimeout(0.2)
        pending = self.stream.buffer
        while not self.stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            now = time.monotonic()
            end = 0
            for match in BODY.finditer(pending):
                self.numbers.append(int(match.group(1)))
                self.times.append(now)
                end = match.end()
            self.raw += pending[:end][-4096:]
            pending = pending[end:][-(1 << 21) :]

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.numbers) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.join(5)


class Chatter:
    """Two slixmpp clients that keep chatting at normal speed (one message
    every 100 ms) in a thread of their own; `latencies` are round trips."""

    def __init__(self, server) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def __enter__(self) -> Chatter:
        self.thread.start()
        assert self.ready.wait(30), "the chatting clients did not log in"
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._chat())
        except BaseException as exc:  # noqa: BLE001 - reported in __exit__
            self.error = exc
            self.ready.set()

    async def _chat(self) -> None:
        a = await connect(self.server, "carol", "chat")
        b = await connect(self.server, "dave", "chat")
        self.ready.set()
        try:
            n = 0
            while not self.done.is_set():
                sent = time.monotonic()
                a.send_message(mto=b.boundjid.full, mbody=f"hello {n}", mtype="chat")
                message = await asyncio.wait_for(b.messages.get(), 10)
                assert message["body"] == f"hello {n}"
                self.latencies.append(time.monotonic() - sent)
                n += 1
                await asyncio.sleep(0.1)
        finally:
            await disconnect(a, b)


def register(server, *users: str) -> None:
    server.manage("register", "--from-file", "-", input="".join(f"{u} {PASSWORD}\n" for u in users))


def message(to: str, n: int, padding: str = "") -> str:
    body = f"{n} {padding}" if padding else str(n)
    return f"<message type='chat' to='{to}' id='m{n}'><body>{body}</body></message>"


def still_answers(stream: RawStream) -> None:
    """The stream is up and read: an IQ ping gets its result."""
    stream.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = stream.read_until(r"id=.alive.", timeout=60)
    assert re.search(rb"<iq[^>]*type=.result.[^>]*id=.alive.|id=.alive.[^>]*type=.result.", reply)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """A server on the shipped limits (500 stanzas/s, burst 1,000; 256 KiB/s)."""
    server = start_server(tmp_path_factory.mktemp("shaping-defaults"))
    register(server, "alice", "bob", "carol", "dave")
    yield server
    stop_server(server)


def assert_in_order(receiver: Receiver, count: int) -> None:
    assert len(receiver.numbers) == count, (
        f"{len(receiver.numbers)} of {count} arrived; last bytes {receiver.raw[-300:]!r}"
    )
    assert receiver.numbers == list(range(count))


def test_a_fast_sender_keeps_its_stream_and_every_message_at_the_stanza_rate(default_server):
    """5,000 messages sent as fast as a raw socket can, on the shipped
    defaults: the sender is not disconnected, all 5,000 reach the receiver in
    order, after the burst at about XMPP_STANZAS_PER_SECOND, while two other
    clients chat with round trips well under a second."""
    server = default_server
    count, rate, burst = 5000, 500, 1000
    receiver_stream = raw_login(server, "bob", "in")
    receiver = Receiver(receiver_stream)
    receiver.start()
    sender = raw_login(server, "alice", "flood")
    try:
        with Chatter(server) as chatter:
            flood = "".join(message(server.jid("bob", "in"), n) for n in range(count))
            started = time.monotonic()
            sender.send(flood)
            receiver.wait_for(count, timeout=60)
        assert_in_order(receiver, count)
        elapsed = receiver.times[-1] - started
        after_burst = (count - burst) / elapsed
        assert 0.7 * rate <= after_burst <= 1.15 * rate, (
            f"{count - burst} messages after the burst in {elapsed:.1f} s: {after_burst:.0f}/s"
        )
        assert chatter.latencies and max(chatter.latencies) < 1.0, chatter.latencies
        still_answers(sender)
        assert "policy-violation" not in server.log()
    finally:
        sender.close()
        receiver_stream.close()


def test_a_bulk_sender_is_slowed_to_the_byte_rate(tmp_path):
    """A client sending 50 MB as fast as it can is read at
    XMPP_C2S_BYTES_PER_SECOND (here 10 MB/s with a 1 MB burst): it takes
    about five seconds, loses nothing, keeps its stream, and other clients
    chat meanwhile."""
    rate, burst = 10_000_000, 1_000_000
    server = start_server(
        tmp_path / "bytes",
        XMPP_C2S_BYTES_PER_SECOND=str(rate),
        XMPP_C2S_BYTES_BURST=str(burst),
        XMPP_MAX_OUTGOING_BUFFER=str(64 * 1024 * 1024),
    )
    try:
        register(server, "alice", "bob", "carol", "dave")
        padding = "x" * 64_000
        count = 50_000_000 // (len(padding) + 100)
        receiver_stream = raw_login(server, "bob", "in")
        receiver = Receiver(receiver_stream)
        receiver.start()
        sender = raw_login(server, "alice", "bulk")
        try:
            with Chatter(server) as chatter:
                data = "".join(
                    message(server.jid("bob", "in"), n, padding) for n in range(count)
                ).encode()
                started = time.monotonic()
                sender.send(data)
                sending = time.monotonic() - started
                receiver.wait_for(count, timeout=90)
            assert_in_order(receiver, count)
            elapsed = receiver.times[-1] - started
            expected = (len(data) - burst) / rate
            assert elapsed >= 0.9 * expected, f"{len(data)} bytes in {elapsed:.1f} s: not slowed"
            assert elapsed <= 2.5 * expected, f"{len(data)} bytes in {elapsed:.1f} s: too slow"
            # TCP pushed back: the socket buffers hold far less than 50 MB.
            assert sending >= 0.5 * expected, f"sent in {sending:.1f} s: not held back"
            assert chatter.latencies and max(chatter.latencies) < 1.0, chatter.latencies
            still_answers(sender)
        finally:
            sender.close()
            receiver_stream.close()
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """200 stanzas a second (burst 400), bytes not limited: short tests of
    the other transports."""
    server = start_server(
        tmp_path_factory.mktemp("shaping-slow"),
        XMPP_STANZAS_PER_SECOND="200",
        XMPP_C2S_BYTES_PER_SECOND="0",
        XMPP_WEBSOCKET_CONSIDER_SECURE="true",
    )
    register(server, "alice", "bob", "carol", "dave")
    yield server
    stop_server(server)


def test_a_fast_websocket_sender_is_slowed_not_disconnected(slow_server):
    """RFC 7395: 1,400 messages of 16 KB in a row over one WebSocket, at 200
    stanzas/s with a burst of 400, take about five seconds; the server stops
    reading the socket meanwhile, so the client's sending is held back (22 MB
    is more than the socket buffers take); all arrive in order and the
    WebSocket stays open."""
    server = slow_server
    count, rate, burst = 1400, 200, 400
    receiver_stream = raw_login(server, "bob", "ws-in")
    receiver = Receiver(receiver_stream)
    receiver.start()
    ws = WsStream(server)
    try:
        ws.login("alice", "ws-flood")
        to = server.jid("bob", "ws-in")
        started = time.monotonic()
        padding = "x" * 16_000
        for n in range(count):
            frame = message(to, n, padding)
            ws.send(frame.replace("<message ", "<message xmlns='jabber:client' ", 1))
        sending = time.monotonic() - started
        receiver.wait_for(count, timeout=60)
        assert_in_order(receiver, count)
        elapsed = receiver.times[-1] - started
        assert elapsed >= 0.8 * (count - burst) / rate, f"{count} in {elapsed:.1f} s"
        assert sending >= 0.3 * (count - burst) / rate, f"sent in {sending:.1f} s: not held back"
        ws.send(
            "<iq xmlns='jabber:client' type='get' id='alive' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert re.search(r"type=.result.", ws.recv_until(r"id=.alive.", timeout=30))
    finally:
        ws.close()
        receiver_stream.close()


def test_a_fast_bosh_sender_has_its_responses_held_not_its_session_ended(slow_server):
    """XEP-0124: 1,200 messages in six requests at 200 stanzas/s (burst 400):
    the responses wait while the session is over its rate, every message
    arrives in order, about four seconds later, and the session lives on."""
    server = slow_server
    count, rate, burst = 1200, 200, 400
    receiver_stream = raw_login(server, "bob", "bosh-in")
    receiver = Receiver(receiver_stream)
    receiver.start()

    async def scenario() -> float:
        bosh = Bosh(server, wait=5)
        await bosh.login("alice", "bosh-flood")
        to = server.jid("bob", "bosh-in")
        started = time.monotonic()
        per_request = count // 6
        # Two requests out at a time, as a client with hold=1 may (XEP-0124 §11).
        window: set[asyncio.Task] = set()
        for first in range(0, count, per_request):
            payload = "".join(
                message(to, n).replace("<message ", "<message xmlns='jabber:client' ", 1)
                for n in range(first, first + per_request)
            )
            if len(window) == 2:
                done, window = await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    assert "terminate" not in task.result(), task.result()
            window.add(asyncio.create_task(bosh.send(payload)))
            last_sent = time.monotonic()
            await asyncio.sleep(0.01)  # rid order on the wire
        for text in await asyncio.gather(*window):
            assert "terminate" not in text, text
        # The server read a request's stanzas only as the rate allowed, so the
        # client could not have all its requests out at once.
        assert last_sent - started >= 0.3 * (count - burst) / rate, last_sent - started
        await asyncio.to_thread(receiver.wait_for, count, 60)
        ping = (
            "<iq xmlns='jabber:client' type='get' id='alive' to='localhost'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        answer = await bosh.send_until(ping, r"id=.alive.")
        assert re.search(r"type=.result.", answer)
        await bosh.http.aclose()
        return started

    try:
        started = asyncio.run(scenario())
        assert_in_order(receiver, count)
        elapsed = receiver.times[-1] - started
        assert elapsed >= 0.8 * (count - burst) / rate, f"{count} in {elapsed:.1f} s"
    finally:
        receiver_stream.close()


def test_a_rate_changed_at_run_time_applies_to_open_streams(tmp_path):
    """The console's settings (here through the REST API, which saves them
    the same way) apply to streams already logged in: a sender that was
    unlimited is slowed to the new rate."""
    from .test_admin_support import base_url, issue_token, start_console_server

    server = start_console_server(tmp_path / "runtime", XMPP_STANZAS_PER_SECOND="100000")
    try:
        receiver_stream = raw_login(server, "bob", "in")
        receiver = Receiver(receiver_stream)
        receiver.start()
        sender = raw_login(server, "alice", "out")
        token = issue_token(server)
        response = httpx.patch(
            f"{base_url(server)}/api/settings/",
            json={"XMPP_STANZAS_PER_SECOND": 100},
            headers={"Authorization": f"Token {token}"},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        count = 500  # 200 pass in the burst of the new rate, then 100 a second
        started = time.monotonic()
        sender.send("".join(message(server.jid("bob", "in"), n) for n in range(count)))
        receiver.wait_for(count, timeout=60)
        assert_in_order(receiver, count)
        elapsed = receiver.times[-1] - started
        assert elapsed >= 0.8 * (count - 200) / 100, f"{count} in {elapsed:.1f} s: not slowed"
        still_answers(sender)
        sender.close()
        receiver_stream.close()
    finally:
        stop_server(server)
