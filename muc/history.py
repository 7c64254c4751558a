"""Discussion history sent to a new occupant (XEP-0045 §7.2.15).

A room keeps its last `history_length` messages in memory, each as the
bytes that were broadcast (from room@service/nick, without 'to') and the
time it was sent; a persistent room's are also in the database
(muc.models.RoomMessage), written in batches by muc.storage, and read back
when the room is loaded after a restart.

`select_history` applies the client's <history/> limits, all of them
together (§7.2.15: maxchars, maxstanzas, seconds, since), and the
room's muc#maxhistoryfetch; `history_stanza` adds the <delay/> (XEP-0203)
and the recipient.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from xml.etree.ElementTree import Element

from .stanzas import NS_MUC, delay_bytes

HISTORY = f"{{{NS_MUC}}}history"
MESSAGE_END = b"</message>"


def parse_since(text: str) -> float | None:
    """XEP-0082 DateTime -> POSIX seconds, or None if unreadable."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def _number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def history_stanza(data: bytes, when: float, room_jid: str, to_attr: bytes) -> bytes:
    """The stored stanza addressed to one occupant, with a <delay/> (§7.2.15)."""
    end = data.rindex(MESSAGE_END)
    cut = len(b"<message")
    return data[:cut] + to_attr + data[cut:end] + delay_bytes(room_jid, when) + data[end:]


def select_history(
    entries: Iterable[tuple[float, bytes]],
    request: Element | None,
    maximum: int,
    room_jid: str,
    to_attr: bytes,
    now: float | None = None,
) -> list[bytes]:
    """The history stanzas to send, oldest first, within every limit the
    client gave in <history/> (§7.2.15) and the room's `maximum`."""
    entries = list(entries)
    if maximum <= 0:
        return []
    entries = entries[-maximum:]
    if request is not None:
        max_stanzas = _number(request.get("maxstanzas"))
        max_chars = _number(request.get("maxchars"))
        seconds = _number(request.get("seconds"))
        since = parse_since(request.get("since", "")) if request.get("since") else None
        now = time.time() if now is None else now
        if seconds is not None:
            entries = [e for e in entries if e[0] >= now - seconds]
        if since is not None:
            entries = [e for e in entries if e[0] > since]
        if max_stanzas is not None:
            entries = entries[-max_stanzas:] if max_stanzas else []
    else:
        max_chars = None
    stanzas = [history_stanza(data, when, room_jid, to_attr) for when, data in entries]
    if max_chars is not None:
        # §7.2.15: "the total number of characters" of the full stanzas,
        # counted from the newest back.
        kept: list[bytes] = []
        total = 0
        for stanza in reversed(stanzas):
            total += len(stanza.decode("utf-8", "replace"))
            if total > max_chars:
                break
            kept.append(stanza)
        stanzas = kept[::-1]
    return stanzas
