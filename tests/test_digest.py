"""Digests: the commands, the card's content on the local workspace, and sending due digests.

The local workspace and the chat share one hand-moved clock, so every figure is reproducible."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.drift.definitions import level_words

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService
from adapters.storage import approvals, audit, digests, outbox
from commands.base.context import Role, Workspaces
from commands.digests.digest import send_due
from commands.digests.digest_card import Figure, change_text, digest_card
from commands.digests.digest_times import jitter
from commands.base.ui import as_text
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.unit.test_digest import START

CHANNEL_THREAD = "19:team@thread.tacv2;messageid=1700000000000"
CHANNEL = "19:team@thread.tacv2"
@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def local(tmp_path, clock, pools):
    workspace = LocalWorkspace(tmp_path / "workspace.db", clock=clock)
    workspace.reset(demo=True)
    yield workspace
    workspace.close()


@pytest.fixture
def fixed_workspaces(local, pools):
    calls, waits = pools
    return Workspaces([NonBlockingService(local, name="ml-prod", environment="prod", pool=calls, wait_pool=waits)])


@pytest.fixture
def channel(fixed_workspaces, store, clock):
    return Chat(fixed_workspaces, store, clock=clock)


async def say(chat: Chat, words: str):
    return await chat(words, conversation=CHANNEL_THREAD, kind="channel")


# ---------------------------------------------------------------- content


async def test_digest_now_shows_the_workspaces_figures(channel, local, clock):
    reply = await say(channel, "digest now")
    assert_valid_card(reply.card)
    words = as_text(reply.card)
    metrics = {e.name: local.endpoint_metrics(e.name, 60) for e in local.list_endpoints()}
    churn = metrics["churn-api"]
    # the headline names what needs attention, worst first
    assert words.splitlines()[2] == ("Needs attention: 1 endpoint unhealthy (churn-api); fraud-model drifting; "
                                     "2 jobs failed; 1 idle compute target still running.")
    assert (f"p50 {churn.latency_p50_ms:.0f} ms  p99 {churn.latency_p99_ms:,.0f} ms  "
            f"req/min {churn.requests_per_minute:.0f}  5xx {churn.error_rate * 100:.2f}%") in words
    # the endpoint card's judgement and wording, and its way of writing a split
    assert f"p99 {churn.latency_p99_ms:,.0f} ms is over 1,000 ms; 5xx {churn.error_rate:.2%} is over 1%" in words
    assert "deployment blue" not in words          # churn-api's only deployment: its figures are the endpoint's
    assert "fraud-api — traffic blue=90 green=10" in words
    assert "credit-api — traffic blue=100" in words                     # not "shadow 0%"
    lines = [line for line in words.splitlines() if line.startswith("fraud-model:3")]
    report = local.drift_report("fraud-model")
    breached = sorted((f for s in report.signals for f in s.figures if f.breached), key=lambda f: -f.value / f.threshold)
    assert [f.feature for f in breached[:2]] == ["fraud_score", "merchant_category"]
    # each with its level in words and its change since the previous run (issue #22 item 4)
    assert lines == ["fraud-model:3 (Production) — ⚠ drift detected · worst: " + "; ".join(
        f"{f.feature} {f.metric} {f.value:.3g} > {f.threshold:g} ({level_words(f.metric, f.value, f.threshold)}, "
        f"{f.value - f.history[-2]:+.3f} since the last run)" for f in breached[:3])]
    assert "churn-model:2 (Production) — no drift" in words
    assert "credit-risk:3 (Staging) — no monitor" in words
    failed = [j.name for j in local.list_jobs(status="Failed", limit=100)]
    assert [line.split()[1] for line in words.splitlines() if line.startswith("✗ ")] == failed
    assert "ds-ci-alice (computeinstance Standard_DS11_v2) — idle: no job on it, still billed" in words
    assert "The first digest in this chat: changes show from the next one on." in words
    verbs = [(a["verb"], a["data"]["args"]) for a in reply.card["actions"]]
    assert verbs == [("endpoint", ["churn-api"]), ("drift", ["fraud-model"]), ("jobs", ["--status", "Failed"])]


async def test_an_endpoint_whose_deployment_taking_traffic_is_unhealthy_is_flagged(channel, local):
    local.degrade_deployment("fraud-api", "green")         # 10% of fraud-api: the endpoint's average stays fine
    reply = await say(channel, "digest now")
    words = as_text(reply.card)
    green = next(d for d in local.endpoint_metrics("fraud-api", 60).deployments if d.deployment == "green")
    assert words.splitlines()[2].startswith("Needs attention: 2 endpoints unhealthy (churn-api, fraud-api); ")
    assert (f"deployment green: p99 {green.latency_p99_ms:,.0f} ms is over 1,000 ms; "
            f"5xx {green.error_rate:.2%} is over 1%") in words
    assert "⚠ fraud-api — traffic blue=90 green=10" in words
    local.set_traffic("fraud-api", {"blue": 100, "green": 0}).wait(None)     # no traffic: not flagged
    words = as_text((await say(channel, "digest now")).card)
    assert words.splitlines()[2].startswith("Needs attention: 1 endpoint unhealthy (churn-api); ")


async def test_the_next_digest_shows_changes_sparklines_and_stage_moves(channel, local, clock):
    await say(channel, "digest now")
    before = local.endpoint_metrics("fraud-api", 60)
    clock.advance(hours=24)
    local.set_model_stage("fraud-model", "4", "Production")
    after = local.endpoint_metrics("fraud-api", 60)
    reply = await say(channel, "digest now")
    assert_valid_card(reply.card)
    words = as_text(reply.card)
    assert "Changes are since the last digest in this chat (2026-11-26 07:00 UTC)." in words
    expected = change_text(Figure(round(after.latency_p50_ms, 3), round(before.latency_p50_ms, 3)))
    assert expected and f"p50 {after.latency_p50_ms:.0f} ms {expected}" in words
    assert "fraud-model:4 (Production) — no monitor · stage: Staging → Production" in words
    # two points per figure now: a sparkline of two blocks under each
    fraud = [line for line in words.splitlines() if line.startswith("p50 ") and f"{after.latency_p50_ms:.0f} ms" in line]
    assert len(fraud) == 1 and len([w for w in fraud[0].split() if set(w) <= set("▁▂▃▄▅▆▇█")]) == 4


async def test_pending_approvals_and_those_about_to_expire(channel, store, clock):
    now = clock()

    def request(hours: int, target: str) -> approvals.NewApproval:
        return approvals.NewApproval(
            action="traffic", workspace="ml-prod", environment="prod", target=target, parameters={}, before={},
            after={}, reason="", requester_id="u1", requester_name="Alice Analyst", tenant_id="", conversation_id="c",
            quorum=1, allow_self=False, approver_role="approver", created_at=now, expires_at=now + timedelta(hours=hours))

    async def work(tx):
        await approvals.create(tx, request(20, "endpoint fraud-api"))
        await approvals.create(tx, request(2, "endpoint churn-api"))
    await store.run_transaction(work)
    words = as_text((await say(channel, "digest now")).card)
    assert "Approvals waiting (2)" in words
    assert "#2 traffic endpoint churn-api, asked by Alice Analyst; expires 2026-11-26 09:00 UTC ⚠ expires soon" in words
    assert "#1 traffic endpoint fraud-api, asked by Alice Analyst; expires 2026-11-27 03:00 UTC" in words
    assert "1 approval about to expire" in words.splitlines()[2]


# ---------------------------------------------------------------- the commands


async def test_schedule_confirms_the_next_runs_in_its_zone_and_show_and_off(channel, store, clock):
    reply = await say(channel, 'digest schedule "0 9 * * 1-5" --tz Europe/Berlin')
    assert reply.text == ("Scheduled the model-health digest of ml-prod for this chat: `0 9 * * 1-5` in "
                          "Europe/Berlin. Next: Thu 2026-11-26 09:00 CET, Fri 2026-11-27 09:00 CET, "
                          "Mon 2026-11-30 09:00 CET. `digest now` shows one at once; `digest off` stops it.")
    stored = await store.run_transaction(lambda tx: digests.get(tx, CHANNEL))
    assert (stored.cron, stored.time_zone, stored.workspace, stored.next_run) == \
        ("0 9 * * 1-5", "Europe/Berlin", "ml-prod", datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL))
    shown = await say(channel, "digest show")
    assert shown.text.startswith("Digest of ml-prod: `0 9 * * 1-5` in Europe/Berlin, set by ")
    assert "Next: Thu 2026-11-26 09:00 CET" in shown.text
    off = await say(channel, "digest off")
    assert off.text == "Stopped the digest of this chat (`0 9 * * 1-5` in Europe/Berlin)."
    assert await store.run_transaction(lambda tx: digests.get(tx, CHANNEL)) is None
    assert (await say(channel, "digest off")).text == "This chat has no digest schedule; nothing to stop."
    trail = await store.run_transaction(lambda tx: audit.scan(tx), write=False)
    assert [(r.event, r.target, r.workspace) for r in trail if r.action == "digest"] == [
        ("digest scheduled", "0 9 * * 1-5 Europe/Berlin", "ml-prod"),
        ("digest stopped", "0 9 * * 1-5 Europe/Berlin", "ml-prod")]


@pytest.mark.parametrize("words, answer", [
    ('digest schedule "61 9 * * *"', "The minute field of \"61 9 * * *\" is wrong: '61' (0-59)."),
    ('digest schedule "0 9 * * 1-8"', "The day-of-week field of \"0 9 * * 1-8\" is wrong: '1-8'"),
    ('digest schedule "0 24 * * *"', "The hour field of \"0 24 * * *\" is wrong: '24' (0-23)."),
    ('digest schedule "0 9 * *"', "\"0 9 * *\" has 4 fields; a schedule needs five fields"),
    ('digest schedule "*/5 * * * *"', "fires every 5 minutes; a digest may go out at most once an hour"),
    ('digest schedule "0 9 30 2 *"', "The day-of-month field of \"0 9 30 2 *\" is wrong: '30' (1-31, and a day "
                                     "that exists in the month given)."),
    ('digest schedule "0 9 * * *" --tz Europe/Berlinn', "I don't know the time zone 'Europe/Berlinn'. Did you mean "
                                                        "`Europe/Berlin`,"),
    ('digest schedule "0 9 * * *" --tz Mars/Olympus', "I don't know the time zone 'Mars/Olympus'."),
    ("digest schedule", "Say when, e.g. `digest schedule weekdays 09:00`."),      # issue 19: plain forms too
    ('digest now "0 9 * * *"', "`digest now` takes no cron expression or time zone."),
    ("digest weekly", "digest"),
])
async def test_bad_schedules_are_refused_with_the_reason(channel, store, words, answer):
    reply = await say(channel, words)
    assert answer in reply.text
    assert await store.run_transaction(lambda tx: digests.get(tx, CHANNEL)) is None


async def test_only_operators_schedule_or_stop_digests_but_anyone_reads_one(fixed_workspaces, store, clock):
    viewer = Chat(fixed_workspaces, store, Role.VIEWER, clock=clock)
    refused = await say(viewer, 'digest schedule "0 9 * * *"')
    assert "Scheduling digests needs the Operator role; you have Viewer." in refused.text
    assert "needs the Operator role" in (await say(viewer, "digest off")).text
    assert (await say(viewer, "digest now")).card is not None


async def test_an_unknown_workspace_gets_did_you_mean(channel):
    reply = await say(channel, 'digest schedule "0 9 * * *" --workspace ml-prd')
    assert "Did you mean `ml-prod`?" in reply.text


# ---------------------------------------------------------------- sending due digests


async def schedule_in(channel: Chat, cron: str = "0 9 * * 1-5", zone: str = "Europe/Berlin"):
    reply = await say(channel, f'digest schedule "{cron}" --tz {zone}')
    assert reply.text.startswith("Scheduled")


async def digests_in_outbox(store) -> list:
    items = await store.run_transaction(lambda tx: outbox.find_items(tx, conversation_id=CHANNEL), write=False)
    return [i for i in items if i.dedupe_key.startswith("digest:")]


async def test_a_due_digest_is_enqueued_once_at_its_time(channel, store, clock, fixed_workspaces):
    await schedule_in(channel)
    due = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL)
    clock.moment = due - timedelta(seconds=1)
    assert await send_due(store, fixed_workspaces, clock()) == 0
    clock.moment = due
    assert await send_due(store, fixed_workspaces, clock()) == 1
    assert await send_due(store, fixed_workspaces, clock()) == 0
    [item] = await digests_in_outbox(store)
    assert item.conversation_id == CHANNEL and item.state == outbox.PENDING
    assert_valid_card(item.payload["card"])
    words = as_text(item.payload["card"])
    assert "Schedule: 0 9 * * 1-5 Europe/Berlin, next Fri 2026-11-27 09:0" in words
    assert "Late:" not in words
    stored = await store.run_transaction(lambda tx: digests.get(tx, CHANNEL))
    assert stored.next_run == datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL)
    assert stored.last_run == due


async def test_after_downtime_one_late_digest_not_a_burst(channel, store, clock, fixed_workspaces):
    await schedule_in(channel)
    clock.moment = datetime(2026, 12, 2, 10, 30, tzinfo=timezone.utc)      # missed Thu, Fri, Mon, Tue, Wed 09:00
    assert await send_due(store, fixed_workspaces, clock()) == 1
    assert await send_due(store, fixed_workspaces, clock()) == 0
    [item] = await digests_in_outbox(store)
    assert "Late: this digest was due at 2026-11-26 08:00 UTC" in as_text(item.payload["card"])
    stored = await store.run_transaction(lambda tx: digests.get(tx, CHANNEL))
    assert stored.next_run == datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL)


async def test_a_digest_that_lost_its_claim_sends_nothing(channel, store, clock, fixed_workspaces):
    await schedule_in(channel)
    clock.moment = datetime(2026, 11, 26, 8, 5, tzinfo=timezone.utc)
    [schedule] = await store.run_transaction(lambda tx: digests.due(tx, clock()))
    from commands.digests.digest import send_one
    assert await send_one(store, fixed_workspaces, schedule, clock()) is True
    assert await send_one(store, fixed_workspaces, schedule, clock()) is False      # the stale next_run
    assert len(await digests_in_outbox(store)) == 1


async def test_stopping_a_schedule_stops_its_digests(channel, store, clock, fixed_workspaces):
    await schedule_in(channel)
    await say(channel, "digest off")
    clock.moment = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    assert await send_due(store, fixed_workspaces, clock()) == 0
    assert await digests_in_outbox(store) == []


async def test_help_explains_digest_and_a_typo_is_caught(channel):
    shown = await say(channel, "help digest")
    assert 'digest schedule "0 9 * * 1-5" --tz Europe/Berlin' in shown.text
    typo = await say(channel, "digets now")
    assert "Did you mean `digest`?" in typo.text


async def test_a_schedule_whose_workspace_is_gone_says_so_in_the_chat(channel, store, clock, fixed_workspaces):
    await schedule_in(channel)
    await store.run_transaction(lambda tx: tx.execute(
        "UPDATE digest_schedules SET workspace = 'ml-old' WHERE conversation_id = ?", (CHANNEL,)))
    clock.moment = datetime(2026, 11, 26, 8, 5, tzinfo=timezone.utc)
    assert await send_due(store, fixed_workspaces, clock()) == 1
    [item] = await digests_in_outbox(store)
    assert item.payload == {"text": "The scheduled digest could not run: No workspace named 'ml-old'. Did you mean "
                                    "`ml-prod`? Configured: ml-prod. `digest schedule ... --workspace` with one of them fixes "
                                    "it."}


async def test_the_policys_subscriptions_role_decides_who_schedules(fixed_workspaces, store, clock):
    from commands.changes.policy import parse_policy
    open_policy = parse_policy('[subscriptions]\nrole = "viewer"\n\n[[rule]]\nmode = "direct"\n', source="test")
    viewer = Chat(fixed_workspaces, store, Role.VIEWER, clock=clock, policy=open_policy)
    assert (await say(viewer, 'digest schedule "0 9 * * *"')).text.startswith("Scheduled the model-health digest")
    strict = parse_policy('[subscriptions]\nrole = "admin"\n\n[[rule]]\nmode = "direct"\n', source="test")
    operator = Chat(fixed_workspaces, store, Role.OPERATOR, clock=clock, policy=strict)
    assert "Scheduling digests needs the Admin role; you have Operator." in (await say(operator, "digest off")).text


async def test_what_could_not_be_read_keeps_the_last_digests_figures(fixed_workspaces, store, clock, local):
    from commands.digests.digest import gather
    ml = fixed_workspaces.default
    first = await gather(ml, store, conversation_id=CHANNEL, now=clock())
    await store.run_transaction(lambda tx: digests.remember(tx, CHANNEL, "ml-prod", first.snapshot, clock()))

    class Failing:
        """The same workspace, but its metrics and model listing are down."""
        name, environment = ml.name, ml.environment

        def __getattr__(self, method):
            if method in ("endpoints_metrics", "list_models"):
                async def down(*args, **kwargs):
                    from adapters.service import Unavailable
                    raise Unavailable("Azure Monitor did not answer within 30 s.")
                return down
            return getattr(ml, method)

    clock.advance(hours=24)
    second = await gather(Failing(), store, conversation_id=CHANNEL, now=clock())
    assert [e.unreadable for e in second.digest.endpoints] == ["Azure Monitor did not answer within 30 s."] * 3
    assert "models in Production: Azure Monitor did not answer within 30 s." in second.digest.gaps
    assert second.snapshot == first.snapshot                     # nothing forgotten, nothing "new" next time
    words = as_text(digest_card(second.digest))
    assert "Figures unavailable: Azure Monitor did not answer within 30 s." in words
    assert words.splitlines()[2] == ("Needs attention: 3 idle compute targets still running. "
                                     "Some parts could not be read (see below).")


async def test_a_chats_digest_lists_only_its_tenants_approvals_and_carries_the_audit_anchor(channel, store, clock):
    """Issue #17: with several tenants each sees only its own requests; the digest also anchors the
    audit chain's head outside the database."""
    from adapters.storage import ConversationRecord
    now = clock()

    def request(tenant: str, target: str) -> approvals.NewApproval:
        return approvals.NewApproval(
            action="traffic", workspace="ml-prod", environment="prod", target=target, parameters={}, before={},
            after={}, reason="", requester_id=f"u-{tenant}", requester_name=f"Asker {tenant}", tenant_id=tenant,
            conversation_id="c", quorum=1, allow_self=False, approver_role="approver", created_at=now,
            expires_at=now + timedelta(hours=20))

    async def work(tx):
        await approvals.create(tx, request("t1", "endpoint fraud-api"))
        await approvals.create(tx, request("t2", "endpoint churn-api"))
        await audit.append(tx, audit.AuditEntry(at=now, event="policy_loaded", actor_id="mlops-bot",
                                                actor_name="MLOps bot"))
    await store.run_transaction(work)
    for conversation in (CHANNEL, CHANNEL_THREAD):
        await store.save_conversation(ConversationRecord(conversation, "channel", {"serviceUrl": "https://x"}, "t1",
                                                         "team", CHANNEL, "", now))
    seq, head = await store.run_transaction(audit.head, write=False)

    words = as_text((await say(channel, "digest now")).card)

    assert "Approvals waiting (1)" in words
    assert "#1 traffic endpoint fraud-api, asked by Asker t1" in words and "Asker t2" not in words
    assert f"Audit anchor: {seq} records, head {head}." in words
