"""Batched endpoint figures on Azure: a real MLClient and a real MetricsClient over the replay transport."""

from __future__ import annotations

import functools

from adapters.azureml.workspace import METRICS_BATCH, build_azure_service
from adapters.service import Deployment, OnlineEndpoint
from tests.replay import (RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WORKSPACE_ID, FakeCredential, FakeWorkspace,
                          monitor_answer, request_series)


def test_many_endpoints_are_read_in_batches_of_resource_ids():
    workspace = FakeWorkspace()
    endpoints = [OnlineEndpoint(f"ep-{i:03d}", "Succeeded", traffic={"blue": 100},
                                deployments=(Deployment("blue", f"ep-{i:03d}"),)) for i in range(120)]
    requests = [request_series("blue", 200, 99.0), request_series("blue", 503, 1.0)]
    readings = {f"{WORKSPACE_ID}/onlineEndpoints/ep-{i:03d}": {"RequestLatency_P99": [(None, 100.0 + i)],
                                                               "RequestsPerMinute": requests}
                for i in range(120)}
    workspace.transport.add("POST", r"/metrics:getBatch$", handler=functools.partial(monitor_answer, readings=readings))
    svc = build_azure_service(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, environment="prod", retry_total=0,
                              credential=FakeCredential(), client_options={"transport": workspace.transport},
                              metrics_endpoint="https://westeurope.metrics.monitor.azure.com")
    found = svc.endpoints_metrics(endpoints, 60)
    calls = workspace.transport.sent("POST", r"/metrics:getBatch$")
    # four metric groups (latency, latency by deployment, requests by deployment and status, deployments)
    # per batch of at most 50 endpoints
    assert METRICS_BATCH == 50
    assert len(calls) == 4 * 3
    assert sorted(len(c.body["resourceids"]) for c in calls) == [20] * 4 + [50] * 8
    assert workspace.transport.sent("GET") == []          # the ARM ids come from the workspace's scope
    assert sorted(found) == [e.name for e in endpoints]
    assert found["ep-007"].latency_p99_ms == 107.0
    assert found["ep-007"].error_rate == 0.01
    assert [d.deployment for d in found["ep-007"].deployments] == ["blue"]
