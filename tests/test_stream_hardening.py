"""Stream hardening over the wire: stream errors (RFC 6120 §4.9), restricted XML
(§11.1), authentication rules (§6.4.5, §8.1.2.1) and the denial-of-service
limits of §13.12.

Each rule is driven by a raw socket sending what a well-behaved library never
would, and is checked twice: the offending stream ends with the exact stream
error the RFC names, then </stream:stream>, then the connection closes; and a
slixmpp client that logged in before the attack still exchanges a message
afterwards (`survives`). Rules that need other limits than the defaults run
against a private server started with those limits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .clients import STREAM_HEADER, RawStream, connect, disconnect, insecure_context, raw_login
from .conftest import PASSWORD, RunningServer
from .conftest import private_server as shared_private_server
from .scram_client import ScramPlusClient

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NOT_AUTHORIZED = f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode()


# -- what every test checks --------------------------------------------------


def assert_stream_error(stream: RawStream, condition: str, received: bytes = b"") -> bytes:
    """The server ends `stream` with <stream:error><CONDITION/>[<text/>]</stream:error>,
    then </stream:stream>, and closes the connection (RFC 6120 §4.9.1.1); nothing
    follows. `received` is what was already read. Returns everything received."""
    data = received + stream.read_to_close()
    ending = re.compile(
        f'<stream:error><{condition} xmlns="{NS_STREAM_ERRORS}"/>'
        f'(?:<text xmlns="{NS_STREAM_ERRORS}">[^<]*</text>)?'
        "</stream:error></stream:stream>\\Z".encode()
    )
    assert ending.search(data), f"expected <{condition}/> and </stream:stream>, got {data[-400:]!r}"
    return data


async def exchange_message(witness) -> list[str]:
    """`witness` sends a message to its own full JID and gets it back through the
    router, stamped with that JID. Returns the bodies of other messages it got."""
    marker = f"still served {secrets.token_hex(4)}"
    witness.send_message(mto=witness.boundjid.full, mbody=marker)
    others = []
    while True:
        message = await asyncio.wait_for(witness.messages.get(), 10)
        if message["body"] == marker:
            assert message["from"].full == witness.boundjid.full
            return others
        others.append(message["body"])


def survives(server: RunningServer, attack: Callable[[str], Any], witness_user: str = "bob"):
    """Run the blocking `attack(witness_jid)` while a slixmpp client of `witness_user`,
    logged in before it, stays connected. Afterwards the witness is still connected
    and still exchanges a message. Returns (what attack returned, the bodies of the
    other messages the witness received meanwhile)."""

    async def scenario():
        witness = await connect(server, witness_user, f"witness-{secrets.token_hex(4)}")
        try:
            result = await asyncio.to_thread(attack, witness.boundjid.full)
            others = await exchange_message(witness)
            assert not witness.disconnected_event.is_set()
        finally:
            await disconnect(witness)
        return result, others

    return asyncio.run(scenario())


def stream_header(
    to: str = "localhost",
    version: str = "1.0",
    content_ns: str = "jabber:client",
    stream_ns: str = NS_STREAMS,
) -> str:
    return (
        f"<stream:stream to='{to}' version='{version}' "
        f"xmlns='{content_ns}' xmlns:stream='{stream_ns}'>"
    )


def opened(server: RunningServer) -> RawStream:
    """A raw stream on the STARTTLS port whose header the server has answered."""
    stream = RawStream(server)
    stream.open()
    return stream


def attack_opened_stream(server: RunningServer, payload: str | bytes, condition: str):
    """The attack of most rules: open a stream, send `payload`, expect `condition`."""

    def attack(_witness: str) -> bytes:
        stream = opened(server)
        try:
            stream.send(payload)
            return assert_stream_error(stream, condition)
        finally:
            stream.close()

    return attack


def plain_token(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- private servers with other limits ----------------------------------------


def private_server(tmp_path_factory, name: str, **limits: str):
    """conftest's private_server on a SQLite database of its own and the
    in-memory channel layer, whatever the suite runs on."""
    return shared_private_server(tmp_path_factory, name, DATABASE_URL="", REDIS_URL="", **limits)


@pytest.fixture(scope="module")
def small_stanza_server(tmp_path_factory):
    with private_server(tmp_path_factory, "small-stanzas", XMPP_MAX_STANZA_SIZE="4096") as server:
        yield server


@pytest.fixture(scope="module")
def connection_limited_server(tmp_path_factory):
    with private_server(
        tmp_path_factory, "connection-limited", XMPP_MAX_UNAUTHENTICATED_PER_IP="3"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def globally_limited_server(tmp_path_factory):
    with private_server(tmp_path_factory, "globally-limited", XMPP_MAX_CONNECTIONS="3") as server:
        yield server


@pytest.fixture(scope="module")
def auth_timeout_server(tmp_path_factory):
    with private_server(tmp_path_factory, "auth-timeout", XMPP_AUTH_TIMEOUT="1") as server:
        yield server


@pytest.fixture(scope="module")
def slow_failure_server(tmp_path_factory):
    # Failed logins are counted per address over the whole server: a server of
    # its own starts the count at zero.
    with private_server(tmp_path_factory, "slow-failures", XMPP_AUTH_FAILURE_DELAY="0.5") as server:
        yield server


# -- restricted and malformed XML (§11.1, §4.9.3) -----------------------------


def test_malformed_xml_is_not_well_formed(xmpp_server):
    """Mismatched tags end the stream with <not-well-formed/> (RFC 6120 §4.9.3.13)."""
    survives(
        xmpp_server,
        attack_opened_stream(xmpp_server, "<message><body>x</message>", "not-well-formed"),
    )


def test_billion_laughs_dtd_is_restricted_xml(xmpp_server):
    """A DTD with nested entity declarations ("billion laughs") before the stream
    header ends the stream with <restricted-xml/> (RFC 6120 §11.1): no entity is
    expanded, the server's memory does not grow and it goes on serving."""
    entities = "<!ENTITY lol0 'lol'>" + "".join(
        f"<!ENTITY lol{i} '{f'&lol{i - 1};' * 10}'>" for i in range(1, 10)
    )
    payload = (
        f"<?xml version='1.0'?><!DOCTYPE stream:stream [{entities}]>"
        + stream_header()
        + "<message><body>&lol9;</body></message>"
    )
    pid = xmpp_server.process.pid
    before = rss_kib(pid)

    def attack(_witness: str) -> None:
        stream = RawStream(xmpp_server)
        try:
            stream.send(payload)
            assert_stream_error(stream, "restricted-xml")
        finally:
            stream.close()

    survives(xmpp_server, attack)
    assert xmpp_server.process.poll() is None
    assert rss_kib(pid) - before < 20 * 1024


def test_comment_is_restricted_xml(xmpp_server):
    """An XML comment ends the stream with <restricted-xml/> (RFC 6120 §11.1)."""
    survives(
        xmpp_server,
        attack_opened_stream(xmpp_server, "<!-- a comment -->", "restricted-xml"),
    )


def test_processing_instruction_is_restricted_xml(xmpp_server):
    """A processing instruction ends the stream with <restricted-xml/> (RFC 6120 §11.1)."""
    survives(
        xmpp_server,
        attack_opened_stream(xmpp_server, "<?xml-stylesheet href='x'?>", "restricted-xml"),
    )


def test_undefined_entity_reference_is_restricted_xml(xmpp_server):
    """A reference to an entity other than the five predefined ones ends the stream
    with <restricted-xml/>: RFC 6120 §11.1 forbids "internal or external entity
    references (...) with the exception of the predefined entities", and
    §4.9.3.18 names "XML entity reference" among the restricted features."""
    survives(
        xmpp_server,
        attack_opened_stream(
            xmpp_server, "<message><body>&xxe;</body></message>", "restricted-xml"
        ),
    )


# -- size and depth limits (§13.12) -------------------------------------------


def test_oversized_stanza_is_policy_violation(small_stanza_server):
    """A stanza larger than XMPP_MAX_STANZA_SIZE (here 4096 bytes) ends the stream
    with <policy-violation/> (RFC 6120 §4.9.3.14, §13.12), also when it arrives
    whole in one read, and is not delivered."""

    def attack(witness: str) -> bytes:
        stream = raw_login(small_stanza_server, "alice", "oversized")
        try:
            stream.send(f"<message to='{witness}'><body>{'x' * 8000}</body></message>")
            return assert_stream_error(stream, "policy-violation")
        finally:
            stream.close()

    _, others = survives(small_stanza_server, attack)
    assert not any(body.startswith("xxx") for body in others)


def test_never_ending_open_tag_is_policy_violation(small_stanza_server):
    """An open tag that never ends with '>' cannot grow without bound: past
    XMPP_MAX_STANZA_SIZE the stream ends with <policy-violation/>."""

    def attack(_witness: str) -> bytes:
        stream = opened(small_stanza_server)
        try:
            stream.send("<message to='")
            for _ in range(8):
                try:
                    stream.send("a" * 1024)
                except OSError:
                    break  # the server has closed: what it sent is still readable
            return assert_stream_error(stream, "policy-violation")
        finally:
            stream.close()

    survives(small_stanza_server, attack)


def test_too_deep_nesting_is_policy_violation(xmpp_server):
    """Elements nested deeper than XMPP_MAX_DEPTH (64) end the stream with
    <policy-violation/> (RFC 6120 §13.12)."""
    survives(
        xmpp_server,
        attack_opened_stream(xmpp_server, "<message>" + "<x>" * 100, "policy-violation"),
    )


# -- negotiation (§4.7, §5, §6) ------------------------------------------------


def test_stanza_before_authentication_is_not_authorized(xmpp_server):
    """A stanza sent after STARTTLS but before SASL ends the stream with
    <not-authorized/> (RFC 6120 §4.9.3.12) and is not delivered."""

    def attack(witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.starttls()
            stream.send(f"<message to='{witness}'><body>before auth</body></message>")
            return assert_stream_error(stream, "not-authorized")
        finally:
            stream.close()

    _, others = survives(xmpp_server, attack)
    assert "before auth" not in others


def test_sasl_before_required_starttls_is_encryption_required(xmpp_server):
    """When TLS is required (<starttls><required/></starttls>, RFC 6120 §5.3.1),
    SASL before STARTTLS fails with <encryption-required/> (§6.5.3), the password
    sent in the clear is not accepted, and the stream can still go on to STARTTLS."""
    auth = f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain_token('alice', PASSWORD)}</auth>"

    def attack(_witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.open()
            stream.send(auth)
            data = stream.read_until(b"</failure>")
            assert b"<encryption-required/>" in data
            assert b"<success" not in data
            stream.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            stream.read_until(b"<proceed")
            return data
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_stanza_before_required_starttls_is_policy_violation(xmpp_server):
    """Anything but STARTTLS (or a SASL attempt) before the required TLS ends the
    stream with <policy-violation/> (RFC 6120 §5.3.1, §4.9.3.14)."""
    message = "<message to='bob@localhost'><body>in the clear</body></message>"
    survives(xmpp_server, attack_opened_stream(xmpp_server, message, "policy-violation"))


def test_wrong_stream_namespace_is_invalid_namespace(xmpp_server):
    """A stream header not qualified by 'http://etherx.jabber.org/streams' ends the
    stream with <invalid-namespace/> (RFC 6120 §4.8.1, §4.9.3.10)."""

    def attack(_witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.send(stream_header(stream_ns="urn:example:not-streams"))
            return assert_stream_error(stream, "invalid-namespace")
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_wrong_content_namespace_is_invalid_namespace(xmpp_server):
    """A client stream whose content namespace is not 'jabber:client' ends with
    <invalid-namespace/> (RFC 6120 §4.8.2, §4.9.3.10)."""

    def attack(_witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.send(stream_header(content_ns="jabber:server"))
            return assert_stream_error(stream, "invalid-namespace")
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_unknown_to_host_is_host_unknown(xmpp_server):
    """A stream header 'to' a domain the server does not serve ends the stream
    with <host-unknown/> (RFC 6120 §4.7.2, §4.9.3.6)."""

    def attack(_witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.send(stream_header(to="example.org"))
            return assert_stream_error(stream, "host-unknown")
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_unsupported_version_is_unsupported_version(xmpp_server):
    """version='2.0' ends the stream with <unsupported-version/> (RFC 6120 §4.7.5,
    §4.9.3.25): the server speaks XMPP 1.x only."""

    def attack(_witness: str) -> bytes:
        stream = RawStream(xmpp_server)
        try:
            stream.send(stream_header(version="2.0"))
            return assert_stream_error(stream, "unsupported-version")
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_spoofed_from_is_invalid_from(xmpp_server):
    """A client that stamps another user's JID as 'from' has its stream ended with
    <invalid-from/> (RFC 6120 §8.1.2.1, §4.9.3.9), and the stanza is not delivered."""

    def attack(witness: str) -> bytes:
        stream = raw_login(xmpp_server, "alice", "spoofer")
        try:
            stream.send(
                f"<message from='bob@localhost/x' to='{witness}'><body>spoofed</body></message>"
            )
            return assert_stream_error(stream, "invalid-from")
        finally:
            stream.close()

    _, others = survives(xmpp_server, attack, witness_user="bob")
    assert "spoofed" not in others


def test_the_oldest_unauthenticated_connection_is_closed_over_the_per_address_cap(
    connection_limited_server,
):
    """With XMPP_MAX_UNAUTHENTICATED_PER_IP=3, a 4th unauthenticated connection
    from the address is served, and the OLDEST unauthenticated one is ended with
    <policy-violation/> (RFC 6120 §4.9.3.18, §13.12); the others carry on. The
    witness, authenticated, is not counted."""
    server = connection_limited_server

    def attack(_witness: str) -> None:
        streams = [opened(server) for _ in range(3)]
        try:
            newest = RawStream(server)
            streams.append(newest)
            assert b"<stream:features" in newest.open()
            assert_stream_error(streams[0], "policy-violation")
            # The two in between are still served: they negotiate TLS.
            for stream in streams[1:]:
                stream.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                assert b"<proceed" in stream.read_until(b"<proceed")
        finally:
            for stream in streams:
                stream.close()

    survives(server, attack)


def test_connections_over_the_global_cap_are_refused(globally_limited_server):
    """With XMPP_MAX_CONNECTIONS=3, a 4th connection to the server is closed at
    once, before any XML (RFC 6120 §13.12); once one is closed, a new one is
    served again."""
    server = globally_limited_server

    def attack(_witness: str) -> None:
        # The witness is the first connection.
        streams = [opened(server), opened(server)]
        try:
            refused = RawStream(server)
            try:
                try:
                    refused.send(STREAM_HEADER.format(domain=server.domain))
                except OSError:
                    pass  # reset already
                assert refused.read_to_close() == b""
            finally:
                refused.close()
        finally:
            for stream in streams:
                stream.close()
        # The closed connections are released: a new one is served again.
        deadline = time.monotonic() + 5
        while True:
            stream = RawStream(server)
            try:
                stream.open()
                return
            except (ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                stream.close()

    survives(server, attack)


def test_unauthenticated_stream_times_out_with_connection_timeout(auth_timeout_server):
    """A stream that has not authenticated within XMPP_AUTH_TIMEOUT (here 1 s) is
    ended with <connection-timeout/> (RFC 6120 §4.9.3.4, §13.12)."""

    def attack(_witness: str) -> float:
        started = time.monotonic()
        stream = opened(auth_timeout_server)
        try:
            assert_stream_error(stream, "connection-timeout")
            return time.monotonic() - started
        finally:
            stream.close()

    elapsed, _ = survives(auth_timeout_server, attack)
    assert 0.5 <= elapsed < 5


def test_failed_logins_are_slowed_then_closed_with_policy_violation(slow_failure_server):
    """A wrong password is answered <failure><not-authorized/></failure> (RFC 6120
    §6.5.10); failures from one address on one account are answered more and
    more slowly (XMPP_AUTH_FAILURE_DELAY 0.5 s, doubling), and after the 3rd
    failure the stream is ended with <policy-violation/> (§6.4.5: 2 to 5
    retries). Another account's failure from the same address is not slowed."""

    def attack(_witness: str) -> list[float]:
        stream = RawStream(slow_failure_server)
        try:
            stream.starttls()
            delays, data = [], b""
            for attempt in range(3):
                started = time.monotonic()
                token = plain_token("alice", f"wrong password {attempt}")
                stream.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
                data = stream.read_until(SASL_NOT_AUTHORIZED)
                delays.append(time.monotonic() - started)
                if attempt < 2:
                    assert b"stream:error" not in data
            assert_stream_error(stream, "policy-violation", data.split(SASL_NOT_AUTHORIZED)[-1])
            return delays
        finally:
            stream.close()

    (first, second, third), _ = survives(slow_failure_server, attack)
    assert first < 0.4
    assert second >= 0.45
    assert third >= 0.95
    assert third > second > first
    # Someone else behind the same address mistypes bob's password: answered at once.
    assert wrong_password_delay(slow_failure_server, "bob") < 0.4


def wrong_password_delay(server: RunningServer, user: str, source: str = "") -> float:
    """One wrong PLAIN password for `user` (from `source`); the seconds until
    the answer, which must be <not-authorized/> and nothing else."""
    stream = RawStream(server, source=source)
    try:
        stream.starttls()
        token = plain_token(user, "not the password")
        started = time.monotonic()
        stream.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        answer = stream.read_until("</failure>|<success")
        elapsed = time.monotonic() - started
        assert answer.endswith(SASL_NOT_AUTHORIZED), answer
        return elapsed
    finally:
        stream.close()


def test_an_account_guessed_at_from_many_addresses_is_slowed(slow_failure_server):
    """Failures on one account add up across addresses too, with a higher
    threshold: the first 10 within 300 s, each from an address of its own, are
    answered at once; the 11th and 12th wait XMPP_AUTH_FAILURE_DELAY, then twice
    that. An account that does not exist is counted the same way (its name is
    what is counted), and every answer is <not-authorized/>."""
    delays = [
        wrong_password_delay(slow_failure_server, "nobody", source=f"127.0.0.{10 + i}")
        for i in range(12)
    ]
    assert max(delays[:10]) < 0.4, delays
    assert delays[10] >= 0.45, delays
    assert delays[11] >= 0.95, delays


def test_data_after_starttls_in_the_same_packet_is_discarded(xmpp_server):
    """Bytes sent in the clear after <starttls/>, in the same packet, are not
    processed after the TLS handshake (RFC 6120 §5.4.3.3: both parties discard
    what preceded the new stream): an injected <auth/> authenticates nothing,
    so a stanza over the new stream is <not-authorized/>, and an injected
    stanza is not delivered."""

    def attack(witness: str) -> bytes:
        stream = opened(xmpp_server)
        try:
            stream.send(
                f"<starttls xmlns='{NS_TLS}'/>"
                f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain_token('alice', PASSWORD)}</auth>"
                f"<message to='{witness}'><body>injected</body></message>"
            )
            answer = stream.read_until(b"<proceed")
            assert b"<success" not in answer and b"<failure" not in answer
            stream.buffer = b""
            stream.sock = insecure_context().wrap_socket(stream.sock, server_hostname="localhost")
            features = stream.open()
            assert b"<mechanisms" in features
            assert b"urn:ietf:params:xml:ns:xmpp-bind" not in features
            stream.send(f"<message to='{witness}'><body>after tls</body></message>")
            return assert_stream_error(stream, "not-authorized")
        finally:
            stream.close()

    _, others = survives(xmpp_server, attack)
    assert "injected" not in others and "after tls" not in others


# -- SCRAM with channel binding (RFC 5802, RFC 5929) --------------------------


def sasl_payload(data: bytes, element: str) -> bytes:
    match = re.search(f"<{element} [^>]*>([^<]*)</{element}>".encode(), data)
    assert match, f"no <{element}/> in {data!r}"
    return base64.b64decode(match.group(1))


def scram_plus_exchange(stream: RawStream, cb_data: bytes) -> tuple[ScramPlusClient, bytes]:
    """Run SCRAM-SHA-256-PLUS as alice over `stream` (after STARTTLS); return the
    client and the server's last answer (<success/> or <failure/>)."""
    client = ScramPlusClient("SHA-256", "alice", PASSWORD, b"p=tls-server-end-point,,", cb_data)
    first = base64.b64encode(client.first()).decode()
    stream.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>")
    server_first = sasl_payload(stream.read_until(b"</challenge>"), "challenge")
    final = base64.b64encode(client.final(server_first)).decode()
    stream.send(f"<response xmlns='{NS_SASL}'>{final}</response>")
    return client, stream.read_until("</success>|</failure>")


def tls_server_end_point(stream: RawStream) -> bytes:
    """RFC 5929 §4.1: the hash of the server's certificate, with SHA-256 for a
    certificate signed with SHA-256 (the test server's is ECDSA with SHA-256)."""
    return hashlib.sha256(stream.sock.getpeercert(binary_form=True)).digest()


def test_scram_sha_256_plus_with_tls_server_end_point_succeeds(xmpp_server):
    """SCRAM-SHA-256-PLUS with the 'tls-server-end-point' binding of the connection
    (the SHA-256 of the server certificate) succeeds, the server's signature in
    <success/> verifies (RFC 5802 §5.1), and the session can bind and close."""

    def attack(_witness: str) -> None:
        stream = RawStream(xmpp_server)
        try:
            features = stream.starttls()
            assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in features
            assert b'type="tls-server-end-point"' in features
            client, answer = scram_plus_exchange(stream, tls_server_end_point(stream))
            server_final = sasl_payload(answer, "success")
            assert server_final == b"v=" + base64.b64encode(client.server_signature)
            assert b"xmpp-bind" in stream.open()
            stream.send(
                "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>scram-plus</resource></bind></iq>"
            )
            assert b"alice@localhost/scram-plus" in stream.read_until(b"</iq>")
            stream.send("</stream:stream>")
            assert stream.read_to_close().endswith(b"</stream:stream>")
        finally:
            stream.close()

    survives(xmpp_server, attack)


def test_scram_sha_256_plus_with_wrong_channel_binding_is_not_authorized(xmpp_server):
    """SCRAM-SHA-256-PLUS with binding data other than the connection's (as a
    man in the middle with another certificate would send) fails with
    <failure><not-authorized/></failure> (RFC 5802 §6, RFC 6120 §6.5.10)."""

    def attack(_witness: str) -> None:
        stream = RawStream(xmpp_server)
        try:
            stream.starttls()
            wrong = bytes(b ^ 0xFF for b in tls_server_end_point(stream))
            _, answer = scram_plus_exchange(stream, wrong)
            assert answer.endswith(SASL_NOT_AUTHORIZED)
            assert b"<success" not in answer
        finally:
            stream.close()

    survives(xmpp_server, attack)
