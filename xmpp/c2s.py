"""A client-to-server session: the XMPP stream over one transport.

Theory of operation. A transport (TCP now; WebSocket and BOSH later) hands
bytes to data_received() and is told of TLS and of the connection's end;
the session answers through transport.write(). The stream goes through the
states of RFC 6120:

    CONNECTED --header--> [STARTTLS §5 --restart-->] SASL §6 --restart-->
    AUTHENTICATED --bind §7--> BOUND (stanzas flow to the router) --> CLOSED

Most events are handled synchronously. Steps that need I/O (the credential
lookup of SASL) run as a task while the transport's reading is paused, and
the events that arrived meanwhile are replayed in order afterwards, so no
stanza is lost or reordered and no task lives per idle session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
import secrets
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from django.contrib.auth import get_user_model

from .orm_thread import orm_thread
from .plugins import IqRequest
from .protocol.errors import StanzaError, StreamError, error_reply
from .protocol.jid import JID, InvalidJID, nodeprep, resourceprep
from .protocol.parser import StreamClosed, StreamOpened, StreamParser
from .protocol.scram import SaslFailure, ScramServer, offered_mechanisms, parse_plain
from .protocol.xml import (
    NS_BIND,
    NS_CLIENT,
    NS_SASL,
    NS_SESSION,
    NS_STREAMS,
    NS_TLS,
    escape_attr,
    serialize,
)
from .shaping import StreamShaper

if TYPE_CHECKING:
    from .server import XmppServer
    from .sessions import AccountState

log = logging.getLogger(__name__)

STANZA_KINDS = frozenset(
    {f"{{{NS_CLIENT}}}message", f"{{{NS_CLIENT}}}presence", f"{{{NS_CLIENT}}}iq"}
)
IQ_TAG = f"{{{NS_CLIENT}}}iq"
PRESENCE_TAG = f"{{{NS_CLIENT}}}presence"
BIND_TAG = f"{{{NS_BIND}}}bind"
SESSION_TAG = f"{{{NS_SESSION}}}session"
MAX_AUTH_ATTEMPTS = 3  # RFC 6120 §6.4.5: "at least 2 and no more than 5"


class ClientSession:
    __slots__ = (
        "server",
        "transport",
        "parser",
        "stream_id",
        "jid",
        "jid_str",
        "username",
        "user_id",
        "authenticated",
        "available",
        "priority",
        "presence_sent",
        "roster_requested",
        "last_presence",
        "directed",
        "_held",
        "account",
        "_header_sent",
        "_closing",
        "_pending",
        "_restart",
        "_sasl",
        "_sasl_mechanism",
        "_sasl_stage",
        "_auth_attempts",
        "_shaper",
        "_resume_timer",
        "_auth_timer",
    )

    def __init__(self, server: XmppServer, transport) -> None:
        self.server = server
        self.transport = transport
        self.parser = self._new_parser()
        self.stream_id = ""
        self.jid: JID | None = None
        self.jid_str = ""
        self.username = ""
        self.user_id: int | None = None
        self.authenticated = False
        self.available = False
        self.priority = 0
        self.presence_sent = False
        self.roster_requested = False  # RFC 6121 §2.1.6: gets roster pushes
        self.last_presence: Element | None = None  # answers probes (§4.3.2)
        self.directed: set[JID] | None = None  # directed presence (§4.6)
        self._held: list[bytes] | None = None
        self.account: AccountState | None = None
        self._header_sent = False
        self._closing = False
        self._pending: list | None = None
        self._restart = False
        self._sasl: ScramServer | None = None
        self._sasl_mechanism = ""
        self._sasl_stage = 0
        self._auth_attempts = 0
        self._shaper = StreamShaper(server.limits, time.monotonic())
        self._resume_timer: asyncio.TimerHandle | None = None
        # RFC 6120 §13.12 item 4: an unauthenticated stream does not linger.
        self._auth_timer = asyncio.get_running_loop().call_later(
            server.limits.auth_timeout, self._auth_timed_out
        )

    def __repr__(self) -> str:
        return f"<ClientSession {self.jid_str or self.transport.peer}>"

    def _new_parser(self) -> StreamParser:
        limits = self.server.limits
        return self.transport.framing.parser(
            limits.max_stanza_size, limits.max_depth, limits.max_attributes
        )

    def _tls_required(self) -> bool:
        """TLS is required where it can be negotiated in-band (RFC 6120 §5);
        a WebSocket has its TLS, or not, from the HTTP side."""
        return self.server.limits.require_tls and hasattr(self.transport, "start_tls")

    # -- bytes in ------------------------------------------------------------

    def data_received(self, data, size: int | None = None) -> None:
        """What the transport read: bytes, or for BOSH a parsed <body/> of
        `size` bytes."""
        if self._closing and self.parser.closed:
            return
        limits = self.server.limits
        now = time.monotonic()
        in_debt = self._shaper.read(len(data) if size is None else size, limits, now)
        try:
            events = self.parser.feed(data)
        except StreamError as exc:
            self.stream_error(exc)
            return
        if self._pending is not None:
            self._pending.extend(events)
            return
        if events:
            self._process(events, now)
        if in_debt and self._pending is None and not self._closing:
            self._hold([], self._shaper.pause(limits, now, stanza_waiting=False))

    def _process(self, events: list, now: float | None = None, shaped: bool = True) -> None:
        limits = self.server.limits
        if now is None:
            now = time.monotonic()
        for index, event in enumerate(events):
            if self._closing and not isinstance(event, StreamClosed):
                return
            if (
                shaped
                and self.jid is not None
                and isinstance(event, Element)
                and not self._shaper.admit_stanza(limits, now)
            ):
                # Over XMPP_STANZAS_PER_SECOND: this stanza and what follows
                # wait, in order, while the transport stops reading.
                self._hold(events[index:], self._shaper.pause(limits, now, stanza_waiting=True))
                return
            try:
                pending_work = self._handle_event(event)
            except StreamError as exc:
                self.stream_error(exc)
                return
            if self._restart:
                # A stream restart (after STARTTLS or SASL) discards whatever
                # followed in the old stream (RFC 6120 §5.4.3.3, §6.4.6).
                self._restart = False
                return
            if pending_work is not None:
                self._pending = list(events[index + 1 :])
                self.transport.pause_reading()
                self.server.spawn(self._complete(pending_work))
                return

    def _hold(self, events: list, delay: float) -> None:
        """Stop reading for `delay` seconds (shaping, xmpp/shaping.py): the
        client's TCP window fills and it slows down; nothing is refused."""
        self._pending = list(events)
        self.transport.pause_reading()
        self._resume_timer = asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        """Resume reading once the budgets allow, then handle what waited."""
        self._resume_timer = None
        if self._closing:
            return
        pending = self._pending or []
        limits = self.server.limits
        stanza_waiting = self.jid is not None and bool(pending) and isinstance(pending[0], Element)
        delay = self._shaper.pause(limits, time.monotonic(), stanza_waiting)
        if delay:
            self._resume_timer = asyncio.get_running_loop().call_later(delay, self._release)
            return
        self._pending = None
        self.transport.resume_reading()
        if pending:
            self._process(pending)

    async def _complete(self, work) -> None:
        try:
            await work
        except StreamError as exc:
            self.stream_error(exc)
        except Exception:
            log.exception("session %r failed", self)
            self.stream_error(StreamError("internal-server-error"))
        if self._restart:
            self._restart = False
            self._pending = []  # the old stream's leftovers (RFC 6120 §6.4.6)
        if self._closing:
            return
        self._release()

    def _handle_event(self, event):
        if isinstance(event, Element):
            if self.jid is not None:
                return self._handle_stanza(event)
            return self._handle_negotiation(event)
        if isinstance(event, StreamOpened):
            return self._stream_opened(event)
        if isinstance(event, StreamClosed):
            self._peer_closed()
        return None

    # -- stream header and features (RFC 6120 §4.7, §4.3.2) ------------------

    def _stream_opened(self, event: StreamOpened) -> None:
        attrs = event.attrs
        self._send_header(attrs.get("from"))
        if event.default_ns != NS_CLIENT:
            raise StreamError("invalid-namespace", "the default namespace must be jabber:client")
        to = attrs.get("to", self.server.domain)
        try:
            to_domain = JID.parse(to).domain
        except InvalidJID:
            raise StreamError("host-unknown", f"{to} is not served here") from None
        if to_domain != self.server.domain:
            raise StreamError("host-unknown", f"{to} is not served here")
        version = attrs.get("version", "0.9")
        if version.partition(".")[0] != "1":
            raise StreamError("unsupported-version", "this server speaks XMPP 1.0")
        features = b"".join(serialize(child, NS_STREAMS) for child in self._features())
        self.transport.write(self.transport.framing.features(features))

    def _send_header(self, client_from: str | None) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        to = ""
        if client_from:
            try:
                to = f" to='{escape_attr(str(JID.parse(client_from)))}'"
            except InvalidJID:
                to = ""
        self.transport.write(
            self.transport.framing.header(
                f"id='{self.stream_id}' from='{self.server.domain}'{to} version='1.0' xml:lang='en'"
            )
        )
        self._header_sent = True

    def _features(self) -> Element:
        features = Element(f"{{{NS_STREAMS}}}features")
        tls_needed = not self.transport.secure and self.server.tls is not None
        if not self.authenticated:
            if tls_needed and hasattr(self.transport, "start_tls"):
                starttls = SubElement(features, f"{{{NS_TLS}}}starttls")
                if self.server.limits.require_tls:
                    SubElement(starttls, f"{{{NS_TLS}}}required")
            if self.transport.secure or not self._tls_required():
                mechanisms = SubElement(features, f"{{{NS_SASL}}}mechanisms")
                for name in self._mechanisms():
                    SubElement(mechanisms, f"{{{NS_SASL}}}mechanism").text = name
                for offer in self.server.registry.pre_auth_stream_features:
                    feature = offer(self)
                    if feature is not None:
                        features.append(feature)
                cb_types = self.transport.channel_bindings
                if cb_types:
                    # XEP-0440: which channel-binding types SCRAM-*-PLUS may use.
                    cb = SubElement(features, "{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                    for cb_type in cb_types:
                        SubElement(cb, "{urn:xmpp:sasl-cb:0}channel-binding", {"type": cb_type})
            return features
        SubElement(features, BIND_TAG)
        # RFC 6121 Appendix E: session establishment is a no-op kept for old clients.
        session = SubElement(features, SESSION_TAG)
        SubElement(session, f"{{{NS_SESSION}}}optional")
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
        if tag in STANZA_KINDS:
            raise StreamError("not-authorized", "bind a resource first")
        raise StreamError("unsupported-stanza-type", tag)

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
        self._restart_stream()

    def _restart_stream(self) -> None:
        self.parser.discard()
        self.parser = self._new_parser()
        self._restart = True

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
        if not self.server.session_authenticated(self):
            # RFC 6120 §4.9.3.18: XMPP_MAX_SESSIONS_PER_IP, a local policy.
            raise StreamError("policy-violation", "too many sessions from your address")
        self.authenticated = True
        self._send_sasl("success", additional)
        self._restart_stream()

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
        self.account = self.server.sessions.account_for_bind(jid.bare)
        registry = self.server.registry
        if registry.session_bound_hooks or (registry.account_loaders and not self.account.loaded):
            return self._bind_after_hooks(iq, jid)
        self._finish_bind(iq, jid)
        return None

    async def _bind_after_hooks(self, iq: Element, jid: JID) -> None:
        # Plugins load what routing needs in memory (roster, block list)
        # before the first stanza of this session can be routed: the account
        # loaders together in one worker thread, then the async hooks.
        registry = self.server.registry
        account = self.account
        if not account.loaded and registry.account_loaders:
            account.user_id = self.user_id
            await orm_thread.call(_load_account, account, registry.account_loaders)
            account.loaded = True
        await _run_hooks(registry.session_bound_hooks, self)
        if self._closing:
            self.server.sessions.forget_unused_account(jid.bare)
            return
        self._finish_bind(iq, jid)

    def _finish_bind(self, iq: Element, jid: JID) -> None:
        # §7.7.2.2 policy: the new session wins; the old one is told <conflict/>
        # and ends before this one binds, as any session ends: unavailable
        # presence to the other resources (RFC 6121 §4.5.2), session-closed hooks.
        displaced = self.server.sessions.get(jid)
        if displaced is not None:
            displaced.stream_error(StreamError("conflict", "replaced by a new session"))
            displaced._unbind()  # in case it was already closing and stream_error did nothing
        self.jid = jid
        self.jid_str = str(jid)
        self.server.sessions.bind(self, jid)
        self._auth_timer.cancel()
        self._auth_timer = None
        payload = Element(BIND_TAG)
        SubElement(payload, f"{{{NS_BIND}}}jid").text = self.jid_str
        self._send_result(iq, payload)

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

    def _handle_stanza(self, stanza: Element):
        if stanza.tag not in STANZA_KINDS:
            raise StreamError("unsupported-stanza-type", stanza.tag)
        self.server.stanzas_received += 1
        claimed = stanza.get("from")
        # §8.1.2.1: the server stamps 'from'; a client may only claim itself.
        if claimed is not None and claimed != self.jid_str and claimed != str(self.jid.bare):
            raise StreamError("invalid-from", "you cannot send as someone else")
        stanza.set("from", self.jid_str)
        if stanza.tag == PRESENCE_TAG and stanza.get("to") is None:
            return self._broadcast_presence(stanza)
        if stanza.tag == PRESENCE_TAG and stanza.get("type") in (None, "unavailable"):
            self.server.registry.presence.directed(self, stanza)
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
        self.server.router.route(stanza, self.jid, self)

    def _broadcast_presence(self, presence: Element):
        """Presence without 'to' (RFC 6121 §4.2, §4.4, §4.5): the session's own
        availability, then the presence handler tells whoever should hear it."""
        presence_type = presence.get("type")
        if presence_type is None:
            try:
                priority = int(presence.findtext(f"{{{NS_CLIENT}}}priority") or 0)
            except ValueError:
                self._send_error(presence, StanzaError("bad-request", "priority is an integer"))
                return None
            self.priority = max(-128, min(127, priority))  # RFC 6121 §4.7.2.3
            initial = not self.available and not self.presence_sent
            self.available = True
            self.presence_sent = True
        elif presence_type == "unavailable":
            initial = False
            self.available = False
        else:
            self.server.router.route(presence, self.jid, self)
            return None
        registry = self.server.registry
        for transform in registry.presence_transforms:
            transform(self, presence)
        result = registry.presence.broadcast(self, presence)
        if initial and registry.initial_presence_hooks:
            # Stanzas routed to this session while the hooks run (offline
            # messages being loaded) wait behind what the hooks deliver.
            self._held = []
            return _chain(result, self._initial_presence_hooks())
        return result if inspect.isawaitable(result) else None

    # -- bytes out -----------------------------------------------------------

    def deliver(self, stanza: Element) -> None:
        """Write a routed stanza; a client that does not read is disconnected."""
        self.send_serialized(serialize(stanza))

    async def _initial_presence_hooks(self) -> None:
        try:
            await _run_hooks(self.server.registry.initial_presence_hooks, self)
        finally:
            held, self._held = self._held, None
            for data in held or ():
                self.send_serialized(data)

    def deliver_before_held(self, stanza: Element) -> None:
        """deliver() for an initial-presence hook: ahead of stanzas held meanwhile."""
        held, self._held = self._held, None
        self.send_serialized(serialize(stanza))
        self._held = held

    def send_serialized(self, data: bytes) -> None:
        """deliver() for a stanza serialised once for many recipients."""
        if self._closing:
            return
        if self._held is not None:
            self._held.append(data)
            return
        data = self.transport.framing.stanza(data)
        if self.transport.buffered > self.server.limits.max_outgoing_buffer:
            log.info("%r is not reading; disconnecting", self)
            self._closing = True
            self.transport.abort()
            return
        self.transport.write(data)

    # -- the end of the stream (RFC 6120 §4.4) -------------------------------

    def stream_error(self, error: StreamError) -> None:
        if self._closing:
            return
        log.debug("stream error to %r: %s", self, error)
        if not self._header_sent:
            self._send_header(None)
        framing = self.transport.framing
        self.transport.write(framing.error(error.to_bytes()) + framing.close())
        self._close_now()

    def close_stream(self, error: StreamError) -> None:
        """Close the stream from our side (shutdown: <system-shutdown/>, RFC 6120
        §4.9.3.20): the stream error, then </stream:stream>, and give the peer a
        moment to answer with its own before the transport is closed (§4.4)."""
        if self._closing:
            return
        self._drain_held()
        self.transport.resume_reading()  # for the peer's </stream:stream>
        self._closing = True
        if not self._header_sent:
            self._send_header(None)
        framing = self.transport.framing
        self.transport.write(framing.error(error.to_bytes()) + framing.close())

    def _drain_held(self) -> None:
        """Handle, unshaped, what a shaping hold keeps: it was taken from the
        client, and is not lost because the stream ends."""
        if self._resume_timer is None:
            return
        self._resume_timer.cancel()
        self._resume_timer = None
        pending, self._pending = self._pending or [], None
        self._process(pending, shaped=False)

    def _peer_closed(self) -> None:
        if not self._closing:
            self.transport.write(self.transport.framing.close())
        self._close_now()

    def _close_now(self) -> None:
        self._closing = True
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._unbind()
        self.transport.close()

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.jid is None:
            self.stream_error(StreamError("connection-timeout", "authenticate sooner"))

    def connection_lost(self) -> None:
        self._drain_held()
        self._closing = True
        self.parser.discard()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self._unbind()

    def _unbind(self) -> None:
        if self.jid is None:
            return
        was_available = self.available
        self.available = False
        self.server.sessions.unbind(self)
        try:
            # RFC 6121 §4.5.2: an unavailable presence when a session ends.
            self.server.registry.presence.session_ended(self, was_available)
        except Exception:
            log.exception("presence handler failed for %r", self)
        for hook in self.server.registry.session_closed_hooks:
            try:
                result = hook(self)
                if inspect.isawaitable(result):
                    self.server.spawn(result)
            except Exception:
                log.exception("session-closed hook failed")
        self.jid = None


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


async def _run_hooks(hooks, session: ClientSession) -> None:
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
