"""The pubsub hot path (issue 7, guidance): node state, subscriptions and items
are kept in memory once loaded, so a publish costs a few statements for
the item whatever the number of subscribers, and retrieving items costs
none; and on embedded defaults the Celery fan-out (above
XMPP_PUBSUB_INLINE_FANOUT) runs eagerly in the server's fan-out thread and
still reaches every subscriber."""

from __future__ import annotations

import asyncio

from .clients import disconnect
from .conftest import PASSWORD, start_server, stop_server
from .test_no_database_on_routing import sql_lines, wait_for_quiet_log
from .test_pubsub import PUBSUB, entry, next_event, pubsub_client, run

SUBSCRIBERS = 6
PUBLISHES = 30
PUBLISHES_THROUGH_CELERY = 10


def _register(server, names):
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    server.manage("register", "--from-file", "-", input=lines)


async def _subscribed(server, node, names):
    clients = []
    for name in names:
        client = await pubsub_client(server, name)
        await client.plugin["xep_0060"].subscribe(PUBSUB, node)
        clients.append(client)
    return clients


def test_publishing_costs_statements_per_item_not_per_subscriber(tmp_path):
    server = start_server(tmp_path / "sql", XMPP_LOG_SQL="true", XMPP_STANZAS_PER_SECOND="100000")
    names = ["hotowner"] + [f"hotsub{i}" for i in range(SUBSCRIBERS)]
    try:
        _register(server, names)

        async def scenario():
            owner = await pubsub_client(server, names[0])
            await owner.plugin["xep_0060"].create_node(PUBSUB, "hot")
            subscribers = await _subscribed(server, "hot", names[1:])
            try:
                await owner.plugin["xep_0060"].publish(PUBSUB, "hot", payload=entry("warm"))
                for client in subscribers:
                    await next_event(client, "publish")
                await wait_for_quiet_log(server)
                before = len(sql_lines(server.log()))
                await asyncio.gather(
                    *(
                        owner.plugin["xep_0060"].publish(PUBSUB, "hot", payload=entry(str(i)))
                        for i in range(PUBLISHES)
                    )
                )
                for client in subscribers:
                    for _ in range(PUBLISHES):
                        await next_event(client, "publish")
                await wait_for_quiet_log(server)
                publishing = sql_lines(server.log())[before:]
                # Writes are batched: at most an upsert, a delete (max_items)
                # and the transaction's own statements per publish, plus the
                # one block-list SELECT xmpp/blocking.py makes for any IQ a
                # local user sends to a service domain; none per subscriber.
                selects = [line for line in publishing if "SQL SELECT" in line]
                assert len(selects) <= PUBLISHES, publishing
                assert len(publishing) <= 5 * PUBLISHES, publishing
                before = len(sql_lines(server.log()))
                await subscribers[0].plugin["xep_0060"].get_items(PUBSUB, "hot")
                await wait_for_quiet_log(server, quiet=0.5)
                reading = sql_lines(server.log())[before:]
                assert len(reading) <= 1, reading  # that block-list SELECT, no pubsub one
            finally:
                await disconnect(owner, *subscribers)

        run(scenario)
    finally:
        stop_server(server)


def fan_out_thread_statements(server) -> list[str]:
    """The SQL the server ran in the thread pubsub/notify.py submits Celery
    fan-outs from ("pubsub-fanout"). On embedded defaults the eager task runs
    there, and it is the only code there that reads the database: the
    subscribers of the node (pubsub/tasks.py). The inline path never enters
    that thread."""
    return [line for line in sql_lines(server.log()) if "thread=pubsub-fanout" in line]


def test_embedded_celery_fan_out_runs_eagerly_and_delivers(tmp_path):
    """Above the inline threshold on embedded defaults (no REDIS_URL): the
    eager task in the fan-out thread, deliveries back on the loop. The task's
    own reads of the subscribers, in that thread, show it ran for every
    publish; a node within the threshold, delivered inline, shows none."""
    server = start_server(
        tmp_path / "eager", XMPP_PUBSUB_INLINE_FANOUT="1", REDIS_URL="", XMPP_LOG_SQL="true"
    )
    names = ["eagerowner", "eagersub1", "eagersub2", "eagersub3", "inlinesub"]
    try:
        _register(server, names)

        async def scenario():
            owner = await pubsub_client(server, names[0])
            await owner.plugin["xep_0060"].create_node(PUBSUB, "eager")
            await owner.plugin["xep_0060"].create_node(PUBSUB, "inline")
            subscribers = await _subscribed(server, "eager", names[1:4])
            [lone] = await _subscribed(server, "inline", names[4:])
            try:
                # The control: one subscriber, within XMPP_PUBSUB_INLINE_FANOUT.
                await owner.plugin["xep_0060"].publish(
                    PUBSUB, "inline", id="i0", payload=entry("inline")
                )
                event = await next_event(lone, "publish")
                assert event["pubsub_event"]["items"]["item"]["id"] == "i0"
                assert fan_out_thread_statements(server) == []

                for i in range(PUBLISHES_THROUGH_CELERY):
                    await owner.plugin["xep_0060"].publish(
                        PUBSUB, "eager", id=f"e{i}", payload=entry(str(i))
                    )
                for client in subscribers:
                    got = [
                        (await next_event(client, "publish"))["pubsub_event"]["items"]["item"]["id"]
                        for _ in range(PUBLISHES_THROUGH_CELERY)
                    ]
                    assert got == [f"e{i}" for i in range(PUBLISHES_THROUGH_CELERY)]
                # A task reads the subscribers (two SELECTs: all of them, and
                # those with delivery off) before it hands over its batches, so
                # every task's reads are in the log once its deliveries arrived.
                statements = fan_out_thread_statements(server)
                assert len(statements) == 2 * PUBLISHES_THROUGH_CELERY, statements
                assert all("SQL SELECT " in line for line in statements), statements
            finally:
                await disconnect(owner, lone, *subscribers)

        run(scenario)
    finally:
        stop_server(server)
