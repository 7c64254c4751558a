"""Routing a stanza waits on no database query.

The rule (ARCHITECTURE.md, "Rules that keep it fast"): rosters, privacy
lists and presence are loaded at login and kept in memory, so routing a
message or a presence stanza never waits for the database; what must be
persisted (offline messages here) is handed to a batched writer
(xmpp/writer.py) that commits behind the routing. The server is started
with XMPP_LOG_SQL=true, which logs every SQL statement as an
"SQL <VERB> by=<who> thread=<thread>" line (xmpp/query_log.py), where <who>
is "writer:<name>" for a writer's batch and "request" for a query someone
awaited. While the stanzas flow, only writers' statements may appear.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .clients import Client, connect, disconnect
from .conftest import PASSWORD, start_server, stop_server

ROMEO, JULIET = "romeo", "juliet"
ROSALINE = "rosaline"  # never logs in: messages to her are stored offline
MESSAGES = 200  # per direction and per kind of address
PRESENCE_UPDATES = 50  # per user
TIMEOUT = 20.0


@pytest.fixture
def sql_logging_server(tmp_path):
    """A private server that logs every SQL statement, with two accounts."""
    # The stanza rate limit is lifted so that bursts of hundreds of stanzas
    # measure routing, not the token bucket (RFC 6120 §13.12).
    server = start_server(tmp_path, XMPP_LOG_SQL="true", XMPP_STANZAS_PER_SECOND="100000")
    try:
        lines = "".join(f"{name} {PASSWORD}\n" for name in (ROMEO, JULIET, ROSALINE))
        server.manage("register", "--from-file", "-", input=lines)
        yield server
    finally:
        stop_server(server)


def sql_lines(text: str) -> list[str]:
    """The "SQL <VERB>" lines xmpp.query_log writes, one per statement."""
    return [line for line in text.splitlines() if "SQL " in line]


def awaited(lines: list[str]) -> list[str]:
    """The statements someone waited for: not a batched writer's."""
    return [line for line in lines if "by=writer:" not in line]


def written_behind(lines: list[str], writer: str) -> list[str]:
    return [line for line in lines if f"by=writer:{writer} " in line]


async def wait_for_quiet_log(server, quiet: float = 1.0, limit: float = 15.0) -> None:
    """Wait until the server log has not grown for `quiet` seconds (at most
    `limit`): the writes a login spawns (roster, last activity) are done."""
    deadline = time.monotonic() + limit
    size = -1
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        current = server.log_path.stat().st_size
        if current != size:
            size, still_since = current, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        await asyncio.sleep(0.1)


def subscription(client: Client, other: Client) -> str:
    """`client`'s subscription to `other` as its roster (kept by pushes) says."""
    jid = other.boundjid.bare
    roster = client.client_roster
    return roster[jid]["subscription"] if jid in roster else "none"


async def wait_until(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def login(server, user: str) -> Client:
    """A client as most mobile ones are: stream management with resumption
    (XEP-0198) and carbons (XEP-0280) on, roster get (RFC 6121 §2.2), then
    initial presence."""
    client = await connect(
        server, user, "phone", presence=False, plugins=("xep_0198", "xep_0280", "xep_0352")
    )
    client.auto_authorize = None  # answer subscription requests by hand
    client.auto_subscribe = None
    await wait_until(
        lambda: _true(client.plugin["xep_0198"].enabled_in), "stream management to be enabled"
    )
    await asyncio.wait_for(client.plugin["xep_0280"].enable(), TIMEOUT)
    await asyncio.wait_for(client.get_roster(), TIMEOUT)
    client.send_presence()
    return client


async def make_mutual_subscription(server) -> None:
    """RFC 6121 §3.1 both ways, through the server: subscribe, subscribed."""
    romeo, juliet = await login(server, ROMEO), await login(server, JULIET)
    try:
        romeo.send_presence(pto=juliet.boundjid.bare, ptype="subscribe")
        await wait_for_request(juliet, romeo)
        juliet.send_presence(pto=romeo.boundjid.bare, ptype="subscribed")
        juliet.send_presence(pto=romeo.boundjid.bare, ptype="subscribe")
        await wait_for_request(romeo, juliet)
        romeo.send_presence(pto=juliet.boundjid.bare, ptype="subscribed")
        for client, other in ((romeo, juliet), (juliet, romeo)):
            await wait_until(
                lambda c=client, o=other: _is_both(c, o),
                f"{client.boundjid.user}'s roster to say 'both'",
            )
    finally:
        await disconnect(romeo, juliet)


async def wait_for_request(client: Client, sender: Client) -> None:
    """Wait until `client` gets the subscription request of `sender` (§3.1.3)."""
    await drain_until(
        client.presences,
        {sender.boundjid.bare},
        lambda p: p["from"].bare if p["type"] == "subscribe" else None,
    )


async def _true(value: bool) -> bool:
    return value


async def _is_both(client: Client, other: Client) -> bool:
    return subscription(client, other) == "both"


async def drain_until(queue: asyncio.Queue, wanted: set[str], key, timeout: float = TIMEOUT):
    """Take stanzas from `queue` until every key in `wanted` was seen."""
    missing = set(wanted)

    async def take() -> None:
        while missing:
            stanza = await queue.get()
            missing.discard(key(stanza))

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        raise AssertionError(f"{len(missing)} of {len(wanted)} stanzas never arrived") from None


def test_routing_messages_and_presence_waits_on_no_query(sql_logging_server):
    """Once two contacts with a 'both' subscription are logged in (with
    stream management, carbons and, later, client state indication on), chat
    messages between their full JIDs and to their bare JIDs (RFC 6121
    §8.5.2, §8.5.3), and the presence updates each broadcasts to the other
    (§4.4.2), are routed from memory, while messages to an offline account
    (§8.5.2.2.1) go to offline storage: not one statement is awaited while
    they flow; the offline writer's commits are the only SQL. The logins
    themselves await queries, which shows that those are logged as such."""
    server = sql_logging_server

    async def scenario() -> None:
        await make_mutual_subscription(server)
        await wait_for_quiet_log(server)

        before_logins = len(server.log())
        romeo, juliet = await login(server, ROMEO), await login(server, JULIET)
        try:
            # Each sees the other's roster entry as 'both' and the other online.
            for client, other in ((romeo, juliet), (juliet, romeo)):
                assert subscription(client, other) == "both"
                # §4.2.3, §4.2.2: the probe answer or the broadcast, whichever
                # logged in second.
                await drain_until(
                    client.presences,
                    {other.boundjid.full},
                    lambda p: p["from"].full if p["type"] == "available" else None,
                )
            await wait_for_quiet_log(server)
            log = server.log()
            login_sql = awaited(sql_lines(log[before_logins:]))
            assert login_sql, "the logins awaited no SQL: is XMPP_LOG_SQL logging at all?"
            start = len(log)

            # Chat messages, full JID to full JID, both ways.
            for sender, receiver in ((romeo, juliet), (juliet, romeo)):
                for i in range(MESSAGES):
                    sender.send_message(mto=receiver.boundjid.full, mbody=f"full {i}", mtype="chat")
            # Chat messages to the bare JIDs, both ways.
            for sender, receiver in ((romeo, juliet), (juliet, romeo)):
                for i in range(MESSAGES):
                    sender.send_message(mto=receiver.boundjid.bare, mbody=f"bare {i}", mtype="chat")
            # Messages to an account that is not online: stored by the writer.
            offline = f"{ROSALINE}@{server.domain}"
            for i in range(MESSAGES):
                romeo.send_message(mto=offline, mbody=f"offline {i}", mtype="chat")
            # Presence updates, broadcast to the contact (show and status change).
            shows = ("away", "chat", "dnd", "xa")
            for sender in (romeo, juliet):
                for i in range(PRESENCE_UPDATES):
                    sender.send_presence(pshow=shows[i % len(shows)], pstatus=f"update {i}")

            bodies = {f"{kind} {i}" for kind in ("full", "bare") for i in range(MESSAGES)}
            statuses = {f"update {i}" for i in range(PRESENCE_UPDATES)}
            for client, other in ((romeo, juliet), (juliet, romeo)):
                await drain_until(client.messages, bodies, lambda m: m["body"])
                await drain_until(
                    client.presences,
                    statuses,
                    lambda p, o=other: p["status"] if p["from"] == o.boundjid else None,
                )
            # Romeo's app goes to the background (XEP-0352): juliet's presence
            # updates are held for him, her messages still reach him at once.
            romeo.plugin["xep_0352"].send_inactive()
            await asyncio.sleep(0.2)
            for i in range(PRESENCE_UPDATES):
                juliet.send_presence(pstatus=f"background {i}")
            for i in range(MESSAGES):
                juliet.send_message(mto=romeo.boundjid.full, mbody=f"inactive {i}", mtype="chat")
            await drain_until(
                romeo.messages, {f"inactive {i}" for i in range(MESSAGES)}, lambda m: m["body"]
            )
            await asyncio.sleep(0.5)  # anything the routing spawned has run by now

            routed_sql = sql_lines(server.log()[start:])
            assert written_behind(routed_sql, "offline"), "the offline messages were not written"
            waited = awaited(routed_sql)
            assert waited == [], (
                f"{len(waited)} SQL statements awaited while routing messages and presence:\n"
                + "\n".join(waited[:20])
            )
        finally:
            await disconnect(romeo, juliet)

    asyncio.run(scenario())
