"""The alert card: a pure function of the event, its alert's stored state and the time.

    alert_card(event, state, now, rollback_to=None) -> Adaptive Card 1.5 dict

It shows the signal and its monitor, per-feature figures against their thresholds (worst first,
each metric named with its definition and log base, its level in words and its change since the
monitor's previous run when known), the PSI band where a PSI figure is there, a small trend
over the alert's recent firings, links to the studio or portal, and the buttons
Rollback (`rollback <endpoint> --to <rollback_to>`, only when the caller found a traffic change of
the endpoint to undo: `rollback_to` is its number in the traffic history), Retrain
(`retrain <model>`), Acknowledge (`acknowledge <id>`) and Snooze 24 h (`snooze <id>`). Buttons
carry ids only; every click is re-checked by its command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.azure_monitoring import LOWER_IS_WORSE, breach_sign
from adapters.drift.definitions import DEFINITIONS, LEVEL_RULE, SHORT_NAMES, level_words, psi_band
from adapters.events import FIRED, RESOLVED, Event, Figure
from commands.ui import Element, button, card, columns, facts, plain, section, text, when

MAX_FEATURES = 10
SPARKS = "▁▂▃▄▅▆▇█"
SEVERITY_WORDS = {"Sev0": "critical", "Sev1": "error", "Sev2": "warning", "Sev3": "informational",
                  "Sev4": "verbose"}


@dataclass(frozen=True)
class AlertState:
    """What storage knows of the alert across its firings (adapters.storage.alerts.Alert, trimmed)."""

    id: int
    status: str
    fired_count: int
    first_at: datetime
    history: tuple[float, ...] = ()
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    snoozed_by: str = ""
    snoozed_until: datetime | None = None


def alert_card(event: Event, state: AlertState, now: datetime, rollback_to: int | None = None) -> dict[str, Any]:
    resolved = state.status == RESOLVED
    icon = "✅" if resolved else ("🔴" if event.severity in ("Sev0", "Sev1") else "🟠") if state.status == FIRED \
        else "ℹ️"
    title = f"{icon} {'Resolved: ' if resolved else ''}{plain(event.title)}"
    where = " · ".join(p for p in (f"Workspace {plain(event.workspace)}" if event.workspace else "",
                                   f"alert #{state.id}") if p)
    body: list[Element] = []
    body.append(facts(_headline(event, state, now)))
    if event.summary:
        body.append(text(plain(event.summary), subtle=True))
    figures = worst_first(event.figures)
    if figures:
        signal_wide = all(not f.feature for f in figures)        # model performance, attribution (NDCG)
        body.append(section(("Per metric, worst first" if signal_wide else "Per feature, worst first")
                            if event.kind == "drift" else "Condition"))
        body.append(_figure_header())
        body += [_figure_row(f) for f in figures[:MAX_FEATURES]]
        if len(figures) > MAX_FEATURES:
            body.append(text(f"… and {len(figures) - MAX_FEATURES} more", subtle=True))
    elif event.kind == "drift":
        body.append(text("Per-feature figures could not be read for this run (they depend on the monitoring "
                         "components' format); the outcome above is what Azure ML reported.", subtle=True))
    trend = sparkline(state.history)
    if trend:
        body.append(text(f"Trend over the last {len(state.history)} firings: {trend}", spacing="Small"))
    body += _legend(figures)                  # last: the longest part, and the first a cut fallback text loses
    actions: list[Element] = [{"type": "Action.OpenUrl", "title": title_, "url": url}
                              for title_, url in event.links[:2] if url.startswith("https://")]
    if not resolved and event.kind in ("drift", "alerts", "jobs"):
        if event.endpoint and event.kind != "jobs" and rollback_to is not None:
            scope = ("--workspace", event.workspace) if event.workspace else ()
            actions.append(button("Rollback", "rollback", event.endpoint, "--to", str(rollback_to), *scope,
                                  style="destructive"))
        if event.model and event.kind != "jobs":
            actions.append(button("Retrain", "retrain", event.model))
        if not state.acknowledged_by:
            actions.append(button("Acknowledge", "acknowledge", str(state.id), refresh=True))   # edits this card
        if not (state.snoozed_until and state.snoozed_until > now):
            actions.append(button("Snooze 24 h", "snooze", str(state.id), refresh=True))
    return card(title, body, subtitle=where, actions=actions[:6])


def _headline(event: Event, state: AlertState, now: datetime) -> list[tuple[str, Any]]:
    """The event's facts (all of them from Azure or a webhook: shown `plain`), then the alert's state."""
    rows: list[tuple[str, Any]] = []
    if event.monitor:
        rows.append(("Monitor", event.monitor))
    if event.signal:
        rows.append(("Signal", event.signal))
    if event.severity:
        rows.append(("Severity", f"{event.severity} ({SEVERITY_WORDS.get(event.severity, '')})"))
    for label, value in (("Model", event.model), ("Endpoint", event.endpoint), ("Deployment", event.deployment)):
        if value:
            rows.append((label, value))
    rows += [(k, v) for k, v in event.facts if k not in dict(rows)]
    rows = [(plain(k), plain(v)) for k, v in rows]
    status = {FIRED: "Firing", RESOLVED: "Resolved"}.get(state.status, "Reported")
    if state.fired_count > 1:
        status += f" (fired {state.fired_count} times since {when(state.first_at)})"
    rows.append(("Status", status))
    if event.time:
        rows.append(("At", plain(event.time)))
    if state.acknowledged_by:
        rows.append(("Acknowledged", f"by {plain(state.acknowledged_by)}, {when(state.acknowledged_at)}"))
    if state.snoozed_until and state.snoozed_until > now:
        rows.append(("Snoozed", f"until {when(state.snoozed_until)} by {plain(state.snoozed_by)}"))
    return rows


def severity_of(figure: Figure) -> float:
    """How far beyond its threshold a figure is (> 1 breaches), for ordering worst first."""
    if figure.threshold is None or figure.threshold == 0:
        return figure.value if figure.metric not in LOWER_IS_WORSE else 1 - figure.value
    if figure.metric in LOWER_IS_WORSE:
        return figure.threshold / max(figure.value, 1e-300)
    return figure.value / figure.threshold


def breached(figure: Figure) -> bool:
    if figure.threshold is None:
        return False
    return figure.value < figure.threshold if figure.metric in LOWER_IS_WORSE else figure.value > figure.threshold


def worst_first(figures: tuple[Figure, ...]) -> list[Figure]:
    return sorted(figures, key=lambda f: (-severity_of(f), f.feature, f.metric))


def _figure_header() -> Element:
    cell = lambda words: text(words, weight="Bolder", wrap=False)  # noqa: E731
    return columns(cell("Feature"), cell("Metric"), cell("Value"), cell("Threshold"), cell("Level, change"),
                   widths=["stretch", "stretch", "auto", "auto", "stretch"])


def _figure_row(figure: Figure) -> Element:
    over = breached(figure)
    rule = "" if figure.threshold is None else f"{breach_sign(figure.metric)} {figure.threshold:g}"
    value = f"{figure.value:.4g}" + (" ⚠" if over else "")
    band = psi_band(figure.value) if figure.metric == "population_stability_index" else None
    metric = SHORT_NAMES.get(figure.metric, figure.metric) + (f" ({band})" if band else "")
    if figure.metric == "population_stability_index":       # its band is in the Metric column already
        level = ("past threshold" if over else "within threshold") if figure.threshold is not None else ""
    else:
        level = level_words(figure.metric, figure.value, figure.threshold)
    return columns(text(plain(figure.feature) or "whole signal"), text(plain(metric)),
                   text(value, color="Attention" if over else None),
                   text(rule or "—"), text(", ".join(p for p in (level, change_text(figure)) if p) or "—", subtle=True),
                   widths=["stretch", "stretch", "auto", "auto", "stretch"])


def change_text(figure: Figure) -> str:
    """"+0.012 since the last run" when the previous run's figure is known, else ""."""
    if figure.previous is None:
        return ""
    delta = figure.value - figure.previous
    return "unchanged since the last run" if abs(delta) < 5e-5 else f"{delta:+.4g} since the last run"


def _legend(figures: list[Figure]) -> list[Element]:
    named = [m for m in dict.fromkeys(f.metric for f in figures) if m in DEFINITIONS]
    lines = [f"{SHORT_NAMES[m]} = {m}: {DEFINITIONS[m]}." for m in named]
    if any(f.metric == "population_stability_index" for f in figures):
        lines.append("PSI bands: < 0.1 none, 0.1 to 0.25 moderate, > 0.25 significant.")
    if lines:
        lines.append(LEVEL_RULE)
    return [text(line, subtle=True, size="Small") for line in lines]


def sparkline(values: tuple[float, ...] | list[float]) -> str:
    """▁▂▃… scaled between the smallest and largest value; "" for fewer than two values."""
    values = [v for v in values if isinstance(v, (int, float))]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[3] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / (high - low) * len(SPARKS)))] for v in values)
