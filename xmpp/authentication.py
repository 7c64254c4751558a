"""Credential look-ups for SASL (RFC 6120 §6), off the event loop.

Accounts are Django users; their SCRAM keys live in User.password through
xmpp.passwords.ScramPasswordHasher, so nothing here ever sees a plaintext
password except PLAIN's, which is checked and forgotten.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from .passwords import scram_credentials
from .protocol.scram import ScramCredentials


class CredentialStore:
    async def scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        """The stored SCRAM keys of an active account, or None."""
        encoded = (
            await get_user_model()
            .objects.filter(username=username, is_active=True)
            .values_list("password", flat=True)
            .afirst()
        )
        return scram_credentials(encoded, hash_name) if encoded else None

    async def check_password(self, username: str, password: str) -> bool:
        return await sync_to_async(self._check_password)(username, password)

    @staticmethod
    def _check_password(username: str, password: str) -> bool:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        # check_password also upgrades an old hash to SCRAM keys (Django's setter).
        return user is not None and user.check_password(password)
