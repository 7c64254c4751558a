"""The MUC payloads the service writes (XEP-0045 §7, §17 muc#user), and the
one-serialisation fan-out.

`Outgoing` holds a stanza serialised once without 'to'; `to_bytes(to_attr)`
gives the stanza for one recipient by inserting ` to="..."` after the tag
name (attribute order is not significant in XML). A broadcast to N sessions
therefore costs one serialisation and N byte concatenations.
"""

from __future__ import annotations

import datetime
from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.xml import NS_CLIENT, escape_attr, serialize

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
NS_MUC_REQUEST = "http://jabber.org/protocol/muc#request"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"  # XEP-0421
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_CONFERENCE = "jabber:x:conference"  # XEP-0249

PRESENCE = f"{{{NS_CLIENT}}}presence"
MESSAGE = f"{{{NS_CLIENT}}}message"
IQ = f"{{{NS_CLIENT}}}iq"
X_MUC = f"{{{NS_MUC}}}x"
X_USER = f"{{{NS_MUC_USER}}}x"
OCCUPANT_ID = f"{{{NS_OCCUPANT_ID}}}occupant-id"

# Elements of a client's presence or message the service replaces with its own.
STRIPPED = frozenset({X_MUC, X_USER, OCCUPANT_ID})

# §15.6 status codes used here.
STATUS_NON_ANONYMOUS = "100"
STATUS_AFFILIATION_CHANGED = "101"
STATUS_CONFIG_CHANGED = "104"
STATUS_SELF = "110"
STATUS_LOGGING = "170"
STATUS_NOW_NON_ANONYMOUS = "172"
STATUS_NOW_SEMI_ANONYMOUS = "173"
STATUS_CREATED = "201"
STATUS_NICK_MODIFIED = "210"
STATUS_BANNED = "301"
STATUS_NEW_NICK = "303"
STATUS_KICKED = "307"
STATUS_AFFILIATION_KICK = "321"
STATUS_MEMBERS_ONLY_KICK = "322"
STATUS_SHUTDOWN = "332"


class Outgoing:
    """A stanza serialised once; `to_bytes` gives it addressed to one recipient."""

    __slots__ = ("prefix", "suffix")

    def __init__(self, stanza: Element) -> None:
        data = serialize(stanza)
        cut = data.index(b" ") if b" " in data[: data.index(b">")] else data.index(b">")
        self.prefix = data[:cut]
        self.suffix = data[cut:]

    @classmethod
    def from_bytes(cls, data: bytes) -> Outgoing:
        self = cls.__new__(cls)
        end = data.index(b">")
        cut = data.index(b" ") if b" " in data[:end] else end
        self.prefix, self.suffix = data[:cut], data[cut:]
        return self

    def to_bytes(self, to_attr: bytes) -> bytes:
        return self.prefix + to_attr + self.suffix


def user_tag(tag: str) -> str:
    """'{muc#user}tag'."""
    return f"{{{NS_MUC_USER}}}{tag}"


def client_payload(stanza: Element) -> list[Element]:
    """A presence's or message's children without the MUC elements the
    service adds itself (XEP-0421 §4: a client's occupant-id is never trusted)."""
    return [child for child in stanza if child.tag not in STRIPPED]


def muc_user(
    affiliation: str | None = None,
    role: str | None = None,
    *,
    jid: str | None = None,
    nick: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    codes: tuple[str, ...] | list[str] = (),
) -> Element:
    """<x xmlns='muc#user'><item .../><status code=''/>...</x> (§7.2.3, §17.2.3)."""
    x = Element(X_USER)
    if affiliation is not None or role is not None:
        item = SubElement(x, f"{{{NS_MUC_USER}}}item")
        if affiliation is not None:
            item.set("affiliation", affiliation)
        if role is not None:
            item.set("role", role)
        if jid:
            item.set("jid", jid)
        if nick:
            item.set("nick", nick)
        if actor:
            SubElement(item, f"{{{NS_MUC_USER}}}actor", {"nick": actor})
        if reason:
            SubElement(item, f"{{{NS_MUC_USER}}}reason").text = reason
    for code in codes:
        SubElement(x, f"{{{NS_MUC_USER}}}status", {"code": code})
    return x


def occupant_id_element(value: str) -> Element:
    return Element(OCCUPANT_ID, {"id": value})


def delay_bytes(room_jid: str, when: float) -> bytes:
    """XEP-0203 <delay/> for a history message, from the room (§7.2.15)."""
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (f'<delay xmlns="{NS_DELAY}" from="{escape_attr(room_jid)}" stamp="{text}"/>').encode()


def status_message(room_jid: str, codes: tuple[str, ...]) -> Element:
    """A groupchat message from the room carrying only status codes (§10.2.1)."""
    message = Element(MESSAGE, {"from": room_jid, "type": "groupchat"})
    message.append(muc_user(codes=codes))
    return message


def data_form(form_type: str, kind: str = "form", title: str = "") -> Element:
    form = Element(f"{{{NS_DATA}}}x", {"type": kind})
    if title:
        SubElement(form, f"{{{NS_DATA}}}title").text = title
    hidden = SubElement(form, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(hidden, f"{{{NS_DATA}}}value").text = form_type
    return form


def add_field(
    form: Element,
    var: str,
    values: list[str] | str | bool | int | None,
    kind: str | None = None,
    label: str = "",
    options: list[tuple[str, str]] | None = None,
) -> Element:
    attrs = {"var": var}
    if kind:
        attrs["type"] = kind
    if label:
        attrs["label"] = label
    el = SubElement(form, f"{{{NS_DATA}}}field", attrs)
    if isinstance(values, bool):
        values = ["1" if values else "0"]
    elif isinstance(values, int):
        values = [str(values)]
    elif isinstance(values, str):
        values = [values]
    for value in values or ():
        SubElement(el, f"{{{NS_DATA}}}value").text = value
    for option_label, option_value in options or ():
        option = SubElement(el, f"{{{NS_DATA}}}option", {"label": option_label})
        SubElement(option, f"{{{NS_DATA}}}value").text = option_value
    return el


def form_values(form: Element) -> dict[str, list[str]]:
    """XEP-0004 §3.2: a submitted form's values by field var."""
    values: dict[str, list[str]] = {}
    for el in form.findall(f"{{{NS_DATA}}}field"):
        var = el.get("var")
        if var:
            values[var] = [v.text or "" for v in el.findall(f"{{{NS_DATA}}}value")]
    return values


def form_type(form: Element) -> str:
    values = form_values(form).get("FORM_TYPE")
    return values[0] if values else ""


def form_boolean(value: list[str] | None) -> bool:
    """XEP-0004 §3.3 boolean: "1"/"true" or "0"/"false"."""
    return bool(value) and value[0].strip().lower() in ("1", "true")
