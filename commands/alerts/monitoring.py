"""Model monitoring commands: drift, monitors.

    drift fraud-model --window 14d      the latest run of the monitor watching fraud-model, per
                                        feature (worst first), with a trend over the window's runs;
                                        signal-wide figures (model performance, the NDCG of feature
                                        attribution drift) one metric a row, with the level in words
                                        and the change since the last run
    monitors                            every monitor: target, signals, thresholds, last outcome

Every figure is shown with its metric's name, and a legend gives each metric's definition (and
log base) from the drift engine's definitions, so a number is never shown without its meaning.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace

from adapters.azureml.monitoring import LOWER_IS_WORSE
from adapters.drift.definitions import DEFINITIONS, LEVEL_RULE, PRIMARY_METRIC, PSI, SHORT_NAMES, level_words, psi_band
from adapters.service import DriftReport, FeatureFigure, Monitor, MonitorRun, MonitorSignal, SignalReport
from commands.base.context import Context, Reply
from commands.base.registry import Arg, command
from commands.base.ui import (
    MAX_CARD_BYTES, MAX_ROWS, button, card, columns, facts, limited, plain, reply, section, text, when,
)

MAX_WINDOW_DAYS = 90
BLOCKS = "▁▂▃▄▅▆▇█"
SIGNAL_TITLES = {"data_drift": "Data drift", "prediction_drift": "Prediction drift", "data_quality": "Data quality",
                 "feature_attribution_drift": "Feature attribution drift", "model_performance": "Model performance",
                 "custom": "Custom signal"}
DRIFT_KINDS = ("data_drift", "prediction_drift")
IMPORTANCES = ("baseline_feature_importance", "production_feature_importance")   # the NDCG's inputs


def window_days(value: str) -> int:
    """`7d`, `7` or `7days`: a whole number of days from 1 to MAX_WINDOW_DAYS."""
    match = re.fullmatch(r"([0-9]{1,3})\s*(d|day|days)?", value.strip().lower())
    if not match or not 1 <= int(match[1]) <= MAX_WINDOW_DAYS:
        raise argparse.ArgumentTypeError(f"the window is a number of days such as 7d (1 to {MAX_WINDOW_DAYS}), "
                                         f"not '{value}'")
    return int(match[1])


# ---------------------------------------------------------------- small pieces


def sparkline(values: tuple[float | None, ...] | list[float | None], threshold: float | None = None) -> str:
    """One block per run (▁ to █), scaled from 0 (or the lowest value) to the highest value or the
    threshold, whichever is higher, so noise under a threshold stays low; a missing figure is `·`."""
    known = [v for v in values if v is not None]
    if not known:
        return "·" * len(values)
    low = min(0.0, *known)
    high = max(*known, threshold if threshold is not None else known[0])
    span = high - low
    out = []
    for value in values:
        if value is None:
            out.append("·")
        elif span <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int((value - low) / span * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out)


def figure_text(figure: FeatureFigure) -> str:
    """`NWD 0.164 > 0.1` (breaching) or `NWD 0.032 ≤ 0.1`; undefined figures say so."""
    short = SHORT_NAMES.get(figure.metric, figure.metric)
    if figure.value is None:
        return f"{short} undefined"
    if figure.threshold is None:
        return f"{short} {figure.value:.3g}"
    if figure.metric in LOWER_IS_WORSE:
        sign = "<" if figure.breached else "≥"
    else:
        sign = ">" if figure.breached else "≤"
    return f"{short} {figure.value:.3g} {sign} {figure.threshold:g}"


def rule_text(metric: str, threshold: float) -> str:
    return f"{SHORT_NAMES.get(metric, metric)} {'<' if metric in LOWER_IS_WORSE else '>'} {threshold:g}"


def outcome_text(run: MonitorRun | None) -> tuple[str, str | None]:
    """(words, colour) for a run's outcome."""
    if run is None:
        return "not run yet", None
    if run.breached:        # Azure's breach tag, also on a run whose pipeline ended Failed
        return "threshold breached" + (f": {plain(', '.join(run.breached_signals))}" if run.breached_signals else ""), \
            "Attention"
    if run.status != "Completed":
        return f"{run.status}" + (f": {plain(run.message)}" if run.message else ""), (
            "Attention" if run.status == "Failed" else None)
    if run.breached is None:
        return "completed (outcome not reported)", None
    return "no threshold breached", "Good"


def target_text(monitor: Monitor) -> str:
    parts = [p for p in (monitor.model, f"on {monitor.endpoint}" if monitor.endpoint else "") if p]
    return " ".join(parts) or "—"


def severity(figure: FeatureFigure) -> float:
    """How far past its threshold a figure is, whichever way its metric breaches (> 1: breached)."""
    if figure.value is None or not figure.threshold:
        return -1.0
    if figure.metric in LOWER_IS_WORSE:
        return figure.threshold / max(figure.value, 1e-12)
    return figure.value / figure.threshold


# ---------------------------------------------------------------- drift card


def _by_feature(signal: SignalReport) -> list[tuple[str, list[FeatureFigure]]]:
    """The signal's figures grouped by feature, worst feature first (breached, then by how far past)."""
    grouped: dict[str, list[FeatureFigure]] = {}
    for figure in signal.figures:
        grouped.setdefault(figure.feature, []).append(figure)

    def key(item: tuple[str, list[FeatureFigure]]) -> tuple[bool, float]:
        figures = item[1]
        return (not any(f.breached for f in figures), -max(severity(f) for f in figures))

    return sorted(grouped.items(), key=key)


def _headline(figures: list[FeatureFigure], kind: str) -> FeatureFigure:
    """The figure a drift signal judges the feature by (NWD or JSD), else the worst one."""
    data_type = figures[0].data_type
    wanted = PRIMARY_METRIC.get(data_type) if kind in DRIFT_KINDS else None
    for figure in figures:
        if figure.metric == wanted:
            return figure
    return max(figures, key=severity)


def _feature_row(feature: str, figures: list[FeatureFigure], kind: str) -> dict:
    head = _headline(figures, kind)
    others = [f for f in figures if f is not head and f.metric != PSI]
    psi = next((f for f in figures if f.metric == PSI), None)
    name = (f"**{plain(feature)}**" if feature else "**whole signal**") + (
        f" ({head.data_type})" if head.data_type else "")
    detail = " · ".join(figure_text(f) for f in others)
    cells = [[text(name), *([text(detail, subtle=True, spacing="None")] if detail else [])],
             text(figure_text(head), color="Attention" if head.breached else None),
             text(sparkline(head.history, head.threshold), subtle=True)]
    if kind in DRIFT_KINDS:
        cells.append(text(f"PSI {psi.value:.3g} {psi_band(psi.value)}" if psi and psi.value is not None else "PSI —",
                          color="Attention" if psi and psi.breached else None))
    widths = ["stretch", "auto", "auto"] + (["auto"] if kind in DRIFT_KINDS else [])
    return columns(*cells, widths=widths)


def _signal_block(signal: SignalReport) -> list[dict]:
    title = SIGNAL_TITLES.get(signal.kind, signal.kind)
    state = {True: "breached", False: "within thresholds", None: "outcome not known"}[signal.breached]
    block = [section(f"{title} ({plain(signal.name)}): {state}")]
    if signal.breached:
        block[0]["color"] = "Attention"
    importances = [f for f in signal.figures if f.metric in IMPORTANCES and f.feature]
    figures = [f for f in signal.figures if f not in importances]
    if figures and all(not f.feature for f in figures):               # signal-wide: performance, NDCG
        block += limited(worst_metrics(figures), _metric_row, noun="metric", limit=MAX_ROWS)
        if importances:
            block.append(_importance_ranking(importances))
    elif signal.figures:
        block += limited(_by_feature(signal), lambda item: _feature_row(item[0], item[1], signal.kind),
                         noun="feature", limit=MAX_ROWS)
    return block


def _importance_ranking(figures: list[FeatureFigure]) -> dict:
    """"Importance, reference → current: amount 0.56 → 0.09 (rank 1 → 3), ...", by current rank."""
    by_feature: dict[str, dict[str, float | None]] = {}
    for f in figures:
        by_feature.setdefault(f.feature, {})[f.metric] = f.value

    def ranks(metric: str) -> dict[str, int]:
        known = sorted((n for n in by_feature if by_feature[n].get(metric) is not None),
                       key=lambda n: (-by_feature[n][metric], n))
        return {n: i + 1 for i, n in enumerate(known)}

    before, now = ranks(IMPORTANCES[0]), ranks(IMPORTANCES[1])
    parts = []
    for name in sorted(by_feature, key=lambda n: (now.get(n, len(now) + 1), n)):
        ref, cur = by_feature[name].get(IMPORTANCES[0]), by_feature[name].get(IMPORTANCES[1])
        shown = " → ".join("—" if v is None else f"{v:.2f}" for v in (ref, cur))
        moved = f" (rank {before[name]} → {now[name]})" if name in before and name in now and \
            before[name] != now[name] else ""
        parts.append(f"{plain(name)} {shown}{moved}")
    return text("Importance, reference → current: " + ", ".join(parts[:MAX_ROWS]), subtle=True, size="Small")


def worst_metrics(figures) -> list[FeatureFigure]:
    """Breached first, then by how far past (or short of) its threshold; the others in their order."""
    return sorted(figures, key=lambda f: (not f.breached, -severity(f) if f.breached else 0))


def change_text(figure: FeatureFigure) -> str:
    """"+0.012 since the last run" from the figure's history ("first run" without an earlier one)."""
    earlier = [v for v in figure.history[:-1] if v is not None]
    if figure.value is None or not earlier:
        return "first run" if figure.value is not None and len(figure.history) <= 1 else ""
    delta = figure.value - earlier[-1]
    return "unchanged since the last run" if abs(delta) < 5e-4 else f"{delta:+.3f} since the last run"


def _metric_row(figure: FeatureFigure) -> dict:
    """One signal-wide figure (a performance metric, the NDCG): value against its threshold, level in
    words, change since the last run, trend."""
    name = SHORT_NAMES.get(figure.metric, figure.metric)
    words = " · ".join(p for p in (level_words(figure.metric, figure.value, figure.threshold),
                                    change_text(figure)) if p)
    return columns([text(f"**{plain(name)}**"), text(words, subtle=True, spacing="None")],
                   text(figure_text(figure), color="Attention" if figure.breached else None),
                   text(sparkline(figure.history, figure.threshold), subtle=True),
                   widths=["stretch", "auto", "auto"])


def _legend(report: DriftReport, points: int | None = None) -> list[dict]:
    metrics = sorted({f.metric for s in report.signals for f in s.figures} - set(IMPORTANCES))   # NDCG's inputs:
    if not metrics:                                                                 # its definition says what
        return []
    lines = [f"**{SHORT_NAMES.get(m, m)}** = `{m}`: {DEFINITIONS.get(m, 'as the monitor computes it')}." for m in metrics]
    span = f"the last {points} runs" if points is not None else f"the last {report.window_days} days"
    lines.append(f"Trend: one block per run over {span}, oldest first, scaled from 0 "
                 "to the highest figure or the threshold.")
    if any(not f.feature for s in report.signals for f in s.figures):
        lines.append(LEVEL_RULE)
    return [section("What the figures mean"), *[text(line, subtle=True, size="Small") for line in lines]]


TREND_POINTS = (None, 30, 14, 7, 3)   # the trend is shortened to the last N runs until the card fits Teams


def drift_card(report: DriftReport, *, workspace: str) -> dict:
    """The drift card, under MAX_CARD_BYTES: the trends are cut to fewer runs until it fits."""
    for points in TREND_POINTS:
        built = _drift_card(_trimmed(report, points), workspace, points)
        if len(json.dumps(built).encode()) < MAX_CARD_BYTES:
            break
    return built


def _trimmed(report: DriftReport, points: int | None) -> DriftReport:
    if points is None:
        return report
    return replace(report, signals=tuple(replace(s, figures=tuple(replace(f, history=f.history[-points:])
                                                                  for f in s.figures)) for s in report.signals))


def _drift_card(report: DriftReport, workspace: str, points: int | None) -> dict:
    monitor = report.monitor
    outcome, colour = outcome_text(report.latest)
    breached_runs = sum(1 for r in report.runs if r.breached)
    body = [text(f"Latest run: {outcome}", weight="Bolder", color=colour),
            facts([("Monitor", monitor.name), ("Model", monitor.model), ("Deployment", monitor.endpoint),
                   ("Latest run", when(report.latest.started_at) if report.latest else "—"),
                   ("Runs", f"{len(report.runs)} in the last {report.window_days} days, {breached_runs} breached"),
                   ("Schedule", monitor.schedule)])]
    if report.figures_source and any(s.figures for s in report.signals):
        body.append(text(f"Figures {report.figures_source}.", subtle=True, size="Small"))
    if report.figures_note:
        body.append(text(plain(report.figures_note), subtle=True))
    for signal in report.signals:
        body += _signal_block(signal)
    body += _legend(report, points)
    actions = [button("Refresh", "drift", monitor.name, "--window", f"{report.window_days}d"),
               button("All monitors", "monitors")]
    if report.studio_url:
        actions.append({"type": "Action.OpenUrl", "title": "Open in Azure ML studio", "url": report.studio_url})
    title = f"Drift of {monitor.model_name or monitor.name}" + (f" on {monitor.endpoint}" if monitor.endpoint else "")
    return card(title, body, subtitle=workspace, actions=actions)


# ---------------------------------------------------------------- monitors card


def signal_text(signal: MonitorSignal) -> str:
    types: dict[tuple[str, float], list[str]] = {}
    for t in signal.thresholds:
        types.setdefault((t.metric, t.threshold), []).append(t.data_type)
    rules = [rule_text(metric, threshold) + (f" ({kinds[0]})" if len(kinds) == 1 and kinds[0] else "")
             for (metric, threshold), kinds in types.items()]
    features = plain(", ".join(signal.features)) if signal.features else "all features"
    title = SIGNAL_TITLES.get(signal.kind, signal.kind)
    if signal.kind == "model_performance":          # judged on the model's outputs and labels, not on features
        return f"{title} `{plain(signal.name)}`: {', '.join(rules) or 'default thresholds'}"
    return f"{title} `{plain(signal.name)}`: {', '.join(rules) or 'default thresholds'} · {features}"


def monitor_row(monitor: Monitor) -> dict:
    outcome, colour = outcome_text(monitor.last_run)
    when_ = when(monitor.last_run.started_at) if monitor.last_run else ""
    head = f"**{monitor.name}**" + ("" if monitor.enabled else " (disabled)")
    lines = [text(head), text(f"{target_text(monitor)} · {monitor.schedule}", subtle=True, spacing="None")]
    # the outcome before the signals: it is what a reader wants first (and it stays in a cut fallback text)
    lines.append(text(f"Last run {when_}: {outcome}" if when_ else f"Last run: {outcome}", color=colour,
                      spacing="None"))
    lines += [text(signal_text(s), size="Small", spacing="None") for s in monitor.signals]
    return columns(lines, {"type": "ActionSet", "actions": [button("Drift", "drift", monitor.name)]},
                   widths=["stretch", "auto"])


def monitors_card(monitors: list[Monitor], *, workspace: str) -> dict:
    breached = sum(1 for m in monitors if m.last_run and m.last_run.breached)
    summary = text(f"{len(monitors)} monitor{'s' if len(monitors) != 1 else ''}, {breached} breached at the last run.",
                   subtle=True) if monitors else text("", subtle=True)
    body = ([summary] if monitors else []) + limited(monitors, monitor_row, noun="monitor", limit=10)
    return card("Model monitors", body, subtitle=workspace)


# ---------------------------------------------------------------- commands


@command("drift", Arg("target", help="a model, endpoint or monitor name", metavar="model/endpoint"),
         Arg("--window", type=window_days, default=7, help="how far back the trend goes (default 7d)",
             metavar="DAYS"),
         phrases=("drift", "drifting", "data drift", "has drifted", "distribution shift", "feature drift",
                  "is drifting", "what did the monitor find", "monitor findings", "drift of", "model health",
                  "skew", "data quality", "prediction drift"),
         summary="Show what a model's monitor found: drift, data quality, feature attribution and performance, "
                 "worst first, with trends.",
         example="drift fraud-model --window 7d", common=True)
async def drift(ctx: Context, target: str, window: int) -> Reply:
    report = await ctx.ml.drift_report(target, window)
    return reply(drift_card(report, workspace=ctx.where))


@command("monitors",
         phrases=("monitors", "list monitors", "what monitors", "which monitors", "monitoring", "model monitoring",
                  "what is monitored", "monitor outcomes", "signals", "thresholds"),
         summary="List model monitors: signals, thresholds and last outcome.", example="monitors")
async def monitors(ctx: Context) -> Reply:
    return reply(monitors_card(await ctx.ml.list_monitors(), workspace=ctx.where))
