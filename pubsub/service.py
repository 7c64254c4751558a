"""The XEP-0060 protocol: every pubsub and pubsub#owner request, for the
service at pubsub.<domain> and for the PEP services of accounts (XEP-0163),
which differ only in who owns what (`Context.pep`).

Use cases and their errors, by section of XEP-0060 (1.26):
  §5   discovery: disco#info/#items of the service and of nodes, the node
       meta-data form (§5.4), a node's items (§5.5), one's own
       subscriptions (§5.6) and affiliations (§5.7);
  §6   subscriber: subscribe (§6.1, with options §6.3.7, pending under the
       authorize model §6.1.3.2), unsubscribe (§6.2), subscription options
       (§6.3), default options (§6.4), retrieve items: all, by id,
       max_items, RSM paging with XEP-0059 (§6.5);
  §7   publisher: publish with and without an item id (§7.1), publish-options
       and precondition-not-met (§7.1.5), auto-create (§7.1.4), retract (§7.2);
  §8   owner: create with and without a configuration form and instant
       nodes (§8.1), configure (§8.2), default configuration (§8.3), delete
       (§8.4), purge (§8.5), subscription authorization by form (§8.6),
       manage subscriptions (§8.8) and affiliations (§8.9).
Access models (§4.5): open, presence, roster, whitelist, authorize.

State comes from memory (pubsub/nodes.py); a change is applied in memory,
written through, and answered once committed, except a published item,
which is written behind its result and notifications; notifications go out
through pubsub/notify.py (service nodes) or pubsub/pep.py (PEP nodes).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from django.conf import settings

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID
from xmpp.protocol.xml import serialize
from xmpp.roster import load_contact, roster_of

from . import forms
from .errors import PubsubError
from .nodes import (
    NodeState,
    ServiceState,
    StoredItem,
    Sub,
    db_affiliate,
    db_configure,
    db_create_node,
    db_delete_node,
    db_publish,
    db_purge,
    db_retract,
    db_subscribe,
    db_unsubscribe,
    default_config,
    make_item,
    new_item_id,
    store,
)
from .notify import (
    delay_of,
    fan_out,
    items_event,
    node_event,
    notification,
    retract_event,
    subscription_event,
)

if TYPE_CHECKING:
    from xmpp.router import Router

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = f"{NS_PUBSUB}#owner"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PUBSUB = f"{{{NS_PUBSUB}}}pubsub"
OWNER = f"{{{NS_OWNER}}}pubsub"
META_DATA = f"{NS_PUBSUB}#meta-data"

# §10: what this service implements, advertised in disco#info.
FEATURES = tuple(
    f"{NS_PUBSUB}#{name}"
    for name in (
        "access-authorize",
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "auto-subscribe",
        "collections",
        "config-node",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "get-pending",
        "instant-nodes",
        "item-ids",
        "last-published",
        "manage-affiliations",
        "manage-subscriptions",
        "member-affiliation",
        "meta-data",
        "modify-affiliations",
        "outcast-affiliation",
        "persistent-items",
        "presence-notifications",
        "publish",
        "publish-only-affiliation",
        "publish-options",
        "publisher-affiliation",
        "purge-nodes",
        "retract-items",
        "retrieve-affiliations",
        "retrieve-default",
        "retrieve-default-sub",
        "retrieve-items",
        "retrieve-subscriptions",
        "subscribe",
        "subscription-options",
        "subscription-notifications",
        "rsm",
    )
)
# XEP-0163 §7: a PEP service also creates a node on its owner's first publish.
PEP_FEATURES = (*FEATURES, f"{NS_PUBSUB}#auto-create")
AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "none", "outcast")
CAN_RETRIEVE = ("owner", "publisher", "member")
CAN_PUBLISH = ("owner", "publisher", "publish-only")


@dataclass(slots=True)
class Context:
    router: Router
    service: ServiceState
    requester: JID

    @property
    def pep(self) -> bool:
        return self.service.pep

    @property
    def jid(self) -> JID:
        return JID.parse(self.service.jid)

    @property
    def bare(self) -> str:
        return str(self.requester.bare)

    def is_owner_of_service(self) -> bool:
        return self.pep and self.bare == self.service.jid

    def affiliation(self, node: NodeState) -> str:
        if self.is_owner_of_service():
            return "owner"  # XEP-0163 §4: the account owns every node of its PEP service
        return node.affiliation(self.bare)


# -- entry points ----------------------------------------------------------


async def handle(
    router: Router, stanza: Element, payload: Element, sender: JID, service_jid: str, pep: bool
) -> Element | None:
    """Answer one pubsub, pubsub#owner or disco IQ to a pubsub service."""
    service = await store.service(service_jid, pep)
    ctx = Context(router, service, sender)
    iq_type = stanza.get("type")
    if payload.tag == PUBSUB:
        return await _pubsub(ctx, payload, iq_type)
    if payload.tag == OWNER:
        return await _owner(ctx, payload, iq_type)
    if payload.tag == f"{{{NS_DISCO_INFO}}}query" and iq_type == "get":
        return disco_info(ctx, payload.get("node"))
    if payload.tag == f"{{{NS_DISCO_ITEMS}}}query" and iq_type == "get":
        return await disco_items(ctx, payload.get("node"))
    raise StanzaError("service-unavailable")


def _first(parent: Element, *names: str, ns: str = NS_PUBSUB) -> Element | None:
    for name in names:
        found = parent.find(f"{{{ns}}}{name}")
        if found is not None:
            return found
    return None


async def _pubsub(ctx: Context, payload: Element, iq_type: str) -> Element | None:
    if iq_type == "set":
        if (el := _first(payload, "create")) is not None:
            return await create(ctx, el, _first(payload, "configure"))
        if (el := _first(payload, "publish")) is not None:
            return await publish(ctx, el, _first(payload, "publish-options"))
        if (el := _first(payload, "retract")) is not None:
            return await retract(ctx, el)
        if (el := _first(payload, "subscribe")) is not None:
            return await subscribe(ctx, el, _first(payload, "options"))
        if (el := _first(payload, "unsubscribe")) is not None:
            return await unsubscribe(ctx, el)
        if (el := _first(payload, "options")) is not None:
            return await set_options(ctx, el)
    else:
        if (el := _first(payload, "items")) is not None:
            return await retrieve_items(ctx, el, payload.find(f"{{{NS_RSM}}}set"))
        if (el := _first(payload, "subscriptions")) is not None:
            return own_subscriptions(ctx, el)
        if (el := _first(payload, "affiliations")) is not None:
            return own_affiliations(ctx, el)
        if (el := _first(payload, "options")) is not None:
            return get_options(ctx, el)
        if (el := _first(payload, "default")) is not None:
            return _wrap(PUBSUB, "default", forms.subscribe_options_form({}))
    raise StanzaError("feature-not-implemented")


async def _owner(ctx: Context, payload: Element, iq_type: str) -> Element | None:
    if iq_type == "get":
        if (el := _first(payload, "configure", ns=NS_OWNER)) is not None:
            return get_configuration(ctx, el)
        if (el := _first(payload, "default", ns=NS_OWNER)) is not None:
            return _wrap(OWNER, "default", forms.config_form(default_config(ctx.pep)))
        if (el := _first(payload, "subscriptions", ns=NS_OWNER)) is not None:
            return get_subscriptions(ctx, el)
        if (el := _first(payload, "affiliations", ns=NS_OWNER)) is not None:
            return get_affiliations(ctx, el)
    else:
        if (el := _first(payload, "configure", ns=NS_OWNER)) is not None:
            return await configure(ctx, el)
        if (el := _first(payload, "delete", ns=NS_OWNER)) is not None:
            return await delete(ctx, el)
        if (el := _first(payload, "purge", ns=NS_OWNER)) is not None:
            return await purge(ctx, el)
        if (el := _first(payload, "subscriptions", ns=NS_OWNER)) is not None:
            return await set_subscriptions(ctx, el)
        if (el := _first(payload, "affiliations", ns=NS_OWNER)) is not None:
            return await set_affiliations(ctx, el)
    raise StanzaError("feature-not-implemented")


def _wrap(outer: str, tag: str, child: Element | None = None, attrs=None) -> Element:
    root = Element(outer)
    ns = outer[1:].partition("}")[0]
    el = SubElement(root, f"{{{ns}}}{tag}", attrs or {})
    if child is not None:
        el.append(child)
    return root


MAX_ID_LENGTH = 1023  # node and item ids, as stored (pubsub/models.py)


def _node_name(el: Element) -> str:
    name = el.get("node")
    if not name:
        raise PubsubError("bad-request", "nodeid-required")
    if len(name) > MAX_ID_LENGTH:
        raise StanzaError("not-acceptable", "node id too long")
    return name


def _node(ctx: Context, el: Element) -> NodeState:
    node = ctx.service.nodes.get(_node_name(el))
    if node is None:
        raise StanzaError("item-not-found", "no such node")
    return node


def _require_owner(ctx: Context, node: NodeState) -> None:
    if ctx.affiliation(node) != "owner":
        raise StanzaError("forbidden", "only an owner may do that")


async def _write(fn, *args):
    try:
        return await store.writer.run(fn, *args)
    except StanzaError:
        raise
    except Exception:
        raise StanzaError("internal-server-error", "the change could not be stored") from None


# -- access models (§4.5) ----------------------------------------------------


async def roster_entry(router: Router, owner: JID, contact: JID) -> tuple[str, list[str]]:
    """(subscription, groups) of `contact` in the roster of the local account `owner`."""
    roster = roster_of(router, owner.bare)
    if roster is not None:
        found = roster.get(contact.bare)
        return (found.state.subscription, list(found.groups)) if found else ("none", [])
    loaded = await load_contact(owner.bare, contact.bare)
    if loaded is None or loaded[1].removed:
        return "none", []
    return loaded[1].state.subscription, list(loaded[1].groups)


def _owner_jids(ctx: Context, node: NodeState) -> list[JID]:
    if ctx.pep:
        return [ctx.jid]
    return [JID.parse(j) for j in node.owners()]


async def check_access(ctx: Context, node: NodeState, subscribing: bool = False) -> None:
    """Whether the requester may subscribe to (or retrieve items of) `node`;
    raises the §6.1.3 / §6.5.9 error of its access model if not."""
    affiliation = ctx.affiliation(node)
    if affiliation in CAN_RETRIEVE:
        return
    if affiliation == "outcast":
        raise StanzaError("forbidden", "you are banned from this node")
    if affiliation == "publish-only":
        raise StanzaError("forbidden", "publish-only affiliation")
    model = node.config.get("access_model", "open")
    if model == "open":
        return
    if model in ("presence", "roster"):
        allowed_groups = set(node.config.get("roster_groups_allowed") or ())
        for owner in _owner_jids(ctx, node):
            if owner.domain != ctx.router.domain or not owner.local:
                continue
            subscription, groups = await roster_entry(ctx.router, owner, ctx.requester)
            if model == "presence" and subscription in ("from", "both"):
                return
            if model == "roster" and allowed_groups.intersection(groups):
                return
        if model == "presence":
            raise PubsubError("not-authorized", "presence-subscription-required")
        raise PubsubError("not-authorized", "not-in-roster-group")
    if model == "whitelist":
        raise PubsubError("not-allowed", "closed-node")
    if model == "authorize":
        if subscribing:
            return  # the subscription will be pending (§6.1.3.2)
        sub = node.subs.get(ctx.bare) or node.subs.get(str(ctx.requester))
        if sub is None or sub.state != "subscribed":
            raise PubsubError("not-authorized", "not-subscribed")
        return
    raise StanzaError("forbidden")


# -- discovery (§5) ------------------------------------------------------------


def disco_info(ctx: Context, node_name: str | None) -> Element:
    query = Element(f"{{{NS_DISCO_INFO}}}query")
    if not node_name:
        SubElement(
            query,
            f"{{{NS_DISCO_INFO}}}identity",
            {
                "category": "pubsub",
                "type": "pep" if ctx.pep else "service",
                "name": "Publish-Subscribe",
            },
        )
        features = PEP_FEATURES if ctx.pep else FEATURES
        for var in ("http://jabber.org/protocol/disco#info", NS_PUBSUB, *features):
            SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": var})
        return query
    node = ctx.service.nodes.get(node_name)
    if node is None:
        raise StanzaError("item-not-found")
    query.set("node", node_name)
    SubElement(query, f"{{{NS_DISCO_INFO}}}identity", {"category": "pubsub", "type": node.kind})
    SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": NS_PUBSUB})
    # §5.4: the node meta-data.
    meta = {
        "title": node.config.get("title", ""),
        "type": node.config.get("type", ""),
        "access_model": node.config.get("access_model"),
        "publish_model": node.config.get("publish_model"),
        "max_items": node.config.get("max_items"),
    }
    x = forms.config_form(meta, META_DATA, kind="result")
    owners = SubElement(x, forms.FIELD_TAG, {"var": "pubsub#owner", "type": "jid-multi"})
    for owner in _owner_jids(ctx, node):
        SubElement(owners, forms.VALUE_TAG).text = str(owner)
    query.append(x)
    return query


async def disco_items(ctx: Context, node_name: str | None) -> Element:
    query = Element(f"{{{NS_DISCO_ITEMS}}}query")
    if not node_name:
        # §5.2: the nodes; a whitelist node is listed to its affiliates only.
        for name, node in sorted(ctx.service.nodes.items()):
            if node.config.get("access_model") == "whitelist" and ctx.affiliation(node) not in (
                CAN_RETRIEVE
            ):
                continue
            attrs = {"jid": ctx.service.jid, "node": name}
            if node.config.get("title"):
                attrs["name"] = node.config["title"]
            SubElement(query, f"{{{NS_DISCO_ITEMS}}}item", attrs)
        return query
    node = ctx.service.nodes.get(node_name)
    if node is None:
        raise StanzaError("item-not-found")
    await check_access(ctx, node)
    query.set("node", node_name)
    if node.kind == "collection":
        # XEP-0248 §5.2: a collection's items are its child nodes.
        for name, child in sorted(ctx.service.nodes.items()):
            if child.config.get("collection") == node_name:
                SubElement(
                    query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": ctx.service.jid, "node": name}
                )
        return query
    # §5.5: the items, by id, as disco items.
    for item in node.live_items():
        SubElement(
            query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": ctx.service.jid, "name": item.item_id}
        )
    return query


def own_subscriptions(ctx: Context, el: Element) -> Element:
    """§5.6: the requester's subscriptions, on every node or one."""
    result = _wrap(PUBSUB, "subscriptions")
    out = result[0]
    wanted = el.get("node")
    if wanted:
        out.set("node", wanted)
        if wanted not in ctx.service.nodes:
            raise StanzaError("item-not-found")
    for name, node in ctx.service.nodes.items():
        if wanted and name != wanted:
            continue
        for sub in node.subs.values():
            if JID.parse(sub.jid).bare == ctx.requester.bare:
                out.append(_subscription_element(NS_PUBSUB, name, sub, with_node=not wanted))
    return result


def own_affiliations(ctx: Context, el: Element) -> Element:
    """§5.7: the requester's affiliations."""
    result = _wrap(PUBSUB, "affiliations")
    out = result[0]
    wanted = el.get("node")
    if wanted:
        out.set("node", wanted)
    for name, node in ctx.service.nodes.items():
        if wanted and name != wanted:
            continue
        affiliation = ctx.affiliation(node)
        if affiliation != "none":
            SubElement(
                out, f"{{{NS_PUBSUB}}}affiliation", {"node": name, "affiliation": affiliation}
            )
    return result


def _subscription_element(ns: str, node: str, sub: Sub, with_node: bool = True) -> Element:
    attrs = {"jid": sub.jid, "subscription": sub.state, "subid": sub.subid}
    if with_node:
        attrs = {"node": node, **attrs}
    return Element(f"{{{ns}}}subscription", attrs)


# -- owner: create, configure, delete, purge (§8.1-§8.5) -----------------------


def _may_create(ctx: Context) -> bool:
    if ctx.pep:
        return ctx.is_owner_of_service()
    return ctx.requester.domain == ctx.router.domain and bool(ctx.requester.local)


async def create(ctx: Context, el: Element, configure_el: Element | None) -> Element | None:
    if not _may_create(ctx):
        raise StanzaError("forbidden", "you may not create nodes here")
    name = el.get("node") or ""
    if len(name) > MAX_ID_LENGTH:
        raise StanzaError("not-acceptable", "node id too long")
    instant = not name
    if instant:
        name = new_item_id()  # §8.1.2: an instant node gets a unique id
    elif name in ctx.service.nodes:
        raise StanzaError("conflict", "the node exists")  # §8.1.3.3
    config = default_config(ctx.pep)
    form = forms.find_form(configure_el)
    if form is not None:
        config.update(forms.parse_node_config(form, max_items_limit=settings.XMPP_PUBSUB_MAX_ITEMS))
    await _create_node(ctx, name, config)
    if instant:
        return _wrap(PUBSUB, "create", attrs={"node": name})
    return None


async def _create_node(ctx: Context, name: str, config: dict) -> NodeState:
    kind = config.get("node_type") or "leaf"
    if kind == "collection" and ctx.pep:
        raise PubsubError("feature-not-implemented", "unsupported", feature="collections")
    _check_collection(ctx, config, name)
    node = NodeState(0, ctx.service.jid, name, kind, config)
    owner = "" if ctx.pep else ctx.bare
    if owner:
        node.affiliations[owner] = "owner"
    ctx.service.nodes[name] = node  # claimed now: a second create gets <conflict/>
    try:
        await _write(db_create_node, node, owner)
    except StanzaError:
        ctx.service.nodes.pop(name, None)
        raise
    return node


def _check_collection(ctx: Context, config: dict, name: str) -> None:
    """A node joins one collection node (pubsub#collection, XEP-0248 §5.3
    in its simplest form: one level) that exists and that its owner owns."""
    parent_name = config.get("collection") or ""
    if not parent_name:
        return
    parent = ctx.service.nodes.get(parent_name)
    if parent is None or parent.kind != "collection" or parent_name == name:
        raise StanzaError("not-acceptable", "pubsub#collection names no collection node")
    if ctx.affiliation(parent) != "owner":
        raise StanzaError("forbidden", "only an owner of the collection may add to it")


def parent_of(service: ServiceState, node: NodeState) -> NodeState | None:
    parent = service.nodes.get(node.config.get("collection") or "")
    return parent if parent is not None and parent.kind == "collection" else None


def _stored(config: dict) -> dict:
    return dict(config)


def get_configuration(ctx: Context, el: Element) -> Element:
    """§8.2.1."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    return _wrap(OWNER, "configure", forms.config_form(node.config), {"node": node.name})


async def configure(ctx: Context, el: Element) -> None:
    """§8.2.4: a submitted form; §8.2.5 errors; notify_config (§8.2.5.1)."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    form = forms.find_form(el)
    if form is None:
        raise PubsubError("bad-request", "invalid-options", text="a configuration form is required")
    if form.get("type") == "cancel":
        return None
    changes = forms.parse_node_config(form, max_items_limit=settings.XMPP_PUBSUB_MAX_ITEMS)
    if changes.get("node_type", node.kind) != node.kind:
        raise StanzaError("not-acceptable", "the node type cannot change")
    if "collection" in changes:
        _check_collection(ctx, changes, node.name)
    node.config = {**node.config, **changes}
    keep = node.max_items()
    while len(node.items) > keep:
        node.items.popitem(last=False)
    await _write(db_configure, node, _stored(node.config), keep)
    if node.config.get("notify_config"):
        inner = ""
        if node.config.get("deliver_payloads"):
            inner = serialize(forms.config_form(node.config, kind="result"), "").decode()
        _notify(ctx, node, node_event("configuration", node.name, inner))
    if node.config.get("access_model") == "whitelist":
        await _drop_unwhitelisted(ctx, node)
    return None


async def _drop_unwhitelisted(ctx: Context, node: NodeState) -> None:
    for jid, sub in list(node.subs.items()):
        if node.affiliation(str(JID.parse(jid).bare)) not in CAN_RETRIEVE:
            del node.subs[jid]
            await _write(db_unsubscribe, node, jid)
            _notify_subscriber(ctx, node, sub.jid, "none")


async def delete(ctx: Context, el: Element) -> None:
    """§8.4: subscribers are told (with a redirect, if given) before the node goes."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    redirect = el.find(f"{{{NS_OWNER}}}redirect")
    inner = ""
    if redirect is not None and redirect.get("uri"):
        inner = serialize(Element(f"{{{_EVENT}}}redirect", {"uri": redirect.get("uri")}), _EVENT)
        inner = inner.decode()
    del ctx.service.nodes[node.name]
    await _write(db_delete_node, node)
    if node.config.get("notify_delete", True):
        _notify(ctx, node, node_event("delete", node.name, inner))
    return None


_EVENT = "http://jabber.org/protocol/pubsub#event"


async def purge(ctx: Context, el: Element) -> None:
    """§8.5."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    if not node.persistent:
        raise PubsubError("feature-not-implemented", "unsupported", feature="persistent-items")
    node.items.clear()
    await _write(db_purge, node)
    if node.config.get("notify_retract", True):
        _notify(ctx, node, node_event("purge", node.name))
    return None


# -- publisher: publish, retract (§7) -------------------------------------------


def _may_publish(ctx: Context, node: NodeState) -> bool:
    affiliation = ctx.affiliation(node)
    if affiliation in CAN_PUBLISH:
        return True
    if affiliation == "outcast" or ctx.pep:
        return False
    model = node.config.get("publish_model", "publishers")
    if model == "open":
        return True
    if model == "subscribers":
        sub = node.subs.get(ctx.bare) or node.subs.get(str(ctx.requester))
        return sub is not None and sub.state == "subscribed"
    return False


def _same(key: str, wanted, current) -> bool:
    if key in ("max_items", "item_expire"):
        return str(wanted) == str(current)
    if isinstance(wanted, list):
        return sorted(wanted) == sorted(current or [])
    return wanted == current


async def publish(ctx: Context, el: Element, options_el: Element | None) -> Element:
    """§7.1; publish-options §7.1.5; auto-create §7.1.4."""
    name = _node_name(el)
    items = el.findall(f"{{{NS_PUBSUB}}}item")
    if len(items) > 1:
        raise PubsubError("bad-request", "invalid-payload", text="one item at a time")
    item_el = items[0] if items else None
    payloads = list(item_el) if item_el is not None else []
    if len(payloads) > 1:
        raise PubsubError("bad-request", "invalid-payload")  # §7.1.3.5
    form = forms.find_form(options_el)
    options = {}
    if form is not None:
        options = forms.parse_node_config(
            form, forms.PUBLISH_OPTIONS, max_items_limit=settings.XMPP_PUBSUB_MAX_ITEMS
        )
    node = ctx.service.nodes.get(name)
    if node is None:
        if not ctx.is_owner_of_service():
            raise StanzaError("item-not-found", "no such node")  # §7.1.3.3
        # §7.1.4 auto-create; §7.1.5: with the publish-options as configuration.
        node = await _create_node(ctx, name, {**default_config(ctx.pep), **options})
    else:
        if not _may_publish(ctx, node):
            raise StanzaError("forbidden", "you may not publish to this node")  # §7.1.3.1
        for key, wanted in options.items():
            if not _same(key, wanted, node.config.get(key)):
                # §7.1.5: the node's configuration differs from the precondition.
                raise PubsubError("conflict", "precondition-not-met", text=f"pubsub#{key}")
    if node.kind == "collection":
        raise PubsubError("feature-not-implemented", "unsupported", feature="publish")
    if item_el is None and node.persistent:
        raise PubsubError("bad-request", "item-required")  # §7.1.3.6
    if not payloads and node.config.get("deliver_payloads", True) and node.persistent:
        raise PubsubError("bad-request", "payload-required")  # §7.1.3.6
    payload = payloads[0] if payloads else None
    item_id = (item_el.get("id") if item_el is not None else None) or new_item_id()
    if len(item_id) > MAX_ID_LENGTH:
        raise StanzaError("not-acceptable", "item id too long")
    item = make_item(item_id, payload, str(ctx.requester), time.time())
    if len(item.payload_xml) > settings.XMPP_PUBSUB_MAX_PAYLOAD_SIZE:
        raise PubsubError("not-acceptable", "payload-too-big")  # §7.1.3.4
    node.items.pop(item_id, None)
    node.items[item_id] = item
    keep = node.max_items() if node.persistent else 1
    evicted = []
    while len(node.items) > keep:
        evicted.append(node.items.popitem(last=False)[0])
    if node.persistent:
        # Written behind: the item is in memory already, so the result, the
        # notifications and any items request (§6.5) after it need not wait
        # for the database (pubsub/nodes.py).
        store.writer.submit(db_publish, node, item, evicted)
    if node.config.get("deliver_notifications", True):
        event = items_event(name, [item], bool(node.config.get("deliver_payloads", True)))
        _notify(ctx, node, event)
    return _wrap(
        PUBSUB, "publish", Element(f"{{{NS_PUBSUB}}}item", {"id": item_id}), {"node": name}
    )


async def retract(ctx: Context, el: Element) -> None:
    """§7.2."""
    name = _node_name(el)
    item_el = el.find(f"{{{NS_PUBSUB}}}item")
    if item_el is None or not item_el.get("id"):
        raise PubsubError("bad-request", "item-required")  # §7.2.3.3
    node = ctx.service.nodes.get(name)
    if node is None:
        raise StanzaError("item-not-found", "no such node")
    item_id = item_el.get("id")
    item = node.items.get(item_id)
    affiliation = ctx.affiliation(node)
    own = item is not None and JID.parse(item.publisher).bare == ctx.requester.bare
    if affiliation not in ("owner", "publisher") and not (affiliation == "publish-only" and own):
        raise StanzaError("forbidden", "you may not retract items here")  # §7.2.3.1
    if item is None:
        raise StanzaError("item-not-found", "no such item")  # §7.2.3.2
    if not node.persistent:
        raise PubsubError("feature-not-implemented", "unsupported", feature="persistent-items")
    del node.items[item_id]
    await _write(db_retract, node, [item_id])
    if el.get("notify") in ("1", "true") or node.config.get("notify_retract"):
        _notify(ctx, node, retract_event(name, [item_id]))
    return None


def _notify(ctx: Context, node: NodeState, event_xml: str, extra: str = "") -> None:
    note = notification(
        ctx.service.jid, event_xml, node.config.get("notification_type", "headline"), extra
    )
    if ctx.pep:
        from .pep import notify_pep

        notify_pep(ctx.router, ctx.service, node, note)
    else:
        fan_out(ctx.router, node, note, ctx.jid, parent_of(ctx.service, node))


def _notify_subscriber(ctx: Context, node: NodeState, jid: str, state: str) -> None:
    """§8.6, §8.8.4: the subscriber learns the new state of its subscription."""
    from .notify import deliver_local

    note = notification(ctx.service.jid, subscription_event(node.name, jid, state), "normal")
    deliver_local(ctx.router, [jid], note, ctx.jid)


# -- subscriber: subscribe, unsubscribe, options, items (§6) ---------------------


def _subscriber_jid(ctx: Context, el: Element, mismatch: StanzaError) -> str:
    text = el.get("jid")
    if not text:
        raise PubsubError("bad-request", "jid-required")
    try:
        jid = JID.parse(text)
    except InvalidJID:
        raise StanzaError("jid-malformed") from None
    if jid.bare != ctx.requester.bare:
        raise mismatch
    return str(jid)


async def subscribe(ctx: Context, el: Element, options_el: Element | None) -> Element:
    """§6.1; with options §6.3.7; pending under the authorize model §6.1.3.2."""
    jid = _subscriber_jid(ctx, el, PubsubError("bad-request", "invalid-jid"))  # §6.1.3.1
    node = _node(ctx, el)
    await check_access(ctx, node, subscribing=True)
    form = forms.find_form(options_el)
    options = forms.parse_subscribe_options(form) if form is not None else None
    sub = node.subs.get(jid)
    state = "subscribed"
    if (
        node.config.get("access_model") == "authorize"
        and ctx.affiliation(node) not in CAN_RETRIEVE
        and (sub is None or sub.state != "subscribed")
    ):
        state = "pending"
    if sub is None:
        sub = Sub(jid, secrets.token_hex(8), state, options or {})
    else:
        sub.state = "subscribed" if sub.state == "subscribed" else state
        if options is not None:
            sub.options = options
    node.subs[jid] = sub
    await _write(db_subscribe, node, Sub(sub.jid, sub.subid, sub.state, dict(sub.options)))
    if sub.state == "pending":
        _ask_owners(ctx, node, sub)
    elif node.config.get("send_last_published_item", "never") != "never":
        _send_last_soon(ctx, node, jid)  # §6.1.7
    result = _wrap(PUBSUB, "subscription", attrs={"node": node.name, "jid": jid})
    result[0].set("subid", sub.subid)
    result[0].set("subscription", sub.state)
    return result


def _send_last_soon(ctx: Context, node: NodeState, jid: str) -> None:
    """The last item after the subscribe result, which the router sends as
    soon as this handler returns."""
    item = node.last_item()
    if item is None:
        return
    event = items_event(node.name, [item], bool(node.config.get("deliver_payloads", True)))
    note = notification(
        ctx.service.jid, event, node.config.get("notification_type", "headline"), delay_of(item)
    )
    from .notify import deliver_local

    asyncio.get_running_loop().call_soon(deliver_local, ctx.router, [jid], note, ctx.jid)


def _ask_owners(ctx: Context, node: NodeState, sub: Sub) -> None:
    """§8.6: each owner gets the subscription authorization form."""
    for owner in _owner_jids(ctx, node):
        message = Element(
            "{jabber:client}message",
            {"to": str(owner), "from": ctx.service.jid, "id": secrets.token_hex(6)},
        )
        message.append(forms.authorization_form(node.name, sub.jid, sub.subid))
        ctx.router.route(message, ctx.jid)


async def authorization_answer(
    router: Router, message: Element, sender: JID, service_jid: str, pep: bool
) -> None:
    """§8.6: an owner's submitted authorization form approves or denies."""
    form = message.find(forms.X_TAG)
    if form is None or form.get("type") != "submit":
        return
    form_type, values = forms.form_values(form)
    if form_type != forms.SUBSCRIBE_AUTHORIZATION:
        return
    service = await store.service(service_jid, pep)
    ctx = Context(router, service, sender)
    node = service.nodes.get((values.get("pubsub#node") or [""])[0])
    if node is None or ctx.affiliation(node) != "owner":
        return
    jid = (values.get("pubsub#subscriber_jid") or [""])[0]
    sub = node.subs.get(jid)
    if sub is None or sub.state != "pending":
        return
    try:
        allow = forms.parse_boolean((values.get("pubsub#allow") or ["false"])[0])
    except StanzaError:
        return
    if allow:
        sub.state = "subscribed"
        await _write(db_subscribe, node, Sub(sub.jid, sub.subid, sub.state, dict(sub.options)))
    else:
        del node.subs[jid]
        await _write(db_unsubscribe, node, jid)
    _notify_subscriber(ctx, node, jid, "subscribed" if allow else "none")


async def unsubscribe(ctx: Context, el: Element) -> None:
    """§6.2."""
    jid = _subscriber_jid(ctx, el, StanzaError("forbidden", "not your subscription"))  # §6.2.3.3
    node = _node(ctx, el)
    sub = node.subs.get(jid)
    if sub is None:
        raise PubsubError("unexpected-request", "not-subscribed")  # §6.2.3.2
    if el.get("subid") and el.get("subid") != sub.subid:
        raise PubsubError("not-acceptable", "invalid-subid")  # §6.2.3.5
    del node.subs[jid]
    await _write(db_unsubscribe, node, jid)
    return None


def _own_sub(ctx: Context, el: Element) -> tuple[NodeState, Sub]:
    jid = _subscriber_jid(ctx, el, StanzaError("forbidden", "not your subscription"))  # §6.3.4.2
    node = _node(ctx, el)
    sub = node.subs.get(jid)
    if sub is None:
        raise PubsubError("unexpected-request", "not-subscribed")  # §6.3.4.3
    if el.get("subid") and el.get("subid") != sub.subid:
        raise PubsubError("not-acceptable", "invalid-subid")
    return node, sub


def get_options(ctx: Context, el: Element) -> Element:
    """§6.3.2."""
    node, sub = _own_sub(ctx, el)
    attrs = {"node": node.name, "jid": sub.jid, "subid": sub.subid}
    return _wrap(PUBSUB, "options", forms.subscribe_options_form(sub.options), attrs)


async def set_options(ctx: Context, el: Element) -> None:
    """§6.3.5; bad options are <bad-request/><invalid-options/> (§6.3.7)."""
    node, sub = _own_sub(ctx, el)
    form = forms.find_form(el)
    if form is None:
        raise PubsubError("bad-request", "invalid-options")
    sub.options = forms.parse_subscribe_options(form)
    await _write(db_subscribe, node, Sub(sub.jid, sub.subid, sub.state, dict(sub.options)))
    return None


async def retrieve_items(ctx: Context, el: Element, rsm: Element | None) -> Element:
    """§6.5: all items, some by id (§6.5.8), the N most recent (§6.5.7), or a
    page of them (§6.5.4, XEP-0059); oldest first."""
    node = _node(ctx, el)
    await check_access(ctx, node)  # an owner always passes
    items = node.live_items()
    wanted = [i.get("id") for i in el.findall(f"{{{NS_PUBSUB}}}item") if i.get("id")]
    if wanted:
        by_id = {item.item_id: item for item in items}
        items = [by_id[i] for i in wanted if i in by_id]
    max_items = el.get("max_items")
    if max_items is not None:
        try:
            count = int(max_items)
        except ValueError:
            raise StanzaError("bad-request", "max_items is a number") from None
        items = items[-count:] if count > 0 else []
    page = None
    if rsm is not None:
        items, page = _rsm_page(items, rsm)
    result = _wrap(PUBSUB, "items", attrs={"node": node.name})
    out = result[0]
    for item in items:
        item_el = SubElement(out, f"{{{NS_PUBSUB}}}item", {"id": item.item_id})
        if item.payload is not None:
            item_el.append(item.payload)
    if page is not None:
        result.append(page)
    return result


def _rsm_page(items: list[StoredItem], rsm: Element) -> tuple[list[StoredItem], Element]:
    """XEP-0059 §2.1-§2.5 over the items in order: <max/>, <after/>, <before/>, <index/>."""
    ids = [item.item_id for item in items]
    total = len(items)
    limit_text = rsm.findtext(f"{{{NS_RSM}}}max")
    try:
        limit = int(limit_text) if limit_text is not None else total
    except ValueError:
        raise StanzaError("bad-request", "RSM max is a number") from None
    after = rsm.findtext(f"{{{NS_RSM}}}after")
    before_el = rsm.find(f"{{{NS_RSM}}}before")
    index_text = rsm.findtext(f"{{{NS_RSM}}}index")
    start = 0
    if after is not None:
        if after not in ids:
            raise StanzaError("item-not-found", "no such item to page after")  # XEP-0059 §2.6
        start = ids.index(after) + 1
        selected = items[start : start + limit]
    elif before_el is not None:
        before = before_el.text or ""
        end = total
        if before:
            if before not in ids:
                raise StanzaError("item-not-found", "no such item to page before")
            end = ids.index(before)
        start = max(0, end - limit)
        selected = items[start:end]
    else:
        if index_text is not None:
            try:
                start = int(index_text)
            except ValueError:
                raise StanzaError("bad-request", "RSM index is a number") from None
        selected = items[start : start + limit]
    page = Element(f"{{{NS_RSM}}}set")
    if selected:
        SubElement(page, f"{{{NS_RSM}}}first", {"index": str(start)}).text = selected[0].item_id
        SubElement(page, f"{{{NS_RSM}}}last").text = selected[-1].item_id
    SubElement(page, f"{{{NS_RSM}}}count").text = str(total)
    return selected, page


# -- owner: subscriptions and affiliations (§8.8, §8.9) ----------------------------


def get_subscriptions(ctx: Context, el: Element) -> Element:
    """§8.8.1."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    result = _wrap(OWNER, "subscriptions", attrs={"node": node.name})
    for sub in node.subs.values():
        result[0].append(_subscription_element(NS_OWNER, node.name, sub, with_node=False))
    return result


async def set_subscriptions(ctx: Context, el: Element) -> None:
    """§8.8.2: subscribed, pending, unconfigured or none for each JID; the
    subscriber is told (§8.8.4)."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    changes = []
    for entry in el.findall(f"{{{NS_OWNER}}}subscription"):
        state = entry.get("subscription") or ""
        try:
            jid = str(JID.parse(entry.get("jid") or ""))
        except InvalidJID:
            raise StanzaError("jid-malformed") from None
        if state not in ("none", "subscribed", "pending", "unconfigured"):
            raise StanzaError("bad-request", f"no subscription state {state!r}")
        changes.append((jid, state))
    for jid, state in changes:
        if state == "none":
            if node.subs.pop(jid, None) is not None:
                await _write(db_unsubscribe, node, jid)
        else:
            sub = node.subs.get(jid) or Sub(jid, secrets.token_hex(8))
            sub.state = state
            node.subs[jid] = sub
            await _write(db_subscribe, node, Sub(sub.jid, sub.subid, sub.state, dict(sub.options)))
        _notify_subscriber(ctx, node, jid, state)
    return None


def get_affiliations(ctx: Context, el: Element) -> Element:
    """§8.9.1."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    result = _wrap(OWNER, "affiliations", attrs={"node": node.name})
    affiliations = dict(node.affiliations)
    if ctx.pep:
        affiliations[ctx.service.jid] = "owner"
    for jid, affiliation in sorted(affiliations.items()):
        SubElement(
            result[0], f"{{{NS_OWNER}}}affiliation", {"jid": jid, "affiliation": affiliation}
        )
    return result


async def set_affiliations(ctx: Context, el: Element) -> None:
    """§8.9.2; a node keeps at least one owner; an outcast loses its subscription."""
    node = _node(ctx, el)
    _require_owner(ctx, node)
    changes = []
    for entry in el.findall(f"{{{NS_OWNER}}}affiliation"):
        affiliation = entry.get("affiliation") or ""
        if affiliation not in AFFILIATIONS:
            raise StanzaError("bad-request", f"no affiliation {affiliation!r}")
        try:
            jid = str(JID.parse(entry.get("jid") or "").bare)
        except InvalidJID:
            raise StanzaError("jid-malformed") from None
        changes.append((jid, affiliation))
    after = dict(node.affiliations)
    for jid, affiliation in changes:
        if affiliation == "none":
            after.pop(jid, None)
        else:
            after[jid] = affiliation
    if not ctx.pep and "owner" not in after.values():
        raise StanzaError("not-acceptable", "a node keeps at least one owner")
    for jid, affiliation in changes:
        if affiliation == "none":
            node.affiliations.pop(jid, None)
        else:
            node.affiliations[jid] = affiliation
        await _write(db_affiliate, node, jid, affiliation)
        if affiliation == "outcast":
            for sub_jid in [j for j in node.subs if str(JID.parse(j).bare) == jid]:
                del node.subs[sub_jid]
                await _write(db_unsubscribe, node, sub_jid)
    if node.config.get("access_model") == "whitelist":
        await _drop_unwhitelisted(ctx, node)
    return None
