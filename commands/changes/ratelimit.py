"""How many changes one requester, and the pipelines together, may ask for in a minute (issue 17).

One Operator (or a pipeline in a loop) opened 800 approval requests in 37 seconds; each pinged the
approvers. Every change the gate takes counts: a request it opens (approval or confirmation) and a
change it runs directly (policy "direct"). Each counts against its requester's key
(`change:<user id>`), and a change that comes through the pipeline API also against `pipeline:*`,
one key for every pipeline requester together, so that changing the `requester` name in a loop
does not escape the limit. Over a limit the gate refuses in words (chat) or with 429 and
Retry-After (the pipeline API).

The counts live in storage (adapters/storage/rate_limits.py, the table the outbox's Teams limits
use), so every replica on one database shares them: N replicas allow the rate once, not N times.
`ChangeLimits.take` runs inside the gate's transaction that opens the request or records the direct
change, and raises when over; the raise rolls that transaction back, so a refused change writes
nothing at all, and a counted one is counted only if the request (or change record) is committed.

A limit is a sliding window: at most N changes in any minute. A change at t counts until just
before t + 60 s, so "try again in 60 s" is exact to the second. The time is the gate's clock, so
tests are deterministic. The outbox worker's prune forgets counts older than an hour. 0 turns a
limit off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from adapters.storage import rate_limits
from commands.base.context import User
from commands.base.registry import CommandError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
CHANGE_PREFIX = "change:"
PIPELINE_KEY = "pipeline:*"
# rate_limits' windows are closed (a send at t counts at t + window too) and its wait ends
# RESOLUTION after the oldest send leaves: one resolution less makes the minute [t, t + 60).
_WINDOW = WINDOW_SECONDS - rate_limits.RESOLUTION


class TooManyRequests(CommandError):
    """The requester (or the pipelines together) asked for too many changes lately."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ChangeLimits:
    per_minute: int = 20            # one requester's changes (requests opened and direct changes)
    pipeline_per_minute: int = 60   # every pipeline requester's requests together

    async def take(self, tx, user: User, *, pipeline: bool, now: float) -> None:
        """Count one change for `user` (and for the pipelines, when `pipeline`) at `now` (seconds since
        the epoch) in `tx`, or raise TooManyRequests. Call it in the transaction that records the
        change and let the exception leave it: the rollback undoes a count already taken."""
        if self.per_minute > 0:
            wait = await rate_limits.acquire(tx, [(CHANGE_PREFIX + (user.id or user.name),
                                                   ((_WINDOW, self.per_minute),))], now=now)
            if wait > 0:
                seconds = retry_after_seconds(wait)
                log.warning("refused a change from %s (%s): over %d a minute", user.name, user.id, self.per_minute)
                raise TooManyRequests(
                    f"You have made {self.per_minute} change requests in the last minute (changes run directly "
                    f"count too), the most I take from one person; try again in {seconds} s. (The limit keeps "
                    "a loop or a slip from flooding the approvers.)", seconds)
        if pipeline and self.pipeline_per_minute > 0:
            # after the requester's key, always: every transaction locks the keys in the same order
            wait = await rate_limits.acquire(tx, [(PIPELINE_KEY, ((_WINDOW, self.pipeline_per_minute),))], now=now)
            if wait > 0:
                seconds = retry_after_seconds(wait)
                log.warning("refused a pipeline change request from %s: pipelines over %d a minute", user.name,
                            self.pipeline_per_minute)
                raise TooManyRequests(
                    f"Pipelines have opened {self.pipeline_per_minute} change requests through the API in the "
                    f"last minute, the most I take from all requesters together; try again in {seconds} s.",
                    seconds)


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for a Retry-After header and for people: never 0 while something is refused.
    Rounded to the millisecond first, so float noise in epoch seconds cannot turn 60 into 61."""
    return max(1, math.ceil(round(wait, 3)))
