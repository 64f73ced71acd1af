"""The local workspace's monitors raise drift alerts by themselves: a breaching run becomes the same
alert as Azure ML's breach event, through the same path (alert store, subscriptions, outbox),
driven by the bot's scheduler loop (bot/scheduler.py), once per run and signal across replicas and
restarts, and never for the demo's history. The clock is moved by hand."""

from __future__ import annotations

import asyncio
import json

import pytest

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService
from adapters.storage import ConversationRecord, alerts, outbox
from bot.app import STORAGE, SCHEDULER, create_app
from bot.settings import load_settings
from bot.scheduler import Scheduler
from commands.base.context import Workspaces
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn

START = Clock().moment                       # Thu 26 Nov 2026 09:00 UTC: the demo is seeded then
CHANNEL = "19:ml-alerts@thread.tacv2"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


async def items(store):
    return await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)


async def subscribe(store, chat: Chat, conversation: str, words: str) -> None:
    await store.save_conversation(ConversationRecord(conversation, "channel", {"conversation": {"id": conversation}},
                                                     "t1", "", "", "", START))
    assert (await chat(words, conversation=conversation)).text.startswith("Subscribed this chat")


def figure_rows(card: dict) -> list[str]:
    words = card["fallbackText"].splitlines()
    start = words.index("Feature  Metric  Value  Threshold  Level, change") + 1
    return [line for line in words[start:] if "  " in line and "=" not in line]


async def test_a_breaching_local_run_alerts_each_subscriber_once_and_fires_again_on_the_same_card(
        clocked, store, clock, tmp_path, pools):
    chat = Chat(clocked, store, clock=clock)
    loop = Scheduler(store, clocked, chat.gate, owner="replica-1", clock=clock)
    assert await loop.alert_monitor_breaches() == 0          # no drift subscription: nothing to compute
    await subscribe(store, chat, "c-all", "subscribe drift")
    await subscribe(store, chat, "c-churn", "subscribe drift --model churn-model")   # churn stays quiet

    # the demo's history breached almost every day, but it is history: nothing is posted
    assert "Runs: 7 in the last 7 days, 4 breached" in (await chat("drift fraud-model")).text
    assert await loop.run_once() == 0

    # 27 Nov 03:00: fraud-model-monitor's run breaches data drift and prediction drift
    clock.advance(days=1)
    assert await loop.run_once() == 2
    first = await items(store)
    assert [(i.conversation_id, i.dedupe_key, "update_of" in i.payload) for i in first] == [
        ("c-all", "alert:1:r1:c-all", False), ("c-all", "alert:2:r1:c-all", False)]
    data_drift, prediction_drift = (i.payload["card"] for i in first)
    for card in (data_drift, prediction_drift):
        assert_valid_card(card)
    words = data_drift["fallbackText"].splitlines()
    # issue 19: a headline under the title (model, worst figure, its level), times in the reader's
    # zone ({{DATE()}} {{TIME()}} on the card, read back as UTC in the plain-text form)
    assert words[:13] == [
        "🟠 Drift: monitor fraud-model-monitor breached its thresholds", "Workspace ml-prod · alert #1",
        "fraud-model: worst merchant_category, JSD 0.2429 (breached)", "Monitor: fraud-model-monitor",
        "Signal: data-drift", "Model: fraud-model", "Endpoint: fraud-api",
        "Deployment: blue", "Run: fraud-model-monitor-202611270300", "Status: Firing", "At: 2026-11-27 03:00 UTC",
        "Endpoint at 09:00 UTC: Healthy: p99 101 ms, 5xx 0.07%",          # its health when the alert went out
        "Computed by the local workspace with the bot's drift engine. Threshold breached: data-drift, "
        "prediction-drift."]
    # every feature of the signal, worst first, with its level in words and its change since the previous run
    # (issue #22 item 4 added the last column)
    assert figure_rows(data_drift) == [
        "merchant_category  JSD  0.2429 ⚠  > 0.1  far above threshold, +0.04578 since the last run",
        "merchant_category  PSI (significant)  0.3343 ⚠  > 0.25  past threshold, +0.1155 since the last run",
        "customer_age  NWD  0.06449  > 0.1  within threshold, +0.01444 since the last run",
        "transaction_amount  NWD  0.05991  > 0.1  within threshold, +0.02773 since the last run",
        "hour_of_day  NWD  0.02403  > 0.1  within threshold, -0.02092 since the last run",
        "country  JSD  0.02365  > 0.1  within threshold, -0.0166 since the last run",
        "customer_age  PSI (none)  0.01754  > 0.25  within threshold, +0.0115 since the last run",
        "hour_of_day  PSI (none)  0.01126  > 0.25  within threshold, -0.002714 since the last run",
        "transaction_amount  PSI (none)  0.007459  > 0.25  within threshold, +0.001633 since the last run",
        "country  PSI (none)  0.002878  > 0.25  within threshold, -0.00574 since the last run"]
    assert figure_rows(prediction_drift) == [
        "fraud_score  NWD  0.3204 ⚠  > 0.1  far above threshold, +0.1043 since the last run",
        "fraud_score  PSI (moderate)  0.1061  > 0.25  within threshold, +0.04943 since the last run"]
    # the figures `drift` shows for that run
    assert "merchant_category (categorical)  JSD 0.243 > 0.1" in (await chat("drift fraud-model")).text
    # the same key as Azure ML's breach event of that monitor and signal
    alert = await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert (alert.key, alert.kind, alert.fired_count) == ("drift:ml-prod:fraud-model-monitor:data-drift", "drift", 1)

    # each run is alerted once: the next pass, another replica, a restarted bot find nothing new
    assert await loop.run_once() == 0
    other_replica = Scheduler(store, clocked, chat.gate, owner="replica-2", clock=clock)
    assert await other_replica.run_once() == 0
    restarted_local = LocalWorkspace(tmp_path / "clocked.db", clock=clock)
    restarted = Workspaces([NonBlockingService(restarted_local, name="ml-prod", environment="prod", pool=pools[0],
                                               timeout=30)])
    assert await Scheduler(store, restarted, chat.gate, owner="replica-3", clock=clock).run_once() == 0
    restarted_local.close()
    assert len(await items(store)) == 2

    # the next day's run fires the same alerts again: both cards are edited, nothing new is posted
    clock.advance(days=1)
    assert await other_replica.run_once() == 2
    again = (await items(store))[2:]
    assert [(i.dedupe_key, i.payload["update_of"]) for i in again] == [
        ("alert:1:r2:c-all", "alert:1:r1:c-all"), ("alert:2:r2:c-all", "alert:2:r1:c-all")]
    assert "Status: Firing (fired 2 times since 2026-11-27 09:00 UTC)" in again[0].payload["text"]
    assert "Run: fraud-model-monitor-202611280300" in again[0].payload["text"]

    # the bot was down for two days: both runs are alerted when it is back, oldest first, on the same cards
    clock.advance(days=2)
    assert await loop.run_once() == 4
    latest = await items(store)
    assert [i.payload["update_of"] for i in latest[4:]] == ["alert:1:r1:c-all", "alert:2:r1:c-all"] * 2
    assert "Run: fraud-model-monitor-202611300300" in latest[-1].payload["text"]
    alert = await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert alert.fired_count == 4
    assert not [i for i in latest if i.conversation_id == "c-churn"]


async def test_a_run_older_than_the_first_drift_subscription_is_not_news(clocked, store, clock):
    chat = Chat(clocked, store, clock=clock)
    loop = Scheduler(store, clocked, chat.gate, owner="replica-1", clock=clock)
    clock.advance(days=1)                         # 27 Nov 09:00: the 03:00 run breached, nobody listened
    await subscribe(store, chat, "c-all", "subscribe drift --workspace ml-prod")
    assert await loop.run_once() == 0
    clock.advance(days=1)
    assert await loop.run_once() == 2
    assert ["Run: fraud-model-monitor-202611280300" in i.payload["text"] for i in await items(store)] == [True, True]


# ---------------------------------------------------------------- over HTTP, through the CloudAdapter


async def test_over_http_the_scheduler_posts_a_local_drift_alert_in_the_subscribed_channel(
        aiohttp_server, tmp_path, monkeypatch, clocked, clock):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id)
    app = create_app(settings, workspaces=clocked, clock=clock)
    server = await aiohttp_server(app)

    def alert_cards():
        return [s for s in teams.connector.sent if s.card and CHANNEL in s.path and "alert #" in json.dumps(s.card)]

    async def until(predicate) -> None:
        async def poll() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), 10)

    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [answer] = await teams.say("subscribe drift --model fraud-model", mention=True, kind="channel",
                                   conversation=CHANNEL + ";messageid=1732600000000")
        assert answer.text.startswith("Subscribed this channel: #1 drift (model fraud-model).")

        clock.advance(days=1)
        # what the loop does on its next pass; the app's own loop may take the pass first (then this
        # one finds nothing left to do), so the test asserts what reaches the channel, not the count
        await app[SCHEDULER].run_once()
        await until(lambda: len(alert_cards()) == 2)
        posted = alert_cards()
        assert [(s.method, s.conversation_id) for s in posted] == [("POST", CHANNEL), ("POST", CHANNEL)]
        assert [s.card["fallbackText"].splitlines()[4] for s in posted] == ["Signal: data-drift",
                                                                             "Signal: prediction-drift"]
        status, body = await teams.click(posted[0].card, "Acknowledge", conversation=CHANNEL, kind="channel")
        assert status == 200 and "Acknowledged: by Alice Analyst" in body["value"]["fallbackText"]
        await until(lambda: any(s.method == "PUT" for s in teams.connector.sent))     # the channel's copy, edited

        clock.advance(days=1)
        before = len(teams.connector.sent)
        await app[SCHEDULER].run_once()                          # or the app's loop: the edits are what count
        await until(lambda: len(teams.connector.sent) >= before + 2)
        edits = [s for s in teams.connector.sent[before:] if s.card and "alert #" in json.dumps(s.card)]
        assert sorted((s.method, s.card["fallbackText"].splitlines()[1]) for s in edits) == [
            ("PUT", "Workspace ml-prod · alert #1"), ("PUT", "Workspace ml-prod · alert #2")]
        assert sorted(s.path.rsplit("/", 1)[1] for s in edits) == sorted(      # the connector numbers activities
            f"activity-{teams.connector.sent.index(s) + 1}" for s in posted)
        assert all("fired 2 times" in s.card["fallbackText"] for s in edits)
        assert "Acknowledged: by Alice Analyst" in next(s for s in edits if "alert #1" in s.card["fallbackText"]).card[
            "fallbackText"]
        assert await app[SCHEDULER].run_once() == 0
        assert await app[STORAGE].run_transaction(lambda tx: alerts.get(tx, 3), write=False) is None


def test_a_run_is_read_only_while_its_dedupe_key_is_remembered():
    from bot.ingress import INBOX_DAYS
    from bot.scheduler import LOCAL_BREACH_DAYS
    assert (LOCAL_BREACH_DAYS, INBOX_DAYS) == (6, 7)     # pruned keys belong to runs no longer read
