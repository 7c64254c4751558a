"""Two-factor login (allauth.mfa, TOTP per RFC 6238) for an administrator:
enabled from the account's page with a code from the authenticator, after
which the console wants a current code after the password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time

import httpx
import pytest

from .test_admin_support import (
    PASSWORD,
    STAFF,
    base_url,
    csrf_token,
    start_console_server,
    stop_server,
    web_login,
)


def totp(secret: str, offset: int = 0, period: int = 30) -> str:
    """RFC 6238 with HMAC-SHA1 and 6 digits, as authenticator apps compute it."""
    counter = int(time.time()) // period + offset
    digest = hmac.new(
        base64.b32decode(secret, casefold=True), struct.pack(">Q", counter), hashlib.sha1
    ).digest()
    start = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[start : start + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**6:06d}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_console_server(tmp_path_factory.mktemp("mfa-server"))
    yield server
    stop_server(server)


def test_admin_enables_totp_and_then_needs_a_code_to_log_in(server):
    """After re-entering the password, an administrator activates TOTP with a
    code from the secret shown; from then on the password alone leads to the
    code prompt, a wrong code is refused, a right one opens the console, and
    Django admin's own login form refuses the account."""
    client, response = web_login(server, STAFF)
    assert response.url.path == "/console/"
    page = client.get("/accounts/2fa/totp/activate/")
    # A sensitive change: allauth asks for the password again first.
    assert page.url.path == "/accounts/reauthenticate/"
    page = client.post(
        str(page.url),
        data={"csrfmiddlewaretoken": csrf_token(client, page.text), "password": PASSWORD},
    )
    assert page.url.path == "/accounts/2fa/totp/activate/"
    secret = re.search(r'id="authenticator_secret"[^>]*value="([A-Z2-7]+)"', page.text)
    if secret is None:
        secret = re.search(r'value="([A-Z2-7]{32})"', page.text)
    secret = secret.group(1)
    activated = client.post(
        "/accounts/2fa/totp/activate/",
        data={"csrfmiddlewaretoken": csrf_token(client, page.text), "code": totp(secret)},
    )
    assert activated.status_code == 200
    assert (
        server.manage(
            "shell",
            "-c",
            "from allauth.mfa.models import Authenticator; "
            f"print(Authenticator.objects.filter(user__username={STAFF!r}, type='totp').count())",
        )
        .stdout.strip()
        .endswith("1")
    )
    client.close()

    # The password alone no longer opens the console: allauth asks for a code.
    client, response = web_login(server, STAFF)
    assert response.url.path == "/accounts/2fa/authenticate/"
    assert client.get("/console/").status_code == 401
    wrong = client.post(
        "/accounts/2fa/authenticate/",
        data={"csrfmiddlewaretoken": csrf_token(client, response.text), "code": "000000"},
    )
    assert wrong.url.path == "/accounts/2fa/authenticate/"
    # The next period's code: the current one was spent activating (allowed drift is one period).
    done = client.post(
        "/accounts/2fa/authenticate/",
        data={"csrfmiddlewaretoken": csrf_token(client, wrong.text), "code": totp(secret, 1)},
    )
    assert done.url.path == "/console/"
    assert client.get("/console/users/").status_code == 200
    assert client.get("/admin/").status_code == 200  # the same session opens Django's admin
    client.close()

    # Django admin's own login form, which cannot ask for a code, refuses the account.
    admin = httpx.Client(base_url=base_url(server), follow_redirects=True, timeout=20)
    page = admin.get("/admin/login/?next=/admin/")
    refused = admin.post(
        "/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": csrf_token(admin, page.text),
            "username": STAFF,
            "password": PASSWORD,
            "next": "/admin/",
        },
    )
    assert refused.url.path == "/admin/login/"
    assert "two-factor authentication" in refused.text
    admin.close()
