"""How a fan-out computed outside the event loop reaches the sessions.

Each runxmpp process has a channel of its own on the channel layer
(`xmpp-node.<host>-<pid>-<random>`), listed in Redis in the set
`imserver:<domain>:xmpp-nodes` with a heartbeat key that expires when the
process dies. The Celery task (pubsub/tasks.py) sends each batch of
recipients to every live node's channel with `channel_layer.send`; each
node writes the notification into those recipients' sessions that it has
(`deliver_batch`), and drops a batch it already delivered (a task run
again after a worker was lost sends its batches again).

On embedded defaults (task_always_eager, in-memory channel layer) there is
no other process: the task runs in the submitting thread of this process
and its batches come back to the loop with call_soon_threadsafe.

This is the minimum of the cluster path of docs/architecture.md: stanzas
to one JID are not yet routed to the node that holds it, every live node
gets the batch and delivers what it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING

from django.conf import settings

from xmpp.protocol.jid import JID

from .notify import Notification, deliver_local

if TYPE_CHECKING:
    from xmpp.server import XmppServer

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
DELIVERED_TTL = 24 * 3600  # seconds a batch's delivered mark is kept in Redis
RECENT_KEYS = 100_000  # batches a node remembers having delivered

# The loop and server of this process, for the eager path.
_local: tuple[asyncio.AbstractEventLoop, XmppServer] | None = None
_recent: OrderedDict[str, None] = OrderedDict()


def nodes_key() -> str:
    return f"imserver:{settings.XMPP_DOMAIN}:xmpp-nodes"


def heartbeat_key(channel: str) -> str:
    return f"imserver:{settings.XMPP_DOMAIN}:alive:{channel}"


def uses_channel_layer() -> bool:
    return not settings.CELERY_TASK_ALWAYS_EAGER and bool(settings.REDIS_URL)


def deliver_batch(server: XmppServer, message: dict) -> None:
    """A batch from the task: {"key", "prefix", "suffix", "sender", "to": [jid...]}."""
    key = message["key"]
    if key in _recent:
        return
    _recent[key] = None
    if len(_recent) > RECENT_KEYS:
        _recent.popitem(last=False)
    note = Notification(key, _bytes(message["prefix"]), _bytes(message["suffix"]))
    deliver_local(server.router, message["to"], note, JID.parse(message["sender"]))


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# -- the side of the task (a Celery worker, or the eager thread) --------------


_redis = None


def redis_client():
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


def send_batches(messages: list[dict]) -> None:
    """Deliver batches to every node, at least once; see the module doc."""
    if not uses_channel_layer():
        if _local is None:
            log.warning("pubsub: no server in this process to deliver %d batches", len(messages))
            return
        loop, server = _local
        for message in messages:
            loop.call_soon_threadsafe(deliver_batch, server, message)
        return
    client = redis_client()
    keys = [f"imserver:pubsub:delivered:{m['key']}" for m in messages]
    done = client.mget(keys) if keys else []
    pending = [(m, k) for m, k, d in zip(messages, keys, done, strict=True) if d is None]
    if not pending:
        return  # delivered by an earlier run of the same task
    _worker_loop().run_until_complete(_send_all(live_nodes(client), [m for m, _ in pending]))
    with client.pipeline(transaction=False) as pipe:
        for _, key in pending:
            pipe.set(key, 1, ex=DELIVERED_TTL)
        pipe.execute()


_loop: tuple[int, asyncio.AbstractEventLoop] | None = None


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker process, kept: channels_redis keeps its
    connections per loop, and async_to_sync would start a thread a call."""
    global _loop
    if _loop is None or _loop[0] != os.getpid():
        _loop = (os.getpid(), asyncio.new_event_loop())
    return _loop[1]


async def _send_all(channels: list[str], messages: list[dict]) -> None:
    """One event loop (and one Redis connection pool) for a whole task."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    for message in messages:
        for channel in channels:
            await layer.send(channel, {"type": "pubsub.deliver", **message})


def live_nodes(client) -> list[str]:
    nodes = [n.decode() for n in client.smembers(nodes_key())]
    alive = []
    for channel in nodes:
        if client.exists(heartbeat_key(channel)):
            alive.append(channel)
        else:
            client.srem(nodes_key(), channel)
    return alive


# -- the side of the runxmpp process -----------------------------------------


async def start(server: XmppServer):
    """Make this process reachable by the fan-out task; returns the stopper."""
    global _local
    _local = (asyncio.get_running_loop(), server)
    tasks: list[asyncio.Task] = []
    channel = ""
    if uses_channel_layer():
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = f"xmpp-node.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        client = redis_client()
        await asyncio.to_thread(_register, client, channel)
        tasks.append(asyncio.create_task(_receive(layer, channel, server)))
        tasks.append(asyncio.create_task(_heartbeat(client, channel)))
        log.info("pubsub fan-out reaches this process on channel %s", channel)

    async def stop() -> None:
        global _local
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if channel:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(_unregister, redis_client(), channel)
        _local = None

    return stop


def _register(client, channel: str) -> None:
    client.set(heartbeat_key(channel), 1, ex=HEARTBEAT_SECONDS * 3)
    client.sadd(nodes_key(), channel)


def _unregister(client, channel: str) -> None:
    client.srem(nodes_key(), channel)
    client.delete(heartbeat_key(channel))


async def _heartbeat(client, channel: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            await asyncio.to_thread(_register, client, channel)
        except Exception:
            log.exception("pubsub: heartbeat to Redis failed")


async def _receive(layer, channel: str, server: XmppServer) -> None:
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pubsub: receiving from the channel layer failed")
            await asyncio.sleep(1)
            continue
        try:
            deliver_batch(server, message)
        except Exception:
            log.exception("pubsub: delivering a batch failed")
