"""slixmpp clients for the roster and presence tests (RFC 6121).

A `RosterClient` never answers a subscription request by itself (slixmpp
approves and subscribes back by default), and records what tells a test
what the server did: the roster pushes it received (§2.1.6) and the
subscription stanzas delivered to it (§3).

The server handles a client's stanzas in order and delivers what they cause
to online accounts before it reads the next one, so the answer to a ping is
a barrier: once it is back, everything the client sent before it has been
processed. A barrier on the receiving client then shows everything that was
written to it meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from slixmpp import Iq

from .clients import Client, RawStream
from .conftest import PASSWORD, RunningServer

NS_ROSTER = "jabber:iq:roster"
ROSTER_QUERY = f"{{{NS_ROSTER}}}query"
ROSTER_ITEM = f"{{{NS_ROSTER}}}item"
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


@dataclass(frozen=True)
class Item:
    """A roster item as the server sends it (RFC 6121 §2.1.2)."""

    subscription: str
    ask: str | None = None
    approved: bool = False
    name: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def from_xml(cls, item: ET.Element) -> Item:
        return cls(
            subscription=item.get("subscription", "none"),
            ask=item.get("ask"),
            approved=item.get("approved") in ("true", "1"),
            name=item.get("name", ""),
            groups=tuple(sorted(g.text or "" for g in item.findall(f"{{{NS_ROSTER}}}group"))),
        )


@dataclass(frozen=True)
class Push:
    jid: str
    item: Item
    ver: str | None


class RosterClient(Client):
    """A client that leaves subscriptions to the test and records roster pushes."""

    def __init__(self, jid: str) -> None:
        super().__init__(jid)
        self.auto_authorize = None  # neither approve nor deny requests
        self.auto_subscribe = False
        self.pushes: list[Push] = []
        self.received: list[tuple[str, str]] = []  # (type, bare 'from') of subscription stanzas
        self.presence_log: list[tuple[str, str]] = []  # (type, full 'from'), not subscriptions
        self.add_event_handler("roster_update", self._record_push)
        self.add_event_handler("presence", self._record_presence)
        for kind in SUBSCRIPTION_TYPES:
            self.add_event_handler(f"presence_{kind}", self._record_subscription)

    def _record_push(self, iq: Iq) -> None:
        if iq["type"] != "set":
            return
        query = iq.xml.find(ROSTER_QUERY)
        for item in query.findall(ROSTER_ITEM):
            self.pushes.append(Push(item.get("jid"), Item.from_xml(item), query.get("ver")))

    def _record_subscription(self, presence) -> None:
        self.received.append((presence["type"], presence["from"].bare))

    def _record_presence(self, presence) -> None:
        if presence["type"] not in SUBSCRIPTION_TYPES:
            self.presence_log.append((presence["type"], presence["from"].full))

    def presences_from(self, jid: str, since: int = 0) -> list[str]:
        """Types of the presence received from `jid` (a bare JID matches its resources)."""
        return [
            kind
            for kind, sender in self.presence_log[since:]
            if sender == jid or sender.partition("/")[0] == jid
        ]

    def pushes_for(self, jid: str, since: int = 0) -> list[Item]:
        return [push.item for push in self.pushes[since:] if push.jid == jid]

    def received_from(self, jid: str, since: int = 0) -> list[str]:
        return [kind for kind, sender in self.received[since:] if sender == jid]


async def login(
    server: RunningServer,
    user: str,
    resource: str = "roster",
    *,
    roster: bool = True,
    presence: bool = True,
    priority: int | None = None,
    timeout: float = 10,
) -> RosterClient:
    """Log in over STARTTLS; ask for the roster (so that pushes come, §2.1.6)
    and send initial presence unless told not to, and wait until the server
    has processed both."""
    client = RosterClient(server.jid(user, resource))
    client.enable_direct_tls = False
    client.connect(server.host, server.c2s_port)
    await asyncio.wait_for(client.started.wait(), timeout)
    if roster:
        result = await roster_get(client)
        client.event("roster_update", result)  # fills client.client_roster
    if presence:
        await send_available(client, priority)
    return client


async def send_available(client: RosterClient, priority: int | None = None) -> None:
    if priority is None:
        client.send_presence()
    else:
        client.send_presence(ppriority=priority)
    await barrier(client)


async def logout(*clients: RosterClient) -> None:
    for client in clients:
        client.disconnect()
    for client in clients:
        try:
            await asyncio.wait_for(client.disconnected_event.wait(), 5)
        except TimeoutError:
            pass


def roster_iq(client: RosterClient, iq_type: str, query: str, to: str | None = None) -> Iq:
    """An IQ of `iq_type` with `query`, the XML of a jabber:iq:roster <query/>."""
    iq = client.Iq()
    iq["type"] = iq_type
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(query))
    return iq


async def roster_get(client: RosterClient, ver: str | None = None, to: str | None = None) -> Iq:
    """A roster get (§2.1.3), with XEP-0237 'ver' if given; returns the result."""
    ver_attr = "" if ver is None else f" ver='{ver}'"
    iq = roster_iq(client, "get", f"<query xmlns='{NS_ROSTER}'{ver_attr}/>", to)
    return await iq.send(timeout=10)


def items_of(result: Iq) -> dict[str, Item]:
    query = result.xml.find(ROSTER_QUERY)
    if query is None:
        return {}
    return {item.get("jid"): Item.from_xml(item) for item in query.findall(ROSTER_ITEM)}


async def server_roster(client: RosterClient) -> dict[str, Item]:
    """The roster as the server holds it, by contact JID (also a barrier)."""
    return items_of(await roster_get(client))


async def barrier(*clients: RosterClient) -> None:
    """Return once the server has processed what each client sent so far: a
    ping to the server (XEP-0199), which does not make a resource interested
    in roster pushes as a roster get would."""
    for client in clients:
        await client.plugin["xep_0199"].ping(client.boundjid.domain, timeout=10)


async def roster_set(client: RosterClient, item_xml: str) -> Iq:
    """A roster set (§2.3, §2.5) with the given <item/> XML (or several)."""
    iq = roster_iq(client, "set", f"<query xmlns='{NS_ROSTER}'>{item_xml}</query>")
    return await iq.send(timeout=10)


async def send_subscription(client: RosterClient, kind: str, to: str) -> None:
    """Send presence of type `kind` to `to` and wait until the server processed it."""
    client.send_presence(pto=to, ptype=kind)
    await barrier(client)


# How a user and a contact, both online, reach each state of RFC 6121
# Appendix A.1 (the user's side) with the stanzas a client would send.
STEPS_TO_STATE = {
    "None": (),
    "None + Pending Out": (("user", "subscribe"),),
    "None + Pending In": (("contact", "subscribe"),),
    "None + Pending Out+In": (("user", "subscribe"), ("contact", "subscribe")),
    "To": (("user", "subscribe"), ("contact", "subscribed")),
    "To + Pending In": (("user", "subscribe"), ("contact", "subscribed"), ("contact", "subscribe")),
    "From": (("contact", "subscribe"), ("user", "subscribed")),
    "From + Pending Out": (("contact", "subscribe"), ("user", "subscribed"), ("user", "subscribe")),
    "Both": (
        ("user", "subscribe"),
        ("contact", "subscribed"),
        ("contact", "subscribe"),
        ("user", "subscribed"),
    ),
}


async def drive_to_state(user: RosterClient, contact: RosterClient, state: str) -> None:
    """Exchange the subscription stanzas that put `user` in `state` towards `contact`."""
    clients = {"user": user, "contact": contact}
    for sender, kind in STEPS_TO_STATE[state]:
        other = contact if sender == "user" else user
        await send_subscription(clients[sender], kind, other.boundjid.bare)
    await barrier(user, contact)


def stream_features_after_login(server: RunningServer, user: str) -> ET.Element:
    """The <stream:features/> offered after authentication (RFC 6120 §7), read
    over a raw stream: STARTTLS, SASL PLAIN, stream restart."""
    stream = RawStream(server)
    try:
        stream.starttls()
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        stream.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        stream.read_until("<success[^>]*(/>|>[^<]*</success>)")
        data = stream.open().decode()
    finally:
        stream.close()
    features = re.search(r"<stream:features.*</stream:features>", data, re.S).group(0)
    return ET.fromstring(
        "<root xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>"
        f"{features}</root>"
    )[0]
