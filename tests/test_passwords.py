"""The SCRAM password hasher (xmpp/passwords.py) as Django uses it."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.hashers import (
    PBKDF2PasswordHasher,
    check_password,
    get_hasher,
    identify_hasher,
    make_password,
)

from xmpp.models import User
from xmpp.passwords import ScramPasswordHasher, scram_credentials
from xmpp.protocol.scram import ScramCredentials, derive_keys


@pytest.fixture
def juliet(db):
    user = User(username="juliet")
    user.set_password("r0m30")
    user.save()
    return user


def test_set_password_stores_scram_credentials(juliet):
    """set_password uses the scram hasher, first in PASSWORD_HASHERS."""
    assert juliet.password.startswith("scram$4096$")
    assert isinstance(identify_hasher(juliet.password), ScramPasswordHasher)


def test_check_password_accepts_the_right_password_and_rejects_a_wrong_one(juliet):
    """Django's own check (web admin login) works on the stored SCRAM credentials."""
    juliet.refresh_from_db()
    assert juliet.check_password("r0m30")
    assert not juliet.check_password("r0m31")
    assert not juliet.check_password("")


def test_encoded_form_has_salt_iterations_and_four_keys(juliet):
    """scram$i$salt$ then SHA-1 StoredKey, ServerKey, SHA-256 StoredKey, ServerKey."""
    algorithm, iterations, salt, *keys = juliet.password.split("$")
    assert (algorithm, iterations) == ("scram", "4096")
    assert [len(base64.b64decode(key)) for key in keys] == [20, 20, 32, 32]


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_scram_credentials_match_derive_keys_for_the_password(juliet, hash_name):
    """The extracted credentials are the RFC 5802 §3 keys for the password and salt."""
    creds = scram_credentials(juliet.password, hash_name)
    salt = juliet.password.split("$")[2].encode()
    stored_key, server_key = derive_keys("r0m30", salt, 4096, hash_name)
    assert creds == ScramCredentials(salt, 4096, stored_key, server_key)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        None,
        "!unusable",
        PBKDF2PasswordHasher().encode("r0m30", "somesalt", 1000),
        "scram$4096$salt$AAAA",
        "scram$x$salt$AA==$AA==$AA==$AA==",
        "scram$4096$salt$!!$!!$!!$!!",
    ],
    ids=["empty", "none", "unusable", "pbkdf2", "truncated", "bad-iterations", "bad-base64"],
)
def test_scram_credentials_is_none_for_other_formats(encoded):
    """Accounts with an older hash or no usable password have no SCRAM credentials."""
    assert scram_credentials(encoded, "SHA-256") is None


def test_must_update_when_the_iteration_setting_changes(juliet, settings):
    """A hash made with another XMPP_SCRAM_ITERATIONS is re-encoded on next check."""
    hasher = get_hasher("scram")
    assert not hasher.must_update(juliet.password)
    settings.XMPP_SCRAM_ITERATIONS = 5000
    assert hasher.must_update(juliet.password)
    assert juliet.check_password("r0m30")  # Django re-encodes through set_password
    assert juliet.password.startswith("scram$5000$")
    assert scram_credentials(juliet.password, "SHA-1").iterations == 5000


def test_iterations_are_read_at_call_time(settings):
    """Changing the setting affects the next make_password, not only new processes."""
    settings.XMPP_SCRAM_ITERATIONS = 4100
    assert make_password("pencil").startswith("scram$4100$")


def test_older_pbkdf2_hash_is_upgraded_to_scram_on_login(db):
    """A user with a pbkdf2 hash gets SCRAM credentials once the password is seen."""
    user = User.objects.create(
        username="romeo", password=PBKDF2PasswordHasher().encode("j00l", "somesalt", 1000)
    )
    assert scram_credentials(user.password, "SHA-256") is None
    assert user.check_password("j00l")
    user.refresh_from_db()
    assert scram_credentials(user.password, "SHA-256") is not None


def test_safe_summary_masks_salt_and_hash(juliet):
    """The admin's password widget shows the parameters, never the salt or keys."""
    summary = get_hasher("scram").safe_summary(juliet.password)
    salt = juliet.password.split("$")[2]
    assert summary["algorithm"] == "scram" and summary["iterations"] == 4096
    assert summary["salt"] != salt and summary["salt"].startswith(salt[:6])
    assert set(summary["hash"][6:]) == {"*"}


def test_password_check_uses_opaque_string_normalization(db):
    """RFC 8265 §4.2: a no-break space and a space are the same password character."""
    encoded = make_password("pen\u00a0cil")
    assert check_password("pen cil", encoded)


def test_encoded_password_fits_the_user_password_field(juliet):
    """The admin's UserChangeForm validates User.password, and PostgreSQL enforces its length."""
    assert len(juliet.password) <= User._meta.get_field("password").max_length
