"""Django password hasher that stores SCRAM credentials (RFC 5802 §3, RFC 7677).

User.password holds, for both SCRAM hashes, the StoredKey and ServerKey
derived from one salt and iteration count:

    scram$<iterations>$<salt>$<SHA-1 StoredKey>$<SHA-1 ServerKey>
                             $<SHA-256 StoredKey>$<SHA-256 ServerKey>   (one line)

keys in base64, salt as Django makes it (its UTF-8 bytes are the SCRAM salt).
So SCRAM-SHA-1 and SCRAM-SHA-256 logins need no password, and Django's own
check_password (web admin, PLAIN) still works. Iterations come from
settings.XMPP_SCRAM_ITERATIONS; a hash with another count is re-encoded at the
next login that sees the password.
"""

from __future__ import annotations

import base64
import hmac

from django.conf import settings
from django.contrib.auth.hashers import BasePasswordHasher, mask_hash, must_update_salt
from django.utils.translation import gettext_noop as _

from xmpp.protocol.scram import HASHES, ScramCredentials, derive_keys

ALGORITHM = "scram"
DEFAULT_ITERATIONS = 4096
# Position of (StoredKey, ServerKey) for each hash after "scram$i$salt$".
_KEY_FIELDS = {"SHA-1": (3, 4), "SHA-256": (5, 6)}


def scram_iterations() -> int:
    return getattr(settings, "XMPP_SCRAM_ITERATIONS", DEFAULT_ITERATIONS)


class ScramPasswordHasher(BasePasswordHasher):
    algorithm = ALGORITHM

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        self._check_encode_args(password, salt)
        iterations = iterations or scram_iterations()
        fields = [self.algorithm, str(iterations), salt]
        for hash_name in _KEY_FIELDS:
            keys = derive_keys(password, salt.encode(), iterations, hash_name)
            fields += [base64.b64encode(key).decode("ascii") for key in keys]
        return "$".join(fields)

    def decode(self, encoded: str) -> dict:
        algorithm, iterations, salt, *keys = encoded.split("$")
        assert algorithm == self.algorithm and len(keys) == 4
        return {
            "algorithm": algorithm,
            "iterations": int(iterations),
            "salt": salt,
            "hash": keys[2],  # the SHA-256 StoredKey, which verify() checks
        }

    def verify(self, password: str, encoded: str) -> bool:
        decoded = self.decode(encoded)
        stored_key, _server_key = derive_keys(
            password, decoded["salt"].encode(), decoded["iterations"], "SHA-256"
        )
        return hmac.compare_digest(base64.b64encode(stored_key).decode("ascii"), decoded["hash"])

    def safe_summary(self, encoded: str) -> dict:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("iterations"): decoded["iterations"],
            _("salt"): mask_hash(decoded["salt"]),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        decoded = self.decode(encoded)
        return decoded["iterations"] != scram_iterations() or must_update_salt(
            decoded["salt"], self.salt_entropy
        )

    def harden_runtime(self, password: str, encoded: str) -> None:
        # Iterations are fixed by what SCRAM clients were given; nothing to even out.
        pass


def scram_credentials(encoded: str, hash_name: str) -> ScramCredentials | None:
    """The SCRAM credentials for hash_name ("SHA-1" or "SHA-256") in a User.password.

    None when the value is not this hasher's (an older hash, an unusable
    password), so the account cannot log in with SCRAM until the password is
    set again or seen by a PLAIN or web login.
    """
    if hash_name not in HASHES:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}")
    fields = (encoded or "").split("$")
    if len(fields) != 7 or fields[0] != ALGORITHM:
        return None
    stored, server = _KEY_FIELDS[hash_name]
    try:
        credentials = ScramCredentials(
            salt=fields[2].encode(),
            iterations=int(fields[1]),
            stored_key=base64.b64decode(fields[stored], validate=True),
            server_key=base64.b64decode(fields[server], validate=True),
        )
    except ValueError:  # includes binascii.Error
        return None
    return credentials if credentials.iterations > 0 else None
