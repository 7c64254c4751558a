"""When an inbound stanza counts as handled (XEP-0198 §4: the 'h' a server
acknowledges).

A client that gets <a h='n'/> forgets its first n stanzas; after a crash
they are never sent again. So a stanza counts as handled only once nothing
of it can be lost: delivered to a session (written to its stream, or kept
in a detached session's queue), or committed to the database. Routing is
synchronous, but a message for an offline user is stored by the batched
writer a moment later (xmpp/offline.py). While the router routes one
inbound stanza, code that defers a durable write registers the future that
completes with it here (`wait_for`); the stream then acknowledges the
stanza when those futures are done (xmpp/stream_management.py).

The event loop routes one stanza at a time, and `begin`/`end` span only the
synchronous `router.route` call, so one module-level list suffices.
"""

from __future__ import annotations

import asyncio

_waits: list[asyncio.Future] | None = None


def wait_for(future: asyncio.Future) -> None:
    """The stanza being routed (if anyone counts it) is handled once `future` is done."""
    if _waits is not None:
        _waits.append(future)


def collecting_wanted() -> bool:
    """Whether anyone counts the stanza being routed (no future is made otherwise)."""
    return _waits is not None


def begin() -> list[asyncio.Future] | None:
    """Before one synchronous routing: start collecting; pass the result to end()."""
    global _waits
    outer, _waits = _waits, []
    return outer


def end(outer: list[asyncio.Future] | None) -> list[asyncio.Future]:
    """After it: the futures its handling waits for."""
    global _waits
    waits, _waits = _waits, outer
    return waits
