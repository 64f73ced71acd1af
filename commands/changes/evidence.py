"""Evidence on approval cards: what an approver needs to decide, read from the workspace.

For traffic, canary, rollback and scale: each deployment's health now (p99, 5xx rate, requests
per minute) and the model version behind it; the deployment that would receive more traffic (or
be scaled) is flagged when it is over the health thresholds ("green: 5xx 8.00% is over 1%"); the
candidate's comparison headline against the champion (commands/resources/compare.py); Endpoint, Compare and
History buttons. For retrain: the schedule and its last run.

The gate (`commands.changes.gate`) gathers it (the `gather` of the change kinds in commands/changes/kinds.py), always read afresh (bypassing the few seconds of shared
reads), when a request opens (stored with the request, so the cards
it posts carry it) and again when a voter opens the card (`approval N`, Teams' refresh), so the
figures a voter decides on are the current ones. Reading evidence never blocks a request: a
failure becomes a line that says what could not be read.
"""

from __future__ import annotations

from typing import Any

from adapters.nonblocking import fresh_reads
from adapters.service import ServiceError
from commands.resources.compare import compare_versions
from commands.base.context import Context
from commands.resources.endpoints import _fmt, _metrics, _percent, health_problems, ms_text
from commands.changes.change import Change


def receiving(change: Change) -> list[str]:
    """The deployments the change gives more traffic to (or scales up)."""
    if change.action == "scale":
        return [str(change.parameters.get("deployment", ""))]
    before, after = change.before.get("traffic"), change.after.get("traffic")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    return [name for name, share in after.items() if share > before.get(name, 0)]


async def endpoint_evidence(ctx: Context, change: Change) -> dict[str, Any]:
    # evidence is what an approver decides on: read afresh, never a figure shared a few seconds ago
    # (adapters.nonblocking's shared reads), as a card's Refresh does
    with fresh_reads():
        return await _endpoint_evidence(ctx, change)


async def _endpoint_evidence(ctx: Context, change: Change) -> dict[str, Any]:
    name = str(change.parameters.get("endpoint") or change.target)
    endpoint = await ctx.ml.get_endpoint(name)
    metrics, error = await _metrics(ctx, name)
    usage = {u.deployment: u for u in (metrics.deployments if metrics else ())}
    flagged = receiving(change)
    rows, warnings = [], []
    for deployment in endpoint.deployments:
        figures = usage.get(deployment.name)
        if figures is None or (figures.latency_p99_ms is None and figures.error_rate is None):
            line = "no live requests"
        else:
            line = (f"p99 {ms_text(figures.latency_p99_ms)} · 5xx {_percent(figures.error_rate)} · "
                    f"{_fmt(figures.requests_per_minute, ' /min', 1)}")
            problems = health_problems(figures.latency_p99_ms, figures.error_rate, ctx.health)
            if problems and deployment.name in flagged:
                role = "is the one being scaled" if change.action == "scale" else "would receive traffic"
                warnings.append(f"{deployment.name} {role} and is unhealthy: {'; '.join(problems)}")
        share = endpoint.traffic.get(deployment.name, 0)
        model = deployment.model or "model unknown"
        rows.append((f"{deployment.name} ({share}%)", f"{model} · {line}"))
    evidence: dict[str, Any] = {"rows": rows, "warnings": warnings,
                                "links": [["Endpoint", "endpoint", [name, "--workspace", change.workspace]],
                                          ["History", "history", [name, "--workspace", change.workspace]]]}
    if error:
        evidence["error"] = f"Health figures unavailable: {error}"
    models = {d.name: d.model for d in endpoint.deployments if d.model}
    candidate = next((models[d] for d in flagged if d in models), "")
    if candidate and ":" in candidate:
        headline = await _headline(ctx, candidate)
        if headline:
            evidence["headline"] = headline
            evidence["links"].insert(1, ["Compare", "compare", [candidate, "--workspace", change.workspace]])
    return evidence


async def _headline(ctx: Context, candidate_ref: str) -> str:
    """"fraud-model v4 vs champion v3: better on 2 of 3 metrics, worse on 1" (empty when unknown)."""
    name, _, version = candidate_ref.partition(":")
    try:
        candidate = await ctx.ml.get_model(name, version)
        champions = [m for m in await ctx.ml.list_models(name, stage="Production") if m.version != version]
    except ServiceError:
        return ""
    if not champions:
        return f"{name} v{version}: no Production champion to compare with."
    champion = champions[0]
    rows = compare_versions(candidate, champion)
    judged = [r for r in rows if r.better]
    wins = sum(r.better == "candidate" for r in judged)
    losses = sum(r.better == "baseline" for r in judged)
    if not judged:
        return f"{name} v{version} vs champion v{champion.version}: no metric with a known direction to compare."
    return (f"{name} v{version} vs champion v{champion.version}: better on {wins} of {len(judged)} metric"
            f"{'s' if len(judged) != 1 else ''}, worse on {losses}.")


async def retrain_evidence(ctx: Context, change: Change) -> dict[str, Any]:
    with fresh_reads():            # the schedule's last run as it is now, not as shared a moment ago
        return await _retrain_evidence(ctx, change)


async def _retrain_evidence(ctx: Context, change: Change) -> dict[str, Any]:
    schedule = str(change.parameters.get("schedule") or "")
    rows: list[tuple[str, str]] = []
    found = next((s for s in await ctx.ml.list_schedules() if s.name == schedule), None) if schedule else None
    if found is not None:
        rows.append(("Schedule", f"{found.name}: {found.expression} ({found.time_zone})"
                                 f"{'' if found.enabled else ', disabled'}"))
    elif schedule:
        rows.append(("Schedule", f"{schedule} (not found now)"))
    runs = [job for job in await ctx.ml.list_jobs(limit=50) if job.tags.get("schedule") == schedule] if schedule else []
    warnings = []
    if runs:
        last = max(runs, key=lambda job: job.created_at.timestamp() if job.created_at else 0.0)
        started = last.created_at.strftime("%Y-%m-%d %H:%M UTC") if last.created_at else "time unknown"
        rows.append(("Last run", f"{last.name}: {last.status}, {started}"))
        if last.status == "Failed":
            warnings.append(f"the last run of {schedule} failed: {last.error or 'no detail recorded'}")
    else:
        rows.append(("Last run", "none recorded"))
    return {"rows": rows, "warnings": warnings, "links": [["Schedules", "schedules", []]]}
