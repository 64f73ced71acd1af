"""Security posture over HTTP through the real botbuilder CloudAdapter: `posture` in a channel,
`subscribe posture`, and a check that turns from pass to fail posted in the channel by the app's
own scheduler and outbox worker, with an Acknowledge button that works (issue 22)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.app import HANDLER, SCHEDULER, create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.conftest import Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn

THREAD = "19:ml-security@thread.tacv2;messageid=1700000000001"
CHANNEL = "19:ml-security@thread.tacv2"
START = datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def app(aiohttp_server, tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id)
    return await aiohttp_server(create_app(settings, reset_demo=True, clock=clock))


@pytest.fixture
async def teams(app):
    async with TeamsStandIn(str(app.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def test_posture_in_a_channel_and_a_check_turning_to_fail_posted_there(teams, app, clock):
    [answer] = await teams.say("posture", mention=True, conversation=THREAD, kind="channel")
    assert_valid_card(answer.card)
    words = answer.card["fallbackText"]
    assert words.startswith("Security posture\nAs of 2026-12-07 08:00 UTC\nWorkspace ml-prod (prod)\n")
    assert ("❌ fail · endpoint churn-api: public network access Enabled (failing when first checked, "
            "2026-12-07 08:00 UTC)") in words

    [subscribed] = await teams.say("subscribe posture", mention=True, conversation=THREAD, kind="channel")
    assert subscribed.text.startswith("Subscribed this channel: #1 posture (everything).")
    loop = app.app[SCHEDULER]
    assert await loop.scan_posture() == 0                  # `posture` above was the baseline: nothing is news

    app.app[HANDLER].workspaces.default.service.change_security("compute", "ds-ci-alice", ssh_public_access=True)
    clock.moment = START + timedelta(hours=1, minutes=5)
    before = len(teams.connector.sent)
    assert await loop.scan_posture() == 1
    await teams.connector.wait_for(before + 1)
    [posted] = teams.connector.sent[before:]
    assert posted.method == "POST" and posted.path.startswith(f"/v3/conversations/{CHANNEL}/activities")
    assert_valid_card(posted.card)
    assert posted.card["body"][0]["text"] == "🟠 Posture: Entra-only auth now fails for compute ds-ci-alice"
    assert "Found: SSH open to the internet (key login, not Entra)" in posted.card["fallbackText"]
    assert "Failing since: 2026-12-07 09:05 UTC" in posted.card["fallbackText"]

    status, body = await teams.click(posted.card, "Acknowledge", conversation=CHANNEL, kind="channel")
    assert status == 200
    [edited] = (await teams.connector.wait_for(before + 2))[before + 1:]     # every copy shows who is on it
    assert edited.method == "PUT" and "Acknowledged: by " in edited.card["fallbackText"]
    assert await loop.scan_posture() == 0                  # within the hour: not scanned again

    [shown] = await teams.say("posture", mention=True, conversation=THREAD, kind="channel")
    lines = [block.get("text", "") for block in shown.card["body"]]
    assert ("❌ fail · compute ds-ci-alice: SSH open to the internet (key login, not Entra) "
            "(failing since 2026-12-07 09:05 UTC)") in lines
