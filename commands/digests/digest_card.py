"""The model-health digest card: a pure function of what was gathered (`Digest`).

Reading order is what a team lead asks first: does anything need me (the headline), then the
endpoints (traffic, latency, load, errors, each with its change since the last digest and a
sparkline of the digests before), the models in Production and Staging (drift, stage changes),
failed jobs, approvals waiting, and compute that costs money. Long lists end in "N more" with the
command that shows them all; the whole card stays under Teams' size limit (ui.MAX_CARD_BYTES).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from adapters.drift.definitions import DEFINITIONS, LEVEL_RULE
from commands.base.context import workspace_line
from commands.resources.endpoints import ms_text
from commands.resources.splits import traffic_text
from commands.base.ui import MAX_CARD_BYTES, button, card, columns, excerpt, plain, section, text, when

BLOCKS = "▁▂▃▄▅▆▇█"
DRIFT_KINDS = ("data_drift", "prediction_drift")
KIND_WORDS = {"data_quality": "data quality", "feature_attribution_drift": "feature attribution",
              "model_performance": "model performance", "custom": "a custom signal"}
TREND_SPAN = 0.2                   # a sparkline's height is at least 20% of the series' highest value
MAX_ENDPOINTS = 8
MAX_MODELS = 8
MAX_JOBS = 5
MAX_APPROVALS = 5
MAX_COMPUTE = 5
MAX_POSTURE = 5


@dataclass(frozen=True)
class Figure:
    """One endpoint figure now, at the last digest, and at the digests before (oldest first)."""

    now: float | None
    before: float | None = None
    history: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class EndpointHealth:
    name: str
    traffic: dict[str, int]
    p50_ms: Figure
    p99_ms: Figure
    rpm: Figure
    error_percent: Figure              # 5xx, percent of requests
    problems: tuple[str, ...] = ()     # why it needs attention, one per part over a threshold ("p99 1,450 ms
                                       # is over 1,000 ms", "deployment green: 5xx 7.96% is over 1%")
    unreadable: str = ""               # why the figures are missing
    url: str = ""


@dataclass(frozen=True)
class ModelHealth:
    name: str
    version: str
    stage: str
    drift: str                         # "breached" | "ok" | "unknown" | "" (no monitor)
    worst: tuple[str, ...] = ()        # "amount: normalized_wasserstein_distance 0.31 > 0.1"
    stage_change: str = ""             # "Staging → Production", "new in Staging"
    url: str = ""
    breached_kinds: tuple[str, ...] = ()  # the kinds of the breached signals ("data_drift", "model_performance")
    metrics: tuple[str, ...] = ()      # the metrics named in `worst`, defined under the models

    @property
    def drifting(self) -> bool:
        """Breached by a drift signal, or by signals of unknown kind (Azure's breach tag names no kind)."""
        return self.drift == "breached" and (not self.breached_kinds or any(k in DRIFT_KINDS
                                                                             for k in self.breached_kinds))


@dataclass(frozen=True)
class FailedJob:
    name: str
    display_name: str
    ended_at: datetime | None
    error: str = ""
    url: str = ""


@dataclass(frozen=True)
class PendingApproval:
    id: int
    summary: str                       # "traffic endpoint fraud-api"
    requester: str
    expires_at: datetime
    expiring: bool                     # within the next day


@dataclass(frozen=True)
class RunningCompute:
    name: str
    type: str
    size: str
    nodes: int | None
    idle: bool


@dataclass(frozen=True)
class Digest:
    workspace: str
    environment: str
    now: datetime
    since: datetime | None             # the last digest in this chat (None: the first one)
    endpoints: tuple[EndpointHealth, ...] = ()
    models: tuple[ModelHealth, ...] = ()
    failed_jobs: tuple[FailedJob, ...] = ()
    approvals: tuple[PendingApproval, ...] = ()
    compute: tuple[RunningCompute, ...] = ()
    gaps: tuple[str, ...] = ()         # parts that could not be read ("compute: permission denied")
    late_since: datetime | None = None  # a scheduled digest sent late: when it was due
    schedule: str = ""                 # "0 9 * * 1-5 Europe/Berlin", for the footer
    audit_head: tuple[int, str] | None = None   # (records, head hash): an anchor kept outside the database
    posture: tuple[str, ...] = ()      # security checks that turned from pass to fail in the period (issue 22)


def attention(digest: Digest) -> list[str]:
    """What needs someone, most urgent first; empty when all is well."""
    items = []
    sick = [e for e in digest.endpoints if e.problems]
    if sick:
        items.append(_count(len(sick), "endpoint") + " unhealthy (" + ", ".join(e.name for e in sick[:3]) +
                     ("…" if len(sick) > 3 else "") + ")")
    drifting = [m for m in digest.models if m.drifting]
    if drifting:
        items.append(", ".join(sorted({m.name for m in drifting})[:3]) + " drifting")
    failing = [m for m in digest.models if m.drift == "breached" and not m.drifting]
    if failing:
        items.append(", ".join(sorted({m.name for m in failing})[:3]) + " past "
                     + ("their" if len({m.name for m in failing}) > 1 else "its") + " monitor thresholds")
    if digest.failed_jobs:
        items.append(_count(len(digest.failed_jobs), "job") + " failed")
    expiring = [a for a in digest.approvals if a.expiring]
    if expiring:
        items.append(_count(len(expiring), "approval") + " about to expire")
    idle = [c for c in digest.compute if c.idle]
    if idle:
        items.append(_count(len(idle), "idle compute target") + " still running")
    if digest.posture:
        items.append(_count(len(digest.posture), "security check") + " turned to fail")
    return items


def headline(digest: Digest) -> tuple[str, str]:
    items = attention(digest)
    blind = bool(digest.gaps) or any(e.unreadable for e in digest.endpoints)
    if items:
        return ("Needs attention: " + "; ".join(items) + "." +
                (" Some parts could not be read (see below)." if blind else "")), "Attention"
    if blind:
        return "Nothing needs attention in what I could read; some parts could not be read (see below).", "Warning"
    return "All healthy: nothing needs attention.", "Good"


def digest_card(digest: Digest) -> dict:
    """The digest as an Adaptive Card 1.5, at most MAX_CARD_BYTES."""
    limits = [MAX_ENDPOINTS, MAX_MODELS, MAX_JOBS, MAX_APPROVALS, MAX_COMPUTE]
    while True:
        built = _build(digest, *limits)
        if len(json.dumps(built, ensure_ascii=False).encode("utf-8")) <= MAX_CARD_BYTES or max(limits) <= 1:
            return built
        limits = [max(1, n - 1) for n in limits]


def _build(digest: Digest, n_endpoints: int, n_models: int, n_jobs: int, n_approvals: int, n_compute: int) -> dict:
    line, color = headline(digest)
    span = (f"Changes are since the last digest in this chat ({when(digest.since)})." if digest.since
            else "The first digest in this chat: changes show from the next one on.")
    body = [text(line, weight="Bolder", color=color)]
    if digest.late_since:
        body.append(text(f"Late: this digest was due at {when(digest.late_since)} (the bot was not running); "
                         "missed runs are not repeated.", subtle=True, spacing="None"))
    body.append(text(span, subtle=True, spacing="None"))

    body.append(section(f"Online endpoints ({len(digest.endpoints)})"))
    if not digest.endpoints:
        body.append(text("No online endpoints.", subtle=True))
    for endpoint in _worst_endpoints(digest.endpoints)[:n_endpoints]:
        body.extend(_endpoint(endpoint))
    body += _more(len(digest.endpoints) - n_endpoints, "endpoint", "endpoints")

    body.append(section(f"Models in Production and Staging ({len(digest.models)})"))
    if not digest.models:
        body.append(text("No model version is in Production or Staging.", subtle=True))
    for model in _worst_models(digest.models)[:n_models]:
        body.append(_model(model))
    body += _more(len(digest.models) - n_models, "model", "models --stage Production")

    body.append(section(f"Failed jobs ({len(digest.failed_jobs)})"))
    if not digest.failed_jobs:
        body.append(text("No job failed" + (" since the last digest." if digest.since else " in the last day."),
                         subtle=True))
    for job in digest.failed_jobs[:n_jobs]:
        label = f"[{job.name}]({job.url})" if job.url else job.name
        error = f": {plain(excerpt(job.error, 160))}" if job.error else ""
        body.append(text(f"✗ {label} ({plain(job.display_name) or 'job'}), ended {when(job.ended_at)}{error}"))
    body += _more(len(digest.failed_jobs) - n_jobs, "failed job", "jobs --status Failed")

    body.append(section(f"Approvals waiting ({len(digest.approvals)})"))
    if not digest.approvals:
        body.append(text("None.", subtle=True))
    for approval in digest.approvals[:n_approvals]:
        flag = " ⚠ expires soon" if approval.expiring else ""
        body.append(text(f"#{approval.id} {plain(approval.summary)}, asked by {plain(approval.requester)}; "
                         f"expires {when(approval.expires_at)}{flag}", color="Warning" if approval.expiring else None))
    body += _more(len(digest.approvals) - n_approvals, "approval", "approvals")

    running = sorted(digest.compute, key=lambda c: (not c.idle, c.name))
    body.append(section(f"Compute running ({len(running)})"))
    if not running:
        body.append(text("Nothing is running.", subtle=True))
    for compute in running[:n_compute]:
        nodes = f", {compute.nodes} node{'' if compute.nodes == 1 else 's'}" if compute.nodes is not None else ""
        idle = " — idle: no job on it, still billed" if compute.idle else ""
        body.append(text(f"{compute.name} ({compute.type} {compute.size}{nodes}){idle}",
                         color="Warning" if compute.idle else None))
    body += _more(len(running) - n_compute, "compute", "compute")

    if digest.posture:
        body.append(section(f"Security checks that turned to fail ({len(digest.posture)})"))
        body.extend(text(f"❌ {plain(line)}", color="Attention") for line in digest.posture[:MAX_POSTURE])
        body += _more(len(digest.posture) - MAX_POSTURE, "security check", "posture")

    if digest.gaps:
        body.append(section("Could not read"))
        body.extend(text(plain(gap), subtle=True) for gap in digest.gaps[:5])
    if digest.audit_head is not None:
        count, head = digest.audit_head
        body.append(text(f"Audit anchor: {count} records, head {head}. Kept outside the bot's database, it lets "
                         f"`audit verify --head {head}` show later that no record up to it was cut or rewritten.",
                         subtle=True, wrap=True, spacing="Medium"))
    if digest.schedule:
        body.append(text(f"Schedule: {digest.schedule}. `digest show` shows it, `digest off` stops it.",
                         subtle=True, spacing="Medium"))
    named = list(dict.fromkeys(m for model in _worst_models(digest.models)[:n_models] for m in model.metrics))
    if named:         # every figure shown is defined, as on the drift card; last, as the longest and least read
        body.append(text("Model figures: " + " ".join(f"{m}: {DEFINITIONS.get(m, 'as the monitor computes it')}."
                                                      for m in named) + " " + LEVEL_RULE,
                         subtle=True, size="Small", spacing="Small"))

    actions = []
    sick = [e for e in digest.endpoints if e.problems] or list(digest.endpoints)
    if sick:
        actions.append(button(f"Endpoint {sick[0].name}", "endpoint", sick[0].name))
    drifting = [m for m in digest.models if m.drift == "breached"]
    if drifting:
        actions.append(button(f"Drift of {drifting[0].name}", "drift", drifting[0].name))
    if digest.failed_jobs:
        actions.append(button("Failed jobs", "jobs", "--status", "Failed"))
    if digest.posture:
        actions.append(button("Security posture", "posture", "--workspace", digest.workspace))
    return card(f"Model health digest · {digest.now.strftime('%a %d %b %Y')}", body,
                subtitle=workspace_line(digest.workspace, digest.environment), actions=actions)


def _worst_endpoints(endpoints) -> list[EndpointHealth]:
    return sorted(endpoints, key=lambda e: (not e.problems, not e.unreadable, e.name))


def _worst_models(models) -> list[ModelHealth]:
    order = {"breached": 0, "unknown": 1, "ok": 2, "": 3}
    return sorted(models, key=lambda m: (order.get(m.drift, 3), not m.stage_change, m.stage != "Production", m.name))


def _endpoint(endpoint: EndpointHealth) -> list[dict]:
    name = f"[{endpoint.name}]({endpoint.url})" if endpoint.url else endpoint.name
    split = traffic_text(endpoint.traffic)
    mark = "⚠ " if endpoint.problems else ""
    out = [text(f"{mark}**{name}** — traffic {split}", spacing="Small",
                color="Attention" if endpoint.problems else None)]
    if endpoint.unreadable:
        out.append(text(f"Figures unavailable: {plain(endpoint.unreadable)}", subtle=True, spacing="None"))
        return out
    cells = [_figure("p50", endpoint.p50_ms, ms_text), _figure("p99", endpoint.p99_ms, ms_text),
             _figure("req/min", endpoint.rpm, "{:.0f}".format), _figure("5xx", endpoint.error_percent, "{:.2f}%".format)]
    out.append(columns(*cells))
    if endpoint.problems:
        out.append(text(" · ".join(endpoint.problems), color="Attention", spacing="None"))
    return out


def _figure(label: str, figure: Figure, show: Callable[[float], str]) -> list[dict]:
    value = "—" if figure.now is None else show(figure.now)
    lines = [text(label, subtle=True, spacing="None"), text(value, weight="Bolder", spacing="None")]
    change = change_text(figure)
    if change:
        lines.append(text(change, subtle=True, spacing="None"))
    series = [*figure.history, figure.now]
    if sum(v is not None for v in series) >= 2:
        lines.append(text(trend(series), spacing="None"))
    return lines


def trend(values) -> str:
    """One block per digest, scaled to the series' own range but never to less than TREND_SPAN of
    its highest value (centred), so a real swing fills the height and a few percent of noise stays
    near the middle; `·` where a digest had no figure."""
    known = [v for v in values if v is not None]
    if not known:
        return "·" * len(values)
    low, high = min(known), max(known)
    span = max(high - low, TREND_SPAN * abs(high))
    if high == low:                # nothing moved: a flat line at mid height
        return "".join("·" if v is None else BLOCKS[3] for v in values)
    floor = low - (span - (high - low)) / 2
    return "".join("·" if v is None else BLOCKS[min(len(BLOCKS) - 1, max(0, round((v - floor) / span * 7)))]
                   for v in values)


def change_text(figure: Figure) -> str:
    """"+12%" against the last digest ("new" when there was none before, "" when unknown)."""
    if figure.now is None or figure.before is None:
        return ""
    if figure.before == 0:
        return "±0" if figure.now == 0 else "up from 0"
    delta = (figure.now - figure.before) / abs(figure.before) * 100
    if abs(delta) < 0.5:
        return "±0%"
    return f"{'+' if delta > 0 else '−'}{abs(delta):.0f}%"


def _model(model: ModelHealth) -> dict:
    name = f"[{model.name}:{model.version}]({model.url})" if model.url else f"{model.name}:{model.version}"
    drift = {"breached": "⚠ drift detected", "ok": "no drift", "unknown": "drift unknown",
             "": "no monitor"}.get(model.drift, model.drift)
    others = [KIND_WORDS.get(k, k) for k in model.breached_kinds if k not in DRIFT_KINDS]
    if model.drift == "breached" and others:
        drift = ("⚠ drift detected, " if model.drifting else "⚠ ") + " and ".join(others) + " past threshold"
    parts = [f"**{name}** ({model.stage}) — {drift}"]
    if model.worst:
        parts.append("worst: " + plain("; ".join(model.worst)))
    if model.stage_change:
        parts.append(f"stage: {model.stage_change}")
    return text(" · ".join(parts), color="Attention" if model.drift == "breached" else None, spacing="Small")


def _more(rest: int, noun: str, command: str) -> list[dict]:
    if rest <= 0:
        return []
    return [text(f"… and {rest} more {noun}{'' if rest == 1 else 's'}: `{command}` lists them.", subtle=True)]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
