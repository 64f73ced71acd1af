"""Commands that change the workspace: role checks, validation, acknowledgement, follow-up outcome."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Chat
from tests.teams_client import ALICE


async def finish(chat: Chat) -> list[str]:
    """Await the outcomes a command left running (follow-ups, and the gate's operations); return their texts."""
    return [r.text for r in await chat.settle()]


async def test_traffic_change_acknowledges_then_reports(chat):
    ack = await chat("traffic fraud-api blue=50 green=50")
    assert ack.text == ("⏳ Traffic on fraud-api is moving to blue=50 green=50. Azure ML is applying it; "
                        "I'll post here when it's done. [Workspace ml-prod (prod)]")
    [done] = await finish(chat)
    assert done.startswith("✅ ") and done.endswith("[Workspace ml-prod (prod)]")
    endpoint = await chat("endpoint fraud-api")
    assert "Traffic: blue=50 green=50" in endpoint.text


@pytest.mark.parametrize("typed,answer", [
    ("traffic fraud-api blue=90 green=20", "The split adds up to 110%; it must add up to exactly 100%."),
    ("traffic fraud-api blue=90 purple=10",
     "Endpoint fraud-api has no deployment named 'purple' (it has: blue, green)."),
    ("traffic fraud-api blue:90", "'blue:90' is not deployment=percent."),
    ("traffic fraud-api blue=90 blue=10", "Deployment 'blue' is given twice."),
    ("scale fraud-api green 0", "Instances must be between 1 and 20."),
    ("scale fraud-api green 21", "Instances must be between 1 and 20."),
])
async def test_invalid_changes_are_refused_and_nothing_changes(chat, typed, answer):
    reply = await chat(typed)
    assert reply.text.startswith(answer), reply.text
    assert chat.background == []
    assert "Traffic: blue=90 green=10" in (await chat("endpoint fraud-api")).text


async def test_viewers_cannot_change_anything(viewer_chat):
    reply = await viewer_chat("traffic fraud-api blue=100")
    assert reply.text == "`traffic` needs the Operator role; you have Viewer. Ask a bot admin to grant it (`roles` lists them)."
    assert "Traffic: blue=90 green=10" in (await viewer_chat("endpoint fraud-api")).text
    assert "traffic" not in [line.split()[0] for line in (await viewer_chat("help")).text.splitlines()[1:-2]]


async def test_scale_cancel_schedule_and_compute(chat):
    assert (await chat("scale fraud-api green 2")).text.startswith("⏳ fraud-api/green is scaling to 2 instances.")
    assert (await chat("cancel amber_river_7d3kq9wz")).text.startswith("⏳ Job amber_river_7d3kq9wz is being canceled.")
    assert (await chat("schedule disable nightly-churn-retrain")).text.startswith(
        "⏳ Schedule nightly-churn-retrain is being disabled.")
    assert (await chat("stop ds-ci-alice")).text.startswith("⏳ Compute ds-ci-alice is stopping.")
    outcomes = await finish(chat)
    assert len(outcomes) == 4 and all(o.startswith("✅ ") for o in outcomes), outcomes
    assert "2 × Standard_DS3_v2" in (await chat("endpoint fraud-api")).text
    assert "Canceled" in (await chat("job amber_river_7d3kq9wz")).text
    assert "nightly-churn-retrain" in (await chat("schedules")).text
    [alice] = [line for line in (await chat("compute")).text.splitlines() if line.startswith("ds-ci-alice ")]
    assert alice == "ds-ci-alice computeinstance · Standard_DS11_v2 Actions: Start compute (`start ds-ci-alice`)  Stopped"


async def test_cancel_a_finished_job_changes_nothing(chat):
    reply = await chat("cancel frosty_kettle_8k2x9q7m")
    assert reply.text == ("Job frosty_kettle_8k2x9q7m has already ended (Failed); nothing to cancel. "
                          "[Workspace ml-prod (prod)]")
    assert chat.background == []


async def test_schedule_run_starts_a_job(chat):
    reply = await chat("schedule run nightly-churn-retrain")
    assert reply.text.startswith("⏳ Schedule nightly-churn-retrain started job ")
    name = reply.text.split("started job ")[1].split()[0]
    assert "Queued" in (await chat(f"job {name}")).text


async def test_batch_needs_a_data_uri(chat):
    assert (await chat("batch churn-batch data.csv")).text.startswith("'data.csv' is not a data URI.")
    started = await chat("batch churn-batch azureml://datastores/blob/paths/churn/")
    assert started.text.startswith("⏳ Batch scoring on churn-batch started job ")


async def test_logs_show_the_tail(chat):
    reply = await chat("logs fraud-api green --lines 5")
    assert reply.card["body"][0]["text"] == "Logs of fraud-api/green"


async def test_running_job_card_offers_cancel(chat):
    reply = await chat("job amber_river_7d3kq9wz")
    assert [a["title"] for a in reply.card["actions"]] == ["Refresh", "Cancel job"]


async def test_follow_up_is_posted_proactively_over_http(teams):
    [ack] = await teams.say("traffic fraud-api blue=80 green=20")
    assert ack.text.startswith("⏳ Traffic on fraud-api is moving to blue=80 green=20.")
    [done] = (await teams.connector.wait_for(2))[1:]
    assert done.conversation_id == f"a:personal-{ALICE.id}"
    assert done.text.startswith("✅ ")
    assert done.method == "PUT" and done.path.endswith("/activity-1")    # the acknowledgement, edited in place


async def test_card_button_cancel_over_http(teams):
    [reply] = await teams.say("job amber_river_7d3kq9wz")
    status, body = await teams.click(reply.card, "Cancel job")
    assert status == 200
    assert body["type"] == "application/vnd.microsoft.activity.message"    # the job card stays
    assert body["value"].startswith("⏳ Job amber_river_7d3kq9wz is being canceled")
    ack, done = (await asyncio.wait_for(teams.connector.wait_for(3), 5))[1:]
    assert ack.text.startswith("⏳ Job amber_river_7d3kq9wz is being canceled")
    assert done.text.startswith("✅ Job amber_river_7d3kq9wz is now Canceled")


async def test_changes_are_logged_with_who_asked(chat, caplog):
    caplog.set_level("INFO", logger="commands.base.registry")
    await chat("scale fraud-api green 2")
    assert [r.getMessage() for r in caplog.records] == [
        "change requested: Dana Dev (dev-1) ran scale fraud-api green 2 in ml-prod"]
