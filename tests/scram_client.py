"""Client sides of SCRAM (RFC 5802 §3, RFC 7677) for tests that speak SASL by
hand: SCRAM-SHA-256 over WebSocket or BOSH, and SCRAM-*-PLUS bound to a raw
TLS stream's channel. Independent of the server's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


class ScramSha256Client:
    def __init__(self, user: str, password: str) -> None:
        self.password = password
        self.first_bare = f"n={user},r={secrets.token_urlsafe(18)}"

    def first_message(self) -> str:
        """The base64 client-first-message for <auth/>."""
        return base64.b64encode(("n,," + self.first_bare).encode()).decode()

    def final_message(self, server_first_b64: str, channel_binding: str = "biws") -> str:
        """The base64 client-final-message for <response/>, from the challenge;
        `channel_binding` is c=, base64 of the GS2 header and any binding data
        ("biws" is "n,,": none, RFC 5802 §7)."""
        server_first = base64.b64decode(server_first_b64).decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
        )
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c={channel_binding},r={fields['r']}"
        auth_message = f"{self.first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}"
        return base64.b64encode(final.encode()).decode()


class ScramPlusClient:
    """SCRAM-SHA-1(-PLUS) or SCRAM-SHA-256(-PLUS), client side, written out from
    RFC 5802 §3, §6 and §7 for tests that bind to the TLS channel by hand.

    `gs2_header` is e.g. b"p=tls-unique,," and `cb_data` that binding's data
    as the client sees it; c= carries both (RFC 5802 §7, cbind-input)."""

    def __init__(
        self, hash_name: str, user: str, password: str, gs2_header: bytes, cb_data: bytes = b""
    ) -> None:
        self.digest = {"SHA-1": "sha1", "SHA-256": "sha256"}[hash_name]
        self.password = password
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.nonce = secrets.token_urlsafe(18).encode()
        self.first_bare = b"n=" + user.encode() + b",r=" + self.nonce
        self.server_signature = b""

    def first(self) -> bytes:
        return self.gs2_header + self.first_bare

    def final(self, server_first: bytes) -> bytes:
        attributes = dict(item.split(b"=", 1) for item in server_first.split(b","))
        assert attributes[b"r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            self.digest,
            self.password.encode(),
            base64.b64decode(attributes[b"s"]),
            int(attributes[b"i"]),
        )
        channel = base64.b64encode(self.gs2_header + self.cb_data)
        without_proof = b"c=" + channel + b",r=" + attributes[b"r"]
        auth_message = b",".join([self.first_bare, server_first, without_proof])
        client_key = hmac.digest(salted, b"Client Key", self.digest)
        stored_key = hashlib.new(self.digest, client_key).digest()
        signature = hmac.digest(stored_key, auth_message, self.digest)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.digest)
        self.server_signature = hmac.digest(server_key, auth_message, self.digest)
        return without_proof + b",p=" + base64.b64encode(proof)
