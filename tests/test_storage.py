"""The bot's state storage, on SQLite (a temporary file) and on a real PostgreSQL server.

PostgreSQL tests use MLOPSBOT_TEST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test),
each in a fresh schema dropped afterwards. Without a server they are skipped, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from adapters.storage import (MIGRATIONS, ConversationRecord, StorageError, StorageUnavailable, Transaction,
                              open_storage)
from adapters.storage.postgres import PostgresStorage, to_psycopg
from adapters.storage.sqlite import SqliteStorage
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
NOON = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=timezone.utc)


def conversation(conversation_id: str = "19:general@thread.tacv2", kind: str = "channel",
                 updated_at: datetime = NOON, **fields: str) -> ConversationRecord:
    """A record as the Teams seam would store it, with a serialized ConversationReference."""
    user_id = fields.pop("user_id", "8a1f0c2e-0000-4000-8000-000000000001" if kind == "personal" else "")
    reference = {
        "activityId": "1741953600123",
        "user": {"id": "29:1abcdef", "name": "Ada Lovelace", "aadObjectId": user_id or None},
        "bot": {"id": "28:00000000-0000-0000-0000-0000000000b0", "name": "MLOps bot"},
        "conversation": {"id": conversation_id, "conversationType": kind, "tenantId": TENANT,
                         "isGroup": kind != "personal"},
        "channelId": "msteams",
        "locale": "fr-FR",
        "serviceUrl": "https://smba.trafficmanager.net/emea/",
    }
    defaults = ({"team_id": "19:team@thread.tacv2", "channel_id": conversation_id} if kind == "channel"
                else {"team_id": "", "channel_id": ""})
    return ConversationRecord(conversation_id=conversation_id, kind=kind, reference=reference,
                              tenant_id=TENANT, user_id=user_id, updated_at=updated_at,
                              **{**defaults, **fields})


# ---------------------------------------------------------------- conversations


async def test_save_then_get_returns_equal_record(storage):
    personal = conversation("a:1Hc8sM2", kind="personal")

    await storage.save_conversation(personal)

    assert await storage.get_conversation("a:1Hc8sM2") == personal


async def test_get_unknown_conversation_returns_none(storage):
    assert await storage.get_conversation("19:nobody@thread.v2") is None


async def test_save_replaces_record_with_same_conversation_id(storage):
    first = conversation()
    moved = replace(first, team_id="19:other-team@thread.tacv2", reference={**first.reference, "locale": "en-US"},
                    updated_at=NOON + timedelta(days=1))

    await storage.save_conversation(first)
    await storage.save_conversation(moved)

    assert await storage.get_conversation(first.conversation_id) == moved
    assert await storage.list_conversations() == [moved]


async def test_list_filters_by_kind(storage):
    records = [conversation("19:general@thread.tacv2"), conversation("19:ml-alerts@thread.tacv2"),
               conversation("19:meeting_abc@thread.v2", kind="groupChat"), conversation("a:1Hc8sM2", kind="personal")]
    for record in reversed(records):
        await storage.save_conversation(record)

    assert await storage.list_conversations() == sorted(records, key=lambda r: r.conversation_id)
    assert await storage.list_conversations(kind="channel") == records[:2]
    assert await storage.list_conversations(kind="groupChat") == [records[2]]
    assert await storage.list_conversations(kind="personal") == [records[3]]
    with pytest.raises(ValueError, match="kind must be one of"):
        await storage.list_conversations(kind="team")


async def test_times_come_back_in_utc(storage):
    paris = timezone(timedelta(hours=1))
    record = conversation(updated_at=datetime(2025, 3, 14, 13, 0, tzinfo=paris))

    await storage.save_conversation(record)
    stored = await storage.get_conversation(record.conversation_id)

    assert stored.updated_at == datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)
    assert stored.updated_at.utcoffset() == timedelta(0)


async def test_concurrent_saves_all_land(storage):
    records = [conversation(f"a:user{n:02d}", kind="personal", user_id=f"user-{n}") for n in range(20)]

    await asyncio.gather(*(storage.save_conversation(record) for record in records))

    assert await storage.list_conversations(kind="personal") == records


async def test_reopening_keeps_data(make_storage):
    first = make_storage()
    await first.open()
    await first.save_conversation(conversation())
    await first.close()

    second = make_storage()
    await second.open()

    assert await second.list_conversations() == [conversation()]


# ---------------------------------------------------------------- transactions and schema


async def test_failed_transaction_leaves_nothing_behind(storage):
    await storage.save_conversation(conversation())

    async def half_done(tx: Transaction) -> None:
        await tx.execute("UPDATE conversations SET tenant_id = ?", ("someone-else",))
        await tx.execute("INSERT INTO conversations (conversation_id, kind, reference, tenant_id, updated_at) "
                         "VALUES (?, ?, ?, ?, ?)", ("a:ghost", "personal", "{}", TENANT, NOON.isoformat()))
        raise RuntimeError("crashed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await storage.run_transaction(half_done)

    assert await storage.list_conversations() == [conversation()]


async def test_database_error_is_a_storage_error_and_rolls_back(storage):
    async def bad(tx: Transaction) -> None:
        await tx.execute("INSERT INTO conversations (conversation_id, kind, reference, tenant_id, updated_at) "
                         "VALUES (?, ?, ?, ?, ?)", ("a:1", "personal", "{}", TENANT, NOON.isoformat()))
        await tx.execute("INSERT INTO no_such_table VALUES (?)", (1,))

    with pytest.raises(StorageError) as caught:
        await storage.run_transaction(bad)

    assert not isinstance(caught.value, StorageUnavailable)
    assert await storage.get_conversation("a:1") is None
    await storage.save_conversation(conversation("a:1", kind="personal"))  # still usable
    assert await storage.get_conversation("a:1") == conversation("a:1", kind="personal")


async def test_open_is_idempotent(make_storage):
    storage = make_storage()
    await storage.open()
    await storage.save_conversation(conversation())
    await storage.open()
    again = make_storage()
    await again.open()

    async def applied(tx: Transaction) -> list[tuple]:
        return await tx.fetch("SELECT version, name FROM schema_migrations ORDER BY version")

    assert await again.run_transaction(applied) == [(m.version, m.name) for m in MIGRATIONS]
    assert await storage.schema_version() == MIGRATIONS[-1].version
    assert await again.list_conversations() == [conversation()]


async def test_replicas_opening_a_fresh_database_at_once_all_succeed(make_storage):
    replicas = [make_storage() for _ in range(4)]

    await asyncio.gather(*(replica.open() for replica in replicas))
    await replicas[0].save_conversation(conversation())

    assert [await replica.schema_version() for replica in replicas] == [MIGRATIONS[-1].version] * 4
    assert await replicas[3].get_conversation(conversation().conversation_id) == conversation()


def test_migrations_are_numbered_in_order_for_both_dialects():
    versions = [m.version for m in MIGRATIONS]
    assert versions == list(range(1, len(MIGRATIONS) + 1))          # appended in order, none skipped
    assert len({m.name for m in MIGRATIONS}) == len(MIGRATIONS)
    assert all(m.statements("sqlite") and m.statements("postgres") for m in MIGRATIONS)


# ---------------------------------------------------------------- availability


async def test_ping_answers_only_while_open(make_storage):
    storage = make_storage()
    with pytest.raises(StorageUnavailable, match="not open"):
        await storage.ping()

    await storage.open()
    await storage.ping()
    await storage.close()

    with pytest.raises(StorageUnavailable, match="not open"):
        await storage.ping()
    with pytest.raises(StorageUnavailable):
        await storage.get_conversation("19:general@thread.tacv2")


async def test_sqlite_file_that_cannot_be_created_is_unavailable(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    storage = SqliteStorage(tmp_path / "not-a-directory" / "bot.db")

    with pytest.raises(StorageUnavailable, match="not-a-directory"):
        await storage.open()
    with pytest.raises(StorageUnavailable):
        await storage.ping()


async def test_unreachable_postgres_is_unavailable():
    storage = PostgresStorage("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")

    with pytest.raises(StorageUnavailable, match="127.0.0.1:1/test"):
        await storage.open()
    with pytest.raises(StorageUnavailable):
        await storage.ping()


@pytest.mark.postgres
async def test_postgres_reconnects_after_the_connection_drops(postgres_dsn, postgres_schema):
    application = f"mlopsbot-test-{uuid.uuid4().hex[:8]}"
    storage = PostgresStorage(make_conninfo(postgres_dsn, application_name=application), schema=postgres_schema)
    await storage.open()
    try:
        await storage.save_conversation(conversation())
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (application,)).fetchall()
        assert killed == [(True,)]

        assert await storage.get_conversation(conversation().conversation_id) == conversation()
        await storage.ping()
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_postgres_never_runs_the_work_again_after_the_connection_drops_during_it(postgres_dsn,
                                                                                      postgres_schema):
    application = f"mlopsbot-test-{uuid.uuid4().hex[:8]}"
    storage = PostgresStorage(make_conninfo(postgres_dsn, application_name=application), schema=postgres_schema)
    await storage.open()
    calls = []

    async def work(tx: Transaction) -> None:
        calls.append(1)
        await tx.execute("INSERT INTO conversations (conversation_id, kind, reference, tenant_id, updated_at) "
                         "VALUES (?, ?, ?, ?, ?)", ("a:1", "personal", "{}", TENANT, NOON.isoformat()))
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          (application,))
        await tx.execute("SELECT 1")

    try:
        with pytest.raises(StorageUnavailable, match="rolled back"):
            await storage.run_transaction(work)

        assert calls == [1]
        assert await storage.get_conversation("a:1") is None
    finally:
        await storage.close()


@pytest.mark.postgres
async def test_postgres_retries_once_when_begin_finds_a_dead_connection(postgres_dsn, postgres_schema):
    application = f"mlopsbot-test-{uuid.uuid4().hex[:8]}"
    storage = PostgresStorage(make_conninfo(postgres_dsn, application_name=application), schema=postgres_schema)
    await storage.open()
    calls = []

    async def work(tx: Transaction) -> list:
        calls.append(1)
        return await tx.fetch("SELECT 41 + 1")

    try:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          (application,))

        assert await storage.run_transaction(work) == [(42,)]
        assert calls == [1]
    finally:
        await storage.close()


# ---------------------------------------------------------------- choosing an implementation


def test_open_storage_picks_the_implementation_from_the_url(tmp_path):
    sqlite = open_storage(f"sqlite://{tmp_path}/bot.db")
    postgres = open_storage("postgresql://bot@db.internal:5432/mlopsbot")

    assert isinstance(sqlite, SqliteStorage) and sqlite.path == tmp_path / "bot.db"
    assert isinstance(postgres, PostgresStorage) and postgres.where == "db.internal:5432/mlopsbot"
    assert isinstance(open_storage("postgres://bot@db.internal/mlopsbot"), PostgresStorage)


def test_open_storage_rejects_unknown_schemes_helpfully():
    with pytest.raises(ValueError) as caught:
        open_storage("mysql://x")
    assert "'mysql://'" in str(caught.value)
    assert "sqlite:///" in str(caught.value) and "postgresql://" in str(caught.value)

    with pytest.raises(ValueError) as caught:
        open_storage("mysql://bot:s3cret@db/x")
    assert "s3cret" not in str(caught.value)

    with pytest.raises(ValueError, match="absolute file path"):
        open_storage("sqlite://bot.db")
    with pytest.raises(ValueError, match="no scheme"):
        open_storage("/var/lib/bot.db")


def test_qmark_placeholders_become_psycopg_ones():
    assert to_psycopg("SELECT ? WHERE name LIKE 'ml%' AND id = ?") == "SELECT %s WHERE name LIKE 'ml%%' AND id = %s"


def test_record_rejects_naive_times_and_unknown_kinds():
    with pytest.raises(ValueError, match="timezone-aware"):
        conversation(updated_at=datetime(2025, 3, 14, 12, 0))
    with pytest.raises(ValueError, match="kind must be one of"):
        conversation(kind="meeting")
