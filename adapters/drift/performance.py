"""Model performance and feature attribution drift: labels, predictions and features in, figures out.

    model_performance(labels, predictions, scores=None, task=None, positive_label=None)
    attribution_drift(reference, current, features, target_of)       NDCG of importance rankings
    ndcg(true_relevance, scores)                                      sklearn's ndcg_score, one sample

Pure numpy, with the definitions of adapters.drift.definitions (scikit-learn's, which the tests use
as the reference to 1e-9):

* the task is *regression* when asked, or when every label is a number and one of them is not a
  whole number; otherwise *classification*, its classes compared as text (a number as its shortest
  spelling, so `1`, `1.0` and the integer 1 are one class);
* two classes (in labels and predictions together): precision, recall and F1 of the positive class,
  by default the greater of the two (numerically when both are numbers: 1 of 0/1, "yes" of no/yes);
  more than two: the macro average over every class seen in labels or predictions. A score that
  divides by zero is 0, as scikit-learn's `zero_division=0`;
* predictions of two classes may be the positive class's score instead of a class (every one a
  number in [0, 1], and not all of them class names): the predicted class is then the positive one
  when the score is at least `decision_threshold` (0.5), and the score gives the AUC;
* rows lacking a label or a prediction (or a score, where scores are used) are left out and counted.

Feature attribution drift follows Azure ML's component (Azure/azureml-assets,
`assets/model_monitoring/components/src/feature_importance_metrics/compute_feature_attribution_drift.py`,
commit 0d1c9d31ab191a2327a4c09408be77c3b9312817: `ndcg_score([baseline importances], [production
importances])`, features sorted by name, those absent from the baseline dropped). Azure's importances
come from a surrogate model; the bot's are a documented, deterministic stand-in: |Pearson correlation|
of a numerical feature with the target, the correlation ratio η of the target across a categorical
feature's categories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from adapters.drift.columns import _all_numbers, _normalise
from adapters.drift.definitions import (
    ACCURACY, AUC, CLASSIFICATION_METRICS, DEFAULT_THRESHOLDS, F1, MAE, MSE, NDCG, PRECISION, RECALL,
    REGRESSION_METRICS, RMSE, Thresholds,
)
from adapters.drift.errors import DriftInputError
from adapters.drift.results import MetricResult

if TYPE_CHECKING:
    import numpy as np

CLASSIFICATION, REGRESSION = "classification", "regression"
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class PerformanceReport:
    """The performance figures of one window: task, how they were averaged, rows used and left out."""

    task: str
    metrics: dict[str, MetricResult]
    rows: int                       # rows compared (label and prediction both present)
    left_out: int = 0               # rows without a label or a prediction
    classes: tuple[str, ...] = ()
    averaging: str = ""             # "binary, positive class '1'" | "macro over 3 classes" | ""
    positive_label: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def breached(self) -> list[str]:
        return [m.name for m in self.metrics.values() if m.breached]

    def to_dict(self) -> dict:
        out: dict = {"task": self.task, "metrics": {m.name: m.value for m in self.metrics.values()},
                     "breached": self.breached, "rows": self.rows, "left_out": self.left_out,
                     "thresholds": {m.name: m.threshold for m in self.metrics.values()},
                     "definitions": {m.name: m.definition for m in self.metrics.values()}}
        if self.task == CLASSIFICATION:
            out.update(classes=list(self.classes), averaging=self.averaging, positive_label=self.positive_label)
        undefined = {m.name: m.undefined_reason for m in self.metrics.values() if m.value is None}
        if undefined:
            out["undefined"] = undefined
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# ---------------------------------------------------------------- inputs


def _column(name: str, values: Any) -> tuple["np.ndarray | None", list[str | None]]:
    """(float64 numbers with NaN for missing, or None when some value is not a number; the values as text)."""
    import numpy as np

    normal = _normalise(name, values)
    if isinstance(normal, np.ndarray):
        numbers = normal
    else:
        numbers = _all_numbers(normal)
        if numbers is None:
            return None, normal.to_pylist()
    return numbers, [None if not math.isfinite(v) else _number_text(v) for v in numbers.tolist()]


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)


def _class_order(classes: Iterable[str]) -> list[str]:
    """Numerically when every class is a number, else as text."""
    classes = list(classes)
    try:
        return sorted(classes, key=float)
    except ValueError:
        return sorted(classes)


# ---------------------------------------------------------------- performance


def model_performance(labels: Any, predictions: Any, scores: Any = None, *, task: str | None = None,
                      positive_label: str | None = None, decision_threshold: float = DECISION_THRESHOLD,
                      thresholds: Thresholds = DEFAULT_THRESHOLDS) -> PerformanceReport:
    """Every performance figure of one window (see the module doc for the rules)."""
    import numpy as np

    label_numbers, label_text = _column("labels", labels)
    prediction_numbers, prediction_text = _column("predictions", predictions)
    if len(label_text) != len(prediction_text):
        raise DriftInputError(f"{len(label_text):,} labels but {len(prediction_text):,} predictions: "
                              "they must be rows of the same table")
    if task not in (None, CLASSIFICATION, REGRESSION):
        raise DriftInputError(f"the task is classification or regression, not {task!r}")
    if task is None:
        known = label_numbers[np.isfinite(label_numbers)] if label_numbers is not None else None
        task = REGRESSION if known is not None and known.size and not np.all(np.mod(known, 1) == 0) \
            else CLASSIFICATION
    if task == REGRESSION:
        return _regression(label_numbers, prediction_numbers, len(label_text), thresholds)
    score_numbers = None
    if scores is not None:
        score_numbers, score_text = _column("scores", scores)
        if score_numbers is None:
            raise DriftInputError("the scores must be numbers (the positive class's score)")
        if len(score_text) != len(label_text):
            raise DriftInputError(f"{len(label_text):,} labels but {len(score_text):,} scores")
    return _classification(label_text, prediction_text, prediction_numbers, score_numbers, positive_label,
                           decision_threshold, thresholds)


def _regression(labels: "np.ndarray | None", predictions: "np.ndarray | None", rows: int,
                thresholds: Thresholds) -> PerformanceReport:
    import numpy as np

    if labels is None or predictions is None:
        raise DriftInputError(f"regression needs numbers: the {'labels' if labels is None else 'predictions'} "
                              "are not all numbers")
    both = np.isfinite(labels) & np.isfinite(predictions)
    y, p = labels[both], predictions[both]
    why = "no row has both a label and a prediction" if y.size == 0 else None
    errors = y - p
    figures = {MAE: float(np.mean(np.abs(errors))) if y.size else None,
               MSE: float(np.mean(errors * errors)) if y.size else None,
               RMSE: float(np.sqrt(np.mean(errors * errors))) if y.size else None}
    metrics = {name: MetricResult.of(name, figures[name], thresholds, undefined_reason=why)
               for name in REGRESSION_METRICS}
    return PerformanceReport(REGRESSION, metrics, int(y.size), rows - int(y.size), notes=_left_out(rows - y.size))


def _classification(labels: list[str | None], predictions: list[str | None], prediction_numbers: "np.ndarray | None",
                    score_numbers: "np.ndarray | None", positive_label: str | None, decision_threshold: float,
                    thresholds: Thresholds) -> PerformanceReport:
    import numpy as np

    rows = len(labels)
    label_classes = {v for v in labels if v is not None}
    if positive_label is not None and len(label_classes) > 2:
        raise DriftInputError(f"--positive-label applies to two classes; the labels have {len(label_classes)}")
    if positive_label is not None and label_classes and positive_label not in label_classes:
        raise DriftInputError(f"the positive class {positive_label!r} is not among the classes "
                              f"({', '.join(map(repr, _class_order(label_classes)))})")
    notes: list[str] = []
    scored_by_prediction = (score_numbers is None and prediction_numbers is not None and len(label_classes) <= 2
                            and _are_scores(prediction_numbers)
                            and not {v for v in predictions if v is not None} <= label_classes)
    if scored_by_prediction:
        score_numbers = prediction_numbers
    if score_numbers is not None:
        classes = _class_order(label_classes)
        if positive_label is None and len(classes) == 2:
            positive_label = classes[-1]
        if positive_label is None and len(classes) == 1:
            positive_label = classes[0]
        keep = [i for i in range(rows) if labels[i] is not None and math.isfinite(score_numbers[i])
                and (scored_by_prediction or predictions[i] is not None)]
        y = [labels[i] for i in keep]
        s = score_numbers[keep] if keep else np.zeros(0)
        if scored_by_prediction:
            negative = next((c for c in classes if c != positive_label), "not " + str(positive_label))
            p = [positive_label if score >= decision_threshold else negative for score in s.tolist()]
            notes.append(f"the predictions are the score of class {positive_label!r}: predicted "
                         f"{positive_label!r} when at least {decision_threshold:g}")
        else:
            p = [predictions[i] for i in keep]
    else:
        keep = [i for i in range(rows) if labels[i] is not None and predictions[i] is not None]
        y, p, s = [labels[i] for i in keep], [predictions[i] for i in keep], None
    classes = tuple(_class_order(set(y) | set(p)))
    if len(classes) <= 2 and positive_label is None and classes:
        positive_label = classes[-1]
    n = len(y)
    why = "no row has both a label and a prediction" if n == 0 else None
    figures: dict[str, float | None] = dict.fromkeys(CLASSIFICATION_METRICS)
    auc_why = None
    if n:
        yy, pp = np.array(y, dtype=object), np.array(p, dtype=object)
        figures[ACCURACY] = float(np.mean(yy == pp))
        if len(classes) <= 2:
            averaging = f"binary, positive class {positive_label!r}"
            figures[PRECISION], figures[RECALL], figures[F1] = _scores_of(yy, pp, positive_label)
        else:
            averaging = f"macro over {len(classes)} classes"
            per_class = [_scores_of(yy, pp, c) for c in classes]
            figures[PRECISION], figures[RECALL], figures[F1] = (float(np.mean([c[i] for c in per_class]))
                                                                for i in range(3))
        if s is None:
            auc_why = "no scores (give the positive class's score: --scores, or scores as predictions)"
        elif len(set(y)) != 2:
            auc_why = "the labels hold one class only" if len(set(y)) < 2 else "AUC is computed for two classes only"
        else:
            figures[AUC] = auc(np.array([label == positive_label for label in y]), s)
    else:
        averaging = ""
    metrics = {name: MetricResult.of(name, figures[name], thresholds,
                                     undefined_reason=why or (auc_why if name == AUC else None))
               for name in CLASSIFICATION_METRICS}
    return PerformanceReport(CLASSIFICATION, metrics, n, rows - n, classes, averaging, positive_label,
                             tuple(notes) + _left_out(rows - n))


def _are_scores(numbers: "np.ndarray") -> bool:
    import numpy as np

    known = numbers[np.isfinite(numbers)]
    return bool(known.size) and bool(np.all((known >= 0) & (known <= 1)))


def _scores_of(y: "np.ndarray", p: "np.ndarray", positive: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of one class; 0 where a denominator is 0 (scikit-learn's zero_division=0)."""
    import numpy as np

    truth, said = y == positive, p == positive
    tp = int(np.count_nonzero(truth & said))
    fp = int(np.count_nonzero(~truth & said))
    fn = int(np.count_nonzero(truth & ~said))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def auc(positive: "np.ndarray", scores: "np.ndarray") -> float | None:
    """ROC AUC by the rank statistic, ties at their average rank; None without both classes."""
    import numpy as np

    n_pos = int(np.count_nonzero(positive))
    n_neg = int(positive.size - n_pos)
    if not n_pos or not n_neg:
        return None
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: "np.ndarray") -> "np.ndarray":
    """Ranks 1..n, tied values sharing the average of their ranks (scipy.stats.rankdata's 'average')."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    mean_rank = (starts + ends + 1) / 2.0              # ranks start..end-1 (0-based) -> 1-based average
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _left_out(count: int) -> tuple[str, ...]:
    return (f"{count:,} row{'s' if count != 1 else ''} without a label or a prediction left out",) if count else ()


# ---------------------------------------------------------------- feature attribution drift


@dataclass(frozen=True)
class AttributionDrift:
    """NDCG of the current importance ranking against the reference's, with both importances."""

    metric: MetricResult
    reference: dict[str, float] = field(default_factory=dict)     # feature -> importance, by name
    current: dict[str, float] = field(default_factory=dict)
    target: str = ""

    def ranking(self, which: str = "current") -> list[str]:
        importances = self.current if which == "current" else self.reference
        return sorted(importances, key=lambda name: (-importances[name], name))

    def to_dict(self) -> dict:
        out = {"metric": self.metric.name, "value": self.metric.value, "threshold": self.metric.threshold,
               "breached": self.metric.breached, "definition": self.metric.definition, "target": self.target,
               "reference_importance": self.reference, "current_importance": self.current}
        if self.metric.value is None:
            out["undefined"] = self.metric.undefined_reason
        return out


def importance(feature: Any, target: "np.ndarray", *, categorical: bool = False) -> float:
    """|Pearson r| of a numerical feature with the target, or η of the target across a categorical
    feature's categories; rows missing either are left out; 0 when either side does not vary."""
    import numpy as np

    numbers, text = _column("feature", feature)
    if categorical or numbers is None:
        keep = [i for i, v in enumerate(text) if v is not None and math.isfinite(target[i])]
        if len(keep) < 2:
            return 0.0
        t = target[keep]
        groups = np.unique(np.array([text[i] for i in keep], dtype=object), return_inverse=True)[1]
        total = float(np.sum((t - t.mean()) ** 2))
        if total == 0:
            return 0.0
        counts = np.bincount(groups)
        means = np.bincount(groups, weights=t) / counts
        between = float(np.sum(counts * (means - t.mean()) ** 2))
        return math.sqrt(min(1.0, between / total))
    both = np.isfinite(numbers) & np.isfinite(target)
    x, t = numbers[both], target[both]
    if x.size < 2:
        return 0.0
    dx, dt = x - x.mean(), t - t.mean()
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dt * dt)))
    return 0.0 if denominator == 0 else min(1.0, abs(float(np.sum(dx * dt)) / denominator))


def target_numbers(values: Any, positive_label: str | None = None) -> tuple["np.ndarray", str]:
    """The target importances are measured against, as numbers: the values themselves when they are
    numbers (scores, regression labels, 0/1 labels), else 1 for the positive class of two and 0 for
    the other. DriftInputError for text of more than two classes."""
    import numpy as np

    numbers, text = _column("target", values)
    if numbers is not None and (positive_label is None or len({v for v in text if v is not None}) > 2):
        return numbers, "as numbers"
    classes = _class_order({v for v in text if v is not None})
    if len(classes) > 2:
        raise DriftInputError("feature importances need a numerical target or two classes; the target has "
                              f"{len(classes)} classes")
    positive = positive_label if positive_label is not None else (classes[-1] if classes else "")
    return np.array([np.nan if v is None else float(v == positive) for v in text]), f"1 for {positive!r}, else 0"


def attribution_drift(reference: Mapping[str, Any], current: Mapping[str, Any], features: Iterable[str],
                      reference_target: "np.ndarray", current_target: "np.ndarray", *,
                      categorical: Iterable[str] = (), target: str = "",
                      thresholds: Thresholds = DEFAULT_THRESHOLDS) -> AttributionDrift:
    """Azure's feature attribution drift with the bot's importances (see the module doc)."""
    import numpy as np

    names = sorted(dict.fromkeys(features))                 # Azure sorts both sides by feature name
    as_categories = set(categorical)
    ref = {n: importance(reference[n], reference_target, categorical=n in as_categories) for n in names}
    cur = {n: importance(current[n], current_target, categorical=n in as_categories) for n in names}
    why = None
    value = None
    known = [int(np.count_nonzero(np.isfinite(t))) for t in (reference_target, current_target)]
    if len(names) < 2:
        why = "NDCG needs at least two features"
    elif min(known) < 2:
        why = f"the {'reference' if known[0] < 2 else 'current'} data has fewer than two labelled rows"
    else:
        value = ndcg([ref[n] for n in names], [cur[n] for n in names])
    return AttributionDrift(MetricResult.of(NDCG, value, thresholds, undefined_reason=why), ref, cur, target)


def ndcg(true_relevance: list[float], scores: list[float]) -> float:
    """sklearn.metrics.ndcg_score([true_relevance], [scores]) (k = every item, ignore_ties=False):
    DCG of the gains ordered by score, each group of tied scores given its mean gain, over the DCG of
    the gains in their best order; 0 when every gain is 0. Discount of rank r (from 0): 1/log2(r + 2)."""
    import numpy as np

    gains = np.asarray(true_relevance, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    discount = 1 / np.log2(np.arange(gains.size) + 2)
    ideal = float(np.sum(np.sort(gains)[::-1] * discount))
    if ideal == 0:
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    ordered, ordered_gains = s[order], gains[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    dcg = sum(float(ordered_gains[a:b].mean() * discount[a:b].sum()) for a, b in zip(starts, ends))
    return dcg / ideal


def numeric_target(values: Any) -> "np.ndarray":
    """A column as float64 (NaN where missing or not a number)."""
    import numpy as np

    numbers, text = _column("target", values)
    return numbers if numbers is not None else np.full(len(text), np.nan)

