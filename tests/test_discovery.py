"""XEP-0156 discovery at /.well-known/host-meta(.json), over real HTTP against
the server the fixture started, and the link building on its own."""

from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from django.test import RequestFactory, override_settings

from xmpp.discovery import alt_connections

from .conftest import start_server, stop_server

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
WEBSOCKET = "urn:xmpp:alt-connections:websocket"
XBOSH = "urn:xmpp:alt-connections:xbosh"


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read()


def xrd_links(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    assert root.tag == f"{XRD}XRD"
    return {link.get("rel"): link.get("href") for link in root.iter(f"{XRD}Link")}


def jrd_links(body: bytes) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in json.loads(body)["links"]}


def test_host_meta_xrd_from_the_request(xmpp_server):
    """The XRD lists the WebSocket and BOSH endpoints at the address asked for,
    readable from any origin (XEP-0156 §3)."""
    status, headers, body = get(f"http://127.0.0.1:{xmpp_server.http_port}/.well-known/host-meta")
    assert status == 200
    assert headers["Content-Type"].startswith("application/xrd+xml")
    assert headers["Access-Control-Allow-Origin"] == "*"
    base = f"127.0.0.1:{xmpp_server.http_port}"
    assert xrd_links(body) == {
        WEBSOCKET: f"ws://{base}/xmpp-websocket",
        XBOSH: f"http://{base}/http-bind/",
    }


def test_host_meta_json_follows_the_host_header(xmpp_server):
    """The JRD carries the same links; the host comes from the Host header."""
    status, headers, body = get(
        f"http://127.0.0.1:{xmpp_server.http_port}/.well-known/host-meta.json",
        {"Host": "localhost", "Origin": "https://webclient.example"},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert jrd_links(body) == {
        WEBSOCKET: "ws://localhost/xmpp-websocket",
        XBOSH: "http://localhost/http-bind/",
    }


def test_host_meta_preflight_is_allowed(xmpp_server):
    status, headers, _ = get(
        f"http://127.0.0.1:{xmpp_server.http_port}/.well-known/host-meta.json",
        {"Origin": "https://webclient.example", "Access-Control-Request-Method": "GET"},
        method="OPTIONS",
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"]


def test_host_meta_over_https_gives_wss(xmpp_server):
    """Asked over HTTPS, the links are https:// and wss://."""
    import ssl

    from .test_wss import no_verify_context, wait_for_https

    wait_for_https(xmpp_server)
    request = urllib.request.Request(
        f"https://127.0.0.1:{xmpp_server.https_port}/.well-known/host-meta.json"
    )
    context: ssl.SSLContext = no_verify_context()
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        links = jrd_links(response.read())
    base = f"127.0.0.1:{xmpp_server.https_port}"
    assert links == {WEBSOCKET: f"wss://{base}/xmpp-websocket", XBOSH: f"https://{base}/http-bind/"}


def test_public_urls_from_the_environment(tmp_path):
    """XMPP_PUBLIC_HTTP_URL / XMPP_PUBLIC_WS_URL override what the request says
    (behind a reverse proxy)."""
    server = start_server(
        tmp_path,
        DATABASE_URL="",
        REDIS_URL="",
        XMPP_PUBLIC_HTTP_URL="https://chat.example.org/",
        XMPP_PUBLIC_WS_URL="wss://ws.example.org/xmpp-websocket",
    )
    try:
        _, _, xrd = get(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta")
        _, _, jrd = get(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta.json")
    finally:
        stop_server(server)
    expected = {
        WEBSOCKET: "wss://ws.example.org/xmpp-websocket",
        XBOSH: "https://chat.example.org/http-bind/",
    }
    assert xrd_links(xrd) == expected
    assert jrd_links(jrd) == expected


@pytest.mark.parametrize(
    ("http_url", "ws_url", "secure", "expected"),
    [
        ("", "", False, ("ws://localhost/xmpp-websocket", "http://localhost/http-bind/")),
        ("", "", True, ("wss://localhost/xmpp-websocket", "https://localhost/http-bind/")),
        (
            "https://im.example.org",
            "",
            False,
            ("wss://im.example.org/xmpp-websocket", "https://im.example.org/http-bind/"),
        ),
        (
            "",
            "wss://ws.example.org/socket",
            False,
            ("wss://ws.example.org/socket", "http://localhost/http-bind/"),
        ),
    ],
    ids=["request-http", "request-https", "public-http-only", "public-ws-only"],
)
def test_alt_connections(http_url, ws_url, secure, expected):
    request = RequestFactory().get("/.well-known/host-meta", HTTP_HOST="localhost", secure=secure)
    with override_settings(XMPP_PUBLIC_HTTP_URL=http_url, XMPP_PUBLIC_WS_URL=ws_url):
        links = dict(alt_connections(request))
    assert (links[WEBSOCKET], links[XBOSH]) == expected
