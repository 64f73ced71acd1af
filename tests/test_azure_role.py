"""docs/azure-custom-role.json lists exactly the Azure actions the bot's requests need.

Every MLService method runs once over the replay workspace; each HTTP request the SDKs send is
mapped to the Azure RBAC action that authorizes it (ARM's rule: the resource types of the path, then
read/write/delete by method, or `<verb>/action` for a POST to a verb). The role must allow every one
of them, and every action in the role must be needed by some request or be one of the few the replay
cannot show (listed below, each with its reason).
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adapters.azure_metrics import AzureMonitorMetrics
from adapters.azureml import AzureMLService
from adapters.demo_feature_store import build_feature_stores
from adapters.service import MLService
from tests.replay import FakeWorkspace, RecordedRequest, metrics_client, ml_client, model_version, monitor_answer
from tests.replay_feature_store import serve_feature_stores

ROLE = json.loads((Path(__file__).parent.parent / "docs" / "azure-custom-role.json").read_text(encoding="utf-8"))
ML = "Microsoft.MachineLearningServices"

# In the role although no replayed request maps to them:
NOT_REPLAYED = {
    # Azure's long-running-operation status URLs (.../locations/<region>/...): the replay answers
    # compute start/stop and job cancel on a stand-in URL under the workspace instead.
    f"{ML}/locations/mfeOperationResults/read",
    f"{ML}/locations/computeoperationsstatus/read",
}


def action_for(request: RecordedRequest) -> str | None:
    """The RBAC action Azure checks for this request (None: no authorization, e.g. service discovery)."""
    path = request.path
    if request.host.endswith(".metrics.monitor.azure.com") and path.endswith("/metrics:getBatch"):
        return "Microsoft.Insights/metrics/read"
    if request.host.endswith(".inference.ml.azure.com") and (request.method, path) == ("POST", "/jobs"):
        return f"{ML}/workspaces/batchEndpoints/jobs/write"        # invoking a batch endpoint creates a job
    if path == "/discovery":
        return None
    if path.startswith("/history/v1.0/") and "/runs/" in path:
        return f"{ML}/workspaces/experiments/runs/read"
    if path.startswith("/mlflow/v1.0/"):              # the workspace's MLflow tracking API (monitor figures)
        if path.endswith("/experiments/get-by-name"):
            return f"{ML}/workspaces/experiments/read"
        assert path.endswith(("/runs/search", "/metrics/get-history")), path
        return f"{ML}/workspaces/experiments/runs/read"
    path = re.sub(r"^/mferp/managementfrontend", "", path)
    match = re.match(r"^/subscriptions/[^/]+(?:/resourceGroups/[^/]+)?/providers/(?P<ns>[^/]+)/(?P<rest>.+)$",
                     path, re.IGNORECASE)
    assert match, f"unmapped request {request.method} {request.host}{request.path}"
    segments = match["rest"].split("/")
    types = segments[0::2]
    if request.method == "POST" and len(segments) % 2 == 1:        # POST .../jobs/<name>/cancel
        return "/".join([match["ns"], *types[:-1], types[-1], "action"])
    verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}[request.method]
    return "/".join([match["ns"], *types, verb])


def allowed(action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in ROLE["Actions"])


PORT_METHODS = {name for name in vars(MLService) if not name.startswith("_") and callable(vars(MLService)[name])}
EXERCISED: set[str] = set()


class Recording:
    """The service, noting which port methods the fixture called."""

    def __init__(self, service: AzureMLService) -> None:
        self.service = service

    def __getattr__(self, name: str):
        EXERCISED.add(name)
        return getattr(self.service, name)


@pytest.fixture(scope="module")
def requests() -> list[RecordedRequest]:
    workspace = FakeWorkspace()
    workspace.seed_monitor()
    workspace.transport.add("POST", r"/metrics:getBatch$", handler=monitor_answer)
    metrics = AzureMonitorMetrics(metrics_client(workspace.transport))
    svc = Recording(AzureMLService(ml_client(workspace.transport), metrics=metrics))
    svc.workspace()
    for kind in ("model", "endpoint", "batch_endpoint", "deployment", "job", "schedule", "compute"):
        svc.names(kind)
    svc.list_models()
    svc.list_models(stage="Production")
    svc.get_model("fraud-model")
    svc.set_model_stage("fraud-model", "3", "Production")
    svc.list_endpoints()
    svc.get_endpoint("fraud-api")
    svc.set_traffic("fraud-api", {"blue": 50, "green": 50}).wait(5)
    svc.scale_deployment("fraud-api", "green", 2).wait(5)
    svc.deployment_logs("fraud-api", "blue")
    svc.endpoint_metrics("fraud-api")
    svc.endpoints_metrics(svc.list_endpoints())          # issue 11: the digest's batched figures
    svc.list_batch_endpoints()
    svc.invoke_batch_endpoint("fraud-batch", "azureml://datastores/workspaceblobstore/paths/fraud/")
    svc.list_batch_jobs("fraud-batch")
    svc.get_batch_endpoint("fraud-batch")
    svc.list_jobs()
    svc.get_job("nightly-fraud-pipeline")
    svc.cancel_job("train-fraud-043").wait(5)
    svc.list_schedules()
    svc.disable_schedule("nightly-train").wait(5)
    svc.enable_schedule("nightly-train").wait(5)
    svc.trigger_schedule("nightly-train")
    svc.list_compute()
    svc.stop_compute("ada-ci").wait(5)
    svc.start_compute("ada-ci").wait(5)
    svc.list_monitors()
    svc.drift_report("fraud-model-monitor", 7)
    # issue 9: model archive, retraining, the feature store (a second MLClient bound to the store)
    serve_feature_stores(workspace, build_feature_stores(datetime.now(timezone.utc)))
    workspace.add(model_version("churn-model", "2", tags={"training_schedule": "nightly-train"}))
    svc.archive_model("fraud-model", "1")
    svc.set_model_stage("fraud-model", "1", "Archived")
    svc.restore_model("fraud-model", "1")
    svc.trigger_retraining("churn-model")
    svc.list_feature_stores()
    svc.list_feature_sets("contoso-features")
    svc.get_feature_set("contoso-features", "transactions")
    # the replay's stand-in for Azure's operation status URLs (see NOT_REPLAYED)
    return [r for r in workspace.transport.sent() if "/operationResults/" not in r.path]


def test_the_mapping_follows_arms_rule():
    def req(method: str, path: str, host: str = "management.azure.com") -> RecordedRequest:
        return RecordedRequest(method, path, None, {}, None, host)
    ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
    assert action_for(req("GET", ws)) == f"{ML}/workspaces/read"
    assert action_for(req("GET", f"{ws}/models")) == f"{ML}/workspaces/models/read"
    assert action_for(req("PATCH", f"{ws}/onlineEndpoints/e/deployments/d")) == (
        f"{ML}/workspaces/onlineEndpoints/deployments/write")
    assert action_for(req("POST", f"{ws}/computes/c/stop")) == f"{ML}/workspaces/computes/stop/action"


def test_every_port_method_is_exercised(requests):
    missing = sorted(PORT_METHODS - EXERCISED)
    assert not missing, (f"call {missing} in requests() above, so that the Azure actions they need are "
                         f"checked against docs/azure-custom-role.json")


def test_the_role_allows_every_request_the_bot_sends(requests):
    needed = {action_for(r) for r in requests} - {None}
    assert not {a for a in needed if not allowed(a)}
    assert f"{ML}/workspaces/onlineEndpoints/deployments/write" in needed      # scale: the PATCH


def test_the_role_holds_nothing_the_bot_does_not_use(requests):
    needed = {action_for(r).lower() for r in requests if action_for(r)}
    unused = [pattern for pattern in ROLE["Actions"]
              if pattern not in NOT_REPLAYED and not any(fnmatch.fnmatchcase(a, pattern.lower()) for a in needed)]
    assert unused == []


@pytest.mark.parametrize("action", [
    f"{ML}/workspaces/write", f"{ML}/workspaces/delete", f"{ML}/workspaces/listKeys/action",
    f"{ML}/workspaces/computes/write", f"{ML}/workspaces/computes/delete", f"{ML}/workspaces/computes/listKeys/action",
    f"{ML}/workspaces/onlineEndpoints/delete", f"{ML}/workspaces/onlineEndpoints/deployments/delete",
    f"{ML}/workspaces/onlineendpoints/listkeys/action", f"{ML}/workspaces/onlineendpoints/token/action",
    f"{ML}/workspaces/datastores/listsecrets/action", f"{ML}/workspaces/connections/listsecrets/action",
    f"{ML}/workspaces/jobs/delete", f"{ML}/workspaces/schedules/delete", f"{ML}/workspaces/models/versions/delete",
])
def test_the_role_cannot_delete_create_compute_or_read_secrets(action):
    assert not allowed(action)


def test_the_role_file_is_a_role_definition():
    assert ROLE["IsCustom"] is True and ROLE["Name"] and ROLE["Description"]
    assert (ROLE["NotActions"], ROLE["DataActions"], ROLE["NotDataActions"]) == ([], [], [])
    assert len(ROLE["Actions"]) == len(set(ROLE["Actions"]))
    assert ROLE["AssignableScopes"] == ["/subscriptions/<subscription-id>/resourceGroups/<resource-group>"]
