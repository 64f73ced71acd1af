"""The table of figures the drift engine returns: per metric, per feature, per comparison.

Plain frozen dataclasses of Python floats (never numpy scalars, never NaN): a figure that cannot
be computed has `value=None` and says why in `undefined_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.drift.definitions import (
    ALL_METRICS,
    BREACH_BELOW,
    DATA_QUALITY_METRICS,
    DEFAULT_THRESHOLDS,
    DEFINITIONS,
    PRIMARY_METRIC,
    PSI,
    Kind,
    Thresholds,
    breach_rule,
    psi_band,
)


@dataclass(frozen=True)
class MetricResult:
    """One figure: its Azure ML name, value, threshold, whether it breached, and what it means."""

    name: str
    value: float | None
    threshold: float
    breached: bool
    definition: str
    undefined_reason: str | None = None
    band: str | None = None  # the PSI band (none / moderate / significant); None for other metrics

    @classmethod
    def of(cls, name: str, value: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
           undefined_reason: str | None = None) -> "MetricResult":
        if value is not None and not _finite(value):
            value, undefined_reason = None, "not finite (values too large to compare)"
        if value is not None:
            value = float(value)
        return cls(name=name, value=value, threshold=thresholds.of(name),
                   breached=thresholds.breached(name, value), definition=DEFINITIONS[name],
                   undefined_reason=None if value is not None else (undefined_reason or "undefined"),
                   band=psi_band(value) if name == PSI else None)

    @property
    def rule(self) -> str:
        """"> 0.1" or "< 0.05"."""
        return f"{'<' if self.name in BREACH_BELOW else '>'} {self.threshold:g}"


@dataclass(frozen=True)
class FeatureDrift:
    """All figures of one feature (or of the model's output, for prediction drift)."""

    name: str
    kind: Kind
    metrics: dict[str, MetricResult]
    reference_rows: int
    current_rows: int
    reference_values: int  # non-null values compared
    current_values: int
    notes: tuple[str, ...] = ()

    @property
    def primary(self) -> MetricResult:
        """The metric Azure ML's data drift signal judges this kind of feature by."""
        return self.metrics[PRIMARY_METRIC[self.kind]]

    @property
    def drifted(self) -> bool:
        return self.primary.breached

    @property
    def severity(self) -> float:
        """How far the primary figure is past (or short of) its threshold, for worst-first order."""
        value = self.primary.value
        if value is None:
            return -1.0
        return value / self.primary.threshold if self.primary.threshold > 0 else value

    @property
    def breached(self) -> list[str]:
        return [m.name for m in self.metrics.values() if m.breached]

    @property
    def data_quality_breached(self) -> bool:
        return any(self.metrics[name].breached for name in DATA_QUALITY_METRICS if name in self.metrics)

    def to_dict(self) -> dict:
        undefined = {m.name: m.undefined_reason for m in self.metrics.values() if m.value is None}
        out: dict = {
            "name": self.name,
            "kind": self.kind,
            "metrics": {m.name: m.value for m in self.metrics.values()},
            "drifted": self.drifted,
            "breached": self.breached,
            "psi_band": self.metrics[PSI].band,
            "counts": {"reference_rows": self.reference_rows, "current_rows": self.current_rows,
                       "reference_values": self.reference_values, "current_values": self.current_values},
        }
        if undefined:
            out["undefined"] = undefined
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class DriftReport:
    """Every compared feature, worst first (drifted before not, then by primary figure)."""

    features: list[FeatureDrift]
    reference_rows: int
    current_rows: int
    thresholds: Thresholds = field(default=DEFAULT_THRESHOLDS)

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    def summary(self) -> dict:
        used = [name for name in ALL_METRICS if any(name in f.metrics for f in self.features)]
        return {
            "features": len(self.features),
            "drifted": len(self.drifted),
            "drifted_features": [f.name for f in self.drifted],
            "share_drifted": len(self.drifted) / len(self.features) if self.features else 0.0,
            "data_quality_breached": [f.name for f in self.features if f.data_quality_breached],
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drift_rule": {kind: f"{metric} {breach_rule(metric, self.thresholds)}"
                           for kind, metric in PRIMARY_METRIC.items()},
            "thresholds": {name: self.thresholds.of(name) for name in used},
            "definitions": {name: DEFINITIONS[name] for name in used},
        }

    def to_dict(self) -> dict:
        return {"features": [f.to_dict() for f in self.features], "summary": self.summary()}


def worst_first(features: list[FeatureDrift]) -> list[FeatureDrift]:
    """Drifted features first, then by how far the primary figure is past its threshold; stable."""
    return sorted(features, key=lambda f: (not f.drifted, -f.severity))


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
