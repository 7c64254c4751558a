"""The multi-user chat service at conference.<domain> (XEP-0045).

What this module owns: every stanza the router gives the service
(`plugins.service(XMPP_MUC_SUBDOMAIN, service)`), dispatched by address
and kind:

    conference.<domain>            IQ: disco (§6.1-§6.3), ping
    room@conference.<domain>       message: groupchat (§7.4), subject (§8.1),
                                   mediated invitations and declines (§7.8.2,
                                   §7.8.3), voice requests (§7.13, §8.6);
                                   IQ: disco (§6.4, §6.5), muc#admin (§8-§9,
                                   muc.admin_lists), muc#owner (§10),
                                   registration (§7.10), ping
    room@conference.<domain>/nick  presence: enter (§7.2), change status
                                   (§7.7), change nick (§7.6), leave (§7.14);
                                   message: private messages (§7.5);
                                   IQ: self-ping (XEP-0410), or passed to the
                                   occupant (vCards, software version...)

Rooms are in memory (muc.rooms) while they have occupants, and persistent
ones stay once loaded; a room not in memory is loaded from the database in
one thread hop, and stanzas for it meanwhile wait in order. A broadcast is
serialised once and written straight into each occupant session's buffer
with only 'to' changed (muc.broadcast, muc.stanzas.Outgoing): no database
query and no router hop per occupant. Persistent writes (configuration, affiliations,
history) go through muc.storage.DatabaseWriter.

An occupant whose session ends leaves the room: the session's directed
presence brings us its unavailable presence (RFC 6121 §4.6.3), and the
session-closed hook catches a session that never sent broadcast presence.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import sync_to_async
from django.conf import settings

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID
from xmpp.protocol.xml import NS_CLIENT

from . import admin_lists, broadcast, disco, invitations, registration, storage
from .broadcast import broadcast_presence, occupant_jid, presence_stanza, send, send_entry
from .config import apply_config_form, config_form
from .rooms import (
    ADMIN,
    AFFILIATION_RANK,
    MEMBER,
    MODERATOR,
    NO_AFFILIATION,
    NO_ROLE,
    OUTCAST,
    OWNER,
    PARTICIPANT,
    VISITOR,
    Occupant,
    Room,
    RoomConfig,
)
from .stanzas import (
    IQ,
    MESSAGE,
    NS_DATA,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_REQUEST,
    NS_MUC_USER,
    OCCUPANT_ID,
    PRESENCE,
    STATUS_AFFILIATION_KICK,
    STATUS_BANNED,
    STATUS_CONFIG_CHANGED,
    STATUS_CREATED,
    STATUS_KICKED,
    STATUS_LOGGING,
    STATUS_MEMBERS_ONLY_KICK,
    STATUS_NEW_NICK,
    STATUS_NICK_MODIFIED,
    STATUS_NOW_NON_ANONYMOUS,
    STATUS_NOW_SEMI_ANONYMOUS,
    X_MUC,
    X_USER,
    Outgoing,
    client_payload,
    form_type,
    occupant_id_element,
    status_message,
    user_tag,
)

if TYPE_CHECKING:
    from xmpp.bound_session import BoundSession
    from xmpp.delivery import Delivery
    from xmpp.router import Router

log = logging.getLogger(__name__)

BODY = f"{{{NS_CLIENT}}}body"
SUBJECT = f"{{{NS_CLIENT}}}subject"
THREAD = f"{{{NS_CLIENT}}}thread"
PING = "{urn:xmpp:ping}ping"
OWNER_QUERY = f"{{{NS_MUC_OWNER}}}query"
ADMIN_QUERY = f"{{{NS_MUC_ADMIN}}}query"
DATA_FORM = f"{{{NS_DATA}}}x"


def service_subdomain() -> str:
    return getattr(settings, "XMPP_MUC_SUBDOMAIN", "conference")


class MucService:
    """The service of this process; `__call__` is the router's service handler."""

    # The service of this process, for Django admin actions (set on first use).
    current: MucService | None = None

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, list[tuple[Element, JID]]] = {}
        # Real full JID -> names of the rooms it is in, for sessions that end.
        self.by_session: dict[JID, set[str]] = {}
        self.writer = storage.DatabaseWriter()
        self.router: Router | None = None
        self.delivery: Delivery | None = None
        self.domain = ""
        self.secret = b""
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- entry points ---------------------------------------------------------

    def __call__(self, stanza: Element, sender: JID, router: Router) -> None:
        if self.router is not router:
            self._attach(router)
        try:
            to = JID.parse(stanza.get("to", ""))
        except InvalidJID:
            router.bounce(stanza, StanzaError("jid-malformed"))
            return
        if not to.local:
            self._to_service(stanza, sender, to)
            return
        room = self.rooms.get(to.local)
        if room is None:
            self._load_then(to.local, stanza, sender)
            return
        self._to_room(room, stanza, sender, to)

    def _attach(self, router: Router) -> None:
        self.router = router
        self.delivery = router.delivery
        self.domain = f"{service_subdomain()}.{router.domain}"
        self.secret = hashlib.sha256(b"muc-occupant-id:" + settings.SECRET_KEY.encode()).digest()
        self.writer.router = router
        self.loop = asyncio.get_running_loop()
        MucService.current = self

    def session_closed(self, session: BoundSession) -> None:
        """A session ended without leaving its rooms: it leaves them now (§7.14)."""
        jid = session.jid
        if jid is None:
            return
        for name in list(self.by_session.get(jid, ())):
            room = self.rooms.get(name)
            occupant = room.by_jid.get(jid) if room is not None else None
            if occupant is not None:
                self._leave(room, occupant, jid, None)
        self.by_session.pop(jid, None)

    # -- rooms not in memory ---------------------------------------------------

    def _load_then(self, name: str, stanza: Element, sender: JID) -> None:
        queued = self._loading.get(name)
        if queued is not None:
            queued.append((stanza, sender))
            return
        self._loading[name] = [(stanza, sender)]
        self.router.spawn(self._load(name))

    async def _load(self, name: str) -> None:
        try:
            room = await sync_to_async(storage.load_room)(name, self.domain)
        except Exception:
            log.exception("MUC: loading room %s failed", name)
            room = None
        if room is not None and name not in self.rooms:
            self.rooms[name] = room
        for stanza, sender in self._loading.pop(name, []):
            room = self.rooms.get(name)
            to = JID.parse(stanza.get("to"))
            if room is not None:
                self._to_room(room, stanza, sender, to)
            else:
                await self._to_missing_room(name, stanza, sender, to)

    async def _to_missing_room(self, name: str, stanza: Element, sender: JID, to: JID) -> None:
        """A stanza for a room that exists nowhere: an entering presence creates
        it (§10.1); anything else gets <item-not-found/>."""
        kind = stanza.tag
        if kind == PRESENCE:
            if stanza.get("type") is not None or not to.resource:
                if stanza.get("type") is None:
                    self.router.bounce(stanza, StanzaError("jid-malformed", "no nickname"))
                return
            if sender.domain != self.router.domain:
                self.router.bounce(stanza, StanzaError("not-allowed", "local users only"))
                return
            if getattr(settings, "XMPP_MUC_ROOM_CREATION", "anyone") != "anyone":
                allowed = await sync_to_async(storage.may_create_rooms)(sender.local)
                if not allowed:
                    self.router.bounce(
                        stanza, StanzaError("not-allowed", "you may not create rooms")
                    )
                    return
            if name in self.rooms:  # created while we checked
                self._to_room(self.rooms[name], stanza, sender, to)
                return
            self._create(name, stanza, sender, to.resource)
            return
        if kind == IQ and stanza.get("type") not in ("get", "set"):
            return
        if kind == MESSAGE and stanza.get("type") == "error":
            return
        self.router.bounce(stanza, StanzaError("item-not-found", "no such room"))

    def _create(self, name: str, stanza: Element, sender: JID, nick: str) -> None:
        """§10.1: the first occupant creates the room and owns it. A MUC client
        (with <x/>) gets a locked room to configure (§10.1.1, status 201); an
        old groupchat client gets an instant room at once."""
        config = RoomConfig(history_length=default_history_length())
        room = Room(name, JID(name, self.domain, ""), config)
        room.affiliations[sender.bare] = OWNER
        room.locked = stanza.find(X_MUC) is not None
        self.rooms[name] = room
        self._enter(room, stanza, sender, nick, created=True)

    # -- dispatch --------------------------------------------------------------

    def _to_service(self, stanza: Element, sender: JID, to: JID) -> None:
        if stanza.tag != IQ:
            if stanza.tag == MESSAGE and stanza.get("type") not in ("error", "groupchat"):
                self.router.bounce(stanza, StanzaError("service-unavailable"))
            return
        iq_type = stanza.get("type")
        if iq_type not in ("get", "set"):
            return
        payload = stanza[0] if len(stanza) == 1 else None
        tag = payload.tag if payload is not None else ""
        if iq_type == "get" and tag == disco.DISCO_INFO and not payload.get("node"):
            self.router.reply(stanza, disco.service_info("Chatrooms"))
        elif iq_type == "get" and tag == disco.DISCO_ITEMS and not payload.get("node"):
            self.router.spawn(self._service_items(stanza))
        elif iq_type == "get" and tag == PING:
            self.router.reply(stanza, None)
        elif iq_type == "get" and tag == "{http://jabber.org/protocol/muc#unique}unique":
            unique = Element(tag)
            unique.text = hashlib.sha1(f"{sender}{time.time_ns()}".encode()).hexdigest()
            self.router.reply(stanza, unique)
        else:
            self.router.bounce(stanza, StanzaError("service-unavailable"))

    async def _service_items(self, stanza: Element) -> None:
        """§6.3: the public rooms, persistent ones from the database and
        temporary ones from memory."""
        try:
            stored = await sync_to_async(storage.public_rooms)()
        except Exception:
            log.exception("MUC: listing rooms failed")
            stored = []
        rooms = {name: title for name, title in stored}
        for name, room in self.rooms.items():
            if room.config.public and not room.locked:
                rooms[name] = room.config.title
            elif name in rooms:
                del rooms[name]  # made hidden since it was stored
        items = [(f"{name}@{self.domain}", title) for name, title in rooms.items()]
        self.router.reply(stanza, disco.service_items(items))

    def _to_room(self, room: Room, stanza: Element, sender: JID, to: JID) -> None:
        kind = stanza.tag
        if kind == PRESENCE:
            if to.resource:
                self._presence(room, stanza, sender, to.resource)
            elif stanza.get("type") is None:
                self.router.bounce(stanza, StanzaError("jid-malformed", "no nickname"))  # §7.2.1
        elif kind == MESSAGE:
            if to.resource:
                self._private_message(room, stanza, sender, to.resource)
            else:
                self._message(room, stanza, sender)
        elif kind == IQ:
            if to.resource:
                self._iq_to_occupant(room, stanza, sender, to.resource)
            else:
                self._iq_to_room(room, stanza, sender)

    # -- presence (§7.2, §7.6, §7.7, §7.14) -----------------------------------

    def _presence(self, room: Room, stanza: Element, sender: JID, nick: str) -> None:
        presence_type = stanza.get("type")
        occupant = room.by_jid.get(sender)
        if presence_type in ("unavailable", "error"):
            # An error is the occupant's client bouncing our presence: a ghost.
            if occupant is not None:
                self._leave(room, occupant, sender, stanza if presence_type != "error" else None)
            return
        if presence_type is not None:
            return  # subscriptions and probes to a room are ignored
        if occupant is None:
            self._enter(room, stanza, sender, nick)
        elif occupant.nick != nick:
            self._change_nick(room, occupant, sender, stanza, nick)
        elif stanza.find(X_MUC) is not None:
            # The client thinks it is not in the room (it lost track after a
            # reconnection, XEP-0410 §3): it gets the whole entry again.
            occupant.presence = client_payload(stanza)
            send_entry(self.delivery, room, occupant, sender, stanza.find(X_MUC), ())
            broadcast_presence(self.delivery, room, occupant, skip_self=True)
        else:
            occupant.presence = client_payload(stanza)  # §7.7
            broadcast_presence(self.delivery, room, occupant)

    def _enter(
        self, room: Room, stanza: Element, sender: JID, nick: str, created: bool = False
    ) -> None:
        bare = sender.bare
        affiliation = room.affiliation(bare)
        x = stanza.find(X_MUC)
        error = self._entry_error(room, bare, affiliation, nick, x)
        if error is not None:
            self.router.bounce(stanza, error)
            if room.empty and not room.config.persistent:
                self._forget(room)
            return
        session = self.router.sessions.get(sender)
        existing = room.occupants.get(nick)
        if existing is not None:
            # The same user from another session joins its own nickname.
            occupant = existing
        else:
            occupant = Occupant(
                nick, bare, room.default_role(affiliation), room.occupant_id(self.secret, bare)
            )
        occupant.presence = client_payload(stanza)
        occupant.add_session(sender, session)
        room.by_jid[sender] = occupant
        self.by_session.setdefault(sender, set()).add(room.name)
        if existing is None:
            room.occupants[nick] = occupant
        room.membership_changed()
        codes = [STATUS_CREATED] if created else []
        if stanza.get("to", "").partition("/")[2] != nick:
            codes.append(STATUS_NICK_MODIFIED)  # §7.2.3: the service normalised it (RFC 7622)
        send_entry(self.delivery, room, occupant, sender, x, codes)
        broadcast_presence(self.delivery, room, occupant, skip_self=True)

    def _entry_error(
        self, room: Room, bare: JID, affiliation: str, nick: str, x: Element | None
    ) -> StanzaError | None:
        """The checks of §7.2.4-§7.2.10, in Prosody's order."""
        privileged = affiliation in (OWNER, ADMIN)
        if room.locked and affiliation != OWNER:
            return StanzaError("item-not-found", "the room is locked")  # §10.1.1
        if affiliation == OUTCAST:
            return StanzaError("forbidden", "you are banned from this room")  # §7.2.7
        if room.config.members_only and AFFILIATION_RANK[affiliation] < AFFILIATION_RANK[MEMBER]:
            return StanzaError("registration-required", "members only")  # §7.2.6
        if room.config.password and not privileged:
            given = x.findtext(f"{{{NS_MUC}}}password") if x is not None else None
            if given != room.config.password:
                return StanzaError("not-authorized", "a password is required")  # §7.2.5
        holder = room.occupants.get(nick)
        if holder is not None and holder.bare != bare:
            return StanzaError("conflict", "that nickname is in use")  # §7.2.9
        reserved_by = room.nick_owner(nick)
        if reserved_by is not None and reserved_by != bare:
            return StanzaError("conflict", "that nickname is reserved")  # §7.2.9
        limit = room.config.max_occupants
        if limit and holder is None and len(room.occupants) >= limit and not privileged:
            return StanzaError("service-unavailable", "the room is full")  # §7.2.10
        return None

    def _change_nick(
        self, room: Room, occupant: Occupant, sender: JID, stanza: Element, nick: str
    ) -> None:
        """§7.6: unavailable with status 303 and the new nick, then available."""
        holder = room.occupants.get(nick)
        reserved_by = room.nick_owner(nick)
        if (holder is not None and holder is not occupant) or (
            reserved_by is not None and reserved_by != occupant.bare
        ):
            self.router.bounce(stanza, StanzaError("conflict", "that nickname is in use"))
            return
        broadcast_presence(
            self.delivery,
            room,
            occupant,
            unavailable=True,
            new_nick=nick,
            codes=(STATUS_NEW_NICK,),
            payload=[],
        )
        del room.occupants[occupant.nick]
        occupant.nick = nick
        room.occupants[nick] = occupant
        occupant.presence = client_payload(stanza)
        broadcast_presence(self.delivery, room, occupant)

    def _leave(self, room: Room, occupant: Occupant, jid: JID, stanza: Element | None) -> None:
        """§7.14: one session leaves; the occupant is gone with its last session."""
        entry = occupant.targets.pop(jid, None)
        room.by_jid.pop(jid, None)
        room.membership_changed()
        rooms = self.by_session.get(jid)
        if rooms is not None:
            rooms.discard(room.name)
            if not rooms:
                del self.by_session[jid]
        payload = client_payload(stanza) if stanza is not None else []
        departed = {jid: entry} if entry is not None else {}
        if occupant.targets:
            # Other sessions stay in the room: only this one hears it left
            # (the real JID shown to others may now be another session's).
            occupant.shown.clear()
            out = presence_stanza(
                room,
                occupant,
                with_jid=room.sees_real_jids(occupant),
                own=True,
                unavailable=True,
                payload=payload,
            )
            send(self.delivery, out, tuple(departed.values()), occupant_jid(room, occupant.nick))
            return
        room.occupants.pop(occupant.nick, None)
        occupant.targets = departed  # for the real JID shown in the item
        broadcast_presence(
            self.delivery, room, occupant, unavailable=True, payload=payload, departed=departed
        )
        occupant.targets = {}
        self._after_departure(room)

    def _remove(
        self,
        room: Room,
        occupant: Occupant,
        codes: tuple[str, ...],
        actor: str | None = None,
        reason: str | None = None,
        affiliation: str | None = None,
    ) -> None:
        """An occupant removed by someone else (kick §8.2, ban §9.1, §9.4,
        status 322 of §15.6 when a room becomes members-only): every session
        of it, with the status codes."""
        departed = dict(occupant.targets)
        for jid in departed:
            room.by_jid.pop(jid, None)
            rooms = self.by_session.get(jid)
            if rooms is not None:
                rooms.discard(room.name)
                if not rooms:
                    del self.by_session[jid]
        room.occupants.pop(occupant.nick, None)
        room.membership_changed()
        broadcast_presence(
            self.delivery,
            room,
            occupant,
            unavailable=True,
            payload=[],
            codes=codes,
            actor=actor,
            reason=reason,
            affiliation=affiliation,
            departed=departed,
        )
        occupant.targets = {}
        self._after_departure(room)

    def _after_departure(self, room: Room) -> None:
        if room.empty and not room.config.persistent:
            self._forget(room)  # §10.1: a temporary room ends with its last occupant

    def _forget(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    # -- messages (§7.4, §7.5, §7.8, §7.13, §8.1) ------------------------------

    def _message(self, room: Room, stanza: Element, sender: JID) -> None:
        message_type = stanza.get("type", "normal")
        if message_type == "error":
            return
        occupant = room.by_jid.get(sender)
        if message_type == "groupchat":
            if occupant is None:
                self.router.bounce(stanza, StanzaError("not-acceptable", "you are not in the room"))
                return
            if stanza.find(SUBJECT) is not None and stanza.find(BODY) is None:
                self._set_subject(room, occupant, stanza)
                return
            if occupant.role not in (PARTICIPANT, MODERATOR):
                # §7.4: a visitor in a moderated room has no voice.
                self.router.bounce(stanza, StanzaError("forbidden", "you have no voice"))
                return
            self.broadcast_message(room, occupant, stanza)
            return
        x = stanza.find(X_USER)
        if x is not None:
            decline = x.find(f"{{{NS_MUC_USER}}}decline")
            if decline is not None:
                invitations.decline(self, room, sender, decline)
                return
            invites = x.findall(f"{{{NS_MUC_USER}}}invite")
            if invites:
                invitations.invite(self, room, occupant, sender, invites, stanza)
                return
        form = stanza.find(DATA_FORM)
        if form is not None and form_type(form) == NS_MUC_REQUEST:
            invitations.voice_request(self, room, occupant, stanza, form)
            return
        self.router.bounce(stanza, StanzaError("bad-request"))

    def broadcast_message(self, room: Room, occupant: Occupant, stanza: Element) -> None:
        """§7.4 to every occupant; a message with a body joins the history
        (§7.2.15), written through the batching writer if the room persists."""
        data = broadcast.groupchat(self.delivery, room, occupant, stanza)
        if room.config.history_length and stanza.find(BODY) is not None:
            now = time.time()
            room.history.append((now, data))
            if room.config.persistent:
                self.writer.add(
                    storage.HistoryRow(room, occupant.nick, str(occupant.bare), data, now)
                )

    def _set_subject(self, room: Room, occupant: Occupant, stanza: Element) -> None:
        """§8.1: moderators, and participants if muc#roomconfig_changesubject.
        A subject change is not history (§7.2.15)."""
        allowed = occupant.role == MODERATOR or (
            room.config.change_subject and occupant.role == PARTICIPANT
        )
        if not allowed:
            self.router.bounce(stanza, StanzaError("forbidden", "you may not change the subject"))
            return
        room.subject = stanza.findtext(SUBJECT) or ""
        room.subject_by = occupant.nick
        if room.config.persistent:
            self.writer.add(storage.save_subject(room))
        broadcast.groupchat(self.delivery, room, occupant, stanza)

    def _private_message(self, room: Room, stanza: Element, sender: JID, nick: str) -> None:
        """§7.5: between occupants, through the room; muc#roomconfig_allowpm."""
        message_type = stanza.get("type", "normal")
        if message_type == "error":
            return
        if message_type == "groupchat":
            self.router.bounce(stanza, StanzaError("bad-request", "groupchat to a room JID"))
            return
        occupant = room.by_jid.get(sender)
        if occupant is None:
            self.router.bounce(stanza, StanzaError("not-acceptable", "you are not in the room"))
            return
        allow = room.config.allow_pm
        if (
            allow == "none"
            or (allow == "participants" and occupant.role not in (PARTICIPANT, MODERATOR))
            or (allow == "moderators" and occupant.role != MODERATOR)
        ):
            self.router.bounce(stanza, StanzaError("forbidden", "private messages are not allowed"))
            return
        target = room.occupants.get(nick)
        if target is None:
            self.router.bounce(stanza, StanzaError("item-not-found", "no such occupant"))
            return
        stanza.attrib.pop("to", None)
        stanza.set("from", f"{room.jid}/{occupant.nick}")
        for child in stanza.findall(OCCUPANT_ID):
            stanza.remove(child)
        if stanza.find(X_USER) is None:
            SubElement(stanza, X_USER)  # §7.5: marks it as a private message in a room
        stanza.append(occupant_id_element(occupant.occupant_id))
        out = Outgoing(stanza)
        sender_jid = occupant_jid(room, occupant.nick)
        send(self.delivery, out, tuple(target.targets.values()), sender_jid)

    # -- IQs -------------------------------------------------------------------

    def _iq_to_occupant(self, room: Room, stanza: Element, sender: JID, nick: str) -> None:
        """XEP-0410 §3: a ping to one's own occupant JID is answered by the
        room (result if joined, <not-acceptable/> if not); other IQs go to
        the occupant's session, from the asker's occupant JID, and the
        answer comes back the same way (vCards, software version...)."""
        iq_type = stanza.get("type")
        occupant = room.by_jid.get(sender)
        target = room.occupants.get(nick)
        if iq_type in ("get", "set"):
            if occupant is None:
                self.router.bounce(stanza, StanzaError("not-acceptable", "you are not in the room"))
                return
            if target is None:
                self.router.bounce(stanza, StanzaError("item-not-found", "no such occupant"))
                return
            if target is occupant and len(stanza) == 1 and stanza[0].tag == PING:
                self.router.reply(stanza, None)
                return
            forward_to = target.jid
        elif iq_type in ("result", "error"):
            if occupant is None or target is None:
                return
            forward_to = target.jid
        else:
            return
        stanza.set("from", f"{room.jid}/{occupant.nick}")
        stanza.set("to", str(forward_to))
        self.router.route(stanza, JID(room.name, self.domain, occupant.nick))

    def _iq_to_room(self, room: Room, stanza: Element, sender: JID) -> None:
        iq_type = stanza.get("type")
        if iq_type not in ("get", "set"):
            return
        if len(stanza) != 1:
            self.router.bounce(stanza, StanzaError("bad-request"))
            return
        payload = stanza[0]
        tag = payload.tag
        occupant = room.by_jid.get(sender)
        try:
            if tag == disco.DISCO_INFO and iq_type == "get":
                node = payload.get("node")
                if node == disco.ROOMUSER_NODE:
                    # §7.12: the requester's reserved nickname, if any.
                    self.router.reply(
                        stanza, disco.reserved_nick(room.reserved_nicks.get(sender.bare))
                    )
                elif node:
                    raise StanzaError("item-not-found")
                else:
                    self.router.reply(stanza, disco.room_info(room))
            elif tag == disco.DISCO_ITEMS and iq_type == "get":
                self.router.reply(stanza, disco.room_items(room, occupant is not None))
            elif tag == PING and iq_type == "get":
                self.router.reply(stanza, None)
            elif tag == ADMIN_QUERY:
                self.router.reply(stanza, admin_lists.handle(self, room, stanza, sender, occupant))
            elif tag == OWNER_QUERY:
                self._owner(room, stanza, sender)
            elif tag == registration.QUERY:
                self.router.reply(stanza, registration.handle(self, room, stanza, sender))
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as exc:
            self.router.bounce(stanza, exc)

    # -- §10: owners ----------------------------------------------------------

    def _owner(self, room: Room, stanza: Element, sender: JID) -> None:
        if room.affiliation(sender.bare) == OWNER:
            self._owner_request(room, stanza, sender)
        else:
            # A server administrator may do anything an owner may (§10.9).
            self.router.spawn(self._as_server_admin(room, stanza, sender))

    async def _as_server_admin(self, room: Room, stanza: Element, sender: JID) -> None:
        admin = sender.domain == self.router.domain and await sync_to_async(
            storage.is_server_admin
        )(sender.local)
        if not admin:
            self.router.bounce(stanza, StanzaError("forbidden", "owners only"))
            return
        if self.rooms.get(room.name) is not room:
            self.router.bounce(stanza, StanzaError("item-not-found", "no such room"))
            return
        try:
            self._owner_request(room, stanza, sender)
        except StanzaError as exc:
            self.router.bounce(stanza, exc)

    def _owner_request(self, room: Room, stanza: Element, sender: JID) -> None:
        query = stanza[0]
        if stanza.get("type") == "get":
            result = Element(OWNER_QUERY)
            result.append(config_form(room))
            self.router.reply(stanza, result)
            return
        destroy = query.find(f"{{{NS_MUC_OWNER}}}destroy")
        if destroy is not None:
            self.destroy(
                room,
                alternate=destroy.get("jid"),
                reason=destroy.findtext(f"{{{NS_MUC_OWNER}}}reason"),
                password=destroy.findtext(f"{{{NS_MUC_OWNER}}}password"),
            )
            self.router.reply(stanza, None)
            return
        form = query.find(DATA_FORM)
        if form is None:
            raise StanzaError("bad-request")
        if form.get("type") == "cancel":
            if room.locked:
                self.destroy(room)  # §10.1.3: cancelling a new room's form destroys it
            self.router.reply(stanza, None)
            return
        if form.get("type") != "submit":
            raise StanzaError("bad-request")
        self.configure(room, form, sender)
        self.router.reply(stanza, None)

    def configure(self, room: Room, form: Element, actor: JID) -> None:
        """§10.2: apply a submitted configuration form (an empty one accepts
        the defaults: an instant room, §10.1.2) and tell the occupants."""
        old = room.config
        new, owners, admins = apply_config_form(old, form)
        if owners is not None and not owners:
            raise StanzaError("not-acceptable", "a room needs an owner")
        was_locked = room.locked
        room.config = new
        room.locked = False
        if new.history_length != old.history_length:
            room.resize_history()
        changed_jids: set[JID] = set()
        for wanted, affiliation in ((owners, OWNER), (admins, ADMIN)):
            if wanted is None:
                continue
            for jid, current in list(room.affiliations.items()):
                if current == affiliation and jid not in wanted:
                    del room.affiliations[jid]
                    changed_jids.add(jid)
            for jid in wanted:
                if room.affiliations.get(jid) != affiliation:
                    room.affiliations[jid] = affiliation
                    changed_jids.add(jid)
        if new.persistent:
            self.writer.add(storage.save_room(room))
        elif old.persistent:
            self.writer.add(storage.delete_room(room.name))
            room.db_id = None
        codes = [] if was_locked else [STATUS_CONFIG_CHANGED]
        if new.whois != old.whois:
            codes.append(
                STATUS_NOW_NON_ANONYMOUS if new.non_anonymous else STATUS_NOW_SEMI_ANONYMOUS
            )
        if new.enable_logging != old.enable_logging:
            codes.append(STATUS_LOGGING if new.enable_logging else "171")
        if codes:
            broadcast.to_everyone(
                self.delivery, room, Outgoing(status_message(str(room.jid), tuple(codes)))
            )
        for occupant in list(room.occupants.values()):
            if occupant.bare in changed_jids:
                self._role_after_affiliation(room, occupant)
        if new.members_only and not old.members_only:
            for occupant in list(room.occupants.values()):
                if AFFILIATION_RANK[room.affiliation(occupant.bare)] < AFFILIATION_RANK[MEMBER]:
                    self._remove(room, occupant, (STATUS_MEMBERS_ONLY_KICK,))
        if room.empty and not new.persistent:
            self._forget(room)

    def destroy(
        self,
        room: Room,
        alternate: str | None = None,
        reason: str | None = None,
        password: str | None = None,
    ) -> None:
        """§10.9: every occupant leaves with the <destroy/> (and the alternate
        venue, if any); the room and its stored state are gone."""
        element = Element(user_tag("destroy"))
        if alternate:
            element.set("jid", alternate)
        if reason:
            SubElement(element, user_tag("reason")).text = reason
        if password:
            SubElement(element, user_tag("password")).text = password
        for occupant in list(room.occupants.values()):
            out = presence_stanza(
                room,
                occupant,
                with_jid=False,
                own=True,
                unavailable=True,
                payload=[],
                destroy=element,
                affiliation=NO_AFFILIATION,
            )
            targets = tuple(occupant.targets.items())
            send(self.delivery, out, [t for _, t in targets], occupant_jid(room, occupant.nick))
            for jid, _ in targets:
                rooms = self.by_session.get(jid)
                if rooms is not None:
                    rooms.discard(room.name)
                    if not rooms:
                        del self.by_session[jid]
        room.occupants.clear()
        room.by_jid.clear()
        room.membership_changed()
        room.destroyed = True
        self._forget(room)
        if room.config.persistent or room.db_id is not None:
            self.writer.add(storage.delete_room(room.name))

    # -- roles and affiliations, for muc.admin_lists ----------------------------

    def set_role(
        self, room: Room, occupant: Occupant, role: str, actor: str | None, reason: str | None
    ) -> None:
        if role == NO_ROLE:
            self._remove(room, occupant, (STATUS_KICKED,), actor, reason)  # §8.2
            return
        if occupant.role != role:
            occupant.role = role
            broadcast_presence(self.delivery, room, occupant, actor=actor, reason=reason)

    def set_affiliation(
        self,
        room: Room,
        jid: JID,
        affiliation: str,
        actor: str | None = None,
        reason: str | None = None,
        nick: str | None = None,
    ) -> None:
        if affiliation == NO_AFFILIATION:
            room.affiliations.pop(jid, None)
            room.reserved_nicks.pop(jid, None)
            room.reasons.pop(jid, None)
        else:
            room.affiliations[jid] = affiliation
            if reason:
                room.reasons[jid] = reason
            else:
                room.reasons.pop(jid, None)
            if nick:
                room.reserved_nicks[jid] = nick
        if room.config.persistent:
            self.writer.add(storage.save_affiliation(room, jid))
        for occupant in [o for o in room.occupants.values() if o.bare == jid]:
            if affiliation == OUTCAST:
                self._remove(room, occupant, (STATUS_BANNED,), actor, reason)  # §9.1
            elif room.config.members_only and affiliation == NO_AFFILIATION:
                self._remove(room, occupant, (STATUS_AFFILIATION_KICK,), actor, reason)  # §9.4
            else:
                self._role_after_affiliation(room, occupant, actor, reason)

    def _role_after_affiliation(
        self, room: Room, occupant: Occupant, actor: str | None = None, reason: str | None = None
    ) -> None:
        """§9.3-§10.8: a new affiliation brings its default role; the occupants
        see the new item either way."""
        affiliation = room.affiliation(occupant.bare)
        default = room.default_role(affiliation)
        # Voice already granted in a moderated room stays (§8.3).
        if not (occupant.role == PARTICIPANT and default == VISITOR):
            occupant.role = default
        broadcast_presence(self.delivery, room, occupant, actor=actor, reason=reason)

    # -- Django admin (called from another thread through the loop) -------------

    def destroy_from_admin(self, name: str, reason: str = "") -> None:
        """A server administrator destroyed the room in Django admin."""
        room = self.rooms.get(name)
        if room is not None:
            self.destroy(room, reason=reason or "Destroyed by the server administrator")

    def refresh_from_admin(self, name: str) -> None:
        """The room's row was edited in Django admin: a live room takes the new
        configuration and affiliations (its occupants and history stay)."""
        room = self.rooms.get(name)
        if room is not None and self.router is not None:
            self.router.spawn(self._refresh(room))

    async def _refresh(self, room: Room) -> None:
        fresh = await sync_to_async(storage.load_room)(room.name, self.domain)
        if fresh is None or self.rooms.get(room.name) is not room:
            return
        room.config = fresh.config
        room.resize_history()
        room.affiliations = fresh.affiliations
        room.reserved_nicks = fresh.reserved_nicks
        room.reasons = fresh.reasons
        room.subject = fresh.subject
        room.db_id = fresh.db_id
        for occupant in list(room.occupants.values()):
            if room.affiliation(occupant.bare) == OUTCAST:
                self._remove(room, occupant, (STATUS_BANNED,))
            else:
                self._role_after_affiliation(room, occupant)


def default_history_length() -> int:
    return getattr(settings, "XMPP_MUC_HISTORY_LENGTH", 20)


service = MucService()


def room_nick(session: JID, room: JID) -> str | None:
    """The nick of the session `session` (a full JID) in `room`, for CSI's
    mention test (xmpp/csi.py, plugins.room_nick); None if not an occupant."""
    if room.domain != service.domain:
        return None
    found = service.rooms.get(room.local)
    occupant = found.by_jid.get(session) if found is not None else None
    return occupant.nick if occupant is not None else None
