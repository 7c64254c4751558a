"""The REST API under /api/ (admin_ui/api/): one test per endpoint, driven
over HTTP with an administrator's token against a running server, and
checked over XMPP with slixmpp where the change reaches the wire."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .clients import RawStream, connect, disconnect
from .test_admin_support import (
    PASSWORD,
    STAFF,
    base_url,
    issue_token,
    start_console_server,
    stop_server,
)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    server = start_console_server(tmp_path_factory.mktemp("api-server"))
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def api(api_server):
    token = issue_token(api_server)
    with httpx.Client(
        base_url=f"{base_url(api_server)}/api",
        headers={"Authorization": f"Token {token}"},
        timeout=20,
    ) as client:
        yield client


def assert_json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and "error" in body and "detail" in body
    return body


def test_users_list_is_paginated_and_searchable(api):
    """GET /api/users/ pages the accounts; ?search= filters them."""
    listing = api.get("/users/").json()
    assert {"count", "next", "previous", "results"} <= set(listing)
    names = [u["username"] for u in listing["results"]]
    assert {"alice", "bob", STAFF} <= set(names) and names == sorted(names)
    found = api.get("/users/", params={"search": "ali"}).json()["results"]
    assert [u["username"] for u in found] == ["alice"]
    assert found[0]["jid"] == "alice@localhost"
    assert api.get("/users/", params={"page": 99}).status_code == 404


def test_user_create_gives_an_account_that_logs_in_over_xmpp(api, api_server):
    """POST /api/users/ creates an account whose password works with SCRAM."""
    response = api.post("/users/", json={"username": "Dave", "password": "dave's secret"})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "dave"  # prepared (RFC 7622)
    assert "password" not in response.json()

    async def scenario():
        client = await connect(api_server, "dave", "api", password="dave's secret")
        await disconnect(client)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "erin"},
        {"password": "x"},
        {"username": "a b@c", "password": "x"},
        {"username": "alice", "password": "x"},
        {"username": "", "password": "x"},
        {"username": ["erin"], "password": "x"},
    ],
    ids=["no-password", "no-username", "invalid-localpart", "taken", "empty", "not-a-string"],
)
def test_user_create_refuses_bad_input_with_400(api, payload):
    """Bad input is a 400 with a JSON error naming the field."""
    body = assert_json_error(api.post("/users/", json=payload), 400)
    assert body["error"] == "invalid"


def test_user_get_patch_delete(api, api_server):
    """GET, PATCH and DELETE /api/users/<username>/; a deleted account is 404."""
    api.post("/users/", json={"username": "frank", "password": PASSWORD})
    assert api.get("/users/frank/").json()["email"] == ""
    patched = api.patch("/users/frank/", json={"email": "frank@example.org", "first_name": "F"})
    assert patched.status_code == 200 and patched.json()["email"] == "frank@example.org"
    assert_json_error(api.patch("/users/frank/", json={"email": "not an address"}), 400)
    assert api.delete("/users/frank/").status_code == 204
    assert_json_error(api.get("/users/frank/"), 404)
    assert_json_error(api.delete("/users/frank/"), 404)


def test_an_admin_cannot_lock_or_delete_themselves(api):
    """The token's own account cannot be locked, demoted or deleted: 400."""
    assert_json_error(api.patch(f"/users/{STAFF}/", json={"is_active": False}), 400)
    assert_json_error(api.patch(f"/users/{STAFF}/", json={"is_staff": False}), 400)
    assert_json_error(api.delete(f"/users/{STAFF}/"), 400)
    assert api.get(f"/users/{STAFF}/").json()["is_active"] is True


def test_user_password_reset_changes_the_xmpp_password(api, api_server):
    """POST /api/users/<username>/password/ gives new SCRAM keys at once."""
    api.post("/users/", json={"username": "grace", "password": PASSWORD})
    response = api.post("/users/grace/password/", json={"password": "new grace password"})
    assert response.status_code == 204
    assert_json_error(api.post("/users/grace/password/", json={"password": ""}), 400)

    async def scenario():
        client = await connect(api_server, "grace", "new", password="new grace password")
        await disconnect(client)

    asyncio.run(scenario())


def test_user_roster(api, api_server):
    """GET /api/users/<username>/roster/ lists the roster items."""
    api_server.manage(
        "shell",
        "-c",
        "from xmpp.models import RosterItem, User; RosterItem.objects.create("
        "user=User.objects.get(username='alice'), jid='bob@localhost', name='Bob', "
        "groups=['Friends'], subscription='both')",
    )
    roster = api.get("/users/alice/roster/").json()
    assert roster["count"] == 1
    assert roster["results"][0] == {
        "jid": "bob@localhost",
        "name": "Bob",
        "groups": ["Friends"],
        "subscription": "both",
        "pending_out": False,
        "pending_in": False,
    }
    assert_json_error(api.get("/users/nobody/roster/"), 404)


def test_shared_groups_crud(api):
    """POST, GET, PATCH, DELETE /api/groups/; an unknown member is a 400."""
    created = api.post("/groups/", json={"name": "Staff", "members": ["alice", "bob"]})
    assert created.status_code == 201, created.text
    group = created.json()
    assert sorted(group["members"]) == ["alice", "bob"]
    assert any(g["name"] == "Staff" for g in api.get("/groups/").json()["results"])
    patched = api.patch(f"/groups/{group['id']}/", json={"members": ["alice"]})
    assert patched.json()["members"] == ["alice"]
    assert_json_error(api.post("/groups/", json={"name": "X", "members": ["nobody"]}), 400)
    assert_json_error(api.post("/groups/", json={"name": "Staff"}), 400)  # unique
    assert api.delete(f"/groups/{group['id']}/").status_code == 204
    assert_json_error(api.get(f"/groups/{group['id']}/"), 404)


def test_sessions_list_get_and_kick(api, api_server):
    """GET /api/sessions/ lists live sessions; DELETE /api/sessions/<id>/ kicks
    one: the client sees its stream closed."""

    async def scenario():
        client = await connect(api_server, "alice", "kickme")
        try:
            rows = await asyncio.to_thread(api.get, "/sessions/", params={"user": "alice"})
            rows = rows.json()["results"]
            [row] = [r for r in rows if r["jid"] == "alice@localhost/kickme"]
            assert row["secure"] and row["available"] and row["transport"] == "Tcp"
            one = await asyncio.to_thread(api.get, f"/sessions/{row['id']}/")
            assert one.json()["jid"] == "alice@localhost/kickme"
            kicked = await asyncio.to_thread(api.delete, f"/sessions/{row['id']}/")
            assert kicked.status_code == 204
            await asyncio.wait_for(client.disconnected_event.wait(), 10)
            gone = await asyncio.to_thread(api.delete, f"/sessions/{row['id']}/")
            assert_json_error(gone, 404)
        finally:
            await disconnect(client)

    asyncio.run(scenario())


def test_user_sessions_and_locking_closes_them(api, api_server):
    """GET /api/users/<u>/sessions/; PATCH is_active=false locks the account
    and closes its sessions."""
    api.post("/users/", json={"username": "heidi", "password": PASSWORD})

    async def scenario():
        client = await connect(api_server, "heidi", "phone")
        try:
            rows = (await asyncio.to_thread(api.get, "/users/heidi/sessions/")).json()
            assert [r["resource"] for r in rows["results"]] == ["phone"]
            await asyncio.to_thread(api.patch, "/users/heidi/", json={"is_active": False})
            await asyncio.wait_for(client.disconnected_event.wait(), 10)
        finally:
            await disconnect(client)

    asyncio.run(scenario())
    assert api.get("/users/heidi/").json()["is_active"] is False


def test_broadcast_reaches_online_users(api, api_server):
    """POST /api/broadcast/ sends a message from the server's domain to every
    available session; an empty body is a 400."""

    async def scenario():
        client = await connect(api_server, "bob", "broadcast")
        try:
            response = await asyncio.to_thread(
                api.post, "/broadcast/", json={"body": "maintenance at 6", "subject": "Notice"}
            )
            assert response.status_code == 200 and response.json()["recipients"] >= 1
            while True:
                message = await asyncio.wait_for(client.messages.get(), 10)
                if message["body"] == "maintenance at 6":
                    break
            assert message["from"].full == "localhost"
            assert message["subject"] == "Notice"
        finally:
            await disconnect(client)

    asyncio.run(scenario())
    assert_json_error(api.post("/broadcast/", json={"body": ""}), 400)
    assert_json_error(api.post("/broadcast/", json={}), 400)


def test_statistics(api):
    """GET /api/stats/ reports the live server's figures."""
    stats = api.get("/stats/").json()
    assert stats["running"] is True and stats["domain"] == "localhost"
    assert stats["accounts"] >= 3 and stats["uptime_seconds"] >= 0
    assert stats["memory_bytes"] > 1024 * 1024
    assert isinstance(stats["history"], list) and stats["history"], "sampled at start"


def test_settings_toggle_registration_at_run_time(api, api_server):
    """PATCH /api/settings/ opens in-band registration at once (XEP-0077
    stream feature offered), and closes it again; bad values are 400s."""
    assert api.get("/settings/").json()["XMPP_REGISTRATION_ENABLED"] is False

    def register_offered() -> bool:
        stream = RawStream(api_server)
        try:
            return b"iq-register" in stream.starttls()
        finally:
            stream.sock.close()

    assert not register_offered()
    response = api.patch("/settings/", json={"XMPP_REGISTRATION_ENABLED": True})
    assert response.status_code == 200 and response.json()["XMPP_REGISTRATION_ENABLED"] is True
    assert register_offered()
    api.patch("/settings/", json={"XMPP_REGISTRATION_ENABLED": False})
    assert not register_offered()
    assert_json_error(api.patch("/settings/", json={"XMPP_STANZAS_PER_SECOND": 0}), 400)
    assert_json_error(api.patch("/settings/", json={"XMPP_STANZAS_PER_SECOND": "x"}), 400)
    assert_json_error(api.patch("/settings/", json={"XMPP_DOMAIN": "evil"}), 400)


def test_message_of_the_day_at_login(api, api_server):
    """A message of the day set through the API is sent to users as they log in."""
    api.patch("/settings/", json={"XMPP_MOTD": "Welcome to the test server"})
    try:

        async def scenario():
            client = await connect(api_server, "bob", "motd")
            try:
                message = await asyncio.wait_for(client.messages.get(), 10)
                assert message["body"] == "Welcome to the test server"
                assert message["from"].full == "localhost"
            finally:
                await disconnect(client)

        asyncio.run(scenario())
    finally:
        api.patch("/settings/", json={"XMPP_MOTD": ""})


def test_audit_log_records_api_changes(api):
    """GET /api/audit-log/ lists what was changed, by whom, through the API."""
    api.post("/users/", json={"username": "ivan", "password": PASSWORD})
    entries = api.get("/audit-log/").json()["results"]
    entry = next(e for e in entries if e["action"] == "user.create" and e["target"] == "ivan")
    assert entry["actor_name"] == STAFF and entry["via"] == "api"
    assert entry["address"] == "127.0.0.1"


def test_schema_and_swagger_ui(api, api_server):
    """The OpenAPI schema is at /api/schema/ and Swagger UI at /api/docs/."""
    schema = api.get("/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/users/", "/api/sessions/", "/api/broadcast/", "/api/stats/"):
        assert path in paths
    docs = api.get("/docs/")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "cdn" not in docs.text.lower()  # served by this process


def test_a_revoked_token_is_refused(api_server):
    """A token that was deleted (revoked) no longer authenticates: 401."""
    token = issue_token(api_server)
    url = f"{base_url(api_server)}/api/stats/"
    headers = {"Authorization": f"Token {token}"}
    assert httpx.get(url, headers=headers).status_code == 200
    api_server.manage(
        "shell",
        "-c",
        "from admin_ui.models import ApiToken; "
        f"ApiToken.objects.filter(prefix={token[:8]!r}).delete()",
    )
    response = httpx.get(url, headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"


def api_paths(api) -> set[str]:
    schema = api.get("/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    return set(schema.json()["paths"])


def test_rooms_and_their_occupants(api, api_server):
    """GET /api/rooms/, /api/rooms/<name>/ and /api/rooms/<name>/occupants/
    (the occupants of a live room). The muc app is installed, so the schema
    lists them; a route that vanished (admin_ui/api/urls.py registers them
    only if muc's Room model is found) is a failure, not a skip."""
    routes = {"/api/rooms/", "/api/rooms/{name}/", "/api/rooms/{name}/occupants/"}
    assert routes <= api_paths(api)
    import xml.etree.ElementTree as ET

    async def scenario():
        client = await connect(api_server, "alice", "muc")
        try:
            presence = client.make_presence(pto="lounge@conference.localhost/Alice")
            presence.append(ET.Element("{http://jabber.org/protocol/muc}x"))
            presence.send()

            async def joined():
                while True:
                    p = await client.presences.get()
                    if p["from"].bare == "lounge@conference.localhost":
                        return

            await asyncio.wait_for(joined(), 10)
            response = await asyncio.to_thread(api.get, "/rooms/lounge/occupants/")
            assert response.status_code == 200, response.text
            occupants = response.json()["results"]
            assert [(o["nick"], o["jid"]) for o in occupants] == [("Alice", "alice@localhost")]
        finally:
            await disconnect(client)

    asyncio.run(scenario())
    assert api.get("/rooms/").status_code == 200
    assert_json_error(api.get("/rooms/no-such-room/"), 404)
    assert_json_error(api.get("/rooms/no-such-room/occupants/"), 404)


def test_nodes_and_their_items(api, api_server):
    """GET /api/nodes/, /api/nodes/<id>/ and /api/nodes/<id>/items/. The
    pubsub app is installed, so the schema lists them; a route that vanished
    (registered only if pubsub's Node and Item models are found) is a
    failure, not a skip."""
    routes = {"/api/nodes/", "/api/nodes/{id}/", "/api/nodes/{id}/items/"}
    assert routes <= api_paths(api)
    api_server.manage(
        "shell",
        "-c",
        "from django.utils import timezone; from pubsub.models import Item, Node; "
        "n = Node.objects.create(service='pubsub.localhost', name='news'); "
        "Item.objects.create(node=n, item_id='first', payload='<entry xmlns=\"urn:x\"/>', "
        "publisher='alice@localhost', published=timezone.now())",
    )
    nodes = api.get("/nodes/").json()["results"]
    [node] = [n for n in nodes if n["name"] == "news"]
    assert node["service"] == "pubsub.localhost"
    assert api.get(f"/nodes/{node['id']}/").json()["name"] == "news"
    items = api.get(f"/nodes/{node['id']}/items/").json()
    assert items["count"] == 1 and items["results"][0]["item_id"] == "first"
    assert items["results"][0]["publisher"] == "alice@localhost"
    assert_json_error(api.get("/nodes/999999/items/"), 404)
