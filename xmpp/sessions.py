"""The bound client sessions of this process, by bare JID and resource.

Owns the resource-conflict policy of RFC 6120 §7.7.2.2 (the new session
wins; the old one is closed with <conflict/>) and the choice of resources
for a bare JID by presence priority (RFC 6121 §8.5.2.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol.jid import JID

if TYPE_CHECKING:
    from .c2s import ClientSession


class AccountState:
    """What the server keeps in memory for an account while it has a bound
    session, shared by all its resources: loaded once at the first bind,
    dropped after the last session ends, so routing needs no database."""

    __slots__ = ("jid", "user_id", "loaded", "roster", "blocked", "data")

    def __init__(self, jid: JID) -> None:
        self.jid = jid
        self.user_id: int | None = None
        self.loaded = False  # the account loaders have run
        self.roster = None  # xmpp.roster.Roster, loaded at bind
        self.blocked: set[JID] = set()  # XEP-0191 block list
        self.data: dict = {}  # for plugins


class SessionManager:
    def __init__(self) -> None:
        self._by_bare: dict[JID, dict[str, ClientSession]] = {}
        self._accounts: dict[JID, AccountState] = {}

    def account(self, bare: JID) -> AccountState | None:
        """The in-memory state of an account with a bound session, else None."""
        return self._accounts.get(bare)

    def account_for_bind(self, bare: JID) -> AccountState:
        """The state a session about to bind shares with its account's other resources."""
        state = self._accounts.get(bare)
        if state is None:
            state = self._accounts[bare] = AccountState(bare)
        return state

    def __len__(self) -> int:
        return sum(len(resources) for resources in self._by_bare.values())

    def forget_unused_account(self, bare: JID) -> None:
        """Drop the state made for a bind that did not complete."""
        if bare not in self._by_bare:
            self._accounts.pop(bare, None)

    def bind(self, session: ClientSession, jid: JID) -> ClientSession | None:
        """Register `session` as `jid`; return the session it displaces, if any."""
        resources = self._by_bare.setdefault(jid.bare, {})
        if session.account is not None:
            # The account's last session may have ended while this one was
            # binding: its state is the account's state again.
            self._accounts.setdefault(jid.bare, session.account)
        old = resources.get(jid.resource)
        resources[jid.resource] = session
        return old if old is not session else None

    def unbind(self, session: ClientSession) -> None:
        jid = session.jid
        if jid is None:
            return
        resources = self._by_bare.get(jid.bare)
        if resources and resources.get(jid.resource) is session:
            del resources[jid.resource]
            if not resources:
                del self._by_bare[jid.bare]
                self._accounts.pop(jid.bare, None)

    def get(self, jid: JID) -> ClientSession | None:
        resources = self._by_bare.get(jid.bare)
        return resources.get(jid.resource) if resources else None

    def resources(self, bare: JID) -> list[ClientSession]:
        resources = self._by_bare.get(bare)
        return list(resources.values()) if resources else []

    def has_sessions(self, bare: JID) -> bool:
        return bare in self._by_bare

    def available(self, bare: JID) -> list[ClientSession]:
        """Resources that have sent available presence (RFC 6121 §4.2)."""
        resources = self._by_bare.get(bare)
        if not resources:
            return []
        return [s for s in resources.values() if s.available]

    def highest_priority(self, bare: JID) -> list[ClientSession]:
        """The available resources with the highest non-negative priority
        (RFC 6121 §8.5.2.1.1); empty if there is none."""
        best: list[ClientSession] = []
        for session in self.available(bare):
            if session.priority < 0:
                continue  # §8.5.2.1.1: never chosen, even when it is the only one
            if not best or session.priority > best[0].priority:
                best = [session]
            elif session.priority == best[0].priority:
                best.append(session)
        return best
