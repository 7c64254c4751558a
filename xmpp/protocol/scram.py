"""SASL mechanisms, server side, without I/O: SCRAM and PLAIN.

This module owns the SCRAM-SHA-1, SCRAM-SHA-256 and -PLUS exchanges (RFC 5802
§5-7, RFC 7677), channel binding with "tls-unique" and "tls-server-end-point"
(RFC 5929 §3, §4) and "tls-exporter" (RFC 9266), the PLAIN message format
(RFC 4616), the key derivation shared with the password hasher
(xmpp/passwords.py), and the list of mechanisms offered in <mechanisms/>
(RFC 6120 §6.4.1). The data of each binding comes from the transport
(xmpp/tls.py `channel_bindings`); this module only compares it.

It takes the decoded SASL payloads (bytes) and returns the next payload; the
negotiation layer does the base64 of RFC 6120 §6.4.2 (<incorrect-encoding/>),
looks up the account, and turns SaslFailure into <failure/>. Every failure is a
SaslFailure carrying an RFC 6120 §6.5 condition: a message that breaks the
grammar of RFC 5802 §7 is "malformed-request", anything that would let a
wrong password, channel or nonce through is "not-authorized".

Usernames are prepared with the PRECIS UsernameCaseMapped profile and
passwords with OpaqueString (RFC 8265 §3.3, §4.2), which RFC 8265 §7 says
replace SASLprep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import precis_i18n

# SCRAM hash names as they appear in mechanism names -> hashlib names.
HASHES = {"SHA-256": "sha256", "SHA-1": "sha1"}
# The channel-binding types SCRAM-*-PLUS accepts. Which of them a connection
# has (tls-unique only on TLS 1.2, RFC 9266 §1) is the transport's to say: it
# gives the data of each type it supports, and only those are accepted.
CHANNEL_BINDING_TYPES = ("tls-unique", "tls-server-end-point", "tls-exporter")

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_PASSWORD = precis_i18n.get_profile("OpaqueString")
# RFC 5802 §7: cb-name = 1*(ALPHA / DIGIT / "." / "-"); printable excludes ",".
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+")
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_SALT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Keys the fake salts of unknown users when the caller gives no stable key.
_PROCESS_KEY = secrets.token_bytes(32)


class SaslFailure(Exception):
    """Authentication failed; `condition` is the RFC 6120 §6.5 element name."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class ScramCredentials:
    """What the server stores for one hash (RFC 5802 §3): never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def offered_mechanisms(tls: bool, channel_binding_types: Iterable[str] = ()) -> list[str]:
    """Mechanism names for <mechanisms/>, strongest first.

    -PLUS only when the TLS layer can give us a channel binding we support
    (RFC 5802 §6); PLAIN only inside TLS, since it sends the password
    (RFC 6120 §13.8).
    """
    plus = tls and any(t in CHANNEL_BINDING_TYPES for t in channel_binding_types)
    names = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] if plus else []
    names += ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    if tls:
        names.append("PLAIN")
    return names


def normalize_password(password: str) -> str:
    """RFC 8265 §4.2 OpaqueString; a password the profile rejects is used as is.

    The fallback keeps Django able to store and check any password; such a
    password still works with PLAIN and with clients that do not prepare it.
    """
    try:
        return _PASSWORD.enforce(password)
    except UnicodeError:
        return password


def derive_keys(password: str, salt: bytes, iterations: int, hash_name: str) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for a password, as in RFC 5802 §3."""
    digest = _hashlib_name(hash_name)
    salted = hashlib.pbkdf2_hmac(digest, normalize_password(password).encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", digest)
    server_key = hmac.digest(salted, b"Server Key", digest)
    return hashlib.new(digest, client_key).digest(), server_key


def parse_plain(message: bytes) -> tuple[str, str, str]:
    """(authzid, authcid, password) of a PLAIN message (RFC 4616 §2).

    authzid is "" when absent; authcid is PRECIS-prepared like a SCRAM
    username. The password is returned as sent: check_password (through the
    hasher, or an older one) prepares it.
    """
    try:
        authzid, authcid, password = message.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslFailure("malformed-request", "expected authzid NUL authcid NUL passwd") from None
    # RFC 4616 §2: authcid and passwd are 1 to 255 octets.
    for value in (authcid, password):
        if not 0 < len(value.encode()) <= 255:
            raise SaslFailure("malformed-request", "empty or overlong authcid or passwd")
    return authzid, _prepare_username(authcid), password


class ScramServer:
    """One SCRAM exchange, server side (RFC 5802 §5).

    Call client_first, then server_first with the account's credentials (or
    None if there is no such account), then client_final. Any step may raise
    SaslFailure; the exchange is then over.
    """

    def __init__(
        self,
        hash_name: str,
        channel_binding: dict[str, bytes] | None = None,
        plus: bool = False,
        *,
        unknown_user_key: bytes | None = None,
        unknown_user_iterations: int = 4096,
    ) -> None:
        """
        channel_binding: cb type -> cb data of this TLS connection, as given by
        the transport; plus: this is SCRAM-*-PLUS. unknown_user_key keys the
        fake salt of unknown users; pass a stable secret so that salt does not
        change across restarts. unknown_user_iterations should be the count
        real accounts have.
        """
        self.hash_name = hash_name
        self._digest = _hashlib_name(hash_name)
        self._channel_binding = {
            name: data
            for name, data in (channel_binding or {}).items()
            if name in CHANNEL_BINDING_TYPES
        }
        self.plus = plus
        self._unknown_user_key = unknown_user_key or _PROCESS_KEY
        self._unknown_user_iterations = unknown_user_iterations
        self.username: str | None = None
        self.authzid: str | None = None
        self._state = "client-first"
        self._cb_name: str | None = None
        self._gs2_header = b""
        self._client_nonce = ""
        self._client_first_bare = b""
        self._server_first = b""
        self._nonce = ""
        self._credentials: ScramCredentials | None = None

    @classmethod
    def for_mechanism(
        cls, mechanism: str, channel_binding: dict[str, bytes] | None = None, **kwargs
    ) -> ScramServer:
        """The server for a mechanism name the client chose, e.g. "SCRAM-SHA-1-PLUS"."""
        name, plus = mechanism.removesuffix("-PLUS"), mechanism.endswith("-PLUS")
        hash_name = name.removeprefix("SCRAM-")
        if not name.startswith("SCRAM-") or hash_name not in HASHES:
            raise SaslFailure("invalid-mechanism", mechanism)
        if plus and not any(t in CHANNEL_BINDING_TYPES for t in channel_binding or {}):
            raise SaslFailure("invalid-mechanism", f"{mechanism} needs channel binding")
        return cls(hash_name, channel_binding, plus, **kwargs)

    @property
    def mechanism(self) -> str:
        return f"SCRAM-{self.hash_name}" + ("-PLUS" if self.plus else "")

    def client_first(self, message: bytes) -> str:
        """Parse client-first-message (RFC 5802 §5.1, §7); return the username."""
        self._advance("client-first", "server-first")
        text = _decode(message)
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise SaslFailure("malformed-request", "no gs2 header")
        flag, authzid, bare = parts
        self._cb_name = self._check_gs2_flag(flag)
        if authzid:
            if not authzid.startswith("a=") or len(authzid) == 2:
                raise SaslFailure("malformed-request", "bad authzid")
            self.authzid = _unescape_saslname(authzid[2:])
        # RFC 5802 §7: the gs2 header is "flag,[a=authzid],".
        self._gs2_header = f"{flag},{authzid},".encode()
        attributes = bare.split(",")
        # RFC 5802 §5.1: a server MUST fail on the reserved "m" extension.
        if attributes[0].startswith("m="):
            raise SaslFailure("malformed-request", "mandatory extensions are not supported")
        if len(attributes) < 2 or not attributes[0].startswith("n="):
            raise SaslFailure("malformed-request", "expected n=username,r=nonce")
        if not attributes[1].startswith("r=") or not _NONCE.fullmatch(attributes[1][2:]):
            raise SaslFailure("malformed-request", "bad client nonce")
        self.username = _prepare_username(_unescape_saslname(attributes[0][2:]))
        self._client_nonce = attributes[1][2:]
        self._client_first_bare = bare.encode()
        return self.username

    def server_first(self, credentials: ScramCredentials | None) -> bytes:
        """server-first-message (RFC 5802 §5.1).

        For an unknown account (None) the exchange goes on with a salt derived
        from the username, so probing cannot tell accounts apart; it fails at
        client_final like a wrong password.
        """
        self._advance("server-first", "client-final")
        self._credentials = credentials or self._unknown_user_credentials()
        self._nonce = self._client_nonce + secrets.token_urlsafe(18)
        salt = base64.b64encode(self._credentials.salt).decode()
        message = f"r={self._nonce},s={salt},i={self._credentials.iterations}".encode()
        self._server_first = message
        return message

    def client_final(self, message: bytes) -> bytes:
        """Verify client-final-message (RFC 5802 §5.1); return server-final-message."""
        self._advance("client-final", "done")
        without_proof, sep, proof = _decode(message).rpartition(",p=")
        attributes = without_proof.split(",")
        if not sep or len(attributes) < 2:
            raise SaslFailure("malformed-request", "expected c=...,r=...,p=...")
        channel, nonce = attributes[0], attributes[1]
        if not channel.startswith("c=") or not nonce.startswith("r="):
            raise SaslFailure("malformed-request", "expected c=...,r=...,p=...")
        # RFC 5802 §6: c= is the gs2 header plus, for "p", the channel's data.
        expected = self._gs2_header
        if self._cb_name:
            expected += self._channel_binding[self._cb_name]
        if not hmac.compare_digest(_b64decode(channel[2:]), expected):
            raise SaslFailure("not-authorized", "channel binding does not match")
        if not hmac.compare_digest(nonce[2:].encode(), self._nonce.encode()):
            raise SaslFailure("not-authorized", "nonce does not match")

        # RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage),
        # and the proof is good when H(ClientKey) == StoredKey.
        auth_message = b",".join(
            [self._client_first_bare, self._server_first, without_proof.encode()]
        )
        credentials = self._credentials
        assert credentials is not None  # _advance saw server_first run
        signature = hmac.digest(credentials.stored_key, auth_message, self._digest)
        client_proof = _b64decode(proof)
        if len(client_proof) != len(signature):
            raise SaslFailure("not-authorized", "bad proof")
        client_key = bytes(a ^ b for a, b in zip(client_proof, signature, strict=True))
        stored_key = hashlib.new(self._digest, client_key).digest()
        if not hmac.compare_digest(stored_key, credentials.stored_key):
            raise SaslFailure("not-authorized", "bad proof")
        server_signature = hmac.digest(credentials.server_key, auth_message, self._digest)
        return b"v=" + base64.b64encode(server_signature)

    def _check_gs2_flag(self, flag: str) -> str | None:
        """Apply RFC 5802 §6 to the gs2-cbind-flag; return the cb type, if any."""
        if flag.startswith("p="):
            cb_name = flag[2:]
            if not self.plus:
                raise SaslFailure("malformed-request", "channel binding needs a -PLUS mechanism")
            if not _CB_NAME.fullmatch(cb_name) or cb_name not in self._channel_binding:
                raise SaslFailure("not-authorized", f"unsupported channel binding {cb_name!r}")
            return cb_name
        if flag not in ("n", "y"):
            raise SaslFailure("malformed-request", "bad gs2-cbind-flag")
        if self.plus:
            raise SaslFailure("malformed-request", "a -PLUS mechanism needs p=")
        # "y": the client could bind but thinks we cannot. We offered -PLUS,
        # so someone removed it on the way: a downgrade.
        if flag == "y" and self._channel_binding:
            raise SaslFailure("not-authorized", "server does support channel binding")
        return None

    def _unknown_user_credentials(self) -> ScramCredentials:
        # Same salt for the same name every time, and shaped like the salts
        # the password hasher makes (22 alphanumerics).
        seed = hmac.digest(self._unknown_user_key, (self.username or "").encode(), "sha256")
        salt = "".join(_SALT_ALPHABET[b % len(_SALT_ALPHABET)] for b in seed[:22])
        size = hashlib.new(self._digest).digest_size
        return ScramCredentials(
            salt=salt.encode(),
            iterations=self._unknown_user_iterations,
            stored_key=secrets.token_bytes(size),
            server_key=secrets.token_bytes(size),
        )

    def _advance(self, expected: str, following: str) -> None:
        if self._state != expected:
            raise SaslFailure("malformed-request", f"unexpected {expected} step")
        self._state = following


def _hashlib_name(hash_name: str) -> str:
    try:
        return HASHES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}") from None


def _decode(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "not UTF-8") from None


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SaslFailure("malformed-request", "bad base64 inside SCRAM") from None


def _unescape_saslname(value: str) -> str:
    # RFC 5802 §5.1: "," and "=" travel as "=2C" and "=3D"; any other "=" is
    # an error.
    if re.search(r"=(?!2C|3D)", value):
        raise SaslFailure("malformed-request", "bad escape in saslname")
    return re.sub(r"=2C|=3D", lambda m: "," if m[0] == "=2C" else "=", value)


def _prepare_username(username: str) -> str:
    try:
        return _USERNAME.enforce(username)
    except UnicodeError:
        raise SaslFailure("malformed-request", "invalid username") from None
