"""Helpers for the console, API and self-service tests (no tests here).

Each of those modules starts a server of its own (start_server), so that
what they change at run time (registration, broadcasts, kicks) cannot
disturb other tests, then logs in over HTTP with allauth's form as a
browser would.
"""

from __future__ import annotations

import re

import httpx

from .conftest import PASSWORD, RunningServer, start_server, stop_server

STAFF = "root"


def start_console_server(data_dir, **env) -> RunningServer:
    """A fresh server with the accounts alice, bob and the staff account root."""
    server = start_server(data_dir, **env)
    for user in ("alice", "bob", STAFF):
        server.manage("register", user, PASSWORD)
    make_staff(server, STAFF)
    return server


def make_staff(server: RunningServer, username: str) -> None:
    server.manage(
        "shell",
        "-c",
        f"from xmpp.models import User; User.objects.filter(username={username!r})"
        ".update(is_staff=True, is_superuser=True)",
    )


def issue_token(server: RunningServer, username: str = STAFF) -> str:
    out = server.manage(
        "shell",
        "-c",
        "from admin_ui.models import ApiToken; from xmpp.models import User; "
        f"print(ApiToken.objects.issue(User.objects.get(username={username!r}), 'test')[1])",
    ).stdout
    return out.strip().splitlines()[-1]


def base_url(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def csrf_token(client: httpx.Client, page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def web_login(
    server: RunningServer, username: str, password: str = PASSWORD
) -> tuple[httpx.Client, httpx.Response]:
    """Log in through allauth's form; return the client (with its session
    cookie) and the response the login ended on."""
    client = httpx.Client(base_url=base_url(server), follow_redirects=True, timeout=20)
    page = client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={
            "csrfmiddlewaretoken": csrf_token(client, page.text),
            "login": username,
            "password": password,
        },
    )
    return client, response


def post_form(client: httpx.Client, url: str, data: dict) -> httpx.Response:
    """GET `url` for its CSRF token, then POST `data` to it."""
    page = client.get(url)
    return client.post(url, data={"csrfmiddlewaretoken": csrf_token(client, page.text), **data})


__all__ = [
    "PASSWORD",
    "STAFF",
    "base_url",
    "issue_token",
    "make_staff",
    "post_form",
    "start_console_server",
    "stop_server",
    "web_login",
]
