"""The outbox worker against a Bot Connector stand-in: throttling, restarts, replicas, removed bots.

Delivery goes through the real TeamsBot.deliver (botbuilder's CloudAdapter, HTTP to the
stand-in); time is the test's own: the worker's clock, monotonic time and sleep are injected, so
rate limits and Retry-After are measured without waiting.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import ConversationRecord, conversations, open_storage, outbox, rate_limits
from bot.outbox import CONVERSATION_WINDOWS, MIN_PAUSE, OutboxWorker
from bot.teams import TeamsBot, build_adapter
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema  # noqa: F401 - fixtures
from tests.teams_client import BOT_ID, TENANT, Connector

START = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
ALPHA, BETA = "19:alpha@thread.tacv2", "19:beta@thread.tacv2"


class TestTime:
    """The test's clock: monotonic seconds, the matching UTC time, and a sleep that only advances it."""

    __test__ = False

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return START + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
async def connector(aiohttp_server):
    stand_in = Connector()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("/"))
    return stand_in


def record(conversation_id: str, service_url: str) -> ConversationRecord:
    return ConversationRecord(
        conversation_id=conversation_id, kind="channel", tenant_id=TENANT, team_id="19:team@thread.tacv2",
        channel_id=conversation_id, user_id="", updated_at=START,
        reference={"bot": {"id": BOT_ID, "name": "MLOps bot"}, "channelId": "msteams", "serviceUrl": service_url,
                   "conversation": {"id": conversation_id, "conversationType": "channel", "tenantId": TENANT}})


async def prepared(storage, connector, *names: str) -> None:
    await storage.open()
    for name in names:
        await storage.save_conversation(record(name, connector.url))


async def enqueue(storage, conversation_id: str, text: str, now: datetime = START, **payload) -> int:
    return await storage.run_transaction(lambda tx: outbox.enqueue(
        tx, conversation_id, {"text": text, **payload}, dedupe_key=f"{conversation_id}:{text}", tenant_id=TENANT,
        now=now))


def worker_for(storage, time: TestTime, owner: str, deliveries: list | None = None) -> OutboxWorker:
    bot = TeamsBot(None, storage, build_adapter("", "", "", ""), "")

    async def deliver(conversation_id, payload, update):
        activity_id = await bot.deliver(conversation_id, payload, update)
        if deliveries is not None:
            deliveries.append((time.t, conversation_id, payload["text"]))
        return activity_id

    return OutboxWorker(storage, deliver, owner=owner, clock=time.now, monotonic=time.monotonic, sleep=time.sleep)


async def drain(storage, workers, time: TestTime, *, step: float = 0.25, limit: int = 4000) -> None:
    """Run the workers until nothing is pending, advancing the test clock when none has work."""
    for _ in range(limit):
        pending = await storage.run_transaction(lambda tx: outbox.find_items(tx, state="pending"), write=False)
        if not pending:
            return
        done = sum([await w.run_once() for w in workers])
        if not done:
            time.t += step
    raise AssertionError("the outbox did not drain")


def posted(connector) -> list[tuple[str, str]]:
    return [(s.conversation_id, s.text) for s in connector.sent if s.method == "POST"]


def assert_within_limits(times: list[float]) -> None:
    for window, limit in CONVERSATION_WINDOWS:
        for i, start in enumerate(times):
            inside = [t for t in times[i:] if t < start + window]
            assert len(inside) <= limit, f"{len(inside)} sends within {window} s from t={start}"


async def test_a_connector_answering_429_for_a_while_loses_nothing_and_limits_hold(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    for n in range(30):
        await enqueue(storage, ALPHA, f"alpha {n}")
    for n in range(5):
        await enqueue(storage, BETA, f"beta {n}")
    # Teams throttles the first six sends, asking for 3 s each time.
    connector.failures = [(429, {"Retry-After": "3"})] * 6
    time, deliveries = TestTime(), []
    worker = worker_for(storage, time, "replica-a", deliveries)

    await drain(storage, [worker], time)

    assert sorted(posted(connector)) == sorted([(ALPHA, f"alpha {n}") for n in range(30)]
                                               + [(BETA, f"beta {n}") for n in range(5)])
    # in order per conversation, despite the retries
    assert [text for conv, text in posted(connector) if conv == ALPHA] == [f"alpha {n}" for n in range(30)]
    assert len(connector.refused) == 6
    items = await storage.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    assert {i.state for i in items} == {"sent"}
    alpha_times = [t for t, conv, _ in deliveries if conv == ALPHA]
    assert_within_limits(alpha_times)
    # nothing went to a conversation before the Retry-After Teams asked for had passed
    first_refusal_conversation = connector.refused[0].conversation_id
    first = [t for t, conv, _ in deliveries if conv == first_refusal_conversation][0]
    assert first >= 3.0
    assert time.t < 120, "the whole run should take about as long as the limits demand, not minutes"
    await storage.close()


async def test_undelivered_items_are_delivered_once_after_a_restart(tmp_path, connector):
    path = f"sqlite://{tmp_path}/bot.db"
    storage = open_storage(path)
    await prepared(storage, connector, ALPHA)
    for n in range(6):
        await enqueue(storage, ALPHA, f"message {n}")
    time = TestTime()
    bot = TeamsBot(None, storage, build_adapter("", "", "", ""), "")
    stuck = asyncio.Event()

    async def dies_on_the_fourth(conversation_id, payload, update):
        if payload["text"] == "message 3":
            stuck.set()
            await asyncio.Event().wait()          # the process dies while this send hangs
        return await bot.deliver(conversation_id, payload, update)

    first = OutboxWorker(storage, dies_on_the_fourth, owner="before-restart", clock=time.now,
                         monotonic=time.monotonic, sleep=time.sleep)
    task = asyncio.get_running_loop().create_task(first.run_once())
    await asyncio.wait_for(stuck.wait(), 5)
    task.cancel()
    await storage.close()
    assert posted(connector) == [(ALPHA, f"message {n}") for n in range(3)]

    restarted = open_storage(path)
    await restarted.open()
    time.t += 61                                  # the dead replica's lease runs out
    await drain(restarted, [worker_for(restarted, time, "after-restart")], time)

    assert posted(connector) == [(ALPHA, f"message {n}") for n in range(6)]
    await restarted.close()


async def test_two_replicas_on_one_database_deliver_each_item_once(make_storage, connector):  # noqa: F811
    one, two = make_storage(), make_storage()
    await prepared(one, connector, *[f"19:c{n}@thread.tacv2" for n in range(6)])
    await two.open()
    expected = []
    for n in range(60):
        conversation = f"19:c{n % 6}@thread.tacv2"
        await enqueue(one, conversation, f"item {n}")
        expected.append((conversation, f"item {n}"))
    time = TestTime()
    workers = [worker_for(one, time, "replica-1"), worker_for(two, time, "replica-2")]
    for worker in workers:
        worker.batch = 5

    async def run(worker):
        for _ in range(200):
            if not await worker.run_once():
                pending = await worker.store.run_transaction(lambda tx: outbox.find_items(tx, state="pending"),
                                                            write=False)
                if not pending:
                    return
                # Time moves only while every pending item waits for it (not_before); not while the
                # other replica is still delivering what it holds: on a loaded machine that takes
                # longer than the lease, and a clock racing past it would hand the item over twice.
                if not any(i.lease_until and i.lease_until > time.now() for i in pending):
                    time.t += 0.5
                await asyncio.sleep(0.001)

    await asyncio.gather(*(run(w) for w in workers))

    assert sorted(posted(connector)) == sorted(expected)
    assert len(posted(connector)) == 60
    items = await one.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    assert {i.state for i in items} == {"sent"}
    assert {i.lease_owner for i in items} == {"replica-1", "replica-2"}


async def test_a_conversation_the_bot_was_removed_from_is_marked_gone_and_skipped(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    await enqueue(storage, ALPHA, "first")
    connector.failures = [(403, {})]
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")
    await drain(storage, [worker], time)

    assert await storage.run_transaction(lambda tx: conversations.is_gone(tx, ALPHA), write=False)
    await enqueue(storage, ALPHA, "second")
    await enqueue(storage, BETA, "to beta")
    await drain(storage, [worker], time)

    assert posted(connector) == [(BETA, "to beta")]
    assert len(connector.refused) == 1                  # the second was never tried
    states = {i.payload["text"]: (i.state, i.attempts) for i in
              await storage.run_transaction(lambda tx: outbox.find_items(tx), write=False)}
    assert states == {"first": ("dead", 1), "second": ("dead", 1), "to beta": ("sent", 1)}

    # the bot is added again (any activity saves the conversation): delivery resumes
    await storage.save_conversation(record(ALPHA, connector.url))
    await enqueue(storage, ALPHA, "third")
    await drain(storage, [worker], time)
    assert posted(connector)[-1] == (ALPHA, "third")
    await storage.close()


async def test_an_update_waits_for_its_message_and_posts_anew_when_that_one_is_gone(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA)
    await storage.run_transaction(lambda tx: outbox.enqueue(tx, ALPHA, {"text": "v1"}, dedupe_key="card", now=START))
    await storage.run_transaction(lambda tx: outbox.enqueue(tx, ALPHA, {"text": "v2", "update_of": "card"},
                                                            dedupe_key="card-2", now=START))
    await storage.run_transaction(lambda tx: outbox.enqueue(tx, ALPHA, {"text": "v3", "update_of": "pruned"},
                                                            dedupe_key="card-3", now=START))
    time = TestTime()
    await drain(storage, [worker_for(storage, time, "replica-a")], time)

    assert [(s.method, s.text) for s in connector.sent] == [("POST", "v1"), ("PUT", "v2"), ("POST", "v3")]
    assert connector.sent[1].path.endswith("/activities/activity-1")
    await storage.close()


async def test_the_tenant_limit_holds_across_conversations(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    names = [f"19:t{n}@thread.tacv2" for n in range(45)]
    await prepared(storage, connector, *names)
    for name in names:
        await enqueue(storage, name, "hello")
    time, deliveries = TestTime(), []
    worker = worker_for(storage, time, "replica-a", deliveries)
    worker.batch = 50

    await drain(storage, [worker], time)

    assert len(deliveries) == 45 == len(posted(connector))
    # The limiter's own record of when each send was let through (the worker sends to several
    # conversations at once, so the moment a deliverer returns is no measure of when it was let go)
    times = [t - START.timestamp() for t in await storage.run_transaction(
        lambda tx: rate_limits.sends(tx, f"tenant:{TENANT}"), write=False)]
    assert len(times) == 45
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) == 30
    await storage.close()


async def test_the_delivery_loop_survives_an_unexpected_error(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA)
    await enqueue(storage, ALPHA, "after the hiccup")

    class FailsOnce:
        """The real storage, whose first transaction hits a bug-like error (not a StorageError)."""

        def __init__(self, inner):
            self.inner, self.failed = inner, False

        async def run_transaction(self, work, **kw):
            if not self.failed:
                self.failed = True
                raise RuntimeError("surprise")
            return await self.inner.run_transaction(work, **kw)

    bot = TeamsBot(None, storage, build_adapter("", "", "", ""), "")
    worker = OutboxWorker(FailsOnce(storage), bot.deliver, owner="replica-a", poll_seconds=0.01)
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        await connector.wait_for(1)
    finally:
        task.cancel()
    assert posted(connector) == [(ALPHA, "after the hiccup")]
    await storage.close()


async def test_an_idle_worker_sleeps_until_the_next_item_is_due_not_a_whole_poll(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")
    worker.poll_seconds = 2.0
    assert await worker.pause() == 2.0                        # nothing pending: the poll

    first = await enqueue(storage, ALPHA, "throttled")
    await storage.run_transaction(lambda tx: outbox.postpone(tx, first, "", START + timedelta(seconds=0.3)))
    assert await worker.pause() == pytest.approx(0.3)         # Teams' Retry-After, not the 2 s poll

    await storage.run_transaction(lambda tx: outbox.postpone(tx, first, "", START + timedelta(seconds=30)))
    assert await worker.pause() == 2.0                        # far off: the poll still comes first

    await enqueue(storage, BETA, "due now")
    time.t = 1.0                                              # overdue (e.g. held behind an earlier item)
    assert await worker.pause() == MIN_PAUSE                  # never a busy loop
    await storage.close()
