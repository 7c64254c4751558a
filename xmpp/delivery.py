"""The delivery service: the one way anything reaches a recipient's sessions.

The router, presence broadcast, MUC rooms, pubsub and PEP all deliver
through a `Delivery` (owned by the router, `router.delivery`):

- to a full JID: that session (`to_full_jid`), else `elsewhere()`;
- to a bare JID: the resources RFC 6121 §8.5.2.1 chooses for a message
  (`message_targets`: the one place that rule is written) or every
  available resource (§8.5.2.1.2, §4.2.2: `to_available`);
- a batch serialised once (`fan_out`: prefix + b' to="..."' + suffix per
  recipient session, as muc.stanzas.Outgoing builds them; `to_addresses`:
  a rendering per address, as pubsub.notify.Notification does), so that a
  recipient costs a concatenation and a write, never a tree walk.

Filters apply here, once. What the router routes passes the stanza
filters (`refused`, `@plugins.stanza_filter`), which may answer it (a
block refusal). Bytes delivered past the router pass the recipient
filters (`@plugins.recipient_filter`: XEP-0191 §3.3 block lists): a test
built once per batch from the sender, then asked per recipient address
with its account's state in memory; no database.

A target that is not a session of this process (a session on another
node of a cluster, an account of a remote domain over s2s) is handed over
in one method, `elsewhere()`. Nothing is there yet: it declines, and the
caller applies the rules for an absent recipient (RFC 6121 §8.5.3,
RFC 6120 §8.3.3.16 remote-server-not-found).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .protocol.jid import JID, InvalidJID

if TYPE_CHECKING:
    from .c2s import ClientSession
    from .plugins import PluginRegistry, RecipientTest
    from .router import Router
    from .sessions import SessionManager


class Delivery:
    def __init__(self, domain: str, registry: PluginRegistry, sessions: SessionManager) -> None:
        self.domain = domain
        self.registry = registry
        self.sessions = sessions

    # -- filters -----------------------------------------------------------

    def refused(self, stanza: Element, sender: JID, to: JID, router: Router) -> bool:
        """Whether a stanza filter dealt with a routed stanza (e.g. blocked it)."""
        for stanza_filter in self.registry.stanza_filters:
            if stanza_filter(stanza, sender, to, router):
                return True
        return False

    def refusal_test(self, sender: JID) -> RecipientTest | None:
        """The recipient filters for what `sender` sends, as one test of a
        recipient (address, account state); None when nothing is refused."""
        tests = []
        for recipient_filter in self.registry.recipient_filters:
            test = recipient_filter(sender, self.sessions)
            if test is not None:
                tests.append(test)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda to, account: any(test(to, account) for test in tests)

    def refuses(self, sender: JID, to: JID) -> bool:
        """Whether the recipient filters keep what `sender` sends from `to`."""
        test = self.refusal_test(sender)
        return test is not None and test(to, self.sessions.account(to.bare))

    # -- which sessions (RFC 6121 §8.5.2.1) --------------------------------

    def message_targets(self, bare: JID, message_type: str | None) -> list[ClientSession]:
        """§8.5.2.1.1: a headline goes to every available resource of
        non-negative priority; normal and chat to those with the highest
        non-negative priority. Empty when none qualifies."""
        if message_type == "headline":
            return self.non_negative(bare)
        return self.sessions.highest_priority(bare)

    def non_negative(self, bare: JID) -> list[ClientSession]:
        """The available resources of non-negative priority: headlines
        (§8.5.2.1.1) and subscription requests (§3.1.3)."""
        return [s for s in self.sessions.available(bare) if s.priority >= 0]

    # -- stanzas the router routes (already filtered) ----------------------

    def to_full_jid(self, stanza: Element, to: JID) -> bool:
        """§8.5.3.1: to the session bound as `to`; False if there is none."""
        target = self.sessions.get(to)
        if target is None:
            return self.elsewhere(to, stanza)
        target.deliver(stanza)
        return True

    def to_sessions(self, stanza: Element, targets: Iterable[ClientSession]) -> None:
        for target in targets:
            target.deliver(stanza)

    # -- bytes serialised once, past the router (filtered here) ------------

    def to_available(self, data: bytes, bares: Iterable[JID], sender: JID) -> None:
        """`data` to every available resource of each bare JID (RFC 6121
        §4.2.2 presence broadcast), unless a recipient filter refuses it."""
        refuses = self.refusal_test(sender)
        sessions = self.sessions
        for bare in bares:
            targets = sessions.available(bare)
            if not targets or (refuses is not None and refuses(bare, sessions.account(bare))):
                continue
            for target in targets:
                target.send_serialized(data)

    def fan_out(
        self,
        prefix: bytes,
        suffix: bytes,
        targets: Iterable[tuple[ClientSession | None, bytes]],
        sender: JID,
    ) -> None:
        """prefix + to_attr + suffix to each (session, b' to="..."') of a
        batch (a room's occupants), skipping those a filter refuses."""
        refuses = self.refusal_test(sender)
        if refuses is None:
            for session, to_attr in targets:
                if session is not None:
                    session.send_serialized(prefix + to_attr + suffix)
            return
        for session, to_attr in targets:
            if session is not None and not refuses(session.jid, session.account):
                session.send_serialized(prefix + to_attr + suffix)

    def to_addresses(
        self, recipients: Iterable[str], render: Callable[[str], bytes], sender: JID
    ) -> int:
        """render(address) to each address: a full JID's session, or a bare
        JID's available resources of non-negative priority (the headline
        rule of §8.5.2.1.1), unless a filter refuses the address. Returns
        how many stanzas were written."""
        refuses = self.refusal_test(sender)
        sessions = self.sessions
        domain = self.domain
        written = 0
        for recipient in recipients:
            try:
                jid = JID.parse(recipient)
            except InvalidJID:
                continue
            if jid.domain != domain or not jid.local:
                self.elsewhere(jid, render(recipient))
                continue
            if jid.resource:
                session = sessions.get(jid)
                targets = [session] if session is not None else ()
            else:
                targets = self.message_targets(jid, "headline")
            if not targets or (refuses is not None and refuses(jid, sessions.account(jid.bare))):
                continue
            data = render(recipient)
            for target in targets:
                target.send_serialized(data)
                written += 1
        return written

    # -- somewhere else ----------------------------------------------------

    def elsewhere(self, to: JID, stanza: Element | bytes) -> bool:
        """Hand over a stanza for a target with no session in this process:
        where a cluster's other nodes (channels_redis) and s2s streams to
        remote domains will plug in. None exists yet, so this declines."""
        return False
