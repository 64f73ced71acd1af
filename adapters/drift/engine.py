"""The drift engine: reference and current columns in, a `DriftReport` (worst first) out.

    compare(reference, current, categorical=..., features=...)  every feature of two tables
    compare_columns(names, load, ...)                           the same, each feature's columns fetched when computed
    feature_drift(name, reference, current)                    one feature
    prediction_drift(reference_outputs, current_outputs)        the model's outputs, same figures

Features are independent, so `compare` spreads them over a few threads: the heavy numpy and
Arrow calls (sort, search, cast, count) release the GIL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping

from adapters.drift.categorical import categorical_figures
from adapters.drift.columns import CategoricalColumn, NumericalColumn, PreparedPair, aligned_counts, prepare
from adapters.drift.definitions import (
    CATEGORICAL_DRIFT_METRICS,
    DEFAULT_THRESHOLDS,
    NULL_VALUE_RATE,
    NUMERICAL_DRIFT_METRICS,
    OUT_OF_BOUNDS_RATE,
    Thresholds,
)
from adapters.drift.errors import MissingColumn
from adapters.drift.numerical import MIN_STD, numerical_figures
from adapters.drift.results import DriftReport, FeatureDrift, MetricResult, worst_first

PARALLEL_FROM_VALUES = 200_000  # below this many values in all, threads cost more than they save


def feature_drift(name: str, reference: Any, current: Any, *, categorical: bool = False,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS) -> FeatureDrift:
    """Every figure of one feature. `categorical=True` compares values as strings whatever they are."""
    return _figures(name, prepare(name, reference, current, categorical=categorical), thresholds)


def _figures(name: str, pair: PreparedPair, thresholds: Thresholds, *, sort_apart: bool = False) -> FeatureDrift:
    if pair.kind == "numerical":
        return _numerical(name, pair.reference, pair.current, pair.notes, thresholds, sort_apart=sort_apart)
    return _categorical(name, pair.reference, pair.current, pair.notes, thresholds)


def prediction_drift(reference_outputs: Any, current_outputs: Any, *, categorical: bool = False,
                     name: str = "prediction", thresholds: Thresholds = DEFAULT_THRESHOLDS) -> FeatureDrift:
    """Prediction drift: the same figures on the model's outputs (scores, or classes if categorical)."""
    return feature_drift(name, reference_outputs, current_outputs, categorical=categorical, thresholds=thresholds)


def compare(reference: Mapping[str, Any], current: Mapping[str, Any], *, categorical: Iterable[str] = (),
            features: Iterable[str] | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
            workers: int | None = None) -> DriftReport:
    """Compare two tables (column name -> values), feature by feature, worst first.

    `features` defaults to every reference column; each must be in both tables. `categorical`
    names columns to compare as categories even when their values are numbers.
    """
    names = list(dict.fromkeys(features)) if features is not None else list(reference)
    for where, table in (("reference", reference), ("current", current)):
        missing = [n for n in names if n not in table]
        if missing:
            raise MissingColumn(f"the {where} data has no column {missing[0]!r}")
    return compare_columns(names, lambda name: (reference[name], current[name]), _rows(reference, names),
                           _rows(current, names), categorical=categorical, thresholds=thresholds, workers=workers)


def compare_columns(names: list[str], load: Callable[[str], tuple[Any, Any]], reference_rows: int,
                    current_rows: int, *, categorical: Iterable[str] = (),
                    thresholds: Thresholds = DEFAULT_THRESHOLDS, workers: int | None = None) -> DriftReport:
    """`compare` with each feature's two columns fetched by `load(name)` only when that feature is
    computed, and let go of once converted. Same figures as `compare`.

    Features run `workers` at a time (by default one per core, at most 8), so at most that many
    features' arrays are in memory at once: how `compare_files` keeps big files in bounded memory
    (at 1M rows a side a numerical feature holds its two columns as float64, 16 MB, sorted in
    place, and a few MB of merge blocks; while its columns are read and converted, Arrow's copies
    too). Side by side, the features keep every core busy through all of their steps (reading,
    converting, sorting, merging, counting). A single big feature is computed with the threads
    inside it instead: its two samples sorted, and its merge's two halves walked, at the same time.
    """
    as_categories = set(categorical)
    big = (reference_rows + current_rows) * len(names) >= PARALLEL_FROM_VALUES
    threads = workers or min(os.cpu_count() or 1, 8)
    side_by_side = min(threads, len(names)) if big else 1
    inside = big and threads > 1 and len(names) == 1

    def one(name: str) -> FeatureDrift:
        # the loaded columns are let go of once converted, before the figures' own arrays exist
        pair = prepare(name, *load(name), categorical=name in as_categories)
        return _figures(name, pair, thresholds, sort_apart=inside)

    if side_by_side == 1:
        results = [one(name) for name in names]
    else:
        with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="drift") as pool:
            results = list(pool.map(one, names))
    return DriftReport(features=worst_first(results), reference_rows=reference_rows,
                       current_rows=current_rows, thresholds=thresholds)


def _rows(table: Mapping[str, Any], names: list[str]) -> int:
    return max((len(table[n]) for n in names), default=0)


# ---------------------------------------------------------------- per kind


def _numerical(name: str, r: NumericalColumn, c: NumericalColumn, notes: tuple[str, ...],
               thresholds: Thresholds, *, sort_apart: bool = False) -> FeatureDrift:
    why = _why_undefined(r.values.size, c.values.size, c.rows)
    # prepare's arrays are the engine's own: sorted in place (the out-of-bounds count below does
    # not depend on the order)
    figures = None if why else numerical_figures(r.values, c.values, sort_apart=sort_apart, in_place=True)
    metrics = {metric: MetricResult.of(metric, getattr(figures, metric) if figures else None,
                                       thresholds, undefined_reason=why or figures.unbinnable)
               for metric in NUMERICAL_DRIFT_METRICS}
    if figures is not None and figures.reference_std == 0:
        notes += (f"the reference has one value only (zero variance): the Wasserstein distance is "
                  f"divided by {MIN_STD}",)
    metrics.update(_data_quality(c.rows, c.nulls, _numerical_out_of_bounds(r, c), thresholds))
    return FeatureDrift(name=name, kind="numerical", metrics=metrics, reference_rows=r.rows,
                        current_rows=c.rows, reference_values=int(r.values.size),
                        current_values=int(c.values.size), notes=notes)


def _numerical_out_of_bounds(r: NumericalColumn, c: NumericalColumn) -> int:
    """Current values outside [min r, max r], plus those that are not numbers at all."""
    import numpy as np

    if r.values.size == 0:
        return c.values.size + c.not_numbers
    low, high = np.min(r.values), np.max(r.values)
    inside = np.count_nonzero((c.values >= low) & (c.values <= high))
    return int(c.values.size - inside) + c.not_numbers


def _categorical(name: str, r: CategoricalColumn, c: CategoricalColumn, notes: tuple[str, ...],
                 thresholds: Thresholds) -> FeatureDrift:
    counts_r, counts_c = aligned_counts(r, c)
    why = _why_undefined(r.values, c.values, c.rows)
    figures = None if why else categorical_figures(counts_r, counts_c)
    metrics = {metric: MetricResult.of(metric, getattr(figures, metric) if figures else None,
                                       thresholds, undefined_reason=why)
               for metric in CATEGORICAL_DRIFT_METRICS}
    if figures is not None and figures.categories == 1:
        notes += ("one category only, on both sides: the distributions are identical",)
    unseen = int(counts_c[counts_r == 0].sum())
    metrics.update(_data_quality(c.rows, c.nulls, unseen, thresholds))
    return FeatureDrift(name=name, kind="categorical", metrics=metrics, reference_rows=r.rows,
                        current_rows=c.rows, reference_values=r.values, current_values=c.values, notes=notes)


def _why_undefined(reference_values: int, current_values: int, current_rows: int) -> str | None:
    if current_rows == 0:
        return "no current rows"
    if reference_values == 0:
        return "no reference values (all missing or no rows)"
    if current_values == 0:
        return "no current values (all missing)"
    return None


def _data_quality(rows: int, nulls: int, out_of_bounds: int, thresholds: Thresholds) -> dict[str, MetricResult]:
    present = rows - nulls
    return {
        NULL_VALUE_RATE: MetricResult.of(NULL_VALUE_RATE, nulls / rows if rows else None, thresholds,
                                         undefined_reason="no current rows"),
        OUT_OF_BOUNDS_RATE: MetricResult.of(OUT_OF_BOUNDS_RATE, out_of_bounds / present if present else None,
                                            thresholds, undefined_reason="no current values (all missing)"
                                            if rows else "no current rows"),
    }

