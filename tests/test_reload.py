"""SIGHUP reloads without dropping a session (xmpp/reload.py): the TLS
certificate for new connections (XMPP and HTTPS), while open connections keep
theirs and their tls-server-end-point binding (RFC 5929 §4.1); and the
run-time settings stored by the console. A broken certificate keeps the old."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import signal
import socket
import ssl
import time
from pathlib import Path

from xmpp.tls import generate_self_signed

from .clients import RawStream, connect, disconnect, insecure_context
from .conftest import PASSWORD, RunningServer, start_server, stop_server
from .scram_client import ScramSha256Client

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
RELOADED = "SIGHUP: reloaded"


def start_with_certificate(tmp_path: Path, **env: str) -> tuple[RunningServer, Path, Path]:
    cert, key = tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    generate_self_signed("localhost", cert, key)
    server = start_server(
        tmp_path / "server",
        XMPP_TLS_CERT=str(cert),
        XMPP_TLS_KEY=str(key),
        **env,
    )
    server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
    return server, cert, key


def sighup_and_wait(server: RunningServer, times_reloaded: int, timeout: float = 15) -> str:
    """SIGHUP, then wait for the reload's log line; returns the log."""
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if log.count(RELOADED) >= times_reloaded:
            return log
        assert server.process.poll() is None, log
        time.sleep(0.1)
    raise AssertionError(f"no reload line in:\n{server.log()}")


def direct_tls_certificate(server: RunningServer) -> bytes:
    """The DER certificate a new direct TLS (XEP-0368) connection is shown."""
    with socket.create_connection((server.host, server.tls_port), timeout=10) as raw:
        with insecure_context().wrap_socket(raw, server_hostname=server.domain) as tls:
            return tls.getpeercert(binary_form=True)


def https_certificate(server: RunningServer, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((server.host, server.https_port), timeout=10) as raw:
                with insecure_context().wrap_socket(raw, server_hostname=server.domain) as tls:
                    return tls.getpeercert(binary_form=True)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def file_certificate(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def scram_plus_login(stream: RawStream, user: str, certificate: bytes) -> bytes:
    """SCRAM-SHA-256-PLUS with tls-server-end-point (RFC 5802 §6, RFC 5929 §4.1:
    SHA-256 of `certificate`, ECDSA-SHA256 here) on a stream already under TLS;
    returns the server's answer to the proof."""
    cb_header = "p=tls-server-end-point,,"
    binding = base64.b64encode(cb_header.encode() + hashlib.sha256(certificate).digest())
    scram = ScramSha256Client(user, PASSWORD)
    first = base64.b64encode((cb_header + scram.first_bare).encode()).decode()
    stream.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>")
    challenge = stream.read_until(b"</challenge>").decode()
    server_first = re.search(r">([^<]+)</challenge>", challenge).group(1)
    final = scram.final_message(server_first, channel_binding=binding.decode())
    stream.send(f"<response xmlns='{NS_SASL}'>{final}</response>")
    return stream.read_until("</success>|<success[^>]*/>|</failure>")


def test_sighup_gives_new_connections_the_new_certificate_and_keeps_sessions(tmp_path):
    """After the certificate files are replaced and SIGHUP is sent: a session
    logged in before still sends messages, a stream whose TLS began before
    binds SCRAM-PLUS to the certificate it was shown, new direct TLS and HTTPS
    connections see the new certificate, the log says what was reloaded, and
    the process keeps running."""
    server, cert, key = start_with_certificate(tmp_path)
    try:
        old = file_certificate(cert)
        assert direct_tls_certificate(server) == old
        assert https_certificate(server) == old

        async def scenario() -> tuple[str, bytes]:
            alice = await connect(server, "alice", "before-reload")
            early = RawStream(server)
            try:
                features = await asyncio.to_thread(early.starttls)
                assert b"SCRAM-SHA-256-PLUS" in features
                shown = early.sock.getpeercert(binary_form=True)
                generate_self_signed("localhost", cert, key)
                log = await asyncio.to_thread(sighup_and_wait, server, 1)
                bob = await connect(server, "bob", "after-reload")
                try:
                    alice.send_message(mto=server.jid("bob"), mbody="still here", mtype="chat")
                    message = await asyncio.wait_for(bob.messages.get(), 10)
                    assert message["body"] == "still here"
                    assert message["from"].full == server.jid("alice", "before-reload")
                finally:
                    await disconnect(bob)
                answer = await asyncio.to_thread(scram_plus_login, early, "alice", shown)
                return log, answer
            finally:
                early.close()
                await disconnect(alice)

        log, answer = asyncio.run(scenario())
        assert b"<success" in answer, answer
        new = file_certificate(cert)
        assert new != old
        assert direct_tls_certificate(server) == new
        assert https_certificate(server) == new
        reload_line = next(line for line in log.splitlines() if RELOADED in line)
        assert " INFO " in reload_line
        assert "reloaded XMPP TLS certificate" in reload_line
        assert "HTTPS certificate" in reload_line
        assert "run-time settings" in reload_line
        assert server.process.poll() is None
    finally:
        stop_server(server)


def test_sighup_with_a_broken_certificate_keeps_the_old_one(tmp_path):
    """A certificate file that does not parse on SIGHUP: an error is logged, new
    connections still get the old certificate, and the server keeps running."""
    server, cert, _key = start_with_certificate(tmp_path)
    try:
        old = file_certificate(cert)
        assert https_certificate(server) == old
        cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        log = sighup_and_wait(server, 1)
        assert re.search(r" ERROR \S+: SIGHUP: could not reload the XMPP TLS certificate", log)
        assert re.search(r" ERROR \S+: SIGHUP: could not reload the HTTPS certificate", log)
        assert "kept the old XMPP TLS certificate, HTTPS certificate" in log
        assert direct_tls_certificate(server) == old
        assert https_certificate(server) == old
        assert server.process.poll() is None

        async def login() -> bool:
            client = await connect(server, "alice", "after-broken-reload")
            await disconnect(client)
            return True

        assert asyncio.run(login())
    finally:
        stop_server(server)


def test_sighup_applies_run_time_settings_changed_in_the_database(tmp_path):
    """A message of the day stored as a ServerSetting row by another process takes
    effect on SIGHUP (not before): the next login gets it."""
    server, _cert, _key = start_with_certificate(tmp_path)
    try:
        server.manage(
            "shell",
            "-c",
            "from admin_ui.models import ServerSetting; "
            "ServerSetting.objects.create(name='XMPP_MOTD', value='Reloaded greeting')",
        )

        async def login(resource: str, wait: float) -> str | None:
            client = await connect(server, "alice", resource)
            try:
                message = await asyncio.wait_for(client.messages.get(), wait)
                return message["body"]
            except TimeoutError:
                return None
            finally:
                await disconnect(client)

        before = asyncio.run(login("before", 1.5))
        assert before is None, server.log()
        log = sighup_and_wait(server, 1)
        assert "run-time settings (XMPP_MOTD)" in log, log
        after = asyncio.run(login("after", 10))
        assert after == "Reloaded greeting", server.log()
    finally:
        stop_server(server)
