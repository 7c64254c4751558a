"""A room's fan-out never queries the database per message (ARCHITECTURE.md,
"Rules that keep it fast"): a loaded room routes groupchat messages from
memory, and a persistent room's history is written in batches (one bulk
insert for many messages), not one statement per message. The server logs
every SQL statement (XMPP_LOG_SQL=true, xmpp/query_log.py)."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from .conftest import start_server, stop_server
from .muc_clients import SERVICE, connect_muc, disconnect, register

MESSAGES = 300


@pytest.fixture
def sql_logging_server(tmp_path):
    """A private server logging SQL, with three accounts of names of its own
    (on PostgreSQL, private servers share the database)."""
    server = start_server(
        tmp_path,
        XMPP_LOG_SQL="true",
        XMPP_STANZAS_PER_SECOND="100000",
        XMPP_MUC_HISTORY_FLUSH_MS="300",
    )
    tag = secrets.token_hex(3)
    server.users = [f"fan-{name}-{tag}" for name in ("ann", "ben", "cat")]
    server.tag = tag
    try:
        register(server, *server.users)
        yield server
    finally:
        stop_server(server)


def sql_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "SQL " in line]


async def wait_for_quiet_log(server, quiet: float = 1.0, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    size, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        current = server.log_path.stat().st_size
        if current != size:
            size, still_since = current, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        await asyncio.sleep(0.1)


async def flood(ann, others, room: str) -> None:
    for n in range(MESSAGES):
        ann.say(room, f"n{n}")
    for client in (ann, *others):
        for n in range(MESSAGES):
            await client.heard(room, f"n{n}", timeout=20)


def test_temporary_room_fan_out_runs_no_sql(sql_logging_server):
    """Messages in a temporary room: not one SQL statement. Then, as a
    control, making the room persistent writes it, and the log shows that
    statement: so the silence during the messages is not a log that stays
    empty whatever the server does."""
    server = sql_logging_server
    room = f"quiet-{server.tag}"

    async def scenario():
        ann, ben, cat = [await connect_muc(server, u) for u in server.users]
        try:
            await ann.create_instant(room, "ann")
            await ben.enter(room, "ben")
            await cat.enter(room, "cat")
            await wait_for_quiet_log(server)
            before = len(sql_lines(server.log()))
            await flood(ann, (ben, cat), room)
            await wait_for_quiet_log(server)
            assert sql_lines(server.log())[before:] == []

            # The control, read the same way: the muc writer stores the room
            # (muc/storage.py save_room) once it is persistent.
            await ann.configure(room, persistentroom=True)
            await wait_for_quiet_log(server)
            stored = [line for line in sql_lines(server.log())[before:] if "by=writer:muc" in line]
            assert stored, server.log()[-3000:]
        finally:
            await disconnect(ann, ben, cat)

    asyncio.run(scenario())


def test_persistent_room_history_is_written_in_batches(sql_logging_server):
    """Messages in a persistent, logged room: the history rows go in a few
    bulk inserts, never a statement per message, and no SELECT at all."""
    server = sql_logging_server

    async def scenario():
        ann, ben, cat = [await connect_muc(server, u) for u in server.users]
        try:
            await ann.create_instant(f"kept-{server.tag}", "ann")
            await ann.configure(f"kept-{server.tag}", persistentroom=True, enablelogging=True)
            await ben.enter(f"kept-{server.tag}", "ben")
            await cat.enter(f"kept-{server.tag}", "cat")
            await wait_for_quiet_log(server)
            before = len(sql_lines(server.log()))
            await flood(ann, (ben, cat), f"kept-{server.tag}")
            await wait_for_quiet_log(server)
            during = sql_lines(server.log())[before:]
            inserts = [line for line in during if "INSERT" in line]
            assert not [line for line in during if "SELECT" in line]
            assert 1 <= len(inserts) <= 10, during
            count = (
                server.manage(
                    "shell",
                    "-c",
                    "from muc.models import RoomMessage; "
                    f"print(RoomMessage.objects.filter(room__name='kept-{server.tag}').count())",
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            assert int(count) == MESSAGES
        finally:
            await disconnect(ann, ben, cat)

    asyncio.run(scenario())


def test_service_domain_follows_the_setting(tmp_path):
    """XMPP_MUC_SUBDOMAIN names the service's domain."""
    server = start_server(tmp_path, XMPP_MUC_SUBDOMAIN="rooms")
    user = f"sub-ann-{secrets.token_hex(3)}"
    try:
        register(server, user)

        async def scenario():
            ann = await connect_muc(server, user)
            try:
                ann.send_xml(
                    "<presence to='here@rooms.localhost/ann'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                )
                own = await ann.wait_for(lambda s: s.get("from") == "here@rooms.localhost/ann")
                assert own.get("type") is None
                ann.send_xml(f"<presence to='here@{SERVICE}/ann'/>")
                assert await ann.error_to("presence") == "remote-server-not-found"
            finally:
                await disconnect(ann)

        asyncio.run(scenario())
    finally:
        stop_server(server)


def test_unlogged_room_keeps_only_its_history_length(sql_logging_server):
    """A persistent room that is not logged keeps its last muc#maxhistoryfetch
    messages in the database, which is all a newcomer can get (§7.2.15)."""
    server = sql_logging_server

    async def scenario():
        ann, ben = [await connect_muc(server, u) for u in server.users[:2]]
        try:
            await ann.create_instant(f"short-{server.tag}", "ann")
            await ann.configure(
                f"short-{server.tag}", persistentroom=True, **{"muc#maxhistoryfetch": "5"}
            )
            for n in range(30):
                ann.say(f"short-{server.tag}", f"s{n}")
            await ann.heard(f"short-{server.tag}", "s29")
            await wait_for_quiet_log(server)
            kept = server.manage(
                "shell",
                "-c",
                "from muc.models import RoomMessage; print(list(RoomMessage.objects"
                f".filter(room__name='short-{server.tag}').order_by('id')"
                ".values_list('stanza', flat=True)))",
            ).stdout
            assert kept.count("<body>") == 5 and "<body>s25</body>" in kept
            ben.send_xml(ben.enter_stanza(f"short-{server.tag}", "ben"))
            await ben.wait_for(lambda s: s.find("{jabber:client}subject") is not None)
            bodies = [s.findtext("{jabber:client}body") for s in ben.inbox]
            assert [b for b in bodies if b] == [f"s{n}" for n in range(25, 30)]
        finally:
            await disconnect(ann, ben)

    asyncio.run(scenario())
