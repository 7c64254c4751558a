"""The router: every stanza, from any session or service, goes through route().

It owns the delivery rules of RFC 6121 §8.5 (local domain, bare and full
JIDs, by stanza kind and type) and the dispatch of IQs to the handlers that
plugins registered by key: (IQ type, payload `{ns}tag`, scope). Sessions
are reached through the delivery service (xmpp/delivery.py): a direct call
into a session's outgoing buffer, no channel layer and no database on the
path to an online user.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .delivery import Delivery
from .plugins import ANSWERED, IqRequest, PluginRegistry, Scope
from .protocol.errors import StanzaError, error_reply
from .protocol.jid import JID, InvalidJID
from .sessions import SessionManager

if TYPE_CHECKING:
    from .bound_session import BoundSession

log = logging.getLogger(__name__)

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
HANDLED_PRESENCE_TYPES = SUBSCRIPTION_TYPES | {"probe"}
PRESENCE_TAG = "{jabber:client}presence"
MESSAGE_TAG = "{jabber:client}message"


class Router:
    def __init__(self, domain: str, registry: PluginRegistry, sessions: SessionManager) -> None:
        self.domain = domain
        self.registry = registry
        self.sessions = sessions
        self.delivery = Delivery(domain, registry, sessions)
        self.server_jid = JID("", domain, "")
        self._services = {f"{sub}.{domain}": h for sub, h in registry.services.items()}
        self._tasks: set[asyncio.Task] = set()
        # IQs the server sent itself (query()), by id: (addressee, future).
        self._queries: dict[str, tuple[str, asyncio.Future]] = {}

    # -- entry point -------------------------------------------------------

    def route(
        self,
        stanza: Element,
        sender: JID,
        origin: BoundSession | None = None,
        *,
        filtered: bool = True,
    ) -> None:
        """Deliver `stanza`, whose 'from' is already stamped as `sender`.
        `filtered=False` is for a filter's own answer (a block refusal), which
        must not be judged by the filters again."""
        to_attr = stanza.get("to")
        if to_attr is None:
            to = sender.bare  # RFC 6120 §10.3: no 'to' means the sender's account
        else:
            try:
                to = JID.parse(to_attr)
            except InvalidJID:
                self.bounce(stanza, StanzaError("jid-malformed"))
                return
        # Filters see what a local account sends or receives; the server
        # itself (ping, disco) is never blocked.
        if (
            filtered
            and (to.local or to.domain != self.domain)
            and (to.domain == self.domain or (sender.local and sender.domain == self.domain))
            and self.delivery.refused(stanza, sender, to, self)
        ):
            return  # e.g. blocked (XEP-0191)
        if stanza.tag == MESSAGE_TAG:
            for hook in self.registry.message_hooks:
                hook(stanza, sender, to, origin, self)  # e.g. carbons (XEP-0280)
        if to.domain == self.domain:
            if not to.local:
                self._to_server(stanza, sender, to, origin)
                return
            if stanza.tag == PRESENCE_TAG and stanza.get("type") in HANDLED_PRESENCE_TYPES:
                if self.registry.presence.inbound(stanza, sender, to, self):
                    return
            if to.resource:
                self._to_full_jid(stanza, sender, to, origin)
            else:
                self._to_bare_jid(stanza, sender, to, origin)
            return
        service = self._services.get(to.domain)
        if service is not None:
            service(stanza, sender, self)
            return
        if self.delivery.elsewhere(to, stanza):
            return
        # No server-to-server yet: every other domain is unreachable (RFC 6120 §8.3.3.16).
        self.bounce(stanza, StanzaError("remote-server-not-found"))

    def bounce(self, stanza: Element, error: StanzaError) -> None:
        """Answer `stanza` with a stanza error, routed back to its sender."""
        reply = error_reply(stanza, error)
        if reply is None:
            return
        to = reply.get("to")
        if not to:
            return
        try:
            sender = JID.parse(reply.get("from") or self.domain)
        except InvalidJID:
            sender = self.server_jid
            reply.set("from", self.domain)
        self.route(reply, sender)

    def spawn(self, coro) -> asyncio.Task:
        """Run a coroutine for a stanza that needs I/O, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def pending_tasks(self) -> set[asyncio.Task]:
        return set(self._tasks)

    # -- RFC 6121 §8.5.3: full JID ----------------------------------------

    def _to_full_jid(self, stanza, sender, to, origin) -> None:
        if self.delivery.to_full_jid(stanza, to):
            return
        kind = _kind(stanza)
        stanza_type = stanza.get("type")
        if kind == "message":
            # §8.5.3.2.1: only chat is handled as if sent to the bare JID
            # (most available resource, else offline storage). Normal,
            # groupchat and headline are ignored or refused: normal and
            # groupchat (and, by RFC 6121 §5.2.2, an unknown type, handled
            # as normal) get <service-unavailable/>, headline is dropped,
            # and errors are always dropped.
            if stanza_type == "chat":
                self._to_bare_jid(stanza, sender, to.bare, origin)
            elif stanza_type not in ("headline", "error"):
                self.bounce(stanza, StanzaError("service-unavailable"))
        elif kind == "presence":
            if stanza_type in SUBSCRIPTION_TYPES:
                self._to_bare_jid(stanza, sender, to.bare, origin)
            # §8.5.3.2.2: other presence to a gone resource is dropped.
        elif kind == "iq":
            if stanza_type in ("get", "set"):
                self.bounce(stanza, StanzaError("service-unavailable"))  # §8.5.3.2.3

    def to_account(self, stanza: Element, sender: JID, bare: JID) -> None:
        """Route a stanza that was for a session now gone as if it had been
        sent to the account (XEP-0198 §5: what an ended session never
        acknowledged): its other resources, else offline storage."""
        self._to_bare_jid(stanza, sender, bare, None)

    # -- RFC 6121 §8.5.2: bare JID ----------------------------------------

    def _to_bare_jid(self, stanza, sender, to, origin) -> None:
        kind = _kind(stanza)
        stanza_type = stanza.get("type")
        if kind == "iq":
            # §8.5.2.1.3: the server answers IQs to a bare JID on the user's behalf.
            self._dispatch_iq(stanza, sender, to, "account", origin)
            return
        if kind == "presence":
            # §8.5.2.1.2: to every available resource. Subscriptions and probes
            # get their own state machine with rosters (RFC 6121 §3, next issue).
            self.delivery.to_sessions(stanza, self.sessions.available(to))
            return
        if kind != "message" or stanza_type == "error":
            return
        if stanza_type == "groupchat":
            self.bounce(stanza, StanzaError("service-unavailable"))  # §8.5.2.1.1
            return
        targets = self.delivery.message_targets(to, stanza_type)
        if targets:
            self.delivery.to_sessions(stanza, targets)
            return
        if stanza_type == "headline":
            return  # §8.5.2.2.1: dropped
        # §8.5.2.2.1: normal and chat with no available resource go to offline
        # storage where a plugin provides it, else <service-unavailable/>;
        # §8.5.1 gives the same answer for no account.
        offline = self.registry.offline_handler
        if offline is None:
            self.bounce(stanza, StanzaError("service-unavailable"))
            return
        result = offline(stanza, to, self)
        if inspect.isawaitable(result):
            self.spawn(result)

    # -- the server itself and IQ dispatch --------------------------------

    def _to_server(self, stanza, sender, to, origin) -> None:
        kind = _kind(stanza)
        if kind == "iq":
            self._dispatch_iq(stanza, sender, to, "server", origin)
        elif kind == "message" and stanza.get("type") not in ("error", "groupchat", "headline"):
            self.bounce(stanza, StanzaError("service-unavailable"))

    def _dispatch_iq(self, stanza, sender, to, scope: Scope, origin) -> None:
        iq_type = stanza.get("type")
        if iq_type not in ("get", "set"):
            if iq_type not in ("result", "error"):
                self.bounce(stanza, StanzaError("bad-request", "invalid IQ type"))
            elif self._queries:
                self._answered(stanza, sender, to)
            return  # results and errors to the server or an account end here
        if len(stanza) != 1:
            # RFC 6120 §8.2.3: a get or set has exactly one payload.
            self.bounce(stanza, StanzaError("bad-request", "an IQ get or set has one payload"))
            return
        payload = stanza[0]
        handler = self.registry.iq_handlers.get((iq_type, payload.tag, scope))
        if handler is None:
            self.bounce(stanza, StanzaError("service-unavailable"))
            return
        request = IqRequest(stanza, payload, sender, to, self, origin)
        try:
            result = handler(request)
        except StanzaError as exc:
            self.bounce(stanza, exc)
            return
        if inspect.isawaitable(result):
            self.spawn(self._await_iq(request, result))
        elif result is not ANSWERED:
            self.reply(stanza, result)

    async def _await_iq(self, request: IqRequest, pending) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self.bounce(request.stanza, exc)
            return
        except Exception:
            log.exception("IQ handler failed for %s", request.payload.tag)
            self.bounce(request.stanza, StanzaError("internal-server-error"))
            return
        if result is not ANSWERED:
            self.reply(request.stanza, result)

    def query(
        self, stanza: Element, timeout: float = 10.0, *, sender: JID | None = None
    ) -> asyncio.Future:
        """Send an IQ get/set from the server itself (its 'from' is the domain)
        and return a future of the answer, a result or error <iq/>; the future
        fails with TimeoutError if none comes (e.g. disco#info of an entity-caps
        hash, XEP-0115 §6.2). Only an answer from the addressee, to the
        query's 'from', counts. `sender`: a local account's bare JID, for an
        IQ the server sends on the user's behalf (XEP-0357 §7 publishes)."""
        loop = asyncio.get_running_loop()
        query_id = stanza.get("id") or f"srv-{secrets.token_hex(8)}"
        origin = sender or self.server_jid
        stanza.set("id", query_id)
        stanza.set("from", str(origin))
        future = loop.create_future()
        self._queries[query_id] = (stanza.get("to") or "", str(origin), future)

        def expire() -> None:
            if self._queries.get(query_id, (None, None, None))[2] is future:
                del self._queries[query_id]
            if not future.done():
                future.set_exception(TimeoutError(f"no answer to IQ {query_id}"))

        timer = loop.call_later(timeout, expire)
        future.add_done_callback(lambda _: timer.cancel())
        self.route(stanza, origin)
        return future

    def _answered(self, stanza: Element, sender: JID, to: JID) -> None:
        entry = self._queries.get(stanza.get("id") or "")
        if entry is None or entry[0] != str(sender) or entry[1] != str(to):
            return
        del self._queries[stanza.get("id")]
        if not entry[2].done():
            entry[2].set_result(stanza)

    def reply(self, stanza: Element, payload: Element | None) -> None:
        """Send the IQ result for `stanza`, with `payload` if any (RFC 6120 §8.2.3)."""
        result = Element(stanza.tag, {"type": "result"})
        if stanza.get("id") is not None:
            result.set("id", stanza.get("id"))
        result.set("to", stanza.get("from"))
        result.set("from", stanza.get("to") or stanza.get("from").partition("/")[0])
        if payload is not None:
            result.append(payload)
        self.route(result, JID.parse(result.get("from")))


def _kind(stanza: Element) -> str:
    tag = stanza.tag
    return tag[tag.find("}") + 1 :]
