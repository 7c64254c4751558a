"""Pubsub state survives a restart (issue 7, item 4): nodes, items (within
max_items), subscriptions and PEP nodes are stored; a node with
persist_items false keeps none."""

from __future__ import annotations

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
