"""AzureMonitorMetrics over a real MetricsClient whose HTTP goes to the replay transport.

Answers are built from the published batch example (monitor/metrics_dataplane/MetricBatchExample2.json):
its Redis resource ids and metric are replaced at load time with online endpoint / deployment ids and
the Azure ML metric names (see tests/fixtures/azure/SOURCES.md).
"""

from __future__ import annotations

import pytest

from adapters.azure_metrics import DEPLOYMENT_NAMESPACE, ENDPOINT_NAMESPACE, AzureMonitorMetrics, EndpointRef
from adapters.azureml import AzureMLService
from adapters.service import InvalidRequest, PermissionDenied
from tests.replay import (FakeWorkspace, ReplayResponse, ReplayTransport, arm_id, load, metrics_client, ml_client,
                          monitor_answer)

FRAUD = arm_id("onlineEndpoints", "fraud-api")
CHURN = arm_id("onlineEndpoints", "churn-api")

# resource id -> metric -> [(dimension value or None, average)]
READINGS = {
    FRAUD: {"RequestLatency_P50": [(None, 42.0)], "RequestLatency_P99": [(None, 310.0)],
            "RequestsPerMinute": [("2xx", 95.0), ("4xx", 3.0), ("5xx", 2.0)]},
    CHURN: {"RequestLatency_P50": [(None, 12.5)], "RequestLatency_P99": [(None, 40.0)],
            "RequestsPerMinute": [("2xx", 20.0)]},
    f"{FRAUD}/deployments/blue": {"CpuUtilizationPercentage": [(None, 71.0)], "DeploymentCapacity": [(None, 3.0)]},
    f"{FRAUD}/deployments/green": {"CpuUtilizationPercentage": [(None, 22.0)], "DeploymentCapacity": [(None, 1.0)]},
    f"{CHURN}/deployments/main": {"CpuUtilizationPercentage": [(None, 10.0)], "GpuUtilizationPercentage": [(None, 55.0)],
                                  "DeploymentCapacity": [(None, 2.0)]},
}


def answer(request, match) -> ReplayResponse:
    return monitor_answer(request, match, READINGS)


@pytest.fixture
def transport() -> ReplayTransport:
    t = ReplayTransport()
    t.add("POST", r"/metrics:getBatch$", handler=answer)
    return t


@pytest.fixture
def metrics(transport) -> AzureMonitorMetrics:
    return AzureMonitorMetrics(metrics_client(transport), identity="mi-mlops-bot")


def test_many_endpoints_in_three_batch_calls(metrics, transport):
    report = metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD, ("blue", "green")),
                                       EndpointRef("churn-api", CHURN, ("main",))], window_minutes=60)
    fraud, churn = report["fraud-api"], report["churn-api"]
    assert (fraud.latency_p50_ms, fraud.latency_p99_ms) == (42.0, 310.0)
    assert fraud.requests_by_status == {"2xx": 95.0, "4xx": 3.0, "5xx": 2.0}
    assert fraud.requests_per_minute == 100.0 and fraud.error_rate == pytest.approx(0.02)
    assert [(d.deployment, d.cpu_utilization, d.gpu_utilization, d.capacity) for d in fraud.deployments] == [
        ("blue", 71.0, None, 3.0), ("green", 22.0, None, 1.0)]
    assert churn.deployments[0].gpu_utilization == 55.0 and churn.error_rate == 0.0

    calls = transport.sent("POST")
    assert len(calls) == 3
    assert {c.query["metricnamespace"][0] for c in calls} == {ENDPOINT_NAMESPACE, DEPLOYMENT_NAMESPACE}
    latency, requests, deployments = calls
    assert latency.query["metricnames"] == ["RequestLatency_P50,RequestLatency_P99"]
    assert latency.body == {"resourceids": [FRAUD, CHURN]}
    assert requests.query["metricnames"] == ["RequestsPerMinute"]
    assert requests.query["filter"] == ["statusCodeClass eq '*'"]
    assert deployments.query["metricnames"] == ["CpuUtilizationPercentage,GpuUtilizationPercentage,DeploymentCapacity"]
    assert deployments.body["resourceids"] == [f"{FRAUD}/deployments/blue", f"{FRAUD}/deployments/green",
                                               f"{CHURN}/deployments/main"]
    assert latency.api_version == "2024-02-01" and latency.query["interval"] == ["PT1H"]


def test_no_traffic_leaves_values_empty(metrics):
    report = metrics.endpoint_metrics([EndpointRef("quiet-api", arm_id("onlineEndpoints", "quiet-api"))], 15)
    quiet = report["quiet-api"]
    assert (quiet.latency_p99_ms, quiet.requests_per_minute, quiet.error_rate, quiet.window_minutes) == (
        None, None, None, 15)


def test_published_error_answer_is_invalid_request(metrics, transport):
    error = load_error()
    transport.add("POST", r"/metrics:getBatch$", status=400, json=error, first=True,
                  headers={"x-ms-error-code": "BadRequest"})
    with pytest.raises(InvalidRequest) as info:
        metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD)])
    assert info.value.code == "BadRequest" and "invalid time range" in info.value.message


def test_forbidden_names_monitoring_reader(metrics, transport):
    transport.fail("POST", r"/metrics:getBatch$", 403, "AuthorizationFailed", "No access to metrics.")
    with pytest.raises(PermissionDenied) as info:
        metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD)])
    assert (info.value.role, info.value.identity) == ("Monitoring Reader", "mi-mlops-bot")


def test_service_delegates_endpoint_metrics(metrics):
    workspace = FakeWorkspace()
    svc = AzureMLService(ml_client(workspace.transport), metrics=metrics)
    health = svc.endpoint_metrics("fraud-api", window_minutes=60)
    assert health.endpoint == "fraud-api" and health.latency_p99_ms == 310.0
    assert [d.deployment for d in health.deployments] == ["blue", "green"]


def load_error() -> dict:
    return load("monitor/metrics_dataplane/MetricBatchExample2.json")["responses"]["default"]["body"]
