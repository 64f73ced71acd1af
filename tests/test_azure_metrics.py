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
SWAP = arm_id("onlineEndpoints", "swap-api")

# resource id -> metric -> [(dimensions or None, average)]. Azure spells deployment names its own way
# ("GREEN" for green); one series lists its dimensions in the other order (read by name, not position).
READINGS = {
    FRAUD: {"RequestLatency_P50": [(None, 42.0), ({"deployment": "blue"}, 40.0), ({"deployment": "GREEN"}, 55.0)],
            "RequestLatency_P99": [(None, 310.0), ({"deployment": "blue"}, 180.0), ({"deployment": "GREEN"}, 900.0)],
            "RequestsPerMinute": [({"deployment": "blue", "statusCodeClass": "2xx"}, 80.0),
                                  ({"deployment": "blue", "statusCodeClass": "4xx"}, 3.0),
                                  ({"deployment": "blue", "statusCodeClass": "5xx"}, 1.0),
                                  ({"deployment": "GREEN", "statusCodeClass": "2xx"}, 15.0),
                                  ({"statusCodeClass": "5xx", "deployment": "GREEN"}, 1.0)]},
    CHURN: {"RequestLatency_P50": [(None, 12.5), ({"deployment": "main"}, 12.5)],
            "RequestLatency_P99": [(None, 40.0), ({"deployment": "main"}, 40.0)],
            "RequestsPerMinute": [({"deployment": "main", "statusCodeClass": "2xx"}, 20.0)]},
    # "old" took traffic earlier in the window and is gone now: it counts in the endpoint's figures only
    SWAP: {"RequestLatency_P99": [(None, 120.0), ({"deployment": "new"}, 100.0), ({"deployment": "old"}, 150.0)],
           "RequestsPerMinute": [({"deployment": "new", "statusCodeClass": "2xx"}, 30.0),
                                 ({"deployment": "old", "statusCodeClass": "2xx"}, 9.0),
                                 ({"deployment": "old", "statusCodeClass": "5xx"}, 1.0)]},
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


def test_many_endpoints_in_four_batch_calls(metrics, transport):
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
    assert len(calls) == 4
    assert {c.query["metricnamespace"][0] for c in calls} == {ENDPOINT_NAMESPACE, DEPLOYMENT_NAMESPACE}
    latency, latency_by_deployment, requests, deployments = calls
    assert latency.query["metricnames"] == latency_by_deployment.query["metricnames"] == [
        "RequestLatency_P50,RequestLatency_P99"]
    assert "filter" not in latency.query                   # percentiles of the whole endpoint: unsplit
    assert latency_by_deployment.query["filter"] == ["deployment eq '*'"]
    assert latency.body == latency_by_deployment.body == requests.body == {"resourceids": [FRAUD, CHURN]}
    assert requests.query["metricnames"] == ["RequestsPerMinute"]
    assert requests.query["filter"] == ["deployment eq '*' and statusCodeClass eq '*'"]
    assert deployments.query["metricnames"] == ["CpuUtilizationPercentage,GpuUtilizationPercentage,DeploymentCapacity"]
    assert deployments.body["resourceids"] == [f"{FRAUD}/deployments/blue", f"{FRAUD}/deployments/green",
                                               f"{CHURN}/deployments/main"]
    assert latency.api_version == "2024-02-01" and latency.query["interval"] == ["PT1H"]


def test_each_deployment_has_its_own_latency_and_error_rate(metrics):
    fraud = metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD, ("blue", "green"))], 60)["fraud-api"]
    blue, green = fraud.deployments
    assert (blue.latency_p50_ms, blue.latency_p99_ms, green.latency_p50_ms, green.latency_p99_ms) == (
        40.0, 180.0, 55.0, 900.0)
    assert blue.requests_by_status == {"2xx": 80.0, "4xx": 3.0, "5xx": 1.0} and blue.requests_per_minute == 84.0
    assert green.requests_by_status == {"2xx": 15.0, "5xx": 1.0} and green.requests_per_minute == 16.0
    assert (blue.error_rate, green.error_rate) == (pytest.approx(1 / 84), pytest.approx(1 / 16))
    # the endpoint's requests are its deployments' added up; its percentiles are Azure's own
    assert fraud.requests_by_status == {"2xx": 95.0, "4xx": 3.0, "5xx": 2.0}
    assert fraud.latency_p99_ms == 310.0


def test_a_deployment_without_series_stays_empty_not_zero(metrics):
    fraud = metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD, ("blue", "green", "idle"))], 60)["fraud-api"]
    idle = fraud.deployments[2]
    assert (idle.deployment, idle.latency_p50_ms, idle.latency_p99_ms, idle.requests_per_minute, idle.error_rate,
            idle.requests_by_status, idle.cpu_utilization) == ("idle", None, None, None, None, {}, None)
    assert fraud.requests_per_minute == 100.0


def test_a_deployment_gone_since_still_counts_in_the_endpoint_figures(metrics):
    swap = metrics.endpoint_metrics([EndpointRef("swap-api", SWAP, ("new",))], 60)["swap-api"]
    assert swap.requests_by_status == {"2xx": 39.0, "5xx": 1.0} and swap.error_rate == pytest.approx(0.025)
    assert [(d.deployment, d.latency_p99_ms, d.requests_per_minute, d.error_rate) for d in swap.deployments] == [
        ("new", 100.0, 30.0, 0.0)]
    assert swap.latency_p99_ms == 120.0


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
