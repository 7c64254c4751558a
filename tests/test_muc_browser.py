"""Multi-user chat in a real browser: Converse.js (tests/browser/, as in
tests/test_browser_converse.py) logs in as alice over XMPP-over-WebSocket
in headless Chromium, enters a room a slixmpp client created, shows the
slixmpp client's groupchat message, and sends one the slixmpp client
receives (XEP-0045 §7.2, §7.4 as a web client uses them).

Skipped, with the reason, without Chromium, Playwright or the npm package
(except under CI=true), like the other browser test.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from .conftest import PASSWORD
from .muc_clients import SERVICE, connect_muc, disconnect, item_of
from .test_browser_converse import (  # noqa: F401 - fixtures
    CHROMIUM,
    CHROMIUM_ARGS,
    _wait_for,
    browser_requirements,
    page_server,
)

ROOM = f"browsers@{SERVICE}"


def test_converse_enters_a_room_and_chats(xmpp_server, page_server, tmp_path):  # noqa: F811
    """Converse.js enters the room as 'alice' (bob sees her presence), shows
    bob's groupchat message and sends one that bob receives from
    browsers@conference.localhost/alice; a room Converse creates is
    configured as an instant room and others can enter it."""
    from playwright.async_api import async_playwright

    query = urlencode(
        {
            "ws": f"ws://127.0.0.1:{xmpp_server.http_port}/xmpp-websocket",
            "jid": xmpp_server.jid("alice"),
            "password": PASSWORD,
        }
    )
    url = f"{page_server}/converse.html?{query}"
    console: list[str] = []

    async def scenario() -> None:
        bob = await connect_muc(xmpp_server, "bob", "muc-browser")
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            try:
                await bob.create_instant("browsers", "bob")
                await page.goto(url)
                state = await _wait_for(
                    page,
                    "window.imserverTest && (window.imserverTest.connected && 'connected'"
                    " || window.imserverTest.disconnected && 'disconnected')",
                    what="Converse to log in as alice",
                )
                assert state == "connected", state
                await page.evaluate(
                    f"window.imserverTest.api.rooms.open('{ROOM}', {{nick: 'alice'}})"
                )
                seen = await bob.presence_of("browsers", "alice", timeout=20)
                assert item_of(seen).get("role") == "participant"
                room = page.locator(f"converse-muc[jid='{ROOM}']")
                await room.wait_for(state="attached", timeout=15_000)

                bob.say("browsers", "hello from slixmpp")
                await room.locator(".chat-msg__text", has_text="hello from slixmpp").wait_for(
                    state="visible", timeout=15_000
                )
                await page.evaluate(
                    f"""async () => {{
                        const muc = await window.imserverTest.api.rooms.get('{ROOM}');
                        await muc.sendMessage({{ body: 'hello from Converse.js' }});
                    }}"""
                )
                message = await bob.heard("browsers", "hello from Converse.js", timeout=15)
                assert message.get("from") == f"{ROOM}/alice"

                # A room Converse creates (§10.1.2: it accepts the instant
                # configuration) is open to others at once.
                made = f"webmade@{SERVICE}"
                await page.evaluate(
                    f"window.imserverTest.api.rooms.open('{made}', {{nick: 'alice'}})"
                )
                for _ in range(100):
                    own = await bob.enter("webmade", "bob")
                    if own.get("type") != "error":
                        break
                    await asyncio.sleep(0.1)  # still locked: Converse is configuring it
                assert own.get("type") is None
                owner = await bob.presence_of("webmade", "alice")
                assert item_of(owner).get("affiliation") == "owner"
            except BaseException:
                await page.screenshot(path=str(tmp_path / "converse-muc.png"), full_page=True)
                (tmp_path / "converse-console.log").write_text("\n".join(console))
                raise
            finally:
                await disconnect(bob)
                await browser.close()

    try:
        asyncio.run(scenario())
    except Exception as exc:
        tail = "\n".join(console[-40:])
        raise AssertionError(
            f"{exc!r}\nscreenshot and console in {tmp_path}\nbrowser console (tail):\n{tail}"
        ) from exc
