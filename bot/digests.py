"""The digest scheduler: one small loop that sends the model-health digests that are due.

    scheduler = DigestScheduler(storage, workspaces, clock=clock, wake=worker.wake)
    tasks.spawn(scheduler.run())        # bot/app.py, beside the outbox worker
    await scheduler.tick()              # tests: send what is due at clock() now

Each tick asks storage for the schedules whose next_run has come and sends each through
`commands.digests.digest.send_due`: gather, then claim by compare-and-set and enqueue in the outbox in one
transaction, so replicas sharing the database send each digest once. Between ticks the loop
sleeps until the earliest next_run, at most MAX_SLEEP seconds (a schedule added on another replica
is seen within that time), and never spins: at least MIN_SLEEP, and MAX_SLEEP after a digest
failed (it stays due and is tried again then; the other schedules are not held up).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable

from adapters.storage import Storage, StorageError, digests
from commands.base.context import HealthThresholds, Workspaces
from commands.digests.digest import send_due
from commands.base.studio import Studio
from adapters.nonblocking import NonBlockingService

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0
MIN_SLEEP = 1.0


def studio_of(ml: NonBlockingService) -> Studio | None:
    scope = getattr(ml, "azure", None)
    return Studio(scope) if scope is not None else None


class DigestScheduler:
    def __init__(self, storage: Storage, workspaces: Workspaces, *, clock: Callable[[], datetime],
                 health: HealthThresholds | None = None, wake: Callable[[], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.storage = storage
        self.workspaces = workspaces
        self.clock = clock
        self.health = health or HealthThresholds()
        self.wake = wake or (lambda: None)
        self._sleep = sleep
        self.failed: list[str] = []       # conversations whose digest failed in the last tick

    async def tick(self) -> int:
        """Send every digest due now; how many this replica claimed."""
        self.failed = []
        sent = await send_due(self.storage, self.workspaces, self.clock(), health=self.health, studio_of=studio_of,
                              failed=self.failed)
        if sent:
            self.wake()
        return sent

    async def pause(self) -> float:
        """Seconds until the earliest schedule is due (bounded by MIN_SLEEP and MAX_SLEEP)."""
        earliest = await self.storage.run_transaction(digests.next_due, write=False)
        if earliest is None or self.failed:      # a digest that just failed is retried in a while, not at once
            return MAX_SLEEP
        return min(MAX_SLEEP, max(MIN_SLEEP, (earliest - self.clock()).total_seconds()))

    async def run(self) -> None:
        while True:
            pause = MAX_SLEEP
            try:
                await self.tick()
                pause = await self.pause()
            except StorageError as error:
                log.warning("could not send due digests: %s", error)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad digest must not stop every other schedule
                log.exception("sending due digests failed")
            await self._sleep(pause)
