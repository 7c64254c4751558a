"""Pubsub state in memory, and its write-through to the database.

A service (pubsub.<domain>, or an account's PEP service, XEP-0163 §4) is
loaded whole the first time it is touched: its nodes' configuration,
affiliations, subscriptions and items (at most max_items of each node are
kept, so this is bounded) in one worker-thread hand-off, and then kept in
memory. Reads (retrieving items, computing recipients, sending the last
item) never touch the database. Every change is written through by one
ordered writer (`Writer`), which runs queued changes in batches in one
thread hand-off.

A published item is written behind (`Writer.submit`): it is in memory
before the IQ result and the notifications go out, so an items request
right after it is answered with it (from memory), and its row and the
max_items trim it causes follow in a batch gathered for
XMPP_PUBSUB_ITEMS_FLUSH_MS: one upsert for the batch and one delete per
node, a thread hand-off for a hundred publishes instead of one for a few.
A crash (kill -9) can lose the items of that interval and of the batch
committing; a clean stop commits them (XmppServer.stop() flushes every
writer). Every other change (create, configure, delete, purge, retract,
subscriptions, affiliations) is answered once committed (`Writer.run`, which
ends the gathering), so what a client was told of those survives a
restart (issue 7, item 4).

Item expiry (XEP-0060 §16.4.4 pubsub#item_expire) is enforced when items
are read and by a periodic sweep (`expire_items`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from asgiref.sync import sync_to_async
from defusedxml.ElementTree import fromstring
from django.conf import settings
from django.db import transaction

from xmpp.protocol.xml import serialize
from xmpp.writer import BatchedWriter

from .forms import MAX
from .models import Affiliation, Item, Node, Subscription

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StoredItem:
    item_id: str
    payload: Element | None
    payload_xml: str  # serialised once, with its own xmlns: pasted into notifications
    publisher: str
    published: float  # epoch seconds


SUBSCRIBED = Subscription.State.SUBSCRIBED  # read per subscriber per publish: no class lookups


@dataclass(slots=True)
class Sub:
    jid: str
    subid: str
    state: str = SUBSCRIBED
    options: dict = field(default_factory=dict)

    @property
    def delivers(self) -> bool:
        return self.state == SUBSCRIBED and self.options.get("deliver", True)


class NodeState:
    __slots__ = ("pk", "service", "name", "kind", "config", "affiliations", "subs", "items")

    def __init__(self, pk: int, service: str, name: str, kind: str, config: dict) -> None:
        self.pk = pk
        self.service = service
        self.name = name
        self.kind = kind
        self.config = config
        self.affiliations: dict[str, str] = {}  # bare JID -> affiliation (no 'none')
        self.subs: dict[str, Sub] = {}  # subscriber JID (bare or full) -> subscription
        self.items: OrderedDict[str, StoredItem] = OrderedDict()  # oldest first

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")

    def owners(self) -> list[str]:
        return [jid for jid, aff in self.affiliations.items() if aff == "owner"]

    def max_items(self) -> int:
        value = self.config.get("max_items", 1)
        limit = settings.XMPP_PUBSUB_MAX_ITEMS
        return limit if value == MAX else min(int(value), limit)

    @property
    def persistent(self) -> bool:
        return bool(self.config.get("persist_items", True))

    def live_items(self) -> list[StoredItem]:
        """The items, oldest first, without those past pubsub#item_expire."""
        expire = self.config.get("item_expire") or 0
        if expire:
            horizon = time.time() - expire
            while self.items:
                first = next(iter(self.items.values()))
                if first.published >= horizon:
                    break
                self.items.popitem(last=False)
        return list(self.items.values())

    def last_item(self) -> StoredItem | None:
        items = self.live_items()
        return items[-1] if items else None


class ServiceState:
    """The nodes of one service, by name."""

    __slots__ = ("jid", "pep", "nodes")

    def __init__(self, jid: str, pep: bool) -> None:
        self.jid = jid
        self.pep = pep
        self.nodes: dict[str, NodeState] = {}


def default_config(pep: bool) -> dict:
    """XEP-0060 §8.3 default node configuration; for PEP, XEP-0163 §4.3's
    (presence access, one item, the last item sent on presence)."""
    config = {
        "title": "",
        "type": "",
        "node_type": "leaf",
        "max_items": settings.XMPP_PUBSUB_DEFAULT_MAX_ITEMS,
        "persist_items": True,
        "item_expire": 0,
        "access_model": "open",
        "roster_groups_allowed": [],
        "publish_model": "publishers",
        "deliver_notifications": True,
        "deliver_payloads": True,
        "notify_config": False,
        "notify_delete": True,
        "notify_retract": True,
        "send_last_published_item": "on_sub",
        "notification_type": "headline",
    }
    if pep:
        config.update(
            max_items=1,
            access_model="presence",
            send_last_published_item="on_sub_and_presence",
        )
    return config


def make_item(item_id: str, payload: Element | None, publisher: str, published: float):
    xml = serialize(payload, "").decode() if payload is not None else ""
    return StoredItem(item_id, payload, xml, publisher, published)


def new_item_id() -> str:
    return uuid.uuid4().hex


# -- the cache ---------------------------------------------------------------


class Store:
    """Every service this process has loaded, and the one writer."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceState] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self.writer = Writer()

    async def service(self, jid: str, pep: bool) -> ServiceState:
        found = self.services.get(jid)
        if found is not None:
            return found
        states = await self.services_of([jid], pep)
        return states[0]

    async def services_of(self, jids: list[str], pep: bool) -> list[ServiceState]:
        """The services at `jids`, loading those not in memory in one hand-off."""
        missing = [j for j in jids if j not in self.services and j not in self._loading]
        if missing:
            future = asyncio.get_running_loop().create_future()
            for jid in missing:
                self._loading[jid] = future
            try:
                loaded = await sync_to_async(load_services)(missing, pep)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters see it through their own await
                raise
            finally:
                for jid in missing:
                    self._loading.pop(jid, None)
            for state in loaded:
                # A write queued while loading is already in the rows read.
                self.services.setdefault(state.jid, state)
            future.set_result(None)
        for jid in jids:
            waiting = self._loading.get(jid)
            if waiting is not None:
                await waiting
        return [self.services[j] for j in jids]


def load_services(jids: list[str], pep: bool) -> list[ServiceState]:
    """Read the services at `jids` (sync, in a worker thread): three queries."""
    states = {jid: ServiceState(jid, pep) for jid in jids}
    by_pk: dict[int, NodeState] = {}
    for row in Node.objects.filter(service__in=jids).order_by("pk"):
        config = {**default_config(pep), **row.config}
        node = NodeState(row.pk, row.service, row.name, row.kind, config)
        states[row.service].nodes[row.name] = node
        by_pk[node.pk] = node
    if not by_pk:
        return list(states.values())
    for node_id, jid, aff in Affiliation.objects.filter(node_id__in=by_pk).values_list(
        "node_id", "jid", "affiliation"
    ):
        by_pk[node_id].affiliations[jid] = aff
    for node_id, jid, subid, state, options in Subscription.objects.filter(
        node_id__in=by_pk
    ).values_list("node_id", "jid", "subid", "state", "options"):
        by_pk[node_id].subs[jid] = Sub(jid, subid, state, options or {})
    expired: list[int] = []
    row_of: dict[tuple[int, str], int] = {}
    now = time.time()
    for pk, node_id, item_id, payload, publisher, published in (
        Item.objects.filter(node_id__in=by_pk)
        .order_by("published", "pk")
        .values_list("pk", "node_id", "item_id", "payload", "publisher", "published")
    ):
        node = by_pk[node_id]
        stamp = published.timestamp()
        expire = node.config.get("item_expire") or 0
        if expire and stamp < now - expire:
            expired.append(pk)
            continue
        element = fromstring(payload) if payload else None
        node.items[item_id] = StoredItem(item_id, element, payload, publisher, stamp)
        row_of[(node_id, item_id)] = pk
    # Rows past max_items (XMPP_PUBSUB_MAX_ITEMS lowered, or left by an older
    # server's trim) go now, as the node's next publish would drop them.
    for node in by_pk.values():
        while len(node.items) > node.max_items():
            item_id, _ = node.items.popitem(last=False)
            expired.append(row_of[(node.pk, item_id)])
    if expired:
        Item.objects.filter(pk__in=expired).delete()
    return list(states.values())


# -- writes ------------------------------------------------------------------


def items_flush_delay() -> float:
    return settings.XMPP_PUBSUB_ITEMS_FLUSH_MS / 1000.0


Change = tuple[Callable, tuple, asyncio.Future | None]  # fn, args, who waits


class Writer:
    """Runs queued database changes in order, in batches, in one thread hand-off
    per batch: `await writer.run(fn, *args)` returns fn's result once
    committed; `writer.submit(fn, *args)` queues a change nobody waits for.

    A BatchedWriter (xmpp/writer.py) whose batches gather for
    XMPP_PUBSUB_ITEMS_FLUSH_MS unless a change someone waits for is queued
    (`at_once`): that one commits as a group commit. `_run_batch` already gives
    each change its own outcome; a batch that fails as a whole (no database)
    fails every waiting change, and is not tried again: its clients get an
    error and may retry themselves. A change nobody waits for that fails is
    logged (by `_run_batch`, or by the BatchedWriter for a whole batch)."""

    def __init__(self) -> None:
        self.writer: BatchedWriter[Change] = BatchedWriter(
            "pubsub",
            _commit_changes,
            committed=_answer_changes,
            on_failure=_fail_changes,
            interval=items_flush_delay,
        )

    def run(self, fn: Callable, *args) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.writer.submit((fn, args, future), at_once=True)
        return future

    def submit(self, fn: Callable, *args) -> None:
        self.writer.submit((fn, args, None))

    async def flush(self) -> None:
        await self.writer.flush()


def _commit_changes(batch: list[Change]) -> list:
    return _run_batch([(fn, args) for fn, args, _ in batch])


def _answer_changes(batch: list[Change], results: list) -> None:
    for (_, _, future), (ok, value) in zip(batch, results, strict=True):
        if future is None or future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _fail_changes(batch: list[Change], exc: BaseException) -> None:
    _answer_changes(batch, [(False, exc)] * len(batch))


def _run_batch(batch: list[tuple[Callable, tuple]]) -> list[tuple[bool, object]]:
    """The batch in one transaction, consecutive publishes as one upsert and
    one delete: a thread that must take the GIL back from a busy event loop
    for every statement pays for each one (sys.getswitchinterval())."""
    try:
        with transaction.atomic():
            return _run_grouped(batch)
    except Exception:
        pass
    # Something failed: each change on its own, so that one spoils only itself.
    results: list[tuple[bool, object]] = []
    for fn, args in batch:
        try:
            with transaction.atomic():
                results.append((True, fn(*args)))
        except Exception as exc:
            log.exception("pubsub write %s failed", getattr(fn, "__name__", fn))
            results.append((False, exc))
    return results


def _run_grouped(batch: list[tuple[Callable, tuple]]) -> list[tuple[bool, object]]:
    results: list[tuple[bool, object]] = []
    index = 0
    while index < len(batch):
        fn, args = batch[index]
        if fn is db_publish:
            end = index
            while end < len(batch) and batch[end][0] is db_publish:
                end += 1
            db_publish_many([a for _, a in batch[index:end]])
            results.extend((True, None) for _ in range(index, end))
            index = end
            continue
        results.append((True, fn(*args)))
        index += 1
    return results


def _stamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def db_create_node(node: NodeState, owner: str) -> int:
    row = Node.objects.create(
        service=node.service, name=node.name, kind=node.kind, config=dict(node.config)
    )
    node.pk = row.pk  # read by the writes queued behind this one
    if owner:
        Affiliation.objects.create(node=row, jid=owner, affiliation="owner")
    return row.pk


def db_configure(node: NodeState, config: dict, keep: int) -> None:
    Node.objects.filter(pk=node.pk).update(config=config)
    db_trim(node, keep)


def db_trim(node: NodeState, keep: int) -> None:
    """Keep the `keep` newest items of a node (pubsub#max_items)."""
    stale = Item.objects.filter(node_id=node.pk).order_by("-published", "-pk")[keep:]
    ids = list(stale.values_list("pk", flat=True))
    if ids:
        Item.objects.filter(pk__in=ids).delete()


def db_delete_node(node: NodeState) -> None:
    Node.objects.filter(pk=node.pk).delete()


def db_purge(node: NodeState) -> None:
    Item.objects.filter(node_id=node.pk).delete()


def db_publish(node: NodeState, item: StoredItem, evicted: list[str]) -> None:
    db_publish_many([(node, item, evicted)])


def db_publish_many(publishes: list[tuple[NodeState, StoredItem, list[str]]]) -> None:
    """Store published items and drop the items they pushed out of their
    nodes (max_items), as memory did, in order: one upsert for the batch
    (the last publish of an id wins) and one delete per node. An item
    published and pushed out within the batch is not written at all."""
    rows: dict[tuple[int, str], Item] = {}
    evicted: dict[int, set[str]] = {}
    for node, item, pushed_out in publishes:
        key = (node.pk, item.item_id)
        rows.pop(key, None)  # published again: it moves to the newest end
        rows[key] = Item(
            node_id=node.pk,
            item_id=item.item_id,
            payload=item.payload_xml,
            publisher=item.publisher,
            published=_stamp(item.published),
        )
        gone = evicted.setdefault(node.pk, set())
        gone.discard(item.item_id)
        for item_id in pushed_out:
            rows.pop((node.pk, item_id), None)
            gone.add(item_id)
    if rows:
        Item.objects.bulk_create(
            list(rows.values()),
            update_conflicts=True,
            unique_fields=["node", "item_id"],
            update_fields=["payload", "publisher", "published"],
        )
    for pk, item_ids in evicted.items():
        if item_ids:
            Item.objects.filter(node_id=pk, item_id__in=item_ids).delete()


def db_retract(node: NodeState, item_ids: list[str]) -> None:
    Item.objects.filter(node_id=node.pk, item_id__in=item_ids).delete()


def db_subscribe(node: NodeState, sub: Sub) -> None:
    Subscription.objects.update_or_create(
        node_id=node.pk,
        jid=sub.jid,
        defaults={"subid": sub.subid, "state": sub.state, "options": sub.options},
    )


def db_unsubscribe(node: NodeState, jid: str) -> None:
    Subscription.objects.filter(node_id=node.pk, jid=jid).delete()


def db_affiliate(node: NodeState, jid: str, affiliation: str) -> None:
    if affiliation == "none":
        Affiliation.objects.filter(node_id=node.pk, jid=jid).delete()
    else:
        Affiliation.objects.update_or_create(
            node_id=node.pk, jid=jid, defaults={"affiliation": affiliation}
        )


def db_expire(node_horizons: list[tuple[NodeState, float]]) -> None:
    for node, horizon in node_horizons:
        Item.objects.filter(node_id=node.pk, published__lt=_stamp(horizon)).delete()


store = Store()


async def expire_items() -> None:
    """Drop expired items of loaded nodes, in memory and in the database."""
    now = time.time()
    horizons = []
    for service in list(store.services.values()):
        for node in service.nodes.values():
            expire = node.config.get("item_expire") or 0
            if expire:
                node.live_items()
                horizons.append((node, now - expire))
    if horizons:
        await store.writer.run(db_expire, horizons)
