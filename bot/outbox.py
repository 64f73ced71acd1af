"""Delivery of everything the bot says on its own: approval cards and their updates, outcomes,
alerts and digests.

An item is written to the outbox table in the same transaction as the event that causes it
(`adapters.storage.outbox.enqueue`), so nothing is lost when the process dies. This worker claims
due items with a lease (one replica gets each: compare-and-set, `SKIP LOCKED` on PostgreSQL),
sends them through the Teams seam within Teams' rate limits, and marks them sent with the
activity id Teams returned, so that later updates can edit that message.

    worker = OutboxWorker(storage, deliver, owner="replica-1")
    worker.wake()             # after enqueueing: deliver now rather than at the next poll
    await worker.run_once()   # tests: one pass, returns how many items it finished
    await worker.stop()       # shutdown: finish (and record) the sends under way, release the rest

Failures (issue 17). Every transient failure is retried: network errors, a send that got no
answer within `send_timeout`, 408, 412, 429 and every 5xx, with exponential back-off and full
jitter (Retry-After honoured), until the item is `deadline` old (MLOPSBOT_OUTBOX_DEADLINE_HOURS);
only then is it given up. Other 4xx answers are permanent and give up at once. 403 and 404 mean
the bot was removed from the conversation: the conversation is marked gone
(adapters.storage.conversations), the item dead, and later items for that conversation are
settled dead without a send, until the bot is added again. Given-up items stay in storage as
`dead`: counted in `/readyz` and in the log, listed and sent again with the Admin commands
`outbox dead` and `outbox retry` (commands/admin/outbox.py). A dedupe key per item keeps a redelivered
event from posting twice.

Order and concurrency. A conversation's items go out in order: the claim skips an item while an
earlier one of its conversation waits for a retry or is leased, and a failed item holds back the
rest of its conversation. Different conversations are sent concurrently (`concurrency` at a
time), each send bounded by `send_timeout`, so one hanging chat delays no other. Just before each
send the item's lease is renewed to `lease_seconds` (always longer than a send may take); a
renewal that fails means another replica holds the item, and it is not sent.

Rate limits are counted in the database (adapters.storage.rate_limits), shared by every replica:
per conversation 7 in 1 s, 8 in 2 s, 60 in 30 s, 1800 in an hour; per tenant 30 in 1 s. A send
that does not fit within MAX_INLINE_WAIT is postponed in storage rather than waited for.

At-least-once: an item is marked sent in storage as soon as Teams answers, before anything else
(the marking is shielded from cancellation). A send whose answer never arrives (the process was
killed mid-send, or the answer was lost or came after `send_timeout`) is sent again: Teams may
then show it twice. `stop()` lets sends under way finish, so a graceful restart doubles nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Protocol

from adapters.storage import Storage, StorageError, conversations, outbox, rate_limits
from adapters.storage.outbox import OutboxItem

log = logging.getLogger(__name__)

TRANSIENT_4XX = {408, 412, 429}     # and every 5xx, network errors and timeouts
GONE = {403, 404}
MAX_BACKOFF_SECONDS = 300.0
DEFAULT_DEADLINE = timedelta(hours=24)   # a message Teams keeps refusing is given up after this long
DEFAULT_SEND_TIMEOUT = 10.0          # seconds one send may take
LEASE_MARGIN_SECONDS = 20.0          # a lease outlasts the longest send by at least this much
MAX_INLINE_WAIT = 2.0                # seconds a send may wait for the rate limits while leased
NOT_SENT_YET_SECONDS = 1.0           # an update waits this long for the message it edits
CONCURRENCY = 8                      # conversations sent to at once
PRUNE_EVERY = timedelta(minutes=1)   # how often the shared send log is pruned
MIN_PAUSE = 0.05                     # seconds between passes at least, when a pass found nothing due

# Teams' documented limits for one bot: per conversation (thread) and per tenant.
CONVERSATION_WINDOWS = ((1.0, 7), (2.0, 8), (30.0, 60), (3600.0, 1800))
TENANT_WINDOWS = ((1.0, 30),)
# The limiter counts a send when it starts, Teams when it arrives, some tens of milliseconds later
# and not always in the same order: each window is counted this much longer, so that sends
# arriving unevenly still fit Teams' own (bench/fan_out.py: fewer self-provoked 429s).
ARRIVAL_MARGIN = 0.02


def _with_margin(windows: tuple[tuple[float, int], ...]) -> tuple[tuple[float, int], ...]:
    return tuple((seconds * (1 + ARRIVAL_MARGIN), count) for seconds, count in windows)


# what the limiter counts: Teams' windows with the margin
COUNTED_CONVERSATION_WINDOWS = _with_margin(CONVERSATION_WINDOWS)
COUNTED_TENANT_WINDOWS = _with_margin(TENANT_WINDOWS)


def transient(status: int | None) -> bool:
    """Whether a failure may go away by itself: network errors and timeouts (None), 408, 412, 429, 5xx."""
    return status is None or status in TRANSIENT_4XX or status >= 500 or status < 400


class DeliveryFailed(Exception):
    """Teams refused or failed a send. `status` is the HTTP status (None: network), `retry_after` seconds."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Deliverer(Protocol):
    async def __call__(self, conversation_id: str, payload: dict[str, Any], update_activity_id: str | None) -> str:
        """Send (or, with `update_activity_id`, edit) one message; return Teams' activity id."""


class SharedRateLimiter:
    """Teams' limits, counted in storage for every replica (adapters.storage.rate_limits)."""

    def __init__(self, store: Storage, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def acquire(self, conversation_id: str, tenant_id: str) -> float | None:
        """Record a send now and return None, or return when to ask again (seconds since the epoch,
        on `clock`: an absolute time, so that concurrent waiters agree on it)."""
        limits = [(f"conversation:{conversation_id}", COUNTED_CONVERSATION_WINDOWS),
                  (f"tenant:{tenant_id}", COUNTED_TENANT_WINDOWS)]
        now = self.clock().timestamp()
        wait = await self.store.run_transaction(lambda tx: rate_limits.acquire(tx, limits, now=now))
        return now + wait if wait > 0 else None


@dataclass
class OutboxWorker:
    store: Storage
    deliver: Deliverer
    owner: str
    on_sent: Callable[[OutboxItem, str], Awaitable[None]] | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    monotonic: Callable[[], float] = lambda: asyncio.get_running_loop().time()  # unused: limits use `clock`
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    lease_seconds: float = 60.0
    batch: int = 20
    poll_seconds: float = 2.0
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    deadline: timedelta = DEFAULT_DEADLINE
    concurrency: int = CONCURRENCY
    # Set to deliver now rather than at the next poll. Created by whoever also hands its `set` to
    # the producers built before this worker (the gate: bot/app.py), or by the worker itself.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.limiter = SharedRateLimiter(self.store, lambda: self.clock())
        self._wake = self.wakeup
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._pruned_at: datetime | None = None

    @property
    def lease(self) -> float:
        """Seconds a claim or renewal leases an item: longer than any one send may take."""
        return max(self.lease_seconds, self.send_timeout + MAX_INLINE_WAIT + LEASE_MARGIN_SECONDS)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float | None = None) -> None:
        """Claim nothing more; wait (at most `grace`, default the send timeout) for the sends under
        way to finish and be recorded. Items claimed but not yet sent are released at once."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), self.send_timeout if grace is None else grace)
        except asyncio.TimeoutError:
            log.warning("outbox: sends still under way at shutdown; they will be retried after their lease")

    async def run(self) -> None:
        """Deliver until cancelled or stopped."""
        while not self._stopping:
            try:
                done = await self.run_once()
            except StorageError as error:
                log.warning("outbox: storage unavailable (%s); trying again shortly", error)
                done = 0
            except Exception:  # noqa: BLE001 - a bug in one pass must not stop delivery for good
                log.exception("outbox: a delivery pass failed; trying again shortly")
                done = 0
            if not done and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), await self.pause())
                except asyncio.TimeoutError:
                    pass

    async def pause(self) -> float:
        """Seconds to wait before the next pass when this one found nothing due: until the earliest
        pending item is due (a retry after Teams' Retry-After, say), at most `poll_seconds` (other
        replicas may enqueue without waking this one), at least MIN_PAUSE (no busy loop on an item
        that is due but held back behind an earlier one of its conversation)."""
        try:
            due = await self.store.run_transaction(outbox.next_due, write=False)
        except StorageError:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(MIN_PAUSE, (due - self.clock()).total_seconds()))

    async def run_once(self) -> int:
        """Claim due items and deliver them; returns how many were sent, retried, postponed or given up."""
        if self._stopping:
            return 0
        self._idle.clear()
        try:
            now = self.clock()

            async def claim(tx) -> list[OutboxItem]:
                return await outbox.claim(tx, self.owner, now=now, lease_seconds=self.lease, limit=self.batch)

            items = await self.store.run_transaction(claim)
            queues: dict[str, list[OutboxItem]] = {}
            for item in items:
                queues.setdefault(item.conversation_id, []).append(item)
            slots = asyncio.Semaphore(max(1, self.concurrency))

            async def conversation(queue: list[OutboxItem]) -> None:
                async with slots:
                    await self._deliver_in_order(queue)

            outcomes = await asyncio.gather(*(conversation(queue) for queue in queues.values()),
                                            return_exceptions=True)
            for outcome in outcomes:       # every conversation finished; now report the first failure
                if isinstance(outcome, BaseException):
                    raise outcome
            await self._prune()
            return len(items)
        finally:
            self._idle.set()

    async def _prune(self) -> None:
        """Forget sends older than every rate-limit window, at most once a minute."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        await self.store.run_transaction(lambda tx: rate_limits.prune(tx, now=now.timestamp()))

    async def _deliver_in_order(self, queue: list[OutboxItem]) -> None:
        """One conversation's items, oldest first; an item held back holds back the ones after it."""
        for index, item in enumerate(queue):
            if self._stopping:
                held = 0.0
            else:
                try:
                    held = await self._deliver(item)
                except StorageError:
                    raise
                except Exception:  # noqa: BLE001 - one bad item must not stop the other conversations
                    log.exception("outbox: item %s could not be handled", item.id)
                    held = NOT_SENT_YET_SECONDS
                if held is None:
                    continue
            for rest in queue[index + (0 if self._stopping else 1):]:
                await self._postpone(rest, held)
            return

    async def _deliver(self, item: OutboxItem) -> float | None:
        """Send one item. None: settled, go on with the conversation; seconds: the conversation waits."""
        if await self.store.run_transaction(lambda tx: conversations.is_gone(tx, item.conversation_id), write=False):
            await self._give_up(item, "the bot was removed from this conversation (marked gone)")
            return None
        update = item.payload.get("update") or None
        if item.payload.get("update_of"):
            found, update = await self._activity_of(item.payload["update_of"])
            if found == "pending":
                await self._postpone(item, NOT_SENT_YET_SECONDS)
                return NOT_SENT_YET_SECONDS
            # sent: edit it; dead or pruned: there is nothing to edit, so post the new version
        until = self.clock() + timedelta(seconds=self.lease)
        if not await self.store.run_transaction(lambda tx: outbox.renew(tx, item.id, self.owner, until)):
            log.warning("outbox: item %s is no longer ours (its lease ran out); not sending it", item.id)
            return 0.0
        ready = await self.limiter.acquire(item.conversation_id, item.tenant_id)
        while ready is not None:
            wait = ready - self.clock().timestamp()
            if wait > MAX_INLINE_WAIT:      # never wait long while leased
                await self._postpone(item, wait)
                return wait
            if wait > 0:
                await self.sleep(wait)
            ready = await self.limiter.acquire(item.conversation_id, item.tenant_id)
        try:
            activity_id = await asyncio.wait_for(self.deliver(item.conversation_id, item.payload, update),
                                                 self.send_timeout)
        except DeliveryFailed as failure:
            return await self._failed(item, failure)
        except asyncio.TimeoutError:
            return await self._failed(item, DeliveryFailed(f"no answer within {self.send_timeout:g} s"))
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the others
            log.exception("outbox: item %s failed unexpectedly", item.id)
            return await self._failed(item, DeliveryFailed(repr(error)))
        # Teams has it: record that first, and let no cancellation (shutdown) come in between.
        await asyncio.shield(self._sent(item, activity_id or ""))
        return None

    async def _sent(self, item: OutboxItem, activity_id: str) -> None:
        async def sent(tx) -> bool:
            return await outbox.mark_sent(tx, item.id, self.owner, activity_id, now=self.clock())

        if await self.store.run_transaction(sent) and self.on_sent is not None:
            await self.on_sent(item, activity_id)

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
        now = self.clock()

        async def dead(tx) -> int:
            if gone:
                await conversations.mark_conversation_gone(tx, item.conversation_id, now)
            await outbox.mark_dead(tx, item.id, self.owner, reason[:500])
            return (await outbox.count_states(tx))[outbox.DEAD]
        given_up = await self.store.run_transaction(dead)
        log.warning("outbox: gave up on item %s to %s (%s); %d given-up message(s) in the outbox "
                    "(`outbox dead` lists them, `outbox retry` sends them again)",
                    item.id, item.conversation_id, reason, given_up)

    async def _failed(self, item: OutboxItem, failure: DeliveryFailed) -> float | None:
        """Retry a transient failure until the deadline, give up on anything else; the seconds the
        conversation waits, or None when the item was given up (the conversation goes on)."""
        reason = f"{failure.status or 'network'}: {failure}"[:500]
        if failure.status in GONE:
            await self._give_up(item, reason, gone=True)
            return None
        if not transient(failure.status):
            await self._give_up(item, f"permanent failure, {reason}")
            return None
        age = self.clock() - item.created_at
        if age >= self.deadline:
            hours = self.deadline.total_seconds() / 3600
            await self._give_up(item, f"still failing after {hours:g} h ({item.attempts} attempts), last {reason}")
            return None
        delay = failure.retry_after if failure.retry_after is not None else backoff(item.attempts)
        log.info("outbox: item %s to %s failed (%s); again in %.1f s", item.id, item.conversation_id, reason, delay)

        async def later(tx) -> None:
            await outbox.retry_later(tx, item.id, self.owner, self.clock() + timedelta(seconds=delay), reason)
        await self.store.run_transaction(later)
        return delay


def backoff(attempt: int) -> float:
    """Exponential back-off with full jitter: about 1 s, 2 s, 4 s, ... capped at 5 minutes."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, attempt - 1)) * (0.5 + random.random() / 2)
