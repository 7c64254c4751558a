"""SCRAM-*-PLUS channel binding over real TLS connections, TLS 1.2 and 1.3.

RFC 5802 §6: a server offering -PLUS MUST implement tls-unique; RFC 9266 §1:
tls-unique is not defined for TLS 1.3, where this server binds with
tls-server-end-point (RFC 5929 §4) only. XEP-0440: <sasl-channel-binding/>
lists exactly the types the connection supports. The client's TLS version is
forced with its SSLContext; the binding data is what the client's own TLS
stack computes for the connection, so the server is checked against an
independent side.
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import xml.etree.ElementTree as ET

import pytest

from .clients import RawStream, insecure_context
from .conftest import PASSWORD, RunningServer, start_server, stop_server
from .scram_client import ScramPlusClient

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
TLS_1_2 = ssl.TLSVersion.TLSv1_2
TLS_1_3 = ssl.TLSVersion.TLSv1_3
HASHES = ["SHA-1", "SHA-256"]


def tls_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context that speaks exactly `version`."""
    context = insecure_context()
    context.minimum_version = version
    context.maximum_version = version
    return context


def secure_stream(server: RunningServer, version: ssl.TLSVersion, direct_tls: bool = False):
    """A stream over TLS `version` (STARTTLS, or XEP-0368 direct TLS) and the
    stream features the server offers on it."""
    stream = RawStream(server, direct_tls=direct_tls, tls_context=tls_context(version))
    features = stream.open() if direct_tls else stream.starttls()
    assert stream.sock.version() == version.name.replace("v1_", "v1.")
    return stream, features


def advertised_binding_types(features: bytes) -> list[str]:
    """The types in XEP-0440 <sasl-channel-binding/>, in the order sent."""
    root = ET.fromstring(
        re.search(rb"<stream:features.*</stream:features>", features, re.S)
        .group(0)
        .replace(b"<stream:features", b"<features xmlns:stream='s'", 1)
        .replace(b"</stream:features>", b"</features>")
    )
    found = root.findall(f"{{{NS_SASL_CB}}}sasl-channel-binding/{{{NS_SASL_CB}}}channel-binding")
    return [el.get("type") for el in found]


def tls_server_end_point(stream: RawStream) -> bytes:
    """RFC 5929 §4.1: SHA-256 of the server's certificate (ECDSA with SHA-256)."""
    return hashlib.sha256(stream.sock.getpeercert(binary_form=True)).digest()


def sasl_payload(data: bytes, element: str) -> bytes:
    match = re.search(f"<{element} [^>]*>([^<]*)</{element}>".encode(), data)
    assert match, f"no <{element}/> in {data!r}"
    return base64.b64decode(match.group(1))


def scram_exchange(stream: RawStream, mechanism: str, client: ScramPlusClient) -> bytes:
    """Run `client` through SASL `mechanism`; return the server's last answer,
    <success/> or <failure/> (which may come right after <auth/>)."""
    first = base64.b64encode(client.first()).decode()
    stream.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{first}</auth>")
    answer = stream.read_until("</challenge>|</failure>")
    if b"</failure>" in answer:
        return answer
    final = base64.b64encode(client.final(sasl_payload(answer, "challenge"))).decode()
    stream.send(f"<response xmlns='{NS_SASL}'>{final}</response>")
    return stream.read_until("</success>|</failure>")


def assert_logged_in(stream: RawStream, client: ScramPlusClient, answer: bytes) -> None:
    """<success/> carries the server signature the client expects (RFC 5802 §5.1),
    and the restarted stream binds a resource."""
    assert sasl_payload(answer, "success") == b"v=" + base64.b64encode(client.server_signature)
    assert b"xmpp-bind" in stream.open()
    stream.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>channel-binding</resource></bind></iq>"
    )
    assert b"alice@localhost/channel-binding" in stream.read_until(b"</iq>")


def assert_not_authorized(answer: bytes) -> None:
    assert re.search(rb"<failure [^>]*><not-authorized/></failure>\Z", answer), answer
    assert b"<success" not in answer


@pytest.fixture(scope="module")
def failing_logins_server(tmp_path_factory):
    """A server of its own, failed logins not slowed, for the tests that must
    fail: the server counts failures per address (xmpp/server.py), so on the
    shared server they would slow every later failure from 127.0.0.1."""
    data_dir = tmp_path_factory.mktemp("channel-binding-failures")
    server = start_server(data_dir, XMPP_AUTH_FAILURE_DELAY="0")
    try:
        server.manage("register", "alice", PASSWORD)
        yield server
    finally:
        stop_server(server)


# -- XEP-0440: which types each TLS version advertises --------------------------


def test_tls_1_2_advertises_tls_unique_and_tls_server_end_point(xmpp_server):
    """Over TLS 1.2 both bindings are listed, and the -PLUS mechanisms offered."""
    stream, features = secure_stream(xmpp_server, TLS_1_2)
    try:
        assert sorted(advertised_binding_types(features)) == ["tls-server-end-point", "tls-unique"]
        assert b"<mechanism>SCRAM-SHA-1-PLUS</mechanism>" in features
        assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in features
    finally:
        stream.close()


def test_tls_1_3_advertises_only_tls_server_end_point(xmpp_server):
    """Over TLS 1.3 tls-unique does not exist (RFC 9266 §1), so it is not listed."""
    stream, features = secure_stream(xmpp_server, TLS_1_3)
    try:
        assert advertised_binding_types(features) == ["tls-server-end-point"]
        assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in features
    finally:
        stream.close()


def test_direct_tls_1_2_advertises_tls_unique_too(xmpp_server):
    """XEP-0368 direct TLS gives the same bindings as STARTTLS."""
    stream, features = secure_stream(xmpp_server, TLS_1_2, direct_tls=True)
    try:
        assert sorted(advertised_binding_types(features)) == ["tls-server-end-point", "tls-unique"]
    finally:
        stream.close()


# -- binding and logging in -----------------------------------------------------


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("hash_name", HASHES)
def test_scram_plus_with_tls_unique_over_tls_1_2_logs_in(xmpp_server, hash_name, direct_tls):
    """SCRAM-SHA-1-PLUS and SCRAM-SHA-256-PLUS bound with tls-unique (RFC 5929 §3)
    succeed over TLS 1.2, and the session binds."""
    stream, _ = secure_stream(xmpp_server, TLS_1_2, direct_tls)
    try:
        cb_data = stream.sock.get_channel_binding("tls-unique")
        client = ScramPlusClient(hash_name, "alice", PASSWORD, b"p=tls-unique,,", cb_data)
        answer = scram_exchange(stream, f"SCRAM-{hash_name}-PLUS", client)
        assert_logged_in(stream, client, answer)
    finally:
        stream.close()


def test_tls_unique_of_a_resumed_tls_1_2_session_logs_in(xmpp_server):
    """On an abbreviated handshake the first Finished is the server's (RFC 5929
    §3.1); both sides still agree on tls-unique."""
    context = tls_context(TLS_1_2)
    first = RawStream(xmpp_server, direct_tls=True, tls_context=context)
    first.open()
    session = first.sock.session
    first.close()
    stream = RawStream(xmpp_server)
    try:
        stream.open()
        stream.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        stream.read_until(b"<proceed")
        stream.sock = context.wrap_socket(
            stream.sock, server_hostname=xmpp_server.domain, session=session
        )
        assert stream.sock.session_reused
        stream.open()
        cb_data = stream.sock.get_channel_binding("tls-unique")
        client = ScramPlusClient("SHA-256", "alice", PASSWORD, b"p=tls-unique,,", cb_data)
        assert_logged_in(stream, client, scram_exchange(stream, "SCRAM-SHA-256-PLUS", client))
    finally:
        stream.close()


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_a_tls_1_3_session_resumes_from_the_servers_ticket(xmpp_server, direct_tls):
    """The server sends a TLS 1.3 session ticket (RFC 8446 §4.6.1) with its first
    answer after the handshake; a later connection resumes with it and logs in."""
    context = tls_context(TLS_1_3)
    first = RawStream(xmpp_server, direct_tls=direct_tls, tls_context=context)
    first.open() if direct_tls else first.starttls()
    session = first.sock.session
    first.close()
    assert session is not None and session.has_ticket
    stream = RawStream(xmpp_server)
    try:
        stream.open()
        stream.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        stream.read_until(b"<proceed")
        stream.sock = context.wrap_socket(
            stream.sock, server_hostname=xmpp_server.domain, session=session
        )
        stream.open()
        assert stream.sock.session_reused
        client = ScramPlusClient(
            "SHA-256", "alice", PASSWORD, b"p=tls-server-end-point,,", tls_server_end_point(stream)
        )
        assert_logged_in(stream, client, scram_exchange(stream, "SCRAM-SHA-256-PLUS", client))
    finally:
        stream.close()


@pytest.mark.parametrize("version", [TLS_1_2, TLS_1_3], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("hash_name", HASHES)
def test_scram_plus_with_tls_server_end_point_logs_in(xmpp_server, hash_name, version):
    """tls-server-end-point binds on both TLS versions."""
    stream, _ = secure_stream(xmpp_server, version)
    try:
        cb_data = tls_server_end_point(stream)
        gs2_header = b"p=tls-server-end-point,,"
        client = ScramPlusClient(hash_name, "alice", PASSWORD, gs2_header, cb_data)
        answer = scram_exchange(stream, f"SCRAM-{hash_name}-PLUS", client)
        assert_logged_in(stream, client, answer)
    finally:
        stream.close()


# -- what must fail --------------------------------------------------------------


def test_tls_unique_over_tls_1_3_is_not_authorized(failing_logins_server):
    """p=tls-unique on TLS 1.3 names a binding the connection does not have:
    <not-authorized/> (RFC 5802 §6), even with the value a TLS library computes."""
    stream, _ = secure_stream(failing_logins_server, TLS_1_3)
    try:
        cb_data = stream.sock.get_channel_binding("tls-unique") or b""
        client = ScramPlusClient("SHA-256", "alice", PASSWORD, b"p=tls-unique,,", cb_data)
        assert_not_authorized(scram_exchange(stream, "SCRAM-SHA-256-PLUS", client))
    finally:
        stream.close()


@pytest.mark.parametrize("hash_name", HASHES)
def test_wrong_tls_unique_is_not_authorized(failing_logins_server, hash_name):
    """tls-unique data other than the connection's (a man in the middle's own
    TLS connection) fails with <not-authorized/>."""
    stream, _ = secure_stream(failing_logins_server, TLS_1_2)
    try:
        wrong = bytes(b ^ 0xFF for b in stream.sock.get_channel_binding("tls-unique"))
        client = ScramPlusClient(hash_name, "alice", PASSWORD, b"p=tls-unique,,", wrong)
        assert_not_authorized(scram_exchange(stream, f"SCRAM-{hash_name}-PLUS", client))
    finally:
        stream.close()


def test_end_point_data_under_the_tls_unique_name_is_not_authorized(failing_logins_server):
    """The data must be that of the type named in the gs2 header."""
    stream, _ = secure_stream(failing_logins_server, TLS_1_2)
    try:
        cb_data = tls_server_end_point(stream)
        client = ScramPlusClient("SHA-256", "alice", PASSWORD, b"p=tls-unique,,", cb_data)
        assert_not_authorized(scram_exchange(stream, "SCRAM-SHA-256-PLUS", client))
    finally:
        stream.close()


@pytest.mark.parametrize("version", [TLS_1_2, TLS_1_3], ids=["tls1.2", "tls1.3"])
def test_y_flag_while_plus_is_offered_is_not_authorized(failing_logins_server, version):
    """RFC 5802 §6: "y" (the client could bind but thinks the server cannot) on a
    connection where the server offered -PLUS means -PLUS was stripped on the
    way: authentication fails."""
    stream, features = secure_stream(failing_logins_server, version)
    try:
        assert b"<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in features
        client = ScramPlusClient("SHA-256", "alice", PASSWORD, b"y,,")
        assert_not_authorized(scram_exchange(stream, "SCRAM-SHA-256", client))
    finally:
        stream.close()
