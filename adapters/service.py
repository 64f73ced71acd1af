"""The port to an Azure ML workspace: the `MLService` Protocol, its value types and its errors.

Everything the bot knows about a workspace passes through this module. Two real implementations
exist: `adapters.local.LocalWorkspace` (embedded, SQLite-backed, the default) and
`adapters.azureml.AzureMLService` (azure-ai-ml). Both are *synchronous*, like the Azure SDK;
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
from typing import Callable, Literal, Protocol, runtime_checkable

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
    """`identity` says who the bot ran as; `role` names the Azure role that would allow the call."""

    def __init__(self, message: str, *, identity: str | None = None, role: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.identity = identity
        self.role = role


# ---------------------------------------------------------------- value types

RESOURCE_KINDS = ("model", "endpoint", "batch_endpoint", "deployment", "job", "schedule", "compute")
STAGES = ("None", "Staging", "Production", "Archived")
JOB_STATUSES = (
    "NotStarted", "Queued", "Preparing", "Provisioning", "Starting", "Running", "Finalizing",
    "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown",
)
TERMINAL_JOB_STATUSES = ("Completed", "Failed", "Canceled")


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
class BatchEndpoint:
    name: str
    provisioning_state: str
    default_deployment: str = ""
    scoring_uri: str = ""
    description: str = ""
    deployments: tuple[str, ...] = ()


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
    deployment: str
    cpu_utilization: float | None = None     # percent
    gpu_utilization: float | None = None     # percent
    capacity: float | None = None            # instances
    latency_p99_ms: float | None = None      # its own requests' p99, when the backend splits by deployment
    error_rate: float | None = None          # share of its requests answered 5xx, likewise


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

    @property
    def error_rate(self) -> float | None:
        total = sum(self.requests_by_status.values())
        if not total:
            return None
        return self.requests_by_status.get("5xx", 0.0) / total


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


# ---------------------------------------------------------------- the port


@runtime_checkable
class MLService(Protocol):
    """One Azure ML workspace. All methods are blocking; see adapters.nonblocking."""

    def workspace(self) -> WorkspaceInfo: ...

    def names(self, kind: str) -> list[str]:
        """Every name of that kind (one of RESOURCE_KINDS), for "did you mean" suggestions."""
        ...

    # models
    def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        """Without name: the latest version of every model. With name: all its versions, newest first."""
        ...

    def get_model(self, name: str, version: str | None = None) -> ModelVersion:
        """version None means the latest."""
        ...

    def set_model_stage(self, name: str, version: str, stage: str) -> ModelVersion: ...

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

    # batch endpoints
    def list_batch_endpoints(self) -> list[BatchEndpoint]: ...

    def invoke_batch_endpoint(self, endpoint: str, input_uri: str, deployment: str | None = None) -> Job: ...

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

    def trigger_schedule(self, name: str) -> Job: ...

    # compute
    def list_compute(self) -> list[Compute]: ...

    def start_compute(self, name: str) -> Operation: ...

    def stop_compute(self, name: str) -> Operation: ...
