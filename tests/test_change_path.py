"""Tests that protect the change path (issue #17): each kills a mutant of commands/changes/gate.py,
commands/changes/policy.py, adapters/storage/audit.py or adapters/storage/approvals.py that survived the
earlier suite and stood for a real defect. One test per defect, asserting values.

Executors are replaced through the gate's table of change kinds (`with_executor`, with monkeypatch),
never by mocking the gate; everything else is the real handler, gate, policy and storage.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import psycopg
import pytest

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService
from adapters.service import Conflict, Unavailable
from adapters.storage import approvals as approval_store, audit as audit_log
from adapters.storage.audit import AuditRecord, Verification
from adapters.storage.postgres import PostgresStorage
from commands.base.context import Reply, Role, User, Workspaces
from commands.changes.change import Accepted, Change
from commands.changes.gate import Pipeline, record_policy
from commands.changes.policy import APPROVAL, CONFIRM, DIRECT, Policy, default_rule, parse_policy
from tests.conftest import Chat, Clock, with_executor
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)
from tests.test_approvals import ARNE, BEA, OLGA, ROLES, events, olga, people_chat, request_of, split_of  # noqa: F401
from tests.test_storage_audit import append_all, entry

PIPELINE = User(id="pipeline:release.yml", name="release.yml", tenant_id="t1")


async def pipeline_request(chat: Chat, *, execute: bool, action: str = "traffic") -> Reply:
    ctx = await chat.handler.context_for(
        PIPELINE, "conv-1", role=Role.OPERATOR,
        pipeline=Pipeline(run_url="https://github.com/contoso/fraud/actions/runs/9", conversation_id="conv-1",
                          tenant_id="t1", execute=execute))
    change = Change(action, "ml-prod", "prod", "fraud-api", {"endpoint": "fraud-api", "split": {"blue": 0, "green": 100}},
                    {"traffic": {"blue": 90, "green": 10}}, {"traffic": {"blue": 0, "green": 100}},
                    "Traffic on fraud-api: blue=90 green=10 → blue=0 green=100", reason="release 9")
    return await chat.gate.submit(ctx, change)


# ---------------------------------------------------------------- gate: votes and execution

async def test_a_vote_on_a_request_that_expired_but_was_not_yet_swept_is_not_counted(workspaces, store):
    clock = Clock()
    chat = people_chat(workspaces, store, clock=clock)
    await chat("traffic fraud-api blue=0 green=100")
    clock.advance(hours=24)                      # exactly the expiry; the sweep has not run

    late = await chat.as_(ARNE).click("approve", "1")

    assert late.text == "Request #1 is expired; nothing to decide any more."
    request = await request_of(store, 1)
    assert (request.state, request.votes) == ("expired", ())
    assert await events(store) == [("requested", "Olga Operator", 1), ("expired", "Arne Approver", 1)]
    assert await split_of(chat) == "Traffic: blue=90 green=10"


async def test_a_service_error_raised_by_the_executor_at_once_fails_the_request(workspaces, store, monkeypatch):
    async def refuses(ctx, change):
        raise Conflict("the endpoint is being updated by another operation", code="OperationInProgress")
    with_executor(monkeypatch, "traffic", refuses)
    chat = people_chat(workspaces, store)
    await chat("traffic fraud-api blue=0 green=100")

    reply = await chat.as_(ARNE).click("approve", "1")

    expected = ("❌ Traffic on fraud-api: blue=90 green=10 → blue=0 green=100 failed (OperationInProgress): "
                "the endpoint is being updated by another operation")
    assert reply.text == expected
    request = await request_of(store, 1)
    assert (request.state, request.result) == ("failed", expected)
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.outcome) for r in records][-2:] == [("executed", ""), ("failed", expected)]


async def test_a_service_error_in_the_long_operation_fails_the_request(workspaces, store, monkeypatch):
    async def starts_then_fails(ctx, change):
        async def operation() -> Reply:
            raise Unavailable("Azure ML did not answer")
        return Accepted(Reply("⏳ moving"), operation())
    with_executor(monkeypatch, "traffic", starts_then_fails)
    chat = people_chat(workspaces, store)
    await chat("traffic fraud-api blue=0 green=100")

    started = await chat.as_(ARNE).click("approve", "1")
    assert started.text == "⏳ moving"
    assert (await request_of(store, 1)).state == "executing"
    [outcome] = await chat.settle()

    expected = "❌ Traffic on fraud-api: blue=90 green=10 → blue=0 green=100 failed: Azure ML did not answer"
    assert (outcome.text, outcome.ok) == (expected, False)
    request = await request_of(store, 1)
    assert (request.state, request.result) == ("failed", expected)
    assert [e for e, _, _ in await events(store)][-1] == "failed"


@pytest.mark.postgres
async def test_the_vote_read_locks_the_request_so_no_vote_counts_after_the_decision(
        workspaces, postgres_dsn, postgres_schema):
    """Arne's approval holds the request's row lock until it commits (it is kept waiting on the
    audit head, which the test holds). Bea's rejection must wait for that row, then find the
    request decided; without the lock it would read `pending` and add a vote after the decision."""
    first, second = (PostgresStorage(postgres_dsn, schema=postgres_schema) for _ in range(2))
    await first.open()
    await second.open()
    try:
        one = Chat(workspaces, first, policy=Policy(), roles=ROLES, user=OLGA)
        two = Chat(workspaces, second, policy=Policy(), roles=ROLES, user=OLGA)
        await pipeline_request(one, execute=False)              # approved stays approved (the pipeline acts)
        with psycopg.connect(postgres_dsn) as holder:
            holder.execute(f'SET search_path TO "{postgres_schema}"')
            holder.execute("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")      # the head, held

            async def waiting(n: int) -> None:
                while True:
                    rows = holder.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
                    if rows[0] >= n:
                        return
                    await asyncio.sleep(0.02)

            approve = asyncio.create_task(one.as_(ARNE).click("approve", "1", activity_id="arne-vote"))
            await asyncio.wait_for(waiting(1), 10)
            reject = asyncio.create_task(two.as_(BEA).click("reject", "1", activity_id="bea-vote"))
            await asyncio.wait_for(waiting(2), 10)
            holder.commit()
            approved, rejected = await asyncio.wait_for(asyncio.gather(approve, reject), 10)
        assert approved.text == "Request #1 is approved; the pipeline that asked will carry it out."
        assert rejected.text == "Request #1 is approved; nothing to decide any more."
        request = await first.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)
        assert (request.state, [(v.voter_name, v.decision) for v in request.votes]) == (
            "approved", [("Arne Approver", "approve")])
    finally:
        await first.close()
        await second.close()


async def test_an_approved_change_runs_in_the_requests_workspace_not_the_default(tmp_path, pools, store):
    """Two workspaces, the default first: a request in the second must change the second."""
    dev, prod = LocalWorkspace(tmp_path / "dev.db"), LocalWorkspace(tmp_path / "prod.db")
    dev.reset(demo=True)
    prod.reset(demo=True)
    workspaces = Workspaces([
        NonBlockingService(dev, name="ml-dev", environment="dev", pool=pools[0], wait_pool=pools[1], timeout=30),
        NonBlockingService(prod, name="ml-prod", environment="prod", pool=pools[0], wait_pool=pools[1], timeout=30)])
    try:
        chat = people_chat(workspaces, store)
        asked = await chat("traffic fraud-api blue=0 green=100 --workspace ml-prod")
        assert asked.text.startswith("Approval request #1")

        await chat.as_(ARNE).click("approve", "1")
        await chat.settle()

        assert (await request_of(store, 1)).state == "succeeded"
        assert "Traffic: green=100" in (await chat("endpoint fraud-api --workspace ml-prod")).text
        assert "Traffic: blue=90 green=10" in (await chat("endpoint fraud-api --workspace ml-dev")).text
    finally:
        dev.close()
        prod.close()


async def test_a_pipeline_request_with_execute_false_is_stored_as_false_and_not_run(workspaces, store):
    chat = people_chat(workspaces, store)
    await pipeline_request(chat, execute=False)

    assert (await request_of(store, 1)).execute is False
    reply = await chat.as_(ARNE).click("approve", "1")
    assert reply.text == "Request #1 is approved; the pipeline that asked will carry it out."
    assert (await request_of(store, 1)).state == "approved"
    assert await split_of(chat) == "Traffic: blue=90 green=10"


async def test_under_a_confirm_rule_a_pipeline_request_still_needs_a_human_approver(workspaces, store):
    confirm = parse_policy('[[rule]]\naction = "traffic"\nenvironment = "prod"\nmode = "confirm"\n')
    chat = Chat(workspaces, store, policy=confirm, roles=ROLES, user=OLGA)

    await pipeline_request(chat, execute=True)

    request = await request_of(store, 1)
    assert (request.approver_role, request.quorum, request.allow_self, request.expires_at - request.created_at) == (
        "approver", 1, False, timedelta(hours=24))
    [requested] = [r for r in await store.run_transaction(audit_log.scan, write=False) if r.event == "requested"]
    assert requested.detail == {"mode": APPROVAL, "policy": "api default"}


# ---------------------------------------------------------------- policy

def test_the_environment_named_production_gets_the_production_defaults():
    # rollback runs at once in production since issue #19 item 1 (the safe direction, reviewed afterwards)
    assert [default_rule(action, "production").mode for action in ("traffic", "rollback", "cancel", "batch")] == [
        APPROVAL, DIRECT, CONFIRM, APPROVAL]
    assert default_rule("traffic", "Production").mode == APPROVAL
    assert default_rule("traffic", "preproduction").mode == CONFIRM          # not a production name


def test_a_rule_that_does_not_say_allow_self_keeps_the_requester_out():
    rule = parse_policy('[[rule]]\naction = "traffic"\nmode = "approval"\nquorum = 2\n').rule("traffic", "prod")
    assert (rule.mode, rule.quorum, rule.allow_self) == (APPROVAL, 2, False)
    assert rule.describe() == "needs 2 approvals from Approvers other than the requester within 24 h"


async def test_a_changed_policy_file_is_recorded_once_per_change(store):
    now = Clock()()
    first = parse_policy('[[rule]]\nmode = "direct"\n', source="/etc/mlops-bot/policy.toml")
    second = parse_policy('[[rule]]\nmode = "approval"\n', source="/etc/mlops-bot/policy.toml")

    for policy in (first, first, second, second, first):
        await record_policy(store, policy, now)

    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.detail) for r in records] == [
        ("policy_loaded", {"source": "/etc/mlops-bot/policy.toml", "sha256": first.digest()}),
        ("policy_loaded", {"source": "/etc/mlops-bot/policy.toml", "sha256": second.digest()}),
        ("policy_loaded", {"source": "/etc/mlops-bot/policy.toml", "sha256": first.digest()})]
    assert first.digest() != second.digest()


def test_the_defaults_are_recorded_as_defaults():
    assert Policy().digest() == __import__("hashlib").sha256(b"defaults").hexdigest()


# ---------------------------------------------------------------- what the audit records hold

async def test_audit_records_of_a_request_keep_its_before_and_after(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    await olga.as_(ARNE).click("approve", "1")
    await olga.settle()

    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.before, r.after) for r in records] == [
        (event, {"traffic": {"blue": 90, "green": 10}}, {"traffic": {"blue": 0, "green": 100}})
        for event in ("requested", "vote:approve", "approved", "executed", "succeeded")]


async def test_the_outcome_of_a_change_is_in_its_audit_record(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    await olga.as_(ARNE).click("approve", "1")
    [outcome] = await olga.settle()

    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.outcome) for r in records] == [
        ("requested", ""), ("vote:approve", ""), ("approved", ""), ("executed", ""),
        ("succeeded", outcome.text.splitlines()[0])]
    assert outcome.text.startswith("✅ ")


async def test_a_rejection_is_recorded_as_a_rejected_event(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    await olga.as_(BEA)("reject 1 not during the sale")

    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.actor_name, r.detail) for r in records] == [
        ("requested", "Olga Operator", {"mode": "approval", "policy": "default"}),
        ("vote:reject", "Bea Approver", {"comment": "not during the sale"}),
        ("rejected", "Bea Approver", {})]
    # sentences since issue #19 item 8
    assert (await olga("audit --action rejected")).card["fallbackText"].count(
        "Bea Approver rejected #1 (traffic on fraud-api in ml-prod)") == 1


# ---------------------------------------------------------------- audit verify names the right record

@pytest.fixture
async def chain(storage):
    records = await append_all(storage, [entry(n) for n in range(12)])

    async def sql(statement, params=()):
        await storage.run_transaction(lambda tx: tx.execute(statement, params))
    return storage, records, sql


async def verify(storage) -> Verification:
    return await storage.run_transaction(audit_log.verify, write=False)


async def test_verify_names_record_1_when_its_link_was_rewritten_and_rehashed(chain):
    storage, records, sql = chain
    forged = AuditRecord(**{**records[0].__dict__, "prev_hash": "1" * 64, "hash": ""})
    await sql("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = 1", ("1" * 64, forged.computed_hash()))

    assert await verify(storage) == Verification(False, 1, 1, "record 1 was altered")


async def test_verify_names_the_first_of_several_missing_records(chain):
    storage, _, sql = chain
    await sql("DELETE FROM audit_log WHERE seq BETWEEN 4 AND 6")

    assert await verify(storage) == Verification(False, 4, 4, "records 4 to 6 are missing")


async def test_verify_names_the_record_before_an_intact_one_whose_link_disagrees(chain):
    storage, records, sql = chain
    forged = AuditRecord(**{**records[6].__dict__, "target": "churn-api", "hash": ""})
    await sql("UPDATE audit_log SET target = ?, hash = ? WHERE seq = 7", ("churn-api", forged.computed_hash()))

    assert await verify(storage) == Verification(False, 8, 7, "record 7 was altered")


async def test_verify_reports_the_head_and_the_keyed_part_of_an_intact_chain(chain):
    storage, records, _ = chain
    result = await verify(storage)
    assert (result.ok, result.checked, result.head_seq, result.head_hash, result.keyed_from) == (
        True, 12, 12, records[11].hash, 1)
    assert json.loads(records[0].canonical())["chain"] == "hmac-sha256"
