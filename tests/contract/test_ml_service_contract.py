"""The `MLService` contract: behaviours every implementation shares, whatever data it holds.

Each test takes the `ml` fixture (tests/contract/conftest.py), parametrised over IMPLEMENTATIONS.
Tests look the data up through the service itself instead of assuming the demo's names, and skip
when the workspace has nothing of the kind they need.
"""

from __future__ import annotations

import pytest

from adapters.service import (
    JOB_STATUSES, STAGES, Compute, Conflict, EndpointMetrics, InvalidRequest, Job, MLService, ModelVersion,
    NotFound, OnlineEndpoint, Operation, Schedule, Unavailable, WorkspaceInfo,
)

MISSING = "no-such-name-7q2x"


def served_endpoint(ml: MLService) -> OnlineEndpoint:
    """The first online endpoint with at least one deployment (skips the test if there is none)."""
    for endpoint in ml.list_endpoints():
        full = ml.get_endpoint(endpoint.name)
        if full.deployments:
            return full
    pytest.skip("the workspace has no online endpoint with deployments")


def numeric_versions(models: list[ModelVersion]) -> list[int] | None:
    return [int(m.version) for m in models] if all(m.version.isdigit() for m in models) else None


# ---------------------------------------------------------------- basics


def test_is_an_ml_service(ml):
    assert isinstance(ml, MLService)
    info = ml.workspace()
    assert isinstance(info, WorkspaceInfo)
    assert info.name and info.backend in ("local", "azure")


def test_names_of_an_unknown_kind_is_invalid(ml):
    with pytest.raises(InvalidRequest):
        ml.names("banana")


# ---------------------------------------------------------------- models


def test_list_models_gives_one_named_version_per_model(ml):
    models = ml.list_models()
    assert all(isinstance(m, ModelVersion) and m.name and m.version for m in models)
    assert len({m.name for m in models}) == len(models)
    assert set(ml.names("model")) >= {m.name for m in models}


def test_get_model_without_version_is_the_newest_listed_version(ml):
    for model in ml.list_models():
        versions = ml.list_models(model.name)
        assert versions and {v.name for v in versions} == {model.name}
        numbers = numeric_versions(versions)
        if numbers is not None:
            assert numbers == sorted(numbers, reverse=True)
        latest = ml.get_model(model.name)
        assert (latest.name, latest.version) == (model.name, versions[0].version)
        assert ml.get_model(model.name, versions[-1].version).ref == versions[-1].ref


def test_stage_filter_returns_only_that_stage_case_insensitively(ml):
    for stage in STAGES:
        models = ml.list_models(stage=stage)
        assert all(m.stage.lower() == stage.lower() for m in models)
        assert [m.ref for m in ml.list_models(stage=stage.upper())] == [m.ref for m in models]


def test_unknown_stage_is_rejected_and_nothing_changes(ml):
    models = ml.list_models()
    if not models:
        pytest.skip("no models")
    before = ml.get_model(models[0].name, models[0].version)
    with pytest.raises(InvalidRequest) as caught:
        ml.set_model_stage(before.name, before.version, "Prod-ish")
    assert all(stage in caught.value.message for stage in STAGES)
    assert ml.get_model(before.name, before.version).stage == before.stage


# ---------------------------------------------------------------- not found


NOT_FOUND_CALLS = {
    "model": lambda ml: ml.get_model(MISSING),
    "endpoint": lambda ml: ml.get_endpoint(MISSING),
    "batch_endpoint": lambda ml: ml.list_batch_jobs(MISSING),
    "job": lambda ml: ml.get_job(MISSING),
    "schedule": lambda ml: ml.disable_schedule(MISSING),
    "compute": lambda ml: ml.start_compute(MISSING),
}


@pytest.mark.parametrize("kind", sorted(NOT_FOUND_CALLS))
def test_unknown_names_raise_not_found_with_kind_and_name(ml, kind):
    with pytest.raises(NotFound) as caught:
        NOT_FOUND_CALLS[kind](ml)
    assert (caught.value.kind, caught.value.name) == (kind, MISSING)
    assert MISSING in caught.value.message


def test_unknown_model_version_raises_not_found(ml):
    models = ml.list_models()
    if not models:
        pytest.skip("no models")
    with pytest.raises(NotFound) as caught:
        ml.get_model(models[0].name, "987654")
    assert caught.value.kind == "model"


# ---------------------------------------------------------------- online endpoints


def test_listed_endpoints_have_consistent_traffic(ml):
    endpoints = ml.list_endpoints()
    assert set(ml.names("endpoint")) >= {e.name for e in endpoints}
    for listed in endpoints:
        endpoint = ml.get_endpoint(listed.name)
        assert isinstance(endpoint, OnlineEndpoint) and endpoint.name == listed.name
        deployments = {d.name for d in endpoint.deployments}
        assert all(d.endpoint == endpoint.name for d in endpoint.deployments)
        assert sum(endpoint.traffic.values()) in (0, 100)
        assert set(endpoint.traffic) <= deployments
        assert set(endpoint.mirror_traffic) <= deployments


def test_traffic_not_summing_to_100_is_rejected_and_nothing_changes(ml):
    endpoint = served_endpoint(ml)
    first = endpoint.deployments[0].name
    with pytest.raises(InvalidRequest) as caught:
        ml.set_traffic(endpoint.name, {first: 60})
    assert "100" in caught.value.message
    assert ml.get_endpoint(endpoint.name).traffic == endpoint.traffic


@pytest.mark.parametrize("percent", [-10, 110])
def test_traffic_outside_0_to_100_is_rejected(ml, percent):
    endpoint = served_endpoint(ml)
    with pytest.raises(InvalidRequest):
        ml.set_traffic(endpoint.name, {endpoint.deployments[0].name: percent})
    assert ml.get_endpoint(endpoint.name).traffic == endpoint.traffic


def test_traffic_to_an_unknown_deployment_raises_not_found(ml):
    endpoint = served_endpoint(ml)
    with pytest.raises(NotFound) as caught:
        ml.set_traffic(endpoint.name, {MISSING: 100})
    assert caught.value.kind == "deployment" and caught.value.name.endswith(MISSING)
    assert ml.get_endpoint(endpoint.name).traffic == endpoint.traffic


def test_traffic_on_an_unknown_endpoint_raises_not_found(ml):
    with pytest.raises(NotFound) as caught:
        ml.set_traffic(MISSING, {"blue": 100})
    assert (caught.value.kind, caught.value.name) == ("endpoint", MISSING)


def test_set_traffic_replaces_the_split(ml):
    endpoint = served_endpoint(ml)
    mirrored = set(endpoint.mirror_traffic)
    target = next((d.name for d in endpoint.deployments if d.name not in mirrored), None)
    if target is None:
        pytest.skip("every deployment receives mirrored traffic")
    operation = ml.set_traffic(endpoint.name, {target: 100})
    assert isinstance(operation, Operation)
    summary = operation.wait(None)
    assert isinstance(summary, str) and endpoint.name in summary
    after = ml.get_endpoint(endpoint.name).traffic
    assert after[target] == 100 and sum(after.values()) == 100


@pytest.mark.parametrize("count", [0, 21])
def test_scaling_outside_1_to_20_is_rejected(ml, count):
    endpoint = served_endpoint(ml)
    deployment = endpoint.deployments[0]
    with pytest.raises(InvalidRequest):
        ml.scale_deployment(endpoint.name, deployment.name, count)
    assert ml.get_endpoint(endpoint.name).deployments[0].instance_count == deployment.instance_count


def test_scaling_an_unknown_deployment_raises_not_found(ml):
    endpoint = served_endpoint(ml)
    with pytest.raises(NotFound) as caught:
        ml.scale_deployment(endpoint.name, MISSING, 2)
    assert caught.value.kind == "deployment"


def test_endpoint_metrics_describe_that_endpoint(ml):
    endpoint = served_endpoint(ml)
    try:
        metrics = ml.endpoint_metrics(endpoint.name, 30)
    except Unavailable as error:         # a backend without a metrics source says so
        pytest.skip(f"no metrics: {error.message}")
    assert isinstance(metrics, EndpointMetrics)
    assert (metrics.endpoint, metrics.window_minutes) == (endpoint.name, 30)
    assert metrics.error_rate is None or 0 <= metrics.error_rate <= 1


# ---------------------------------------------------------------- jobs


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_list_jobs_is_limited_newest_first_and_top_level(ml, limit):
    jobs = ml.list_jobs(limit=limit)
    assert len(jobs) <= limit
    assert all(isinstance(j, Job) and j.name and not j.parent for j in jobs)
    assert all(j.status in JOB_STATUSES for j in jobs)
    created = [j.created_at for j in jobs if j.created_at is not None]
    assert created == sorted(created, reverse=True)


def test_status_filter_is_case_insensitive(ml):
    for status in ("Completed", "Failed", "Running"):
        jobs = ml.list_jobs(status=status.lower(), limit=50)
        assert all(j.status == status for j in jobs)


def test_listed_jobs_can_be_fetched_and_named(ml):
    jobs = ml.list_jobs(limit=10)
    assert set(ml.names("job")) >= {j.name for j in jobs}
    for job in jobs:
        fetched = ml.get_job(job.name)
        assert (fetched.name, fetched.status) == (job.name, job.status)
        assert all(child.parent == job.name for child in fetched.children)


def test_cancelling_a_finished_job_is_a_conflict(ml):
    finished = next((j for j in ml.list_jobs(limit=50) if j.terminal), None)
    if finished is None:
        pytest.skip("no finished job")
    with pytest.raises(Conflict) as caught:
        ml.cancel_job(finished.name)
    assert finished.status in caught.value.message
    assert ml.get_job(finished.name).status == finished.status


# ---------------------------------------------------------------- schedules, compute, batch


def test_schedules_and_compute_are_named(ml):
    schedules = ml.list_schedules()
    assert all(isinstance(s, Schedule) and s.trigger in ("cron", "recurrence") for s in schedules)
    assert set(ml.names("schedule")) >= {s.name for s in schedules}
    compute = ml.list_compute()
    assert all(isinstance(c, Compute) and c.type and c.state for c in compute)
    assert set(ml.names("compute")) >= {c.name for c in compute}


def test_batch_endpoints_are_named(ml):
    endpoints = ml.list_batch_endpoints()
    assert set(ml.names("batch_endpoint")) >= {e.name for e in endpoints}
    for endpoint in endpoints:
        assert endpoint.default_deployment in endpoint.deployments + ("",)


def test_a_batch_endpoint_comes_with_its_deployments(ml):
    for listed in ml.list_batch_endpoints():
        found = ml.get_batch_endpoint(listed.name)
        assert (found.name, found.default_deployment, found.deployments) == (
            listed.name, listed.default_deployment, listed.deployments)
        assert [d.name for d in found.details] == list(found.deployments)
        assert all(d.endpoint == listed.name and d.model and d.compute for d in found.details)
    with pytest.raises(NotFound) as caught:
        ml.get_batch_endpoint(MISSING)
    assert (caught.value.kind, caught.value.name) == ("batch_endpoint", MISSING)


# ---------------------------------------------------------------- model monitoring


def test_monitors_are_named_with_signals_and_a_last_run(ml):
    from adapters.service import MONITOR_SIGNAL_KINDS, Monitor

    monitors = ml.list_monitors()
    if not monitors:
        pytest.skip("the workspace has no monitors")
    assert [m.name for m in monitors] == sorted(m.name for m in monitors)
    for monitor in monitors:
        assert isinstance(monitor, Monitor) and monitor.signals
        assert all(s.kind in MONITOR_SIGNAL_KINDS and s.thresholds for s in monitor.signals)
        assert monitor.last_run is not None and monitor.last_run.status == "Completed"
        assert monitor.last_run.breached in (True, False)


def test_drift_report_of_a_monitor_found_by_its_endpoint(ml):
    monitor = next((m for m in ml.list_monitors() if m.endpoint), None)
    if monitor is None:
        pytest.skip("the workspace has no monitor of an endpoint")
    report = ml.drift_report(monitor.endpoint_name, 7)
    assert report.monitor.name == monitor.name
    assert report.latest == monitor.last_run
    assert [s.name for s in report.signals] == [s.name for s in monitor.signals]
    assert bool(any(s.figures for s in report.signals)) != bool(report.figures_note)


def test_drift_report_refuses_unknown_targets_and_bad_windows(ml):
    with pytest.raises(NotFound):
        ml.drift_report(MISSING, 7)
    with pytest.raises(InvalidRequest):
        ml.drift_report(MISSING, 0)
