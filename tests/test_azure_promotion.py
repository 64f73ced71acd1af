"""Issue 16 item 5: `promote ... Production` over a real MLClient on the replayed demo workspace keeps
exactly one champion, retries what Azure says is retryable, and states exact stages when it cannot.

A stage change is a GET and a PUT of the model version (ModelVersions_CreateOrUpdate, api-version
2023-08-01-preview); `jobName` and `intellectualProperty` (publisher, protectionLevel: the
IntellectualProperty object of Azure ML's asset versions) must come back in the PUT as they were stored.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.azureml.workspace import STAGE_ATTEMPTS
from adapters.nonblocking import NonBlockingService
from adapters.storage import approvals as approval_store, audit as audit_log
from commands.base.context import Workspaces
from commands.changes.policy import Policy
from tests.conftest import Chat
from tests.replay import ReplayResponse, demo_azure
from tests.test_approvals import ARNE, OLGA, ROLES

WHERE = "[Workspace ml-prod (prod)]"


@pytest.fixture
def azure():
    pool = ThreadPoolExecutor(max_workers=4)
    fake, service = demo_azure()
    waits: list[float] = []
    service.sleep = waits.append                       # what the retries waited, without waiting
    workspaces = Workspaces([NonBlockingService(service, name="ml-prod", environment="prod", pool=pool, timeout=10)])
    yield fake, workspaces, waits
    pool.shutdown(wait=False, cancel_futures=True)


def stage_of(fake, version: str) -> str:
    return fake.get("models", "fraud-model", "versions", version)["properties"]["stage"]


def stage_puts(fake) -> list[tuple[str, str]]:
    return [(r.path.rsplit("/", 1)[-1], r.body["properties"]["stage"]) for r in fake.transport.sent("PUT", r"/models/")]


def answer(status: int, code: str, retry_after: str | None = None):
    headers = {"x-ms-error-code": code, **({"Retry-After": retry_after} if retry_after else {})}
    return dict(status=status, json={"error": {"code": code, "message": f"{code} from Azure ML."}}, headers=headers)


async def test_every_production_holder_is_archived(azure, store):
    fake, workspaces, _ = azure
    fake.get("models", "fraud-model", "versions", "2")["properties"]["stage"] = "Production"   # two champions
    reply = await Chat(workspaces, store)("promote fraud-model:4 Production")
    assert reply.text == f"✅ fraud-model:4 is now in Production; fraud-model:3, fraud-model:2 are now Archived. {WHERE}"
    assert stage_puts(fake) == [("4", "Production"), ("3", "Archived"), ("2", "Archived")]
    assert [stage_of(fake, v) for v in ("4", "3", "2")] == ["Production", "Archived", "Archived"]


async def test_a_429_on_the_second_put_is_waited_out_and_sent_again(azure, store):
    fake, workspaces, waits = azure
    fake.transport.add("PUT", r"/models/fraud-model/versions/3$", times=1, first=True,
                       **answer(429, "TooManyRequests", retry_after="3"))
    reply = await Chat(workspaces, store)("promote fraud-model:4 Production")
    assert reply.text == f"✅ fraud-model:4 is now in Production; fraud-model:3 is now Archived. {WHERE}"
    assert stage_puts(fake) == [("4", "Production"), ("3", "Archived"), ("3", "Archived")]
    assert waits == [3.0]                               # Azure's Retry-After
    assert (stage_of(fake, "4"), stage_of(fake, "3")) == ("Production", "Archived")


async def test_a_second_put_that_keeps_failing_is_undone_and_the_stages_stated_on_card_and_audit(azure, store):
    fake, workspaces, waits = azure
    fake.transport.add("PUT", r"/models/fraud-model/versions/3$", first=True, **answer(503, "ServiceUnavailable"))
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    await chat("promote fraud-model:4 Production")
    reply = await chat.as_(ARNE)("approve 1")
    await chat.settle()
    stated = ("❌ Promotion failed while moving fraud-model:3 to Archived (ServiceUnavailable): Azure ML did not "
              "answer: ServiceUnavailable from Azure ML. — the steps before it were undone. Stages now: fraud-model:4 "
              f"Staging, fraud-model:3 Production. {WHERE}")
    assert reply.text == stated
    assert stage_puts(fake) == [("4", "Production")] + [("3", "Archived")] * STAGE_ATTEMPTS + [("4", "Staging")]
    assert waits == [1.0, 2.0, 4.0]                     # bounded: STAGE_ATTEMPTS PUTs, then the undo
    assert (stage_of(fake, "4"), stage_of(fake, "3")) == ("Staging", "Production")
    request = await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)
    assert (request.state, request.result) == ("failed", stated)
    card_text = [b["text"] for b in reply.card["body"] if b.get("type") == "TextBlock"]
    assert any("Stages now: fraud-model:4 Staging, fraud-model:3 Production." in t for t in card_text), card_text
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.outcome) for r in records][-1] == ("failed", stated)


async def test_when_the_undo_fails_too_the_stages_say_two_champions(azure, store):
    fake, workspaces, _ = azure
    fake.transport.add("PUT", r"/models/fraud-model/versions/3$", first=True, **answer(503, "ServiceUnavailable"))
    fake.transport.add("PUT", r"/models/fraud-model/versions/4$", first=True, handler=lambda request, match: (
        ReplayResponse(409, answer(409, "Conflict")["json"]) if request.body["properties"]["stage"] == "Staging"
        else fake._put(request, match)))
    reply = await Chat(workspaces, store)("promote fraud-model:4 Production")
    assert reply.text.endswith("— undoing the steps before it failed for fraud-model:4. Stages now: fraud-model:4 "
                               f"Production, fraud-model:3 Production. {WHERE}")


async def test_stages_that_cannot_be_read_back_are_stated_as_far_as_known(azure, store):
    fake, workspaces, _ = azure
    fake.transport.add("PUT", r"/models/fraud-model/versions/3$", first=True, **answer(503, "ServiceUnavailable"))
    fake.transport.add("GET", r"/models/fraud-model/versions$", first=True, handler=lambda request, match: (
        fake._get(request, match) if "stage" in request.query
        else ReplayResponse(503, answer(503, "ServiceUnavailable")["json"])))
    reply = await Chat(workspaces, store)("promote fraud-model:4 Production")
    assert reply.text.endswith("— the steps before it were undone. Stages as far as the bot knows (it could not read "
                               "them back): fraud-model:4 Staging, fraud-model:3 unknown (Azure did not confirm its "
                               f"change). {WHERE}")
    assert (stage_of(fake, "4"), stage_of(fake, "3")) == ("Staging", "Production")


def test_a_stage_change_puts_back_the_stored_body_with_job_lineage_and_intellectual_property(azure):
    fake, workspaces, _ = azure
    stored = fake.get("models", "fraud-model", "versions", "4")["properties"]
    stored.update(jobName="gentle_fox_1k9sz7ra",
                  intellectualProperty={"publisher": "contoso", "protectionLevel": "All"})
    svc = workspaces.get("ml-prod").service
    svc.set_model_stage("fraud-model", "4", "Production")
    [put] = fake.transport.sent("PUT", r"/models/fraud-model/versions/4$")
    assert put.body["properties"]["jobName"] == "gentle_fox_1k9sz7ra"
    assert put.body["properties"]["intellectualProperty"] == {"publisher": "contoso", "protectionLevel": "All"}
    assert {k: v for k, v in put.body["properties"].items() if k != "stage"} == {
        k: v for k, v in stored.items() if k not in ("stage", "provisioningState")} | {"isArchived": False}
    assert svc.get_model("fraud-model", "4").job == "gentle_fox_1k9sz7ra"
