"""A `DriftReport` as a plain-text table for a terminal: worst first, every metric named.

Columns use short headers; the legend under the table gives each one's Azure ML metric name,
its definition (with the log base) and its threshold, so no figure stands unexplained.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from adapters.drift.definitions import (
    ALL_METRICS,
    DATA_QUALITY_METRICS,
    DEFINITIONS,
    PRIMARY_METRIC,
    PSI,
    SHORT_NAMES,
    breach_rule,
)
from adapters.drift.results import DriftReport, FeatureDrift, MetricResult

if TYPE_CHECKING:
    from adapters.drift.files import ModelSignals

NOT_APPLICABLE = "-"
UNDEFINED = "n/a"
WIDTH = 100


def render_table(report: DriftReport, reference_label: str = "reference", current_label: str = "current") -> str:
    used = [name for name in ALL_METRICS if any(name in f.metrics for f in report.features)]
    header = ["feature", "kind", "drift"] + [SHORT_NAMES[name] for name in used]
    rows = [_row(feature, used) for feature in report.features]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [_title(report, reference_label, current_label), ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
              for line in [header, *rows]]
    lines += ["", f"* past its threshold   {NOT_APPLICABLE} not computed for this kind   "
                  f"{UNDEFINED} undefined (see notes)"]
    lines += _legend(report, used)
    notes = _notes(report.features)
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)


def _title(report: DriftReport, reference_label: str, current_label: str) -> str:
    rule = " and ".join(f"{kind} {metric} {breach_rule(metric, report.thresholds)}"
                        for kind, metric in PRIMARY_METRIC.items())
    return (f"Drift of {current_label} ({report.current_rows:,} rows) against {reference_label} "
            f"({report.reference_rows:,} rows): {len(report.drifted)} of {len(report.features)} "
            f"feature{'s' if len(report.features) != 1 else ''} drifted\n"
            f"A feature drifts, as in Azure ML's data drift signal, when {rule}.")


def _row(feature: FeatureDrift, used: list[str]) -> list[str]:
    cells = [feature.name, feature.kind, "DRIFT" if feature.drifted else "no"]
    for name in used:
        metric = feature.metrics.get(name)
        cells.append(NOT_APPLICABLE if metric is None else _cell(metric))
    return cells


def _cell(metric: MetricResult) -> str:
    if metric.value is None:
        return UNDEFINED
    text = _percent(metric.value) if metric.name in DATA_QUALITY_METRICS else _number(metric.value)
    if metric.breached:
        text += "*"
    if metric.name == PSI:
        text += f" {metric.band}"
    return text


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-4:
        return f"{value:.1e}"
    return f"{value:.4f}"


def _percent(value: float) -> str:
    if 0 < value < 0.0001:
        return "<0.01%"
    return f"{value * 100:.2f}%"


def _legend(report: DriftReport, used: list[str]) -> list[str]:
    lines = [""]
    pad = max(len(SHORT_NAMES[name]) for name in used) + 2
    for name in used:
        text = f"{name}: {DEFINITIONS[name]}. Threshold: {breach_rule(name, report.thresholds)}."
        wrapped = textwrap.wrap(text, width=WIDTH - pad)
        lines.append(SHORT_NAMES[name].ljust(pad) + wrapped[0])
        lines += [" " * pad + rest for rest in wrapped[1:]]
    return lines


def _notes(features: list[FeatureDrift]) -> list[str]:
    lines = []
    for feature in features:
        for note in feature.notes:
            lines.append(f"  {feature.name}: {note}")
        reasons: dict[str, list[str]] = {}
        for metric in feature.metrics.values():
            if metric.value is None:
                reasons.setdefault(metric.undefined_reason or "undefined", []).append(metric.name)
        for reason, names in reasons.items():
            lines.append(f"  {feature.name}: {', '.join(names)} undefined: {reason}")
    return lines


def render_model_signals(signals: "ModelSignals", reference_label: str = "reference",
                         current_label: str = "current") -> str:
    """Model performance on both files (the current one judged by its thresholds), then the feature
    attribution drift with both importance rankings; each figure's definition in a legend."""
    ref, cur = signals.reference, signals.current
    how = f" ({cur.averaging})" if cur.averaging else ""
    lines = [f"Model performance, {cur.task}{how}: {current_label} ({cur.rows:,} rows) against "
             f"{reference_label} ({ref.rows:,} rows)"]
    header = ["metric", "reference", "current", "change", "threshold"]
    rows = []
    for name, metric in cur.metrics.items():
        before = ref.metrics[name].value
        change = NOT_APPLICABLE if metric.value is None or before is None else f"{metric.value - before:+.4f}"
        rows.append([SHORT_NAMES[name], UNDEFINED if before is None else _number(before), _cell(metric), change,
                     metric.rule])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    attribution = signals.attribution
    metric = attribution.metric
    lines += ["", f"Feature attribution drift: {SHORT_NAMES[metric.name]} {_cell(metric)} "
                  f"(threshold {metric.rule}; importance against {attribution.target or 'the labels'})"]
    if attribution.reference:
        lines.append("  reference ranking: " + ", ".join(f"{n} {attribution.reference[n]:.3f}"
                                                         for n in attribution.ranking("reference")))
        lines.append("  current ranking:   " + ", ".join(f"{n} {attribution.current[n]:.3f}"
                                                         for n in attribution.ranking("current")))
    lines.append("")
    pad = max(len(SHORT_NAMES[name]) for name in [*cur.metrics, metric.name]) + 2
    for name in [*cur.metrics, metric.name]:
        wrapped = textwrap.wrap(f"{name}: {DEFINITIONS[name]}.", width=WIDTH - pad)
        lines.append(SHORT_NAMES[name].ljust(pad) + wrapped[0])
        lines += [" " * pad + rest for rest in wrapped[1:]]
    notes = [f"  {label}: {note}" for label, report in ((reference_label, ref), (current_label, cur))
             for note in report.notes]
    notes += [f"  {SHORT_NAMES[m.name]} undefined: {m.undefined_reason}"
              for m in [*cur.metrics.values(), metric] if m.value is None]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines)
