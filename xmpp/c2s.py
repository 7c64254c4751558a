"""A client-to-server stream (RFC 6120 for `jabber:client`): negotiation up to
resource binding, then the stanzas of the bound session.

The stream (xmpp/stream.py gives the parser, the pump and the teardown) goes
through the states of RFC 6120:

    CONNECTED --header--> [STARTTLS §5 --restart-->] SASL §6 --restart-->
    AUTHENTICATED --bind §7--> BOUND (stanzas flow to the router) --> CLOSED

Binding makes a BoundSession (xmpp/bound_session.py): the full JID and what
the rest of the server knows of it. The stream carries that session's
stanzas while it is attached; when the stream ends, the session is told
(`stream_lost`), and decides whether it ends too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
import secrets
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from django.contrib.auth import get_user_model

from . import handled
from .bound_session import BoundSession
from .orm_thread import orm_thread
from .plugins import IqRequest
from .protocol.errors import StanzaError, StreamError, error_reply
from .protocol.jid import JID, InvalidJID, nodeprep, resourceprep
from .protocol.scram import SaslFailure, ScramServer, offered_mechanisms, parse_plain
from .protocol.xml import (
    NS_BIND,
    NS_CLIENT,
    NS_SASL,
    NS_SESSION,
    NS_TLS,
    serialize,
)
from .stream import XmlStream

if TYPE_CHECKING:
    from .server import XmppServer
    from .sessions import AccountState

log = logging.getLogger(__name__)

IQ_TAG = f"{{{NS_CLIENT}}}iq"
PRESENCE_TAG = f"{{{NS_CLIENT}}}presence"
BIND_TAG = f"{{{NS_BIND}}}bind"
SESSION_TAG = f"{{{NS_SESSION}}}session"
MAX_AUTH_ATTEMPTS = 3  # RFC 6120 §6.4.5: "at least 2 and no more than 5"


class ClientStream(XmlStream):
    namespace = NS_CLIENT

    __slots__ = (
        "session",
        "username",
        "user_id",
        "authenticated",
        "_sasl",
        "_sasl_mechanism",
        "_sasl_stage",
        "_auth_attempts",
        "_auth_timer",
    )

    def __init__(self, server: XmppServer, transport) -> None:
        super().__init__(server, transport)
        self.session: BoundSession | None = None  # once a resource is bound
        self.username = ""
        self.user_id: int | None = None
        self.authenticated = False
        self._sasl: ScramServer | None = None
        self._sasl_mechanism = ""
        self._sasl_stage = 0
        self._auth_attempts = 0
        # RFC 6120 §13.12 item 4: an unauthenticated stream does not linger.
        self._auth_timer = asyncio.get_running_loop().call_later(
            server.limits.auth_timeout, self._auth_timed_out
        )

    def __repr__(self) -> str:
        session = self.session
        return f"<ClientStream {session.jid_str if session else self.transport.peer}>"

    def _tls_required(self) -> bool:
        """TLS is required where it can be negotiated in-band (RFC 6120 §5);
        a WebSocket has its TLS, or not, from the HTTP side."""
        return self.server.limits.require_tls and hasattr(self.transport, "start_tls")

    # -- what the stream base asks -------------------------------------------

    def check_header(self, attrs: dict[str, str]) -> None:
        to = attrs.get("to", self.server.domain)
        try:
            to_domain = JID.parse(to).domain
        except InvalidJID:
            raise StreamError("host-unknown", f"{to} is not served here") from None
        if to_domain != self.server.domain:
            raise StreamError("host-unknown", f"{to} is not served here")

    def shaped(self) -> bool:
        # Stanzas of a bound session take stanza tokens; negotiation does not.
        return self.session is not None

    def handle_element(self, el: Element):
        session = self.session
        if session is not None:
            return self._handle_stanza(el, session)
        return self._handle_negotiation(el)

    def stream_ended(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        session, self.session = self.session, None
        if session is not None:
            session.stream_lost(self, dropped=self.dropped)

    def features(self) -> list[Element]:
        features: list[Element] = []
        tls_needed = not self.transport.secure and self.server.tls is not None
        if not self.authenticated:
            if tls_needed and hasattr(self.transport, "start_tls"):
                starttls = Element(f"{{{NS_TLS}}}starttls")
                if self.server.limits.require_tls:
                    SubElement(starttls, f"{{{NS_TLS}}}required")
                features.append(starttls)
            if self.transport.secure or not self._tls_required():
                mechanisms = Element(f"{{{NS_SASL}}}mechanisms")
                for name in self._mechanisms():
                    SubElement(mechanisms, f"{{{NS_SASL}}}mechanism").text = name
                features.append(mechanisms)
                for offer in self.server.registry.pre_auth_stream_features:
                    feature = offer(self)
                    if feature is not None:
                        features.append(feature)
                cb_types = self.transport.channel_bindings
                if cb_types:
                    # XEP-0440: which channel-binding types SCRAM-*-PLUS may use.
                    cb = Element("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                    for cb_type in cb_types:
                        SubElement(cb, "{urn:xmpp:sasl-cb:0}channel-binding", {"type": cb_type})
                    features.append(cb)
            return features
        features.append(Element(BIND_TAG))
        # RFC 6121 Appendix E: session establishment is a no-op kept for old clients.
        session = Element(SESSION_TAG)
        SubElement(session, f"{{{NS_SESSION}}}optional")
        features.append(session)
        for offer in self.server.registry.stream_features:
            feature = offer(self)
            if feature is not None:
                features.append(feature)
        return features

    def _mechanisms(self) -> list[str]:
        return offered_mechanisms(self.transport.secure, self.transport.channel_bindings)

    # -- before binding: STARTTLS, SASL, bind --------------------------------

    def _handle_negotiation(self, el: Element):
        tag = el.tag
        if not self.authenticated:
            if tag == f"{{{NS_TLS}}}starttls":
                return self._starttls()
            if self.transport.secure or not self._tls_required():
                if tag == f"{{{NS_SASL}}}auth":
                    return self._sasl_auth(el)
                if tag == f"{{{NS_SASL}}}response":
                    return self._sasl_response(el)
                if tag == IQ_TAG:
                    return self._pre_auth_iq(el)
                if tag == f"{{{NS_SASL}}}abort":
                    self._sasl = None
                    self._sasl_mechanism = ""
                    self._sasl_failure("aborted")
                    return None
            if self._tls_required() and not self.transport.secure:
                if tag == f"{{{NS_SASL}}}auth":
                    # RFC 6120 §6.5.3: no SASL mechanism before the required TLS.
                    self._sasl_failure("encryption-required")
                    return None
                raise StreamError("policy-violation", "STARTTLS is required")
            raise StreamError("not-authorized", "authenticate first")
        if tag == IQ_TAG and len(el) == 1 and el.get("type") == "set":
            if el[0].tag == BIND_TAG:
                return self._bind(el)
            if el[0].tag == SESSION_TAG:
                self._send_result(el)
                return None
        if tag in self.stanza_tags:
            raise StreamError("not-authorized", "bind a resource first")
        # Authenticated, not bound: XEP-0198's <resume/> comes here.
        return self.nonza(el, bound=False)

    def _pre_auth_iq(self, iq: Element):
        """IQs a plugin answers before authentication (scope "stream"), such as
        XEP-0077 in-band registration; anything else is not-authorized."""
        payload = iq[0] if len(iq) == 1 else None
        handler = None
        if payload is not None and iq.get("type") in ("get", "set"):
            handler = self.server.registry.iq_handlers.get((iq.get("type"), payload.tag, "stream"))
        if handler is None:
            raise StreamError("not-authorized", "authenticate first")
        request = IqRequest(
            iq,
            payload,
            self.server.router.server_jid,
            self.server.router.server_jid,
            self.server.router,
            self,
        )
        try:
            result = handler(request)
        except StanzaError as exc:
            self._send_error(iq, exc)
            return None
        if inspect.isawaitable(result):
            return self._answer_pre_auth_iq(iq, result)
        self._send_result(iq, result)
        return None

    async def _answer_pre_auth_iq(self, iq: Element, pending) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self._send_error(iq, exc)
            return
        self._send_result(iq, result)

    def _starttls(self) -> None:
        if self.transport.secure or not hasattr(self.transport, "start_tls"):
            raise StreamError("policy-violation", "TLS is already established")
        self.transport.write(f"<proceed xmlns='{NS_TLS}'/>".encode())
        self.transport.start_tls()
        self.restart()

    def _sasl_auth(self, el: Element):
        if self._sasl_mechanism:
            raise StreamError("policy-violation", "one SASL exchange at a time")
        mechanism = el.get("mechanism", "")
        if mechanism not in self._mechanisms():
            self._sasl_failure("invalid-mechanism")
            return None
        try:
            initial = _b64decode(el.text)
        except SaslFailure as exc:
            self._sasl_failure(exc.condition)
            return None
        self._sasl_mechanism = mechanism
        self._sasl_stage = 0
        if mechanism != "PLAIN":
            self._sasl = ScramServer.for_mechanism(
                mechanism, self.transport.channel_bindings or None, **self.server.scram_options
            )
        if initial is None:
            self._send_sasl("challenge", None)  # RFC 6120 §6.4.2: empty challenge
            return None
        return self._sasl_step(initial)

    def _sasl_response(self, el: Element):
        if not self._sasl_mechanism:
            raise StreamError("policy-violation", "no SASL exchange in progress")
        try:
            data = _b64decode(el.text) or b""
        except SaslFailure as exc:
            return self._sasl_failed(exc.condition, self.username)
        return self._sasl_step(data)

    def _sasl_step(self, data: bytes):
        if self._sasl is None:
            return self._auth_plain(data)
        try:
            if self._sasl_stage == 0:
                username = self._sasl.client_first(data)
                return self._scram_challenge(username)
            server_final = self._sasl.client_final(data)
        except SaslFailure as exc:
            return self._sasl_failed(exc.condition, self.username)
        self._sasl_succeeded(self.username, server_final)
        return None

    async def _scram_challenge(self, username: str) -> None:
        try:
            local = nodeprep(username)
        except InvalidJID:
            local = ""
        authzid = self._sasl.authzid
        if authzid and authzid not in (local, f"{local}@{self.server.domain}"):
            await self._sasl_failed("invalid-authzid", local)
            return
        # An unknown user gets a challenge too (from a made-up salt), so that
        # probing for account names learns nothing (RFC 5802 §9).
        credentials = None
        if local:
            self.user_id, credentials = await self.server.accounts.scram_credentials(
                local, self._sasl.hash_name
            )
        if self._closing:
            return
        self.username = local
        self._sasl_stage = 1
        self._send_sasl("challenge", self._sasl.server_first(credentials))

    async def _auth_plain(self, data: bytes) -> None:
        try:
            authzid, authcid, password = parse_plain(data)
            local = nodeprep(authcid)
        except SaslFailure as exc:
            await self._sasl_failed(exc.condition, "")
            return
        except InvalidJID:
            await self._sasl_failed("not-authorized", "")
            return
        if authzid and authzid not in (local, f"{local}@{self.server.domain}"):
            await self._sasl_failed("invalid-authzid", local)
            return
        self.user_id = await self.server.accounts.check_password(local, password)
        if self.user_id is None:
            await self._sasl_failed("not-authorized", local)
            return
        self._sasl_succeeded(local, None)

    async def _sasl_failed(self, condition: str, account: str) -> None:
        """A failed attempt (RFC 6120 §6.4.5) at `account` (what the client
        named; "" if nothing valid): slowed per address and account and per
        account (failed_logins.py), limited per stream. Slowed or not, the
        answer is the same <failure/>."""
        self._sasl = None
        self._sasl_mechanism = ""
        self.username = ""
        self.user_id: int | None = None
        self._auth_attempts += 1
        delay = self.server.login_failed(self.transport.peer, account)
        if delay:
            await asyncio.sleep(delay)
        if self._closing:
            return
        self._sasl_failure(condition)
        if self._auth_attempts >= MAX_AUTH_ATTEMPTS:
            raise StreamError("policy-violation", "too many failed authentication attempts")

    def _sasl_failure(self, condition: str) -> None:
        self.transport.write(f"<failure xmlns='{NS_SASL}'><{condition}/></failure>".encode())

    def _send_sasl(self, kind: str, data: bytes | None) -> None:
        payload = base64.b64encode(data).decode() if data else ""
        self.transport.write(f"<{kind} xmlns='{NS_SASL}'>{payload}</{kind}>".encode())

    def _sasl_succeeded(self, local: str, additional: bytes | None) -> None:
        self._sasl = None
        self._sasl_mechanism = ""
        self.username = local
        if self._closing:
            return  # evicted or disconnected while the password was checked
        if not self.server.stream_authenticated(self):
            # RFC 6120 §4.9.3.18: XMPP_MAX_SESSIONS_PER_IP, a local policy.
            raise StreamError("policy-violation", "too many sessions from your address")
        self.authenticated = True
        self._send_sasl("success", additional)
        self.restart()

    def _bind(self, iq: Element):
        """RFC 6120 §7: bind a client-chosen or server-generated resource."""
        requested = iq[0].findtext(f"{{{NS_BIND}}}resource") or ""
        try:
            resource = resourceprep(requested) if requested.strip() else ""
        except InvalidJID:
            self._send_error(iq, StanzaError("bad-request", "invalid resource"))
            return None
        if not resource:
            resource = secrets.token_hex(8)
        jid = JID(self.username, self.server.domain, resource)
        account = self.server.sessions.account_for_bind(jid.bare)
        session = BoundSession(self.server, jid, account)
        registry = self.server.registry
        if registry.session_bound_hooks or (registry.account_loaders and not account.loaded):
            return self._bind_after_hooks(iq, session)
        self._finish_bind(iq, session)
        return None

    async def _bind_after_hooks(self, iq: Element, session: BoundSession) -> None:
        # Plugins load what routing needs in memory (roster, block list)
        # before the first stanza of this session can be routed: the account
        # loaders together in one worker thread, then the async hooks.
        registry = self.server.registry
        account = session.account
        if not account.loaded and registry.account_loaders:
            account.user_id = self.user_id
            await orm_thread.call(_load_account, account, registry.account_loaders)
            account.loaded = True
        await _run_hooks(registry.session_bound_hooks, session)
        if self._closing:
            self.server.sessions.forget_unused_account(session.jid.bare)
            return
        self._finish_bind(iq, session)

    def _finish_bind(self, iq: Element, session: BoundSession) -> None:
        # §7.7.2.2 policy: the new session wins; the old one is told <conflict/>
        # and ends before this one binds, as any session ends: unavailable
        # presence to the other resources (RFC 6121 §4.5.2), session-closed hooks.
        displaced = self.server.sessions.get(session.jid)
        moved: list[bytes] = []
        if displaced is not None:
            if displaced.sm is not None:
                # XEP-0198 §5 and §7.7.2.2 together: what the displaced
                # session never acknowledged moves to the new one.
                moved = displaced.sm.take_unacked()
            displaced.replaced()
        self._attach_session(session)
        self.server.sessions.bind(session, session.jid)
        payload = Element(BIND_TAG)
        SubElement(payload, f"{{{NS_BIND}}}jid").text = session.jid_str
        self._send_result(iq, payload)
        if moved:
            self._take_over(displaced, moved, session)

    def _take_over(self, displaced: BoundSession, stanzas: list[bytes], session: BoundSession):
        """The displaced session's unacknowledged messages to the new one; the
        rest (IQs to answer, presence) as any ended session's (give_up)."""
        from .stream_management import give_up

        delivery = self.server.router.delivery
        rest = []
        for data in stanzas:
            if data.startswith(b"<message"):
                delivery.to_session(session, data)
            else:
                rest.append(data)
        if rest:
            give_up(displaced, rest, still_bound=False)

    def resume_session(self, session: BoundSession) -> None:
        """XEP-0198 §5: this stream carries `session` from now on, as if bound."""
        self._attach_session(session)

    def _attach_session(self, session: BoundSession) -> None:
        session.attach(self)
        self.session = session
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _send_result(self, iq: Element, payload: Element | None = None) -> None:
        result = Element(IQ_TAG, {"type": "result"})
        if iq.get("id") is not None:
            result.set("id", iq.get("id"))
        if payload is not None:
            result.append(payload)
        self.transport.write(self.transport.framing.stanza(serialize(result)))

    def _send_error(self, stanza: Element, error: StanzaError) -> None:
        reply = error_reply(stanza, error)
        if reply is not None:
            self.transport.write(self.transport.framing.stanza(serialize(reply)))

    # -- bound: stanzas to the router (RFC 6120 §8) --------------------------

    def _handle_stanza(self, stanza: Element, session: BoundSession):
        if stanza.tag not in self.stanza_tags:
            return self.nonza(stanza, bound=True)
        self.server.stanzas_received += 1
        sm = session.sm
        if sm is None:
            return self._route_stanza(stanza, session)
        # XEP-0198 §4: counted as handled once delivered or stored (handled.py).
        outer = handled.begin()
        try:
            result = self._route_stanza(stanza, session)
        finally:
            waits = handled.end(outer)
        sm.stanza_received(waits)
        return result

    def _route_stanza(self, stanza: Element, session: BoundSession):
        claimed = stanza.get("from")
        jid_str = session.jid_str
        # §8.1.2.1: the server stamps 'from'; a client may only claim itself.
        if claimed is not None and claimed != jid_str and claimed != session.bare_str:
            raise StreamError("invalid-from", "you cannot send as someone else")
        stanza.set("from", jid_str)
        if stanza.tag == PRESENCE_TAG and stanza.get("to") is None:
            return self._broadcast_presence(stanza, session)
        if stanza.tag == PRESENCE_TAG and stanza.get("type") in (None, "unavailable"):
            self.server.registry.presence.directed(session, stanza)
        if (
            stanza.tag == IQ_TAG
            and len(stanza) == 1
            and stanza[0].tag == SESSION_TAG
            and stanza.get("type") == "set"
            and stanza.get("to") in (None, self.server.domain)
        ):
            # RFC 6121 Appendix E: session establishment is a no-op, also after
            # binding, where Strophe-based clients (Converse.js) send it.
            self._send_result(stanza)
            return None
        if stanza.tag == IQ_TAG and stanza[0:1] and stanza[0].tag == BIND_TAG:
            self._send_error(stanza, StanzaError("not-allowed", "a resource is already bound"))
            return
        self.server.router.route(stanza, session.jid, session)

    def _broadcast_presence(self, presence: Element, session: BoundSession):
        """Presence without 'to' (RFC 6121 §4.2, §4.4, §4.5): the session's own
        availability, then the presence handler tells whoever should hear it."""
        presence_type = presence.get("type")
        if presence_type is None:
            try:
                priority = int(presence.findtext(f"{{{NS_CLIENT}}}priority") or 0)
            except ValueError:
                self._send_error(presence, StanzaError("bad-request", "priority is an integer"))
                return None
            initial = session.became_available(priority)
        elif presence_type == "unavailable":
            initial = False
            session.became_unavailable()
        else:
            self.server.router.route(presence, session.jid, session)
            return None
        registry = self.server.registry
        for transform in registry.presence_transforms:
            transform(session, presence)
        result = registry.presence.broadcast(session, presence)
        if initial and registry.initial_presence_hooks:
            # Stanzas routed to this session while the hooks run (offline
            # messages being loaded) wait behind what the hooks deliver.
            return _chain(result, session.run_initial_presence_hooks())
        return result if inspect.isawaitable(result) else None

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.session is None:
            self.stream_error(StreamError("connection-timeout", "authenticate sooner"))


def _load_account(account: AccountState, loaders) -> None:
    if account.user_id is None:
        account.user_id = (
            get_user_model()
            .objects.filter(username=account.jid.local)
            .values_list("id", flat=True)
            .first()
        )
    if account.user_id is None:
        return
    for loader in loaders:
        loader(account, account.user_id)


async def _run_hooks(hooks, session: BoundSession) -> None:
    for hook in hooks:
        result = hook(session)
        if inspect.isawaitable(result):
            await result


async def _chain(first, second) -> None:
    if inspect.isawaitable(first):
        await first
    await second


def _b64decode(text: str | None) -> bytes | None:
    """SASL payload (RFC 6120 §6.4.2): None if absent, b'' for '='."""
    if text is None or not text.strip():
        return None
    if text.strip() == "=":
        return b""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None
