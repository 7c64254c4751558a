"""In-process checks of xmpp/push.py's parts that no wire test reaches yet:
which messages are pushed, and `notify_away`, the hook stream management
(XEP-0198) and client state indication (XEP-0352) will call."""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree

from xmpp import push
from xmpp.protocol.jid import JID

from .inprocess import DOMAIN, bind, open_stream, run

NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def message(inner: str, attrs: str = "type='chat' from='juliet@example.org/balcony'") -> str:
    return f"<message xmlns='jabber:client' {attrs}>{inner}</message>"


def pushed(xml: str) -> bool:
    return push.pushed_message(ElementTree.fromstring(xml)) is not None


def test_important_messages_are_the_ones_pushed():
    """A body, an OMEMO payload without one, or a call proposal wake a device;
    chat states, an empty body, headlines, a groupchat subject and a sent
    carbon do not; a received carbon is judged by the message it carries."""
    assert pushed(message("<body>hi</body>"))
    assert pushed(message("<encrypted xmlns='eu.siacs.conversations.axolotl'/>"))
    assert pushed(message("<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>"))
    assert not pushed(message("<active xmlns='http://jabber.org/protocol/chatstates'/>"))
    assert not pushed(message("<body> </body>"))
    assert not pushed(message("<body>news</body>", "type='headline'"))
    assert not pushed(message("<subject>topic</subject><body>x</body>", "type='groupchat'"))
    forwarded = (
        "<forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' type='chat'><body>hi</body></message></forwarded>"
    )
    assert not pushed(message(f"<sent xmlns='urn:xmpp:carbons:2'>{forwarded}</sent>"))
    assert pushed(message(f"<received xmlns='urn:xmpp:carbons:2'>{forwarded}</received>"))


def test_notify_away_pushes_the_sessions_own_registrations_once():
    """notify_away publishes to the registrations the away session enabled,
    not the account's others, and once per stanza even when two of the
    account's sessions report it in the same loop turn."""

    async def scenario(server, registry):
        app_stream, app_transport = open_stream(server, True, "app")
        bind(app_stream, app_transport, "push")
        phone_stream, phone_transport = open_stream(server, True, "user")
        phone = bind(phone_stream, phone_transport, "phone")
        owner = JID("user", DOMAIN, "")
        mine = push.Registration(JID("app", DOMAIN, "push"), "mine")
        other = push.Registration(JID("app", DOMAIN, "push"), "other")
        push.registrations.add(owner, mine)
        push.registrations.add(owner, other)
        try:
            phone.account.data[push.ENABLED_BY] = {phone: {mine.key}}
            stanza = ElementTree.fromstring(message("<body>hi</body>"))
            first = push.notify_away(phone, stanza)
            again = push.notify_away(phone, stanza)
            chat_state = push.notify_away(
                phone,
                ElementTree.fromstring(
                    message("<active xmlns='http://jabber.org/protocol/chatstates'/>")
                ),
            )
            for _ in range(3):
                await asyncio.sleep(0)
            written = bytes(app_transport.written)
            return first, again, chat_state, written, mine.count, other.count
        finally:
            push.registrations.clear()

    results = []

    async def collect(server, registry):
        results.append(await scenario(server, registry))

    run(collect)
    first, again, chat_state, written, mine_count, other_count = results[0]
    assert (first, again, chat_state) == (1, 0, 0)
    assert written.count(b"<publish ") == 1
    assert b'node="mine"' in written or b"node='mine'" in written
    assert b"other" not in written
    assert (mine_count, other_count) == (1, 0)
