"""Credential look-ups for SASL (RFC 6120 §6), off the event loop.

Accounts are Django users; their SCRAM keys live in User.password through
xmpp.passwords.ScramPasswordHasher, so nothing here ever sees a plaintext
password except PLAIN's, which is checked and forgotten.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from .orm_thread import orm_thread
from .passwords import scram_credentials
from .prepared import PreparedQuery
from .protocol.scram import ScramCredentials

# The one read of a SCRAM login (xmpp/prepared.py): the user id and the
# stored keys, from the active account's row (username is unique).
_CREDENTIALS = PreparedQuery(
    lambda username: (
        get_user_model()
        .objects.filter(username=username, is_active=True)
        .values_list("id", "password")
    )
)


class CredentialStore:
    async def scram_credentials(
        self, username: str, hash_name: str
    ) -> tuple[int | None, ScramCredentials | None]:
        """(user id, stored SCRAM keys) of an active account, or (None, None)."""
        rows = await orm_thread.call(_CREDENTIALS.rows, username)
        if not rows:
            return None, None
        user_id, encoded = rows[0]
        return user_id, scram_credentials(encoded, hash_name)

    async def check_password(self, username: str, password: str) -> int | None:
        """The user id if `password` is the account's, else None."""
        return await sync_to_async(self._check_password)(username, password)

    @staticmethod
    def _check_password(username: str, password: str) -> int | None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        # check_password also upgrades an old hash to SCRAM keys (Django's setter).
        return user.id if user is not None and user.check_password(password) else None
