"""Issue 17, "Nothing lost, nothing forged": the outbox under injected faults.

A Bot Connector stand-in (aiohttp on 127.0.0.1) answers 429/500/503, or hangs, per conversation;
delivery goes through the real TeamsBot.deliver (botbuilder's CloudAdapter). Time is the test's:
the worker's clock and sleep are injected, so back-off, deadlines and rate limits are measured
without waiting, and no assertion is about how long anything took on the wall clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web

from adapters.storage import open_storage, outbox, rate_limits
from bot.outbox import CONVERSATION_WINDOWS, OutboxWorker, transient
from bot.teams import TeamsBot, build_adapter
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema  # noqa: F401 - fixtures
from tests.teams_client import TENANT, Connector
from tests.test_outbox_delivery import ALPHA, BETA, START, TestTime, drain, enqueue, posted, prepared, worker_for


@dataclass
class FaultyConnector(Connector):
    """The stand-in, plus: conversations whose sends hang until released, and failures per conversation."""

    hang: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: list[str] = field(default_factory=list)        # conversations with a send hanging right now
    hung: asyncio.Event = field(default_factory=asyncio.Event)
    failing: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    drop_hung: bool = False

    async def _receive(self, request: web.Request) -> web.Response:
        conversation = request.path.split("/v3/conversations/", 1)[1].split("/", 1)[0]
        if conversation in self.hang:
            self.hanging.append(conversation)
            self.hung.set()
            try:
                await self.released.wait()
            finally:
                self.hanging.remove(conversation)
            if self.drop_hung:
                # this request never reached Teams (had it, Teams would show the message, and the
                # bot's retry after its send timeout would show it again: at-least-once)
                return web.json_response({"error": {"code": "GatewayTimeout"}}, status=504)
        queue = self.failing.get(conversation)
        if queue:
            status, headers = queue.pop(0)
            self.refused.append(await _sent(request))
            return web.json_response({"error": {"code": "ServiceError", "message": "try later"}}, status=status,
                                     headers=headers)
        return await super()._receive(request)


async def _sent(request: web.Request):
    from tests.teams_client import Sent
    return Sent(request.method, request.path, await request.json())


@pytest.fixture
async def connector(aiohttp_server):
    stand_in = FaultyConnector()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("/"))
    yield stand_in
    stand_in.released.set()


async def states(storage) -> dict[str, tuple[str, int]]:
    items = await storage.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    return {i.payload["text"]: (i.state, i.attempts) for i in items}


# ---------------------------------------------------------------- 1. a transient failure never drops a message


def test_which_failures_are_transient():
    assert [s for s in (None, 400, 401, 403, 404, 408, 409, 412, 413, 429, 500, 502, 503, 504) if transient(s)] == [
        None, 408, 412, 429, 500, 502, 503, 504]


async def test_500_and_503_are_retried_until_delivered_even_after_a_429(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    for n in range(3):
        await enqueue(storage, ALPHA, f"alpha {n}")
    await enqueue(storage, BETA, "beta 0")
    # Today's worker gave up on the first 500 or 503, also one that came after a 429.
    connector.failing = {ALPHA: [(429, {"Retry-After": "3"}), (503, {}), (500, {}), (503, {"Retry-After": "7"})],
                         BETA: [(500, {}), (502, {}), (504, {}), (408, {})]}
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")

    await drain(storage, [worker], time)

    assert [text for conv, text in posted(connector) if conv == ALPHA] == ["alpha 0", "alpha 1", "alpha 2"]
    assert [text for conv, text in posted(connector) if conv == BETA] == ["beta 0"]
    assert len(connector.refused) == 8
    result = await states(storage)
    assert {text: state for text, (state, _) in result.items()} == {
        "alpha 0": "sent", "alpha 1": "sent", "alpha 2": "sent", "beta 0": "sent"}
    assert result["alpha 0"][1] == 5 and result["beta 0"][1] == 5      # four refusals, then the send
    await storage.close()


async def test_a_timed_out_send_and_a_network_error_are_retried(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA)
    await enqueue(storage, ALPHA, "through the storm")
    time = TestTime()
    bot = TeamsBot(None, storage, build_adapter("", "", "", ""), "")
    calls = []

    async def flaky(conversation_id, payload, update):
        calls.append(len(calls))
        if len(calls) == 1:
            await asyncio.Event().wait()             # no answer at all: the send timeout ends it
        if len(calls) == 2:
            raise ConnectionResetError("connection reset by peer")
        return await bot.deliver(conversation_id, payload, update)

    # the timeout also bounds the real send that follows: short, but roomy for a loaded machine
    worker = OutboxWorker(storage, flaky, owner="replica-a", clock=time.now, sleep=time.sleep, send_timeout=1.0)
    await drain(storage, [worker], time)

    assert posted(connector) == [(ALPHA, "through the storm")]
    assert await states(storage) == {"through the storm": ("sent", 3)}
    await storage.close()


async def test_a_message_is_given_up_only_at_its_deadline_and_a_permanent_error_at_once(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    await enqueue(storage, ALPHA, "never accepted")
    await enqueue(storage, BETA, "malformed")
    connector.failing = {ALPHA: [(503, {})] * 1000, BETA: [(400, {})]}
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")
    worker.deadline = timedelta(hours=2)

    async def pending() -> bool:
        return bool(await storage.run_transaction(lambda tx: outbox.find_items(tx, state="pending"), write=False))

    while await pending() and time.t < 7200 - 300:       # the back-off is at most 5 minutes
        if not await worker.run_once():
            time.t += 5
        assert (await states(storage))["never accepted"][0] == "pending"
    await drain(storage, [worker], time, step=5)

    result = await states(storage)
    assert result["malformed"] == ("dead", 1)                       # 400 is permanent: at once
    assert result["never accepted"][0] == "dead"
    assert time.t >= 7200
    [dead] = await storage.run_transaction(lambda tx: outbox.find_items(tx, dedupe_key=f"{ALPHA}:never accepted"))
    assert dead.last_error.startswith("still failing after 2 h (")
    assert dead.attempts == len([r for r in connector.refused if r.conversation_id == ALPHA])
    assert 20 < dead.attempts < 60          # exponential back-off up to 5 minutes, not a retry a second
    assert posted(connector) == []
    await storage.close()


# ---------------------------------------------------------------- 2. one slow conversation never stalls the others


async def test_a_hanging_conversation_does_not_hold_up_another(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    await enqueue(storage, ALPHA, "alpha first")           # claimed first: today it was sent first, serially
    await enqueue(storage, BETA, "beta waits for nobody")
    connector.hang = {ALPHA}
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")
    worker.send_timeout = 30.0                               # longer than this test: the hang is what ends

    task = asyncio.get_running_loop().create_task(worker.run_once())
    try:
        await connector.wait_for(1)
        # BETA's message arrived while ALPHA's send is still hanging
        assert posted(connector) == [(BETA, "beta waits for nobody")]
        assert connector.hanging == [ALPHA]
        # and while it hangs, no other replica takes ALPHA's item (its lease outlasts the send timeout)
        time.t += worker.send_timeout
        other = worker_for(storage, time, "replica-b")
        assert await other.run_once() == 0
    finally:
        connector.released.set()
        await task
    assert sorted(posted(connector)) == [(ALPHA, "alpha first"), (BETA, "beta waits for nobody")]
    await storage.close()


async def test_a_send_that_hangs_is_cut_off_and_its_conversation_keeps_its_order(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await prepared(storage, connector, ALPHA, BETA)
    for n in range(3):
        await enqueue(storage, ALPHA, f"alpha {n}")
    await enqueue(storage, BETA, "beta")
    connector.hang, connector.drop_hung = {ALPHA}, True
    time = TestTime()
    worker = worker_for(storage, time, "replica-a")
    worker.send_timeout = 1.0                  # BETA's real send must fit in it on a loaded machine too

    await worker.run_once()

    result = await states(storage)
    assert result["alpha 0"] == ("pending", 1)           # cut off by the send timeout, to be retried
    assert result["alpha 1"] == result["alpha 2"] == ("pending", 0)   # held back behind it, not tried
    assert result["beta"] == ("sent", 1)
    [cut] = await storage.run_transaction(lambda tx: outbox.find_items(tx, dedupe_key=f"{ALPHA}:alpha 0"))
    assert cut.last_error == "network: no answer within 1 s" and cut.lease_owner == ""

    connector.hang = set()
    connector.released.set()
    await drain(storage, [worker], time)
    assert [text for conv, text in posted(connector) if conv == ALPHA] == ["alpha 0", "alpha 1", "alpha 2"]
    await storage.close()


# ---------------------------------------------------------------- 5. duplicates as rare as the protocol allows


async def test_thirty_per_second_per_tenant_not_thirty_one(storage_at):
    storage = storage_at
    limits = [(f"tenant:{TENANT}", ((1.0, 30),))]

    async def acquire(now: float) -> float:
        return await storage.run_transaction(lambda tx: rate_limits.acquire(tx, limits, now=now))

    assert [await acquire(1000.0) for _ in range(30)] == [0.0] * 30
    # A 31st send one second after the first 30 would make 31 in [1000, 1001]
    assert await acquire(1001.0) == pytest.approx(rate_limits.RESOLUTION)
    assert await acquire(1001.0 + rate_limits.RESOLUTION) == 0.0
    assert len(await storage.run_transaction(lambda tx: rate_limits.sends(tx, f"tenant:{TENANT}"))) == 31


async def test_the_worker_sends_31_messages_to_one_tenant_in_more_than_one_closed_second(tmp_path, connector):
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    names = [f"19:t{n}@thread.tacv2" for n in range(31)]
    await prepared(storage, connector, *names)
    for name in names:
        await enqueue(storage, name, "hello")
    time, deliveries = TestTime(), []
    worker = worker_for(storage, time, "replica-a", deliveries)
    worker.batch, worker.concurrency = 40, 1     # one at a time: each delivery's moment is when it was let go

    await drain(storage, [worker], time)

    times = [t for t, _, _ in deliveries]
    assert len(times) == 31
    # Today's limiter let the 31st go at exactly t = 1.0: 31 sends in [0, 1]
    assert closed_window_counts(times, 1.0) == 30
    await storage.close()


def test_the_wait_is_until_the_oldest_counted_send_leaves_the_window():
    assert rate_limits.wait_time([0.0] * 6, CONVERSATION_WINDOWS, 0.5) == 0.0
    assert rate_limits.wait_time([0.0] * 7, CONVERSATION_WINDOWS, 0.5) == pytest.approx(0.501)
    assert rate_limits.wait_time([0.0] * 7 + [1.5], CONVERSATION_WINDOWS, 1.5) == pytest.approx(0.501)   # 8 in 2 s
    assert rate_limits.wait_time([float(t) for t in range(60)], CONVERSATION_WINDOWS, 60.0) == 0.0
    assert rate_limits.wait_time([t / 2 for t in range(60)], CONVERSATION_WINDOWS, 29.6) == pytest.approx(0.401)


async def test_a_graceful_stop_records_the_send_under_way_and_nothing_is_sent_twice(tmp_path, connector):
    path = f"sqlite://{tmp_path}/bot.db"
    storage = open_storage(path)
    await prepared(storage, connector, ALPHA, BETA)
    await enqueue(storage, ALPHA, "in flight at shutdown")
    await enqueue(storage, ALPHA, "not yet sent")
    await enqueue(storage, BETA, "to beta")
    connector.hang = {ALPHA}
    time = TestTime()
    worker = worker_for(storage, time, "before-restart")
    worker.send_timeout = 30.0
    running = asyncio.get_running_loop().create_task(worker.run())
    await asyncio.wait_for(connector.hung.wait(), 5)

    # The app shuts down (a deploy, a scale-in): today its task was cancelled mid-send, the item
    # stayed pending, and the next replica posted it again.
    stopping = asyncio.get_running_loop().create_task(worker.stop())
    await asyncio.sleep(0)
    connector.released.set()                             # Teams answers the send under way
    await stopping
    await asyncio.wait_for(running, 5)                   # run() returns by itself once stopped
    await storage.close()

    restarted = open_storage(path)
    await restarted.open()
    connector.hang = set()
    await drain(restarted, [worker_for(restarted, time, "after-restart")], time)   # no lease to wait out

    assert sorted(posted(connector)) == [(ALPHA, "in flight at shutdown"), (ALPHA, "not yet sent"), (BETA, "to beta")]
    await restarted.close()


# ---------------------------------------------------------------- 6. rate limits hold across replicas


def closed_window_counts(times: list[float], window: float) -> int:
    """The most sends in any closed interval [t, t + window]."""
    return max((sum(1 for u in times if t <= u <= t + window) for t in times), default=0)


async def test_two_replicas_together_stay_within_the_limits(make_storage, connector):  # noqa: F811
    one, two = make_storage(), make_storage()
    busy = "19:busy@thread.tacv2"
    others = [f"19:o{n}@thread.tacv2" for n in range(40)]
    await prepared(one, connector, busy, *others)
    await two.open()
    for n in range(40):
        await enqueue(one, busy, f"busy {n}")
    for name in others:
        await enqueue(one, name, "hello")
    time = TestTime()
    busy_times: list[float] = []
    workers = []
    for owner, storage in (("replica-1", one), ("replica-2", two)):
        deliveries: list = []
        worker = worker_for(storage, time, owner, deliveries)
        worker.batch = 6
        workers.append((worker, deliveries))

    await drain(one, [w for w, _ in workers], time, step=0.25)

    assert len(posted(connector)) == 80
    assert [text for conv, text in posted(connector) if conv == busy] == [f"busy {n}" for n in range(40)]
    assert all(deliveries for _, deliveries in workers), "both replicas delivered"
    # One conversation's sends are serial, so the moments they were delivered are a fair record
    busy_times = sorted(t for _, deliveries in workers for t, conv, _ in deliveries if conv == busy)
    for window, limit in CONVERSATION_WINDOWS:
        assert closed_window_counts(busy_times, window) <= limit, (window, busy_times)
    assert closed_window_counts(busy_times, 1.0) == 7                      # and the limit is used, not undercut
    tenant = [t - START.timestamp() for t in await one.run_transaction(
        lambda tx: rate_limits.sends(tx, f"tenant:{TENANT}"), write=False)]
    assert len(tenant) == 80
    assert closed_window_counts(tenant, 1.0) == 30
    await one.close()
    await two.close()


@pytest.fixture
async def storage_at(make_storage):  # noqa: F811
    storage = make_storage()
    await storage.open()
    yield storage
    await storage.close()
