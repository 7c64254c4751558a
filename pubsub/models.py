"""What the pubsub app stores: nodes, items, subscriptions and affiliations
(XEP-0060 §4). A PEP service (XEP-0163) is the same data with the account's
bare JID as `service`; the pubsub.<domain> service has its own domain there.

Rows are the durable copy; the hot path works on the in-memory copy in
pubsub/nodes.py, loaded once per node and written through.
"""

from __future__ import annotations

from django.db import models


class Node(models.Model):
    """A node of a service (XEP-0060 §4.1): a leaf or a collection."""

    class Kind(models.TextChoices):
        LEAF = "leaf"
        COLLECTION = "collection"

    service = models.CharField(max_length=1023, db_index=True)
    name = models.CharField(max_length=1023)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LEAF)
    # The XEP-0060 §16.4.4 pubsub#node_config fields, by var (without the prefix).
    config = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "name"], name="pubsub_node_unique")
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.name}"


class Item(models.Model):
    """A published item (XEP-0060 §7.1); `payload` is its serialised child."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="items")
    item_id = models.CharField(max_length=1023)
    payload = models.TextField(blank=True)
    publisher = models.CharField(max_length=3071, blank=True)
    published = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "item_id"], name="pubsub_item_unique")
        ]
        indexes = [models.Index(fields=["node", "published"])]

    def __str__(self) -> str:
        return f"{self.node} {self.item_id}"


class Subscription(models.Model):
    """A JID's subscription to a node (XEP-0060 §4.2, §6.1)."""

    class State(models.TextChoices):
        SUBSCRIBED = "subscribed"
        PENDING = "pending"  # waiting for an owner's approval (§6.1.2.2)
        UNCONFIGURED = "unconfigured"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="subscriptions")
    jid = models.CharField(max_length=3071)
    subid = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SUBSCRIBED)
    # XEP-0060 §16.4.2 pubsub#subscribe_options, by var (without the prefix).
    options = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "jid"], name="pubsub_subscription_unique")
        ]

    def __str__(self) -> str:
        return f"{self.jid} on {self.node} ({self.state})"


class Affiliation(models.Model):
    """A JID's affiliation with a node (XEP-0060 §4.1, table 1); 'none' is no row."""

    class Kind(models.TextChoices):
        OWNER = "owner"
        PUBLISHER = "publisher"
        PUBLISH_ONLY = "publish-only"
        MEMBER = "member"
        OUTCAST = "outcast"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="affiliations")
    jid = models.CharField(max_length=3071)
    affiliation = models.CharField(max_length=16, choices=Kind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "jid"], name="pubsub_affiliation_unique")
        ]

    def __str__(self) -> str:
        return f"{self.jid} {self.affiliation} of {self.node}"
