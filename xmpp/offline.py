"""Offline messages: storage and delivery (XEP-0160) and flexible retrieval (XEP-0013).

What this module owns. The router gives it a chat or normal message for an
account with no available resource of non-negative priority (RFC 6121
§8.5.2.2.1, through `plugins.offline_handler`). It then

- bounces <service-unavailable/> when the account does not exist (RFC 6121
  §8.5.1) or already holds XMPP_OFFLINE_QUOTA messages (XEP-0160 §2 step 3:
  "the recipient's offline message queue is full"; Prosody's mod_message
  does the same when its offline archive refuses the message);
- drops, silently, a message without a body that carries only chat states
  (XEP-0160 §3 for XEP-0085 content) unless it has the XEP-0334 <store/>
  hint; bounces one with the <no-store/> hint, which may not be kept;
- otherwise keeps it as an OfflineMessage, with a XEP-0203 <delay/> from
  the server's domain stamped with the time it arrived (XEP-0160 §2).

A session's first available presence with a non-negative priority gets the
stored messages, oldest first, and they are deleted (XEP-0160 §2 step 5),
unless the account is reading them with XEP-0013: once a session has asked
about the offline node or sent an <offline/> request, no session of the
account is flooded while it lasts (XEP-0013 §2.2, §2.6), and messages are
only removed on request (§2.5). An account loaded at bind with nothing
stored, and nothing stored or on its way since, skips that read (most
logins: one thread hop fewer).

Writes and deliveries go through one queue per process (OfflineQueue), a
group-commit BatchedWriter (xmpp/writer.py): messages stay in the order they
arrived, a batch of them costs one thread hop and three queries whatever its
size, a crash loses at most the batch committing and the one gathering, and
a login after a store always sees it. None of this runs for a
message to an online user, whose path has no database query.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import Counter
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count

from . import handled
from .models import OfflineMessage
from .orm_thread import orm_thread
from .plugins import IqRequest, plugins
from .prepared import PreparedQuery
from .protocol.errors import StanzaError, StreamError
from .protocol.jid import JID, InvalidJID
from .protocol.parser import StreamParser
from .protocol.xml import NS_CLIENT, NS_STREAMS, serialize, split_tag
from .writer import BatchedWriter

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router
    from .sessions import AccountState

log = logging.getLogger(__name__)

NS_OFFLINE = "http://jabber.org/protocol/offline"
NS_DELAY = "urn:xmpp:delay"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_HINTS = "urn:xmpp:hints"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
MSGOFFLINE = "msgoffline"  # XEP-0160 §4

MESSAGE_TAG = f"{{{NS_CLIENT}}}message"
BODY_TAG = f"{{{NS_CLIENT}}}body"
THREAD_TAG = f"{{{NS_CLIENT}}}thread"
OFFLINE_TAG = f"{{{NS_OFFLINE}}}offline"
ITEM_TAG = f"{{{NS_OFFLINE}}}item"
STORED_TYPES = (None, "normal", "chat")  # XEP-0160 §3

# account.data key: the sessions of the account that chose XEP-0013.
FLEXIBLE_SESSIONS = "offline.flexible_sessions"
# account.data key: False when the account had no stored message at its
# load and none was stored since (deliver_on_initial_presence skips the read).
MAY_HAVE_STORED = "offline.may_have_stored"
MAX_BATCH = 500
# Names per `IN (...)` query; old SQLite builds allow 999 variables.
LOOKUP_CHUNK = 900
STREAM_HEADER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()
# Stored stanzas are our own output, already within XMPP_MAX_STANZA_SIZE
# plus a <delay/>; the parser's limits here only guard against a bad row.
STORED_STANZA_LIMIT = 16 * 1024 * 1024

# XEP-0160 §6 (msgoffline) has no IQ of its own; XEP-0013's namespace comes
# with its handler below.
plugins.server_features.add(MSGOFFLINE)


# -- what is kept (XEP-0160 §3, XEP-0334 §4) ---------------------------------

KEEP, DROP, REFUSE = "keep", "drop", "refuse"


def storage_decision(message: Element) -> str:
    """KEEP the message, DROP it silently, or REFUSE it with an error."""
    if message.find(f"{{{NS_HINTS}}}no-store") is not None:
        return REFUSE
    if message.find(f"{{{NS_HINTS}}}store") is not None:
        return KEEP
    if message.find(BODY_TAG) is not None:
        return KEEP
    chat_state = False
    for child in message:
        ns = split_tag(child.tag)[0]
        if ns == NS_CHATSTATES:
            chat_state = True
        elif ns != NS_HINTS and child.tag != THREAD_TAG:
            return KEEP  # some other content (a receipt, an invitation, ...)
    return DROP if chat_state else KEEP


def delay_element(domain: str, when: datetime.datetime) -> Element:
    """XEP-0203 §4 with a XEP-0082 DateTime in UTC, to the millisecond."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    delay = Element(f"{{{NS_DELAY}}}delay", {"from": domain, "stamp": stamp})
    delay.text = "Offline Storage"
    return delay


# -- the router's offline handler (RFC 6121 §8.5.2.2.1) ------------------------


def store_offline(stanza: Element, to: JID, router: Router) -> None:
    """plugins.offline_handler: keep `stanza` for `to`, or bounce or drop it."""
    if stanza.tag != MESSAGE_TAG or stanza.get("type") not in STORED_TYPES:
        return  # errors, groupchat and headline are never kept (XEP-0160 §3)
    decision = storage_decision(stanza)
    if decision == DROP:
        return
    if decision == REFUSE:
        router.bounce(stanza, StanzaError("service-unavailable"))
        return
    now = datetime.datetime.now(datetime.UTC)
    delay = delay_element(router.domain, now)
    stanza.append(delay)
    text = serialize(stanza).decode()
    stanza.remove(delay)  # the original goes back to its sender if refused
    job = StoreJob(router, stanza, to.local, text, now)
    if handled.collecting_wanted():
        # XEP-0198: the sender's stream acknowledges it once it is committed.
        job.done = asyncio.get_running_loop().create_future()
        handled.wait_for(job.done)
    offline_queue.submit(job, router)


# -- delivery at initial presence (XEP-0160 §2 step 5) ------------------------


async def deliver_on_initial_presence(session: BoundSession) -> None:
    if session.priority < 0:
        return  # XEP-0160 §2 step 5: only non-negative available presence
    if _flexible_sessions(session):
        return  # XEP-0013 §2.2: no flood while the account reads with it
    account = session.account
    if (
        account is not None
        and account.data.get(MAY_HAVE_STORED) is False
        and not offline_queue.storing(session.jid.local)
    ):
        # Nothing was stored when the account was loaded at bind, nothing
        # has been since, and no store is on its way: no read, no thread hop.
        return
    job = DeliverJob(session, asyncio.get_running_loop().create_future())
    offline_queue.submit(job, session.server.router)
    await job.done


# Read once when an account is loaded at bind (in the loaders' one thread
# hop): whether it has any stored message at all, so that the initial
# presence of an account with none (most logins) costs no read of its own.
_ANY_STORED = PreparedQuery(
    lambda user_id: OfflineMessage.objects.filter(user_id=user_id).values_list("id")[:1]
)


@plugins.account_loader
def note_stored_messages(account: AccountState, user_id: int) -> None:
    account.data[MAY_HAVE_STORED] = bool(_ANY_STORED.rows(user_id))


def forget_flexible_session(session: BoundSession) -> None:
    sessions = _flexible_sessions(session)
    if sessions:
        sessions.discard(session)


def _flexible_sessions(session: BoundSession) -> set | None:
    account = session.account
    return account.data.get(FLEXIBLE_SESSIONS) if account is not None else None


def _mark_flexible(session: BoundSession | None) -> None:
    if session is not None and session.account is not None:
        session.account.data.setdefault(FLEXIBLE_SESSIONS, set()).add(session)


plugins.offline_handler = store_offline
plugins.on_initial_presence(deliver_on_initial_presence)
plugins.on_session_closed(forget_flexible_session)


# -- the queue: stores and deliveries, in order --------------------------------


class StoreJob:
    __slots__ = ("router", "stanza", "local", "text", "when", "done", "on_its_way")

    def __init__(
        self, router: Router, stanza: Element, local: str, text: str, when: datetime.datetime
    ) -> None:
        self.router = router
        self.stanza = stanza
        self.local = local
        self.text = text
        self.when = when
        self.done: asyncio.Future | None = None  # set when stored or refused
        self.on_its_way = False  # counted in OfflineQueue.storing

    @staticmethod
    async def run(jobs: list[StoreJob]) -> None:
        """One thread hop: the blocked senders are refused, the rest stored.
        It raises if the transaction failed, which left nothing behind: the
        writer then tries once more, and bounces the batch if that fails too
        (`bounce_unstored`)."""
        entries = [(job.local, job.stanza.get("from", ""), job.text, job.when) for job in jobs]
        outcomes = await orm_thread.call(
            _store_unless_blocked, jobs, entries, settings.XMPP_OFFLINE_QUOTA
        )
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome != STORED:
                # XEP-0191 §3.3 (blocked), RFC 6121 §8.5.1 (no such account),
                # XEP-0160 §2 step 3 (queue full).
                job.router.bounce(job.stanza, StanzaError("service-unavailable"))
            else:
                owner = JID(job.local, job.router.domain, "")
                account = job.router.sessions.account(owner)
                if account is not None:
                    account.data[MAY_HAVE_STORED] = True
                _stored(job, owner)
            job.settled()

    def settled(self) -> None:
        """Stored or refused: no longer on its way (OfflineQueue.storing)."""
        offline_queue.stored_or_refused(self)
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


def _stored(job: StoreJob, owner: JID) -> None:
    """The hooks of a message now kept (push notifications, XEP-0357)."""
    for hook in job.router.registry.offline_stored_hooks:
        try:
            hook(job.stanza, owner, job.router)
        except Exception:
            log.exception("an offline-stored hook failed")


class DeliverJob:
    __slots__ = ("session", "done")

    def __init__(self, session: BoundSession, done: asyncio.Future) -> None:
        self.session = session
        self.done = done

    @staticmethod
    async def run(jobs: list[DeliverJob]) -> None:
        try:
            live = [job for job in jobs if _wants_flood(job.session)]
            if not live:
                return
            stored = await orm_thread.call(_load_rows, {job.session.jid.local for job in live})
            delivered: list[int] = []
            for job in live:
                session = job.session
                if not _wants_flood(session):
                    continue  # gone, or chose XEP-0013, while the rows were read
                delivery = session.server.router.delivery
                for row_id, text in stored.pop(session.jid.local, ()):
                    message = parse_stored(text)
                    if message is not None:
                        delivery.to_session(session, message, before_held=True)
                    delivered.append(row_id)
            if delivered:
                await orm_thread.call(_delete_rows, delivered)
        except Exception:
            # Messages already delivered must not be delivered twice, so this
            # batch is not retried: the messages stay stored for the next login.
            log.exception("could not deliver offline messages")
        finally:
            for job in jobs:
                if not job.done.done():
                    job.done.set_result(None)


STORED, REFUSED = "stored", "refused"


def _store_unless_blocked(
    jobs: list[StoreJob], entries: list[tuple[str, str, str, datetime.datetime]], quota: int
) -> list[str]:
    """For each job: STORED, or REFUSED (blocked sender, no such account, or
    over quota)."""
    refused = {id(job) for job in _blocked_senders(jobs)}
    kept = [entry for job, entry in zip(jobs, entries, strict=True) if id(job) not in refused]
    stored = iter(_store_rows(kept, quota))
    return [
        REFUSED if id(job) in refused else (STORED if next(stored) else REFUSED) for job in jobs
    ]


def _blocked_senders(jobs: list[StoreJob]) -> list[StoreJob]:
    from .blocking import is_blocked_sync

    refused = []
    for job in jobs:
        try:
            sender = JID.parse(job.stanza.get("from", ""))
        except InvalidJID:
            continue
        if is_blocked_sync(JID(job.local, job.router.domain, ""), sender):
            refused.append(job)
    return refused


def _wants_flood(session: BoundSession) -> bool:
    return session.jid is not None and session.available and not _flexible_sessions(session)


async def _run_jobs(batch: list[StoreJob] | list[DeliverJob]) -> None:
    await type(batch[0]).run(batch)


def bounce_unstored(batch: list[StoreJob] | list[DeliverJob], exc: BaseException) -> None:
    """The writer gave up on a batch of stores: their senders learn of it."""
    for job in batch:
        if isinstance(job, StoreJob):
            job.router.bounce(job.stanza, StanzaError("internal-server-error"))
            job.settled()


class OfflineQueue:
    """Stores and deliveries in the order they came, through one group-commit
    writer (xmpp/writer.py): a store is committed in the loop turn after it
    arrives, or with the batch gathering behind the one committing, so a
    crash loses at most those two; and a login after a store always sees it.
    A batch is a run of jobs of one kind."""

    def __init__(self) -> None:
        self.writer: BatchedWriter[StoreJob | DeliverJob] = BatchedWriter(
            "offline",
            _run_jobs,
            on_failure=bounce_unstored,
            retry=True,
            max_batch=MAX_BATCH,
            batch_kind=type,
        )
        self._storing: Counter[str] = Counter()  # StoreJobs submitted, not yet settled

    def submit(self, job: StoreJob | DeliverJob, router: Router | None = None) -> None:
        if isinstance(job, StoreJob):
            self._storing[job.local] += 1
            job.on_its_way = True
        self.writer.submit(job)

    def storing(self, local: str) -> bool:
        """Whether a message for `local` is on its way to storage."""
        return self._storing.get(local, 0) > 0

    def stored_or_refused(self, job: StoreJob) -> None:
        if job.on_its_way:
            job.on_its_way = False
            left = self._storing[job.local] - 1
            if left > 0:
                self._storing[job.local] = left
            else:
                del self._storing[job.local]

    async def flush(self) -> None:
        await self.writer.flush()


offline_queue = OfflineQueue()


# -- the database, called through orm_thread or sync_to_async -------------------


def _store_rows(entries: list[tuple[str, str, str, datetime.datetime]], quota: int) -> list[bool]:
    """Store what fits; for each entry, whether it was stored."""
    names = sorted({local for local, _, _, _ in entries})
    users: dict[str, int] = {}
    counts: dict[int, int] = {}
    User = get_user_model()
    with transaction.atomic():
        for start in range(0, len(names), LOOKUP_CHUNK):
            chunk = names[start : start + LOOKUP_CHUNK]
            users.update(
                User.objects.filter(username__in=chunk, is_active=True).values_list(
                    "username", "id"
                )
            )
        ids = list(users.values())
        for start in range(0, len(ids), LOOKUP_CHUNK):
            counts.update(
                OfflineMessage.objects.filter(user_id__in=ids[start : start + LOOKUP_CHUNK])
                .values("user_id")
                .annotate(n=Count("id"))
                .values_list("user_id", "n")
            )
        rows, stored = [], []
        for local, sender, text, when in entries:
            user_id = users.get(local)
            if user_id is None or counts.get(user_id, 0) >= quota:
                stored.append(False)
                continue
            counts[user_id] = counts.get(user_id, 0) + 1
            rows.append(OfflineMessage(user_id=user_id, sender=sender, stanza=text, created=when))
            stored.append(True)
        OfflineMessage.objects.bulk_create(rows)
    return stored


# Read at every initial presence (xmpp/prepared.py): one account's messages,
# oldest first. One statement per account of a batch rather than one IN
# query for all: a batch is a handful of logins, and compiling a new IN
# query each time cost more than the reads.
_ACCOUNT_MESSAGES = PreparedQuery(
    lambda username: (
        OfflineMessage.objects.filter(user__username=username)
        .order_by("id")
        .values_list("id", "stanza")
    )
)


def _load_rows(names: set[str]) -> dict[str, list[tuple[int, str]]]:
    """The stored messages of these accounts, oldest first, by account name."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        rows = _ACCOUNT_MESSAGES.rows(name)
        if rows:
            found[name] = rows
    return found


def _delete_rows(ids: list[int]) -> None:
    for start in range(0, len(ids), LOOKUP_CHUNK):
        OfflineMessage.objects.filter(id__in=ids[start : start + LOOKUP_CHUNK]).delete()


def parse_stored(text: str) -> Element | None:
    """A stored stanza back as an element (it was serialised in jabber:client)."""
    parser = StreamParser(STORED_STANZA_LIMIT)
    try:
        parser.feed(STREAM_HEADER)
        events = parser.feed(text.encode())
    except StreamError:
        log.error("an offline message could not be parsed; it is dropped")
        return None
    return events[0] if events and isinstance(events[0], Element) else None


# -- XEP-0013: flexible offline message retrieval --------------------------------


def _own_account(request: IqRequest) -> None:
    # XEP-0013 §2.3-§2.7: only the user's own resources may look.
    if request.sender.bare != request.to:
        raise StanzaError("forbidden")
    _mark_flexible(request.session)


def _node_id(node: str | None) -> int:
    try:
        return int(node or "")
    except ValueError:
        raise StanzaError("item-not-found") from None


def _target_session(request: IqRequest) -> BoundSession | None:
    return request.session or request.router.sessions.get(request.sender)


def _send_marked(session: BoundSession | None, rows: list[tuple[int, str]]) -> None:
    """§2.4, §2.6: each message carries its node in <offline><item node=''/>."""
    if session is None:
        return
    for row_id, text in rows:
        message = parse_stored(text)
        if message is None:
            continue
        offline = SubElement(message, OFFLINE_TAG)
        SubElement(offline, ITEM_TAG, {"node": str(row_id)})
        session.server.router.delivery.to_session(session, message)


@plugins.iq(
    OFFLINE_TAG,
    types=("get", "set"),
    scopes=("account",),
    feature=NS_OFFLINE,
    advertised_on=("server",),
)
async def flexible_offline(request: IqRequest) -> None:
    """XEP-0013 §2.4-§2.7: view and fetch (get), remove and purge (set).

    slixmpp sends <fetch/> in a set, so fetch is accepted in either."""
    _own_account(request)
    payload = request.payload
    local = request.to.local
    is_get = request.type == "get"
    fetch = payload.find(f"{{{NS_OFFLINE}}}fetch") is not None
    purge = payload.find(f"{{{NS_OFFLINE}}}purge") is not None
    items = payload.findall(ITEM_TAG)
    if not (fetch or purge or items) or (purge and is_get):
        raise StanzaError("bad-request", "expected <fetch/>, <purge/> or <item/>")
    wanted = "view" if is_get else "remove"
    if any(item.get("action") != wanted for item in items):
        raise StanzaError("bad-request", f"an IQ {request.type} takes <item action='{wanted}'/>")
    ids = [_node_id(item.get("node")) for item in items]
    if fetch:
        _send_marked(_target_session(request), await sync_to_async(_account_rows)(local))
    if items and is_get:
        _send_marked(_target_session(request), await sync_to_async(_account_rows)(local, ids))
    if items and not is_get:
        await sync_to_async(_remove_rows)(local, ids)
    if purge:
        await sync_to_async(_remove_rows)(local, None)
    return None


def _account_rows(local: str, ids: list[int] | None = None) -> list[tuple[int, str]]:
    """An account's messages, oldest first: all, or those `ids` (all must exist)."""
    rows = OfflineMessage.objects.filter(user__username=local).order_by("id")
    if ids is not None:
        rows = rows.filter(id__in=ids)
    found = list(rows.values_list("id", "stanza"))
    if ids is not None and len(found) != len(set(ids)):
        raise StanzaError("item-not-found")  # XEP-0013 §2.4
    return found


def _remove_rows(local: str, ids: list[int] | None) -> None:
    rows = OfflineMessage.objects.filter(user__username=local)
    if ids is None:
        rows.delete()  # §2.7 purge
        return
    with transaction.atomic():
        rows = rows.filter(id__in=ids)
        if rows.count() != len(set(ids)):
            raise StanzaError("item-not-found")  # §2.5
        rows.delete()


# XEP-0013 §2.2 and §2.3 are disco requests to the node NS_OFFLINE of the
# account. The core's disco handlers (xmpp/features.py) answer only the
# account itself, with no nodes, so these two wait for a node hook there.


async def offline_node_info(request: IqRequest) -> Element:
    """§2.2: the node's identity, feature and number of messages (XEP-0128)."""
    _own_account(request)
    count = await OfflineMessage.objects.filter(user__username=request.to.local).acount()
    query = Element(f"{{{NS_DISCO_INFO}}}query", {"node": NS_OFFLINE})
    SubElement(
        query, f"{{{NS_DISCO_INFO}}}identity", {"category": "automation", "type": "message-list"}
    )
    SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": NS_OFFLINE})
    form = SubElement(query, f"{{{NS_DATA}}}x", {"type": "result"})
    form_type = SubElement(form, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(form_type, f"{{{NS_DATA}}}value").text = NS_OFFLINE
    number = SubElement(form, f"{{{NS_DATA}}}field", {"var": "number_of_messages"})
    SubElement(number, f"{{{NS_DATA}}}value").text = str(count)
    return query


async def offline_node_items(request: IqRequest) -> Element:
    """§2.3: one item per message: the node to view or remove it by, and
    its sender's full JID as the name."""
    _own_account(request)
    headers = (
        OfflineMessage.objects.filter(user__username=request.to.local)
        .order_by("id")
        .values_list("id", "sender")
    )
    query = Element(f"{{{NS_DISCO_ITEMS}}}query", {"node": NS_OFFLINE})
    owner = str(request.to)
    async for row_id, sender in headers:
        SubElement(
            query,
            f"{{{NS_DISCO_ITEMS}}}item",
            {"jid": owner, "node": str(row_id), "name": sender},
        )
    return query


plugins.account_disco_node(NS_OFFLINE, info=offline_node_info, items=offline_node_items)
