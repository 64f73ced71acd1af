"""Online endpoint health from Azure Monitor (`azure.monitor.querymetrics.MetricsClient`).

    metrics = AzureMonitorMetrics(MetricsClient("https://westeurope.metrics.monitor.azure.com", cred))
    health = metrics.endpoint_metrics([EndpointRef("fraud-api", endpoint_arm_id, ("blue", "green"))], 60)
    health["fraud-api"].latency_p99_ms, health["fraud-api"].error_rate
    health["fraud-api"].deployments[0].latency_p99_ms, health["fraud-api"].deployments[0].error_rate

One `query_resources` call covers many resources (the batch metrics API), but only one metric
namespace and one filter per call, so a query is four calls whatever the number of endpoints:

1. endpoints (`Microsoft.MachineLearningServices/workspaces/onlineEndpoints`), no filter, one grain
   for the window: RequestLatency_P50, RequestLatency_P99 of the endpoint as a whole (milliseconds,
   Azure's average over the window). A percentile cannot be made from the deployments'
   percentiles, so this stays its own unsplit query (whether Azure stores it as the endpoint's own
   percentile or, by its collapsing rule below, as the mean of the deployments' is not documented;
   the health verdicts also judge each live deployment's own p99, so a canary is seen either way);
2. the same metrics with filter `deployment eq '*'`: each deployment's p50 and p99;
3. the same namespace, RequestsPerMinute per minute (grain PT1M) with filter
   `deployment eq '*' and statusCode eq '*' and statusCodeClass eq '*' and modelStatusCode eq '*'`
   (every dimension the metric has; see "Requests" below);
4. deployments (`.../onlineEndpoints/deployments`, resource id `<endpoint id>/deployments/<name>`):
   CpuUtilizationPercentage, GpuUtilizationPercentage, DeploymentCapacity per minute with filter
   `instanceId eq '*'` (see "Instances" below).

The dimensions are those of Azure Monitor's supported-metrics tables,
https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
(RequestLatency, RequestLatency_P50/_P90/_P95/_P99: `deployment`; RequestsPerMinute, aggregation
Average only: `deployment`, `statusCode`, `statusCodeClass`, `modelStatusCode`; grain PT1M) and
https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-deployments-metrics
(CpuUtilizationPercentage, GpuUtilizationPercentage: `instanceId`; DeploymentCapacity, "the number
of instances in the deployment": `instanceId`, `State`; grain PT1M).

Why per minute. Azure Monitor's Average is Sum / Count over the values present in the grain
(Microsoft's "Azure Monitor metrics aggregation explained",
https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-aggregation-explained): a minute
without a value is not counted (NULL is not zero), and a series that collapses a dimension
averages its sub-series together. So averages over a window are not additive: with 100 requests a
minute answered 200, 10 a minute answered 201 and five 503s in a single minute of an hour, the
window averages split by status class are 2xx = (6000 + 600) / 120 = 55 and 5xx = 5 / 1 = 5, which
add up to "60 per minute, 8.3 % 5xx" where the truth is 6605 requests, 110.08 per minute and
0.076 % 5xx.

Requests. Split by every dimension of RequestsPerMinute, each series is one (deployment, status
code, status class, model status code) and has at most one value a minute: that minute's count of
its requests. The adapter adds the series up per minute, counts a minute without a value as zero,
and sums the minutes: a deployment's requests of a status class over the window. Its
`requests_by_status[class]` is that count divided by the window's minutes (requests per minute
over the window, absent minutes included, so a deployment that served for part of the window
reports its share of the window, not its rate while it served); `requests_per_minute` is their sum
and `error_rate` the 5xx share of the counts. The endpoint's figures are the sums of its
deployments', including a deployment that served in the window but is no longer in
`EndpointRef.deployments`, and excluding the deployments in `EndpointRef.mirrored`: how Azure
reports mirrored (shadow) traffic in RequestsPerMinute is not documented, so until it is shown,
shadow copies never count as live requests (the mirrored deployment's own figures are still
reported on its DeploymentMetrics). The last minute or two of the window may not be ingested yet
and count as zero: the rates read a little low, the 5xx share is unaffected.

Instances. DeploymentCapacity averaged over a deployment's instances is not an instance count, so
it is read split by `instanceId` (collapsing `State`), one series per instance; `capacity` is the
number of instances with a value above zero in the latest minute any instance reported. CPU and
GPU utilization are the mean of every (instance, minute) value present, which is Azure's own
Average over the window.

Series limit. For a query with a filter Azure Monitor returns at most `top` series per resource
(10 by default; `top` is "the maximum number of records to retrieve per resource ID", valid only
with a filter, in the metrics:getBatch reference), and the answer has no field that says more
were left out. Every filtered query passes
`max_results=MAX_SERIES`; a metric that comes back with MAX_SERIES series of a resource may have
been cut, so its figures for that resource are left None (and logged) rather than summed from a
part: the card then says there are no figures instead of showing wrong ones.

A split series names its dimension values in `metadata_values` (`{dimension name: value}`); they
are read by name, not by position, and the name is compared without case, since Azure answers
dimension names in its own casing (the REST walkthrough's `BlobType` comes back as "blobtype"), as
it does resource ids. Deployment names are matched without case to `EndpointRef.deployments` and
reported as spelled there.

A metric Azure has no data for stays None: a deployment without a series (no traffic in the
window) has no latency, no requests per minute and an empty `requests_by_status`, never zeros.
Errors are translated like the rest of the adapters (`adapters.azureml.workspace.translate_error`, with
role "Monitoring Reader").
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Protocol, Sequence

from adapters.service import DeploymentMetrics, EndpointMetrics, ServiceError, Unavailable

log = logging.getLogger(__name__)

ENDPOINT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
DEPLOYMENT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
LATENCY_METRICS = ("RequestLatency_P50", "RequestLatency_P99")
REQUESTS_METRIC = "RequestsPerMinute"
DEPLOYMENT_DIMENSION = "deployment"
STATUS_DIMENSION = "statusCodeClass"
STATUS_CODE_DIMENSION = "statusCode"
# every dimension of RequestsPerMinute: split by all of them, a series has one value a minute
REQUEST_DIMENSIONS = (DEPLOYMENT_DIMENSION, STATUS_CODE_DIMENSION, STATUS_DIMENSION, "modelStatusCode")
INSTANCE_DIMENSION = "instanceId"
BY_DEPLOYMENT = f"{DEPLOYMENT_DIMENSION} eq '*'"
BY_EVERY_REQUEST_DIMENSION = " and ".join(f"{name} eq '*'" for name in REQUEST_DIMENSIONS)
BY_INSTANCE = f"{INSTANCE_DIMENSION} eq '*'"
UNSPLIT_STATUS = "all"           # the status class of a series that names neither class nor code
CAPACITY_METRIC = "DeploymentCapacity"
DEPLOYMENT_METRICS = ("CpuUtilizationPercentage", "GpuUtilizationPercentage", CAPACITY_METRIC)
MINUTE = timedelta(minutes=1)
MAX_SERIES = 1000                # `top` of every filtered query; a metric with this many series may be cut
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
    """Which endpoint to ask about: its name, ARM resource id and deployment names, and the
    deployments that receive mirrored (shadow) traffic, which never count in the live totals."""

    name: str
    resource_id: str
    deployments: tuple[str, ...] = ()
    mirrored: tuple[str, ...] = ()


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
    """One series of a metric: its dimension values (names in lower case) and its values by time
    (only the grains that have one: Azure leaves `average` out where it has no value)."""

    dimensions: Mapping[str, str]
    values: Mapping[datetime, float]

    def dimension(self, name: str) -> str:
        """The series' value of a dimension ("" when the series is not split by it)."""
        return self.dimensions.get(name.lower(), "")

    @property
    def average(self) -> float:
        """The mean of the values present (Azure's Average over the grains this series has values in)."""
        return sum(self.values.values()) / len(self.values)


def _readings(metric: Any) -> list[Reading]:
    """The series of a metric that have data, each with its dimension values read by name."""
    readings = []
    for series in metric.timeseries or []:
        values = {p.timestamp: float(p.average) for p in series.data or [] if p.average is not None}
        if values:
            dimensions = {str(name).lower(): str(value) for name, value in (series.metadata_values or {}).items()}
            readings.append(Reading(dimensions, values))
    return readings


def _cut(metric: Any) -> bool:
    """Did Azure stop at `top` series (so that any sum over them would be a part)?"""
    return len(metric.timeseries or []) >= MAX_SERIES


def _usable(metrics: Mapping[str, Any], name: str, resource: str) -> Any | None:
    """The metric when it is there and whole; None (logged) when Azure may have cut it at MAX_SERIES."""
    metric = metrics.get(name)
    if metric is not None and _cut(metric):
        log.warning("Azure Monitor returned %d series of %s for %s, the most asked for: its figures are left "
                    "out rather than summed from a part", len(metric.timeseries), name, resource)
        return None
    return metric


def _single(metrics: Mapping[str, Any], name: str) -> float | None:
    """The value of an unsplit metric (None when Azure has no data for it)."""
    found = [r.average for r in _readings(metrics[name])] if name in metrics else []
    return sum(found) / len(found) if found else None


def _per_deployment(metric: Any | None) -> dict[str, float]:
    """A metric split by deployment: {deployment name in lower case: value}."""
    if metric is None:
        return {}
    return {r.dimension(DEPLOYMENT_DIMENSION).lower(): r.average for r in _readings(metric)}


def _status_class(reading: Reading) -> str:
    """"5xx" from statusCodeClass, else from the status code ("503"), else UNSPLIT_STATUS."""
    status = reading.dimension(STATUS_DIMENSION)
    if status:
        return status
    code = reading.dimension(STATUS_CODE_DIMENSION)
    return f"{code[0]}xx" if len(code) == 3 and code.isdigit() else UNSPLIT_STATUS


def _request_counts(metric: Any | None) -> dict[str, dict[str, float]]:
    """RequestsPerMinute per minute, split by every dimension: {deployment in lower case: {"5xx":
    requests in the window}}. Each series holds one value a minute, that minute's count; the series
    are added up per minute and the minutes summed (a minute without a value adds nothing)."""
    per_minute: dict[str, dict[str, dict[datetime, float]]] = defaultdict(lambda: defaultdict(dict))
    for reading in _readings(metric) if metric is not None else []:
        minutes = per_minute[reading.dimension(DEPLOYMENT_DIMENSION).lower()][_status_class(reading)]
        for minute, count in reading.values.items():
            minutes[minute] = minutes.get(minute, 0.0) + count
    return {deployment: {status: sum(minutes.values()) for status, minutes in by_status.items()}
            for deployment, by_status in per_minute.items()}


def _per_minute_over(counts: Mapping[str, float], window_minutes: int) -> dict[str, float]:
    """Counts over the window as requests per minute of the window."""
    return {status: count / window_minutes for status, count in counts.items()}


def _added_up(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Several deployments' counts by status class, added up."""
    total: dict[str, float] = {}
    for by_status in counts:
        for status, count in by_status.items():
            total[status] = total.get(status, 0.0) + count
    return total


def _instances(metric: Any | None) -> float | None:
    """DeploymentCapacity split by instanceId: how many instances reported a value above zero in the
    latest minute any instance reported (None without data)."""
    readings = _readings(metric) if metric is not None else []
    minutes = {minute for reading in readings for minute in reading.values}
    if not minutes:
        return None
    latest = max(minutes)
    return float(sum(1 for reading in readings if reading.values.get(latest, 0.0) > 0))


def _mean_of_values(metric: Any | None) -> float | None:
    """The mean of every (instance, minute) value present: Azure's Average over the window."""
    values = [v for reading in (_readings(metric) if metric is not None else []) for v in reading.values.values()]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class _Answers:
    """What the four batch calls answered, each {resource id (lower case): {metric name: Metric}}."""

    latency: dict[str, dict[str, Any]]
    latency_by_deployment: dict[str, dict[str, Any]]
    requests_by_minute: dict[str, dict[str, Any]]
    deployment_usage: dict[str, dict[str, Any]]

    def report(self, endpoint: EndpointRef, window_minutes: int) -> EndpointMetrics:
        key = _key(endpoint.resource_id)
        latency = self.latency.get(key, {})
        split_latency = self.latency_by_deployment.get(key, {})
        p50 = _per_deployment(_usable(split_latency, "RequestLatency_P50", endpoint.resource_id))
        p99 = _per_deployment(_usable(split_latency, "RequestLatency_P99", endpoint.resource_id))
        requests_metric = _usable(self.requests_by_minute.get(key, {}), REQUESTS_METRIC, endpoint.resource_id)
        counts = _request_counts(requests_metric)
        mirrored = {name.lower() for name in endpoint.mirrored}
        deployments = tuple(
            _deployment_report(name, self.usage_of(endpoint, name), p50.get(name.lower()), p99.get(name.lower()),
                               _per_minute_over(counts.get(name.lower(), {}), window_minutes))
            for name in endpoint.deployments)
        live = _added_up(by_status for deployment, by_status in counts.items() if deployment not in mirrored)
        by_status = _per_minute_over(live, window_minutes)
        return EndpointMetrics(
            endpoint=endpoint.name, window_minutes=window_minutes,
            latency_p50_ms=_single(latency, "RequestLatency_P50"),
            latency_p99_ms=_single(latency, "RequestLatency_P99"),
            requests_per_minute=sum(by_status.values()) if by_status else None,
            requests_by_status=by_status, deployments=deployments)

    def usage_of(self, endpoint: EndpointRef, deployment: str) -> dict[str, Any]:
        """The deployment resource's own metrics (CPU, GPU, capacity), the cut ones left out."""
        resource = f"{endpoint.resource_id}/deployments/{deployment}"
        found = self.deployment_usage.get(_key(resource), {})
        return {name: metric for name in found if (metric := _usable(found, name, resource)) is not None}


def _deployment_report(name: str, usage: Mapping[str, Any], p50: float | None, p99: float | None,
                       by_status: dict[str, float]) -> DeploymentMetrics:
    return DeploymentMetrics(
        deployment=name,
        cpu_utilization=_mean_of_values(usage.get("CpuUtilizationPercentage")),
        gpu_utilization=_mean_of_values(usage.get("GpuUtilizationPercentage")),
        capacity=_instances(usage.get(CAPACITY_METRIC)),
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
               granularity: timedelta, filter: str | None = None) -> dict[str, dict[str, Any]]:
        """{resource id (lower case): {metric name: Metric}} for one namespace. A filtered query asks
        for MAX_SERIES series per resource (Azure's default `top` is 10)."""
        from adapters.azureml.workspace import translate_error

        try:
            results = self.client.query_resources(
                resource_ids=resource_ids, metric_namespace=namespace, metric_names=list(names),
                timespan=window, granularity=granularity, aggregations=["Average"], filter=filter,
                max_results=MAX_SERIES if filter else None)
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
            latency=self._query(endpoint_ids, ENDPOINT_NAMESPACE, LATENCY_METRICS, window, window),
            latency_by_deployment=self._query(endpoint_ids, ENDPOINT_NAMESPACE, LATENCY_METRICS, window, window,
                                              filter=BY_DEPLOYMENT),
            requests_by_minute=self._query(endpoint_ids, ENDPOINT_NAMESPACE, [REQUESTS_METRIC], window, MINUTE,
                                           filter=BY_EVERY_REQUEST_DIMENSION),
            deployment_usage=(self._query(deployment_ids, DEPLOYMENT_NAMESPACE, DEPLOYMENT_METRICS, window, MINUTE,
                                          filter=BY_INSTANCE)
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
