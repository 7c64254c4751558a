"""STUN (RFC 8489): the codec on its own, then `manage.py runstun` asked by
clients nobody here wrote (Debian's `stun` client of RFC 3489, aioice's
STUN/TURN client) and by raw sockets sending what no client should."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

from stun import codec
from stun.server import StunServer
from stun.service import ServiceSettings, StunService

from .conftest import ROOT, free_udp_tcp_port

aioice_stun = pytest.importorskip("aioice.stun", reason="aioice (the test extra) is not installed")
from aioice import turn as aioice_turn  # noqa: E402

TURN_SECRET = "test turn secret"
TURN_REALM = "turn.test"


def plain_binding(tid: bytes | None = None) -> tuple[bytes, bytes]:
    tid = tid or os.urandom(12)
    return b"\x00\x01\x00\x00" + codec.MAGIC_COOKIE_BYTES + tid, tid


def start_runstun(tmp_path, **env: str) -> tuple[subprocess.Popen, int]:
    """`manage.py runstun` on a free port (UDP and TCP), waiting for its first answer."""
    port = free_udp_tcp_port()
    full_env = dict(
        os.environ,
        XMPP_DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="imserver.settings",
        XMPP_TURN_SECRET=TURN_SECRET,
        XMPP_TURN_REALM=TURN_REALM,
        **env,
    )
    log = open(tmp_path / "runstun.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runstun", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "runstun.log").read_text())
            probe.sendto(plain_binding()[0], ("127.0.0.1", port))
            try:
                probe.recv(2048)
                return process, port
            except TimeoutError:
                continue
    process.kill()
    raise RuntimeError("runstun did not answer")


def stop_process(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture(scope="module")
def runstun(tmp_path_factory):
    process, port = start_runstun(tmp_path_factory.mktemp("runstun"))
    yield port
    assert stop_process(process) == 0


class Udp:
    """A raw UDP socket towards the server."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(2)
        self.sock.connect((host, port))

    def ask(self, data: bytes) -> bytes:
        self.sock.send(data)
        return self.sock.recv(65536)

    def silent(self, data: bytes, wait: float = 0.3) -> None:
        """Send `data` and check that nothing comes back."""
        self.sock.send(data)
        self.sock.settimeout(wait)
        try:
            answer = self.sock.recv(65536)
        except TimeoutError:
            return
        finally:
            self.sock.settimeout(2)
        raise AssertionError(f"expected no answer, got {answer!r}")

    def still_answers(self) -> None:
        request, tid = plain_binding()
        answer = codec.parse(self.ask(request))
        assert (answer.method, answer.cls, answer.transaction_id) == (
            codec.BINDING,
            codec.SUCCESS,
            tid,
        )

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()


def read_stream_messages(sock: socket.socket, count: int) -> list[codec.Message]:
    """`count` STUN messages framed off a TCP stream (RFC 8489 §6.2.2)."""
    data, messages = b"", []
    while len(messages) < count:
        while len(data) < 20 or len(data) < 20 + struct.unpack_from("!H", data, 2)[0]:
            chunk = sock.recv(4096)
            assert chunk, "connection closed"
            data += chunk
        size = 20 + struct.unpack_from("!H", data, 2)[0]
        messages.append(codec.parse(data[:size]))
        data = data[size:]
    return messages


# --- the codec ------------------------------------------------------------------


def test_message_type_interleaves_method_and_class():
    """RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111;
    RFC 8656: Allocate request 0x0003, Data indication 0x0017."""
    assert codec.message_type(codec.BINDING, codec.REQUEST) == 0x0001
    assert codec.message_type(codec.BINDING, codec.SUCCESS) == 0x0101
    assert codec.message_type(codec.BINDING, codec.ERROR) == 0x0111
    assert codec.message_type(codec.ALLOCATE, codec.REQUEST) == 0x0003
    assert codec.message_type(codec.DATA, codec.INDICATION) == 0x0017
    for method in range(0x1000):
        for cls in (codec.REQUEST, codec.INDICATION, codec.SUCCESS, codec.ERROR):
            assert codec.split_type(codec.message_type(method, cls)) == (method, cls)


def test_xor_mapped_address_ipv4_and_ipv6_read_by_aioice():
    """RFC 8489 §14.2: the address XORed with the cookie (and the transaction id
    for IPv6); aioice decodes what we encode, FINGERPRINT included."""
    tid = os.urandom(12)
    for host, port in (("192.0.2.1", 32853), ("2001:db8:1234:5678:11:2233:4455:6677", 32853)):
        data = codec.build(
            codec.BINDING,
            codec.SUCCESS,
            tid,
            [(codec.XOR_MAPPED_ADDRESS, codec.encode_xor_address(host, port, tid))],
        )
        theirs = aioice_stun.parse_message(data)
        assert theirs.attributes["XOR-MAPPED-ADDRESS"] == (host, port)
        ours = codec.parse(data)
        assert codec.decode_xor_address(ours.get(codec.XOR_MAPPED_ADDRESS), tid) == (host, port)


def test_message_integrity_agrees_with_aioice():
    """RFC 8489 §14.5 and §14.7: aioice verifies our MESSAGE-INTEGRITY and
    FINGERPRINT, and we verify aioice's."""
    key = codec.long_term_key("user", "realm", "pass")
    tid = os.urandom(12)
    ours = codec.build(
        codec.ALLOCATE, codec.SUCCESS, tid, [(codec.LIFETIME, struct.pack("!I", 600))],
        integrity_key=key,
    )  # fmt: skip
    parsed_by_aioice = aioice_stun.parse_message(ours)  # checks FINGERPRINT
    assert parsed_by_aioice.attributes["LIFETIME"] == 600
    assert parsed_by_aioice.check_message_integrity(key)
    theirs = aioice_stun.Message(
        message_method=aioice_stun.Method.ALLOCATE, message_class=aioice_stun.Class.REQUEST
    )
    theirs.attributes["USERNAME"] = "user"
    theirs.add_message_integrity(key)  # and FINGERPRINT after it
    parsed = codec.parse(bytes(theirs))
    assert codec.check_integrity(parsed, key)
    assert not codec.check_integrity(parsed, codec.long_term_key("user", "realm", "wrong"))


def test_truncated_and_garbage_data_is_not_stun():
    """RFC 8489 §6.3: shorter than a header, a length that disagrees with the
    datagram, the top bits set, or a wrong FINGERPRINT: not STUN."""
    request, _ = plain_binding()
    for data in (b"", b"\x00\x01", request[:19], request + b"\0\0\0\0", b"\xff" * 20):
        with pytest.raises(codec.NotStun):
            codec.parse(data)
    good = codec.build(codec.BINDING, codec.REQUEST, os.urandom(12))
    with pytest.raises(codec.NotStun):
        codec.parse(good[:-1] + bytes([good[-1] ^ 1]))


def test_attribute_longer_than_message_is_malformed():
    """RFC 8489 §14: an attribute must fit in the message; the request is kept
    so that the server can answer 400."""
    tid = os.urandom(12)
    data = struct.pack("!HHI12sHH", 0x0001, 4, codec.MAGIC_COOKIE, tid, codec.SOFTWARE, 40)
    with pytest.raises(codec.MalformedMessage) as caught:
        codec.parse(data)
    assert caught.value.message.transaction_id == tid


# --- the listener, in this process ---------------------------------------------


def test_binding_over_ipv6_gets_ipv6_xor_mapped_address():
    """RFC 8489 §14.2: an IPv6 client gets its address XORed with the cookie and
    the transaction id."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    async def scenario():
        server = StunServer(StunService(ServiceSettings(turn_enabled=False)))
        port = free_udp_tcp_port()
        try:
            await server.start("::1", port)
        except OSError as exc:
            pytest.skip(f"cannot listen on ::1: {exc}")
        loop = asyncio.get_running_loop()
        try:
            client = Udp(port, "::1")
            client.sock.setblocking(False)
            request, tid = plain_binding()
            await loop.sock_sendall(client.sock, request)
            answer = codec.parse(await asyncio.wait_for(loop.sock_recv(client.sock, 2048), 5))
            mapped = codec.decode_xor_address(answer.get(codec.XOR_MAPPED_ADDRESS), tid)
            assert mapped == client.local
            client.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


# --- runstun, asked by real clients --------------------------------------------


def test_debian_stun_client_gets_its_mapped_address(runstun):
    """Debian's `stun` (stun-client, an RFC 3489 client, no magic cookie) learns
    its mapped address: RFC 8489 §12 backwards compatibility."""
    if shutil.which("stun") is None:
        reason = "Debian's stun-client is not installed (apt-get install stun-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; tests/run.sh installs it")
        pytest.skip(reason)
    result = subprocess.run(
        ["stun", f"127.0.0.1:{runstun}", "-v"], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert "MappedAddress = 127.0.0.1:" in output, output
    assert "ServerName = imserver" in output


def test_aioice_binding_request_gets_xor_mapped_address(runstun):
    """A Binding request from aioice's STUN client is answered with its own
    address in XOR-MAPPED-ADDRESS and the server's SOFTWARE (RFC 8489 §6.3.1)."""

    async def scenario():
        loop = asyncio.get_running_loop()
        server = ("127.0.0.1", runstun)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: aioice_turn.TurnClientUdpProtocol(server, None, None, 600, 300),
            remote_addr=server,
        )
        try:
            request = aioice_stun.Message(
                message_method=aioice_stun.Method.BINDING,
                message_class=aioice_stun.Class.REQUEST,
            )
            response, _ = await asyncio.wait_for(protocol.request(request), 10)
            local = transport.get_extra_info("sockname")
            assert response.attributes["XOR-MAPPED-ADDRESS"] == local
            assert response.attributes["SOFTWARE"] == "imserver"
        finally:
            transport.close()

    asyncio.run(scenario())


def test_binding_request_with_fingerprint_gets_fingerprint(runstun):
    """RFC 8489 §7.3: a request carrying FINGERPRINT (as ICE agents send) is
    answered, and the answer carries one too."""
    client = Udp(runstun)
    tid = os.urandom(12)
    answer = client.ask(codec.build(codec.BINDING, codec.REQUEST, tid))
    parsed = codec.parse(answer)  # raises NotStun on a wrong FINGERPRINT
    assert parsed.has(codec.FINGERPRINT)
    assert codec.decode_xor_address(parsed.get(codec.XOR_MAPPED_ADDRESS), tid) == client.local
    client.close()


def test_truncated_datagrams_are_dropped_and_the_listener_answers_afterwards(runstun):
    """RFC 8489 §6.3: what is not a whole STUN message is discarded silently;
    the next request is answered."""
    client = Udp(runstun)
    request, _ = plain_binding()
    for garbage in (request[:1], request[:12], request[:19], request + b"\x00", os.urandom(300)):
        client.silent(bytes([garbage[0] & 0x3F]) + garbage[1:] if garbage else garbage)
    client.silent(b"\x80" + request[1:])  # the top bits set: RTP/DTLS, not STUN
    client.still_answers()
    client.close()


def test_request_without_magic_cookie_is_answered_the_rfc_3489_way(runstun):
    """RFC 8489 §12: a Binding request with a wrong magic cookie is an RFC 3489
    request: answered with MAPPED-ADDRESS, not XOR-MAPPED-ADDRESS, the 16-byte
    transaction id echoed; other methods without the cookie are dropped."""
    client = Udp(runstun)
    legacy_id = b"\xde\xad\xbe\xef" + os.urandom(12)
    answer = client.ask(b"\x00\x01\x00\x00" + legacy_id)
    assert answer[4:20] == legacy_id
    parsed = codec.parse(answer)
    assert not parsed.magic
    assert codec.decode_address(parsed.get(codec.MAPPED_ADDRESS)) == client.local
    assert not parsed.has(codec.XOR_MAPPED_ADDRESS)
    client.silent(b"\x00\x03\x00\x00" + legacy_id)  # an "Allocate" without the cookie
    client.still_answers()
    client.close()


def test_unknown_comprehension_required_attribute_gets_420(runstun):
    """RFC 8489 §6.3.1: an unknown attribute in 0x0000-0x7FFF gets 420 with
    UNKNOWN-ATTRIBUTES naming it; one in 0x8000-0xFFFF is ignored."""
    client = Udp(runstun)
    tid = os.urandom(12)
    answer = codec.parse(
        client.ask(codec.build(codec.BINDING, codec.REQUEST, tid, [(0x7FF0, b"abcd")]))
    )
    assert answer.cls == codec.ERROR and answer.transaction_id == tid
    assert codec.error_code(answer) == 420
    assert answer.get(codec.UNKNOWN_ATTRIBUTES) == struct.pack("!H", 0x7FF0)
    answer = codec.parse(
        client.ask(codec.build(codec.BINDING, codec.REQUEST, tid, [(0xC0F0, b"abcd")]))
    )
    assert answer.cls == codec.SUCCESS
    client.still_answers()
    client.close()


def test_malformed_request_gets_400(runstun):
    """RFC 8489 §6.3.1: a request whose attributes break the format gets 400."""
    client = Udp(runstun)
    tid = os.urandom(12)
    data = struct.pack("!HHI12sHH", 0x0001, 4, codec.MAGIC_COOKIE, tid, codec.SOFTWARE, 40)
    answer = codec.parse(client.ask(data))
    assert answer.transaction_id == tid and codec.error_code(answer) == 400
    client.still_answers()
    client.close()


def test_unknown_method_gets_400(runstun):
    """RFC 8489 §6.3.1: a request of a method the server does not know gets 400."""
    client = Udp(runstun)
    tid = os.urandom(12)
    answer = codec.parse(client.ask(codec.build(0x0FF, codec.REQUEST, tid)))
    assert codec.error_code(answer) == 400
    client.close()


def test_binding_over_tcp_with_two_messages_in_one_write(runstun):
    """RFC 8489 §6.2.2: over TCP, messages are framed by their length; two in
    one segment get two answers; a non-STUN byte stream is closed."""
    with socket.create_connection(("127.0.0.1", runstun), timeout=5) as sock:
        first, tid1 = plain_binding()
        second, tid2 = plain_binding()
        sock.sendall(first + second[:10])
        time.sleep(0.05)
        sock.sendall(second[10:])
        one, two = read_stream_messages(sock, 2)
        assert (one.transaction_id, two.transaction_id) == (tid1, tid2)
        mapped = codec.decode_xor_address(one.get(codec.XOR_MAPPED_ADDRESS), tid1)
        assert mapped == sock.getsockname()[:2]
    for not_stun in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        with socket.create_connection(("127.0.0.1", runstun), timeout=5) as sock:
            sock.sendall(not_stun)
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass


def test_runstun_stops_on_sigterm(tmp_path):
    """`manage.py runstun` runs on its own and exits 0 on SIGTERM."""
    process, port = start_runstun(tmp_path)
    client = Udp(port)
    client.still_answers()
    client.close()
    assert stop_process(process) == 0


def test_binding_over_tls(tmp_path):
    """RFC 8489 §6.2.3: STUN over TLS (the `stuns` service, XMPP_STUN_TLS_PORT)
    with a certificate like the XMPP one, ALPN `stun.nat-discovery` (RFC 7443)."""
    import ssl

    from xmpp.tls import generate_self_signed

    generate_self_signed("localhost", tmp_path / "cert.pem", tmp_path / "key.pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.set_alpn_protocols(["stun.turn", "stun.nat-discovery"])

    async def scenario():
        server = StunServer(StunService(ServiceSettings(turn_enabled=False)))
        port = free_udp_tcp_port()
        await server.start("127.0.0.1", 0, port, context)
        try:
            client_context = ssl.create_default_context()
            client_context.check_hostname = False
            client_context.verify_mode = ssl.CERT_NONE
            client_context.set_alpn_protocols(["stun.nat-discovery"])
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
            request, tid = plain_binding()
            writer.write(request)
            header = await asyncio.wait_for(reader.readexactly(20), 5)
            body = await reader.readexactly(struct.unpack_from("!H", header, 2)[0])
            answer = codec.parse(header + body)
            local = writer.get_extra_info("sockname")[:2]
            assert codec.decode_xor_address(answer.get(codec.XOR_MAPPED_ADDRESS), tid) == local
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == (
                "stun.nat-discovery"
            )
            writer.close()
        finally:
            await server.stop()

    asyncio.run(scenario())
