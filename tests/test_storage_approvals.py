"""Approval requests and votes in storage, on SQLite and PostgreSQL: values, compare-and-set, races."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import approvals
from adapters.storage.approvals import APPROVED, EXECUTING, EXPIRED, PENDING, REJECTED, SUCCEEDED, NewApproval, Vote
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

NOON = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=timezone.utc)


def request(**changes) -> NewApproval:
    new = NewApproval(
        action="traffic", workspace="ml-prod", environment="prod", target="fraud-api",
        parameters={"split": {"blue": 0, "green": 100}}, before={"blue": 90, "green": 10},
        after={"blue": 0, "green": 100}, reason="green passed canary (ü)", requester_id="aad-olive",
        requester_name="Olive Operator", tenant_id="t1", conversation_id="19:general@thread.tacv2",
        quorum=1, allow_self=False, approver_role="approver", created_at=NOON,
        expires_at=NOON + timedelta(hours=24))
    return replace(new, **changes)


def vote(voter: str = "aad-ann", decision: str = "approve", at: datetime = NOON, **changes) -> Vote:
    return Vote(voter_id=voter, voter_name=voter.removeprefix("aad-").title(), decision=decision,
                comment=changes.pop("comment", "looks good"), activity_id=changes.pop("activity_id", f"act-{voter}"),
                at=at)


async def test_create_then_get_returns_every_field(storage):
    new = request(execute=False, source="api", run_url="https://github.com/o/r/actions/runs/1")

    created = await storage.run_transaction(lambda tx: approvals.create(tx, new))
    loaded = await storage.run_transaction(lambda tx: approvals.get(tx, created.id))

    assert created.id >= 1
    assert loaded == created
    assert (loaded.action, loaded.parameters, loaded.before, loaded.after, loaded.reason) == (
        "traffic", {"split": {"blue": 0, "green": 100}}, {"blue": 90, "green": 10}, {"blue": 0, "green": 100},
        "green passed canary (ü)")
    assert (loaded.state, loaded.updated_at, loaded.result, loaded.votes) == (PENDING, NOON, "", ())
    assert (loaded.execute, loaded.source, loaded.allow_self, loaded.quorum) == (False, "api", False, 1)
    assert loaded.expires_at == NOON + timedelta(hours=24)
    assert await storage.run_transaction(lambda tx: approvals.get(tx, created.id + 100)) is None


async def test_get_for_update_returns_the_same_request(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request()))

    assert await storage.run_transaction(lambda tx: approvals.get(tx, created.id, for_update=True)) == created


async def test_votes_are_stored_once_per_voter_and_split_by_decision(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request(quorum=2)))
    ann, bob, bob_again = vote("aad-ann"), vote("aad-bob", "reject", NOON + timedelta(minutes=1)), vote("aad-bob")

    added = [await storage.run_transaction(lambda tx, v=v: approvals.add_vote(tx, created.id, v))
             for v in (ann, bob, bob_again)]
    loaded = await storage.run_transaction(lambda tx: approvals.get(tx, created.id))

    assert added == [True, True, False]
    assert loaded.votes == (ann, bob)
    assert loaded.approvals == (ann,) and loaded.rejections == (bob,)


async def test_transition_is_a_compare_and_set(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request()))
    later = NOON + timedelta(minutes=5)

    async def step(expected, new_state, result=None):
        return await storage.run_transaction(
            lambda tx: approvals.transition(tx, created.id, expected, new_state, now=later, result=result))

    assert await step(PENDING, APPROVED) is True
    assert await step(PENDING, REJECTED) is False          # no longer pending
    assert await step([APPROVED, PENDING], EXECUTING) is True
    assert await step(EXECUTING, SUCCEEDED, "traffic is now blue=0 green=100") is True
    loaded = await storage.run_transaction(lambda tx: approvals.get(tx, created.id))
    assert (loaded.state, loaded.updated_at, loaded.result) == (SUCCEEDED, later, "traffic is now blue=0 green=100")
    assert await storage.run_transaction(lambda tx: approvals.transition(
        tx, created.id + 1, PENDING, APPROVED, now=later)) is False
    with pytest.raises(ValueError, match="final state"):
        await step(SUCCEEDED, PENDING)
    with pytest.raises(ValueError, match="new_state"):
        await step(PENDING, "done")


async def test_fifty_concurrent_transitions_on_two_storages_have_one_winner(make_storage):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()
    created = await first.run_transaction(lambda tx: approvals.create(tx, request()))

    async def approve(storage, n):
        async def work(tx):
            won = await approvals.transition(tx, created.id, PENDING, APPROVED, now=NOON, result=f"by {n}")
            await asyncio.sleep(0)   # let the other storage interleave
            return won
        return await storage.run_transaction(work)

    outcomes = await asyncio.gather(*(approve(first if n % 2 else second, n) for n in range(50)))

    assert sum(outcomes) == 1
    winner = outcomes.index(True)
    loaded = await second.run_transaction(lambda tx: approvals.get(tx, created.id))
    assert (loaded.state, loaded.result) == (APPROVED, f"by {winner}")


async def test_fifty_concurrent_identical_votes_store_one(make_storage):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()
    created = await first.run_transaction(lambda tx: approvals.create(tx, request()))

    outcomes = await asyncio.gather(*(
        (first if n % 2 else second).run_transaction(lambda tx: approvals.add_vote(tx, created.id, vote()))
        for n in range(50)))

    assert sum(outcomes) == 1
    loaded = await first.run_transaction(lambda tx: approvals.get(tx, created.id))
    assert loaded.votes == (vote(),)


async def test_find_filters_and_orders_newest_first(storage):
    async def make(tx):
        a = await approvals.create(tx, request())
        b = await approvals.create(tx, request(requester_id="aad-pat", conversation_id="a:personal"))
        c = await approvals.create(tx, request(target="churn-api"))
        await approvals.add_vote(tx, a.id, vote("aad-ann"))
        await approvals.add_vote(tx, c.id, vote("aad-ann", "reject"))
        await approvals.transition(tx, c.id, PENDING, REJECTED, now=NOON)
        await approvals.set_card(tx, b.id, "19:approvals@thread.tacv2", "1741953600999")
        return a.id, b.id, c.id

    a, b, c = await storage.run_transaction(make)

    async def ids(**filters):
        return [found.id for found in await storage.run_transaction(lambda tx: approvals.find(tx, **filters))]

    assert await ids() == [c, b, a]
    assert await ids(states=[PENDING]) == [b, a]
    assert await ids(states=[REJECTED, EXPIRED]) == [c]
    assert await ids(states=[]) == []
    assert await ids(requester_id="aad-pat") == [b]
    assert await ids(voter_id="aad-ann") == [c, a]
    assert await ids(conversation_id="a:personal") == [b]
    assert await ids(conversation_id="19:approvals@thread.tacv2") == [b]   # where its card is
    assert await ids(states=[PENDING], voter_id="aad-ann") == [a]
    assert await ids(limit=2) == [c, b]
    found = await storage.run_transaction(lambda tx: approvals.find(tx, voter_id="aad-ann"))
    assert [f.votes for f in found] == [(vote("aad-ann", "reject"),), (vote("aad-ann"),)]
    card = (await storage.run_transaction(lambda tx: approvals.get(tx, b)))
    assert (card.card_conversation_id, card.card_activity_id) == ("19:approvals@thread.tacv2", "1741953600999")


async def test_due_to_expire_lists_pending_requests_past_their_expiry(storage):
    async def make(tx):
        soon = await approvals.create(tx, request(expires_at=NOON + timedelta(hours=1)))
        sooner = await approvals.create(tx, request(expires_at=NOON + timedelta(minutes=30)))
        late = await approvals.create(tx, request(expires_at=NOON + timedelta(hours=3)))
        done = await approvals.create(tx, request(expires_at=NOON + timedelta(minutes=10)))
        await approvals.transition(tx, done.id, PENDING, APPROVED, now=NOON)
        return soon.id, sooner.id, late.id

    soon, sooner, late = await storage.run_transaction(make)

    async def due(at):
        return [a.id for a in await storage.run_transaction(lambda tx: approvals.due_to_expire(tx, at))]

    assert await due(NOON) == []
    assert await due(NOON + timedelta(hours=1)) == [sooner, soon]      # at the expiry counts
    assert await due(NOON + timedelta(days=1)) == [sooner, soon, late]


def test_new_approval_and_vote_reject_bad_values():
    with pytest.raises(ValueError, match="timezone-aware"):
        request(created_at=datetime(2025, 3, 14, 12, 0))
    with pytest.raises(ValueError, match="expires_at must be after"):
        request(expires_at=NOON)
    with pytest.raises(ValueError, match="quorum"):
        request(quorum=0)
    with pytest.raises(ValueError, match="source"):
        request(source="cron")
    with pytest.raises(ValueError, match="decision"):
        vote(decision="maybe")


# ---- Found by mutation testing (mutmut 3.8.1 on this module, see docs/testing.md, "Mutation testing").

def test_refusals_name_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"^at must be a timezone-aware datetime$"):
        vote(at=datetime(2025, 3, 14, 12, 0))
    with pytest.raises(ValueError, match=r"^decision must be one of approve, reject, not 'maybe'$"):
        vote(decision="maybe")
    with pytest.raises(ValueError, match=r"^voter_id must not be empty$"):
        vote(voter="")


def test_a_vote_time_is_kept_in_utc():
    plus_two = timezone(timedelta(hours=2))

    cast = vote(at=datetime(2025, 3, 14, 14, 0, tzinfo=plus_two))

    assert cast.at.tzinfo is timezone.utc and cast.at == datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)


async def test_state_and_time_refusals_name_the_argument(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request()))
    naive = datetime(2025, 3, 14, 12, 0)
    every = "pending, approved, executing, succeeded, failed, rejected, expired, withdrawn"

    async def attempt(work):
        with pytest.raises(ValueError) as refused:
            await storage.run_transaction(work)
        return str(refused.value)

    assert await attempt(lambda tx: approvals.transition(tx, created.id, "done", APPROVED, now=NOON)) == (
        f"expected must be among {every}, not ['done']")
    assert await attempt(lambda tx: approvals.transition(tx, created.id, [], APPROVED, now=NOON)) == (
        f"expected must be among {every}, not nothing")
    assert await attempt(lambda tx: approvals.transition(tx, created.id, PENDING, "done", now=NOON)) == (
        f"new_state must be among {every}, not ['done']")
    assert await attempt(lambda tx: approvals.transition(
        tx, created.id, [SUCCEEDED, "failed"], PENDING, now=NOON)) == (
        "succeeded, failed is a final state: a request never leaves it")
    assert await attempt(lambda tx: approvals.find(tx, states=["done"])) == (
        f"states must be among {every}, not ['done']")
    assert await attempt(lambda tx: approvals.transition(tx, created.id, PENDING, APPROVED, now=naive)) == (
        "now must be a timezone-aware datetime")
    assert await attempt(lambda tx: approvals.note(tx, created.id, "quota low", now=naive)) == (
        "now must be a timezone-aware datetime")
    assert await attempt(lambda tx: approvals.due_to_expire(tx, naive)) == "now must be a timezone-aware datetime"
    loaded = await storage.run_transaction(lambda tx: approvals.get(tx, created.id))
    assert (loaded.state, loaded.result) == (PENDING, "")


async def test_flags_come_back_as_booleans(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request(allow_self=True, execute=True)))
    other = await storage.run_transaction(lambda tx: approvals.create(tx, request(allow_self=False, execute=False)))

    loaded = await storage.run_transaction(lambda tx: approvals.get(tx, created.id))
    loaded_other = await storage.run_transaction(lambda tx: approvals.get(tx, other.id))

    # SQLite stores them as 0/1: a 1 would show as "1" instead of "true" in a card or a JSON answer.
    assert (loaded.allow_self, loaded.execute) == (True, True)
    assert type(loaded.allow_self) is bool and type(loaded.execute) is bool
    assert type(loaded_other.allow_self) is bool and type(loaded_other.execute) is bool


async def test_find_returns_at_most_fifty_by_default_and_nothing_for_a_limit_below_one(storage):
    async def make(tx):
        return [(await approvals.create(tx, request(target=f"api-{n}"))).id for n in range(51)]

    made = await storage.run_transaction(make)

    async def ids(**filters):
        return [found.id for found in await storage.run_transaction(lambda tx: approvals.find(tx, **filters))]

    assert await ids() == made[::-1][:50]
    assert await ids(limit=0) == []
    assert await ids(limit=-3) == []
    assert await ids(limit=1) == [made[-1]]


async def test_count_waiting_counts_pending_requests_only(storage):
    assert await storage.run_transaction(approvals.count_waiting) == 0

    async def make(tx):
        for n in range(3):
            await approvals.create(tx, request(target=f"api-{n}"))
        done = await approvals.create(tx, request(target="api-done"))
        await approvals.transition(tx, done.id, PENDING, APPROVED, now=NOON)

    await storage.run_transaction(make)

    assert await storage.run_transaction(approvals.count_waiting) == 3


async def test_a_plain_get_does_not_wait_for_a_row_another_transaction_locked(make_storage):
    """`get` locks the row only when asked: readers (the approvals list, the card refresh) never
    queue behind a transaction that holds the request, e.g. while its change executes."""
    holder, reader = make_storage(), make_storage()
    await holder.open()
    await reader.open()
    if reader.dialect != "postgres":
        pytest.skip("SQLite has no row locks")
    created = await holder.run_transaction(lambda tx: approvals.create(tx, request()))
    locked, release = asyncio.Event(), asyncio.Event()

    async def hold(tx):
        await approvals.get(tx, created.id, for_update=True)
        locked.set()
        await release.wait()

    async def read(tx):
        # A read that waited for the lock would fail here instead of waiting for `release`.
        await tx.execute("SET LOCAL lock_timeout = '2s'")
        return await approvals.get(tx, created.id)

    holding = asyncio.create_task(holder.run_transaction(hold))
    await locked.wait()
    try:
        seen = await reader.run_transaction(read)
    finally:
        release.set()
        await holding
    assert seen == created


def test_a_new_request_refuses_each_missing_or_bad_field_by_name():
    naive = datetime(2025, 3, 14, 12, 0)
    with pytest.raises(ValueError, match=r"^created_at must be a timezone-aware datetime$"):
        request(created_at=naive)
    with pytest.raises(ValueError, match=r"^expires_at must be a timezone-aware datetime$"):
        request(expires_at=naive)
    with pytest.raises(ValueError, match=r"^source must be one of chat, api, not 'cron'$"):
        request(source="cron")
    with pytest.raises(ValueError, match=r"^action and requester_id must not be empty$"):
        request(action="")
    with pytest.raises(ValueError, match=r"^action and requester_id must not be empty$"):
        request(requester_id="")
    with pytest.raises(ValueError, match=r"^expires_at must be after created_at$"):
        request(expires_at=NOON - timedelta(seconds=1))


def test_a_new_request_keeps_its_times_in_utc():
    plus_two = timezone(timedelta(hours=2))

    new = request(created_at=NOON.astimezone(plus_two), expires_at=(NOON + timedelta(hours=1)).astimezone(plus_two))

    assert (new.created_at.tzinfo, new.expires_at.tzinfo) == (timezone.utc, timezone.utc)
    assert (new.created_at, new.expires_at) == (NOON, NOON + timedelta(hours=1))
