"""What Azure ML model monitoring writes, read as Azure writes it: metric names, which way a
metric breaches, and the breach tag of a run.

Pure functions over strings; used by the Azure ML adapter (monitor runs and their MLflow figures)
and by the Event Grid parser (adapters/azureml/events.py), so both read a breach alike.

Source: Azure/azureml-assets, `assets/model_monitoring/components/src/`
(commit 4b41f8ccbc01cf492767adc586ce1661c54c340a):

- `model_monitor_evaluate_metrics_threshold/evaluate_metrics_threshold.py`: a metric listed in
  `Metric_Value_Should_Greater_Than_Threshold` breaches when its value is *below* the threshold,
  every other metric when it is *above* it; a breaching signal's step run is tagged
  `azureml_modelmonitor_threshold_breached` with `_generate_error_message`'s text:

      The signal '<signal>' has failed due to one or more features violating metric thresholds.
      The feature names and their corresponding computed metric values violating the threshold are
      ['{"metric_value":0.31,"metric_name":"NormalizedWassersteinDistance","threshold_value":0.1,"group":"amount"}']

  (a Python list of Spark `toJSON()` rows; `group` is absent for signals without groups, such as
  model performance; older component versions put `group` first).
- `shared_utilities/constants.py`: the metric names (`NormalizedWassersteinDistance`, `Accuracy`,
  `MeanAbsoluteError`, ...).

Accuracy, precision and recall: they were in Azure's lower-is-worse list when the model
performance signal was added (commit 593bac6df5d1, #1919, Dec 2023) and left it in commit
7fafa57b0c2e (#2869, May 2024), a change whose stated purpose was to *add* the generation
quality average scores. A higher accuracy is better whatever that list says, so the bot keeps
them lower-is-worse (the union of both versions): 0.71 against 0.85 is a breach.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

BREACH_TAG = "azureml_modelmonitor_threshold_breached"

# Metric_Value_Should_Greater_Than_Threshold at 4b41f8cc, plus Accuracy/Precision/Recall of 593bac6d (see above).
AZURE_LOWER_IS_WORSE = (
    "TwoSampleKolmogorovSmirnovTest", "PearsonsChiSquaredTest", "NormalizedDiscountedCumulativeGain",
    "AggregatedCoherencePassRate", "AggregatedGroundednessPassRate", "AggregatedFluencyPassRate",
    "AggregatedSimilarityPassRate", "AggregatedRelevancePassRate",
    "AverageCoherenceScore", "AverageGroundednessScore", "AverageFluencyScore", "AverageRelevanceScore",
    "AverageSimilarityScore",
    "Accuracy", "Precision", "Recall",
)
# Not in Azure's model performance signal, computed by the bot's local monitors and `mlops-bot drift`: higher is
# better, so they breach below their threshold too (issue #22).
BOT_LOWER_IS_WORSE = ("F1Score", "AUC")

# azure-ai-ml's MonitorMetricName spells the regression metrics as acronyms; Azure's components write them out.
_ACRONYMS = {"mae": "mean_absolute_error", "mse": "mean_squared_error", "rmse": "root_mean_squared_error"}
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def metric_name(name: str) -> str:
    """Azure's metric names in one spelling, snake case: `NormalizedWassersteinDistance`,
    `normalizedWassersteinDistance` and `normalized_wasserstein_distance` are all
    `normalized_wasserstein_distance`; `MeanAbsoluteError` and the SDK's `MAE` are `mean_absolute_error`."""
    text = (name or "").strip()
    snake = text.lower() if "_" in text else _WORD_START.sub("_", text).lower()
    return _ACRONYMS.get(snake, snake)


LOWER_IS_WORSE = frozenset(metric_name(n) for n in AZURE_LOWER_IS_WORSE + BOT_LOWER_IS_WORSE)


def breaches(metric: str, value: float | None, threshold: float | None) -> bool:
    """Azure's rule: below the threshold for LOWER_IS_WORSE metrics, above it for every other one."""
    if value is None or threshold is None:
        return False
    return value < threshold if metric_name(metric) in LOWER_IS_WORSE else value > threshold


def breach_sign(metric: str) -> str:
    """`<` or `>`: how a figure of this metric breaches its threshold."""
    return "<" if metric_name(metric) in LOWER_IS_WORSE else ">"


# ---------------------------------------------------------------- the breach tag

@dataclass(frozen=True)
class BreachRow:
    """One row of the breach tag: `feature` is the row's group ("" for a signal-wide figure)."""

    feature: str
    metric: str                  # snake case (metric_name)
    value: float
    threshold: float | None


@dataclass(frozen=True)
class BreachedSignal:
    signal: str
    rows: tuple[BreachRow, ...] = ()


_SIGNAL = re.compile(r"The signal '(?P<signal>.{1,255}?)' has failed due to one or more features violating "
                     r"metric thresholds\.", re.S)
_ROWS = re.compile(r"violating the threshold are\s*(?P<rows>\[.*?\])\s*(?=The signal '|\Z)", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}")
MAX_ROWS = 200
MAX_TAG_CHARS = 256 * 1024


def parse_breach_tag(text: Any) -> tuple[BreachedSignal, ...]:
    """Every signal named in the breach tag's text, with its rows (in Azure's order).

    Text that is not Azure's message (an older `true`, something hand-made) gives no signals; a
    message whose rows cannot be read gives the signal without rows. Never raises."""
    if not isinstance(text, str) or not text or len(text) > MAX_TAG_CHARS:
        return ()
    found = []
    starts = list(_SIGNAL.finditer(text))
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        part = text[match.end():end]
        found.append(BreachedSignal(match["signal"], _rows(part)))
    return tuple(found)


def _rows(part: str) -> tuple[BreachRow, ...]:
    listed = _ROWS.search(part)
    items: list[Any] = []
    if listed:
        try:
            decoded = ast.literal_eval(listed["rows"])          # a list of JSON strings, as Python prints it
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            decoded = None
        if isinstance(decoded, list):
            items = decoded
    if not items:                                               # fall back to the JSON objects in the text
        items = _OBJECT.findall(part)
    rows = []
    for item in items[:MAX_ROWS]:
        try:
            row = json.loads(item) if isinstance(item, str) else item
        except (ValueError, RecursionError):
            continue
        if not isinstance(row, dict):
            continue
        value, threshold = _number(row.get("metric_value")), _number(row.get("threshold_value"))
        metric = row.get("metric_name")
        if value is None or not isinstance(metric, str) or not metric.strip():
            continue
        group = row.get("group")
        rows.append(BreachRow(str(group).strip()[:200] if group is not None else "", metric_name(metric)[:100],
                              value, threshold))
    return tuple(rows)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
