"""Issue 16 item 8 on AzureMLService over replay: job lists in whatever order Azure answers them, the
feature store's client cache, and no SDK warning per monitor listing.

Azure's Jobs_List documents no order and takes no `$orderby`/`$top` (the parameters azure-ai-ml 1.35
sends: `$skip`, jobType, tag, listViewType, properties, scheduled, scheduleId; see newest_first in
adapters/azureml/workspace.py), so these tests answer the same runs newest first and oldest first, in ARM pages
linked by nextLink/$skipToken.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.azureml.workspace import AzureMLService
from adapters.local.demo_feature_store import build_feature_stores
from tests.replay import FakeWorkspace, RecordedRequest, ReplayResponse, command_job, ml_client, pipeline_job
from tests.replay_feature_store import iso, serve_feature_stores, store_id

STORE = "contoso-features"
MONITOR = "fraud-model-monitor"
NEWEST_RUN = "fraud-model-monitor-202603100300"
PAGE = 50


def paged(workspace: FakeWorkspace, items: list[dict[str, Any]], request: RecordedRequest) -> ReplayResponse:
    """`items` in ARM pages of PAGE, linked by nextLink with $skipToken (FakeWorkspace._page)."""
    workspace.page_size = PAGE
    try:
        return ReplayResponse(json=workspace._page(request, items))
    finally:
        workspace.page_size = None


# ---------------------------------------------------------------- monitor runs


def monitor_with_old_runs(oldest_first: bool) -> tuple[FakeWorkspace, AzureMLService]:
    """The replayed monitor's three runs plus 150 older daily runs, listed in the order asked."""
    workspace = FakeWorkspace()
    workspace.seed_monitor(breached=True)
    start = datetime(2025, 10, 1, 3, 0, tzinfo=timezone.utc)
    for day in range(150):
        moment = start + timedelta(days=day)
        name = f"fraud-model-monitor-{moment:%Y%m%d%H%M}"
        body = pipeline_job(name, "Completed", created_at=f"{moment:%Y-%m-%dT%H:%M:%SZ}")
        body["properties"].update(displayName=MONITOR, experimentName=MONITOR)
        workspace.add(body)
        workspace.schedule_jobs[MONITOR].append(name)

    def runs(request: RecordedRequest, match: Any) -> ReplayResponse:
        items = [workspace.get("jobs", name) for name in workspace.schedule_jobs[MONITOR]]
        items.sort(key=lambda j: j["systemData"]["createdAt"], reverse=not oldest_first)
        return paged(workspace, items, request)

    workspace.transport.add("GET", r"/workspaces/ws-prod/jobs$", handler=runs, first=True)
    svc = AzureMLService(ml_client(workspace.transport))
    svc.clock = lambda: datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    return workspace, svc


def test_the_latest_monitor_run_is_the_newest_even_when_azure_lists_the_oldest_first():
    workspace, svc = monitor_with_old_runs(oldest_first=True)
    [monitor] = svc.list_monitors()
    assert (monitor.last_run.name, monitor.last_run.breached) == (NEWEST_RUN, True)
    assert len(workspace.transport.sent("GET", r"/workspaces/ws-prod/jobs$")) == 4     # 153 runs: every page
    report = svc.drift_report("fraud-api", 7)
    assert [r.name for r in report.runs] == ["fraud-model-monitor-202603080300", "fraud-model-monitor-202603090300",
                                             NEWEST_RUN]


def test_runs_listed_newest_first_are_read_only_until_a_page_brings_nothing_newer():
    workspace, svc = monitor_with_old_runs(oldest_first=False)
    [monitor] = svc.list_monitors()
    assert monitor.last_run.name == NEWEST_RUN
    assert len(workspace.transport.sent("GET", r"/workspaces/ws-prod/jobs$")) == 2     # not all 4 pages


# ---------------------------------------------------------------- materialization jobs


def store_with_materializations(oldest_first: bool) -> tuple[FakeWorkspace, AzureMLService, str]:
    """transactions:2 with 120 more (older) recurrent materialization jobs, listed in the order asked."""
    workspace = FakeWorkspace()
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    serve_feature_stores(workspace, build_feature_stores(now))
    jobs = []
    for hours in range(120):
        end = now - timedelta(days=30, hours=3 * hours)
        body = command_job(f"mat_txn2_old_{hours:03d}", "Completed", experiment="transactions-materialization",
                           created_at=iso(end + timedelta(minutes=4)))
        body["id"] = store_id(STORE, "jobs", body["name"])
        body["properties"]["properties"] = {
            "azureml.FeatureStoreJobType": "RecurrentMaterialization", "azureml.FeatureSetName": "transactions",
            "azureml.FeatureSetVersion": "2", "azureml.FeatureWindowStart": iso(end - timedelta(hours=3)),
            "azureml.FeatureWindowEnd": iso(end)}
        jobs.append(body)
    newest = command_job("mat_txn2_recur_7w1c", "Completed", experiment="transactions-materialization",
                         created_at=iso(now - timedelta(hours=2)))
    newest["id"] = store_id(STORE, "jobs", newest["name"])
    newest["properties"]["properties"] = {
        "azureml.FeatureStoreJobType": "RecurrentMaterialization", "azureml.FeatureSetName": "transactions",
        "azureml.FeatureSetVersion": "2", "azureml.FeatureWindowStart": iso(now - timedelta(hours=5)),
        "azureml.FeatureWindowEnd": iso(now - timedelta(hours=2))}
    jobs.append(newest)

    def answer(request: RecordedRequest, match: Any) -> ReplayResponse:
        items = sorted(jobs, key=lambda j: j["systemData"]["createdAt"], reverse=not oldest_first)
        return paged(workspace, items, request)

    workspace.transport.add("GET", rf"^{re.escape(store_id(STORE))}/jobs$", handler=answer, first=True)
    return workspace, AzureMLService(ml_client(workspace.transport)), newest["name"]


def test_the_last_materialization_is_found_from_the_first_pages_when_azure_lists_newest_first():
    workspace, svc, newest = store_with_materializations(oldest_first=False)
    found = svc.get_feature_set(STORE, "transactions", "2")
    assert found.last_materialization.job == newest
    assert len(workspace.transport.sent("GET", r"/contoso-features/jobs$")) == 2       # of 3 pages


def test_the_last_materialization_is_the_newest_whatever_the_order():
    workspace, svc, newest = store_with_materializations(oldest_first=True)
    assert svc.get_feature_set(STORE, "transactions", "2").last_materialization.job == newest
    assert len(workspace.transport.sent("GET", r"/contoso-features/jobs$")) == 3


# ---------------------------------------------------------------- the feature store's client


def test_one_client_per_store_whatever_the_case_of_its_name():
    workspace = FakeWorkspace()
    serve_feature_stores(workspace, build_feature_stores(datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)))
    # ARM answers names case-insensitively (the replay's resources are keyed in lower case)
    workspace.transport.add("GET", r"(?i)/workspaces/contoso-features/.+", handler=workspace._get, first=True)
    svc = AzureMLService(ml_client(workspace.transport))
    assert [f.name for f in svc.list_feature_sets("Contoso-Features")] == ["customers", "transactions"]
    assert [f.name for f in svc.list_feature_sets("contoso-features")] == ["customers", "transactions"]
    assert svc._store_client("CONTOSO-FEATURES") is svc._store_client("contoso-features")
    assert len(svc._store_clients) == 1


# ---------------------------------------------------------------- no SDK warning per listing


def test_listing_monitors_logs_no_sdk_warning(caplog):
    workspace = FakeWorkspace()
    workspace.seed_monitor()
    svc = AzureMLService(ml_client(workspace.transport))
    with caplog.at_level(logging.WARNING, logger="azure.ai.ml"):
        for _ in range(3):
            assert [m.name for m in svc.list_monitors()] == [MONITOR]
        assert [s.action for s in svc.list_schedules() if s.name == MONITOR] == ["monitor"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("azure.ai.ml")] == []
