"""Given-up messages over HTTP (issue 17), through the real botbuilder CloudAdapter: `/readyz` counts
them, an Admin lists them with `outbox dead` and sends them again with `outbox retry`, and the app's
own outbox worker delivers the retried message to the Bot Connector stand-in."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.storage import audit, outbox
from bot.app import STORAGE, WORKER, create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.conftest import Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn
from tests.waiting import wait_until

CHANNEL = "19:ml-platform@thread.tacv2"
START = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
async def app(aiohttp_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", admins=ALICE.aad_object_id,
                             default_role="viewer")
    return await aiohttp_server(create_app(settings, reset_demo=True, clock=Clock(START)))


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
        await wait_until(dead)
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
        await wait_until(sent)
        ready = await teams.session.get(str(app.make_url("/readyz")))
        assert (await ready.json())["outbox"] == {"pending": 0, "dead": 0}
        [nothing] = await teams.say("outbox retry all", mention=True, conversation=CHANNEL, kind="channel")
        assert nothing.text == "Nothing to send again: no message has been given up."

    [entry] = [e for e in await storage.run_transaction(lambda tx: audit.query(tx), write=False)
               if e.event == "outbox_retried"]
    assert (entry.actor_id, entry.target, entry.before, entry.after) == (
        ALICE.aad_object_id, f"outbox items #{item.id}", {"state": "dead"}, {"state": "pending"})


# ---------------------------------------------------------------- the command, in process


async def _given_up(store, conversation_id: str, text: str, error: str) -> int:
    item_id = await store.run_transaction(lambda tx: outbox.enqueue(
        tx, conversation_id, {"text": text}, dedupe_key=f"{conversation_id}:{text}", now=START))
    await store.run_transaction(lambda tx: outbox.claim(tx, "replica-a", now=START, lease_seconds=60, limit=10))
    await store.run_transaction(lambda tx: outbox.mark_dead(tx, item_id, "replica-a", error))
    return item_id


async def test_retry_all_leaves_out_conversations_the_bot_was_removed_from(chat, store):
    from adapters.storage import conversations
    from tests.test_outbox_delivery import record
    assert (await chat("outbox dead")).text == ("Nothing given up: everything the bot had to say was delivered, "
                                                "or is still being tried.")
    kept = await _given_up(store, "19:kept@thread.tacv2", "Job nightly failed", "permanent failure, 400: bad")
    gone = await _given_up(store, "19:gone@thread.tacv2", "Digest", "404: the bot was removed")
    await store.save_conversation(record("19:gone@thread.tacv2", "https://smba.trafficmanager.net/emea/"))
    await store.run_transaction(lambda tx: conversations.mark_conversation_gone(tx, "19:gone@thread.tacv2", START))

    listed = (await chat("outbox dead")).card["fallbackText"]
    assert f"#{gone} Digest to 19:gone@thread.tacv2 (the bot was removed from it), queued" in listed
    assert f"#{kept} Job nightly failed to 19:kept@thread.tacv2, queued 2026-11-26 06:00 UTC, 1 attempt(s) " \
           "permanent failure, 400: bad" in listed

    answer = (await chat("outbox retry all")).text
    assert answer == (f"Sending 1 message again: #{kept}. Each gets a fresh deadline. Recorded in the audit trail. "
                      f"Not retried: #{gone}, for conversations the bot was removed from. Add the bot back there "
                      "(any message from there clears the mark), then retry.")
    states = {i.id: i.state for i in await store.run_transaction(lambda tx: outbox.find_items(tx))}
    assert states == {kept: "pending", gone: "dead"}
    assert "Cannot retry #" + str(kept) + ": it is pending, not given up." in (await chat(f"outbox retry {kept}")).text
    assert "'x1' is not an outbox item id" in (await chat("outbox retry x1")).text
    assert "takes no argument" in (await chat("outbox dead 3")).text
