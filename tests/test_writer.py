"""The batched writer (xmpp/writer.py) on its own: plain functions as the
batch sink, on an asyncio loop, without a database."""

from __future__ import annotations

import asyncio
import threading

import pytest

from xmpp.writer import BatchedWriter, current_writer, flush_all


class Sink:
    """Records each batch it is given; can hold a commit, or fail some."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list] = []
        self.release = threading.Event()
        self.release.set()
        self.failures = failures
        self.writers: list[str | None] = []
        self.threads: list[str] = []

    def __call__(self, batch: list) -> str:
        self.writers.append(current_writer.get())
        self.threads.append(threading.current_thread().name)
        self.release.wait(5)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the database is gone")
        self.batches.append(list(batch))
        return f"{len(batch)} written"


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_writes_are_committed_in_the_order_they_were_submitted():
    async def scenario():
        sink = Sink()
        writer = BatchedWriter("order", sink, max_batch=7)
        for i in range(50):
            writer.submit(i)
        await writer.flush()
        assert [w for batch in sink.batches for w in batch] == list(range(50))
        assert max(len(batch) for batch in sink.batches) <= 7

    asyncio.run(scenario())


def test_group_commit_starts_at_once_and_gathers_the_next_batch_while_one_commits():
    """A write arriving while nothing commits is committed in the next loop
    turn, alone; those arriving while it commits form the next batch."""

    async def scenario():
        batches: list[list] = []
        committing = asyncio.Event()
        go_on = asyncio.Event()

        async def commit(batch):
            batches.append(list(batch))
            committing.set()
            await go_on.wait()

        writer = BatchedWriter("group", commit)
        writer.submit("first")
        await asyncio.sleep(0)  # one loop turn, no timer
        assert batches == [["first"]]
        await committing.wait()
        for name in ("second", "third", "fourth"):
            writer.submit(name)
        assert writer.stats()["queued"] == 3 and writer.stats()["committing"] == 1
        go_on.set()
        await writer.flush()
        assert batches == [["first"], ["second", "third", "fourth"]]
        assert writer.stats()["batches"] == 2 and len(writer) == 0

    asyncio.run(scenario())


def test_the_sync_sink_runs_in_a_worker_thread_named_by_current_writer():
    async def scenario():
        sink = Sink()
        writer = BatchedWriter("threaded", sink)
        writer.submit("x")
        await writer.flush()
        assert sink.writers == ["threaded"]
        assert sink.threads[0] != threading.main_thread().name
        assert current_writer.get() is None  # the caller's context is untouched

    asyncio.run(scenario())


def test_an_interval_gathers_writes_and_flush_cuts_it_short():
    async def scenario():
        sink = Sink()
        writer = BatchedWriter("interval", sink, interval=30.0)
        for i in range(3):
            writer.submit(i)
        await asyncio.sleep(0.05)
        assert sink.batches == []  # still gathering
        await asyncio.wait_for(writer.flush(), 2.0)
        assert sink.batches == [[0, 1, 2]]

    asyncio.run(scenario())


def test_a_write_submitted_at_once_ends_the_interval_for_its_batch():
    """Writes nobody waits for gather for the interval; one someone waits for
    commits at once, with those before it, in order; after it the interval
    applies again."""

    async def scenario():
        sink = Sink()
        writer = BatchedWriter("at-once", sink, interval=30.0)
        writer.submit("behind-1")
        writer.submit("behind-2")
        await asyncio.sleep(0.05)
        assert sink.batches == []  # gathering
        writer.submit("awaited", at_once=True)
        await until(lambda: sink.batches)
        assert sink.batches == [["behind-1", "behind-2", "awaited"]]
        writer.submit("behind-3")
        await asyncio.sleep(0.05)
        assert sink.batches == [["behind-1", "behind-2", "awaited"]]  # gathering again
        await asyncio.wait_for(writer.flush(), 2.0)
        assert sink.batches[-1] == ["behind-3"]

    asyncio.run(scenario())


def test_a_write_submitted_at_once_first_does_not_wait_for_the_interval():
    async def scenario():
        sink = Sink()
        writer = BatchedWriter("at-once-first", sink, interval=30.0)
        writer.submit("awaited", at_once=True)
        await until(lambda: sink.batches, timeout=2.0)
        assert sink.batches == [["awaited"]]

    asyncio.run(scenario())


def test_flush_all_commits_every_writer():
    async def scenario():
        first, second = Sink(), Sink()
        writers = [BatchedWriter("a", first, interval=30.0), BatchedWriter("b", second)]
        writers[0].submit(1)
        writers[1].submit(2)
        await asyncio.wait_for(flush_all(), 2.0)
        assert first.batches == [[1]] and second.batches == [[2]]

    asyncio.run(scenario())


def test_writes_of_different_kinds_never_share_a_batch():
    async def scenario():
        sink = Sink()
        sink.release.clear()  # hold the first batch so the rest pile up
        writer = BatchedWriter("kinds", sink, batch_kind=type)
        writer.submit(0)
        await until(lambda: sink.threads)
        for write in (1, 2, "a", "b", 3):
            writer.submit(write)
        sink.release.set()
        await writer.flush()
        assert sink.batches == [[0], [1, 2], ["a", "b"], [3]]

    asyncio.run(scenario())


def test_a_failed_batch_is_tried_once_more_when_the_writer_retries(caplog):
    async def scenario():
        sink = Sink(failures=1)
        committed: list = []
        writer = BatchedWriter(
            "retry", sink, retry=True, committed=lambda batch, result: committed.append(result)
        )
        writer.submit("a")
        writer.submit("b")
        await writer.flush()
        assert sink.batches == [["a", "b"]]
        assert committed == ["2 written"]
        assert writer.stats()["failed"] == 1 and writer.stats()["dropped"] == 0

    asyncio.run(scenario())
    assert "the database is gone" in caplog.text  # logged with its exception


@pytest.mark.parametrize("retry, attempts", [(True, 2), (False, 1)])
def test_a_batch_that_fails_for_good_is_dropped_and_the_writer_goes_on(retry, attempts):
    async def scenario():
        sink = Sink(failures=attempts)
        given_up: list = []
        writer = BatchedWriter(
            "drop", sink, retry=retry, on_failure=lambda b, exc: given_up.append((b, str(exc)))
        )
        writer.submit("lost")
        await writer.flush()
        assert given_up == [(["lost"], "the database is gone")]
        assert writer.stats()["dropped"] == 1 and writer.stats()["failed"] == attempts
        writer.submit("kept")  # the loop and the writer survive
        await writer.flush()
        assert sink.batches == [["kept"]]

    asyncio.run(scenario())


def test_stats_measure_the_flush_time():
    async def scenario():
        async def slow(batch):
            await asyncio.sleep(0.05)

        writer = BatchedWriter("timed", slow)
        writer.submit(1)
        await writer.flush()
        stats = writer.stats()
        assert stats["batches"] == 1 and stats["queued"] == 0
        assert 0.04 <= stats["last_flush_seconds"] <= stats["max_flush_seconds"] < 1

    asyncio.run(scenario())
