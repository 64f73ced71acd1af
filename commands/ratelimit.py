"""A token bucket per requester: at most `per_minute` change requests in a burst, refilled evenly.

One Operator (or a pipeline in a loop) opened 800 approval requests in 37 seconds; each pinged the
approvers. The gate takes a token for each request it opens, per requester id, and refuses in
words (chat) or 429 with Retry-After (the pipeline API) when the bucket is empty.

The buckets live in this process (a replica has its own, so N replicas allow N times the rate);
they are bounded: the least recently used requester is forgotten first, and a requester who is
forgotten simply starts again with a full bucket. `clock` is the gate's, so tests are deterministic.
"""

from __future__ import annotations

import collections
import math
from datetime import datetime
from typing import Callable

MAX_REQUESTERS = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], datetime]) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, datetime]] = collections.OrderedDict()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 when it was there, otherwise the seconds until there is one
        (nothing is taken then). A limit of 0 means no limit."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        tokens, then = self._buckets.pop(key, (float(self.per_minute), now))
        elapsed = max(0.0, (now - then).total_seconds())
        tokens = min(float(self.per_minute), tokens + elapsed * self.per_minute / 60.0)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_REQUESTERS:
            self._buckets.popitem(last=False)
        return wait


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for a Retry-After header and for people: never 0 while something is refused."""
    return max(1, math.ceil(wait))
