"""TURN (RFC 8656) with TURN REST API credentials: allocations, permissions,
channels, refresh, expiry and quotas. Relayed traffic between loopback
sockets through `manage.py runstun`, driven by aioice's TURN client and by
aioice's STUN messages sent by hand; the rules that need a clock are
checked on the sans-IO service with a fake one."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from stun import codec
from stun.credentials import NonceIssuer, issue, rest_password
from stun.service import ServiceSettings, StunService

from .test_stun import TURN_REALM, TURN_SECRET, start_runstun, stop_process

aioice_stun = pytest.importorskip("aioice.stun", reason="aioice (the test extra) is not installed")
from aioice import turn as aioice_turn  # noqa: E402

Method, Class = aioice_stun.Method, aioice_stun.Class
UDP = 0x11000000  # REQUESTED-TRANSPORT 17, as aioice packs it


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory):
    """runstun with loopback peers allowed (they are the test's only peers) and a
    quota of two allocations a user."""
    process, port = start_runstun(
        tmp_path_factory.mktemp("turn"),
        XMPP_TURN_ALLOW_PRIVATE_PEERS="true",
        XMPP_TURN_MAX_ALLOCATIONS_PER_USER="2",
    )
    yield ("127.0.0.1", port)
    assert stop_process(process) == 0


class TurnByHand:
    """A TURN client made of aioice's STUN messages, one request at a time (RFC 8656 §7-§11)."""

    def __init__(self, server: tuple[str, int], username: str, password: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.sock.connect(server)
        self.username, self.password = username, password
        self.realm = self.nonce = self.key = None
        self.indications: list = []

    def request(self, method, attributes: dict | None = None, *, auth: bool = True):
        message = aioice_stun.Message(message_method=method, message_class=Class.REQUEST)
        message.attributes.update(attributes or {})
        if auth and self.key is not None:
            message.attributes["USERNAME"] = self.username
            message.attributes["REALM"] = self.realm
            message.attributes["NONCE"] = self.nonce
            message.add_message_integrity(self.key)
        self.sock.send(bytes(message))
        while True:
            answer = aioice_stun.parse_message(self.sock.recv(65536))
            if answer.transaction_id == message.transaction_id:
                return answer
            self.indications.append(answer)

    def allocate(self, lifetime: int = 600):
        """Allocate, answering the 401 challenge with the long-term key (§7.1, RFC 8489 §9.2)."""
        attributes = {"REQUESTED-TRANSPORT": UDP, "LIFETIME": lifetime}
        answer = self.request(Method.ALLOCATE, attributes, auth=False)
        assert error_code(answer) == 401
        self.realm = answer.attributes["REALM"]
        self.nonce = answer.attributes["NONCE"]
        self.key = aioice_turn.make_integrity_key(self.username, self.realm, self.password)
        return self.request(Method.ALLOCATE, attributes)

    def send_indication(self, peer: tuple[str, int], data: bytes) -> None:
        message = aioice_stun.Message(message_method=Method.SEND, message_class=Class.INDICATION)
        message.attributes["XOR-PEER-ADDRESS"] = peer
        message.attributes["DATA"] = data
        self.sock.send(bytes(message))

    def next_indication(self):
        if self.indications:
            return self.indications.pop(0)
        return aioice_stun.parse_message(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.close()


def error_code(message) -> int | None:
    value = message.attributes.get("ERROR-CODE")
    return value[0] if value else None


def peer_socket() -> socket.socket:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(3)
    return peer


def turn_round_trip(server: tuple[str, int], username: str, password: str) -> tuple[str, int]:
    """Allocate, permission, Send indication to a peer, the peer's answer back as a
    Data indication (RFC 8656 §7, §10, §11); returns the relayed address."""
    client, peer = TurnByHand(server, username, password), peer_socket()
    try:
        answer = client.allocate()
        assert answer.message_class == Class.RESPONSE, answer
        relayed = answer.attributes["XOR-RELAYED-ADDRESS"]
        assert answer.attributes["XOR-MAPPED-ADDRESS"] == client.sock.getsockname()
        assert answer.attributes["LIFETIME"] == 600
        assert answer.check_message_integrity(client.key)  # RFC 8489 §9.2.4
        permitted = client.request(
            Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": peer.getsockname()}
        )
        assert permitted.message_class == Class.RESPONSE, permitted
        client.send_indication(peer.getsockname(), b"ping through the relay")
        data, source = peer.recvfrom(2048)
        assert (data, source) == (b"ping through the relay", relayed)
        peer.sendto(b"pong from the peer", relayed)
        indication = client.next_indication()
        assert (indication.message_method, indication.message_class) == (
            Method.DATA,
            Class.INDICATION,
        )
        assert indication.attributes["DATA"] == b"pong from the peer"
        assert indication.attributes["XOR-PEER-ADDRESS"] == peer.getsockname()
        refreshed = client.request(Method.REFRESH, {"LIFETIME": 0})
        assert refreshed.message_class == Class.RESPONSE, refreshed
        return relayed
    finally:
        client.close()
        peer.close()


def credentials(user: str = "alice@localhost", ttl: int = 300):
    return issue(TURN_SECRET, user, ttl)


# --- over the wire ------------------------------------------------------------


def test_send_and_data_indications_between_two_loopback_sockets(turn_server):
    """RFC 8656 §11: a Send indication reaches a permitted peer from the relayed
    address, and the peer's datagram comes back as a Data indication."""
    cred = credentials()
    relayed = turn_round_trip(turn_server, cred.username, cred.password)
    assert relayed[0] == "127.0.0.1"


def test_aioice_turn_client_relays_over_a_channel(turn_server):
    """aioice's TURN client (Allocate, ChannelBind, ChannelData; RFC 8656 §12)
    exchanges datagrams with a loopback peer through the relay."""

    class Receiver(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.queue: asyncio.Queue = asyncio.Queue()

        def datagram_received(self, data, addr) -> None:
            self.queue.put_nowait((data, addr))

    async def scenario():
        cred = credentials()
        transport, protocol = await aioice_turn.create_turn_endpoint(
            Receiver, turn_server, cred.username, cred.password
        )
        loop = asyncio.get_running_loop()
        peer_transport, peer = await loop.create_datagram_endpoint(
            Receiver, local_addr=("127.0.0.1", 0)
        )
        try:
            relayed = transport.get_extra_info("sockname")
            peer_address = peer_transport.get_extra_info("sockname")
            for n in range(3):
                transport.sendto(b"to peer %d" % n, peer_address)
                assert await asyncio.wait_for(peer.queue.get(), 5) == (b"to peer %d" % n, relayed)
                peer_transport.sendto(b"to client %d" % n, relayed)
                assert await asyncio.wait_for(protocol.queue.get(), 5) == (
                    b"to client %d" % n,
                    peer_address,
                )
        finally:
            transport.close()
            peer_transport.close()
            await asyncio.sleep(0.2)  # let aioice delete the allocation

    asyncio.run(scenario())


def test_aioice_turn_client_over_tcp(turn_server):
    """TURN over TCP (RFC 8656 §5): the same round trip, ChannelData framed on the stream."""

    class Receiver(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.queue: asyncio.Queue = asyncio.Queue()

        def datagram_received(self, data, addr) -> None:
            self.queue.put_nowait((data, addr))

    async def scenario():
        cred = credentials()
        transport, protocol = await aioice_turn.create_turn_endpoint(
            Receiver, turn_server, cred.username, cred.password, transport="tcp"
        )
        loop = asyncio.get_running_loop()
        peer_transport, peer = await loop.create_datagram_endpoint(
            Receiver, local_addr=("127.0.0.1", 0)
        )
        try:
            relayed = transport.get_extra_info("sockname")
            peer_address = peer_transport.get_extra_info("sockname")
            transport.sendto(b"odd-sized payload", peer_address)
            assert await asyncio.wait_for(peer.queue.get(), 5) == (b"odd-sized payload", relayed)
            peer_transport.sendto(b"back", relayed)
            assert await asyncio.wait_for(protocol.queue.get(), 5) == (b"back", peer_address)
        finally:
            transport.close()
            peer_transport.close()
            await asyncio.sleep(0.2)

    asyncio.run(scenario())


def test_send_indication_without_permission_is_not_relayed(turn_server):
    """RFC 8656 §11.2: data to a peer with no permission is dropped."""
    cred = credentials()
    client, peer = TurnByHand(turn_server, cred.username, cred.password), peer_socket()
    try:
        assert client.allocate().message_class == Class.RESPONSE
        client.send_indication(peer.getsockname(), b"nobody asked")
        peer.settimeout(0.3)
        with pytest.raises(TimeoutError):
            peer.recvfrom(2048)
        client.request(Method.REFRESH, {"LIFETIME": 0})
    finally:
        client.close()
        peer.close()


def test_wrong_password_gets_401_and_the_listener_answers_afterwards(turn_server):
    """RFC 8489 §9.2.4: a MESSAGE-INTEGRITY that does not match gets 401 with a
    fresh REALM and NONCE."""
    cred = credentials()
    client = TurnByHand(turn_server, cred.username, "not the password")
    try:
        answer = client.allocate()
        assert error_code(answer) == 401
        assert answer.attributes["REALM"] == TURN_REALM and answer.attributes["NONCE"]
        binding = client.request(Method.BINDING, auth=False)
        assert binding.attributes["XOR-MAPPED-ADDRESS"] == client.sock.getsockname()
    finally:
        client.close()


def test_expired_rest_credentials_get_401(turn_server):
    """draft-uberti-behave-turn-rest §2.2: a username whose timestamp is past is
    refused with 401, though its password is right for it."""
    username = f"{int(time.time()) - 10}:alice@localhost"
    client = TurnByHand(turn_server, username, rest_password(TURN_SECRET, username))
    try:
        assert error_code(client.allocate()) == 401
    finally:
        client.close()


def test_forged_nonce_gets_438(turn_server):
    """RFC 8489 §9.2.4: a NONCE the server did not make (or no longer accepts)
    gets 438 Stale Nonce with a new one."""
    cred = credentials()
    client = TurnByHand(turn_server, cred.username, cred.password)
    try:
        client.allocate()
        client.nonce = b"0" * 32
        answer = client.request(Method.REFRESH, {"LIFETIME": 600})
        assert error_code(answer) == 438
        assert answer.attributes["NONCE"] != client.nonce
        client.nonce = answer.attributes["NONCE"]
        assert client.request(Method.REFRESH, {"LIFETIME": 0}).message_class == Class.RESPONSE
    finally:
        client.close()


def test_allocation_quota_gets_486_and_the_listener_answers_afterwards(turn_server):
    """RFC 8656 §7.2: beyond XMPP_TURN_MAX_ALLOCATIONS_PER_USER (2 here) a user's
    Allocate gets 486 Allocation Quota Reached; another user is not affected."""
    cred = credentials("quota@localhost")
    clients = [TurnByHand(turn_server, cred.username, cred.password) for _ in range(3)]
    other = credentials("other@localhost")
    other_client = TurnByHand(turn_server, other.username, other.password)
    try:
        assert clients[0].allocate().message_class == Class.RESPONSE
        assert clients[1].allocate().message_class == Class.RESPONSE
        assert error_code(clients[2].allocate()) == 486
        assert other_client.allocate().message_class == Class.RESPONSE
        # Freeing one makes room again (RFC 8656 §8: Refresh with LIFETIME 0).
        assert clients[0].request(Method.REFRESH, {"LIFETIME": 0}).message_class == Class.RESPONSE
        assert (
            clients[2].request(Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP}).message_class
            == Class.RESPONSE
        )
        binding = other_client.request(Method.BINDING, auth=False)
        assert binding.message_class == Class.RESPONSE
    finally:
        for client in (*clients, other_client):
            if client.key is not None:
                client.request(Method.REFRESH, {"LIFETIME": 0})
            client.close()


def test_requests_without_an_allocation_get_437(turn_server):
    """RFC 8656 §10.2, §8.2: CreatePermission or Refresh with no allocation on
    the 5-tuple gets 437 Allocation Mismatch; so does a second Allocate."""
    cred = credentials()
    client, peer = TurnByHand(turn_server, cred.username, cred.password), peer_socket()
    try:
        client.allocate()
        client.request(Method.REFRESH, {"LIFETIME": 0})
        answer = client.request(Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": peer.getsockname()})
        assert error_code(answer) == 437
        assert error_code(client.request(Method.REFRESH, {"LIFETIME": 600})) == 437
        assert (
            client.request(Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP}).message_class
            == Class.RESPONSE
        )
        assert error_code(client.request(Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP})) == 437
        client.request(Method.REFRESH, {"LIFETIME": 0})
    finally:
        client.close()
        peer.close()


def test_tcp_relay_transport_gets_442(turn_server):
    """RFC 8656 §7.2: REQUESTED-TRANSPORT other than UDP gets 442."""
    cred = credentials()
    client = TurnByHand(turn_server, cred.username, cred.password)
    try:
        client.allocate()
        client.request(Method.REFRESH, {"LIFETIME": 0})
        answer = client.request(Method.ALLOCATE, {"REQUESTED-TRANSPORT": 6 << 24})
        assert error_code(answer) == 442
    finally:
        client.close()


# --- sans-IO: the service with a fake clock and fake relay sockets ------------------


class FakeRelay:
    def __init__(self, port: int) -> None:
        self.address = ("192.0.2.10", port)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False
        self.on_datagram = None

    def sendto(self, data, peer) -> None:
        self.sent.append((data, peer))

    def close(self) -> None:
        self.closed = True


class Harness:
    """A StunService on a clock the test moves, and one client address."""

    client = ("198.51.100.7", 40000)

    def __init__(self, **config) -> None:
        self.now = 1000.0
        self.wall = time.time()
        self.relays: list[FakeRelay] = []
        settings = ServiceSettings(realm="realm", secret="secret", **config)
        self.service = StunService(
            settings, self._open_relay, clock=lambda: self.now, wall_clock=lambda: self.wall
        )
        self.service.nonces = NonceIssuer(lifetime=10**6)
        self.to_client: list[bytes] = []
        cred = issue("secret", "bob@localhost", 3600, now=self.wall)
        self.username = cred.username
        self.key = codec.long_term_key(cred.username, "realm", cred.password)
        self.nonce = self.service.nonces.make(self.client[0], self.wall).encode()

    def _open_relay(self, client, even):
        self.relays.append(FakeRelay(50000 + len(self.relays) * 2))
        return self.relays[-1]

    def request(self, method: int, attrs: list[tuple[int, bytes]] = ()) -> codec.Message:
        tid = b"t" * 12
        auth = [
            (codec.USERNAME, self.username.encode()),
            (codec.REALM, b"realm"),
            (codec.NONCE, self.nonce),
        ]
        data = codec.build(method, codec.REQUEST, tid, [*attrs, *auth], integrity_key=self.key)
        answers: list[bytes] = []
        self.service.handle(data, self.client, "udp", answers.append)
        return codec.parse(answers[0])

    def allocate(self) -> codec.Message:
        answer = self.request(codec.ALLOCATE, [(codec.REQUESTED_TRANSPORT, b"\x11\0\0\0")])
        self.service.table.allocations[("udp", self.client)].send_to_client = self.to_client.append
        return answer

    def permit(self, peer: tuple[str, int]) -> codec.Message:
        return self.request(
            codec.CREATE_PERMISSION,
            [(codec.XOR_PEER_ADDRESS, codec.encode_xor_address(*peer, b"t" * 12))],
        )

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        tid = b"s" * 12
        message = codec.build(
            codec.SEND,
            codec.INDICATION,
            tid,
            [
                (codec.XOR_PEER_ADDRESS, codec.encode_xor_address(*peer, tid)),
                (codec.DATA_ATTR, data),
            ],
        )
        self.service.handle(message, self.client, "udp", lambda _: None)


PEER = ("93.184.216.34", 7000)  # a global address: no datagram leaves (FakeRelay)


def test_loopback_and_private_peers_are_forbidden_by_default():
    """RFC 8656 §21 (the relay must not open the server's own network): a
    permission for a loopback or private peer gets 403 unless
    XMPP_TURN_ALLOW_PRIVATE_PEERS is set."""
    harness = Harness()
    harness.allocate()
    for peer in (("127.0.0.1", 6379), ("10.1.2.3", 80), ("192.168.1.1", 53), ("169.254.1.1", 1)):
        assert codec.error_code(harness.permit(peer)) == 403
    assert harness.permit(PEER).cls == codec.SUCCESS
    allowing = Harness(allow_private_peers=True)
    allowing.allocate()
    assert allowing.permit(("127.0.0.1", 6379)).cls == codec.SUCCESS


def test_permission_expires_after_300_seconds():
    """RFC 8656 §9: a permission lasts 300 s; after it, data either way is dropped."""
    harness = Harness()
    harness.allocate()
    harness.permit(PEER)
    relay = harness.relays[0]
    harness.send(PEER, b"one")
    assert relay.sent == [(b"one", PEER)]
    relay.on_datagram(b"back", PEER)
    assert len(harness.to_client) == 1
    harness.now += 301
    harness.send(PEER, b"two")
    relay.on_datagram(b"late", PEER)
    assert relay.sent == [(b"one", PEER)] and len(harness.to_client) == 1


def test_allocation_expires_after_its_lifetime_and_refresh_extends_it():
    """RFC 8656 §7.2, §8: 600 s by default; a Refresh extends it; past it the
    allocation and its relay socket are gone."""
    harness = Harness()
    answer = harness.allocate()
    assert struct.unpack("!I", answer.get(codec.LIFETIME))[0] == 600
    harness.now += 500
    refreshed = harness.request(codec.REFRESH, [(codec.LIFETIME, struct.pack("!I", 600))])
    assert refreshed.cls == codec.SUCCESS
    harness.now += 500
    assert harness.service.expire() == 0
    harness.now += 101
    assert harness.service.expire() == 1
    assert harness.relays[0].closed
    assert codec.error_code(harness.permit(PEER)) == 437


def test_lifetime_is_capped_at_the_maximum():
    """RFC 8656 §7.2: a requested lifetime above the server's maximum is cut to it."""
    harness = Harness(max_lifetime=3600)
    answer = harness.request(
        codec.ALLOCATE,
        [(codec.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (codec.LIFETIME, struct.pack("!I", 99999))],
    )
    assert struct.unpack("!I", answer.get(codec.LIFETIME))[0] == 3600


def test_channel_number_binds_one_peer():
    """RFC 8656 §12.2: numbers 0x4000-0x4FFF; a number bound to a peer cannot be
    bound to another, nor the peer to another number; ChannelData reaches it."""
    harness = Harness()
    harness.allocate()

    def bind(number: int, peer):
        return harness.request(
            codec.CHANNEL_BIND,
            [
                (codec.CHANNEL_NUMBER, struct.pack("!HH", number, 0)),
                (codec.XOR_PEER_ADDRESS, codec.encode_xor_address(*peer, b"t" * 12)),
            ],
        )

    assert codec.error_code(bind(0x3FFF, PEER)) == 400
    assert bind(0x4000, PEER).cls == codec.SUCCESS
    assert bind(0x4000, PEER).cls == codec.SUCCESS  # a refresh
    assert codec.error_code(bind(0x4000, ("93.184.216.35", 1))) == 400
    assert codec.error_code(bind(0x4001, PEER)) == 400
    harness.service.handle(
        struct.pack("!HH", 0x4000, 5) + b"hello", harness.client, "udp", lambda _: None
    )
    assert harness.relays[0].sent == [(b"hello", PEER)]
    harness.relays[0].on_datagram(b"reply", PEER)
    assert harness.to_client == [struct.pack("!HH", 0x4000, 5) + b"reply"]


def test_bandwidth_quota_drops_what_exceeds_it():
    """XMPP_TURN_BANDWIDTH: bytes per second per allocation, a one-second burst;
    datagrams beyond it are dropped, and it refills with time."""
    harness = Harness(bandwidth=1000)
    harness.allocate()
    harness.permit(PEER)
    for _ in range(3):
        harness.send(PEER, b"x" * 400)
    assert len(harness.relays[0].sent) == 2
    harness.now += 1
    harness.send(PEER, b"x" * 400)
    assert len(harness.relays[0].sent) == 3


def test_request_without_integrity_is_challenged_with_realm_and_nonce():
    """RFC 8489 §9.2.4: no MESSAGE-INTEGRITY gets 401 with REALM and NONCE and no
    MESSAGE-INTEGRITY of its own."""
    harness = Harness()
    answers: list[bytes] = []
    request = codec.build(
        codec.ALLOCATE, codec.REQUEST, b"u" * 12, [(codec.REQUESTED_TRANSPORT, b"\x11\0\0\0")]
    )
    harness.service.handle(request, harness.client, "udp", answers.append)
    answer = codec.parse(answers[0])
    assert codec.error_code(answer) == 401
    assert answer.get(codec.REALM) == b"realm" and answer.get(codec.NONCE)
    assert answer.integrity_offset < 0


def test_message_integrity_sha256_is_accepted_and_answered_in_kind():
    """RFC 8489 §14.6, §9.2.4: a request authenticated with MESSAGE-INTEGRITY-SHA256
    (same long-term key) is accepted, and its answer carries MESSAGE-INTEGRITY-SHA256."""
    harness = Harness()
    tid = b"h" * 12
    auth = [
        (codec.USERNAME, harness.username.encode()),
        (codec.REALM, b"realm"),
        (codec.NONCE, harness.nonce),
    ]
    request = codec.build(
        codec.ALLOCATE,
        codec.REQUEST,
        tid,
        [(codec.REQUESTED_TRANSPORT, b"\x11\0\0\0"), *auth],
        integrity_key=harness.key,
        integrity_sha256=True,
    )
    answers: list[bytes] = []
    harness.service.handle(request, harness.client, "udp", answers.append)
    answer = codec.parse(answers[0])
    assert answer.cls == codec.SUCCESS
    assert answer.integrity_sha256_offset >= 0 and answer.integrity_offset < 0
    assert codec.check_integrity(answer, harness.key)
