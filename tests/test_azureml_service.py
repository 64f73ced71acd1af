"""AzureMLService over a real MLClient whose HTTP goes to a replay transport (no Azure, no network).

Reads compare our value types; mutations assert the HTTP method, path, api-version and body the SDK
sent. The fake workspace is built from the published REST examples (tests/fixtures/azure/).
"""

from __future__ import annotations

import copy
import threading
import time

import pytest

from adapters.azureml.metrics import regional_metrics_endpoint
from adapters.azureml.workspace import DATA_SCIENTIST, AzureMLService, build_azure_service, model_ref
from adapters.service import (
    Conflict,
    InvalidRequest,
    MLService,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tests.replay import (RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WORKSPACE_ID, FakeCredential, FakeWorkspace,
                          ReplayResponse, arm_id, ml_client, model_container, model_version, monitor_answer)

WS = WORKSPACE_ID


@pytest.fixture
def workspace() -> FakeWorkspace:
    return FakeWorkspace()


@pytest.fixture
def svc(workspace) -> AzureMLService:
    return AzureMLService(ml_client(workspace.transport), environment="prod", identity="mi-mlops-bot")


def only_mutation(workspace: FakeWorkspace):
    (request,) = workspace.transport.mutations()
    return request


# ---------------------------------------------------------------- reads


def test_implements_the_port(svc):
    assert isinstance(svc, MLService)


def test_workspace_info(svc):
    info = svc.workspace()
    assert (info.name, info.backend, info.environment, info.location) == ("ws-prod", "azure", "prod", "westeurope")


def test_models_latest_of_each_and_versions_newest_first(svc):
    latest = svc.list_models()
    assert [(m.name, m.version, m.stage) for m in latest] == [("churn-model", "1", "Production"),
                                                              ("fraud-model", "3", "Staging")]
    versions = svc.list_models("fraud-model")
    assert [v.version for v in versions] == ["3", "2", "1"]
    v2 = versions[1]
    assert v2.metrics == {"auc": 0.91}                    # numeric properties, system keys skipped
    assert v2.tags == {"owner": "ada"} and v2.created_by == "Ada Lovelace"
    assert latest[0].metrics == {"f1": 0.71}              # no numeric properties: numeric tags


def test_models_by_stage(svc, workspace):
    assert [m.ref for m in svc.list_models(stage="Production")] == ["churn-model:1", "fraud-model:2"]
    assert [m.ref for m in svc.list_models("fraud-model", stage="Staging")] == ["fraud-model:3"]
    assert workspace.transport.sent("GET", r"/models/fraud-model/versions$")[-1].query["stage"] == ["Staging"]


def test_get_model_latest_and_missing(svc):
    assert svc.get_model("fraud-model").version == "3"
    assert svc.get_model("fraud-model", "2").stage == "Production"
    with pytest.raises(NotFound) as info:
        svc.get_model("nope", "1")
    assert info.value.kind == "model"


def test_set_model_stage_puts_the_version(svc, workspace):
    model = svc.set_model_stage("fraud-model", "3", "Production")
    assert model.stage == "Production"
    put = only_mutation(workspace)
    assert (put.method, put.path, put.api_version) == ("PUT", f"{WS}/models/fraud-model/versions/3",
                                                       "2023-08-01-preview")
    assert put.body["properties"]["stage"] == "Production"


def test_endpoints_with_deployments(svc):
    fraud = svc.get_endpoint("fraud-api")
    assert fraud.traffic == {"blue": 90, "green": 10}
    assert fraud.provisioning_state == "Succeeded"
    assert [(d.name, d.model, d.instance_count, d.instance_type) for d in fraud.deployments] == [
        ("blue", "fraud-model:2", 3, "Standard_DS3_v2"), ("green", "fraud-model:3", 1, "Standard_DS3_v2")]
    assert [e.name for e in svc.list_endpoints()] == ["churn-api", "fraud-api"]


def test_model_ref_parsing():
    assert model_ref(arm_id("models", "fraud-model", "versions", "7")) == "fraud-model:7"
    assert model_ref("azureml:fraud-model:7") == "fraud-model:7"
    assert model_ref("azureml://registries/shared/models/fraud-model/versions/7") == "fraud-model:7"
    assert model_ref(None) == ""


def test_deployment_logs_tail(svc, workspace):
    assert svc.deployment_logs("fraud-api", "blue", lines=1) == "2025-01-11T10:00:01Z INFO  200 OK\n"
    (post,) = workspace.transport.sent("POST")
    assert post.path.endswith("/onlineEndpoints/fraud-api/deployments/blue/getLogs") and post.body == {"tail": 1}


def test_jobs_newest_first_with_status_filter_and_limit(svc):
    assert [j.name for j in svc.list_jobs()] == ["train-fraud-043", "nightly-fraud-pipeline", "train-fraud-042",
                                                "train-churn-007"]
    assert [j.name for j in svc.list_jobs(status="Running", limit=1)] == ["train-fraud-043"]
    assert [j.name for j in svc.list_jobs(status="Failed")] == ["train-churn-007"]


def test_pipeline_job_has_children_from_run_history(svc, workspace):
    job = svc.get_job("nightly-fraud-pipeline")
    assert job.type == "pipeline" and job.status == "Running"
    assert [(c.name, c.status, c.parent, c.display_name) for c in job.children] == [
        ("prep-data-1", "Completed", "nightly-fraud-pipeline", "prep_data"),
        ("train-model-1", "Running", "nightly-fraud-pipeline", "train_model")]
    assert workspace.transport.sent("GET", r"/history/v1\.0/.*/runs/nightly-fraud-pipeline/children$")


def test_schedules_compute_and_batch(svc):
    schedules = {s.name: s for s in svc.list_schedules()}
    assert (schedules["nightly-train"].enabled, schedules["nightly-train"].expression) == (True, "0 2 * * *")
    assert schedules["weekly-eval"].enabled is False
    assert schedules["weekly-eval"].expression == "every 1 week at 06:30"
    compute = {c.name: c for c in svc.list_compute()}
    assert (compute["ada-ci"].type, compute["ada-ci"].state) == ("computeinstance", "Running")
    assert (compute["cpu-cluster"].min_nodes, compute["cpu-cluster"].max_nodes) == (0, 4)
    (batch,) = svc.list_batch_endpoints()
    assert (batch.name, batch.default_deployment, batch.deployments) == ("fraud-batch", "nightly", ("nightly",))
    assert [(j.name, j.status, j.type) for j in svc.list_batch_jobs("fraud-batch")] == [
        ("batchjob-7f3a", "Completed", "batch")]


def test_names_for_did_you_mean(svc):
    assert svc.names("endpoint") == ["churn-api", "fraud-api"]
    assert svc.names("deployment") == ["blue", "green", "main"]
    assert svc.names("compute") == ["ada-ci", "cpu-cluster"]
    with pytest.raises(InvalidRequest):
        svc.names("widget")


# ---------------------------------------------------------------- mutations


def test_set_traffic_puts_the_whole_endpoint(svc, workspace):
    op = svc.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert (op.kind, op.target) == ("traffic", "endpoint fraud-api")
    put = only_mutation(workspace)
    assert (put.method, put.path, put.api_version) == ("PUT", f"{WS}/onlineEndpoints/fraud-api", "2022-02-01-preview")
    assert put.body["properties"]["traffic"] == {"blue": 50, "green": 50}
    assert put.body["location"] == "westeurope" and put.body["properties"]["authMode"] == "AMLToken"
    assert op.wait(5) == "Traffic on fraud-api is now blue=50 green=50."
    assert svc.get_endpoint("fraud-api").traffic == {"blue": 50, "green": 50}


def test_set_traffic_reads_the_endpoint_again_right_before_the_put(svc, workspace):
    svc.set_traffic("fraud-api", {"blue": 50, "green": 50}, expected={"blue": 90, "green": 10})
    calls = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in workspace.transport.sent()
             if not r.path.endswith("/deployments")]                  # the SDK lists them with every get
    assert calls == [("GET", ["onlineEndpoints", "fraud-api"]),      # read, validate
                     ("GET", ["onlineEndpoints", "fraud-api"]),      # the re-check
                     ("GET", ["workspaces", "ws-prod"]),             # the SDK reads the location
                     ("PUT", ["onlineEndpoints", "fraud-api"])]


def test_set_traffic_refuses_when_the_split_is_not_the_one_seen(svc, workspace):
    with pytest.raises(Conflict) as info:
        svc.set_traffic("fraud-api", {"blue": 50, "green": 50}, expected={"blue": 80, "green": 20})
    assert info.value.code == "TrafficChanged"
    assert info.value.message.startswith("The traffic of fraud-api changed since it was read: it is now "
                                         "blue=90 green=10, not blue=80 green=20.")
    assert workspace.transport.mutations() == []


def test_set_traffic_zero_shares_count_as_absent(svc, workspace):
    svc.set_traffic("fraud-api", {"green": 100}, expected={"blue": 90, "green": 10, "canary": 0}).wait(5)
    assert only_mutation(workspace).body["properties"]["traffic"] == {"green": 100}


def test_set_traffic_moved_between_read_and_put_is_reported_not_overwritten(svc, workspace):
    """Someone else's change lands after our first read: the re-read right before the PUT catches it."""
    reads = []

    def endpoint_changing_under_us(request, match):
        reads.append(request)
        body = workspace.get("onlineEndpoints", "fraud-api")
        if len(reads) == 2:                       # a colleague moved the split meanwhile
            body["properties"]["traffic"] = {"blue": 100, "green": 0}
        return ReplayResponse(json=body)

    workspace.transport.add("GET", r"/onlineEndpoints/fraud-api$", handler=endpoint_changing_under_us, first=True)
    with pytest.raises(Conflict) as info:                # validation passed on read 1; the re-read refuses
        svc.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert len(reads) == 2
    assert info.value.code == "TrafficChanged" and "it is now blue=100, not blue=90 green=10" in info.value.message
    assert workspace.transport.mutations() == []
    assert svc.get_endpoint("fraud-api").traffic == {"blue": 100, "green": 0}


def test_set_traffic_refuses_an_endpoint_still_updating(svc, workspace):
    workspace.get("onlineEndpoints", "fraud-api")["properties"]["provisioningState"] = "Updating"
    with pytest.raises(Conflict) as info:
        svc.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert info.value.code == "EndpointBusy"
    assert info.value.message == ("Endpoint fraud-api is still Updating: Azure ML accepts no new change to an "
                                  "endpoint until its current operation has finished. Try again once it shows "
                                  "Succeeded.")
    assert workspace.transport.mutations() == []


def test_set_traffic_refuses_live_traffic_on_a_mirrored_deployment(svc, workspace):
    workspace.get("onlineEndpoints", "fraud-api")["properties"]["mirrorTraffic"] = {"green": 10}
    workspace.get("onlineEndpoints", "fraud-api")["properties"]["traffic"] = {"blue": 100}
    with pytest.raises(InvalidRequest) as info:
        svc.set_traffic("fraud-api", {"blue": 60, "green": 40})
    assert info.value.code == "MirroredDeployment"
    assert info.value.message.startswith("Deployment green receives mirrored traffic (10 %) on fraud-api; Azure ML "
                                         "does not let a deployment take both live and mirrored traffic.")
    assert workspace.transport.mutations() == []
    svc.set_traffic("fraud-api", {"blue": 100, "green": 0}).wait(5)      # 0 % live beside the mirror is fine
    assert only_mutation(workspace).body["properties"]["mirrorTraffic"] == {"green": 10}


@pytest.mark.parametrize("split, error", [
    ({"blue": 50, "purple": 50}, NotFound),
    ({"blue": 50, "green": 40}, InvalidRequest),
    ({"blue": 50.5, "green": 49.5}, InvalidRequest),
    ({"blue": 110, "green": -10}, InvalidRequest),
])
def test_set_traffic_is_validated_before_azure(svc, workspace, split, error):
    with pytest.raises(error) as info:
        svc.set_traffic("fraud-api", split)
    if error is NotFound:
        assert (info.value.kind, info.value.name) == ("deployment", "purple")
    assert workspace.transport.mutations() == []


def test_scale_patches_only_the_sku_capacity(svc, workspace):
    before = copy.deepcopy(workspace.get("onlineEndpoints", "fraud-api", "deployments", "green"))
    op = svc.scale_deployment("fraud-api", "green", 4)
    patch = only_mutation(workspace)
    assert (patch.method, patch.path, patch.api_version, patch.body) == (
        "PATCH", f"{WS}/onlineEndpoints/fraud-api/deployments/green", "2023-04-01-preview", {"sku": {"capacity": 4}})
    assert op.wait(5) == "fraud-api/green now runs 4 instance(s)."
    # the poller followed Azure-AsyncOperation, then read the deployment; nothing else was written
    assert [r.method for r in workspace.transport.mutations()] == ["PATCH"]
    assert workspace.transport.sent("GET", r"/mfeOperationsStatus/")
    after = workspace.get("onlineEndpoints", "fraud-api", "deployments", "green")
    assert after["sku"] == {**before["sku"], "capacity": 4}
    for kept in ("identity", "kind", "location", "tags"):
        assert after[kept] == before[kept], kept
    assert after["properties"] == before["properties"]          # modelMountPath, model, probes, ...
    assert {d.name: d.instance_count for d in svc.get_endpoint("fraud-api").deployments} == {"blue": 3, "green": 4}


def test_why_scale_does_not_put_the_deployment_back(svc, workspace):
    """The SDK's own round trip (GET, then begin_create_or_update) loses fields: the reason for the PATCH."""
    got = svc.ml.online_deployments.get("green", "fraud-api")
    svc.ml.online_deployments.begin_create_or_update(got, skip_script_validation=True).result()
    put = workspace.transport.sent("PUT", r"/deployments/green$")[-1]
    assert put.body["properties"].get("modelMountPath") is None
    assert "identity" not in put.body and "kind" not in put.body


def test_scale_refuses_a_deployment_still_updating(svc, workspace):
    green = workspace.get("onlineEndpoints", "fraud-api", "deployments", "green")
    green["properties"]["provisioningState"] = "Updating"
    with pytest.raises(Conflict) as info:
        svc.scale_deployment("fraud-api", "green", 2)
    assert info.value.code == "DeploymentBusy" and "still Updating" in info.value.message
    assert workspace.transport.mutations() == []


def test_scale_unknown_deployment(svc, workspace):
    with pytest.raises(NotFound) as info:
        svc.scale_deployment("fraud-api", "purple", 2)
    assert (info.value.kind, info.value.name) == ("deployment", "purple")
    assert workspace.transport.mutations() == []


def test_cancel_posts_cancel(svc, workspace):
    op = svc.cancel_job("train-fraud-043")
    post = only_mutation(workspace)
    assert (post.method, post.path, post.api_version) == ("POST", f"{WS}/jobs/train-fraud-043/cancel",
                                                          "2023-04-01-preview")
    assert op.wait(5) == "Cancellation of job train-fraud-043 accepted."
    assert svc.get_job("train-fraud-043").status == "Canceled"


def test_cancel_finished_job_is_a_conflict(svc):
    with pytest.raises(Conflict) as info:
        svc.cancel_job("train-fraud-042")
    assert info.value.code == "UserError" and "already Completed" in info.value.message


def test_disable_schedule_puts_is_enabled_false(svc, workspace):
    op = svc.disable_schedule("nightly-train")
    put = only_mutation(workspace)
    assert (put.method, put.path, put.api_version) == ("PUT", f"{WS}/schedules/nightly-train", "2023-06-01-preview")
    assert put.body["properties"]["isEnabled"] is False
    assert put.body["properties"]["trigger"] == {"triggerType": "Cron", "expression": "0 2 * * *", "timeZone": "UTC"}
    assert op.wait(5) == "Schedule nightly-train disabled."
    assert {s.name: s.enabled for s in svc.list_schedules()} == {"nightly-train": False, "weekly-eval": False}


def test_enable_and_trigger_schedule(svc, workspace):
    svc.enable_schedule("weekly-eval").wait(5)
    assert {s.name: s.enabled for s in svc.list_schedules()}["weekly-eval"] is True
    workspace.transport.clear()
    job = svc.trigger_schedule("nightly-train")
    assert job.status == "NotStarted" and job.name.startswith("nightly-train-triggered")
    post = only_mutation(workspace)
    assert (post.path, post.api_version) == (f"{WS}/schedules/nightly-train/trigger", "2024-01-01-preview")
    assert "scheduleTime" in post.body


def test_compute_stop_and_start_post(svc, workspace):
    op = svc.stop_compute("ada-ci")
    post = only_mutation(workspace)
    assert (post.method, post.path, post.api_version) == ("POST", f"{WS}/computes/ada-ci/stop", "2023-08-01-preview")
    assert op.wait(5) == "Compute ada-ci stopped."
    assert {c.name: c.state for c in svc.list_compute()}["ada-ci"] == "Stopped"
    svc.start_compute("ada-ci").wait(5)
    assert workspace.transport.sent("POST", r"/computes/ada-ci/start$")
    assert {c.name: c.state for c in svc.list_compute()}["ada-ci"] == "Running"


def test_invoke_batch_endpoint_posts_to_its_scoring_uri(svc, workspace):
    job = svc.invoke_batch_endpoint("fraud-batch", "azureml://datastores/workspaceblobstore/paths/fraud/2025-01-11/")
    assert (job.status, job.type) == ("NotStarted", "batch")
    post = only_mutation(workspace)
    assert post.path == "/jobs"
    assert post.body["properties"]["inputData"]["UriFolder"]["uri"].endswith("/fraud/2025-01-11/")
    assert job.name in [j.name for j in svc.list_batch_jobs("fraud-batch")]


# ---------------------------------------------------------------- errors


def test_missing_endpoint_is_not_found(svc):
    with pytest.raises(NotFound) as info:
        svc.get_endpoint("ghost-api")
    assert (info.value.kind, info.value.name, info.value.code) == ("endpoint", "ghost-api", "UserError")


def test_forbidden_names_identity_and_role(svc, workspace):
    workspace.transport.fail("POST", r"/jobs/[^/]+/cancel$", 403, "AuthorizationFailed",
                             "The client does not have authorization to perform action "
                             "'Microsoft.MachineLearningServices/workspaces/jobs/cancel/action'.")
    with pytest.raises(PermissionDenied) as info:
        svc.cancel_job("train-fraud-043")
    assert (info.value.identity, info.value.role, info.value.code) == ("mi-mlops-bot", DATA_SCIENTIST,
                                                                       "AuthorizationFailed")
    assert "does not have authorization" in info.value.message


def test_forbidden_compute_stop_names_data_scientist(svc, workspace):
    # AzureML Data Scientist allows workspaces/*/action (start, stop) and denies only compute write/delete;
    # Compute Operator would also grant creating and deleting compute.
    workspace.transport.fail("POST", r"/computes/[^/]+/stop$", 403, "AuthorizationFailed", "Denied.")
    with pytest.raises(PermissionDenied) as info:
        svc.stop_compute("ada-ci")
    assert info.value.role == DATA_SCIENTIST


def test_bad_request_is_invalid_request(svc):
    with pytest.raises(InvalidRequest) as info:
        svc.stop_compute("cpu-cluster")                # only compute instances start/stop
    assert info.value.code == "BadRequest"


@pytest.mark.parametrize("status, code", [(500, "InternalServerError"), (429, "TooManyRequests"),
                                          (503, "ServiceUnavailable")])
def test_server_errors_and_throttling_are_unavailable(svc, workspace, status, code):
    workspace.transport.fail("GET", r"/onlineEndpoints$", status, code, "Try again later.")
    with pytest.raises(Unavailable) as info:
        svc.list_endpoints()
    assert info.value.code == code
    assert len(workspace.transport.sent("GET", r"/onlineEndpoints$")) == 1     # retries off in tests


def test_bounded_retries_retry_5xx_then_succeed(workspace):
    svc = AzureMLService(ml_client(workspace.transport, retry_total=2, retry_backoff_factor=0))
    workspace.transport.fail("GET", r"/onlineEndpoints$", 503, "ServiceUnavailable", "Busy.", times=2)
    assert [e.name for e in svc.list_endpoints()] == ["churn-api", "fraud-api"]
    assert len(workspace.transport.sent("GET", r"/onlineEndpoints$")) == 3


def test_failure_while_waiting_is_translated(svc, workspace):
    workspace.transport.fail("GET", r"/operationResults/", 500, "InternalServerError", "Poller broke.")
    op = svc.stop_compute("ada-ci")
    with pytest.raises(Unavailable):
        op.wait(5)


def test_no_metrics_source_is_unavailable(svc):
    with pytest.raises(Unavailable) as info:
        svc.endpoint_metrics("fraud-api")
    assert "not configured" in info.value.message




# ---------------------------------------------------------------- a registry of hundreds of models


def many_models(count: int, page_size: int = 100) -> FakeWorkspace:
    workspace = FakeWorkspace(seed=False, page_size=page_size)
    for i in range(count):
        name = f"model-{i:03d}"
        workspace.add(model_container(name, "2"))
        workspace.add(model_version(name, "1", stage="Production"))
        workspace.add(model_version(name, "2", stage="Staging" if i % 2 else "None"))
    return workspace


class InFlight:
    """Counts version reads running at once (a slow Azure: each takes `seconds`)."""

    def __init__(self, workspace: FakeWorkspace, seconds: float) -> None:
        self.workspace, self.seconds, self.now, self.most = workspace, seconds, 0, 0
        self.lock = threading.Lock()

    def __call__(self, request, match):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
        return self.workspace._get(request, match)


def test_list_models_pages_and_reads_latest_versions_concurrently(caplog):
    """250 models in pages of 100, 10 ms per version read: one at a time that is 2.5 s of waiting.

    Measured here (2 cores): about 0.5 s with 8 readers, against about 3 s read one after another.
    """
    workspace = many_models(250)
    slow = InFlight(workspace, 0.01)
    workspace.transport.add("GET", r"/models/[^/]+/versions/[^/]+$", handler=slow, first=True)
    svc = AzureMLService(ml_client(workspace.transport))
    started = time.monotonic()
    latest = svc.list_models()
    elapsed = time.monotonic() - started
    assert [(m.name, m.version) for m in latest] == [(f"model-{i:03d}", "2") for i in range(250)]
    assert latest[1].stage == "Staging" and latest[2].stage == "None"
    pages = workspace.transport.sent("GET", r"/workspaces/ws-prod/models$")
    assert [r.query.get("$skipToken") for r in pages] == [None, ["100"], ["200"]]
    assert len(workspace.transport.sent("GET", r"/models/[^/]+/versions/[^/]+$")) == 250     # one GET each
    assert 2 <= slow.most <= 8                            # concurrent, and bounded
    print(f"250 models: {elapsed:.2f} s, at most {slow.most} reads at once")


def test_list_models_by_stage_over_many_models():
    workspace = many_models(120)
    svc = AzureMLService(ml_client(workspace.transport))
    staging = svc.list_models(stage="Staging")
    assert [m.name for m in staging] == [f"model-{i:03d}" for i in range(1, 120, 2)]
    assert {m.version for m in staging} == {"2"}
    assert len(svc.list_models(stage="Production")) == 120


class Unanswered:
    """Version reads that Azure does not answer until `release()`; counts those in flight."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.workspace, self.answer, self.in_flight, self.most = workspace, threading.Event(), 0, 0
        self.settled = threading.Condition()

    def __call__(self, request, match):
        with self.settled:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        self.answer.wait()
        with self.settled:
            self.in_flight -= 1
            self.settled.notify_all()
        return self.workspace._get(request, match)

    def release(self) -> None:
        self.answer.set()
        with self.settled:               # a bound only so that a broken pool cannot hang the suite
            self.settled.wait_for(lambda: self.in_flight == 0, timeout=30)


def test_list_models_gives_up_at_its_budget_and_cancels_the_reads_not_started():
    """The budget is kept whatever Azure does: with every read unanswered, list_models answers
    Unavailable (none read) instead of waiting, with at most _MODEL_READERS reads ever sent; the
    others never leave (cancelled). Behaviour, not a stopwatch."""
    workspace = many_models(100)
    unanswered = Unanswered(workspace)
    workspace.transport.add("GET", r"/models/[^/]+/versions/[^/]+$", handler=unanswered, first=True)
    svc = AzureMLService(ml_client(workspace.transport), model_read_budget=0.05)
    try:
        with pytest.raises(Unavailable) as info:
            svc.list_models()
    finally:
        unanswered.release()
    assert info.value.message == ("Azure ML took longer than 0.05 s to read the latest version of 100 models "
                                  "(0 read); ask about one model by name.")
    reads = workspace.transport.sent("GET", r"/models/[^/]+/versions/[^/]+$")
    assert len(reads) <= 8 and unanswered.most <= 8          # the readers' bound; the other 92 were cancelled


def test_list_models_falls_back_when_the_latest_version_is_gone(svc, workspace):
    del workspace.resources[arm_id("models", "fraud-model", "versions", "3").lower()]
    assert {m.name: m.version for m in svc.list_models()} == {"churn-model": "1", "fraud-model": "2"}


# ---------------------------------------------------------------- metrics endpoint from the workspace's region


def test_metrics_endpoint_is_derived_from_the_workspace_location(workspace):
    workspace.transport.add("POST", r"/metrics:getBatch$", handler=monitor_answer)
    svc = build_azure_service(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, environment="prod", retry_total=0,
                              credential=FakeCredential(), client_options={"transport": workspace.transport})
    health = svc.endpoint_metrics("fraud-api")
    assert [d.deployment for d in health.deployments] == ["blue", "green"]
    assert {r.host for r in workspace.transport.sent("POST", r"/metrics:getBatch$")} == {
        "westeurope.metrics.monitor.azure.com"}
    assert len(workspace.transport.sent("GET", rf"{WS}$")) == 1
    svc.endpoint_metrics("churn-api")                     # built once: the workspace is not read again
    assert len(workspace.transport.sent("GET", rf"{WS}$")) == 1


def test_configured_metrics_endpoint_wins(workspace):
    workspace.transport.add("POST", r"/metrics:getBatch$", handler=monitor_answer)
    svc = build_azure_service(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, environment="prod", retry_total=0,
                              credential=FakeCredential(), client_options={"transport": workspace.transport},
                              metrics_endpoint="https://usgovvirginia.metrics.monitor.azure.us")
    svc.endpoint_metrics("fraud-api")
    assert {r.host for r in workspace.transport.sent("POST")} == {"usgovvirginia.metrics.monitor.azure.us"}
    assert workspace.transport.sent("GET", rf"{WS}$") == []


@pytest.mark.parametrize("location, endpoint", [("westeurope", "https://westeurope.metrics.monitor.azure.com"),
                                                ("West Europe", "https://westeurope.metrics.monitor.azure.com"),
                                                ("eastus2", "https://eastus2.metrics.monitor.azure.com")])
def test_regional_metrics_endpoint(location, endpoint):
    assert regional_metrics_endpoint(location) == endpoint


@pytest.mark.parametrize("location", ["", "evil.example.com/x", "west-europe?"])
def test_unusable_location_asks_for_the_setting(location):
    with pytest.raises(Unavailable) as info:
        regional_metrics_endpoint(location)
    assert "set metrics_endpoint" in info.value.message


# ---------------------------------------------------------------- boundaries and the production pipeline


@pytest.mark.parametrize("count, accepted", [(0, False), (1, True), (20, True), (21, False), (True, False)])
def test_scale_bounds_are_checked_before_azure(svc, workspace, count, accepted):
    if accepted:
        svc.scale_deployment("fraud-api", "green", count).wait(5)
        assert only_mutation(workspace).body == {"sku": {"capacity": count}}
    else:
        with pytest.raises(InvalidRequest) as info:
            svc.scale_deployment("fraud-api", "green", count)
        assert info.value.message == f"Instance count must be a whole number from 1 to 20, not {count!r}."
        assert workspace.transport.sent() == []


def test_endpoint_scoring_uri_and_states(svc):
    fraud = svc.get_endpoint("fraud-api")
    assert fraud.scoring_uri == "https://fraud-api.westeurope.inference.ml.azure.com/score"
    assert (fraud.auth_mode, fraud.mirror_traffic) == ("aml_token", {})     # the SDK gives its YAML spelling


def production_service(workspace: FakeWorkspace, **kwargs):
    return build_azure_service(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, environment="prod", credential=FakeCredential(),
                               client_options={"transport": workspace.transport}, **kwargs)


def test_production_pipeline_retries_exactly_retry_total_times(workspace):
    workspace.transport.fail("GET", r"/onlineEndpoints$", 503, "ServiceUnavailable", "Busy.")
    svc = production_service(workspace, retry_total=2, retry_backoff_factor=0)
    with pytest.raises(Unavailable):
        svc.list_endpoints()
    assert len(workspace.transport.sent("GET", r"/onlineEndpoints$")) == 3        # the first try and 2 retries


def test_production_pipeline_waits_as_long_as_retry_after_says(workspace):
    workspace.transport.add("GET", r"/onlineEndpoints$", status=429, headers={"Retry-After": "7"},
                            json={"error": {"code": "TooManyRequests", "message": "Slow down."}}, times=1, first=True)
    svc = production_service(workspace, retry_total=3, retry_backoff_factor=0)
    assert [e.name for e in svc.list_endpoints()] == ["churn-api", "fraud-api"]
    assert len(workspace.transport.sent("GET", r"/onlineEndpoints$")) == 2
    assert 7 in workspace.transport.sleeps
def test_get_batch_endpoint_reads_the_endpoint_and_its_deployments(svc):
    from adapters.service import BatchDeployment
    found = svc.get_batch_endpoint("fraud-batch")
    assert (found.name, found.default_deployment, found.provisioning_state) == ("fraud-batch", "nightly", "Succeeded")
    assert found.details == (BatchDeployment("nightly", "fraud-batch", model="fraud-model:2", compute="cpu-cluster",
                                             instance_count=2, provisioning_state="Succeeded"),)
