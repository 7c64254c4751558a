"""Which client streams the server admits, counted per address.

RFC 6120 §13.12 item 1 asks a server to limit the connections one entity
may open. Many users share one address (a university behind NAT, a
carrier-grade NAT), so what is counted per address is only the streams
that have not authenticated yet: those cost the server without anybody
having proven who they are. Authenticated sessions are capped per address
only when the operator asks for it.

Rules this module keeps (one instance per server, used by every transport:
TCP, WebSocket and BOSH alike):

- A stream is counted from its opening (`opened`) to its end (`closed`),
  first as unauthenticated, then, from its SASL success on
  (`authenticated`), as a session of its address.
- At its cap an address does not lose the new stream but its oldest
  unauthenticated one, which `opened` returns to be ended by the caller
  through the session's usual stream error: a flood of silent sockets
  then keeps at most the cap of them open, and the newest (a real client
  that just connected) is served.
- Over the global cap on streams (`has_room`) a new connection is
  refused before anything is spent on it.

The bookkeeping is per address: an insertion-ordered dict (oldest first)
of its unauthenticated streams and a set of its authenticated ones; an
address with neither is forgotten. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Stream = TypeVar("Stream", bound=Hashable)


class Admission(Generic[Stream]):
    def __init__(self) -> None:
        self._unauthenticated: dict[str, dict[Stream, None]] = {}
        self._authenticated: dict[str, set[Stream]] = {}
        self.streams = 0  # every stream counted, in either state

    def has_room(self, max_streams: int) -> bool:
        """Whether one more stream fits under the global cap."""
        return self.streams < max_streams

    def opened(self, stream: Stream, address: str, max_unauthenticated: int) -> Stream | None:
        """Count a new unauthenticated `stream` of `address`. At the address's
        cap the oldest unauthenticated stream stops being counted and is
        returned, for the caller to end; else None."""
        waiting = self._unauthenticated.setdefault(address, {})
        waiting[stream] = None
        self.streams += 1
        if len(waiting) <= max(1, max_unauthenticated):
            return None
        oldest = next(iter(waiting))
        del waiting[oldest]
        self.streams -= 1
        return oldest

    def authenticated(self, stream: Stream, address: str, max_sessions: int) -> bool:
        """Move `stream` from the unauthenticated count to its address's
        sessions. False if it is no longer counted (it was evicted or has
        closed meanwhile) or the address has `max_sessions` already (0: no
        cap); the stream then stays where it was."""
        waiting = self._unauthenticated.get(address)
        if waiting is None or stream not in waiting:
            return False
        sessions = self._authenticated.get(address)
        if max_sessions and sessions is not None and len(sessions) >= max_sessions:
            return False
        del waiting[stream]
        if not waiting:
            del self._unauthenticated[address]
        self._authenticated.setdefault(address, set()).add(stream)
        return True

    def closed(self, stream: Stream, address: str) -> None:
        """`stream` has ended: it leaves whichever count it is in."""
        waiting = self._unauthenticated.get(address)
        if waiting is not None and stream in waiting:
            del waiting[stream]
            if not waiting:
                del self._unauthenticated[address]
            self.streams -= 1
            return
        sessions = self._authenticated.get(address)
        if sessions is not None and stream in sessions:
            sessions.discard(stream)
            if not sessions:
                del self._authenticated[address]
            self.streams -= 1

    def unauthenticated(self, address: str) -> int:
        return len(self._unauthenticated.get(address, ()))

    def sessions(self, address: str) -> int:
        return len(self._authenticated.get(address, ()))
