"""Model monitoring in the embedded local workspace: reference data, a stream of production samples
per deployed model, and monitors that run on a schedule through the drift engine (adapters.drift).

The local stand-in for Azure ML model monitoring. Each monitor watches one deployment of a model
and has the five signals of Azure's: data drift and prediction drift (normalized Wasserstein
distance for numerical features, Jensen-Shannon distance for categorical ones, with PSI beside
them), data quality (null value rate, out-of-bounds rate), feature attribution drift (NDCG of the
features' importance ranking against the reference's) and model performance (accuracy, precision,
recall, F1 and AUC of the predictions against the labels), all computed from data by the drift
engine (adapters.drift, whose definitions say exactly how).

Labels arrive late, as ground truth does (a chargeback, a customer who leaves): a run judges
performance and attribution on the production day whose labels have arrived, `label_delay_days`
before the day its drift signals compare, as Azure's model performance signal looks back with an
offset. Labels are drawn (seeded by monitor and day) from each model's true probability: the
model's own score for churn and credit; for fraud, the true mechanism moves away from the model
(night-time transactions in GB and US become fraud, online retail less so) from 2 days after the
epoch, so its recall and its importance ranking fall a few days later.

Data, all generated deterministically (seeded by monitor, feature set and day):

* the reference sample of a monitor: `REFERENCE_ROWS` rows, as of training time (no drift);
* the production sample of day `d` (days counted from the day the demo was seeded, the *epoch*):
  `DAILY_ROWS` rows scored that day. In the demo, fraud-model's traffic changes in the last days:
  `merchant_category` moves towards online retail and gaming from 6 days before the epoch, and
  `transaction_amount` grows from the epoch on, so its distance crosses the threshold within a
  couple of days; the other monitors stay quiet.

Runs are computed lazily, like the local jobs (a disabled monitor does not run; runs it missed are
computed when it is read after being enabled again, up to `MAX_CATCH_UP`): whenever monitors are read, every run the schedule
says is due by the (injected) clock is computed and stored, at most `MAX_CATCH_UP` per monitor
(older missed runs are skipped, as a paused scheduler would). A new workspace starts with
`HISTORY_DAYS` days of runs behind it, so trends show at once. Each run compares the previous
day's production sample with the reference: well under a second for all signals.

Storage: tables `monitors`, `monitor_runs`, `monitor_figures` and `monitor_meta` (the epoch) in
the workspace's SQLite file, created here (`ensure_schema`) so the workspace's own schema version
is untouched.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import zlib
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from adapters.monitor_targets import check_window, resolve
from adapters.service import (
    DriftReport, FeatureFigure, MetricThreshold, Monitor, MonitorRun, MonitorSignal, NotFound, SignalReport,
)

REFERENCE_ROWS = 4000
DAILY_ROWS = 1500
HISTORY_DAYS = 10          # runs a new demo workspace starts with
MAX_CATCH_UP = 30          # at most this many due runs are computed per monitor in one catch-up
RUN_AT = time(3, 0)        # every monitor runs daily at 03:00 UTC
FIGURES_SOURCE = ("computed by the local workspace with the bot's drift engine "
                  "(same definitions as Azure ML model monitoring)")

SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS monitors (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, enabled INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS monitor_runs (
    monitor TEXT NOT NULL, run_at TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    breached INTEGER, breached_signals TEXT NOT NULL, PRIMARY KEY (monitor, run_at));
CREATE TABLE IF NOT EXISTS monitor_figures (
    monitor TEXT NOT NULL, run_at TEXT NOT NULL, signal TEXT NOT NULL, feature TEXT NOT NULL,
    metric TEXT NOT NULL, data_type TEXT NOT NULL, value REAL, threshold REAL NOT NULL, breached INTEGER NOT NULL,
    PRIMARY KEY (monitor, run_at, signal, feature, metric));
"""
TABLES = ("monitor_figures", "monitor_runs", "monitors", "monitor_meta")


# ---------------------------------------------------------------- what the demo monitors watch


@dataclass(frozen=True)
class Feature:
    name: str
    data_type: str                              # "numerical" | "categorical"


@dataclass(frozen=True)
class MonitorSpec:
    """A local monitor: what it watches, its signals, and which data generator feeds it."""

    name: str
    model: str
    endpoint: str
    features: tuple[Feature, ...]
    prediction: Feature
    signals: tuple[MonitorSignal, ...]
    generator: str                               # a key of GENERATORS
    label: str = ""                              # the ground truth column ("": no labels, no performance)
    positive_label: str = "1"
    decision_threshold: float = 0.5              # the prediction is a score: positive at or above this
    label_delay_days: int = 0                    # how many days after scoring its labels arrive

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in (*self.features, self.prediction) if f.data_type == "categorical"]

    def data_type(self, feature: str) -> str:
        for f in (*self.features, self.prediction):
            if f.name == feature:
                return f.data_type
        return ""


def _drift_signals(features: tuple[Feature, ...], prediction: Feature,
                   performance: tuple[MetricThreshold, ...] = ()) -> tuple[MonitorSignal, ...]:
    """Azure ML's default data drift metrics (and thresholds), PSI beside them, data quality; and when
    the model has labels, feature attribution drift (Azure's default NDCG threshold) and performance."""
    drift = (MetricThreshold("normalized_wasserstein_distance", 0.1, "numerical"),
             MetricThreshold("population_stability_index", 0.25, "numerical"),
             MetricThreshold("jensen_shannon_distance", 0.1, "categorical"),
             MetricThreshold("population_stability_index", 0.25, "categorical"))
    quality = (MetricThreshold("null_value_rate", 0.01, "numerical"),
               MetricThreshold("out_of_bounds_rate", 0.02, "numerical"),
               MetricThreshold("null_value_rate", 0.01, "categorical"),
               MetricThreshold("out_of_bounds_rate", 0.02, "categorical"))
    names = tuple(f.name for f in features)
    signals = (MonitorSignal("data-drift", "data_drift", drift, names, 1),
               MonitorSignal("prediction-drift", "prediction_drift", drift, (prediction.name,), 1),
               MonitorSignal("data-quality", "data_quality", quality, names, 1))
    if performance:
        signals += (MonitorSignal("feature-attribution-drift", "feature_attribution_drift",
                                  (MetricThreshold("normalized_discounted_cumulative_gain", 0.9),), (), 1),
                    MonitorSignal("model-performance", "model_performance", performance, (), 1))
    return signals


def _spec(name: str, model: str, endpoint: str, features: tuple[Feature, ...], prediction: Feature,
          generator: str, label: str = "", performance: tuple[tuple[str, float], ...] = (),
          decision_threshold: float = 0.5, label_delay_days: int = 0) -> MonitorSpec:
    thresholds = tuple(MetricThreshold(metric, value) for metric, value in performance)
    return MonitorSpec(name, model, endpoint, features, prediction, _drift_signals(features, prediction, thresholds),
                       generator, label, "1", decision_threshold, label_delay_days)


NUM, CAT = "numerical", "categorical"
# the performance thresholds of the demo's models: a little under what each reaches on its reference data
FRAUD_PERFORMANCE = (("accuracy", 0.85), ("precision", 0.6), ("recall", 0.45), ("f1_score", 0.55), ("auc", 0.85))
CHURN_PERFORMANCE = (("accuracy", 0.8), ("precision", 0.65), ("recall", 0.55), ("f1_score", 0.6), ("auc", 0.85))
CREDIT_PERFORMANCE = (("accuracy", 0.8), ("precision", 0.6), ("recall", 0.45), ("f1_score", 0.55), ("auc", 0.85))
DEMO_MONITORS: tuple[MonitorSpec, ...] = (
    _spec("fraud-model-monitor", "fraud-model:3", "fraud-api/blue",
          (Feature("transaction_amount", NUM), Feature("merchant_category", CAT), Feature("customer_age", NUM),
           Feature("hour_of_day", NUM), Feature("country", CAT)), Feature("fraud_score", NUM), "fraud",
          "is_fraud", FRAUD_PERFORMANCE, decision_threshold=0.07, label_delay_days=2),
    _spec("churn-model-monitor", "churn-model:2", "churn-api/blue",
          (Feature("tenure_months", NUM), Feature("monthly_charges", NUM), Feature("support_tickets", NUM),
           Feature("contract_type", CAT)), Feature("churn_probability", NUM), "churn",
          "churned", CHURN_PERFORMANCE, decision_threshold=0.45, label_delay_days=3),
    _spec("credit-risk-monitor", "credit-risk:2", "credit-api/blue",
          (Feature("annual_income", NUM), Feature("loan_amount", NUM), Feature("credit_history_years", NUM),
           Feature("employment_type", CAT)), Feature("default_probability", NUM), "credit",
          "defaulted", CREDIT_PERFORMANCE, decision_threshold=0.1, label_delay_days=3),
)


# ---------------------------------------------------------------- data generators


def _rng(*parts: Any):
    import numpy as np

    return np.random.default_rng(zlib.crc32("|".join(map(str, parts)).encode()))


def _with_nulls(rng, values, rate: float):
    """Blank out about `rate` of the values (NaN for numbers, None for categories)."""
    import numpy as np

    mask = rng.random(len(values)) < rate
    if values.dtype.kind == "f":
        values = values.copy()
        values[mask] = np.nan
        return values
    out = values.astype(object)
    out[mask] = None
    return out


def _sigmoid(x):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


MERCHANTS = ("grocery", "fuel", "restaurants", "online_retail", "travel", "electronics", "gaming", "jewelry")
MERCHANT_P = (0.30, 0.15, 0.20, 0.12, 0.08, 0.08, 0.04, 0.03)
MERCHANT_DRIFTED_P = (0.16, 0.08, 0.12, 0.30, 0.06, 0.12, 0.13, 0.03)
COUNTRIES = ("FR", "DE", "NL", "ES", "IT", "BE", "GB", "US")
COUNTRY_P = (0.30, 0.20, 0.12, 0.12, 0.10, 0.06, 0.06, 0.04)


def fraud_drift(day: float) -> tuple[float, float]:
    """(merchant mix, amount growth) of the demo's fraud traffic on day `day` after the epoch, 0..1."""
    merchants = min(1.0, max(0.0, (day + 6) / 8))
    amounts = min(1.0, max(0.0, day / 8))
    return merchants, amounts


def _fraud(rng, n: int, day: float | None) -> dict[str, Any]:
    import numpy as np

    merchants, amounts = fraud_drift(day) if day is not None else (0.0, 0.0)
    p = (1 - merchants) * np.array(MERCHANT_P) + merchants * np.array(MERCHANT_DRIFTED_P)
    merchant = rng.choice(np.array(MERCHANTS), size=n, p=p / p.sum())
    amount = np.round(rng.lognormal(3.6 + 0.9 * amounts, 0.9 + 0.15 * amounts, size=n), 2)
    age = np.clip(np.round(rng.normal(41, 12, size=n)), 18, 90)
    hour = rng.choice(np.arange(24), size=n, p=_hours()).astype(float)
    country = rng.choice(np.array(COUNTRIES), size=n, p=COUNTRY_P)
    risky = np.isin(merchant, ("online_retail", "gaming", "electronics", "jewelry"))
    score = _sigmoid(-4.0 + 0.6 * (np.log(amount) - 3.6) + 1.1 * risky + 0.2 * (hour < 6)
                     + rng.normal(0, 0.5, size=n))
    return {"transaction_amount": _with_nulls(rng, amount, 0.002), "merchant_category": merchant,
            "customer_age": _with_nulls(rng, age, 0.003), "hour_of_day": hour,
            "country": _with_nulls(rng, country, 0.002), "fraud_score": np.round(score, 4)}


def _hours():
    import numpy as np

    weights = 1.0 + np.sin((np.arange(24) - 9) / 24 * 2 * np.pi)
    return weights / weights.sum()


def _churn(rng, n: int, day: float | None) -> dict[str, Any]:
    import numpy as np

    tenure = np.clip(np.round(rng.gamma(2.0, 14.0, size=n)), 0, 120)
    charges = np.round(rng.normal(64, 22, size=n).clip(15, 150), 2)
    tickets = rng.poisson(1.2, size=n).astype(float)
    contract = rng.choice(np.array(("month-to-month", "one-year", "two-year")), size=n, p=(0.55, 0.25, 0.20))
    score = _sigmoid(-1.0 - 0.04 * tenure + 0.01 * (charges - 64) + 0.35 * tickets
                     + 1.0 * (contract == "month-to-month") + rng.normal(0, 0.4, size=n))
    return {"tenure_months": tenure, "monthly_charges": _with_nulls(rng, charges, 0.002),
            "support_tickets": tickets, "contract_type": contract, "churn_probability": np.round(score, 4)}


def _credit(rng, n: int, day: float | None) -> dict[str, Any]:
    import numpy as np

    income = np.round(rng.lognormal(10.8, 0.45, size=n), -2)
    loan = np.round(rng.lognormal(9.6, 0.6, size=n), -2)
    history = np.clip(np.round(rng.normal(11, 6, size=n)), 0, 45)
    employment = rng.choice(np.array(("salaried", "self-employed", "contract", "retired")), size=n,
                            p=(0.62, 0.18, 0.12, 0.08))
    score = _sigmoid(-2.5 + 0.9 * (np.log(loan) - np.log(income) + 1.2) - 0.05 * history
                     + 0.5 * (employment == "contract") + rng.normal(0, 0.3, size=n))
    return {"annual_income": _with_nulls(rng, income, 0.004), "loan_amount": loan,
            "credit_history_years": history, "employment_type": employment,
            "default_probability": np.round(score, 4)}


GENERATORS = {"fraud": _fraud, "churn": _churn, "credit": _credit}


LABEL_SHARPNESS = 3.0


def fraud_concept(day: float) -> float:
    """How far the demo's true fraud mechanism has moved from the model's on day `day`, 0..1."""
    return min(1.0, max(0.0, (day - 2) / 4))


def labels(spec: MonitorSpec, data: dict[str, Any], day: float | None) -> Any:
    """The ground truth of `data` (1 or 0), drawn from the true probability: the model's score made
    LABEL_SHARPNESS times surer around the monitor's decision threshold (where it is 1/2), moved for
    fraud by `fraud_concept` towards night-time transactions from GB and US and away from the
    merchants the model finds risky and large amounts. Seeded by monitor and day, apart from the features' stream."""
    import numpy as np

    score = np.clip(np.asarray(data[spec.prediction.name], dtype=np.float64), 1e-6, 1 - 1e-6)
    cut = spec.decision_threshold
    logit = LABEL_SHARPNESS * (np.log(score / (1 - score)) - np.log(cut / (1 - cut)))
    if spec.generator == "fraud" and day is not None:
        shift = fraud_concept(day)
        night = np.asarray(data["hour_of_day"], dtype=np.float64) < 6
        foreign = np.isin(np.asarray(data["country"], dtype=object), ("GB", "US"))
        risky = np.isin(np.asarray(data["merchant_category"], dtype=object),
                        ("online_retail", "gaming", "electronics", "jewelry"))
        amount = np.log(np.nan_to_num(np.asarray(data["transaction_amount"], dtype=np.float64), nan=36.6))
        logit = logit + shift * (4.0 * night + 3.5 * foreign - 3.5 * risky - 1.5 * (amount - 3.6))
    rng = _rng(spec.name, "labels", "reference" if day is None else day)
    return (rng.random(score.size) < _sigmoid(logit)).astype(np.int64)


@functools.lru_cache(maxsize=16)
def reference_labels(spec: MonitorSpec) -> Any:
    """The labels of the monitor's reference sample (do not modify)."""
    return labels(spec, reference_data(spec), None)


@functools.lru_cache(maxsize=16)
def reference_data(spec: MonitorSpec) -> dict[str, Any]:
    """The monitor's reference sample (training-time data): column name -> values (do not modify)."""
    return GENERATORS[spec.generator](_rng(spec.name, "reference"), REFERENCE_ROWS, None)


def production_data(spec: MonitorSpec, day: int) -> dict[str, Any]:
    """What the deployment scored on day `day` (0 = the epoch's day, negative = before it)."""
    return GENERATORS[spec.generator](_rng(spec.name, "production", day), DAILY_ROWS, day + 0.5)


# ---------------------------------------------------------------- schema and seeding


def ensure_schema(conn: sqlite3.Connection, now: datetime, *, seed: bool) -> None:
    """Create the monitoring tables if missing; seed the demo monitors when asked and none exist."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    if seed and conn.execute("SELECT COUNT(*) FROM monitors").fetchone()[0] == 0:
        seed_demo(conn, now)
    upgrade_demo(conn)


def upgrade_demo(conn: sqlite3.Connection) -> None:
    """Give a demo monitor stored before labels existed (no `label` in its definition, the same
    features) the feature attribution and performance signals; its earlier runs keep what they had."""
    for spec in DEMO_MONITORS:
        row = conn.execute("SELECT definition FROM monitors WHERE name = ?", (spec.name,)).fetchone()
        if row is None:
            continue
        stored = json.loads(row[0])
        if "label" not in stored and stored.get("features") == [asdict(f) for f in spec.features]:
            conn.execute("UPDATE monitors SET definition = ? WHERE name = ?", (json.dumps(asdict(spec)), spec.name))


def wipe(conn: sqlite3.Connection) -> None:
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")


def seed_demo(conn: sqlite3.Connection, now: datetime) -> None:
    """The demo monitors, created HISTORY_DAYS days ago; `now` is the epoch of their data."""
    conn.execute("INSERT OR REPLACE INTO monitor_meta (key, value) VALUES ('epoch', ?)", (_iso(now),))
    created = _iso(now - timedelta(days=HISTORY_DAYS))
    for spec in DEMO_MONITORS:
        conn.execute("INSERT INTO monitors (name, definition, enabled, created_at) VALUES (?, ?, 1, ?)",
                     (spec.name, json.dumps(asdict(spec)), created))


def _spec_from_json(text: str) -> MonitorSpec:
    data = json.loads(text)
    signals = tuple(MonitorSignal(s["name"], s["kind"], tuple(MetricThreshold(**t) for t in s["thresholds"]),
                                  tuple(s["features"]), s["lookback_days"]) for s in data["signals"])
    return MonitorSpec(data["name"], data["model"], data["endpoint"], tuple(Feature(**f) for f in data["features"]),
                       Feature(**data["prediction"]), signals, data["generator"], data.get("label", ""),
                       data.get("positive_label", "1"), data.get("decision_threshold", 0.5),
                       data.get("label_delay_days", 0))


# ---------------------------------------------------------------- running


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _epoch_day(conn: sqlite3.Connection) -> date:
    row = conn.execute("SELECT value FROM monitor_meta WHERE key = 'epoch'").fetchone()
    return _dt(row[0]).date() if row else date(1970, 1, 1)


def due_runs(after: datetime, now: datetime) -> list[datetime]:
    """The daily run times in (after, now], the last MAX_CATCH_UP of them."""
    first = datetime.combine(after.date(), RUN_AT, tzinfo=timezone.utc)
    if first <= after:
        first += timedelta(days=1)
    if first > now:
        return []
    count = (now - first).days + 1
    skip = max(0, count - MAX_CATCH_UP)
    return [first + timedelta(days=i) for i in range(skip, count)]


def run_monitor(spec: MonitorSpec, run_at: datetime, epoch_day: date) -> tuple[MonitorRun, list[dict[str, Any]]]:
    """One run: the previous day's production data against the reference, signal by signal.

    The drift engine compares every column once; each signal then keeps the metrics it is
    configured with and judges them by its own thresholds (the engine's rule: above the
    threshold breaches, below it for p-values).
    """
    from adapters.drift import compare

    day = (run_at.date() - timedelta(days=1) - epoch_day).days
    report = compare(reference_data(spec), production_data(spec, day), categorical=spec.categorical)
    by_name = {feature.name: feature for feature in report.features}
    figures: list[dict[str, Any]] = []
    breached: list[str] = []
    for signal in spec.signals:
        thresholds = signal_thresholds(signal)
        if signal.kind in LABELLED_KINDS:
            found = labelled_figures(spec, signal, day - spec.label_delay_days)
            figures += found
            if any(f["breached"] for f in found):
                breached.append(signal.name)
            continue
        hit = False
        for feature in sorted((by_name[name] for name in signal.features), key=report.features.index):
            for wanted in signal.thresholds:
                if wanted.data_type and wanted.data_type != feature.kind:
                    continue
                value = feature.metrics[wanted.metric].value
                broken = thresholds.breached(wanted.metric, value)
                figures.append({"signal": signal.name, "feature": feature.name, "metric": wanted.metric,
                                "data_type": feature.kind, "value": value, "threshold": wanted.threshold,
                                "breached": broken})
                hit = hit or broken
        if hit:
            breached.append(signal.name)
    run = MonitorRun(run_name(spec.name, run_at), "Completed", run_at, bool(breached), tuple(breached),
                     breach_message(breached))
    return run, figures


LABELLED_KINDS = ("feature_attribution_drift", "model_performance")


def labelled_figures(spec: MonitorSpec, signal: MonitorSignal, day: int) -> list[dict[str, Any]]:
    """The figures of a signal that needs labels, on production day `day` (whose labels have arrived):
    model performance of the prediction (a score: positive at `decision_threshold`) against the labels,
    or the NDCG of the features' importance ranking (against the labels) with the reference's."""
    from adapters.drift import attribution_drift, model_performance

    thresholds = signal_thresholds(signal)
    data = production_data(spec, day)
    truth = labels(spec, data, day + 0.5)
    if signal.kind == "model_performance":
        report = model_performance(truth, data[spec.prediction.name], task="classification",
                                   positive_label=spec.positive_label, decision_threshold=spec.decision_threshold,
                                   thresholds=thresholds)
        results = [report.metrics[t.metric] for t in signal.thresholds if t.metric in report.metrics]
    else:
        drift = attribution_drift(reference_data(spec), data, [f.name for f in spec.features],
                                  reference_labels(spec).astype(float), truth.astype(float),
                                  categorical=spec.categorical, target=spec.label, thresholds=thresholds)
        results = [drift.metric]
    return [{"signal": signal.name, "feature": "", "metric": r.name, "data_type": "", "value": r.value,
             "threshold": r.threshold, "breached": r.breached} for r in results]


def _with_importances(spec: MonitorSpec, signal: SignalReport, run_at: datetime, *, epoch_day: date) -> SignalReport:
    """A feature attribution drift signal with the importances its NDCG compared, per feature (as Azure's
    component logs them beside the NDCG): recomputed from the run's labelled day, which is deterministic."""
    if signal.kind != "feature_attribution_drift" or not spec.label or not signal.figures:
        return signal
    from adapters.drift import attribution_drift
    from adapters.drift.definitions import BASELINE_IMPORTANCE, PRODUCTION_IMPORTANCE

    day = (run_at.date() - timedelta(days=1) - epoch_day).days - spec.label_delay_days
    data = production_data(spec, day)
    drift = attribution_drift(reference_data(spec), data, [f.name for f in spec.features],
                              reference_labels(spec).astype(float), labels(spec, data, day + 0.5).astype(float),
                              categorical=spec.categorical, target=spec.label)
    extra = tuple(FeatureFigure(name, metric, importances[name], None, False, spec.data_type(name))
                  for name in drift.ranking("current")
                  for metric, importances in ((BASELINE_IMPORTANCE, drift.reference),
                                              (PRODUCTION_IMPORTANCE, drift.current)))
    return SignalReport(signal.name, signal.kind, signal.breached, signal.figures + extra)


def signal_thresholds(signal: MonitorSignal):
    """The drift engine's Thresholds for a signal (its configured metrics; engine defaults for the rest)."""
    from adapters.drift import Thresholds

    return Thresholds(**{t.metric: t.threshold for t in signal.thresholds})


def run_name(monitor: str, run_at: datetime) -> str:
    return f"{monitor}-{run_at.strftime('%Y%m%d%H%M')}"


def breach_message(signals: list[str]) -> str:
    return f"Threshold breached: {', '.join(signals)}." if signals else ""


def catch_up(conn: sqlite3.Connection, now: datetime, names: list[str] | None = None) -> None:
    """Compute and store every run that is due by `now` (for `names`, or every enabled monitor)."""
    epoch_day = _epoch_day(conn)
    rows = conn.execute("SELECT name, definition, created_at, enabled FROM monitors").fetchall()
    for name, definition, created_at, enabled in rows:
        if (names is not None and name not in names) or not _enabled(conn, name, enabled):
            continue
        last = conn.execute("SELECT MAX(run_at) FROM monitor_runs WHERE monitor = ?", (name,)).fetchone()[0]
        spec = _spec_from_json(definition)
        for run_at in due_runs(_dt(last or created_at), now):
            run, figures = run_monitor(spec, run_at, epoch_day)
            moment = _iso(run_at)
            conn.execute("INSERT INTO monitor_runs (monitor, run_at, name, status, breached, breached_signals) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (name, moment, run.name, run.status, int(bool(run.breached)),
                                                      json.dumps(list(run.breached_signals))))
            conn.executemany(
                "INSERT INTO monitor_figures (monitor, run_at, signal, feature, metric, data_type, value, threshold, "
                "breached) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(name, moment, f["signal"], f["feature"], f["metric"], f["data_type"], f["value"], f["threshold"],
                  int(f["breached"])) for f in figures])


def breaches_since(conn: sqlite3.Connection, now: datetime, since: datetime
                   ) -> list[tuple[Monitor, MonitorRun, tuple[SignalReport, ...]]]:
    """Every run after `since` that breached a threshold, oldest first, with the figures of its
    breached signals (each figure's history: its value at the monitor's previous run, then now);
    the runs due by `now` are computed first. Runs at or before the epoch (the history a new demo
    starts with) are never news, whatever `since` says."""
    catch_up(conn, now)
    epoch = conn.execute("SELECT value FROM monitor_meta WHERE key = 'epoch'").fetchone()
    after = max(since, _dt(epoch[0])) if epoch else since
    found = []
    for row in conn.execute("SELECT * FROM monitor_runs WHERE run_at > ? AND breached = 1 ORDER BY run_at, monitor",
                            (_iso(after),)).fetchall():
        spec_row = conn.execute("SELECT name, definition, enabled FROM monitors WHERE name = ?",
                                (row["monitor"],)).fetchone()
        if spec_row is None:
            continue
        monitor, run = _monitor(conn, *spec_row), _run_from_row(row)
        before = conn.execute("SELECT MAX(run_at) FROM monitor_runs WHERE monitor = ? AND run_at < ?",
                              (monitor.name, row["run_at"])).fetchone()[0]
        signals = []
        for signal in monitor_spec(conn, monitor.name).signals:
            if signal.name not in run.breached_signals:
                continue
            earlier = {(r["feature"], r["metric"]): r["value"] for r in conn.execute(
                "SELECT feature, metric, value FROM monitor_figures WHERE monitor = ? AND run_at = ? AND signal = ?",
                (monitor.name, before, signal.name))} if before else {}
            figures = tuple(FeatureFigure(r["feature"], r["metric"], r["value"], r["threshold"], bool(r["breached"]),
                                          r["data_type"],
                                          ((earlier[(r["feature"], r["metric"])], r["value"])
                                           if (r["feature"], r["metric"]) in earlier else (r["value"],)))
                            for r in conn.execute("SELECT * FROM monitor_figures WHERE monitor = ? AND run_at = ? AND "
                                                  "signal = ? ORDER BY rowid", (monitor.name, row["run_at"],
                                                                                signal.name)))
            signals.append(SignalReport(signal.name, signal.kind, True, figures))
        found.append((monitor, run, tuple(signals)))
    return found


# ---------------------------------------------------------------- reading


def _run_from_row(row: sqlite3.Row) -> MonitorRun:
    signals = tuple(json.loads(row["breached_signals"]))
    return MonitorRun(row["name"], row["status"], _dt(row["run_at"]), bool(row["breached"]), signals,
                      breach_message(list(signals)))


def _schedule_text() -> str:
    return f"every 1 day at {RUN_AT.strftime('%H:%M')} UTC"


def _enabled(conn: sqlite3.Connection, name: str, enabled: int) -> bool:
    """A monitor with a schedule of the same name (the demo's fraud-model-monitor) runs while that schedule is
    enabled (`schedule disable fraud-model-monitor` pauses it, as on Azure, where the monitor *is* the schedule)."""
    row = conn.execute("SELECT enabled FROM schedules WHERE name = ?", (name,)).fetchone()
    return bool(row[0] if row is not None else enabled)


def _monitor(conn: sqlite3.Connection, name: str, definition: str, enabled: int) -> Monitor:
    spec = _spec_from_json(definition)
    last = conn.execute("SELECT * FROM monitor_runs WHERE monitor = ? ORDER BY run_at DESC LIMIT 1",
                        (name,)).fetchone()
    return Monitor(spec.name, spec.model, spec.endpoint, spec.signals, _schedule_text(),
                   _enabled(conn, name, enabled), _run_from_row(last) if last else None)


def list_monitors(conn: sqlite3.Connection, now: datetime) -> list[Monitor]:
    catch_up(conn, now)
    rows = conn.execute("SELECT name, definition, enabled FROM monitors ORDER BY name").fetchall()
    return [_monitor(conn, *row) for row in rows]


def monitor_spec(conn: sqlite3.Connection, name: str) -> MonitorSpec:
    row = conn.execute("SELECT definition FROM monitors WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound("monitor", name)
    return _spec_from_json(row[0])


def drift_report(conn: sqlite3.Connection, now: datetime, target: str, window_days: int) -> DriftReport:
    check_window(window_days)
    known = [_monitor(conn, *row) for row in conn.execute("SELECT name, definition, enabled FROM monitors")]
    name = resolve(known, target).name
    catch_up(conn, now, [name])
    row = conn.execute("SELECT name, definition, enabled FROM monitors WHERE name = ?", (name,)).fetchone()
    monitor = _monitor(conn, *row)
    spec = monitor_spec(conn, monitor.name)
    since = _iso(now - timedelta(days=window_days))
    runs = [_run_from_row(r) for r in conn.execute(
        "SELECT * FROM monitor_runs WHERE monitor = ? AND run_at >= ? ORDER BY run_at", (monitor.name, since))]
    latest = monitor.last_run
    if latest is None:
        return DriftReport(monitor, window_days, None, (), (), FIGURES_SOURCE,
                           "The monitor has not run yet: its first run is due at 03:00 UTC.")
    latest_at = _iso(latest.started_at)
    history: dict[tuple[str, str, str], list[float | None]] = {}
    for row in conn.execute("SELECT signal, feature, metric, value FROM monitor_figures WHERE monitor = ? AND "
                            "run_at >= ? AND run_at <= ? ORDER BY run_at", (monitor.name, since, latest_at)):
        history.setdefault((row["signal"], row["feature"], row["metric"]), []).append(row["value"])
    signals = []
    for signal in spec.signals:
        rows = conn.execute("SELECT * FROM monitor_figures WHERE monitor = ? AND run_at = ? AND signal = ? "
                            "ORDER BY rowid", (monitor.name, latest_at, signal.name)).fetchall()
        figures = tuple(FeatureFigure(r["feature"], r["metric"], r["value"], r["threshold"], bool(r["breached"]),
                                      r["data_type"],
                                      tuple(history.get((signal.name, r["feature"], r["metric"]), [r["value"]])))
                        for r in rows)
        signals.append(SignalReport(signal.name, signal.kind, signal.name in latest.breached_signals, figures))
    signals = [_with_importances(spec, s, latest.started_at, epoch_day=_epoch_day(conn)) for s in signals]
    source = FIGURES_SOURCE
    if spec.label and any(s.kind in LABELLED_KINDS for s in spec.signals):
        scored = latest.started_at.date() - timedelta(days=1 + spec.label_delay_days)
        source += (f"; model performance and feature attribution drift on the traffic of {scored.isoformat()}, "
                   f"whose labels ({spec.label}) arrive {spec.label_delay_days} days after scoring")
    return DriftReport(monitor, window_days, latest, tuple(runs), tuple(signals), source)
