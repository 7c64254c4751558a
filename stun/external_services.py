"""XEP-0215 external service discovery: the server's STUN and TURN services.

Answers `<services xmlns='urn:xmpp:extdisco:2'/>` (§3.1, all services; §3.2
with a 'type', those of that type) and `<credentials/>` (§3.3) from the
server's own domain, for authenticated users only (the IQ scope "server"
is reached by bound sessions). TURN services are `restricted='1'` (§4)
and carry time-limited credentials of the TURN REST API scheme
(stun/credentials.py), valid XMPP_TURN_CREDENTIAL_TTL seconds, `expires`
in XEP-0082 format, as Prosody and ejabberd hand them out.
"""

from __future__ import annotations

import datetime
from xml.etree.ElementTree import Element, SubElement

from django.conf import settings

from xmpp.plugins import IqRequest, plugins
from xmpp.protocol.errors import StanzaError

from .credentials import issue, turn_secret

NS_EXTDISCO = "urn:xmpp:extdisco:2"


def _services() -> list[dict[str, str]]:
    """The services as configured, without credentials."""
    host = settings.XMPP_STUN_HOST or settings.XMPP_DOMAIN
    port, tls_port = settings.XMPP_STUN_PORT, settings.XMPP_STUN_TLS_PORT
    services: list[dict[str, str]] = []
    for kind, secure in (("stun", "stuns"), ("turn", "turns")):
        if kind == "turn" and not settings.XMPP_TURN_ENABLED:
            continue
        if port:
            services.append({"type": kind, "transport": "udp", "host": host, "port": str(port)})
            services.append({"type": kind, "transport": "tcp", "host": host, "port": str(port)})
        if tls_port:
            services.append(
                {"type": secure, "transport": "tcp", "host": host, "port": str(tls_port)}
            )
    for service in services:
        service["name"] = f"{settings.XMPP_DOMAIN} {service['type'].upper()}"
        if service["type"] in ("turn", "turns"):
            service["restricted"] = "1"
    return services


def _with_credentials(service: dict[str, str], user: str) -> dict[str, str]:
    credentials = issue(turn_secret(), user, settings.XMPP_TURN_CREDENTIAL_TTL)
    expires = datetime.datetime.fromtimestamp(credentials.expires, datetime.UTC)
    return {
        **service,
        "username": credentials.username,
        "password": credentials.password,
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@plugins.iq(f"{{{NS_EXTDISCO}}}services", types=("get",), scopes=("server",), feature=NS_EXTDISCO)
def services(request: IqRequest) -> Element:
    """§3.1/§3.2: every service (or those of the asked type), TURN with credentials."""
    wanted = request.payload.get("type")
    user = str(request.sender.bare)
    result = Element(f"{{{NS_EXTDISCO}}}services")
    if wanted:
        result.set("type", wanted)
    for service in _services():
        if wanted and service["type"] != wanted:
            continue
        if service.get("restricted"):
            service = _with_credentials(service, user)
        SubElement(result, f"{{{NS_EXTDISCO}}}service", service)
    return result


@plugins.iq(
    f"{{{NS_EXTDISCO}}}credentials", types=("get",), scopes=("server",), feature=NS_EXTDISCO
)
def credentials(request: IqRequest) -> Element:
    """§3.3: fresh credentials for one service named by host and type (and port)."""
    asked = request.payload.find(f"{{{NS_EXTDISCO}}}service")
    if asked is None or not asked.get("host") or not asked.get("type"):
        raise StanzaError("bad-request", "a <service/> with 'host' and 'type' is required")
    user = str(request.sender.bare)
    result = Element(f"{{{NS_EXTDISCO}}}credentials")
    for service in _services():
        if (
            service["host"] == asked.get("host")
            and service["type"] == asked.get("type")
            and asked.get("port", service["port"]) == service["port"]
            and service.get("restricted")
        ):
            SubElement(result, f"{{{NS_EXTDISCO}}}service", _with_credentials(service, user))
            return result
    raise StanzaError("item-not-found")
