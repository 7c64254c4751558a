"""Nobody but staff reaches the console or the API: anonymous requests get
401, logged-in accounts without staff status 403, on every page and every
endpoint, with a session or with a token of their own. The self-service
page is for any account."""

from __future__ import annotations

import httpx
import pytest

from .test_admin_support import (
    base_url,
    csrf_token,
    start_console_server,
    stop_server,
    web_login,
)

CONSOLE_PAGES = [
    "/console/",
    "/console/users/",
    "/console/users/new/",
    "/console/users/alice/",
    "/console/users/alice/password/",
    "/console/users/alice/lock/",
    "/console/users/alice/delete/",
    "/console/sessions/",
    "/console/sessions/abcdef/kick/",
    "/console/groups/",
    "/console/groups/new/",
    "/console/groups/1/",
    "/console/groups/1/delete/",
    "/console/rooms/",
    "/console/rooms/lounge/",
    "/console/nodes/",
    "/console/nodes/1/",
    "/console/settings/",
    "/console/broadcast/",
    "/console/certificate/",
    "/console/audit/",
    "/console/tokens/",
    "/console/tokens/1/revoke/",
]
JSON = {"Accept": "application/json"}
API_ENDPOINTS = [
    ("GET", "/api/users/"),
    ("POST", "/api/users/"),
    ("GET", "/api/users/alice/"),
    ("PATCH", "/api/users/alice/"),
    ("DELETE", "/api/users/alice/"),
    ("POST", "/api/users/alice/password/"),
    ("GET", "/api/users/alice/roster/"),
    ("GET", "/api/users/alice/sessions/"),
    ("GET", "/api/groups/"),
    ("POST", "/api/groups/"),
    ("GET", "/api/groups/1/"),
    ("PATCH", "/api/groups/1/"),
    ("DELETE", "/api/groups/1/"),
    ("GET", "/api/sessions/"),
    ("GET", "/api/sessions/abcdef/"),
    ("DELETE", "/api/sessions/abcdef/"),
    ("POST", "/api/broadcast/"),
    ("GET", "/api/stats/"),
    ("GET", "/api/settings/"),
    ("PATCH", "/api/settings/"),
    ("GET", "/api/audit-log/"),
    ("GET", "/api/audit-log/1/"),
    ("GET", "/api/rooms/"),
    ("GET", "/api/rooms/lounge/"),
    ("GET", "/api/rooms/lounge/occupants/"),
    ("GET", "/api/nodes/"),
    ("GET", "/api/nodes/1/"),
    ("GET", "/api/nodes/1/items/"),
    ("GET", "/api/schema/"),
    ("GET", "/api/docs/"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_console_server(tmp_path_factory.mktemp("permissions-server"))
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def alice_session(server):
    client, response = web_login(server, "alice")
    assert response.url.path == "/me/", "a non-staff account lands on its own page"
    yield client
    client.close()


@pytest.fixture(scope="module")
def alice_token(server):
    """A token row for a non-staff account (the console never issues one)."""
    from .test_admin_support import issue_token

    return issue_token(server, "alice")


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_console_page_is_401_for_anonymous(server, path):
    """An anonymous visitor gets 401 and a way to the login page, for GET and POST."""
    response = httpx.get(base_url(server) + path)
    assert response.status_code == 401
    assert "/accounts/login/?next=" in response.text
    assert httpx.post(base_url(server) + path, data={}).status_code in (401, 403)


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_console_page_is_403_for_non_staff(alice_session, path):
    """A logged-in account without staff status is refused, for GET and POST."""
    assert alice_session.get(path).status_code == 403
    token = csrf_token(alice_session, alice_session.get("/me/").text)
    assert alice_session.post(path, data={"csrfmiddlewaretoken": token}).status_code == 403


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS)
def test_api_is_401_for_anonymous(server, method, path):
    response = httpx.request(method, base_url(server) + path, json={}, headers=JSON)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Token"
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS)
def test_api_is_403_for_non_staff_session(alice_session, method, path):
    token = alice_session.cookies.get("csrftoken", "")
    response = alice_session.request(method, path, json={}, headers={"X-CSRFToken": token, **JSON})
    assert response.status_code == 403
    assert response.json()["error"] in ("permission_denied", "permission-denied")


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS)
def test_api_is_403_for_non_staff_token(server, alice_token, method, path):
    response = httpx.request(
        method,
        base_url(server) + path,
        json={},
        headers={"Authorization": f"Token {alice_token}", **JSON},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_a_wrong_token_is_401(server):
    response = httpx.get(
        base_url(server) + "/api/stats/", headers={"Authorization": "Token not-a-token"}
    )
    assert response.status_code == 401


def test_selfservice_is_for_any_account(server, alice_session):
    """/me/ is 401 anonymously and open to a logged-in account."""
    assert httpx.get(base_url(server) + "/me/").status_code == 401
    page = alice_session.get("/me/")
    assert page.status_code == 200 and "alice@localhost" in page.text
    assert "/console/users/" not in page.text  # no admin links for non-staff
