"""The scheduler loop: watches after a traffic change (commands/watch.py decides), and long
operations that a stopped process left in flight (commands.gate.Gate.recover_operations).

One loop: wake every `poll_seconds`, report the operations other processes left unreported (their
resource is re-checked; the first pass runs at start-up), claim the watches whose window has passed
with a compare-and-set in storage (one replica gets each; a claim whose lease ran out, after a
crash, is taken over), conclude each (figures, verdict, automatic rollback, one card through the
outbox). Watches are stored, so a restart only delays a verdict.

    loop = WatchLoop(storage, workspaces, gate, owner="replica-1", window_minutes=15)
    await loop.run_once()      # tests: one pass with the injected clock
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from adapters.storage import StorageError, watches
from commands.watch import conclude

log = logging.getLogger(__name__)


@dataclass
class WatchLoop:
    store: Any
    workspaces: Any
    gate: Any
    owner: str
    window_minutes: int = 15
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    poll_seconds: float = 30.0
    lease_seconds: float = 300.0

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError as error:
                log.warning("watches: storage unavailable (%s); trying again shortly", error)
            await asyncio.sleep(self.poll_seconds)

    async def run_once(self) -> int:
        """Report operations stopped processes left in flight, then conclude every watch whose
        window has passed; return how many outcomes and verdicts were posted."""
        try:
            recovered = await self.gate.recover_operations(self.workspaces)
        except Exception:  # noqa: BLE001 - the watches still run; the next pass tries again
            log.exception("could not recover pending operations")
            recovered = 0
        return recovered + await self.conclude_due()

    async def conclude_due(self) -> int:
        """Conclude every watch whose window has passed; return how many verdicts were posted."""
        now = self.clock()

        async def claim(tx) -> list[watches.Watch]:
            return await watches.claim_due(tx, self.owner, started_before=now - timedelta(minutes=self.window_minutes),
                                           now=now, lease_seconds=self.lease_seconds)

        posted = 0
        for watch in await self.store.run_transaction(claim):
            try:
                verdict = await conclude(watch, workspaces=self.workspaces, store=self.store, gate=self.gate,
                                         window_minutes=self.window_minutes, owner=self.owner, clock=self.clock)
            except Exception:  # noqa: BLE001 - one watch must not stop the others; its lease runs out, it is retried
                log.exception("watches: could not conclude watch %s on %s", watch.id, watch.endpoint)
                continue
            posted += verdict is not None
        return posted
