"""AzureMLService over a real MLClient whose HTTP goes to a replay transport (no Azure, no network).

Reads compare our value types; mutations assert the HTTP method, path, api-version and body the SDK
sent. The fake workspace is built from the published REST examples (tests/fixtures/azure/).
"""

from __future__ import annotations


import pytest

from adapters.azureml import COMPUTE_OPERATOR, DATA_SCIENTIST, AzureMLService, model_ref
from adapters.service import (
    Conflict,
    InvalidRequest,
    MLService,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tests.replay import WORKSPACE_ID, FakeWorkspace, arm_id, ml_client

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
    assert op.wait(5) == "Traffic of fraud-api is now blue=50, green=50."
    assert svc.get_endpoint("fraud-api").traffic == {"blue": 50, "green": 50}


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


def test_scale_puts_the_deployment_with_sku_capacity(svc, workspace):
    op = svc.scale_deployment("fraud-api", "green", 4)
    put = only_mutation(workspace)
    assert (put.method, put.path, put.api_version) == (
        "PUT", f"{WS}/onlineEndpoints/fraud-api/deployments/green", "2023-04-01-preview")
    assert put.body["sku"]["capacity"] == 4
    assert put.body["properties"]["model"] == arm_id("models", "fraud-model", "versions", "3")
    assert op.wait(5) == "fraud-api/green now runs 4 instance(s)."
    assert {d.name: d.instance_count for d in svc.get_endpoint("fraud-api").deployments} == {"blue": 3, "green": 4}


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


def test_forbidden_compute_stop_names_compute_operator(svc, workspace):
    workspace.transport.fail("POST", r"/computes/[^/]+/stop$", 403, "AuthorizationFailed", "Denied.")
    with pytest.raises(PermissionDenied) as info:
        svc.stop_compute("ada-ci")
    assert info.value.role == COMPUTE_OPERATOR


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




def test_get_batch_endpoint_reads_the_endpoint_and_its_deployments(svc):
    from adapters.service import BatchDeployment
    found = svc.get_batch_endpoint("fraud-batch")
    assert (found.name, found.default_deployment, found.provisioning_state) == ("fraud-batch", "nightly", "Succeeded")
    assert found.details == (BatchDeployment("nightly", "fraud-batch", model="fraud-model:2", compute="cpu-cluster",
                                             instance_count=2, provisioning_state="Succeeded"),)
