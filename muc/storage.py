"""The MUC service and the database: loading a room, writing what persists.

Reads happen once per room, when a stanza first reaches a room that is not
in memory (`load_room`, one thread hop for the room, its affiliations and
its last messages). Writes never hold up a stanza: they go through one
ordered queue (`DatabaseWriter`, a BatchedWriter of xmpp/writer.py) drained
by a task that exists only while there is work; it waits
XMPP_MUC_HISTORY_FLUSH_MS so that history messages pile up (a crash can lose
that much history), then runs everything pending in one thread hop, each run of
consecutive history messages as one bulk_create (XEP-0045 §7.2.15 history
that survives a restart, without a query per message). After a batch, a
room keeps its last muc#maxhistoryfetch messages in the database, or all
of them if it is logged (muc#roomconfig_enablelogging).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from xmpp.protocol.jid import JID, InvalidJID
from xmpp.writer import BatchedWriter

from .models import Room as RoomRow
from .models import RoomAffiliation, RoomMessage
from .rooms import Room, RoomConfig

if TYPE_CHECKING:
    from xmpp.router import Router

log = logging.getLogger(__name__)

MAX_BATCH = 1000


def flush_delay() -> float:
    return getattr(settings, "XMPP_MUC_HISTORY_FLUSH_MS", 200) / 1000.0


# -- reads ----------------------------------------------------------------


def load_room(name: str, service_domain: str) -> Room | None:
    """A persistent room with its affiliations and last messages, or None."""
    row = RoomRow.objects.filter(name=name).first()
    if row is None:
        return None
    room = Room(name, JID(name, service_domain, ""), RoomConfig.from_model(row))
    room.db_id = row.id
    room.subject = row.subject
    room.subject_by = row.subject_by
    for aff in RoomAffiliation.objects.filter(room=row):
        try:
            jid = JID.parse(aff.jid).bare
        except InvalidJID:
            continue
        room.affiliations[jid] = aff.affiliation
        if aff.nick:
            room.reserved_nicks[jid] = aff.nick
        if aff.reason:
            room.reasons[jid] = aff.reason
    if room.config.history_length:
        recent = list(
            RoomMessage.objects.filter(room=row)
            .order_by("-id")
            .values_list("sent", "stanza")[: room.config.history_length]
        )
        for sent, stanza in reversed(recent):
            room.history.append((sent.timestamp(), stanza.encode()))
    return room


def public_rooms() -> list[tuple[str, str]]:
    """(name, title) of the persistent public rooms, for disco#items (§6.3)."""
    return list(RoomRow.objects.filter(public=True).values_list("name", "title"))


def is_server_admin(local: str) -> bool:
    """A staff or superuser account administers every room (§10.9, §5.2)."""
    return (
        get_user_model()
        .objects.filter(username=local, is_active=True)
        .filter(Q(is_staff=True) | Q(is_superuser=True))
        .exists()
    )


def may_create_rooms(local: str) -> bool:
    policy = getattr(settings, "XMPP_MUC_ROOM_CREATION", "anyone")
    if policy == "admins":
        return is_server_admin(local)
    return True


# -- writes ---------------------------------------------------------------


def save_room(room: Room) -> Callable[[], None]:
    """An operation writing the room's row and all its affiliations (a room
    made persistent, or its configuration changed)."""
    name = room.name
    fields = room.config.model_fields()
    subject, subject_by = room.subject, room.subject_by
    affiliations = [
        (str(jid), aff, room.reserved_nicks.get(jid, ""), room.reasons.get(jid, ""))
        for jid, aff in room.affiliations.items()
    ]

    def run() -> None:
        with transaction.atomic():
            row, _ = RoomRow.objects.update_or_create(
                name=name, defaults={**fields, "subject": subject, "subject_by": subject_by}
            )
            RoomAffiliation.objects.filter(room=row).exclude(
                jid__in=[a[0] for a in affiliations]
            ).delete()
            for jid, aff, nick, reason in affiliations:
                RoomAffiliation.objects.update_or_create(
                    room=row, jid=jid, defaults={"affiliation": aff, "nick": nick, "reason": reason}
                )
        room.db_id = row.id

    return run


def save_subject(room: Room) -> Callable[[], None]:
    name, subject, subject_by = room.name, room.subject, room.subject_by

    def run() -> None:
        RoomRow.objects.filter(name=name).update(subject=subject, subject_by=subject_by)

    return run


def save_affiliation(room: Room, jid: JID) -> Callable[[], None]:
    name = room.name
    aff = room.affiliations.get(jid)
    nick = room.reserved_nicks.get(jid, "")
    reason = room.reasons.get(jid, "")

    def run() -> None:
        row = RoomRow.objects.filter(name=name).first()
        if row is None:
            return
        if aff is None:
            RoomAffiliation.objects.filter(room=row, jid=str(jid)).delete()
        else:
            RoomAffiliation.objects.update_or_create(
                room=row,
                jid=str(jid),
                defaults={"affiliation": aff, "nick": nick, "reason": reason},
            )

    return run


def delete_room(name: str) -> Callable[[], None]:
    def run() -> None:
        RoomRow.objects.filter(name=name).delete()

    return run


class HistoryRow:
    __slots__ = ("room", "nick", "sender", "data", "when")

    def __init__(self, room: Room, nick: str, sender: str, data: bytes, when: float) -> None:
        self.room = room
        self.nick = nick
        self.sender = sender
        self.data = data
        self.when = when


class DatabaseWriter:
    """One ordered queue of writes for the whole service: a BatchedWriter
    (xmpp/writer.py) that lets a batch gather for XMPP_MUC_HISTORY_FLUSH_MS.
    A batch is not one transaction (each operation's failure is its own), so
    one that fails as a whole is logged and dropped, never tried again: a
    second attempt could write its history twice."""

    def __init__(self) -> None:
        self.writer: BatchedWriter[Callable[[], None] | HistoryRow] = BatchedWriter(
            "muc", _apply, interval=flush_delay, max_batch=MAX_BATCH
        )
        self.router: Router | None = None  # kept for callers; the writer owns its task

    def add(self, operation: Callable[[], None] | HistoryRow) -> None:
        self.writer.submit(operation)

    async def flush(self) -> None:
        await self.writer.flush()


def _apply(batch: list[Any]) -> None:
    messages: list[RoomMessage] = []
    # Rooms that got history in this batch, and how many messages each keeps.
    written: dict[int, int | None] = {}

    def write_messages() -> None:
        if messages:
            try:
                RoomMessage.objects.bulk_create(messages, batch_size=500)
            except Exception:
                # e.g. a room deleted in Django admin meanwhile: its rows go.
                log.exception("MUC: %d history messages were not written", len(messages))
            messages.clear()

    for operation in batch:
        if isinstance(operation, HistoryRow):
            room = operation.room
            if room.db_id is None or room.destroyed:
                continue
            messages.append(
                RoomMessage(
                    room_id=room.db_id,
                    nick=operation.nick,
                    sender=operation.sender,
                    stanza=operation.data.decode(),
                    sent=datetime.datetime.fromtimestamp(operation.when, datetime.UTC),
                )
            )
            # A logged room (muc#roomconfig_enablelogging) keeps everything.
            written[room.db_id] = None if room.config.enable_logging else room.config.history_length
            continue
        write_messages()
        try:
            operation()
        except Exception:
            log.exception("MUC: a database write failed")
    write_messages()
    for room_id, keep in written.items():
        if keep is not None:
            _prune(room_id, keep)


def _prune(room_id: int, keep: int) -> None:
    """Only the last `keep` messages of a room that is not logged stay: they
    are all a newcomer can get (§7.2.15, muc#maxhistoryfetch)."""
    oldest_kept = (
        RoomMessage.objects.filter(room_id=room_id)
        .order_by("-id")
        .values_list("id", flat=True)[keep : keep + 1]
    )
    cut = list(oldest_kept)
    if cut:
        RoomMessage.objects.filter(room_id=room_id, id__lte=cut[0]).delete()
