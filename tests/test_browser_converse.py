"""End to end in a real browser: Converse.js (the npm package, installed into
tests/browser/ by tests/run.sh) logs in as alice over XMPP-over-WebSocket
(RFC 7395, ws://, SASL SCRAM) in headless Debian Chromium driven by
Playwright, and chats both ways with bob, a slixmpp client over TCP.

The page tests/browser/converse.html takes its settings from the query string
and exposes Converse's API through a small plugin as `window.imserverTest`.
It is served, with tests/browser/node_modules, by an http.server thread.

Without /usr/bin/chromium, Playwright or the npm package the test is skipped
with the reason, except under CI=true, where tests/run.sh installs them and
their absence is a failure.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from .clients import connect, disconnect
from .conftest import PASSWORD

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CONVERSE_DIST = BROWSER_DIR / "node_modules" / "converse.js" / "dist"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium; tests/run.sh does it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (CONVERSE_DIST / "converse.min.js").exists():
        return f"converse.js is not installed (npm ci in {BROWSER_DIR}; tests/run.sh does it)"
    return None


@pytest.fixture
def browser_requirements() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the browser test's requirements: {reason}")
        pytest.skip(reason)


class SessionEstablishmentRefused(AssertionError):
    """The server advertised <session><optional/></session> but answered the
    session <iq type='set'/> that Strophe (Converse) sends after binding with an error."""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def page_server(browser_requirements):
    """tests/browser/ over HTTP on a free port of 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(BROWSER_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def _wait_for(page, expression: str, timeout: float = 20, what: str = "") -> object:
    """Poll a JavaScript expression in the page until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or expression}")
        await asyncio.sleep(0.1)


def test_converse_in_chromium_chats_with_a_tcp_client(xmpp_server, page_server, tmp_path):
    """Converse.js auto-logs in as alice over ws:// (SCRAM; no PLAIN without TLS),
    shows bob's message in the open chat, and sends one that bob receives."""
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
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            bob = None
            try:
                await page.goto(url)
                state = await _wait_for(
                    page,
                    "window.imserverTest && (window.imserverTest.connected && 'connected'"
                    " || window.imserverTest.disconnected && 'disconnected')",
                    what="Converse to log in as alice",
                )
                if state != "connected":
                    if any("Session creation failed" in line for line in console):
                        raise SessionEstablishmentRefused("the session IQ after bind was refused")
                    raise AssertionError(f"Converse did not log in: {state}")
                alice_jid = await page.evaluate("window.imserverTest.api.user.jid()")
                assert alice_jid.startswith("alice@localhost/")

                await page.evaluate("window.imserverTest.api.chats.open('bob@localhost')")
                # The element is a layout-less wrapper: wait for it, then for its heading.
                chat = page.locator("converse-chat[jid='bob@localhost']")
                await chat.wait_for(state="attached", timeout=15_000)
                await chat.get_by_text("bob@localhost").first.wait_for(
                    state="visible", timeout=15_000
                )

                bob = await connect(xmpp_server, "bob", "converse-peer")
                bob.send_message(mto=alice_jid, mbody="hello from slixmpp", mtype="chat")
                received = await _wait_for(
                    page,
                    "window.imserverTest.received.find(m => m.body === 'hello from slixmpp')",
                    what="bob's message in Converse",
                )
                assert received["from"].startswith("bob@localhost")
                # Shown in the open chat with bob, not only handled by the client.
                await chat.locator(".chat-msg__text", has_text="hello from slixmpp").wait_for(
                    state="visible", timeout=15_000
                )

                await page.evaluate(
                    """async () => {
                        const chat = await window.imserverTest.api.chats.get('bob@localhost');
                        await chat.sendMessage({ body: 'hello from Converse.js' });
                    }"""
                )
                while True:
                    message = await asyncio.wait_for(bob.messages.get(), 15)
                    if message["body"]:
                        break
                assert message["body"] == "hello from Converse.js"
                assert message["from"].bare == "alice@localhost"
                assert message["type"] == "chat"
                await chat.locator(".chat-msg__text", has_text="hello from Converse.js").wait_for(
                    state="visible", timeout=15_000
                )
            except BaseException:
                await page.screenshot(path=str(tmp_path / "converse-failure.png"), full_page=True)
                (tmp_path / "converse-console.log").write_text("\n".join(console))
                raise
            finally:
                if bob is not None:
                    await disconnect(bob)
                await browser.close()

    try:
        asyncio.run(scenario())
    except SessionEstablishmentRefused:
        raise
    except Exception as exc:
        tail = "\n".join(console[-40:])
        raise AssertionError(
            f"{exc!r}\nscreenshot and console in {tmp_path}\nbrowser console (tail):\n{tail}\n"
            f"server log (tail):\n{xmpp_server.log()[-3000:]}"
        ) from exc
