"""Traffic history, watches and pending operations on SQLite and the real PostgreSQL server, with two
replicas racing for the same watch or operation."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from adapters.storage import operations, traffic_history, watches
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def entry(**changes) -> traffic_history.NewEntry:
    values = dict(workspace="ml-prod", endpoint="fraud-api", at=T0, action="traffic", before={"blue": 90, "green": 10},
                  after={"blue": 50, "green": 50, "red": 0}, actor_id="u1", actor_name="Olga", approval_id=4,
                  reason="why")
    values.update(changes)
    return traffic_history.NewEntry(**values)


async def test_history_round_trips_newest_first_and_notes_outside_changes(storage):
    async def work(tx):
        first = await traffic_history.add(tx, entry())
        second = await traffic_history.add(tx, entry(at=T0 + timedelta(minutes=5), action="canary",
                                                      before={"blue": 50, "green": 50}, after={"green": 100},
                                                      approval_id=None, reason=""))
        same = await traffic_history.note_outside_change(tx, "ml-prod", "fraud-api", {"green": 100, "blue": 0}, T0)
        outside = await traffic_history.note_outside_change(tx, "ml-prod", "fraud-api", {"blue": 100}, T0)
        none_yet = await traffic_history.note_outside_change(tx, "ml-prod", "credit-api", {"blue": 100}, T0)
        return first, second, same, outside, none_yet, await traffic_history.for_endpoint(tx, "ml-prod", "fraud-api")

    first, second, same, outside, none_yet, listed = await storage.run_transaction(work)
    assert (same, none_yet) == (None, None)
    assert [e.id for e in listed] == [outside.id, second.id, first.id]
    assert listed[2] == traffic_history.Entry(
        workspace="ml-prod", endpoint="fraud-api", at=T0, action="traffic", before={"blue": 90, "green": 10},
        after={"blue": 50, "green": 50}, actor_id="u1", actor_name="Olga", approval_id=4, reason="why",
        id=first.id)
    assert (outside.source, outside.before, outside.after) == ("outside", {"green": 100}, {"blue": 100})


def new_watch(started_at=T0) -> watches.NewWatch:
    return watches.NewWatch(workspace="ml-prod", endpoint="fraud-api", action="canary", history_id=1,
                            started_at=started_at, baseline={"p99_ms": 99.5, "error_rate": 0.001, "deployments": {}},
                            auto_rollback=True, approval_id=3, conversation_id="conv", tenant_id="t1",
                            requester_name="Olga")


async def test_two_replicas_claim_a_due_watch_once_and_a_lost_claim_is_taken_over(make_storage):
    one, two = make_storage(), make_storage()
    await one.open()
    await two.open()

    async def create(tx):
        return await watches.create(tx, new_watch())
    created = await one.run_transaction(create)
    assert (created.state, created.auto_rollback, created.baseline["p99_ms"]) == ("watching", True, 99.5)

    def claim(owner, now):
        async def work(tx):
            return await watches.claim_due(tx, owner, started_before=now - timedelta(minutes=15), now=now,
                                           lease_seconds=60)
        return work

    early = T0 + timedelta(minutes=14)
    assert await one.run_transaction(claim("a", early)) == []
    due = T0 + timedelta(minutes=16)
    got = await asyncio.gather(one.run_transaction(claim("a", due)), two.run_transaction(claim("b", due)))
    assert sorted(len(g) for g in got) == [0, 1]
    winner = "a" if got[0] else "b"
    later = due + timedelta(minutes=2)            # the winner died; its lease ran out
    [taken] = await two.run_transaction(claim("c", later))
    assert (taken.id, taken.claimed_by) == (created.id, "c")

    async def finish(owner):
        async def work(tx):
            return await watches.finish(tx, created.id, owner, verdict={"state": "healthy"}, now=later)
        return work
    assert await one.run_transaction(await finish(winner)) is False          # no longer its claim
    assert await one.run_transaction(await finish("c")) is True
    assert await two.run_transaction(claim("d", later + timedelta(hours=1))) == []


async def test_an_operation_is_finished_once_and_posted_once(make_storage):
    one, two = make_storage(), make_storage()
    await one.open()
    await two.open()
    new = operations.NewOperation(owner="a", change={"action": "traffic"}, notes={"baseline": {}}, actor_id="u1",
                                  actor_name="Olga", tenant_id="t1", conversation_id="conv", activity_id="act",
                                  started_at=T0, approval_id=None)

    async def create(tx):
        return await operations.create(tx, new)
    op = await one.run_transaction(create)

    async def unreported(tx):
        return await operations.unreported(tx, not_owned_by="b", started_before=T0)
    assert [o.id for o in await two.run_transaction(unreported, write=False)] == [op.id]

    def finish(text):
        async def work(tx):
            return await operations.finish(tx, op.id, outcome={"text": text, "ok": True}, now=T0)
        return work
    results = await asyncio.gather(one.run_transaction(finish("from a")), two.run_transaction(finish("from b")))
    assert sorted(results) == [False, True]

    async def ack_and_post(tx):
        await operations.set_ack(tx, op.id, "activity-1")
        return [await operations.mark_posted(tx, op.id), await operations.mark_posted(tx, op.id)]
    assert await one.run_transaction(ack_and_post) == [True, False]

    async def read(tx):
        return await operations.get(tx, op.id), await operations.done_unposted(tx, finished_before=T0)
    stored, unposted = await two.run_transaction(read, write=False)
    assert (stored.state, stored.posted, stored.ack_activity_id, unposted) == ("done", True, "activity-1", [])
    assert stored.outcome["text"] in ("from a", "from b")


async def test_two_replicas_seeing_the_same_outside_change_record_it_once(make_storage):
    replicas = [make_storage() for _ in range(4)]
    for replica in replicas:
        await replica.open()

    async def first(tx):
        await traffic_history.add(tx, entry())
    await replicas[0].run_transaction(first)

    async def seen(tx):
        return await traffic_history.note_outside_change(tx, "ml-prod", "fraud-api", {"green": 100}, T0)
    noted = await asyncio.gather(*(r.run_transaction(seen) for r in replicas))
    assert sum(n is not None for n in noted) == 1

    async def listed(tx):
        return await traffic_history.for_endpoint(tx, "ml-prod", "fraud-api")
    assert [e.source for e in await replicas[1].run_transaction(listed, write=False)] == ["outside", "bot"]
