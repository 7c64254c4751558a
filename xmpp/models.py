"""The account model: a Django user is an XMPP account (localpart = username)."""

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy as _

from .protocol.jid import MAX_PART_BYTES, InvalidJID, nodeprep


@deconstructible
class LocalpartValidator:
    """A username must already be a prepared JID localpart (RFC 7622 §3.3),
    so that the admin cannot create an account no client can log into."""

    def __call__(self, value: str) -> None:
        try:
            prepared = nodeprep(value)
        except InvalidJID as exc:
            raise ValidationError(str(exc), code="invalid") from None
        if prepared != value:
            raise ValidationError(
                _("Use the prepared form of this name: %(prepared)s"),
                code="invalid",
                params={"prepared": prepared},
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalpartValidator)


class User(AbstractUser):
    """An XMPP account. The password field is longer than Django's default
    because it holds SCRAM-SHA-1 and SCRAM-SHA-256 keys side by side
    (xmpp.passwords.ScramPasswordHasher, RFC 5802 §3)."""

    username = models.CharField(
        _("username"),
        max_length=MAX_PART_BYTES,
        unique=True,
        help_text=_("The JID localpart: lower case, no spaces, none of \" & ' / : < > @"),
        validators=[LocalpartValidator()],
        error_messages={"unique": _("An account with that name already exists.")},
    )
    password = models.CharField(_("password"), max_length=256)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        verbose_name = _("account")
        verbose_name_plural = _("accounts")

    def __str__(self) -> str:
        return self.username
