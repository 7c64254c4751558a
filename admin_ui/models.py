"""What the console keeps: run-time server settings, the audit log, API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ServerSetting(models.Model):
    """An administrator's override of one setting the core reads at call time
    (xmpp.runtime_settings); the environment gives the default. `value` is
    JSON, typed by admin_ui.server_settings.EDITABLE."""

    name = models.CharField(max_length=100, primary_key=True)
    value = models.JSONField()
    updated = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        verbose_name = _("server setting")
        verbose_name_plural = _("server settings")

    def __str__(self) -> str:
        return f"{self.name} = {self.value!r}"


class AuditLogEntry(models.Model):
    """One change made through the console or the API: who, what, to what."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept as text too, so the entry outlives the account that made it.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=3071, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    via = models.CharField(max_length=16, default="console")  # console or api

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("audit log entry")
        verbose_name_plural = _("audit log entries")

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target}"


class ApiTokenManager(models.Manager):
    def issue(self, user, name: str) -> tuple[ApiToken, str]:
        """A new token for `user`; returns it and the key, which is shown once."""
        key = secrets.token_urlsafe(32)
        token = self.create(user=user, name=name, prefix=key[:8], digest=digest_of(key))
        return token, key


class ApiToken(models.Model):
    """A REST API key of one administrator ('Authorization: Token <key>').
    Only its SHA-256 is stored; revoking deletes the row."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenManager()

    class Meta:
        ordering = ["-created"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
