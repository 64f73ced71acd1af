"""The digest scheduler with several replicas on one database (SQLite, and the real PostgreSQL
server), and delivery of the digest through the outbox to a Bot Connector stand-in."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import ConversationRecord, outbox
from adapters.storage import digests
from adapters.storage.digests import DigestSchedule
from bot.digests import MAX_SLEEP, MIN_SLEEP, DigestScheduler
from bot.outbox import OutboxWorker
from bot.teams import TeamsBot, build_adapter
from commands.digests.digest_times import jitter, parse_zone, next_due
from tests.card_schema import assert_valid_card
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema  # noqa: F401 - fixtures
from tests.teams_client import BOT_ID, TENANT, Connector

CHANNEL = "19:ml-platform@thread.tacv2"
CREATED = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
BERLIN = parse_zone("Europe/Berlin")


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


async def scheduled(storage, conversation_id: str = CHANNEL, cron: str = "0 9 * * 1-5") -> DigestSchedule:
    schedule = DigestSchedule(conversation_id, cron, "Europe/Berlin", next_due(cron, BERLIN, conversation_id, CREATED),
                              workspace="ml-prod", tenant_id=TENANT, created_by_id="u1", created_by_name="Alice")
    await storage.run_transaction(lambda tx: digests.save(tx, schedule, CREATED))
    return schedule


async def digest_items(storage) -> list:
    items = await storage.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    return [i for i in items if i.dedupe_key.startswith("digest:")]


async def test_two_replicas_send_each_due_digest_exactly_once(make_storage, workspaces):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()
    await scheduled(first, CHANNEL)
    await scheduled(first, "a:personal-chat")
    clock = Clock(CREATED)
    replicas = [DigestScheduler(storage, workspaces, clock=clock) for storage in (first, second)]
    # Thursday, Friday and Monday 09:00 Berlin; both replicas look at the same moment each time
    for day in (26, 27, 30):
        clock.moment = datetime(2026, 11, day, 8, 5, tzinfo=timezone.utc)
        won = await asyncio.gather(*(replica.tick() for replica in replicas))
        assert sum(won) == 2, day
        assert await asyncio.gather(*(replica.tick() for replica in replicas)) == [0, 0]
    items = await digest_items(first)
    assert sorted(i.dedupe_key for i in items) == sorted(
        f"digest:{conversation}:{(datetime(2026, 11, day, 8, tzinfo=timezone.utc) + jitter(conversation)).isoformat()}"
        for conversation in (CHANNEL, "a:personal-chat") for day in (26, 27, 30))
    stored = await second.run_transaction(lambda tx: digests.get(tx, CHANNEL))
    assert stored.next_run == datetime(2026, 12, 1, 8, tzinfo=timezone.utc) + jitter(CHANNEL)


async def test_downtime_gives_one_late_digest_per_schedule(make_storage, workspaces):
    storage = make_storage()
    await storage.open()
    await scheduled(storage, CHANNEL, "0 9 * * *")
    clock = Clock(datetime(2026, 12, 4, 13, 0, tzinfo=timezone.utc))         # eight mornings missed
    scheduler = DigestScheduler(storage, workspaces, clock=clock)
    assert [await scheduler.tick(), await scheduler.tick()] == [1, 0]
    [item] = await digest_items(storage)
    assert "Late: this digest was due at 2026-11-26 08:00 UTC" in item.payload["card"]["fallbackText"]
    assert await scheduler.pause() == MAX_SLEEP         # next is tomorrow: the loop looks again within a minute
    clock.moment = datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL) - timedelta(seconds=30)
    assert await scheduler.pause() == 30.0
    clock.moment += timedelta(seconds=40)
    assert await scheduler.pause() == MIN_SLEEP


@pytest.fixture
async def connector(aiohttp_server):
    stand_in = Connector()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("/"))
    return stand_in


async def test_a_due_digest_reaches_the_channel_through_the_outbox(make_storage, workspaces, connector):
    storage = make_storage()
    await storage.open()
    await storage.save_conversation(ConversationRecord(
        conversation_id=CHANNEL, kind="channel", tenant_id=TENANT, team_id=CHANNEL, channel_id=CHANNEL, user_id="",
        updated_at=CREATED,
        reference={"bot": {"id": BOT_ID, "name": "MLOps bot"}, "channelId": "msteams", "serviceUrl": connector.url,
                   "conversation": {"id": CHANNEL, "conversationType": "channel", "tenantId": TENANT}}))
    await scheduled(storage)
    clock = Clock(datetime(2026, 11, 26, 8, 10, tzinfo=timezone.utc))
    bot = TeamsBot(None, storage, build_adapter("", "", "", ""), "")
    worker = OutboxWorker(storage, bot.deliver, owner="replica-a", clock=clock)
    woken = []
    scheduler = DigestScheduler(storage, workspaces, clock=clock, wake=lambda: woken.append(True))
    assert await scheduler.tick() == 1 and woken == [True]
    assert await worker.run_once() == 1
    [sent] = [s for s in connector.sent if s.method == "POST"]
    assert sent.path.startswith(f"/v3/conversations/{CHANNEL}/activities")
    assert_valid_card(sent.card)
    assert sent.card["body"][0]["text"] == "Model health digest · Thu 26 Nov 2026"
    [item] = await digest_items(storage)
    assert item.state == outbox.SENT


async def test_a_broken_schedule_does_not_hold_up_the_others(make_storage, workspaces):
    storage = make_storage()
    await storage.open()
    await scheduled(storage, "a:first")
    await scheduled(storage, "b:second")
    # "a:first" names a zone this host does not know (tzdata changed under it): it cannot be sent
    await storage.run_transaction(lambda tx: tx.execute(
        "UPDATE digest_schedules SET time_zone = 'Mars/Olympus' WHERE conversation_id = 'a:first'"))
    clock = Clock(datetime(2026, 11, 26, 8, 5, tzinfo=timezone.utc))
    scheduler = DigestScheduler(storage, workspaces, clock=clock)
    assert await scheduler.tick() == 1
    assert scheduler.failed == ["a:first"]
    assert [i.conversation_id for i in await digest_items(storage)] == ["b:second"]
    assert await scheduler.pause() == MAX_SLEEP           # retried in a minute, not in a hot loop


async def test_the_loop_ticks_then_sleeps_until_the_next_digest_is_due(make_storage, workspaces):
    storage = make_storage()
    await storage.open()
    await scheduled(storage, CHANNEL, "0 9 * * *")
    clock = Clock(datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc) + jitter(CHANNEL) - timedelta(seconds=20))
    pauses = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.moment += timedelta(seconds=seconds)
        if len(pauses) == 3:
            raise asyncio.CancelledError

    scheduler = DigestScheduler(storage, workspaces, clock=clock, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    # 20 s until due; then the digest goes out and the next is a day away (the loop looks every minute)
    assert pauses == [20.0, MAX_SLEEP, MAX_SLEEP]
    assert len(await digest_items(storage)) == 1
