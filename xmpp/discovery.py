"""XEP-0156: how a browser client finds the WebSocket and BOSH endpoints.

`/.well-known/host-meta` (XRD, RFC 6415) and `/.well-known/host-meta.json`
(JRD) list the alternative connection methods of this server. The links are
built from XMPP_PUBLIC_HTTP_URL / XMPP_PUBLIC_WS_URL when the operator set
them (behind a reverse proxy the request says little about the public
address), else from the request: its scheme (https gives wss) and its Host
header (checked against ALLOWED_HOSTS by Django). Both documents carry
`Access-Control-Allow-Origin: *` (XEP-0156 §3) so that a web client served
from another origin can read them.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import quoteattr

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
REL_XBOSH = "urn:xmpp:alt-connections:xbosh"
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind/"


def alt_connections(request: HttpRequest) -> list[tuple[str, str]]:
    """[(rel, href)] for the WebSocket and BOSH endpoints, as a client should use them."""
    http_base = settings.XMPP_PUBLIC_HTTP_URL.rstrip("/")
    if not http_base:
        http_base = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    websocket = settings.XMPP_PUBLIC_WS_URL
    if not websocket:
        scheme, _, rest = http_base.partition("://")
        websocket = f"{'wss' if scheme == 'https' else 'ws'}://{rest}{WEBSOCKET_PATH}"
    return [(REL_WEBSOCKET, websocket), (REL_XBOSH, http_base + BOSH_PATH)]


def _response(request: HttpRequest, body: str, content_type: str) -> HttpResponse:
    if request.method == "OPTIONS":  # a CORS preflight
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    elif request.method in ("GET", "HEAD"):
        response = HttpResponse(body, content_type=content_type)
    else:
        return HttpResponseNotAllowed(["GET", "HEAD", "OPTIONS"])
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "max-age=3600"
    response["Vary"] = "Host"
    return response


def host_meta(request: HttpRequest) -> HttpResponse:
    """The XRD document of RFC 6415 §3 with one Link per connection method."""
    links = "".join(
        f"  <Link rel={quoteattr(rel)} href={quoteattr(href)}/>\n"
        for rel, href in alt_connections(request)
    )
    body = (
        "<?xml version='1.0' encoding='utf-8'?>\n"
        "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
        f"{links}</XRD>\n"
    )
    return _response(request, body, "application/xrd+xml; charset=utf-8")


def host_meta_json(request: HttpRequest) -> HttpResponse:
    """The same links as JRD (RFC 6415 Appendix A)."""
    links = [{"rel": rel, "href": href} for rel, href in alt_connections(request)]
    return _response(request, json.dumps({"links": links}, indent=2), "application/json")
