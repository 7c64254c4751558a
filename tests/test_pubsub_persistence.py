"""Pubsub state survives a restart (issue 7, item 4): nodes, items (within
max_items), subscriptions and PEP nodes are stored; a node with
persist_items false keeps none. Items are written behind their publish
(pubsub/nodes.py), so a clean stop must commit those published just before
it, trimmed to max_items as they were in memory."""

from __future__ import annotations

import asyncio
import json
import os
import signal

from .clients import disconnect
from .conftest import PASSWORD, start_server, stop_server
from .test_pep import NICK, pep_client
from .test_pubsub import PUBSUB, entry, next_event, node_config, pubsub_client, run


def test_nodes_items_and_subscriptions_survive_a_restart(tmp_path):
    data_dir = tmp_path / "pubsub-restart"
    server = start_server(data_dir)
    owner_name, reader_name = "psrestartowner", "psrestartreader"
    try:
        for user in (owner_name, reader_name):
            server.manage("register", user, PASSWORD, check=False)

        async def before():
            owner = await pubsub_client(
                server,
                owner_name,
                plugins=("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0172"),
            )
            reader = await pubsub_client(server, reader_name)
            try:
                xep = owner.plugin["xep_0060"]
                await xep.create_node(PUBSUB, "kept", config=node_config(max_items="2"))
                await xep.create_node(PUBSUB, "fleeting", config=node_config(persist_items="0"))
                await reader.plugin["xep_0060"].subscribe(PUBSUB, "kept")
                for i in range(3):
                    await xep.publish(PUBSUB, "kept", id=f"k{i}", payload=entry(str(i)))
                await xep.publish(PUBSUB, "fleeting", id="f", payload=entry("f"))
                await owner.plugin["xep_0172"].publish_nick("Persistent")
            finally:
                await disconnect(owner, reader)

        run(before)
        assert stop_server(server, drop_database=False) == 0
        server = start_server(data_dir)

        async def after():
            owner = await pep_client(server, owner_name)
            reader = await pubsub_client(server, reader_name)
            try:
                xep = owner.plugin["xep_0060"]
                kept = await xep.get_items(PUBSUB, "kept")
                assert [i["id"] for i in kept["pubsub"]["items"]] == ["k1", "k2"]
                fleeting = await xep.get_items(PUBSUB, "fleeting")
                assert len(fleeting["pubsub"]["items"]) == 0
                mine = await xep.get_items(server.jid(owner_name), NICK)
                assert [i.xml[0].text for i in mine["pubsub"]["items"]] == ["Persistent"]
                # The subscription is still there: the reader hears a new item.
                await xep.publish(PUBSUB, "kept", id="k3", payload=entry("3"))
                msg = await next_event(reader, "publish")
                assert msg["pubsub_event"]["items"]["item"]["id"] == "k3"
            finally:
                await disconnect(owner, reader)

        run(after)
    finally:
        stop_server(server)


BURST = 40


def stored_item_ids(server, node: str) -> list[str]:
    """The item ids of a node of pubsub.localhost as its database rows say,
    oldest first (read with the server stopped)."""
    script = (
        "import json; from pubsub.models import Item; print(json.dumps(list("
        f"Item.objects.filter(node__service='{PUBSUB}', node__name='{node}')"
        ".order_by('published', 'pk').values_list('item_id', flat=True))))"
    )
    output = server.manage("shell", "-c", script).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_items_published_just_before_a_clean_stop_survive_it_trimmed(tmp_path):
    """A burst of publishes answered at once lands in few writer batches: each
    item is readable right after its publish (from memory), and after a
    SIGTERM sent on the last result and a restart, each node holds exactly
    its max_items newest items in publication order, PEP nodes included
    (max_items 1, XEP-0163 §4.3)."""
    data_dir = tmp_path / "pubsub-burst"
    server = start_server(data_dir, XMPP_STANZAS_PER_SECOND="100000")
    owner_name = "psburstowner"
    try:
        server.manage("register", owner_name, PASSWORD, check=False)

        async def before():
            owner = await pubsub_client(
                server,
                owner_name,
                plugins=("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0172"),
            )
            try:
                xep = owner.plugin["xep_0060"]
                await xep.create_node(PUBSUB, "burst", config=node_config(max_items="5"))
                await xep.create_node(PUBSUB, "single", config=node_config(max_items="1"))
                await owner.plugin["xep_0172"].publish_nick("first")  # creates the PEP node
                publishes = []
                for i in range(BURST):
                    publishes += [
                        xep.publish(PUBSUB, "burst", id=f"b{i}", payload=entry(str(i))),
                        xep.publish(PUBSUB, "single", id=f"s{i}", payload=entry(str(i))),
                        owner.plugin["xep_0172"].publish_nick(f"nick{i}"),
                    ]
                # Sent behind the publishes without waiting for their results:
                # an items request sees the item published just before it.
                latest = xep.get_items(PUBSUB, "burst", max_items=1)
                await asyncio.gather(*publishes)
                got = await latest
                assert [i["id"] for i in got["pubsub"]["items"]] == [f"b{BURST - 1}"]
                # The clean stop begins as soon as the last result is in.
                returncode = await asyncio.to_thread(stop_server, server, 15, False)
                assert returncode == 0
            finally:
                await disconnect(owner)

        run(before)
        # One trim per node per batch: the rows are what memory held.
        newest = [f"b{i}" for i in range(BURST - 5, BURST)]
        assert stored_item_ids(server, "burst") == newest
        assert stored_item_ids(server, "single") == [f"s{BURST - 1}"]
        server = start_server(data_dir)

        async def after():
            owner = await pep_client(server, owner_name)
            try:
                xep = owner.plugin["xep_0060"]
                burst = await xep.get_items(PUBSUB, "burst")
                assert [i["id"] for i in burst["pubsub"]["items"]] == newest
                single = await xep.get_items(PUBSUB, "single")
                assert [i["id"] for i in single["pubsub"]["items"]] == [f"s{BURST - 1}"]
                mine = await xep.get_items(server.jid(owner_name), NICK)
                assert [i.xml[0].text for i in mine["pubsub"]["items"]] == [f"nick{BURST - 1}"]
            finally:
                await disconnect(owner)

        run(after)
    finally:
        stop_server(server)


def test_rows_past_max_items_are_dropped_when_the_node_is_loaded(tmp_path):
    """A node never serves more than max_items: rows beyond it in the database
    (an older server's trim could leave some) are dropped at load, oldest first."""
    data_dir = tmp_path / "pubsub-stale"
    server = start_server(data_dir)
    owner_name = "psstaleowner"
    try:
        server.manage("register", owner_name, PASSWORD, check=False)

        async def before():
            owner = await pubsub_client(server, owner_name)
            try:
                xep = owner.plugin["xep_0060"]
                await xep.create_node(PUBSUB, "stale", config=node_config(max_items="2"))
                for i in range(2):
                    await xep.publish(PUBSUB, "stale", id=f"new{i}", payload=entry(str(i)))
            finally:
                await disconnect(owner)

        run(before)
        assert stop_server(server, drop_database=False) == 0
        server.manage(
            "shell",
            "-c",
            "from datetime import UTC, datetime; from pubsub.models import Item, Node; "
            f"node = Node.objects.get(service='{PUBSUB}', name='stale'); "
            "[Item.objects.create(node=node, item_id=f'old{i}', payload='', publisher='x', "
            "published=datetime(2020, 1, 1 + i, tzinfo=UTC)) for i in range(3)]",
        )
        assert stored_item_ids(server, "stale") == ["old0", "old1", "old2", "new0", "new1"]
        server = start_server(data_dir)

        async def after():
            owner = await pubsub_client(server, owner_name)
            try:
                got = await owner.plugin["xep_0060"].get_items(PUBSUB, "stale")
                assert [i["id"] for i in got["pubsub"]["items"]] == ["new0", "new1"]
            finally:
                await disconnect(owner)

        run(after)
        assert stop_server(server, drop_database=False) == 0
        assert stored_item_ids(server, "stale") == ["new0", "new1"]
    finally:
        stop_server(server)


# Longer than XMPP_PUBSUB_ITEMS_FLUSH_MS (100 ms) plus a commit on a loaded machine.
SETTLE = 1.5


def test_kill_9_loses_at_most_the_items_of_the_last_flush_interval(tmp_path):
    """Items are written behind their publish, XMPP_PUBSUB_ITEMS_FLUSH_MS at a
    time: a burst published a moment (SETTLE) before a kill -9 is all there
    after a restart, in order; of the burst answered just before the kill,
    what survived is printed (it may be none)."""
    data_dir = tmp_path / "pubsub-kill"
    server = start_server(data_dir, XMPP_STANZAS_PER_SECOND="100000")
    owner_name, count = "pskillowner", 30
    try:
        server.manage("register", owner_name, PASSWORD, check=False)

        async def scenario():
            owner = await pubsub_client(server, owner_name)
            try:
                xep = owner.plugin["xep_0060"]
                await xep.create_node(PUBSUB, "crash", config=node_config(max_items="100"))

                async def burst(first: int) -> None:
                    await asyncio.gather(
                        *(
                            xep.publish(PUBSUB, "crash", id=f"c{i:02d}", payload=entry(str(i)))
                            for i in range(first, first + count)
                        )
                    )

                await burst(0)
                await asyncio.sleep(SETTLE)
                await burst(count)
                os.kill(server.process.pid, signal.SIGKILL)
                await asyncio.to_thread(server.process.wait)
            finally:
                await disconnect(owner)

        run(scenario)
        stored = stored_item_ids(server, "crash")
    finally:
        stop_server(server)
    print(f"items after kill -9: {len(stored)} of {2 * count}")
    assert stored == [f"c{i:02d}" for i in range(len(stored))]  # in order, no gap
    assert count <= len(stored) <= 2 * count
