"""Model-health digests: `digest schedule|now|show|off`, the gathering, and sending the due ones.

    digest schedule "0 9 * * 1-5" --tz Europe/Berlin     # weekdays at 09:00 Berlin time, in this chat
    digest now                                           # the digest, here, at once
    digest show / digest off

A conversation has at most one schedule (a channel as a whole, not the thread it was typed in).
Scheduling and stopping need the policy's [subscriptions] role (Operator by default) and are
audited; `now` and `show` are open to all.

Sending (`send_due`, called by the scheduler loop in bot/digests.py): for every schedule whose
next_run has come, gather the digest, then in ONE transaction claim it by compare-and-set of its
next_run (adapters.storage.digests.claim), remember what it saw and enqueue the card in the outbox.
A replica that loses the claim sends nothing, so each due digest goes out once. The new next_run
is the first fire time after *now*: after downtime a schedule sends one late digest (marked late),
not one per missed window.

Gathering also scans the workspace's security posture (commands/alerts/posture.py) and lists the checks
that turned from pass to fail since the last digest under "Needs attention". Gathering reads the
workspace concurrently, at most GATHER_CONCURRENCY calls at a time, and asks
for endpoint figures in batches (`endpoints_metrics`, METRICS_BATCH endpoints a call: on Azure one
Azure Monitor `query_resources` per metric group and batch); a part that cannot be read becomes a
line under "Could not read" (or "figures unavailable" on its endpoint), never a failed digest.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, TypeVar

from adapters.service import Compute, DriftReport, EndpointMetrics, Job, Monitor, ModelVersion, OnlineEndpoint, \
    ServiceError
from adapters.azureml.monitoring import breach_sign
from adapters.drift.definitions import level_words
from adapters.storage import Storage, approvals, audit, conversations, digests, outbox
from adapters.storage import posture as posture_states
from adapters.storage.digests import DigestSchedule
from commands.alerts.alerts import _reach_channel, home
from commands.base.context import Context, HealthThresholds, Reply, Role, UnknownWorkspace, Workspaces, shown_name
from commands.digests.digest_card import (Digest, EndpointHealth, FailedJob, Figure, ModelHealth, PendingApproval,
                                  RunningCompute, digest_card)
from commands.digests.digest_times import DigestTimeError, check_gap, fires_after, jitter, next_due, parse_when, \
    parse_zone, show
from commands.resources.endpoints import unhealthy
from commands.alerts.monitoring import change_text, severity
from commands.alerts.posture import digest_lines
from commands.alerts.posture import remember as remember_posture
from commands.alerts.posture import scan as scan_posture
from commands.base.registry import Arg, Forbidden, UsageError, command, one_of
from commands.base.studio import Studio
from commands.base.ui import reply
from adapters.nonblocking import NonBlockingService

log = logging.getLogger(__name__)
T = TypeVar("T")

GATHER_CONCURRENCY = 16            # workspace calls in flight at once for one digest
METRICS_WINDOW_MINUTES = 60
METRICS_BATCH = 50                 # endpoints per `endpoints_metrics` call (Azure Monitor's batch limit)
HISTORY = 11                       # earlier digests kept per endpoint figure (sparkline: these + now)
FIRST_LOOKBACK = timedelta(days=1)  # "failed since" for a chat's first digest
EXPIRING_WITHIN = timedelta(hours=4)
MAX_CRON_CHARS = 100
ACTIONS = ("schedule", "now", "show", "off")
SCHEDULE_ROLE = Role.OPERATOR
USAGE = ('Usage: `digest schedule ‹when› [--tz Europe/Berlin] [--workspace W]` (‹when›: "weekdays 09:00", '
         '"mondays 9am" or cron such as "0 9 * * 1-5"), `digest now`, `digest show`, `digest off`')


# ---------------------------------------------------------------- gathering


@dataclass(frozen=True)
class Gathered:
    digest: Digest
    snapshot: dict[str, Any]          # what the next digest compares with


async def gather(ml: NonBlockingService, store: Storage, *, conversation_id: str, now: datetime,
                 health: HealthThresholds = HealthThresholds(), studio: Studio | None = None,
                 concurrency: int = GATHER_CONCURRENCY, batch_size: int = METRICS_BATCH) -> Gathered:
    """Read everything a digest shows for workspace `ml` (a NonBlockingService) and this conversation."""
    limit = asyncio.Semaphore(concurrency)
    gaps: list[str] = []

    async def read(what: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        async with limit:
            try:
                return await call()
            except ServiceError as error:
                gaps.append(f"{what}: {error.message}")
                return default

    previous = await store.run_transaction(lambda tx: digests.snapshot(tx, conversation_id, ml.name), write=False)
    since, seen = previous if previous else (None, {})
    # the security posture is scanned with the rest (and remembered: a check that turned to fail since
    # the last scan is news, here and for `subscribe posture`), so the digest does not depend on the
    # scheduler's posture scans, which run only while someone subscribes
    posture_scan = asyncio.ensure_future(read("security posture", lambda: scan_posture(ml), None))

    # each read's default (typed, empty) is what a read that failed shows; its gap is noted
    read_all: list[Any] = await asyncio.gather(       # seven reads: beyond typeshed's typed overloads of gather
        read("endpoints", ml.list_endpoints, list[OnlineEndpoint]()),
        read("models in Production", lambda: ml.list_models(stage="Production"), list[ModelVersion]()),
        read("models in Staging", lambda: ml.list_models(stage="Staging"), list[ModelVersion]()),
        read("monitors", ml.list_monitors, list[Monitor]()),
        read("failed jobs", lambda: ml.list_jobs(status="Failed", limit=100), list[Job]()),
        read("running jobs", lambda: ml.list_jobs(status="Running", limit=100), list[Job]()),
        read("compute", ml.list_compute, list[Compute]()))
    endpoints, production, staging, monitors, failed, running_jobs, compute = read_all

    async def metrics(batch: list[OnlineEndpoint]) -> list[EndpointMetrics | ServiceError]:
        """One batched call for `batch`; an endpoint the answer lacks, or a failed call, is unreadable."""
        async with limit:
            try:
                found = await ml.endpoints_metrics(batch, METRICS_WINDOW_MINUTES)
            except ServiceError as error:
                return [error] * len(batch)
        return [found.get(e.name) or ServiceError("no figures for this endpoint") for e in batch]

    breached = [m for m in monitors if m.last_run is not None and m.last_run.breached]

    async def report(monitor: Monitor) -> DriftReport | None:
        return await read(f"drift of {monitor.name}", lambda: ml.drift_report(monitor.name), None)

    batches = [endpoints[i:i + batch_size] for i in range(0, len(endpoints), batch_size)]
    answers, reports = await asyncio.gather(asyncio.gather(*(metrics(b) for b in batches)),
                                            asyncio.gather(*(report(m) for m in breached)))
    figures = [figure for answer in answers for figure in answer]
    by_monitor = {m.name: r for m, r in zip(breached, reports) if r is not None}

    earlier = seen.get("endpoints", {})
    rows = [_endpoint_row(e, f, earlier.get(e.name, {}), health, studio) for e, f in zip(endpoints, figures)]
    stages_before = seen.get("stages")
    models = [_model_row(v, monitors, by_monitor, stages_before, studio)
              for v in sorted([*production, *staging], key=lambda v: (v.name, v.version))]
    cutoff = since or now - FIRST_LOOKBACK
    failed_jobs = tuple(FailedJob(j.name, j.display_name, j.ended_at, j.error, studio.job(j.name) if studio else "")
                        for j in failed if (j.ended_at or j.created_at or now) >= cutoff)
    async def pending_and_anchor(tx) -> tuple[list, tuple[int, str]]:
        # with several tenants, a chat's digest lists only its own tenant's requests
        where = await conversations.get_conversation(tx, conversation_id)
        tenant = where.tenant_id if where is not None and where.tenant_id else None
        return (await approvals.find(tx, states=[approvals.PENDING], limit=100, tenant_id=tenant),
                await audit.head(tx))

    pending, audit_head = await store.run_transaction(pending_and_anchor, write=False)
    log.info("audit anchor: %d records, head %s (digest for %s)", *audit_head, conversation_id)
    waiting = tuple(PendingApproval(a.id, f"{a.action} {a.target}", shown_name(a.requester_id, a.requester_name),
                                    a.expires_at,
                                    a.expires_at - now <= EXPIRING_WITHIN)
                    for a in sorted(pending, key=lambda a: a.expires_at)
                    if a.workspace in ("", ml.name) and a.expires_at > now)      # expired: the sweep's to close
    checks = await posture_scan
    if checks is not None:
        await remember_posture(store, ml.name, checks, now)
    turned = await store.run_transaction(lambda tx: posture_states.turned_failing(tx, ml.name, cutoff), write=False)
    digest = Digest(workspace=ml.name, environment=ml.environment, now=now, since=since, endpoints=tuple(rows),
                    models=tuple(models), failed_jobs=failed_jobs, approvals=waiting,
                    compute=tuple(_running(compute, running_jobs)), gaps=tuple(gaps), audit_head=audit_head,
                    posture=tuple(digest_lines(turned)))
    # what could not be read this time keeps what the last digest saw, so the next one still compares
    models_read = not any(gap.startswith("models in ") for gap in gaps)
    snapshot = {
        "endpoints": {row.name: _history(row) if not row.unreadable else earlier.get(row.name, {}) for row in rows},
        "stages": ({f"{v.name}:{v.version}": v.stage for v in [*production, *staging]} if models_read
                   else stages_before or {}),
    }
    return Gathered(digest, snapshot)


def _endpoint_row(endpoint: OnlineEndpoint, found: EndpointMetrics | ServiceError, earlier: dict[str, list],
                  health: HealthThresholds, studio: Studio | None) -> EndpointHealth:
    url = studio.endpoint(endpoint.name) if studio else ""
    if isinstance(found, ServiceError):
        empty = Figure(None)
        return EndpointHealth(endpoint.name, dict(endpoint.traffic), empty, empty, empty, empty,
                              unreadable=found.message, url=url)
    error_percent = found.error_rate * 100 if found.error_rate is not None else None

    def figure(key: str, value: float | None) -> Figure:
        past = tuple(earlier.get(key, []))[-HISTORY:]
        return Figure(None if value is None else round(value, 3), past[-1] if past else None, past)

    problems = tuple(f"deployment {part.deployment}: {part.text}" if part.deployment else part.text
                     for part in unhealthy(found, endpoint.traffic, health))
    return EndpointHealth(endpoint.name, dict(endpoint.traffic), figure("p50", found.latency_p50_ms),
                          figure("p99", found.latency_p99_ms), figure("rpm", found.requests_per_minute),
                          figure("err", error_percent), problems, url=url)


def _history(row: EndpointHealth) -> dict[str, list]:
    return {key: [*fig.history, fig.now][-HISTORY:] for key, fig in
            (("p50", row.p50_ms), ("p99", row.p99_ms), ("rpm", row.rpm), ("err", row.error_percent))}


def _watching(version: ModelVersion, monitors: list[Monitor]) -> list[Monitor]:
    return [m for m in monitors if m.model_name == version.name and m.model in (version.name, version.ref)]


def _model_row(version: ModelVersion, monitors: list[Monitor], reports: dict[str, DriftReport],
               stages_before: dict[str, str] | None, studio: Studio | None) -> ModelHealth:
    watching = _watching(version, monitors)
    states, worst, kinds = set(), [], []
    for monitor in watching:
        run = monitor.last_run
        states.add("unknown" if run is None or run.breached is None else "breached" if run.breached else "ok")
        if run is not None and run.breached:
            kinds += [s.kind for s in monitor.signals if s.name in run.breached_signals and s.kind not in kinds]
        if monitor.name in reports:
            worst += _worst_figures(reports[monitor.name])
    drift = next((s for s in ("breached", "unknown", "ok") if s in states), "")
    change = ""
    if stages_before is not None:
        before = stages_before.get(version.ref)
        if before is None:
            change = f"new in {version.stage}"
        elif before != version.stage:
            change = f"{before} → {version.stage}"
    shown = worst[:WORST_SHOWN + 2]
    return ModelHealth(version.name, version.version, version.stage, drift, tuple(_worst_text(f) for f in shown),
                       change, studio.model(version.name, version.version) if studio else "", tuple(kinds),
                       tuple(dict.fromkeys(f.metric for f in shown)))


WORST_SHOWN = 3


def _worst_features(report: DriftReport) -> list[str]:
    """The breached figures worst first (how far past the threshold, whichever way it breaches), at
    least the worst of each breached signal (so performance and attribution show beside drift), each
    with its level in words and its change since the monitor's previous run."""
    return [_worst_text(f) for f in _worst_figures(report)]


def _worst_figures(report: DriftReport) -> list:
    by_signal = [sorted((f for f in s.figures if f.breached and f.value is not None), key=lambda f: -severity(f))
                 for s in report.signals]
    picked = [figures[0] for figures in by_signal if figures]
    rest = sorted((f for figures in by_signal for f in figures[1:]), key=lambda f: -severity(f))
    picked += rest[:max(0, WORST_SHOWN - len(picked))]
    return sorted(picked, key=lambda f: -severity(f))


def _worst_text(figure) -> str:
    rule = f" {breach_sign(figure.metric)} {figure.threshold:g}" if figure.threshold is not None else ""
    words = ", ".join(p for p in (level_words(figure.metric, figure.value, figure.threshold),
                                  change_text(figure)) if p)
    return f"{figure.feature or 'model'} {figure.metric} {figure.value:.3g}{rule}" + (f" ({words})" if words else "")


def _running(compute: list[Compute], running_jobs: list[Job]) -> list[RunningCompute]:
    busy = {j.compute for j in running_jobs if j.compute}
    out = []
    for c in compute:
        nodes = c.current_nodes
        is_instance = c.type.lower() == "computeinstance"
        on = c.state.lower() == "running" if is_instance else bool(nodes)
        if on:
            out.append(RunningCompute(c.name, c.type, c.size, None if is_instance else nodes, c.name not in busy))
    return out


# ---------------------------------------------------------------- sending due digests


async def send_due(store: Storage, workspaces: Workspaces, now: datetime, *,
                   health: HealthThresholds = HealthThresholds(),
                   studio_of: Callable[[Any], Studio | None] = lambda ml: None,
                   failed: list[str] | None = None) -> int:
    """Send every digest that is due at `now`; how many this caller claimed (and enqueued). A digest
    that fails is logged and left due (its conversation appended to `failed`); the others still go."""
    sent = 0
    for schedule in await store.run_transaction(lambda tx: digests.due(tx, now), write=False):
        try:
            if await send_one(store, workspaces, schedule, now, health=health, studio_of=studio_of):
                sent += 1
        except Exception:  # noqa: BLE001 - one broken schedule must not hold up the others
            log.exception("the digest of %s could not be sent", schedule.conversation_id)
            if failed is not None:
                failed.append(schedule.conversation_id)
    return sent


async def send_one(store: Storage, workspaces: Workspaces, schedule: DigestSchedule, now: datetime, *,
                   health: HealthThresholds = HealthThresholds(),
                   studio_of: Callable[[Any], Studio | None] = lambda ml: None) -> bool:
    """Gather and send one due digest, if this caller wins its claim."""
    current = await store.run_transaction(lambda tx: digests.get(tx, schedule.conversation_id), write=False)
    if current is None or current.next_run != schedule.next_run:
        return False                           # sent by another replica meanwhile, changed or stopped: no work
    zone = parse_zone(schedule.time_zone)
    following = next_due(schedule.cron, zone, schedule.conversation_id, now)
    try:
        ml = workspaces.get(schedule.workspace or None)
    except UnknownWorkspace as error:
        ml, problem = None, str(error)
    fire = schedule.next_run - jitter(schedule.conversation_id)
    late = fire if now - schedule.next_run > LATE_AFTER else None
    where = f"{schedule.cron} {schedule.time_zone}, next {show(following, zone)}"
    if ml is None:
        payload = {"text": f"The scheduled digest could not run: {problem} `digest schedule ... --workspace` "
                           "with one of them fixes it."}
        snapshot = None
    else:
        gathered = await gather(ml, store, conversation_id=schedule.conversation_id, now=now, health=health,
                                studio=studio_of(ml))
        built = digest_card(replace(gathered.digest, late_since=late, schedule=where))
        payload, snapshot = {"text": built["fallbackText"], "card": built}, gathered.snapshot

    async def work(tx) -> bool:
        if not await digests.claim(tx, schedule.conversation_id, expected=schedule.next_run, next_run=following,
                                   now=now):
            return False                       # another replica sent it (or the schedule changed)
        if await conversations.is_gone(tx, schedule.conversation_id):
            return True
        if snapshot is not None:
            await digests.remember(tx, schedule.conversation_id, ml.name, snapshot, now)
        key = f"digest:{schedule.conversation_id}:{schedule.next_run.isoformat()}"
        await outbox.enqueue(tx, schedule.conversation_id, payload, dedupe_key=key, tenant_id=schedule.tenant_id,
                             now=now)
        return True

    return await store.run_transaction(work)


LATE_AFTER = timedelta(minutes=15)


# ---------------------------------------------------------------- the command


@command("digest", Arg("action", type=one_of(ACTIONS, "action"), metavar="|".join(ACTIONS),
                       help="schedule, now, show or off"),
         Arg("cron", nargs="*", metavar="when",
             help='for schedule: "weekdays 09:00", "mondays 9am", "daily 18:30" or a cron expression such as '
                  '"0 9 * * 1-5"'),
         Arg("--tz", help="the schedule's time zone: IANA (Europe/Berlin), a common abbreviation (IST, CET, EST) "
                          "or a country (India); default UTC", metavar="ZONE"),
         phrases=("digest", "summary", "model health report", "daily report", "weekly report", "health summary",
                  "report now", "send digest", "health digest", "morning summary", "digest scheduled",
                  "turn off digest", "digest off"),
         summary="A model-health digest of this chat's workspace: now, or on a schedule (cron, in a time zone); "
                 "scheduling needs the Operator role (the policy's [subscriptions] role).",
         example='digest schedule "0 9 * * 1-5" --tz Europe/Berlin', group="set up", common=True)
async def digest(ctx: Context, action: str, cron: list[str] | str | None, tz: str | None) -> Reply:
    cron = " ".join(cron) if isinstance(cron, list) else cron      # unquoted words read as one `when`
    if ctx.store is None or not ctx.conversation_id:
        raise UsageError("Digests are not available in this chat.")
    if action != "schedule" and (cron or tz):
        raise UsageError(f"`digest {action}` takes no cron expression or time zone. {USAGE}")
    return await {"schedule": _schedule, "now": _now, "show": _show, "off": _off}[action](ctx, cron, tz)


async def _now(ctx: Context, cron: str | None, tz: str | None) -> Reply:
    from commands.base.studio import studio
    now = ctx.now()
    where_to = home(ctx)
    gathered = await gather(ctx.ml, ctx.store, conversation_id=where_to, now=now, health=ctx.health,
                            studio=studio(ctx))
    await ctx.store.run_transaction(lambda tx: digests.remember(tx, where_to, ctx.ml.name, gathered.snapshot, now))
    return reply(digest_card(gathered.digest))


def _may_schedule(ctx: Context) -> None:
    """What a conversation receives unasked is the policy's [subscriptions] role to decide
    (Operator by default), for digests as for alert subscriptions."""
    needed = ctx.gate.policy.subscription_role if ctx.gate is not None else SCHEDULE_ROLE
    if ctx.role < needed:
        raise Forbidden(f"Scheduling digests needs the {needed.label} role; you have {ctx.role.label}. "
                        "Ask a bot admin to grant it (the policy's [subscriptions] role sets who may).")


async def _schedule(ctx: Context, cron: str | None, tz: str | None) -> Reply:
    _may_schedule(ctx)
    if not cron:
        raise UsageError(f"Say when, e.g. `digest schedule weekdays 09:00`. {USAGE}")
    if len(cron) > MAX_CRON_CHARS:
        raise UsageError(f"That cron expression is too long (at most {MAX_CRON_CHARS} characters).")
    now = ctx.now()
    try:
        expression = parse_when(cron)
        zone = parse_zone(tz or "UTC")
        check_gap(expression, zone, now)
    except DigestTimeError as error:
        raise UsageError(f"{error} {USAGE}") from None
    workspace = ctx.ml.name                       # raises UnknownWorkspace ("did you mean") for a wrong --workspace
    where_to = home(ctx)
    first = next_due(expression, zone, where_to, now)
    schedule = DigestSchedule(where_to, expression, zone.key, first, workspace=workspace,
                              tenant_id=ctx.user.tenant_id, created_by_id=ctx.user.id, created_by_name=ctx.user.name)

    async def work(tx) -> None:
        await _reach_channel(tx, ctx, where_to)
        await digests.save(tx, schedule, now)
        await audit.append(tx, _entry(ctx, "digest scheduled", f"{expression} {zone.key}",
                                      {"conversation": where_to, "cron": expression, "time_zone": zone.key},
                                      workspace))

    await ctx.store.run_transaction(work)
    upcoming = ", ".join(show(m, zone) for m in fires_after(expression, zone, now, 3))
    return Reply(f"Scheduled the model-health digest of {workspace} for this chat: `{expression}` in {zone.key}. "
                 f"Next: {upcoming}. `digest now` shows one at once; `digest off` stops it.")


async def _show(ctx: Context, cron: str | None, tz: str | None) -> Reply:
    found = await ctx.store.run_transaction(lambda tx: digests.get(tx, home(ctx)), write=False)
    if found is None:
        return Reply('This chat has no digest schedule. Try `digest schedule "0 9 * * 1-5" --tz Europe/Berlin` '
                     "(Operator role), or `digest now`.")
    zone = parse_zone(found.time_zone)
    upcoming = ", ".join(show(m, zone) for m in fires_after(found.cron, zone, ctx.now(), 3))
    last = f" Last sent {found.last_run.strftime('%Y-%m-%d %H:%M')} UTC." if found.last_run else ""
    return Reply(f"Digest of {found.workspace or 'the default workspace'}: `{found.cron}` in {found.time_zone}, "
                 f"set by {found.created_by_name or 'unknown'}. Next: {upcoming}.{last}")


async def _off(ctx: Context, cron: str | None, tz: str | None) -> Reply:
    _may_schedule(ctx)
    where_to = home(ctx)

    async def work(tx) -> DigestSchedule | None:
        removed = await digests.remove(tx, where_to)
        if removed is not None:
            await audit.append(tx, _entry(ctx, "digest stopped", f"{removed.cron} {removed.time_zone}",
                                          {"conversation": where_to}, removed.workspace))
        return removed

    removed = await ctx.store.run_transaction(work)
    if removed is None:
        return Reply("This chat has no digest schedule; nothing to stop.")
    return Reply(f"Stopped the digest of this chat (`{removed.cron}` in {removed.time_zone}).")


def _entry(ctx: Context, event: str, target: str, detail: dict[str, Any], workspace: str) -> audit.AuditEntry:
    return audit.AuditEntry(at=ctx.now(), event=event, actor_id=ctx.user.id, actor_name=ctx.user.name,
                            actor_upn=ctx.user.upn, tenant_id=ctx.user.tenant_id, action="digest",
                            workspace=workspace, target=target[:200], activity_id=ctx.activity_id, detail=detail)
