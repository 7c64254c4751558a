"""vcard-temp (XEP-0054): one's own vCard, another user's, the size limit; and
the avatar hash the server adds to presence (XEP-0153)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from types import SimpleNamespace
from xml.etree import ElementTree as ET

import pytest

from .clients import as_user, connect, disconnect, iq_error, send_iq
from .conftest import PASSWORD

NS_VCARD = "vcard-temp"
NS_UPDATE = "vcard-temp:x:update"
OWNER = "vcard-owner"
READER = "vcard-reader"
NO_CARD = "vcard-nocard"
AVATAR = "vcard-avatar"
# A 1x1 PNG: what a client would put in PHOTO/BINVAL.
IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def accounts(xmpp_server):
    names = (OWNER, READER, NO_CARD, AVATAR)
    xmpp_server.manage(
        "register", "--from-file", "-", input="".join(f"{n} {PASSWORD}\n" for n in names)
    )
    return names


def vcard(fn: str, extra: str = "") -> str:
    return f"<vCard xmlns='{NS_VCARD}'><FN>{fn}</FN>{extra}</vCard>"


def test_own_vcard_is_empty_before_one_is_set(xmpp_server, accounts):
    """Getting one's own vCard (no 'to') before setting one gives an IQ result with
    an empty <vCard/> (XEP-0054 §3.1)."""

    async def scenario(client):
        return await send_iq(client, "get", f"<vCard xmlns='{NS_VCARD}'/>")

    card = as_user(xmpp_server, NO_CARD, "own-empty", scenario)
    assert card.tag == f"{{{NS_VCARD}}}vCard"
    assert len(card) == 0


def test_own_vcard_set_is_returned_by_get(xmpp_server, accounts):
    """A vCard set without 'to' is stored whole and returned by the next get of
    one's own vCard, with or without the own bare JID as 'to' (XEP-0054 §3.1, §3.2)."""

    async def scenario(client):
        assert await send_iq(client, "set", vcard("Owner One", "<NICKNAME>o1</NICKNAME>")) is None
        without_to = await send_iq(client, "get", f"<vCard xmlns='{NS_VCARD}'/>")
        with_to = await send_iq(
            client, "get", f"<vCard xmlns='{NS_VCARD}'/>", to=xmpp_server.jid(OWNER)
        )
        return without_to, with_to

    for card in as_user(xmpp_server, OWNER, "own-set", scenario):
        assert card.findtext(f"{{{NS_VCARD}}}FN") == "Owner One"
        assert card.findtext(f"{{{NS_VCARD}}}NICKNAME") == "o1"


def test_a_new_vcard_replaces_the_old_one(xmpp_server, accounts):
    """A set replaces the whole vCard; there are no partial updates (XEP-0054 §3.2)."""

    async def scenario(client):
        await send_iq(client, "set", vcard("First", "<NICKNAME>gone</NICKNAME>"))
        await send_iq(client, "set", vcard("Second"))
        return await send_iq(client, "get", f"<vCard xmlns='{NS_VCARD}'/>")

    card = as_user(xmpp_server, OWNER, "replace", scenario)
    assert card.findtext(f"{{{NS_VCARD}}}FN") == "Second"
    assert card.find(f"{{{NS_VCARD}}}NICKNAME") is None


def test_another_users_vcard_is_answered_by_the_server(xmpp_server, accounts):
    """A get to another user's bare JID is answered by the server on that user's
    behalf, from the user's bare JID, with the stored vCard (XEP-0054 §3.3)."""

    async def scenario():
        owner = await connect(xmpp_server, OWNER, "published")
        reader = await connect(xmpp_server, READER, "reading")
        try:
            await send_iq(owner, "set", vcard("Shown To Others"))
            iq = reader.make_iq(ito=xmpp_server.jid(OWNER), itype="get")
            iq.append(ET.fromstring(f"<vCard xmlns='{NS_VCARD}'/>"))
            return await iq.send(timeout=10)
        finally:
            await disconnect(owner, reader)

    result = asyncio.run(scenario())
    assert result["from"].full == xmpp_server.jid(OWNER)
    assert result.xml[0].findtext(f"{{{NS_VCARD}}}FN") == "Shown To Others"


def test_another_users_missing_vcard_is_service_unavailable(xmpp_server, accounts):
    """Another user's vCard that was never set is <service-unavailable/> (XEP-0054 §3.3)."""

    async def scenario(client):
        return await iq_error(
            client, "get", f"<vCard xmlns='{NS_VCARD}'/>", to=xmpp_server.jid(NO_CARD)
        )

    assert as_user(xmpp_server, READER, "missing", scenario) == "service-unavailable"


def test_vcard_of_no_such_account_is_service_unavailable(xmpp_server, accounts):
    """The vCard of an account that does not exist gets the same answer as a missing
    vCard, <service-unavailable/> (XEP-0054 §3.3, RFC 6121 §8.5.1)."""

    async def scenario(client):
        return await iq_error(
            client, "get", f"<vCard xmlns='{NS_VCARD}'/>", to=xmpp_server.jid("vcard-nobody")
        )

    assert as_user(xmpp_server, READER, "nobody", scenario) == "service-unavailable"


def test_setting_another_users_vcard_is_forbidden(xmpp_server, accounts):
    """A set addressed to another user's bare JID is <forbidden/> and changes nothing
    (XEP-0054 §3.2)."""

    async def scenario():
        reader = await connect(xmpp_server, READER, "vandal")
        owner = await connect(xmpp_server, OWNER, "victim")
        try:
            await send_iq(owner, "set", vcard("Untouched"))
            condition = await iq_error(reader, "set", vcard("Defaced"), to=xmpp_server.jid(OWNER))
            card = await send_iq(owner, "get", f"<vCard xmlns='{NS_VCARD}'/>")
            return condition, card
        finally:
            await disconnect(reader, owner)

    condition, card = asyncio.run(scenario())
    assert condition == "forbidden"
    assert card.findtext(f"{{{NS_VCARD}}}FN") == "Untouched"


def test_vcard_over_the_size_limit_is_not_acceptable(xmpp_server, accounts):
    """A vCard larger than XMPP_VCARD_MAX_SIZE (64 KiB by default) is refused with
    <not-acceptable/>."""

    async def scenario(client):
        return await iq_error(client, "set", vcard("Big", f"<DESC>{'x' * 70_000}</DESC>"))

    assert as_user(xmpp_server, READER, "too-big", scenario) == "not-acceptable"


def test_account_disco_lists_vcard_temp(xmpp_server, accounts):
    """disco#info of an account lists the feature vcard-temp (XEP-0054 §4)."""

    async def scenario(client):
        return await client.plugin["xep_0030"].get_info(
            jid=xmpp_server.jid(OWNER), local=False, timeout=10
        )

    info = as_user(xmpp_server, READER, "disco", scenario)
    assert NS_VCARD in info["disco_info"]["features"]


# -- XEP-0153: the avatar hash ------------------------------------------------


def photo(binval: str) -> ET.Element:
    return ET.fromstring(
        f"<vCard xmlns='{NS_VCARD}'><PHOTO><TYPE>image/png</TYPE>"
        f"<BINVAL>{binval}</BINVAL></PHOTO></vCard>"
    )


def test_photo_hash_is_the_sha1_of_the_decoded_binval():
    """The hash is the SHA-1 of the image data, not of its base64, and whitespace
    in the base64 is ignored (XEP-0153 §3.1, §4.6)."""
    from xmpp.vcard import photo_hash

    encoded = base64.b64encode(IMAGE).decode()
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))
    assert photo_hash(photo(wrapped)) == hashlib.sha1(IMAGE).hexdigest()
    assert photo_hash(ET.fromstring(vcard("No Photo"))) == ""


def fake_session(cached):
    return SimpleNamespace(account=SimpleNamespace(data={"vcard.photo_hash": cached}))


def test_presence_without_update_gets_the_photo_hash():
    """An available broadcast presence whose client sent no update element gets
    <x xmlns='vcard-temp:x:update'><photo>HASH</photo></x> (XEP-0153 §3.1)."""
    from xmpp.vcard import add_photo_hash

    presence = ET.Element("{jabber:client}presence")
    add_photo_hash(fake_session("ab" * 20), presence)
    assert presence.findtext(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo") == "ab" * 20


def test_presence_for_a_vcard_without_photo_gets_an_empty_photo():
    """When the vCard has no photo the added update element has an empty <photo/>,
    meaning no avatar (XEP-0153 §4.1 rule 3); with no vCard nothing is added."""
    from xmpp.vcard import add_photo_hash

    presence = ET.Element("{jabber:client}presence")
    add_photo_hash(fake_session(""), presence)
    assert presence.find(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo") is not None
    assert not presence.findtext(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo")
    bare = ET.Element("{jabber:client}presence")
    add_photo_hash(fake_session(None), bare)
    assert len(bare) == 0


def test_clients_own_update_element_is_left_alone():
    """A presence that already carries an update element, and unavailable presence,
    are not changed."""
    from xmpp.vcard import add_photo_hash

    presence = ET.fromstring(f"<presence xmlns='jabber:client'><x xmlns='{NS_UPDATE}'/></presence>")
    add_photo_hash(fake_session("ab" * 20), presence)
    assert presence.find(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo") is None
    gone = ET.Element("{jabber:client}presence", {"type": "unavailable"})
    add_photo_hash(fake_session("ab" * 20), gone)
    assert len(gone) == 0


def test_broadcast_presence_carries_the_hash_of_the_published_photo(xmpp_server, accounts):
    """After a resource publishes a vCard with a PHOTO, its broadcast presence without
    an update element reaches the user's other resource with the photo's SHA-1
    added by the server (XEP-0153 §3.1)."""

    async def scenario():
        publisher = await connect(xmpp_server, AVATAR, "publisher", presence=False)
        watcher = await connect(xmpp_server, AVATAR, "watcher")
        try:
            binval = base64.b64encode(IMAGE).decode()
            await send_iq(
                publisher,
                "set",
                f"<vCard xmlns='{NS_VCARD}'><PHOTO><TYPE>image/png</TYPE>"
                f"<BINVAL>{binval}</BINVAL></PHOTO></vCard>",
            )
            publisher.send_presence()
            while True:
                presence = await asyncio.wait_for(watcher.presences.get(), 10)
                if presence["from"].full == publisher.boundjid.full:
                    return presence.xml
        finally:
            await disconnect(publisher, watcher)

    presence = asyncio.run(scenario())
    photo_el = presence.find(f"{{{NS_UPDATE}}}x/{{{NS_UPDATE}}}photo")
    assert photo_el is not None
    assert photo_el.text == hashlib.sha1(IMAGE).hexdigest()
