"""The room configuration form (XEP-0045 §10.2, XEP-0004 data forms), with
every muc#roomconfig field of the registry (§15.5.3), and the room
information form of disco#info (muc#roominfo, §15.5.4).

`config_form(room)` is what an owner gets; `apply_config_form(config, form)`
reads a submitted form into a new RoomConfig plus the owner and admin
lists it carries, or raises StanzaError(<not-acceptable/>) for a bad value.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from xmpp.protocol.errors import StanzaError
from xmpp.protocol.jid import JID, InvalidJID

from .rooms import ADMIN, MODERATOR, OWNER, PARTICIPANT, ROLES, VISITOR, Room, RoomConfig
from .stanzas import (
    NS_MUC_ROOMCONFIG,
    NS_MUC_ROOMINFO,
    add_field,
    data_form,
    form_boolean,
    form_values,
)

MAX_USERS_OPTIONS = ["10", "20", "30", "50", "100", "none"]
BROADCAST_ROLES = [MODERATOR, PARTICIPANT, VISITOR]
ROLE_OPTIONS = [("Moderator", MODERATOR), ("Participant", PARTICIPANT), ("Visitor", VISITOR)]
PM_OPTIONS = [
    ("Anyone", "anyone"),
    ("Participants", "participants"),
    ("Moderators", "moderators"),
    ("Nobody", "none"),
]
WHOIS_OPTIONS = [("Moderators only", "moderators"), ("Anyone", "anyone")]

BOOLEAN_FIELDS = {
    "muc#roomconfig_changesubject": "change_subject",
    "muc#roomconfig_allowinvites": "allow_invites",
    "muc#roomconfig_enablelogging": "enable_logging",
    "muc#roomconfig_publicroom": "public",
    "muc#roomconfig_persistentroom": "persistent",
    "muc#roomconfig_moderatedroom": "moderated",
    "muc#roomconfig_membersonly": "members_only",
}
TEXT_FIELDS = {
    "muc#roomconfig_roomname": "title",
    "muc#roomconfig_roomdesc": "description",
    "muc#roomconfig_lang": "language",
    "muc#roomconfig_pubsub": "pubsub",
}
MAX_HISTORY_FETCH = 1000  # the most a room keeps and sends (muc#maxhistoryfetch)


def config_form(room: Room) -> Element:
    """§10.2: the form an owner fills in, with the room's current values."""
    config = room.config
    form = data_form(NS_MUC_ROOMCONFIG, "form", f"Configuration of {room.jid}")
    add_field(form, "muc#roomconfig_roomname", config.title, "text-single", "Room name")
    add_field(form, "muc#roomconfig_roomdesc", config.description, "text-single", "Description")
    add_field(form, "muc#roomconfig_lang", config.language, "text-single", "Language")
    add_field(
        form,
        "muc#roomconfig_enablelogging",
        config.enable_logging,
        "boolean",
        "Enable public logging",
    )
    add_field(
        form,
        "muc#roomconfig_changesubject",
        config.change_subject,
        "boolean",
        "Allow participants to change the subject",
    )
    add_field(
        form,
        "muc#roomconfig_allowinvites",
        config.allow_invites,
        "boolean",
        "Allow participants to invite others",
    )
    add_field(
        form,
        "muc#roomconfig_allowpm",
        config.allow_pm,
        "list-single",
        "Who may send private messages",
        PM_OPTIONS,
    )
    add_field(
        form,
        "muc#roomconfig_maxusers",
        str(config.max_occupants) if config.max_occupants else "none",
        "list-single",
        "Maximum number of occupants",
        [(v, v) for v in MAX_USERS_OPTIONS],
    )
    add_field(
        form,
        "muc#roomconfig_presencebroadcast",
        list(config.presence_broadcast),
        "list-multi",
        "Roles whose presence is broadcast",
        ROLE_OPTIONS,
    )
    add_field(
        form,
        "muc#roomconfig_getmemberlist",
        list(config.get_member_list),
        "list-multi",
        "Roles that may retrieve the member list",
        ROLE_OPTIONS,
    )
    add_field(form, "muc#roomconfig_publicroom", config.public, "boolean", "List the room publicly")
    add_field(
        form, "muc#roomconfig_persistentroom", config.persistent, "boolean", "Persistent room"
    )
    add_field(form, "muc#roomconfig_moderatedroom", config.moderated, "boolean", "Moderated room")
    add_field(
        form, "muc#roomconfig_membersonly", config.members_only, "boolean", "Members-only room"
    )
    add_field(
        form,
        "muc#roomconfig_passwordprotectedroom",
        bool(config.password),
        "boolean",
        "Password required to enter",
    )
    add_field(form, "muc#roomconfig_roomsecret", config.password, "text-private", "Password")
    add_field(
        form,
        "muc#roomconfig_whois",
        config.whois,
        "list-single",
        "Who may discover real JIDs",
        WHOIS_OPTIONS,
    )
    add_field(
        form,
        "muc#maxhistoryfetch",
        str(config.history_length),
        "text-single",
        "Maximum number of history messages returned by the room",
    )
    add_field(
        form,
        "muc#roomconfig_roomadmins",
        sorted(str(j) for j, a in room.affiliations.items() if a == ADMIN),
        "jid-multi",
        "Room admins",
    )
    add_field(
        form,
        "muc#roomconfig_roomowners",
        sorted(str(j) for j, a in room.affiliations.items() if a == OWNER),
        "jid-multi",
        "Room owners",
    )
    add_field(form, "muc#roomconfig_pubsub", config.pubsub, "text-single", "Pubsub node")
    return form


def apply_config_form(
    config: RoomConfig, form: Element
) -> tuple[RoomConfig, list[JID] | None, list[JID] | None]:
    """§10.2: a submitted form -> (new config, owners or None, admins or None).
    Fields left out keep their value (XEP-0004 §3.2 allows a partial submit)."""
    values = form_values(form)
    new = config.copy()
    for var, attr in BOOLEAN_FIELDS.items():
        if var in values:
            setattr(new, attr, form_boolean(values[var]))
    for var, attr in TEXT_FIELDS.items():
        if var in values:
            setattr(new, attr, "\n".join(values[var]).strip() if values[var] else "")
    if "muc#roomconfig_allowpm" in values:
        new.allow_pm = _choice(values, "muc#roomconfig_allowpm", [v for _, v in PM_OPTIONS])
    if "muc#roomconfig_whois" in values:
        new.whois = _choice(values, "muc#roomconfig_whois", [v for _, v in WHOIS_OPTIONS])
    if "muc#roomconfig_maxusers" in values:
        raw = (values["muc#roomconfig_maxusers"] or ["none"])[0].strip()
        if raw in ("none", "", "0"):
            new.max_occupants = 0
        else:
            new.max_occupants = _positive(raw, "muc#roomconfig_maxusers")
    if "muc#maxhistoryfetch" in values:
        raw = (values["muc#maxhistoryfetch"] or ["0"])[0].strip() or "0"
        new.history_length = min(
            _positive(raw, "muc#maxhistoryfetch", zero=True), MAX_HISTORY_FETCH
        )
    for var, attr in (
        ("muc#roomconfig_presencebroadcast", "presence_broadcast"),
        ("muc#roomconfig_getmemberlist", "get_member_list"),
    ):
        if var in values:
            roles = tuple(v for v in values[var] if v)
            if any(role not in ROLES for role in roles):
                raise StanzaError("not-acceptable", f"{var}: unknown role")
            setattr(new, attr, roles)
    if "muc#roomconfig_passwordprotectedroom" in values:
        protected = form_boolean(values["muc#roomconfig_passwordprotectedroom"])
        if "muc#roomconfig_roomsecret" in values:
            new.password = (values["muc#roomconfig_roomsecret"] or [""])[0]
        if not protected:
            new.password = ""
        elif not new.password:
            raise StanzaError("not-acceptable", "a password-protected room needs a password")
    elif "muc#roomconfig_roomsecret" in values:
        new.password = (values["muc#roomconfig_roomsecret"] or [""])[0]
    owners = _jids(values, "muc#roomconfig_roomowners")
    admins = _jids(values, "muc#roomconfig_roomadmins")
    return new, owners, admins


def _choice(values: dict[str, list[str]], var: str, allowed: list[str]) -> str:
    value = (values[var] or [""])[0].strip()
    if value not in allowed:
        raise StanzaError("not-acceptable", f"{var}: {value!r} is not an option")
    return value


def _positive(raw: str, var: str, zero: bool = False) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise StanzaError("not-acceptable", f"{var}: not a number") from None
    if number < 0 or (number == 0 and not zero):
        raise StanzaError("not-acceptable", f"{var}: out of range")
    return number


def _jids(values: dict[str, list[str]], var: str) -> list[JID] | None:
    if var not in values:
        return None
    jids = []
    for value in values[var]:
        if not value.strip():
            continue
        try:
            jids.append(JID.parse(value.strip()).bare)
        except InvalidJID:
            raise StanzaError("jid-malformed", f"{var}: {value!r}") from None
    return jids


def room_info_form(room: Room) -> Element:
    """§6.4: the muc#roominfo extended information of a room's disco#info."""
    config = room.config
    form = data_form(NS_MUC_ROOMINFO, "result")
    add_field(form, "muc#roomconfig_roomname", config.title, label="Name")
    add_field(form, "muc#roominfo_description", config.description, label="Description")
    add_field(form, "muc#roominfo_occupants", len(room.occupants), label="Number of occupants")
    add_field(form, "muc#roominfo_subject", room.subject, label="Current subject")
    add_field(form, "muc#roominfo_subjectmod", config.change_subject, label="Subject modifiable")
    add_field(form, "muc#roominfo_lang", config.language, label="Language")
    add_field(form, "muc#maxhistoryfetch", config.history_length, label="Max history fetch")
    add_field(
        form,
        "muc#roominfo_contactjid",
        sorted(str(j) for j in room.owners()) if config.non_anonymous else [],
        label="Contact addresses",
    )
    if config.pubsub:
        add_field(form, "muc#roominfo_pubsub", config.pubsub, label="Pubsub node")
    return form


def room_features(room: Room) -> list[str]:
    """§6.4 and §15.5.2: the features that describe the room's type."""
    config = room.config
    return [
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_public" if config.public else "muc_hidden",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.non_anonymous else "muc_semianonymous",
        "muc_passwordprotected" if config.password else "muc_unsecured",
    ]
