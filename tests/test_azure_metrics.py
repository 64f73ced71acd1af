"""AzureMonitorMetrics over a real MetricsClient whose HTTP goes to the replay transport.

Answers are built from the published batch example (monitor/metrics_dataplane/MetricBatchExample2.json):
its Redis resource ids and metric are replaced at load time with online endpoint / deployment ids and
the Azure ML metric names (see tests/fixtures/azure/SOURCES.md). The replay computes each answer as
Azure Monitor does (tests.replay.monitor_answer): the series are stored with every dimension Azure's
supported-metrics tables give them (onlineEndpoints: RequestsPerMinute by deployment, statusCode,
statusCodeClass, modelStatusCode; onlineEndpoints/deployments: DeploymentCapacity by instanceId and
State, CPU and GPU by instanceId,
https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
and .../microsoft-machinelearningservices-workspaces-onlineendpoints-deployments-metrics), one value a
minute, and a grain's Average is the sum of the values present over their count, collapsed series
averaged together ("Azure Monitor metrics aggregation explained",
https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-aggregation-explained).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import adapters.azureml.metrics as azure_metrics
from adapters.azureml.metrics import (DEPLOYMENT_NAMESPACE, ENDPOINT_NAMESPACE, MAX_SERIES, AzureMonitorMetrics,
                                    EndpointRef)
from adapters.azureml.workspace import AzureMLService
from adapters.service import InvalidRequest, PermissionDenied
from tests.replay import (FakeWorkspace, ReplayResponse, ReplayTransport, arm_id, load, metrics_client, ml_client,
                          monitor_answer, online_deployment, online_endpoint, request_series)

FRAUD = arm_id("onlineEndpoints", "fraud-api")
CHURN = arm_id("onlineEndpoints", "churn-api")
SWAP = arm_id("onlineEndpoints", "swap-api")
SHIFT = arm_id("onlineEndpoints", "shift-api")      # the example: 200s, 201s and one minute of 503s
CANARY = arm_id("onlineEndpoints", "canary-api")    # green took traffic for the second half hour only
SHADOW = arm_id("onlineEndpoints", "shadow-api")    # "mirror" receives a copy of the live requests
WIDE = arm_id("onlineEndpoints", "wide-api")        # twelve deployments: more series than Azure's default top


def minutes(*served: tuple[int, int, float]) -> list[float | None]:
    """Sixty minutes of values: `value` in each minute from `first` up to (not including) `last`."""
    values: list[float | None] = [None] * 60
    for first, last, value in served:
        values[first:last] = [value] * (last - first)
    return values


def instance(name: str, values, state: str = "Running") -> tuple[dict, object]:
    """A DeploymentCapacity series as Azure stores it: one instance in one State, 1 a minute while it is."""
    return {"instanceId": name, "State": state}, values


# resource id -> metric -> [(dimensions or None, values)]. Azure spells deployment names its own way
# ("GREEN" for green); one series lists its dimensions in the other order (read by name, not position).
READINGS = {
    FRAUD: {"RequestLatency_P50": [(None, 42.0), ({"deployment": "blue"}, 40.0), ({"deployment": "GREEN"}, 55.0)],
            "RequestLatency_P99": [(None, 310.0), ({"deployment": "blue"}, 180.0), ({"deployment": "GREEN"}, 900.0)],
            "RequestsPerMinute": [request_series("blue", 200, 80.0), request_series("blue", 404, 3.0),
                                  request_series("blue", 503, 1.0), request_series("GREEN", 200, 15.0),
                                  ({"modelStatusCode": "500", "statusCodeClass": "5xx", "statusCode": "500",
                                    "deployment": "GREEN"}, 1.0)]},
    CHURN: {"RequestLatency_P50": [(None, 12.5), ({"deployment": "main"}, 12.5)],
            "RequestLatency_P99": [(None, 40.0), ({"deployment": "main"}, 40.0)],
            "RequestsPerMinute": [request_series("main", 200, 20.0)]},
    # "old" took traffic earlier in the window and is gone now: it counts in the endpoint's figures only
    SWAP: {"RequestLatency_P99": [(None, 120.0), ({"deployment": "new"}, 100.0), ({"deployment": "old"}, 150.0)],
           "RequestsPerMinute": [request_series("new", 200, 30.0), request_series("old", 200, 9.0),
                                 request_series("old", 502, 1.0)]},
    SHIFT: {"RequestsPerMinute": [request_series("blue", 200, 100.0), request_series("blue", 201, 10.0),
                                  request_series("blue", 503, minutes((17, 18, 5.0)))]},
    CANARY: {"RequestsPerMinute": [request_series("blue", 200, 100.0),
                                   request_series("green", 200, minutes((30, 60, 19.0))),
                                   request_series("green", 500, minutes((30, 60, 1.0)))]},
    SHADOW: {"RequestsPerMinute": [request_series("live", 200, 99.0), request_series("live", 503, 1.0),
                                   request_series("mirror", 500, 50.0)]},
    WIDE: {"RequestsPerMinute": [request_series(f"d{i:02d}", 200, 10.0) for i in range(12)]
           + [request_series("d11", 503, 10.0)]},
    f"{FRAUD}/deployments/blue": {
        "CpuUtilizationPercentage": [({"instanceId": "i-0"}, 70.0), ({"instanceId": "i-1"}, 72.0),
                                     ({"instanceId": "i-2"}, 71.0)],
        # three instances all hour; a fourth was scaled in at minute 40; i-2 was Provisioning first
        "DeploymentCapacity": [instance("i-0", 1.0), instance("i-1", 1.0),
                               instance("i-2", minutes((0, 10, 1.0)), "Provisioning"),
                               instance("i-2", minutes((10, 60, 1.0))),
                               instance("i-3", minutes((0, 40, 1.0)))]},
    f"{FRAUD}/deployments/green": {"CpuUtilizationPercentage": [({"instanceId": "i-0"}, 22.0)],
                                   "DeploymentCapacity": [instance("i-0", 1.0)]},
    f"{CHURN}/deployments/main": {"CpuUtilizationPercentage": [({"instanceId": "i-0"}, 10.0)],
                                  "GpuUtilizationPercentage": [({"instanceId": "i-0"}, 50.0),
                                                               ({"instanceId": "i-1"}, 60.0)],
                                  "DeploymentCapacity": [instance("i-0", 1.0), instance("i-1", 1.0)]},
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
    # issue 16: per minute, split by every dimension of RequestsPerMinute (a window average per status
    # class adds up collapsed and partly empty series), and per instance for DeploymentCapacity
    assert requests.query["filter"] == [
        "deployment eq '*' and statusCode eq '*' and statusCodeClass eq '*' and modelStatusCode eq '*'"]
    assert requests.query["interval"] == ["PT1M"] and requests.query["aggregation"] == ["Average"]
    assert deployments.query["metricnames"] == ["CpuUtilizationPercentage,GpuUtilizationPercentage,DeploymentCapacity"]
    assert deployments.query["filter"] == ["instanceId eq '*'"] and deployments.query["interval"] == ["PT1M"]
    assert deployments.body["resourceids"] == [f"{FRAUD}/deployments/blue", f"{FRAUD}/deployments/green",
                                               f"{CHURN}/deployments/main"]
    assert latency.api_version == "2024-02-01" and latency.query["interval"] == ["PT1H"]
    # every split query asks for enough series (Azure's default top is 10); top means nothing unsplit
    assert [c.query.get("top") for c in calls] == [None] + [[str(MAX_SERIES)]] * 3


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


# ---------------------------------------------------------------- issue 16: rates from counts


def test_rates_come_from_per_minute_counts_not_from_summed_averages(metrics):
    # an hour of 100 requests a minute answered 200 and 10 answered 201, and five 503s in one minute:
    # 6605 requests, 110.08 a minute, 5 of them 5xx
    shift = metrics.endpoint_metrics([EndpointRef("shift-api", SHIFT, ("blue",))], 60)["shift-api"]
    assert shift.requests_per_minute == pytest.approx(6605 / 60) == pytest.approx(110.08, abs=0.01)
    assert shift.error_rate == pytest.approx(5 / 6605)
    assert shift.error_rate * 100 == pytest.approx(0.0757, abs=0.0001)
    assert shift.requests_by_status == {"2xx": pytest.approx(110.0), "5xx": pytest.approx(5 / 60)}
    assert shift.deployments[0].requests_per_minute == pytest.approx(shift.requests_per_minute)


def test_the_replay_averages_a_window_as_azure_does(transport):
    # the query the adapter used to send (one grain for the hour, split by deployment and status
    # class): Azure answers Sum / Count of the values present, so 2xx collapses 200 and 201 into
    # (6000 + 600) / 120 = 55 and 5xx is 5 / 1 = 5; added up that was "60 a minute, 8.3 % 5xx"
    client = metrics_client(transport)
    [result] = client.query_resources(
        resource_ids=[SHIFT], metric_namespace=ENDPOINT_NAMESPACE, metric_names=["RequestsPerMinute"],
        timespan=timedelta(minutes=60), granularity=timedelta(minutes=60), aggregations=["Average"],
        filter="deployment eq '*' and statusCodeClass eq '*'")
    [metric] = result.metrics
    averages = {s.metadata_values["statuscodeclass"]: s.data[0].average for s in metric.timeseries}
    assert averages == {"2xx": 55.0, "5xx": 5.0}
    assert averages["5xx"] / sum(averages.values()) == pytest.approx(0.0833, abs=0.0001)


def test_a_deployment_that_served_part_of_the_window_counts_its_share_of_the_window(metrics):
    # green served 20 requests a minute (1 of them a 500) for the second half hour only
    canary = metrics.endpoint_metrics([EndpointRef("canary-api", CANARY, ("blue", "green"))], 60)["canary-api"]
    blue, green = canary.deployments
    assert green.requests_per_minute == pytest.approx(600 / 60)          # not 20: minutes without requests count
    assert green.error_rate == pytest.approx(30 / 600)
    assert blue.requests_per_minute == pytest.approx(100.0) and blue.error_rate == 0.0
    assert canary.requests_per_minute == pytest.approx(6600 / 60)
    assert canary.error_rate == pytest.approx(30 / 6600)


def test_mirrored_deployments_stay_out_of_the_live_totals(metrics):
    shadow = metrics.endpoint_metrics([EndpointRef("shadow-api", SHADOW, ("live", "mirror"), mirrored=("MIRROR",))],
                                      60)["shadow-api"]
    assert shadow.requests_per_minute == pytest.approx(100.0)
    assert shadow.error_rate == pytest.approx(0.01)                      # not (1 + 50) / 150
    live, mirror = shadow.deployments
    assert (live.requests_per_minute, mirror.requests_per_minute) == (pytest.approx(100.0), pytest.approx(50.0))
    assert mirror.error_rate == 1.0                                      # its own figures are still shown


def test_the_service_names_the_endpoints_mirrored_deployments(metrics):
    workspace = FakeWorkspace()
    workspace.add(online_endpoint("shadow-api", {"live": 100}, mirror={"mirror": 20, "idle": 0}))
    workspace.add(online_deployment("shadow-api", "live", "fraud-model:2"))
    workspace.add(online_deployment("shadow-api", "mirror", "fraud-model:3"))
    svc = AzureMLService(ml_client(workspace.transport), metrics=metrics)
    health = svc.endpoint_metrics("shadow-api")
    assert health.error_rate == pytest.approx(0.01) and health.requests_per_minute == pytest.approx(100.0)
    [listed] = [e for e in svc.list_endpoints() if e.name == "shadow-api"]
    batched = svc.endpoints_metrics([listed])["shadow-api"]
    assert batched.error_rate == pytest.approx(0.01) and batched.requests_per_minute == pytest.approx(100.0)


def test_capacity_counts_the_instances_that_reported_in_the_latest_minute(metrics):
    fraud = metrics.endpoint_metrics([EndpointRef("fraud-api", FRAUD, ("blue", "green"))], 60)["fraud-api"]
    blue = fraud.deployments[0]
    # i-0, i-1 and i-2 (Provisioning, then Running: one instance, two State series) are there in the
    # last minute; i-3 was scaled in at minute 40. Averaged over instances this metric is 1.0.
    assert blue.capacity == 3.0
    assert blue.cpu_utilization == pytest.approx(71.0)


def test_more_series_than_azures_default_top_are_all_counted(metrics, transport):
    wide = metrics.endpoint_metrics([EndpointRef("wide-api", WIDE, tuple(f"d{i:02d}" for i in range(12)))],
                                    60)["wide-api"]
    assert wide.requests_per_minute == pytest.approx(130.0)              # 13 series, 10 a minute each
    assert wide.error_rate == pytest.approx(10 / 130)
    assert wide.deployments[11].requests_per_minute == pytest.approx(20.0)


def test_a_metric_cut_at_the_series_limit_is_left_out_not_summed_from_a_part(metrics, transport, monkeypatch):
    monkeypatch.setattr(azure_metrics, "MAX_SERIES", 12)
    report = metrics.endpoint_metrics([EndpointRef("wide-api", WIDE, ("d00",)),
                                       EndpointRef("churn-api", CHURN, ("main",))], 60)
    requests = transport.sent("POST")[2]
    assert requests.query["top"] == ["12"]
    wide = report["wide-api"]
    assert (wide.requests_per_minute, wide.error_rate, wide.requests_by_status) == (None, None, {})
    assert wide.deployments[0].requests_per_minute is None
    assert report["churn-api"].requests_per_minute == pytest.approx(20.0)   # the other endpoint is whole

