"""Push notifications (XEP-0357), the user's server's side, over the wire.

The app server is a stand-in: a logged-in slixmpp client whose full JID is
registered as the push service. It records each publish it gets and answers
it with a result (or an error). slixmpp has no XEP-0357 plugin, so the
enable and disable IQs are written here by hand."""

from __future__ import annotations

import asyncio
import copy
import time
from xml.etree import ElementTree

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .clients import Client, connect, disconnect, iq_error, raw_login, send_iq
from .conftest import PASSWORD, RunningServer, private_server, start_server, stop_server

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUMMARY = "urn:xmpp:push:summary"

APP = "push-app"
USER = "push-user"
CONTACT = "push-contact"
DISABLER = "push-disabler"
REFUSED = "push-refused"
RESET = "push-reset"
QUIET = "push-quiet"
MALFORMED = "push-malformed"


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    register(xmpp_server, APP, USER, CONTACT, DISABLER, REFUSED, RESET, QUIET, MALFORMED)


def register(server: RunningServer, *names: str) -> None:
    lines = "".join(f"{name} {PASSWORD}\n" for name in names)
    server.manage("register", "--from-file", "-", input=lines)


class AppServer:
    """A stand-in app server on a client's full JID: records each publish IQ
    and answers it with a result, or with `error` (a condition) if given."""

    def __init__(self, client: Client, error: str | None = None) -> None:
        self.client = client
        self.error = error
        self.publishes: asyncio.Queue[ElementTree.Element] = asyncio.Queue()
        client.register_handler(
            Callback(
                "push publish",
                MatchXPath(f"{{jabber:client}}iq/{{{NS_PUBSUB}}}pubsub"),
                self._on_publish,
            )
        )

    @property
    def jid(self) -> str:
        return self.client.boundjid.full

    def _on_publish(self, iq) -> None:
        if iq["type"] != "set":
            return
        self.publishes.put_nowait(copy.deepcopy(iq.xml))
        reply = iq.reply(clear=True)
        if self.error:
            reply["type"] = "error"
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = self.error
        reply.send()

    async def next(self, timeout: float = 10) -> ElementTree.Element:
        return await asyncio.wait_for(self.publishes.get(), timeout)

    async def nothing_within(self, seconds: float) -> None:
        try:
            iq = await asyncio.wait_for(self.publishes.get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected publish: {ElementTree.tostring(iq)!r}")


def enable_xml(service: str, node: str, secret: str | None = None) -> str:
    form = ""
    if secret is not None:
        form = (
            f"<x xmlns='{NS_DATA}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x>"
        )
    return f"<enable xmlns='{NS_PUSH}' jid='{service}' node='{node}'>{form}</enable>"


def disable_xml(service: str, node: str | None = None) -> str:
    node_attr = f" node='{node}'" if node is not None else ""
    return f"<disable xmlns='{NS_PUSH}' jid='{service}'{node_attr}/>"


def form_fields(form: ElementTree.Element | None) -> dict[str, str]:
    assert form is not None
    return {
        field.get("var"): field.findtext(f"{{{NS_DATA}}}value")
        for field in form.iter(f"{{{NS_DATA}}}field")
    }


def publish_node(iq: ElementTree.Element) -> str:
    return iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish").get("node")


def summary(iq: ElementTree.Element) -> dict[str, str]:
    path = (
        f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish/{{{NS_PUBSUB}}}item/"
        f"{{{NS_PUSH}}}notification/{{{NS_DATA}}}x"
    )
    return form_fields(iq.find(path))


def publish_options(iq: ElementTree.Element) -> dict[str, str] | None:
    options = iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x")
    return form_fields(options) if options is not None else None


def registration_count(server: RunningServer, user: str) -> int:
    code = (
        "from xmpp.models import PushRegistration; "
        f"print(PushRegistration.objects.filter(user__username={user!r}).count())"
    )
    return int(server.manage("shell", "-v", "0", "-c", code).stdout.split()[-1])


async def enable_then_leave(server: RunningServer, user: str, *payloads: str) -> None:
    """Log in as `user`, send each enable/disable, and end the session."""
    client = await connect(server, user, "phone")
    try:
        for payload in payloads:
            assert await send_iq(client, "set", payload) is None
    finally:
        await disconnect(client)


def test_offline_message_publishes_the_summary_without_the_body(xmpp_server, accounts):
    """A message with a body to an account that enabled push and has no
    available resource goes to offline storage, and the app server gets
    exactly one publish from the user's bare JID to the node: the summary form
    (FORM_TYPE, message-count 1, last-message-sender the contact's full JID),
    no body by default, and the publish-options given at enable (§5, §7).
    A second message counts 2."""

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "summary"))
        contact = await connect(xmpp_server, CONTACT, "desk")
        try:
            await enable_then_leave(xmpp_server, USER, enable_xml(app.jid, "node-1", "s3cret"))
            contact.send_message(mto=xmpp_server.jid(USER), mbody="wherefore", mtype="chat")
            first = await app.next()
            await app.nothing_within(1.0)
            contact.send_message(mto=xmpp_server.jid(USER), mbody="again", mtype="chat")
            second = await app.next()
            return first, second, contact.boundjid.full
        finally:
            await disconnect(app.client, contact)

    first, second, contact_jid = asyncio.run(scenario())
    assert first.get("type") == "set"
    assert first.get("from") == xmpp_server.jid(USER)
    assert publish_node(first) == "node-1"
    fields = summary(first)
    assert fields["FORM_TYPE"] == SUMMARY
    assert fields["message-count"] == "1"
    assert fields["last-message-sender"] == contact_jid
    assert "last-message-body" not in fields
    assert publish_options(first) == {"FORM_TYPE": PUBLISH_OPTIONS, "secret": "s3cret"}
    assert summary(second)["message-count"] == "2"


def test_a_bind_resets_the_count_and_unimportant_messages_push_nothing(xmpp_server, accounts):
    """message-count restarts at 1 after a session of the account has bound;
    a receipt without a body is stored offline but wakes no device."""

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "reset"))
        contact = await connect(xmpp_server, CONTACT, "reset")
        try:
            await enable_then_leave(xmpp_server, RESET, enable_xml(app.jid, "n"))
            to = xmpp_server.jid(RESET)
            contact.send_message(mto=to, mbody="one", mtype="chat")
            contact.send_message(mto=to, mbody="two", mtype="chat")
            counts = [summary(await app.next())["message-count"] for _ in range(2)]
            receipt = contact.make_message(mto=to)
            receipt.append(ElementTree.fromstring("<received xmlns='urn:xmpp:receipts' id='r1'/>"))
            receipt.send()
            await app.nothing_within(1.0)
            await disconnect(await connect(xmpp_server, RESET, "back", presence=False))
            contact.send_message(mto=to, mbody="three", mtype="chat")
            counts.append(summary(await app.next())["message-count"])
            return counts
        finally:
            await disconnect(app.client, contact)

    assert asyncio.run(scenario()) == ["1", "2", "1"]


def test_body_is_included_when_the_setting_is_on(tmp_path_factory):
    """With XMPP_PUSH_INCLUDE_BODY on, the summary carries last-message-body."""
    with private_server(tmp_path_factory, "push-body", XMPP_PUSH_INCLUDE_BODY="true") as server:
        register(server, "pushapp")

        async def scenario():
            app = AppServer(await connect(server, "pushapp", "app"))
            contact = await connect(server, "bob", "desk")
            try:
                await enable_then_leave(server, "alice", enable_xml(app.jid, "body-node"))
                contact.send_message(mto=server.jid("alice"), mbody="the body", mtype="chat")
                return await app.next()
            finally:
                await disconnect(app.client, contact)

        fields = summary(asyncio.run(scenario()))
    assert fields["last-message-body"] == "the body"
    assert fields["message-count"] == "1"


def test_disable_by_node_then_for_the_whole_service(xmpp_server, accounts):
    """Disabling one node stops its publishes and keeps the service's other
    node; disabling without a node stops them all and removes the rows (§6)."""

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "disable"))
        contact = await connect(xmpp_server, CONTACT, "disable")
        to = xmpp_server.jid(DISABLER)
        try:
            await enable_then_leave(
                xmpp_server,
                DISABLER,
                enable_xml(app.jid, "node-a"),
                enable_xml(app.jid, "node-b"),
                disable_xml(app.jid, "node-a"),
            )
            contact.send_message(mto=to, mbody="to b only", mtype="chat")
            nodes = [publish_node(await app.next())]
            await app.nothing_within(1.0)
            rows_after_node = registration_count(xmpp_server, DISABLER)
            await enable_then_leave(xmpp_server, DISABLER, disable_xml(app.jid))
            contact.send_message(mto=to, mbody="to nobody", mtype="chat")
            await app.nothing_within(1.5)
            return nodes, rows_after_node
        finally:
            await disconnect(app.client, contact)

    nodes, rows_after_node = asyncio.run(scenario())
    assert nodes == ["node-b"]
    assert rows_after_node == 1
    assert registration_count(xmpp_server, DISABLER) == 0


def test_an_error_from_the_app_server_removes_the_registration(xmpp_server, accounts):
    """An <iq type='error'/> answer to a publish disables that registration
    (§8): it is deleted, and the next offline message publishes nothing."""

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "refusing"), error="item-not-found")
        contact = await connect(xmpp_server, CONTACT, "refused")
        to = xmpp_server.jid(REFUSED)
        try:
            await enable_then_leave(xmpp_server, REFUSED, enable_xml(app.jid, "gone"))
            stored_before = registration_count(xmpp_server, REFUSED)
            contact.send_message(mto=to, mbody="first", mtype="chat")
            await app.next()
            deadline = time.monotonic() + 10
            while registration_count(xmpp_server, REFUSED) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            contact.send_message(mto=to, mbody="second", mtype="chat")
            await app.nothing_within(1.5)
            return stored_before
        finally:
            await disconnect(app.client, contact)

    assert asyncio.run(scenario()) == 1
    assert registration_count(xmpp_server, REFUSED) == 0


def test_a_remote_app_server_that_cannot_be_reached_keeps_its_registration(xmpp_server, accounts):
    """No server-to-server yet: a publish to another domain is answered
    <remote-server-not-found/>, a transient failure that must not disable the
    registration (§8; decided in xmpp/push.py)."""

    async def scenario():
        await enable_then_leave(
            xmpp_server, QUIET, enable_xml("push.unreachable.example", "remote")
        )
        contact = await connect(xmpp_server, CONTACT, "quiet")
        try:
            contact.send_message(mto=xmpp_server.jid(QUIET), mbody="hello", mtype="chat")
            await asyncio.sleep(1.0)
        finally:
            await disconnect(contact)

    asyncio.run(scenario())
    assert registration_count(xmpp_server, QUIET) == 1
    assert "remote-server-not-found); kept" in xmpp_server.log()


def test_the_account_advertises_push(xmpp_server, accounts):
    """The account's disco#info lists urn:xmpp:push:0 (§4), which is where
    clients look before they enable."""

    async def scenario():
        client = await connect(xmpp_server, MALFORMED, "disco")
        try:
            info = await client.plugin["xep_0030"].get_info(jid=xmpp_server.jid(MALFORMED))
            return info["disco_info"]["features"]
        finally:
            await disconnect(client)

    assert NS_PUSH in asyncio.run(scenario())


def test_malformed_enable_and_disable_are_refused(xmpp_server, accounts):
    """An enable without 'jid' or 'node', or with a form that is not
    publish-options, is <bad-request/>; a 'jid' that is not one is
    <jid-malformed/>; a disable without 'jid' is <bad-request/>. Nothing is
    stored."""

    async def scenario():
        client = await connect(xmpp_server, MALFORMED, "bad")
        try:
            wrong_form = (
                f"<enable xmlns='{NS_PUSH}' jid='app.localhost' node='n'>"
                f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'>"
                "<value>urn:example:other</value></field></x></enable>"
            )
            return [
                await iq_error(client, "set", f"<enable xmlns='{NS_PUSH}' node='n'/>"),
                await iq_error(client, "set", f"<enable xmlns='{NS_PUSH}' jid='app.localhost'/>"),
                await iq_error(client, "set", wrong_form),
                await iq_error(client, "set", f"<enable xmlns='{NS_PUSH}' jid='a@b@c' node='n'/>"),
                await iq_error(client, "set", f"<disable xmlns='{NS_PUSH}'/>"),
            ]
        finally:
            await disconnect(client)

    assert asyncio.run(scenario()) == [
        "bad-request",
        "bad-request",
        "bad-request",
        "jid-malformed",
        "bad-request",
    ]
    assert registration_count(xmpp_server, MALFORMED) == 0


def test_registrations_survive_a_restart(tmp_path):
    """Registrations are stored: after the server stops and starts again on
    the same data, a message for the account, which has not logged in since,
    is still pushed, with the publish-options given before the restart."""
    server = start_server(tmp_path)
    try:
        register(server, "restart-app", "restart-user", "restart-contact")

        async def enable():
            app = await connect(server, "restart-app", "app")
            try:
                await enable_then_leave(
                    server, "restart-user", enable_xml(app.boundjid.full, "kept", "token")
                )
            finally:
                await disconnect(app)

        asyncio.run(enable())
        assert stop_server(server, drop_database=False) == 0
    except BaseException:
        stop_server(server)
        raise
    server = start_server(tmp_path)
    try:

        async def after_restart():
            app = AppServer(await connect(server, "restart-app", "app"))
            contact = await connect(server, "restart-contact", "desk")
            try:
                contact.send_message(mto=server.jid("restart-user"), mbody="hi", mtype="chat")
                return await app.next()
            finally:
                await disconnect(app.client, contact)

        iq = asyncio.run(after_restart())
    finally:
        stop_server(server)
    assert publish_node(iq) == "kept"
    assert publish_options(iq)["secret"] == "token"
    assert summary(iq)["message-count"] == "1"


def _raw_user_with_push(server: RunningServer, user: str, app_jid: str, node: str):
    """A raw stream logged in as `user` that enabled push to `app_jid`/`node`."""
    stream = raw_login(server, user, "handset")
    stream.send(f"<iq type='set' id='push-on'>{enable_xml(app_jid, node)}</iq>")
    assert 'type="result"' in stream.read_until("id=.push-on.").decode()
    stream.send("<presence/>")
    return stream


def test_a_detached_session_pushes_what_reaches_it(xmpp_server, accounts):
    """§7 with XEP-0198: the user's phone lost its connection and its session
    waits to be resumed; a message for it is kept for the resumption and the
    app server is told, once."""
    register(xmpp_server, "push-detached")

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "detached"))
        contact = await connect(xmpp_server, CONTACT, "detached")
        try:
            phone = await asyncio.to_thread(
                _raw_user_with_push, xmpp_server, "push-detached", app.jid, "node-d"
            )
            phone.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            await asyncio.to_thread(phone.read_until, "<enabled[^>]*/>")
            phone.close()  # no </stream:stream>: detached, not ended
            await asyncio.sleep(0.5)
            contact.send_message(
                mto=xmpp_server.jid("push-detached", "handset"), mbody="wake up", mtype="chat"
            )
            publish = await app.next()
            await app.nothing_within(1.0)
            return publish
        finally:
            await disconnect(app.client, contact)

    publish = asyncio.run(scenario())
    assert publish_node(publish) == "node-d"
    assert summary(publish)["message-count"] == "1"


def test_an_inactive_session_pushes_what_reaches_it(xmpp_server, accounts):
    """§7 with XEP-0352: a client that said <inactive/> (an app in the
    background) gets the message and its device is woken by a push."""
    register(xmpp_server, "push-inactive")

    async def scenario():
        app = AppServer(await connect(xmpp_server, APP, "inactive"))
        contact = await connect(xmpp_server, CONTACT, "inactive")
        try:
            phone = await asyncio.to_thread(
                _raw_user_with_push, xmpp_server, "push-inactive", app.jid, "node-i"
            )
            phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
            await asyncio.sleep(0.3)
            contact.send_message(
                mto=xmpp_server.jid("push-inactive"), mbody="in the background", mtype="chat"
            )
            publish = await app.next()
            got = await asyncio.to_thread(phone.read_until, b"in the background")
            phone.close()
            return publish, got
        finally:
            await disconnect(app.client, contact)

    publish, got = asyncio.run(scenario())
    assert publish_node(publish) == "node-i"
    assert b"in the background" in got
