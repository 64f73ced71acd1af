"""Approvals: the gate decides, requests are stored, votes counted once, execution happens once,
and the audit trail tells the whole story (in-process; tests/test_approvals_http.py goes over HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.storage import approvals as approval_store, audit as audit_log, outbox
from commands.base.context import Role, RoleBook, Track, User
from commands.changes.policy import Policy, parse_policy
from tests.conftest import Chat, Clock

OLGA = User(id="00000000-0000-0000-0000-0000000000a1", name="Olga Operator", tenant_id="t1")
ARNE = User(id="00000000-0000-0000-0000-0000000000a2", name="Arne Approver", tenant_id="t1")
BEA = User(id="00000000-0000-0000-0000-0000000000a3", name="Bea Approver", tenant_id="t1")
VIC = User(id="00000000-0000-0000-0000-0000000000a4", name="Vic Viewer", tenant_id="t1")
ROLES = RoleBook({OLGA.id: Role.OPERATOR, ARNE.id: Role.APPROVER, BEA.id: Role.APPROVER}, Role.VIEWER)


def people_chat(workspaces, store, *, policy: Policy | None = None, clock: Clock | None = None) -> Chat:
    return Chat(workspaces, store, policy=policy or Policy(), roles=ROLES, clock=clock, user=OLGA)


@pytest.fixture
async def olga(workspaces, store):
    chat = people_chat(workspaces, store)
    yield chat
    await chat.settle()


async def events(store) -> list[tuple[str, str, int | None]]:
    """The audit trail as (event, actor, request) in order."""
    records = await store.run_transaction(audit_log.scan, write=False)
    return [(r.event, r.actor_name, r.approval_id) for r in records if r.event != "policy_loaded"]


async def request_of(store, approval_id: int):
    async def read(tx):
        return await approval_store.get(tx, approval_id)
    return await store.run_transaction(read, write=False)


async def split_of(chat: Chat) -> str:
    text = (await chat("endpoint fraud-api")).text
    return next(line for line in text.splitlines() if line.startswith("Traffic:"))


async def test_a_production_traffic_change_becomes_an_approval_request(olga, store):
    reply = await olga("traffic fraud-api blue=0 green=100 --reason 'green passed the shadow test'")
    assert reply.track == Track("approval", 1)
    assert reply.text == "Approval request #1: Traffic on fraud-api: blue=90 green=10 → blue=0 green=100"
    card = reply.card
    assert card["body"][0]["text"] == "Approval request #1"
    words = card["fallbackText"]
    for expected in ("Waiting for approval", "Traffic: blue=90 green=10 → blue=0 green=100",
                     "Workspace: ml-prod (prod)", "Asked by: Olga Operator", "Reason: green passed the shadow test",
                     "Approvals: 0 of 1 (not the requester)", "Expires: 2026-11-27 09:00 UTC (in 24 h 0 min)",
                     "Approve (`approve 1`)", "Reject (`reject 1`)"):
        assert expected in words, (expected, words)
    assert await split_of(olga) == "Traffic: blue=90 green=10"       # nothing changed yet
    request = await request_of(store, 1)
    assert (request.state, request.requester_id, request.quorum, request.allow_self, request.approver_role,
            request.before, request.after) == ("pending", OLGA.id, 1, False, "approver",
                                               {"traffic": {"blue": 90, "green": 10}},
                                               {"traffic": {"blue": 0, "green": 100}})
    assert await events(store) == [("requested", "Olga Operator", 1)]


async def test_the_requester_cannot_approve_and_a_viewer_cannot_vote(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    own = await olga("approve 1")
    assert own.text == ("You asked for request #1, so you cannot approve it yourself; someone else with the "
                        "Approver role must.")
    viewer = await olga.as_(VIC).click("approve", "1")
    assert viewer.text.startswith("`approve` needs the Operator role; you have Viewer.")
    operator = User(id="00000000-0000-0000-0000-0000000000a5", name="Otto Operator", tenant_id="t1")
    olga.handler.roles = RoleBook({**ROLES.assignments, operator.id: Role.OPERATOR}, Role.VIEWER)
    too_low = await olga.as_(operator).click("approve", "1")
    assert too_low.text == ("Voting on request #1 needs the Approver role; you have Operator. A bot admin can grant "
                            "it with `grant <user> approver`.")
    assert (await request_of(store, 1)).votes == ()
    assert await split_of(olga) == "Traffic: blue=90 green=10"
    assert await events(store) == [("requested", "Olga Operator", 1)]


async def test_an_approval_executes_the_change_once_and_the_trail_tells_the_story(olga, store):
    await olga("traffic fraud-api blue=0 green=100 --reason rollout")
    reply = await olga.as_(ARNE).click("approve", "1")
    assert reply.text.startswith("⏳ Traffic on fraud-api is moving to green=100.")
    assert "Approved, being carried out" in reply.card["fallbackText"]
    await olga.settle()
    request = await request_of(store, 1)
    assert request.state == "succeeded"
    assert request.result.startswith("✅ ")
    assert [(v.voter_name, v.decision) for v in request.votes] == [("Arne Approver", "approve")]
    assert await split_of(olga) == "Traffic: green=100"
    assert await events(store) == [
        ("requested", "Olga Operator", 1), ("vote:approve", "Arne Approver", 1), ("approved", "Arne Approver", 1),
        ("executed", "Arne Approver", 1), ("succeeded", "Arne Approver", 1)]
    again = await olga.as_(BEA).click("approve", "1")
    assert again.text == "Request #1 is succeeded; nothing to decide any more."
    trail = (await olga("audit --target fraud-api")).text
    assert "Arne Approver approved #1 (traffic on fraud-api in ml-prod): rollout" in trail  # sentences since issue #19 item 8


async def test_a_quorum_of_two_needs_two_different_approvers(workspaces, store):
    policy = parse_policy('[[rule]]\naction = "traffic"\nenvironment = "prod"\nmode = "approval"\nquorum = 2\n')
    chat = people_chat(workspaces, store, policy=policy)
    await chat("traffic fraud-api blue=50 green=50")
    first = await chat.as_(ARNE).click("approve", "1")
    assert first.text == "Approved: request #1 (1 of 2 approvals)."
    twice = await chat.as_(ARNE).click("approve", "1")
    assert twice.text == "You have already voted on request #1."
    assert (await request_of(store, 1)).state == "pending"
    assert await split_of(chat) == "Traffic: blue=90 green=10"
    await chat.as_(BEA)("approve 1 fine by me")
    await chat.settle()
    request = await request_of(store, 1)
    assert request.state == "succeeded"
    assert [(v.voter_name, v.comment) for v in request.votes] == [("Arne Approver", ""), ("Bea Approver", "fine by me")]
    assert await split_of(chat) == "Traffic: blue=50 green=50"


async def test_a_rejection_closes_the_request_and_nothing_changes(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    reply = await olga.as_(BEA)("reject 1 not during the sale")
    assert reply.text == "Rejected: request #1 (0 of 1 approvals)."
    assert "Bea Approver rejected" in reply.card["fallbackText"]
    request = await request_of(store, 1)
    assert (request.state, request.result) == ("rejected", "rejected by Bea Approver: not during the sale")
    assert (await olga.as_(ARNE)("approve 1")).text == "Request #1 is rejected; nothing to decide any more."
    assert await split_of(olga) == "Traffic: blue=90 green=10"


async def test_fifty_concurrent_clicks_execute_once_with_a_consistent_count(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    approvers = [User(id=f"00000000-0000-0000-0000-{i:012d}", name=f"Approver {i}", tenant_id="t1")
                 for i in range(50)]
    olga.handler.roles = RoleBook({**ROLES.assignments, **{a.id: Role.APPROVER for a in approvers}}, Role.VIEWER)
    replies = await asyncio.gather(*(olga.as_(a).click("approve", "1") for a in approvers))
    await olga.settle()
    executed = [r for r in replies if r.text.startswith("⏳")]
    assert len(executed) == 1
    assert all(r.text == "Request #1 is approved; nothing to decide any more." or r is executed[0]
               or r.text.startswith("Request #1 is ") for r in replies)
    request = await request_of(store, 1)
    assert request.state == "succeeded" and len(request.votes) == 1
    trail = await events(store)
    assert [e for e, _, _ in trail].count("executed") == 1
    assert [e for e, _, _ in trail].count("vote:approve") == 1


async def test_a_redelivered_activity_is_ignored(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    quorum2 = parse_policy('[[rule]]\nmode = "approval"\nquorum = 2\n')
    olga.gate.policy = quorum2
    await olga("traffic fraud-api blue=50 green=50")
    first = await olga.as_(ARNE).click("approve", "2", activity_id="teams-activity-7")
    again = await olga.as_(ARNE).click("approve", "2", activity_id="teams-activity-7")
    assert first.text == "Approved: request #2 (1 of 2 approvals)."
    assert again.text == "Already handled."
    assert len((await request_of(store, 2)).votes) == 1


async def test_a_redelivered_change_asks_and_runs_once(olga, store, workspaces):
    """Teams redelivers an activity it thinks went unanswered: the copy opens no second request,
    and under a direct rule runs nothing a second time."""
    first = await olga("traffic fraud-api blue=50 green=50", activity_id="teams-activity-9")
    again = await olga("traffic fraud-api blue=50 green=50", activity_id="teams-activity-9")
    assert first.text.startswith("Approval request #1: ")
    assert again.text == ("Teams delivered that message twice; the first one is being handled, so this copy does "
                          "nothing. Type `approvals` or look above for its answer.")
    assert await request_of(store, 2) is None
    olga.gate.policy = parse_policy('[[rule]]\nmode = "direct"\n')
    await olga("retrain fraud-model", activity_id="teams-activity-10")
    await olga("retrain fraud-model", activity_id="teams-activity-10")
    await olga.settle()
    assert [e for e, _, _ in await events(store)].count("executed") == 1
    running = [j for j in await workspaces.default.list_jobs(limit=100) if j.display_name == "train-fraud-pipeline"
               and j.status in ("Queued", "Running")]
    assert len(running) == 1


async def test_a_request_whose_target_changed_since_says_so_on_its_card_before_anyone_votes(olga, store):
    """From the first-user review: two requests on fraud-api; once one is carried out, the other
    still read "Waiting for approval" and failed only after someone approved it."""
    asked = await olga("traffic fraud-api blue=50 green=50")
    await olga.handler.delivered(asked, "conv-1", "card-of-request-1")      # the host posted its card
    await olga("traffic fraud-api blue=70 green=30")
    await olga.as_(ARNE).click("approve", "2")
    await olga.settle()
    first = await request_of(store, 1)
    assert first.state == "pending"
    assert first.result == ("endpoint fraud-api changed after this request was made (request #2: Traffic on "
                            "fraud-api: blue=90 green=10 → blue=70 green=30). Approving it will be refused if the "
                            "change no longer applies; look again before voting.")
    card = (await olga("approval 1")).card
    assert f"⚠️ {first.result}" in card["fallbackText"]
    listed = (await olga("approvals")).text
    assert "⚠️ its target changed since" in next(line for line in listed.splitlines() if "#1" in line)
    [edit] = [i for i in await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)
              if i.payload.get("update") == "card-of-request-1"]
    assert f"⚠️ {first.result}" in edit.payload["card"]["fallbackText"]


async def test_a_started_run_leaves_other_requests_on_its_target_unmarked(olga, store):
    await olga("retrain fraud-model --reason 'drift on amount'")
    await olga("retrain fraud-model --reason 'new labels'")
    await olga.as_(ARNE).click("approve", "2")
    await olga.settle()
    assert ((await request_of(store, 2)).state, (await request_of(store, 1)).result) == ("succeeded", "")


async def test_a_target_changed_since_the_request_is_refused_on_the_card(olga, store, workspaces):
    await olga("traffic fraud-api blue=0 green=100")
    await workspaces.default.set_traffic("fraud-api", {"blue": 70, "green": 30})   # someone else, meanwhile
    reply = await olga.as_(ARNE).click("approve", "1")
    assert reply.text == ("❌ Not done: the split on fraud-api is now blue=70 green=30, no longer blue=90 green=10. "
                          "The request was for Traffic on fraud-api: blue=90 green=10 → blue=0 green=100; ask again if it "
                          "is still wanted.")
    request = await request_of(store, 1)
    assert request.state == "failed"
    assert "Approved, but it failed" in reply.card["fallbackText"]
    assert await split_of(olga) == "Traffic: blue=70 green=30"
    assert [e for e, _, _ in await events(store)][-1] == "failed"


async def test_requests_expire_and_their_cards_say_so(workspaces, store):
    clock = Clock()
    chat = people_chat(workspaces, store, clock=clock)
    await chat("traffic fraud-api blue=0 green=100")
    await store.run_transaction(lambda tx: approval_store.set_card(tx, 1, "conv-1", "activity-card-1"))
    clock.advance(hours=23)
    assert await chat.gate.expire_due() == 0
    clock.advance(hours=2)
    assert await chat.gate.expire_due() == 1
    request = await request_of(store, 1)
    assert request.state == "expired"
    late = await chat.as_(ARNE).click("approve", "1")
    assert late.text == "Request #1 is expired; nothing to decide any more."
    items = await store.run_transaction(lambda tx: outbox.find_items(tx, conversation_id="conv-1"), write=False)
    assert [i.payload["update"] for i in items] == ["activity-card-1"]
    assert "Expired without a decision" in items[0].payload["card"]["fallbackText"]
    assert [e for e, _, _ in await events(store)] == ["requested", "expired"]


async def test_the_requester_withdraws_and_others_cannot(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    assert (await olga.as_(ARNE)("withdraw 1")).text == (
        "Only Olga Operator, who asked, or an Admin can withdraw request #1.")
    assert (await olga("withdraw 1")).text == "Request #1 withdrawn."
    assert (await request_of(store, 1)).state == "withdrawn"
    assert (await olga("withdraw 1")).text == "Request #1 is withdrawn; it can no longer be withdrawn."


async def test_a_confirmation_is_for_the_requester_only(olga, store):
    reply = await olga("cancel amber_river_7d3kq9wz --reason stuck")
    assert reply.text.startswith("Confirmation #1: ")
    assert "Confirm cancel (`confirm 1`)" in reply.card["fallbackText"]
    waiting = "Waiting for the requester to confirm"          # on its card and in `approvals`, the same words
    assert reply.card["body"][2]["text"] == f"**{waiting}**"
    [row] = [b for b in (await olga.as_(ARNE)("approvals")).card["body"] if b["type"] == "ColumnSet"]
    assert row["columns"][1]["items"][0]["text"] == waiting
    assert (await olga.as_(ARNE)("confirm 1")).text == (
        "Only Olga Operator, who asked, can confirm or cancel request #1.")
    done = await olga.click("confirm", "1")
    assert done.text.startswith("⏳ Job amber_river_7d3kq9wz is being canceled.")
    await olga.settle()
    assert (await request_of(store, 1)).state == "succeeded"


async def test_approvals_lists_pending_mine_and_all(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    await olga("traffic fraud-api blue=100 green=0")
    await olga.as_(ARNE)("reject 2")
    pending = (await olga("approvals")).text
    assert "#1 Traffic on fraud-api" in pending and "#2" not in pending
    mine = (await olga.as_(BEA)("approvals mine")).text
    assert "#1 Traffic on fraud-api" in mine and "#2" not in mine
    everything = (await olga("approvals all")).text
    assert everything.index("#2") < everything.index("#1")
    assert (await olga("approval 9")).text == "There is no approval request #9. Type `approvals all` to see them."
    assert (await olga("approve x")).text.startswith("'x' is not a request number; they look like 42")
    assert (await olga("approval #1")).text.startswith("Request #1: pending")


async def test_audit_with_a_misspelt_action_says_so_instead_of_no_records(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    assert (await olga("audit --action trafic")).text == (
        "No action or event is called 'trafic' in the audit trail. Did you mean `audit --action traffic`?")
    assert (await olga("audit --action Requested")).text == (
        "No action or event is called 'Requested' in the audit trail. Did you mean `audit --action requested`?")
    assert (await olga("audit --action scale")).text.endswith("No records.")     # a change not made yet: no typo
    assert "Olga Operator asked for #1 (traffic on fraud-api in ml-prod)" in (await olga("audit --action traffic")).text


async def test_audit_verify_finds_the_first_altered_record(olga, store):
    await olga("traffic fraud-api blue=0 green=100")
    await olga.as_(ARNE).click("approve", "1")
    await olga.settle()
    intact = (await olga("audit verify")).text
    assert "✅ The chain of 5 records is intact" in intact

    async def tamper(tx):
        await tx.execute("UPDATE audit_log SET actor_name = ? WHERE seq = ?", ("Mallory", 2))
    await store.run_transaction(tamper)
    broken = (await olga("audit verify")).text
    assert "❌ The audit trail was tampered with: record 2 was altered." in broken
    assert "First bad record: 2" in broken


async def test_a_request_from_a_personal_chat_is_also_posted_in_the_approval_channel(olga, store):
    olga.gate.approval_channel = "19:approvals@thread.tacv2"
    await olga("traffic fraud-api blue=0 green=100", kind="personal")
    await olga("traffic fraud-api blue=50 green=50", conversation="19:ml@thread.tacv2", kind="channel")
    items = await store.run_transaction(lambda tx: outbox.find_items(tx, conversation_id="19:approvals@thread.tacv2"),
                                        write=False)
    # Since issue #19 item 2 a request from another channel is posted in the approval channel too.
    assert [i.dedupe_key for i in items] == ["approval:1:card:19:approvals@thread.tacv2",
                                             "approval:2:card:19:approvals@thread.tacv2"]
    assert "Approval request #1" in items[0].payload["card"]["fallbackText"]
    await olga.as_(ARNE)("reject 1")
    items = await store.run_transaction(lambda tx: outbox.find_items(tx, conversation_id="19:approvals@thread.tacv2"),
                                        write=False)
    assert [i.payload.get("update_of") for i in items] == [None, None, "approval:1:card:19:approvals@thread.tacv2"]
    assert "Rejected" in items[2].payload["card"]["fallbackText"]


async def test_policies_shows_the_rules_in_force(olga):
    text = (await olga("policies")).text
    assert "prod (ml-prod)" in text
    assert "traffic: needs 1 approval from an Approver other than the requester within 24 h" in text
    assert "cancel: asks you to confirm first" in text
    assert "From the built-in defaults (no MLOPSBOT_POLICY_FILE)." in text


async def test_help_for_a_change_says_what_it_needs_here(olga):
    text = (await olga("help traffic")).text
    assert "In ml-prod (prod) it needs 1 approval from an Approver other than the requester within 24 h." in text


@pytest.mark.parametrize("typed,mode,summary", [
    ("scale fraud-api green 3", "approval", "Scale fraud-api/green: 1 → 3 instances"),
    ("batch churn-batch azureml://datastores/workspaceblobstore/paths/churn/", "approval",
     "Batch scoring on churn-batch (nightly) of azureml://datastores/workspaceblobstore/paths/churn/"),
    ("cancel amber_river_7d3kq9wz", "confirm", "Cancel job "),
    ("schedule disable nightly-churn-retrain", "confirm", "Disable schedule nightly-churn-retrain"),
    ("schedule run nightly-churn-retrain", "confirm", "Run schedule nightly-churn-retrain once now"),
    ("stop ds-ci-alice", "confirm", "Stop compute ds-ci-alice"),
])
async def test_every_change_command_passes_the_gate_in_production(olga, store, typed, mode, summary):
    reply = await olga(typed + " --reason 'maintenance window'")
    assert reply.track == Track("approval", 1), reply.text
    request = await request_of(store, 1)
    assert (request.approver_role == "requester") == (mode == "confirm")
    assert request.summary.startswith(summary), request.summary
    assert request.reason == "maintenance window"
    assert olga.background == []          # nothing started


async def test_a_confirmed_change_runs_and_is_audited(olga, store):
    await olga("stop ds-ci-alice")
    done = await olga.click("confirm", "1")
    assert done.text.startswith("⏳ Compute ds-ci-alice is stopping.")
    await olga.settle()
    assert "Stopped" in (await olga("compute")).text
    assert [e for e, _, _ in await events(store)] == ["requested", "vote:approve", "confirmed", "executed",
                                                      "succeeded"]


async def test_a_started_job_is_reported_by_its_watch_not_held_by_the_gate(olga, store):
    await olga("schedule run nightly-churn-retrain")
    started = await olga.click("confirm", "1")
    assert started.text.startswith("⏳ Schedule nightly-churn-retrain started job ")
    request = await request_of(store, 1)
    assert request.state == "succeeded"           # the job started: the change is done; its watch reports the end
