"""Monitors on Azure ML: monitor schedules and their runs read through a real MLClient over replay."""

from __future__ import annotations

import pytest

from adapters.azureml import AzureMLService
from adapters.service import MetricThreshold, NotFound
from commands.monitoring import drift_card, monitors_card
from tests.card_schema import assert_valid_card
from tests.replay import FakeWorkspace, ml_client

SCHEDULE = "fraud-model-monitor"


def service(breached: bool = True) -> tuple[FakeWorkspace, AzureMLService]:
    workspace = FakeWorkspace()
    workspace.seed_monitor(breached=breached)
    return workspace, AzureMLService(ml_client(workspace.transport))


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


def test_drift_report_gives_the_outcome_and_says_why_there_are_no_figures():
    _, svc = service()
    report = svc.drift_report("fraud-api", 7)
    assert report.monitor.name == SCHEDULE
    assert report.latest.breached is True
    assert [(s.name, s.breached, s.figures) for s in report.signals] == [
        ("data-drift", True, ()), ("prediction-drift", False, ()), ("data-quality", False, ())]
    assert "azureml.group_0" in report.figures_note and "may change" in report.figures_note
    assert report.studio_url == ("https://ml.azure.com/monitoring?wsid=/subscriptions/00000000-1111-2222-3333-"
                                 "444444444444/resourcegroups/rg-mlops/workspaces/ws-prod")
    card = drift_card(report, workspace="Workspace ws-prod (prod)")
    assert_valid_card(card)
    assert {"type": "Action.OpenUrl", "title": "Open in Azure ML studio", "url": report.studio_url} in card["actions"]
    assert "Latest run: threshold breached: data-drift" in card["fallbackText"]
    assert_valid_card(monitors_card(svc.list_monitors(), workspace="Workspace ws-prod (prod)"))


def test_an_unwatched_target_is_not_found_with_a_suggestion():
    _, svc = service()
    with pytest.raises(NotFound, match="Did you mean `fraud-model-monitor`"):
        svc.drift_report("fraud-model-monitr", 7)
