"""Online endpoint health from Azure Monitor (`azure.monitor.querymetrics.MetricsClient`).

    metrics = AzureMonitorMetrics(MetricsClient("https://westeurope.metrics.monitor.azure.com", cred))
    health = metrics.endpoint_metrics([EndpointRef("fraud-api", endpoint_arm_id, ("blue", "green"))], 60)
    health["fraud-api"].latency_p99_ms, health["fraud-api"].error_rate

One `query_resources` call covers many resources (the batch metrics API), but only one metric
namespace and one filter per call, so a query is at most three calls whatever the number of
endpoints:

1. endpoints (`Microsoft.MachineLearningServices/workspaces/onlineEndpoints`):
   RequestLatency_P50, RequestLatency_P99 (milliseconds, averaged over the window);
2. the same namespace, RequestsPerMinute split by the `statusCodeClass` dimension ("2xx", "4xx",
   "5xx", averaged over the window, so the values are requests per minute);
3. deployments (`.../onlineEndpoints/deployments`, resource id `<endpoint id>/deployments/<name>`):
   CpuUtilizationPercentage, GpuUtilizationPercentage, DeploymentCapacity (averages).

The window is a single time grain (granularity = window), so each series has one data point. A
metric Azure has no data for stays None. Errors are translated like the rest of the adapters
(`adapters.azureml.translate_error`, with role "Monitoring Reader").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Protocol, Sequence

from adapters.service import DeploymentMetrics, EndpointMetrics, ServiceError, Unavailable

ENDPOINT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
DEPLOYMENT_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
LATENCY_METRICS = ("RequestLatency_P50", "RequestLatency_P99")
REQUESTS_METRIC = "RequestsPerMinute"
STATUS_DIMENSION = "statusCodeClass"
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


def _value(metric: Any) -> dict[str, float | None]:
    """Per-series average of a metric, keyed by the series' dimension values ("" when not split)."""
    values: dict[str, float | None] = {}
    for series in metric.timeseries or []:
        label = "/".join(str(v) for v in (series.metadata_values or {}).values())
        points = [p.average for p in series.data or [] if p.average is not None]
        values[label] = sum(points) / len(points) if points else None
    return values


def _single(metric: Any) -> float | None:
    found = [v for v in _value(metric).values() if v is not None]
    return sum(found) / len(found) if found else None


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
        latency = self._query(endpoint_ids, ENDPOINT_NAMESPACE, LATENCY_METRICS, window)
        requests = self._query(endpoint_ids, ENDPOINT_NAMESPACE, [REQUESTS_METRIC], window,
                               filter=f"{STATUS_DIMENSION} eq '*'")
        deployment_ids = [f"{e.resource_id}/deployments/{d}" for e in endpoints for d in e.deployments]
        deployments = (self._query(deployment_ids, DEPLOYMENT_NAMESPACE, DEPLOYMENT_METRICS, window)
                       if deployment_ids else {})

        report = {}
        for endpoint in endpoints:
            key = _key(endpoint.resource_id)
            lat = latency.get(key, {})
            by_status = {}
            if REQUESTS_METRIC in requests.get(key, {}):
                by_status = {label or "all": value for label, value in _value(requests[key][REQUESTS_METRIC]).items()
                             if value is not None}
            per_deployment = []
            for name in endpoint.deployments:
                found = deployments.get(_key(f"{endpoint.resource_id}/deployments/{name}"), {})
                per_deployment.append(DeploymentMetrics(
                    deployment=name,
                    cpu_utilization=_single(found["CpuUtilizationPercentage"]) if "CpuUtilizationPercentage" in found else None,
                    gpu_utilization=_single(found["GpuUtilizationPercentage"]) if "GpuUtilizationPercentage" in found else None,
                    capacity=_single(found["DeploymentCapacity"]) if "DeploymentCapacity" in found else None))
            report[endpoint.name] = EndpointMetrics(
                endpoint=endpoint.name, window_minutes=window_minutes,
                latency_p50_ms=_single(lat["RequestLatency_P50"]) if "RequestLatency_P50" in lat else None,
                latency_p99_ms=_single(lat["RequestLatency_P99"]) if "RequestLatency_P99" in lat else None,
                requests_per_minute=sum(by_status.values()) if by_status else None,
                requests_by_status=by_status, deployments=tuple(per_deployment))
        return report


def _resource_of(result: Any, metrics: dict[str, Any]) -> str:
    """The resource a batch result belongs to: from the metric ids ('<resource>/providers/Microsoft.Insights/metrics/<name>')."""
    for metric in metrics.values():
        metric_id = metric.id or ""
        marker = metric_id.lower().find("/providers/microsoft.insights/metrics/")
        if marker > 0:
            return _key(metric_id[:marker])
    return _key(getattr(result, "resource_id", None))
