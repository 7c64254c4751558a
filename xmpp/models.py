"""The account model: a Django user is an XMPP account (localpart = username)."""

from django.conf import settings
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


class RosterItem(models.Model):
    """One contact in a user's roster (RFC 6121 §2.1.2) and the state of the
    presence subscriptions between them (RFC 6121 §3, Appendix A).

    `listed` is False for a contact that only asked to subscribe: RFC 6121
    §3.1.3 keeps such a request pending without adding the contact to the
    roster. Removed items stay as tombstones (`removed`) so that roster
    versioning (XEP-0237) can tell a client what disappeared since its
    version."""

    class Subscription(models.TextChoices):
        NONE = "none"
        TO = "to"
        FROM = "from"
        BOTH = "both"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="roster_items"
    )
    jid = models.CharField(max_length=3071)
    name = models.CharField(max_length=1023, blank=True)
    groups = models.JSONField(default=list, blank=True)
    subscription = models.CharField(
        max_length=4, choices=Subscription.choices, default=Subscription.NONE
    )
    pending_out = models.BooleanField(default=False)
    pending_in = models.BooleanField(default=False)
    # The subscribe request kept for delivery at the next login (§3.1.3).
    pending_in_stanza = models.TextField(blank=True)
    preapproved = models.BooleanField(default=False)
    listed = models.BooleanField(default=True)
    removed = models.BooleanField(default=False)
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "jid"], name="roster_item_unique_jid")
        ]
        indexes = [models.Index(fields=["user", "version"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.jid} ({self.subscription})"


class SharedGroup(models.Model):
    """An administrator-defined group whose members all see each other in
    their rosters with a 'both' subscription, without requests (Openfire's
    shared roster groups)."""

    name = models.CharField(max_length=200, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="shared_groups")

    def __str__(self) -> str:
        return self.name


class OfflineMessage(models.Model):
    """A message kept for an account that had no available resource
    (XEP-0160, RFC 6121 §8.5.2.2.1), delivered at its next available presence
    or read with XEP-0013. `stanza` is the message as it is written in a
    jabber:client stream, with the XEP-0203 <delay/> the server added; `sender`
    is its 'from', the header XEP-0013 §2.3 lists. Messages are kept in the
    order they arrived (by id)."""

    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="offline_messages", db_index=False
    )
    sender = models.CharField(max_length=3071)
    stanza = models.TextField()
    created = models.DateTimeField()

    class Meta:
        # Covers the per-user look-ups and keeps them in arrival order.
        indexes = [models.Index(fields=["user", "id"], name="offline_message_user_order")]
        verbose_name = _("offline message")
        verbose_name_plural = _("offline messages")

    def __str__(self) -> str:
        return f"{self.sender} → {self.user} ({self.created:%Y-%m-%d %H:%M})"


class VCard(models.Model):
    """A user's vcard-temp (XEP-0054), kept as the XML the client published,
    with the SHA-1 of its PHOTO's image data (XEP-0153), empty when it has
    no photo, so that presence can carry the hash without parsing the vCard."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="vcard"
    )
    xml = models.TextField()
    photo_hash = models.CharField(max_length=40, blank=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"vCard of {self.user_id}"


class PrivateXml(models.Model):
    """Private XML a user stored under one namespace (XEP-0049): the
    serialised children of the last set for that namespace."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="private_xml"
    )
    namespace = models.CharField(max_length=512)
    xml = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "namespace"], name="private_xml_unique_namespace"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.namespace}"


class LastActivity(models.Model):
    """When a user's last session ended and the status text of its last
    unavailable presence (XEP-0012 §3)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="last_activity",
    )
    logout = models.DateTimeField()
    status = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "last activities"

    def __str__(self) -> str:
        return f"{self.user_id} left at {self.logout:%Y-%m-%d %H:%M:%S}"


class BlockedJid(models.Model):
    """One item of an account's block list (XEP-0191): a JID in its normalised
    form (RFC 7622), full, bare, domain/resource or a bare domain; xmpp.blocking
    says which addresses each blocks (§6)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="blocked_jids",
        db_index=False,  # the unique constraint's index starts with user
    )
    jid = models.CharField(max_length=3071)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "jid"], name="blocked_jid_unique")]
        verbose_name = _("blocked JID")
        verbose_name_plural = _("blocked JIDs")

    def __str__(self) -> str:
        return f"{self.user} blocks {self.jid}"


class PushRegistration(models.Model):
    """One push service an account enabled (XEP-0357 §5): the app server's
    JID and the node it provisioned for the device, with the publish-options
    form the client gave (serialised, empty when none), which goes back in
    every notification's <publish-options/> (§7). xmpp.push keeps them all in
    memory; a row is replaced by an enable of the same service and node."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="push_registrations",
        db_index=False,  # the unique constraint's index starts with user
    )
    service = models.CharField(max_length=3071)
    node = models.CharField(max_length=1023)
    publish_options = models.TextField(blank=True)
    created = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "service", "node"], name="push_registration_unique"
            )
        ]
        verbose_name = _("push registration")
        verbose_name_plural = _("push registrations")

    def __str__(self) -> str:
        return f"{self.user} → {self.service} ({self.node})"
