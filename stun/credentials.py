"""TURN credentials: the "TURN REST API" scheme and the server's nonces.

The time-limited credentials follow draft-uberti-behave-turn-rest-00 §2.2,
the scheme coturn (`use-auth-secret`), ejabberd and Prosody's
mod_turn_external use: the username is `<expiry unix time>:<user>` and the
password is base64(HMAC-SHA1(shared secret, username)). Whoever knows the
secret (this server's XEP-0215 handler, or another server sharing it) can
issue credentials; the TURN side needs no database.

Nonces (RFC 8489 §9.2, with §9.2.4's 438 Stale Nonce) are stateless: the
expiry time and an HMAC of it and the client's address, under a key made
at start, so a restart or another process makes earlier nonces stale.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


def load_or_create_secret(data_dir: Path) -> str:
    """XMPP_TURN_SECRET, else a secret kept in XMPP_DATA_DIR/turn_secret (made once)."""
    path = Path(data_dir) / "turn_secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def turn_secret() -> str:
    return settings.XMPP_TURN_SECRET or load_or_create_secret(settings.XMPP_DATA_DIR)


def rest_password(secret: str, username: str) -> str:
    """draft-uberti-behave-turn-rest-00 §2.2: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class RestCredentials:
    username: str
    password: str
    expires: int  # unix time


def issue(secret: str, user: str, ttl: int, now: float | None = None) -> RestCredentials:
    """Credentials for `user` (a bare JID) valid for `ttl` seconds."""
    expires = int(now if now is not None else time.time()) + ttl
    username = f"{expires}:{user}"
    return RestCredentials(username, rest_password(secret, username), expires)


class ExpiredCredentials(ValueError):
    pass


def rest_user(username: str, now: float | None = None) -> str:
    """The user of a REST-API username; raises ExpiredCredentials when its time
    is past (§2.2: "the TURN server ... checks the timestamp") or ValueError
    when it is not one."""
    expiry, sep, user = username.partition(":")
    if not sep or not expiry.isdigit():
        raise ValueError("not a TURN REST API username")
    if int(expiry) < (now if now is not None else time.time()):
        raise ExpiredCredentials(username)
    return user or username


class NonceIssuer:
    """Stateless nonces bound to the client's address, valid for `lifetime` seconds."""

    def __init__(self, lifetime: int = 600, key: bytes | None = None) -> None:
        self.lifetime = lifetime
        self.key = key or secrets.token_bytes(32)

    def _mac(self, expiry: str, client_ip: str) -> str:
        message = f"{expiry}|{client_ip}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:24]

    def make(self, client_ip: str, now: float | None = None) -> str:
        expiry = f"{int((now if now is not None else time.time()) + self.lifetime):x}"
        return expiry + self._mac(expiry, client_ip)

    def check(self, nonce: str, client_ip: str, now: float | None = None) -> bool:
        """True for a nonce this issuer made for this address and still valid."""
        expiry, mac = nonce[:-24], nonce[-24:]
        if not expiry or not hmac.compare_digest(mac, self._mac(expiry, client_ip)):
            return False
        try:
            return int(expiry, 16) >= (now if now is not None else time.time())
        except ValueError:
            return False
