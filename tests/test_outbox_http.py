"""Given-up messages over HTTP (issue 17), through the real botbuilder CloudAdapter: `/readyz` counts
them, an Admin lists them with `outbox dead` and sends them again with `outbox retry`, and the app's
own outbox worker delivers the retried message to the Bot Connector stand-in."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from adapters.storage import audit, outbox
from bot.app import STORAGE, WORKER, create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.conftest import Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn

CHANNEL = "19:ml-platform@thread.tacv2"
START = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
async def app(aiohttp_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", admins=ALICE.aad_object_id,
                             default_role="viewer")
    return await aiohttp_server(create_app(settings, reset_demo=True, clock=Clock(START)))


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def test_an_admin_sees_and_resends_a_given_up_message(app):
    storage = app.app[STORAGE]
    async with TeamsStandIn(str(app.make_url("/api/messages"))) as teams:
        await teams.say("whoami", mention=True, conversation=CHANNEL, kind="channel")     # the channel is stored
        teams.connector.failures = [(400, {})]                # Teams refuses the alert once, for good
        await storage.run_transaction(lambda tx: outbox.enqueue(
            tx, CHANNEL, {"text": "Drift alert: fraud-model"}, dedupe_key="alert:1", tenant_id="t", now=START))
        app.app[WORKER].wake()

        async def dead() -> bool:
            return bool(await storage.run_transaction(lambda tx: outbox.find_items(tx, state="dead"), write=False))
        await wait_for(dead)
        [item] = await storage.run_transaction(lambda tx: outbox.find_items(tx, state="dead"), write=False)

        ready = await teams.session.get(str(app.make_url("/readyz")))
        assert (await ready.json())["outbox"] == {"pending": 0, "dead": 1}

        [refused] = await teams.say("outbox dead", mention=True, user=BOB, conversation=CHANNEL, kind="channel")
        assert refused.text.startswith("`outbox` needs the Admin role; you have Viewer.")

        [listed] = await teams.say("outbox dead", mention=True, conversation=CHANNEL, kind="channel")
        assert_valid_card(listed.card)
        words = listed.card["fallbackText"]
        assert words.startswith("Given-up messages: 1\n")
        assert f"#{item.id} Drift alert: fraud-model" in words
        assert "permanent failure, 400: " in words and f"to {CHANNEL}, queued 2026-11-26 06:00 UTC, 1 attempt(s)" in words

        [usage] = await teams.say("outbox retry", mention=True, conversation=CHANNEL, kind="channel")
        assert "outbox retry ‹id›" in usage.text
        [unknown] = await teams.say("outbox retry 999", mention=True, conversation=CHANNEL, kind="channel")
        assert "Cannot retry #999: no such outbox item." in unknown.text

        before = len(teams.connector.sent)
        [answer] = await teams.say(f"outbox retry {item.id}", mention=True, conversation=CHANNEL, kind="channel")
        assert answer.text == (f"Sending 1 message again: #{item.id}. Each gets a fresh deadline. "
                               "Recorded in the audit trail.")
        await teams.connector.wait_for(before + 2)            # the answer, and the alert itself
        assert [s.text for s in teams.connector.sent[before:]].count("Drift alert: fraud-model") == 1

        async def sent() -> bool:
            found = await storage.run_transaction(lambda tx: outbox.get_item(tx, item.id), write=False)
            return found.state == "sent"
        await wait_for(sent)
        ready = await teams.session.get(str(app.make_url("/readyz")))
        assert (await ready.json())["outbox"] == {"pending": 0, "dead": 0}
        [nothing] = await teams.say("outbox retry all", mention=True, conversation=CHANNEL, kind="channel")
        assert nothing.text == "No given-up messages to send again."

    [entry] = [e for e in await storage.run_transaction(lambda tx: audit.query(tx), write=False)
               if e.event == "outbox_retried"]
    assert (entry.actor_id, entry.target, entry.before, entry.after) == (
        ALICE.aad_object_id, f"outbox items #{item.id}", {"state": "dead"}, {"state": "pending"})
