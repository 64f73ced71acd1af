"""The port to an Azure ML workspace: the `MLService` Protocol, its value types and its errors.

Everything the bot knows about a workspace passes through this module. Two real implementations
exist: `adapters.local.workspace.LocalWorkspace` (embedded, SQLite-backed, the default) and
`adapters.azureml.workspace.AzureMLService` (azure-ai-ml). Both are *synchronous*, like the Azure SDK;
`adapters.nonblocking.NonBlockingService` is the one place that moves calls off the event loop.

Value types are our own frozen dataclasses; SDK objects never cross this boundary.

Error tree (raised by adapters, turned into friendly replies by the Teams seam)::

    ServiceError                 anything the backend refused or could not do
    ├── NotFound                 no such model / endpoint / job / ... (kind and name kept)
    ├── Conflict                 the resource is in a state that forbids the change
    ├── InvalidRequest           the change itself is invalid (e.g. traffic not summing to 100)
    ├── Unavailable              the backend did not answer in time, or answered 5xx/429
    └── PermissionDenied         the bot's identity lacks an Azure role for this call
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from adapters.posture import PostureFacts

# ---------------------------------------------------------------- errors


class ServiceError(Exception):
    """A backend refused or failed a call. `code` keeps Azure's error code when there is one."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(ServiceError):
    """`kind` is one of RESOURCE_KINDS; `name` is what the caller asked for."""

    def __init__(self, kind: str, name: str, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message or f"No {kind.replace('_', ' ')} named '{name}'.", code=code)
        self.kind = kind
        self.name = name


class Conflict(ServiceError):
    pass


class InvalidRequest(ServiceError):
    pass


class Unavailable(ServiceError):
    pass


class PermissionDenied(ServiceError):
    """`identity` says who the bot ran as; `role` names the Azure role that would allow the call, and
    `scope` where to assign it when that is not the workspace (e.g. "the feature store contoso-features")."""

    def __init__(self, message: str, *, identity: str | None = None, role: str | None = None,
                 code: str | None = None, scope: str | None = None) -> None:
        super().__init__(message, code=code)
        self.identity = identity
        self.role = role
        self.scope = scope


# ---------------------------------------------------------------- value types

RESOURCE_KINDS = ("model", "endpoint", "batch_endpoint", "deployment", "job", "schedule", "compute")
STAGES = ("None", "Staging", "Production", "Archived")
JOB_STATUSES = (
    "NotStarted", "Queued", "Preparing", "Provisioning", "Starting", "Running", "Finalizing",
    "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown",
)
TERMINAL_JOB_STATUSES = ("Completed", "Failed", "Canceled")
REQUESTED_BY = "mlops-bot.requested-by"      # job tag: the person who started the job from chat

# Bounds of changes, declared once: help, the parser, the commands' checks and both workspaces
# read them here. Managed online deployments need at least 1 instance; 20 is Azure's default quota.
MIN_INSTANCES, MAX_INSTANCES = 1, 20
TRAFFIC_TOTAL = 100              # an endpoint's live traffic split adds up to exactly this


@dataclass(frozen=True)
class WorkspaceInfo:
    name: str
    environment: str                 # the label users gave it: dev, staging, prod
    backend: Literal["local", "azure"]
    subscription_id: str = ""
    resource_group: str = ""
    location: str = ""
    description: str = ""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    stage: str = "None"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None
    created_by: str = ""
    path: str = ""
    archived: bool = False           # Azure's archive (`is_archived`): hidden from default lists, still usable
    job: str = ""                    # the training job that produced it, when known

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Deployment:
    name: str
    endpoint: str
    model: str = ""                  # "name:version" when known
    instance_type: str = ""
    instance_count: int = 0
    provisioning_state: str = ""


@dataclass(frozen=True)
class OnlineEndpoint:
    name: str
    provisioning_state: str
    auth_mode: str = ""
    scoring_uri: str = ""
    description: str = ""
    traffic: dict[str, int] = field(default_factory=dict)
    mirror_traffic: dict[str, int] = field(default_factory=dict)
    deployments: tuple[Deployment, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchDeployment:
    name: str
    endpoint: str
    model: str = ""                  # "name:version" when known
    compute: str = ""                # the compute cluster's name
    instance_count: int | None = None
    provisioning_state: str = ""


@dataclass(frozen=True)
class BatchEndpoint:
    name: str
    provisioning_state: str
    default_deployment: str = ""
    scoring_uri: str = ""
    description: str = ""
    deployments: tuple[str, ...] = ()
    details: tuple[BatchDeployment, ...] = ()   # filled by get_batch_endpoint, in `deployments` order


@dataclass(frozen=True)
class Job:
    name: str
    status: str
    type: str = "command"            # command | pipeline | sweep | ...
    display_name: str = ""
    experiment: str = ""
    compute: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    created_by: str = ""
    error: str = ""
    parent: str = ""                 # for pipeline children: the parent job name
    children: tuple[Job, ...] = ()   # filled by get_job for pipelines
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


@dataclass(frozen=True)
class Schedule:
    name: str
    enabled: bool
    trigger: Literal["cron", "recurrence"]
    expression: str                  # "0 2 * * *" or "every 1 day at 02:00"
    time_zone: str = "UTC"
    action: str = ""                 # what it runs, e.g. "job train-fraud" or "monitor fraud-model"
    provisioning_state: str = ""
    description: str = ""


@dataclass(frozen=True)
class Compute:
    name: str
    type: str                        # amlcompute | computeinstance | kubernetes | ...
    state: str                       # Running, Stopped, Succeeded (cluster), ...
    size: str = ""
    min_nodes: int | None = None
    max_nodes: int | None = None
    current_nodes: int | None = None


@dataclass(frozen=True)
class DeploymentMetrics:
    """One deployment's share of the endpoint's figures, so a canary can be compared with the rest
    (Azure Monitor splits every online endpoint metric by its `deployment` dimension)."""

    deployment: str
    cpu_utilization: float | None = None     # percent
    gpu_utilization: float | None = None     # percent
    capacity: float | None = None            # instances
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    requests_per_minute: float | None = None
    requests_by_status: dict[str, float] = field(default_factory=dict)   # "2xx" -> per minute

    @property
    def error_rate(self) -> float | None:
        return _error_rate(self.requests_by_status)


def _error_rate(by_status: dict[str, float]) -> float | None:
    """The share of requests answered 5xx; None when there were none."""
    total = sum(by_status.values())
    return by_status.get("5xx", 0.0) / total if total else None


@dataclass(frozen=True)
class EndpointMetrics:
    """Endpoint health over a recent window (Azure Monitor's RequestLatency_P50/_P99, RequestsPerMinute)."""

    endpoint: str
    window_minutes: int
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    requests_per_minute: float | None = None
    requests_by_status: dict[str, float] = field(default_factory=dict)   # "2xx" -> per minute
    deployments: tuple[DeploymentMetrics, ...] = ()
    read_at: datetime | None = None          # when the figures were read (None: the caller knows)

    @property
    def error_rate(self) -> float | None:
        return _error_rate(self.requests_by_status)


@dataclass(frozen=True)
class Operation:
    """A long-running change the backend accepted (Azure's `begin_*`).

    `wait(timeout)` blocks until it finishes and returns a one-line summary of the result, or raises
    ServiceError with the backend's message. Implementations whose change is immediate return an
    Operation whose `wait` returns at once.
    """

    kind: str                        # "traffic", "scale", "cancel", "schedule", "compute", ...
    target: str                      # human-readable: "endpoint fraud-api"
    wait: Callable[[float | None], str]


@dataclass(frozen=True)
class AzureScope:
    """Where an Azure ML workspace lives, as configured (known without a call): for studio links."""

    subscription_id: str
    resource_group: str
    workspace: str
    tenant_id: str = ""


@dataclass(frozen=True)
class FeatureStore:
    """An Azure ML feature store: a workspace of kind `featurestore`, with its own assets and roles."""

    name: str
    location: str = ""
    description: str = ""
    resource_group: str = ""
    subscription_id: str = ""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str                        # Azure's FeatureDataType: String, Integer, Long, Float, Double, Boolean, ...
    description: str = ""


@dataclass(frozen=True)
class FeatureEntity:
    """An entity a feature set is keyed on; `join_keys` are its index columns as (name, type)."""

    name: str
    version: str = ""
    join_keys: tuple[tuple[str, str], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Materialization:
    """One materialization job of a feature set version (backfill or the recurrent schedule)."""

    job: str
    status: str
    type: str = ""                   # "backfill" | "recurrent" | ""
    window_start: datetime | None = None
    window_end: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class FeatureSet:
    """A feature set version. `list_feature_sets` fills only the summary (name, latest version,
    description, tags); `get_feature_set` fills entities, features and materialization too."""

    name: str
    version: str
    store: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    stage: str = ""
    entities: tuple[FeatureEntity, ...] = ()
    features: tuple[Feature, ...] = ()
    offline_enabled: bool = False
    online_enabled: bool = False
    schedule: str = ""               # materialization schedule, e.g. "every 1 day at 02:00", "" when none
    last_materialization: Materialization | None = None
    versions: tuple[str, ...] = ()   # every version, newest first (get_feature_set)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


TRAINING_SCHEDULE_TAG = "training_schedule"     # model tag naming the schedule that retrains it


def training_schedule(model: str, versions: list[ModelVersion]) -> str:
    """The schedule named by the newest version (of `versions`, newest first) with a training_schedule tag."""
    if not versions:
        raise NotFound("model", model)
    for version in versions:
        name = version.tags.get(TRAINING_SCHEDULE_TAG, "").strip()
        if name:
            return name
    raise InvalidRequest(f"No version of {model} names its retraining schedule: tag one with "
                         f"{TRAINING_SCHEDULE_TAG}=‹schedule name›, or trigger the schedule directly.",
                         code="NoTrainingSchedule")


# ---------------------------------------------------------------- the port


@runtime_checkable
class MLService(Protocol):
    """One Azure ML workspace. All methods are blocking; see adapters.nonblocking."""

    # the workspace
    def workspace(self) -> WorkspaceInfo: ...

    def names(self, kind: str) -> list[str]:
        """Every name of that kind (one of RESOURCE_KINDS), for "did you mean" suggestions."""
        ...

    def security_posture(self) -> PostureFacts:
        """What the production checklist is judged on (adapters.posture): the workspace's network,
        encryption, identity and tags; its online endpoints, compute and datastores. A read that
        fails is `Unreadable` with its reason (a 403 names the action the bot's identity lacks);
        the call itself does not fail for one read."""
        ...

    # models
    def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        """Without name: the latest version of every model. With name: all its versions, newest first."""
        ...

    def get_model(self, name: str, version: str | None = None) -> ModelVersion:
        """version None means the latest."""
        ...

    def set_model_stage(self, name: str, version: str, stage: str) -> ModelVersion: ...

    def archive_model(self, name: str, version: str) -> ModelVersion:
        """Azure's archive of one version (`is_archived`); its stage is kept. Archiving twice is a no-op."""
        ...

    def restore_model(self, name: str, version: str) -> ModelVersion:
        """Undo `archive_model`; its stage is kept. Restoring a version that is not archived is a no-op."""
        ...

    def trigger_retraining(self, model: str) -> Job:
        """Start the model's retraining: trigger the schedule named in its newest version's
        `training_schedule` tag and return the job that starts. InvalidRequest if no version names one."""
        ...

    # online endpoints
    def list_endpoints(self) -> list[OnlineEndpoint]: ...

    def get_endpoint(self, name: str) -> OnlineEndpoint: ...

    def set_traffic(self, endpoint: str, traffic: dict[str, int],
                    expected: dict[str, int] | None = None) -> Operation:
        """Replace the whole split. Percentages over existing deployments, summing to 100.

        `expected` is the split the caller saw before deciding (deployments at 0 % may be left out).
        If the endpoint's live split is no longer that one when the change is about to be written,
        nothing is written and Conflict (code "TrafficChanged") says what the split is now; without
        `expected`, the split read at the start of this call is the reference. Also refused: an
        endpoint still Creating/Updating/Deleting (Conflict, code "EndpointBusy") and live traffic
        on a deployment that receives mirrored traffic (InvalidRequest, code "MirroredDeployment").
        """
        ...

    def scale_deployment(self, endpoint: str, deployment: str, instance_count: int) -> Operation: ...

    def deployment_logs(self, endpoint: str, deployment: str, lines: int = 50) -> str: ...

    def endpoint_metrics(self, endpoint: str, window_minutes: int = 60) -> EndpointMetrics: ...

    def endpoints_metrics(self, endpoints: Sequence[OnlineEndpoint], window_minutes: int = 60
                          ) -> dict[str, EndpointMetrics]:
        """`endpoint_metrics` for many endpoints at once (as `list_endpoints` gave them), keyed by name,
        in as few backend calls as the backend allows (Azure Monitor: one `query_resources` per
        metric group and batch of METRICS_BATCH resources)."""
        ...

    # batch endpoints
    def list_batch_endpoints(self) -> list[BatchEndpoint]: ...

    def get_batch_endpoint(self, name: str) -> BatchEndpoint:
        """One batch endpoint with its deployments' `details` (model, compute, instances)."""
        ...

    def invoke_batch_endpoint(self, endpoint: str, input_uri: str, deployment: str | None = None, *,
                              tags: dict[str, str] | None = None) -> Job:
        """Start a scoring job; `tags` (e.g. who asked, REQUESTED_BY) go on the job where the backend allows."""
        ...

    def list_batch_jobs(self, endpoint: str) -> list[Job]: ...

    # jobs
    def list_jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        """Newest first; top-level jobs only (pipeline children appear in get_job)."""
        ...

    def get_job(self, name: str) -> Job: ...

    def cancel_job(self, name: str) -> Operation: ...

    # schedules
    def list_schedules(self) -> list[Schedule]: ...

    def enable_schedule(self, name: str) -> Operation: ...

    def disable_schedule(self, name: str) -> Operation: ...

    def trigger_schedule(self, name: str, *, tags: dict[str, str] | None = None) -> Job:
        """Run the schedule's job once now; `tags` as for invoke_batch_endpoint."""
        ...

    # compute
    def list_compute(self) -> list[Compute]: ...

    def start_compute(self, name: str) -> Operation: ...

    def stop_compute(self, name: str) -> Operation: ...

    # model monitoring
    def list_monitors(self) -> list[Monitor]:
        """Every monitor, by name, with its signals and its latest run."""
        ...

    def drift_report(self, target: str, window_days: int = 7) -> DriftReport:
        """The monitor of `target` (a monitor, model or endpoint name): its latest run's figures per
        signal and feature, with their history over the last `window_days` days (1 to 90).
        NotFound if no monitor watches `target`; InvalidRequest if several do (it names them)."""
        ...

    # the feature store
    def list_feature_stores(self) -> list[FeatureStore]:
        """The feature stores beside this workspace (Azure: its resource group), by name."""
        ...

    def list_feature_sets(self, store: str) -> list[FeatureSet]:
        """The feature sets of `store` (their latest version, summary only), by name."""
        ...

    def get_feature_set(self, store: str, name: str, version: str | None = None) -> FeatureSet:
        """One feature set version in full (latest when no version): entities with their join keys,
        features with types, materialization settings and the last materialization job."""
        ...

# ---------------------------------------------------------------- model monitoring (value types)
#
# A monitor watches one deployed model (Azure ML: a `MonitorSchedule`); each of its signals (data
# drift, prediction drift, data quality, ...) judges some features by some metrics against
# thresholds; each run gives one figure per (signal, feature, metric). Metric names are Azure ML's
# (see adapters.drift.definitions for what they mean).

MONITOR_SIGNAL_KINDS = ("data_drift", "prediction_drift", "data_quality", "feature_attribution_drift",
                        "model_performance", "custom")


@dataclass(frozen=True)
class MetricThreshold:
    """One metric a signal judges by: breaches above `threshold` (below it for p-values)."""

    metric: str                      # e.g. "normalized_wasserstein_distance"
    threshold: float
    data_type: str = ""              # "numerical" | "categorical" | "" (any)


@dataclass(frozen=True)
class MonitorSignal:
    name: str                        # as the monitor names it, e.g. "data-drift"
    kind: str                        # one of MONITOR_SIGNAL_KINDS
    thresholds: tuple[MetricThreshold, ...] = ()
    features: tuple[str, ...] = ()   # empty: every feature (or Azure's top-N by importance)
    lookback_days: int | None = None  # how much production data one run compares


@dataclass(frozen=True)
class MonitorRun:
    """One run of a monitor. `breached` is None when the outcome cannot be known (still running, failed)."""

    name: str
    status: str                      # Completed | Failed | Running | ... (JOB_STATUSES)
    started_at: datetime | None = None
    breached: bool | None = None
    breached_signals: tuple[str, ...] = ()
    message: str = ""                # e.g. Azure's breach message, or a failure


@dataclass(frozen=True)
class Monitor:
    name: str
    model: str = ""                  # "name:version", or "name" when the version is not pinned
    endpoint: str = ""               # "endpoint/deployment" or "endpoint"
    signals: tuple[MonitorSignal, ...] = ()
    schedule: str = ""               # "every 1 day at 03:00" or a cron expression
    enabled: bool = True
    last_run: MonitorRun | None = None

    @property
    def model_name(self) -> str:
        return self.model.split(":", 1)[0]

    @property
    def endpoint_name(self) -> str:
        return self.endpoint.split("/", 1)[0]


@dataclass(frozen=True)
class FeatureFigure:
    """One (feature, metric) of a signal in the latest run, with its recent history (oldest first, latest last)."""

    feature: str
    metric: str
    value: float | None
    threshold: float | None
    breached: bool
    data_type: str = ""              # "numerical" | "categorical" | ""
    history: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class SignalReport:
    name: str
    kind: str
    breached: bool | None            # None: not known (see DriftReport.figures_note)
    figures: tuple[FeatureFigure, ...] = ()


@dataclass(frozen=True)
class DriftReport:
    """What a monitor found: the latest run's outcome and, when readable, its per-feature figures.

    `figures_source` says where the figures come from (computed by the local workspace, or read
    from Azure's monitoring components, whose output format is theirs and may change);
    `figures_note` says why there are none when `signals` carry no figures.
    """

    monitor: Monitor
    window_days: int
    latest: MonitorRun | None
    runs: tuple[MonitorRun, ...] = ()            # within the window, oldest first
    signals: tuple[SignalReport, ...] = ()
    figures_source: str = ""
    figures_note: str = ""
    studio_url: str = ""


# ---------------------------------------------------------------- what only the embedded local workspace has


@runtime_checkable
class LocalOnly(Protocol):
    """What only the embedded local workspace (adapters.local.workspace) can do, beside the port: the demo
    switches behind `demo degrade|heal`, and its own monitors' breaches (Azure ML reports those
    through Event Grid instead). Reached through the facade (`NonBlockingService.demo_switch`,
    `.local_breaches`), in its thread pool and with its timeout, like any other call."""

    def degrade_deployment(self, endpoint: str, deployment: str) -> str:
        """Make a deployment slow and failing; one line that says how."""

    def heal_deployment(self, endpoint: str, deployment: str) -> str:
        """Give a deployment back its demo health; one line that says so."""

    def monitor_breaches(self, since: datetime) -> list[tuple[Monitor, MonitorRun, tuple[SignalReport, ...]]]:
        """The monitor runs after `since` that breached a threshold, oldest first."""
