"""The scheduler loop: watches after a traffic change (commands/changes/verdicts.py decides), jobs started
from chat until they end (commands/changes/job_watch.py), long operations that a stopped process left
in flight (commands.changes.gate.Gate.recover_operations), and the local workspace's monitor runs that
breach their thresholds, which become drift alerts (`alert_monitor_breaches`), and the security
posture of the workspaces someone subscribes to (`scan_posture`, hourly; commands/alerts/posture.py).

One loop: wake every `poll_seconds`, report the operations other processes left unreported (their
resource is re-checked, each claimed by one replica; the first pass runs at start-up and settles
an earlier run of this same instance at once), look at the jobs whose next check is due
(claimed like the watches; an ended job's report goes out through the outbox in the transaction that
closes its watch), claim the watches whose window has passed
with a compare-and-set in storage (one replica gets each; a claim whose lease ran out, after a
crash, is taken over), conclude each (figures, verdict, automatic rollback, one card through the
outbox). Watches are stored, so a restart only delays a verdict.

Drift alerts of the local workspace: Azure ML's monitors announce a breach through Event Grid
(bot/ingress.py); the local workspace's monitors have no one to announce theirs, so each pass
reads their breaching runs and publishes each breached signal exactly as the webhook does (alert
store, subscriptions, outbox; commands.alerts.alerts.publish), deduplicated in storage by run and signal
(`inbox`, so once across replicas and restarts). Only while a conversation subscribes to drift
(computing monitor runs nobody hears about is wasted work), and only runs newer than the oldest
such subscription and than LOCAL_BREACH_DAYS (younger than the inbox's memory): a new
subscription is not flooded with the demo's history, a restart only delays an alert.

Escalation: each pass also re-posts, through the outbox, the alerts nobody acknowledged within
their subscriptions' `--escalate-after`, @mentioning the people they name (commands.alerts.alerts.escalate;
once per alert per period, across replicas).

    loop = Scheduler(storage, workspaces, gate, owner="replica-1", window_minutes=15)
    await loop.run_once()      # tests: one pass with the injected clock
    await loop.alert_monitor_breaches()      # only the local monitors' drift alerts
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from adapters.azureml.events import local_breach_events
from adapters.service import ServiceError
from adapters.storage import Storage, StorageError, inbox, job_watches, outbox, subscriptions, watches
from adapters.storage.job_watches import JobWatch
from commands.alerts.alerts import endpoint_health, escalate, publish
from commands.base.context import HealthThresholds, Reply, UnknownWorkspace, Workspaces
from commands.changes.job_watch import JOB_POLL_SECONDS, report
from commands.alerts.posture import scan_due
from commands.changes.verdicts import conclude

if TYPE_CHECKING:
    from commands.changes.gate import Gate

log = logging.getLogger(__name__)
# `mlops-bot chat`'s conversation: the terminal reports the jobs started there (it may share the
# bot's storage; the bot could not deliver to it).
TERMINAL_CONVERSATION = "terminal"

LOCAL_BREACH_DAYS = 6          # < bot.ingress.INBOX_DAYS: a run's dedupe key outlives its chance of being read
MAX_REMEMBERED = 10_000        # dedupe keys a process keeps in memory to skip storage on the next passes


@dataclass
class Scheduler:
    store: Storage
    workspaces: Workspaces
    gate: Gate
    owner: str
    window_minutes: int = 15
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    poll_seconds: float = 30.0
    lease_seconds: float = 300.0
    published: set = field(default_factory=set)    # local breaches this process has seen published
    health: HealthThresholds = field(default_factory=HealthThresholds)    # when a verdict is unhealthy

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError as error:
                log.warning("watches: storage unavailable (%s); trying again shortly", error)
            await asyncio.sleep(self.poll_seconds)

    async def run_once(self) -> int:
        """Report operations stopped processes left in flight, follow the watched jobs, conclude every
        watch whose window has passed and publish the local monitors' new breaches; return how many
        outcomes, reports, verdicts and alert cards were posted."""
        try:
            recovered = await self.gate.recover_operations(self.workspaces)
        except Exception:  # noqa: BLE001 - the watches still run; the next pass tries again
            log.exception("could not recover pending operations")
            recovered = 0
        return (recovered + await self.follow_jobs() + await self.conclude_due() + await self.alert_monitor_breaches()
                + await self.scan_posture()
                + await self.escalate_alerts())

    async def scan_posture(self) -> int:
        """Scan the security posture of the workspaces someone subscribes to, once per period across
        replicas (commands.alerts.posture.scan_due); return how many alert cards it queued."""
        try:
            return await scan_due(self.store, self.workspaces, owner=self.owner, clock=self.clock,
                                  wake=self.gate.wake_outbox)
        except StorageError:
            raise
        except Exception:  # noqa: BLE001 - the other duties of the loop still run; the next pass tries again
            log.exception("posture: the scan failed")
            return 0

    async def escalate_alerts(self) -> int:
        """Re-notify the alerts nobody acknowledged in time (commands.alerts.alerts.escalate); messages queued."""
        now = self.clock()
        try:
            queued = await self.store.run_transaction(lambda tx: escalate(tx, now))
        except StorageError:
            raise
        except Exception:  # noqa: BLE001 - the other duties of the loop still run; the next pass tries again
            log.exception("could not escalate unacknowledged alerts")
            return 0
        if queued:
            self.gate.wake_outbox()
        return queued

    async def alert_monitor_breaches(self) -> int:
        """Publish the local monitors' new breaches as drift alerts; return how many cards were queued."""
        return await alert_monitor_breaches(self.store, self.workspaces, clock=self.clock,
                                            wake=self.gate.wake_outbox, published=self.published, health=self.health)

    async def follow_jobs(self) -> int:
        """Report every watched job that ended; return how many reports were posted."""
        return await follow_jobs(self.store, self.workspaces, owner=self.owner, clock=self.clock,
                                 lease_seconds=self.lease_seconds, wake=self.gate.wake_outbox,
                                 except_conversation=TERMINAL_CONVERSATION)

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
                                         window_minutes=self.window_minutes, owner=self.owner, clock=self.clock,
                                         health=self.health)
            except Exception:  # noqa: BLE001 - one watch must not stop the others; its lease runs out, it is retried
                log.exception("watches: could not conclude watch %s on %s", watch.id, watch.endpoint)
                continue
            posted += verdict is not None
        return posted


async def follow_jobs(store: Storage, workspaces: Workspaces, *, owner: str, clock: Callable[[], datetime],
                      lease_seconds: float = 300.0, conversation_id: str | None = None,
                      except_conversation: str | None = None, deliver: Callable[[Reply], Any] | None = None,
                      wake: Callable[[], None] | None = None) -> int:
    """Look at the watched jobs whose check is due: an ended job's report goes to the outbox (or to
    `deliver`, for the terminal chat, after its watch is closed), a running one is looked at again
    in JOB_POLL_SECONDS. `conversation_id`: only that conversation's watches. Returns reports made."""
    now = clock()

    async def claim(tx) -> list[JobWatch]:
        return await job_watches.claim_due(tx, owner, now=now, lease_seconds=lease_seconds,
                                           conversation_id=conversation_id, except_conversation=except_conversation)

    reported = 0
    for watch in await store.run_transaction(claim):
        try:
            reply = await report(workspaces.get(watch.workspace), watch, now=now)
        except UnknownWorkspace:
            reply = Reply(f"I stopped watching job {watch.job_name} ({watch.what}): workspace {watch.workspace} "
                          f"is no longer configured in the bot.", ok=False)
        except ServiceError as error:          # a blip, or a workspace gone from the configuration
            log.info("job %s: cannot look at it now (%s); trying again later", watch.job_name, error.message)
            reply = None
        except Exception:  # noqa: BLE001 - one watch must not stop the others; it is looked at again
            log.exception("job %s: looking at it failed", watch.job_name)
            reply = None

        async def close(tx, watch=watch, reply=reply) -> bool:
            if reply is None:
                await job_watches.release(tx, watch.id, owner, next_check=now + timedelta(seconds=JOB_POLL_SECONDS))
                return False
            if not await job_watches.finish(tx, watch.id, owner, outcome={"text": reply.text, "ok": reply.ok},
                                            now=now):
                return False                       # another replica took it over meanwhile
            if deliver is None and watch.conversation_id:
                payload = {"text": reply.text, **({"card": reply.card} if reply.card else {})}
                await outbox.enqueue(tx, watch.conversation_id, payload, dedupe_key=f"job-watch:{watch.id}:end",
                                     tenant_id=watch.tenant_id, now=now)
            return True

        if await store.run_transaction(close):
            reported += 1
            if deliver is not None:
                await deliver(reply)
    if reported and wake is not None and deliver is None:
        wake()
    return reported


async def alert_monitor_breaches(store: Storage, workspaces: Workspaces, *, clock: Callable[[], datetime],
                                 wake: Callable[[], None] | None = None, published: set | None = None,
                                 health: HealthThresholds | None = None) -> int:
    """Publish, as drift alerts, the breaching runs of every workspace that has local monitors (the
    local backend's `monitor_breaches`; Azure ML's breaches come through Event Grid), each run and
    signal once (see the module doc). `published`: keys already handled, kept between passes so that
    a pass with nothing new writes nothing. Returns how many cards were queued."""
    published = set() if published is None else published
    now = clock()
    queued = 0
    for ws in workspaces:
        if not ws.is_local:
            continue                                  # Azure ML's breaches come through Event Grid

        async def listeners(tx, name=ws.name) -> list[datetime]:
            return [s.created_at for s in await subscriptions.of_kind(tx, "drift")
                    if s.created_at is not None and (not s.workspace or s.workspace.lower() == name.lower())]
        since = await store.run_transaction(listeners, write=False)
        if not since:
            continue                                  # nobody subscribes to drift here: nothing to compute
        try:
            found = await ws.local_breaches(max(min(since), now - timedelta(days=LOCAL_BREACH_DAYS))) or []
        except Exception:  # noqa: BLE001 - one workspace must not stop the others; the next pass tries again
            log.exception("could not read the breaches of the local monitors of %s", ws.name)
            continue
        events = [event for monitor, run, signals in found
                  for event in local_breach_events(ws.name, monitor, run, signals)
                  if f"local:{ws.name}:{event.id}" not in published]
        if not events:
            continue

        healths: dict[str, str] = {}                 # the endpoint's health now, once per endpoint
        for event in events:
            if event.endpoint not in healths and len(healths) < 10:
                healths[event.endpoint] = await endpoint_health(workspaces, event, health or HealthThresholds())

        async def work(tx, events=events, name=ws.name, healths=healths) -> tuple[int, int]:
            fresh = cards = 0
            for event in events:                      # oldest first: a later run edits the card of an earlier one
                if await inbox.first_time(tx, f"local:{name}:{event.id}", now):
                    fresh += 1
                    cards += await publish(tx, event, now, health=healths.get(event.endpoint, ""))
            return fresh, cards
        fresh, cards = await store.run_transaction(work)
        queued += cards
        if len(published) > MAX_REMEMBERED:
            published.clear()
        published.update(f"local:{ws.name}:{event.id}" for event in events)
        if fresh:
            log.info("local monitors of %s: %d breached signals published, %d cards queued", ws.name, fresh, cards)
    if queued and wake is not None:
        wake()
    return queued
