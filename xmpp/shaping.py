"""Traffic shaping of a client stream: token buckets that say how long to
stop reading, never whether to drop.

RFC 6120 §13.12 item 5 asks a server to limit what one client may send.
A limit that ends the stream loses what was in flight to and from a client
that is merely fast (a bridge, a bot, a client syncing history); Prosody's
mod_limits and ejabberd's shapers instead stop reading from the connection
until the budget allows, so TCP pushes back on the sender and nothing is
lost. This module is the arithmetic of that, without I/O: each stream has
a bucket of stanzas and one of bytes (XMPP_STANZAS_PER_SECOND with
XMPP_STANZAS_BURST, XMPP_C2S_BYTES_PER_SECOND with XMPP_C2S_BYTES_BURST).
What was read is always handled; a bucket may go into debt by what one
read brought, and the stream then pauses until the debt is paid back.

Rates and bursts are passed in on every call rather than kept, so a change
made from the console applies to live streams at once. A rate of 0 means
no limit.
"""

from __future__ import annotations

# A paused stream resumes once its budget has refilled this long: a pause is
# a few tens of milliseconds, not one timer per stanza at the limit.
RESUME_AFTER = 0.05


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` a second."""

    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now

    def level(self, rate: float, burst: float, now: float) -> float:
        """The tokens available at `now` (negative while in debt)."""
        if rate <= 0:
            return float("inf")
        tokens = self.tokens + (now - self.stamp) * rate
        self.tokens = min(float(burst), tokens)
        self.stamp = now
        return self.tokens

    def take(self, amount: float, rate: float, burst: float, now: float) -> bool:
        """Spend `amount`, into debt if need be; True if now in debt."""
        if rate <= 0:
            return False
        self.tokens = self.level(rate, burst, now) - amount
        return self.tokens < 0

    def wait(self, rate: float, burst: float, now: float, needed: float = 0.0) -> float:
        """Seconds until at least `needed` tokens (and a little more, see
        RESUME_AFTER) are available; 0 if they are now."""
        tokens = self.level(rate, burst, now)
        if tokens >= needed:
            return 0.0
        target = min(float(burst), max(needed, rate * RESUME_AFTER))
        return (target - tokens) / rate


class StreamShaper:
    """The two budgets of one client stream (stanzas and bytes)."""

    __slots__ = ("stanzas", "bytes")

    def __init__(self, limits, now: float) -> None:
        self.stanzas = TokenBucket(limits.stanzas_burst, now)
        self.bytes = TokenBucket(limits.bytes_burst, now)

    def read(self, size: int, limits, now: float) -> bool:
        """Account for `size` bytes just read from the client; True if the
        byte budget is now in debt (the stream should pause)."""
        return self.bytes.take(size, limits.bytes_per_second, limits.bytes_burst, now)

    def admit_stanza(self, limits, now: float) -> bool:
        """Take one stanza from the budget if there is one."""
        rate = limits.stanzas_per_second
        if rate <= 0:
            return True
        if self.stanzas.level(rate, limits.stanzas_burst, now) < 1:
            return False
        self.stanzas.tokens -= 1  # level() has just brought it up to date
        return True

    def pause(self, limits, now: float, stanza_waiting: bool) -> float:
        """Seconds the stream must stop reading (0: go on). `stanza_waiting`:
        a stanza has been read and is waiting for a token."""
        stanza_wait = (
            self.stanzas.wait(limits.stanzas_per_second, limits.stanzas_burst, now, 1.0)
            if stanza_waiting
            else 0.0
        )
        byte_wait = self.bytes.wait(limits.bytes_per_second, limits.bytes_burst, now)
        return max(stanza_wait, byte_wait)
