"""Account management as an operator scripts it: register, unregister, passwd.

Each test runs the real manage.py commands in subprocesses against its own
SQLite database (XMPP_DATA_DIR in a temporary directory), and checks exit
status, messages and what ends up stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
DOMAIN = "capulet.example"
# Variables that would point the commands somewhere other than the test's database.
FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "XMPP_SCRAM_ITERATIONS")


def manage(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `manage.py ARGS` as an operator would, against data_dir's database."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(XMPP_DATA_DIR=str(data_dir), XMPP_DOMAIN=DOMAIN)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=110,
    )


def stored_accounts(data_dir: Path, passwords: dict[str, str] | None = None) -> dict:
    """{"count": N, "names": first names, "verifies": {name: check_password(pw)}}."""
    code = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        f"passwords = {json.dumps(passwords or {})}\n"
        "verifies = {}\n"
        "for name, pw in passwords.items():\n"
        "    user = User.objects.filter(username=name).first()\n"
        "    verifies[name] = bool(user and user.check_password(pw))\n"
        "names = list(User.objects.order_by('username').values_list('username', flat=True)[:20])\n"
        "print(json.dumps({'count': User.objects.count(), 'names': names, 'verifies': verifies}))\n"
    )
    result = manage(data_dir, "shell", "--no-imports", "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def data_dir(tmp_path, migrated_templates) -> Path:
    """This test's own XMPP_DATA_DIR, with a copy of the session's migrated
    SQLite database (conftest.py's MigratedTemplates, as every test server)."""
    target = tmp_path / "data"
    target.mkdir()
    migrated_templates.give_database(target, "")  # manage() runs on SQLite
    return target


@pytest.fixture
def juliet(data_dir) -> Path:
    """juliet@capulet.example exists with the password "r0m30"."""
    result = manage(data_dir, "register", "juliet", "r0m30")
    assert result.returncode == 0, result.stderr
    return data_dir


def test_register_creates_account_and_password_verifies(data_dir):
    """register USER PASSWORD exits 0, names the full JID, and the password checks."""
    result = manage(data_dir, "register", "juliet", "r0m30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Created account juliet@{DOMAIN}"
    assert result.stderr == ""
    stored = stored_accounts(data_dir, {"juliet": "r0m30"})
    assert stored["names"] == ["juliet"]
    assert stored["verifies"] == {"juliet": True}


def test_register_stores_password_that_rejects_other_passwords(juliet):
    """Only the registered password verifies, not a near miss."""
    assert stored_accounts(juliet, {"juliet": "r0m31"})["verifies"] == {"juliet": False}


def test_register_existing_account_fails_with_status_1(juliet):
    """Registering a name that exists exits 1, says so, and keeps the old password."""
    result = manage(juliet, "register", "juliet", "other")
    assert result.returncode == 1
    assert f"juliet@{DOMAIN} already exists" in result.stderr
    assert result.stdout == ""
    assert stored_accounts(juliet, {"juliet": "r0m30"})["verifies"] == {"juliet": True}


@pytest.mark.parametrize("name", ["bad@name", "a b", "ju/liet", ""])
def test_register_invalid_name_fails_with_status_1(data_dir, name):
    """A name that is not a valid JID localpart (RFC 7622 §3.3) exits 1, creating nothing."""
    result = manage(data_dir, "register", name, "r0m30")
    assert result.returncode == 1
    assert f"invalid account name {name!r}" in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_register_empty_password_fails_with_status_1(data_dir):
    """An empty password is refused with exit status 1."""
    result = manage(data_dir, "register", "juliet", "")
    assert result.returncode == 1
    assert "empty password" in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_register_stores_uppercase_name_case_folded(data_dir):
    """'Juliet' is stored and reported as 'juliet'; 'JULIET' is then the same account."""
    result = manage(data_dir, "register", "Juliet", "r0m30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Created account juliet@{DOMAIN}"
    assert stored_accounts(data_dir)["names"] == ["juliet"]
    again = manage(data_dir, "register", "JULIET", "r0m30")
    assert again.returncode == 1
    assert f"juliet@{DOMAIN} already exists" in again.stderr


def test_register_without_password_is_a_usage_error(data_dir):
    """USER without PASSWORD (and no --from-file) exits 2 and creates nothing."""
    result = manage(data_dir, "register", "juliet")
    assert result.returncode == 2
    assert "give USER and PASSWORD" in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_unregister_deletes_account(juliet):
    """unregister USER exits 0, names the full JID, and the account is gone."""
    result = manage(juliet, "unregister", "Juliet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Deleted account juliet@{DOMAIN}"
    assert stored_accounts(juliet)["count"] == 0


def test_unregister_missing_account_fails_with_status_1(data_dir):
    """unregister of a name with no account exits 1 and says there is no such account."""
    result = manage(data_dir, "unregister", "romeo")
    assert result.returncode == 1
    assert f"no account romeo@{DOMAIN}" in result.stderr
    assert result.stdout == ""


def test_passwd_changes_password(juliet):
    """passwd USER PASSWORD exits 0; the new password verifies and the old one does not."""
    result = manage(juliet, "passwd", "juliet", "n3w pass")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Changed the password of juliet@{DOMAIN}"
    stored = stored_accounts(juliet, {"juliet": "n3w pass"})
    assert stored["verifies"] == {"juliet": True}
    assert stored_accounts(juliet, {"juliet": "r0m30"})["verifies"] == {"juliet": False}


def test_passwd_missing_account_fails_with_status_1(data_dir):
    """passwd for a name with no account exits 1 and creates nothing."""
    result = manage(data_dir, "passwd", "romeo", "whatever")
    assert result.returncode == 1
    assert f"no account romeo@{DOMAIN}" in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_register_from_file_creates_10000_accounts_in_under_a_minute(data_dir, tmp_path):
    """--from-file with 10,000 lines exits 0 within 60 s and every account is stored."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("".join(f"user{i} secret-{i}\n" for i in range(10_000)))
    started = time.monotonic()
    result = manage(data_dir, "register", "--from-file", str(accounts))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"Created 10000 accounts on {DOMAIN}" in result.stdout
    assert elapsed < 60, f"took {elapsed:.1f} s"
    sample = {"user0": "secret-0", "user4321": "secret-4321", "user9999": "secret-9999"}
    stored = stored_accounts(data_dir, sample)
    assert stored["count"] == 10_000
    assert stored["verifies"] == dict.fromkeys(sample, True)


def test_register_from_file_ignores_blank_lines_and_comments(data_dir, tmp_path):
    """Blank and # lines are skipped; the password is the rest of the line after the name."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# the Capulets\n\nJuliet  r0m30 and more\n   \n\tnurse\tsecret\n")
    result = manage(data_dir, "register", "--from-file", str(accounts))
    assert result.returncode == 0, result.stderr
    assert f"Created 2 accounts on {DOMAIN}" in result.stdout
    stored = stored_accounts(data_dir, {"juliet": "r0m30 and more", "nurse": "secret"})
    assert stored["names"] == ["juliet", "nurse"]
    assert stored["verifies"] == {"juliet": True, "nurse": True}


def test_register_from_standard_input(data_dir):
    """--from-file - reads the account list from standard input."""
    result = manage(data_dir, "register", "--from-file", "-", stdin="romeo m0nt4gu3\n")
    assert result.returncode == 0, result.stderr
    assert stored_accounts(data_dir, {"romeo": "m0nt4gu3"})["verifies"] == {"romeo": True}


def test_register_from_file_with_bad_line_rejects_all(data_dir, tmp_path):
    """One invalid line makes the whole file fail with status 1, naming the line; none created."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("romeo m0nt4gu3\n# comment\nbad@name secret\nnurse\nbenvolio x\n")
    result = manage(data_dir, "register", "--from-file", str(accounts))
    assert result.returncode == 1
    assert "no account created" in result.stderr
    assert "line 3: invalid character in localpart 'bad@name'" in result.stderr
    assert "line 4: empty password" in result.stderr
    assert "line 1" not in result.stderr and "line 5" not in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_register_from_file_with_existing_account_rejects_all(juliet, tmp_path):
    """A line naming an existing account fails the whole file with status 1; none created."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("romeo m0nt4gu3\nJULIET other\n")
    result = manage(juliet, "register", "--from-file", str(accounts))
    assert result.returncode == 1
    assert "line 2: account 'juliet' already exists" in result.stderr
    stored = stored_accounts(juliet, {"juliet": "r0m30"})
    assert stored["names"] == ["juliet"]
    assert stored["verifies"] == {"juliet": True}


def test_register_from_file_with_repeated_name_rejects_all(data_dir, tmp_path):
    """The same name twice (after case folding) fails the file, naming both lines."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("romeo one\ntybalt two\nRomeo three\n")
    result = manage(data_dir, "register", "--from-file", str(accounts))
    assert result.returncode == 1
    assert "line 3: account 'romeo' is listed twice (first on line 1)" in result.stderr
    assert stored_accounts(data_dir)["count"] == 0


def test_register_from_missing_file_fails_with_status_1(data_dir, tmp_path):
    """A file that cannot be read exits 1 with the reason."""
    result = manage(data_dir, "register", "--from-file", str(tmp_path / "nope.txt"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr
