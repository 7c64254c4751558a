"""The delivery service's rules (xmpp/delivery.py) in process, on sessions
bound over fake transports (tests/inprocess.py): which resources a bare
JID's message reaches (RFC 6121 §8.5.2.1.1), and that a recipient filter
applies to every kind of fan-out. test_delivery_rules.py drives the same
rules end to end over real sockets; this file pins them down without a
server process, so a change to them fails in a second.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from xmpp.protocol.jid import JID

from .inprocess import DOMAIN, bind, open_stream, run

ALICE = JID("alice", DOMAIN, "")
BOB = JID("bob", DOMAIN, "")


def sessions_of(server, user: str, priorities: dict[str, int | None]):
    """Bind `user`'s resources; an int is an available priority, None unavailable."""
    bound = {}
    for resource, priority in priorities.items():
        stream, transport = open_stream(server, authenticated=True, user=user)
        session = bind(stream, transport, resource)
        if priority is not None:
            session.became_available(priority)
        bound[resource] = (session, transport)
    return bound


def test_chat_goes_to_the_highest_non_negative_priority_headline_to_all_non_negative():
    """§8.5.2.1.1: chat/normal to the most available resources (ties: all of
    them), headline to every non-negative one; never a negative or an
    unavailable resource."""

    async def scenario(server, registry):
        bound = sessions_of(server, "alice", {"a": 5, "b": 5, "c": 0, "neg": -1, "away": None})
        delivery = server.router.delivery
        chosen = {s.jid.resource for s in delivery.message_targets(ALICE, "chat")}
        assert chosen == {"a", "b"}
        assert {s.jid.resource for s in delivery.message_targets(ALICE, None)} == {"a", "b"}
        assert {s.jid.resource for s in delivery.message_targets(ALICE, "headline")} == {
            "a",
            "b",
            "c",
        }
        bound["a"][0].became_available(-5)
        bound["b"][0].became_unavailable()
        assert [s.jid.resource for s in delivery.message_targets(ALICE, "chat")] == ["c"]

    run(scenario)


def test_only_negative_resources_get_no_message():
    """§8.5.2.1.1: a resource of negative priority is never chosen, even
    when it is the only one (the message goes offline instead)."""

    async def scenario(server, registry):
        sessions_of(server, "alice", {"neg": -1})
        assert server.router.delivery.message_targets(ALICE, "chat") == []
        assert server.router.delivery.message_targets(ALICE, "headline") == []

    run(scenario)


def test_a_recipient_filter_applies_to_every_fan_out():
    """@plugins.recipient_filter: built once per sender, asked per
    recipient; it keeps bytes from a refused recipient in to_available,
    fan_out and to_addresses alike, and lets the others through."""
    built_for = []

    def refuse_alice(sender, sessions):
        built_for.append(sender)
        return lambda to, account: to.bare == ALICE

    async def scenario(server, registry):
        registry.recipient_filter(refuse_alice)
        alice = sessions_of(server, "alice", {"r": 0})
        bob = sessions_of(server, "bob", {"r": 0})
        (alice_session, alice_out), (bob_session, bob_out) = alice["r"], bob["r"]
        delivery = server.router.delivery
        sender = JID("carol", DOMAIN, "x")

        delivery.to_available(b"<presence/>", [ALICE, BOB], sender)
        delivery.fan_out(
            b"<message",
            b"/>",
            [(alice_session, b" to='alice'"), (bob_session, b" to='bob'")],
            sender,
        )
        written = delivery.to_addresses(
            [str(ALICE), str(BOB)], lambda to: f"<message to='{to}'/>".encode(), sender
        )
        assert written == 1
        assert alice_out.written == b""
        assert bob_out.written == (b"<presence/><message to='bob'/><message to='bob@stream.test'/>")
        assert built_for == [sender, sender, sender]

    run(scenario)


def test_a_full_jid_reaches_that_session_only():
    """§8.5.3.1: a full JID is delivered as addressed, even to a resource that
    is not the most available; an unknown resource is declined."""

    async def scenario(server, registry):
        bound = sessions_of(server, "alice", {"high": 5, "low": 0})
        delivery = server.router.delivery
        stanza_to = JID("alice", DOMAIN, "low")
        message = Element("{jabber:client}message", {"to": str(stanza_to)})
        assert delivery.to_full_jid(message, stanza_to)
        assert b"<message" in bound["low"][1].written
        assert bound["high"][1].written == b""
        assert not delivery.to_full_jid(
            Element("{jabber:client}message"), JID("alice", DOMAIN, "gone")
        )

    run(scenario)
