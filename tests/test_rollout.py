"""history, rollback, canary, demo degrade and the watch after a change (in-process, real storage and gate;
tests/test_rollout_http.py goes over HTTP)."""

from __future__ import annotations

import re

import pytest

from adapters.storage import audit as audit_log, outbox, traffic_history, watches
from bot.scheduler import Scheduler
from commands.base.context import Role
from commands.changes.policy import Policy, parse_policy
from tests.card_schema import assert_valid_card
from tests.conftest import Chat
from tests.test_approvals import ARNE, OLGA, ROLES, VIC

WINDOW = 15


# ---------------------------------------------------------------- canary arithmetic

# ---------------------------------------------------------------- history and rollback

async def split_of(chat: Chat) -> str:
    text = (await chat("endpoint fraud-api")).text
    return next(line for line in text.splitlines() if line.startswith("Traffic:"))


async def history_entries(store, endpoint="fraud-api"):
    async def read(tx):
        return await traffic_history.for_endpoint(tx, "ml-prod", endpoint)
    return await store.run_transaction(read, write=False)


async def test_history_lists_changes_newest_first_and_rollback_restores_exactly(chat, store):
    assert "No traffic change recorded yet" in (await chat("history fraud-api")).text
    await chat("traffic fraud-api blue=50 green=50 --reason 'half and half'")
    await chat("canary fraud-api green 80")
    await chat.settle()
    assert await split_of(chat) == "Traffic: green=80 blue=20"

    entries = await history_entries(store)
    assert [(e.id, e.action, e.before, e.after, e.actor_name, e.reason) for e in entries] == [
        (2, "canary", {"blue": 50, "green": 50}, {"blue": 20, "green": 80}, "Dana Dev", ""),
        (1, "traffic", {"blue": 90, "green": 10}, {"blue": 50, "green": 50}, "Dana Dev", "half and half")]
    shown = await chat("history fraud-api")
    assert_valid_card(shown.card)
    newer, older = "#2 blue=50 green=50 → blue=20 green=80", "#1 blue=90 green=10 → blue=50 green=50"
    assert newer in shown.text and older in shown.text and shown.text.index(newer) < shown.text.index(older)
    assert "2026-11-26 09:00 UTC · traffic · Dana Dev · “half and half”" in shown.text
    assert shown.card["actions"][0]["data"] == {"args": ["fraud-api", "--to", "2"]}

    reply = await chat("rollback fraud-api")
    await chat.settle()
    assert "Traffic on fraud-api is moving to blue=50 green=50" in reply.text
    assert await split_of(chat) == "Traffic: blue=50 green=50"
    newest = (await history_entries(store))[0]
    assert (newest.action, newest.before, newest.after) == ("rollback", {"blue": 20, "green": 80},
                                                            {"blue": 50, "green": 50})

    await chat("rollback fraud-api --to 1")          # back to before entry 1: the demo's 90/10
    await chat.settle()
    assert await split_of(chat) == "Traffic: blue=90 green=10"


async def test_the_history_entry_is_written_with_the_success_audit_record(chat, store):
    await chat("traffic fraud-api blue=70 green=30")
    await chat.settle()
    records = await store.run_transaction(audit_log.scan, write=False)
    succeeded = [r for r in records if r.event == "succeeded"]
    [entry] = await history_entries(store)
    assert [(r.action, r.after) for r in succeeded] == [("traffic", {"traffic": {"blue": 70, "green": 30}})]
    assert entry.after == {"blue": 70, "green": 30}


async def test_a_repeated_rollback_click_changes_nothing(chat, store):
    await chat("traffic fraud-api blue=20 green=80")
    await chat.settle()
    first = await chat.click("rollback", "fraud-api", "--to", "1")
    await chat.settle()
    again = await chat.click("rollback", "fraud-api", "--to", "1")
    redelivered = await chat.click("rollback", "fraud-api", "--to", "1", activity_id="same")
    repeated = await chat.click("rollback", "fraud-api", "--to", "1", activity_id="same")
    await chat.settle()
    assert "moving to blue=90 green=10" in first.text
    assert again.text.startswith("fraud-api already has the split from before #1 (blue=90 green=10)")
    assert redelivered.text.startswith("fraud-api already has the split")
    assert repeated.text == "Already handled."
    assert [e.action for e in await history_entries(store)] == ["rollback", "traffic"]


async def test_rollback_refusals(chat, store, viewer_chat):
    assert (await chat("rollback fraud-api")).text.startswith("Nothing to roll back: the bot has recorded no traffic")
    await chat("traffic fraud-api blue=60 green=40")
    await chat.settle()
    assert (await chat("rollback fraud-api --to 99")).text == (
        "Entry #99 is not in the history of fraud-api (its entries: #1). Type `history fraud-api` to see them.")
    assert (await chat("rollback fraud-api --to x")).text.startswith("'x' is not a whole number of history entry")
    assert (await viewer_chat("rollback fraud-api")).text.startswith(
        "`rollback` needs the Operator role; you have Viewer.")
    assert "Did you mean `fraud-api`" in (await chat("rollback fraud-apy")).text

    async def older_split(tx):        # a change recorded when fraud-api still had a 'purple' deployment
        await traffic_history.add(tx, traffic_history.NewEntry(
            workspace="ml-prod", endpoint="fraud-api", at=chat.clock(), action="traffic",
            before={"purple": 100}, after={"blue": 60, "green": 40}, actor_id="x", actor_name="Someone"))
    await store.run_transaction(older_split)
    refused = await chat("rollback fraud-api")
    assert refused.text.startswith("❌ Cannot roll fraud-api back to purple=100: deployment purple no longer "
                                   "exists (it has: blue, green).")
    assert await split_of(chat) == "Traffic: blue=60 green=40"


async def test_a_split_changed_outside_the_bot_is_recorded_when_first_seen(chat, store, workspaces):
    await chat("traffic fraud-api blue=80 green=20")
    await chat.settle()
    workspaces.default.service.set_traffic("fraud-api", {"blue": 30, "green": 70}).wait(None)   # the portal
    text = (await chat("history fraud-api")).text
    assert "#2 blue=80 green=20 → blue=30 green=70" in text and "changed outside the bot" in text
    await chat("history fraud-api")                     # seen once: recorded once
    entries = await history_entries(store)
    assert [(e.source, e.action, e.actor_name) for e in entries] == [
        ("outside", "outside", "outside the bot"), ("bot", "traffic", "Dana Dev")]
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [(r.event, r.outcome) for r in records if r.event == "observed"] == [
        ("observed", "split changed outside the bot")]
    await chat("rollback fraud-api")                    # undoes the outside change
    await chat.settle()
    assert await split_of(chat) == "Traffic: blue=80 green=20"


# ---------------------------------------------------------------- canary through the gate

async def test_canary_refusals(chat, viewer_chat):
    assert (await chat("canary fraud-api purple 10")).text == (
        "Endpoint fraud-api has no deployment named 'purple' (it has: blue, green).")
    assert (await chat("canary fraud-api green 101")).text.startswith(
        "Percent must be between 0 and 100")
    assert (await chat("canary fraud-api green")).text.startswith("Something is missing: ‹percent›")
    assert (await chat("canary fraud-api green 10")).text.startswith("green already has 10% of fraud-api")
    assert (await viewer_chat("canary fraud-api green 50")).text.startswith(
        "`canary` needs the Operator role; you have Viewer.")


async def test_canary_in_production_needs_an_approval_by_someone_else(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    asked = await olga("canary fraud-api green 30 --reason 'v4 looks fine'")
    assert asked.text == ("Approval request #1: Canary on fraud-api: green to 30% "
                          "(blue=90 green=10 → blue=70 green=30)")
    assert_valid_card(asked.card)
    assert "cannot approve it yourself" in (await olga("approve 1")).text
    await olga.as_(ARNE)("approve 1")
    await olga.settle()
    assert await split_of(olga) == "Traffic: blue=70 green=30"
    [entry] = await history_entries(store)
    assert (entry.action, entry.approval_id, entry.actor_name, entry.reason) == (
        "canary", 1, "Olga Operator", "v4 looks fine")
    rolled = await olga("rollback fraud-api")          # since issue #19 item 1: at once, reviewed afterwards
    assert ("Ran at once (the safe direction); no approver could be told (no approval channel, and no approver has "
            "a chat with the bot): ask one to `review 2`.") in rolled.text
    await olga.settle()
    assert await split_of(olga) == "Traffic: blue=90 green=10"
    assert (await olga.as_(VIC)("review 2")).text.startswith("`review` needs the Operator role")
    assert (await olga("review 2")).text == "Reviewing needs the Approver role; you have Operator."
    reviewed = await olga.as_(ARNE)("review 2 right call")
    assert reviewed.text == ("Reviewed change #2 (Rollback of fraud-api (undo #1): blue=70 green=30 → blue=90 "
                             "green=10): right call. Recorded in the audit trail.")
    assert (await olga.as_(ARNE)("review 2")).text == "You have already reviewed change #2."


async def test_a_canary_to_100_percent_writes_its_split_the_same_way_on_the_card(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    asked = await olga("canary fraud-api blue 100")
    assert asked.text == ("Approval request #1: Canary on fraud-api: blue to 100% "
                          "(blue=90 green=10 → blue=100 green=0)")
    facts = {f["title"]: f["value"] for b in asked.card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Traffic"] == "blue=90 green=10 → blue=100 green=0"
    await olga.as_(ARNE)("approve 1")
    await olga.settle()
    rows = [b["columns"][0]["items"][0]["text"] for b in (await olga("history fraud-api")).card["body"]
            if b["type"] == "ColumnSet"]
    assert rows == ["**#1** blue=90 green=10 → blue=100 green=0"]


# ---------------------------------------------------------------- demo degrade and the watch

def watch_loop(chat: Chat, store, workspaces) -> Scheduler:
    return Scheduler(store, workspaces, chat.gate, owner="test-replica", window_minutes=WINDOW, clock=chat.clock)


async def verdicts(store) -> list[dict]:
    async def read(tx):
        return await outbox.find_items(tx)
    return [i.payload for i in await store.run_transaction(read, write=False) if i.dedupe_key.startswith("watch:")]


async def test_demo_degrade_is_admin_only_and_local(chat, workspaces):
    operator = Chat(workspaces, chat.gate.store, Role.OPERATOR)
    assert (await operator("demo degrade fraud-api green")).text.startswith("`demo` needs the Admin role")
    assert (await chat("demo break fraud-api green")).text.startswith("Unknown demo switch 'break' (use one of degrade, heal)")
    assert "no deployment named 'purple'" in (await chat("demo degrade fraud-api purple")).text
    done = await chat("demo degrade fraud-api green")
    assert done.text.startswith("🧪 Deployment green on fraud-api is now degraded: p99 about 1,120 ms, 8% of requests")
    assert (await chat("demo heal fraud-api green")).text.startswith(
        "🧪 Deployment green on fraud-api is healthy again (p99 about 140 ms)")


async def test_a_healthy_change_gets_one_healthy_verdict(chat, store, workspaces):
    await chat("traffic fraud-api blue=50 green=50")
    await chat.settle()
    loop = watch_loop(chat, store, workspaces)
    chat.clock.advance(minutes=WINDOW - 1)
    assert await loop.conclude_due() == 0                 # the window has not passed
    chat.clock.advance(minutes=2)
    assert await loop.conclude_due() == 1
    assert await loop.conclude_due() == 0                 # one verdict, never two
    [payload] = await verdicts(store)
    assert_valid_card(payload["card"])
    assert payload["card"]["body"][0]["text"] == "✅ Healthy after the traffic on fraud-api"
    assert [a["title"] for a in payload["card"]["actions"]] == ["Rollback", "History"]
    assert payload["card"]["actions"][0]["data"] == {"args": ["fraud-api", "--to", "1"]}


async def test_a_degraded_deployment_gets_a_degraded_verdict_with_the_figures(chat, store, workspaces):
    await chat("canary fraud-api green 50")
    await chat.settle()
    await chat("demo degrade fraud-api green")
    chat.clock.advance(minutes=WINDOW + 1)
    assert await watch_loop(chat, store, workspaces).conclude_due() == 1
    [payload] = await verdicts(store)
    words = payload["card"]["fallbackText"]
    assert payload["card"]["body"][0]["text"] == "⚠️ Degraded after the canary on fraud-api"
    assert "What got worse" in words and "green: p99 " in words and "green: 5xx " in words
    assert await split_of(chat) == "Traffic: blue=50 green=50"          # no auto_rollback: untouched

    clicked = await chat.click("rollback", *payload["card"]["actions"][0]["data"]["args"])
    await chat.settle()
    assert "moving to blue=90 green=10" in clicked.text
    assert await split_of(chat) == "Traffic: blue=90 green=10"


AUTO = parse_policy('[[rule]]\nmode = "direct"\n\n[[rule]]\naction = ["traffic", "canary"]\nmode = "direct"\n'
                    'auto_rollback = true\n', source="tests: auto rollback")


async def test_auto_rollback_rolls_back_exactly_once_and_says_so(workspaces, store):
    chat = Chat(workspaces, store, policy=AUTO)
    await chat("canary fraud-api green 60")
    await chat.settle()
    await chat("demo degrade fraud-api green")
    chat.clock.advance(minutes=WINDOW + 1)
    loop = watch_loop(chat, store, workspaces)
    loop2 = Scheduler(store, workspaces, chat.gate, owner="other-replica", window_minutes=WINDOW, clock=chat.clock)
    assert [await loop.conclude_due(), await loop2.conclude_due(), await loop.conclude_due()] == [1, 0, 0]
    await chat.settle()
    assert await split_of(chat) == "Traffic: blue=90 green=10"
    [payload] = await verdicts(store)
    words = payload["card"]["fallbackText"]
    assert "↩️ Rolled back automatically by the MLOps bot: ✅ Traffic on fraud-api is now blue=90 green=10." in words
    assert [a["title"] for a in payload["card"]["actions"]] == ["History"]
    records = await store.run_transaction(audit_log.scan, write=False)
    rollbacks = [(r.event, r.actor_name) for r in records if r.action == "rollback"]
    assert rollbacks == [("executed", "MLOps bot"), ("succeeded", "MLOps bot")]
    assert [e.action for e in await history_entries(store)] == ["rollback", "canary"]
    chat.clock.advance(minutes=5)          # the rollback's outcome is on the card: never posted again
    await chat.gate.recover_operations(workspaces)

    async def texts(tx):
        return [i.payload.get("text", "") for i in await outbox.find_items(tx)]
    verdict_text, canary_outcome = await store.run_transaction(texts, write=False)
    assert verdict_text.startswith("⚠️ Degraded after the canary on fraud-api")
    assert canary_outcome == "✅ Traffic on fraud-api is now blue=40 green=60. [Workspace ml-prod (prod)]"

    async def open_watches(tx):
        return [w for w in await watches.for_endpoint(tx, "ml-prod", "fraud-api") if w.state != "done"]
    [rollback_watch] = await store.run_transaction(open_watches, write=False)
    assert (rollback_watch.action, rollback_watch.auto_rollback) == ("rollback", False)


async def test_a_watch_survives_a_restart_and_a_lost_claim_is_taken_over(chat, store, workspaces):
    await chat("traffic fraud-api blue=40 green=60")
    await chat.settle()
    chat.clock.advance(minutes=WINDOW + 1)

    async def claim(tx):      # a replica claimed it, then died before posting
        return await watches.claim_due(tx, "dead-replica", started_before=chat.clock(), now=chat.clock(),
                                       lease_seconds=60)
    assert len(await store.run_transaction(claim)) == 1
    restarted = watch_loop(chat, store, workspaces)          # a new process, same database
    assert await restarted.conclude_due() == 0                   # the lease still holds
    chat.clock.advance(minutes=2)
    assert await restarted.conclude_due() == 1
    assert len(await verdicts(store)) == 1


async def test_policies_show_auto_rollback(workspaces, store):
    chat = Chat(workspaces, store, policy=AUTO)
    shown = (await chat("policies")).text
    assert "runs at once; rolled back by itself if the endpoint degrades" in shown
    assert AUTO.rule("scale", "prod").describe() == "runs at once"


async def test_the_watch_records_a_split_changed_outside_the_bot_during_its_window(chat, store, workspaces):
    await chat("traffic fraud-api blue=50 green=50")
    await chat.settle()
    workspaces.default.service.set_traffic("fraud-api", {"blue": 100, "green": 0}).wait(None)   # the portal
    chat.clock.advance(minutes=WINDOW + 1)
    assert await watch_loop(chat, store, workspaces).conclude_due() == 1
    [payload] = await verdicts(store)
    assert "after change #1 (blue=100)" in payload["card"]["fallbackText"]
    entries = await history_entries(store)
    assert [(e.source, e.before, e.after) for e in entries] == [
        ("outside", {"blue": 50, "green": 50}, {"blue": 100}),
        ("bot", {"blue": 90, "green": 10}, {"blue": 50, "green": 50})]


async def test_a_rollback_that_leaves_a_failing_deployment_serving_is_not_called_healthy(chat, store, workspaces):
    await chat("traffic fraud-api blue=0 green=100")
    await chat.settle()
    await chat("demo degrade fraud-api green")
    loop = watch_loop(chat, store, workspaces)
    chat.clock.advance(minutes=WINDOW + 1)
    assert await loop.conclude_due() == 1                     # the change to green: degraded
    await chat("rollback fraud-api")                          # back to blue=90 green=10: green still serves 10%
    await chat.settle()
    chat.clock.advance(minutes=WINDOW + 1)
    assert await loop.conclude_due() == 1
    changed, rolled_back = await verdicts(store)
    assert changed["card"]["body"][0]["text"] == "⚠️ Degraded after the traffic on fraud-api"
    card = rolled_back["card"]
    assert_valid_card(card)
    # not worse than before the rollback (the comparison stays as it is), but not healthy either
    assert card["body"][0]["text"] == "⚠️ Still unhealthy after the rollback on fraud-api"
    green = next(d for d in workspaces.default.service.endpoint_metrics("fraud-api", WINDOW).deployments
                 if d.deployment == "green")
    lines = [b.get("text") for b in card["body"]]
    start = lines.index("Over the health thresholds")
    assert lines[start:start + 3] == [
        "Over the health thresholds",
        f"- green: p99 {green.latency_p99_ms:,.0f} ms is over 1,000 ms; 5xx {green.error_rate:.2%} is over 1%",
        "It was over them before the change too: the change neither caused this nor fixed it."]
    assert "What got worse" not in lines and "✅" not in card["fallbackText"]
    # the figures in one format (1,149 ms), as on the endpoint card
    figures = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert re.fullmatch(rf"p99 1,\d{{3}} ms → {green.latency_p99_ms:,.0f} ms, 5xx \d\.\d\d% → {green.error_rate:.2%}",
                        figures["green"]), figures
    # the button undoes the rollback, and says so
    assert [(a["title"], a["data"]["args"]) for a in card["actions"]] == [
        ("Undo this rollback", ["fraud-api", "--to", "2"]), ("History", ["fraud-api"])]
    endpoint = (await chat("endpoint fraud-api")).card["body"][2]["text"]
    assert endpoint.startswith("Deployment green is unhealthy: p99 ")


async def test_a_deployment_without_traffic_does_not_make_the_verdict_unhealthy(chat, store, workspaces):
    await chat("demo degrade fraud-api green")
    await chat("traffic fraud-api blue=100 green=0")
    await chat.settle()
    chat.clock.advance(minutes=WINDOW + 1)
    assert await watch_loop(chat, store, workspaces).conclude_due() == 1
    [payload] = await verdicts(store)
    assert payload["card"]["body"][0]["text"] == "✅ Healthy after the traffic on fraud-api"
    assert [a["title"] for a in payload["card"]["actions"]] == ["Rollback", "History"]


@pytest.mark.parametrize("typed", ["canary churn-batch green 20", "history churn-batch", "rollback churn-batch",
                                   "traffic churn-batch blue=100", "scale churn-batch blue 2", "logs churn-batch blue"])
async def test_a_batch_endpoint_where_an_online_one_is_needed_is_named_as_such(chat, typed):
    assert (await chat(typed)).text == (
        "churn-batch is a batch endpoint; canary, history, rollback, traffic, scale and logs work on online "
        "endpoints. `endpoint churn-batch` shows it, `batch churn-batch ‹input›` scores data with it.")
    assert (await chat("history fraud-apy")).text == "No endpoint named 'fraud-apy'. Did you mean `fraud-api`?"
