"""Model monitoring commands: drift, monitors.

    drift fraud-model --window 14d      the latest run of the monitor watching fraud-model, per
                                        feature (worst first), with a trend over the window's runs
    monitors                            every monitor: target, signals, thresholds, last outcome

Every figure is shown with its metric's name, and a legend gives each metric's definition (and
log base) from the drift engine's definitions, so a number is never shown without its meaning.
"""

from __future__ import annotations

import argparse
import re

from adapters.azure_monitoring import LOWER_IS_WORSE
from adapters.drift.definitions import DEFINITIONS, PRIMARY_METRIC, PSI, SHORT_NAMES, psi_band
from adapters.service import DriftReport, FeatureFigure, Monitor, MonitorRun, MonitorSignal, SignalReport
from commands.context import Context, Reply
from commands.registry import Arg, command
from commands.ui import MAX_ROWS, button, card, columns, facts, limited, plain, reply, section, text, when

MAX_WINDOW_DAYS = 90
BLOCKS = "▁▂▃▄▅▆▇█"
SIGNAL_TITLES = {"data_drift": "Data drift", "prediction_drift": "Prediction drift", "data_quality": "Data quality",
                 "feature_attribution_drift": "Feature attribution drift", "model_performance": "Model performance",
                 "custom": "Custom signal"}
DRIFT_KINDS = ("data_drift", "prediction_drift")


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


def _severity(figure: FeatureFigure) -> float:
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
        return (not any(f.breached for f in figures), -max(_severity(f) for f in figures))

    return sorted(grouped.items(), key=key)


def _headline(figures: list[FeatureFigure], kind: str) -> FeatureFigure:
    """The figure a drift signal judges the feature by (NWD or JSD), else the worst one."""
    data_type = figures[0].data_type
    wanted = PRIMARY_METRIC.get(data_type) if kind in DRIFT_KINDS else None
    for figure in figures:
        if figure.metric == wanted:
            return figure
    return max(figures, key=_severity)


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
    if signal.figures:
        block += limited(_by_feature(signal), lambda item: _feature_row(item[0], item[1], signal.kind),
                         noun="feature", limit=MAX_ROWS)
    return block


def _legend(report: DriftReport) -> list[dict]:
    metrics = sorted({f.metric for s in report.signals for f in s.figures})
    if not metrics:
        return []
    lines = [f"**{SHORT_NAMES.get(m, m)}** = `{m}`: {DEFINITIONS.get(m, 'as the monitor computes it')}." for m in metrics]
    lines.append(f"Trend: one block per run over the last {report.window_days} days, oldest first, scaled from 0 "
                 "to the highest figure or the threshold.")
    return [section("What the figures mean"), *[text(line, subtle=True, size="Small") for line in lines]]


def drift_card(report: DriftReport, *, workspace: str) -> dict:
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
    body += _legend(report)
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
    return f"{title} `{plain(signal.name)}`: {', '.join(rules) or 'default thresholds'} · {features}"


def monitor_row(monitor: Monitor) -> dict:
    outcome, colour = outcome_text(monitor.last_run)
    when_ = when(monitor.last_run.started_at) if monitor.last_run else ""
    head = f"**{monitor.name}**" + ("" if monitor.enabled else " (disabled)")
    lines = [text(head), text(f"{target_text(monitor)} · {monitor.schedule}", subtle=True, spacing="None")]
    lines += [text(signal_text(s), size="Small", spacing="None") for s in monitor.signals]
    lines.append(text(f"Last run {when_}: {outcome}" if when_ else f"Last run: {outcome}", color=colour,
                      spacing="Small"))
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
         summary="Show what a model's monitor found: per-feature drift, worst first, with trends.",
         example="drift fraud-model --window 7d")
async def drift(ctx: Context, target: str, window: int) -> Reply:
    report = await ctx.ml.drift_report(target, window)
    return reply(drift_card(report, workspace=ctx.where))


@command("monitors",
         phrases=("monitors", "list monitors", "what monitors", "which monitors", "monitoring", "model monitoring",
                  "what is monitored", "monitor outcomes", "signals", "thresholds"),
         summary="List model monitors: signals, thresholds and last outcome.", example="monitors")
async def monitors(ctx: Context) -> Reply:
    return reply(monitors_card(await ctx.ml.list_monitors(), workspace=ctx.where))
