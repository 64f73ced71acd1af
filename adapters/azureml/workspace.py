"""`AzureMLService`: the `MLService` port over a real Azure ML workspace (azure-ai-ml's `MLClient`).

    svc = build_azure_service(sub, rg, "ws-prod", environment="prod")          # production
    svc = AzureMLService(MLClient(cred, sub, rg, ws, transport=replay, polling_interval=0))  # tests

Every SDK call runs inside `self._call(kind, name, role)`, and every SDK exception goes through the
one function `translate_error`, which maps by type:

    ResourceNotFoundError                          -> NotFound(kind, name)
    ResourceExistsError, HTTP 409                  -> Conflict
    HTTP 400, azure.ai.ml ValidationException      -> InvalidRequest
    ClientAuthenticationError, HTTP 401/403        -> PermissionDenied(identity=..., role=...)
    ServiceRequestError/ServiceResponseError (incl. timeouts), HTTP 408/429/5xx -> Unavailable
    anything else from azure                       -> ServiceError
Azure's error code is kept in `code=`, its message in the message.

Choices worth knowing:
- Model metrics: numeric values of the model version's `properties` (where MLflow/AutoML put them)
  and, failing that, of its tags; keys that look like system keys (`azureml.`, `mlflow.`, `_`) are
  skipped. Tags stay in `tags` as well.
- `list_models()` without a name reads the model containers (following Azure's pages, at most
  1000), then the latest version of each: one GET per model, at most 8 at once, all within
  `model_read_budget` seconds (Unavailable, with counts, if Azure is slower). With a stage, it is
  the newest version in that stage for each model, read the same way.
- `set_traffic` validates like Azure does (deployments exist, integer percentages summing to 100,
  no live traffic on a mirrored deployment, endpoint not Creating/Updating/Deleting) before calling
  Azure. Online endpoints have no ETag and the SDK PUTs the whole endpoint, so the endpoint is read
  again right before the PUT and the change is refused (Conflict "TrafficChanged") if its live split
  is no longer the one the caller saw (`expected`) or, without it, the one first read.
- `scale_deployment` PATCHes only `sku.capacity` (the published OnlineDeployments_Update shape): the
  SDK's GET-then-PUT would drop `modelMountPath`, `identity` and `kind` from the deployment.
- Endpoint metrics: the configured Azure Monitor source, or one for the workspace's region
  (https://<location>.metrics.monitor.azure.com) built on first use. The endpoint's mirrored
  deployments (`mirror_traffic` above 0) go with it, so shadow requests stay out of the live totals.
- Model versions are read through the SDK's REST version operations (same requests as `models.get`
  and `models.list`), because the Model entity drops `isArchived`; lists by name use listViewType
  All, archived versions flagged. Archive/restore are `models.archive`/`models.restore`; a stage
  change PUTs the stored body with only `stage` changed, never through `models.create_or_update`,
  whose PUT always sends `isArchived: false` and drops `jobName` and `intellectualProperty`. That PUT
  is repeated (at most STAGE_ATTEMPTS times, STAGE_RETRY_WAIT s of waiting) while Azure answers
  408/429/5xx, honouring Retry-After.
- A schedule's trigger starts a job, so its POST is sent once (`retry_total=0` for that call: azure-core
  re-sends a POST after 500/503/504 or any Retry-After); the job it names is read again for a few
  seconds if Azure does not list it at once, then returned NotStarted to be watched.
- Job lists (a monitor's runs, a feature set's materializations) come in no documented order and take
  no $orderby/$top: `newest_first` sorts them by creation time and stops at the first page that brings
  nothing newer.
- A feature store is a workspace of its own: `feature_stores.list()` finds them in the resource
  group, and everything inside one goes through a second MLClient bound to the store (same
  credential and pipeline settings), so the bot's identity needs a role on the store itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote

from azure.ai.ml import Input, MLClient
from azure.ai.ml.entities import JobSchedule
from azure.ai.ml.exceptions import MlException, ValidationException
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from adapters.azureml.metrics import AzureMonitorMetrics, EndpointMetricsSource, EndpointRef, regional_metrics_endpoint
from adapters.azureml.monitoring import BREACH_TAG, breaches, metric_name, parse_breach_tag
from adapters.monitor_targets import check_window, resolve
from adapters.posture import (READ_ACTIONS, ComputeSecurity, DatastoreSecurity, DiagnosticSetting, EndpointSecurity,
                              PostureFacts, RoleAssignment, Unreadable, WorkspaceSecurity, diagnostic_setting, lacks,
                              role_assignment)
from adapters.service import (
    MAX_INSTANCES,
    BatchDeployment,
    MIN_INSTANCES,
    RESOURCE_KINDS,
    STAGES,
    BatchEndpoint,
    Compute,
    Conflict,
    Deployment,
    EndpointMetrics,
    InvalidRequest,
    Job,
    ModelVersion,
    NotFound,
    OnlineEndpoint,
    Operation,
    PermissionDenied,
    Schedule,
    ServiceError,
    Unavailable,
    WorkspaceInfo,
)
from adapters.service import (
    DriftReport, FeatureFigure, MetricThreshold, Monitor, MonitorRun, MonitorSignal, SignalReport,
    TRAINING_SCHEDULE_TAG, Feature, FeatureEntity, FeatureSet, FeatureStore, Materialization, training_schedule,
)

DATA_SCIENTIST = "AzureML Data Scientist"
READER = "Reader"
METRICS_BATCH = 50               # Azure Monitor's metrics:getBatch takes at most 50 resource ids per call
ALL_SCHEDULES = "All"            # ScheduleListViewType.ALL: enabled and disabled schedules
ALL_ASSETS = "All"               # ListViewType.ALL: active and archived asset versions
FEATURE_STORE_ROLE = "AzureML Data Scientist"   # needed on the feature store itself (a workspace of its own)

log = logging.getLogger(__name__)
_MODEL_VERSION_ID = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$", re.IGNORECASE)
_SYSTEM_KEY = re.compile(r"^(azureml\.|mlflow\.|_)", re.IGNORECASE)
_JOB_SCAN_LIMIT = 500            # list_jobs never reads more than this many jobs to find `limit` matches
_MODEL_SCAN_LIMIT = 1000         # list_models() reads at most this many models (pages of Azure's list)
_MODEL_READERS = 8               # latest versions read at once (polite to ARM's per-identity read budget)
MODEL_READ_BUDGET = 20.0         # seconds for all of them: below the bot's 30 s call timeout, with an answer
BUSY_STATES = ("Creating", "Updating", "Deleting")   # provisioning states in which Azure refuses a change
STAGE_ATTEMPTS = 4               # PUTs of one model version's stage at most (see _put_model_version)
STAGE_RETRY_WAIT = 15.0          # seconds waited between them at most, in all (the bot's call timeout is 30 s)
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)    # what azure-core's RetryPolicy retries too
JOB_VISIBLE_WAITS = (1.0, 2.0, 4.0, 8.0)    # seconds between reads of a job just triggered (15 s in all)
DIAGNOSTIC_SETTINGS_API = "2021-05-01-preview"   # Azure Monitor's diagnostic settings (Diagnostic Settings - List)
ROLE_ASSIGNMENTS_API = "2022-04-01"              # Microsoft.Authorization role assignments (List For Scope)
ROLE_ASSIGNMENT_PAGES = 20                       # pages of role assignments read at most
JOB_SCAN = 2000                  # jobs of one list (a monitor's runs, a feature set's materializations) read at most


# ---------------------------------------------------------------- error translation


def translate_error(exc: BaseException, *, kind: str = "", name: str = "", identity: str = "",
                    role: str = DATA_SCIENTIST) -> ServiceError:
    """The one place that turns an Azure SDK exception into our ServiceError tree."""
    if isinstance(exc, ServiceError):
        return exc
    code, message = _azure_code_and_message(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(kind or "resource", name, code=code or "ResourceNotFound")
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        who = identity or "the bot's identity"
        return PermissionDenied(f"{who} may not do this in Azure ML (needs role '{role}'): {message}",
                                identity=identity or None, role=role, code=code)
    if isinstance(exc, ResourceExistsError) or status == 409:
        return Conflict(message, code=code)
    if isinstance(exc, ValidationException) or status == 400:
        return InvalidRequest(message, code=code)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)) or status in (408, 429) or (
            status is not None and status >= 500):
        return Unavailable(f"Azure ML did not answer: {message}", code=code)
    if isinstance(exc, (AzureError, MlException)):
        return ServiceError(message, code=code)
    return ServiceError(f"{type(exc).__name__}: {exc}")


def _retry_after(response: Any) -> float | None:
    """Seconds Azure asks to wait: `retry-after-ms`, `x-ms-retry-after-ms` or `Retry-After` (seconds or
    an HTTP date), as azure-core's RetryPolicy reads them; None without one."""
    headers = getattr(response, "headers", None) or {}
    for header, scale in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0), ("Retry-After", 1.0)):
        value = headers.get(header)
        if not value:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                moment = parsedate_to_datetime(value)
                return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())
    return None


def _azure_code_and_message(exc: BaseException) -> tuple[str | None, str]:
    """Azure's error code and plain message (without the SDK's '(Code) ... Code: ... Message:' wrapping)."""
    error = getattr(exc, "error", None)          # ODataV4Format on HttpResponseError
    code = getattr(error, "code", None) or None
    message = getattr(error, "message", None)
    if not message:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if code is None and isinstance(exc, HttpResponseError) and exc.response is not None:
        code = exc.response.headers.get("x-ms-error-code")
    return code, str(message).strip().splitlines()[0]


# ---------------------------------------------------------------- small converters


def _text(value: Any) -> str:
    """Plain text of an SDK value (enums give their value, None gives "")."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def model_ref(model: Any) -> str:
    """'name:version' from a deployment's model reference (ARM id, 'azureml:name:version', or entity)."""
    if model is None:
        return ""
    if not isinstance(model, str):
        name, version = getattr(model, "name", None), getattr(model, "version", None)
        return f"{name}:{version}" if name and version else _text(getattr(model, "id", ""))
    match = _MODEL_VERSION_ID.search(model)
    if match:
        return f"{match['name']}:{match['version']}"
    if model.startswith("azureml:"):
        return model[len("azureml:"):]
    return model


def _metrics_from(properties: dict[str, Any] | None, tags: dict[str, Any] | None) -> dict[str, float]:
    """Numeric, non-system values of the model properties, else of its tags."""
    for source in (properties or {}, tags or {}):
        found = {}
        for key, value in source.items():
            if _SYSTEM_KEY.match(str(key)) or isinstance(value, bool):
                continue
            try:
                found[str(key)] = float(value)
            except (TypeError, ValueError):
                continue
        if found:
            return found
    return {}


def _created(entity: Any) -> tuple[datetime | None, str]:
    context = getattr(entity, "creation_context", None)
    if context is None:
        return None, ""
    by = getattr(context, "created_by", None)
    if isinstance(by, dict):                    # run history (pipeline steps) gives a user object
        by = by.get("userName") or by.get("user_name")
    elif by is not None and not isinstance(by, str):
        by = getattr(by, "user_name", None) or getattr(by, "userName", None)
    return getattr(context, "created_at", None), _text(by)


_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _created_at(entity: Any) -> datetime:
    moment = _created(entity)[0]
    if moment is None:
        return _EPOCH
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def newest_first(pager: Any, *, since: datetime | None = None, limit: int = JOB_SCAN) -> list[Any]:
    """The items of an Azure job list, newest first by creation time.

    Azure's Jobs_List documents no order and takes no `$orderby` or `$top` (azure-ai-ml 1.35's jobs.list
    and feature_sets.list_materialization_operations send only $skip, jobType, tag, listViewType,
    properties, scheduled, scheduleId), so the order is made here, never assumed. Reading stops at the
    first page that holds nothing newer than what was already read (and, with `since`, nothing created
    since then): a list Azure answers newest first costs two pages; one in any other order is read to its
    end, at most `limit` items."""
    held: list[Any] = []
    newest: datetime | None = None
    pages = pager.by_page() if hasattr(pager, "by_page") else iter([pager])
    for page in pages:
        items = [item for item in page if item is not None]
        if not items:
            continue
        page_newest = max(_created_at(item) for item in items)
        older = newest is not None and page_newest <= newest and (since is None or page_newest < since)
        held += items
        newest = page_newest if newest is None else max(newest, page_newest)
        if older or len(held) >= limit:
            break
    return sorted(held, key=lambda item: (_created_at(item), _text(getattr(item, "name", ""))), reverse=True)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- the service


class AzureMLService:
    """One Azure ML workspace through azure-ai-ml. Synchronous; see adapters.nonblocking."""

    def __init__(self, ml_client: MLClient, *, environment: str = "prod", identity: str = "",
                 metrics: EndpointMetricsSource | None = None,
                 metrics_for_endpoint: Callable[[str], EndpointMetricsSource] | None = None,
                 model_read_budget: float = MODEL_READ_BUDGET) -> None:
        """`metrics_for_endpoint(url)` builds the metrics source on first use, for the Azure Monitor
        endpoint of the workspace's region (read from the workspace), when `metrics` is not given."""
        self.ml = ml_client
        self.environment = environment
        self.identity = identity or type(getattr(ml_client, "_credential", None)).__name__
        self.metrics = metrics
        self._metrics_for_endpoint = metrics_for_endpoint
        self._metrics_lock = threading.Lock()
        self.model_read_budget = model_read_budget

    # -- plumbing
    @contextlib.contextmanager
    def _call(self, kind: str = "", name: str = "", role: str = DATA_SCIENTIST) -> Iterator[None]:
        """Run SDK calls; any exception leaves as our ServiceError (see translate_error)."""
        try:
            yield
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never swallowed
            raise translate_error(exc, kind=kind, name=name, identity=self.identity, role=role) from exc

    def _operation(self, kind: str, target: str, start: Callable[[], Any], summary: Callable[[Any], str], *,
                   resource: str, name: str, role: str = DATA_SCIENTIST) -> Operation:
        """Start a `begin_*` call now; the Operation's wait(timeout) waits for its poller."""
        with self._call(resource, name, role):
            poller = start()

        def wait(timeout: float | None = None) -> str:
            with self._call(resource, name, role):
                result = poller.result(timeout)
                if not poller.done():
                    raise Unavailable(f"{kind} of {target} still running after {timeout:g} s.")
            return summary(result)

        return Operation(kind, target, wait)

    @property
    def workspace_name(self) -> str:
        return self.ml.workspace_name or ""

    def workspace(self) -> WorkspaceInfo:
        with self._call("workspace", self.workspace_name, READER):
            ws = self.ml.workspaces.get(self.workspace_name)
        return WorkspaceInfo(name=self.workspace_name, environment=self.environment, backend="azure",
                             subscription_id=self.ml.subscription_id, resource_group=self.ml.resource_group_name,
                             location=_text(ws.location), description=_text(ws.description))

    def names(self, kind: str) -> list[str]:
        if kind not in RESOURCE_KINDS:
            raise InvalidRequest(f"Unknown kind '{kind}'; one of {', '.join(RESOURCE_KINDS)}.")
        with self._call(kind):
            if kind == "model":
                items: Any = self.ml.models.list()
            elif kind == "endpoint":
                items = self.ml.online_endpoints.list()
            elif kind == "batch_endpoint":
                items = self.ml.batch_endpoints.list()
            elif kind == "deployment":
                items = [d for e in self.ml.online_endpoints.list() for d in self.ml.online_deployments.list(e.name)]
            elif kind == "job":
                items = islice((j for j in self.ml.jobs.list() if j is not None), _JOB_SCAN_LIMIT)
            elif kind == "schedule":
                items = self.ml.schedules.list(list_view_type=ALL_SCHEDULES)
            else:
                items = self.ml.compute.list()
            return sorted({item.name for item in items if item is not None and item.name})

    # ------------------------------------------------------------ models

    def _model(self, model: Any) -> ModelVersion:
        created_at, created_by = _created(model)
        tags = {str(k): _text(v) for k, v in (model.tags or {}).items()}
        return ModelVersion(name=model.name, version=_text(model.version), stage=model.stage or "None",
                            description=model.description or "", tags=tags,
                            metrics=_metrics_from(model.properties, model.tags), created_at=created_at,
                            created_by=created_by, path=_text(model.path),
                            job=_text(getattr(model, "job_name", None)
                                      or (model.properties or {}).get("azureml.runId")))

    def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        stage = _canonical_stage(stage) if stage else None
        if name:   # every version, archived ones too (flagged): the REST list keeps `isArchived`
            ops, scope = self._model_versions_rest()
            with self._call("model", name):
                versions = [self._model_from_arm(m) for m in ops.list(
                    name=name, list_view_type=ALL_ASSETS, **({"params": {"stage": stage}} if stage else {}), **scope)]
            if stage:            # the service filters by stage; keep the port's guarantee anyway
                versions = [v for v in versions if v.stage.lower() == stage.lower()]
            return sorted(versions, key=_version_key, reverse=True)
        with self._call("model"):          # the pager follows Azure's nextLink pages
            containers = [c for c in islice(self.ml.models.list(), _MODEL_SCAN_LIMIT) if c is not None and c.name]
        if stage:
            found = self._read_each(containers, lambda c: next(iter(self.list_models(c.name, stage)), None), stage)
        else:
            found = self._read_each(containers, self._latest_of, stage)
        return sorted(found, key=lambda m: m.name)

    def _latest_of(self, container: Any) -> ModelVersion | None:
        """The version the container names as latest (one GET); its listing if that version is gone."""
        if container.latest_version:
            with contextlib.suppress(NotFound):
                return self.get_model(container.name, _text(container.latest_version))
        return next(iter(self.list_models(container.name)), None)

    def _read_each(self, containers: list[Any], read: Callable[[Any], ModelVersion | None],
                   stage: str | None) -> list[ModelVersion]:
        """`read` every container, at most _MODEL_READERS at once, within `model_read_budget` seconds."""
        if not containers:
            return []
        pool = ThreadPoolExecutor(max_workers=min(_MODEL_READERS, len(containers)), thread_name_prefix="model-read")
        try:
            futures = [pool.submit(read, c) for c in containers]
            done, pending = wait(futures, timeout=self.model_read_budget)
            if pending:
                what = f"the newest {stage} version" if stage else "the latest version"
                raise Unavailable(f"Azure ML took longer than {self.model_read_budget:g} s to read {what} of "
                                  f"{len(containers)} models ({len(done)} read); ask about one model by name.")
            results = [f.result() for f in futures]        # the first failure, already translated
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return [r for r in results if r is not None]

    def get_model(self, name: str, version: str | None = None) -> ModelVersion:
        if version:
            ops, scope = self._model_versions_rest()
            with self._call("model", name):
                return self._model_from_arm(ops.get(name=name, version=version, **scope))
        # not label="latest": for an unknown name the SDK raises a ValidationException, not a 404
        versions = self.list_models(name)
        if not versions:
            raise NotFound("model", name)
        return versions[0]

    def set_model_stage(self, name: str, version: str, stage: str) -> ModelVersion:
        """GET the version as Azure stores it and PUT that body back with only `stage` changed: never
        through `models.create_or_update`, whose entity round trip drops `jobName` (the lineage to the
        training job), `intellectualProperty` and `datasets`, and always sends `isArchived: false`.
        A PUT answered 408/429/5xx is sent again (see _put_model_version)."""
        stage = _canonical_stage(stage)
        ops, scope = self._model_versions_rest()
        with self._call("model", name):
            arm = ops.get(name=name, version=version, **scope)
            arm.properties.stage = stage
            arm.properties.is_archived = bool(arm.properties.is_archived)     # as stored (absent = false)
            return self._model_from_arm(self._put_model_version(ops, scope, name, version, arm))

    sleep: Callable[[float], None] = staticmethod(time.sleep)      # waits between PUT attempts (tests record them)

    def _put_model_version(self, ops: Any, scope: dict[str, str], name: str, version: str, body: Any) -> Any:
        """PUT a model version (idempotent), again while Azure answers what it says is retryable
        (408, 429, 500, 502, 503, 504, no connection, no answer), at most STAGE_ATTEMPTS times, waiting its
        Retry-After (or 1, 2, 4 s) but never more than STAGE_RETRY_WAIT s in all: the bot answers within
        its call timeout. The pipeline's own retry is off for this call (retry_total=0), so the attempts
        are these and no more, whatever the client's retry settings."""
        waited = 0.0
        for attempt in range(1, STAGE_ATTEMPTS + 1):
            try:
                return ops.create_or_update(name=name, version=version, body=body, retry_total=0, **scope)
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                response = getattr(exc, "response", None)
                status = getattr(response, "status_code", None)
                if isinstance(exc, HttpResponseError) and status not in RETRYABLE_STATUS:
                    raise
                wait = _retry_after(response) if response is not None else None
                wait = float(2 ** (attempt - 1)) if wait is None else wait
                if attempt == STAGE_ATTEMPTS or waited + wait > STAGE_RETRY_WAIT:
                    raise
                log.info("model %s:%s: Azure answered %s; PUT again in %.3g s (attempt %d of %d)", name, version,
                         status or type(exc).__name__, wait, attempt + 1, STAGE_ATTEMPTS)
                self.sleep(wait)
                waited += wait
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ online endpoints

    def _deployment(self, d: Any) -> Deployment:
        return Deployment(name=d.name, endpoint=d.endpoint_name or "", model=model_ref(d.model),
                          instance_type=_text(d.instance_type), instance_count=int(d.instance_count or 0),
                          provisioning_state=_text(d.provisioning_state))

    def _endpoint(self, e: Any, deployments: list[Any]) -> OnlineEndpoint:
        return OnlineEndpoint(
            name=e.name, provisioning_state=_text(e.provisioning_state), auth_mode=_text(e.auth_mode),
            scoring_uri=_text(e.scoring_uri), description=e.description or "",
            traffic={k: int(v) for k, v in (e.traffic or {}).items()},
            mirror_traffic={k: int(v) for k, v in (e.mirror_traffic or {}).items()},
            deployments=tuple(sorted((self._deployment(d) for d in deployments), key=lambda d: d.name)),
            tags={str(k): _text(v) for k, v in (e.tags or {}).items()})

    def list_endpoints(self) -> list[OnlineEndpoint]:
        with self._call("endpoint"):
            endpoints = list(self.ml.online_endpoints.list())
            return sorted((self._endpoint(e, list(self.ml.online_deployments.list(e.name))) for e in endpoints),
                          key=lambda e: e.name)

    def get_endpoint(self, name: str) -> OnlineEndpoint:
        with self._call("endpoint", name):
            endpoint = self.ml.online_endpoints.get(name)
            return self._endpoint(endpoint, list(self.ml.online_deployments.list(name)))

    def set_traffic(self, endpoint: str, traffic: dict[str, int],
                    expected: dict[str, int] | None = None) -> Operation:
        with self._call("endpoint", endpoint):
            current = self.ml.online_endpoints.get(endpoint)
            deployments = {d.name for d in self.ml.online_deployments.list(endpoint)}
        seen = _live_split(expected if expected is not None else current.traffic or {})
        _check_traffic_change(endpoint, current, seen)
        for deployment in traffic:
            if deployment not in deployments:
                raise NotFound("deployment", deployment,
                               f"Endpoint '{endpoint}' has no deployment named '{deployment}'.")
        for deployment, percent in traffic.items():
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise InvalidRequest(f"Traffic for '{deployment}' must be a whole percentage 0-100, not {percent!r}.")
        if sum(traffic.values()) != 100:
            raise InvalidRequest(f"Traffic must sum to 100, not {sum(traffic.values())}.")
        _check_not_mirrored(endpoint, current, traffic)
        split = " ".join(f"{k}={v}" for k, v in traffic.items())

        def start() -> Any:
            # Azure offers no ETag on online endpoints and the SDK PUTs the whole endpoint: read it again
            # right before the PUT, so a split someone else set meanwhile is reported, never overwritten.
            fresh = self.ml.online_endpoints.get(endpoint)
            _check_traffic_change(endpoint, fresh, seen)
            _check_not_mirrored(endpoint, fresh, traffic)
            fresh.traffic = dict(traffic)
            return self.ml.online_endpoints.begin_create_or_update(fresh)

        return self._operation(
            "traffic", f"endpoint {endpoint}", start,
            lambda result: f"Traffic on {endpoint} is now {split}.", resource="endpoint", name=endpoint)

    def scale_deployment(self, endpoint: str, deployment: str, instance_count: int) -> Operation:
        """PATCH only the deployment's `sku.capacity` (never a PUT of the GET'd deployment: the SDK's
        converter drops `modelMountPath`, `identity` and `kind` from such a PUT)."""
        if isinstance(instance_count, bool) or not isinstance(instance_count, int) or not (
                MIN_INSTANCES <= instance_count <= MAX_INSTANCES):
            raise InvalidRequest(f"Instance count must be a whole number from {MIN_INSTANCES} to {MAX_INSTANCES}, "
                                 f"not {instance_count!r}.")
        with self._call("endpoint", endpoint):
            self.ml.online_endpoints.get(endpoint)
        with self._call("deployment", deployment):
            current = self.ml.online_deployments.get(deployment, endpoint)
        state = _text(current.provisioning_state)
        if state in BUSY_STATES:
            raise Conflict(f"Deployment {endpoint}/{deployment} is still {state}: Azure ML accepts no new change to "
                           f"a deployment until its current operation has finished. Try again once it shows "
                           f"Succeeded.", code="DeploymentBusy")
        return self._operation(
            "scale", f"deployment {endpoint}/{deployment}",
            lambda: self._deployments_rest().begin_update(
                resource_group_name=self.ml.resource_group_name, workspace_name=self.workspace_name,
                endpoint_name=endpoint, deployment_name=deployment, body={"sku": {"capacity": instance_count}}),
            lambda result: f"{endpoint}/{deployment} now runs {instance_count} instance(s).",
            resource="deployment", name=deployment)

    def _deployments_rest(self) -> Any:
        """The SDK's own REST operations for online deployments (same pipeline, credential, retries and
        api-version as `ml.online_deployments`): azure-ai-ml has no public call for a partial update."""
        rest = getattr(self.ml.online_deployments, "_online_deployment", None)
        if rest is None or not hasattr(rest, "begin_update"):
            raise ServiceError("This azure-ai-ml version offers no partial update of a deployment; "
                               "the bot needs azure-ai-ml 1.35.")
        return rest

    def deployment_logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        with self._call("endpoint", endpoint):
            self.ml.online_endpoints.get(endpoint)
        with self._call("deployment", deployment):
            return self.ml.online_deployments.get_logs(deployment, endpoint, lines)

    def endpoint_metrics(self, endpoint: str, window_minutes: int = 60) -> EndpointMetrics:
        source = self._metrics_source()
        with self._call("endpoint", endpoint):
            found = self.ml.online_endpoints.get(endpoint)
            deployments = tuple(sorted(d.name for d in self.ml.online_deployments.list(endpoint)))
        ref = EndpointRef(name=endpoint, resource_id=found.id, deployments=deployments,
                          mirrored=_mirrored(found.mirror_traffic))
        return source.endpoint_metrics([ref], window_minutes)[endpoint]

    def endpoints_metrics(self, endpoints: Sequence[OnlineEndpoint], window_minutes: int = 60
                          ) -> dict[str, EndpointMetrics]:
        """Many endpoints' health in batched Azure Monitor queries: the ARM ids are built from the
        workspace's scope (no extra ARM read per endpoint), METRICS_BATCH resources per call."""
        if not endpoints:
            return {}
        source = self._metrics_source()
        base = (f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}/onlineEndpoints/")
        refs = [EndpointRef(e.name, base + e.name, tuple(sorted(d.name for d in e.deployments)),
                            mirrored=_mirrored(e.mirror_traffic)) for e in endpoints]
        found: dict[str, EndpointMetrics] = {}
        for start in range(0, len(refs), METRICS_BATCH):
            found.update(source.endpoint_metrics(refs[start:start + METRICS_BATCH], window_minutes))
        return found

    def _metrics_source(self) -> EndpointMetricsSource:
        """The configured source, or one for the workspace's region, built once on first use."""
        if self.metrics is None and self._metrics_for_endpoint is not None:
            with self._metrics_lock:
                if self.metrics is None:
                    url = regional_metrics_endpoint(self.workspace().location)
                    self.metrics = self._metrics_for_endpoint(url)
        if self.metrics is None:
            raise Unavailable("Endpoint metrics are not configured for this workspace (no Azure Monitor source).")
        return self.metrics

    # ------------------------------------------------------------ batch endpoints

    def list_batch_endpoints(self) -> list[BatchEndpoint]:
        with self._call("batch_endpoint"):
            endpoints = list(self.ml.batch_endpoints.list())
            result = []
            for e in endpoints:
                deployments = tuple(sorted(d.name for d in self.ml.batch_deployments.list(e.name)))
                defaults = getattr(e, "defaults", None)
                result.append(BatchEndpoint(
                    name=e.name, provisioning_state=_text(e.provisioning_state),
                    default_deployment=_text(getattr(defaults, "deployment_name", "")),
                    scoring_uri=_text(e.scoring_uri), description=e.description or "", deployments=deployments))
        return sorted(result, key=lambda e: e.name)

    def invoke_batch_endpoint(self, endpoint: str, input_uri: str, deployment: str | None = None, *,
                              tags: dict[str, str] | None = None) -> Job:
        """`tags` are not sent: azure-ai-ml 1.35's `batch_endpoints.invoke` takes no tags (only
        job_name, experiment_name, inputs, outputs), so who asked is known to the bot only."""
        if not input_uri:
            raise InvalidRequest("A batch invocation needs an input URI.")
        kind = "uri_file" if re.search(r"\.[A-Za-z0-9]{1,5}$", input_uri.rstrip("/")) else "uri_folder"
        with self._call("batch_endpoint", endpoint):
            self.ml.batch_endpoints.get(endpoint)
        with self._call("deployment" if deployment else "batch_endpoint", deployment or endpoint):
            job = self.ml.batch_endpoints.invoke(endpoint, deployment_name=deployment,
                                                 input=Input(type=kind, path=input_uri))
        return replace(self._job(job), type="batch")

    def list_batch_jobs(self, endpoint: str) -> list[Job]:
        with self._call("batch_endpoint", endpoint):
            self.ml.batch_endpoints.get(endpoint)
            return [replace(self._job(j), type="batch") for j in self.ml.batch_endpoints.list_jobs(endpoint)
                    if j is not None]

    # ------------------------------------------------------------ jobs

    def _job(self, job: Any, parent: str = "", children: tuple[Job, ...] = ()) -> Job:
        created_at, created_by = _created(job)
        properties = getattr(job, "properties", None) or {}
        compute = _text(getattr(job, "compute", "")).rsplit("/", 1)[-1]
        return Job(name=job.name, status=_text(job.status) or "Unknown", type=_text(getattr(job, "type", "")) or "job",
                   display_name=_text(getattr(job, "display_name", "")),
                   experiment=_text(getattr(job, "experiment_name", "")), compute=compute,
                   created_at=created_at, started_at=_when(properties.get("StartTimeUtc")),
                   ended_at=_when(properties.get("EndTimeUtc")), created_by=created_by,
                   error=_text(properties.get("azureml.error") or ""), parent=parent, children=children,
                   tags={str(k): _text(v) for k, v in (getattr(job, "tags", None) or {}).items()})

    def list_jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        with self._call("job"):
            found = []
            for job in islice(self.ml.jobs.list(), _JOB_SCAN_LIMIT):
                if job is None:                 # pipeline children come back as None: skip them
                    continue
                converted = self._job(job)
                if status and converted.status.lower() != status.lower():
                    continue
                found.append(converted)
                if len(found) >= limit:
                    break
        return sorted(found, key=lambda j: j.created_at.timestamp() if j.created_at else 0.0, reverse=True)

    def get_job(self, name: str) -> Job:
        with self._call("job", name):
            job = self.ml.jobs.get(name)
            children: tuple[Job, ...] = ()
            if _text(job.type).lower() == "pipeline":
                children = tuple(self._job(c, parent=name) for c in self.ml.jobs.list(parent_job_name=name)
                                 if c is not None)
        parent = self._job(job)
        # run history reports steps as type "base" and experiment by id: say "step" and the parent's experiment
        children = tuple(replace(c, type="step" if c.type == "base" else c.type, experiment=parent.experiment)
                         for c in children)
        return replace(parent, children=children)

    def cancel_job(self, name: str) -> Operation:
        return self._operation("cancel", f"job {name}", lambda: self.ml.jobs.begin_cancel(name),
                               lambda result: f"Cancellation of job {name} accepted.", resource="job", name=name)

    # ------------------------------------------------------------ schedules

    def _schedule(self, s: Any) -> Schedule:
        trigger = s.trigger
        if _text(getattr(trigger, "type", "")).lower() == "cron" or hasattr(trigger, "expression"):
            kind, expression = "cron", _text(trigger.expression)
        else:
            pattern = getattr(trigger, "schedule", None)
            at = ""
            if pattern is not None and pattern.hours and pattern.minutes is not None:
                minutes = pattern.minutes if isinstance(pattern.minutes, list) else [pattern.minutes]
                hours = pattern.hours if isinstance(pattern.hours, list) else [pattern.hours]
                at = " at " + ", ".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes)
            kind = "recurrence"
            expression = f"every {trigger.interval} {_text(trigger.frequency)}{at}"
        # only a JobSchedule has `create_job`: on a MonitorSchedule the base class's property logs the SDK
        # warning "create_job is not a valid property of ..." on every read (azure-ai-ml 1.35 schedule.py)
        create_job = s.create_job if isinstance(s, JobSchedule) else None
        if create_job is not None:
            target = create_job if isinstance(create_job, str) else (
                getattr(create_job, "display_name", None) or getattr(create_job, "name", None) or "")
            action = f"job {str(target).rsplit('/', 1)[-1]}".strip()
        elif getattr(s, "create_monitor", None) is not None:
            action = "monitor"
        else:
            action = _text(getattr(s, "type", ""))
        return Schedule(name=s.name, enabled=bool(s.is_enabled), trigger=kind, expression=expression,
                        time_zone=_text(getattr(trigger, "time_zone", "")) or "UTC", action=action,
                        provisioning_state=_text(s.provisioning_state), description=s.description or "")

    def list_schedules(self) -> list[Schedule]:
        with self._call("schedule"):
            return sorted((self._schedule(s) for s in self.ml.schedules.list(list_view_type=ALL_SCHEDULES)),
                          key=lambda s: s.name)

    def enable_schedule(self, name: str) -> Operation:
        return self._operation("schedule", f"schedule {name}", lambda: self.ml.schedules.begin_enable(name),
                               lambda result: f"Schedule {name} enabled.", resource="schedule", name=name)

    def disable_schedule(self, name: str) -> Operation:
        return self._operation("schedule", f"schedule {name}", lambda: self.ml.schedules.begin_disable(name),
                               lambda result: f"Schedule {name} disabled.", resource="schedule", name=name)

    def trigger_schedule(self, name: str, *, tags: dict[str, str] | None = None) -> Job:
        """`tags` are not sent: the trigger call carries only the schedule time.

        The trigger POST starts a job, so it is sent once: azure-core's RetryPolicy would send a POST
        again after a 500/503/504 or any answer with Retry-After, and so start a second job; this call
        runs with `retry_total=0`. An unanswered trigger says it may have started a job. The job it
        names may not be readable at once: it is read again for a few seconds (JOB_VISIBLE_WAITS), and
        if it is still not there, returned as NotStarted for the caller to watch."""
        try:
            with self._call("schedule", name):
                result = self.ml.schedules.trigger(name, retry_total=0)
        except Unavailable as error:
            cause = error.__cause__
            if isinstance(cause, ServiceRequestError) or getattr(getattr(cause, "response", None), "status_code",
                                                                 None) == 429:
                raise Unavailable(f"{error.message} Schedule {name} was not triggered (Azure did not take the "
                                  f"request); ask again in a moment.", code=error.code) from error
            raise Unavailable(f"{error.message} The trigger of schedule {name} was sent once and not repeated, so it "
                              f"may or may not have started a job: look at the schedule's jobs before asking again.",
                              code=error.code) from error
        job_name = result.job_name
        for pause in (0.0, *JOB_VISIBLE_WAITS):
            if pause:
                self.sleep(pause)
            try:
                with self._call("job", job_name):
                    return self._job(self.ml.jobs.get(job_name))
            except NotFound:
                continue
        log.info("schedule %s: job %s not readable %g s after its trigger; returned as NotStarted", name, job_name,
                 sum(JOB_VISIBLE_WAITS))
        return Job(name=job_name, status="NotStarted", type="job", tags=dict(tags or {}))

    # ------------------------------------------------------------ compute

    def _compute(self, c: Any) -> Compute:
        state = _text(getattr(c, "state", "")) or _text(c.provisioning_state)
        return Compute(name=c.name, type=_text(c.type), state=state, size=_text(getattr(c, "size", "")),
                       min_nodes=getattr(c, "min_instances", None), max_nodes=getattr(c, "max_instances", None),
                       current_nodes=None)

    def list_compute(self) -> list[Compute]:
        with self._call("compute"):
            return sorted((self._compute(c) for c in self.ml.compute.list()), key=lambda c: c.name)

    def start_compute(self, name: str) -> Operation:
        return self._operation("compute", f"compute {name}", lambda: self.ml.compute.begin_start(name),
                               lambda result: f"Compute {name} started.", resource="compute", name=name)

    def stop_compute(self, name: str) -> Operation:
        return self._operation("compute", f"compute {name}", lambda: self.ml.compute.begin_stop(name),
                               lambda result: f"Compute {name} stopped.", resource="compute", name=name)

    # ------------------------------------------------------------ added for issue 7 (kept at the end)

    def get_batch_endpoint(self, name: str) -> BatchEndpoint:
        """`batch_endpoints.get` and `batch_deployments.list`: the endpoint and its deployments."""
        with self._call("batch_endpoint", name):
            found = self.ml.batch_endpoints.get(name)
            deployments = sorted(self.ml.batch_deployments.list(endpoint_name=name), key=lambda d: d.name)
        defaults = getattr(found, "defaults", None)
        details = tuple(BatchDeployment(
            name=d.name, endpoint=name, model=model_ref(d.model), compute=_text(d.compute).rsplit("/", 1)[-1],
            instance_count=getattr(getattr(d, "resources", None), "instance_count", None),
            provisioning_state=_text(d.provisioning_state)) for d in deployments)
        return BatchEndpoint(
            name=found.name, provisioning_state=_text(found.provisioning_state),
            default_deployment=_text(getattr(defaults, "deployment_name", "")), scoring_uri=_text(found.scoring_uri),
            description=found.description or "", deployments=tuple(d.name for d in details), details=details)

    # ------------------------------------------------------------ model monitoring

    def _monitor_schedules(self) -> list[Any]:
        return [s for s in self.ml.schedules.list(list_view_type=ALL_SCHEDULES)
                if getattr(s, "create_monitor", None) is not None]

    def _monitor_runs(self, name: str, since: datetime | None = None) -> list[Any]:
        """The jobs the monitor's schedule created, newest first by creation time (see newest_first);
        with `since`, at least every run created since then."""
        return newest_first(self.ml.jobs.list(schedule_defined=True, scheduled_job_name=name), since=since)

    def _monitor_run(self, job: Any, signals: tuple[str, ...], *, read_steps: bool) -> MonitorRun:
        """A run's outcome from Azure's breach tag, on the pipeline job or (when `read_steps`) on its steps.

        The steps are read when the pipeline Completed or Failed: a breaching signal's evaluation step
        may fail the pipeline (older monitoring components do), and its tag says what breached. The
        breached signals are the ones the tag names (`The signal '<name>' has failed ...`), matched
        exactly against the monitor's signals, never by substring."""
        converted = self._job(job)
        messages = [converted.tags[BREACH_TAG]] if BREACH_TAG in converted.tags else []
        if read_steps and not messages and converted.status in ("Completed", "Failed"):
            messages = [c.tags[BREACH_TAG] for c in (self._job(c) for c in self.ml.jobs.list(parent_job_name=job.name)
                                                      if c is not None) if BREACH_TAG in c.tags]
        if messages:
            text = " ".join(m for m in messages if m and m.lower() != "true")
            named = {b.signal for m in messages for b in parse_breach_tag(m)}
            return MonitorRun(converted.name, converted.status, converted.started_at or converted.created_at, True,
                              tuple(s for s in signals if s in named), text)
        known = converted.status == "Completed" and read_steps
        return MonitorRun(converted.name, converted.status, converted.started_at or converted.created_at,
                          False if known else None, (), converted.error)

    def _monitor(self, schedule: Any, *, with_last_run: bool = True) -> Monitor:
        definition = schedule.create_monitor
        target = getattr(definition, "monitoring_target", None)
        signals = tuple(_signal(name, signal) for name, signal in (definition.monitoring_signals or {}).items())
        last = None
        if with_last_run:
            runs = self._monitor_runs(schedule.name)
            last = self._monitor_run(runs[0], tuple(s.name for s in signals), read_steps=True) if runs else None
        plain = self._schedule(schedule)
        return Monitor(name=schedule.name, model=_asset_ref(getattr(target, "model_id", None), "models"),
                       endpoint=_asset_ref(getattr(target, "endpoint_deployment_id", None), "onlineEndpoints"),
                       signals=signals, schedule=f"{plain.expression} {plain.time_zone}".strip(),
                       enabled=plain.enabled, last_run=last)

    def list_monitors(self) -> list[Monitor]:
        """Every monitor schedule with its latest run (read for up to _MONITOR_READERS monitors at once)."""
        with self._call("schedule"):
            schedules = self._monitor_schedules()
            if not schedules:
                return []
            with ThreadPoolExecutor(max_workers=min(_MONITOR_READERS, len(schedules)),
                                    thread_name_prefix="monitor-read") as pool:
                monitors = list(pool.map(self._monitor, schedules))
        return sorted(monitors, key=lambda m: m.name)

    def drift_report(self, target: str, window_days: int = 7) -> DriftReport:
        check_window(window_days)
        with self._call("schedule"):
            schedules = {s.name: s for s in self._monitor_schedules()}
            chosen = resolve([self._monitor(s, with_last_run=False) for s in schedules.values()], target)
            since = self.clock() - timedelta(days=window_days)
            runs = self._monitor_runs(chosen.name, since=since)
            signals = tuple(s.name for s in chosen.signals)
            latest = self._monitor_run(runs[0], signals, read_steps=True) if runs else None
            in_window = [self._monitor_run(j, signals, read_steps=False) for j in runs[1:]
                         if (_created(j)[0] or since) >= since]
        monitor = replace(chosen, last_run=latest)
        window = tuple(reversed(([latest] if latest and latest.started_at and latest.started_at >= since else [])
                                + in_window))
        figures: dict[str, list[FeatureFigure]] = {}
        note = "The monitor has not run yet." if not runs else ""
        if runs:
            try:
                figures = self._read_figures(chosen, _text(getattr(runs[0], "experiment_name", "")), since)
            except Exception as exc:  # noqa: BLE001 - the figures are extra: the outcome stands without them
                log.warning("monitor %s: per-feature figures not read: %s", chosen.name, exc)
                note = (f"Per-feature figures could not be read from Azure's monitoring components "
                        f"({translate_error(exc).message}). {FIGURES_FORMAT} The outcome above comes from "
                        f"Azure's breach tag; the studio shows the figures.")
            else:
                if not any(figures.values()):
                    note = (f"No per-feature figures were found for this monitor. {FIGURES_FORMAT} The outcome "
                            f"above comes from Azure's breach tag; the studio shows the figures.")
        reports = []
        for s in chosen.signals:
            found = tuple(figures.get(s.name, ()))
            if latest is not None and latest.breached and latest.breached_signals:
                breached: bool | None = s.name in latest.breached_signals
            elif latest is not None and latest.breached is False:
                breached = False
            else:
                breached = any(f.breached for f in found) if found else None
            reports.append(SignalReport(s.name, s.kind, breached, found))
        return DriftReport(monitor, window_days, latest, window, tuple(reports),
                           figures_source=FIGURES_SOURCE if any(figures.values()) else "", figures_note=note,
                           studio_url=self._studio_monitoring_url())

    # Azure's monitoring components (Azure/azureml-assets, model_monitor_metric_outputter) log one MLflow
    # run per (monitor, signal, metric, feature), tagged azureml.monitor_name / signal_name / metric_name /
    # group_0, with metrics "value" and "threshold" logged at step = the monitoring window's Unix time.

    clock: Callable[[], datetime] = staticmethod(lambda: datetime.now(timezone.utc))

    def _mlflow_base(self) -> str:
        """https://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<ws> (the tracking URI)."""
        uri = _text(self.ml.workspaces.get(self.workspace_name).mlflow_tracking_uri)
        if not uri:
            raise ServiceError("the workspace reports no MLflow tracking URI")
        return "https://" + uri.split("://", 1)[-1].rstrip("/")

    def _mlflow_call(self, method: str, url: str, **kwargs: Any) -> Any:
        from azure.core.rest import HttpRequest

        with self._mlflow_lock:
            if getattr(self, "_mlflow_client", None) is None:
                self._mlflow_client = _mlflow_client(self.ml)
        response = self._mlflow_client.send_request(HttpRequest(method, url, **kwargs))
        response.raise_for_status()
        return response.json()

    _mlflow_lock = threading.Lock()

    def _read_figures(self, monitor: Monitor, experiment: str, since: datetime) -> dict[str, list[FeatureFigure]]:
        """Per signal, the latest figure of every (feature, metric) with its history since `since`."""
        if not experiment:
            raise ServiceError("the monitor's runs name no experiment")
        if "'" in monitor.name or "`" in monitor.name:      # Azure's names never hold them; never build a bad filter
            raise ServiceError(f"the monitor name {monitor.name!r} cannot be used in an MLflow filter")
        base = self._mlflow_base()
        found = self._mlflow_call("GET", f"{base}/api/2.0/mlflow/experiments/get-by-name",
                                  params={"experiment_name": experiment})
        experiment_id = found["experiment"]["experiment_id"]
        runs: list[dict[str, Any]] = []
        token = None
        for _ in range(MLFLOW_PAGES):
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 1000,
                                    "filter": f"tags.`azureml.monitor_name` = '{monitor.name}'"}
            if token:
                body["page_token"] = token
            page = self._mlflow_call("POST", f"{base}/api/2.0/mlflow/runs/search", json=body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                break
        data_types = {(s.name, t.metric): {x.data_type for x in s.thresholds if x.metric == t.metric}
                      for s in monitor.signals for t in s.thresholds}
        wanted = []
        for run in runs:
            tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
            signal, metric, feature = (tags.get("azureml.signal_name"), tags.get("azureml.metric_name"),
                                       tags.get("azureml.group_0"))
            latest = {m["key"]: m for m in run.get("data", {}).get("metrics", [])}
            # no group_0: a signal-wide figure (model performance aggregates such as Accuracy)
            if signal and metric and metric != "azureml.metrics" and "value" in latest:
                wanted.append((run["info"]["run_id"], signal, metric_name(metric), feature or "", latest))

        def history(run_id: str) -> list[dict[str, Any]]:
            answer = self._mlflow_call("GET", f"{base}/api/2.0/mlflow/metrics/get-history",
                                       params={"run_id": run_id, "metric_key": "value"})
            return answer.get("metrics", [])

        with ThreadPoolExecutor(max_workers=_MONITOR_READERS, thread_name_prefix="mlflow-read") as pool:
            histories = list(pool.map(history, [w[0] for w in wanted]))
        figures: dict[str, list[FeatureFigure]] = {}
        for (_, signal, metric, feature, latest), points in zip(wanted, histories):
            value = float(latest["value"]["value"])
            threshold = float(latest["threshold"]["value"]) if "threshold" in latest else None
            last_step = int(latest["value"].get("step", 0))
            trend = sorted((p for p in points if since.timestamp() <= int(p.get("step", 0)) <= last_step),
                           key=lambda p: int(p.get("step", 0)))
            kinds = data_types.get((signal, metric), set()) - {""}
            breached = breaches(metric, value, threshold)
            figures.setdefault(signal, []).append(FeatureFigure(
                feature, metric, value, threshold, breached, kinds.pop() if len(kinds) == 1 else "",
                tuple(float(p["value"]) for p in trend) or (value,)))
        return figures

    def _studio_monitoring_url(self) -> str:
        wsid = (f"/subscriptions/{self.ml.subscription_id}/resourcegroups/{self.ml.resource_group_name}"
                f"/workspaces/{self.workspace_name}")
        return f"https://ml.azure.com/monitoring?wsid={quote(wsid, safe='/')}"

    # ------------------------------------------------------------ model archive, retraining, feature store (issue 9)

    _store_lock = threading.Lock()           # guards each instance's `_store_clients` (one MLClient per store)

    def _model_versions_rest(self) -> tuple[Any, dict[str, str]]:
        """The SDK's REST operations for model versions and the scope they need. Only they expose
        `isArchived` (the Model entity drops it) and can PUT a version back without un-archiving it
        (`Model._to_rest_object` always sends `isArchived: false`)."""
        ops = getattr(self.ml.models, "_model_versions_operation", None)
        if ops is None or not hasattr(ops, "create_or_update"):
            raise ServiceError("This azure-ai-ml version offers no model version operations; the bot needs "
                               "azure-ai-ml 1.35.")
        return ops, {"resource_group_name": self.ml.resource_group_name, "workspace_name": self.workspace_name}

    def _model_from_arm(self, arm: Any) -> ModelVersion:
        from azure.ai.ml.entities import Model

        archived = bool(getattr(arm.properties, "is_archived", False))
        return replace(self._model(Model._from_rest_object(arm)), archived=archived)

    def _read_model_version(self, name: str, version: str) -> ModelVersion:
        ops, scope = self._model_versions_rest()
        with self._call("model", f"{name}:{version}"):
            return self._model_from_arm(ops.get(name=name, version=version, **scope))

    def _put_stage_keeping_archive(self, name: str, version: str, stage: str) -> ModelVersion:
        """GET the version as Azure stores it, change `stage` only, PUT it back (isArchived kept)."""
        ops, scope = self._model_versions_rest()
        with self._call("model", f"{name}:{version}"):
            arm = ops.get(name=name, version=version, **scope)
            arm.properties.stage = stage
            return self._model_from_arm(self._put_model_version(ops, scope, name, version, arm))

    def _set_archived(self, name: str, version: str, archived: bool) -> ModelVersion:
        before = self._read_model_version(name, version)
        if before.archived == archived:
            return before
        with self._call("model", f"{name}:{version}"):
            if archived:
                self.ml.models.archive(name, version=version)
            else:
                self.ml.models.restore(name, version=version)
        after = self._read_model_version(name, version)
        if after.stage != before.stage:
            # the SDK's archive/restore PUT leaves `stage` out of its body; if Azure dropped it, put it back
            after = self._put_stage_keeping_archive(name, version, before.stage)
        return after

    def archive_model(self, name: str, version: str) -> ModelVersion:
        return self._set_archived(name, version, True)

    def restore_model(self, name: str, version: str) -> ModelVersion:
        return self._set_archived(name, version, False)

    def trigger_retraining(self, model: str) -> Job:
        schedule = training_schedule(model, self.list_models(model))
        try:
            return self.trigger_schedule(schedule)
        except NotFound as error:
            if error.kind != "schedule":
                raise
            raise NotFound("schedule", schedule, f"Model {model} names schedule '{schedule}' in its "
                           f"'{TRAINING_SCHEDULE_TAG}' tag, but there is no such schedule.") from None

    def list_feature_stores(self) -> list[FeatureStore]:
        with self._call("feature_store", role=READER):
            stores = [s for s in self.ml.feature_stores.list() if s is not None and s.name]
        group = self.ml.resource_group_name
        return sorted((FeatureStore(name=s.name, location=_text(s.location), description=s.description or "",
                                    resource_group=_text(getattr(s, "resource_group", "")) or group,
                                    subscription_id=self.ml.subscription_id) for s in stores), key=lambda s: s.name)

    def _store_client(self, store: str) -> MLClient:
        """A second MLClient bound to the feature store (a workspace of its own), same credential and
        pipeline settings (retries, timeouts, transport) as the workspace's client."""
        key = store.lower()          # ARM names are case-insensitive: 'Contoso-Features' is 'contoso-features'
        with AzureMLService._store_lock:
            clients = self.__dict__.setdefault("_store_clients", {})
            if key not in clients:
                clients[key] = MLClient(self.ml._credential, self.ml.subscription_id, self.ml.resource_group_name,
                                        store, **self.ml._kwargs)
            return clients[key]

    @contextlib.contextmanager
    def _store_call(self, store: str, kind: str = "feature_store", name: str = "") -> Iterator[None]:
        """Like `_call`, for a feature store: a missing store and a missing role say so by name."""
        try:
            with self._call(kind, name or store, role=FEATURE_STORE_ROLE):
                yield
        except PermissionDenied as error:
            raise PermissionDenied(
                f"{error.identity or 'The bot'} may not read feature store {store}. A feature store is a workspace "
                f"of its own: the bot's identity needs a role on the feature store itself ({FEATURE_STORE_ROLE}, or "
                f"the MLOps bot custom role assigned on the store or its resource group), not only on "
                f"{self.workspace_name}.",
                identity=error.identity, role=FEATURE_STORE_ROLE, code=error.code,
                scope=f"the feature store {store}") from None
        except NotFound:
            names = [s.name for s in self.list_feature_stores()]
            if store.lower() in (n.lower() for n in names):
                raise                    # the store is there: what is missing is inside it
            raise NotFound("feature_store", store, f"No feature store named '{store}' "
                           f"(feature stores: {', '.join(names) or 'none'}).") from None

    def list_feature_sets(self, store: str) -> list[FeatureSet]:
        client = self._store_client(store)
        with self._store_call(store):
            containers = [c for c in client.feature_sets.list() if c is not None and c.name]
        return sorted((FeatureSet(name=c.name, version=_text(getattr(c, "latest_version", "")), store=store,
                                  description=c.description or "",
                                  tags={str(k): _text(v) for k, v in (c.tags or {}).items()})
                       for c in containers), key=lambda f: f.name)

    def get_feature_set(self, store: str, name: str, version: str | None = None) -> FeatureSet:
        client = self._store_client(store)
        try:
            with self._store_call(store, "feature_set", name):
                listed = [v for v in client.feature_sets.list(name, list_view_type=ALL_ASSETS) if v is not None]
        except NotFound as error:
            if error.kind != "feature_set":
                raise
            listed = []              # Azure answers an unknown feature set with 404 or with no versions
        versions = tuple(sorted((_text(v.version) for v in listed), key=_text_version_key, reverse=True))
        if not versions:
            names = [f.name for f in self.list_feature_sets(store)]
            raise NotFound("feature_set", name, f"Feature store {store} has no feature set named '{name}' "
                                                f"(it has: {', '.join(names) or 'none'}).")
        chosen = versions[0] if version is None else str(version)
        if chosen not in versions:
            raise NotFound("feature_set", f"{name}:{version}", f"Feature set {name} has no version {version} "
                           f"(versions: {', '.join(reversed(versions))}).")
        with self._store_call(store, "feature_set", f"{name}:{chosen}"):
            found = client.feature_sets.get(name, chosen)
            features = tuple(Feature(f.name, _data_type(f.data_type), f.description or "")
                             for f in client.feature_sets.list_features(name, chosen) if f is not None)
            entities = tuple(self._feature_entity(client, ref) for ref in (found.entities or []))
            runs = newest_first(client.feature_sets.list_materialization_operations(name, chosen))
        settings = found.materialization_settings
        last = runs[0] if runs else None
        return FeatureSet(
            name=name, version=chosen, store=store, description=found.description or "",
            tags={str(k): _text(v) for k, v in (found.tags or {}).items()}, stage=_text(found.stage),
            entities=entities, features=features,
            offline_enabled=bool(settings and settings.offline_enabled),
            online_enabled=bool(settings and settings.online_enabled),
            schedule=_recurrence_text(settings.schedule) if settings and settings.schedule else "",
            last_materialization=_materialization(last) if last is not None else None, versions=versions)

    @staticmethod
    def _feature_entity(client: MLClient, ref: str) -> FeatureEntity:
        """'azureml:account:1' (or an ARM id .../featurestoreEntities/account/versions/1) with its join keys."""
        match = re.search(r"featurestoreEntities/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", ref, re.IGNORECASE)
        if match:
            entity_name, entity_version = match["name"], match["version"]
        else:
            entity_name, _, entity_version = ref.removeprefix("azureml:").partition(":")
        entity = client.feature_store_entities.get(entity_name, entity_version)
        keys = tuple((c.name, _data_type(c.type)) for c in (entity.index_columns or []))
        return FeatureEntity(entity_name, entity_version, keys, entity.description or "")

    # ------------------------------------------------------------ security posture (issue 22, kept at the end)

    def security_posture(self) -> PostureFacts:
        """Four reads (workspace GET, online endpoints, computes, datastores), each on its own: one
        that fails becomes `Unreadable` with its reason (see `_posture_read`). The workspace is read
        through azure-ai-ml's own REST operation (the `Workspace` entity drops the private endpoint
        connections); datastores through `datastores.list()`, which never asks for secrets; the diagnostic
        settings and the role assignments at or above the workspace (extension resources of it) through
        the same ARM pipeline client as the MLflow reads (the MLClient's credential, transport, retries)."""
        def workspace() -> WorkspaceSecurity:
            body = _raw(self.ml.workspaces._operation.get(self.ml.resource_group_name, self.workspace_name))
            props = body.get("properties") or {}
            approved = [c for c in props.get("privateEndpointConnections") or []
                        if str(((c.get("properties") or {}).get("privateLinkServiceConnectionState") or {})
                               .get("status", "")).lower() == "approved"]
            encryption = props.get("encryption") or {}
            key = str((encryption.get("keyVaultProperties") or {}).get("keyIdentifier") or "")
            return WorkspaceSecurity(
                public_network_access=str(props.get("publicNetworkAccess") or ""),
                private_endpoints=len(approved),
                isolation_mode=str((props.get("managedNetwork") or {}).get("isolationMode") or ""),
                customer_managed_key=str(encryption.get("status", "")).lower() == "enabled" and bool(key),
                key_vault_key=key, hbi_workspace=bool(props.get("hbiWorkspace")),
                identity_type=str((body.get("identity") or {}).get("type") or ""),
                tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()})

        def endpoints() -> tuple[EndpointSecurity, ...]:
            return tuple(sorted((EndpointSecurity(
                e.name, public_network_access=_text(getattr(e, "public_network_access", "")),
                auth_mode=_text(e.auth_mode),
                identity_type=_text(getattr(e.identity, "type", "")) if e.identity else "",
                tags={str(k): _text(v) for k, v in (e.tags or {}).items()})
                for e in self.ml.online_endpoints.list() if e is not None), key=lambda e: e.name))

        def compute() -> tuple[ComputeSecurity, ...]:
            found = []
            for c in self.ml.compute.list():
                if c is None:
                    continue
                idle = getattr(c, "idle_time_before_shutdown_minutes", None)
                found.append(ComputeSecurity(
                    c.name, _text(c.type).lower(), ssh_public_access=getattr(c, "ssh_public_access_enabled", None),
                    public_ip=getattr(c, "enable_node_public_ip", None),
                    idle_shutdown_minutes=int(idle) if idle else None,
                    min_nodes=getattr(c, "min_instances", None), size=_text(getattr(c, "size", ""))))
            return tuple(sorted(found, key=lambda c: c.name))

        def datastores() -> tuple[DatastoreSecurity, ...]:
            return tuple(sorted((DatastoreSecurity(d.name, _text(d.type), _credential_kind(d.credentials))
                                 for d in self.ml.datastores.list() if d is not None), key=lambda d: d.name))

        workspace_id = (f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}"
                        f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}")
        base = str(getattr(self.ml, "_base_url", "") or "https://management.azure.com").rstrip("/")

        def diagnostics() -> tuple[DiagnosticSetting, ...]:
            url = f"{base}{workspace_id}/providers/Microsoft.Insights/diagnosticSettings"
            answer = self._mlflow_call("GET", url, params={"api-version": DIAGNOSTIC_SETTINGS_API})
            return tuple(sorted((diagnostic_setting(item) for item in (answer or {}).get("value") or []
                                 if isinstance(item, dict)), key=lambda d: d.name))

        def roles() -> tuple[RoleAssignment, ...]:
            url = f"{base}{workspace_id}/providers/Microsoft.Authorization/roleAssignments"
            found: list[RoleAssignment] = []
            params: dict[str, str] | None = {"api-version": ROLE_ASSIGNMENTS_API, "$filter": "atScope()"}
            for _ in range(ROLE_ASSIGNMENT_PAGES):          # ARM pages with nextLink
                answer = self._mlflow_call("GET", url, params=params) if params else self._mlflow_call("GET", url)
                found += [role_assignment(item, workspace_id) for item in (answer or {}).get("value") or []
                          if isinstance(item, dict)]
                url, params = (answer or {}).get("nextLink") or "", None
                if not url:
                    break
            return tuple(found)

        return PostureFacts(self.workspace_name, self._posture_read("workspace", workspace),
                            self._posture_read("endpoints", endpoints), self._posture_read("compute", compute),
                            self._posture_read("datastores", datastores),
                            self._posture_read("diagnostics", diagnostics), self._posture_read("roles", roles))

    def _posture_read(self, what: str, read: Callable[[], Any]) -> Any:
        """`read()`, or Unreadable saying why: a 403 names the action the bot's identity lacks for it."""
        try:
            with self._call(role=READER):
                return read()
        except PermissionDenied:
            return Unreadable(lacks(READ_ACTIONS[what]))
        except NotFound:
            return Unreadable(f"Azure answered 404 for the {what} read")
        except ServiceError as error:
            return Unreadable(f"the {what} could not be read: {error.message}")


def _raw(model: Any) -> dict[str, Any]:
    """A REST model of azure-ai-ml's typespec clients as its JSON (camelCase keys)."""
    return model.as_dict() if hasattr(model, "as_dict") else dict(model or {})


_CREDENTIAL_KINDS = {"AccountKeyConfiguration": "AccountKey", "SasTokenConfiguration": "Sas",
                     "ServicePrincipalConfiguration": "ServicePrincipal", "CertificateConfiguration": "Certificate",
                     "NoneCredentialConfiguration": "None"}


def _credential_kind(credentials: Any) -> str:
    """What kind of credential a datastore keeps (never the secret itself): "None" is identity-based."""
    if credentials is None:
        return "None"
    name = type(credentials).__name__
    return _CREDENTIAL_KINDS.get(name, name.removesuffix("Configuration"))


def _live_split(traffic: dict[str, Any]) -> dict[str, int]:
    """Deployments taking live traffic, names lower-cased (the SDK lower-cases them on PUT); 0 % = absent."""
    return {str(name).lower(): int(percent) for name, percent in traffic.items() if int(percent)}


def _split_words(split: dict[str, int]) -> str:
    return " ".join(f"{name}={percent}" for name, percent in sorted(split.items())) or "none"


def _check_traffic_change(endpoint: str, found: Any, seen: dict[str, int]) -> None:
    """Conflict if the endpoint is mid-operation, or its live split is no longer `seen`."""
    state = _text(found.provisioning_state)
    if state in BUSY_STATES:
        raise Conflict(f"Endpoint {endpoint} is still {state}: Azure ML accepts no new change to an endpoint until "
                       f"its current operation has finished. Try again once it shows Succeeded.", code="EndpointBusy")
    now = _live_split(found.traffic or {})
    if now != seen:
        raise Conflict(f"The traffic of {endpoint} changed since it was read: it is now {_split_words(now)}, not "
                       f"{_split_words(seen)}. Nothing was changed; look at the endpoint again and repeat the "
                       f"change if it still applies.", code="TrafficChanged")


def _mirrored(mirror_traffic: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The deployments an endpoint mirrors traffic to (a share above 0): their shadow requests are
    kept out of the endpoint's live figures (adapters.azureml.metrics, "Requests")."""
    return tuple(sorted(str(name) for name, share in (mirror_traffic or {}).items() if int(share or 0) > 0))


def _check_not_mirrored(endpoint: str, found: Any, traffic: dict[str, int]) -> None:
    mirrored = {str(k).lower(): int(v) for k, v in (found.mirror_traffic or {}).items() if int(v)}
    for deployment, percent in traffic.items():
        if percent and deployment.lower() in mirrored:
            share = mirrored[deployment.lower()]
            raise InvalidRequest(f"Deployment {deployment} receives mirrored traffic ({share} %) "
                                 f"on {endpoint}; Azure ML does not let a deployment take both live and mirrored "
                                 f"traffic. Stop mirroring to it first, or leave its live share at 0.",
                                 code="MirroredDeployment")


def _canonical_stage(stage: str) -> str:
    """One of STAGES, matched case-insensitively. Azure accepts any text; the bot keeps to these four."""
    for known in STAGES:
        if stage.strip().lower() == known.lower():
            return known
    raise InvalidRequest(f"Unknown stage '{stage}'; use one of {', '.join(STAGES)}.")


def _version_key(model: ModelVersion) -> tuple[int, Any]:
    """Numeric versions sort numerically (10 after 9); others after them, as text."""
    return (1, int(model.version), "") if model.version.isdigit() else (0, 0, model.version)


# ---------------------------------------------------------------- model monitoring helpers

_MONITOR_READERS = 8             # monitors (or MLflow figure histories) read at once
MLFLOW_PAGES = 5                 # pages of MLflow's runs/search read at most (1000 runs each)
FIGURES_FORMAT = ("Azure's monitoring components log each figure as an MLflow run tagged azureml.monitor_name, "
                  "azureml.signal_name, azureml.metric_name and azureml.group_0 (the feature): a format of "
                  "theirs, not a documented API, which may change.")
FIGURES_SOURCE = ("read from the MLflow runs of Azure's monitoring components (tags azureml.signal_name, "
                  "azureml.metric_name, azureml.group_0: their format, which may change)")
_SIGNAL_KINDS = {"DataDriftSignal": "data_drift", "PredictionDriftSignal": "prediction_drift",
                 "DataQualitySignal": "data_quality", "FeatureAttributionDriftSignal": "feature_attribution_drift",
                 "ModelPerformanceSignal": "model_performance"}
_metric_name = metric_name         # Azure's and the SDK's metric names, snake case (adapters.azureml.monitoring)


def _mlflow_client(ml_client: MLClient) -> Any:
    """A PipelineClient for the workspace's MLflow tracking API: the MLClient's credential (an ARM token, which
    Azure ML's tracking server accepts) and its pipeline options (transport, retries, timeouts)."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import (
        BearerTokenCredentialPolicy, HeadersPolicy, RetryPolicy, UserAgentPolicy,
    )

    options = dict(getattr(ml_client, "_kwargs", {}) or {})
    transport = options.pop("transport", None)
    retry = {k: v for k, v in options.items() if k.startswith("retry_")}
    policies = [HeadersPolicy(), UserAgentPolicy(base_user_agent="mlops-bot"), RetryPolicy(**retry),
                BearerTokenCredentialPolicy(ml_client._credential, "https://management.azure.com/.default")]
    return PipelineClient("https://api.azureml.ms", policies=policies, transport=transport)


def _signal(name: str, signal: Any) -> MonitorSignal:
    """Our MonitorSignal from an SDK signal: its kind, metric thresholds (per data type) and features."""
    thresholds: list[MetricThreshold] = []
    configured = getattr(signal, "metric_thresholds", None)
    for item in (configured if isinstance(configured, list) else [configured] if configured is not None else []):
        for data_type in ("numerical", "categorical"):
            group = getattr(item, data_type, None)
            if group is None:
                continue
            for metric, value in vars(group).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not metric.startswith("_") \
                        and metric != "metric_threshold":
                    thresholds.append(MetricThreshold(metric, float(value), data_type))
        for model_type in ("classification", "regression"):       # model performance: accuracy, MAE, ...
            group = getattr(item, model_type, None)
            for metric, value in (vars(group).items() if group is not None else ()):
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not metric.startswith("_"):
                    thresholds.append(MetricThreshold(_metric_name(metric), float(value), ""))
        metric = getattr(item, "metric", None) or getattr(item, "metric_name", None)
        value = getattr(item, "threshold", None)
        if value is None and metric:          # feature attribution keeps it under the metric's own name
            value = getattr(item, _metric_name(_text(metric)), None)
        if metric and isinstance(value, (int, float)) and not isinstance(value, bool):
            thresholds.append(MetricThreshold(_metric_name(_text(metric)), float(value),
                                              _text(getattr(item, "data_type", "")).lower()))
    features = getattr(signal, "features", None)
    names = tuple(features) if isinstance(features, (list, tuple)) else ()
    window = getattr(getattr(getattr(signal, "production_data", None), "data_window", None), "lookback_window_size",
                     None)
    days = int(window[1:-1]) if isinstance(window, str) and re.fullmatch(r"P\d+D", window) else None
    return MonitorSignal(name, _SIGNAL_KINDS.get(type(signal).__name__, "custom"), tuple(thresholds), names, days)


def _asset_ref(asset_id: str | None, collection: str) -> str:
    """`fraud-model:3` from a model id, `fraud-api/blue` from a deployment id (ARM or azureml: form)."""
    if not asset_id:
        return ""
    text = str(asset_id)
    if text.startswith("azureml:"):
        parts = text[len("azureml:"):].split(":")
        return (":" if collection == "models" else "/").join(p for p in parts if p)
    if collection == "models":
        match = _MODEL_VERSION_ID.search(text)
        return f"{match['name']}:{match['version']}" if match else text.rsplit("/", 1)[-1]
    match = re.search(r"/onlineEndpoints/(?P<e>[^/]+)(?:/deployments/(?P<d>[^/]+))?", text, re.IGNORECASE)
    return (f"{match['e']}/{match['d']}" if match['d'] else match['e']) if match else text


# ---------------------------------------------------------------- issue 9 helpers (feature store)


def _text_version_key(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def _recurrence_text(trigger: Any) -> str:
    """'every 3 hours', 'every 1 day at 02:00' from a RecurrenceTrigger."""
    frequency = _text(getattr(trigger, "frequency", "")).lower()
    interval = getattr(trigger, "interval", None) or 1
    unit = frequency + ("s" if interval != 1 and frequency else "")
    pattern = getattr(trigger, "schedule", None)
    at = ""
    if pattern is not None and pattern.hours not in (None, []) and pattern.minutes not in (None, []):
        hours = pattern.hours if isinstance(pattern.hours, list) else [pattern.hours]
        minutes = pattern.minutes if isinstance(pattern.minutes, list) else [pattern.minutes]
        at = " at " + ", ".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes)
    return f"every {interval} {unit}{at}".strip() if frequency else ""


def _materialization(run: Any) -> Materialization:
    kind = str(getattr(getattr(run, "type", None), "name", "")).lower()     # MaterializationType's values are 1, 2
    return Materialization(job=run.name, status=_text(run.status) or "Unknown",
                           type="backfill" if "backfill" in kind else "recurrent" if "recurrent" in kind else "",
                           window_start=_utc(getattr(run, "feature_window_start_time", None)),
                           window_end=_utc(getattr(run, "feature_window_end_time", None)),
                           created_at=_created(run)[0])


def _utc(value: Any) -> datetime | None:
    """The SDK parses feature windows without a zone; Azure writes them in UTC ('...Z')."""
    moment = _when(value)
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


FEATURE_DATA_TYPES = ("String", "Integer", "Long", "Float", "Double", "Binary", "Datetime", "Boolean")


def _data_type(value: Any) -> str:
    """Azure's FeatureDataType spelling ('String'), whatever case the SDK's enums give ('string')."""
    text = _text(value)
    return next((known for known in FEATURE_DATA_TYPES if known.lower() == text.lower()), text)


# ---------------------------------------------------------------- factory


def build_azure_service(subscription_id: str, resource_group: str, workspace_name: str, *, environment: str,
                        managed_identity_client_id: str | None = None, retry_total: int = 3,
                        retry_backoff_factor: float = 0.8, retry_backoff_max: float = 30.0,
                        timeout: float = 30.0, connection_timeout: float = 10.0,
                        metrics_endpoint: str | None = None, credential: Any = None,
                        client_options: dict[str, Any] | None = None) -> AzureMLService:
    """The production service: real credential, bounded retries (429/5xx, back-off) and timeouts.

    `managed_identity_client_id` selects a user-assigned managed identity; otherwise
    DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI, ...).
    `metrics_endpoint` (e.g. "https://westeurope.metrics.monitor.azure.com") is Azure Monitor's
    regional endpoint for endpoint health; without it, it is derived from the workspace's location on
    first use (public cloud: https://<location>.metrics.monitor.azure.com; sovereign clouds set it).
    `credential` and `client_options` (e.g. a `transport`) are for tests.
    """
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if credential is not None:
        identity = type(credential).__name__
    elif managed_identity_client_id:
        credential = ManagedIdentityCredential(client_id=managed_identity_client_id)
        identity = f"managed identity {managed_identity_client_id}"
    else:
        credential = DefaultAzureCredential()
        identity = "DefaultAzureCredential"
    pipeline = dict(retry_total=retry_total, retry_connect=retry_total, retry_read=retry_total,
                    retry_status=retry_total, retry_backoff_factor=retry_backoff_factor,
                    retry_backoff_max=retry_backoff_max, connection_timeout=connection_timeout,
                    read_timeout=timeout, **(client_options or {}))
    ml_client = MLClient(credential, subscription_id, resource_group, workspace_name, **pipeline)

    def metrics_for(url: str) -> AzureMonitorMetrics:
        return AzureMonitorMetrics.create(url, credential, identity=identity, **pipeline)

    metrics = metrics_for(metrics_endpoint) if metrics_endpoint else None
    return AzureMLService(ml_client, environment=environment, identity=identity, metrics=metrics,
                          metrics_for_endpoint=metrics_for)
