"""Rosters (RFC 6121 §2) with versioning (XEP-0237) and shared groups.

A roster is loaded once, when an account's first resource binds, and kept
in memory in the account's state (xmpp.sessions.AccountState) for as long as
it has a session, so routing and presence never query the database. Every
change is written through to RosterItem rows and pushed to the resources
that asked for the roster (§2.1.6). Accounts that are offline are changed in
the database directly (a subscription request arriving for them, §3.1.3).

Shared roster groups (Openfire's feature) are merged in at load time: every
member of a group sees every other member with a 'both' subscription.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.db.models import Max

from .models import RosterItem, SharedGroup
from .plugins import ANSWERED, IqRequest, NotAFeature, plugins
from .prepared import PreparedQuery
from .protocol.errors import StanzaError
from .protocol.jid import JID, InvalidJID
from .subscriptions import BOTH, NONE, RECEIVES_PRESENCE, SENDS_PRESENCE, SubState

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router
    from .sessions import AccountState

log = logging.getLogger(__name__)

NS_ROSTER = "jabber:iq:roster"
ROSTER_QUERY = f"{{{NS_ROSTER}}}query"
ROSTER_IS_NO_FEATURE = NotAFeature(
    "RFC 6121 §2: every IM server has rosters, nothing to discover; versioning "
    "is the <ver/> stream feature (§2.6.1)"
)
MAX_NAME_LENGTH = 1023


@dataclass(slots=True)
class Contact:
    """One roster item in memory."""

    jid: JID
    name: str = ""
    groups: list[str] = field(default_factory=list)
    state: SubState = NONE
    pending_in_stanza: str = ""
    preapproved: bool = False
    listed: bool = False
    removed: bool = False
    version: int = 0
    shared: bool = False  # made visible by a shared group

    def to_element(self) -> Element:
        """The <item/> of RFC 6121 §2.1.2."""
        item = Element(f"{{{NS_ROSTER}}}item", {"jid": str(self.jid)})
        if self.removed:
            item.set("subscription", "remove")
            return item
        item.set("subscription", self.state.subscription)
        if self.name:
            item.set("name", self.name)
        if self.state.pending_out:
            item.set("ask", "subscribe")
        if self.preapproved:
            item.set("approved", "true")
        for group in self.groups:
            SubElement(item, f"{{{NS_ROSTER}}}group").text = group
        return item

    @classmethod
    def from_row(cls, row: RosterItem) -> Contact:
        return cls(
            jid=JID.parse(row.jid),
            name=row.name,
            groups=list(row.groups),
            state=SubState(row.subscription, row.pending_out, row.pending_in),
            pending_in_stanza=row.pending_in_stanza,
            preapproved=row.preapproved,
            listed=row.listed,
            removed=row.removed,
            version=row.version,
        )

    def row_fields(self) -> dict:
        return {
            "name": self.name,
            "groups": self.groups,
            "subscription": self.state.subscription,
            "pending_out": self.state.pending_out,
            "pending_in": self.state.pending_in,
            "pending_in_stanza": self.pending_in_stanza,
            "preapproved": self.preapproved,
            "listed": self.listed,
            "removed": self.removed,
            "version": self.version,
        }


class Roster:
    """An account's roster in memory, keyed by the contacts' bare JIDs."""

    __slots__ = ("owner", "user_id", "contacts", "version", "shared_tag")

    def __init__(self, owner: JID, user_id: int, contacts: dict[JID, Contact], version: int):
        self.owner = owner
        self.user_id = user_id
        self.contacts = contacts
        self.version = version
        self.shared_tag = ""

    def get(self, jid: JID) -> Contact | None:
        contact = self.contacts.get(jid)
        return None if contact is None or contact.removed else contact

    def listed(self) -> list[Contact]:
        return [c for c in self.contacts.values() if c.listed and not c.removed]

    def subscribers(self) -> list[JID]:
        """Contacts who receive this account's presence ('from' or 'both')."""
        return [
            c.jid
            for c in self.contacts.values()
            if not c.removed and c.state.subscription in SENDS_PRESENCE
        ]

    def subscriptions(self) -> list[JID]:
        """Contacts whose presence this account receives ('to' or 'both')."""
        return [
            c.jid
            for c in self.contacts.values()
            if not c.removed and c.state.subscription in RECEIVES_PRESENCE
        ]

    @property
    def ver(self) -> str:
        # The shared-group part changes when an administrator changes the
        # groups, which makes a cached roster stale (XEP-0237 §3).
        return f"{self.version}{self.shared_tag}"


# -- loading and saving ------------------------------------------------------


ROW_FIELDS = (
    "jid",
    "name",
    "groups",
    "subscription",
    "pending_out",
    "pending_in",
    "pending_in_stanza",
    "preapproved",
    "listed",
    "removed",
    "version",
)


# The reads of every login (xmpp/prepared.py): the account's own items, and
# its shared groups with their members.
_ROSTER_ROWS = PreparedQuery(
    lambda user_id: RosterItem.objects.filter(user_id=user_id).values_list(*ROW_FIELDS)
)
_SHARED_GROUP_MEMBERS = PreparedQuery(
    lambda user_id: SharedGroup.members.through.objects.filter(
        sharedgroup__members__id=user_id
    ).values_list("sharedgroup_id", "sharedgroup__name", "user_id", "user__username")
)


def load_roster(owner: JID, user_id: int) -> Roster:
    """The roster of an account, with its shared groups (sync ORM: run it in a
    worker thread, as an account loader does)."""
    contacts: dict[JID, Contact] = {}
    version = 0
    for row in _ROSTER_ROWS.rows(user_id):
        (
            jid,
            name,
            groups,
            sub,
            pending_out,
            pending_in,
            stanza,
            approved,
            listed,
            removed,
            ver,
        ) = row
        try:
            contact_jid = JID.parse(jid)
        except InvalidJID:
            continue
        contacts[contact_jid] = Contact(
            contact_jid,
            name,
            list(groups),
            SubState(sub, pending_out, pending_in),
            stanza,
            approved,
            listed,
            removed,
            ver,
        )
        version = max(version, ver)
    roster = Roster(owner, user_id, contacts, version)
    _merge_shared_groups(roster, user_id)
    return roster


def _merge_shared_groups(roster: Roster, user_id: int) -> None:
    names: list[str] = []
    domain = roster.owner.domain
    for group_id, group_name, member_id, username in _SHARED_GROUP_MEMBERS.rows(user_id):
        names.append(f"{group_id}:{group_name}")
        if member_id == user_id:
            continue
        jid = JID(username, domain, "")
        contact = roster.contacts.get(jid)
        if contact is None or contact.removed:
            contact = roster.contacts[jid] = Contact(jid, name=username)
        contact.shared = True
        contact.listed = True
        contact.state = BOTH
        if group_name not in contact.groups:
            contact.groups.append(group_name)
    if names:
        digest = hashlib.sha1("|".join(sorted(set(names))).encode()).hexdigest()[:8]
        roster.shared_tag = f"-{digest}"


async def save_contact(user_id: int, contact: Contact) -> None:
    if contact.shared and not contact.removed and contact.state == BOTH and not contact.version:
        return  # only visible through a shared group; nothing of the user's own
    try:
        await RosterItem.objects.aupdate_or_create(
            user_id=user_id, jid=str(contact.jid), defaults=contact.row_fields()
        )
    except DatabaseError:
        # e.g. the account was removed meanwhile (XEP-0077 §3.2)
        log.warning("could not save the roster item %s of user %s", contact.jid, user_id)


async def load_contact(owner: JID, jid: JID) -> tuple[int, Contact, int] | None:
    """For an account that is offline: (user id, its contact `jid`, roster version)."""
    user = await get_user_model().objects.filter(username=owner.local).only("id").afirst()
    if user is None:
        return None
    row = await RosterItem.objects.filter(user_id=user.id, jid=str(jid)).afirst()
    version = (await RosterItem.objects.filter(user_id=user.id).aaggregate(top=Max("version")))[
        "top"
    ] or 0
    contact = Contact.from_row(row) if row else Contact(jid)
    if (
        await SharedGroup.objects.filter(members__id=user.id)
        .filter(members__username=jid.local)
        .aexists()
    ):
        contact.shared = True
        contact.listed = True
        contact.state = BOTH
    return user.id, contact, version


# -- changes and pushes ------------------------------------------------------


def commit(router: Router, roster: Roster, contact: Contact, push: bool = True) -> None:
    """Record a change to `contact` of an online account: new version, saved,
    and pushed to every resource that asked for the roster (§2.1.6)."""
    roster.version += 1
    contact.version = roster.version
    roster.contacts[contact.jid] = contact
    router.spawn(save_contact(roster.user_id, contact))
    if push and (contact.listed or contact.removed):
        send_push(router, roster, contact)


def send_push(router: Router, roster: Roster, contact: Contact) -> None:
    for session in router.sessions.resources(roster.owner):
        if session.roster_requested:
            push_to(session, roster, contact)


def push_to(session: BoundSession, roster: Roster, contact: Contact) -> None:
    iq = Element("{jabber:client}iq", {"type": "set", "id": f"push-{secrets.token_hex(6)}"})
    iq.set("to", session.jid_str)
    query = SubElement(iq, ROSTER_QUERY, {"ver": roster.ver})
    query.append(contact.to_element())
    session.server.router.delivery.to_session(session, iq)


def roster_of(router: Router, owner: JID) -> Roster | None:
    account = router.sessions.account(owner)
    return account.roster if account is not None else None


async def subscription_of(owner: JID, contact: JID, router: Router | None = None) -> str:
    """The subscription `owner` has with `contact`: none, to, from or both
    (from memory when `router` is given and the owner is online)."""
    roster = roster_of(router, owner.bare) if router is not None else None
    if roster is not None:
        found = roster.get(contact.bare)
        return found.state.subscription if found else "none"
    loaded = await load_contact(owner.bare, contact.bare)
    if loaded is None or loaded[1].removed:
        return "none"
    return loaded[1].state.subscription


# -- plugin registrations ----------------------------------------------------


@plugins.account_loader
def load_on_bind(account: AccountState, user_id: int) -> None:
    account.roster = load_roster(account.jid, user_id)


@plugins.stream_feature
def roster_versioning_feature(session: BoundSession) -> Element:
    """XEP-0237 §2: roster versioning is offered as a stream feature."""
    return Element("{urn:xmpp:features:rosterver}ver")


@plugins.stream_feature
def preapproval_feature(session: BoundSession) -> Element:
    """RFC 6121 §3.4: subscription pre-approval is offered as a stream feature."""
    return Element("{urn:xmpp:features:pre-approval}sub")


def _own_roster(request: IqRequest) -> Roster:
    # §2.1.5 (and §8.5.2.1.3): only the account itself may touch its roster.
    if request.sender.bare != request.to:
        raise StanzaError("forbidden")
    roster = roster_of(request.router, request.to)
    if roster is None:
        raise StanzaError("internal-server-error", "roster not loaded")
    return roster


@plugins.iq(ROSTER_QUERY, types=("get",), scopes=("account",), feature=ROSTER_IS_NO_FEATURE)
def roster_get(request: IqRequest):
    """§2.2 roster get, with XEP-0237 versioning."""
    roster = _own_roster(request)
    session = request.session
    if session is not None:
        session.request_roster()
    client_ver = request.payload.get("ver")
    if client_ver is not None and session is not None:
        changed = _changes_since(roster, client_ver)
        if changed is not None:
            # XEP-0237 §2.4: an empty result, then the changes as pushes.
            request.router.reply(request.stanza, None)
            for contact in changed:
                push_to(session, roster, contact)
            return ANSWERED
    query = Element(ROSTER_QUERY)
    if client_ver is not None:
        query.set("ver", roster.ver)
    for contact in roster.listed():
        query.append(contact.to_element())
    return query


def _changes_since(roster: Roster, client_ver: str) -> list[Contact] | None:
    number, dash, tag = client_ver.partition("-")
    if not number.isdigit() or (f"{dash}{tag}" != roster.shared_tag):
        return None
    since = int(number)
    if since > roster.version:
        return None
    return sorted(
        (c for c in roster.contacts.values() if c.version > since and (c.listed or c.removed)),
        key=lambda c: c.version,
    )


@plugins.iq(ROSTER_QUERY, types=("set",), scopes=("account",), feature=ROSTER_IS_NO_FEATURE)
def roster_set(request: IqRequest) -> None:
    """§2.3 add or update, §2.5 remove."""
    roster = _own_roster(request)
    items = request.payload.findall(f"{{{NS_ROSTER}}}item")
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set has exactly one item")  # §2.3.3
    item = items[0]
    try:
        jid = JID.parse(item.get("jid", ""))
    except InvalidJID:
        raise StanzaError("jid-malformed") from None
    if not item.get("jid") or jid.resource:
        raise StanzaError("bad-request", "a roster item is a bare JID")
    if item.get("subscription") == "remove":
        remove_contact(request.router, roster, jid)
        return None
    name = item.get("name", "")
    if len(name) > MAX_NAME_LENGTH:
        raise StanzaError("not-acceptable", "name too long")
    groups = [g.text or "" for g in item.findall(f"{{{NS_ROSTER}}}group")]
    if any(not g.strip() for g in groups):
        raise StanzaError("not-acceptable", "empty group name")
    if len(set(groups)) != len(groups):
        raise StanzaError("bad-request", "duplicate group")
    contact = roster.get(jid)
    if contact is None:
        if len(roster.listed()) >= settings.XMPP_ROSTER_MAX_ITEMS:
            raise StanzaError("not-allowed", "the roster is full")
        contact = roster.contacts.get(jid) or Contact(jid)
        contact.removed = False
    # §2.1.2.5 and §2.1.2.1: 'subscription' and 'ask' of a set are ignored.
    contact.name = name
    contact.groups = groups
    contact.listed = True
    commit(request.router, roster, contact)
    return None


def remove_contact(router: Router, roster: Roster, jid: JID) -> None:
    """§2.5.2: cancel the subscriptions both ways, then remove and push."""
    from .presence import presence_handler

    contact = roster.get(jid)
    if contact is None or not contact.listed:
        raise StanzaError("item-not-found")
    if contact.shared:
        raise StanzaError("not-allowed", "this contact comes from a shared group")
    # Unlisted first, so that the cancellations push nothing: the client sees
    # one push, the removal (§2.5.2).
    contact.listed = False
    presence_handler.cancel_both_ways(router, roster, contact)
    contact = roster.contacts[jid]
    contact.removed = True
    contact.listed = False
    contact.state = NONE
    contact.preapproved = False
    contact.pending_in_stanza = ""
    commit(router, roster, contact)
