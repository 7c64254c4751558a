"""The self-service page (/me/) of an account without staff status: its own
live sessions, which it may end, and a password change (allauth) that
changes the XMPP (SCRAM) credentials too."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .clients import Client, connect, disconnect
from .test_admin_support import (
    PASSWORD,
    base_url,
    csrf_token,
    issue_token,
    start_console_server,
    stop_server,
    web_login,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_console_server(tmp_path_factory.mktemp("selfservice-server"))
    yield server
    stop_server(server)


def test_user_sees_and_ends_own_sessions_only(server):
    """/me/ lists the account's sessions and ends one on request; another
    account's session id does nothing."""
    web, response = web_login(server, "alice")
    assert response.url.path == "/me/"
    assert "No chat client is connected." in response.text
    token = issue_token(server)

    async def scenario():
        alice = await connect(server, "alice", "phone")
        bob = await connect(server, "bob", "desk")
        try:
            page = await asyncio.to_thread(web.get, "/me/")
            assert "phone" in page.text and "desk" not in page.text
            sessions = (
                await asyncio.to_thread(
                    httpx.get,
                    f"{base_url(server)}/api/sessions/",
                    headers={"Authorization": f"Token {token}"},
                )
            ).json()["results"]
            ids = {s["username"]: s["id"] for s in sessions}
            form = {"csrfmiddlewaretoken": csrf_token(web, page.text)}
            # Someone else's session: refused silently.
            await asyncio.to_thread(web.post, f"/me/sessions/{ids['bob']}/end/", data=form)
            # One's own: closed.
            ended = await asyncio.to_thread(
                web.post, f"/me/sessions/{ids['alice']}/end/", data=form
            )
            assert "alice@localhost/phone disconnected." in ended.text
            await asyncio.wait_for(alice.disconnected_event.wait(), 10)
            await asyncio.sleep(0.3)
            assert not bob.disconnected_event.is_set()
        finally:
            await disconnect(alice, bob)

    asyncio.run(scenario())
    web.close()


def test_password_change_updates_xmpp_credentials(server):
    """Changing the password on the web (allauth) gives new SCRAM keys: the
    new password logs in over XMPP with SCRAM-SHA-256, the old one does not."""
    web, _ = web_login(server, "bob")
    page = web.get("/accounts/password/change/")
    assert page.status_code == 200
    changed = web.post(
        "/accounts/password/change/",
        data={
            "csrfmiddlewaretoken": csrf_token(web, page.text),
            "oldpassword": PASSWORD,
            "password1": "bob's new password",
            "password2": "bob's new password",
        },
    )
    assert changed.status_code == 200
    assert "Password successfully changed." in changed.text, changed.text
    web.close()
    stored = (
        server.manage(
            "shell",
            "-c",
            "from xmpp.models import User; print(User.objects.get(username='bob').password)",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert stored.startswith("scram$")

    async def scenario():
        client = await connect(
            server, "bob", "new", password="bob's new password", mechanism="SCRAM-SHA-256"
        )
        await disconnect(client)
        old = Client(server.jid("bob", "old"), PASSWORD, "SCRAM-SHA-256")
        old.enable_direct_tls = False
        old.connect(server.host, server.c2s_port)
        try:
            await asyncio.wait_for(old.auth_failed.wait(), 10)
        finally:
            await disconnect(old)

    asyncio.run(scenario())
    # And the web login takes the new password too.
    _, response = web_login(server, "bob", "bob's new password")
    assert response.url.path == "/me/"
    # The change is in the audit log.
    assert (
        "password.change"
        in server.manage(
            "shell",
            "-c",
            "from admin_ui.models import AuditLogEntry; "
            "print(list(AuditLogEntry.objects.values_list('action', 'target')))",
        ).stdout
    )


def test_no_web_sign_up_and_no_reset_by_mail(server):
    """Accounts are made by administrators: the login page invites no sign-up,
    sign-up is closed, and a forgotten password is an administrator's job."""
    base = base_url(server)
    login = httpx.get(f"{base}/accounts/login/")
    assert login.status_code == 200 and "sign up" not in login.text.lower()
    signup = httpx.get(f"{base}/accounts/signup/")
    assert "closed" in signup.text.lower()
    reset = httpx.get(f"{base}/accounts/password/reset/")
    assert reset.status_code == 200 and "sends no e-mail" in reset.text
