"""The console's window on the live server of this process (XmppServer.current).

Everything here runs on the server's event loop: the async functions are
awaited there, and sync views reach them through `on_loop()` (asgiref's
async_to_sync, which hands the call to the loop Daphne serves from), so
sessions are never touched from a worker thread. Without a running server
(a management command, a unit test) the lists are empty and actions do
nothing.
"""

from __future__ import annotations

import os
import resource
import time
from importlib import metadata
from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import async_to_sync

from xmpp.protocol.errors import StreamError
from xmpp.protocol.jid import JID
from xmpp.server import XmppServer

from .statistics import sampler

KICK_TEXT = "disconnected by an administrator"


def on_loop(function, *args, **kwargs):
    """Call the async `function` on the server's loop from sync code."""
    return async_to_sync(function)(*args, **kwargs)


def describe(session) -> dict:
    """A bound session, as the console and the API show it."""
    stream = session.stream
    transport = stream.transport
    return {
        "id": stream.stream_id,
        "jid": session.jid_str,
        "username": session.jid.local,
        "resource": session.jid.resource,
        "address": str(transport.peer),
        "transport": type(transport).__name__.replace("Transport", "").replace("Session", ""),
        "secure": bool(transport.secure),
        "available": session.available,
        "priority": session.priority,
    }


async def list_sessions(username: str | None = None) -> list[dict]:
    """The bound sessions, sorted by JID; only `username`'s when given."""
    server = XmppServer.current
    if server is None:
        return []
    sessions = [s for s in server.sessions.all() if s.stream is not None]
    if username is not None:
        sessions = [s for s in sessions if s.jid.local == username]
    return sorted((describe(s) for s in sessions), key=lambda d: (d["jid"], d["id"]))


async def kick(session_id: str) -> dict | None:
    """Close the session whose stream id is `session_id` with <policy-violation/>
    (RFC 6120 §4.9.3.14); its description, or None if there is none."""
    server = XmppServer.current
    if server is None:
        return None
    for session in server.sessions.all():
        if session.stream is not None and session.stream.stream_id == session_id:
            described = describe(session)
            session.stream_error(StreamError("policy-violation", KICK_TEXT))
            return described
    return None


async def kick_user(username: str, condition: str = "policy-violation", text: str = "") -> int:
    """Close every session of `username`; how many there were."""
    server = XmppServer.current
    if server is None:
        return 0
    sessions = server.sessions.resources(JID(username, server.domain, ""))
    for session in sessions:
        session.stream_error(StreamError(condition, text or KICK_TEXT))
    return len(sessions)


def server_message(server, to: str, body: str, subject: str = "") -> Element:
    message = Element("{jabber:client}message", {"from": server.domain, "to": to, "type": "normal"})
    if subject:
        SubElement(message, "{jabber:client}subject").text = subject
    SubElement(message, "{jabber:client}body").text = body
    return message


async def broadcast(body: str, subject: str = "") -> int:
    """A message from the server's domain to every available session; how many got it."""
    server = XmppServer.current
    if server is None:
        return 0
    count = 0
    for session in server.sessions.all():
        if session.available:
            message = server_message(server, session.jid_str, body, subject)
            server.router.delivery.to_session(session, message)
            count += 1
    return count


def memory_bytes() -> int:
    """The resident set size of this process."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def version() -> str:
    try:
        return metadata.version("imserver")
    except metadata.PackageNotFoundError:
        return "unknown"


async def statistics() -> dict:
    """The dashboard's live figures and the last hour's samples."""
    server = XmppServer.current
    history = [
        {"at": s.at, "sessions": s.sessions, "stanzas_per_second": s.stanzas_per_second}
        for s in sampler.samples
    ]
    figures = {
        "running": server is not None,
        "version": version(),
        "memory_bytes": memory_bytes(),
        "sample_interval": sampler.interval,
        "history": history,
    }
    if server is None:
        return figures | {
            "domain": "",
            "uptime_seconds": 0,
            "sessions": 0,
            "streams": 0,
            "stanzas_received": 0,
            "stanzas_per_second": 0.0,
        }
    return figures | {
        "domain": server.domain,
        "uptime_seconds": int(time.time() - server.started),
        "sessions": len(server.sessions),
        "streams": len(server.all_streams()),
        "stanzas_received": server.stanzas_received,
        "stanzas_per_second": history[-1]["stanzas_per_second"] if history else 0.0,
    }


def _room_services():
    """Registered services that keep live rooms (muc's MucService: `rooms`, a
    dict of rooms with `occupants`), found by what they have, not by name."""
    from xmpp.plugins import plugins

    for subdomain, service in plugins.services.items():
        rooms = getattr(service, "rooms", None)
        if isinstance(rooms, dict):
            yield subdomain, rooms


async def room_occupancy() -> dict[str, int]:
    """Occupants per live room name."""
    return {
        name: len(getattr(room, "occupants", {}))
        for _, rooms in _room_services()
        for name, room in rooms.items()
    }


async def room_occupants(name: str) -> list[dict] | None:
    """The occupants of the live room `name`, or None if it is not active."""
    for _, rooms in _room_services():
        room = rooms.get(name)
        if room is not None:
            return [
                {
                    "nick": nick,
                    "jid": str(occupant.bare),
                    "role": occupant.role,
                    "sessions": len(getattr(occupant, "targets", {})),
                }
                for nick, occupant in sorted(getattr(room, "occupants", {}).items())
            ]
    return None
