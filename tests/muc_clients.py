"""Clients for the multi-user chat tests (XEP-0045): slixmpp clients that keep
every message and presence they receive as XML, and helpers that speak the
protocol as Gajim, Conversations or Converse.js do (raw stanzas, so that the
tests can check exactly what the service sends)."""

from __future__ import annotations

import asyncio
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .clients import Client, disconnect, iq_error, send_iq
from .conftest import PASSWORD, RunningServer

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = "http://jabber.org/protocol/muc#user"
NS_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DATA = "jabber:x:data"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SERVICE = "conference.localhost"

_ids = itertools.count(1)

__all__ = [
    "MucClient",
    "SERVICE",
    "connect_muc",
    "disconnect",
    "iq_error",
    "send_iq",
    "status_codes",
    "item_of",
    "error_condition",
]


class MucClient(Client):
    """A slixmpp client with an inbox of every message and presence (as XML)."""

    def __init__(self, jid: str, password: str = PASSWORD) -> None:
        super().__init__(jid, password)
        self.inbox: list[ET.Element] = []
        self._arrived = asyncio.Event()
        for name, tag in (("muc-messages", "message"), ("muc-presence", "presence")):
            self.register_handler(Callback(name, MatchXPath(f"{{jabber:client}}{tag}"), self._keep))

    def _keep(self, stanza) -> None:
        self.inbox.append(stanza.xml)
        self._arrived.set()

    async def wait_for(
        self, predicate: Callable[[ET.Element], bool], timeout: float = 10
    ) -> ET.Element:
        """The first stanza received (and not yet taken) that matches; taken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, stanza in enumerate(self.inbox):
                if predicate(stanza):
                    del self.inbox[index]
                    return stanza
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [ET.tostring(s)[:300] for s in self.inbox[-8:]]
                raise TimeoutError(f"{self.boundjid}: nothing matched; last: {seen}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def nothing_matching(
        self, predicate: Callable[[ET.Element], bool], wait: float = 0.5
    ) -> bool:
        await asyncio.sleep(wait)
        return not any(predicate(s) for s in self.inbox)

    def send_xml(self, xml: str) -> None:
        self.send_raw(xml)

    def clear(self) -> None:
        self.inbox.clear()

    # -- MUC actions, as raw stanzas --------------------------------------

    def enter_stanza(
        self,
        room: str,
        nick: str,
        *,
        password: str | None = None,
        history: str = "",
        muc: bool = True,
        payload: str = "",
    ) -> str:
        x = ""
        if muc:
            inner = history
            if password is not None:
                inner += f"<password>{password}</password>"
            x = f"<x xmlns='{NS_MUC}'>{inner}</x>"
        return f"<presence to='{room}@{SERVICE}/{nick}'>{x}{payload}</presence>"

    async def enter(self, room: str, nick: str, **kwargs) -> ET.Element:
        """§7.2: enter and wait for our own presence (status 110) or an error."""
        self.send_xml(self.enter_stanza(room, nick, **kwargs))
        return await self.wait_for(
            lambda s: (
                s.tag == "{jabber:client}presence"
                and s.get("from", "").startswith(f"{room}@{SERVICE}/")
                and (s.get("type") == "error" or "110" in status_codes(s))
            )
        )

    async def create_instant(self, room: str, nick: str, **kwargs) -> ET.Element:
        """§10.1.2: create a room and accept the default configuration."""
        own = await self.enter(room, nick, **kwargs)
        assert "201" in status_codes(own), ET.tostring(own)
        await send_iq(
            self,
            "set",
            f"<query xmlns='{NS_OWNER}'><x xmlns='{NS_DATA}' type='submit'/></query>",
            f"{room}@{SERVICE}",
        )
        return own

    async def configure(self, room: str, **fields: str | bool | list[str]) -> None:
        """§10.2: submit a configuration form with these muc#roomconfig fields."""
        parts = [
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
        ]
        for name, value in fields.items():
            var = name if name.startswith("muc#") else f"muc#roomconfig_{name}"
            values = value if isinstance(value, list) else [value]
            rendered = "".join(
                f"<value>{('1' if v else '0') if isinstance(v, bool) else v}</value>"
                for v in values
            )
            parts.append(f"<field var='{var}'>{rendered}</field>")
        await send_iq(
            self,
            "set",
            f"<query xmlns='{NS_OWNER}'><x xmlns='{NS_DATA}' type='submit'>"
            + "".join(parts)
            + "</x></query>",
            f"{room}@{SERVICE}",
        )

    def say(self, room: str, body: str, message_id: str | None = None) -> str:
        message_id = message_id or f"m{next(_ids)}"
        self.send_xml(
            f"<message to='{room}@{SERVICE}' type='groupchat' id='{message_id}'>"
            f"<body>{body}</body></message>"
        )
        return message_id

    async def heard(self, room: str, body: str, timeout: float = 10) -> ET.Element:
        return await self.wait_for(
            lambda s: (
                s.tag == "{jabber:client}message"
                and s.get("type") == "groupchat"
                and s.get("from", "").startswith(f"{room}@{SERVICE}")
                and s.findtext("{jabber:client}body") == body
            ),
            timeout,
        )

    async def error_to(self, kind: str, timeout: float = 10) -> str:
        stanza = await self.wait_for(
            lambda s: s.tag == f"{{jabber:client}}{kind}" and s.get("type") == "error", timeout
        )
        return error_condition(stanza)

    async def presence_of(
        self, room: str, nick: str, unavailable: bool | None = None, timeout: float = 10
    ) -> ET.Element:
        def match(s: ET.Element) -> bool:
            if s.tag != "{jabber:client}presence" or s.get("from") != f"{room}@{SERVICE}/{nick}":
                return False
            if unavailable is None:
                return s.get("type") != "error"
            return (s.get("type") == "unavailable") == unavailable

        return await self.wait_for(match, timeout)

    async def admin(self, room: str, items: str, iq_type: str = "set"):
        return await send_iq(
            self, iq_type, f"<query xmlns='{NS_ADMIN}'>{items}</query>", f"{room}@{SERVICE}"
        )

    async def admin_error(self, room: str, items: str, iq_type: str = "set") -> str:
        return await iq_error(
            self, iq_type, f"<query xmlns='{NS_ADMIN}'>{items}</query>", f"{room}@{SERVICE}"
        )


def status_codes(stanza: ET.Element) -> set[str]:
    return {s.get("code") for s in stanza.iter(f"{{{NS_USER}}}status")}


def item_of(stanza: ET.Element) -> ET.Element | None:
    x = stanza.find(f"{{{NS_USER}}}x")
    return x.find(f"{{{NS_USER}}}item") if x is not None else None


def error_condition(stanza: ET.Element) -> str:
    error = stanza.find("{jabber:client}error")
    if error is None:
        return ""
    for child in error:
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.rpartition("}")[2]
    return ""


async def connect_muc(
    server: RunningServer,
    user: str,
    resource: str = "muc",
    timeout: float = 10,
    presence: bool = True,
) -> MucClient:
    client = MucClient(server.jid(user, resource))
    client.enable_direct_tls = False
    client.connect(server.host, server.c2s_port)
    await asyncio.wait_for(client.started.wait(), timeout)
    if presence:
        client.send_presence()
    return client


def register(server: RunningServer, *users: str) -> None:
    server.manage("register", "--from-file", "-", input="".join(f"{u} {PASSWORD}\n" for u in users))


def make_staff(server: RunningServer, user: str) -> None:
    server.manage(
        "shell",
        "-c",
        "from xmpp.models import User; "
        f"User.objects.filter(username='{user}').update(is_staff=True, is_superuser=True)",
    )
