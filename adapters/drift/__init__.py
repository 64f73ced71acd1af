"""The drift engine: pure computation, numpy/pyarrow columns in, a table of figures out.

Azure ML model monitoring's metrics, defined exactly as DESIGN.md section 4 states them (see
`definitions`): per numerical feature `normalized_wasserstein_distance`, `jensen_shannon_distance`
(log base 2), `population_stability_index` (natural log, +1 per bin),
`two_sample_kolmogorov_smirnov_test` (p-value); per categorical feature `jensen_shannon_distance`,
`population_stability_index`, `pearsons_chi_squared_test` (p-value); and data quality
`null_value_rate`, `out_of_bounds_rate`. Prediction drift is the same computation on the model's
outputs. Model performance (`accuracy`, `precision`, `recall`, `f1_score`, `auc`; `mean_absolute_error`,
`mean_squared_error`, `root_mean_squared_error`) and feature attribution drift (`normalized_discounted_cumulative_gain`)
come from labels, predictions and features (`performance`).

A leaf package: it imports nothing from commands/ or bot/, and numpy, scipy and pyarrow only
inside functions, so importing it (or the bot) does not load them. The engine's own modules load
on first use too (the names below marked so): cards and alerts need only `definitions` at start.

    from adapters.drift import compare, compare_files, render_table
    report = compare_files("reference.csv", "current.csv", categorical=["country"])
    report.to_dict()        # {"features": [...], "summary": {...}}, worst first, no NaN
"""

from typing import TYPE_CHECKING, Any

from adapters.drift.definitions import DEFAULT_THRESHOLDS, DEFINITIONS, Thresholds, psi_band
from adapters.drift.errors import (
    DriftError,
    DriftInputError,
    MissingColumn,
    NoRows,
    UnreadableFile,
    UnsupportedColumn,
)

if TYPE_CHECKING:
    from adapters.drift.engine import compare, feature_drift, prediction_drift
    from adapters.drift.files import ModelSignals, compare_files, model_signals_of_files
    from adapters.drift.performance import AttributionDrift, PerformanceReport, attribution_drift, model_performance
    from adapters.drift.render import render_model_signals, render_table
    from adapters.drift.results import DriftReport, FeatureDrift, MetricResult

__all__ = [
    "AttributionDrift", "ModelSignals", "PerformanceReport", "attribution_drift", "model_performance",
    "model_signals_of_files", "render_model_signals",
    "DEFAULT_THRESHOLDS", "DEFINITIONS", "DriftError", "DriftInputError", "DriftReport", "FeatureDrift",
    "MetricResult", "MissingColumn", "NoRows", "Thresholds", "UnreadableFile", "UnsupportedColumn",
    "compare", "compare_files", "feature_drift", "prediction_drift", "psi_band", "render_table",
]


def __getattr__(name: str) -> Any:
    """The engine's names, loaded on first use (PEP 562): a card that names a metric imports
    `definitions` without the engine's 13 dataclasses and modules (about 7 ms of every start)."""
    if name in ("compare", "feature_drift", "prediction_drift"):
        from adapters.drift import engine
        value = getattr(engine, name)
    elif name in ("ModelSignals", "compare_files", "model_signals_of_files"):
        from adapters.drift import files
        value = getattr(files, name)
    elif name in ("AttributionDrift", "PerformanceReport", "attribution_drift", "model_performance"):
        from adapters.drift import performance
        value = getattr(performance, name)
    elif name in ("render_model_signals", "render_table"):
        from adapters.drift import render
        value = getattr(render, name)
    elif name in ("DriftReport", "FeatureDrift", "MetricResult"):
        from adapters.drift import results
        value = getattr(results, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
