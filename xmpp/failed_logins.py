"""Failed logins of the last few minutes, and how long to wait before answering one.

RFC 6120 §13.12 item 3 (and §6.4.5: a failure may be answered with a delay)
lets a server slow down password guessing. Failures are counted per
(address, account) and per account, never per address alone: many users
behind one address (NAT) must not slow each other down, while an account
guessed at from many addresses is still slowed, after more failures.

The delay only ever applies to answering a failure; a correct password is
answered at once, and a throttled failure is the same <not-authorized/> as
any other (the session decides that; this module only counts). An account
name is whatever the client sent, known to the server or not, so probing
unknown names is slowed the same way.

Memory is bounded: an entry expires WINDOW seconds after its last failure,
and the table keeps at most MAX_ENTRIES entries, dropping the least
recently failed first. Keys are fixed-size digests, so a long name costs
no more than a short one.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

WINDOW = 300.0  # seconds during which failures add up
MAX_ENTRIES = 100_000
FREE_PER_ADDRESS_AND_ACCOUNT = 1  # failures answered at once, from one address to one account
FREE_PER_ACCOUNT = 10  # ... to one account from anywhere


class FailedLogins:
    def __init__(
        self,
        window: float = WINDOW,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.clock = clock
        # key -> (failures, time of the last); ordered by that time, oldest first.
        self._entries: OrderedDict[bytes, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def failed(self, address: str, account: str, base_delay: float, max_delay: float) -> float:
        """Record a failed login of `account` from `address`; return the seconds
        to wait before answering it. The first failures are answered at once,
        then each waits twice as long as the one before, up to `max_delay`."""
        now = self.clock()
        self._expire(now)
        pair = self._count(_key("pair", address, account), now)
        delay = _backoff(pair - FREE_PER_ADDRESS_AND_ACCOUNT, base_delay)
        if account:
            total = self._count(_key("account", account), now)
            delay = max(delay, _backoff(total - FREE_PER_ACCOUNT, base_delay))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return min(delay, max_delay)

    def succeeded(self, address: str, account: str) -> None:
        """A correct login: the address's failures on that account are forgiven
        (the account's own count stays, it may be under attack elsewhere)."""
        self._entries.pop(_key("pair", address, account), None)

    def _count(self, key: bytes, now: float) -> int:
        count, _last = self._entries.pop(key, (0, now))
        count += 1
        self._entries[key] = (count, now)
        return count

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (_count, last) = next(iter(entries.items()))
            if now - last <= self.window:
                return
            del entries[key]


def _key(*parts: str) -> bytes:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest()


def _backoff(excess: int, base_delay: float) -> float:
    """0 for the free failures, then base, 2*base, 4*base, ..."""
    if excess <= 0:
        return 0.0
    return base_delay * 2 ** min(excess - 1, 32)
