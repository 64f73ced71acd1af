"""Offline HTTP replay for the Azure SDKs: a transport, a fake credential, and fixture helpers.

`ReplayTransport` is an `azure.core.pipeline.transport.HttpTransport`. It answers each request from
the first route whose method and path regex match, and records every request (method, path,
api-version, JSON body) so tests can assert on what the SDK sent::

    transport = ReplayTransport()
    transport.add("GET", r"/onlineEndpoints/fraud-api$", json=endpoint_body)
    transport.add("PUT", r"/onlineEndpoints/fraud-api$", handler=echo_put)      # computed answer
    transport.add("GET", r"/jobs$", json=page, delay=2.0)                       # a slow Azure
    ml_client = MLClient(FakeCredential(), SUB, RG, WS, transport=transport, polling_interval=0)

A request with no matching route gets a 404 `ResourceNotFound` answer, which the SDK raises as
`ResourceNotFoundError`, like Azure does for a name that does not exist.

The fixture helpers (`example`, `arm_id`, ...) load the published REST examples copied under
`tests/fixtures/azure/` and replace their placeholder values (`"string"`) with real ARM ids at load
time; the copied files themselves stay byte-for-byte upstream (see tests/fixtures/azure/SOURCES.md).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import isodate
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

FIXTURES = Path(__file__).parent / "fixtures" / "azure"

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "rg-mlops"
WORKSPACE = "ws-prod"
LOCATION = "westeurope"
WORKSPACE_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")


# ---------------------------------------------------------------- credential


class FakeCredential:
    """A TokenCredential that never talks to Entra ID."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("fake-token", int(time.time()) + 3600)


# ---------------------------------------------------------------- transport


@dataclass(frozen=True)
class RecordedRequest:
    """One request the SDK sent, reduced to what tests assert on."""

    method: str
    path: str
    api_version: str | None
    query: dict[str, list[str]]
    body: Any                                   # parsed JSON, or None
    host: str = ""                              # e.g. "management.azure.com", "westeurope.metrics.monitor.azure.com"


@dataclass
class ReplayResponse:
    """What a route answers: status, JSON body (or raw text) and headers."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RecordedRequest, "re.Match[str]"], ReplayResponse]

# Every request any ReplayTransport answered in this test process, in order: tests/test_azure_role.py
# checks each against docs/azure-custom-role.json after the other tests ran (its test is marked
# replay_audit, which tests/conftest.py runs last).
SENT: list[RecordedRequest] = []
_SENT_LOCK = threading.Lock()


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    delay: float = 0.0
    times: int | None = None                    # answer only this many times, then fall through


class _Response(HttpResponseImpl):
    """An `azure.core.rest` response over bytes already in memory."""

    def __init__(self, request: Any, status: int, content: bytes, headers: dict[str, str]) -> None:
        hdrs = case_insensitive_dict(headers)
        super().__init__(request=request, internal_response=None, status_code=status,
                         reason="OK" if status < 400 else "Error", content_type=hdrs.get("Content-Type"),
                         headers=hdrs, stream_download_generator=None)
        self._content = content
        self._is_stream_consumed = True

    def close(self) -> None:
        self._is_closed = True


class ReplayTransport(HttpTransport):
    """Answers requests from registered routes and records them all (thread-safe)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[RecordedRequest] = []
        self.sleeps: list[float] = []             # what the pipeline asked to wait (retry back-off, polling)
        self._lock = threading.Lock()

    # -- configuration
    def add(self, method: str, path_regex: str, *, json: Any = None, status: int = 200,
            headers: dict[str, str] | None = None, text: str | None = None, handler: Handler | None = None,
            delay: float = 0.0, times: int | None = None, first: bool = False) -> Route:
        """Register a route. `handler(request, match)` computes the answer; else the fixed one is used.

        `first=True` puts the route ahead of earlier ones (to override a workspace default in a test).
        """
        if handler is None:
            fixed = ReplayResponse(status=status, json=json, text=text, headers=dict(headers or {}))
            handler = lambda request, match: fixed  # noqa: E731
        route = Route(method.upper(), re.compile(path_regex), handler, delay, times)
        if first:
            self.routes.insert(0, route)
        else:
            self.routes.append(route)
        return route

    def fail(self, method: str, path_regex: str, status: int, code: str, message: str, *,
             times: int | None = None) -> Route:
        """Answer with Azure's error envelope `{"error": {"code", "message"}}`."""
        return self.add(method, path_regex, status=status, json={"error": {"code": code, "message": message}},
                        headers={"x-ms-error-code": code}, times=times, first=True)

    # -- what tests assert on
    def sent(self, method: str | None = None, path_regex: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            found = list(self.requests)
        return [r for r in found if (method is None or r.method == method.upper())
                and (path_regex is None or re.search(path_regex, r.path))]

    def mutations(self) -> list[RecordedRequest]:
        """Every request that is not a GET."""
        return [r for r in self.sent() if r.method != "GET"]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- HttpTransport
    def send(self, request: Any, **kwargs: Any) -> _Response:
        url = urlsplit(request.url)
        query = parse_qs(url.query)
        raw = request.content if hasattr(request, "content") else request.data
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8")
        try:
            body = json.loads(raw) if raw else None
        except (TypeError, ValueError):
            body = raw
        recorded = RecordedRequest(request.method.upper(), url.path, (query.get("api-version") or [None])[0],
                                   query, body, url.hostname or "")
        with self._lock:
            self.requests.append(recorded)
            route, match = self._match(recorded)
        with _SENT_LOCK:
            SENT.append(recorded)
        if route is None:
            answer = ReplayResponse(404, {"error": {"code": "ResourceNotFound",
                                                    "message": f"No route for {recorded.method} {url.path}"}},
                                    headers={"x-ms-error-code": "ResourceNotFound"})
        else:
            if route.delay:
                time.sleep(route.delay)
            answer = route.handler(recorded, match)
        headers = {"Content-Type": "application/json", **answer.headers}
        if answer.text is not None:
            content = answer.text.encode()
            headers["Content-Type"] = "text/plain"
        elif answer.json is not None:
            content = json.dumps(answer.json).encode()
        else:
            content = b""
        return _Response(request, answer.status, content, headers)

    def _match(self, recorded: RecordedRequest) -> tuple[Route | None, Any]:
        for route in self.routes:
            if route.method != recorded.method or route.times == 0:
                continue
            match = route.pattern.search(recorded.path)
            if match:
                if route.times is not None:
                    route.times -= 1
                return route, match
        return None, None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "ReplayTransport":
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def sleep(self, duration: float) -> None:      # polling and retry back-off: never wait in tests
        with self._lock:
            self.sleeps.append(duration)


# ---------------------------------------------------------------- fixtures


def load(relative: str) -> dict[str, Any]:
    """A fixture file under tests/fixtures/azure/, parsed."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def example(relative: str, status: str = "200") -> dict[str, Any]:
    """The response body of a published REST example (a deep copy, safe to modify)."""
    return copy.deepcopy(load(relative)["responses"][status]["body"])


def arm_id(*segments: str) -> str:
    """An ARM id under the test workspace: arm_id("onlineEndpoints", "fraud-api")."""
    return "/".join((WORKSPACE_ID, *segments))


def system_data(created_at: str = "2025-01-10T08:00:00Z", by: str = "Ada Lovelace") -> dict[str, str]:
    return {"createdAt": created_at, "createdBy": by, "createdByType": "User",
            "lastModifiedAt": created_at, "lastModifiedBy": by, "lastModifiedByType": "User"}


def page(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A one-page ARM list answer (no nextLink, so the SDK stops paging)."""
    return {"value": items}


# ---------------------------------------------------------------- resource builders (from the examples)


def _identity_without_placeholders(body: dict[str, Any]) -> None:
    identity = body.get("identity")
    if isinstance(identity, dict):
        identity["userAssignedIdentities"] = {}


def online_endpoint(name: str, traffic: dict[str, int], *, mirror: dict[str, int] | None = None,
                    description: str = "", state: str = "Succeeded") -> dict[str, Any]:
    """ml/online_endpoints/get.json as a managed endpoint named `name` (`compute` dropped, see SOURCES.md)."""
    body = example("ml/online_endpoints/get.json")
    body.update(id=arm_id("onlineEndpoints", name), name=name, location=LOCATION,
                type="Microsoft.MachineLearningServices/workspaces/onlineEndpoints", kind="Managed",
                systemData=system_data())
    _identity_without_placeholders(body)
    props = body["properties"]
    props.pop("compute")
    props.update(description=description, provisioningState=state, traffic=dict(traffic),
                 mirrorTraffic=dict(mirror or {}), properties={},
                 scoringUri=f"https://{name}.{LOCATION}.inference.ml.azure.com/score",
                 swaggerUri=f"https://{name}.{LOCATION}.inference.ml.azure.com/swagger.json")
    body.pop("sku")
    return body


def online_deployment(endpoint: str, name: str, model: str, *, instances: int = 1,
                      instance_type: str = "Standard_DS3_v2", state: str = "Succeeded") -> dict[str, Any]:
    """ml/online_deployments/ManagedOnlineDeployment/get.json with real ids; `model` is "name:version"."""
    body = example("ml/online_deployments/ManagedOnlineDeployment/get.json")
    model_name, model_version = model.split(":")
    body.update(id=arm_id("onlineEndpoints", endpoint, "deployments", name), name=name, location=LOCATION,
                type="Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments", kind="Managed",
                systemData=system_data())
    _identity_without_placeholders(body)
    props = body["properties"]
    props.update(description=f"{model} behind {endpoint}", instanceType=instance_type, provisioningState=state,
                 model=arm_id("models", model_name, "versions", model_version),
                 environmentId=arm_id("environments", "sklearn-serve", "versions", "3"),
                 environmentVariables={}, properties={}, modelMountPath="/var/azureml-app/models")
    props["codeConfiguration"] = {"codeId": arm_id("codes", "fraud-score", "versions", "1"),
                                  "scoringScript": "score.py"}
    body["sku"] = {"name": "Default", "tier": "Standard", "capacity": instances}
    return body


def model_container(name: str, latest: str, description: str = "") -> dict[str, Any]:
    """ml/models/ModelContainer/list.json's item for `name`."""
    body = example("ml/models/ModelContainer/list.json")["value"][0]
    body.update(id=arm_id("models", name), name=name, systemData=system_data())
    body["properties"].update(description=description, tags={}, latestVersion=latest, nextVersion=str(int(latest) + 1))
    return body


def model_version(name: str, version: str, *, stage: str = "None", tags: dict[str, str] | None = None,
                  properties: dict[str, str] | None = None, created_at: str = "2025-01-10T08:00:00Z") -> dict[str, Any]:
    """ml/models/ModelVersion/get.json with a real id, stage, tags and properties."""
    body = example("ml/models/ModelVersion/get.json")
    body.update(id=arm_id("models", name, "versions", version), name=version,
                type="Microsoft.MachineLearningServices/workspaces/models/versions", systemData=system_data(created_at))
    props = body["properties"]
    props.update(description=f"{name} version {version}", tags=dict(tags or {}), properties=dict(properties or {}),
                 stage=stage, flavors={}, modelType="mlflow_model",
                 modelUri=f"azureml://subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}/workspaces/"
                          f"{WORKSPACE}/datastores/workspaceblobstore/paths/models/{name}/{version}/")
    return body


def command_job(name: str, status: str, *, experiment: str = "fraud", created_at: str = "2025-01-10T08:00:00Z",
                display_name: str = "") -> dict[str, Any]:
    """ml/jobs/CommandJob/get.json with real ids."""
    body = example("ml/jobs/CommandJob/get.json")
    body.update(id=arm_id("jobs", name), name=name, type="Microsoft.MachineLearningServices/workspaces/jobs",
                systemData=system_data(created_at))
    props = body["properties"]
    props.update(status=status, displayName=display_name or name, experimentName=experiment, tags={"team": "fraud"},
                 properties={}, services={}, description="", command="python train.py",
                 computeId=arm_id("computes", "cpu-cluster"), codeId=arm_id("codes", "train", "versions", "1"),
                 environmentId=arm_id("environments", "sklearn", "versions", "3"), environmentVariables={},
                 inputs={}, outputs={}, parameters={})
    props.pop("distribution")
    props["resources"] = {"instanceCount": 1, "properties": {}}
    return body


def pipeline_job(name: str, status: str, *, created_at: str = "2025-01-11T02:00:00Z") -> dict[str, Any]:
    """ml/jobs/PipelineJob/list.json's item with real ids."""
    body = example("ml/jobs/PipelineJob/list.json")["value"][0]
    body.update(id=arm_id("jobs", name), name=name, type="Microsoft.MachineLearningServices/workspaces/jobs",
                systemData=system_data(created_at))
    props = body["properties"]
    props.update(status=status, displayName=name, experimentName="fraud-nightly", tags={}, properties={},
                 services={}, description="", computeId=arm_id("computes", "cpu-cluster"), inputs={}, outputs={},
                 jobs={}, settings={})
    return body


def child_run(name: str, parent: str, status: str, display_name: str) -> dict[str, Any]:
    """A pipeline step as run history returns it (hand-written, see SOURCES.md)."""
    return load("ml/handwritten/runhistory/child_run.json") | {
        "runId": name, "parentRunId": parent, "rootRunId": parent, "status": status, "displayName": display_name}


def from_handwritten(relative: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(load(relative))
    properties = changes.pop("properties", None)
    body.update(changes)
    if properties:
        body["properties"].update(properties)
    return body


def azure_breach_message(signal: str, rows: list[tuple[str, str, float, float]]) -> str:
    """The `azureml_modelmonitor_threshold_breached` tag's text for (group, metric, value, threshold)
    rows, as `_generate_error_message` writes it (Azure/azureml-assets, model_monitoring/components/src/
    model_monitor_evaluate_metrics_threshold/evaluate_metrics_threshold.py): a Python list of Spark
    toJSON rows (metric_value, metric_name, threshold_value, then group when there is one)."""
    listed = [json.dumps({"metric_value": value, "metric_name": metric, "threshold_value": threshold,
                          **({"group": group} if group else {})}, separators=(",", ":"))
              for group, metric, value, threshold in rows]
    return (f"The signal '{signal}' has failed due to one or more features violating metric thresholds.\n"
            "The feature names and their corresponding computed metric values violating "
            f"the threshold are \n{listed}\n")


def mlflow_metric_run(signal: str, metric: str, feature: str, values: list[float],
                      threshold: float | None) -> dict[str, Any]:
    """An MLflow run as Azure's monitoring components leave it (ml/handwritten/mlflow/metric_run.json): one
    per (monitor, signal, metric, feature), with "value" and "threshold" logged once per daily run of the
    monitor (2026-03-08..10, 03:00 UTC) at step = that time in Unix seconds. Returned as {"run", "history"}."""
    run = copy.deepcopy(load("ml/handwritten/mlflow/metric_run.json"))
    run_id = f"{signal or 'parent'}-{metric}-{feature}".lower()
    run["info"].update(run_id=run_id, run_uuid=run_id, run_name=f"{signal}_{metric}")
    tags = {"azureml.monitor_name": "fraud-model-monitor", "azureml.signal_name": signal,
            "azureml.metric_name": metric, "azureml.group_0": feature}
    run["data"]["tags"] = [{"key": k, "value": v} for k, v in tags.items() if v]
    steps = [1772938800 + day * 86400 for day in range(len(values))]       # 2026-03-08T03:00:00Z, ...
    history = [{"key": "value", "value": v, "timestamp": step * 1000, "step": step} for v, step in zip(values, steps)]
    if threshold is not None:
        history += [{"key": "threshold", "value": threshold, "timestamp": step * 1000, "step": step} for step in steps]
    latest = {p["key"]: p for p in history}            # the last logged point of each metric
    run["data"]["metrics"] = list(latest.values())
    return {"run": run, "history": history}


# ---------------------------------------------------------------- a small stateful workspace


class FakeWorkspace:
    """A small Azure ML workspace served over a ReplayTransport, built from the fixtures.

    Resources live in `resources` keyed by lower-cased ARM id; GET reads them, PUT replaces them
    (provisioningState becomes Succeeded at once), list calls return the direct children, and the
    POST actions (cancel, start, stop, trigger, getLogs, batch invoke) change state like Azure does.
    Every request is recorded on `transport`.
    """

    def __init__(self, transport: ReplayTransport | None = None, *, seed: bool = True,
                 page_size: int | None = None) -> None:
        self.transport = transport or ReplayTransport()
        self.page_size = page_size               # list answers in pages of this size, linked by nextLink
        self.resources: dict[str, dict[str, Any]] = {}
        self.batch_jobs: dict[str, list[dict[str, Any]]] = {}
        self.child_runs: dict[str, list[dict[str, Any]]] = {}
        self.schedule_jobs: dict[str, list[str]] = {}   # schedule name -> names of the jobs it created
        self.logs = "2025-01-11T10:00:00Z INFO  Scoring request received\n2025-01-11T10:00:01Z INFO  200 OK\n"
        self._routes()
        if seed:
            self.seed()

    # -- state
    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.resources[body["id"].lower()] = body
        return body

    def get(self, *segments: str) -> dict[str, Any] | None:
        return self.resources.get(arm_id(*segments).lower())

    def seed(self) -> None:
        """The demo workspace: fraud-model in Production, fraud-api split blue/green, jobs, schedules, compute."""
        self.add(model_container("fraud-model", "3", "Card fraud classifier"))
        self.add(model_version("fraud-model", "1", stage="Archived", properties={"auc": "0.88"},
                               created_at="2024-11-01T08:00:00Z"))
        self.add(model_version("fraud-model", "2", stage="Production", tags={"owner": "ada"},
                               properties={"auc": "0.91", "azureml.runId": "train-fraud-041"},
                               created_at="2024-12-01T08:00:00Z"))
        self.add(model_version("fraud-model", "3", stage="Staging", properties={"auc": "0.93"},
                               created_at="2025-01-10T08:00:00Z"))
        self.add(model_container("churn-model", "1", "Customer churn"))
        self.add(model_version("churn-model", "1", stage="Production", tags={"f1": "0.71"}))

        self.add(online_endpoint("fraud-api", {"blue": 90, "green": 10}, description="Card fraud scoring"))
        self.add(online_deployment("fraud-api", "blue", "fraud-model:2", instances=3))
        self.add(online_deployment("fraud-api", "green", "fraud-model:3", instances=1))
        self.add(online_endpoint("churn-api", {"main": 100}))
        self.add(online_deployment("churn-api", "main", "churn-model:1", instances=2,
                                   instance_type="Standard_F4s_v2"))

        self.add(command_job("train-fraud-042", "Completed", created_at="2025-01-10T08:00:00Z"))
        self.add(command_job("train-fraud-043", "Running", created_at="2025-01-11T09:00:00Z"))
        self.add(command_job("train-churn-007", "Failed", experiment="churn", created_at="2025-01-09T08:00:00Z"))
        self.add(pipeline_job("nightly-fraud-pipeline", "Running"))
        self.child_runs["nightly-fraud-pipeline"] = [
            child_run("prep-data-1", "nightly-fraud-pipeline", "Completed", "prep_data"),
            child_run("train-model-1", "nightly-fraud-pipeline", "Running", "train_model")]

        self.add(from_handwritten("ml/handwritten/schedules/cron_job_schedule.json"))
        self.add(from_handwritten("ml/handwritten/schedules/recurrence_job_schedule.json"))

        self.add(from_handwritten("ml/handwritten/computes/amlcompute.json"))
        self.add(from_handwritten("ml/handwritten/computes/computeinstance.json"))

        self.add(from_handwritten("ml/handwritten/batch_endpoints/get.json"))
        self.add(from_handwritten("ml/handwritten/batch_deployments/get.json"))
        self.batch_jobs["fraud-batch"] = [load("ml/handwritten/batch_endpoints/job.json")]

    def seed_monitor(self, breached: bool = True) -> None:
        """The monitor schedule `fraud-model-monitor` and three of its daily runs (pipeline jobs); the
        latest run's evaluation step carries Azure's breach tag when `breached`."""
        self.add(from_handwritten("ml/handwritten/schedules/monitor_schedule.json"))
        names = []
        for day in (8, 9, 10):
            name = f"fraud-model-monitor-202603{day:02d}0300"
            body = pipeline_job(name, "Completed", created_at=f"2026-03-{day:02d}T03:00:00Z")
            body["properties"].update(displayName="fraud-model-monitor", experimentName="fraud-model-monitor")
            self.add(body)
            names.append(name)
        self.schedule_jobs["fraud-model-monitor"] = names
        step = child_run(f"{names[-1]}-evaluate", names[-1], "Completed", "data-drift evaluate metrics threshold")
        if breached:
            step["tags"] = {"azureml_modelmonitor_threshold_breached": azure_breach_message(
                "data-drift", [("merchant_category", "JensenShannonDistance", 0.197, 0.1)])}
        self.child_runs[names[-1]] = [step]
        self.mlflow_experiments = {"fraud-model-monitor": "9d5e2c1b-4a3f-4e6d-8c7b-1a2b3c4d5e6f"}
        # the figures Azure's monitoring components logged, per (signal, metric, feature): value per run
        # (oldest first, one per daily run above) and threshold
        self.mlflow_runs = [
            mlflow_metric_run("data-drift", "JensenShannonDistance", "merchant_category", [0.15, 0.169, 0.197], 0.1),
            mlflow_metric_run("data-drift", "NormalizedWassersteinDistance", "transaction_amount",
                              [0.036, 0.037, 0.0322], 0.1),
            mlflow_metric_run("data-drift", "NormalizedWassersteinDistance", "customer_age", [0.041, 0.021, 0.05], 0.1),
            mlflow_metric_run("data-quality", "NullValueRate", "country", [0.001, 0.002, 0.00267], 0.01),
        ]
        self.mlflow_runs.append(mlflow_metric_run("", "azureml.metrics", "", [], None))   # the parent run
        base = r"/mlflow/v1\.0/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/workspaces/[^/]+/api/2\.0/mlflow"
        t = self.transport
        t.add("GET", base + r"/experiments/get-by-name$", handler=self._mlflow_experiment, first=True)
        t.add("POST", base + r"/runs/search$", handler=self._mlflow_search, first=True)
        t.add("GET", base + r"/metrics/get-history$", handler=self._mlflow_history, first=True)

    def _mlflow_experiment(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        name = (request.query.get("experiment_name") or [""])[0]
        if name not in self.mlflow_experiments:
            return ReplayResponse(404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                        "message": f"Experiment '{name}' does not exist."})
        return ReplayResponse(json={"experiment": {"experiment_id": self.mlflow_experiments[name], "name": name,
                                                   "lifecycle_stage": "active"}})

    def _mlflow_search(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        wanted = re.search(r"tags\.`azureml\.monitor_name` = '([^']*)'", request.body.get("filter", ""))
        runs = [r["run"] for r in self.mlflow_runs
                if r["run"]["info"]["experiment_id"] in request.body.get("experiment_ids", [])
                and wanted and {"key": "azureml.monitor_name", "value": wanted[1]} in r["run"]["data"]["tags"]]
        return ReplayResponse(json={"runs": runs} if runs else {})

    def _mlflow_history(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        run_id = (request.query.get("run_id") or [""])[0]
        key = (request.query.get("metric_key") or [""])[0]
        for r in self.mlflow_runs:
            if r["run"]["info"]["run_id"] == run_id:
                return ReplayResponse(json={"metrics": [p for p in r["history"] if p["key"] == key]})
        return ReplayResponse(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run {run_id} not found."})

    def seed_from_demo(self, demo: Any) -> None:
        """The same workspace the local backend serves (adapters.local.demo), as Azure would return it.

        Used by the contract suite so both implementations answer about the same resources.
        Approximations: sweep/batch jobs are served as command jobs; recurrence schedules keep only
        frequency, interval and time of day.
        """
        def iso(when: Any) -> str:
            return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else "2025-01-10T08:00:00Z"

        latest: dict[str, int] = {}
        for m in demo.models:
            body = model_version(m.name, m.version, stage=m.stage, tags=m.tags,
                                 properties={k: str(v) for k, v in m.metrics.items()}, created_at=iso(m.created_at))
            body["systemData"]["createdBy"] = m.created_by
            body["properties"]["description"] = m.description
            self.add(body)
            latest[m.name] = max(latest.get(m.name, 0), int(m.version))
        for name, version in latest.items():
            self.add(model_container(name, str(version)))
        for e in demo.endpoints:
            self.add(online_endpoint(e.name, e.traffic, mirror=e.mirror_traffic, description=e.description))
            for d in e.deployments:
                self.add(online_deployment(e.name, d.name, d.model, instances=d.instance_count,
                                           instance_type=d.instance_type, state=d.provisioning_state or "Succeeded"))
        for planned in demo.jobs:
            j = planned.job
            if j.parent:
                run = child_run(j.name, j.parent, j.status, j.display_name)
                self.child_runs.setdefault(j.parent, []).append(run)
                continue
            body = (pipeline_job(j.name, j.status, created_at=iso(j.created_at)) if j.type == "pipeline"
                    else command_job(j.name, j.status, experiment=j.experiment, created_at=iso(j.created_at)))
            body["properties"].update(displayName=j.display_name, experimentName=j.experiment, tags=dict(j.tags),
                                      computeId=arm_id("computes", j.compute))
            body["systemData"]["createdBy"] = j.created_by
            self.add(body)
        for schedule, template in demo.schedules:
            source = "cron_job_schedule.json" if schedule.trigger == "cron" else "recurrence_job_schedule.json"
            body = from_handwritten(f"ml/handwritten/schedules/{source}", id=arm_id("schedules", schedule.name),
                                    name=schedule.name)
            props = body["properties"]
            props.update(displayName=schedule.name, description=schedule.description, isEnabled=schedule.enabled)
            props["action"]["jobDefinition"]["displayName"] = template.display_name
            if schedule.trigger == "cron":
                props["trigger"].update(expression=schedule.expression, timeZone=schedule.time_zone)
            self.add(body)
        self.seed_monitor()             # replaces the demo's fraud-model-monitor with a real monitor schedule
        for c in demo.compute:
            source = "amlcompute.json" if c.type == "amlcompute" else "computeinstance.json"
            body = from_handwritten(f"ml/handwritten/computes/{source}", id=arm_id("computes", c.name), name=c.name)
            inner = body["properties"]["properties"]
            inner["vmSize"] = c.size
            if c.type == "amlcompute":
                inner["scaleSettings"].update(minNodeCount=c.min_nodes or 0, maxNodeCount=c.max_nodes or 1)
                inner["currentNodeCount"] = c.current_nodes or 0
            else:
                inner["state"] = c.state
            self.add(body)
        for b in demo.batch_endpoints:
            body = from_handwritten("ml/handwritten/batch_endpoints/get.json", id=arm_id("batchEndpoints", b.name),
                                    name=b.name)
            body["properties"].update(description=b.description, scoringUri=b.scoring_uri,
                                      defaults={"deploymentName": b.default_deployment})
            self.add(body)
        for bd in demo.batch_deployments:
            body = from_handwritten("ml/handwritten/batch_deployments/get.json",
                                    id=arm_id("batchEndpoints", bd.endpoint, "deployments", bd.name), name=bd.name)
            self.add(body)

    # -- HTTP
    def _routes(self) -> None:
        t, ws = self.transport, re.escape(WORKSPACE_ID)
        t.add("GET", rf"{ws}$", handler=lambda r, m: ReplayResponse(json=from_handwritten(
            "ml/handwritten/workspace/get.json")))
        t.add("GET", r"/discovery$", handler=lambda r, m: ReplayResponse(json=load(
            "ml/handwritten/workspace/discovery.json")))
        t.add("GET", r"/history/v1\.0/.*/runs/(?P<parent>[^/]+)/children$",
              handler=lambda r, m: ReplayResponse(json={"value": self.child_runs.get(m["parent"], []),
                                                        "nextLink": None}))
        t.add("GET", r"/batchEndpoints/(?P<endpoint>[^/]+)/jobs$",
              handler=lambda r, m: ReplayResponse(json=page(self.batch_jobs.get(m["endpoint"], []))))
        t.add("POST", r"^/jobs$", handler=self._invoke_batch)          # the batch endpoint's scoring URI
        t.add("POST", r"/deployments/[^/]+/getLogs$",
              handler=lambda r, m: ReplayResponse(json={"content": self._tail(r.body)}))
        t.add("POST", rf"{ws}/jobs/(?P<name>[^/]+)/cancel$", handler=self._cancel)
        t.add("POST", rf"{ws}/computes/(?P<name>[^/]+)/(?P<action>start|stop|restart)$", handler=self._compute_action)
        t.add("POST", rf"{ws}/schedules/(?P<name>[^/]+)/trigger$", handler=self._trigger)
        t.add("GET", r"/operationResults/[^/]+$", status=200)        # a finished long-running operation
        t.add("GET", r"/mfeOperationsStatus/[^/]+$", json={"status": "Succeeded"})   # Azure-AsyncOperation: done
        t.add("GET", rf"{ws}/.+", handler=self._get)
        t.add("PUT", rf"{ws}/.+", handler=self._put)
        t.add("PATCH", rf"{ws}/onlineEndpoints/[^/]+/deployments/[^/]+$", handler=self._patch_deployment)

    def _tail(self, body: Any) -> str:
        lines = self.logs.splitlines(keepends=True)
        tail = (body or {}).get("tail")
        return "".join(lines[-tail:] if tail else lines)

    def _get(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        key = request.path.rstrip("/").lower()
        if key in self.resources:
            return ReplayResponse(json=self.resources[key])
        children = [body for rid, body in self.resources.items() if rid.rsplit("/", 1)[0] == key]
        collection = key.rsplit("/", 1)[-1]
        if children or collection in ("onlineendpoints", "deployments", "models", "versions", "jobs",
                                      "schedules", "computes", "batchendpoints"):
            stage = (request.query.get("stage") or [None])[0]
            if stage:
                children = [c for c in children if c["properties"].get("stage") == stage]
            view = (request.query.get("listViewType") or ["ActiveOnly"])[0]    # ARM's default: archived hidden
            if view != "All":
                children = [c for c in children
                            if bool(c["properties"].get("isArchived")) == (view == "ArchivedOnly")]
            if collection == "versions":
                children.sort(key=lambda c: int(c["name"]) if c["name"].isdigit() else 0, reverse=True)
            if collection == "jobs":
                children.sort(key=lambda c: c["systemData"]["createdAt"], reverse=True)
                scheduled = (request.query.get("scheduleId") or [None])[0]
                if scheduled is not None:       # jobs.list(schedule_defined=True, scheduled_job_name=...)
                    children = [c for c in children if c["name"] in self.schedule_jobs.get(scheduled, [])]
            return ReplayResponse(json=self._page(request, children))
        return _not_found(request.path)

    def _page(self, request: RecordedRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
        """One page of a list answer; with `page_size`, a nextLink carries `$skipToken` like ARM's."""
        if not self.page_size:
            return page(items)
        skip = int((request.query.get("$skipToken") or ["0"])[0])
        answer: dict[str, Any] = {"value": items[skip:skip + self.page_size]}
        if skip + self.page_size < len(items):
            answer["nextLink"] = (f"https://management.azure.com{request.path}?api-version={request.api_version}"
                                  f"&$skipToken={skip + self.page_size}")
        return answer

    def _patch_deployment(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        """ARM's partial update (PartialMinimalTrackedResourceWithSku): merge `sku` and `tags`, answer 202."""
        deployment = self.resources.get(request.path.rstrip("/").lower())
        if deployment is None:
            return _not_found(request.path)
        body = request.body or {}
        deployment.setdefault("sku", {}).update(body.get("sku") or {})
        if "tags" in body:
            deployment["tags"] = body["tags"]
        deployment["properties"]["provisioningState"] = "Succeeded"
        status = (f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/providers/"
                  f"Microsoft.MachineLearningServices/locations/{LOCATION}/mfeOperationsStatus/"
                  f"op-{time.monotonic_ns()}?api-version=2023-04-01-preview")
        return ReplayResponse(202, headers={"Azure-AsyncOperation": status, "Location": _operation_result()})

    def _put(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        key = request.path.rstrip("/").lower()
        body = copy.deepcopy(request.body) or {}
        old = self.resources.get(key, {})
        name = request.path.rstrip("/").rsplit("/", 1)[-1]
        body.update(id=old.get("id", request.path), name=old.get("name", name),
                    systemData=old.get("systemData", system_data()))
        props = body.setdefault("properties", {})
        for field_name, value in old.get("properties", {}).items():   # server-side fields the client omits
            props.setdefault(field_name, value)
        if "provisioningState" in old.get("properties", {}) or "/onlineendpoints/" in key or "/schedules/" in key:
            props["provisioningState"] = "Succeeded"
        self.resources[key] = body
        return ReplayResponse(json=body)

    def _cancel(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        job = self.get("jobs", match["name"])
        if job is None:
            return _not_found(request.path)
        if job["properties"]["status"] in ("Completed", "Failed", "Canceled"):
            return ReplayResponse(409, {"error": {"code": "UserError",
                                                  "message": f"Job {match['name']} is already {job['properties']['status']}."}})
        job["properties"]["status"] = "Canceled"
        return ReplayResponse(202, headers={"Location": _operation_result()})

    def _compute_action(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        compute = self.get("computes", match["name"])
        if compute is None:
            return _not_found(request.path)
        inner = compute["properties"].setdefault("properties", {})
        if compute["properties"]["computeType"] != "ComputeInstance":
            return ReplayResponse(400, {"error": {"code": "BadRequest",
                                                  "message": "Only compute instances can be started or stopped."}})
        inner["state"] = {"start": "Running", "stop": "Stopped", "restart": "Running"}[match["action"]]
        return ReplayResponse(202, headers={"Location": _operation_result()})

    def _trigger(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        if self.get("schedules", match["name"]) is None:
            return _not_found(request.path)
        name = f"{match['name']}-triggered-{sum(1 for k in self.resources if '/jobs/' in k) + 1}"
        self.add(command_job(name, "NotStarted", created_at="2025-01-12T00:00:00Z"))
        return ReplayResponse(json={"submissionId": name, "scheduleActionType": "CreateJob"})

    def _invoke_batch(self, request: RecordedRequest, match: Any) -> ReplayResponse:
        job = load("ml/handwritten/batch_endpoints/job.json")
        job.update(name=f"batch-{len(self.batch_jobs.get('fraud-batch', [])) + 1}")
        job["properties"]["status"] = "NotStarted"
        self.batch_jobs.setdefault("fraud-batch", []).insert(0, job)
        return ReplayResponse(json=job)


def _operation_result() -> str:
    """Where a 202 answer tells the poller to look (ARM's Location header); answered 200 = done."""
    return f"https://management.azure.com{WORKSPACE_ID}/operationResults/op-{time.monotonic_ns()}?api-version=2023-04-01-preview"


def _not_found(path: str) -> ReplayResponse:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return ReplayResponse(404, {"error": {"code": "UserError", "message": f"Could not find '{name}'."}},
                          headers={"x-ms-error-code": "UserError"})


Dimensions = str | dict[str, str] | None     # a reading's dimension values (see monitor_answer)
Values = float | list[float | None]          # one value a minute: the same every minute, or minute by minute
_FILTER_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+'([^']*)'\s*", re.IGNORECASE)
DEFAULT_TOP = 10                             # Azure Monitor's `top` when a filtered query names none


def _dimensions_of(reading: Dimensions) -> dict[str, str]:
    """A reading's dimension values: None (not split), "5xx" (statusCodeClass, the short form) or
    {"deployment": "blue", "statusCodeClass": "5xx"}."""
    if reading is None:
        return {}
    return {"statusCodeClass": reading} if isinstance(reading, str) else dict(reading)


def _asked_split(request: RecordedRequest) -> dict[str, str]:
    """The request's $filter as {dimension (lower case): value or "*"}; "a eq '*' and b eq '5xx'" only."""
    text = (request.query.get("filter") or [""])[0]
    asked = {}
    for clause in filter(None, re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)):
        match = _FILTER_CLAUSE.fullmatch(clause)
        assert match, f"the replay reads only 'dimension eq value' clauses joined by 'and': {text!r}"
        asked[match[1].lower()] = match[2]
    return asked


def _answers(dimensions: dict[str, str], asked: dict[str, str]) -> bool:
    """Is a reading stored at exactly the asked split (and with the asked values where the filter
    names one)?"""
    own = {name.lower(): value for name, value in dimensions.items()}
    return set(own) == set(asked) and all(want in ("*", own[name]) for name, want in asked.items())


def _finer(dimensions: dict[str, str], asked: dict[str, str]) -> bool:
    """Is a reading split by more dimensions than asked (so Azure collapses it onto the asked ones)?"""
    own = {name.lower(): value for name, value in dimensions.items()}
    return set(own) > set(asked) and all(want in ("*", own[name]) for name, want in asked.items())


def request_series(deployment: str, status_code: str | int, values: Values, *,
                   model_status_code: str | int | None = None) -> tuple[dict[str, str], Values]:
    """A RequestsPerMinute reading with every dimension Azure Monitor stores it with (deployment,
    statusCode, statusCodeClass, modelStatusCode; the supported-metrics table of onlineEndpoints):
    that deployment's requests answered `status_code`, one count a minute."""
    code = str(status_code)
    return ({"deployment": deployment, "statusCode": code, "statusCodeClass": f"{code[0]}xx",
             "modelStatusCode": str(model_status_code if model_status_code is not None else code)}, values)


def _window(request: RecordedRequest) -> tuple[datetime, int, int]:
    """The request's start, its length in minutes and its grain in minutes."""
    start = isodate.parse_datetime(request.query["starttime"][0])
    end = isodate.parse_datetime(request.query["endtime"][0])
    minutes = max(1, round((end - start).total_seconds() / 60))
    grain = isodate.parse_duration((request.query.get("interval") or ["PT1M"])[0])
    return start, minutes, max(1, round(grain.total_seconds() / 60))


def _minute_values(values: Values, minutes: int) -> list[float | None]:
    """A reading's value in each minute of the window."""
    if isinstance(values, (int, float)):
        return [float(values)] * minutes
    return (list(values) + [None] * minutes)[:minutes]


def _series(readings: list[tuple[Dimensions, Values]], asked: dict[str, str], minutes: int,
            grain: int) -> list[tuple[dict[str, str], list[float | None]]]:
    """What Azure answers for one metric: [(dimension values, the Average of each grain or None)].

    The readings stored at exactly the asked split are answered as they are (that is how a test
    gives the endpoint's own percentiles, which are not made from the deployments'). Otherwise the
    readings split more finely are collapsed onto the asked dimensions, and a grain's Average is
    the sum of the values present in it over their count: a minute without a value is not counted,
    and collapsed series are averaged together (Microsoft's "Azure Monitor metrics aggregation
    explained", https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-aggregation-explained).
    """
    exact = [(_dimensions_of(d), v) for d, v in readings if _answers(_dimensions_of(d), asked)]
    chosen = exact or [(_dimensions_of(d), v) for d, v in readings if _finer(_dimensions_of(d), asked)]
    groups: dict[tuple[str, ...], list[list[float | None]]] = {}
    names: dict[tuple[str, ...], dict[str, str]] = {}
    for dimensions, values in chosen:
        own = {name.lower(): value for name, value in dimensions.items()}
        key = tuple(own[name] for name in sorted(asked))
        names[key] = {name: own[name] for name in sorted(asked)}
        groups.setdefault(key, []).append(_minute_values(values, minutes))
    answered = []
    for key, members in groups.items():
        averages = []
        for first in range(0, minutes, grain):
            present = [v for member in members for v in member[first:first + grain] if v is not None]
            averages.append(sum(present) / len(present) if present else None)
        answered.append((names[key], averages))
    return answered


def monitor_answer(request: RecordedRequest, match: Any,
                   readings: dict[str, dict[str, list[tuple[Dimensions, Values]]]] | None = None) -> ReplayResponse:
    """Azure Monitor's metrics:getBatch answer, shaped like monitor/metrics_dataplane/MetricBatchExample2.json.

    `readings`: resource id -> metric name -> [(dimensions, values)], the series Azure stores.
    Dimensions are None (a series without dimensions), a statusCodeClass value ("5xx") or
    {dimension name: value} such as {"deployment": "blue", "statusCodeClass": "5xx"}; values are
    the series' value a minute: a number (the same every minute of the window) or a list, minute
    by minute from the window's start (None: no value that minute). The answer is computed as Azure
    computes it (see `_series`) for the request's filter, timespan and interval, one data point per
    grain (a grain without a value has no `average`, as Azure answers); it names the dimensions in
    `metadatavalues` in lower case (Azure answers "blobtype" for the dimension BlobType) and holds
    at most `top` series per metric and resource (10 when a filtered query names none). A metric
    without matching readings comes back with no time series, as Azure answers for an endpoint
    without traffic.
    """
    published = example("monitor/metrics_dataplane/MetricBatchExample2.json")
    template_value, names = published["values"][0], request.query["metricnames"][0].split(",")
    namespace, asked = request.query["metricnamespace"][0], _asked_split(request)
    start, minutes, grain = _window(request)
    interval = (request.query.get("interval") or ["PT1M"])[0]
    top = int((request.query.get("top") or [DEFAULT_TOP])[0]) if asked else None
    values = []
    for rid in request.body["resourceids"]:
        value = copy.deepcopy(template_value)
        value.update(resourceid=rid, namespace=namespace.lower(), interval=interval, value=[],
                     starttime=_iso(start), endtime=_iso(start + timedelta(minutes=minutes)))
        for name in names:
            metric = copy.deepcopy(template_value["value"][0])
            metric.update(id=f"{rid}/providers/Microsoft.Insights/metrics/{name}", unit="Count",
                          name={"value": name, "localizedValue": name}, displayDescription=name, timeseries=[])
            found = _series((readings or {}).get(rid, {}).get(name, []), asked, minutes, grain)
            for dimensions, averages in found[:top]:
                meta = [{"name": {"value": dim.lower(), "localizedValue": dim.lower()}, "value": val}
                        for dim, val in dimensions.items()]
                data = []
                for index, average in enumerate(averages):
                    point: dict[str, Any] = {"timeStamp": _iso(start + timedelta(minutes=index * grain))}
                    if average is not None:
                        point["average"] = average
                    data.append(point)
                metric["timeseries"].append({"metadatavalues": meta, "data": data})
            value["value"].append(metric)
        values.append(value)
    return ReplayResponse(json={"values": values})


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def metrics_client(transport: ReplayTransport, **kwargs: Any) -> Any:
    """A real azure.monitor.querymetrics.MetricsClient over the replay transport, retries off."""
    from azure.monitor.querymetrics import MetricsClient

    kwargs.setdefault("retry_total", 0)
    return MetricsClient(f"https://{LOCATION}.metrics.monitor.azure.com", FakeCredential(), transport=transport,
                         **kwargs)


def ml_client(transport: ReplayTransport, **kwargs: Any) -> Any:
    """A real MLClient over the replay transport, with retries off (tests must stay fast)."""
    from azure.ai.ml import MLClient

    kwargs.setdefault("retry_total", 0)
    return MLClient(FakeCredential(), SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, transport=transport,
                    polling_interval=0, **kwargs)


def demo_azure(identity: str = "mlops-bot-test-identity") -> tuple[FakeWorkspace, Any]:
    """The demo workspace (adapters.local.demo) served over replay, and an AzureMLService reading it."""
    from datetime import datetime, timezone

    from adapters.azureml.metrics import AzureMonitorMetrics
    from adapters.azureml.workspace import AzureMLService
    from adapters.local.demo import build_demo

    from adapters.local.demo_feature_store import build_feature_stores
    from tests.replay_feature_store import serve_feature_stores

    workspace = FakeWorkspace(seed=False)
    now = datetime.now(timezone.utc)
    workspace.seed_from_demo(build_demo(now))
    serve_feature_stores(workspace, build_feature_stores(now))
    workspace.transport.add("POST", r"/metrics:getBatch$", handler=monitor_answer)
    metrics = AzureMonitorMetrics(metrics_client(workspace.transport))
    return workspace, AzureMLService(ml_client(workspace.transport), environment="prod", identity=identity,
                                     metrics=metrics)
