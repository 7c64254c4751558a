"""The same password logs into XMPP and into the web admin (Django admin)."""

import http.cookiejar
import re
import urllib.parse
import urllib.request

import pytest

from .conftest import PASSWORD


def admin_login(server, username: str, password: str) -> tuple[int, str]:
    """Log in through the admin's login form; return (status, final URL)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{server.http_port}"
    page = opener.open(f"{base}/admin/login/?next=/admin/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=form)
    request.add_header("Referer", f"{base}/admin/login/")
    response = opener.open(request, timeout=10)
    return response.status, response.geturl()


@pytest.fixture(scope="module")
def staff_account(xmpp_server) -> str:
    xmpp_server.manage("register", "admin", PASSWORD)
    xmpp_server.manage(
        "shell",
        "-c",
        "from xmpp.models import User; User.objects.filter(username='admin')"
        ".update(is_staff=True, is_superuser=True)",
    )
    return "admin"


def test_staff_account_logs_into_admin_with_its_xmpp_password(xmpp_server, staff_account):
    """A staff account's XMPP password opens the admin; the stored hash is SCRAM keys."""
    status, url = admin_login(xmpp_server, "admin", PASSWORD)
    assert status == 200
    assert url.endswith("/admin/")
    stored = xmpp_server.manage(
        "shell",
        "-c",
        "from xmpp.models import User; print(User.objects.get(username='admin').password)",
    ).stdout
    assert stored.strip().splitlines()[-1].startswith("scram$") and PASSWORD not in stored


def test_wrong_password_stays_on_the_login_page(xmpp_server, staff_account):
    status, url = admin_login(xmpp_server, staff_account, "not the password")
    assert status == 200
    assert "/admin/login/" in url
