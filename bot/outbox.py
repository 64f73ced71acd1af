"""Delivery of everything the bot says on its own: approval cards and their updates, outcomes,
and later alerts and digests.

An item is written to the outbox table in the same transaction as the event that causes it
(`adapters.storage.outbox.enqueue`), so nothing is lost when the process dies. This worker claims
due items with a lease (one replica gets each: compare-and-set, `SKIP LOCKED` on PostgreSQL),
sends them through the Teams seam within Teams' rate limits, and marks them sent with the
activity id Teams returned, so that later updates can edit that message.

    worker = OutboxWorker(storage, deliver, owner="replica-1")
    worker.wake()             # after enqueueing: deliver now rather than at the next poll
    await worker.run_once()   # tests: one pass, returns how many items it finished

Failures: 429, 412, 502 and 504 (and network errors) are retried with exponential back-off and
jitter, honouring Retry-After; 403 and 404 mean the bot was removed from the conversation: the
conversation is marked gone (adapters.storage.conversations), the item dead, and later items for
that conversation are settled dead without a send, until the bot is added again. A dedupe key per
item keeps a redelivered event from posting twice.

Nothing is lost to throttling: a 429 holds back the whole conversation until Retry-After (so its
later items neither jump the queue nor provoke more 429s), and throttling never counts towards
giving up; only other failures do (MAX_ATTEMPTS), or an item older than MAX_AGE. A send that does
not fit the rate limits within MAX_INLINE_WAIT is postponed in storage rather than waited for
while holding its lease. The limits are counted per replica.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Protocol

from adapters.storage import StorageError, conversations, outbox
from adapters.storage.outbox import OutboxItem

log = logging.getLogger(__name__)

RETRYABLE = {412, 429, 502, 504}
GONE = {403, 404}
MAX_ATTEMPTS = 12
MAX_BACKOFF_SECONDS = 300.0
MAX_AGE = timedelta(hours=24)        # even throttled items give up after a day
MAX_INLINE_WAIT = 2.0                # seconds a send may wait for the rate limits while leased
NOT_SENT_YET_SECONDS = 1.0           # an update waits this long for the message it edits

# Teams' documented limits for one bot: per conversation (thread) and per tenant.
CONVERSATION_WINDOWS = ((1.0, 7), (2.0, 8), (30.0, 60), (3600.0, 1800))
TENANT_WINDOWS = ((1.0, 30),)


class DeliveryFailed(Exception):
    """Teams refused or failed a send. `status` is the HTTP status (None: network), `retry_after` seconds."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Deliverer(Protocol):
    async def __call__(self, conversation_id: str, payload: dict[str, Any], update_activity_id: str | None) -> str:
        """Send (or, with `update_activity_id`, edit) one message; return Teams' activity id."""


class RateLimiter:
    """Sliding windows: wait until a send fits every window of its conversation and its tenant."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._sent: dict[tuple[str, str], collections.deque[float]] = collections.defaultdict(collections.deque)

    def delay(self, conversation_id: str, tenant_id: str) -> float:
        """Seconds to wait before this send fits the limits (0 when it fits now)."""
        now = self.clock()
        wait = 0.0
        for key, windows in ((("conversation", conversation_id), CONVERSATION_WINDOWS),
                             (("tenant", tenant_id), TENANT_WINDOWS)):
            times = self._sent[key]
            longest = max(w for w, _ in windows)
            while times and times[0] <= now - longest:
                times.popleft()
            for window, limit in windows:
                recent = [t for t in times if t > now - window]
                if len(recent) >= limit:
                    wait = max(wait, recent[-limit] + window - now)
        return max(0.0, wait)

    def record(self, conversation_id: str, tenant_id: str) -> None:
        now = self.clock()
        self._sent[("conversation", conversation_id)].append(now)
        self._sent[("tenant", tenant_id)].append(now)


@dataclass
class OutboxWorker:
    store: Any
    deliver: Deliverer
    owner: str
    on_sent: Callable[[OutboxItem, str], Awaitable[None]] | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    monotonic: Callable[[], float] = lambda: asyncio.get_running_loop().time()
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    lease_seconds: float = 60.0
    batch: int = 20
    poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(lambda: self.monotonic())
        self._wake = asyncio.Event()
        self._held: dict[str, float] = {}      # conversation -> monotonic time Teams asked us to wait until
        self._lease_ends = 0.0                 # monotonic time the current batch's leases run out

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                done = await self.run_once()
            except StorageError as error:
                log.warning("outbox: storage unavailable (%s); trying again shortly", error)
                done = 0
            except Exception:  # noqa: BLE001 - a bug in one pass must not stop delivery for good
                log.exception("outbox: a delivery pass failed; trying again shortly")
                done = 0
            if not done:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                except asyncio.TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Claim due items and deliver them; returns how many were sent, retried or given up."""
        now = self.clock()

        async def claim(tx) -> list[OutboxItem]:
            return await outbox.claim(tx, self.owner, now=now, lease_seconds=self.lease_seconds, limit=self.batch)

        items = await self.store.run_transaction(claim)
        self._lease_ends = self.monotonic() + self.lease_seconds
        for item in items:
            await self._deliver(item)
        return len(items)

    async def _deliver(self, item: OutboxItem) -> None:
        if await self.store.run_transaction(lambda tx: conversations.is_gone(tx, item.conversation_id), write=False):
            await self._give_up(item, "the bot was removed from this conversation (marked gone)")
            return
        held = self._held.get(item.conversation_id, 0.0) - self.monotonic()
        if held > 0:
            await self._postpone(item, held)
            return
        self._held.pop(item.conversation_id, None)
        wait = self.limiter.delay(item.conversation_id, item.tenant_id)
        # never wait long while leased, nor past half the lease (another replica could take the item)
        if wait > MAX_INLINE_WAIT or self.monotonic() + wait > self._lease_ends - self.lease_seconds / 2:
            await self._postpone(item, wait)
            return
        if wait > 0:
            await self.sleep(wait)
        update = item.payload.get("update") or None
        try:
            if item.payload.get("update_of"):
                found, update = await self._activity_of(item.payload["update_of"])
                if found == "pending":
                    await self._postpone(item, NOT_SENT_YET_SECONDS)
                    return
                # sent: edit it; dead or pruned: there is nothing to edit, so post the new version
            self.limiter.record(item.conversation_id, item.tenant_id)
            activity_id = await self.deliver(item.conversation_id, item.payload, update)
        except DeliveryFailed as failure:
            await self._failed(item, failure)
            return
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the others
            log.exception("outbox: item %s failed unexpectedly", item.id)
            await self._failed(item, DeliveryFailed(repr(error)))
            return

        async def sent(tx) -> bool:
            return await outbox.mark_sent(tx, item.id, self.owner, activity_id or "", now=self.clock())

        if await self.store.run_transaction(sent) and self.on_sent is not None:
            await self.on_sent(item, activity_id or "")

    async def _activity_of(self, dedupe_key: str) -> tuple[str, str | None]:
        """("sent", its activity id), ("pending", None) or ("missing", None) for the item with this key."""
        async def read(tx) -> list[OutboxItem]:
            return await outbox.find_items(tx, dedupe_key=dedupe_key)
        found = await self.store.run_transaction(read, write=False)
        if not found or found[0].state == "dead" or (found[0].state == "sent" and not found[0].activity_id):
            return "missing", None
        return (("sent", found[0].activity_id) if found[0].state == "sent" else ("pending", None))

    async def _postpone(self, item: OutboxItem, seconds: float) -> None:
        until = self.clock() + timedelta(seconds=seconds)
        await self.store.run_transaction(lambda tx: outbox.postpone(tx, item.id, self.owner, until))

    async def _give_up(self, item: OutboxItem, reason: str, *, gone: bool = False) -> None:
        log.warning("outbox: giving up on item %s to %s (%s)", item.id, item.conversation_id, reason)
        now = self.clock()

        async def dead(tx) -> None:
            if gone:
                await conversations.mark_conversation_gone(tx, item.conversation_id, now)
            await outbox.mark_dead(tx, item.id, self.owner, reason[:500])
        await self.store.run_transaction(dead)

    async def _failed(self, item: OutboxItem, failure: DeliveryFailed) -> None:
        reason = f"{failure.status or 'network'}: {failure}"[:500]
        throttled = failure.status == 429
        too_old = self.clock() - item.created_at > MAX_AGE
        if failure.status in GONE:
            await self._give_up(item, reason, gone=True)
            return
        if too_old or (item.attempts >= MAX_ATTEMPTS and not throttled) or (
                failure.status is not None and failure.status not in RETRYABLE and failure.status >= 400):
            await self._give_up(item, reason)
            return
        delay = failure.retry_after if failure.retry_after is not None else backoff(item.attempts)
        if throttled or failure.retry_after is not None:
            self._held[item.conversation_id] = max(self._held.get(item.conversation_id, 0.0),
                                                   self.monotonic() + delay)
        log.info("outbox: item %s to %s failed (%s); again in %.1f s", item.id, item.conversation_id, reason, delay)

        async def later(tx) -> None:
            await outbox.retry_later(tx, item.id, self.owner, self.clock() + timedelta(seconds=delay), reason)
        await self.store.run_transaction(later)


def backoff(attempt: int) -> float:
    """Exponential back-off with full jitter: about 1 s, 2 s, 4 s, ... capped at 5 minutes."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, attempt - 1)) * (0.5 + random.random() / 2)
