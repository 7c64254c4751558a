"""Per-address limits that do not lock out the users who share an address
(RFC 6120 §13.12; xmpp/admission.py, xmpp/failed_logins.py).

Hundreds of users may come from one address (a university behind NAT, a
carrier-grade NAT). Only connections that have not authenticated are capped
per address, and at the cap the OLDEST of them is closed, not the new one;
failed logins are slowed per (address, account) and per account, and a
correct password is answered at once. Everything runs against real servers
over real sockets, from 127.0.0.1 and other loopback addresses.
"""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .clients import RawStream, connect, disconnect
from .conftest import PASSWORD, private_server
from .test_bosh import Bosh
from .test_stream_hardening import (
    NS_SASL,
    SASL_NOT_AUTHORIZED,
    assert_stream_error,
    exchange_message,
    plain_token,
    rss_kib,
)
from .test_websocket import WsStream

SASL_SUCCESS = "<success[^>]*(/>|>[^<]*</success>)"


@pytest.fixture(scope="module")
def nat_server(tmp_path_factory):
    """The default per-address caps; small failure delays, so that 40 failures fit in a test."""
    with private_server(
        tmp_path_factory,
        "behind-nat",
        XMPP_AUTH_FAILURE_DELAY="0.05",
        XMPP_AUTH_FAILURE_MAX_DELAY="0.4",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def flooded_server(tmp_path_factory):
    """The default cap of 50 unauthenticated connections per address, and a
    pre-auth timeout (XMPP_AUTH_TIMEOUT) short enough to watch it act."""
    with private_server(tmp_path_factory, "flooded", XMPP_AUTH_TIMEOUT="10") as server:
        yield server


@pytest.fixture(scope="module")
def small_caps_server(tmp_path_factory):
    with private_server(
        tmp_path_factory,
        "small-caps",
        XMPP_MAX_UNAUTHENTICATED_PER_IP="3",
        XMPP_MAX_SESSIONS_PER_IP="2",
    ) as server:
        yield server


def is_open(sock: socket.socket) -> bool:
    """Neither closed nor with anything to read (the server sent nothing)."""
    sock.setblocking(False)
    try:
        return not sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- unauthenticated connections: the oldest make room (§13.12 item 1) --------


def test_a_flood_of_unfinished_connections_does_not_keep_a_user_out(nat_server):
    """300 connections that send nothing and 100 that stop after the stream
    header, all from 127.0.0.1; then a normal login from the same address
    (STARTTLS, SCRAM, bind) succeeds within a second. The cap (50) closed the
    oldest unauthenticated connections with <policy-violation/>: every silent
    one, and the first half-open ones; the newest 49 are still open."""
    server = nat_server
    silent = [RawStream(server) for _ in range(300)]
    half_open = []
    for _ in range(100):
        stream = RawStream(server)
        half_open.append(stream)
        stream.open()

    async def log_in() -> float:
        started = time.monotonic()
        client = await connect(server, "bob", "behind-nat", timeout=5)
        elapsed = time.monotonic() - started
        try:
            await exchange_message(client)
        finally:
            await disconnect(client)
        return elapsed

    try:
        assert asyncio.run(log_in()) < 1.0
        for stream in silent + half_open[:51]:
            assert_stream_error(stream, "policy-violation")
        assert all(is_open(stream.sock) for stream in half_open[51:])
    finally:
        for stream in silent + half_open:
            stream.close()


def test_addresses_are_counted_apart(small_caps_server):
    """A 4th unauthenticated connection from 127.0.0.2 closes 127.0.0.2's
    oldest; the connections of 127.0.0.3 are untouched."""
    server = small_caps_server
    other = [RawStream(server, source="127.0.0.3") for _ in range(3)]
    mine = [RawStream(server, source="127.0.0.2") for _ in range(4)]
    try:
        for stream in other + mine[1:]:
            stream.open()
        assert_stream_error(mine[0], "policy-violation")
        assert all(is_open(stream.sock) for stream in other + mine[1:])
    finally:
        for stream in other + mine:
            stream.close()


def test_websocket_and_bosh_streams_are_admitted_the_same_way(small_caps_server):
    """An unauthenticated WebSocket (RFC 7395) and BOSH session (XEP-0206)
    count with the address's TCP connections: past the cap of 3 the oldest,
    the WebSocket, gets <policy-violation/> and is closed, then the BOSH
    session ends with it (type='terminate', the stream error inside)."""
    server = small_caps_server

    async def scenario():
        websocket = WsStream(server)
        bosh = Bosh(server, wait=2)
        streams = []
        try:
            websocket.open()
            await bosh.create()
            streams.append(RawStream(server))
            streams[-1].open()
            streams.append(RawStream(server))  # the 4th: the WebSocket goes
            streams[-1].open()
            frames = websocket.recv_until("policy-violation")
            assert "<stream:error" in frames
            if "<close" not in frames:  # the error and <close/> may share a message
                frames += websocket.recv_until("<close")
            assert re.search("</stream:error>.*<close ", frames, re.S), frames
            streams.append(RawStream(server))  # the 5th: the BOSH session goes
            streams[-1].open()
            answer = await bosh.send()
            assert "type='terminate'" in answer and "policy-violation" in answer, answer
            assert all(is_open(stream.sock) for stream in streams)
        finally:
            websocket.close()
            await bosh.close()
            for stream in streams:
                stream.close()

    asyncio.run(scenario())


def test_authenticated_sessions_are_not_counted_but_can_be_capped(small_caps_server):
    """Authenticated sessions (a WebSocket and a BOSH one) are not among the
    unauthenticated connections a flood evicts: they keep working after 5 new
    connections from their address. XMPP_MAX_SESSIONS_PER_IP=2 caps them: a
    3rd login from the address is ended with <policy-violation/> instead of
    <success/>; once a session has closed, a login succeeds again."""
    server = small_caps_server

    async def scenario():
        websocket = WsStream(server)
        bosh = Bosh(server)
        flood = []
        try:
            ws_jid = websocket.login("alice", "ws")
            bosh_jid = await bosh.login("bob", "bosh")
            for _ in range(5):
                flood.append(RawStream(server))
                flood[-1].open()
            websocket.send(
                f"<message xmlns='jabber:client' to='{ws_jid}'><body>ws</body></message>"
            )
            assert "<body>ws</body>" in websocket.recv_until("</message>")
            echoed = await bosh.send_until(
                f"<message xmlns='jabber:client' to='{bosh_jid}'><body>bosh</body></message>",
                "</message>",
            )
            assert "<body>bosh</body>" in echoed
            third = RawStream(server)
            try:
                third.starttls()
                token = plain_token("alice", PASSWORD)
                third.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
                data = assert_stream_error(third, "policy-violation")
                assert b"<success" not in data
            finally:
                third.close()
            websocket.close()
            deadline = time.monotonic() + 5
            while True:
                fourth = RawStream(server)
                try:
                    fourth.starttls()
                    fourth.send(
                        f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                        f"{plain_token('alice', PASSWORD)}</auth>"
                    )
                    answer = fourth.read_until(f"{SASL_SUCCESS}|</stream:error>")
                    if re.search(SASL_SUCCESS.encode(), answer):
                        break
                    assert time.monotonic() < deadline, "the closed session was not released"
                    await asyncio.sleep(0.1)
                finally:
                    fourth.close()
        finally:
            websocket.close()
            await bosh.close()
            for stream in flood:
                stream.close()

    asyncio.run(scenario())


# -- failed logins: slowed per (address, account), never a correct one --------


def failing_stream(server, user: str, attempts: int) -> list[float]:
    """`attempts` wrong PLAIN passwords for `user` over one stream; the time each
    took to be answered. Every answer is <not-authorized/>; after the 3rd the
    stream ends with <policy-violation/> (RFC 6120 §6.4.5)."""
    stream = RawStream(server)
    try:
        stream.starttls()
        delays, rest = [], b""
        for attempt in range(attempts):
            token = plain_token(user, f"wrong {attempt}")
            started = time.monotonic()
            stream.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
            data = stream.read_until("</failure>|<success")
            delays.append(time.monotonic() - started)
            answer, rest = data.split(b"</failure>", 1)
            assert answer + b"</failure>" == SASL_NOT_AUTHORIZED, data
            if attempt < 2:
                assert b"stream:error" not in rest
        if attempts == 3:
            assert_stream_error(stream, "policy-violation", rest)
        return delays
    finally:
        stream.close()


def test_the_right_password_is_answered_at_once_after_many_wrong_ones(nat_server):
    """40 wrong passwords for alice from 127.0.0.1, over 14 streams at once (3
    a stream), are answered <not-authorized/>, more and more slowly (up to
    XMPP_AUTH_FAILURE_MAX_DELAY, here 0.4 s); right after them the right
    password logs in at once from the same address: PLAIN answered with
    <success/> in well under a second, and a SCRAM login with bind under 1 s."""
    server = nat_server
    with ThreadPoolExecutor(14) as pool:
        attempts = [3] * 13 + [1]
        delays = [
            d
            for run in pool.map(failing_stream, [server] * 14, ["alice"] * 14, attempts)
            for d in run
        ]
    assert len(delays) == 40
    assert max(delays) >= 0.35, delays  # the brute-force protection was at work

    stream = RawStream(server)
    try:
        stream.starttls()
        started = time.monotonic()
        stream.send(
            f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain_token('alice', PASSWORD)}</auth>"
        )
        stream.read_until(SASL_SUCCESS)
        assert time.monotonic() - started < 0.5
    finally:
        stream.close()

    async def scram_login() -> float:
        started = time.monotonic()
        client = await connect(server, "alice", "right", mechanism="SCRAM-SHA-256", timeout=5)
        elapsed = time.monotonic() - started
        await disconnect(client)
        return elapsed

    assert asyncio.run(scram_login()) < 1.0


# -- memory: the cap and the pre-auth timeout hold it down (§13.12 item 4) -----


def test_five_thousand_silent_sockets_keep_the_memory_of_fifty(flooded_server):
    """5,000 connections from 127.0.0.1 that never send a byte: the server keeps
    the newest 50 (the cap) and closes every older one with <policy-violation/>,
    so its RSS grows by a small fraction of what 5,000 open streams cost
    (about 10 KiB each, ~50 MB, measured with the cap lifted); the 50 left are
    ended with <connection-timeout/> by XMPP_AUTH_TIMEOUT (10 s)."""
    server = flooded_server
    raise_open_files_limit()
    address = (server.host, server.c2s_port)

    # Warm up: the first eviction allocates what every later one reuses.
    warm_up = [socket.create_connection(address) for _ in range(100)]
    for sock in warm_up[:50]:
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    for sock in warm_up:
        sock.close()
    time.sleep(0.5)
    before = rss_kib(server.process.pid)

    sockets: list[socket.socket] = []
    received: dict[int, bytes] = {}  # what the server sent the closed ones

    def read_to_close(index: int, timeout: float = 10) -> bytes:
        sock = sockets[index]
        sock.settimeout(timeout)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        received[index] = data
        return data

    try:
        for _batch in range(50):
            sockets.extend(socket.create_connection(address) for _ in range(100))
            # The newest socket's stream is open once the one 50 before it is
            # closed: the flood goes as fast as the server takes it, no faster.
            read_to_close(len(sockets) - 51)
        growth = rss_kib(server.process.pid) - before
        assert growth < 12 * 1024, f"RSS grew by {growth} KiB"

        for index in range(4950):
            if index not in received:
                read_to_close(index)
        evicted = [
            b"<policy-violation" in data and data.endswith(b"</stream:stream>")
            for data in received.values()
        ]
        assert len(evicted) == 4950 and all(evicted)
        assert all(is_open(sock) for sock in sockets[-50:])

        for index in range(4950, 5000):
            assert b"<connection-timeout" in read_to_close(index, timeout=20)
    finally:
        for sock in sockets:
            sock.close()
