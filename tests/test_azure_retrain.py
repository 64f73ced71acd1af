"""Issue 16 item 6: `retrain` does what was approved, on a real MLClient over replay.

The trigger is Schedules_Trigger (POST .../schedules/{name}/trigger, api-version 2024-01-01-preview,
answered `{"submissionId": ..., "scheduleActionType": "CreateJob"}`), which azure-ai-ml 1.35 sends
through `_service_client.send_request`: the client's RetryPolicy applies to it, and azure-core
retries a POST after 500/503/504 (`_is_method_retryable`) and after any answer with Retry-After
(`is_retry`). A second POST would start a second job, so the trigger must go out exactly once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.azureml.workspace import JOB_VISIBLE_WAITS, AzureMLService
from adapters.nonblocking import NonBlockingService
from adapters.service import Unavailable
from adapters.storage import job_watches
from commands.base.context import Workspaces
from commands.changes.policy import Policy
from tests.conftest import Chat
from tests.replay import WORKSPACE_ID, FakeWorkspace, demo_azure, ml_client
from tests.test_approvals import ARNE, OLGA, ROLES

TRIGGER = r"/schedules/[^/]+/trigger$"
PRODUCTION_RETRIES = dict(retry_total=3, retry_connect=3, retry_read=3, retry_status=3,
                          retry_backoff_factor=0.8, retry_backoff_max=30.0)   # build_azure_service's defaults


# ---------------------------------------------------------------- the trigger, sent once


@pytest.mark.parametrize("status,headers,said", [
    (503, {}, "sent once and not repeated, so it may or may not have started a job"),
    (500, {}, "sent once and not repeated, so it may or may not have started a job"),
    (429, {"Retry-After": "1"}, "Schedule nightly-train was not triggered (Azure did not take the request)")])
def test_an_unanswered_trigger_is_sent_once_even_with_the_clients_retries_on(status, headers, said):
    workspace = FakeWorkspace()
    workspace.transport.add("POST", TRIGGER, status=status, first=True, headers={"x-ms-error-code": "Busy", **headers},
                            json={"error": {"code": "Busy", "message": "The service is busy."}})
    svc = AzureMLService(ml_client(workspace.transport, **PRODUCTION_RETRIES))
    with pytest.raises(Unavailable) as failed:
        svc.trigger_schedule("nightly-train")
    assert len(workspace.transport.sent("POST", TRIGGER)) == 1
    assert said in failed.value.message
    svc.list_schedules()                         # the client's other calls keep their retries
    workspace.transport.fail("GET", r"/computes$", 503, "Busy", "busy", times=1)
    svc.list_compute()
    assert len(workspace.transport.sent("GET", r"/computes$")) == 2


def test_a_trigger_that_times_out_is_sent_once():
    from azure.core.exceptions import ServiceResponseError

    def timed_out(request, match):
        raise ServiceResponseError("The read operation timed out")

    workspace = FakeWorkspace()
    workspace.transport.add("POST", TRIGGER, handler=timed_out, first=True)
    svc = AzureMLService(ml_client(workspace.transport, **PRODUCTION_RETRIES))
    with pytest.raises(Unavailable) as failed:
        svc.trigger_schedule("nightly-train")
    assert len(workspace.transport.sent("POST", TRIGGER)) == 1
    assert "may or may not have started a job" in failed.value.message


def test_a_job_not_readable_right_after_its_trigger_is_read_again():
    workspace = FakeWorkspace()
    workspace.transport.fail("GET", r"/jobs/nightly-train-triggered-\d+$", 404, "UserError", "Not found", times=1)
    svc = AzureMLService(ml_client(workspace.transport))
    waits: list[float] = []
    svc.sleep = waits.append
    job = svc.trigger_schedule("nightly-train")
    assert (job.name, job.status, job.experiment) == ("nightly-train-triggered-5", "NotStarted", "fraud")
    assert waits == [1.0]
    assert len(workspace.transport.sent("POST", TRIGGER)) == 1


def test_a_job_still_not_readable_is_returned_to_be_watched_not_failed():
    workspace = FakeWorkspace()
    workspace.transport.fail("GET", r"/jobs/nightly-train-triggered-\d+$", 404, "UserError", "Not found")
    svc = AzureMLService(ml_client(workspace.transport))
    waits: list[float] = []
    svc.sleep = waits.append
    job = svc.trigger_schedule("nightly-train")
    assert (job.name, job.status) == ("nightly-train-triggered-5", "NotStarted")
    assert waits == list(JOB_VISIBLE_WAITS)
    assert len(workspace.transport.sent("GET", r"/jobs/nightly-train-triggered-5$")) == 1 + len(JOB_VISIBLE_WAITS)


# ---------------------------------------------------------------- through the gate


@pytest.fixture
def azure():
    pool = ThreadPoolExecutor(max_workers=4)
    fake, service = demo_azure()
    waits: list[float] = []
    service.sleep = waits.append
    workspaces = Workspaces([NonBlockingService(service, name="ml-prod", environment="prod", pool=pool, timeout=10)])
    yield fake, workspaces, waits
    pool.shutdown(wait=False, cancel_futures=True)


def retag(fake: FakeWorkspace, model: str, schedule: str) -> None:
    for key, body in fake.resources.items():
        if f"/models/{model}/versions/" in key and "training_schedule" in body["properties"]["tags"]:
            body["properties"]["tags"]["training_schedule"] = schedule


async def test_the_approved_schedule_runs_even_if_the_tag_changed_meanwhile(azure, store):
    fake, workspaces, _ = azure
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    asked = await chat("retrain fraud-model")
    assert asked.text == "Approval request #1: Retrain fraud-model (its training schedule, weekly-fraud-retrain)"
    facts = {f["title"]: f["value"] for b in asked.card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert "weekly-fraud-retrain" in facts["Training"]
    retag(fake, "fraud-model", "nightly-churn-retrain")           # someone edits the tag before the approval
    reply = await chat.as_(ARNE)("approve 1")
    assert reply.text.startswith("⏳ Retraining of fraud-model started job weekly-fraud-retrain-triggered-")
    [post] = fake.transport.sent("POST", TRIGGER)
    assert post.path == f"{WORKSPACE_ID}/schedules/weekly-fraud-retrain/trigger"


async def test_a_job_azure_lists_a_moment_after_the_trigger_is_watched_not_failed(azure, store):
    fake, workspaces, waits = azure
    fake.transport.fail("GET", r"/jobs/weekly-fraud-retrain-triggered-\d+$", 404, "UserError", "Not found", times=1)
    reply = await Chat(workspaces, store)("retrain fraud-model")
    assert reply.text.startswith("⏳ Retraining of fraud-model started job weekly-fraud-retrain-triggered-"), reply.text
    assert "(NotStarted)" in reply.text and waits == [1.0]
    [watch] = await store.run_transaction(job_watches.open_watches, write=False)
    assert watch.job_name == reply.text.split("started job ")[1].split(" ")[0]
    assert len(fake.transport.sent("POST", TRIGGER)) == 1
