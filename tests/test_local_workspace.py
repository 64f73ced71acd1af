"""The embedded local workspace over its demo data, with an injected clock (Monday 2025-03-10 09:30 UTC)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from adapters.local.schema import SCHEMA_VERSION
from adapters.local.workspace import LocalWorkspace
from adapters.service import Conflict, InvalidRequest, NotFound, ServiceError
from tests.conftest import Clock

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "workspace.db"


@pytest.fixture
def ws(db, clock):
    with LocalWorkspace(db, clock=clock) as workspace:
        yield workspace


def traffic(ws: LocalWorkspace, endpoint: str) -> dict[str, int]:
    return ws.get_endpoint(endpoint).traffic


def instances(ws: LocalWorkspace, endpoint: str) -> dict[str, int]:
    return {d.name: d.instance_count for d in ws.get_endpoint(endpoint).deployments}


def statuses(ws: LocalWorkspace, job: str) -> tuple[str, list[tuple[str, str]]]:
    found = ws.get_job(job)
    return found.status, [(c.display_name, c.status) for c in found.children]


# ---------------------------------------------------------------- the demo


def test_workspace_info(ws, db):
    info = ws.workspace()
    assert (info.name, info.environment, info.backend, info.location) == ("ml-prod", "prod", "local", "westeurope")
    assert str(db) not in info.description          # a server path is nobody's business in chat


def test_names_and_defaults_can_be_overridden(db):
    with LocalWorkspace(db, name="ml-dev", environment="dev") as dev:
        assert (dev.workspace().name, dev.workspace().environment) == ("ml-dev", "dev")


def test_latest_version_of_every_model(ws):
    assert [m.ref for m in ws.list_models()] == ["churn-model:3", "credit-risk:3", "demand-forecast:2",
                                                 "fraud-model:4"]


def test_all_versions_of_a_model_newest_first(ws):
    models = ws.list_models("fraud-model")
    assert [(m.ref, m.stage) for m in models] == [
        ("fraud-model:4", "Staging"), ("fraud-model:3", "Production"),
        ("fraud-model:2", "Archived"), ("fraud-model:1", "Archived")]
    assert models[1].metrics == {"auc": 0.941, "precision": 0.87, "recall": 0.75}
    assert models[1].tags["framework"] == "lightgbm"
    assert models[0].created_at == NOW - timedelta(days=2)
    assert models[0].created_by == "Bob Nguyen"


def test_stage_filters_are_case_insensitive(ws):
    assert [m.ref for m in ws.list_models(stage="production")] == [
        "churn-model:2", "credit-risk:2", "demand-forecast:1", "fraud-model:3"]
    assert [m.ref for m in ws.list_models("fraud-model", stage="ARCHIVED")] == ["fraud-model:2", "fraud-model:1"]
    assert [m.ref for m in ws.list_models(stage="None")] == ["churn-model:3", "demand-forecast:2"]
    assert ws.list_models("churn-model", stage="Staging") == []


def test_get_model(ws):
    assert ws.get_model("fraud-model").ref == "fraud-model:4"
    assert ws.get_model("credit-risk", "2").stage == "Production"
    with pytest.raises(NotFound) as caught:
        ws.get_model("fraud-model", "9")
    assert (caught.value.kind, caught.value.name) == ("model", "fraud-model:9")
    assert caught.value.message == "Model fraud-model has no version 9 (versions: 1, 2, 3, 4)."
    with pytest.raises(NotFound) as caught:
        ws.list_models("fraud-modle")
    assert (caught.value.kind, caught.value.name) == ("model", "fraud-modle")


def test_versions_order_numerically(ws, db):
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO models (name, version, stage, description, tags, metrics, created_at, created_by, "
                     "path) VALUES ('fraud-model', '10', 'None', '', '{}', '{}', ?, 'Bob Nguyen', '')",
                     (NOW.isoformat(),))
    assert [m.version for m in ws.list_models("fraud-model")] == ["10", "4", "3", "2", "1"]
    assert ws.get_model("fraud-model").version == "10"


def test_online_endpoints(ws):
    fraud = ws.get_endpoint("fraud-api")
    assert fraud.traffic == {"blue": 90, "green": 10}
    assert fraud.scoring_uri == "https://fraud-api.westeurope.inference.ml.azure.com/score"
    assert [(d.name, d.model, d.instance_type, d.instance_count) for d in fraud.deployments] == [
        ("blue", "fraud-model:3", "Standard_DS3_v2", 3), ("green", "fraud-model:4", "Standard_DS3_v2", 1)]
    credit = ws.get_endpoint("credit-api")
    assert (credit.traffic, credit.mirror_traffic) == ({"blue": 100, "shadow": 0}, {"shadow": 20})
    assert [e.name for e in ws.list_endpoints()] == ["churn-api", "credit-api", "fraud-api"]


def test_batch_endpoints(ws):
    assert [(b.name, b.default_deployment, b.deployments) for b in ws.list_batch_endpoints()] == [
        ("churn-batch", "nightly", ("nightly", "candidate")), ("forecast-batch", "weekly", ("weekly",))]


def test_jobs_newest_first_top_level_only(ws):
    assert [j.name for j in ws.list_jobs(limit=5)] == [
        "quiet_lamp_2m8vq4xk", "brave_orchid_4n6tj1pc", "amber_river_7d3kq9wz", "frosty_kettle_8k2x9q7m",
        "neat_pepper_2q5hx4jv"]
    jobs = ws.list_jobs(limit=100)
    assert len(jobs) == 12 and all(not j.parent for j in jobs)
    assert {j.status for j in jobs} == {"Queued", "Running", "Completed", "Failed", "Canceled"}
    assert ws.list_jobs(limit=0) == []


def test_status_filter(ws):
    assert [j.name for j in ws.list_jobs(status="failed")] == ["frosty_kettle_8k2x9q7m", "silver_yak_9p4wm2ze"]
    assert [j.name for j in ws.list_jobs(status="RUNNING")] == ["brave_orchid_4n6tj1pc", "amber_river_7d3kq9wz"]
    with pytest.raises(InvalidRequest) as caught:
        ws.list_jobs(status="Done")
    assert "Completed" in caught.value.message


def test_failed_pipeline_shows_its_steps(ws):
    job = ws.get_job("frosty_kettle_8k2x9q7m")
    assert (job.type, job.display_name, job.experiment, job.compute) == (
        "pipeline", "train-fraud-pipeline", "fraud-training", "cpu-cluster")
    assert job.error.startswith("Step evaluate_model failed: AssertionError: holdout AUC 0.912")
    assert [(c.display_name, c.status) for c in job.children] == [
        ("prep_data", "Completed"), ("train_model", "Completed"), ("evaluate_model", "Failed"),
        ("register_model", "Canceled")]
    assert all(c.parent == "frosty_kettle_8k2x9q7m" for c in job.children)
    assert ws.get_job("silver_yak_9p4wm2ze").error.startswith("Execution failed. User process 'python' exited")


def test_schedules_and_compute(ws):
    assert [(s.name, s.enabled, s.trigger, s.expression) for s in ws.list_schedules()] == [
        ("credit-risk-retrain", False, "cron", "0 4 1 * *"),
        ("fraud-model-monitor", True, "recurrence", "every 1 day at 03:00"),
        ("nightly-churn-retrain", True, "cron", "0 2 * * *"),
        ("weekly-demand-forecast", True, "recurrence", "every 1 week on Monday at 06:00"),
        ("weekly-fraud-retrain", True, "cron", "0 3 * * 0")]
    compute = {c.name: c for c in ws.list_compute()}
    assert (compute["cpu-cluster"].type, compute["cpu-cluster"].state, compute["cpu-cluster"].size) == (
        "amlcompute", "Succeeded", "Standard_DS3_v2")
    assert (compute["cpu-cluster"].min_nodes, compute["cpu-cluster"].max_nodes,
            compute["cpu-cluster"].current_nodes) == (0, 4, 0)
    assert (compute["ds-ci-alice"].type, compute["ds-ci-alice"].state) == ("computeinstance", "Running")
    assert set(compute) == {"cpu-cluster", "train-cluster", "gpu-cluster", "ds-ci-alice", "ds-ci-bob"}


def test_names(ws):
    assert ws.names("model") == ["churn-model", "credit-risk", "demand-forecast", "fraud-model"]
    assert ws.names("deployment") == [
        "churn-api/blue", "churn-batch/candidate", "churn-batch/nightly", "credit-api/blue", "credit-api/shadow",
        "forecast-batch/weekly", "fraud-api/blue", "fraud-api/green"]
    assert "shy_tiger_6w1kr8pz" in ws.names("job")          # pipeline steps too
    with pytest.raises(InvalidRequest):
        ws.names("models")


# ---------------------------------------------------------------- traffic and scale


def test_set_traffic(ws):
    operation = ws.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert (operation.kind, operation.target) == ("traffic", "endpoint fraud-api")
    assert traffic(ws, "fraud-api") == {"blue": 50, "green": 50}        # applied before wait
    assert operation.wait(None) == "Traffic on fraud-api is now blue=50 green=50."
    assert operation.wait() == "Traffic on fraud-api is now blue=50 green=50."


def test_omitted_deployments_get_zero(ws):
    assert ws.set_traffic("fraud-api", {"green": 100}).wait(None) == "Traffic on fraud-api is now blue=0 green=100."
    assert traffic(ws, "fraud-api") == {"blue": 0, "green": 100}


@pytest.mark.parametrize("split, message", [
    ({"blue": 90, "green": 20}, "Traffic must sum to 100, got 110."),
    ({"blue": 90}, "Traffic must sum to 100, got 90."),
    ({}, "Traffic must sum to 100, got 0."),
    ({"blue": 110, "green": -10}, "Traffic for blue must be a whole number from 0 to 100, got 110."),
    ({"blue": 90.0, "green": 10}, "Traffic for blue must be a whole number from 0 to 100, got 90.0."),
])
def test_invalid_splits_change_nothing(ws, split, message):
    with pytest.raises(InvalidRequest) as caught:
        ws.set_traffic("fraud-api", split)
    assert caught.value.message == message
    assert traffic(ws, "fraud-api") == {"blue": 90, "green": 10}


def test_traffic_to_an_unknown_deployment(ws):
    with pytest.raises(NotFound) as caught:
        ws.set_traffic("fraud-api", {"blue": 50, "purple": 50})
    assert (caught.value.kind, caught.value.name) == ("deployment", "fraud-api/purple")
    assert caught.value.message == "Endpoint fraud-api has no deployment named 'purple' (it has: blue, green)."
    assert traffic(ws, "fraud-api") == {"blue": 90, "green": 10}
    with pytest.raises(NotFound) as caught:
        ws.set_traffic("fraud-apy", {"blue": 100})
    assert (caught.value.kind, caught.value.name) == ("endpoint", "fraud-apy")


def test_a_mirrored_deployment_cannot_take_live_traffic(ws):
    with pytest.raises(InvalidRequest) as caught:
        ws.set_traffic("credit-api", {"blue": 50, "shadow": 50})
    assert "mirror" in caught.value.message
    assert traffic(ws, "credit-api") == {"blue": 100, "shadow": 0}


def test_scale_deployment(ws):
    operation = ws.scale_deployment("churn-api", "blue", 4)
    assert operation.wait(None) == "Deployment blue on churn-api now runs 4 instances of Standard_F4s_v2 (was 2)."
    assert instances(ws, "churn-api") == {"blue": 4}


@pytest.mark.parametrize("count", [0, 21, -1, True, 2.5])
def test_scale_outside_1_to_20_changes_nothing(ws, count):
    with pytest.raises(InvalidRequest) as caught:
        ws.scale_deployment("fraud-api", "green", count)
    assert caught.value.message.startswith("Instance count must be a whole number from 1 to 20")
    assert instances(ws, "fraud-api") == {"blue": 3, "green": 1}


def test_scale_unknown_deployment(ws):
    with pytest.raises(NotFound) as caught:
        ws.scale_deployment("fraud-api", "red", 2)
    assert (caught.value.kind, caught.value.name) == ("deployment", "fraud-api/red")


# ---------------------------------------------------------------- models


def test_set_model_stage(ws):
    promoted = ws.set_model_stage("fraud-model", "4", "production")
    assert (promoted.ref, promoted.stage) == ("fraud-model:4", "Production")
    assert [m.ref for m in ws.list_models(stage="Production") if m.name == "fraud-model"] == ["fraud-model:4"]
    assert ws.get_model("fraud-model", "3").stage == "Production"     # no automatic archiving, as in SDK v2


def test_unknown_stage_changes_nothing(ws):
    with pytest.raises(InvalidRequest) as caught:
        ws.set_model_stage("fraud-model", "4", "Live")
    assert caught.value.message == "Unknown stage 'Live'; use one of None, Staging, Production, Archived."
    assert ws.get_model("fraud-model", "4").stage == "Staging"
    with pytest.raises(NotFound):
        ws.set_model_stage("fraud-model", "7", "Production")


# ---------------------------------------------------------------- jobs


def test_cancel_a_finished_job_is_a_conflict(ws):
    with pytest.raises(Conflict) as caught:
        ws.cancel_job("sunny_mango_0c4vy6tb")
    assert caught.value.message == "Job sunny_mango_0c4vy6tb is already Completed."
    with pytest.raises(Conflict, match="already Failed"):
        ws.cancel_job("frosty_kettle_8k2x9q7m")
    with pytest.raises(NotFound):
        ws.cancel_job("no_such_job")


def test_cancel_a_running_pipeline_cancels_its_pending_steps(ws):
    operation = ws.cancel_job("brave_orchid_4n6tj1pc")
    assert operation.wait(None) == "Job brave_orchid_4n6tj1pc is now Canceled (and 3 pending steps)."
    assert statuses(ws, "brave_orchid_4n6tj1pc") == ("Canceled", [
        ("prep_data", "Completed"), ("train_model", "Canceled"), ("evaluate_model", "Canceled"),
        ("register_model", "Canceled")])
    assert ws.get_job("brave_orchid_4n6tj1pc").ended_at == NOW


def test_cancel_a_queued_job(ws, clock):
    assert ws.cancel_job("quiet_lamp_2m8vq4xk").wait(None) == "Job quiet_lamp_2m8vq4xk is now Canceled."
    clock.advance(hours=3)                       # a canceled job never starts
    job = ws.get_job("quiet_lamp_2m8vq4xk")
    assert (job.status, job.started_at, job.ended_at) == ("Canceled", None, NOW)


def test_jobs_move_through_states_as_the_clock_advances(ws, clock):
    assert statuses(ws, "brave_orchid_4n6tj1pc")[0] == "Running"
    clock.advance(minutes=21)
    assert statuses(ws, "brave_orchid_4n6tj1pc") == ("Running", [
        ("prep_data", "Completed"), ("train_model", "Completed"), ("evaluate_model", "Running"),
        ("register_model", "Queued")])
    clock.advance(minutes=9)
    pipeline = ws.get_job("brave_orchid_4n6tj1pc")
    assert (pipeline.status, pipeline.ended_at) == ("Completed", NOW + timedelta(minutes=28))
    clock.advance(minutes=25)                    # 55 minutes in: the GPU cluster moved on to the queued job
    assert ws.get_job("amber_river_7d3kq9wz").status == "Completed"
    queued = ws.get_job("quiet_lamp_2m8vq4xk")
    assert (queued.status, queued.started_at) == ("Running", NOW + timedelta(minutes=50))
    assert [j.name for j in ws.list_jobs(status="Running")] == ["quiet_lamp_2m8vq4xk"]


def test_trigger_a_pipeline_schedule(ws, clock):
    job = ws.trigger_schedule("nightly-churn-retrain")
    assert (job.status, job.type, job.display_name, job.experiment, job.compute, job.created_by) == (
        "Queued", "pipeline", "churn-retrain-pipeline", "churn-training", "cpu-cluster", "mlops-bot")
    assert (job.created_at, job.tags) == (NOW, {"schedule": "nightly-churn-retrain"})
    assert [(c.display_name, c.status) for c in job.children] == [
        ("prep_data", "Queued"), ("train_model", "Queued"), ("evaluate_model", "Queued"),
        ("register_model", "Queued")]
    assert ws.list_jobs(limit=1)[0].name == job.name
    clock.advance(minutes=3)
    assert statuses(ws, job.name) == ("Running", [
        ("prep_data", "Running"), ("train_model", "Queued"), ("evaluate_model", "Queued"),
        ("register_model", "Queued")])
    clock.advance(hours=1)
    assert ws.get_job(job.name).status == "Completed"
    assert ws.get_job(job.name).ended_at == NOW + timedelta(minutes=2 + 46)


def test_trigger_a_command_schedule_and_names_are_deterministic(tmp_path, clock):
    names = []
    for attempt in range(2):
        with LocalWorkspace(tmp_path / f"ws{attempt}.db", clock=clock) as workspace:
            first = workspace.trigger_schedule("weekly-demand-forecast")
            second = workspace.trigger_schedule("weekly-demand-forecast")
            names.append((first.name, second.name))
            assert (first.type, first.compute, first.children) == ("command", "gpu-cluster", ())
            assert [j.name for j in workspace.list_jobs(limit=2)] == [second.name, first.name]
    assert names[0] == names[1] and names[0][0] != names[0][1]
    assert all(len(name.split("_")[-1]) == 8 for name in names[0])


def test_trigger_unknown_schedule(ws):
    with pytest.raises(NotFound) as caught:
        ws.trigger_schedule("nightly")
    assert (caught.value.kind, caught.value.name) == ("schedule", "nightly")


# ---------------------------------------------------------------- schedules and compute


def test_enable_and_disable_are_idempotent(ws):
    assert ws.enable_schedule("credit-risk-retrain").wait(None) == "Schedule credit-risk-retrain is now enabled."
    assert ws.enable_schedule("credit-risk-retrain").wait(None) == "Schedule credit-risk-retrain is now enabled."
    assert {s.name: s.enabled for s in ws.list_schedules()}["credit-risk-retrain"] is True
    assert ws.disable_schedule("nightly-churn-retrain").wait(None) == "Schedule nightly-churn-retrain is now disabled."
    ws.disable_schedule("nightly-churn-retrain")
    assert {s.name: s.enabled for s in ws.list_schedules()}["nightly-churn-retrain"] is False


def test_start_and_stop_a_compute_instance(ws):
    assert ws.stop_compute("ds-ci-alice").wait(None) == "Compute instance ds-ci-alice is now Stopped."
    with pytest.raises(Conflict) as caught:
        ws.stop_compute("ds-ci-alice")
    assert caught.value.message == "Compute instance ds-ci-alice is already Stopped."
    assert ws.start_compute("ds-ci-alice").wait(None) == "Compute instance ds-ci-alice is now Running."
    assert {c.name: c.state for c in ws.list_compute()}["ds-ci-alice"] == "Running"


def test_clusters_cannot_be_started_or_stopped(ws):
    with pytest.raises(InvalidRequest) as caught:
        ws.stop_compute("cpu-cluster")
    assert caught.value.message == ("Only compute instances can be started or stopped; cpu-cluster is a compute "
                                    "cluster (amlcompute), which scales between 0 and 4 nodes on its own.")
    with pytest.raises(InvalidRequest):
        ws.start_compute("gpu-cluster")
    assert {c.name: c.state for c in ws.list_compute()}["cpu-cluster"] == "Succeeded"


# ---------------------------------------------------------------- batch


def test_invoke_batch_endpoint(ws):
    job = ws.invoke_batch_endpoint("churn-batch", "azureml:customers-scoring:13")
    assert (job.status, job.type, job.experiment, job.compute, job.created_by) == (
        "Queued", "batch", "churn-batch", "cpu-cluster", "mlops-bot")
    assert job.tags == {"endpoint": "churn-batch", "deployment": "nightly", "input": "azureml:customers-scoring:13"}
    candidate = ws.invoke_batch_endpoint("churn-batch", "https://contoso.blob.core.windows.net/in/", "candidate")
    assert candidate.tags["deployment"] == "candidate"
    assert [j.name for j in ws.list_batch_jobs("churn-batch")] == [candidate.name, job.name, "olive_comet_5h2rk8sd"]
    assert ws.list_batch_jobs("forecast-batch") == []


def test_invalid_batch_invocations(ws):
    with pytest.raises(NotFound) as caught:
        ws.invoke_batch_endpoint("churn-batch", "azureml:customers-scoring:13", "weekly")
    assert (caught.value.kind, caught.value.name) == ("deployment", "churn-batch/weekly")
    with pytest.raises(NotFound) as caught:
        ws.invoke_batch_endpoint("churn-api", "azureml:customers-scoring:13")
    assert caught.value.kind == "batch_endpoint"
    with pytest.raises(InvalidRequest):
        ws.invoke_batch_endpoint("churn-batch", "")
    assert [j.name for j in ws.list_batch_jobs("churn-batch")] == ["olive_comet_5h2rk8sd"]


# ---------------------------------------------------------------- logs and metrics


def test_deployment_logs(ws, db, clock):
    tail = ws.deployment_logs("fraud-api", "green", lines=20).splitlines()
    assert len(tail) == 20
    assert tail[-1].startswith("2025-03-10 09:29:")
    everything = ws.deployment_logs("fraud-api", "green", lines=500)
    assert "Loading model fraud-model:4 from /var/azureml-app/azureml-models/fraud-model/4" in everything
    assert everything.splitlines()[-20:] == tail
    with LocalWorkspace(db, clock=clock) as again:
        assert again.deployment_logs("fraud-api", "green", lines=20).splitlines() == tail
    with pytest.raises(InvalidRequest):
        ws.deployment_logs("fraud-api", "green", lines=0)
    with pytest.raises(NotFound):
        ws.deployment_logs("fraud-api", "purple")


def test_the_overloaded_endpoint_logs_server_errors(ws):
    assert "POST /score 500" in ws.deployment_logs("churn-api", "blue", lines=500)


def test_metrics_are_deterministic_for_a_clock(ws, tmp_path, clock):
    first = ws.endpoint_metrics("fraud-api", 60)
    assert ws.endpoint_metrics("fraud-api", 60) == first
    with LocalWorkspace(tmp_path / "other.db", clock=clock) as other:
        assert other.endpoint_metrics("fraud-api", 60) == first
    clock.advance(minutes=10)
    assert ws.endpoint_metrics("fraud-api", 60) != first


def test_metrics_split_requests_by_status_and_deployment(ws):
    metrics = ws.endpoint_metrics("fraud-api", 60)
    assert (metrics.endpoint, metrics.window_minutes) == ("fraud-api", 60)
    assert set(metrics.requests_by_status) == {"2xx", "4xx", "5xx"}
    assert metrics.requests_per_minute == pytest.approx(sum(metrics.requests_by_status.values()), abs=0.05)
    assert 600 < metrics.requests_per_minute < 1000
    assert metrics.error_rate < 0.002
    assert metrics.latency_p50_ms < metrics.latency_p99_ms < 200
    assert [(d.deployment, d.capacity) for d in metrics.deployments] == [("blue", 3.0), ("green", 1.0)]
    assert all(0 < d.cpu_utilization < 100 for d in metrics.deployments)


def test_churn_api_is_unhealthy(ws):
    churn = ws.endpoint_metrics("churn-api")
    assert churn.latency_p99_ms > 1500
    assert 0.02 < churn.error_rate < 0.06
    assert churn.deployments[0].cpu_utilization > 60
    ws.scale_deployment("churn-api", "blue", 6)
    assert ws.endpoint_metrics("churn-api").deployments[0].cpu_utilization < 40


def test_metrics_follow_the_traffic_split(ws):
    before = ws.endpoint_metrics("fraud-api", 60)
    ws.set_traffic("fraud-api", {"green": 100})
    after = ws.endpoint_metrics("fraud-api", 60)
    assert after.requests_by_status["5xx"] > 3 * before.requests_by_status["5xx"]
    assert after.latency_p99_ms > before.latency_p99_ms
    assert after.deployments[0].cpu_utilization < after.deployments[1].cpu_utilization


def test_metrics_validation(ws):
    with pytest.raises(InvalidRequest):
        ws.endpoint_metrics("fraud-api", 0)
    with pytest.raises(NotFound) as caught:
        ws.endpoint_metrics("fraud")
    assert (caught.value.kind, caught.value.name) == ("endpoint", "fraud")


# ---------------------------------------------------------------- persistence, reset, concurrency


def test_state_survives_a_restart(db, clock):
    with LocalWorkspace(db, clock=clock) as ws:
        ws.set_traffic("fraud-api", {"blue": 70, "green": 30})
        ws.scale_deployment("fraud-api", "green", 2)
        ws.set_model_stage("fraud-model", "4", "Production")
        ws.cancel_job("amber_river_7d3kq9wz")
        ws.disable_schedule("fraud-model-monitor")
        ws.stop_compute("ds-ci-alice")
        triggered = ws.trigger_schedule("nightly-churn-retrain")
    clock.advance(minutes=1)
    with LocalWorkspace(db, clock=clock) as ws:
        assert traffic(ws, "fraud-api") == {"blue": 70, "green": 30}
        assert instances(ws, "fraud-api") == {"blue": 3, "green": 2}
        assert ws.get_model("fraud-model", "4").stage == "Production"
        assert ws.get_job("amber_river_7d3kq9wz").status == "Canceled"
        assert {s.name: s.enabled for s in ws.list_schedules()}["fraud-model-monitor"] is False
        assert {c.name: c.state for c in ws.list_compute()}["ds-ci-alice"] == "Stopped"
        assert ws.get_job(triggered.name) == triggered
        assert len(ws.list_jobs(limit=100)) == 13                  # not seeded twice


def test_schema_is_versioned(db, ws):
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ServiceError, match="newer version"):
        LocalWorkspace(db)


def test_reset(ws, clock):
    ws.set_traffic("fraud-api", {"blue": 100})
    ws.trigger_schedule("nightly-churn-retrain")
    clock.advance(days=1)
    ws.reset(demo=True)
    assert traffic(ws, "fraud-api") == {"blue": 90, "green": 10}
    assert len(ws.list_jobs(limit=100)) == 12
    assert ws.get_job("quiet_lamp_2m8vq4xk").created_at == clock() - timedelta(minutes=5)   # re-dated
    ws.reset(demo=False)
    assert (ws.list_models(), ws.list_endpoints(), ws.list_jobs(), ws.names("compute")) == ([], [], [], [])
    ws.seed_demo()
    assert len(ws.names("model")) == 4


def test_a_new_workspace_can_start_empty(db):
    with LocalWorkspace(db, demo=False) as ws:
        assert ws.list_models() == [] and ws.list_schedules() == []


def test_a_naive_clock_is_taken_as_utc(db):
    with LocalWorkspace(db, clock=lambda: NOW.replace(tzinfo=None)) as ws:
        assert ws.get_job("quiet_lamp_2m8vq4xk").created_at == NOW - timedelta(minutes=5)


def test_calls_from_a_thread_pool(ws):
    splits = [{"blue": percent, "green": 100 - percent} for percent in range(0, 101, 5)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        summaries = list(pool.map(lambda split: ws.set_traffic("fraud-api", split).wait(None), splits))
        reads = list(pool.map(lambda _: len(ws.list_jobs(limit=100)), range(40)))
    assert len(summaries) == 21 and set(reads) == {12}
    assert sum(traffic(ws, "fraud-api").values()) == 100
