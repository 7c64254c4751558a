"""Celery tasks of pubsub: the fan-out of one notification (issue 7, item 3).

`fan_out` reads a node's deliverable subscriptions from the database, cuts
them into batches of XMPP_PUBSUB_BATCH recipients (sorted, so a run again
cuts the same batches) and sends each batch to the runxmpp nodes
(pubsub/cluster.py). It is acknowledged late and rejected when its worker
is lost, so a task a worker had taken when it was killed is run again by
another (or the restarted) worker; batches carry a key `<event key>:<n>`
that makes running it again harmless: the worker skips batches Redis marks
as delivered, and a node drops a batch it has seen.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .cluster import send_batches
from .models import Subscription


@shared_task(
    name="pubsub.fan_out",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=None,
)
def fan_out(
    self, node_pks: list[int] | int, key: str, prefix: str, suffix: str, sender: str = ""
) -> int:
    """Deliver one notification to the subscribers of the nodes (a leaf and
    its collection); returns the recipient count."""
    if isinstance(node_pks, int):
        node_pks = [node_pks]
    subscribed = Subscription.objects.filter(
        node_id__in=node_pks, state=Subscription.State.SUBSCRIBED
    )
    # Two queries, no JSON decoded per row (a JSON exclude() misses rows
    # without the key on SQLite): everyone, less those with delivery off.
    quiet = set(subscribed.filter(options__deliver=False).values_list("jid", flat=True))
    recipients = sorted(set(subscribed.values_list("jid", flat=True)) - quiet)
    size = max(1, settings.XMPP_PUBSUB_BATCH)
    send_batches(
        [
            {
                "key": f"{key}:{index // size}",
                "prefix": prefix,
                "suffix": suffix,
                "sender": sender or settings.XMPP_DOMAIN,
                "to": recipients[index : index + size],
            }
            for index in range(0, len(recipients), size)
        ]
    )
    return len(recipients)
