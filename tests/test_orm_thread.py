"""The sync thread's calls (xmpp/orm_thread.py): several per hop, each with
its own result, exception and context."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from xmpp import orm_thread as module
from xmpp.orm_thread import OrmThread

label: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="")


@pytest.fixture
def hops(monkeypatch) -> list[int]:
    """The number of calls in each hop to the sync thread."""
    sizes: list[int] = []
    run_calls = module._run_calls

    def counting(calls):
        sizes.append(len(calls))
        return run_calls(calls)

    monkeypatch.setattr(module, "_run_calls", counting)
    return sizes


def test_calls_made_while_the_thread_is_busy_share_the_next_hop(hops):
    """The first call goes at once; the ones made meanwhile go together, in order."""
    ran: list[int] = []

    async def scenario():
        lane = OrmThread()
        first = asyncio.ensure_future(lane.call(ran.append, 0))
        await asyncio.sleep(0)  # the first hop is under way
        rest = [asyncio.ensure_future(lane.call(ran.append, n)) for n in (1, 2, 3)]
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    assert ran == [0, 1, 2, 3]
    assert hops == [1, 3]


def test_each_call_gets_its_own_result_or_exception(hops):
    """A call that raises fails its caller only; the others of its hop succeed."""

    def fail():
        raise LookupError("no such row")

    async def scenario():
        lane = OrmThread()
        return await asyncio.gather(
            lane.call(pow, 2, 10), lane.call(fail), lane.call(len, "abc"), return_exceptions=True
        )

    first, second, third = asyncio.run(scenario())
    assert (first, third) == (1024, 3)
    assert isinstance(second, LookupError)
    assert hops == [3]


def test_calls_run_in_the_sync_thread_in_their_callers_context():
    """Not on the loop's thread, and each sees the context variables its caller set."""

    def where() -> tuple[str, int]:
        return label.get(), threading.get_ident()

    async def labelled(lane: OrmThread, name: str):
        label.set(name)
        return await lane.call(where)

    async def scenario():
        lane = OrmThread()
        return await asyncio.gather(labelled(lane, "logout"), labelled(lane, "offline"))

    (first, first_thread), (second, second_thread) = asyncio.run(scenario())
    assert (first, second) == ("logout", "offline")
    assert first_thread == second_thread != threading.get_ident()


def test_a_new_event_loop_starts_afresh():
    """Calls left queued by a loop that was closed under them do not keep a
    later loop's calls waiting."""
    lane = OrmThread()
    old_loop = asyncio.new_event_loop()
    old_loop.create_task(lane.call(len, "a"))
    old_loop.run_until_complete(asyncio.sleep(0))  # queued, its hop started, then abandoned
    old_loop.close()

    async def later() -> int:
        return await asyncio.wait_for(lane.call(len, "abc"), 5)

    assert asyncio.run(later()) == 3
