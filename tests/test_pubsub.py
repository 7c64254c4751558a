"""XEP-0060 at pubsub.<domain>, tried as a new user would with slixmpp:
discovery (§5), subscriber (§6), publisher (§7) and owner (§8) use cases
with their errors, the access models (§4.5) and publish-options (§7.1.5).

Each test uses nodes and accounts of its own on the session's server.
"""

from __future__ import annotations

import asyncio
import itertools
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from .clients import Client, disconnect, send_iq
from .conftest import PASSWORD, RunningServer

PUBSUB = "pubsub.localhost"
NS = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS + "#owner"
NS_ERRORS = NS + "#errors"
EVENTS = ("publish", "retract", "purge", "delete", "config", "subscription")
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def register(server: RunningServer, *users: str) -> None:
    for user in users:
        if user not in server.accounts:
            server.manage("register", user, PASSWORD)
            server.accounts.append(user)


async def pubsub_client(
    server: RunningServer,
    user: str,
    resource: str = "ps",
    plugins=("xep_0004", "xep_0128", "xep_0060", "xep_0059"),
    presence: bool = True,
    before_connect=None,
) -> Client:
    """A slixmpp client with the pubsub plugins; its notifications go to `.events`."""
    client = Client(server.jid(user, resource))
    for name in plugins:
        client.register_plugin(name)
    client.events = asyncio.Queue()
    client.forms = asyncio.Queue()  # messages carrying a data form (XEP-0004)
    client.add_event_handler("message_xform", client.forms.put_nowait)
    for event in EVENTS:
        client.add_event_handler(
            f"pubsub_{event}", lambda msg, event=event: client.events.put_nowait((event, msg))
        )
    if before_connect is not None:
        before_connect(client)
    client.enable_direct_tls = False
    client.connect(server.host, server.c2s_port)
    await asyncio.wait_for(client.started.wait(), 10)
    if presence:
        client.send_presence()
    return client


async def next_event(client: Client, kind: str, timeout: float = 5):
    while True:
        event, msg = await asyncio.wait_for(client.events.get(), timeout)
        if event == kind:
            return msg


async def no_event(client: Client, wait: float = 0.5) -> None:
    await asyncio.sleep(wait)
    assert client.events.empty(), client.events.get_nowait()


async def pubsub_error(client: Client, iq_type: str, payload: str, to: str = PUBSUB):
    """(defined condition, pubsub#errors condition or None) of an IQ that must fail."""
    try:
        await send_iq(client, iq_type, payload, to)
    except IqError as error:
        err = error.iq.xml.find("{jabber:client}error")
        app = [c.tag.partition("}")[2] for c in err if c.tag.startswith(f"{{{NS_ERRORS}}}")]
        return error.iq["error"]["condition"], (app[0] if app else None)
    raise AssertionError(f"the IQ {payload[:80]!r} succeeded")


def form(form_type: str, **values) -> Form:
    x = Form()
    x["type"] = "submit"
    x.add_field("FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in values.items():
        x.add_field(f"pubsub#{var}", value=value)
    return x


def node_config(**values) -> Form:
    return form(NS + "#node_config", **values)


def publish_options(**values) -> Form:
    return form(NS + "#publish-options", **values)


def entry(text: str, ns: str = "urn:example:test") -> ET.Element:
    el = ET.Element(f"{{{ns}}}entry")
    el.text = text
    return el


def payload_text(msg) -> str:
    item = msg["pubsub_event"]["items"]["item"]
    return item.xml[0].text if len(item.xml) else ""


def one(value):
    """A form value slixmpp may give as a list."""
    return value[0] if isinstance(value, list) else value


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.fixture(scope="module")
def users(xmpp_server):
    names = ("psowner", "psreader", "psother")
    register(xmpp_server, *names)
    return names


# -- §5 discovery ------------------------------------------------------------


def test_service_is_discovered_with_identity_and_features(xmpp_server, users):
    """§5.1: disco#items of the server lists the service; its disco#info says pubsub/service."""

    async def scenario():
        client = await pubsub_client(xmpp_server, users[0])
        try:
            items = await client.plugin["xep_0030"].get_items(jid="localhost")
            assert PUBSUB in [i[0] for i in items["disco_items"]["items"]]
            info = await client.plugin["xep_0030"].get_info(jid=PUBSUB)
            identities = info["disco_info"]["identities"]
            assert ("pubsub", "service", None, "Publish-Subscribe") in identities
            features = info["disco_info"]["features"]
            for feature in ("publish", "publish-options", "access-whitelist", "rsm", "purge-nodes"):
                assert f"{NS}#{feature}" in features
        finally:
            await disconnect(client)

    run(scenario)


def test_nodes_and_node_info_are_discovered(xmpp_server, users):
    """§5.2, §5.3, §5.4, §5.5: nodes, a node's identity and meta-data, its items."""
    node = unique("disco")

    async def scenario():
        client = await pubsub_client(xmpp_server, users[0])
        try:
            await client.plugin["xep_0060"].create_node(
                PUBSUB, node, config=node_config(title="Hi")
            )
            await client.plugin["xep_0060"].publish(PUBSUB, node, id="one", payload=entry("1"))
            nodes = await client.plugin["xep_0030"].get_items(jid=PUBSUB)
            assert (PUBSUB, node, "Hi") in nodes["disco_items"]["items"]
            info = await client.plugin["xep_0030"].get_info(jid=PUBSUB, node=node)
            assert ("pubsub", "leaf", None, None) in info["disco_info"]["identities"]
            meta = info["disco_info"]["form"]["values"]
            assert one(meta["FORM_TYPE"]) == NS + "#meta-data"
            assert one(meta["pubsub#title"]) == "Hi"
            assert xmpp_server.jid(users[0]) in meta["pubsub#owner"]
            items = await client.plugin["xep_0030"].get_items(jid=PUBSUB, node=node)
            assert [i[2] for i in items["disco_items"]["items"]] == ["one"]
            error = await pubsub_error(
                client,
                "get",
                "<query xmlns='http://jabber.org/protocol/disco#info' node='nope'/>",
            )
            assert error == ("item-not-found", None)
        finally:
            await disconnect(client)

    run(scenario)


# -- §8.1 create, §8.2 configure, §8.3 default -----------------------------------


def test_create_with_and_without_configuration_and_instant_nodes(xmpp_server, users):
    node, configured = unique("plain"), unique("configured")

    async def scenario():
        client = await pubsub_client(xmpp_server, users[0])
        try:
            xep = client.plugin["xep_0060"]
            await xep.create_node(PUBSUB, node)
            await xep.create_node(PUBSUB, configured, config=node_config(max_items="3"))
            config = await xep.get_node_config(PUBSUB, configured)
            values = config["pubsub_owner"]["configure"]["form"]["values"]
            assert values["pubsub#max_items"] == "3"
            # §8.1.2 instant node: the service names it.
            result = await send_iq(
                client, "set", f"<pubsub xmlns='{NS}'><create/></pubsub>", PUBSUB
            )
            instant = result.find(f"{{{NS}}}create").get("node")
            assert instant
            # §8.1.3.3: the node exists.
            error = await pubsub_error(
                client, "set", f"<pubsub xmlns='{NS}'><create node='{node}'/></pubsub>"
            )
            assert error == ("conflict", None)
            # §8.2.5: a value the field cannot take.
            error = await pubsub_error(
                client,
                "set",
                f"<pubsub xmlns='{NS}'><create node='{unique('bad')}'/><configure>"
                "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'>"
                "<value>everyone</value></field></x></configure></pubsub>",
            )
            assert error[0] == "not-acceptable"
        finally:
            await disconnect(client)

    run(scenario)


def test_configure_default_and_errors(xmpp_server, users):
    node = unique("conf")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        other = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            for i in range(5):
                await owner.plugin["xep_0060"].publish(
                    PUBSUB, node, id=f"i{i}", payload=entry(str(i))
                )
            await owner.plugin["xep_0060"].set_node_config(PUBSUB, node, node_config(max_items="2"))
            items = await owner.plugin["xep_0060"].get_items(PUBSUB, node)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["i3", "i4"]
            default = await owner.plugin["xep_0060"].get_node_config(PUBSUB)
            values = default["pubsub_owner"]["default"]["form"]["values"]
            assert values["pubsub#access_model"] == "open"
            # §8.2.3.4: only an owner; §8.2.3.5: no such node; §8.2.3.3: node id required.
            get = f"<pubsub xmlns='{NS_OWNER}'><configure node='{node}'/></pubsub>"
            assert await pubsub_error(other, "get", get) == ("forbidden", None)
            missing = f"<pubsub xmlns='{NS_OWNER}'><configure node='nope'/></pubsub>"
            assert await pubsub_error(owner, "get", missing) == ("item-not-found", None)
            no_id = f"<pubsub xmlns='{NS_OWNER}'><configure/></pubsub>"
            assert await pubsub_error(owner, "get", no_id) == ("bad-request", "nodeid-required")
        finally:
            await disconnect(owner, other)

    run(scenario)


# -- §7.1 publish, §6.5 items, §7.2 retract ---------------------------------------------


def test_publish_with_and_without_id_notifies_subscribers_with_payload(xmpp_server, users):
    node = unique("news")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            sub = await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            assert sub["pubsub"]["subscription"]["subscription"] == "subscribed"
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="first", payload=entry("hello"))
            msg = await next_event(reader, "publish")
            assert msg["pubsub_event"]["items"]["node"] == node
            assert msg["pubsub_event"]["items"]["item"]["id"] == "first"
            assert payload_text(msg) == "hello"
            result = await owner.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("no id"))
            generated = result["pubsub"]["publish"]["item"]["id"]
            assert generated
            msg = await next_event(reader, "publish")
            assert msg["pubsub_event"]["items"]["item"]["id"] == generated
        finally:
            await disconnect(owner, reader)

    run(scenario)


def test_publish_errors(xmpp_server, users):
    node = unique("guarded")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        other = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)

            def publish(node_name, item="<item id='x'><entry xmlns='urn:e'/></item>"):
                return f"<pubsub xmlns='{NS}'><publish node='{node_name}'>{item}</publish></pubsub>"

            # §7.1.3.1 not a publisher; §7.1.3.3 no node; §7.1.3.5 two payloads;
            # §7.1.3.6 no item / no payload on a persistent node.
            assert await pubsub_error(other, "set", publish(node)) == ("forbidden", None)
            assert await pubsub_error(owner, "set", publish("nope")) == ("item-not-found", None)
            two = "<item><a xmlns='urn:e'/><b xmlns='urn:e'/></item>"
            assert await pubsub_error(owner, "set", publish(node, two)) == (
                "bad-request",
                "invalid-payload",
            )
            assert await pubsub_error(owner, "set", publish(node, "")) == (
                "bad-request",
                "item-required",
            )
            assert await pubsub_error(owner, "set", publish(node, "<item/>")) == (
                "bad-request",
                "payload-required",
            )
            big = "<item><e xmlns='urn:e'>" + "x" * 200_000 + "</e></item>"
            assert await pubsub_error(owner, "set", publish(node, big)) == (
                "not-acceptable",
                "payload-too-big",
            )
        finally:
            await disconnect(owner, other)

    run(scenario)


def test_retrieve_items_all_by_id_max_items_and_rsm_pages(xmpp_server, users):
    node = unique("items")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            xep = owner.plugin["xep_0060"]
            await xep.create_node(PUBSUB, node, config=node_config(max_items="20"))
            for i in range(7):
                await xep.publish(PUBSUB, node, id=f"n{i}", payload=entry(str(i)))
            every = await reader.plugin["xep_0060"].get_items(PUBSUB, node)
            assert [i["id"] for i in every["pubsub"]["items"]] == [f"n{i}" for i in range(7)]
            assert [i.xml[0].text for i in every["pubsub"]["items"]][0] == "0"
            some = await reader.plugin["xep_0060"].get_items(PUBSUB, node, item_ids=["n2", "n5"])
            assert [i["id"] for i in some["pubsub"]["items"]] == ["n2", "n5"]
            last = await reader.plugin["xep_0060"].get_items(PUBSUB, node, max_items=2)
            assert [i["id"] for i in last["pubsub"]["items"]] == ["n5", "n6"]
            # §6.5.4 / XEP-0059: pages of three.
            seen, after = [], None
            while True:
                rsm = f"<max>3</max><after>{after}</after>" if after else "<max>3</max>"
                result = await send_iq(
                    reader,
                    "get",
                    f"<pubsub xmlns='{NS}'><items node='{node}'/>"
                    f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></pubsub>",
                    PUBSUB,
                )
                page = [i.get("id") for i in result.find(f"{{{NS}}}items")]
                rsm_set = result.find("{http://jabber.org/protocol/rsm}set")
                assert rsm_set.findtext("{http://jabber.org/protocol/rsm}count") == "7"
                seen += page
                if len(page) < 3:
                    break
                after = rsm_set.findtext("{http://jabber.org/protocol/rsm}last")
            assert seen == [f"n{i}" for i in range(7)]
            missing = f"<pubsub xmlns='{NS}'><items node='nope'/></pubsub>"
            assert await pubsub_error(reader, "get", missing) == ("item-not-found", None)
            no_id = f"<pubsub xmlns='{NS}'><items/></pubsub>"
            assert await pubsub_error(reader, "get", no_id) == ("bad-request", "nodeid-required")
        finally:
            await disconnect(owner, reader)

    run(scenario)


def test_retract_notifies_and_its_errors(xmpp_server, users):
    node = unique("retract")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="gone", payload=entry("x"))
            await next_event(reader, "publish")
            await owner.plugin["xep_0060"].retract(PUBSUB, node, "gone", notify=True)
            msg = await next_event(reader, "retract")
            assert msg["pubsub_event"]["items"]["retract"]["id"] == "gone"
            items = await reader.plugin["xep_0060"].get_items(PUBSUB, node)
            assert len(items["pubsub"]["items"]) == 0

            def retract(item):
                return f"<pubsub xmlns='{NS}'><retract node='{node}'>{item}</retract></pubsub>"

            assert await pubsub_error(owner, "set", retract("<item id='gone'/>")) == (
                "item-not-found",
                None,
            )
            assert await pubsub_error(owner, "set", retract("")) == ("bad-request", "item-required")
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="kept", payload=entry("x"))
            assert await pubsub_error(reader, "set", retract("<item id='kept'/>")) == (
                "forbidden",
                None,
            )
        finally:
            await disconnect(owner, reader)

    run(scenario)


# -- §6.1-§6.4 subscriptions and options ---------------------------------------------


def test_subscribe_unsubscribe_options_and_their_errors(xmpp_server, users):
    node = unique("subs")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            reader_jid = xmpp_server.jid(users[1])
            # §6.1.3.1: subscribing someone else.
            other = xmpp_server.jid(users[2])
            subscribe = f"<pubsub xmlns='{NS}'><subscribe node='{node}' jid='{other}'/></pubsub>"
            assert await pubsub_error(reader, "set", subscribe) == ("bad-request", "invalid-jid")
            missing = f"<pubsub xmlns='{NS}'><subscribe node='nope' jid='{reader_jid}'/></pubsub>"
            assert await pubsub_error(reader, "set", missing) == ("item-not-found", None)
            # §6.3.7: subscribe and configure, with delivery off.
            await reader.plugin["xep_0060"].subscribe(
                PUBSUB, node, options=form(NS + "#subscribe_options", deliver="0")
            )
            await owner.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("quiet"))
            await no_event(reader)
            options = await send_iq(
                reader,
                "get",
                f"<pubsub xmlns='{NS}'><options node='{node}' jid='{reader_jid}'/></pubsub>",
                PUBSUB,
            )
            deliver = options.find(
                f"{{{NS}}}options/{{jabber:x:data}}x/{{jabber:x:data}}field[@var='pubsub#deliver']"
            )
            assert deliver.findtext("{jabber:x:data}value") in ("0", "false")
            # (slixmpp's set_subscription_options sends a get: the IQ by hand.)
            await send_iq(
                reader,
                "set",
                f"<pubsub xmlns='{NS}'><options node='{node}' jid='{reader_jid}'>"
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS}#subscribe_options</value></field><field var='pubsub#deliver'>"
                "<value>1</value></field></x></options></pubsub>",
                PUBSUB,
            )
            await owner.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("loud"))
            assert payload_text(await next_event(reader, "publish")) == "loud"
            bad = (
                f"<pubsub xmlns='{NS}'><options node='{node}' jid='{reader_jid}'>"
                "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#colour'>"
                "<value>red</value></field></x></options></pubsub>"
            )
            assert await pubsub_error(reader, "set", bad) == ("bad-request", "invalid-options")
            # §5.6: one's own subscriptions.
            subs = await send_iq(
                reader, "get", f"<pubsub xmlns='{NS}'><subscriptions/></pubsub>", PUBSUB
            )
            assert node in [s.get("node") for s in subs.find(f"{{{NS}}}subscriptions")]
            # §6.4 default subscription options.
            default = await send_iq(
                reader, "get", f"<pubsub xmlns='{NS}'><default/></pubsub>", PUBSUB
            )
            assert default.find(f"{{{NS}}}default/{{jabber:x:data}}x") is not None
            await reader.plugin["xep_0060"].unsubscribe(PUBSUB, node)
            await owner.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("after"))
            await no_event(reader)
            unsubscribe = (
                f"<pubsub xmlns='{NS}'><unsubscribe node='{node}' jid='{reader_jid}'/></pubsub>"
            )
            assert await pubsub_error(reader, "set", unsubscribe) == (
                "unexpected-request",
                "not-subscribed",
            )
            not_mine = f"<pubsub xmlns='{NS}'><unsubscribe node='{node}' jid='{other}'/></pubsub>"
            assert await pubsub_error(reader, "set", not_mine) == ("forbidden", None)
        finally:
            await disconnect(owner, reader)

    run(scenario)


def test_last_item_is_sent_on_subscription(xmpp_server, users):
    """§6.1.7: send_last_published_item on_sub."""
    node = unique("last")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="a", payload=entry("older"))
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="b", payload=entry("newest"))
            await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            msg = await next_event(reader, "publish")
            assert payload_text(msg) == "newest"
            assert msg.xml.find("{urn:xmpp:delay}delay").get("stamp")
        finally:
            await disconnect(owner, reader)

    run(scenario)


# -- §8.4 delete, §8.5 purge ------------------------------------------------------------


def test_purge_and_delete_notify_subscribers(xmpp_server, users):
    node = unique("doomed")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            await owner.plugin["xep_0060"].create_node(PUBSUB, node)
            await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            await owner.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("x"))
            await next_event(reader, "publish")
            purge = f"<pubsub xmlns='{NS_OWNER}'><purge node='{node}'/></pubsub>"
            assert await pubsub_error(reader, "set", purge) == ("forbidden", None)
            await owner.plugin["xep_0060"].purge(PUBSUB, node)
            assert (await next_event(reader, "purge"))["pubsub_event"]["purge"]["node"] == node
            assert (
                len((await owner.plugin["xep_0060"].get_items(PUBSUB, node))["pubsub"]["items"])
                == 0
            )
            delete = f"<pubsub xmlns='{NS_OWNER}'><delete node='{node}'/></pubsub>"
            assert await pubsub_error(reader, "set", delete) == ("forbidden", None)
            await owner.plugin["xep_0060"].delete_node(PUBSUB, node)
            assert (await next_event(reader, "delete"))["pubsub_event"]["delete"]["node"] == node
            assert await pubsub_error(owner, "set", delete) == ("item-not-found", None)
        finally:
            await disconnect(owner, reader)

    run(scenario)


# -- §8.8 subscriptions, §8.9 affiliations ----------------------------------------------


def test_owner_manages_subscriptions_and_affiliations(xmpp_server, users):
    node = unique("managed")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        other = await pubsub_client(xmpp_server, users[2])
        reader_jid, other_jid = xmpp_server.jid(users[1]), xmpp_server.jid(users[2])
        try:
            xep = owner.plugin["xep_0060"]
            await xep.create_node(PUBSUB, node)
            await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            subs = await xep.get_node_subscriptions(PUBSUB, node)
            listed = [
                (s["jid"].bare, s["subscription"]) for s in subs["pubsub_owner"]["subscriptions"]
            ]
            assert (reader_jid, "subscribed") in listed
            # The owner subscribes someone; they are told (§8.8.4).
            await xep.modify_subscriptions(PUBSUB, node, [(other_jid, "subscribed")])
            msg = await next_event(other, "subscription")
            assert msg["pubsub_event"]["subscription"]["subscription"] == "subscribed"
            await xep.modify_subscriptions(PUBSUB, node, [(other_jid, "none")])
            # Affiliations: a publisher may publish; an outcast is out.
            await xep.modify_affiliations(PUBSUB, node, [(reader_jid, "publisher")])
            await reader.plugin["xep_0060"].publish(PUBSUB, node, payload=entry("by a publisher"))
            affs = await xep.get_node_affiliations(PUBSUB, node)
            listed = {a["jid"].bare: a["affiliation"] for a in affs["pubsub_owner"]["affiliations"]}
            assert listed[reader_jid] == "publisher"
            assert listed[xmpp_server.jid(users[0])] == "owner"
            await xep.modify_affiliations(PUBSUB, node, [(other_jid, "outcast")])
            subscribe = (
                f"<pubsub xmlns='{NS}'><subscribe node='{node}' jid='{other_jid}'/></pubsub>"
            )
            assert await pubsub_error(other, "set", subscribe) == ("forbidden", None)
            # §5.7: one's own affiliations.
            mine = await send_iq(
                reader, "get", f"<pubsub xmlns='{NS}'><affiliations/></pubsub>", PUBSUB
            )
            assert (node, "publisher") in [
                (a.get("node"), a.get("affiliation")) for a in mine.find(f"{{{NS}}}affiliations")
            ]
            # A node keeps an owner; a non-owner may not manage.
            owner_jid = xmpp_server.jid(users[0])
            drop = (
                f"<pubsub xmlns='{NS_OWNER}'><affiliations node='{node}'>"
                f"<affiliation jid='{owner_jid}' affiliation='none'/></affiliations></pubsub>"
            )
            assert (await pubsub_error(owner, "set", drop))[0] == "not-acceptable"
            assert await pubsub_error(reader, "set", drop) == ("forbidden", None)
        finally:
            await disconnect(owner, reader, other)

    run(scenario)


# -- §4.5 access models ---------------------------------------------------------------


async def befriend(a: Client, b: Client, b_jid: str, a_jid: str) -> None:
    """Mutual presence subscription ('both'), as two clients do it."""
    await a.get_roster()
    await b.get_roster()
    a.send_presence(pto=b_jid, ptype="subscribe")
    for _ in range(100):
        if a.client_roster[b_jid]["subscription"] == "both" and (
            b.client_roster[a_jid]["subscription"] == "both"
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no mutual subscription")


def test_access_models_presence_roster_and_whitelist(xmpp_server):
    owner_name, friend_name, stranger_name = "amowner", "amfriend", "amstranger"
    register(xmpp_server, owner_name, friend_name, stranger_name)
    presence_node, roster_node, white_node = unique("pres"), unique("rost"), unique("white")

    async def scenario():
        owner = await pubsub_client(xmpp_server, owner_name)
        friend = await pubsub_client(xmpp_server, friend_name)
        stranger = await pubsub_client(xmpp_server, stranger_name)
        owner_jid, friend_jid = xmpp_server.jid(owner_name), xmpp_server.jid(friend_name)
        stranger_jid = xmpp_server.jid(stranger_name)
        try:
            await befriend(owner, friend, friend_jid, owner_jid)
            xep = owner.plugin["xep_0060"]
            await xep.create_node(
                PUBSUB, presence_node, config=node_config(access_model="presence")
            )
            await xep.create_node(
                PUBSUB,
                roster_node,
                config=node_config(access_model="roster", roster_groups_allowed=["Close"]),
            )
            await xep.create_node(PUBSUB, white_node, config=node_config(access_model="whitelist"))
            for node in (presence_node, roster_node, white_node):
                await xep.publish(PUBSUB, node, id="x", payload=entry("secret"))

            def items(node):
                return f"<pubsub xmlns='{NS}'><items node='{node}'/></pubsub>"

            def subscribe(node, jid):
                return f"<pubsub xmlns='{NS}'><subscribe node='{node}' jid='{jid}'/></pubsub>"

            # presence: a contact with a subscription to the owner's presence.
            await friend.plugin["xep_0060"].get_items(PUBSUB, presence_node)
            assert await pubsub_error(stranger, "get", items(presence_node)) == (
                "not-authorized",
                "presence-subscription-required",
            )
            assert await pubsub_error(stranger, "set", subscribe(presence_node, stranger_jid)) == (
                "not-authorized",
                "presence-subscription-required",
            )
            # roster: only the allowed groups.
            assert await pubsub_error(friend, "get", items(roster_node)) == (
                "not-authorized",
                "not-in-roster-group",
            )
            await owner.update_roster(friend_jid, groups=["Close"])
            await asyncio.sleep(0.2)
            await friend.plugin["xep_0060"].get_items(PUBSUB, roster_node)
            # whitelist: members only.
            assert await pubsub_error(friend, "get", items(white_node)) == (
                "not-allowed",
                "closed-node",
            )
            assert await pubsub_error(friend, "set", subscribe(white_node, friend_jid)) == (
                "not-allowed",
                "closed-node",
            )
            await xep.modify_affiliations(PUBSUB, white_node, [(friend_jid, "member")])
            await friend.plugin["xep_0060"].get_items(PUBSUB, white_node)
            await friend.plugin["xep_0060"].subscribe(PUBSUB, white_node)
        finally:
            await disconnect(owner, friend, stranger)

    run(scenario)


def test_access_model_authorize_asks_the_owner_with_a_form(xmpp_server, users):
    """§6.1.3.2 pending, §8.6 the authorization form, §6.5.9.? items need approval."""
    node = unique("auth")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        reader_jid = xmpp_server.jid(users[1])
        try:
            await owner.plugin["xep_0060"].create_node(
                PUBSUB, node, config=node_config(access_model="authorize")
            )
            await owner.plugin["xep_0060"].publish(PUBSUB, node, id="p", payload=entry("private"))
            result = await reader.plugin["xep_0060"].subscribe(PUBSUB, node)
            assert result["pubsub"]["subscription"]["subscription"] == "pending"
            items = f"<pubsub xmlns='{NS}'><items node='{node}'/></pubsub>"
            assert await pubsub_error(reader, "get", items) == ("not-authorized", "not-subscribed")
            while True:
                request = await asyncio.wait_for(owner.forms.get(), 5)
                if (
                    one(request["form"]["values"].get("FORM_TYPE"))
                    == NS + "#subscribe_authorization"
                ):
                    break
            values = {var: one(value) for var, value in request["form"]["values"].items()}
            assert values["pubsub#node"] == node
            assert values["pubsub#subscriber_jid"] == reader_jid
            answer = owner.make_message(mto=PUBSUB)
            answer_form = form(NS + "#subscribe_authorization")
            answer_form.add_field("pubsub#subid", value=values["pubsub#subid"])
            answer_form.add_field("pubsub#node", value=node)
            answer_form.add_field("pubsub#subscriber_jid", value=reader_jid)
            answer_form.add_field("pubsub#allow", value=True)
            answer.append(answer_form)
            answer.send()
            msg = await next_event(reader, "subscription")
            assert msg["pubsub_event"]["subscription"]["subscription"] == "subscribed"
            got = await reader.plugin["xep_0060"].get_items(PUBSUB, node)
            assert [i["id"] for i in got["pubsub"]["items"]] == ["p"]
        finally:
            await disconnect(owner, reader)

    run(scenario)


# -- §7.1.5 publish-options --------------------------------------------------------------


def test_publish_options_precondition_not_met_and_auto_configuration(xmpp_server, users):
    node = unique("omemo")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        try:
            xep = owner.plugin["xep_0060"]
            await xep.create_node(PUBSUB, node, config=node_config(access_model="whitelist"))
            await xep.publish(
                PUBSUB, node, payload=entry("ok"), options=publish_options(access_model="whitelist")
            )
            publish = (
                f"<pubsub xmlns='{NS}'><publish node='{node}'><item><e xmlns='urn:e'/></item>"
                "</publish><publish-options><x xmlns='jabber:x:data' type='submit'>"
                f"<field var='FORM_TYPE' type='hidden'><value>{NS}#publish-options</value></field>"
                "<field var='pubsub#access_model'><value>open</value></field>"
                "</x></publish-options></pubsub>"
            )
            assert await pubsub_error(owner, "set", publish) == ("conflict", "precondition-not-met")
            # An OMEMO client reconfigures, then publishes again.
            await xep.set_node_config(PUBSUB, node, node_config(access_model="open"))
            await send_iq(owner, "set", publish, PUBSUB)
        finally:
            await disconnect(owner)

    run(scenario)


def test_max_items_and_item_expiry_and_transient_nodes(xmpp_server, users):
    node, expiring, transient = unique("max"), unique("exp"), unique("transient")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            xep = owner.plugin["xep_0060"]
            await xep.create_node(PUBSUB, node, config=node_config(max_items="3"))
            for i in range(6):
                await xep.publish(PUBSUB, node, id=f"m{i}", payload=entry(str(i)))
            got = await xep.get_items(PUBSUB, node)
            assert [i["id"] for i in got["pubsub"]["items"]] == ["m3", "m4", "m5"]
            await xep.create_node(PUBSUB, expiring, config=node_config(item_expire="1"))
            await xep.publish(PUBSUB, expiring, id="soon", payload=entry("x"))
            await asyncio.sleep(1.5)
            got = await xep.get_items(PUBSUB, expiring)
            assert len(got["pubsub"]["items"]) == 0
            # persist_items false: notifications only; no item to retrieve or purge.
            await xep.create_node(PUBSUB, transient, config=node_config(persist_items="0"))
            await reader.plugin["xep_0060"].subscribe(PUBSUB, transient)
            await xep.publish(PUBSUB, transient, id="t", payload=entry("live"))
            assert payload_text(await next_event(reader, "publish")) == "live"
            purge = f"<pubsub xmlns='{NS_OWNER}'><purge node='{transient}'/></pubsub>"
            assert await pubsub_error(owner, "set", purge) == (
                "feature-not-implemented",
                "unsupported",
            )
        finally:
            await disconnect(owner, reader)

    run(scenario)


def test_collection_node_lists_children_and_relays_their_notifications(xmpp_server, users):
    """Collection nodes, one level (XEP-0248 §5, §6): a leaf joins a collection
    with pubsub#collection; the collection's subscribers hear the leaf."""
    collection, leaf = unique("coll"), unique("child")

    async def scenario():
        owner = await pubsub_client(xmpp_server, users[0])
        reader = await pubsub_client(xmpp_server, users[1])
        try:
            xep = owner.plugin["xep_0060"]
            await xep.create_node(PUBSUB, collection, config=node_config(node_type="collection"))
            await xep.create_node(PUBSUB, leaf, config=node_config(collection=collection))
            info = await owner.plugin["xep_0030"].get_info(jid=PUBSUB, node=collection)
            assert ("pubsub", "collection", None, None) in info["disco_info"]["identities"]
            children = await owner.plugin["xep_0030"].get_items(jid=PUBSUB, node=collection)
            assert [i[1] for i in children["disco_items"]["items"]] == [leaf]
            await reader.plugin["xep_0060"].subscribe(PUBSUB, collection)
            await xep.publish(PUBSUB, leaf, id="c1", payload=entry("via the collection"))
            msg = await next_event(reader, "publish")
            assert msg["pubsub_event"]["items"]["node"] == leaf
            assert payload_text(msg) == "via the collection"
            publish = (
                f"<pubsub xmlns='{NS}'><publish node='{collection}'><item>"
                "<e xmlns='urn:e'/></item></publish></pubsub>"
            )
            assert await pubsub_error(owner, "set", publish) == (
                "feature-not-implemented",
                "unsupported",
            )
            orphan = (
                f"<pubsub xmlns='{NS}'><create node='{unique('orphan')}'/><configure>"
                "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#collection'>"
                f"<value>{leaf}</value></field></x></configure></pubsub>"
            )
            assert (await pubsub_error(owner, "set", orphan))[0] == "not-acceptable"
        finally:
            await disconnect(owner, reader)

    run(scenario)
