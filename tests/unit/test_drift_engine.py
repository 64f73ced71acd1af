"""The drift engine agrees with independent computations (scipy, numpy, closed forms) to 1e-9.

Each expected figure is computed here straight from DESIGN.md section 4's definition on the raw
values (scipy.stats.wasserstein_distance, np.histogram, scipy's jensenshannon, ks_2samp,
chi2_contingency), never through the engine's own helpers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from adapters.drift import compare, feature_drift, prediction_drift, psi_band
from adapters.drift.columns import NUMBER_PATTERN
from adapters.drift.errors import MissingColumn, UnsupportedColumn

TOLERANCE = dict(rel=1e-9, abs=1e-12)


def expected_numerical(r: np.ndarray, c: np.ndarray) -> dict[str, float]:
    r = r[np.isfinite(r)]
    c = c[np.isfinite(c)]
    k = math.ceil(math.log2(min(r.size, c.size)) + 1)
    lo, hi = min(r.min(), c.min()), max(r.max(), c.max())
    count_r, _ = np.histogram(r, bins=k, range=(lo, hi))
    count_c, _ = np.histogram(c, bins=k, range=(lo, hi))
    p = (count_r + 1) / (r.size + k)
    q = (count_c + 1) / (c.size + k)
    return {
        "normalized_wasserstein_distance": stats.wasserstein_distance(r, c) / max(np.std(r), 0.001),
        "jensen_shannon_distance": jensenshannon(count_r, count_c, base=2),
        "population_stability_index": float(np.sum((q - p) * np.log(q / p))),
        "two_sample_kolmogorov_smirnov_test": stats.ks_2samp(r, c).pvalue,
    }


def expected_categorical(r: list, c: list) -> dict[str, float]:
    r = [v for v in r if v is not None]
    c = [v for v in c if v is not None]
    categories = sorted(set(r) | set(c))
    count_r = np.array([Counter(r)[k] for k in categories])
    count_c = np.array([Counter(c)[k] for k in categories])
    k = len(categories)
    p = (count_r + 1) / (len(r) + k)
    q = (count_c + 1) / (len(c) + k)
    return {
        "jensen_shannon_distance": jensenshannon(count_r, count_c, base=2),
        "population_stability_index": float(np.sum((q - p) * np.log(q / p))),
        "pearsons_chi_squared_test": stats.chi2_contingency([count_r, count_c], correction=False).pvalue,
    }


def values(feature) -> dict[str, float | None]:
    return {name: metric.value for name, metric in feature.metrics.items()}


def assert_matches(feature, expected: dict[str, float]) -> None:
    got = values(feature)
    for name, value in expected.items():
        assert got[name] == pytest.approx(float(value), **TOLERANCE), name


# ---------------------------------------------------------------- numerical, against scipy


@pytest.mark.parametrize("n_r, n_c, seed", [(3000, 2000, 1), (10_000, 10_000, 2), (12_000, 30_001, 3),
                                            (7, 5, 4), (1, 1, 5)])
def test_numerical_figures_match_scipy(n_r, n_c, seed):
    # Both KS branches: exact (≤ 10,000 values per side) and asymptotic (above).
    rng = np.random.default_rng(seed)
    r, c = rng.normal(10, 2, n_r), rng.normal(10.3, 2.5, n_c)
    assert_matches(feature_drift("x", r, c), expected_numerical(r, c))


def test_numerical_figures_match_scipy_with_ties_and_nulls():
    rng = np.random.default_rng(11)
    r = rng.poisson(4, 40_000).astype(float)
    c = rng.poisson(6, 25_000).astype(float)
    c[1:40:5] = 50.0  # beyond anything in the reference
    r[::17] = np.nan
    c[::5] = np.nan
    feature = feature_drift("visits", r, c)
    assert_matches(feature, expected_numerical(r, c))
    assert feature.metrics["null_value_rate"].value == pytest.approx(5000 / 25_000, **TOLERANCE)
    present = c[np.isfinite(c)]
    outside = np.count_nonzero((present < np.nanmin(r)) | (present > np.nanmax(r)))
    assert feature.metrics["out_of_bounds_rate"].value == pytest.approx(outside / present.size, **TOLERANCE)
    assert outside > 0


def test_closed_forms():
    # Two point masses 3 apart, reference std 1: W = 3, normalised 3 / 1.
    feature = feature_drift("x", np.array([0.0, 2.0]), np.array([3.0, 5.0]))
    assert feature.metrics["normalized_wasserstein_distance"].value == pytest.approx(3.0, **TOLERANCE)
    # Identical samples: every distance 0, p-values 1.
    same = feature_drift("x", np.arange(100.0), np.arange(100.0))
    assert values(same) | {} == {
        "normalized_wasserstein_distance": 0.0, "jensen_shannon_distance": 0.0, "population_stability_index": 0.0,
        "two_sample_kolmogorov_smirnov_test": 1.0, "null_value_rate": 0.0, "out_of_bounds_rate": 0.0}
    # Disjoint categories: Jensen-Shannon distance (base 2) is exactly 1.
    disjoint = feature_drift("x", ["a"] * 10, ["b"] * 10)
    assert disjoint.metrics["jensen_shannon_distance"].value == pytest.approx(1.0, **TOLERANCE)
    # PSI by hand, two categories: p = (3/6, 3/6)... r = a×4, b×0 -> p = (5/6, 1/6); c = a×0, b×4 -> q = (1/6, 5/6).
    psi = 2 * (5 / 6 - 1 / 6) * math.log(5)
    assert feature_drift("x", ["a"] * 4, ["b"] * 4).metrics["population_stability_index"].value == \
        pytest.approx(psi, **TOLERANCE)


# ---------------------------------------------------------------- categorical, against scipy


def test_categorical_figures_match_scipy():
    rng = np.random.default_rng(21)
    r = list(rng.choice(["paris", "lyon", "nice", "lille"], 5000, p=[0.4, 0.3, 0.2, 0.1]))
    c = list(rng.choice(["paris", "lyon", "nice", "brest"], 4000, p=[0.3, 0.3, 0.3, 0.1]))
    c[:100] = [None] * 100
    feature = feature_drift("city", r, c)
    assert feature.kind == "categorical"
    assert_matches(feature, expected_categorical(r, c))
    assert feature.metrics["null_value_rate"].value == pytest.approx(100 / 4000, **TOLERANCE)
    brest = sum(1 for v in c[100:] if v == "brest")
    assert feature.metrics["out_of_bounds_rate"].value == pytest.approx(brest / 3900, **TOLERANCE)


def test_numbers_named_categorical_are_compared_as_strings():
    r = np.array([1, 2, 2, 3, 3, 3], dtype=float)
    c = np.array([1, 1, 2, 3, 4, 4], dtype=float)
    feature = feature_drift("rating", r, c, categorical=True)
    assert feature.kind == "categorical"
    assert_matches(feature, expected_categorical([str(int(v)) for v in r], [str(int(v)) for v in c]))
    assert feature.metrics["out_of_bounds_rate"].value == pytest.approx(2 / 6, **TOLERANCE)


# ---------------------------------------------------------------- thresholds, bands, order


def test_thresholds_and_breaches_follow_azure_defaults():
    rng = np.random.default_rng(5)
    feature = feature_drift("x", rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000))
    nwd = feature.metrics["normalized_wasserstein_distance"]
    assert (nwd.threshold, nwd.breached, feature.drifted) == (0.1, True, True)
    ks = feature.metrics["two_sample_kolmogorov_smirnov_test"]
    assert (ks.threshold, ks.breached) == (0.05, True)
    assert "log base 2" in feature.metrics["jensen_shannon_distance"].definition
    assert "natural log" in feature.metrics["population_stability_index"].definition
    psi = feature.metrics["population_stability_index"]
    assert psi.band == psi_band(psi.value)
    assert [psi_band(v) for v in (0.0, 0.0999, 0.1, 0.25, 0.2501)] == \
        ["none", "none", "moderate", "moderate", "significant"]


def test_report_is_worst_first_and_json_safe():
    rng = np.random.default_rng(8)
    reference = {"calm": rng.normal(0, 1, 2000), "wild": rng.normal(0, 1, 2000), "mild": rng.normal(0, 1, 2000),
                 "empty": np.full(2000, np.nan), "plan": ["a", "b"] * 1000}
    current = {"calm": rng.normal(0, 1, 2000), "wild": rng.normal(2, 1, 2000), "mild": rng.normal(0.3, 1, 2000),
               "empty": np.full(2000, np.nan), "plan": ["a", "b", "c", "c"] * 500}
    report = compare(reference, current)
    assert [f.name for f in report.features] == ["wild", "plan", "mild", "calm", "empty"]
    document = report.to_dict()
    json.dumps(document, allow_nan=False)  # never NaN shown as a number
    assert document["summary"]["drifted_features"] == ["wild", "plan", "mild"]
    assert document["features"][-1]["metrics"]["normalized_wasserstein_distance"] is None


def test_prediction_drift_is_the_same_computation_on_outputs():
    rng = np.random.default_rng(9)
    scores_r, scores_c = rng.beta(2, 5, 3000), rng.beta(2.5, 5, 3000)
    drift = prediction_drift(scores_r, scores_c)
    assert drift.name == "prediction" and drift.kind == "numerical"
    assert_matches(drift, expected_numerical(scores_r, scores_c))
    classes = prediction_drift(["fraud", "ok", "ok"] * 100, ["fraud", "fraud", "ok"] * 100, categorical=True)
    assert_matches(classes, expected_categorical(["fraud", "ok", "ok"] * 100, ["fraud", "fraud", "ok"] * 100))


# ---------------------------------------------------------------- degenerate columns


def test_empty_columns_are_undefined_not_nan():
    feature = feature_drift("x", np.array([]), np.array([]))
    assert set(values(feature).values()) == {None}
    assert feature.metrics["null_value_rate"].undefined_reason == "no current rows"
    assert feature.drifted is False


def test_all_null_current_has_a_null_rate_of_one_and_undefined_distances():
    feature = feature_drift("x", np.array([1.0, 2.0, 3.0]), np.array([np.nan, np.nan]))
    assert values(feature) == {
        "normalized_wasserstein_distance": None, "jensen_shannon_distance": None,
        "population_stability_index": None, "two_sample_kolmogorov_smirnov_test": None,
        "null_value_rate": 1.0, "out_of_bounds_rate": None}
    assert feature.metrics["jensen_shannon_distance"].undefined_reason == "no current values (all missing)"
    assert feature.metrics["null_value_rate"].breached is True


def test_all_null_reference_makes_every_current_value_out_of_bounds():
    feature = feature_drift("x", [None, None, ""], ["1.5", "2", None, None])
    assert feature.kind == "numerical"
    assert values(feature)["out_of_bounds_rate"] == 1.0
    assert values(feature)["null_value_rate"] == 0.5
    assert feature.metrics["normalized_wasserstein_distance"].undefined_reason.startswith("no reference values")
    assert any("decided the kind" in note for note in feature.notes)


def test_constant_reference_divides_by_the_floor():
    r, c = np.full(50, 4.0), np.array([4.0] * 40 + [5.0] * 10)
    feature = feature_drift("x", r, c)
    assert feature.metrics["normalized_wasserstein_distance"].value == pytest.approx(
        stats.wasserstein_distance(r, c) / 0.001, **TOLERANCE)
    assert_matches(feature, expected_numerical(r, c))
    assert any("zero variance" in note for note in feature.notes)


def test_same_constant_on_both_sides():
    r, c = np.full(30, 7.0), np.full(20, 7.0)
    feature = feature_drift("x", r, c)
    assert_matches(feature, expected_numerical(r, c))  # np.histogram widens the empty range by 0.5
    assert values(feature)["jensen_shannon_distance"] == 0.0
    assert values(feature)["two_sample_kolmogorov_smirnov_test"] == 1.0


def test_single_category():
    feature = feature_drift("country", ["FR"] * 30, ["FR"] * 20)
    assert values(feature) == {"jensen_shannon_distance": 0.0, "population_stability_index": 0.0,
                               "pearsons_chi_squared_test": 1.0, "null_value_rate": 0.0,
                               "out_of_bounds_rate": 0.0}
    assert any("one category" in note for note in feature.notes)


def test_values_too_large_to_compare_are_undefined():
    feature = feature_drift("x", np.array([-1e308, 1e308]), np.array([1e308, -1e308, 0.0]))
    document = json.dumps(feature.to_dict(), allow_nan=False)
    assert "not finite" in document
    assert feature.metrics["two_sample_kolmogorov_smirnov_test"].value is not None


# ---------------------------------------------------------------- mixed types


def test_a_column_is_numerical_when_every_reference_value_parses():
    feature = feature_drift("x", ["1", "2.5", "", "1e1", None], ["3", "4"])
    assert feature.kind == "numerical"
    assert_matches(feature, expected_numerical(np.array([1, 2.5, 10.0]), np.array([3.0, 4.0])))
    assert feature_drift("x", ["1", "2", "two"], ["1", "2"]).kind == "categorical"


def test_non_numbers_in_a_numerical_current_column_are_out_of_bounds():
    feature = feature_drift("x", np.array([1.0, 2.0, 3.0]), ["2", "oops", "", "n/a!", "9"])
    assert feature.kind == "numerical"
    assert values(feature)["null_value_rate"] == pytest.approx(1 / 5, **TOLERANCE)
    assert values(feature)["out_of_bounds_rate"] == pytest.approx(3 / 4, **TOLERANCE)  # oops, n/a!, 9
    assert_matches(feature, expected_numerical(np.array([1.0, 2.0, 3.0]), np.array([2.0, 9.0])))
    assert feature.notes == ("2 current values are not a number (counted as out of bounds)",)


def test_mixed_python_types_are_compared_as_strings():
    feature = feature_drift("x", [1, "a", None, 2.5], ["a", 1, 1])
    assert feature.kind == "categorical"
    assert_matches(feature, expected_categorical(["1", "a", "2.5"], ["a", "1", "1"]))


def test_number_pattern_agrees_with_arrow():
    import pyarrow.compute as pc

    samples = ["1", "1.", ".5", "-.5", "+1", "1e5", "1E+05", "1e", "e5", " 1", "1 ", "nan", "NaN", "inf",
               "-Infinity", "0x10", "1_000", "1,5", "--1", "١", "", ".", "+", "1.2.3", "nan(1)", "1e+", "iNf"]
    for text in samples:
        try:
            pc.cast(pa.array([text]), pa.float64())
            arrow = True
        except pa.ArrowInvalid:
            arrow = False
        assert pc.match_substring_regex(pa.array([text]), NUMBER_PATTERN)[0].as_py() == arrow, text


# ---------------------------------------------------------------- errors and imports


def test_named_errors():
    with pytest.raises(MissingColumn, match="current data has no column 'b'"):
        compare({"a": [1.0], "b": [2.0]}, {"a": [1.0]})
    with pytest.raises(UnsupportedColumn, match="'x' has type list"):
        feature_drift("x", pa.array([[1], [2]]), pa.array([[1]]))


def test_importing_the_bot_loads_no_heavy_library():
    code = ("import sys, bot.app, bot.cli, adapters.drift; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_threads_give_the_same_report():
    rng = np.random.default_rng(12)
    reference = {"a": rng.normal(0, 1, 60_000), "b": rng.exponential(1, 60_000), "c": ["x", "y", "z"] * 20_000}
    current = {"a": rng.normal(0.2, 1, 60_000), "b": rng.exponential(1.1, 60_000), "c": ["x", "y", "y"] * 20_000}
    assert compare(reference, current, workers=3).to_dict() == compare(reference, current, workers=1).to_dict()


def test_the_engine_is_a_leaf_package():
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "adapters" / "drift"
    for module in package.glob("*.py"):
        for line in module.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in ("bot", "commands", "botbuilder", "aiohttp"), (module.name, line)


def test_every_name_the_drift_package_exports_resolves_to_its_module():
    """The package loads its engine's names on first use (adapters/drift/__init__.py `__getattr__`):
    each exported name must resolve, and to the object of the module that defines it."""
    import importlib

    import adapters.drift as drift
    for name in drift.__all__:
        value = getattr(drift, name)
        home = importlib.import_module(getattr(value, "__module__", "adapters.drift.definitions"))
        assert getattr(home, name, value) is value, name
