"""A client side of SCRAM-SHA-256 (RFC 5802 §3, RFC 7677) for tests that
speak SASL by hand over WebSocket or BOSH. Independent of the server's code."""

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
