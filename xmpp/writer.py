"""The one batched, ordered database writer (ARCHITECTURE.md, "Writer").

Everything the server persists while it routes (offline messages, MUC
history and configuration, pubsub items, logout records) goes through a
`BatchedWriter`, so that no stanza waits for the database and a burst of
writes costs a few transactions, not one per stanza. What it guarantees:

- Order: writes are committed in the order they were submitted; a batch is
  a run of consecutive writes (of one kind, if the writer has `batch_kind`),
  committed before the next batch starts.
- When: with no `interval` it is a group commit. A write that arrives while
  nothing commits starts a commit in the next loop turn; writes that arrive
  while a batch commits form the next batch, with no timer in between. A
  crash loses at most the batch being committed and the one gathering. With
  an `interval`, the first write of a batch waits that long for company,
  which a crash can lose too; a write submitted `at_once` (someone waits
  for it) ends that wait, so its batch commits as a group commit would.
- Shutdown: `flush()` (and `flush_all()`, which XmppServer.stop() awaits
  within its grace period) cuts any interval short and returns once every
  write submitted so far is committed or given up.
- Errors: a batch that raises is logged with its exception. With
  `retry=True` it is committed once more (for writers whose batch is one
  transaction, so that a failed attempt left nothing behind); a batch that
  fails for good goes to `on_failure` (e.g. to bounce its messages) and is
  dropped. The task goes on with the next batch: a failure never ends it.
- Metrics: `stats()` (queued, batches, failed, dropped, last and max flush
  seconds) for the console or an exporter.

The commit runs in Django's one sync thread (asgiref's sync_to_async with
thread_sensitive=True, as the ORM calls elsewhere do), which works on SQLite
and PostgreSQL alike. A writer whose batch must do loop work between its
queries (offline delivery) passes a coroutine function instead and makes its
own thread hops. Either way the statements run with `current_writer` set to
the writer's name, which xmpp/query_log.py logs: a statement logged without
it was awaited by a request, not written behind it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async

log = logging.getLogger(__name__)

T = TypeVar("T")

# The name of the writer whose batch is running, in its task and the thread
# calls made from it (sync_to_async copies the context into the thread).
current_writer: ContextVar[str | None] = ContextVar("current_writer", default=None)

_writers: weakref.WeakSet[BatchedWriter] = weakref.WeakSet()


class BatchedWriter(Generic[T]):
    """An ordered queue of writes committed in batches by a task that lives
    only while there is work.

    `commit(batch)`: a plain function, run in the sync thread, or a
    coroutine function, run on the loop. `committed(batch, result)` then
    runs on the loop (to answer whoever waits). `interval`: seconds (or a
    function returning them, read per batch) a batch gathers before it
    commits; 0 is a group commit. `batch_kind(write)`: writes of different
    kinds never share a batch."""

    def __init__(
        self,
        name: str,
        commit: Callable[[list[T]], Any],
        *,
        committed: Callable[[list[T], Any], None] | None = None,
        on_failure: Callable[[list[T], BaseException], None] | None = None,
        retry: bool = False,
        interval: float | Callable[[], float] = 0.0,
        max_batch: int = 500,
        batch_kind: Callable[[T], object] | None = None,
    ) -> None:
        self.name = name
        self._commit = commit
        self._commit_on_loop = inspect.iscoroutinefunction(commit)
        self._committed = committed
        self._on_failure = on_failure
        self.retry = retry
        self._interval = interval
        self.max_batch = max_batch
        self._batch_kind = batch_kind
        self._queue: deque[T] = deque()
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._hurry = 0  # flush() calls waiting: no interval wait meanwhile
        self._committing = 0  # writes in the batch being committed
        # Writes submitted and taken into batches, counted, and the count at
        # the last `at_once` write: no interval wait until it is taken.
        self._submitted = 0
        self._taken = 0
        self._at_once_until = 0
        # Metrics (stats()).
        self.batches = 0
        self.failed = 0
        self.dropped = 0
        self.last_flush_seconds = 0.0
        self.max_flush_seconds = 0.0
        _writers.add(self)

    # -- submitting ----------------------------------------------------------

    def submit(self, write: T, *, at_once: bool = False) -> None:
        """Queue `write`; it is committed after every write submitted before it.
        `at_once`: someone waits for it, so it (with the writes before it)
        does not wait out the interval."""
        self._queue.append(write)
        self._submitted += 1
        if at_once:
            self._at_once_until = self._submitted
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        elif (at_once or len(self._queue) >= self.max_batch) and self._wake is not None:
            self._wake.set()  # a full or awaited batch need not wait out the interval

    async def flush(self) -> None:
        """Return once every write submitted so far is committed (or dropped)."""
        self._hurry += 1
        try:
            if self._wake is not None:
                self._wake.set()
            while self._task is not None:
                await asyncio.shield(self._task)
                if self._queue and self._task is None:  # queued as the task ended
                    self._task = asyncio.get_running_loop().create_task(self._drain())
        finally:
            self._hurry -= 1

    @property
    def commits_at_once(self) -> bool:
        """A group commit: no interval to wait out."""
        return not callable(self._interval) and self._interval <= 0

    def __len__(self) -> int:
        """Writes submitted and not yet committed (queued or in the batch committing)."""
        return len(self._queue) + self._committing

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queued": len(self._queue),
            "committing": self._committing,
            "batches": self.batches,
            "failed": self.failed,
            "dropped": self.dropped,
            "last_flush_seconds": self.last_flush_seconds,
            "max_flush_seconds": self.max_flush_seconds,
        }

    # -- the task ------------------------------------------------------------

    async def _drain(self) -> None:
        current_writer.set(self.name)
        try:
            while self._queue:
                await self._gather()
                await self._commit_batch(self._take_batch())
        finally:
            self._task = None
            self._wake = None

    async def _gather(self) -> None:
        interval = self._interval() if callable(self._interval) else self._interval
        if interval <= 0 or self._hurry or len(self._queue) >= self.max_batch:
            return
        if self._at_once_until > self._taken:
            return
        self._wake = asyncio.Event()
        try:
            await asyncio.wait_for(self._wake.wait(), interval)
        except TimeoutError:
            pass

    def _take_batch(self) -> list[T]:
        queue = self._queue
        kind = self._batch_kind
        first = kind(queue[0]) if kind is not None else None
        batch: list[T] = []
        while queue and len(batch) < self.max_batch:
            if kind is not None and kind(queue[0]) != first:
                break
            batch.append(queue.popleft())
        self._taken += len(batch)
        return batch

    async def _commit_batch(self, batch: list[T]) -> None:
        started = time.monotonic()
        self._committing = len(batch)
        attempts = 2 if self.retry else 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    result = await self._run_commit(batch)
                except Exception as exc:
                    self.failed += 1
                    again = "; trying once more" if attempt < attempts else ""
                    log.exception("writer %s: a batch of %d failed%s", self.name, len(batch), again)
                    if attempt == attempts:
                        self._give_up(batch, exc)
                    continue
                self._call(self._committed, batch, result)
                return
        finally:
            self._committing = 0
            self.batches += 1
            self.last_flush_seconds = time.monotonic() - started
            self.max_flush_seconds = max(self.max_flush_seconds, self.last_flush_seconds)

    async def _run_commit(self, batch: list[T]) -> Any:
        if self._commit_on_loop:
            return await self._commit(batch)
        return await sync_to_async(self._commit, thread_sensitive=True)(batch)

    def _give_up(self, batch: list[T], exc: BaseException) -> None:
        self.dropped += len(batch)
        self._call(self._on_failure, batch, exc)

    def _call(self, callback: Callable | None, batch: list[T], value: Any) -> None:
        if callback is None:
            return
        try:
            callback(batch, value)
        except Exception:
            log.exception("writer %s: the callback after a batch failed", self.name)


def writers() -> list[BatchedWriter]:
    """Every writer of this process (for the console and for shutdown)."""
    return list(_writers)


async def _flush_each(busy: list[BatchedWriter]) -> None:
    await asyncio.gather(*(writer.flush() for writer in busy))


async def flush_all() -> None:
    """Flush every writer (XmppServer.stop(), within its grace period)."""
    await _flush_each(writers())
