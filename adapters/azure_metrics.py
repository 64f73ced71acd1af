"""Online endpoint health from Azure Monitor (`azure.monitor.querymetrics.MetricsClient`).

    metrics = AzureMonitorMetrics(MetricsClient("https://westeurope.metrics.monitor.azure.com", cred))
    health = metrics.endpoint_metrics([EndpointRef("fraud-api", endpoint_arm_id, ("blue", "green"))], 60)
    health["fraud-api"].latency_p99_ms, health["fraud-api"].error_rate
    health["fraud-api"].deployments[0].latency_p99_ms, health["fraud-api"].deployments[0].error_rate

One `query_resources` call covers many resources (the batch metrics API), but only one metric
namespace and one filter per call, so a query is at most four calls whatever the number of
endpoints:

1. endpoints (`Microsoft.MachineLearningServices/workspaces/onlineEndpoints`), no filter:
   RequestLatency_P50, RequestLatency_P99 of the endpoint as a whole (milliseconds, averaged over
   the window). A percentile cannot be made from the deployments' percentiles, so this stays its
   own unsplit query;
2. the same metrics with filter `deployment eq '*'`: each deployment's p50 and p99;
3. the same namespace, RequestsPerMinute with filter `deployment eq '*' and statusCodeClass eq '*'`
   (the "2xx", "4xx", "5xx" per minute of each deployment, averaged over the window). The
   endpoint's figure of a status class is the sum of its deployments' (see "Requests per minute");
4. deployments (`.../onlineEndpoints/deployments`, resource id `<endpoint id>/deployments/<name>`):
   CpuUtilizationPercentage, GpuUtilizationPercentage, DeploymentCapacity (averages).

The dimensions are those of Azure Monitor's "Supported metrics for
Microsoft.MachineLearningServices/workspaces/onlineEndpoints" (table generated 2024-07-30),
https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics:
RequestLatency, RequestLatency_P50/_P90/_P95/_P99 have the dimension `deployment`;
RequestsPerMinute (aggregation Average) has `deployment`, `statusCode`, `statusCodeClass` and
`modelStatusCode`; ConnectionsActive, NetworkBytes and NewConnectionsPerSecond have none.

The window is a single time grain (granularity = window), so each series has one data point: the
average of its per-minute values. A split series names its dimension values in `metadata_values`
(`{dimension name: value}`); they are read by name, not by position, and the name is compared
without case, since Azure answers dimension names in its own casing (the REST walkthrough's
`BlobType` comes back as "blobtype"), as it does resource ids. Deployment names are matched
without case to `EndpointRef.deployments` and reported as spelled there.

Requests per minute: a (deployment, status class) series is that deployment's requests per minute
of that class, averaged over the window. Requests per minute add up across deployments (the
endpoint serves the sum of what its deployments serve), so the endpoint's figure of a class is the
sum of its deployments' figures, including a deployment that served in the window but is no longer
in `EndpointRef.deployments`; `requests_per_minute` is the sum over the classes and the error rate
the 5xx share, as before. Azure averages a series over the minutes it has values for, so the sum is
exact when the deployments served through the same minutes (a deployment that served for part of the
window adds its rate while it served). Latency averages do not add up, hence query 1.

A metric Azure has no data for stays None: a deployment without a series (no traffic in the
window) has no latency, no requests per minute and an empty `requests_by_status`, never zeros.
Errors are translated like the rest of the adapters (`adapters.azureml.translate_error`, with
role "Monitoring Reader").
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Mapping, Protocol, Sequence

from adapters.service import DeploymentMetrics, EndpointMetrics, ServiceError, Unavailable

ENDPOINT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
DEPLOYMENT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
LATENCY_METRICS = ("RequestLatency_P50", "RequestLatency_P99")
REQUESTS_METRIC = "RequestsPerMinute"
DEPLOYMENT_DIMENSION = "deployment"
STATUS_DIMENSION = "statusCodeClass"
BY_DEPLOYMENT = f"{DEPLOYMENT_DIMENSION} eq '*'"
BY_DEPLOYMENT_AND_STATUS = f"{DEPLOYMENT_DIMENSION} eq '*' and {STATUS_DIMENSION} eq '*'"
UNSPLIT_STATUS = "all"           # the status class of a series Azure did not split by it
DEPLOYMENT_METRICS = ("CpuUtilizationPercentage", "GpuUtilizationPercentage", "DeploymentCapacity")
MONITORING_READER = "Monitoring Reader"
PUBLIC_CLOUD_METRICS_HOST = "metrics.monitor.azure.com"
_REGION = re.compile(r"[a-z0-9]+")


def regional_metrics_endpoint(location: str) -> str:
    """Azure Monitor's metrics endpoint for a workspace location (public cloud).

    ARM gives locations as "westeurope" (or, from some APIs, "West Europe"): both map to
    https://westeurope.metrics.monitor.azure.com. Anything else is refused rather than put in a host name.
    """
    region = re.sub(r"\s+", "", location or "").lower()
    if not _REGION.fullmatch(region):
        raise Unavailable(f"Cannot tell the Azure Monitor endpoint for workspace location {location!r}; "
                          f"set metrics_endpoint for this workspace.")
    return f"https://{region}.{PUBLIC_CLOUD_METRICS_HOST}"


@dataclass(frozen=True)
class EndpointRef:
    """Which endpoint to ask about: its name, ARM resource id and deployment names."""

    name: str
    resource_id: str
    deployments: tuple[str, ...] = ()


class EndpointMetricsSource(Protocol):
    """Anything that can report endpoint health (Azure Monitor in production)."""

    def endpoint_metrics(self, endpoints: Sequence[EndpointRef], window_minutes: int = 60) -> dict[str, EndpointMetrics]:
        """Health of each endpoint over the last `window_minutes`, keyed by endpoint name."""
        ...


def _key(resource_id: str | None) -> str:
    """ARM ids compare case-insensitively (Azure Monitor answers with its own casing)."""
    return (resource_id or "").rstrip("/").lower()


@dataclass(frozen=True)
class Reading:
    """One series of a metric: its dimension values (names in lower case) and its average."""

    dimensions: Mapping[str, str]
    average: float

    def dimension(self, name: str) -> str:
        """The series' value of a dimension ("" when the series is not split by it)."""
        return self.dimensions.get(name.lower(), "")


def _readings(metric: Any) -> list[Reading]:
    """The series of a metric that have data, each with its dimension values read by name."""
    readings = []
    for series in metric.timeseries or []:
        points = [p.average for p in series.data or [] if p.average is not None]
        if points:
            dimensions = {str(name).lower(): str(value) for name, value in (series.metadata_values or {}).items()}
            readings.append(Reading(dimensions, sum(points) / len(points)))
    return readings


def _single(metrics: Mapping[str, Any], name: str) -> float | None:
    """The value of an unsplit metric (None when Azure has no data for it)."""
    found = [r.average for r in _readings(metrics[name])] if name in metrics else []
    return sum(found) / len(found) if found else None


def _per_deployment(metrics: Mapping[str, Any], name: str) -> dict[str, float]:
    """A metric split by deployment: {deployment name in lower case: value}."""
    if name not in metrics:
        return {}
    return {r.dimension(DEPLOYMENT_DIMENSION).lower(): r.average for r in _readings(metrics[name])}


def _requests_per_deployment(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """RequestsPerMinute split by deployment and status class: {deployment in lower case: {"5xx": per minute}}."""
    by_deployment: dict[str, dict[str, float]] = defaultdict(dict)
    for reading in _readings(metrics[REQUESTS_METRIC]) if REQUESTS_METRIC in metrics else []:
        status = reading.dimension(STATUS_DIMENSION) or UNSPLIT_STATUS
        deployment = by_deployment[reading.dimension(DEPLOYMENT_DIMENSION).lower()]
        deployment[status] = deployment.get(status, 0.0) + reading.average
    return dict(by_deployment)


def _added_up(per_deployment: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The endpoint's requests per minute by status class: the sum of its deployments'."""
    total: dict[str, float] = {}
    for by_status in per_deployment.values():
        for status, per_minute in by_status.items():
            total[status] = total.get(status, 0.0) + per_minute
    return total


@dataclass(frozen=True)
class _Answers:
    """What the four batch calls answered, each {resource id (lower case): {metric name: Metric}}."""

    latency: dict[str, dict[str, Any]]
    latency_by_deployment: dict[str, dict[str, Any]]
    requests_by_deployment: dict[str, dict[str, Any]]
    deployment_usage: dict[str, dict[str, Any]]

    def report(self, endpoint: EndpointRef, window_minutes: int) -> EndpointMetrics:
        key = _key(endpoint.resource_id)
        latency = self.latency.get(key, {})
        split_latency = self.latency_by_deployment.get(key, {})
        p50 = _per_deployment(split_latency, "RequestLatency_P50")
        p99 = _per_deployment(split_latency, "RequestLatency_P99")
        requests = _requests_per_deployment(self.requests_by_deployment.get(key, {}))
        deployments = tuple(
            _deployment_report(name, self.usage_of(endpoint, name), p50.get(name.lower()), p99.get(name.lower()),
                               requests.get(name.lower(), {}))
            for name in endpoint.deployments)
        by_status = _added_up(requests)
        return EndpointMetrics(
            endpoint=endpoint.name, window_minutes=window_minutes,
            latency_p50_ms=_single(latency, "RequestLatency_P50"),
            latency_p99_ms=_single(latency, "RequestLatency_P99"),
            requests_per_minute=sum(by_status.values()) if by_status else None,
            requests_by_status=by_status, deployments=deployments)

    def usage_of(self, endpoint: EndpointRef, deployment: str) -> dict[str, Any]:
        """The deployment resource's own metrics (CPU, GPU, capacity)."""
        return self.deployment_usage.get(_key(f"{endpoint.resource_id}/deployments/{deployment}"), {})


def _deployment_report(name: str, usage: Mapping[str, Any], p50: float | None, p99: float | None,
                       by_status: dict[str, float]) -> DeploymentMetrics:
    return DeploymentMetrics(
        deployment=name,
        cpu_utilization=_single(usage, "CpuUtilizationPercentage"),
        gpu_utilization=_single(usage, "GpuUtilizationPercentage"),
        capacity=_single(usage, "DeploymentCapacity"),
        latency_p50_ms=p50, latency_p99_ms=p99,
        requests_per_minute=sum(by_status.values()) if by_status else None,
        requests_by_status=by_status)


class AzureMonitorMetrics:
    """`EndpointMetricsSource` over Azure Monitor's batch metrics API."""

    def __init__(self, client: Any, *, identity: str = "") -> None:
        self.client = client
        self.identity = identity

    @classmethod
    def create(cls, endpoint: str, credential: Any, *, identity: str = "", **pipeline: Any) -> "AzureMonitorMetrics":
        """A MetricsClient for the regional endpoint of the workspace (e.g. https://westeurope.metrics.monitor.azure.com)."""
        from azure.monitor.querymetrics import MetricsClient

        return cls(MetricsClient(endpoint, credential, **pipeline), identity=identity)

    def _query(self, resource_ids: list[str], namespace: str, names: Iterable[str], window: timedelta,
               filter: str | None = None) -> dict[str, dict[str, Any]]:
        """{resource id (lower case): {metric name: Metric}} for one namespace."""
        from adapters.azureml import translate_error

        try:
            results = self.client.query_resources(
                resource_ids=resource_ids, metric_namespace=namespace, metric_names=list(names),
                timespan=window, granularity=window, aggregations=["Average"], filter=filter)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never swallowed
            raise translate_error(exc, kind="endpoint", name=", ".join(r.rsplit("/", 1)[-1] for r in resource_ids),
                                  identity=self.identity, role=MONITORING_READER) from exc
        by_resource: dict[str, dict[str, Any]] = {}
        for result in results:
            metrics = {m.name: m for m in result.metrics}
            resource = _resource_of(result, metrics)
            by_resource.setdefault(resource, {}).update(metrics)
        return by_resource

    def endpoint_metrics(self, endpoints: Sequence[EndpointRef], window_minutes: int = 60) -> dict[str, EndpointMetrics]:
        if not endpoints:
            return {}
        window = timedelta(minutes=window_minutes)
        endpoint_ids = [e.resource_id for e in endpoints]
        deployment_ids = [f"{e.resource_id}/deployments/{d}" for e in endpoints for d in e.deployments]
        answers = _Answers(
            latency=self._query(endpoint_ids, ENDPOINT_NAMESPACE, LATENCY_METRICS, window),
            latency_by_deployment=self._query(endpoint_ids, ENDPOINT_NAMESPACE, LATENCY_METRICS, window,
                                              filter=BY_DEPLOYMENT),
            requests_by_deployment=self._query(endpoint_ids, ENDPOINT_NAMESPACE, [REQUESTS_METRIC], window,
                                               filter=BY_DEPLOYMENT_AND_STATUS),
            deployment_usage=(self._query(deployment_ids, DEPLOYMENT_NAMESPACE, DEPLOYMENT_METRICS, window)
                              if deployment_ids else {}))
        return {endpoint.name: answers.report(endpoint, window_minutes) for endpoint in endpoints}


def _resource_of(result: Any, metrics: dict[str, Any]) -> str:
    """The resource a batch result belongs to: from the metric ids ('<resource>/providers/Microsoft.Insights/metrics/<name>')."""
    for metric in metrics.values():
        metric_id = metric.id or ""
        marker = metric_id.lower().find("/providers/microsoft.insights/metrics/")
        if marker > 0:
            return _key(metric_id[:marker])
    return _key(getattr(result, "resource_id", None))
