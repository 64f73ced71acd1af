"""The outbox, on SQLite and PostgreSQL: values, leases, concurrent claims, dedupe, ownership."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import outbox
from adapters.storage.outbox import DEAD, PENDING, SENT, OutboxItem
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

NOON = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=timezone.utc)
CARD = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                             "content": {"type": "AdaptiveCard", "version": "1.5", "body": []}}]}


async def enqueue(storage, n: int, **options):
    options.setdefault("now", NOON)
    return await storage.run_transaction(lambda tx: outbox.enqueue(
        tx, options.pop("conversation_id", "19:general@thread.tacv2"), {**CARD, "n": n},
        dedupe_key=options.pop("dedupe_key", f"alert-{n}"), **options))


async def claim(storage, owner: str, now: datetime = NOON, limit: int = 10, lease: float = 30):
    return await storage.run_transaction(lambda tx: outbox.claim(tx, owner, now=now, lease_seconds=lease, limit=limit))


async def test_enqueue_then_get_returns_every_field(storage):
    item_id = await enqueue(storage, 1, tenant_id="t1", not_before=NOON + timedelta(seconds=5))

    assert await storage.run_transaction(lambda tx: outbox.get_item(tx, item_id)) == OutboxItem(
        id=item_id, conversation_id="19:general@thread.tacv2", tenant_id="t1", dedupe_key="alert-1",
        payload={**CARD, "n": 1}, state=PENDING, attempts=0, not_before=NOON + timedelta(seconds=5),
        lease_owner="", lease_until=None, activity_id="", last_error="", created_at=NOON, sent_at=None)
    assert await storage.run_transaction(lambda tx: outbox.get_item(tx, item_id + 1)) is None


async def test_a_dedupe_key_is_stored_once(storage):
    first = await enqueue(storage, 1, dedupe_key="approval-42-card")
    second = await enqueue(storage, 2, dedupe_key="approval-42-card")

    assert isinstance(first, int) and second is None
    items = await storage.run_transaction(lambda tx: outbox.find_items(tx, dedupe_key="approval-42-card"))
    assert [(i.id, i.payload["n"]) for i in items] == [(first, 1)]


async def test_claim_leases_due_items_oldest_first_and_counts_attempts(storage):
    # one conversation each: a later item of a conversation whose earlier one is leased waits (issue 17,
    # per-conversation order across replicas; see the next test)
    ids = [await enqueue(storage, n, conversation_id=f"19:c{n}@thread.tacv2") for n in range(4)]
    later = await enqueue(storage, 9, not_before=NOON + timedelta(minutes=1))

    claimed = await claim(storage, "replica-a", limit=3)

    assert [i.id for i in claimed] == ids[:3]
    assert {(i.lease_owner, i.lease_until, i.attempts) for i in claimed} == {
        ("replica-a", NOON + timedelta(seconds=30), 1)}
    assert [i.id for i in await claim(storage, "replica-b")] == [ids[3]]          # the rest; `later` not due
    assert await claim(storage, "replica-b", now=NOON + timedelta(seconds=29)) == []
    assert [i.id for i in await claim(storage, "replica-b", now=NOON + timedelta(minutes=1))] == [*ids, later]  # leases ran out


async def test_a_conversation_is_claimed_in_order_across_replicas(storage):
    first, second = [await enqueue(storage, n) for n in range(2)]
    other = await enqueue(storage, 2, conversation_id="19:other@thread.tacv2")

    assert [i.id for i in await claim(storage, "replica-a", limit=1)] == [first]
    # replica-b may not send `second` while `first` is being sent: it gets only the other conversation
    assert [i.id for i in await claim(storage, "replica-b")] == [other]
    # `first` fails and waits for its retry: `second` waits behind it
    await storage.run_transaction(lambda tx: outbox.retry_later(tx, first, "replica-a",
                                                                NOON + timedelta(seconds=10), "503: busy"))
    assert await claim(storage, "replica-b", now=NOON + timedelta(seconds=5)) == []
    assert [i.id for i in await claim(storage, "replica-b", now=NOON + timedelta(seconds=10))] == [first, second]


async def test_next_due_is_the_earliest_time_a_pending_item_can_be_claimed(storage):
    assert await storage.run_transaction(outbox.next_due, write=False) is None
    await enqueue(storage, 1, conversation_id="19:a@thread.tacv2", not_before=NOON + timedelta(seconds=40))
    leased = await enqueue(storage, 2, conversation_id="19:b@thread.tacv2", not_before=NOON)
    assert await storage.run_transaction(outbox.next_due, write=False) == NOON
    [held] = await claim(storage, "replica-a", lease=30)          # leased until NOON + 30 s
    assert held.id == leased
    assert await storage.run_transaction(outbox.next_due, write=False) == NOON + timedelta(seconds=30)
    await storage.run_transaction(lambda tx: outbox.mark_sent(tx, leased, "replica-a", "activity-1", now=NOON))
    assert await storage.run_transaction(outbox.next_due, write=False) == NOON + timedelta(seconds=40)


async def test_renew_extends_only_the_holders_lease(storage):
    item_id = await enqueue(storage, 1)
    await claim(storage, "replica-a")

    assert await storage.run_transaction(lambda tx: outbox.renew(tx, item_id, "replica-b", NOON + timedelta(minutes=5))) is False
    assert await storage.run_transaction(lambda tx: outbox.renew(tx, item_id, "replica-a", NOON + timedelta(minutes=5)))
    assert await claim(storage, "replica-b", now=NOON + timedelta(seconds=299)) == []
    assert [i.lease_owner for i in await claim(storage, "replica-b", now=NOON + timedelta(minutes=5))] == ["replica-b"]
    # replica-a lost it: it must not send it
    assert await storage.run_transaction(lambda tx: outbox.renew(tx, item_id, "replica-a", NOON + timedelta(minutes=9))) is False


async def test_dead_items_are_counted_and_revived_with_a_fresh_deadline(storage):
    ids = [await enqueue(storage, n, conversation_id=f"19:c{n}@thread.tacv2") for n in range(3)]
    await claim(storage, "replica-a")
    for item_id in ids[:2]:
        await storage.run_transaction(lambda tx, i=item_id: outbox.mark_dead(tx, i, "replica-a", "400: bad"))
    later = NOON + timedelta(hours=30)

    assert await storage.run_transaction(outbox.count_states) == {PENDING: 1, SENT: 0, DEAD: 2}
    assert await storage.run_transaction(lambda tx: outbox.revive(tx, [ids[0], ids[2]], now=later)) == [ids[0]]
    item = await storage.run_transaction(lambda tx: outbox.get_item(tx, ids[0]))
    assert (item.state, item.attempts, item.created_at, item.not_before, item.lease_owner, item.last_error) == (
        PENDING, 0, later, later, "", "")
    assert await storage.run_transaction(lambda tx: outbox.revive(tx, None, now=later)) == [ids[1]]
    assert await storage.run_transaction(outbox.count_states) == {PENDING: 3, SENT: 0, DEAD: 0}


async def test_an_expired_lease_is_claimable_again(storage):
    item_id = await enqueue(storage, 1)
    await claim(storage, "replica-a")

    assert await claim(storage, "replica-b", now=NOON + timedelta(seconds=29)) == []
    again = await claim(storage, "replica-b", now=NOON + timedelta(seconds=30))

    assert [(i.id, i.lease_owner, i.attempts) for i in again] == [(item_id, "replica-b", 2)]
    # The first owner lost it: it can no longer settle the item.
    assert await storage.run_transaction(lambda tx: outbox.mark_sent(
        tx, item_id, "replica-a", "1741953600123", now=NOON)) is False


async def test_mark_sent_only_by_the_lease_holder(storage):
    item_id = await enqueue(storage, 1)
    await claim(storage, "replica-a")
    sent_at = NOON + timedelta(seconds=2)

    assert await storage.run_transaction(lambda tx: outbox.mark_sent(tx, item_id, "replica-b", "x", now=sent_at)) is False
    assert await storage.run_transaction(lambda tx: outbox.mark_sent(
        tx, item_id, "replica-a", "1741953600123", now=sent_at)) is True
    assert await storage.run_transaction(lambda tx: outbox.mark_sent(
        tx, item_id, "replica-a", "again", now=sent_at)) is False                # already settled
    item = await storage.run_transaction(lambda tx: outbox.get_item(tx, item_id))
    assert (item.state, item.activity_id, item.sent_at, item.lease_until) == (SENT, "1741953600123", sent_at, None)
    assert await claim(storage, "replica-b", now=NOON + timedelta(hours=1)) == []


async def test_retry_later_releases_the_item_until_its_time(storage):
    item_id = await enqueue(storage, 1)
    await claim(storage, "replica-a")
    retry_at = NOON + timedelta(seconds=8)

    assert await storage.run_transaction(lambda tx: outbox.retry_later(tx, item_id, "replica-b", retry_at, "x")) is False
    assert await storage.run_transaction(lambda tx: outbox.retry_later(
        tx, item_id, "replica-a", retry_at, "429 Too Many Requests")) is True

    item = await storage.run_transaction(lambda tx: outbox.get_item(tx, item_id))
    assert (item.state, item.not_before, item.last_error, item.lease_owner, item.lease_until) == (
        PENDING, retry_at, "429 Too Many Requests", "", None)
    assert await claim(storage, "replica-b", now=retry_at - timedelta(microseconds=1)) == []
    assert [(i.id, i.attempts) for i in await claim(storage, "replica-b", now=retry_at)] == [(item_id, 2)]


async def test_mark_dead_only_by_the_lease_holder(storage):
    item_id = await enqueue(storage, 1)
    await claim(storage, "replica-a")

    assert await storage.run_transaction(lambda tx: outbox.mark_dead(tx, item_id, "replica-b", "403")) is False
    assert await storage.run_transaction(lambda tx: outbox.mark_dead(tx, item_id, "replica-a", "403 Forbidden")) is True

    item = await storage.run_transaction(lambda tx: outbox.get_item(tx, item_id))
    assert (item.state, item.last_error) == (DEAD, "403 Forbidden")
    assert await claim(storage, "replica-b", now=NOON + timedelta(hours=1)) == []


async def test_find_items_filters(storage):
    a = await enqueue(storage, 1)
    b = await enqueue(storage, 2, conversation_id="a:personal")
    await claim(storage, "replica-a", limit=1)
    await storage.run_transaction(lambda tx: outbox.mark_sent(tx, a, "replica-a", "act", now=NOON))

    async def ids(**filters):
        return [i.id for i in await storage.run_transaction(lambda tx: outbox.find_items(tx, **filters))]

    assert await ids() == [a, b]
    assert await ids(state=SENT) == [a]
    assert await ids(state=PENDING) == [b]
    assert await ids(conversation_id="a:personal") == [b]
    assert await ids(state=SENT, conversation_id="a:personal") == []
    with pytest.raises(ValueError, match="state must be one of"):
        await ids(state="queued")


async def test_two_storages_claiming_at_once_get_disjoint_items(make_storage):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()
    # one conversation each: a conversation's later items wait while an earlier one is leased (issue 17)
    ids = [await enqueue(first, n, conversation_id=f"19:c{n}@thread.tacv2") for n in range(40)]

    async def claimer(storage, owner):
        got = []
        for _ in range(10):
            async def work(tx):
                items = await outbox.claim(tx, owner, now=NOON, lease_seconds=30, limit=3)
                await asyncio.sleep(0)   # hold the claim open while the other storage claims
                return items
            got += await storage.run_transaction(work)
        return got

    a, b = await asyncio.gather(claimer(first, "replica-a"), claimer(second, "replica-b"))

    assert not {i.id for i in a} & {i.id for i in b}
    assert sorted(i.id for i in a + b) == ids
    stored = await first.run_transaction(lambda tx: outbox.find_items(tx))
    owners = {i.id: i.lease_owner for i in stored}
    assert all(owners[i.id] == "replica-a" for i in a) and all(owners[i.id] == "replica-b" for i in b)
    assert {i.attempts for i in stored} == {1}


async def test_prune_deletes_only_old_settled_items(storage):
    old_sent, old_dead, old_pending = [await enqueue(storage, n) for n in range(3)]
    new_sent = await enqueue(storage, 3, now=NOON + timedelta(days=8))
    await claim(storage, "replica-a", now=NOON + timedelta(days=8))

    async def settle(tx):
        await outbox.mark_sent(tx, old_sent, "replica-a", "a1", now=NOON)
        await outbox.mark_dead(tx, old_dead, "replica-a", "404")
        await outbox.mark_sent(tx, new_sent, "replica-a", "a2", now=NOON + timedelta(days=8))
    await storage.run_transaction(settle)

    assert await storage.run_transaction(lambda tx: outbox.prune(tx, NOON + timedelta(days=7))) == 2
    assert [i.id for i in await storage.run_transaction(lambda tx: outbox.find_items(tx))] == [old_pending, new_sent]


async def test_the_shared_send_log_counts_closed_windows_and_is_pruned(storage):
    from adapters.storage import rate_limits
    limits = [("conversation:a", ((1.0, 7), (3600.0, 1800))), ("tenant:t", ((1.0, 30),))]

    async def acquire(now: float) -> float:
        return await storage.run_transaction(lambda tx: rate_limits.acquire(tx, limits, now=now))

    assert [await acquire(100.0) for _ in range(8)] == [0.0] * 7 + [pytest.approx(1.001)]
    assert await acquire(101.0) == pytest.approx(0.001)                  # [100, 101] holds 7 already
    assert await acquire(101.001) == 0.0
    assert await storage.run_transaction(lambda tx: rate_limits.sends(tx, "tenant:t")) == [100.0] * 7 + [101.001]
    assert await storage.run_transaction(lambda tx: rate_limits.prune(tx, now=3700.5)) == 7 * 2
    assert await storage.run_transaction(lambda tx: rate_limits.sends(tx, "conversation:a")) == [101.001]
