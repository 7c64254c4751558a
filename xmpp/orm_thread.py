"""The one thread where the server's sync ORM calls run, several per hop.

Django's ORM is synchronous; from the event loop it runs in asgiref's one
sync thread (sync_to_async with thread_sensitive=True), one call per hop:
the loop wakes the thread, the thread wakes the loop back. On this 2-core
machine a hop costs the server about 100 us of CPU (the two wake-ups, the
futures, asgiref copying the context there and back), ten times what
SQLite takes to answer a login's look-up, and a login made two and a half
of them (credentials, account loaders, its share of the offline and
logout batches; issue 13).

`orm_thread.call(function, *args)` queues the call; calls that arrive while
the thread is busy go together in the next hop, as group commit does for
writes (xmpp/writer.py), in the order they were made. Nothing waits for
company: a call made while the thread is idle starts a hop at once.

Each call runs in a copy of its caller's context (so xmpp/query_log.py
still names the writer behind a statement), and its exception goes to its
caller alone; the calls of a hop share nothing else. Calls made through
sync_to_async directly run in the same thread, between hops.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

R = TypeVar("R")

_Call = tuple[Callable[..., Any], tuple, contextvars.Context, asyncio.Future]


def _run_calls(calls: list[_Call]) -> list[tuple[bool, Any]]:
    """In the sync thread: each call in its caller's context; (ok, result or exception)."""
    outcomes: list[tuple[bool, Any]] = []
    for function, args, context, _future in calls:
        try:
            outcomes.append((True, context.run(function, *args)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


class OrmThread:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Call] = []
        self._task: asyncio.Task | None = None

    async def call(self, function: Callable[..., R], *args: Any) -> R:
        """function(*args) in the sync thread, with the calls queued beside it."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # One loop at a time (the server's; a test's): what was queued on
            # an earlier one cannot be answered any more.
            self._loop, self._queue, self._task = loop, [], None
        future = loop.create_future()
        self._queue.append((function, args, contextvars.copy_context(), future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = self._loop
        calls: list[_Call] = []
        try:
            while self._queue:
                calls, self._queue = self._queue, []
                try:
                    outcomes = await sync_to_async(_run_calls, thread_sensitive=True)(calls)
                except Exception as exc:  # the hop itself failed, not a call
                    outcomes = [(False, exc)] * len(calls)
                for (_function, _args, _context, future), (ok, value) in zip(
                    calls, outcomes, strict=True
                ):
                    if future.done():
                        continue  # its caller was cancelled
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                calls = []
        finally:
            # A task of a loop that was closed under it is finalised whenever
            # it is collected: it leaves alone what a later loop queued.
            if self._loop is loop and not loop.is_closed():
                self._task = None
                # Only when this task was cancelled (the loop is stopping): no
                # one is left to run what was queued.
                for _function, _args, _context, future in calls + self._queue:
                    future.cancel()
                self._queue = []


orm_thread = OrmThread()
