"""Model performance and feature attribution drift (issue #22): the engine's figures equal
scikit-learn's definitions to 1e-9, on arrays and through `mlops-bot drift --labels` on files.

scikit-learn is the reference here only (the `test` extra); the bot computes with numpy. Averaging:
two classes -> the positive class (binary), more -> macro over every class seen; zero_division=0.
NDCG is Azure's feature attribution drift (Azure/azureml-assets,
assets/model_monitoring/components/src/feature_importance_metrics/compute_feature_attribution_drift.py,
commit 0d1c9d31ab191a2327a4c09408be77c3b9312817: `ndcg_score([baseline], [production])`, features by name).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sk

from adapters.azureml.monitoring import breach_sign
from adapters.drift import attribution_drift, model_performance
from adapters.drift.definitions import (
    ALL_METRICS, ATTRIBUTION_METRICS, BREACH_BELOW, DEFINITIONS, PERFORMANCE_METRICS, SHORT_NAMES, level_words,
)
from adapters.drift.errors import DriftInputError
from adapters.drift.performance import importance, ndcg
from tests.unit.test_drift_cli import run, write_csv

TOLERANCE = dict(rel=1e-9, abs=1e-12)


def figures(report) -> dict[str, float | None]:
    return {name: m.value for name, m in report.metrics.items()}


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", range(5))
def test_binary_figures_equal_scikit_learns_with_the_positive_class(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n) * 0.6 + labels * 0.3, 2)            # rounded: many tied scores
    predictions = (rng.random(n) < 0.5 + 0.3 * (labels * 2 - 1)).astype(int)
    got = figures(model_performance(labels, predictions, scores))
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predictions), **TOLERANCE)
    assert got["precision"] == pytest.approx(sk.precision_score(labels, predictions), **TOLERANCE)
    assert got["recall"] == pytest.approx(sk.recall_score(labels, predictions), **TOLERANCE)
    assert got["f1_score"] == pytest.approx(sk.f1_score(labels, predictions), **TOLERANCE)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(labels, scores), **TOLERANCE)


def test_text_classes_take_the_positive_label_given_or_the_greater():
    labels = ["no", "yes", "yes", "no", "yes", "no", "no"]
    predictions = ["no", "yes", "no", "no", "yes", "yes", "no"]
    scores = [0.1, 0.9, 0.4, 0.4, 0.8, 0.6, 0.2]
    report = model_performance(labels, predictions, scores)
    assert (report.positive_label, report.averaging) == ("yes", "binary, positive class 'yes'")
    assert figures(report)["precision"] == pytest.approx(sk.precision_score(labels, predictions, pos_label="yes"))
    assert figures(report)["auc"] == pytest.approx(sk.roc_auc_score([v == "yes" for v in labels], scores))
    other = model_performance(labels, predictions, [1 - s for s in scores], positive_label="no")
    assert figures(other)["recall"] == pytest.approx(sk.recall_score(labels, predictions, pos_label="no"),
                                                     **TOLERANCE)
    assert figures(other)["auc"] == pytest.approx(sk.roc_auc_score([v == "no" for v in labels],
                                                                   [1 - s for s in scores]), **TOLERANCE)


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_figures_are_scikit_learns_macro_averages(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 2000))
    labels = rng.choice(["cat", "dog", "fox"], n, p=[0.5, 0.3, 0.2])
    predictions = np.where(rng.random(n) < 0.6, labels, rng.choice(["cat", "dog", "fox", "owl"], n))
    report = model_performance(labels, predictions)
    got = figures(report)
    assert report.averaging == f"macro over {len(set(labels) | set(predictions))} classes"
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predictions), **TOLERANCE)
    for name, reference in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1_score", sk.f1_score)):
        assert got[name] == pytest.approx(reference(labels, predictions, average="macro", zero_division=0),
                                          **TOLERANCE), name
    assert got["auc"] is None
    assert report.metrics["auc"].undefined_reason == "no scores (give the positive class's score: --scores, " \
                                                     "or scores as predictions)"


def test_scores_given_as_predictions_are_cut_at_the_decision_threshold():
    labels = [0, 1, 1, 0, 1, 0, 0, 1]
    scores = [0.2, 0.7, 0.5, 0.55, 0.9, 0.1, 0.3, 0.45]
    report = model_performance(labels, scores)
    predicted = [int(s >= 0.5) for s in scores]
    assert figures(report)["recall"] == pytest.approx(sk.recall_score(labels, predicted), **TOLERANCE)
    assert figures(report)["auc"] == pytest.approx(sk.roc_auc_score(labels, scores), **TOLERANCE)
    assert report.notes == ("the predictions are the score of class '1': predicted '1' when at least 0.5",)
    stricter = model_performance(labels, scores, decision_threshold=0.6)
    assert figures(stricter)["recall"] == pytest.approx(sk.recall_score(labels, [int(s >= 0.6) for s in scores]))


def test_degenerate_inputs_give_defined_figures_or_reasons_never_nan():
    one_class = model_performance([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8])
    assert figures(one_class)["auc"] is None
    assert one_class.metrics["auc"].undefined_reason == "the labels hold one class only"
    nothing_predicted = model_performance([0, 1, 0], [0, 0, 0])
    assert figures(nothing_predicted)["precision"] == sk.precision_score([0, 1, 0], [0, 0, 0], zero_division=0) == 0
    missing = model_performance(["1", "", "0", None], ["1", "1", "", "0"])
    assert (missing.rows, missing.left_out) == (1, 3)
    assert missing.notes == ("3 rows without a label or a prediction left out",)
    empty = model_performance([None, None], ["1", "0"])
    assert all(m.value is None and m.undefined_reason == "no row has both a label and a prediction"
               for m in empty.metrics.values())
    with pytest.raises(DriftInputError, match="3 labels but 2 predictions"):
        model_performance([1, 0, 1], [1, 0])


# ---------------------------------------------------------------- regression


@pytest.mark.parametrize("seed", range(3))
def test_regression_figures_equal_scikit_learns(seed):
    rng = np.random.default_rng(200 + seed)
    labels = rng.normal(50, 10, 500)
    predictions = labels + rng.normal(0, 3, 500)
    report = model_performance(labels, predictions)
    assert report.task == "regression"
    assert figures(report)["mean_absolute_error"] == pytest.approx(sk.mean_absolute_error(labels, predictions),
                                                                   **TOLERANCE)
    assert figures(report)["mean_squared_error"] == pytest.approx(sk.mean_squared_error(labels, predictions),
                                                                  **TOLERANCE)
    assert figures(report)["root_mean_squared_error"] == pytest.approx(
        np.sqrt(sk.mean_squared_error(labels, predictions)), **TOLERANCE)
    whole = model_performance(np.round(labels), np.round(predictions), task="regression")   # whole numbers: asked
    assert figures(whole)["mean_absolute_error"] == pytest.approx(
        sk.mean_absolute_error(np.round(labels), np.round(predictions)), **TOLERANCE)


# ---------------------------------------------------------------- feature attribution drift


@pytest.mark.parametrize("seed", range(6))
def test_ndcg_is_scikit_learns_ndcg_score_ties_included(seed):
    rng = np.random.default_rng(300 + seed)
    k = int(rng.integers(2, 12))
    relevance = rng.random(k)
    scores = np.round(rng.random(k), 1)                 # ties among the current importances
    assert ndcg(list(relevance), list(scores)) == pytest.approx(sk.ndcg_score([relevance], [scores]), **TOLERANCE)
    assert ndcg([0.0] * k, list(scores)) == sk.ndcg_score([[0.0] * k], [scores]) == 0.0


def test_importances_are_absolute_correlation_and_the_correlation_ratio():
    rng = np.random.default_rng(7)
    target = rng.normal(size=400)
    x = -0.5 * target + rng.normal(size=400)
    assert importance(x, target) == pytest.approx(abs(np.corrcoef(x, target)[0, 1]), **TOLERANCE)
    groups = rng.choice(["a", "b", "c"], 400)
    shifted = target + (groups == "a") * 1.5
    means = {g: shifted[groups == g].mean() for g in "abc"}
    between = sum((groups == g).sum() * (means[g] - shifted.mean()) ** 2 for g in "abc")
    eta = np.sqrt(between / ((shifted - shifted.mean()) ** 2).sum())
    assert importance(groups, shifted, categorical=True) == pytest.approx(eta, **TOLERANCE)
    assert importance(np.ones(10), rng.normal(size=10)) == 0.0          # no variance: no importance


def test_attribution_drift_is_ndcg_of_importances_sorted_by_feature_name():
    rng = np.random.default_rng(11)
    n = 1000
    reference = {"b": rng.normal(size=n), "a": rng.normal(size=n), "c": rng.choice(["x", "y"], n)}
    current = {"b": rng.normal(size=n), "a": rng.normal(size=n), "c": rng.choice(["x", "y"], n)}
    ref_target = 2 * reference["a"] + 0.5 * reference["b"] + rng.normal(size=n)
    cur_target = 0.2 * current["a"] + 2 * current["b"] + (current["c"] == "x") + rng.normal(size=n)
    drift = attribution_drift(reference, current, ["b", "a", "c"], ref_target, cur_target, categorical=["c"])
    names = ["a", "b", "c"]
    expected = sk.ndcg_score([[drift.reference[f] for f in names]], [[drift.current[f] for f in names]])
    assert drift.metric.value == pytest.approx(expected, **TOLERANCE)
    assert drift.metric.breached == (expected < 0.9)
    assert drift.ranking("reference")[0] == "a" and drift.ranking("current")[0] == "b"


def test_attribution_without_labels_is_undefined_with_its_reason_not_a_number():
    rng = np.random.default_rng(1)
    table = {"a": rng.normal(size=50), "b": rng.normal(size=50)}
    drift = attribution_drift(table, table, ["a", "b"], rng.normal(size=50), np.full(50, np.nan))
    assert drift.metric.value is None and not drift.metric.breached
    assert drift.metric.undefined_reason == "the current data has fewer than two labelled rows"


def test_every_metric_is_defined_named_and_breaches_the_way_azure_monitoring_says():
    for name in ALL_METRICS + PERFORMANCE_METRICS + ATTRIBUTION_METRICS:
        assert DEFINITIONS[name] and SHORT_NAMES[name]
        assert breach_sign(name) == ("<" if name in BREACH_BELOW else ">"), name
    assert level_words("accuracy", 0.84, 0.85) == "slightly below threshold"
    assert level_words("accuracy", 0.75, 0.85) == "clearly below threshold"
    assert level_words("normalized_discounted_cumulative_gain", 0.6, 0.9) == "far below threshold"
    assert level_words("root_mean_squared_error", 1.1, 1.0) == "slightly above threshold"
    assert level_words("auc", 0.9, 0.85) == "within threshold"


# ---------------------------------------------------------------- mlops-bot drift --labels


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(21)
    tables = {}
    for name, concept in (("reference", 0.0), ("current", 1.0)):
        n = 1500
        a, b = rng.normal(size=n), rng.normal(size=n)
        c = rng.choice(["x", "y", "z"], n)
        logit = (2 - 1.7 * concept) * a + (0.3 + 1.7 * concept) * b + (c == "x")
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        score = np.round(1 / (1 + np.exp(-(2 * a + 0.3 * b))), 3)
        columns = {"a": [f"{v:.4f}" for v in a], "b": [f"{v:.4f}" for v in b], "c": list(c),
                   "label": [str(v) for v in label], "score": [f"{v:.3f}" for v in score],
                   "predicted": [str(int(v >= 0.5)) for v in score]}
        columns["label"][:5] = [""] * 5                        # labels not arrived yet
        tables[name] = columns
    return (write_csv(tmp_path / "reference.csv", tables["reference"]),
            write_csv(tmp_path / "current.csv", tables["current"]), tables)


def _known(table: dict[str, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = [i for i, v in enumerate(table["label"]) if v != ""]
    pick = lambda column, kind: np.array([kind(table[column][i]) for i in keep])  # noqa: E731
    return pick("label", int), pick("predicted", int), pick("score", float)


def test_cli_performance_and_attribution_agree_with_scikit_learn(labelled, capsys):
    ref_path, cur_path, tables = labelled
    status, out, err = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), "--features", "a,b,c",
                           "--labels", "label", "--predictions", "predicted", "--scores", "score", "--json")
    assert (status, err) == (0, "")
    document = json.loads(out)
    assert sorted(f["name"] for f in document["features"]) == ["a", "b", "c"]      # drift figures as before
    for which in ("reference", "current"):
        found = document["model_performance"][which]
        y, p, s = _known(tables[which])
        assert (found["task"], found["averaging"], found["rows"], found["left_out"]) == (
            "classification", "binary, positive class '1'", len(y), 5)
        assert found["metrics"]["accuracy"] == pytest.approx(sk.accuracy_score(y, p), **TOLERANCE)
        assert found["metrics"]["precision"] == pytest.approx(sk.precision_score(y, p), **TOLERANCE)
        assert found["metrics"]["recall"] == pytest.approx(sk.recall_score(y, p), **TOLERANCE)
        assert found["metrics"]["f1_score"] == pytest.approx(sk.f1_score(y, p), **TOLERANCE)
        assert found["metrics"]["auc"] == pytest.approx(sk.roc_auc_score(y, s), **TOLERANCE)
        assert "sklearn.metrics.roc_auc_score" in found["definitions"]["auc"]
    attribution = document["feature_attribution_drift"]
    names = ["a", "b", "c"]
    expected = sk.ndcg_score([[attribution["reference_importance"][f] for f in names]],
                             [[attribution["current_importance"][f] for f in names]])
    assert attribution["value"] == pytest.approx(expected, **TOLERANCE)
    assert attribution["breached"] is True and attribution["threshold"] == 0.9
    y_ref = np.array([float(v) if v else np.nan for v in tables["reference"]["label"]])
    a_ref = np.array([float(v) for v in tables["reference"]["a"]])
    known = np.isfinite(y_ref)
    assert attribution["reference_importance"]["a"] == pytest.approx(
        abs(np.corrcoef(a_ref[known], y_ref[known])[0, 1]), **TOLERANCE)


def test_cli_table_states_each_figures_definition_and_the_change(labelled, capsys):
    ref_path, cur_path, _ = labelled
    status, out, _ = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), "--features", "a,b,c",
                         "--labels", "label", "--predictions", "score")
    assert status == 0
    assert "Model performance, classification (binary, positive class '1'):" in out
    assert "metric     reference  current  change   threshold" in out
    assert "Feature attribution drift: NDCG " in out and "reference ranking: a " in out
    legend = " ".join(out.split())
    for name in ("accuracy", "precision", "recall", "f1_score", "auc", "normalized_discounted_cumulative_gain"):
        assert f"{name}: " in legend
    assert "the predictions are the score of class '1': predicted '1' when at least 0.5" in out


def test_cli_regression_figures(tmp_path, capsys):
    rng = np.random.default_rng(5)
    tables = []
    for name in ("r", "c"):
        x = rng.normal(size=300)
        y = 3 * x + rng.normal(size=300)
        p = 3 * x + (0.5 if name == "c" else 0)
        tables.append(write_csv(tmp_path / f"{name}.csv", {"x": [f"{v:.5f}" for v in x], "y": [f"{v:.5f}" for v in y],
                                                           "p": [f"{v:.5f}" for v in p]}))
    status, out, _ = run(capsys, "--reference", str(tables[0]), "--current", str(tables[1]), "--labels", "y",
                         "--predictions", "p", "--json")
    assert status == 0
    found = json.loads(out)["model_performance"]["current"]
    data = np.loadtxt(tables[1], delimiter=",", skiprows=1)
    assert found["task"] == "regression"
    assert found["metrics"]["mean_absolute_error"] == pytest.approx(sk.mean_absolute_error(data[:, 1], data[:, 2]),
                                                                    **TOLERANCE)
    assert found["metrics"]["root_mean_squared_error"] == pytest.approx(
        np.sqrt(sk.mean_squared_error(data[:, 1], data[:, 2])), **TOLERANCE)


@pytest.mark.parametrize("argv, message", [
    (("--predictions", "score"), "mlops-bot drift: --predictions needs --labels (the ground truth column)"),
    (("--labels", "label"), "mlops-bot drift: --labels needs --predictions (the model's output column)"),
    (("--labels", "labl", "--predictions", "score"), "has no column 'labl'; did you mean 'label'?"),
    (("--labels", "label", "--predictions", "score", "--positive-label", "7"),
     "the positive class '7' is not among the classes ('0', '1')"),
    (("--labels", "c", "--predictions", "label", "--positive-label", "x"), "--positive-label applies to two classes"),
])
def test_cli_bad_model_flags_get_one_line_and_status_2(labelled, capsys, argv, message):
    ref_path, cur_path, _ = labelled
    status, out, err = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), *argv)
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert message in err
