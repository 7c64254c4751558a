"""The server's own IQ services: service discovery (XEP-0030), ping (XEP-0199),
software version (XEP-0092) and entity time (XEP-0202).

Ping is answered for the server's domain and, on the account's behalf, for a
user's bare JID and for an IQ with no 'to' (XEP-0199 §4.2, §4.4); version
and time only for the domain.

Disco answers are built from the plugin registry, so an app that registers
a feature or a service domain shows up here without this module naming it.
"""

from __future__ import annotations

import datetime
import inspect
from importlib import metadata
from xml.etree.ElementTree import Element, SubElement

from django.contrib.auth import get_user_model

from .plugins import IqRequest, plugins
from .protocol.errors import StanzaError

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"

SERVER_NAME = "imserver"


def _info(identity: dict[str, str], features: set[str], *more: dict[str, str]) -> Element:
    query = Element(f"{{{NS_DISCO_INFO}}}query")
    for each in (identity, *more):
        SubElement(query, f"{{{NS_DISCO_INFO}}}identity", each)
    for var in sorted(features):
        SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": var})
    return query


@plugins.iq(f"{{{NS_DISCO_INFO}}}query", feature=NS_DISCO_INFO)
def server_info(request: IqRequest) -> Element:
    if request.payload.get("node"):
        raise StanzaError("item-not-found")
    return _info(
        {"category": "server", "type": "im", "name": SERVER_NAME},
        request.router.registry.server_features,
    )


@plugins.iq(f"{{{NS_DISCO_ITEMS}}}query", feature=NS_DISCO_ITEMS)
def server_items(request: IqRequest) -> Element:
    if request.payload.get("node"):
        raise StanzaError("item-not-found")
    query = Element(f"{{{NS_DISCO_ITEMS}}}query")
    for subdomain in sorted(request.router.registry.services):
        SubElement(
            query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": f"{subdomain}.{request.router.domain}"}
        )
    return query


async def _require_account(request: IqRequest) -> None:
    # RFC 6121 §8.5.1: an IQ to an account that does not exist gets <service-unavailable/>.
    if request.sender.bare == request.to:
        return
    exists = (
        await get_user_model().objects.filter(username=request.to.local, is_active=True).aexists()
    )
    if not exists:
        raise StanzaError("service-unavailable")


async def _account_node(request: IqRequest, kind: str) -> Element:
    """XEP-0030 §3.2, §4.2: a node of the account, answered by the app that registered it."""
    key = (kind, request.payload.get("node"))
    handler = request.router.registry.account_disco_nodes.get(key)
    if handler is None:
        raise StanzaError("item-not-found")
    result = handler(request)
    return await result if inspect.isawaitable(result) else result


@plugins.iq(f"{{{NS_DISCO_INFO}}}query", scopes=("account",), feature=NS_DISCO_INFO)
async def account_info(request: IqRequest) -> Element:
    await _require_account(request)
    if request.payload.get("node"):
        return await _account_node(request, "info")
    return _info(
        {"category": "account", "type": "registered"},
        request.router.registry.account_features,
        *request.router.registry.account_identities,
    )


@plugins.iq(f"{{{NS_DISCO_ITEMS}}}query", scopes=("account",), feature=NS_DISCO_ITEMS)
async def account_items(request: IqRequest) -> Element:
    await _require_account(request)
    if request.payload.get("node"):
        return await _account_node(request, "items")
    query = Element(f"{{{NS_DISCO_ITEMS}}}query")
    for provider in request.router.registry.account_items_providers:
        items = provider(request)
        query.extend(await items if inspect.isawaitable(items) else items)
    return query


@plugins.iq(f"{{{NS_PING}}}ping", feature=NS_PING)
def ping(request: IqRequest) -> None:
    """XEP-0199 §4.2: the server answers with an empty result."""
    return None


@plugins.iq(f"{{{NS_PING}}}ping", scopes=("account",), feature=NS_PING)
def account_ping(request: IqRequest):
    """XEP-0199 §4.2: a ping with no 'to', or to the sender's own bare JID, is
    handled by the server on behalf of the account, "equivalent to directing
    the IQ-get to the server itself" (RFC 6120 §10.3.3: no 'to' is the
    account). §4.4: a ping to another user's bare JID "will be handled by the
    server on behalf of the client" too, which RFC 6121 §8.5.2.1.3 and
    §8.5.2.2.3 make a result whether or not the user is online; only an
    account that does not exist gets <service-unavailable/> (§8.5.1). Prosody
    (mod_ping, iq-get/bare) and ejabberd (mod_ping on ejabberd_sm) do the same."""
    if request.sender.bare == request.to or request.router.sessions.has_sessions(request.to):
        return None  # no database for the keepalive of a client
    return _pong_from_account(request)


async def _pong_from_account(request: IqRequest) -> None:
    await _require_account(request)
    return None


# Software version and entity time are registered for the server only: a bare
# JID (or no 'to') is the account, whose software and clock are its clients'
# (XEP-0092 §1, XEP-0202 §1, asked of a full JID), which the server cannot
# answer for, so RFC 6121 §8.5.2.1.3 gives <service-unavailable/>. Prosody
# (iq-get/host only) and ejabberd (ejabberd_local only) answer the same way.
@plugins.iq(f"{{{NS_VERSION}}}query", feature=NS_VERSION)
def software_version(request: IqRequest) -> Element:
    query = Element(f"{{{NS_VERSION}}}query")
    SubElement(query, f"{{{NS_VERSION}}}name").text = SERVER_NAME
    SubElement(query, f"{{{NS_VERSION}}}version").text = _version()
    return query


@plugins.iq(f"{{{NS_TIME}}}time", feature=NS_TIME)
def entity_time(request: IqRequest) -> Element:
    """XEP-0202 §4: UTC time and the offset of the server's zone (XEP-0082 formats)."""
    now = datetime.datetime.now(datetime.UTC)
    local = now.astimezone()
    offset = local.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    time_el = Element(f"{{{NS_TIME}}}time")
    SubElement(
        time_el, f"{{{NS_TIME}}}tzo"
    ).text = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    SubElement(time_el, f"{{{NS_TIME}}}utc").text = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return time_el


def _version() -> str:
    try:
        return metadata.version("imserver")
    except metadata.PackageNotFoundError:
        return "0.1.0"
