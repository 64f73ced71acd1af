"""Role grants, the dedupe inbox and 'gone' conversations in storage, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import ConversationRecord, conversations, grants, inbox
from adapters.storage.grants import Grant
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

NOON = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=timezone.utc)


def grant(user_id: str = "aad-bob", user_name: str = "Bob Builder", role: str = "approver",
          at: datetime = NOON) -> Grant:
    return Grant(user_id=user_id, user_name=user_name, role=role, granted_by_id="aad-ada",
                 granted_by_name="Ada Admin", granted_at=at)


# ---------------------------------------------------------------- grants


async def test_put_grant_returns_the_previous_one(storage):
    first, second = grant(), grant(role="operator", at=NOON + timedelta(hours=1))

    previous = [await storage.run_transaction(lambda tx, g=g: grants.put_grant(tx, g)) for g in (first, second)]

    assert previous == [None, first]
    assert await storage.run_transaction(lambda tx: grants.get_grant(tx, "aad-bob")) == second
    assert await storage.run_transaction(lambda tx: grants.get_grant(tx, "aad-nobody")) is None


async def test_remove_grant_returns_what_was_removed(storage):
    await storage.run_transaction(lambda tx: grants.put_grant(tx, grant()))

    assert await storage.run_transaction(lambda tx: grants.remove_grant(tx, "aad-bob")) == grant()
    assert await storage.run_transaction(lambda tx: grants.remove_grant(tx, "aad-bob")) is None
    assert await storage.run_transaction(grants.any_grant) is False


async def test_list_grants_by_name_and_any_grant(storage):
    assert await storage.run_transaction(grants.any_grant) is False
    made = [grant("aad-3", "carol"), grant("aad-1", "Bob"), grant("aad-2", "alice", "admin")]
    for g in made:
        await storage.run_transaction(lambda tx, g=g: grants.put_grant(tx, g))

    assert await storage.run_transaction(grants.list_grants) == [made[2], made[1], made[0]]
    assert await storage.run_transaction(grants.any_grant) is True


async def test_a_grant_made_on_one_replica_is_seen_on_the_other(make_storage):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()

    outcomes = await asyncio.gather(*(
        (first if n % 2 else second).run_transaction(lambda tx, n=n: grants.put_grant(tx, grant(at=NOON + timedelta(
            seconds=n)))) for n in range(10)))

    assert outcomes.count(None) == 1        # exactly one saw no previous grant
    assert await second.run_transaction(lambda tx: grants.get_grant(tx, "aad-bob")) in [
        grant(at=NOON + timedelta(seconds=n)) for n in range(10)]
    assert len(await first.run_transaction(grants.list_grants)) == 1


def test_grant_needs_a_user_role_and_aware_time():
    with pytest.raises(ValueError, match="role"):
        grant(role="")
    with pytest.raises(ValueError, match="timezone-aware"):
        grant(at=datetime(2025, 3, 14))


# ---------------------------------------------------------------- inbox


async def test_first_time_is_true_once_per_key(storage):
    seen = [await storage.run_transaction(lambda tx, k=k: inbox.first_time(tx, k, NOON))
            for k in ("activity:1", "activity:2", "activity:1", "eventgrid:1")]

    assert seen == [True, True, False, True]


async def test_first_time_across_two_storages_is_true_once(make_storage):
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()

    outcomes = await asyncio.gather(*(
        (first if n % 2 else second).run_transaction(lambda tx: inbox.first_time(tx, "activity:1741953600123", NOON))
        for n in range(20)))

    assert sorted(outcomes) == [False] * 19 + [True]


async def test_prune_forgets_old_keys_only(storage):
    for n in range(5):
        await storage.run_transaction(lambda tx, n=n: inbox.first_time(tx, f"k{n}", NOON + timedelta(hours=n)))

    assert await storage.run_transaction(lambda tx: inbox.prune(tx, NOON + timedelta(hours=3))) == 3
    assert await storage.run_transaction(lambda tx: inbox.first_time(tx, "k0", NOON)) is True    # forgotten
    assert await storage.run_transaction(lambda tx: inbox.first_time(tx, "k3", NOON)) is False   # kept


# ---------------------------------------------------------------- gone conversations


async def test_a_conversation_marked_gone_stays_gone_until_saved_again(storage):
    record = ConversationRecord(conversation_id="19:general@thread.tacv2", kind="channel",
                                reference={"conversation": {"id": "19:general@thread.tacv2"}}, tenant_id="t1",
                                team_id="19:team@thread.tacv2", channel_id="19:general@thread.tacv2", user_id="",
                                updated_at=NOON)
    await storage.save_conversation(record)

    async def state(tx):
        return (await conversations.is_gone(tx, record.conversation_id),
                await conversations.gone_since(tx, record.conversation_id))

    assert await storage.run_transaction(state) == (False, None)
    assert await storage.run_transaction(lambda tx: conversations.mark_conversation_gone(
        tx, record.conversation_id, NOON + timedelta(hours=1))) is True
    assert await storage.run_transaction(lambda tx: conversations.mark_conversation_gone(
        tx, record.conversation_id, NOON + timedelta(hours=2))) is False      # first mark kept
    assert await storage.run_transaction(state) == (True, NOON + timedelta(hours=1))
    assert await storage.get_conversation(record.conversation_id) == record
    assert await storage.run_transaction(lambda tx: conversations.mark_conversation_gone(
        tx, "19:unknown@thread.tacv2", NOON)) is False

    await storage.save_conversation(record)          # the bot was added again

    assert await storage.run_transaction(state) == (False, None)


async def test_role_lookup_answers_the_role_and_whether_any_is_granted_in_one_statement(storage):
    lookup = lambda user_id: storage.run_transaction(lambda tx: grants.role_lookup(tx, user_id), write=False)  # noqa: E731
    assert await lookup("aad-bob") == (None, False)
    await storage.run_transaction(lambda tx: grants.put_grant(tx, grant()))
    assert await lookup("aad-bob") == ("approver", True)
    assert await lookup("aad-nobody") == (None, True)


async def test_a_read_whose_only_statement_is_last_leaves_no_transaction_and_refuses_another(storage):
    """`fetch(..., last=True)` as a read's only statement runs without BEGIN on SQLite (one trip to
    the storage thread): no transaction is left open, writes still see and change the same rows,
    and a statement sent after it is refused rather than run in another snapshot."""
    await storage.run_transaction(lambda tx: grants.put_grant(tx, grant()))
    assert await storage.run_transaction(lambda tx: grants.role_lookup(tx, "aad-bob"), write=False) == ("approver", True)
    if storage.dialect == "sqlite":
        async with storage._lock:
            assert await storage._call(lambda: storage._connection.in_transaction) is False

    async def twice(tx):
        await tx.fetch("SELECT 1", last=True)
        return await tx.fetch("SELECT 2")

    if storage.dialect == "sqlite":
        with pytest.raises(RuntimeError, match="last=True"):
            await storage.run_transaction(twice, write=False)
    await storage.run_transaction(lambda tx: grants.remove_grant(tx, "aad-bob"))
    assert await storage.run_transaction(lambda tx: grants.role_lookup(tx, "aad-bob"), write=False) == (None, False)
