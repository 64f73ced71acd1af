"""promote, archive and retrain: the model lifecycle through the gate and the audit trail."""

from __future__ import annotations

import pytest

from adapters.storage import approvals as approval_store, audit as audit_log
from commands.base.context import Track
from commands.changes.policy import Policy
from tests.conftest import Chat
from tests.test_approvals import ARNE, OLGA, ROLES


def stages(text: str) -> dict[str, str]:
    """`models fraud-model` as {version: stage}."""
    found = {}
    for line in text.splitlines():
        if line.startswith("v") and " · " in line:
            version, rest = line.split(" ", 1)
            found[version[1:]] = rest.split(" · ")[0].strip()
    return found


async def test_promoting_to_production_archives_the_champion_in_one_audited_change(chat, store):
    before = stages((await chat("models fraud-model")).text)
    assert (before["4"], before["3"]) == ("Staging", "Production")
    reply = await chat("promote fraud-model:4 Production --reason 'beats v3 on auc'")
    assert reply.text == "✅ fraud-model:4 is now in Production; fraud-model:3 is now Archived. [Workspace ml-prod (prod)]"
    after = stages((await chat("models fraud-model")).text)
    assert (after["4"], after["3"]) == ("Production", "Archived")
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.action, r.target) for r in records] == [
        ("executed", "promote", "model fraud-model:4"), ("succeeded", "promote", "model fraud-model:4")]
    assert records[0].parameters == {"model": "fraud-model", "version": "4", "stage": "Production",
                                     "from": "Staging", "demote": ["3"]}


async def test_a_promotion_in_production_asks_for_approval_and_shows_the_comparison(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    reply = await chat("promote fraud-model:4 Production")
    assert reply.track == Track("approval", 1)
    words = reply.card["fallbackText"]
    assert "Stage: fraud-model:4 Staging → fraud-model:4 Production" in words
    assert "Champion: fraud-model:3 (auc 0.941" in words and "→ fraud-model:4 (auc 0.953 (+0.012 better)" in words
    await chat.as_(ARNE)("approve 1")
    await chat.settle()
    request = await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)
    assert request.state == "succeeded"
    assert stages((await chat("models fraud-model")).text)["4"] == "Production"


async def test_a_version_with_no_stage_is_said_so_not_none(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    reply = await chat("promote churn-model:3 Staging")
    assert reply.text == "Approval request #1: Promote churn-model:3: no stage → Staging"
    facts = {f["title"]: f["value"] for b in reply.card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Stage"] == "churn-model:3 no stage → churn-model:3 Staging"


async def test_archiving_asks_about_the_flag_not_the_stage(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    reply = await chat("archive fraud-model:1")
    assert reply.text == "Approval request #1: Archive fraud-model:1: hide it from lists (its stage stays Archived)"
    facts = {f["title"]: f["value"] for b in reply.card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Hidden from lists (archived)"] == "no → yes" and "Archived" not in facts


async def test_a_promotion_refuses_if_the_champion_moved_since_the_request(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    await chat("promote fraud-model:4 Production")
    await workspaces.default.set_model_stage("fraud-model", "3", "Staging")      # someone else, meanwhile
    reply = await chat.as_(ARNE)("approve 1")
    assert reply.text.startswith("❌ Not done: fraud-model:3 is no longer in Production (now Staging).")
    assert stages((await chat("models fraud-model")).text)["4"] == "Staging"


@pytest.mark.parametrize("typed,answer", [
    ("promote fraud-model Production", "'fraud-model' is not model:version, e.g. `fraud-model:4`."),
    ("promote fraud-model:3 Production", "fraud-model:3 is already in Production; nothing to change."),
    ("promote fraud-model:4 Prod", "Unknown stage 'Prod' (use one of Staging, Production, Archived)"),
    ("promote fraud-model:99 Production", "Model fraud-model has no version 99 (versions: 1, 2, 3, 4)."),
    ("retrain fraud-model --schedule nope", "There is no schedule named 'nope'."),
])
async def test_lifecycle_refusals(chat, typed, answer):
    reply = await chat(typed)
    assert reply.text.startswith(answer), reply.text
    assert chat.background == []


async def test_a_retraining_that_cannot_run_is_refused_before_anyone_approves_it(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)      # prod: retrain needs an approval
    refused = await chat("retrain demand-forecast")
    assert refused.text == (
        "No version of demand-forecast names its retraining schedule: tag one with training_schedule=‹schedule "
        "name›, or trigger the schedule directly. Did you mean `retrain demand-forecast --schedule "
        "weekly-demand-forecast`? `schedules` lists them.")
    assert await store.run_transaction(lambda tx: approval_store.find(tx, limit=10), write=False) == []
    asked = await chat("retrain demand-forecast --schedule weekly-demand-forecast")
    assert asked.text == "Approval request #1: Retrain demand-forecast (schedule weekly-demand-forecast)"
    tagged = await chat("retrain fraud-model")
    assert tagged.text == "Approval request #2: Retrain fraud-model (its training schedule, weekly-fraud-retrain)"


async def test_archive_and_retrain(chat, store):
    assert (await chat("archive fraud-model:1")).text == (
        "✅ fraud-model:1 is hidden from lists (archived); deployments can still use it. [Workspace ml-prod (prod)]")
    assert (await chat("archive fraud-model:1")).text.startswith("fraud-model:1 is already hidden from lists (archived)")
    started = await chat("retrain fraud-model --reason drift")
    assert started.text.startswith("⏳ Retraining of fraud-model started job ")
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.action) for r in records][-2:] == [("executed", "retrain"), ("succeeded", "retrain")]


async def test_promote_over_http(teams):
    [reply] = await teams.say("promote fraud-model:4 Production")
    assert reply.text == "✅ fraud-model:4 is now in Production; fraud-model:3 is now Archived. [Workspace ml-prod (prod)]"


async def test_promoting_to_production_archives_every_version_that_holds_it(chat, workspaces, store):
    await workspaces.default.set_model_stage("fraud-model", "2", "Production")     # Azure lets two hold it
    reply = await chat("promote fraud-model:4 Production")
    assert reply.text == ("✅ fraud-model:4 is now in Production; fraud-model:3, fraud-model:2 are now Archived. "
                          "[Workspace ml-prod (prod)]")
    after = stages((await chat("models fraud-model")).text)
    assert (after["4"], after["3"], after["2"]) == ("Production", "Archived", "Archived")


async def test_a_promotion_refuses_if_another_version_went_into_production_since_the_request(workspaces, store):
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    await chat("promote fraud-model:4 Production")
    await workspaces.default.set_model_stage("fraud-model", "2", "Production")      # someone else, meanwhile
    reply = await chat.as_(ARNE)("approve 1")
    assert reply.text.startswith("❌ Not done: fraud-model:2 went into Production since the request was made, so "
                                 "promoting fraud-model:4 would leave more than one champion.")
    assert stages((await chat("models fraud-model")).text)["4"] == "Staging"
