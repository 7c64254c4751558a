"""What the pubsub app registers with the core (xmpp/plugins.py):

- the service at XMPP_PUBSUB_SUBDOMAIN.<domain> (every stanza to it);
- `{http://jabber.org/protocol/pubsub}pubsub` and `#owner` IQs to accounts'
  bare JIDs (scope "account"): the PEP services (XEP-0163 §4), and their
  disco features on the account (§9);
- a presence transform that only reads the entity caps of a session's
  presence (XEP-0115), and a session-closed hook that forgets them;
- a listener: this process's end of the fan-out (pubsub/cluster.py) and
  the periodic sweep of expired items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from xml.etree.ElementTree import Element

from django.conf import settings
from django.contrib.auth import get_user_model

from xmpp.plugins import IqRequest, NotAFeature, plugins
from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID

from . import cluster, pep
from .nodes import expire_items, store
from .service import (
    NS_PUBSUB,
    OWNER,
    PEP_FEATURES,
    PUBSUB,
    Context,
    authorization_answer,
    disco_items,
    handle,
)

log = logging.getLogger(__name__)

EXPIRY_SWEEP_SECONDS = 60
OWNER_IS_NO_FEATURE = NotAFeature(
    "XEP-0060 §10: owner use cases are advertised as the pubsub#config-node, "
    "pubsub#delete-nodes, ... features (PEP_FEATURES), not as the #owner namespace"
)


def register() -> None:
    subdomain = settings.XMPP_PUBSUB_SUBDOMAIN
    if subdomain:
        plugins.service(subdomain, service_stanza)
    plugins.iq(PUBSUB, types=("get", "set"), scopes=("account",), feature=NS_PUBSUB)(pep_iq)
    plugins.iq(OWNER, types=("get", "set"), scopes=("account",), feature=OWNER_IS_NO_FEATURE)(
        pep_iq
    )
    plugins.account_features.update(PEP_FEATURES)
    # XEP-0163 §4: the account is a pubsub/pep service (Conversations looks
    # for this identity before it uses PEP), and lists its nodes (§5.2).
    plugins.account_identity("pubsub", "pep")
    plugins.account_items_provider(pep_nodes)
    plugins.presence_transform(pep.on_presence)
    plugins.on_session_closed(pep.forget_session)
    plugins.listener(start)


# -- the service at pubsub.<domain> ---------------------------------------------


def service_stanza(stanza: Element, sender: JID, router) -> None:
    kind = stanza.tag.rpartition("}")[2]
    try:
        to = JID.parse(stanza.get("to") or "")
    except InvalidJID:
        return
    service_jid = to.domain
    stanza_type = stanza.get("type")
    if kind == "iq":
        if stanza_type in ("result", "error"):
            return
        if stanza_type not in ("get", "set") or len(stanza) != 1:
            router.bounce(stanza, StanzaError("bad-request"))
            return
        if to.local:
            router.bounce(stanza, StanzaError("service-unavailable"))
            return
        router.spawn(_answer(router, stanza, stanza[0], sender, service_jid, False))
    elif kind == "message":
        if stanza_type == "error":
            return
        router.spawn(authorization_answer(router, stanza, sender, service_jid, False))


async def _answer(router, stanza, payload, sender, service_jid, pep: bool) -> None:
    try:
        result = await handle(router, stanza, payload, sender, service_jid, pep)
    except StanzaError as exc:
        router.bounce(stanza, exc)
        return
    except Exception:
        log.exception("pubsub request failed")
        router.bounce(stanza, StanzaError("internal-server-error"))
        return
    router.reply(stanza, result)


# -- PEP on accounts -------------------------------------------------------------


async def pep_iq(request: IqRequest) -> Element | None:
    service_jid = str(request.to.bare)
    if request.sender.bare != request.to.bare and service_jid not in store.services:
        # RFC 6121 §8.5.1: nothing to ask of an account that does not exist.
        exists = await get_user_model().objects.filter(username=request.to.local).aexists()
        if not exists:
            raise StanzaError("service-unavailable")
    return await handle(
        request.router, request.stanza, request.payload, request.sender, service_jid, True
    )


async def pep_nodes(request: IqRequest) -> list[Element]:
    """The account's PEP nodes the requester may see, as disco items."""
    service = await store.service(str(request.to.bare), True)
    query = await disco_items(Context(request.router, service, request.sender), None)
    return list(query)


# -- runxmpp start and stop ---------------------------------------------------------


async def start(host: str):
    from xmpp.server import XmppServer

    server = XmppServer.current
    stop_cluster = await cluster.start(server) if server is not None else None
    sweeper = asyncio.get_running_loop().create_task(_sweep())

    async def stop() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if stop_cluster is not None:
            await stop_cluster()

    return stop


async def _sweep() -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
        try:
            await expire_items()
        except Exception:
            log.exception("pubsub: expiring items failed")
