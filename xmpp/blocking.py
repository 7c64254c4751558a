"""The blocking command (XEP-0191 v1.3): each account's block list, the IQs
that read and change it, and its enforcement on routed stanzas.

Owns:
- the `BlockedJid` rows (xmpp.models), loaded into `AccountState.blocked`
  when an account's first resource binds, so that the router never asks the
  database about an account that is online;
- the IQs of §3.2-§3.5 (blocklist, block, unblock), answered to the account
  itself only, each change written through and then pushed to the resources
  that asked for the list (its "interested resources", kept in
  `AccountState.data`);
- the presence that goes with a change (§3.3, §3.4): unavailable presence to
  the JIDs blocked and the current presence to those unblocked, for whoever
  may see the user's presence (roster subscribers, directed presence);
- the stanza filter that keeps a user and the JIDs it blocked apart (§3.3):
  from a blocked JID, presence is dropped, IQ get/set and messages are
  answered with <service-unavailable/> (the user looks offline), the rest
  is dropped; to a blocked JID, messages and IQ get/set are refused with
  <not-acceptable/> and <blocked xmlns='urn:xmpp:blocking:errors'/>, the
  rest (presence, IQ results, errors) is dropped.

An item matches addresses as §6 (XEP-0016 §2.1) says: user@domain/resource
only that resource, user@domain every resource, domain/resource only that
address, domain the domain and every address at it. One's own resources
are never blocked (§5, note), nor is the server itself.

For paths where the account is offline and so has no set in memory (offline
storage, subscription requests kept in the database), `is_blocked()` asks
the stored list. The filter does so itself for the IQs the server answers on
behalf of an offline account (RFC 6121 §8.5.2.1.3): it holds the IQ, looks
the pair up, then refuses it or routes it on.
"""

from __future__ import annotations

import copy
import logging
import secrets
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from .models import BlockedJid
from .plugins import ANSWERED, IqRequest, RecipientTest, plugins
from .prepared import PreparedQuery
from .protocol.errors import StanzaError, error_reply
from .protocol.jid import JID, InvalidJID

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router
    from .sessions import AccountState, SessionManager

log = logging.getLogger(__name__)

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
BLOCKLIST = f"{{{NS_BLOCKING}}}blocklist"
BLOCK = f"{{{NS_BLOCKING}}}block"
UNBLOCK = f"{{{NS_BLOCKING}}}unblock"
ITEM = f"{{{NS_BLOCKING}}}item"
BLOCKED = f"{{{NS_BLOCKING_ERRORS}}}blocked"

IQ = "{jabber:client}iq"
MESSAGE = "{jabber:client}message"
PRESENCE = "{jabber:client}presence"

# Keys of AccountState.data.
LOADED = "blocking.loaded"
INTERESTED = "blocking.interested"  # the sessions that asked for the list


# IQs held for a look-up in the stored list, routed on afterwards: they must
# pass this filter (other filters still see them). Keyed by id(), each entry
# lives only while route() runs, which is synchronous. Refusals go out with
# route(filtered=False) instead.
_looked_up: set[int] = set()


class Blocked(StanzaError):
    """§3.3: what a user gets for a stanza to a JID it blocked."""

    def __init__(self) -> None:
        super().__init__("not-acceptable", error_type="cancel")

    def to_element(self, ns: str) -> Element:
        error = super().to_element(ns)
        SubElement(error, BLOCKED)
        return error


# -- matching (§6) -------------------------------------------------------------


def matching_items(jid: JID) -> tuple[JID, ...]:
    """The block-list items that block `jid` (XEP-0191 §6)."""
    domain = JID("", jid.domain, "")
    if jid.local:
        if jid.resource:
            return (jid, JID(jid.local, jid.domain, ""), domain)
        return (jid, domain)
    if jid.resource:
        return (jid, domain)
    return (jid,)


def blocks(blocked: set[JID] | frozenset[JID], jid: JID) -> bool:
    """Whether a block list (a set of items) blocks `jid`."""
    if not blocked:
        return False
    return any(item in blocked for item in matching_items(jid))


@plugins.recipient_filter
def block_lists_for(sender: JID, sessions: SessionManager) -> RecipientTest | None:
    """The delivery service's test for bytes from `sender` delivered past the
    router (room fan-out, presence broadcast, pubsub notifications): the
    recipient's list blocks `sender`, or `sender`'s own list (if it is an
    online account) blocks the recipient (§3.3). Built once per batch, so
    that a recipient whose account blocks nothing costs one attribute read."""
    if _is_server(sender):
        return None
    items = matching_items(sender)
    sender_bare = sender.bare
    owner = sessions.account(sender_bare)
    own_list = owner.blocked if owner is not None else None

    def refuses(to: JID, recipient: AccountState | None) -> bool:
        if recipient is not None:
            blocked = recipient.blocked
            if blocked and any(item in blocked for item in items):
                return to.bare != sender_bare and not _is_server(to)
        if own_list and blocks(own_list, to):
            return to.bare != sender_bare and not _is_server(to)
        return False

    return refuses


async def is_blocked(owner: JID, other: JID) -> bool:
    """Whether the stored block list of the local account `owner` blocks `other`:
    one indexed query, for paths where `owner` may be offline (offline storage,
    subscription requests). The list in memory, when the account is online,
    is the same: changes are stored before they take effect."""
    if other.bare == owner.bare or _is_server(other, owner.domain):
        return False
    return await BlockedJid.objects.filter(
        user__username=owner.local, jid__in=[str(item) for item in matching_items(other)]
    ).aexists()


def is_blocked_sync(owner: JID, other: JID) -> bool:
    """is_blocked() for code that already runs in a worker thread (batched writes)."""
    if other.bare == owner.bare or _is_server(other, owner.domain):
        return False
    return BlockedJid.objects.filter(
        user__username=owner.local, jid__in=[str(item) for item in matching_items(other)]
    ).exists()


def _is_server(jid: JID, domain: str | None = None) -> bool:
    # The server's own address (the domain itself): its answers to the user
    # (IQ results, errors) are never blocked, whatever the list holds.
    return not jid.local and not jid.resource and (domain is None or jid.domain == domain)


# -- loading at bind -------------------------------------------------------------


# Read at every login (xmpp/prepared.py).
_BLOCKED_JIDS = PreparedQuery(
    lambda user_id: BlockedJid.objects.filter(user_id=user_id).values_list("jid")
)


@plugins.account_loader
def load_on_bind(account: AccountState, user_id: int) -> None:
    """Load the list into the account's state once, for all its resources."""
    for (text,) in _BLOCKED_JIDS.rows(user_id):
        try:
            account.blocked.add(JID.parse(text))
        except InvalidJID:
            log.warning("ignoring the malformed blocked JID %r of %s", text, account.jid)
    account.data[LOADED] = True


@plugins.on_session_closed
def forget_interest(session: BoundSession) -> None:
    account = session.account
    interested = account.data.get(INTERESTED) if account is not None else None
    if interested:
        interested.discard(session)


# -- the IQs (§3.2-§3.5) ---------------------------------------------------------


def _own_account(request: IqRequest) -> AccountState:
    # The list is the account's own business: to anyone else the service is
    # not there, as for any namespace the server does not answer for them.
    if request.sender.bare != request.to:
        raise StanzaError("service-unavailable")
    account = request.router.sessions.account(request.to)
    if account is None and request.session is not None:
        account = request.session.account
    if account is None:
        raise StanzaError("internal-server-error", "the account is not online")
    return account


def _items(payload: Element) -> list[JID]:
    """The JIDs of the payload's <item/>s, normalised, without repeats."""
    jids: dict[JID, None] = {}
    for item in payload.iter(ITEM):
        text = item.get("jid")
        if not text:
            raise StanzaError("bad-request", "an item needs a 'jid'")
        try:
            jids[JID.parse(text)] = None
        except InvalidJID:
            raise StanzaError("jid-malformed", f"not a JID: {text}") from None
    return list(jids)


# §3.1 has the client ask its server; clients also ask the account.
@plugins.iq(
    BLOCKLIST, types=("get",), scopes=("account",), feature=NS_BLOCKING, advertised_on=("server",)
)
def get_block_list(request: IqRequest):
    """§3.2: the list; the asking resource now gets the pushes (§3.3, §3.4)."""
    account = _own_account(request)
    if request.session is not None:
        account.data.setdefault(INTERESTED, set()).add(request.session)
    if account.data.get(LOADED):
        return _list_element(account.blocked)
    return _load_then_list(account)


async def _load_then_list(account: AccountState) -> Element:
    await sync_to_async(load_on_bind)(account, account.user_id)
    return _list_element(account.blocked)


def _list_element(blocked: set[JID]) -> Element:
    blocklist = Element(BLOCKLIST)
    for text in sorted(str(jid) for jid in blocked):
        SubElement(blocklist, ITEM, {"jid": text})
    return blocklist


@plugins.iq(BLOCK, types=("set",), scopes=("account",), feature=NS_BLOCKING)
def block(request: IqRequest):
    """§3.3: block one or more JIDs; a <block/> without items is a bad request."""
    account = _own_account(request)
    jids = _items(request.payload)
    if not jids:
        raise StanzaError("bad-request", "block at least one JID")
    new = [jid for jid in jids if jid not in account.blocked]
    limit = settings.XMPP_BLOCKLIST_MAX_ITEMS
    if len(account.blocked) + len(new) > limit:
        raise StanzaError("not-allowed", f"a block list holds at most {limit} JIDs")
    return _block(request, account, jids, new)


async def _block(request: IqRequest, account: AccountState, jids: list[JID], new: list[JID]):
    owner = account.jid
    if new:
        user_id = (
            await get_user_model()
            .objects.filter(username=owner.local)
            .values_list("pk", flat=True)
            .aget()
        )
        await BlockedJid.objects.abulk_create(
            [BlockedJid(user_id=user_id, jid=str(jid)) for jid in new], ignore_conflicts=True
        )
        # The presence goes out while the block is not yet in force, so that
        # this module's filter lets it through.
        _presence_on_block(request.router, account, frozenset(new))
        account.blocked.update(new)
    request.router.reply(request.stanza, None)
    _push(request.router, account, BLOCK, jids)
    return ANSWERED


@plugins.iq(UNBLOCK, types=("set",), scopes=("account",), feature=NS_BLOCKING)
def unblock(request: IqRequest):
    """§3.4 unblock the JIDs listed; §3.5 everything when none is."""
    account = _own_account(request)
    return _unblock(request, account, _items(request.payload))


async def _unblock(request: IqRequest, account: AccountState, jids: list[JID]):
    rows = BlockedJid.objects.filter(user__username=account.jid.local)
    if jids:
        rows = rows.filter(jid__in=[str(jid) for jid in jids])
        removed = frozenset(jid for jid in jids if jid in account.blocked)
    else:
        removed = frozenset(account.blocked)
    await rows.adelete()
    account.blocked.difference_update(removed)
    request.router.reply(request.stanza, None)
    _push(request.router, account, UNBLOCK, jids)
    if removed:
        _presence_on_unblock(request.router, account, removed)
    return ANSWERED


def _push(router: Router, account: AccountState, tag: str, jids: list[JID]) -> None:
    """§3.3, §3.4, §3.5: the change, to every resource that asked for the list."""
    interested = account.data.get(INTERESTED)
    if not interested:
        return
    for session in router.sessions.resources(account.jid):
        if session not in interested:
            continue
        iq = Element(IQ, {"type": "set", "id": f"push-{secrets.token_hex(6)}"})
        iq.set("from", str(account.jid))
        iq.set("to", session.jid_str)
        payload = SubElement(iq, tag)
        for jid in jids:
            SubElement(payload, ITEM, {"jid": str(jid)})
        session.server.router.delivery.to_session(session, iq)


# -- presence on block and unblock (§3.3, §3.4) --------------------------------


def _watchers(account: AccountState, session: BoundSession, items: frozenset[JID]) -> set[JID]:
    """The addresses matching `items` that may see `session`'s presence: the
    roster's subscribers (RFC 6121 §4.2.2) and the JIDs it sent directed
    presence to (§4.6). An item for one resource of a subscriber is that
    resource itself."""
    watchers: set[JID] = set()
    roster = account.roster
    subscribers = set(roster.subscribers()) if roster is not None else set()
    for jid in subscribers:
        if blocks(items, jid):
            watchers.add(jid)
    for item in items:
        if item.local and item.resource and item.bare in subscribers:
            watchers.add(item)
    for jid in session.directed or ():
        if blocks(items, jid):
            watchers.add(jid)
    return watchers


def _watched(account: AccountState, items: frozenset[JID]) -> list[JID]:
    """The roster contacts matching `items` whose presence the user receives."""
    roster = account.roster
    if roster is None:
        return []
    return [jid for jid in roster.subscriptions() if blocks(items, jid)]


def _presence_on_block(router: Router, account: AccountState, items: frozenset[JID]) -> None:
    """§3.3: the blocked JIDs that could see the user now see it go; and the
    user's resources see the blocked contacts go, as the v1.3 text advises."""
    sessions = router.sessions
    available = sessions.available(account.jid)
    for session in available:
        for jid in _watchers(account, session, items):
            gone = Element(PRESENCE, {"type": "unavailable", "from": session.jid_str})
            gone.set("to", str(jid))
            router.route(gone, session.jid, session)
    for contact in _watched(account, items):
        for contact_session in sessions.available(contact):
            for session in available:
                gone = Element(PRESENCE, {"type": "unavailable", "to": session.jid_str})
                gone.set("from", contact_session.jid_str)
                router.route(gone, contact_session.jid)


def _presence_on_unblock(router: Router, account: AccountState, items: frozenset[JID]) -> None:
    """§3.4: the unblocked JIDs that may see the user get its current presence,
    and the user's resources the current presence of the contacts they follow.
    Routed, so that a JID still blocked by another item stays out."""
    sessions = router.sessions
    available = sessions.available(account.jid)
    for session in available:
        if session.last_presence is None:
            continue
        for jid in _watchers(account, session, items):
            current = copy.copy(session.last_presence)
            current.set("to", str(jid))
            router.route(current, session.jid, session)
    for contact in _watched(account, items):
        for contact_session in sessions.available(contact):
            if contact_session.last_presence is None:
                continue
            for session in available:
                current = copy.copy(contact_session.last_presence)
                current.set("to", session.jid_str)
                router.route(current, contact_session.jid)


# -- enforcement -------------------------------------------------------------------


@plugins.stanza_filter
def enforce_block_lists(stanza: Element, sender: JID, to: JID, router: Router) -> bool:
    """The router's filter for stanzas from or to a local account (§3.3)."""
    to_bare = to.bare
    sender_bare = sender.bare
    if sender_bare == to_bare or _is_server(sender):
        return False  # one's own resources and one's server are never blocked
    sessions = router.sessions
    if sender.local and sender.domain == router.domain:
        owner = sessions.account(sender_bare)
        if owner is not None and owner.blocked and blocks(owner.blocked, to):
            _refuse_outbound(stanza, to, router)
            return True
    recipient = sessions.account(to_bare)
    if recipient is not None and recipient.data.get(LOADED):
        if recipient.blocked and blocks(recipient.blocked, sender):
            _refuse_inbound(stanza, to, router)
            return True
        return False
    if (
        stanza.tag == IQ
        and to.local  # an account, not a service (conference., pubsub.) or a remote domain
        and to.domain == router.domain
        and not to.resource
        and stanza.get("type") in ("get", "set")
        and not (_looked_up and id(stanza) in _looked_up)
    ):
        # An IQ the server answers for an offline account (RFC 6121
        # §8.5.2.1.3): the list is in the database only.
        router.spawn(_route_unless_stored_block(stanza, sender, to, router))
        return True
    return False


async def _route_unless_stored_block(stanza: Element, sender: JID, to: JID, router: Router):
    if await is_blocked(to, sender):
        _refuse_inbound(stanza, to, router)
        return
    _looked_up.add(id(stanza))
    try:
        router.route(stanza, sender)
    finally:
        _looked_up.discard(id(stanza))


def _refuse_inbound(stanza: Element, to: JID, router: Router) -> None:
    """From a blocked JID (§3.3): the user looks offline to it."""
    kind = stanza.tag
    stanza_type = stanza.get("type")
    if kind == PRESENCE:
        return  # "MUST NOT respond and MUST NOT return an error"
    if kind == IQ:
        if stanza_type in ("get", "set"):
            _send_refusal(stanza, StanzaError("service-unavailable"), to, router)
        return  # results and errors are dropped
    # A message: <service-unavailable/> as for an account with no resource,
    # except for the types never answered with an error (RFC 6121 §8.5.2.2.1).
    if stanza_type not in ("error", "headline"):
        _send_refusal(stanza, StanzaError("service-unavailable"), to, router)


def _refuse_outbound(stanza: Element, to: JID, router: Router) -> None:
    """To a blocked JID (§3.3): not routed; messages and requests are refused."""
    kind = stanza.tag
    stanza_type = stanza.get("type")
    if stanza_type == "error" or kind == PRESENCE:
        return  # nothing to answer an error with; presence is just not sent
    if kind == IQ and stanza_type not in ("get", "set"):
        return
    _send_refusal(stanza, Blocked(), to, router)


def _send_refusal(stanza: Element, error: StanzaError, to: JID, router: Router) -> None:
    """Route the error reply to `stanza`, from its 'to', past this module's filter."""
    reply = error_reply(stanza, error)
    if reply is None or not reply.get("to"):
        return
    router.route(reply, to, filtered=False)
