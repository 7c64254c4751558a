"""HTTPS and wss:// (RFC 7395 over TLS) on the HTTPS port, with the server's
certificate, against the server the fixture started."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect as ws_connect

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def no_verify_context() -> ssl.SSLContext:
    """The fixture's certificate is self-signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for_https(server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.https_port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_wss_stream_is_secure_and_offers_plain(xmpp_server):
    """Over wss:// the stream counts as secure (no STARTTLS on a WebSocket):
    PLAIN is offered beside SCRAM, unlike over ws://."""
    wait_for_https(xmpp_server)
    with ws_connect(
        f"wss://127.0.0.1:{xmpp_server.https_port}/xmpp-websocket",
        subprotocols=["xmpp"],
        ssl=no_verify_context(),
        open_timeout=10,
    ) as ws:
        assert ws.subprotocol == "xmpp"
        ws.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
        opened = ws.recv(timeout=10)
        assert opened.startswith(f"<open xmlns='{NS_FRAMING}'")
        features = ws.recv(timeout=10)
        assert "<mechanism>PLAIN</mechanism>" in features
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in features
        assert "starttls" not in features


def test_admin_over_https(xmpp_server):
    """The admin is served on the HTTPS port too, with the server's certificate."""
    wait_for_https(xmpp_server)
    context = no_verify_context()
    url = f"https://127.0.0.1:{xmpp_server.https_port}/admin/login/"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        assert response.status == 200
        assert b"csrfmiddlewaretoken" in response.read()
    with socket.create_connection(("127.0.0.1", xmpp_server.https_port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            certificate = tls.getpeercert(binary_form=True)
    cert_file = xmpp_server.env.get("XMPP_TLS_CERT") or xmpp_server.data_dir / "localhost.crt"
    leaf = Path(cert_file).read_text().split("-----END CERTIFICATE-----")[0]
    assert (
        ssl.DER_cert_to_PEM_cert(certificate).strip()
        == leaf.strip() + "\n-----END CERTIFICATE-----"
    )
