"""Pubsub fan-out benchmark (issue 7, item 6): one publisher, N subscribers online.

    python bench/pubsub.py [--scenario embedded|redis|all] [--subscribers 100,1000]
        [--duration 10] [--window 20] [--keep] [--profile DIR]

Method
------
Each run starts a FRESH server the way bench/load.py does (temporary data
directory, SQLite, `manage.py register --from-file`, runxmpp on free ports,
abuse limits lifted; the embedded runs once more on the shipped limits,
printing what was lost there as well) and logs in N subscribers and one publisher with
bench/load.py's lean raw client (STARTTLS, SCRAM-SHA-256, bind). Every
subscriber sends initial presence and subscribes its bare JID to one leaf
node of pubsub.localhost (default configuration: persistent, max_items 10).

The publisher keeps --window publishes in flight, a publish counting until
its notification has reached every subscriber (so the figures are those of
a load the path sustains, not of a queue growing in Redis). Each item
carries the loader's monotonic clock in ns, so a subscriber computes
publish -> delivery latency for every notification it receives. After a
1 s warm-up, notifications are counted for --duration seconds; then the
publisher stops and the loader waits (15 s; 120 s with a worker) for the
rest; lost = publishes x subscribers - notifications received. CPU per
notification is the server's (and the worker's) CPU from the start of the
measurement until the last notification, over the notifications delivered;
CPU per publish is the same over the publishes answered; the loader's own
share of the CPU used is printed beside them. --profile DIR
records the server with py-spy during the measurement (as bench/load.py
does) and prints its hottest functions.

Scenarios
- embedded: no REDIS_URL: in-memory channel layer, eager Celery. Up to
  XMPP_PUBSUB_INLINE_FANOUT (100) subscribers are delivered inline; 1,000
  go through the eager task run in the server's fan-out thread.
- redis: REDIS_URL=redis://127.0.0.1:6379/12 (flushed), every fan-out
  through Celery (XMPP_PUBSUB_INLINE_FANOUT=0), and one real
  `celery -A imserver worker --pool solo` process; the worker's CPU is
  measured too, for a cost per notification of server + worker.

Targets: >= 15,000 notifications/s with 100 subscribers on embedded
defaults, none lost [Prosody 0.12 on this machine: 9,900/s, p99 103 ms;
ejabberd 16,800/s]; the Redis + worker figures are reported beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import (  # noqa: E402 - bench/ is not a package
    DOMAIN,
    ROOT,
    BenchError,
    Profiler,
    ScramKeys,
    Server,
    client_tls_context,
    percentile,
    raise_nofile,
    read_cpu_seconds,
    report,
    run_logins,
)

NS = "http://jabber.org/protocol/pubsub"
SERVICE = f"pubsub.{DOMAIN}"
NODE = "bench"
TARGET_NOTIFICATIONS = 15000.0
REDIS_URL = "redis://127.0.0.1:6379/12"
STAMP_RE = re.compile(rb"<t>(\d+) (\d+)</t>")


def publish_stanza(seq: int) -> bytes:
    return (
        f"<iq type='set' to='{SERVICE}' id='p{seq}'><pubsub xmlns='{NS}'>"
        f"<publish node='{NODE}'><item id='i{seq}'><entry xmlns='urn:bench'>"
        f"<t>{seq} {time.monotonic_ns()}</t></entry></item></publish></pubsub></iq>"
    ).encode()


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
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
                "WARNING",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)  # connect to the broker
        if self.process.poll() is not None:
            raise BenchError(f"worker exited:\n{log_path.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


async def expect_all(conns, marker: bytes, timeout: float = 60) -> None:
    await asyncio.gather(*(c.expect(marker, timeout) for c in conns))


async def run_fanout(
    label: str, subscribers: int, args, redis: bool, shipped_limits: bool = False
) -> None:
    if shipped_limits:
        label += ", shipped limits"
    print(f"\n== {label}: {subscribers} subscribers online, one publisher, window {args.window}")
    users = [f"sub{i:04d}" for i in range(subscribers)]
    server = Server(["publisher", *users], "pubsub", shipped_limits)
    worker = None
    if redis:
        import redis as redis_py

        redis_py.Redis.from_url(REDIS_URL).flushdb()
        server.env.update(REDIS_URL=REDIS_URL, XMPP_PUBSUB_INLINE_FANOUT="0")
    conns = []
    try:
        server.start()
        if redis:
            worker = Worker(server.env, server.data_dir / "worker.log")
        context, scram = client_tls_context(), ScramKeys()
        _, errors, _ = await run_logins(
            server.port, ["publisher", *users], args.concurrency, context, scram, keep=conns
        )
        if errors:
            raise BenchError(f"{errors} logins failed")
        by_user = {c.user: c for c in conns}
        publisher = by_user["publisher"]
        subs = [by_user[u] for u in users]
        publisher.send(
            f"<iq type='set' to='{SERVICE}' id='create'><pubsub xmlns='{NS}'>"
            f"<create node='{NODE}'/></pubsub></iq>".encode()
        )
        await publisher.expect(b'id="create"')
        for conn in subs:
            conn.send(
                b"<presence/><iq type='set' to='"
                + SERVICE.encode()
                + b"' id='sub'><pubsub xmlns='"
                + NS.encode()
                + b"'><subscribe node='"
                + NODE.encode()
                + b"' jid='"
                + f"{conn.user}@{DOMAIN}".encode()
                + b"'/></pubsub></iq>"
            )
        await expect_all(subs, b'subscription="subscribed"')
        await asyncio.sleep(0.5)
        await measure(server, worker, publisher, subs, args, label)
        if not server.alive():
            raise BenchError(f"server died:\n{server.log()}")
    finally:
        for conn in conns:
            conn.abort()
        if worker is not None:
            worker.stop()
        server.stop(args.keep)


async def measure(server, worker, publisher, subs, args, label: str) -> None:
    loop = asyncio.get_running_loop()
    state = {"sending": True, "measuring": False}
    counts = {"published": 0, "acked": 0, "received": 0, "measured": 0, "errors": 0}
    latencies: list[int] = []
    seq = 0

    def publish_one() -> None:
        nonlocal seq
        seq += 1
        counts["published"] += 1
        publisher.send(publish_stanza(seq))

    delivered_to: dict[int, int] = {}
    everyone = len(subs)

    def publisher_sink(data: bytes) -> None:
        counts["acked"] += data.count(b'type="result"')
        if b'type="error"' in data:
            counts["errors"] += data.count(b'type="error"')
            print(f"  publish error: {data[:300]!r}")

    def subscriber_sink():
        partial = bytearray()

        def on_data(data: bytes) -> None:
            partial.extend(data)
            end = partial.rfind(b"</message>")
            if end < 0:
                return
            end += len(b"</message>")
            stamps = STAMP_RE.findall(bytes(partial[:end]))
            del partial[:end]
            counts["received"] += len(stamps)
            now = time.monotonic_ns()
            if state["measuring"]:
                counts["measured"] += len(stamps)
                latencies.extend(now - int(t) for _, t in stamps)
            for seq_text, _ in stamps:
                # The window is of publishes not yet delivered to everyone.
                item = int(seq_text)
                got = delivered_to.get(item, 0) + 1
                if got < everyone:
                    delivered_to[item] = got
                    continue
                delivered_to.pop(item, None)
                if state["sending"]:
                    publish_one()

        return on_data

    for conn in subs:
        conn.buf.clear()
        conn.on_data = subscriber_sink()
    publisher.buf.clear()
    publisher.on_data = publisher_sink
    for _ in range(args.window):
        publish_one()
    await asyncio.sleep(1.0)
    t0, cpu0 = time.perf_counter(), server.cpu_seconds()
    loader0 = time.process_time()
    wcpu0 = worker.cpu_seconds() if worker else 0.0
    received0, acked0 = counts["received"], counts["acked"]
    state["measuring"] = True
    name = f"{label}-{len(subs)}".replace(", ", "-").replace(" ", "-")
    with Profiler(args.profile, server, name):
        await asyncio.sleep(args.duration)
    state["measuring"] = False
    elapsed = time.perf_counter() - t0
    state["sending"] = False
    expected = lambda: counts["published"] * len(subs)  # noqa: E731
    # The Celery path queues what it cannot deliver yet: give it time to drain.
    drain_start = loop.time()
    deadline = drain_start + (120 if worker else 15)
    while counts["received"] < expected() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    drained = loop.time() - drain_start
    # Cost per notification: all CPU from the start of the measurement until
    # the backlog is delivered, over every notification delivered meanwhile.
    delivered = max(1, counts["received"] - received0)
    answered = max(1, counts["acked"] - acked0)
    cpu = server.cpu_seconds() - cpu0
    loader = time.process_time() - loader0
    wcpu = (worker.cpu_seconds() - wcpu0) if worker else 0.0
    lost = expected() - counts["received"]
    measured = counts["measured"]
    rate = measured / elapsed
    latencies.sort()
    p50, p99 = percentile(latencies, 0.5) / 1e6, percentile(latencies, 0.99) / 1e6
    per = f"server {cpu / delivered * 1e6:.1f} us"
    if worker:
        per += f" + worker {wcpu / delivered * 1e6:.1f} us"
    per += f"; per publish: server {cpu / answered * 1e3:.2f} ms"
    if worker:
        per += f" + worker {wcpu / answered * 1e3:.2f} ms"
    # The loader shares the 2 cores: when it is the busier process, it sets the rate.
    per += f"; loader {loader / (cpu + wcpu + loader) * 100:.0f}% of the CPU used"
    is_target = label == "embedded" and len(subs) == 100
    report(
        f"[{label}, {len(subs)} subscribers] notifications delivered/s",
        f"{rate:.0f}",
        f"target >= {TARGET_NOTIFICATIONS:.0f}" if is_target else "info",
        rate >= TARGET_NOTIFICATIONS if is_target else None,
        f"[Prosody 0.12: 9,900 at 100; ejabberd 16,800] {measured} in {elapsed:.2f} s, "
        f"{counts['acked'] / max(elapsed, 1e-9):.0f} publishes/s, CPU per notification: {per}",
    )
    report(
        f"[{label}, {len(subs)} subscribers] publish->delivery p50 ms", f"{p50:.1f}", "info", None
    )
    report(
        f"[{label}, {len(subs)} subscribers] publish->delivery p99 ms",
        f"{p99:.1f}",
        "info [Prosody 0.12: 103 at 100]",
        None,
    )
    report(
        f"[{label}, {len(subs)} subscribers] notifications lost",
        f"{lost}",
        "target 0",
        lost == 0 and counts["errors"] == 0,
        f"{counts['published']} publishes x {len(subs)} = {expected()}, "
        f"{counts['received']} received ({drained:.1f} s after the last publish), "
        f"{counts['errors']} publish errors",
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=["embedded", "redis", "all"], default="all")
    parser.add_argument(
        "--subscribers",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[100, 1000],
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=20, help="publishes in flight")
    parser.add_argument("--concurrency", type=int, default=50, help="logins in flight")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the server into DIR")
    return parser.parse_args(argv)


async def main(args) -> int:
    raise_nofile(max(args.subscribers) * 2 + 100)
    runs = []
    if args.scenario in ("embedded", "all"):
        runs += [("embedded", n, False, False) for n in args.subscribers]
        # Once more on the shipped limits, which shape the publisher: nothing lost.
        runs += [("embedded", n, False, True) for n in args.subscribers]
    if args.scenario in ("redis", "all"):
        runs += [("redis", n, True, False) for n in args.subscribers]
    failed = False
    for label, n, redis, shipped_limits in runs:
        try:
            await run_fanout(label, n, args, redis, shipped_limits)
        except BenchError as exc:
            print(f"{label} {n}: FAILED: {exc}", flush=True)
            failed = True
    from load import RESULTS as results

    print("\n== summary")
    for label, ok in results:
        print(f"  {'OK    ' if ok else 'MISSED'} {label}")
    return 1 if failed or not all(ok for _, ok in results) else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(asyncio.run(main(parse_args())))
