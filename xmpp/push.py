"""Push notifications (XEP-0357 v0.4.1), the user's server's side ("XMPP
server" in the XEP): registrations of app servers, and the notifications
published to them when the user cannot get a message now.

What this module owns:

- The IQs of §5 and §6 on the user's own account (no 'to', or the bare JID;
  anyone else gets <service-unavailable/>, as for blocking):
  `<enable jid='' node=''>` with an optional publish-options form
  (FORM_TYPE http://jabber.org/protocol/pubsub#publish-options, kept as the
  client sent it), and `<disable jid='' [node='']/>`, all of that service's
  nodes when no node is named. A missing 'jid' or 'node' on enable (a
  publish needs both) or a form of another FORM_TYPE or type is
  <bad-request/>; a 'jid' that is not one is <jid-malformed/>; past
  XMPP_PUSH_MAX_REGISTRATIONS an account's new registration is
  <not-allowed/>. Enabling a (service, node) again replaces its form.
  Disabling what is not registered is still a result.
- `PushRegistration` rows (xmpp.models), written through one group-commit
  writer (xmpp/writer.py: the IQ result waits for the commit) and kept in
  memory for every account, online or not (`registrations`): all of them
  are read once at start (`plugins.listener`), an account's own again at
  its first bind (`plugins.account_loader`: rows changed behind the
  server's back, in Django admin or by another node, show from there), so
  that deciding to push never queries the database.
- The notification (§7): an IQ set from the user's bare JID (as the XEP's
  example and mod_cloud_notify send it; app servers check it) to the
  service's JID, `<pubsub><publish node=''><item><notification
  xmlns='urn:xmpp:push:0'>` with the `urn:xmpp:push:summary` form:
  message-count, last-message-sender (the message's 'from', unless
  XMPP_PUSH_INCLUDE_SENDER is off) and last-message-body (only when
  XMPP_PUSH_INCLUDE_BODY is on: the body would otherwise cross the app
  server and the vendor's push network, §9), then `<publish-options>` with
  the form given at enable. It is routed like any stanza: a local app
  server (or a client's full JID) gets it now; a remote one once
  server-to-server exists (`Delivery.elsewhere`).
- The answer (§8), awaited in a task through `Router.query()`, so routing
  never waits: a result does nothing; an error disables (deletes) that
  registration, unless it is transient: type 'wait', or
  <remote-server-not-found/> / <remote-server-timeout/>, which is what our
  router answers for a domain it cannot reach today, and what s2s will
  answer for a DNS or network failure; a device must not lose its pushes to
  an outage (mod_cloud_notify does not count 'wait' errors either, and only
  disables after repeated errors). No answer within XMPP_PUSH_TIMEOUT
  seconds is logged and changes nothing.

Which messages are pushed ("important", after mod_cloud_notify's rules):
a message that is not headline or error with a non-empty body; an
encrypted one whose body a client may leave out (OMEMO, legacy
and OpenPGP for XMPP); a Jingle call proposal (XEP-0353). A groupchat
subject change, chat states, receipts and markers alone are not pushed:
they would wake a phone for nothing. A received carbon (XEP-0280) is judged
by the message it carries; a sent carbon is never pushed.

When ("the recipient cannot get it now"):

- (a) the message went to offline storage (no available resource, RFC 6121
  §8.5.2.2.1): pushed to every registration of the account, once the store
  is committed (`plugins.on_offline_stored`), so a message that was refused
  (blocked sender, full quota) pushes nothing.
- (b) the session that would get it is detached (XEP-0198, waiting for
  resumption) or inactive (XEP-0352, holding stanzas): the code that queues
  or holds the stanza runs `plugins.on_message_waits` (BoundSession.
  send_serialized), and `message_waits` here calls `notify_away(session,
  stanza)`. It pushes to the registrations that this session enabled (the
  device the session runs on, as mod_cloud_notify does for a hibernated
  session); a session that enabled none pushes nothing. One stanza queued
  for several sessions in one loop turn pushes each registration once. A
  resumption resets the counts (`plugins.on_session_resumed`).

message-count is per registration, in memory: the notifications sent to it
since a session of the account last bound (each bind resets it to 0, as
does a new enable; a restart starts again from 0).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import sync_to_async
from defusedxml.ElementTree import fromstring
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from .models import PushRegistration
from .plugins import IqRequest, plugins
from .prepared import PreparedQuery
from .protocol.errors import StanzaError
from .protocol.jid import JID, InvalidJID
from .protocol.xml import NS_CLIENT, NS_STANZA_ERRORS, serialize, split_tag
from .writer import BatchedWriter

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router
    from .sessions import AccountState

log = logging.getLogger(__name__)

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUMMARY = "urn:xmpp:push:summary"

ENABLE = f"{{{NS_PUSH}}}enable"
DISABLE = f"{{{NS_PUSH}}}disable"
FORM = f"{{{NS_DATA}}}x"
FIELD = f"{{{NS_DATA}}}field"
VALUE = f"{{{NS_DATA}}}value"
IQ = f"{{{NS_CLIENT}}}iq"
MESSAGE = f"{{{NS_CLIENT}}}message"
BODY = f"{{{NS_CLIENT}}}body"
SUBJECT = f"{{{NS_CLIENT}}}subject"

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
CARBON_SENT = f"{{{NS_CARBONS}}}sent"
CARBON_RECEIVED = f"{{{NS_CARBONS}}}received"
FORWARDED_MESSAGE = f"{{{NS_FORWARD}}}forwarded/{MESSAGE}"
# Payloads that make a message worth a push without a body (mod_cloud_notify).
IMPORTANT_PAYLOADS = (
    "{eu.siacs.conversations.axolotl}encrypted",  # OMEMO (legacy)
    "{urn:xmpp:omemo:2}encrypted",  # OMEMO (XEP-0384 0.8+)
    "{jabber:x:encrypted}x",  # XEP-0027
    "{urn:xmpp:openpgp:0}openpgp",  # XEP-0373
    "{urn:xmpp:jingle-message:0}propose",  # XEP-0353: an incoming call
)
# §8: errors that say the app server could not be reached this time, not
# that the registration is gone.
TRANSIENT_CONDITIONS = frozenset({"remote-server-not-found", "remote-server-timeout"})

# Keys of AccountState.data.
LOADED_ROWS = "push.loaded_rows"  # the account loader's rows, merged on the loop
ENABLED_BY = "push.enabled_by"  # session -> the registration keys it enabled


# -- registrations in memory -------------------------------------------------------


Key = tuple[str, str]  # (service JID, node)


@dataclass(eq=False, slots=True)
class Registration:
    """One registration of an account (§5) and its notifications since the
    last bind."""

    service: JID
    node: str
    options: Element | None = None  # the publish-options form
    count: int = 0

    @property
    def key(self) -> Key:
        return (str(self.service), self.node)


class PushRegistrations:
    """Every account's registrations, by bare JID: what routing asks."""

    def __init__(self) -> None:
        self._by_account: dict[JID, dict[Key, Registration]] = {}

    def of(self, owner: JID) -> list[Registration]:
        found = self._by_account.get(owner)
        return list(found.values()) if found else []

    def count(self, owner: JID) -> int:
        return len(self._by_account.get(owner, ()))

    def get(self, owner: JID, key: Key) -> Registration | None:
        return self._by_account.get(owner, {}).get(key)

    def add(self, owner: JID, registration: Registration) -> None:
        self._by_account.setdefault(owner, {})[registration.key] = registration

    def remove(self, owner: JID, service: JID, node: str | None) -> list[Registration]:
        """Forget `service`'s registration for `node`, or all of them."""
        found = self._by_account.get(owner)
        if not found:
            return []
        service_str = str(service)
        keys = [k for k in found if k[0] == service_str and (node is None or k[1] == node)]
        removed = [found.pop(k) for k in keys]
        if not found:
            del self._by_account[owner]
        return removed

    def discard(self, owner: JID, registration: Registration) -> bool:
        """Forget `registration` if it is still the one for its key (not
        replaced by a new enable meanwhile)."""
        found = self._by_account.get(owner)
        if not found or found.get(registration.key) is not registration:
            return False
        del found[registration.key]
        if not found:
            del self._by_account[owner]
        return True

    def merge(self, owner: JID, rows: Iterable[tuple[str, str, str]]) -> None:
        """Make `owner`'s registrations those of the stored `rows` (service,
        node, form), keeping the objects of those already known."""
        current = self._by_account.get(owner, {})
        fresh: dict[Key, Registration] = {}
        for service, node, options in rows:
            registration = _from_row(service, node, options)
            if registration is None:
                continue
            known = current.get(registration.key)
            if known is not None:
                known.options = registration.options
                registration = known
            fresh[registration.key] = registration
        if fresh:
            self._by_account[owner] = fresh
        else:
            self._by_account.pop(owner, None)

    def reset_counts(self, owner: JID) -> None:
        for registration in self._by_account.get(owner, {}).values():
            registration.count = 0

    def clear(self) -> None:
        self._by_account.clear()


registrations = PushRegistrations()


def _from_row(service: str, node: str, options: str) -> Registration | None:
    try:
        jid = JID.parse(service)
    except InvalidJID:
        log.warning("ignoring the push registration with the malformed JID %r", service)
        return None
    form = None
    if options:
        try:
            form = fromstring(options)
        except Exception:
            log.warning("ignoring the unreadable publish-options of %s (%s)", service, node)
    return Registration(jid, node, form)


# -- the database: one group-commit writer -------------------------------------------


ENABLE_WRITE, DISABLE_WRITE = "enable", "disable"


class PushWrite:
    """An enable (upsert) or a disable (delete, of one node or all)."""

    __slots__ = ("kind", "local", "service", "node", "options", "done")

    def __init__(
        self,
        kind: str,
        local: str,
        service: str,
        node: str | None,
        options: str = "",
        done: asyncio.Future | None = None,
    ) -> None:
        self.kind = kind
        self.local = local
        self.service = service
        self.node = node
        self.options = options
        self.done = done


def _commit(batch: list[PushWrite]) -> list[bool]:
    """One transaction for the batch; for each write, whether the account exists."""
    names = {write.local for write in batch}
    users = dict(
        get_user_model()
        .objects.filter(username__in=names, is_active=True)
        .values_list("username", "id")
    )
    outcomes = []
    with transaction.atomic():
        for write in batch:
            user_id = users.get(write.local)
            if user_id is None:
                outcomes.append(False)
                continue
            if write.kind == ENABLE_WRITE:
                PushRegistration.objects.update_or_create(
                    user_id=user_id,
                    service=write.service,
                    node=write.node,
                    defaults={"publish_options": write.options},
                )
            else:
                rows = PushRegistration.objects.filter(user_id=user_id, service=write.service)
                if write.node is not None:
                    rows = rows.filter(node=write.node)
                rows.delete()
            outcomes.append(True)
    return outcomes


def _committed(batch: list[PushWrite], outcomes: list[bool]) -> None:
    for write, outcome in zip(batch, outcomes, strict=True):
        if write.done is not None and not write.done.done():
            write.done.set_result(outcome)


def _failed(batch: list[PushWrite], exc: BaseException) -> None:
    for write in batch:
        if write.done is not None and not write.done.done():
            write.done.set_exception(StanzaError("internal-server-error"))


writer: BatchedWriter[PushWrite] = BatchedWriter(
    "push", _commit, committed=_committed, on_failure=_failed, retry=True
)


async def _write(write: PushWrite) -> bool:
    write.done = asyncio.get_running_loop().create_future()
    writer.submit(write, at_once=True)
    return await write.done


# -- loading: at start, and an account's own rows at its first bind -------------------


def _all_rows() -> list[tuple[str, str, str, str]]:
    return list(
        PushRegistration.objects.order_by("id").values_list(
            "user__username", "service", "node", "publish_options"
        )
    )


async def load_all(host: str):
    """plugins.listener: every account's registrations, once at start, so an
    account that has not logged in since still gets its pushes."""
    from .server import XmppServer

    domain = XmppServer.current.domain if XmppServer.current else settings.XMPP_DOMAIN
    by_account: dict[JID, list[tuple[str, str, str]]] = {}
    for username, service, node, options in await sync_to_async(_all_rows)():
        by_account.setdefault(JID(username, domain, ""), []).append((service, node, options))
    for owner, rows in by_account.items():
        registrations.merge(owner, rows)

    async def stop() -> None:
        await writer.flush()

    return stop


# Read at every first bind of an account (xmpp/prepared.py: compiled once).
_ACCOUNT_ROWS = PreparedQuery(
    lambda user_id: PushRegistration.objects.filter(user_id=user_id).values_list(
        "service", "node", "publish_options"
    )
)


@plugins.account_loader
def load_on_bind(account: AccountState, user_id: int) -> None:
    """The account's stored rows, merged on the loop by `reset_on_bind`."""
    account.data[LOADED_ROWS] = list(_ACCOUNT_ROWS.rows(user_id))


@plugins.on_session_bound
def reset_on_bind(session: BoundSession) -> None:
    """A session of the account is back: its counts start again (and the
    rows read at its first bind replace what memory had)."""
    owner = session.jid.bare
    account = session.account
    rows = account.data.pop(LOADED_ROWS, None) if account is not None else None
    if rows is not None:
        registrations.merge(owner, rows)
    registrations.reset_counts(owner)


@plugins.on_session_resumed
def reset_on_resume(session: BoundSession) -> None:
    """XEP-0198 resumption: the user's device is back, counts restart."""
    registrations.reset_counts(session.jid.bare)


@plugins.on_session_closed
def forget_session(session: BoundSession) -> None:
    account = session.account
    enabled_by = account.data.get(ENABLED_BY) if account is not None else None
    if enabled_by:
        enabled_by.pop(session, None)


# -- the IQs (§5, §6) -------------------------------------------------------------------


def _own_account(request: IqRequest) -> JID:
    if request.sender.bare != request.to:
        raise StanzaError("service-unavailable")
    return request.to


def _service(payload: Element) -> JID:
    text = payload.get("jid")
    if not text:
        raise StanzaError("bad-request", "the push service's 'jid' is missing")
    try:
        return JID.parse(text)
    except InvalidJID:
        raise StanzaError("jid-malformed", f"not a JID: {text}") from None


def _publish_options(payload: Element) -> Element | None:
    """The enable's publish-options form (§5), checked, or None."""
    forms = payload.findall(FORM)
    if not forms:
        return None
    if len(forms) > 1:
        raise StanzaError("bad-request", "one publish-options form at most")
    form = forms[0]
    if form.get("type", "submit") != "submit":
        raise StanzaError("bad-request", "publish-options is a form of type 'submit'")
    for field in form.iter(FIELD):
        if field.get("var") == "FORM_TYPE" and field.findtext(VALUE) != PUBLISH_OPTIONS:
            raise StanzaError("bad-request", f"publish-options has FORM_TYPE {PUBLISH_OPTIONS}")
    return form


def _remember_enabled_by(request: IqRequest, key: Key) -> None:
    session = request.session
    account = getattr(session, "account", None)
    if account is not None:
        account.data.setdefault(ENABLED_BY, {}).setdefault(session, set()).add(key)


def _forget_enabled(request: IqRequest, removed: list[Registration]) -> None:
    session = request.session
    account = getattr(session, "account", None)
    enabled_by = account.data.get(ENABLED_BY) if account is not None else None
    if not enabled_by or not removed:
        return
    keys = {registration.key for registration in removed}
    for enabled in enabled_by.values():
        enabled.difference_update(keys)


@plugins.iq(ENABLE, types=("set",), scopes=("account",), feature=NS_PUSH)
def enable(request: IqRequest):
    """§5: register (or re-register) an app server's node for this account."""
    owner = _own_account(request)
    payload = request.payload
    service = _service(payload)
    node = payload.get("node")
    if not node:
        raise StanzaError("bad-request", "the push 'node' is missing")
    if len(node) > PushRegistration._meta.get_field("node").max_length:
        raise StanzaError("bad-request", "the push 'node' is too long")
    options = _publish_options(payload)
    registration = Registration(service, node, options)
    limit = settings.XMPP_PUSH_MAX_REGISTRATIONS
    if registrations.get(owner, registration.key) is None and registrations.count(owner) >= limit:
        raise StanzaError("not-allowed", f"an account has at most {limit} push registrations")
    return _enable(request, owner, registration)


async def _enable(request: IqRequest, owner: JID, registration: Registration) -> None:
    options = serialize(registration.options, "").decode() if registration.options else ""
    write = PushWrite(ENABLE_WRITE, owner.local, *registration.key, options)
    if not await _write(write):
        raise StanzaError("registration-required")  # the account was removed meanwhile
    registrations.add(owner, registration)
    _remember_enabled_by(request, registration.key)
    log.info("push enabled for %s: %s (%s)", owner, registration.service, registration.node)


@plugins.iq(DISABLE, types=("set",), scopes=("account",), feature=NS_PUSH)
def disable(request: IqRequest):
    """§6: no more pushes to that node of the service, or to any of its nodes."""
    owner = _own_account(request)
    service = _service(request.payload)
    node = request.payload.get("node") or None
    # Out of memory first: nothing is pushed from here on, committed or not.
    removed = registrations.remove(owner, service, node)
    _forget_enabled(request, removed)
    return _disable(owner, service, node)


async def _disable(owner: JID, service: JID, node: str | None) -> None:
    await _write(PushWrite(DISABLE_WRITE, owner.local, str(service), node))


# -- which messages are pushed ---------------------------------------------------------


def pushed_message(stanza: Element) -> Element | None:
    """The message a push would be about (the one a received carbon carries),
    or None when `stanza` is not important enough to wake a device."""
    if stanza.tag != MESSAGE:
        return None
    if stanza.find(CARBON_SENT) is not None:
        return None  # the user's own message, from another of its clients
    received = stanza.find(CARBON_RECEIVED)
    if received is not None:
        inner = received.find(FORWARDED_MESSAGE)
        if inner is None:
            return None
        stanza = inner
    stanza_type = stanza.get("type")
    if stanza_type in ("headline", "error"):
        return None
    for tag in IMPORTANT_PAYLOADS:
        if stanza.find(tag) is not None:
            return stanza
    body = stanza.findtext(BODY)
    if body is None or not body.strip():
        return None
    if stanza_type == "groupchat" and stanza.find(SUBJECT) is not None:
        return None
    return stanza


# -- the notification (§7) and its answer (§8) -----------------------------------------


def _field(form: Element, var: str, value: str) -> None:
    field = SubElement(form, FIELD, {"var": var})
    SubElement(field, VALUE).text = value


def publish_iq(owner: JID, registration: Registration, message: Element) -> Element:
    """The publish of §7 for `message` (the count already incremented)."""
    iq = Element(IQ, {"type": "set", "to": str(registration.service)})
    pubsub = SubElement(iq, f"{{{NS_PUBSUB}}}pubsub")
    publish = SubElement(pubsub, f"{{{NS_PUBSUB}}}publish", {"node": registration.node})
    item = SubElement(publish, f"{{{NS_PUBSUB}}}item")
    notification = SubElement(item, f"{{{NS_PUSH}}}notification")
    summary = SubElement(notification, FORM, {"type": "submit"})
    _field(summary, "FORM_TYPE", SUMMARY)
    _field(summary, "message-count", str(registration.count))
    sender = message.get("from")
    if sender and settings.XMPP_PUSH_INCLUDE_SENDER:
        _field(summary, "last-message-sender", sender)
    body = message.findtext(BODY)
    if body and settings.XMPP_PUSH_INCLUDE_BODY:
        _field(summary, "last-message-body", body)
    if registration.options is not None:
        options = SubElement(pubsub, f"{{{NS_PUBSUB}}}publish-options")
        options.append(registration.options)
    return iq


def notify(
    owner: JID, stanza: Element, router: Router, targets: list[Registration] | None = None
) -> int:
    """Push `stanza` for the account `owner` to `targets` (default: all its
    registrations) if it is important; returns the number of publishes sent."""
    chosen = registrations.of(owner) if targets is None else targets
    if not chosen:
        return 0
    message = pushed_message(stanza)
    if message is None:
        return 0
    for registration in chosen:
        registration.count += 1
        iq = publish_iq(owner, registration, message)
        router.spawn(_publish(router, owner, registration, iq))
    return len(chosen)


async def _publish(router: Router, owner: JID, registration: Registration, iq: Element) -> None:
    try:
        answer = await router.query(iq, settings.XMPP_PUSH_TIMEOUT, sender=owner)
    except TimeoutError:
        log.info(
            "push to %s (%s) for %s: no answer; kept",
            registration.service,
            registration.node,
            owner,
        )
        return
    if answer.get("type") != "error":
        return
    error_type, condition = _error_of(answer)
    if error_type == "wait" or condition in TRANSIENT_CONDITIONS:
        log.info(
            "push to %s for %s failed for now (%s, %s); kept",
            registration.service,
            owner,
            error_type,
            condition,
        )
        return
    # §8: the app server refused it; this registration is over.
    if registrations.discard(owner, registration):
        log.info(
            "push to %s (%s) for %s refused (%s); disabled",
            registration.service,
            registration.node,
            owner,
            condition,
        )
        writer.submit(PushWrite(DISABLE_WRITE, owner.local, *registration.key))


def _error_of(answer: Element) -> tuple[str, str]:
    error = answer.find(f"{{{NS_CLIENT}}}error")
    if error is None:
        return "cancel", "undefined-condition"
    for child in error:
        ns, name = split_tag(child.tag)
        if ns == NS_STANZA_ERRORS and name != "text":
            return error.get("type", "cancel"), name
    return error.get("type", "cancel"), "undefined-condition"


# -- when: offline storage now; detached and inactive sessions through notify_away -----


@plugins.on_offline_stored
def notify_offline(stanza: Element, owner: JID, router: Router) -> None:
    """(a): a message kept for an account with no available resource."""
    notify(owner, stanza, router)


# (stanza mark, registration) pairs pushed in this loop turn: one stanza
# queued for several away sessions at once pushes each registration once.
_pushed_this_turn: set[tuple[int, int]] = set()


def notify_away(session: BoundSession, stanza: Element, mark: int | None = None) -> int:
    """(b): `stanza` waits for `session`, which is detached (XEP-0198) or
    inactive (XEP-0352). Pushes it to the registrations this session
    enabled, if it is important; returns the number of publishes sent."""
    account = session.account
    if session.jid is None or account is None:
        return 0
    keys = account.data.get(ENABLED_BY, {}).get(session)
    if not keys:
        return 0
    owner = session.jid.bare
    targets = []
    for registration in registrations.of(owner):
        if registration.key not in keys:
            continue
        pushed = (id(stanza) if mark is None else mark, id(registration))
        if pushed in _pushed_this_turn:
            continue
        if not _pushed_this_turn:
            asyncio.get_running_loop().call_soon(_pushed_this_turn.clear)
        _pushed_this_turn.add(pushed)
        targets.append(registration)
    if not targets:
        return 0
    return notify(owner, stanza, session.server.router, targets)


@plugins.on_message_waits
def message_waits(session: BoundSession, data: bytes) -> None:
    """The session is detached (XEP-0198) or inactive (XEP-0352): push what
    reaches it, if this session's device registered push (parsed only then)."""
    account = session.account
    if account is None or not account.data.get(ENABLED_BY, {}).get(session):
        return
    from .offline import parse_stored

    stanza = parse_stored(data.decode("utf-8", "replace"))
    if stanza is not None:
        # Marked by content: the element is parsed anew for each session.
        notify_away(session, stanza, hash(data))


plugins.listener(load_all)
