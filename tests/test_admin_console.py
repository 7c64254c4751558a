"""The web console end to end in a real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; never a downloaded browser): an
administrator logs in through allauth, creates a user who then logs in
over XMPP with slixmpp, kicks that session and sees the client
disconnected, opens and closes in-band registration, broadcasts a message,
and finds it all in the audit log. The test keeps screenshots of the
dashboard and the users page in docs/screenshots/ for the README.

Without /usr/bin/chromium or Playwright the test is skipped with the
reason, except under CI=true, where their absence is a failure.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from .clients import RawStream, connect, disconnect
from .test_admin_support import PASSWORD, STAFF, base_url, start_console_server, stop_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium; tests/run.sh does it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the console test's requirements: {reason}")
        pytest.skip(reason)
    # One statistics sample a second, so that the dashboard's charts have a shape.
    server = start_console_server(
        tmp_path_factory.mktemp("console-server"), XMPP_STATS_INTERVAL="1"
    )
    yield server
    stop_server(server)


def registration_offered(server) -> bool:
    """Whether the XEP-0077 stream feature is offered to a new stream."""
    stream = RawStream(server)
    try:
        return b"iq-register" in stream.starttls()
    finally:
        stream.sock.close()


async def log_in(page, base: str, username: str, password: str = PASSWORD) -> None:
    # The console answers 401 and sends the browser on to allauth's login page.
    await page.goto(f"{base}/console/")
    await page.wait_for_url("**/accounts/login/**")
    await page.fill("input[name=login]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


def test_console_in_chromium(console_server, tmp_path):
    """Log in, create a user who logs in over XMPP, kick their session, toggle
    registration, broadcast, read the audit log; keep screenshots."""
    from playwright.async_api import async_playwright

    server = console_server
    base = base_url(server)

    async def scenario() -> None:
        clients = []
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            try:
                await log_in(page, base, STAFF)
                await page.wait_for_url(f"{base}/console/")
                assert await page.locator("h1").first.inner_text() == "Dashboard localhost"

                # Create a user in the console...
                await page.click("text=Users")
                await page.click("#new-user")
                await page.fill("input[name=username]", "zoe")
                await page.fill("input[name=password]", "zoe's password")
                await page.click("button:has-text('Create')")
                await page.wait_for_url(f"{base}/console/users/zoe/")
                assert "Account zoe created." in await page.inner_text(".messages")

                # ...who logs in over XMPP with that password.
                zoe = await connect(server, "zoe", "laptop", password="zoe's password")
                clients.append(zoe)
                await page.reload()
                row = page.locator("#user-sessions tr", has_text="laptop")
                await row.wait_for()

                # Kick the session: a confirmation page, then the client is disconnected.
                await row.locator("a.kick").click()
                await page.wait_for_selector("text=Are you sure?")
                await page.click("#confirm")
                await page.wait_for_url(f"{base}/console/users/zoe/")
                await asyncio.wait_for(zoe.disconnected_event.wait(), 10)
                assert "zoe@localhost/laptop disconnected." in await page.inner_text(".messages")
                assert "Offline." in await page.inner_text("#user-sessions")

                # Open in-band registration at run time, then close it again.
                assert not await asyncio.to_thread(registration_offered, server)
                await page.goto(f"{base}/console/settings/")
                await page.check("input[name=XMPP_REGISTRATION_ENABLED]")
                await page.click("#settings-form button[type=submit]")
                await page.wait_for_selector("text=Settings saved and applied.")
                assert await asyncio.to_thread(registration_offered, server)
                await page.uncheck("input[name=XMPP_REGISTRATION_ENABLED]")
                await page.click("#settings-form button[type=submit]")
                await page.wait_for_selector("text=Settings saved and applied.")
                assert not await asyncio.to_thread(registration_offered, server)

                # A broadcast reaches the users online.
                for user in ("alice", "bob"):
                    clients.append(await connect(server, user, "desk"))
                await page.goto(f"{base}/console/broadcast/")
                await page.fill("textarea[name=body]", "The server restarts at noon.")
                await page.click("button:has-text('Send')")
                await page.wait_for_selector("text=Sent to 2 sessions.")
                for client in clients[1:]:
                    message = await asyncio.wait_for(client.messages.get(), 10)
                    assert message["body"] == "The server restarts at noon."

                # Every change is in the audit log.
                await page.goto(f"{base}/console/audit/")
                audit = await page.inner_text("#audit")
                for action in ("user.create", "session.kick", "settings.change", "broadcast"):
                    assert action in audit, action

                # Screenshots for the README, with a few samples in the charts.
                await asyncio.sleep(4)
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                await page.goto(f"{base}/console/")
                await page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
                await page.goto(f"{base}/console/users/")
                await page.screenshot(path=str(SCREENSHOTS / "users.png"), full_page=True)
                await page.set_viewport_size({"width": 390, "height": 844})
                await page.goto(f"{base}/console/")
                await page.screenshot(path=str(SCREENSHOTS / "dashboard-phone.png"), full_page=True)
            except BaseException:
                await page.screenshot(path=str(tmp_path / "console-failure.png"), full_page=True)
                raise
            finally:
                await disconnect(*clients)
                await browser.close()

    try:
        asyncio.run(scenario())
    except Exception as exc:
        raise AssertionError(
            f"{exc!r}\nscreenshot in {tmp_path}\nserver log (tail):\n{server.log()[-3000:]}"
        ) from exc
