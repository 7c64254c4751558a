"""Live statistics for the dashboard: a ring buffer of samples over the last hour.

Every XMPP_STATS_INTERVAL seconds the sampler records the sessions online
and the stanzas per second since the previous sample (from the server's
`stanzas_received` counter, which BoundSession increments). Memory only:
nothing here touches the database or survives a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Sample:
    at: float  # time.time()
    sessions: int
    stanzas_per_second: float


class Sampler:
    def __init__(self, interval: float = 10.0, span: float = 3600.0) -> None:
        self.span = span
        self.configure(interval)
        self._last_count: int | None = None
        self._last_time = 0.0

    def configure(self, interval: float) -> None:
        self.interval = max(1.0, float(interval))
        self.samples: deque[Sample] = deque(maxlen=max(2, int(self.span / self.interval)))

    def sample(self, server) -> Sample:
        now = time.monotonic()
        count = server.stanzas_received
        rate = 0.0
        if self._last_count is not None and now > self._last_time:
            rate = (count - self._last_count) / (now - self._last_time)
        self._last_count, self._last_time = count, now
        sample = Sample(time.time(), len(server.sessions), round(rate, 2))
        self.samples.append(sample)
        return sample

    async def run(self, server) -> None:
        self.configure(settings.XMPP_STATS_INTERVAL)
        while True:
            self.sample(server)
            await asyncio.sleep(self.interval)


sampler = Sampler()
