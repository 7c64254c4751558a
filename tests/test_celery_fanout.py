"""The Celery path of the pubsub fan-out (issue 7, item 3), with a real
`celery -A imserver worker` and the real Redis on this machine: the server
runs with REDIS_URL (channels_redis layer, Redis broker) and
XMPP_PUBSUB_INLINE_FANOUT=0, so every notification goes publish -> Redis
-> worker -> channel layer -> the server's node channel -> the sessions.

The worker shares the server's database (its XMPP_DATA_DIR SQLite file, or
DATABASE_URL). Without Redis at TEST_REDIS_URL (default
redis://127.0.0.1:6379) these tests are skipped, except under CI=true.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .clients import disconnect
from .conftest import PASSWORD, ROOT, start_server, stop_server
from .test_pubsub import PUBSUB, entry, pubsub_client, run

REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
REDIS_URL = f"{REDIS_BASE}/11"  # a database of its own, flushed by the fixture


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)


def redis_or_skip():
    try:
        client = redis_client()
        client.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    return client


class Worker:
    """`celery -A imserver worker` in a subprocess with the server's environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "imserver",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--hostname",
                f"pubsub-test-{self.starts}@%h",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        marker = f"pubsub-test-{self.starts}@"
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if marker in text and text.count(" ready.") >= self.starts:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"the worker did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, nothing acknowledged on the way out."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    """A server on Redis with every fan-out through Celery, and a real worker."""
    redis = redis_or_skip()
    redis.flushdb()
    data_dir = tmp_path_factory.mktemp("celery-pubsub")
    server = start_server(
        data_dir,
        REDIS_URL=REDIS_URL,
        XMPP_PUBSUB_INLINE_FANOUT="0",
        XMPP_CELERY_VISIBILITY_TIMEOUT="3",
    )
    worker = Worker(server.env, data_dir / "worker.log")
    try:
        for user in ("celowner", "celsub1", "celsub2", "celsub3"):
            server.manage("register", user, PASSWORD, check=False)
        worker.start()
        yield server, worker, redis
    finally:
        worker.stop()
        stop_server(server)
        redis.flushdb()


async def subscribers_of(server, node: str, count: int):
    clients = []
    for i in range(1, count + 1):
        client = await pubsub_client(server, f"celsub{i}")
        await client.plugin["xep_0060"].subscribe(PUBSUB, node)
        clients.append(client)
    return clients


async def collect(client, ids: collections.Counter, expected: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(ids.values()) < expected:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        try:
            event, msg = await asyncio.wait_for(client.events.get(), remaining)
        except TimeoutError:
            return
        if event == "publish":
            ids[msg["pubsub_event"]["items"]["item"]["id"]] += 1


def test_a_real_worker_delivers_notifications_through_the_channel_layer(celery_stack):
    server, worker, _ = celery_stack

    async def scenario():
        owner = await pubsub_client(server, "celowner")
        await owner.plugin["xep_0060"].create_node(PUBSUB, "celery-news")
        subscribers = await subscribers_of(server, "celery-news", 3)
        try:
            for i in range(20):
                await owner.plugin["xep_0060"].publish(
                    PUBSUB, "celery-news", id=f"c{i}", payload=entry(str(i))
                )
            counts = [collections.Counter() for _ in subscribers]
            await asyncio.gather(
                *(collect(c, n, 20, 25) for c, n in zip(subscribers, counts, strict=True))
            )
            for received in counts:
                assert received == {f"c{i}": 1 for i in range(20)}, worker.log()
        finally:
            await disconnect(owner, *subscribers)

    run(scenario)
    assert "pubsub.fan_out" in worker.log() and "succeeded" in worker.log()


def test_no_notification_is_lost_or_doubled_when_the_worker_is_killed(celery_stack):
    """kill -9 the worker while it holds tasks (unacknowledged in Redis),
    start it again: every notification arrives exactly once."""
    server, worker, redis = celery_stack
    total = 60

    async def scenario():
        owner = await pubsub_client(server, "celowner")
        await owner.plugin["xep_0060"].create_node(PUBSUB, "celery-crash")
        subscribers = await subscribers_of(server, "celery-crash", 2)
        counts = [collections.Counter() for _ in subscribers]
        collectors = [
            asyncio.ensure_future(collect(c, n, total, 40))
            for c, n in zip(subscribers, counts, strict=True)
        ]
        held = 0
        try:
            for i in range(total):
                await owner.plugin["xep_0060"].publish(
                    PUBSUB, "celery-crash", id=f"k{i}", payload=entry(str(i))
                )
                if i == total // 3:
                    # Kill it while it has taken a task it has not acknowledged.
                    for _ in range(200):
                        held = redis.hlen("unacked")
                        if held:
                            break
                        await asyncio.sleep(0.005)
                    await asyncio.to_thread(worker.kill)
            await asyncio.to_thread(worker.start)
            await asyncio.gather(*collectors)
            await asyncio.sleep(1)  # anything doubled would have come by now
            for client, received in zip(subscribers, counts, strict=True):
                while not client.events.empty():
                    event, msg = client.events.get_nowait()
                    if event == "publish":
                        received[msg["pubsub_event"]["items"]["item"]["id"]] += 1
            for received in counts:
                assert received == {f"k{i}": 1 for i in range(total)}, (
                    sorted(received.items()),
                    worker.log(),
                )
        finally:
            await disconnect(owner, *subscribers)
        return held

    held = run(scenario)
    assert held > 0, "the worker held no task when it was killed"
