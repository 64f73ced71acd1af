"""Digests over HTTP through the real botbuilder CloudAdapter: `digest now` and `digest schedule`
in a channel, and the scheduled digest the app's own scheduler and outbox worker post there."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import digests
from bot.app import DIGESTS, STORAGE, create_app
from bot.settings import load_settings
from commands.digests.digest_times import jitter
from tests.card_schema import assert_valid_card
from tests.teams_client import ALICE, BOB, Person, TeamsStandIn
from tests.conftest import Clock

CAROL = Person("29:1carol", "Carol Curious", "00000000-0000-0000-0000-00000000ca20")
THREAD = "19:ml-platform@thread.tacv2;messageid=1700000000000"
CHANNEL = "19:ml-platform@thread.tacv2"
START = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def app(aiohttp_server, tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id)
    application = create_app(settings, reset_demo=True, clock=clock)
    server = await aiohttp_server(application)
    return server


@pytest.fixture
async def teams(app):
    async with TeamsStandIn(str(app.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def test_digest_now_in_a_channel(teams):
    [sent] = await teams.say("digest now", mention=True, conversation=THREAD, kind="channel")
    assert_valid_card(sent.card)
    words = sent.card["fallbackText"]
    assert words.startswith("Model health digest · Thu 26 Nov 2026\nWorkspace ml-prod (prod)\nNeeds attention: ")
    assert "Online endpoints (3)" in words and "fraud-api — traffic blue=90 green=10" in words
    status, body = await teams.click(sent.card, "Failed jobs", conversation=THREAD, kind="channel")
    assert status == 200


async def test_digest_schedule_then_the_scheduler_posts_it_in_the_channel(teams, app, clock):
    [refused] = await teams.say('digest schedule "0 9 * * 1-5" --tz Europe/Berlin', mention=True, user=CAROL,
                                conversation=THREAD, kind="channel")
    assert "Scheduling digests needs the Operator role; you have Viewer." in refused.text
    [confirmed] = await teams.say('digest schedule "0 9 * * 1-5" --tz Europe/Berlin', mention=True,
                                  conversation=THREAD, kind="channel")
    assert confirmed.text.startswith("Scheduled the model-health digest of ml-prod for this chat: `0 9 * * 1-5` in "
                                     "Europe/Berlin. Next: Thu 2026-11-26 09:00 CET, Fri 2026-11-27 09:00 CET")
    storage = app.app[STORAGE]
    stored = await storage.run_transaction(lambda tx: digests.get(tx, CHANNEL))
    assert stored.next_run == datetime(2026, 11, 26, 8, tzinfo=timezone.utc) + jitter(CHANNEL)

    before = len(teams.connector.sent)
    clock.moment = stored.next_run + timedelta(seconds=5)
    assert await app.app[DIGESTS].tick() == 1            # the loop's step, at the moment the clock says
    await teams.connector.wait_for(before + 1)
    [posted] = teams.connector.sent[before:]
    assert posted.method == "POST" and posted.path.startswith(f"/v3/conversations/{CHANNEL}/activities")
    assert_valid_card(posted.card)
    # on the card itself: its plain-text fallback is cut at 2,000 characters, and the digest (posture, the
    # audit anchor, every monitoring signal) now fills them before the schedule line at its foot
    shown = [b.get("text", "") for b in posted.card["body"] if b.get("type") == "TextBlock"]
    assert any("Schedule: 0 9 * * 1-5 Europe/Berlin, next Fri 2026-11-27 09:0" in line for line in shown), shown
    assert await app.app[DIGESTS].tick() == 0
    await asyncio.sleep(0.05)
    assert len(teams.connector.sent) == before + 1
