"""A room in memory: its configuration, affiliations, occupants and roles,
and the privilege rules of XEP-0045 §5 (roles §5.1, affiliations §5.2).

No I/O here: the service (muc.service) changes a Room and sends what it
decides; muc.storage writes what must persist. A room is in memory while it
has occupants, and a persistent room stays once loaded, so that routing a
message to it never touches the database (ARCHITECTURE.md, "Rules that keep
it fast").

Each occupant keeps, per session (full JID) in the room, the session object
and the ready-made ` to="..."` attribute bytes: a broadcast is serialised
once, and each delivery is `prefix + to + suffix` written straight into the
session's outgoing buffer (muc.stanzas.Outgoing).
"""

from __future__ import annotations

import base64
import hmac
from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from xmpp.protocol.jid import JID
from xmpp.protocol.xml import escape_attr

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from xmpp.bound_session import BoundSession

OWNER, ADMIN, MEMBER, NO_AFFILIATION, OUTCAST = "owner", "admin", "member", "none", "outcast"
MODERATOR, PARTICIPANT, VISITOR, NO_ROLE = "moderator", "participant", "visitor", "none"
AFFILIATIONS = (OWNER, ADMIN, MEMBER, NO_AFFILIATION, OUTCAST)
ROLES = (MODERATOR, PARTICIPANT, VISITOR, NO_ROLE)
AFFILIATION_RANK = {OUTCAST: -1, NO_AFFILIATION: 0, MEMBER: 1, ADMIN: 2, OWNER: 3}
ROLE_RANK = {NO_ROLE: 0, VISITOR: 1, PARTICIPANT: 2, MODERATOR: 3}


@dataclass
class RoomConfig:
    """The room's configuration, one attribute per muc#roomconfig field
    (XEP-0045 §15.5.3); muc.config turns it into the §10.2 form and back."""

    title: str = ""
    description: str = ""
    language: str = ""
    public: bool = True
    persistent: bool = False
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    whois: str = "moderators"  # "moderators": semi-anonymous; "anyone": non-anonymous
    max_occupants: int = 0  # 0: no limit
    change_subject: bool = False
    allow_invites: bool = False
    allow_pm: str = "anyone"  # anyone, participants, moderators, none
    enable_logging: bool = False
    history_length: int = 20
    presence_broadcast: tuple[str, ...] = (MODERATOR, PARTICIPANT, VISITOR)
    get_member_list: tuple[str, ...] = (MODERATOR, PARTICIPANT, VISITOR)
    pubsub: str = ""

    @classmethod
    def from_model(cls, row: Any) -> RoomConfig:
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        for name in ("presence_broadcast", "get_member_list"):
            values[name] = tuple(values[name] or ())
        return cls(**values)

    def model_fields(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["presence_broadcast"] = list(self.presence_broadcast)
        values["get_member_list"] = list(self.get_member_list)
        return values

    def copy(self) -> RoomConfig:
        return RoomConfig(**{f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"


class Occupant:
    """One nickname in the room (§7.2), and the sessions of its user behind it."""

    __slots__ = ("nick", "bare", "role", "presence", "occupant_id", "targets", "shown")

    def __init__(self, nick: str, bare: JID, role: str, occupant_id: str) -> None:
        self.nick = nick
        self.bare = bare
        self.role = role
        # The payload of the occupant's last presence (show, status, caps...),
        # without the MUC elements the service adds itself.
        self.presence: list[Element] = []
        self.occupant_id = occupant_id
        # full JID -> (session or None, b' to="full JID"'): insertion-ordered,
        # so the first session is the occupant's "real JID" shown in items.
        self.targets: dict[JID, tuple[BoundSession | None, bytes]] = {}
        # The current available presence as others see it, serialised, by
        # "with the real JID": cleared whenever it is broadcast anew.
        self.shown: dict[bool, Any] = {}

    def __repr__(self) -> str:
        return f"<Occupant {self.nick} {self.bare} {self.role}>"

    @property
    def jid(self) -> JID:
        """The real full JID shown to those who may see it (§7.2.3 item jid)."""
        return next(iter(self.targets))

    def add_session(self, jid: JID, session: BoundSession | None) -> None:
        self.targets[jid] = (session, to_attribute(jid))


def to_attribute(jid: JID) -> bytes:
    return b' to="' + escape_attr(str(jid)).encode() + b'"'


@dataclass(eq=False)
class Room:
    name: str
    jid: JID
    config: RoomConfig
    affiliations: dict[JID, str] = field(default_factory=dict)
    reserved_nicks: dict[JID, str] = field(default_factory=dict)  # §7.12
    reasons: dict[JID, str] = field(default_factory=dict)
    occupants: dict[str, Occupant] = field(default_factory=dict)
    by_jid: dict[JID, Occupant] = field(default_factory=dict)
    # (time.time(), the stanza as broadcast, without 'to'): §7.2.15
    history: deque = field(default_factory=deque)
    subject: str = ""
    subject_by: str = ""
    # §10.1.1: a new room is locked until its owner configures it.
    locked: bool = False
    db_id: int | None = None
    destroyed: bool = False
    # Every (session, b' to="..."') of every occupant, for the fan-out; rebuilt
    # after a change of membership, never changed in place, so that a
    # delivery that ends a session (and makes it leave) mid-loop is safe.
    _fanout: list | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.resize_history()

    def __repr__(self) -> str:
        return f"<Room {self.jid}>"

    def fanout(self) -> list[tuple[BoundSession | None, bytes]]:
        if self._fanout is None:
            self._fanout = [t for o in self.occupants.values() for t in o.targets.values()]
        return self._fanout

    def membership_changed(self) -> None:
        self._fanout = None

    def resize_history(self) -> None:
        self.history = deque(self.history, maxlen=max(0, self.config.history_length))

    # -- affiliations and roles (§5) ------------------------------------------

    def affiliation(self, bare: JID) -> str:
        return self.affiliations.get(bare, NO_AFFILIATION)

    def owners(self) -> list[JID]:
        return [jid for jid, aff in self.affiliations.items() if aff == OWNER]

    def default_role(self, affiliation: str) -> str:
        """§5.1.2: the role an affiliation gets on entering."""
        if affiliation in (OWNER, ADMIN):
            return MODERATOR
        if affiliation == MEMBER:
            return PARTICIPANT
        if affiliation == OUTCAST:
            return NO_ROLE
        return VISITOR if self.config.moderated else PARTICIPANT

    def nick_owner(self, nick: str) -> JID | None:
        """Who reserved `nick` (§7.12), if anyone."""
        for jid, reserved in self.reserved_nicks.items():
            if reserved == nick:
                return jid
        return None

    def sees_real_jids(self, recipient: Occupant) -> bool:
        """§5.1.1, §7.2.3/§7.2.4: everyone in a non-anonymous room, moderators
        in a semi-anonymous one."""
        return self.config.non_anonymous or recipient.role == MODERATOR

    def presence_broadcast(self, occupant: Occupant) -> bool:
        """muc#roomconfig_presencebroadcast: is this role's presence sent to others?"""
        return occupant.role in self.config.presence_broadcast

    @property
    def empty(self) -> bool:
        return not self.occupants

    def occupant_id(self, secret: bytes, bare: JID) -> str:
        """XEP-0421 §4: stable per room and real bare JID, revealing neither."""
        digest = hmac.digest(secret, f"{self.name}\0{bare}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest[:18]).decode()


# -- the privilege rules of §8-§10, as values ---------------------------------


def role_change_error(
    actor_affiliation: str,
    actor_role: str,
    target_affiliation: str,
    target_role: str,
    new_role: str,
) -> str | None:
    """The error condition for a role change, or None if it is allowed.

    §8.2 kick, §8.3/§8.4 voice: moderators only, never against an admin or
    owner, nor against someone of a higher affiliation (not-allowed). §9.6/
    §9.7 the moderator role: given and taken by admins and owners only, and
    never taken from an admin or owner."""
    if actor_role != MODERATOR:
        return "forbidden"
    if new_role != MODERATOR and target_affiliation in (OWNER, ADMIN):
        return "not-allowed"
    if new_role == MODERATOR or target_role == MODERATOR:
        if AFFILIATION_RANK[actor_affiliation] < AFFILIATION_RANK[ADMIN]:
            return "forbidden"
    if AFFILIATION_RANK[target_affiliation] > AFFILIATION_RANK[actor_affiliation]:
        return "not-allowed"
    return None


def affiliation_change_error(
    actor_affiliation: str, target_affiliation: str, new_affiliation: str
) -> str | None:
    """§9.1-§9.5 (member, none, outcast): admins and owners; an admin may not
    touch an admin or owner (not-allowed). §10.3-§10.8 (admin, owner): owners
    only (forbidden)."""
    actor = AFFILIATION_RANK[actor_affiliation]
    if actor < AFFILIATION_RANK[ADMIN]:
        return "forbidden"
    if new_affiliation in (OWNER, ADMIN) and actor_affiliation != OWNER:
        return "forbidden"
    if target_affiliation in (OWNER, ADMIN) and actor_affiliation != OWNER:
        return "not-allowed"
    return None
