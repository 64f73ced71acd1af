"""Subscriptions (who hears what), publishing events into the outbox, and the alert card itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from adapters.azureml.events import RESOLVED, Figure
from adapters.service import Unavailable
from adapters.storage import ConversationRecord, alerts, conversations, outbox
from adapters.storage import subscriptions as subscription_table
from adapters.storage.subscriptions import NewSubscription
from commands.alerts.alerts import publish
from commands.base.context import Role, User
from commands.changes.policy import parse_policy
from tests.conftest import Chat
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 - fixtures
from tests.unit.test_subscriptions import NOW, drift_event

VIEWERS_MAY = parse_policy('[subscriptions]\nrole = "viewer"\n[[rule]]\nmode = "direct"\n')


# ---------------------------------------------------------------- commands

async def test_operators_manage_subscriptions_by_default_and_everyone_lists_them(workspaces, store):
    viewer = Chat(workspaces, store, Role.VIEWER)
    operator = Chat(workspaces, store, Role.OPERATOR)
    refused = await viewer("subscribe drift")
    assert refused.text == ("Managing subscriptions needs the Operator role; you have Viewer. Ask a bot admin to "
                            "grant it (the policy's [subscriptions] role sets who may).")
    assert (await operator("subscribe drift --model fraud-model")).text.startswith(
        "Subscribed this chat: #1 drift (model fraud-model).")
    assert (await operator("subscribe drift --model fraud-model")).text == (
        "This chat already has that subscription: #1 drift (model fraud-model).")
    await operator("subscribe alerts --severity sev1 --workspace ML-PROD")
    listed = await viewer("subscriptions")
    assert "#1 drift (model fraud-model) · by Dana Dev" in listed.text
    assert "#2 alerts (workspace ml-prod, severity ≤ Sev1) · by Dana Dev" in listed.text
    assert (await viewer("unsubscribe 1")).text.startswith("Managing subscriptions needs the Operator role")
    assert (await operator("unsubscribe 1", conversation="another-chat")).text == (
        "This chat has no subscription 1. `subscriptions` lists them.")
    assert (await operator("unsubscribe alerts")).text == (
        "Removed #2 alerts (workspace ml-prod, severity ≤ Sev1).")
    assert (await operator("unsubscribe #1")).text == "Removed #1 drift (model fraud-model)."
    assert "No subscriptions." in (await viewer("subscriptions")).text


async def test_the_policy_decides_who_may_subscribe(workspaces, store):
    viewer = Chat(workspaces, store, Role.VIEWER, policy=VIEWERS_MAY)
    assert (await viewer("subscribe jobs")).text.startswith("Subscribed this chat: #1 jobs (everything).")
    admins_only = parse_policy('[subscriptions]\nrole = "admin"\n')
    operator = Chat(workspaces, store, Role.OPERATOR, policy=admins_only)
    assert (await operator("unsubscribe jobs")).text.startswith("Managing subscriptions needs the Admin role")


@pytest.mark.parametrize("text,answer", [
    ("subscribe drfit", "Unknown kind 'drfit' (use one of drift, alerts, jobs, models, approvals, posture)."),
    ("subscribe alerts --severity high", "Unknown severity 'high' (use one of Sev0, Sev1, Sev2, Sev3, Sev4)"),
    ("subscribe drift --workspace ml-prdo", "No workspace named 'ml-prdo'. Did you mean `ml-prod`?"),
    ("unsubscribe drfit", "'drfit' is neither a subscription number nor a kind (drift, alerts, jobs, models, "
                          "approvals, posture). Did you mean `drift`?"),
    ("snooze 1 forever", "'forever' is not a duration like 30m, 4h or 2d"),
    ("snooze 1 8d", "An alert can be snoozed for at most 7 days."),
    ("acknowledge 99", "There is no alert #99."),
])
async def test_bad_words_get_a_clear_answer(chat, text, answer):
    assert answer in (await chat(text)).text


async def test_a_model_or_endpoint_filter_must_name_one_the_workspace_has(chat, workspaces, monkeypatch):
    # a typo would make a subscription that never matches: refused, with what was probably meant
    assert (await chat("subscribe drift --model fraud-modle")).text == (
        "No model named 'fraud-modle' in workspace ml-prod. Did you mean `fraud-model`? `models` lists them.")
    assert (await chat("subscribe drift --endpoint fraud-apl --workspace ml-prod")).text == (
        "No endpoint named 'fraud-apl' in workspace ml-prod. Did you mean `fraud-api`? `endpoints` lists them.")
    assert (await chat("subscribe alerts --endpoint nowhere")).text == (
        "No endpoint named 'nowhere' in workspace ml-prod. `endpoints` lists them.")
    assert (await chat("subscriptions")).text.count("#") == 0
    # known names are kept in the workspace's spelling
    assert (await chat("subscribe drift --model FRAUD-MODEL --endpoint Fraud-Api")).text == (
        "Subscribed this chat: #1 drift (model fraud-model, endpoint fraud-api). `subscriptions` lists them; "
        "`unsubscribe 1` stops it.")

    # a workspace that cannot list its names: the filter is kept as typed, and the answer says so
    def unreachable(kind):
        raise Unavailable("The workspace did not answer to names within 30 s.")
    monkeypatch.setattr(workspaces.default.service, "names", unreachable)
    workspaces.default.reads.invalidate()     # the names read above would be reused for a few seconds
    assert (await chat("subscribe drift --model fraud-modle")).text == (
        "Subscribed this chat: #2 drift (model fraud-modle). `subscriptions` lists them; `unsubscribe 2` stops "
        "it. I could not list the models of ml-prod to check 'fraud-modle', so it is kept as typed: it matches "
        "only events that name exactly that model.")


# ---------------------------------------------------------------- matching

# ---------------------------------------------------------------- publishing

async def subscribed(store, chat_as, conversation: str, words: str) -> None:
    await store.save_conversation(ConversationRecord(conversation, "channel", {"conversation": {"id": conversation}},
                                                     "t1", "", "", "", NOW))
    assert (await chat_as(words, conversation=conversation)).text.startswith("Subscribed")


async def items(store):
    return await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)


async def test_publishing_posts_once_then_edits_and_respects_snooze_resolution_and_gone(chat, store):
    await subscribed(store, chat, "c-one", "subscribe drift")
    await subscribed(store, chat, "c-two", "subscribe drift --endpoint fraud-api")
    await subscribed(store, chat, "c-three", "subscribe drift --endpoint churn-api")

    assert await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW)) == 2
    first = await items(store)
    assert [(i.conversation_id, i.dedupe_key, "update_of" in i.payload) for i in first] == [
        ("c-one", "alert:1:r1:c-one", False), ("c-two", "alert:1:r1:c-two", False)]

    # fires again: edits both cards
    again = drift_event(id="e2", figures=(Figure("amount", "normalized_wasserstein_distance", 0.5, 0.1),))
    assert await store.run_transaction(lambda tx: publish(tx, again, NOW + timedelta(hours=1))) == 2
    second = (await items(store))[2:]
    assert [(i.conversation_id, i.payload["update_of"]) for i in second] == [
        ("c-one", "alert:1:r1:c-one"), ("c-two", "alert:1:r1:c-two")]
    alert = await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert (alert.fired_count, alert.history, alert.revision) == (2, [0.3, 0.5], 2)

    # a new conversation subscribes while the alert is snoozed: it gets nothing new; the others are edited
    await store.run_transaction(lambda tx: alerts.snooze(tx, 1, "Dana Dev", NOW + timedelta(days=1)))
    await subscribed(store, chat, "c-four", "subscribe drift")
    await store.run_transaction(lambda tx: conversations.mark_conversation_gone(tx, "c-two", NOW))
    assert await store.run_transaction(lambda tx: publish(tx, drift_event(id="e3"), NOW + timedelta(hours=2))) == 1
    assert [i.conversation_id for i in (await items(store))[4:]] == ["c-one"]

    # resolved: edits the card where there is one, never posts a new one
    assert await store.run_transaction(lambda tx: publish(tx, drift_event(id="e4", status=RESOLVED),
                                                          NOW + timedelta(hours=3))) == 1
    last = (await items(store))[-1]
    assert (last.conversation_id, last.payload["update_of"]) == ("c-one", "alert:1:r1:c-one")
    assert last.payload["card"]["body"][0]["text"] == "✅ Resolved: Drift on fraud-model"


# ---------------------------------------------------------------- the card

# ---------------------------------------------------------------- on both databases


async def test_subscriptions_and_alerts_tables_on_sqlite_and_postgresql(storage):  # noqa: F811
    new = NewSubscription("c-one", "drift", tenant_id="t1", model="fraud-model", created_by_id="u1",
                          created_by_name="Dana Dev")
    first, created = await storage.run_transaction(lambda tx: subscription_table.add(tx, new, NOW))
    again, created_again = await storage.run_transaction(lambda tx: subscription_table.add(tx, new, NOW))
    assert (first.id, created, again.id, created_again, first.created_at) == (1, True, 1, False, NOW)
    await storage.save_conversation(ConversationRecord("c-one", "channel", {"conversation": {"id": "c-one"}},
                                                       "t1", "", "", "", NOW))
    assert await storage.run_transaction(lambda tx: publish(tx, drift_event(), NOW)) == 1
    assert await storage.run_transaction(lambda tx: publish(tx, drift_event(id="e2"), NOW)) == 1
    acknowledged = await storage.run_transaction(lambda tx: alerts.acknowledge(tx, 1, "Bob Builder", NOW))
    assert (acknowledged.acknowledged_by, acknowledged.acknowledged_at, acknowledged.fired_count,
            acknowledged.history, acknowledged.event["monitor"]) == ("Bob Builder", NOW, 2, [0.3, 0.3],
                                                                     "fraud-monitor")
    assert await storage.run_transaction(lambda tx: alerts.cards(tx, 1), write=False) == [("c-one", "alert:1:r1:c-one")]
    removed = await storage.run_transaction(lambda tx: subscription_table.remove(tx, "c-one", kind="drift"))
    assert [s.id for s in removed] == [1]


async def test_two_replicas_receiving_the_same_event_at_once_accept_it_once(make_storage):  # noqa: F811
    import json as _json

    from bot.ingress import Ingress

    one, two = make_storage(), make_storage()
    await one.open()
    await two.open()
    await one.save_conversation(ConversationRecord("c-one", "channel", {"conversation": {"id": "c-one"}},
                                                   "t1", "", "", "", NOW))
    await one.run_transaction(lambda tx: subscription_table.add(tx, NewSubscription("c-one", "drift"), NOW))
    replicas = [Ingress(store, "k" * 32, clock=lambda: NOW, wake=lambda: None) for store in (one, two)]
    answers = await asyncio.gather(*(r._accept([drift_event(id="same")], "eventgrid") for r in replicas),
                                   *(r._accept([drift_event(id=f"other-{n}")], "eventgrid")
                                     for n, r in enumerate(replicas)))
    bodies = [_json.loads(a.text) for a in answers]
    assert sorted((b["accepted"], b["duplicates"]) for b in bodies[:2]) == [(0, 1), (1, 0)]
    assert [b["accepted"] for b in bodies[2:]] == [1, 1]
    alert = await one.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert alert.fired_count == 3
    queued = await one.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    assert [("update_of" in i.payload) for i in queued] == [False, True, True]     # one card, edited twice


async def test_a_redelivered_acknowledge_is_recorded_once(chat, store):
    from adapters.storage import audit
    await subscribed(store, chat, "c-one", "subscribe drift")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    first = await chat.click("acknowledge", "1", activity_id="click-1", conversation="c-one")
    again = await chat.click("acknowledge", "1", activity_id="click-1", conversation="c-one")
    assert "Acknowledged: by Dana Dev" in first.text and "Acknowledged: by Dana Dev" in again.text
    records = await store.run_transaction(lambda tx: audit.scan(tx), write=False)
    assert [r.event for r in records].count("acknowledged") == 1
    updates = [i for i in await items(store) if i.payload.get("update_of")]
    assert len(updates) == 1


async def test_the_first_acknowledgement_stays_and_a_second_is_told_who_has_it(chat, store):
    from adapters.storage import audit
    await subscribed(store, chat, "c-one", "subscribe drift")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    chat.clock.advance(minutes=43)
    first = await chat.click("acknowledge", "1", conversation="c-one")
    assert "Acknowledged: by Dana Dev, 2026-11-26 09:43 UTC" in first.text
    before = await items(store)

    chat.clock.advance(minutes=5)
    bob = chat.as_(User(id="bob-1", name="Bob Builder", tenant_id="t1"))
    second = await bob.click("acknowledge", "1", conversation="c-one")
    assert (second.text, second.card) == ("Already acknowledged by Dana Dev at 09:43 UTC.", None)
    assert (await bob("acknowledge 1")).text == "Already acknowledged by Dana Dev at 09:43 UTC."
    chat.clock.advance(days=1)
    assert (await bob("acknowledge 1")).text == "Already acknowledged by Dana Dev on 2026-11-26 09:43 UTC."

    alert = await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.revision) == (
        "Dana Dev", NOW + timedelta(minutes=43), 2)
    assert await items(store) == before                         # no card edited
    records = await store.run_transaction(lambda tx: audit.scan(tx), write=False)
    assert [(r.event, r.actor_name) for r in records if r.action == "alert"] == [("acknowledged", "Dana Dev")]


def action_args(card, title):
    """Issue 19: the Rollback button is titled with what it restores ("Undo #4 …"): found by its verb."""
    verb = title.lower()
    return [a["data"]["args"] for a in card["actions"] if a.get("verb") == verb and a["type"] == "Action.Execute"]


async def test_rollback_is_offered_only_when_the_bot_recorded_a_traffic_change_to_undo(chat, store):
    from adapters.storage import traffic_history
    await subscribed(store, chat, "c-one", "subscribe drift")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    [posted] = await items(store)
    assert action_args(posted.payload["card"], "Rollback") == []        # it could only say "Nothing to roll back"
    assert [a["title"] for a in posted.payload["card"]["actions"]] == ["Retrain", "Acknowledge", "Snooze", "Resolve"]

    def change(endpoint, before, after, workspace="ml-prod"):
        return lambda tx: traffic_history.add(tx, traffic_history.NewEntry(
            workspace=workspace, endpoint=endpoint, at=NOW, action="traffic", before=before, after=after,
            actor_id="dev-1", actor_name="Dana Dev"))
    await store.run_transaction(change("fraud-api", {}, {"blue": 100}))                  # #1: nothing before it
    await store.run_transaction(change("churn-api", {"blue": 100}, {"blue": 50, "green": 50}))   # #2: another endpoint
    await store.run_transaction(change("fraud-api", {"blue": 100}, {"blue": 50}, workspace="ml-dev"))  # #3
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e2"), NOW + timedelta(hours=1)))
    assert action_args((await items(store))[-1].payload["card"], "Rollback") == []

    await store.run_transaction(change("fraud-api", {"blue": 100}, {"blue": 90, "green": 10}))   # #4
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e3"), NOW + timedelta(hours=2)))
    edited = (await items(store))[-1]
    assert edited.payload["update_of"] == "alert:1:r1:c-one"
    assert action_args(edited.payload["card"], "Rollback") == [["fraud-api", "--to", "4", "--workspace", "ml-prod"]]
    clicked = await chat.click("snooze", "1", conversation="c-one")      # the card a click answers with, too
    assert action_args(clicked.card, "Rollback") == [["fraud-api", "--to", "4", "--workspace", "ml-prod"]]
    rolled = await chat.click("rollback", *action_args(clicked.card, "Rollback")[0], conversation="c-one")
    assert rolled.text == ("⏳ Traffic on fraud-api is moving to blue=100. Azure ML is applying it; I'll post here "
                           "when it's done. [Workspace ml-prod (prod)]")


async def test_when_the_first_card_is_lost_the_next_firing_posts_a_new_one_and_edits_that(chat, store):
    await subscribed(store, chat, "c-one", "subscribe drift")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    await store.run_transaction(lambda tx: tx.execute("DELETE FROM outbox"))        # pruned after 30 days
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e2"), NOW + timedelta(days=31)))
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e3"), NOW + timedelta(days=32)))
    assert [(i.dedupe_key, i.payload.get("update_of")) for i in await items(store)] == [
        ("alert:1:r2:c-one", None), ("alert:1:r3:c-one", "alert:1:r2:c-one")]


async def test_policies_say_who_may_manage_subscriptions(workspaces, store):
    assert "Subscriptions (`subscribe`, `unsubscribe`): Operators and above." in (
        await Chat(workspaces, store)("policies")).text
    assert "Subscriptions (`subscribe`, `unsubscribe`): Viewers and above." in (
        await Chat(workspaces, store, policy=VIEWERS_MAY)("policies")).text
