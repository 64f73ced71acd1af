"""Verdicts of the watch after a traffic change: the endpoint's health against the figures before it.

    baseline = figures(await ml.endpoint_metrics("fraud-api", 60))     # just before the change
    ... the window (MLOPSBOT_WATCH_MINUTES) passes; bot/scheduler.py claims the stored watch ...
    await conclude(watch, services, window_minutes=15, owner="replica-a")

A deployment, or the endpoint as a whole, is *degraded* when, over the window after the change,

    p99 latency  > 1.5 x its figure before AND at least 50 ms more, or
    5xx rate     > 2 x its figure before AND at least 1 percentage point more.

A deployment that took no traffic before (a new canary) is compared with the endpoint's figures
before. Figures the backend does not report (a deployment without traffic in the window has none,
on Azure as on the local workspace) are skipped; the endpoint's own figures are always compared.

Degraded compares with before; it does not say the endpoint is healthy. A verdict that is not
degraded is *unhealthy* (never a green tick) when the endpoint, or a deployment that takes traffic,
is over the health thresholds after the window (MLOPSBOT_HEALTH_P99_MS, MLOPSBOT_HEALTH_5XX_PERCENT:
commands.resources.endpoints.unhealthy, the judgement the endpoint card and the digest use), e.g. a rollback
that left a failing deployment with a share of traffic.

`conclude` posts ONE verdict card (healthy, unhealthy or degraded, with the figures) with a Rollback
button ("Undo this rollback" on a rollback's verdict) through the outbox, in the same transaction that
marks the watch done. When the policy rule of the
watched change says `auto_rollback = true` and the verdict is degraded, the bot first rolls the
change back itself through the gate (audited as the MLOps bot) and the card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from adapters.service import EndpointMetrics, ServiceError
from adapters.storage import Storage, outbox, watches
from adapters.storage.watches import Watch
from commands.base.context import Context, HealthThresholds, Reply, Role, User, Workspaces, workspace_line
from commands.changes.change import Change
from commands.resources.endpoints import health_problems, ms_text, unhealthy
from commands.resources.rollout import note_outside, plan_rollback
from commands.resources.splits import traffic_text
from commands.base.ui import button, card, facts, plain, section, text

if TYPE_CHECKING:
    from commands.changes.gate import Gate

P99_RATIO, P99_MARGIN_MS = 1.5, 50.0
ERROR_RATIO, ERROR_MARGIN = 2.0, 0.01
BOT_USER = User(id="mlops-bot", name="MLOps bot")


def figures(metrics: EndpointMetrics) -> dict[str, Any]:
    """p99 latency and 5xx rate of the endpoint and of each deployment that reports them (JSON)."""
    deployments = {}
    for dep in metrics.deployments:
        p99, errors = getattr(dep, "latency_p99_ms", None), getattr(dep, "error_rate", None)
        if p99 is not None or errors is not None:
            deployments[dep.deployment] = {"p99_ms": p99, "error_rate": errors}
    return {"p99_ms": metrics.latency_p99_ms, "error_rate": metrics.error_rate,
            "window_minutes": metrics.window_minutes, "deployments": deployments}


BASELINE_MINUTES = 60          # the figures a change is compared with: the hour before it


async def read_baseline(ctx: Context, change: Change) -> dict[str, Any]:
    """The endpoint's figures just before the change: what the watch compares with."""
    metrics = await ctx.ml.endpoint_metrics(change.parameters["endpoint"], BASELINE_MINUTES)
    return {"baseline": figures(metrics)}


@dataclass(frozen=True)
class Finding:
    subject: str                 # "endpoint" or a deployment name
    measure: str                 # "p99" | "5xx"
    before: float
    after: float

    def describe(self) -> str:
        if self.measure == "p99":
            return f"{self.subject}: p99 {ms_text(self.before)} → {ms_text(self.after)}"
        return f"{self.subject}: 5xx {self.before:.2%} → {self.after:.2%}"


def _comparable(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Is there at least one figure known both before and after the change?"""
    pairs = [(before, after)] + [((before.get("deployments") or {}).get(name) or before, figs)
                                 for name, figs in (after.get("deployments") or {}).items()]
    return any(b.get(key) is not None and a.get(key) is not None
               for b, a in pairs for key in ("p99_ms", "error_rate"))


def _breaches(subject: str, before: dict, after: dict) -> list[Finding]:
    found = []
    b, a = before.get("p99_ms"), after.get("p99_ms")
    if b is not None and a is not None and a > b * P99_RATIO and a - b >= P99_MARGIN_MS:
        found.append(Finding(subject, "p99", b, a))
    b, a = before.get("error_rate"), after.get("error_rate")
    if b is not None and a is not None and a > b * ERROR_RATIO and a - b >= ERROR_MARGIN:
        found.append(Finding(subject, "5xx", b, a))
    return found


def judge(baseline: dict[str, Any], now: dict[str, Any]) -> list[Finding]:
    """What got worse (empty: healthy)."""
    found = _breaches("endpoint", baseline, now)
    for name, after in sorted((now.get("deployments") or {}).items()):
        before = (baseline.get("deployments") or {}).get(name) or baseline
        found += _breaches(name, before, after)
    return found


def _show(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return ms_text(value) if kind == "p99" else f"{value:.2%}"


def _unhealthy_before(baseline: dict[str, Any], deployment: str, limits: HealthThresholds) -> bool:
    """Was this part (the endpoint, or a deployment) over a threshold in the hour before the change?"""
    figs = (baseline.get("deployments") or {}).get(deployment) if deployment else baseline
    return bool(figs) and bool(health_problems(figs.get("p99_ms"), figs.get("error_rate"), limits))


LABELS = {"degraded": "⚠️ Degraded", "healthy": "✅ Healthy", "unhealthy": "⚠️ Unhealthy",
          "still_unhealthy": "⚠️ Still unhealthy"}


def verdict_card(watch: Watch, verdict: dict[str, Any], *, workspace: str) -> dict:
    degraded = verdict["state"] == "degraded"
    state = verdict["state"]
    if state == "unhealthy" and verdict.get("unhealthy_before"):
        state = "still_unhealthy"
    title = f"{LABELS.get(state, '❔ No verdict')} after the {watch.action} on {watch.endpoint}"
    body = [text(f"Watched for {verdict['window_minutes']} min after change #{watch.history_id} "
                 f"({verdict['split']}), asked by {plain(watch.requester_name) or 'someone'}"
                 + (f", request #{watch.approval_id}" if watch.approval_id else "") + ".", wrap=True)]
    if verdict.get("findings"):
        body.append(section("What got worse"))
        body += [text(f"- {line}", color="Attention") for line in verdict["findings"]]
    if verdict.get("unhealthy"):
        body.append(section("Over the health thresholds"))
        body += [text(f"- {line}", color="Attention") for line in verdict["unhealthy"]]
        if not degraded:
            body.append(text("It was over them before the change too: the change neither caused this nor fixed it."
                             if verdict.get("unhealthy_before") else
                             "Not worse than before the change by the watch's measure (p99 over 1.5 x and 50 ms "
                             "more, or 5xx over 2 x and 1 point more), but not healthy.", subtle=True, wrap=True))
    before, after = verdict.get("baseline") or {}, verdict.get("after") or {}
    rows = [("Endpoint", f"p99 {_show(before.get('p99_ms'), 'p99')} → {_show(after.get('p99_ms'), 'p99')}, "
                         f"5xx {_show(before.get('error_rate'), '5xx')} → {_show(after.get('error_rate'), '5xx')}")]
    for name, figs in sorted((after.get("deployments") or {}).items()):
        was = (before.get("deployments") or {}).get(name) or {}
        rows.append((name, f"p99 {_show(was.get('p99_ms'), 'p99')} → {_show(figs.get('p99_ms'), 'p99')}, "
                           f"5xx {_show(was.get('error_rate'), '5xx')} → {_show(figs.get('error_rate'), '5xx')}"))
    body += [section("Before → after"), facts(rows)]
    if verdict.get("note"):
        body.append(text(plain(verdict["note"]), subtle=True))
    if verdict.get("rolled_back"):
        body.append(text(f"↩️ {plain(verdict['rolled_back'])}", weight="Bolder"))
    undo = "Undo this rollback" if watch.action == "rollback" else "Rollback"    # the same action, named
    actions = [] if verdict.get("rolled_back") else [
        button(undo, "rollback", watch.endpoint, "--to", str(watch.history_id),
               style="destructive" if degraded else None)]
    actions.append(button("History", "history", watch.endpoint))
    return card(title, body, subtitle=workspace, actions=actions)


async def conclude(watch: Watch, *, workspaces: Workspaces, store: Storage, gate: Gate, window_minutes: int, owner: str,
                   clock: Callable[[], datetime], health: HealthThresholds = HealthThresholds()
                   ) -> dict[str, Any] | None:
    """Evaluate a claimed watch, roll back if the policy says so, post the verdict; return it
    (None when another replica took the watch over meanwhile)."""
    service = workspaces.get(watch.workspace)
    verdict: dict[str, Any] = {"window_minutes": window_minutes, "baseline": watch.baseline}
    live_split: dict[str, int] | None = None
    try:
        endpoint = await service.get_endpoint(watch.endpoint)
        live_split = dict(endpoint.traffic)
        verdict["split"] = traffic_text(endpoint.traffic)
        metrics = await service.endpoint_metrics(watch.endpoint, window_minutes)
    except ServiceError as error:
        verdict.update(state="unknown", after={}, findings=[], split="?",
                       note=f"Could not read the endpoint's figures: {error.message}")
    else:
        after = figures(metrics)
        findings = judge(watch.baseline, after)
        sick = unhealthy(metrics, endpoint.traffic, health)
        verdict.update(after=after, findings=[f.describe() for f in findings],
                       unhealthy=[f"{part.deployment or 'endpoint'}: {part.text}" for part in sick],
                       unhealthy_before=bool(sick) and all(_unhealthy_before(watch.baseline, part.deployment, health)
                                                           for part in sick),
                       state="degraded" if findings else "unhealthy" if sick else "healthy")
        if not findings and not sick and not _comparable(watch.baseline, after):
            verdict.update(state="unknown", note="There are no figures to compare: the endpoint reported no p99 "
                                                 "latency or 5xx rate before the change, or none since.")
    if verdict["state"] == "degraded" and watch.auto_rollback:
        verdict["rolled_back"] = await _roll_back(watch, workspaces=workspaces, store=store, gate=gate, clock=clock)
        live_split = None                 # read before the bot's own rollback: no longer what is live
    now = clock()
    where = workspace_line(service.name, service.environment)
    payload_card = verdict_card(watch, verdict, workspace=where)

    async def work(tx) -> bool:
        if not await watches.finish(tx, watch.id, owner, verdict=verdict, now=now):
            return False
        if live_split is not None:         # someone changed the split outside the bot meanwhile?
            await note_outside(tx, watch.workspace, watch.endpoint, live_split, now)
        if watch.conversation_id:
            await outbox.enqueue(tx, watch.conversation_id,
                                 {"text": payload_card["fallbackText"], "card": payload_card}, dedupe_key=f"watch:{watch.id}:verdict", tenant_id=watch.tenant_id, now=now)
        return True

    if not await store.run_transaction(work):
        return None
    gate.wake_outbox()
    return verdict


async def _roll_back(watch: Watch, *, workspaces: Workspaces, store: Storage, gate: Gate,
                     clock: Callable[[], datetime]) -> str:
    """Undo the watched change as the MLOps bot, directly (the policy asked for it); one line."""
    ctx = Context(user=BOT_USER, role=Role.ADMIN, workspaces=workspaces, conversation_id=watch.conversation_id,
                  workspace=watch.workspace, gate=gate, store=store, clock=clock,
                  reason=f"automatic rollback: the {watch.action} of change #{watch.history_id} degraded "
                         f"{watch.endpoint}")
    try:
        planned = await plan_rollback(ctx, watch.endpoint, watch.history_id)
    except Exception as error:  # noqa: BLE001 - the verdict is posted whatever happens here
        return f"Automatic rollback not possible: {error}"
    if isinstance(planned, Reply):
        return f"Automatic rollback not needed or not possible: {planned.text}"
    planned = replace(planned, reason=ctx.reason)
    answer = await gate.run_direct(ctx, planned, wait=True, limited=False)   # never refused by a rate limit
    return f"Rolled back automatically by the MLOps bot: {answer.text}"
