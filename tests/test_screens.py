"""The everyday screens a first real user met (issue 7, items 9 to 17), over HTTP where they are chat."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone

import pytest

from bot.app import create_app
from bot.settings import load_settings
from commands.base.context import HealthThresholds
from commands.resources.endpoints import log_card
from commands.base.ui import MAX_CARD_BYTES
from tests.card_schema import assert_valid_card
from tests.teams_client import TeamsStandIn

# ---------------------------------------------------------------- 9. logs


async def test_logs_show_one_monospace_line_per_log_line_newest_last(teams):
    [reply] = await teams.say("logs fraud-api green --lines 40")
    card = reply.card
    assert_valid_card(card)
    lines = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert len(lines) == 40
    assert all(b["type"] == "TextBlock" and "\n" not in b["text"] for b in lines)
    stamps = [b["text"].lstrip("❗ ")[:23] for b in lines if b["text"][:1] in "2❗"]
    assert stamps == sorted(stamps) and len(stamps) > 10            # oldest first, newest last


def test_error_lines_are_marked_and_coloured():
    tail = ("2026-11-26 10:00:00,001 I [34] azmlinfsrv - POST /score 500 60012.417ms 0\n"
            "2026-11-26 10:00:00,002 E [34] azmlinfsrv - Encountered Exception: TimeoutError: slow\n"
            "2026-11-26 10:00:00,003 W [34] azmlinfsrv - POST /score 422 1.2ms 98\n")
    card = log_card(tail, title="Logs", workspace="w")
    blocks = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert [(b["text"][:2], b.get("color")) for b in blocks] == [("20", None), ("❗ ", "Attention"), ("20", "Warning")]
    assert card["body"][2]["text"] == "3 lines, newest last · 1 error line marked ❗."


def test_a_long_log_keeps_its_newest_lines_within_the_card_limit():
    tail = "\n".join(f"2026-11-26 10:00:{i // 1000:02d},{i % 1000:03d} I [34] line {i} " + "x" * 150
                     for i in range(500))
    card = log_card(tail, title="Logs", workspace="w")
    assert len(json.dumps(card, ensure_ascii=False).encode()) <= MAX_CARD_BYTES + 2_500
    blocks = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert blocks[-1]["text"].startswith("2026-11-26 10:00:00,499 I [34] line 499 ")
    assert card["body"][2]["text"] == f"The last {len(blocks)} of 500 lines (all that fit in one message), newest last."
    assert 50 < len(blocks) < 500


# ---------------------------------------------------------------- 10. clicks keep their card


async def test_refresh_updates_the_card_in_place_with_the_time_it_was_read(teams):
    [reply] = await teams.say("endpoint fraud-api")
    status, body = await teams.click(reply.card, "Refresh")
    assert status == 200
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    refreshed = body["value"]
    assert refreshed["body"][0]["text"] == "Endpoint fraud-api"
    assert refreshed["body"][2]["id"] == "as-of" and refreshed["body"][2]["text"].startswith("As of ")
    assert refreshed["body"][2]["text"].endswith(" UTC")
    assert_valid_card(refreshed)
    again = await teams.click(refreshed, "Refresh")
    assert [b.get("id") for b in again[1]["value"]["body"]].count("as-of") == 1
    assert len(teams.connector.sent) == 1                  # nothing posted: the card itself changed


async def test_a_refused_click_keeps_the_card_and_explains_in_a_message(aiohttp_server, settings, monkeypatch):
    monkeypatch.setenv("MLOPSBOT_DEFAULT_ROLE", "viewer")
    viewer_settings = load_settings(data_dir=settings.data_dir, host="127.0.0.1")
    server = await aiohttp_server(create_app(viewer_settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [reply] = await teams.say("job amber_river_7d3kq9wz")
        status, body = await teams.click(reply.card, "Cancel job")
        assert (status, body["type"]) == (200, "application/vnd.microsoft.activity.message")
        assert body["value"] == "`cancel` needs the Operator role; you have Viewer. Ask a bot admin to grant it (`roles` lists them)."
        [explained] = (await teams.connector.wait_for(2))[1:]
        assert explained.text == body["value"]


async def test_a_failed_refresh_keeps_the_card_and_explains_in_a_message(teams):
    card = {"actions": [{"type": "Action.Execute", "title": "Refresh", "verb": "endpoint",
                         "data": {"args": ["gone-api"], "refresh": True}}]}
    status, body = await teams.click(card, "Refresh")
    assert (status, body["type"]) == (200, "application/vnd.microsoft.activity.message")
    [explained] = await teams.connector.wait_for(1)
    assert explained.text.startswith("No endpoint named 'gone-api'.")


# ---------------------------------------------------------------- 16. acknowledge first, then report


async def test_an_outcome_is_never_posted_before_its_acknowledgement(teams):
    teams.connector.failures.append((429, {"Retry-After": "0.3"}))      # the ack is delayed by Teams
    await teams.post(teams.message("scale fraud-api green 3"))
    ack, done = await teams.connector.wait_for(2)
    assert ack.text.startswith("⏳ fraud-api/green is scaling to 3 instances.")
    assert done.text.startswith("✅ Deployment green on fraud-api now runs 3 instances")


# ---------------------------------------------------------------- 14. words, not internals


async def test_usage_errors_are_phrased_for_a_person_over_http(teams):
    [reply] = await teams.say("traffic fraud-api")
    assert reply.text == ("Something is missing: ‹deployment=percent› (the new split; it must add up to 100). "
                          "Usage: `traffic ‹endpoint› ‹deployment=percent› ... [--workspace NAME] [--reason TEXT]` "
                          "(e.g. `traffic fraud-api blue=90 green=10`)")
    assert "<" not in reply.text and "&lt;" not in reply.text and "argument" not in reply.text.lower()


@pytest.mark.parametrize("typed,answer", [
    ("schedule pause nightly", "'pause' is not a choice for ‹action›: use enable, disable or run."),
    ("jobs --limit", "`--limit` needs a value: how many (1 to 50, default 10)."),
    ("logs fraud-api", "Something is missing: ‹deployment› (one of its deployments)."),
])
async def test_every_argparse_message_is_rephrased(chat, typed, answer):
    assert (await chat(typed)).text.startswith(answer + " Usage: `")


@pytest.mark.parametrize("typed,suggested", [
    ("status", None),                     # close to `start` by letters, but `start` changes something
    ("stpo", "`stop`"),                   # a plain typo of a change command is still offered
    ("scael", "`scale`"),
    ("modle", "`model` or `models`"),     # read commands keep the looser match
])
async def test_did_you_mean_offers_a_change_command_only_for_a_plain_typo(chat, typed, suggested):
    text = (await chat(typed)).text
    if suggested is None:
        assert text == f"I don't know the command '{typed}'. Type `help` to see what I can do."
    else:
        assert text == f"I don't know the command '{typed}'. Did you mean {suggested}? Type `help` to see what I can do."


async def test_help_shows_placeholders_without_angle_brackets(chat):
    explained = await chat("help scale")
    assert explained.card["body"][2]["text"].startswith("Usage: `scale ‹endpoint› ‹deployment› ‹instances›")


# ---------------------------------------------------------------- 15. one truth for limits, checked first


async def test_a_split_that_does_not_add_up_is_refused_before_any_call(chat):
    # the endpoint does not exist: had the workspace been asked, the answer would be "No endpoint named"
    reply = await chat("traffic no-such-api blue=60 green=60")
    assert reply.text == "The split adds up to 120%; it must add up to exactly 100%. E.g. `traffic no-such-api blue=90 green=10`."
    assert chat.background == []


async def test_instance_bounds_are_declared_once(chat):
    from adapters.azureml import workspace as azureml
    from adapters.local import workspace as local
    from adapters.service import MAX_INSTANCES
    assert local.MAX_INSTANCES is azureml.MAX_INSTANCES is MAX_INSTANCES == 20
    explained = await chat("help scale")
    assert "- `instances`: how many instances (1 to 20)" in [b["text"] for b in explained.card["body"]]
    assert (await chat("scale fraud-api green 20")).text.startswith("⏳ fraud-api/green is scaling to 20 instances.")
    assert (await chat("scale fraud-api green 21")).text.startswith("Instances must be between 1 and 20.")


@pytest.mark.parametrize("typed,answer", [
    ("scale fraud-api blue 3", "fraud-api/blue already runs 3 instances; nothing to change."),
    ("traffic fraud-api green=10 blue=90", "Traffic on fraud-api is already blue=90 green=10; nothing to change."),
    ("schedule disable credit-risk-retrain", "Schedule credit-risk-retrain is already disabled; nothing to change."),
    ("schedule enable nightly-churn-retrain", "Schedule nightly-churn-retrain is already enabled; nothing to change."),
    ("start ds-ci-alice", "Compute instance ds-ci-alice is already Running; nothing to change."),
    ("stop ds-ci-bob", "Compute instance ds-ci-bob is already Stopped; nothing to change."),
])
async def test_a_change_that_changes_nothing_starts_no_operation(teams, typed, answer):
    [reply] = await teams.say(typed)
    assert reply.text == answer + " [Workspace ml-prod (prod)]"
    await asyncio.sleep(0.2)
    assert len(teams.connector.sent) == 1           # no follow-up: no operation was started


# ---------------------------------------------------------------- 12. jobs by the name people see


async def test_a_unique_display_name_opens_the_job_over_http(teams):
    [reply] = await teams.say("job train-fraud-pipeline")
    assert reply.card["body"][0]["text"] == "Job train-fraud-pipeline"
    assert {"title": "Name", "value": "frosty_kettle_8k2x9q7m"} in reply.card["body"][3]["facts"]


async def test_a_shared_display_name_lists_the_matching_ids(chat):
    reply = await chat("job churn-retrain-pipeline")
    assert reply.card["body"][0]["text"] == "2 jobs are named churn-retrain-pipeline"
    ids = [a["data"]["args"] for a in _actions(reply.card["body"])]
    assert ids == [["brave_orchid_4n6tj1pc"], ["sunny_mango_0c4vy6tb"]]


async def test_an_unknown_job_name_still_gets_did_you_mean(chat):
    assert (await chat("job frosty_kettle_8k2x9q7")).text == (
        "No job named 'frosty_kettle_8k2x9q7'. Did you mean `frosty_kettle_8k2x9q7m`?")


async def test_every_job_row_shows_the_id(chat):
    reply = await chat("jobs --limit 3")
    details = [row["columns"][0]["items"][1]["text"] for row in reply.card["body"] if row["type"] == "ColumnSet"]
    assert [d.split(" · ")[0] for d in details] == ["id quiet_lamp_2m8vq4xk", "id brave_orchid_4n6tj1pc",
                                                      "id amber_river_7d3kq9wz"]


async def test_pipeline_steps_show_their_ids(chat):
    reply = await chat("job frosty_kettle_8k2x9q7m")
    steps = [r["columns"][0]["items"] for r in reply.card["body"] if r["type"] == "ColumnSet"]
    assert [(s[0]["text"], s[1]["text"]) for s in steps] == [
        ("prep_data", "id plucky_cheese_9t2mh5vd"), ("train_model", "id loyal_pillow_3q8bn6xe"),
        ("evaluate_model", "id shy_tiger_6w1kr8pz"), ("register_model", "id polite_muffin_1d5yj9sc")]


def _actions(node):
    if isinstance(node, dict):
        if node.get("type") == "Action.Execute":
            yield node
        for value in node.values():
            yield from _actions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _actions(value)


# ---------------------------------------------------------------- 13. health you can trust at a glance


async def test_an_endpoint_failing_its_callers_is_red_whatever_its_provisioning_state(teams):
    [reply] = await teams.say("endpoint churn-api")
    headline = reply.card["body"][2]
    assert headline["color"] == "Attention"
    assert re.fullmatch(r"Unhealthy: p99 2,\d{3} ms is over 1,000 ms; 5xx 3\.\d\d% is over 1%", headline["text"])
    assert {"title": "State", "value": "Succeeded"} in reply.card["body"][3]["facts"]
    titles = [b["text"] for b in reply.card["body"] if b.get("weight") == "Bolder"]
    assert any(re.fullmatch(r"Health \(last 60 min, read \d\d:\d\d UTC\)", t) for t in titles), titles


async def test_figures_per_deployment_let_a_canary_be_compared(workspaces, store):
    from tests.conftest import Chat
    chat = Chat(workspaces, store)
    chat.handler.health = HealthThresholds(p99_ms=120, error_percent=1)     # green's p99 is about 140 ms
    reply = await chat("endpoint fraud-api")
    rows = {r["columns"][0]["items"][0]["text"]: r["columns"][0]["items"][2]
            for r in reply.card["body"] if r["type"] == "ColumnSet"}
    assert set(rows) == {"**blue**", "**green**"}
    assert rows["**blue**"].get("color") is None and rows["**blue**"]["text"].startswith("p99 ")
    assert rows["**green**"]["color"] == "Attention" and rows["**green**"]["text"].startswith("⚠ p99 1")
    headline = reply.card["body"][2]        # the endpoint's weighted p99 is healthy; its canary is not
    assert headline["color"] == "Warning"
    assert re.fullmatch(r"Deployment green is unhealthy: p99 1\d\d ms is over 120 ms "
                        r"\(endpoint: p99 \d+ ms, 5xx 0\.\d\d%\)", headline["text"]), headline["text"]
    healthy = await Chat(workspaces, store)("endpoint fraud-api")
    assert healthy.card["body"][2]["color"] == "Good"
    assert re.fullmatch(r"Healthy: p99 \d+ ms, 5xx 0\.\d\d%", healthy.card["body"][2]["text"])


def test_health_thresholds_come_from_settings(settings, monkeypatch):
    monkeypatch.setenv("MLOPSBOT_HEALTH_P99_MS", "2500")
    monkeypatch.setenv("MLOPSBOT_HEALTH_5XX_PERCENT", "5")
    configured = load_settings(data_dir=settings.data_dir, host="127.0.0.1")
    assert configured.health_thresholds() == HealthThresholds(p99_ms=2500, error_percent=5)
    assert settings.health_thresholds() == HealthThresholds(p99_ms=1000, error_percent=1)
    app = create_app(configured, reset_demo=True)
    from bot.app import HANDLER
    assert app[HANDLER].health == HealthThresholds(p99_ms=2500, error_percent=5)


# ---------------------------------------------------------------- 11. batch endpoints are first-class


async def test_endpoint_shows_a_batch_endpoint_with_deployments_default_and_recent_jobs(teams):
    [listing] = await teams.say("endpoints")
    batch_rows = [r for r in listing.card["body"] if r["type"] == "ColumnSet" and "(batch)" in
                  r["columns"][0]["items"][0]["text"]]
    assert [r["columns"][1]["items"][0]["actions"][0]["data"]["args"] for r in batch_rows] == [
        ["churn-batch"], ["forecast-batch"]]
    [reply] = await teams.say("endpoint churn-batch")
    card = reply.card
    assert_valid_card(card)
    assert card["body"][0]["text"] == "Batch endpoint churn-batch"
    assert {"title": "Default deployment", "value": "nightly"} in card["body"][3]["facts"]
    rows = [r for r in card["body"] if r["type"] == "ColumnSet"]
    deployments = [(r["columns"][0]["items"][0]["text"], r["columns"][1]["items"][0]["text"]) for r in rows[:2]]
    assert ("**nightly**", "**default**") in deployments
    jobs = [r for r in rows if r["columns"][-1]["items"][0].get("type") == "ActionSet"]
    assert [j["columns"][0]["items"][0]["text"] for j in jobs] == ["**churn-batch nightly scoring**"]
    assert jobs[0]["columns"][2]["items"][0]["actions"][0]["data"]["args"] == ["olive_comet_5h2rk8sd"]


async def test_an_endpoint_that_is_neither_online_nor_batch_is_not_found(chat):
    assert (await chat("endpoint churn-bat")).text.startswith("No endpoint named 'churn-bat'.")


# ---------------------------------------------------------------- 16. jobs started from chat are traced


async def test_a_job_started_from_chat_names_who_asked_and_reports_its_end(aiohttp_server, settings, pools,
                                                                           tmp_path):
    from adapters.local.workspace import LocalWorkspace
    from adapters.nonblocking import NonBlockingService
    from bot.app import SCHEDULER
    from commands.base.context import Workspaces
    from tests.conftest import Clock

    clock = Clock(datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc))
    local = LocalWorkspace(tmp_path / "clocked.db", clock=clock)
    workspaces = Workspaces([NonBlockingService(local, name="ml-prod", environment="prod", pool=pools[0],
                                                wait_pool=pools[1], timeout=5)])
    server = await aiohttp_server(create_app(settings, workspaces=workspaces, clock=clock))
    follow = server.app[SCHEDULER].follow_jobs
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [ack] = await teams.say("batch churn-batch azureml://datastores/blob/paths/churn/")
        job = re.search(r"started job (\S+) \(Queued\)", ack.text).group(1)
        assert ack.text.startswith("⏳ Batch scoring on churn-batch started job ")
        [shown] = await teams.say(f"job {job}")
        assert {"title": "Requested by", "value": "Alice Analyst from chat"} in shown.card["body"][3]["facts"]
        assert await follow() == 0                              # not due yet
        clock.advance(minutes=5)
        assert await follow() == 0                              # still running: nothing reported
        assert len(teams.connector.sent) == 2
        clock.advance(minutes=10)                               # the local workspace's batch jobs take 12
        assert await follow() == 1
        [ended] = (await teams.connector.wait_for(3))[2:]
        assert ended.conversation_id == ack.conversation_id
        assert ended.card["body"][0]["text"] == "✅ Job churn-batch nightly scoring completed"
        assert {"title": "Requested by", "value": "Alice Analyst from chat"} in ended.card["body"][3]["facts"]
        clock.advance(minutes=5)
        assert await follow() == 0                              # reported once
        status, body = await teams.click(ended.card, "Details")
        assert status == 200
        [details] = (await teams.connector.wait_for(4))[3:]
        assert details.card["body"][0]["text"] == "Job churn-batch nightly scoring"
    local.close()


async def test_schedule_run_tags_the_job_with_who_asked(chat, store):
    from adapters.storage import job_watches

    started = await chat("schedule run nightly-churn-retrain")
    job = re.search(r"started job (\S+) ", started.text).group(1)
    shown = await chat(f"job {job}")
    assert {"title": "Requested by", "value": "Dana Dev from chat"} in shown.card["body"][3]["facts"]
    [watch] = await store.run_transaction(job_watches.open_watches, write=False)     # its end will be reported
    assert (watch.job_name, watch.what, watch.requester_name, watch.conversation_id) == (
        job, "Schedule nightly-churn-retrain", "Dana Dev", "conv-1")


# ---------------------------------------------------------------- 17. small things


async def test_workspace_card_shows_no_server_path_and_says_the_environment_once(chat, settings):
    reply = await chat("workspace")
    assert str(settings.data_dir) not in json.dumps(reply.card)
    assert reply.text.count("prod") == 1 + reply.text.count("ml-prod")     # "Environment: prod" only
    assert {"title": "Description", "value": "Embedded local workspace: Azure ML emulated on the bot's own data."} \
        in reply.card["body"][1]["facts"]


async def test_whoami_says_what_the_role_allows(viewer_chat):
    reply = await viewer_chat("whoami")
    assert reply.card["body"][2]["text"] == (
        "As Viewer you can look at everything, but change nothing. `traffic`, `scale`, `batch`, `rollback`, "
        "`canary`, `cancel`, `promote`, `archive`, `retrain`, `schedule`, `start`, `stop`, `approve`, `reject`, "
        "`confirm`, `withdraw`, `review`, "
        "`acknowledge`, `snooze`, `unsnooze`, `resolve`, `note` and `assign` need the Operator role. "
        "`demo`, `grant`, `revoke` and `outbox` need the Admin role.")


async def test_stopping_a_cluster_is_explained_in_good_grammar(chat):
    assert (await chat("stop cpu-cluster")).text == (
        "The workspace refused: Only compute instances can be started or stopped; cpu-cluster is a compute "
        "cluster (amlcompute), which scales between 0 and 4 nodes on its own.")


def test_next_run_follows_cron_in_the_schedules_own_time_zone():
    from datetime import datetime, timezone

    from adapters.service import Schedule
    from commands.resources.schedule_times import next_run_text
    now = datetime(2026, 11, 26, 23, 0, tzinfo=timezone.utc)
    nightly = Schedule("n", True, "cron", "0 2 * * *", "UTC")
    weekly = Schedule("w", True, "recurrence", "every 1 week on Monday at 06:00", "W. Europe Standard Time")
    summer = Schedule("s", True, "cron", "30 6 * * *", "Europe/Berlin")
    assert next_run_text(nightly, now) == "next Fri 2026-11-27 02:00 UTC"
    assert next_run_text(weekly, now) == "next Mon 2026-11-30 05:00 UTC (Mon 06:00 W. Europe Standard Time)"
    assert next_run_text(summer, datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)) == (
        "next Thu 2026-07-02 04:30 UTC (Thu 06:30 Europe/Berlin)")
    assert next_run_text(Schedule("d", False, "cron", "0 2 * * *"), now) == ""
    assert next_run_text(Schedule("x", True, "cron", "0 2 * * *", "Mars/Olympus"), now) == "next run unknown"


async def test_schedules_and_compute_have_buttons_named_by_their_effect(teams):
    [schedules] = await teams.say("schedules")
    rows = {r["columns"][0]["items"][0]["text"]: r for r in schedules.card["body"] if r["type"] == "ColumnSet"}
    def titles(row):
        return [a["title"] for a in row["columns"][0]["items"][2]["actions"]]
    assert titles(rows["**nightly-churn-retrain**"]) == ["Disable schedule", "Run schedule now"]
    assert titles(rows["**credit-risk-retrain**"]) == ["Enable schedule", "Run schedule now"]
    assert "next " in rows["**nightly-churn-retrain**"]["columns"][0]["items"][1]["text"]
    status, body = await teams.click(rows["**nightly-churn-retrain**"], "Disable schedule")
    assert (status, body["type"]) == (200, "application/vnd.microsoft.activity.message")
    assert body["value"].startswith("⏳ Schedule nightly-churn-retrain is being disabled.")
    done = (await teams.connector.wait_for(3))[2]
    assert done.text.startswith("✅ Schedule nightly-churn-retrain is now disabled.")
    [compute] = await teams.say("compute")
    buttons = {a["title"]: a["data"]["args"] for a in _actions(compute.card["body"])}
    assert buttons == {"Stop compute": ["ds-ci-alice"], "Start compute": ["ds-ci-bob"]}
    assert_valid_card(schedules.card) is None and assert_valid_card(compute.card) is None


async def test_a_long_model_path_wraps_on_its_own_line(chat):
    reply = await chat("model fraud-model:3")
    path = next(b for i, b in enumerate(reply.card["body"]) if reply.card["body"][i - 1].get("text") == "Path")
    model = await chat.handler.workspaces.default.get_model("fraud-model", "3")
    assert len(model.path) > 60
    assert (path["type"], path["text"], path["wrap"]) == ("TextBlock", model.path, True)
    assert all(f["title"] != "Path" for b in reply.card["body"] if b["type"] == "FactSet" for f in b["facts"])
