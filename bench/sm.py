"""Stream management (XEP-0198) benchmarks: chat throughput with acks,
resumptions/s, server memory per detached session.

    python bench/sm.py [--scenario throughput|resume|detached|all]
        [--pairs 50] [--window 10] [--duration 10] [--coalesce]
        [--sessions 1000] [--concurrency 50]
        [--detached 1000] [--messages 50] [--profile DIR] [--keep]

Method
------
As bench/load.py, whose pieces this imports (its Server, raw Conn client,
login flows, run_logins, the messages scenario, report): every run starts a
FRESH server (temporary XMPP_DATA_DIR, SQLite, `manage.py runxmpp` on free
ports of 127.0.0.1) with the abuse limits lifted (load.LIFTED_LIMITS)
unless said otherwise, and stops it at the end whatever happens. The
client side of XEP-0198 is load.SmClient: after the bind a session sends
<enable resume='true'/> and waits for <enabled id=''/>; from then on it
counts the stanzas it receives (message, presence and iq elements) and
answers each <r/> of the server (which asks after XMPP_SM_ACK_EVERY = 25
unacknowledged stanzas or XMPP_SM_ACK_DELAY = 2 s) with <a h=''/>, h being
what it received before that <r/>. Targets are issue 14's.

1. throughput: bench/load.py's messages scenario (--pairs 50 pairs sender
   -> receiver, --window 10 messages in flight per sender, one write a
   message, --duration 10 s measured after a 1 s warm-up, then at most 10 s
   for the rest; lost = sent - received) run twice, each on a fresh server:
   without stream management, then with it enabled (resumable) on every
   session, senders and receivers, and every receiver acknowledging as
   above. Printed: msg/s and lost for both, and the ratio SM / without
   (server CPU a message beside it, which moves less with the machine's
   other load). Target: ratio >= 0.85 (SM costs at most 15%), 0 lost in
   both. Then the SM run once more on the shipped defaults (per-session
   rates shaped, xmpp/shaping.py): what was lost there must be 0 too.
2. resume: --sessions (1,000) log in (STARTTLS, SCRAM-SHA-256, bind),
   enable SM with resumption, send their initial presence and get its echo
   (so h = 1 both ways). Then all their TCP connections are cut at once
   (abort: no </stream:stream>, so the server keeps the sessions detached),
   2 s are left for the server to see the drops, and all resume at once,
   --concurrency (50) in flight as in load.py's run_logins: new
   connection, STARTTLS, SCRAM-SHA-256 (SaltedPassword cached by the loader,
   as real clients do), <resume previd='' h=''/>, done when <resumed/>
   arrives. Every one must get <resumed/> with h = 1 (the one presence it
   sent) and the new streams must stay up 1 s after. Printed: the time for
   all to resume and resumptions/s. Target: all resumed within 10 s. Then
   the same once more on the shipped defaults, printing what failed there.
3. detached: --detached (1,000) sessions log in with SM resumption and never
   acknowledge; another client sends each --messages (50) chat messages
   (~200 bytes as routed); when every receiver has counted its 50, all
   receivers drop their connections (abort), so the server holds 50
   unacknowledged messages in each detached session's queue. After 3 s to
   settle, the server's VmRSS (/proc/PID/status) less its RSS before the
   messages and the drops, divided by the sessions: what a detached session
   with its queue costs beyond the idle bound session it was (its TLS
   connection freed, its queue kept). Beside it, the same from before any
   session (the whole cost of a detached session). Then 20 of them are
   resumed with h = 0 to check the queue: each must get its 50 messages
   again after <resumed/>. No target: reported. Run with the limits lifted
   only: on the shipped per-session rate (500 stanzas/s) the one sender's
   50,000 messages would take 100 s, and what this measures is memory.

--profile DIR runs py-spy on the server during the measured phases (as
bench/load.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (bench/load.py: the server and the raw client)
from load import (  # noqa: E402
    DOMAIN,
    INITIAL_PRESENCE,
    NS_SM,
    STREAM_HEADER,
    BenchError,
    Conn,
    Profiler,
    ScramKeys,
    Server,
    SmClient,
    client_tls_context,
    percentile,
    raise_nofile,
    report,
    run_logins,
    run_scenarios,
)

TARGET_SM_RATIO = 0.85  # issue 14: SM within 15% of the same flow without it
TARGET_RESUME_SECONDS = 10.0  # issue 14: 1,000 sessions resumed at once
CHECKED_BY_RESUMING = 20  # detached: sessions resumed at the end to check their queue
H_RE = re.compile(rb"""\sh=['"](\d+)""")


# -- flows ------------------------------------------------------------------------


async def sm_login_with_presence(port, user, resource, context, scram) -> Conn:
    """load.sm_login(), then the initial presence; done when its echo arrives
    (the first stanza SmClient counts)."""
    conn = await load.sm_login(port, user, resource, context, scram)
    try:
        conn.send(INITIAL_PRESENCE)
        await conn.expect(f'from="{user}@{DOMAIN}/{resource}"'.encode())
    except BaseException:
        conn.abort()
        raise
    return conn


async def sm_login_never_acking(port, user, resource, context, scram) -> Conn:
    """login() and SM with resumption, from a client that never answers <r/>."""
    conn = await load.login(port, user, resource, context, scram)
    try:
        await load.enable_sm(conn, answer=False)
    except BaseException:
        conn.abort()
        raise
    return conn


def resume_flow(previous: dict[str, tuple[str, int]], answers: dict[str, int]):
    """A resumption (XEP-0198 §5) of user's session `previous[user]` =
    (previd, h): connect, STARTTLS, SCRAM-SHA-256, <resume/>, done when
    <resumed/> arrives; the server's h goes into `answers`. The new stream
    counts from there (SmClient, acknowledging)."""

    async def flow(port, user, resource, context, scram) -> Conn:
        previd, h = previous[user]
        conn = await load.starttls_connection(port, user, context)
        try:
            features = await load.authenticate(conn, user, scram, STREAM_HEADER)
            if NS_SM.encode() not in features:
                raise BenchError(f"{user}: stream management not offered after SASL")
            conn.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>".encode())
            reply = await conn.expect(b"/>")
            start = reply.find(b"<resumed")
            if start < 0:
                raise BenchError(f"{user}: not resumed: {reply[:300]!r}")
            found = H_RE.search(reply, start)
            answers[user] = int(found.group(1)) if found else -1
            conn.sm = SmClient(previd)
            conn.sm.h = h
            rest = bytes(conn.buf)
            conn.buf.clear()
            conn.sm.feed(conn, rest)
        except BaseException:
            conn.abort()
            raise
        return conn

    return flow


# -- scenarios ------------------------------------------------------------------


async def scenario_throughput(args) -> None:
    plain_rate, plain_cpu, plain_lost = await load.run_messages(args, False, sm=False)
    sm_rate, sm_cpu, sm_lost = await load.run_messages(args, False, sm=True)
    ratio = sm_rate / plain_rate if plain_rate else 0.0
    report(
        "messages/s with SM / without",
        f"{ratio:.2f}x",
        f"target >= {TARGET_SM_RATIO:.2f}x, 0 lost",
        ratio >= TARGET_SM_RATIO and sm_lost == 0 and plain_lost == 0,
        f"{sm_rate:.0f} vs {plain_rate:.0f} msg/s, lost {sm_lost} vs {plain_lost}; "
        f"server CPU a message {sm_cpu:.1f} vs {plain_cpu:.1f} us "
        f"(without/with {plain_cpu / sm_cpu if sm_cpu else 0:.2f}x)",
    )
    # Reported (and checked: 0 lost) as "[SM, shipped limits] messages lost".
    await load.run_messages(args, True, sm=True)


async def scenario_resume(args) -> None:
    await run_resume(args, shipped_limits=False)
    # Once more on the shipped defaults: what a limit refused there is printed.
    await run_resume(args, shipped_limits=True)


async def run_resume(args, shipped_limits: bool) -> None:
    count, concurrency = args.sessions, args.concurrency
    tag = "[shipped limits] " if shipped_limits else ""
    print(
        f"\n== {tag}resume: {count} sessions with SM resumption, all connections cut at "
        f"once, then all resumed at once ({concurrency} in flight): STARTTLS + "
        "SCRAM-SHA-256 + <resume/>"
    )
    users = [f"resume{i:05d}" for i in range(count)]
    server = Server(users, "sm-resume", shipped_limits=shipped_limits)
    old: list[Conn] = []
    new: list[Conn] = []
    try:
        server.start()
        context, scram = client_tls_context(), ScramKeys()
        elapsed, errors, _ = await run_logins(
            server.port, users, concurrency, context, scram, keep=old, flow=sm_login_with_presence
        )
        if errors:
            raise BenchError(f"{errors} logins failed")
        print(f"  {len(old)} logged in with SM in {elapsed:.2f} s ({len(old) / elapsed:.0f}/s)")
        previous = {c.user: (c.sm.id, c.sm.h) for c in old if c.sm is not None and c.sm.id}
        if len(previous) != count:
            raise BenchError(f"{count - len(previous)} sessions got no resumption id")
        wrong_h = sum(1 for _, h in previous.values() if h != 1)
        if wrong_h:
            raise BenchError(f"{wrong_h} sessions counted other than their presence echo")
        await asyncio.sleep(1.0)
        for conn in old:
            conn.abort()  # no </stream:stream>: the sessions stay, detached
        await asyncio.sleep(2.0)
        answers: dict[str, int] = {}
        with Profiler(args.profile, server, f"sm-resume{'-shipped' if shipped_limits else ''}"):
            cpu0 = server.cpu_seconds()
            elapsed, errors, latencies = await run_logins(
                server.port,
                users,
                concurrency,
                context,
                scram,
                keep=new,
                flow=resume_flow(previous, answers),
            )
            cpu = server.cpu_seconds() - cpu0
        await asyncio.sleep(1.0)
        dropped = sum(1 for c in new if c.lost)
        wrong_h = sum(1 for h in answers.values() if h != 1)
        failures = count - len(new)
        latencies.sort()
        report(
            f"{tag}time for all {count} to resume, s",
            f"{elapsed:.2f}",
            f"target <= {TARGET_RESUME_SECONDS:.0f}, every one resumed",
            elapsed <= TARGET_RESUME_SECONDS and failures == 0 and wrong_h == 0 and dropped == 0,
            f"{len(new)} <resumed/>, {failures} failed, {wrong_h} with h != 1, "
            f"{dropped} dropped after",
        )
        report(
            f"{tag}resumptions/s",
            f"{len(new) / elapsed:.0f}",
            "info",
            None,
            f"resumption time p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, server CPU "
            f"{cpu / max(1, len(new)) * 1000:.2f} ms a resumption",
        )
        if not server.alive():
            raise BenchError(f"server died:\n{server.log()}")
    finally:
        for conn in old + new:
            conn.abort()
        server.stop(args.keep)


def chat_messages(to: str, count: int) -> bytes:
    body = "A line of chat of an ordinary length, number {} of the bench's queue."
    return "".join(
        f"<message type='chat' to='{to}' id='q{k}'><body>{body.format(k)}</body></message>"
        for k in range(count)
    ).encode()


async def wait_until(condition, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def scenario_detached(args) -> None:
    count, per = args.detached, args.messages
    print(
        f"\n== detached: {count} sessions with SM resumption that never acknowledge, "
        f"{per} messages each, then their connections dropped: server RSS per detached session"
    )
    receivers = [f"detached{i:05d}" for i in range(count)]
    server = Server([*receivers, "dsender"], "sm-detached")
    conns: list[Conn] = []
    sender: Conn | None = None
    problems: list[bytes] = []
    try:
        server.start()
        await asyncio.sleep(2.0)
        base = server.rss_kib()
        context, scram = client_tls_context(), ScramKeys()
        _, errors, _ = await run_logins(
            server.port,
            receivers,
            args.concurrency,
            context,
            scram,
            keep=conns,
            flow=sm_login_never_acking,
        )
        if errors:
            raise BenchError(f"{errors} logins failed")
        sender = await load.login(server.port, "dsender", "bench", context, scram)
        sender.on_data = lambda data: problems.append(data[:300])
        for conn in conns:
            conn.on_data = lambda data: None  # SmClient counts; nothing kept
        await asyncio.sleep(3.0)  # let the server settle (freed handshake buffers, tasks)
        rss0 = server.rss_kib()
        t0 = time.perf_counter()
        for i, conn in enumerate(conns):
            sender.send(chat_messages(f"{conn.user}@{DOMAIN}/bench", per))
            if i % 50 == 49:
                await asyncio.sleep(0)
        got_all = await wait_until(lambda: all(c.sm.h >= per for c in conns), 60.0)
        short = sum(1 for c in conns if c.sm.h < per)
        print(
            f"  {count * per} messages sent, {sum(c.sm.h for c in conns)} received in "
            f"{time.perf_counter() - t0:.2f} s; {short} receivers short"
        )
        if not got_all:
            raise BenchError(f"{short} receivers did not get their {per} messages")
        previous = {c.user: (c.sm.id, 0) for c in conns}
        for conn in conns:
            conn.abort()  # detached, 50 unacknowledged each
        await asyncio.sleep(3.0)
        rss = server.rss_kib()
        report(
            f"server KiB per detached session holding {per} unacked messages",
            f"{(rss - rss0) / count:.1f}",
            "report",
            None,
            f"RSS {rss0 / 1024:.1f} -> {rss / 1024:.1f} MiB ({count} bound idle -> detached); "
            f"from before any session: {(rss - base) / count:.1f} KiB a detached session "
            f"({base / 1024:.1f} MiB)",
        )
        if not server.alive():
            raise BenchError(f"server died:\n{server.log()}")

        # The queues are there: resume a few with h = 0 and get all back.
        sample = receivers[:CHECKED_BY_RESUMING]
        resumed: list[Conn] = []
        answers: dict[str, int] = {}
        _, errors, _ = await run_logins(
            server.port,
            sample,
            10,
            context,
            scram,
            keep=resumed,
            flow=resume_flow(previous, answers),
        )
        for conn in resumed:
            conn.on_data = lambda data: None
        await wait_until(lambda: all(c.sm.h >= per for c in resumed), 10.0)
        complete = sum(1 for c in resumed if c.sm.h == per)
        conns.extend(resumed)
        report(
            f"detached sessions resumed with all {per} messages back",
            f"{complete}/{len(sample)}",
            "target all",
            complete == len(sample),
            f"{errors} resumptions failed; counted {sorted({c.sm.h for c in resumed})}",
        )
        if problems:
            print(f"  {len(problems)} unexpected answers to the sender, first: {problems[0]!r}")
    finally:
        for conn in conns:
            conn.abort()
        if sender is not None:
            sender.abort()
        server.stop(args.keep)


# -- main -------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario", choices=["throughput", "resume", "detached", "all"], default="all"
    )
    parser.add_argument("--pairs", type=int, default=50, help="throughput: sender/receiver pairs")
    parser.add_argument("--window", type=int, default=10, help="messages in flight per sender")
    parser.add_argument("--duration", type=float, default=10.0, help="throughput: measured s")
    parser.add_argument(
        "--coalesce",
        action="store_true",
        help="throughput: answer one read with one write (default: one write per message)",
    )
    parser.add_argument("--sessions", type=int, default=1000, help="resume: sessions")
    parser.add_argument("--concurrency", type=int, default=50, help="logins/resumptions in flight")
    parser.add_argument("--detached", type=int, default=1000, help="detached: sessions")
    parser.add_argument("--messages", type=int, default=50, help="detached: messages each")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the server into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    return parser.parse_args(argv)


async def main(args) -> int:
    scenarios = {
        "throughput": scenario_throughput,
        "resume": scenario_resume,
        "detached": scenario_detached,
    }
    return await run_scenarios(scenarios, args)


if __name__ == "__main__":
    arguments = parse_args()
    raise_nofile(2 * max(arguments.sessions, arguments.detached) + 1000)
    sys.exit(asyncio.run(main(arguments)))
