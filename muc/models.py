"""What the multi-user chat service keeps in the database (XEP-0045 §10.2, §9-§10).

A Room row exists for every persistent room (muc#roomconfig_persistentroom);
a temporary room lives in memory only and is gone when its last occupant
leaves (§10.1.1, §9.x of the room types in §4.2). Affiliations (§5.2) are
kept per bare JID; roles (§5.1) are never stored, they last as long as a
presence in the room. RoomMessage is the room's discussion history
(§7.2.15), written in batches by muc.storage.DatabaseWriter, so that a
persistent room's history survives a restart.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Room(models.Model):
    """A persistent room and its configuration: one column per muc#roomconfig
    field of XEP-0045 §15.5.3 (see muc.config for the form)."""

    class Whois(models.TextChoices):
        MODERATORS = "moderators", _("semi-anonymous (moderators see real JIDs)")
        ANYONE = "anyone", _("non-anonymous (everyone sees real JIDs)")

    class AllowPm(models.TextChoices):
        ANYONE = "anyone"
        PARTICIPANTS = "participants"
        MODERATORS = "moderators"
        NONE = "none"

    name = models.CharField(
        _("room"), max_length=1023, unique=True, help_text=_("The localpart of the room's JID")
    )
    title = models.CharField(_("name"), max_length=1023, blank=True)
    description = models.TextField(blank=True)
    language = models.CharField(max_length=35, blank=True)
    public = models.BooleanField(default=True, help_text=_("listed in service discovery"))
    persistent = models.BooleanField(default=True)
    members_only = models.BooleanField(default=False)
    moderated = models.BooleanField(default=False)
    password = models.CharField(
        max_length=1023, blank=True, help_text=_("empty: no password required to enter")
    )
    whois = models.CharField(max_length=16, choices=Whois.choices, default=Whois.MODERATORS)
    max_occupants = models.PositiveIntegerField(
        default=0, help_text=_("0: no limit (muc#roomconfig_maxusers 'none')")
    )
    change_subject = models.BooleanField(
        default=False, help_text=_("participants may change the subject")
    )
    allow_invites = models.BooleanField(default=False)
    allow_pm = models.CharField(max_length=16, choices=AllowPm.choices, default=AllowPm.ANYONE)
    enable_logging = models.BooleanField(default=False)
    history_length = models.PositiveIntegerField(
        default=20, help_text=_("messages sent to a new occupant at most (muc#maxhistoryfetch)")
    )
    presence_broadcast = models.JSONField(
        default=list, blank=True, help_text=_("roles whose presence is broadcast")
    )
    get_member_list = models.JSONField(
        default=list, blank=True, help_text=_("roles that may retrieve the member list")
    )
    pubsub = models.CharField(max_length=3071, blank=True)
    subject = models.TextField(blank=True)
    subject_by = models.CharField(max_length=1023, blank=True, help_text=_("nickname"))
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RoomAffiliation(models.Model):
    """A bare JID's long-lived relation to a room (XEP-0045 §5.2), with the
    nickname it reserved (§7.12) and the reason given for it (bans, §9.1)."""

    class Affiliation(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        OUTCAST = "outcast"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="affiliations")
    jid = models.CharField(max_length=3071)
    affiliation = models.CharField(max_length=16, choices=Affiliation.choices)
    nick = models.CharField(max_length=1023, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "jid"], name="muc_affiliation_unique")
        ]

    def __str__(self) -> str:
        return f"{self.jid} ({self.affiliation} of {self.room})"


class RoomMessage(models.Model):
    """One message of a room's history (XEP-0045 §7.2.15): the stanza as it
    was broadcast (from room@service/nick, without 'to')."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    nick = models.CharField(max_length=1023)
    sender = models.CharField(max_length=3071, help_text=_("real bare JID"))
    stanza = models.TextField()
    sent = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["room", "id"], name="muc_history_room_id")]

    def __str__(self) -> str:
        return f"{self.room} <{self.nick}> at {self.sent:%Y-%m-%d %H:%M:%S}"
