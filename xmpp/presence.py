"""Presence with rosters: broadcast, probes, directed presence (RFC 6121 §4)
and the processing of subscription requests (RFC 6121 §3, Appendix A).

Everything is answered from memory for accounts that are online: the
rosters in their AccountState and each session's last presence. Only a
subscription stanza for an account that is offline touches the database,
to change its roster there (and keep a subscribe request for its next
login, §3.1.3).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .blocking import is_blocked
from .plugins import PresenceHandler, plugins
from .protocol.jid import JID
from .protocol.parser import StreamParser
from .protocol.xml import serialize
from .roster import Contact, Roster, commit, load_contact, roster_of, save_contact
from .subscriptions import (
    ALREADY_APPROVED,
    INBOUND,
    NONE,
    OUTBOUND,
    PREAPPROVABLE,
    SENDS_PRESENCE,
)

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router

log = logging.getLogger(__name__)

PRESENCE = "{jabber:client}presence"
# What is left to do after Appendix A.3 changed the recipient's state.
DELIVER, AUTO_REPLY, APPROVE = "deliver", "auto-reply", "approve"


def presence_element(kind: str | None, sender: str, to: str) -> Element:
    el = Element(PRESENCE, {"from": sender, "to": to})
    if kind:
        el.set("type", kind)
    return el


class RosterPresence(PresenceHandler):
    # -- a user's own presence (§4.2, §4.4, §4.5) ---------------------------

    def broadcast(self, session: BoundSession, presence: Element) -> None:
        router = session.server.router
        sessions = session.server.sessions
        available = presence.get("type") is None
        initial = available and session.last_presence is None
        session.remember_presence(presence if available else None)
        data = serialize(presence)
        # §4.2.2, §4.4.2: the user's own resources, this one included.
        router.delivery.to_sessions(data, sessions.available(session.jid.bare))
        roster = session.account.roster if session.account else None
        if roster is not None:
            # Past the router: the delivery service applies the block lists.
            router.delivery.to_available(data, roster.subscribers(), session.jid)
        if not available:
            self._end_directed(session, presence)
            return
        if initial:
            self._after_initial_presence(session, roster, router)

    def _after_initial_presence(self, session: BoundSession, roster, router) -> None:
        sessions = session.server.sessions
        # §4.2.3: probes to the contacts the user is subscribed to, answered
        # here from the contacts' current presence; the user's other
        # resources count as such contacts (§4.2.2).
        for other in sessions.available(session.jid.bare):
            if other is not session and other.last_presence is not None:
                router.delivery.to_session(session, other.last_presence)
        if roster is None:
            return
        for jid in roster.subscriptions():
            self._answer_probe(router, session.jid, jid)
        # §3.1.3: subscription requests that arrived while the user was offline.
        for contact in roster.contacts.values():
            if contact.state.pending_in and contact.pending_in_stanza and not contact.removed:
                request = _parse_stored(contact.pending_in_stanza)
                if request is not None:
                    router.delivery.to_session(session, request)

    def _answer_probe(self, router: Router, prober: JID, contact: JID) -> None:
        """§4.3.2: the contact's server answers a probe with the contact's
        presence, if the contact lets the prober see it."""
        contact_roster = roster_of(router, contact.bare)
        if contact_roster is None:
            return  # offline: nothing to say (§4.3.2 allows silence)
        entry = contact_roster.get(prober.bare)
        if entry is None or entry.state.subscription not in SENDS_PRESENCE:
            return
        if router.delivery.refuses(contact, prober):
            return
        for target in router.sessions.available(contact.bare):
            if target.last_presence is not None:
                answer = copy.copy(target.last_presence)
                answer.set("to", str(prober))
                router.route(answer, target.jid)

    def directed(self, session: BoundSession, presence: Element) -> None:
        """§4.6: remember who got directed presence, to tell them when we go."""
        to = presence.get("to")
        if to is None:
            return
        target = JID.parse(to)
        roster = session.account.roster if session.account else None
        if roster is not None:
            contact = roster.get(target.bare)
            if contact is not None and contact.state.subscription in SENDS_PRESENCE:
                return  # broadcast reaches them anyway
        if presence.get("type") is None:
            session.add_directed(target)
        elif presence.get("type") == "unavailable":
            session.remove_directed(target)

    def _end_directed(self, session: BoundSession, presence: Element) -> None:
        router = session.server.router
        for target in session.take_directed():
            gone = copy.copy(presence)
            gone.set("to", str(target))
            router.route(gone, session.jid)

    def session_ended(self, session: BoundSession, was_available: bool) -> None:
        """§4.5.2: the session is gone: unavailable to whoever saw it."""
        if not was_available:
            session.take_directed()
            return
        gone = Element(PRESENCE, {"type": "unavailable", "from": session.jid_str})
        self.broadcast(session, gone)

    # -- subscriptions (§3) and probes, for a local account ------------------

    def inbound(self, stanza: Element, sender: JID, to: JID, router: Router) -> bool:
        kind = stanza.get("type")
        if kind == "probe":
            self._answer_probe(router, sender, to)
            return True
        self.subscription(router, kind, sender.bare, to.bare, stanza)
        return True

    def subscription(
        self, router: Router, kind: str, user: JID, contact: JID, stanza: Element | None = None
    ) -> None:
        """`user` sends presence of type `kind` to `contact`: Appendix A.2 on
        the user's roster, then, if it is to be routed, A.3 on the contact's."""
        if stanza is None:
            stanza = presence_element(kind, str(user), str(contact))
        # §3.1.2 and siblings: subscription stanzas carry the bare JID.
        stanza.set("from", str(user))
        stanza.set("to", str(contact))
        route = True
        roster = roster_of(router, user) if user.domain == router.domain else None
        if roster is not None:
            route = self._outbound(router, roster, kind, contact)
        if route and contact.domain == router.domain:
            self._inbound(router, kind, user, contact, stanza)

    def _outbound(self, router: Router, roster: Roster, kind: str, jid: JID) -> bool:
        """Appendix A.2; returns whether the stanza goes on to the contact."""
        contact = roster.contacts.get(jid)
        if contact is None or contact.removed:
            contact = Contact(jid)
        old = contact.state
        new = OUTBOUND[kind][old]
        changed = new != old
        route = changed
        if kind == "subscribe":
            route = True  # §3.1.2: always routed, a repeat included
            if not contact.listed:
                contact.listed = changed = True  # §3.1.2: added to the roster
        elif kind == "unsubscribe":
            route = True  # §3.3.2
        elif kind == "subscribed" and not changed and old in PREAPPROVABLE:
            if not contact.preapproved:  # §3.4.2: a pre-approval, not routed
                contact.preapproved = contact.listed = changed = True
        elif kind == "unsubscribed" and contact.preapproved and old in PREAPPROVABLE:
            contact.preapproved = False  # §3.4.3: cancels the pre-approval
            changed = True
        if kind in ("subscribed", "unsubscribed") and changed:
            contact.pending_in_stanza = ""
            if kind == "subscribed" and new != old:
                contact.listed = True  # §3.1.5: the contact joins the roster
        if not changed:
            return route
        was_listed = contact.listed
        contact.state = new
        if not contact.listed and new == NONE:
            contact.removed = True
        commit(router, roster, contact, push=was_listed)
        sessions = router.sessions
        if old.subscription not in SENDS_PRESENCE and new.subscription in SENDS_PRESENCE:
            # §3.1.5: the new subscriber gets the user's current presence.
            for session in sessions.available(roster.owner):
                if session.last_presence is not None:
                    current = copy.copy(session.last_presence)
                    current.set("to", str(jid))
                    router.route(current, session.jid)
        elif old.subscription in SENDS_PRESENCE and new.subscription not in SENDS_PRESENCE:
            # §3.2.2: a cancelled subscriber sees the user go.
            for session in sessions.available(roster.owner):
                gone = presence_element("unavailable", session.jid_str, str(jid))
                router.route(gone, session.jid)
        return route

    def _inbound(self, router: Router, kind: str, user: JID, owner: JID, stanza: Element):
        """Appendix A.3 on `owner`'s roster for a stanza from `user`."""
        roster = roster_of(router, owner)
        if roster is None:
            router.spawn(self._inbound_offline(router, kind, user, owner, stanza))
            return
        contact = roster.contacts.get(user)
        if contact is None or contact.removed:
            contact = Contact(user)
        action = self._apply_inbound(kind, contact, stanza)
        if action == AUTO_REPLY:
            self._auto_reply(router, owner, user)
            return
        if action is None:
            return
        commit(router, roster, contact, push=contact.listed)
        if action == APPROVE:
            # §3.4: as if the owner had sent "subscribed" itself.
            self.subscription(router, "subscribed", owner, user)
            return
        # §3.1.3: a request goes to the available resources with
        # non-negative priority; the other kinds to every available one.
        delivery = router.delivery
        if kind == "subscribe":
            delivery.to_sessions(stanza, delivery.non_negative(owner))
        else:
            delivery.to_sessions(stanza, router.sessions.available(owner))

    async def _inbound_offline(self, router, kind, user, owner, stanza) -> None:
        loaded = await load_contact(owner, user)
        if loaded is None:
            return  # RFC 6121 §8.5.1: no such account: silently ignored
        if await is_blocked(owner, user):
            return  # XEP-0191 §3.3: nothing from a blocked JID
        if roster_of(router, owner) is not None:
            # The owner logged in meanwhile: apply it to the live roster instead.
            self._inbound(router, kind, user, owner, stanza)
            return
        user_id, contact, version = loaded
        if contact.removed:
            contact = Contact(user)
        action = self._apply_inbound(kind, contact, stanza)
        if action == AUTO_REPLY:
            self._auto_reply(router, owner, user)
            return
        if action is None:
            return
        if action == APPROVE:
            contact.state = OUTBOUND["subscribed"][contact.state]
            contact.listed = True
            contact.pending_in_stanza = ""
        contact.version = version + 1
        await save_contact(user_id, contact)
        if action == APPROVE:
            self._auto_reply(router, owner, user)
        # A request is kept in pending_in_stanza for the next login (§3.1.3).

    def _auto_reply(self, router: Router, owner: JID, user: JID) -> None:
        """The server answers "subscribed" on the owner's behalf (§3.1.3, §3.4)."""
        reply = presence_element("subscribed", str(owner), str(user))
        if user.domain == router.domain:
            self._inbound(router, "subscribed", owner, user, reply)

    def _apply_inbound(self, kind: str, contact: Contact, stanza: Element) -> str | None:
        """Change `contact` per A.3; returns what is left to do, or None."""
        old = contact.state
        if kind == "subscribe":
            if old in ALREADY_APPROVED:
                return AUTO_REPLY  # §3.1.3: the contact already has a subscription
            if INBOUND[kind][old] == old:
                return None  # A.3.1: a request already pending is not delivered again
            contact.state = INBOUND[kind][old]
            if contact.preapproved and old in PREAPPROVABLE:
                contact.preapproved = False
                return APPROVE
            contact.pending_in_stanza = serialize(stanza).decode()
            return DELIVER
        new = INBOUND[kind][old]
        if new == old:
            return None
        contact.state = new
        if not new.pending_in:
            contact.pending_in_stanza = ""
        if not contact.listed and new == NONE:
            contact.removed = True
        return DELIVER

    def cancel_both_ways(self, router: Router, roster: Roster, contact: Contact) -> None:
        """§2.5.2: removing a contact cancels what it had both ways."""
        state = contact.state
        if state.subscription in SENDS_PRESENCE or state.pending_in or contact.preapproved:
            self.subscription(router, "unsubscribed", roster.owner, contact.jid)
        if state.subscription in ("to", "both") or state.pending_out:
            self.subscription(router, "unsubscribe", roster.owner, contact.jid)


def _parse_stored(text: str) -> Element | None:
    parser = StreamParser()
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    events = parser.feed(text.encode())
    return events[0] if events and isinstance(events[0], Element) else None


presence_handler = RosterPresence()
plugins.presence = presence_handler
