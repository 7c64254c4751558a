"""Roles and affiliations (XEP-0045 §8-§10) and invitations (§7.8, XEP-0249):
kick, voice, ban, membership, moderators, admins and owners, their lists,
the errors for those who lack the right (<forbidden/>, <not-allowed/>,
<conflict/>, <item-not-found/>), and a server administrator destroying any
room (§10.9). Several slixmpp clients over real sockets."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import urllib.parse
import urllib.request

import pytest

from .conftest import PASSWORD
from .muc_clients import (
    NS_ADMIN,
    NS_OWNER,
    NS_USER,
    SERVICE,
    connect_muc,
    disconnect,
    error_condition,
    iq_error,
    item_of,
    make_staff,
    register,
    send_iq,
    status_codes,
)

USERS = ("adm-ann", "adm-ben", "adm-cat", "adm-dan", "adm-root")


@pytest.fixture(scope="module")
def server(xmpp_server):
    register(xmpp_server, *USERS)
    make_staff(xmpp_server, "adm-root")
    return xmpp_server


def run(scenario):
    return asyncio.run(scenario)


async def clients(server, *users: str):
    return [await connect_muc(server, user) for user in users]


def jid(user: str) -> str:
    return f"{user}@localhost"


def test_kick(server):
    """§8.2: a moderator kicks a participant (status 307, actor, reason);
    a participant may not kick (<forbidden/>); nobody kicks an owner
    (<not-allowed/>); an unknown nick is <item-not-found/>."""

    async def scenario():
        ann, ben, cat = await clients(server, "adm-ann", "adm-ben", "adm-cat")
        try:
            await ann.create_instant("kicks", "ann")
            await ben.enter("kicks", "ben")
            await cat.enter("kicks", "cat")
            assert await ben.admin_error("kicks", "<item nick='cat' role='none'/>") == "forbidden"
            assert await ann.admin_error("kicks", "<item nick='nobody' role='none'/>") == (
                "item-not-found"
            )
            await ann.admin("kicks", "<item nick='cat' role='none'><reason>spam</reason></item>")
            kicked = await cat.presence_of("kicks", "cat", unavailable=True)
            assert {"307", "110"} <= status_codes(kicked)
            item = item_of(kicked)
            assert item.get("role") == "none"
            assert item.find(f"{{{NS_USER}}}actor").get("nick") == "ann"
            assert item.findtext(f"{{{NS_USER}}}reason") == "spam"
            seen = await ben.presence_of("kicks", "cat", unavailable=True)
            assert "307" in status_codes(seen)
            # A moderator without an affiliation cannot kick the owner.
            await ann.admin("kicks", "<item nick='ben' role='moderator'/>")
            await ben.wait_for(
                lambda s: item_of(s) is not None and item_of(s).get("role") == "moderator"
            )
            assert await ben.admin_error("kicks", "<item nick='ann' role='none'/>") == "not-allowed"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_voice(server):
    """§8.3/§8.4: moderators grant and revoke voice; §8.5 the voice list."""

    async def scenario():
        ann, ben, cat = await clients(server, "adm-ann", "adm-ben", "adm-cat")
        try:
            await ann.create_instant("voices", "ann")
            await ann.configure("voices", moderatedroom=True)
            assert item_of(await ben.enter("voices", "ben")).get("role") == "visitor"
            await cat.enter("voices", "cat")
            await ann.admin("voices", "<item nick='ben' role='participant'/>")
            await ben.wait_for(
                lambda s: item_of(s) is not None and item_of(s).get("role") == "participant"
            )
            ben.say("voices", "I can talk")
            await cat.heard("voices", "I can talk")
            listed = await ann.admin("voices", "<item role='participant'/>", "get")
            assert [i.get("nick") for i in listed] == ["ben"]
            assert await ben.admin_error("voices", "<item role='participant'/>", "get") == (
                "forbidden"
            )
            await ann.admin("voices", "<item nick='ben' role='visitor'/>")
            await ben.wait_for(
                lambda s: item_of(s) is not None and item_of(s).get("role") == "visitor"
            )
            ben.say("voices", "and now?")
            assert await ben.error_to("message") == "forbidden"
            assert await ben.admin_error("voices", "<item nick='cat' role='participant'/>") == (
                "forbidden"
            )
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_ban(server):
    """§9.1: an admin bans by bare JID (status 301); the banned user cannot
    come back (<forbidden/>); §9.2 the ban list with the reason; a member
    may not ban (<forbidden/>); an admin may not ban an owner (<not-allowed/>)."""

    async def scenario():
        ann, ben, cat = await clients(server, "adm-ann", "adm-ben", "adm-cat")
        try:
            await ann.create_instant("bans", "ann")
            await ben.enter("bans", "ben")
            await cat.enter("bans", "cat")
            await ann.admin("bans", f"<item affiliation='admin' jid='{jid('adm-ben')}'/>")
            assert (
                await ben.admin_error(
                    "bans", f"<item affiliation='outcast' jid='{jid('adm-ann')}'/>"
                )
                == "not-allowed"
            )
            assert (
                await cat.admin_error(
                    "bans", f"<item affiliation='outcast' jid='{jid('adm-ben')}'/>"
                )
                == "forbidden"
            )
            await ben.admin(
                "bans",
                f"<item affiliation='outcast' jid='{jid('adm-cat')}'><reason>rude</reason></item>",
            )
            banned = await cat.presence_of("bans", "cat", unavailable=True)
            assert "301" in status_codes(banned)
            assert item_of(banned).get("affiliation") == "outcast"
            refused = await cat.enter("bans", "cat")
            assert error_condition(refused) == "forbidden"
            listed = await ann.admin("bans", "<item affiliation='outcast'/>", "get")
            items = list(listed)
            assert [i.get("jid") for i in items] == [jid("adm-cat")]
            assert items[0].findtext(f"{{{NS_ADMIN}}}reason") == "rude"
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_membership(server):
    """§9.3/§9.4/§9.5: admins grant and revoke membership and read the member
    list; revoking it in a members-only room removes the user (status 321)."""

    async def scenario():
        ann, ben = await clients(server, "adm-ann", "adm-ben")
        try:
            await ann.create_instant("members", "ann")
            await ann.configure("members", membersonly=True)
            await ann.admin("members", f"<item affiliation='member' jid='{jid('adm-ben')}'/>")
            own = await ben.enter("members", "ben")
            assert item_of(own).get("affiliation") == "member"
            listed = await ann.admin("members", "<item affiliation='member'/>", "get")
            assert [i.get("jid") for i in listed] == [jid("adm-ben")]
            await ann.admin("members", f"<item affiliation='none' jid='{jid('adm-ben')}'/>")
            removed = await ben.presence_of("members", "ben", unavailable=True)
            assert "321" in status_codes(removed)
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_moderator_admin_and_owner_lists(server):
    """§9.6-§9.8 moderators (admins only), §10.3-§10.8 admins and owners
    (owners only): granted, listed, revoked; the last owner cannot go
    (<conflict/>)."""

    async def scenario():
        ann, ben, cat = await clients(server, "adm-ann", "adm-ben", "adm-cat")
        try:
            await ann.create_instant("ranks", "ann")
            await ben.enter("ranks", "ben")
            await cat.enter("ranks", "cat")
            assert (
                await ben.admin_error(
                    "ranks", f"<item affiliation='admin' jid='{jid('adm-cat')}'/>"
                )
                == "forbidden"
            )
            await ann.admin("ranks", f"<item affiliation='admin' jid='{jid('adm-ben')}'/>")
            promoted = await cat.wait_for(
                lambda s: (
                    s.get("from") == f"ranks@{SERVICE}/ben"
                    and item_of(s) is not None
                    and item_of(s).get("affiliation") == "admin"
                )
            )
            assert item_of(promoted).get("role") == "moderator"
            # An admin may not make owners or admins.
            assert (
                await ben.admin_error(
                    "ranks", f"<item affiliation='owner' jid='{jid('adm-cat')}'/>"
                )
                == "forbidden"
            )
            # An admin makes a moderator; the moderator list shows it.
            await ben.admin("ranks", "<item nick='cat' role='moderator'/>")
            listed = await ben.admin("ranks", "<item role='moderator'/>", "get")
            assert {i.get("nick") for i in listed} == {"ann", "ben", "cat"}
            await ann.admin("ranks", f"<item affiliation='owner' jid='{jid('adm-ben')}'/>")
            owners = await ann.admin("ranks", "<item affiliation='owner'/>", "get")
            assert {i.get("jid") for i in owners} == {jid("adm-ann"), jid("adm-ben")}
            await ben.admin("ranks", f"<item affiliation='none' jid='{jid('adm-ann')}'/>")
            demoted = await cat.wait_for(
                lambda s: (
                    s.get("from") == f"ranks@{SERVICE}/ann"
                    and item_of(s) is not None
                    and item_of(s).get("affiliation") == "none"
                )
            )
            assert item_of(demoted).get("role") == "participant"
            assert (
                await ben.admin_error(
                    "ranks", f"<item affiliation='member' jid='{jid('adm-ben')}'/>"
                )
                == "conflict"
            )
            assert await ann.admin_error("ranks", "<item affiliation='owner'/>", "get") == (
                "forbidden"
            )
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())


def test_mediated_invitation_and_decline(server):
    """§7.8.2: the room sends the invitation on, from the room, with the
    inviter and the password; in a members-only room the invitee becomes a
    member. §7.8.3: the decline goes back to the inviter."""

    async def scenario():
        ann, dan = await clients(server, "adm-ann", "adm-dan")
        try:
            await ann.create_instant("party", "ann")
            await ann.configure(
                "party", membersonly=True, passwordprotectedroom=True, roomsecret="cake"
            )
            ann.send_xml(
                f"<message to='party@{SERVICE}'><x xmlns='{NS_USER}'>"
                f"<invite to='{jid('adm-dan')}'><reason>join us</reason></invite></x></message>"
            )
            invitation = await dan.wait_for(
                lambda s: s.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite") is not None
            )
            assert invitation.get("from") == f"party@{SERVICE}"
            invite = invitation.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite")
            assert invite.get("from").startswith(jid("adm-ann"))
            assert invite.findtext(f"{{{NS_USER}}}reason") == "join us"
            assert invitation.findtext(f"{{{NS_USER}}}x/{{{NS_USER}}}password") == "cake"
            own = await dan.enter("party", "dan", password="cake")
            assert item_of(own).get("affiliation") == "member"
            dan.send_xml(
                f"<message to='party@{SERVICE}'><x xmlns='{NS_USER}'>"
                f"<decline to='{jid('adm-ann')}'><reason>busy</reason></decline></x></message>"
            )
            declined = await ann.wait_for(
                lambda s: s.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline") is not None
            )
            decline = declined.find(f"{{{NS_USER}}}x/{{{NS_USER}}}decline")
            assert decline.get("from") == jid("adm-dan")
            assert decline.findtext(f"{{{NS_USER}}}reason") == "busy"
        finally:
            await disconnect(ann, dan)

    run(scenario())


def test_members_only_invitations_need_the_right(server):
    """§7.8.2: in a members-only room without muc#roomconfig_allowinvites,
    a member may not invite (<forbidden/>)."""

    async def scenario():
        ann, ben = await clients(server, "adm-ann", "adm-ben")
        try:
            await ann.create_instant("gated", "ann")
            await ann.configure("gated", membersonly=True)
            await ann.admin("gated", f"<item affiliation='member' jid='{jid('adm-ben')}'/>")
            await ben.enter("gated", "ben")
            ben.send_xml(
                f"<message to='gated@{SERVICE}'><x xmlns='{NS_USER}'>"
                f"<invite to='{jid('adm-dan')}'/></x></message>"
            )
            assert await ben.error_to("message") == "forbidden"
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_direct_invitation(server):
    """XEP-0249: a direct invitation goes from user to user untouched."""

    async def scenario():
        ann, dan = await clients(server, "adm-ann", "adm-dan")
        try:
            ann.send_xml(
                f"<message to='{jid('adm-dan')}'><x xmlns='jabber:x:conference' "
                f"jid='direct@{SERVICE}' password='pw' reason='come'/></message>"
            )
            got = await dan.wait_for(lambda s: s.find("{jabber:x:conference}x") is not None)
            x = got.find("{jabber:x:conference}x")
            assert (x.get("jid"), x.get("password"), x.get("reason")) == (
                f"direct@{SERVICE}",
                "pw",
                "come",
            )
            assert got.get("from") == str(ann.boundjid)
        finally:
            await disconnect(ann, dan)

    run(scenario())


def test_server_administrator_destroys_any_room(server):
    """§10.9: a staff account (a server administrator) may configure and
    destroy a room it does not own."""

    async def scenario():
        ann, root = await clients(server, "adm-ann", "adm-root")
        try:
            await ann.create_instant("anyones", "ann")
            query = await send_iq(root, "get", f"<query xmlns='{NS_OWNER}'/>", f"anyones@{SERVICE}")
            assert query is not None
            await send_iq(
                root,
                "set",
                f"<query xmlns='{NS_OWNER}'><destroy><reason>closed by admin</reason>"
                "</destroy></query>",
                f"anyones@{SERVICE}",
            )
            gone = await ann.presence_of("anyones", "ann", unavailable=True)
            destroy = gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy")
            assert destroy.findtext(f"{{{NS_USER}}}reason") == "closed by admin"
        finally:
            await disconnect(ann, root)

    run(scenario())


def test_occupant_iq_is_passed_on(server):
    """An IQ to an occupant JID reaches that occupant's session from the
    asker's occupant JID, and the answer comes back (vCards,
    software version through the room)."""

    async def scenario():
        ann, ben = await clients(server, "adm-ann", "adm-ben")
        try:
            await ann.create_instant("proxied", "ann")
            await ben.enter("proxied", "ben")
            version = await send_iq(
                ann, "get", "<query xmlns='jabber:iq:version'/>", f"proxied@{SERVICE}/ben"
            )
            assert version.tag == "{jabber:iq:version}query"
            assert (
                await iq_error(
                    ann, "get", "<query xmlns='jabber:iq:version'/>", f"proxied@{SERVICE}/nobody"
                )
                == "item-not-found"
            )
        finally:
            await disconnect(ann, ben)

    run(scenario())


def admin_opener(server, username: str):
    """A urllib opener logged into Django admin (its login form)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{server.http_port}"
    page = opener.open(f"{base}/admin/login/?next=/admin/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD}
    request = urllib.request.Request(
        f"{base}/admin/login/?next=/admin/", data=urllib.parse.urlencode(form).encode()
    )
    request.add_header("Referer", f"{base}/admin/login/")
    assert opener.open(request, timeout=10).geturl().endswith("/admin/")
    return opener, base


def test_django_admin_lists_and_destroys_a_live_room(server):
    """A persistent room shows in Django admin; the "Destroy" action deletes
    it and removes its occupants (§10.9) when the admin runs in the server's
    process."""

    async def scenario():
        ann, ben = await clients(server, "adm-ann", "adm-ben")
        try:
            await ann.create_instant("webroom", "ann")
            await ann.configure("webroom", persistentroom=True, roomname="Web Room")
            await ben.enter("webroom", "ben")
            await asyncio.sleep(0.5)  # the room's row is written by the batching writer

            def destroy_in_admin() -> None:
                opener, base = admin_opener(server, "adm-root")
                page = opener.open(f"{base}/admin/muc/room/?q=webroom", timeout=10).read().decode()
                assert "Web Room" in page
                room_id = re.search(r'name="_selected_action" value="(\d+)"', page).group(1)
                token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
                form = {
                    "csrfmiddlewaretoken": token,
                    "action": "destroy_rooms",
                    "_selected_action": room_id,
                    "index": "0",
                }
                request = urllib.request.Request(
                    f"{base}/admin/muc/room/?q=webroom",
                    data=urllib.parse.urlencode(form).encode(),
                )
                request.add_header("Referer", f"{base}/admin/muc/room/")
                result = opener.open(request, timeout=10).read().decode()
                assert "Destroyed 1 room" in result

            await asyncio.to_thread(destroy_in_admin)
            gone = await ben.presence_of("webroom", "ben", unavailable=True)
            assert gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy") is not None
            await ann.presence_of("webroom", "ann", unavailable=True)
        finally:
            await disconnect(ann, ben)

    run(scenario())


def test_newcomer_sees_current_roles_and_affiliations(server):
    """§7.2.3: a newcomer is shown each occupant's current role and
    affiliation, after changes made while it was away."""

    async def scenario():
        ann, ben, cat = await clients(server, "adm-ann", "adm-ben", "adm-cat")
        try:
            await ann.create_instant("current", "ann")
            await ann.configure("current", moderatedroom=True)
            await ben.enter("current", "ben")
            await ann.admin("current", "<item nick='ben' role='participant'/>")
            await ann.admin("current", f"<item affiliation='member' jid='{jid('adm-ben')}'/>")
            await ben.wait_for(
                lambda s: item_of(s) is not None and item_of(s).get("affiliation") == "member"
            )
            await cat.enter("current", "cat")
            seen = await cat.presence_of("current", "ben")
            assert (item_of(seen).get("role"), item_of(seen).get("affiliation")) == (
                "participant",
                "member",
            )
            ben.send_xml(f"<presence to='current@{SERVICE}/ben'><show>dnd</show></presence>")
            await ann.wait_for(lambda s: s.findtext("{jabber:client}show") == "dnd")
            await cat.wait_for(lambda s: s.findtext("{jabber:client}show") == "dnd")
            dan = await connect_muc(server, "adm-dan")
            try:
                await dan.enter("current", "dan")
                seen = await dan.presence_of("current", "ben")
                assert seen.findtext("{jabber:client}show") == "dnd"
                assert item_of(seen).get("role") == "participant"
            finally:
                await disconnect(dan)
        finally:
            await disconnect(ann, ben, cat)

    run(scenario())
