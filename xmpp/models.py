"""The account model: a Django user is an XMPP account (localpart = username)."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """An XMPP account. The password field is longer than Django's default
    because it holds SCRAM-SHA-1 and SCRAM-SHA-256 keys side by side
    (xmpp.passwords.ScramPasswordHasher, RFC 5802 §3)."""

    password = models.CharField(_("password"), max_length=256)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        verbose_name = _("account")
        verbose_name_plural = _("accounts")

    def __str__(self) -> str:
        return self.username
