"""Event notifications (XEP-0060 §7.1.2, §7.2.2, §8.2.5, §8.4.2, §8.5.2) and
their fan-out to subscribers' sessions.

A notification is serialised once: the <message/> up to its 'to' value and
the rest (`Notification.prefix`/`suffix`), so each recipient costs a byte
concatenation and a write into its session, never a tree walk.

Fan-out (issue 7, item 3): up to XMPP_PUBSUB_INLINE_FANOUT recipients are
delivered inline, from memory, on the event loop. A larger fan-out of a
service node goes to the Celery task `pubsub.tasks.fan_out`, which reads the
recipients from the database and hands batches of them to the runxmpp
nodes over the channel layer (pubsub/cluster.py). The task is submitted
from one dedicated thread, so the loop never waits: on embedded defaults
(task_always_eager) the task itself runs in that thread and gives its
batches back to the loop with call_soon_threadsafe; with REDIS_URL,
submitting is one broker write and a `celery -A imserver worker` runs it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.conf import settings

from xmpp.protocol.jid import JID
from xmpp.protocol.xml import escape_attr

if TYPE_CHECKING:
    from xmpp.router import Router

    from .nodes import NodeState, StoredItem

log = logging.getLogger(__name__)

NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_DELAY = "urn:xmpp:delay"


@dataclass(slots=True)
class Notification:
    key: str  # unique per event: the idempotency key of its deliveries
    prefix: bytes
    suffix: bytes

    def to(self, recipient: str) -> bytes:
        return self.prefix + _to_value(recipient) + self.suffix


@functools.lru_cache(maxsize=65536)
def _to_value(recipient: str) -> bytes:
    """A recipient's escaped 'to' value: the same subscribers hear every publish."""
    return escape_attr(recipient).encode()


def notification(
    sender: str, event_xml: str, message_type: str = "headline", extra: str = ""
) -> Notification:
    """<message from=sender type=... id=...><event>event_xml</event>extra</message>."""
    key = secrets.token_hex(8)
    kind = f' type="{message_type}"' if message_type and message_type != "normal" else ""
    prefix = f'<message from="{escape_attr(sender)}"{kind} id="{key}" to="'
    suffix = f'"><event xmlns="{NS_EVENT}">{event_xml}</event>{extra}</message>'
    return Notification(key, prefix.encode(), suffix.encode())


def items_event(node: str, items: Iterable[StoredItem], payloads: bool) -> str:
    """§7.1.2.1 (with payloads) / §7.1.2.2 (without)."""
    parts = [f'<items node="{escape_attr(node)}">']
    for item in items:
        if payloads and item.payload_xml:
            parts.append(f'<item id="{escape_attr(item.item_id)}">{item.payload_xml}</item>')
        else:
            parts.append(f'<item id="{escape_attr(item.item_id)}"/>')
    parts.append("</items>")
    return "".join(parts)


def delay_of(item: StoredItem) -> str:
    """A last item sent later carries its publication time (XEP-0203), as
    XEP-0060 §6.1.7 suggests."""
    stamp = datetime.fromtimestamp(item.published, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f'<delay xmlns="{NS_DELAY}" stamp="{stamp[:-3]}Z"/>'


def retract_event(node: str, item_ids: Iterable[str]) -> str:
    """§7.2.2.1."""
    retracts = "".join(f'<retract id="{escape_attr(i)}"/>' for i in item_ids)
    return f'<items node="{escape_attr(node)}">{retracts}</items>'


def node_event(kind: str, node: str, inner: str = "") -> str:
    """<purge/> (§8.5.2), <delete/> (§8.4.2), <configuration/> (§8.2.5.1)."""
    if inner:
        return f'<{kind} node="{escape_attr(node)}">{inner}</{kind}>'
    return f'<{kind} node="{escape_attr(node)}"/>'


def subscription_event(node: str, jid: str, state: str) -> str:
    """§8.6 / §8.8.4: the subscriber learns of a change to its subscription."""
    return (
        f'<subscription node="{escape_attr(node)}" jid="{escape_attr(jid)}" '
        f'subscription="{escape_attr(state)}"/>'
    )


def deliver_local(router: Router, recipients: Iterable[str], note: Notification, sender: JID):
    """Write `note` into the sessions of `recipients` in this process, through
    the delivery service: a full JID's session, or a bare JID's available
    resources of non-negative priority (RFC 6121 §8.5.2.1.1, the headline
    rule), unless a block list refuses it. Returns how many stanzas were
    written."""
    return router.delivery.to_addresses(recipients, note.to, sender)


def fan_out(
    router: Router,
    node: NodeState,
    note: Notification,
    sender: JID,
    parent: NodeState | None = None,
) -> None:
    """Notify the node's subscribers, and those of its collection (XEP-0248
    §6.1, one level): inline when few, else through Celery."""
    nodes = [node] if parent is None else [node, parent]
    if parent is None:
        # node.subs holds one subscription per JID: nothing to deduplicate.
        recipients = [sub.jid for sub in node.subs.values() if sub.delivers]
    else:
        recipients = list(
            dict.fromkeys(s.jid for n in nodes for s in n.subs.values() if s.delivers)
        )
    if not recipients:
        return
    if len(recipients) <= settings.XMPP_PUBSUB_INLINE_FANOUT:
        deliver_local(router, recipients, note, sender)
        return
    submit([n.pk for n in nodes], note, str(sender))


_submitter: ThreadPoolExecutor | None = None


def submit(node_pks: list[int], note: Notification, sender: str) -> None:
    """Hand the fan-out to Celery from the submitting thread (see the module doc)."""
    global _submitter
    if _submitter is None:
        _submitter = ThreadPoolExecutor(1, thread_name_prefix="pubsub-fanout")
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        _submitter,
        _submit,
        node_pks,
        note.key,
        note.prefix.decode(),
        note.suffix.decode(),
        sender,
    )
    future.add_done_callback(_log_failure)


def _submit(node_pks: list[int], key: str, prefix: str, suffix: str, sender: str) -> None:
    from .tasks import fan_out as fan_out_task

    fan_out_task.apply_async(args=[node_pks, key, prefix, suffix, sender])


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("pubsub fan-out failed", exc_info=future.exception())
