"""`compare`: two versions of a model side by side (the seed's "evaluate vs champion").

`compare_versions(candidate, baseline)` is pure and is what a promotion's approval card can show too.
Which way is better depends on the metric: `direction(name)` knows the usual ones (auc, accuracy,
f1, precision, recall, r2 ... higher; rmse, mae, mse, log_loss, latency ... lower); for any other
metric the difference is shown without a verdict rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from adapters.service import ModelVersion
from commands.base.context import Context, Reply
from commands.resources.models import HIDDEN, stage_label
from commands.base.registry import Arg, UsageError, command
from commands.base.studio import open_in_studio, studio
from commands.base.ui import button, card, columns, facts, plain, reply, section, text, when

HIGHER_IS_BETTER = ("auc", "roc_auc", "auroc", "auprc", "pr_auc", "average_precision", "accuracy",
                    "balanced_accuracy", "f1", "f1_score", "f1_macro", "f1_micro", "f1_weighted", "precision",
                    "recall", "r2", "r2_score", "explained_variance", "ks", "gini", "map", "ndcg", "iou", "dice",
                    "bleu", "rouge", "specificity", "sensitivity", "tpr", "mcc", "kappa", "throughput")
LOWER_IS_BETTER = ("rmse", "mae", "mse", "msle", "rmsle", "mape", "smape", "wape", "log_loss", "logloss",
                   "cross_entropy", "loss", "brier", "brier_score", "error_rate", "fpr", "fnr", "perplexity",
                   "latency", "latency_ms", "p50_latency", "p95_latency", "p99_latency", "wer", "cer")
_PREFIX = re.compile(r"^(val|valid|validation|test|eval|holdout|train|training|normalized|norm)[_\-.]")
Direction = Literal["higher", "lower", ""]


def direction(metric: str) -> Direction:
    """'higher', 'lower', or '' when the metric's name does not say."""
    name = metric.strip().lower().replace("-", "_").replace(" ", "_")
    while _PREFIX.match(name):
        name = _PREFIX.sub("", name, count=1)
    if name in HIGHER_IS_BETTER:
        return "higher"
    if name in LOWER_IS_BETTER or "latency" in name or name.endswith("_error") or name.endswith("_loss"):
        return "lower"
    return ""


@dataclass(frozen=True)
class MetricRow:
    metric: str
    candidate: float | None
    baseline: float | None
    difference: float | None        # candidate - baseline
    better: Literal["candidate", "baseline", "equal", ""]   # "" when unknown (direction or a value missing)


def compare_versions(candidate: ModelVersion, baseline: ModelVersion) -> list[MetricRow]:
    """Every metric either version has, by name; the candidate's difference and which one is better."""
    rows = []
    for metric in sorted(set(candidate.metrics) | set(baseline.metrics)):
        a, b = candidate.metrics.get(metric), baseline.metrics.get(metric)
        difference = a - b if a is not None and b is not None else None
        better: Literal["candidate", "baseline", "equal", ""] = ""
        way = direction(metric)
        if difference is not None and way:
            if abs(difference) <= 1e-12 * max(1.0, abs(a or 0.0), abs(b or 0.0)):
                better = "equal"
            elif (difference > 0) == (way == "higher"):
                better = "candidate"
            else:
                better = "baseline"
        rows.append(MetricRow(metric, a, b, difference, better))
    return rows


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4g}"


def compare_card(candidate: ModelVersion, baseline: ModelVersion, *, workspace: str,
                 links: tuple[str | None, str | None] = (None, None)) -> dict:
    rows = compare_versions(candidate, baseline)
    a, b = f"v{candidate.version}", f"v{baseline.version}"
    label = {"candidate": a, "baseline": b, "equal": "equal", "": "—"}
    color = {"candidate": "Good", "baseline": "Attention"}

    def row(cells: list[str], *, bold: bool = False, tint: str | None = None) -> dict:
        blocks = [text(f"**{c}**" if bold else c, color=tint if i == 4 else None, spacing="None")
                  for i, c in enumerate(cells)]
        return columns(*blocks, widths=["stretch", "auto", "auto", "auto", "auto"])

    wins = sum(r.better == "candidate" for r in rows)
    losses = sum(r.better == "baseline" for r in rows)
    judged = sum(r.better != "" for r in rows)
    if not rows:
        verdict = "Neither version has metrics to compare."
    elif not judged:
        verdict = "No metric with a known direction: compare the figures yourself."
    else:
        verdict = f"{a} is better on {wins} of {judged} metric{'s' if judged != 1 else ''}, {b} on {losses}."
    body = [text(verdict, weight="Bolder", color="Good" if judged and wins > losses else
                 "Attention" if losses > wins else None),
            row(["metric", a, b, "difference", "better"], bold=True)]
    body += [row([r.metric, _number(r.candidate), _number(r.baseline), _signed(r.difference), label[r.better]],
                 tint=color.get(r.better)) for r in rows]
    unknown = [r.metric for r in rows if not direction(r.metric)]
    if unknown:
        body.append(text(f"No verdict for {', '.join(unknown)}: the bot does not know whether higher or lower is "
                         f"better there.", subtle=True))
    body += [section("Versions"), facts([
        ("Stage", f"{a}: {_stage(candidate)} · {b}: {_stage(baseline)}"),
        ("Training job", f"{a}: {candidate.job or '—'} · {b}: {baseline.job or '—'}"),
        ("Created", f"{a}: {when(candidate.created_at)} · {b}: {when(baseline.created_at)}"),
        ("By", f"{a}: {plain(candidate.created_by) or '—'} · {b}: {plain(baseline.created_by) or '—'}"),
    ])]
    keys = sorted(set(candidate.tags) | set(baseline.tags))
    if keys:
        body += [section("Tags"), facts(
            (plain(key) + (" (differs)" if candidate.tags.get(key) != baseline.tags.get(key) else ""),
             f"{a}: {plain(candidate.tags.get(key, '—'))} · {b}: {plain(baseline.tags.get(key, '—'))}")
            for key in keys)]
    actions = [button(f"Model {a}", "model", candidate.ref), button(f"Model {b}", "model", baseline.ref)]
    actions += open_in_studio(links[0], f"{a} in studio") + open_in_studio(links[1], f"{b} in studio")
    return card(f"{candidate.name}: {a} vs {b}", body, subtitle=workspace, actions=actions)


def _stage(model: ModelVersion) -> str:
    return f"{stage_label(model.stage)}, {HIDDEN}" if model.archived else stage_label(model.stage)


async def _in_stage(ctx: Context, name: str, stage: str, usage: str) -> ModelVersion:
    found = await ctx.ml.list_models(name, stage)
    if not found:
        raise UsageError(f"{name} has no version in {stage}. Name the versions instead: `{usage}`.")
    return found[0]


@command("compare", Arg("ref", help="the candidate: a model, or model:version", metavar="model[:version]"),
         Arg("baseline", nargs="?", help="the version to compare with (default: the one in Production)",
             metavar="version"),
         phrases=("compare", "versus", "vs", "side by side", "which is better", "better than",
                  "difference between", "candidate against champion", "challenger against champion",
                  "how does compare"),
         summary="Compare two versions of a model: metrics side by side, which is better, tags and training job "
                 "(default: the Staging candidate against the Production champion).",
         example="compare fraud-model:4 3")
async def compare(ctx: Context, ref: str, baseline: str | None) -> Reply:
    name, _, version = ref.partition(":")
    if not name or (ref.endswith(":") and not version):
        raise UsageError(f"'{ref}' is not a model reference. Usage: `compare model[:version] [version]`, "
                         f"e.g. `compare fraud-model:4 3`, or `compare fraud-model` for Staging vs Production.")
    baseline = (baseline or "").removeprefix(f"{name}:").lstrip("v") or None
    usage = f"compare {name}:‹candidate› ‹baseline›"
    if version:
        candidate_model = await ctx.ml.get_model(name, version)
    else:
        candidate_model = await _in_stage(ctx, name, "Staging", usage)
    if baseline:
        baseline_model = await ctx.ml.get_model(name, baseline)
    else:
        baseline_model = await _in_stage(ctx, name, "Production", usage)
    if candidate_model.version == baseline_model.version:
        raise UsageError(f"That compares {name} v{candidate_model.version} with itself. Name two versions: `{usage}`.")
    links = (None, None)
    site = studio(ctx)
    if site:
        links = (site.model(name, candidate_model.version), site.model(name, baseline_model.version))
    return reply(compare_card(candidate_model, baseline_model, workspace=ctx.where, links=links))

