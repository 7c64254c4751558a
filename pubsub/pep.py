"""Personal eventing (XEP-0163): every account is a virtual pubsub service
at its bare JID, answered by pubsub/service.py with `pep=True`; this module
owns who hears of what.

- Notifications (§4.3.1, §5.3): the owner's own available resources and the
  resources of its contacts with a presence subscription ('from'/'both'),
  each only if its entity capabilities (XEP-0115, pubsub/caps.py) carry
  `<node>+notify`; plus explicit subscribers of the node. Whitelist and
  authorize nodes (XEP-0402 bookmarks) reach only the owner and affiliates;
  roster nodes only the contacts in the allowed groups.
- The last item on becoming available (§4.3.3, XEP-0060 §6.1.7): when a
  session sends its first available presence, or changes its caps, it gets
  the last item of each node it is interested in, of every contact whose
  presence it receives ('to'/'both') and of its own account.

Caps per resource live in AccountState.data[CAPS_KEY] (resource -> nodes),
so they are dropped with the account's state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from xmpp.protocol.jid import JID
from xmpp.roster import roster_of

from . import caps
from .nodes import NodeState, ServiceState, store
from .notify import Notification, delay_of, items_event, notification

if TYPE_CHECKING:
    from xmpp.bound_session import BoundSession
    from xmpp.router import Router

log = logging.getLogger(__name__)

CAPS_KEY = "pubsub.notify"
SENDS_PRESENCE = ("from", "both")
RECEIVES_PRESENCE = ("to", "both")


def interests(router: Router, session: BoundSession) -> frozenset[str]:
    account = session.account
    if account is None:
        return frozenset()
    return account.data.get(CAPS_KEY, {}).get(session.jid.resource, frozenset())


def _contact_may_hear(node: NodeState, contact, bare: str) -> bool:
    model = node.config.get("access_model", "presence")
    if model in ("open", "presence"):
        return contact is not None and contact.state.subscription in SENDS_PRESENCE
    if model == "roster":
        allowed = set(node.config.get("roster_groups_allowed") or ())
        return contact is not None and bool(allowed.intersection(contact.groups))
    return node.affiliation(bare) in ("owner", "publisher", "member")


def notify_pep(router: Router, service: ServiceState, node: NodeState, note: Notification) -> None:
    """Deliver a PEP notification, from memory, serialised once."""
    owner = JID.parse(service.jid)
    sessions = router.sessions
    delivery = router.delivery
    name = node.name
    sent: set[JID] = set()

    def deliver_if_interested(session) -> None:
        if session.jid in sent:
            return
        account = session.account
        wanted = account.data.get(CAPS_KEY, {}).get(session.jid.resource) if account else None
        if wanted and name in wanted:
            sent.add(session.jid)
            delivery.to_session(session, note.to(session.jid_str))

    for session in sessions.available(owner):
        deliver_if_interested(session)
    # Past the router: the delivery service's block-list test, built once.
    refuses = delivery.refusal_test(owner)
    roster = roster_of(router, owner)
    if roster is not None:
        for contact in roster.contacts.values():
            if contact.removed or contact.jid.domain != router.domain:
                continue
            targets = sessions.available(contact.jid)
            if not targets or not _contact_may_hear(node, contact, str(contact.jid)):
                continue
            if refuses is not None and refuses(contact.jid, sessions.account(contact.jid.bare)):
                continue
            for session in targets:
                deliver_if_interested(session)
    # Explicit subscriptions (XEP-0060 §6.1 on a PEP node) get it whatever their caps.
    for sub in node.subs.values():
        if not sub.delivers:
            continue
        jid = JID.parse(sub.jid)
        if jid.domain != router.domain:
            continue
        if refuses is not None and refuses(jid, sessions.account(jid.bare)):
            continue  # XEP-0191 §3.3: a subscriber who blocked the owner
        targets = [sessions.get(jid)] if jid.resource else sessions.available(jid)
        for session in targets:
            if session is not None and session.jid not in sent:
                sent.add(session.jid)
                delivery.to_session(session, note.to(session.jid_str))


# -- presence: caps and the last items ------------------------------------------


def on_presence(session: BoundSession, presence: Element) -> None:
    """A presence transform that only reads: the session's caps (XEP-0115)."""
    if presence.get("type") is not None or session.account is None:
        return
    router = session.server.router
    initial = session.last_presence is None
    resource = session.jid.resource
    by_resource = session.account.data.setdefault(CAPS_KEY, {})
    c = presence.find(caps.CAPS_TAG)
    if c is None or not c.get("ver"):
        by_resource.pop(resource, None)  # no caps: no +notify (XEP-0163 §5.3)
        return
    ver, algorithm = c.get("ver"), c.get("hash") or "sha-1"
    previous = by_resource.get(resource)
    wanted = caps.known(ver)
    if wanted is not None:
        by_resource[resource] = wanted
        if initial or wanted != previous:
            router.spawn(send_last_items(router, session, wanted))
        return
    router.spawn(_learn_caps(router, session, c.get("node") or "", ver, algorithm))


async def _learn_caps(router: Router, session: BoundSession, node: str, ver: str, algorithm: str):
    jid_str = session.jid_str
    try:
        wanted = await caps.resolve(router, jid_str, node, ver, algorithm)
    except Exception as exc:
        log.info("no caps from %s: %s", jid_str, exc)
        return
    if session.jid is None or session.jid_str != jid_str or session.account is None:
        return  # gone meanwhile
    session.account.data.setdefault(CAPS_KEY, {})[session.jid.resource] = wanted
    await send_last_items(router, session, wanted)


async def send_last_items(router: Router, session: BoundSession, wanted: frozenset[str]) -> None:
    """§4.3.3: the last item of each wanted node of the contacts it hears from."""
    if not wanted or session.account is None:
        return
    me = session.jid.bare
    owners = [me]
    roster = session.account.roster
    if roster is not None:
        owners += [
            c.jid
            for c in roster.contacts.values()
            if not c.removed
            and c.jid.domain == router.domain
            and c.jid.local
            and c.state.subscription in RECEIVES_PRESENCE
        ]
    services = await store.services_of([str(o) for o in owners], pep=True)
    if session.jid is None or not session.available:
        return
    for service in services:
        owner = JID.parse(service.jid)
        contact_roster = roster_of(router, owner) if owner != me else None
        entry = contact_roster.get(me) if contact_roster is not None else None
        for name in wanted.intersection(service.nodes):
            node = service.nodes[name]
            if node.config.get("send_last_published_item") != "on_sub_and_presence":
                continue
            if owner != me and not _may_hear_last(node, entry, str(me), contact_roster):
                continue
            item = node.last_item()
            if item is None:
                continue
            if owner != me and router.delivery.refuses(owner, session.jid):
                continue
            event = items_event(name, [item], bool(node.config.get("deliver_payloads", True)))
            note = notification(
                service.jid, event, node.config.get("notification_type", "headline"), delay_of(item)
            )
            router.delivery.to_session(session, note.to(session.jid_str))


def _may_hear_last(node: NodeState, entry, me: str, contact_roster) -> bool:
    model = node.config.get("access_model", "presence")
    if model in ("open", "presence"):
        # Our 'to'/'both' is their 'from'/'both' (RFC 6121 §3); when the
        # contact is online its roster in memory says so exactly.
        return contact_roster is None or (
            entry is not None and entry.state.subscription in SENDS_PRESENCE
        )
    if model == "roster":
        allowed = set(node.config.get("roster_groups_allowed") or ())
        return entry is not None and bool(allowed.intersection(entry.groups))
    return node.affiliation(me) in ("owner", "publisher", "member")


def forget_session(session: BoundSession) -> None:
    account = session.account
    if account is not None and session.jid is not None:
        account.data.get(CAPS_KEY, {}).pop(session.jid.resource, None)
