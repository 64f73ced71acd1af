"""docs/azure-custom-role.json lists exactly the Azure actions the bot's requests need.

Every MLService method runs once over the replay workspace; each HTTP request the SDKs send is
mapped to the Azure RBAC actions that authorize it (ARM's rule: the resource types of the path, then
read/write/delete by method, or `<verb>/action` for a POST to a verb). The role must allow every one
of them, and every action in the role must be needed by some request or be one of the few the replay
cannot show (listed below, each with its reason). A last test (marked replay_audit, run after all
others) maps every request any replayed Azure test sent in the same run.

The feature store is the exception to ARM's rule: Azure ML publishes no actions for the versions of
feature sets and entities, or for features. Microsoft's "Manage access control for managed feature
store" (https://learn.microsoft.com/azure/machine-learning/how-to-setup-access-control-feature-store,
"Permissions required for the feature set consumer role" and "New actions created for managed
feature store") names, on the feature store, `workspaces/featurestores/read` ("List, get feature
store"), `workspaces/featuresets/read` ("List and show feature sets") and
`workspaces/featurestoreentities/read` ("List and show feature store entities"); the resource
provider's operation list ("Azure permissions for AI + machine learning",
https://learn.microsoft.com/azure/role-based-access-control/permissions/ai-machine-learning) has no
other featureset or featurestoreentities read action. So every read under a store's `featuresets`
is `featuresets/read`, under its `featurestoreEntities` is `featurestoreentities/read`, and every
request to a feature store (or listing them) also needs `featurestores/read`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adapters.azureml.metrics import AzureMonitorMetrics
from adapters.azureml.workspace import AzureMLService
from adapters.local.demo_feature_store import build_feature_stores
from adapters.service import MLService
from tests.replay import (SENT, WORKSPACE, FakeWorkspace, RecordedRequest, metrics_client, ml_client, model_version,
                          monitor_answer)
from tests.replay_feature_store import serve_feature_stores
from tests.replay_posture import serve_posture

ROLE = json.loads((Path(__file__).parent.parent / "docs" / "azure-custom-role.json").read_text(encoding="utf-8"))
ML = "Microsoft.MachineLearningServices"

# In the role although no replayed request maps to them:
NOT_REPLAYED = {
    # Azure's long-running-operation status URLs (.../locations/<region>/...): the replay answers
    # compute start/stop and job cancel on a stand-in URL under the workspace instead.
    f"{ML}/locations/mfeOperationResults/read",
    f"{ML}/locations/computeoperationsstatus/read",
}


# Microsoft's published feature-store operations (both pages in the module docstring)
FEATURE_STORE_OPERATIONS = {f"{ML}/workspaces/{kind}/{verb}"
                            for kind, verbs in (("featurestores", ("read", "write", "delete")),
                                                ("featuresets", ("read", "write", "delete", "action")),
                                                ("featurestoreentities", ("read", "write", "delete", "action")))
                            for verb in verbs}
FEATURE_STORES_READ = f"{ML}/workspaces/featurestores/read"
_METRICS_HOST = re.compile(r"^[a-z0-9]+\.metrics\.monitor\.azure\.(com|us|cn)$")     # public and sovereign clouds
_FEATURE_ASSET = re.compile(r"/workspaces/[^/]+/(?P<kind>featuresets|featurestoreEntities)(/|$)", re.IGNORECASE)
_UNDER_WORKSPACE = re.compile(r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<name>[^/]+)",
                              re.IGNORECASE)


def action_for(request: RecordedRequest) -> str | None:
    """The RBAC action Azure checks for this request (None: no authorization, e.g. service discovery)."""
    path = request.path
    if _METRICS_HOST.match(request.host) and path.endswith("/metrics:getBatch"):
        return "Microsoft.Insights/metrics/read"         # on each resource of the batch
    asset = _FEATURE_ASSET.search(path)
    if asset:                                            # Azure ML's own feature-store actions (module docstring)
        verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(request.method, "action")
        return f"{ML}/workspaces/{asset['kind'].lower()}/{verb}"
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
    extension = re.match(r"^/subscriptions/.+/providers/[^/]+/[^/]+/[^/]+(?:/[^/]+/[^/]+)*/providers/(?P<ns>[^/]+)/"
                         r"(?P<rest>.+)$", path, re.IGNORECASE)
    if extension:                                        # an extension resource (.../providers/Microsoft.Insights/
        types = extension["rest"].split("/")[0::2]       # diagnosticSettings on the workspace): its own provider's
        verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}[request.method]
        return "/".join([extension["ns"], *types, verb])
    match = re.match(r"^/subscriptions/[^/]+(?:/resourceGroups/[^/]+)?/providers/(?P<ns>[^/]+)/(?P<rest>.+)$",
                     path, re.IGNORECASE)
    assert match, f"unmapped request {request.method} {request.host}{request.path}"
    segments = match["rest"].split("/")
    types = segments[0::2]
    if request.method == "POST" and len(segments) % 2 == 1:        # POST .../jobs/<name>/cancel
        return "/".join([match["ns"], *types[:-1], types[-1], "action"])
    verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}[request.method]
    return "/".join([match["ns"], *types, verb])


def to_a_feature_store(request: RecordedRequest) -> bool:
    """Listing the stores (`feature_stores.list()` is the bot's only GET of the workspace collection),
    or anything addressed to one: the replay serves one ML workspace (tests.replay.WORKSPACE), so
    every other workspace it answers for is a feature store."""
    if request.host == "management.azure.com" and request.path.rstrip("/").lower().endswith(
            "/providers/microsoft.machinelearningservices/workspaces"):
        return True
    found = _UNDER_WORKSPACE.search(request.path)
    return bool(found) and found["name"].lower() != WORKSPACE.lower()


def actions_for(request: RecordedRequest) -> set[str]:
    """Every action this request needs: its own, and `featurestores/read` for a feature store's."""
    action = action_for(request)
    if action is None:
        return set()
    return {action, FEATURE_STORES_READ} if to_a_feature_store(request) else {action}


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
    # issue 22: the security posture (workspace GET, online endpoints, computes, datastores)
    serve_posture(workspace)
    svc.security_posture()
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
    assert action_for(req("GET", f"{ws}/providers/Microsoft.Insights/diagnosticSettings")) == (
        "Microsoft.Insights/diagnosticSettings/read")          # an extension resource: its own provider's action


def test_every_port_method_is_exercised(requests):
    missing = sorted(PORT_METHODS - EXERCISED)
    assert not missing, (f"call {missing} in requests() above, so that the Azure actions they need are "
                         f"checked against docs/azure-custom-role.json")


def test_the_role_allows_every_request_the_bot_sends(requests):
    needed = set().union(*(actions_for(r) for r in requests))
    assert not {a for a in needed if not allowed(a)}
    assert f"{ML}/workspaces/onlineEndpoints/deployments/write" in needed      # scale: the PATCH


def test_the_posture_reads_datastores_but_never_their_secrets(requests):
    """`datastores/read` is the action Microsoft's "Azure permissions for AI + machine learning" lists
    as "Gets datastores" (and its custom-role examples use); the secrets are a separate
    `datastores/listsecrets/action` the role does not hold (see the parametrized test below)."""
    needed = set().union(*(actions_for(r) for r in requests))
    assert f"{ML}/workspaces/datastores/read" in needed
    assert "Microsoft.Insights/diagnosticSettings/read" in needed     # Azure Monitor's own action for the list
    assert "Microsoft.Authorization/roleAssignments/read" in needed   # reading who may do what, never changing it
    assert not allowed("Microsoft.Authorization/roleAssignments/write")
    assert not any("listsecrets" in r.path.lower() or "listkeys" in r.path.lower() for r in requests)


def test_feature_store_requests_need_the_actions_microsoft_documents(requests):
    store_requests = [r for r in requests if to_a_feature_store(r)]
    assert {r.path.rsplit("/", 1)[-1] for r in store_requests} >= {"workspaces", "featuresets", "features"}
    needed = set().union(*(actions_for(r) for r in store_requests))
    assert needed == {f"{ML}/workspaces/read", FEATURE_STORES_READ, f"{ML}/workspaces/featuresets/read",
                      f"{ML}/workspaces/featurestoreentities/read", f"{ML}/workspaces/jobs/read"}
    assert all(allowed(a) for a in needed)


def test_the_roles_feature_store_actions_are_ones_microsoft_publishes():
    feature_actions = [a for a in ROLE["Actions"] if "/feature" in a.lower()]
    assert sorted(feature_actions) == sorted({a for a in feature_actions if a in FEATURE_STORE_OPERATIONS})
    assert {FEATURE_STORES_READ, f"{ML}/workspaces/featuresets/read",
            f"{ML}/workspaces/featurestoreentities/read"} <= set(feature_actions)


def test_metrics_requests_are_metrics_read_on_every_cloud():
    for host in ("westeurope.metrics.monitor.azure.com", "usgovvirginia.metrics.monitor.azure.us",
                 "chinaeast2.metrics.monitor.azure.cn"):
        request = RecordedRequest("POST", "/subscriptions/s/metrics:getBatch", "2024-02-01", {}, None, host)
        assert action_for(request) == "Microsoft.Insights/metrics/read" and allowed(action_for(request))


def test_the_role_holds_nothing_the_bot_does_not_use(requests):
    needed = {a.lower() for r in requests for a in actions_for(r)}
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


@pytest.mark.replay_audit
def test_every_request_the_replayed_azure_tests_sent_is_allowed(requests):
    """Every request any replayed Azure test sent in this run (this file's fixture at least; with the
    suite, all of them: tests/conftest.py runs this test last) maps to actions the role allows."""
    sent = [r for r in SENT if "/operationResults/" not in r.path]   # the replay's stand-in (NOT_REPLAYED)
    assert len(sent) >= len(requests)
    refused = sorted({f"{r.method} {r.host}{r.path} -> {a}" for r in sent for a in actions_for(r) if not allowed(a)})
    assert refused == []

