"""Issue 19 items 5 and 6: the alert card that reads in five seconds, and the alert lifecycle
(list, acknowledge, snooze, unsnooze, note, assign, resolve) with escalation through the outbox."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from adapters.azureml.events import FIRED, RESOLVED, Event, Figure, parse_common_alert
from adapters.storage import ConversationRecord, alerts, audit, outbox
from bot.app import SCHEDULER, create_app
from bot.settings import load_settings
from bot.scheduler import Scheduler
from commands.alerts.alert_card import AlertState, Undo, alert_card, headline, level
from commands.alerts.alerts import escalate, publish
from commands.base.context import Role
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 - fixtures
from tests.teams_client import ALICE, BOB, TeamsStandIn

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
BOB_ID = "00000000-0000-0000-0000-000000000b0b"


def drift_event(**overrides) -> Event:
    values = dict(id="e1", kind="drift", type="local", key="drift:ml-prod:fraud-monitor:data-drift", status=FIRED,
                  title="Drift on fraud-model", workspace="ml-prod", model="fraud-model", endpoint="fraud-api",
                  monitor="fraud-monitor", signal="data-drift", time="2026-11-26T09:00:00Z",
                  figures=(Figure("amount", "population_stability_index", 0.31, 0.25),
                           Figure("age", "normalized_wasserstein_distance", 0.05, 0.1)))
    values.update(overrides)
    return Event(**values)


def texts(card: dict) -> list[str]:
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(card)
    return found


# ---------------------------------------------------------------- item 5: the card


@pytest.mark.parametrize("figure,words", [
    (Figure("amount", "population_stability_index", 0.05, 0.25), "no drift"),
    (Figure("amount", "population_stability_index", 0.1, 0.25), "moderate drift"),
    (Figure("amount", "population_stability_index", 0.25, 0.25), "moderate drift"),
    (Figure("amount", "population_stability_index", 0.26, 0.25), "significant drift"),
    (Figure("amount", "normalized_wasserstein_distance", 0.3, 0.1), "breached"),
    (Figure("amount", "normalized_wasserstein_distance", 0.05, 0.1), "within threshold"),
    (Figure("age", "two_sample_kolmogorov_smirnov_test", 0.01, 0.05), "breached"),      # a p-value: below breaches
    (Figure("Requests", "Requests", 3.0, 5.0, "<"), "breached"),                        # LessThan: below breaches
    (Figure("Requests", "Requests", 7.0, 5.0, "<"), "within threshold"),
])
def test_the_level_is_said_in_the_seeds_words(figure, words):
    assert level(figure) == words


def test_the_headline_names_the_model_worst_feature_level_and_change_since_the_last_firing():
    state = AlertState(7, FIRED, 2, NOW, history=(0.2, 0.31),
                       history_at=(datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc), NOW))
    said = headline(drift_event(), state)
    assert said == ("fraud-model: worst amount, PSI 0.31 (significant drift) · worse than at "
                    "{{TIME(2026-11-26T02:00:00Z)}} (0.2)")
    card = alert_card(drift_event(), state, NOW)
    assert_valid_card(card)
    assert card["body"][2] == {"type": "TextBlock", "text": said, "wrap": True, "weight": "Bolder", "spacing": "Small"}
    # the plain-text form reads the reader's-time functions back as UTC
    assert card["fallbackText"].splitlines()[2] == ("fraud-model: worst amount, PSI 0.31 (significant drift) · "
                                                    "worse than at 02:00 UTC (0.2)")
    better = AlertState(7, FIRED, 2, NOW, history=(0.5, 0.31), history_at=(NOW, NOW))
    assert headline(drift_event(), better).endswith("better than at {{TIME(2026-11-26T09:00:00Z)}} (0.5)")
    assert "worse" not in headline(drift_event(), AlertState(7, FIRED, 1, NOW, history=(0.31,)))


def test_times_are_in_the_readers_time_zone_with_adaptive_card_functions():
    state = AlertState(7, FIRED, 3, NOW, acknowledged_by="Dana Dev", acknowledged_at=NOW + timedelta(minutes=3),
                       snoozed_by="Dana Dev", snoozed_until=NOW + timedelta(hours=4), assignee="Bob Builder",
                       last_note=("Bob Builder", NOW + timedelta(minutes=5), "restarted the scorer"), notes=2)
    card = alert_card(drift_event(), state, NOW)
    assert_valid_card(card)
    shown = texts(card)
    assert "Status: Firing (fired 3 times since {{DATE(2026-11-26T09:00:00Z, SHORT)}} " \
           "{{TIME(2026-11-26T09:00:00Z)}})" in shown
    assert "At: {{DATE(2026-11-26T09:00:00Z, SHORT)}} {{TIME(2026-11-26T09:00:00Z)}}" in shown
    assert "Acknowledged: by Dana Dev, {{DATE(2026-11-26T09:03:00Z, SHORT)}} {{TIME(2026-11-26T09:03:00Z)}}" in shown
    assert "Snoozed: until {{DATE(2026-11-26T13:00:00Z, SHORT)}} {{TIME(2026-11-26T13:00:00Z)}} by Dana Dev" in shown
    assert "Assigned to: Bob Builder" in shown
    assert ("Note: restarted the scorer (Bob Builder, {{DATE(2026-11-26T09:05:00Z, SHORT)}} "
            "{{TIME(2026-11-26T09:05:00Z)}}) (2 notes: `alerts 7`)") in shown
    # a sender's text can never smuggle a function in: `plain` parts its braces
    sneaky = alert_card(drift_event(time="{{DATE(2026-11-26T09:00:00Z, SHORT)}}"), state, NOW)
    assert "{{DATE" not in [t for t in texts(sneaky) if t.startswith("At:")][0]


def test_the_legend_is_behind_a_toggle_and_the_snooze_offers_three_lengths():
    card = alert_card(drift_event(), AlertState(7, FIRED, 1, NOW), NOW)
    assert_valid_card(card)
    [toggle_set] = [b for b in card["body"] if b["type"] == "ActionSet"]
    assert toggle_set["actions"] == [{"type": "Action.ToggleVisibility", "title": "What do these figures mean?",
                                      "targetElements": ["legend"]}]
    [legend] = [b for b in card["body"] if b.get("id") == "legend"]
    assert legend["isVisible"] is False
    assert [t["text"][:6] for t in legend["items"]] == ["PSI = ", "NWD = ", "PSI ba", "Level:"]   # + how levels read
    [snooze] = [a for a in card["actions"] if a["title"] == "Snooze"]
    assert snooze["type"] == "Action.ShowCard"
    assert [(a["title"], a["verb"], a["data"]) for a in snooze["card"]["actions"]] == [
        ("1 h", "snooze", {"args": ["7", "1h"], "refresh": True}),
        ("4 h", "snooze", {"args": ["7", "4h"], "refresh": True}),
        ("24 h", "snooze", {"args": ["7", "24h"], "refresh": True})]
    assert "Snooze: 1 h (`snooze 7 1h`), 4 h (`snooze 7 4h`), 24 h (`snooze 7 24h`)" in card["fallbackText"]


def test_the_rollback_button_says_what_it_restores_and_is_absent_when_nothing_changed():
    undo = Undo(1, NOW - timedelta(minutes=5), before={"blue": 90, "green": 10}, after={"blue": 50, "green": 50})
    card = alert_card(drift_event(), AlertState(7, FIRED, 1, NOW), NOW, undo)
    assert_valid_card(card)
    [button] = [a for a in card["actions"] if a.get("verb") == "rollback"]
    assert button["title"] == "Undo #1 (5 min ago): blue=50 green=50 → blue=90 green=10"
    assert button["data"]["args"] == ["fraud-api", "--to", "1", "--workspace", "ml-prod"]
    nothing = alert_card(drift_event(), AlertState(7, FIRED, 1, NOW), NOW)
    assert not [a for a in nothing["actions"] if a.get("verb") == "rollback"]


def metric_alert(operator: str, value: float, threshold: str) -> dict:
    """Azure Monitor's common alert schema, metric alert (Microsoft's published sample, see
    tests/fixtures/azure/SOURCES.md), with the condition's operator, value and threshold set."""
    from tests.test_ingress import WORKSPACE_TOPIC, fired_alert
    body = fired_alert()
    body["data"]["essentials"]["alertTargetIDs"] = [WORKSPACE_TOPIC + "/onlineEndpoints/fraud-api"]
    [criterion] = body["data"]["alertContext"]["condition"]["allOf"]
    criterion.update(metricName="RequestsPerMinute", operator=operator, metricValue=value, threshold=threshold,
                     dimensions=[{"name": "deployment", "value": "blue"}])
    return body


def test_an_azure_monitor_metric_alert_has_its_own_layout_with_the_operator_of_its_rule():
    event = parse_common_alert(metric_alert("LessThan", 3.0, "5"))
    assert [(f.metric, f.value, f.threshold, f.operator) for f in event.figures] == [
        ("RequestsPerMinute", 3.0, 5.0, "<")]
    card = alert_card(event, AlertState(3, FIRED, 1, NOW), NOW)
    assert_valid_card(card)
    words = card["fallbackText"].splitlines()
    at = words.index("Condition")
    assert words[at:at + 5] == ["Condition", "Metric: RequestsPerMinute", "Value: 3 ⚠", "Threshold: < 5 (breached)",
                                "Resource: fraud-api / blue"]
    assert not any(line.startswith("Feature  Metric") for line in words)        # not the drift table
    assert words[2] == "fraud-api: RequestsPerMinute 3 < 5, breached"
    # `>` rules keep their direction too
    above = alert_card(parse_common_alert(metric_alert("GreaterThanOrEqual", 9.0, "5")), AlertState(3, FIRED, 1, NOW),
                       NOW)
    assert "Threshold: ≥ 5 (breached)" in above["fallbackText"]


# ---------------------------------------------------------------- item 6: the lifecycle


async def channel(store, name: str = "c-one") -> None:
    await store.save_conversation(ConversationRecord(name, "channel", {"conversation": {"id": name}},
                                                     "t1", "", "", "", NOW))


async def queued(store):
    return await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)


async def test_alerts_lists_each_state_with_who_is_on_it(chat, store):
    await channel(store)
    assert (await chat("subscribe drift fraud-model", conversation="c-one")).text.startswith(
        "Subscribed this chat: #1 drift (model fraud-model).")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e2", key="k2", title="Drift two"), NOW))
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e3", key="k3", title="Drift three"), NOW))
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e4", key="k4", title="Drift four"), NOW))
    assert (await chat("acknowledge 2")).text.count("Acknowledged: by Dana Dev") == 1
    await chat("snooze 3 4h")
    resolved = await chat("resolve 4")
    assert "Resolved: by Dana Dev, 2026-11-26 09:00 UTC" in resolved.text
    assert resolved.card["body"][0]["text"] == "✅ Resolved: Drift four"
    listed = await chat("alerts")
    assert listed.card["body"][0]["text"] == "Alerts (1 open, 1 acknowledged, 1 snoozed, 1 resolved)"
    lines = [line for line in listed.text.splitlines() if line.startswith(("🔴", "🟡", "💤", "✅"))]
    assert [line.split("  Actions")[0] for line in lines] == [
        "🔴 #1 open · Drift on fraud-model · since 2026-11-26 09:00 UTC · nobody on it",
        "🟡 #2 acknowledged · Drift two · since 2026-11-26 09:00 UTC · Dana Dev on it",
        "💤 #3 snoozed · Drift three · since 2026-11-26 09:00 UTC · snoozed by Dana Dev until 2026-11-26 13:00 UTC",
        "✅ #4 resolved · Drift four · since 2026-11-26 09:00 UTC · resolved by Dana Dev"]
    assert_valid_card(listed.card)
    assert (await chat("resolve 4")).text == "Alert #4 is already resolved by Dana Dev (2026-11-26 09:00 UTC)."
    assert (await chat("unsnooze 1")).text == "Alert #1 is not snoozed."
    assert "Snoozed" not in (await chat("unsnooze 3")).text
    alert = await store.run_transaction(lambda tx: alerts.get(tx, 3), write=False)
    assert (alert.snoozed_until, alert.state(NOW)) == (None, "open")


async def test_note_and_assign_are_recorded_with_who_and_when_and_shown_on_every_card(chat, store):
    await channel(store)
    await chat("subscribe drift", conversation="c-one")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    chat.clock.advance(minutes=7)
    noted = await chat("note 1 restarted the scorer, watching latency")
    assert "Note: restarted the scorer, watching latency (Dana Dev, 2026-11-26 09:07 UTC)" in noted.text
    assigned = await chat(f"assign 1 {BOB_ID}")
    assert "Assigned to: " + BOB_ID in assigned.text
    [note] = await store.run_transaction(lambda tx: alerts.notes(tx, 1), write=False)
    assert (note.author_name, note.at, note.body) == ("Dana Dev", NOW + timedelta(minutes=7),
                                                      "restarted the scorer, watching latency")
    # every copy of the card is edited
    edits = [i for i in await queued(store) if i.payload.get("update_of") == "alert:1:r1:c-one"]
    assert len(edits) == 2 and "Assigned to:" in edits[-1].payload["text"]
    records = await store.run_transaction(lambda tx: audit.scan(tx), write=False)
    assert [(r.event, r.actor_name, r.at) for r in records if r.action == "alert"] == [
        ("noted", "Dana Dev", NOW + timedelta(minutes=7)), ("assigned", "Dana Dev", NOW + timedelta(minutes=7))]
    shown = await chat("alerts 1")
    assert "Notes (1)" in shown.text
    assert "2026-11-26 09:07 UTC Dana Dev: restarted the scorer, watching latency" in shown.text
    assert_valid_card(shown.card)


@pytest.mark.parametrize("words", ["resolve 1", "unsnooze 1", "note 1 hello", f"assign 1 {BOB_ID}"])
async def test_the_lifecycle_needs_the_operator_role(workspaces, store, words):
    viewer = Chat(workspaces, store, Role.VIEWER)
    answer = await viewer(words)
    assert answer.text.startswith(f"`{words.split()[0]}` needs the Operator role; you have Viewer.")


@pytest.mark.parametrize("words,answer", [
    ("note 99 hello", "There is no alert #99."),
    ("alerts 99", "There is no alert #99. `alerts` lists them."),
    ("assign 1 Bob", "'Bob' is not a person I can identify."),
    ("note 1 " + "x" * 1001, "That note is too long (1001 characters; at most 1000)."),
])
async def test_bad_lifecycle_words_get_a_clear_answer(chat, store, words, answer):
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    assert answer in (await chat(words)).text


async def test_a_firing_after_a_resolution_is_a_new_incident(chat, store):
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    await chat("acknowledge 1")
    await chat("resolve 1")
    later = NOW + timedelta(hours=2)
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e2"), later))
    alert = await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)
    assert (alert.status, alert.acknowledged_by, alert.resolved_by, alert.fired_at) == (FIRED, "", "", later)


async def test_the_card_says_the_endpoints_health_now_when_it_can_read_it(chat, store):
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    chat.clock.advance(minutes=30)
    shown = await chat("alerts 1")
    [health] = [line for line in shown.text.splitlines() if line.startswith("Endpoint at ")]
    assert re.fullmatch(r"Endpoint at 09:30 UTC: Healthy: p99 \d+ ms, 5xx \d+\.\d+%", health), health
    assert_valid_card(shown.card)
    # no such endpoint, or a workspace that is not configured: no line, and the alert is still shown
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e2", key="k2", endpoint="gone-api"), NOW))
    await store.run_transaction(lambda tx: publish(tx, drift_event(id="e3", key="k3", workspace="elsewhere"), NOW))
    for alert_id in (2, 3):
        assert "Endpoint at" not in (await chat(f"alerts {alert_id}")).text


# ---------------------------------------------------------------- escalation


async def test_an_unacknowledged_alert_escalates_once_per_period_with_mentions(chat, store):
    await channel(store)
    answer = await chat(f"subscribe drift --escalate-after 15m --notify {BOB_ID}", conversation="c-one")
    assert answer.text.startswith(
        f"Subscribed this chat: #1 drift (everything); unacknowledged after 15 min: {BOB_ID}.")
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    loop = Scheduler(store, chat.handler.workspaces, chat.gate, owner="r1", clock=chat.clock)

    async def escalations():
        return [i for i in await queued(store) if i.dedupe_key.startswith("escalate:")]

    chat.clock.advance(minutes=14)
    assert await loop.escalate_alerts() == 0
    chat.clock.advance(minutes=1)
    assert await loop.escalate_alerts() == 1
    assert await loop.escalate_alerts() == 0                                  # once per period
    other = Scheduler(store, chat.handler.workspaces, chat.gate, owner="r2", clock=chat.clock)
    assert await other.escalate_alerts() == 0                                 # and once across replicas
    [first] = await escalations()
    card = first.payload["card"]
    assert_valid_card(card)
    assert first.conversation_id == "c-one"
    assert card["body"][0]["text"] == "⏰ Alert #1 is unacknowledged after 15 min"
    assert card["body"][1]["text"] == (f"<at>{BOB_ID}</at>: Drift on fraud-model is still firing and nobody has "
                                       "acknowledged it.")
    assert card["msteams"]["entities"] == [{"type": "mention", "text": f"<at>{BOB_ID}</at>",
                                            "mentioned": {"id": BOB_ID, "name": BOB_ID}}]
    assert [a["verb"] for a in card["actions"]] == ["acknowledge", "alerts"]

    chat.clock.advance(minutes=15)
    assert await loop.run_once() == 1                                         # the loop's pass does it too
    await chat("snooze 1 1h")
    chat.clock.advance(minutes=30)
    assert await loop.escalate_alerts() == 0                                  # snoozed: waits
    await chat("unsnooze 1")
    await chat("acknowledge 1")
    chat.clock.advance(hours=2)
    assert await loop.escalate_alerts() == 0                                  # somebody is on it
    assert len(await escalations()) == 2


@pytest.mark.parametrize("words,answer", [
    ("subscribe drift --escalate-after 15m", "--escalate-after needs someone to tell: add `--notify @person`."),
    ("subscribe drift --escalate-after soon --notify " + BOB_ID, "--escalate-after: 'soon' is not a duration"),
    ("subscribe drift --escalate-after 8d --notify " + BOB_ID, "--escalate-after must be between 1 minute and 7 days."),
    ("subscribe drift --notify Bob", "'Bob' is not a person I can identify."),
])
async def test_bad_escalation_options_get_a_clear_answer(chat, words, answer):
    assert answer in (await chat(words)).text


async def test_escalation_defaults_to_15_minutes_with_notify_and_can_be_turned_off(chat, store):
    assert "unacknowledged after 15 min: " + BOB_ID in (await chat(f"subscribe drift --notify {BOB_ID}")).text
    changed = await chat(f"subscribe drift --escalate-after 1h --notify {BOB_ID}")
    assert changed.text.startswith(f"Subscribed this chat: #1 drift (everything); unacknowledged after 1 h: {BOB_ID}.")
    off = await chat("subscribe drift --escalate-after off")
    assert off.text.startswith("Subscribed this chat: #1 drift (everything).")


async def test_escalation_state_on_both_databases(storage):  # noqa: F811
    alert, _ = await storage.run_transaction(lambda tx: alerts.record(tx, "k", "drift", FIRED, {}, 0.3, NOW,
                                                                      fired=True))
    assert (alert.fired_at, alert.history_at) == (NOW, [NOW])
    later = NOW + timedelta(minutes=20)
    assert await storage.run_transaction(lambda tx: alerts.mark_escalated(tx, alert.id, later, previous=None))
    assert not await storage.run_transaction(lambda tx: alerts.mark_escalated(tx, alert.id, later, previous=None))
    again = NOW + timedelta(minutes=40)
    assert await storage.run_transaction(lambda tx: alerts.mark_escalated(tx, alert.id, again, previous=later))
    await storage.run_transaction(lambda tx: alerts.add_note(tx, alert.id, "u1", "Dana Dev", "looked", later))
    await storage.run_transaction(lambda tx: alerts.assign(tx, alert.id, "u2", "Bob Builder"))
    done = await storage.run_transaction(lambda tx: alerts.resolve(tx, alert.id, "Dana Dev", again))
    assert (done.status, done.resolved_by, done.resolved_at, done.assignee_name, done.escalated_at) == (
        RESOLVED, "Dana Dev", again, "Bob Builder", again)
    [note] = await storage.run_transaction(lambda tx: alerts.notes(tx, alert.id), write=False)
    assert (note.author_name, note.body, note.at) == ("Dana Dev", "looked", later)
    assert await storage.run_transaction(lambda tx: escalate(tx, again)) == 0


# ---------------------------------------------------------------- over HTTP


CHANNEL = "19:ml-alerts@thread.tacv2"
KEY = "k" * 8 + "0123456789abcdef0123456789abcdef"


async def test_over_http_an_alert_is_snoozed_from_its_card_listed_and_escalated_with_a_mention(
        aiohttp_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clock = Clock(datetime.now(timezone.utc).replace(microsecond=0))
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id, webhook_key=KEY)
    app = create_app(settings, reset_demo=True, clock=clock)
    server = await aiohttp_server(app)

    async def until(predicate) -> None:
        async def poll() -> None:
            while not predicate():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), 10)

    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("whoami", user=BOB)                 # the bot has met Bob: his @mention resolves
        [answer] = await teams.say(f"subscribe alerts --escalate-after 15m --notify @{BOB.name}", mention=True,
                                   people=(BOB,), conversation=CHANNEL, kind="channel")
        assert answer.text.startswith("Subscribed this channel: #1 alerts (everything); unacknowledged after 15 min: "
                                      "Bob Builder.")
        url = teams.bot_url.replace("/api/messages", f"/api/alerts?code={KEY}")
        async with teams.session.post(url, json=metric_alert("LessThan", 3.0, "5")) as response:
            assert response.status == 200, await response.text()

        def posted(marker: str):
            return [s for s in teams.connector.sent if s.card and marker in json.dumps(s.card)]
        await until(lambda: posted("alert #1"))
        card = posted("alert #1")[0].card
        assert_valid_card(card)
        assert "Threshold: < 5 (breached)" in card["fallbackText"]
        # the endpoint's health, read from the workspace when the alert came in
        [health] = [line for line in card["fallbackText"].splitlines() if line.startswith("Endpoint at ")]
        assert re.fullmatch(r"Endpoint at \d\d:\d\d UTC: Healthy: p99 \d+ ms, 5xx \d+\.\d+%", health), health

        [listed] = await teams.say("alerts", mention=True, conversation=CHANNEL, kind="channel")
        assert "🔴 #1 open" in listed.card["fallbackText"] and "nobody on it" in listed.card["fallbackText"]

        clock.advance(minutes=16)
        assert await app[SCHEDULER].escalate_alerts() == 1
        await until(lambda: posted("unacknowledged after"))
        [escalation] = posted("unacknowledged after")
        assert escalation.card["msteams"]["entities"] == [
            {"type": "mention", "text": "<at>Bob Builder</at>",
             "mentioned": {"id": BOB.aad_object_id, "name": "Bob Builder"}}]

        status, body = await teams.click(card, "1 h", user=ALICE, conversation=CHANNEL, kind="channel")
        assert status == 200
        assert "Snoozed: until" in body["value"]["fallbackText"]
        assert [a["title"] for a in body["value"]["actions"]][-2:] == ["Unsnooze", "Resolve"]
        [listed] = await teams.say("alerts", mention=True, conversation=CHANNEL, kind="channel")
        assert "💤 #1 snoozed" in listed.card["fallbackText"]

        # in plain words: the alert's number and "me" are read, the change only proposed, then clicked
        def proposals():
            return [s for s in teams.connector.sent if s.card and s.card["body"][0].get("text") == "Is this the change "
                    "you mean?"]
        await teams.send(teams.message("assign alert 1 to me", user=ALICE, mention=True, conversation=CHANNEL,
                                       kind="channel"), replies=0)
        await until(proposals)
        [proposal] = proposals()
        line = f'assign 1 "{ALICE.name}"'
        assert f"Read as `{line}`. Nothing has changed yet." in proposal.card["fallbackText"]
        assert "Assigned to" not in posted("alert #1")[-1].card["fallbackText"]
        status, body = await teams.click(proposal.card, f"Run {line}"[:60], user=ALICE, conversation=CHANNEL,
                                         kind="channel")
        assert status == 200
        await until(lambda: "Assigned to: " + ALICE.name in posted("alert #1")[-1].card["fallbackText"])


async def test_assign_takes_yourself_by_name_and_someone_met_by_their_one_display_name(chat, store):
    """What a plain-language proposal carries ("assign alert 1 to me" -> `assign 1 "Dana Dev"`) must
    run when clicked: your own name is you; a name the bot has met exactly once is that person;
    a name two people share, or nobody has, is refused as before."""
    from adapters.storage import people

    async def meet(tx):
        for oid, teams_id, name in [("oid-zoe", "29:zoe", "Zoe Quinn"), ("oid-sam1", "29:sam1", "Sam Lee"),
                                    ("oid-sam2", "29:sam2", "Sam Lee"), ("oid-far", "29:far", "Far Away")]:
            await people.remember(tx, oid, teams_id, name, "t9" if oid == "oid-far" else "t1", now=NOW)
    await store.run_transaction(meet)
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    assert "Assigned to: Dana Dev" in (await chat('assign 1 "Dana Dev"')).text
    assert (await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)).assignee_id == chat.user.id
    assert "Assigned to: Zoe Quinn" in (await chat('assign 1 "Zoe Quinn"')).text
    assert (await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)).assignee_id == "oid-zoe"
    for name in ("Sam Lee", "Far Away"):          # two people share it; another tenant's person
        assert f"'{name}' is not a person I can identify." in (await chat(f'assign 1 "{name}"')).text
