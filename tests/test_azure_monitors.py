"""Monitors on Azure ML: monitor schedules and their runs read through a real MLClient over replay."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.azureml.workspace import AzureMLService
from adapters.service import MetricThreshold, NotFound
from commands.alerts.monitoring import drift_card, monitors_card
from commands.base.ui import as_text
from tests.card_schema import assert_valid_card
from tests.replay import FakeWorkspace, ml_client

SCHEDULE = "fraud-model-monitor"


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)       # the day of the replayed monitor's latest run


def service(breached: bool = True) -> tuple[FakeWorkspace, AzureMLService]:
    workspace = FakeWorkspace()
    workspace.seed_monitor(breached=breached)
    svc = AzureMLService(ml_client(workspace.transport))
    svc.clock = lambda: NOW
    return workspace, svc


def test_monitor_schedules_become_monitors_with_signals_and_thresholds():
    workspace, svc = service()
    [monitor] = svc.list_monitors()              # the job schedules (nightly-train, weekly-eval) are not monitors
    assert (monitor.name, monitor.endpoint, monitor.schedule, monitor.enabled) == (
        SCHEDULE, "fraud-api/blue", "every 1 day at 03:00 UTC", True)
    assert [(s.name, s.kind) for s in monitor.signals] == [
        ("data-drift", "data_drift"), ("prediction-drift", "prediction_drift"), ("data-quality", "data_quality")]
    drift, _, quality = monitor.signals
    assert drift.thresholds == (MetricThreshold("normalized_wasserstein_distance", 0.1, "numerical"),
                                MetricThreshold("jensen_shannon_distance", 0.1, "categorical"))
    assert set(quality.thresholds) == {MetricThreshold("null_value_rate", 0.01, "numerical"),
                                       MetricThreshold("out_of_bounds_rate", 0.02, "numerical"),
                                       MetricThreshold("null_value_rate", 0.01, "categorical"),
                                       MetricThreshold("out_of_bounds_rate", 0.02, "categorical")}
    assert drift.features == ("transaction_amount", "merchant_category", "customer_age", "hour_of_day", "country")
    assert drift.lookback_days == 1
    assert monitor.last_run.name == "fraud-model-monitor-202603100300"
    assert (monitor.last_run.breached, monitor.last_run.breached_signals) == (True, ("data-drift",))
    [runs] = [r for r in workspace.transport.sent("GET", r"/jobs$")]
    assert runs.query["scheduled"] == ["true"] and runs.query["scheduleId"] == [SCHEDULE]


def test_a_run_without_the_breach_tag_is_within_thresholds():
    _, svc = service(breached=False)
    [monitor] = svc.list_monitors()
    assert (monitor.last_run.status, monitor.last_run.breached) == ("Completed", False)


def test_drift_report_reads_the_figures_azures_components_logged_in_mlflow():
    workspace, svc = service()
    report = svc.drift_report("fraud-api", 7)
    assert report.monitor.name == SCHEDULE
    assert [r.name for r in report.runs] == ["fraud-model-monitor-202603080300", "fraud-model-monitor-202603090300",
                                             "fraud-model-monitor-202603100300"]
    assert report.latest.breached is True
    drift, prediction, quality = report.signals
    assert (drift.name, drift.breached, prediction.breached, quality.breached) == ("data-drift", True, False, False)
    assert [(f.feature, f.metric, f.value, f.threshold, f.breached, f.data_type, f.history) for f in drift.figures] == [
        ("merchant_category", "jensen_shannon_distance", 0.197, 0.1, True, "categorical", (0.15, 0.169, 0.197)),
        ("transaction_amount", "normalized_wasserstein_distance", 0.0322, 0.1, False, "numerical", (0.036, 0.037, 0.0322)),
        ("customer_age", "normalized_wasserstein_distance", 0.05, 0.1, False, "numerical", (0.041, 0.021, 0.05))]
    assert [(f.feature, f.metric, f.value) for f in quality.figures] == [("country", "null_value_rate", 0.00267)]
    assert "their format, which may change" in report.figures_source and report.figures_note == ""
    search = workspace.transport.sent("POST", r"/api/2\.0/mlflow/runs/search$")[0]
    assert search.host == "westeurope.api.azureml.ms"
    assert search.body["experiment_ids"] == ["9d5e2c1b-4a3f-4e6d-8c7b-1a2b3c4d5e6f"]
    assert search.body["filter"] == "tags.`azureml.monitor_name` = 'fraud-model-monitor'"
    assert report.studio_url == ("https://ml.azure.com/monitoring?wsid=/subscriptions/00000000-1111-2222-3333-"
                                 "444444444444/resourcegroups/rg-mlops/workspaces/ws-prod")
    card = drift_card(report, workspace="Workspace ws-prod (prod)")
    assert_valid_card(card)
    assert {"type": "Action.OpenUrl", "title": "Open in Azure ML studio", "url": report.studio_url} in card["actions"]
    text = card["fallbackText"]
    assert "merchant_category (categorical)  JSD 0.197 > 0.1  ▆▇█" in text
    assert "MLflow runs of Azure's monitoring components" in text
    assert_valid_card(monitors_card(svc.list_monitors(), workspace="Workspace ws-prod (prod)"))


def test_without_readable_figures_the_report_keeps_the_outcome_and_says_why():
    workspace, svc = service()
    workspace.transport.fail("POST", r"/api/2\.0/mlflow/runs/search$", 403, "AuthorizationFailed",
                             "The identity may not read runs.")
    report = svc.drift_report("fraud-model-monitor", 7)
    assert report.latest.breached is True and report.latest.breached_signals == ("data-drift",)
    assert [(s.name, s.breached, s.figures) for s in report.signals] == [
        ("data-drift", True, ()), ("prediction-drift", False, ()), ("data-quality", False, ())]
    assert report.figures_note.startswith("Per-feature figures could not be read from Azure's monitoring components")
    assert "azureml.group_0" in report.figures_note and "may change" in report.figures_note
    card = drift_card(report, workspace="Workspace ws-prod (prod)")
    assert_valid_card(card)
    assert "Latest run: threshold breached: data-drift" in card["fallbackText"]


def test_no_logged_figures_is_said_plainly():
    workspace, svc = service()
    workspace.mlflow_runs.clear()
    report = svc.drift_report("fraud-model-monitor", 7)
    assert report.figures_note.startswith("No per-feature figures were found for this monitor.")
    assert all(s.figures == () for s in report.signals)


def test_an_unwatched_target_is_not_found_with_a_suggestion():
    _, svc = service()
    with pytest.raises(NotFound, match="Did you mean `fraud-model-monitor`"):
        svc.drift_report("fraud-model-monitr", 7)


@pytest.fixture
async def azure_teams(aiohttp_server, settings):
    from concurrent.futures import ThreadPoolExecutor

    from adapters.nonblocking import NonBlockingService
    from bot.app import create_app
    from commands.base.context import Workspaces
    from tests.replay import demo_azure
    from tests.teams_client import TeamsStandIn

    pool = ThreadPoolExecutor(max_workers=4)
    fake, svc = demo_azure()
    svc.clock = lambda: NOW
    workspaces = Workspaces([NonBlockingService(svc, name="ml-prod", environment="prod", pool=pool, timeout=10)])
    server = await aiohttp_server(create_app(settings, workspaces=workspaces))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        yield fake, teams
    pool.shutdown(wait=False, cancel_futures=True)


async def test_drift_and_monitors_over_http_on_azure(azure_teams):
    fake, teams = azure_teams
    [reply] = await teams.say("drift fraud-api --window 7d")
    assert_valid_card(reply.card)
    text = reply.card["fallbackText"]
    assert reply.card["body"][0]["text"] == "Drift of fraud-model-monitor on fraud-api/blue"
    assert "Latest run: threshold breached: data-drift" in text
    assert "merchant_category (categorical)  JSD 0.197 > 0.1  ▆▇█" in text
    assert any(a.get("type") == "Action.OpenUrl" for a in reply.card["actions"])
    status, body = await teams.click(reply.card, "All monitors")
    assert status == 200
    posted = teams.connector.sent[-1].card          # navigation posts its answer as a new message
    assert "1 monitor, 1 breached at the last run." in posted["fallbackText"]


# ---------------------------------------------------------------- issue #16: breaches as Azure decides them

def _monitor_with(workspace: FakeWorkspace, **signals: dict) -> None:
    """Add signals (REST bodies) to the replayed monitor schedule."""
    [schedule] = [r for r in workspace.resources.values() if r.get("name") == SCHEDULE]
    schedule["properties"]["action"]["monitorDefinition"]["signals"].update(signals)


def _latest_run(workspace: FakeWorkspace) -> str:
    return workspace.schedule_jobs[SCHEDULE][-1]


def test_lower_is_worse_metrics_signal_wide_figures_and_a_failed_breaching_run():
    """NDCG 0.62 against 0.8 and accuracy 0.71 against 0.85 breach (Azure's evaluator: below the
    threshold); their figures have no group_0 (signal-wide); the pipeline ended Failed."""
    from tests.replay import azure_breach_message, child_run, load, mlflow_metric_run

    workspace, svc = service()
    # feature attribution drift and model performance signals, serialized by azure-ai-ml (SOURCES.md)
    _monitor_with(workspace, **load("ml/handwritten/schedules/monitor_signals_attribution_performance.json"))
    workspace.mlflow_runs += [
        mlflow_metric_run("feature-attribution", "NormalizedDiscountedCumulativeGain", "", [0.91, 0.7, 0.62], 0.8),
        mlflow_metric_run("model-performance", "Accuracy", "", [0.9, 0.88, 0.71], 0.85),
    ]
    latest = _latest_run(workspace)
    [run] = [r for r in workspace.resources.values() if r.get("name") == latest]
    run["properties"]["status"] = "Failed"
    attribution = child_run(f"{latest}-fad", latest, "Failed", "feature-attribution evaluate metrics threshold")
    attribution["tags"] = {"azureml_modelmonitor_threshold_breached": azure_breach_message(
        "feature-attribution", [("", "NormalizedDiscountedCumulativeGain", 0.62, 0.8)])}
    performance = child_run(f"{latest}-mp", latest, "Completed", "model-performance evaluate metrics threshold")
    performance["tags"] = {"azureml_modelmonitor_threshold_breached": azure_breach_message(
        "model-performance", [("", "Accuracy", 0.71, 0.85)])}
    workspace.child_runs[latest] = [attribution, performance]

    [monitor] = svc.list_monitors()
    thresholds = {s.name: s.thresholds for s in monitor.signals}
    assert thresholds["feature-attribution"] == (
        MetricThreshold("normalized_discounted_cumulative_gain", 0.8, "all_feature_types"),)
    assert MetricThreshold("accuracy", 0.85, "") in thresholds["model-performance"]
    assert (monitor.last_run.status, monitor.last_run.breached, monitor.last_run.breached_signals) == (
        "Failed", True, ("feature-attribution", "model-performance"))

    report = svc.drift_report(SCHEDULE, 7)
    by_name = {s.name: s for s in report.signals}
    assert [(f.feature, f.metric, f.value, f.threshold, f.breached, f.history)
            for f in by_name["feature-attribution"].figures] == [
        ("", "normalized_discounted_cumulative_gain", 0.62, 0.8, True, (0.91, 0.7, 0.62))]
    assert [(f.metric, f.value, f.breached) for f in by_name["model-performance"].figures] == [
        ("accuracy", 0.71, True)]
    assert (by_name["feature-attribution"].breached, by_name["model-performance"].breached,
            by_name["data-drift"].breached) == (True, True, False)
    card = drift_card(report, workspace="Workspace ws-prod (prod)")
    assert_valid_card(card)
    words = card["fallbackText"]
    assert "Latest run: threshold breached: feature-attribution, model-performance" in words
    # signal-wide figures: one row per metric, its short name defined in the legend (issue #22), level in words
    assert "NDCG 0.62 < 0.8" in words and "accuracy 0.71 < 0.85" in words
    assert "NDCG far below threshold" in words and "accuracy clearly below threshold" in words
    assert "NDCG = `normalized_discounted_cumulative_gain`: normalized discounted cumulative gain" in as_text(card)


def test_a_breached_signal_is_named_exactly_not_by_substring():
    workspace, svc = service()
    [schedule] = [r for r in workspace.resources.values() if r.get("name") == SCHEDULE]
    signals = schedule["properties"]["action"]["monitorDefinition"]["signals"]
    _monitor_with(workspace, drift=dict(signals["data-drift"]))          # a signal named `drift`
    [monitor] = svc.list_monitors()
    assert "drift" in [s.name for s in monitor.signals]
    assert monitor.last_run.breached_signals == ("data-drift",)           # the tag names data-drift only


def test_the_breach_tag_as_azures_own_unit_test_spells_it():
    from adapters.azureml.monitoring import BreachedSignal, BreachRow, parse_breach_tag
    from tests.replay import azure_breach_message, load

    messages = load("monitoring/breach_tag_messages.json")
    assert parse_breach_tag(messages["with_group"]) == (BreachedSignal("name", (BreachRow("1", "metics", 4.6, 5.6),)),)
    assert parse_breach_tag(messages["without_group"]) == (
        BreachedSignal("name", (BreachRow("", "metics", 4.6, 5.6),)),)
    # the replay's helper writes exactly what Azure writes
    assert azure_breach_message("name", [("1", "metics", 4.6, 5.6)]) == messages["with_group"]
    assert azure_breach_message("name", [("", "metics", 4.6, 5.6)]) == messages["without_group"]
    # older components put `group` first; two signals' messages joined; not Azure's text at all
    older = messages["with_group"].replace('{"metric_value":4.6,"metric_name":"metics","threshold_value":5.6,'
                                           '"group":"1"}', '{"group":"amount","metric_value":0.3,'
                                           '"metric_name":"PopulationStabilityIndex","threshold_value":0.25}')
    both = older + messages["without_group"].replace("'name'", "'data-quality'")
    assert [(b.signal, [(r.feature, r.metric, r.value) for r in b.rows]) for b in parse_breach_tag(both)] == [
        ("name", [("amount", "population_stability_index", 0.3)]), ("data-quality", [("", "metics", 4.6)])]
    assert parse_breach_tag("true") == () and parse_breach_tag(None) == ()
    cut = messages["with_group"][:-20]                                    # a truncated tag keeps its signal
    assert [b.signal for b in parse_breach_tag(cut)] == ["name"]


def test_azures_metric_names_and_which_way_they_breach():
    from adapters.azureml.monitoring import LOWER_IS_WORSE, breaches, metric_name

    assert [metric_name(n) for n in ("MeanAbsoluteError", "MAE", "RMSE", "TwoSampleKolmogorovSmirnovTest",
                                     "normalizedWassersteinDistance", "null_value_rate", "F1Score")] == [
        "mean_absolute_error", "mean_absolute_error", "root_mean_squared_error", "two_sample_kolmogorov_smirnov_test",
        "normalized_wasserstein_distance", "null_value_rate", "f1_score"]
    # Metric_Value_Should_Greater_Than_Threshold (Azure/azureml-assets evaluate_metrics_threshold.py) with
    # Accuracy, Precision and Recall (in that list from #1919 until #2869; see adapters/azureml/monitoring.py)
    assert LOWER_IS_WORSE == {
        "two_sample_kolmogorov_smirnov_test", "pearsons_chi_squared_test", "normalized_discounted_cumulative_gain",
        "aggregated_coherence_pass_rate", "aggregated_groundedness_pass_rate", "aggregated_fluency_pass_rate",
        "aggregated_similarity_pass_rate", "aggregated_relevance_pass_rate", "average_coherence_score",
        "average_groundedness_score", "average_fluency_score", "average_relevance_score",
        "average_similarity_score", "accuracy", "precision", "recall",
        "f1_score", "auc"}          # not Azure's: the bot's own performance figures, higher is better (issue #22)
    assert [breaches("NormalizedDiscountedCumulativeGain", 0.62, 0.8), breaches("Accuracy", 0.71, 0.85),
            breaches("accuracy", 0.9, 0.85), breaches("MeanAbsoluteError", 0.9, 0.5),
            breaches("AggregatedGroundednessPassRate", 0.6, 0.7), breaches("NormalizedWassersteinDistance", 0.05, 0.1)
            ] == [True, True, False, True, True, False]
