"""Coalescing of writes: everything written to a stream during one turn of
the event loop leaves in one TLS record and one send() call.

Under load a session receives several stanzas per turn (a burst from one
sender, a presence broadcast); encrypting and sending each alone costs a
record header, a cipher call and a system call apiece. Streams with pending
output register here, and one callback per loop turn flushes them all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatcher:
    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def mark(self, stream: Flushable) -> None:
        """`stream` has output pending; flush it at the end of this loop turn."""
        self._dirty.append(stream)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)

    def _flush_all(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for stream in dirty:
            try:
                stream.flush()
            except Exception:
                # One connection failing under its transport must not keep
                # the others' output of this turn from leaving.
                log.exception("flushing %r failed; closing it", stream)
                abort = getattr(stream, "abort", None)
                if abort is not None:
                    try:
                        abort()
                    except Exception:
                        log.exception("could not abort %r", stream)
