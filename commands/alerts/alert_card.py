"""The alert card: a pure function of the event, its alert's stored state and the time.

    alert_card(event, state, now, undo=None) -> Adaptive Card 1.5 dict

Read in five seconds, top down (each part its own function, so features can be added to one
without touching the others):

- `headline`: the model (or endpoint), the worst figure and its level in the seed's words (PSI:
  no drift < 0.1, moderate 0.1 to 0.25, significant > 0.25; any other figure: breached or within
  its threshold), and the change since the previous firing ("worse than at 02:00");
- `_facts` and `_state_lines`: where it comes from, then status, acknowledgement, assignee,
  snooze, resolution and the newest note, every time in the reader's own time zone
  (`{{DATE()}}`/`{{TIME()}}`, see commands.base.ui.local_time); the endpoint's health now, when the
  caller looked it up (`state.health`);
- the figures: a drift signal's per-feature table, or per-metric for signal-wide figures (model
  performance, feature attribution NDCG), worst first, each with its level in words and its change
  since the monitor's previous run when known; or, for an Azure Monitor alert, its own layout (metric, value, the condition with the rule's own operator, resource);
- the legend of formulas (each metric's definition and log base), folded behind "What do these
  figures mean?" (Action.ToggleVisibility); the trend over the recent firings;
- `_actions`: Undo (`rollback <endpoint> --to <id>`, titled with what it restores, present only
  when the caller found a traffic change of the endpoint to undo), Retrain (`retrain <model>`),
  Acknowledge, Resolve, and Snooze offering 1 h, 4 h and 24 h (`snooze <id> 4h`; Unsnooze while
  snoozed). Buttons carry ids
  only; every click is re-checked by its command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.azureml.monitoring import LOWER_IS_WORSE, breach_sign
from adapters.drift.definitions import DEFINITIONS, LEVEL_RULE, SHORT_NAMES, level_words, psi_band
from adapters.azureml.events import FIRED, RESOLVED, Event, Figure
from commands.base.ui import Element, button, card, columns, facts, local_time, plain, section, text

MAX_FEATURES = 10
SPARKS = "▁▂▃▄▅▆▇█"
SEVERITY_WORDS = {"Sev0": "critical", "Sev1": "error", "Sev2": "warning", "Sev3": "informational",
                  "Sev4": "verbose"}
SNOOZE_CHOICES = ("1h", "4h", "24h")
PSI_WORDS = {"none": "no drift", "moderate": "moderate drift", "significant": "significant drift"}
LEGEND_ID = "legend"


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
    history_at: tuple[datetime, ...] = ()         # when each history value was recorded
    assignee: str = ""
    resolved_by: str = ""
    resolved_at: datetime | None = None
    last_note: tuple[str, datetime, str] | None = None     # (author, when, text) of the newest note
    notes: int = 0
    health: str = ""                              # the endpoint's health at `now`, when the caller looked


@dataclass(frozen=True)
class Undo:
    """The traffic change a Rollback button would undo (adapters.storage.traffic_history.Entry)."""

    id: int
    at: datetime
    before: dict[str, int]
    after: dict[str, int]


def alert_card(event: Event, state: AlertState, now: datetime, undo: Undo | None = None, *,
               rollback_to: int | None = None) -> dict[str, Any]:
    """`rollback_to`: an older spelling of `undo` (a change number only, no description)."""
    if undo is None and rollback_to is not None:
        undo = Undo(rollback_to, now, {}, {})
    resolved = state.status == RESOLVED
    icon = "✅" if resolved else ("🔴" if event.severity in ("Sev0", "Sev1") else "🟠") if state.status == FIRED \
        else "ℹ️"
    title = f"{icon} {'Resolved: ' if resolved else ''}{plain(event.title)}"
    where = " · ".join(p for p in (f"Workspace {plain(event.workspace)}" if event.workspace else "",
                                   f"alert #{state.id}") if p)
    body: list[Element] = []
    words = headline(event, state)
    if words:
        body.append(text(words, weight="Bolder", spacing="Small"))
    body.append(facts(_facts(event)))
    body += _state_lines(event, state, now)
    if event.summary:
        body.append(text(plain(event.summary), subtle=True))
    figures = worst_first(event.figures)
    if figures and is_metric_alert(event):
        body += _metric_layout(event, figures)
    elif figures:
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
    body += _legend_toggle(figures)           # last: the longest part, folded until asked for
    return card(title, body, subtitle=where, actions=_actions(event, state, now, undo))


# ---------------------------------------------------------------- the parts


def is_metric_alert(event: Event) -> bool:
    """An Azure Monitor alert (metric or log): its figures are conditions, not drift features."""
    return event.source == "azure-monitor"


def level(figure: Figure) -> str:
    """The figure's level in the seed's words: PSI bands, else breached / within its threshold."""
    if figure.metric == "population_stability_index":
        return PSI_WORDS[psi_band(figure.value) or "none"]
    if figure.threshold is None:
        return ""
    return "breached" if breached(figure) else "within threshold"


def headline(event: Event, state: AlertState) -> str:
    """One sentence: what, the worst figure and its level, and the change since the previous firing."""
    subject = event.model or event.endpoint or event.monitor
    figures = worst_first(event.figures)
    parts: list[str] = []
    if subject:
        parts.append(f"{plain(subject)}:")
    if figures:
        worst = figures[0]
        name = SHORT_NAMES.get(worst.metric, worst.metric)
        said = level(worst)
        if is_metric_alert(event):
            rule = f" {sign_of(worst)} {worst.threshold:g}" if worst.threshold is not None else ""
            parts.append(f"{plain(name)} {worst.value:.4g}{rule}" + (f", {said}" if said else ""))
        else:
            feature = plain(worst.feature) or "whole signal"
            parts.append(f"worst {feature}, {plain(name)} {worst.value:.4g}" + (f" ({said})" if said else ""))
        change = _change(worst.metric, state)
        if change:
            parts.append(f"· {change}")
    elif not subject:
        return ""
    return " ".join(parts)


def _change(metric: str, state: AlertState) -> str:
    """"worse than at 02:00" (in the reader's time) from the last two recorded firings."""
    if len(state.history) < 2 or state.status != FIRED:
        return ""
    current, previous = state.history[-1], state.history[-2]
    at = state.history_at[-2] if len(state.history_at) >= 2 else None
    since = f" at {local_time(at, date=False)}" if at is not None else " at the previous firing"
    if current == previous:
        return f"same as{since}"
    lower_is_worse = metric in LOWER_IS_WORSE
    worse = current < previous if lower_is_worse else current > previous
    return f"{'worse' if worse else 'better'} than{since} ({previous:.4g})"


def _facts(event: Event) -> list[tuple[str, Any]]:
    """The event's facts (all of them from Azure or a webhook: shown `plain`)."""
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
    return [(plain(k), plain(v)) for k, v in rows]


def _state_lines(event: Event, state: AlertState, now: datetime) -> list[Element]:
    """Status and who is on it, each time in the reader's own time zone."""
    status = {FIRED: "Firing", RESOLVED: "Resolved"}.get(state.status, "Reported")
    if state.fired_count > 1:
        status += f" (fired {state.fired_count} times since {local_time(state.first_at)})"
    lines = [f"Status: {status}"]
    moment = _parse_time(event.time)
    if moment is not None:
        lines.append(f"At: {local_time(moment)}")
    elif event.time:
        lines.append(f"At: {plain(event.time)}")
    if state.health:
        lines.append(f"Endpoint at {local_time(now, date=False)}: {plain(state.health)}")
    if state.acknowledged_by:
        lines.append(f"Acknowledged: by {plain(state.acknowledged_by)}, {local_time(state.acknowledged_at)}")
    if state.assignee:
        lines.append(f"Assigned to: {plain(state.assignee)}")
    if state.snoozed_until and state.snoozed_until > now:
        lines.append(f"Snoozed: until {local_time(state.snoozed_until)} by {plain(state.snoozed_by)}")
    if state.resolved_by:
        lines.append(f"Resolved: by {plain(state.resolved_by)}, {local_time(state.resolved_at)}")
    if state.last_note:
        author, at, body = state.last_note
        more = f" ({state.notes} notes: `alerts {state.id}`)" if state.notes > 1 else ""
        lines.append(f"Note: {plain(body)} ({plain(author)}, {local_time(at)}){more}")
    return [text(line, spacing="None" if i else "Small") for i, line in enumerate(lines)]


def _parse_time(value: str) -> datetime | None:
    """A sender's ISO 8601 time as an aware UTC datetime, or None when it is not one."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _metric_layout(event: Event, figures: list[Figure]) -> list[Element]:
    """An Azure Monitor alert's conditions: metric, value, threshold with the rule's own operator,
    and the resource it fired on."""
    resource = " / ".join(plain(p) for p in (event.endpoint, event.deployment) if p) or "the alert's target"
    elements: list[Element] = [section("Condition")]
    for figure in figures[:MAX_FEATURES]:
        rule = f"{sign_of(figure)} {figure.threshold:g}" if figure.threshold is not None else "—"
        over = breached(figure)
        elements.append(facts([("Metric", plain(figure.metric)),
                               ("Value", f"{figure.value:.4g}" + (" ⚠" if over else "")),
                               ("Threshold", f"{rule} ({'breached' if over else 'within'})"),
                               ("Resource", resource)]))
    return elements


def _actions(event: Event, state: AlertState, now: datetime, undo: Undo | None) -> list[Element]:
    actions: list[Element] = [{"type": "Action.OpenUrl", "title": title_, "url": url}
                              for title_, url in event.links[:2] if url.startswith("https://")]
    if state.status == RESOLVED or event.kind not in ("drift", "alerts", "jobs", "posture"):
        return actions
    if event.endpoint and event.kind not in ("jobs", "posture") and undo is not None:
        scope = ("--workspace", event.workspace) if event.workspace else ()
        actions.append(button(undo_title(undo, now), "rollback", event.endpoint, "--to", str(undo.id), *scope,
                              style="destructive"))
    if event.model and event.kind != "jobs":
        actions.append(button("Retrain", "retrain", event.model))
    if not state.acknowledged_by:
        actions.append(button("Acknowledge", "acknowledge", str(state.id), refresh=True))   # edits this card
    if not (state.snoozed_until and state.snoozed_until > now):
        actions.append(snooze_choices(state.id))
    else:
        actions.append(button("Unsnooze", "unsnooze", str(state.id), refresh=True))
    actions.append(button("Resolve", "resolve", str(state.id), refresh=True))
    return actions[:6]


def snooze_choices(alert_id: int) -> Element:
    """"Snooze" opening 1 h, 4 h and 24 h (each `snooze <id> 4h`, editing the card in place)."""
    return {"type": "Action.ShowCard", "title": "Snooze", "card": {
        "type": "AdaptiveCard", "version": "1.5", "body": [],
        "actions": [button(f"{c[:-1]} h", "snooze", str(alert_id), c, refresh=True) for c in SNOOZE_CHOICES]}}


def undo_title(undo: Undo, now: datetime) -> str:
    """"Undo #4 (5 min ago): blue=90 green=10 → blue=100": what the button puts back."""
    if not undo.before:
        return "Rollback"
    ago = _ago(now - undo.at)
    return f"Undo #{undo.id}{f' ({ago})' if ago else ''}: {_split(undo.after)} → {_split(undo.before)}"


def _split(split: dict[str, int]) -> str:
    return " ".join(f"{plain(name)}={percent}" for name, percent in sorted(split.items())) or "nothing"


def _ago(gap: timedelta) -> str:
    minutes = int(gap.total_seconds() // 60)
    if minutes < 0:
        return ""
    if minutes < 1:
        return "just now"
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes // 60
    return f"{hours} h ago" if hours < 48 else f"{hours // 24} days ago"


def severity_of(figure: Figure) -> float:
    """How far beyond its threshold a figure is (> 1 breaches), for ordering worst first."""
    if figure.threshold is None or figure.threshold == 0:
        return figure.value if figure.metric not in LOWER_IS_WORSE else 1 - figure.value
    if figure.metric in LOWER_IS_WORSE:
        return figure.threshold / max(figure.value, 1e-300)
    return figure.value / figure.threshold


def sign_of(figure: Figure) -> str:
    """How the figure breaches: the alert rule's own operator when it has one, else the metric's rule."""
    return figure.operator or breach_sign(figure.metric)


_COMPARE = {">": float.__gt__, "<": float.__lt__, "≥": float.__ge__, "≤": float.__le__, "=": float.__eq__,
            "≠": float.__ne__, "≷": float.__ne__}


def breached(figure: Figure) -> bool:
    if figure.threshold is None:
        return False
    if figure.operator in _COMPARE:
        return _COMPARE[figure.operator](float(figure.value), float(figure.threshold))
    return figure.value < figure.threshold if figure.metric in LOWER_IS_WORSE else figure.value > figure.threshold


def worst_first(figures: tuple[Figure, ...]) -> list[Figure]:
    return sorted(figures, key=lambda f: (-severity_of(f), f.feature, f.metric))


def _figure_header() -> Element:
    cell = lambda words: text(words, weight="Bolder", wrap=False)  # noqa: E731
    return columns(cell("Feature"), cell("Metric"), cell("Value"), cell("Threshold"), cell("Level, change"),
                   widths=["stretch", "stretch", "auto", "auto", "stretch"])


def _figure_row(figure: Figure) -> Element:
    over = breached(figure)
    rule = "" if figure.threshold is None else f"{sign_of(figure)} {figure.threshold:g}"
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


def _legend_toggle(figures: list[Figure]) -> list[Element]:
    """The legend, hidden until "What do these figures mean?" is pressed (no round trip to the bot)."""
    lines = _legend(figures)
    if not lines:
        return []
    return [{"type": "ActionSet", "actions": [{"type": "Action.ToggleVisibility", "title": "What do these figures "
                                                "mean?", "targetElements": [LEGEND_ID]}]},
            {"type": "Container", "id": LEGEND_ID, "isVisible": False, "items": lines}]


def sparkline(values: tuple[float, ...] | list[float]) -> str:
    """▁▂▃… scaled between the smallest and largest value; "" for fewer than two values."""
    values = [v for v in values if isinstance(v, (int, float))]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[3] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / (high - low) * len(SPARKS)))] for v in values)
