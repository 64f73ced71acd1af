"""The hash-chained audit trail, on SQLite and PostgreSQL: values, concurrent appends, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from adapters.storage import StorageError, approvals, audit
from adapters.storage.postgres import PostgresStorage, quote_identifier
from adapters.storage.audit import GENESIS_HASH, AuditEntry, AuditRecord, Verification
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)
from tests.test_storage_unit_of_work import request as approval_request

NOON = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=timezone.utc)


def entry(n: int = 0, **changes) -> AuditEntry:
    values = dict(at=NOON + timedelta(minutes=n), event="requested", actor_id="aad-olive", actor_name="Olive Operator",
                  actor_upn="olive@contoso.com", tenant_id="t1", action="traffic", workspace="ml-prod",
                  target="fraud-api", parameters={"split": {"blue": 0, "green": 100}, "n": n},
                  before={"blue": 90, "green": 10}, after={"blue": 0, "green": 100}, approval_id=7,
                  outcome="", activity_id=f"act-{n}", detail={"reason": "canary ok ✓"})
    return AuditEntry(**{**values, **changes})


async def append_all(storage, entries):
    async def work(tx):
        return [await audit.append(tx, e) for e in entries]
    return await storage.run_transaction(work)


async def verify(storage) -> Verification:
    return await storage.run_transaction(audit.verify, write=False)


async def test_actions_are_every_action_and_event_held(storage):
    assert await storage.run_transaction(audit.actions, write=False) == set()
    await append_all(storage, [entry(0), entry(1, event="vote:approve"), entry(2, action="", event="policy_loaded")])
    assert await storage.run_transaction(audit.actions, write=False) == {
        "traffic", "requested", "vote:approve", "policy_loaded"}


async def test_append_chains_records_with_hmac_sha256_over_the_canonical_encoding(storage):
    """Since migration 16 every record is keyed (issue #17: a plain SHA-256 chain has no secret, so
    anyone who can write the database could re-hash an edit); without MLOPSBOT_AUDIT_KEY
    (development) the key is the public DEVELOPMENT_KEY."""
    first, second = await append_all(storage, [entry(0, reason="canary is healthy"),
                                               entry(1, event="approved", actor_id="aad-ann",
                                                     actor_name="Ann Approver", approval_id=None)])

    expected_canonical = json.dumps({
        "action": "traffic", "activity_id": "act-0", "actor_id": "aad-olive", "actor_name": "Olive Operator",
        "actor_upn": "olive@contoso.com", "after": {"blue": 0, "green": 100}, "approval_id": 7,
        "at": "2025-03-14T12:00:00.123456+00:00", "before": {"blue": 90, "green": 10}, "chain": "hmac-sha256",
        "detail": {"reason": "canary ok ✓"}, "event": "requested", "outcome": "",
        "parameters": {"n": 0, "split": {"blue": 0, "green": 100}}, "prev_hash": GENESIS_HASH,
        "reason": "canary is healthy", "seq": 1, "target": "fraud-api", "tenant_id": "t1", "workspace": "ml-prod"},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert first.canonical() == expected_canonical
    assert (first.seq, first.prev_hash, first.chain, first.hash) == (
        1, GENESIS_HASH, "hmac-sha256", hmac.new(audit.DEVELOPMENT_KEY, expected_canonical, hashlib.sha256).hexdigest())
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash == hmac.new(audit.DEVELOPMENT_KEY, second.canonical(), hashlib.sha256).hexdigest()
    assert await storage.run_transaction(audit.scan) == [first, second]
    assert await storage.run_transaction(audit.head) == (2, second.hash)
    result = await verify(storage)
    assert result == Verification(True, 2, None, "")
    assert (result.keyed, result.keyed_from, result.head_seq, result.head_hash) == (False, 1, 2, second.hash)


async def test_query_filters_newest_first(storage):
    records = await append_all(storage, [
        entry(0),
        entry(1, event="approved", actor_id="aad-ann", actor_name="Ann Approver", actor_upn="ann@contoso.com"),
        entry(2, event="role_granted", action="", target="aad-bob", actor_name="Ann Approver", actor_id="aad-ann",
              actor_upn="ann@contoso.com"),
        entry(3, event="executed", target="churn-api", action="scale"),
        entry(4, event="succeeded", target="CHURN-api_v2%", action="scale"),
    ])

    async def seqs(**filters):
        return [r.seq for r in await storage.run_transaction(lambda tx: audit.query(tx, **filters))]

    assert await seqs() == [5, 4, 3, 2, 1]
    assert await seqs(actor="ann") == [3, 2]
    assert await seqs(actor="AAD-ANN") == [3, 2]
    assert await seqs(actor="OLIVE@contoso") == [5, 4, 1]      # the UPN
    assert await seqs(target="churn") == [5, 4]
    assert await seqs(target="_v2%") == [5]                  # LIKE wildcards match themselves
    assert await seqs(target="api_") == [5]
    assert await seqs(action="scale") == [5, 4]
    assert await seqs(action="role_granted") == [3]          # an event name works as the action
    assert await seqs(since=NOON + timedelta(minutes=3)) == [5, 4]
    assert await seqs(actor="olive", action="traffic") == [1]
    assert await seqs(limit=2) == [5, 4]
    assert await storage.run_transaction(lambda tx: audit.query(tx, target="churn-api")) == [records[4], records[3]]
    assert await storage.run_transaction(lambda tx: audit.scan(tx, since=NOON + timedelta(minutes=4))) == records[4:]


async def test_hundred_concurrent_appends_on_two_storages_keep_one_chain(make_storage):
    """Also the guard on SQLite's BEGIN IMMEDIATE: with a plain BEGIN, two connections both read the
    head and then collide when upgrading to a write ("database is locked")."""
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()

    async def one(n):
        async def work(tx):
            record = await audit.append(tx, entry(n))
            await asyncio.sleep(0)   # let the other storage interleave before the commit
            return record
        return await (first if n % 2 else second).run_transaction(work)

    appended = await asyncio.gather(*(one(n) for n in range(100)))

    chain = await first.run_transaction(audit.scan)
    assert [r.seq for r in chain] == list(range(1, 101))
    assert sorted(r.parameters["n"] for r in chain) == list(range(100))
    assert all(r.prev_hash == (chain[i - 1].hash if i else GENESIS_HASH) for i, r in enumerate(chain))
    assert sorted(appended, key=lambda r: r.seq) == chain
    assert await verify(second) == Verification(True, 100, None, "")


@pytest.fixture
async def chain(storage):
    """A stored chain of 20 records and a raw-SQL helper to tamper with it."""
    records = await append_all(storage, [entry(n) for n in range(20)])
    assert (await verify(storage)).ok

    async def sql(statement, params=()):
        await storage.run_transaction(lambda tx: tx.execute(statement, params))

    return storage, records, sql


TAMPERED = [
    ("at", "2025-03-14T12:07:00.123457+00:00"), ("event", "rejected"), ("actor_id", "aad-mallory"),
    ("actor_name", "Mallory"), ("actor_upn", "mallory@contoso.com"), ("tenant_id", "t2"), ("action", "scale"),
    ("workspace", "ml-dev"), ("target", "churn-api"), ("parameters", '{"n":7,"split":{"blue":100,"green":0}}'),
    ("before_state", '{"blue":10,"green":90}'), ("after_state", "{}"), ("approval_id", 8),
    ("approval_id", None), ("outcome", "succeeded"), ("activity_id", "act-x"), ("detail", "{}"),
    ("prev_hash", "f" * 64), ("hash", "e" * 64),
]


async def test_verify_names_a_record_altered_in_any_column(chain):
    storage, _, sql = chain

    async def column_of_8(tx, column):
        return (await tx.fetch(f"SELECT {column} FROM audit_log WHERE seq = 8"))[0][0]

    for column, value in TAMPERED:
        original = await storage.run_transaction(lambda tx: column_of_8(tx, column))
        await sql(f"UPDATE audit_log SET {column} = ? WHERE seq = 8", (value,))

        result = await verify(storage)

        assert (column, result.ok, result.first_bad_seq, result.problem) == (column, False, 8, "record 8 was altered")
        await sql(f"UPDATE audit_log SET {column} = ? WHERE seq = 8", (original,))
        assert (column, (await verify(storage)).ok) == (column, True)


async def test_verify_names_an_altered_record_whose_hash_was_recomputed(chain):
    storage, records, sql = chain
    forged = AuditRecord(**{**records[11].__dict__, "actor_name": "Mallory", "hash": ""})

    await sql("UPDATE audit_log SET actor_name = ?, hash = ? WHERE seq = 12", ("Mallory", forged.computed_hash()))

    assert await verify(storage) == Verification(False, 13, 12, "record 12 was altered")


async def test_verify_names_the_last_record_altered_and_rehashed_through_the_head(chain):
    storage, records, sql = chain
    forged = AuditRecord(**{**records[19].__dict__, "outcome": "succeeded", "hash": ""})

    await sql("UPDATE audit_log SET outcome = ?, hash = ? WHERE seq = 20", ("succeeded", forged.computed_hash()))

    assert await verify(storage) == Verification(False, 20, 20, "record 20 was altered")


async def test_verify_names_a_deleted_record(chain):
    storage, _, sql = chain

    await sql("DELETE FROM audit_log WHERE seq = 9")

    assert await verify(storage) == Verification(False, 9, 9, "record 9 is missing")


async def test_verify_names_a_deleted_record_when_the_rest_were_renumbered(chain):
    storage, _, sql = chain

    await sql("DELETE FROM audit_log WHERE seq = 9")
    for seq in range(10, 21):
        await sql("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))

    result = await verify(storage)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 9, "record 9 is missing")


async def test_verify_names_a_forged_record_inserted_in_the_middle(chain):
    storage, records, sql = chain
    for seq in range(20, 11, -1):           # make room at 12, as a forger would
        await sql("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq + 1, seq))
    forged = AuditRecord(**{**entry(99, actor_name="Mallory").__dict__, "seq": 12, "prev_hash": records[10].hash})
    forged = AuditRecord(**{**forged.__dict__, "hash": forged.computed_hash()})

    await storage.run_transaction(lambda tx: tx.execute(
        "INSERT INTO audit_log (seq, at, event, actor_id, actor_name, actor_upn, tenant_id, action, workspace, target, "
        "parameters, before_state, after_state, approval_id, outcome, activity_id, detail, prev_hash, hash, chain) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (12, forged.at.isoformat(), forged.event, forged.actor_id, forged.actor_name, forged.actor_upn,
         forged.tenant_id, forged.action, forged.workspace, forged.target, json.dumps(forged.parameters),
         json.dumps(forged.before), json.dumps(forged.after), forged.approval_id, forged.outcome,
         forged.activity_id, json.dumps(forged.detail, ensure_ascii=False), forged.prev_hash, forged.hash,
         forged.chain)))

    result = await verify(storage)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 12, "record 12 was inserted")


async def test_verify_names_a_forged_record_appended_past_the_head(chain):
    storage, records, sql = chain
    forged = AuditRecord(**{**entry(99).__dict__, "seq": 21, "prev_hash": records[19].hash})
    forged = AuditRecord(**{**forged.__dict__, "hash": forged.computed_hash()})

    await storage.run_transaction(lambda tx: tx.execute(
        "INSERT INTO audit_log (seq, at, event, actor_id, actor_name, actor_upn, tenant_id, action, workspace, target, "
        "parameters, before_state, after_state, approval_id, outcome, activity_id, detail, prev_hash, hash, chain) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (21, forged.at.isoformat(), forged.event, forged.actor_id, forged.actor_name, forged.actor_upn,
         forged.tenant_id, forged.action, forged.workspace, forged.target, json.dumps(forged.parameters),
         json.dumps(forged.before), json.dumps(forged.after), forged.approval_id, forged.outcome,
         forged.activity_id, json.dumps(forged.detail, ensure_ascii=False), forged.prev_hash, forged.hash,
         forged.chain)))

    assert await verify(storage) == Verification(False, 21, 21,
                                                 "record 21 was inserted (the head says the chain ends at 20)")


async def test_verify_notices_a_truncated_tail(chain):
    storage, _, sql = chain

    await sql("DELETE FROM audit_log WHERE seq > 17")

    assert await verify(storage) == Verification(False, 17, 18, "the chain ends at 17 but the head says 20")


async def test_an_empty_chain_verifies(storage):
    assert await verify(storage) == Verification(True, 0, None, "")
    assert await storage.run_transaction(lambda tx: audit.query(tx)) == []


def test_entries_reject_naive_times_and_non_dict_fields():
    with pytest.raises(ValueError, match="timezone-aware"):
        entry(at=datetime(2025, 3, 14, 12, 0))
    with pytest.raises(ValueError, match="parameters must be a dict"):
        entry(parameters=["blue"])
    assert entry(at=datetime(2025, 3, 14, 13, 0, tzinfo=timezone(timedelta(hours=1)))).at == datetime(
        2025, 3, 14, 12, 0, tzinfo=timezone.utc)


async def test_a_since_with_no_utc_form_is_a_value_error_naming_it(storage):  # noqa: F811
    year_zero = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(ValueError) as raised:
        await storage.run_transaction(lambda tx: audit.scan(tx, since=year_zero), write=False)
    assert str(raised.value) == "since is outside the years 1 to 9999 in UTC"


# The grants docs/changes.md gives for a bot role that may append to the audit log but never change it.
APPEND_ONLY_GRANTS = """
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.audit_log FROM {role};
"""


@pytest.mark.postgres
async def test_a_role_granted_as_the_readme_says_appends_but_cannot_change_audit_rows(postgres_dsn, postgres_schema):
    owner = PostgresStorage(postgres_dsn, schema=postgres_schema)
    await owner.open()
    await owner.close()
    role = f"mlopsbot_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        for statement in APPEND_ONLY_GRANTS.format(schema=quote_identifier(postgres_schema), role=role).split(";"):
            if statement.strip():
                admin.execute(statement)
    bot = PostgresStorage(make_conninfo(postgres_dsn, user=role), schema=postgres_schema)
    try:
        await bot.open()       # an up-to-date schema needs no DDL, so no CREATE right
        await append_all(bot, [entry(0), entry(1)])
        created = await bot.run_transaction(lambda tx: approvals.create(tx, approval_request()))
        assert created.id == 1

        for statement in ("UPDATE audit_log SET actor_name = 'Mallory'", "DELETE FROM audit_log",
                          "UPDATE audit_log SET seq = seq + 100"):
            with pytest.raises(StorageError, match="permission denied"):
                await bot.run_transaction(lambda tx, s=statement: tx.execute(s))
        assert await verify(bot) == Verification(True, 2, None, "")
    finally:
        await bot.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


async def test_to_dict_is_the_canonical_record_plus_its_hash(storage):
    (record,) = await append_all(storage, [entry(0)])

    exported = audit.to_dict(record)

    assert exported == {**json.loads(record.canonical()), "hash": record.hash}
    assert exported["at"] == "2025-03-14T12:00:00.123456+00:00"


# ---- Found by mutation testing (mutmut 3.8.1 on this module, see docs/testing.md, "Mutation testing").

async def test_query_returns_at_most_fifty_by_default_and_nothing_for_a_limit_below_one(storage):
    await append_all(storage, [entry(n) for n in range(51)])

    async def seqs(**filters):
        return [r.seq for r in await storage.run_transaction(lambda tx: audit.query(tx, **filters))]

    assert await seqs() == list(range(51, 1, -1))
    assert await seqs(limit=0) == []
    assert await seqs(limit=-1) == []
    assert await seqs(limit=1) == [51]


async def test_a_naive_since_is_refused_naming_it(storage):
    with pytest.raises(ValueError) as raised:
        await storage.run_transaction(lambda tx: audit.query(tx, since=datetime(2025, 3, 14, 12, 0)), write=False)
    assert str(raised.value) == "since must be a timezone-aware datetime"


async def test_search_text_matches_percent_underscore_and_backslash_literally(storage):
    names = ["fraud%api", "fraud-api-2", "fraud_api", "fraudXapi", "fraud\\api"]
    await append_all(storage, [entry(n, target=name, actor_name=f"Olive {name}") for n, name in enumerate(names)])

    async def targets(**filters):
        return sorted(r.target for r in await storage.run_transaction(lambda tx: audit.query(tx, **filters)))

    assert await targets(target="d%a") == ["fraud%api"]
    assert await targets(target="d_a") == ["fraud_api"]
    assert await targets(target="d\\a") == ["fraud\\api"]
    assert await targets(actor="olive fraud\\") == ["fraud\\api"]
    assert await targets(actor="%") == ["fraud%api"]


async def test_requested_by_activity_is_the_request_that_activity_opened(storage):
    await append_all(storage, [
        entry(0, activity_id="act-open", approval_id=41),
        entry(1, activity_id="act-open", approval_id=42),              # a later record of the same activity
        entry(2, activity_id="act-vote", event="vote:approve", approval_id=41),
        entry(3, activity_id="act-direct", approval_id=None),          # ran without an approval
    ])

    async def found(activity_id):
        return await storage.run_transaction(lambda tx: audit.requested_by_activity(tx, activity_id), write=False)

    assert await found("act-open") == 41
    assert await found("act-vote") is None
    assert await found("act-direct") is None
    assert await found("act-unknown") is None


async def test_a_damaged_record_keeps_its_chain_fields_and_names_nobody(chain):
    storage, records, sql = chain
    if storage.dialect == "postgres":
        pytest.skip("a TIMESTAMPTZ column refuses a damaged timestamp; SQLite stores it as TEXT")
    await sql("UPDATE audit_log SET at = ?, chain = ? WHERE seq = 3", ("not a time", "sha256"))

    damaged = (await storage.run_transaction(audit.scan, write=False))[2]

    assert damaged == AuditRecord(
        at=audit.DAMAGED_AT, event="damaged", actor_id="", actor_name="", seq=3, prev_hash=records[1].hash,
        hash=records[2].hash, chain="sha256",
        detail={"damage": "record 3 is damaged: its time 'not a time' is not a timestamp"})


async def test_verify_names_a_forged_record_inserted_before_the_first(chain):
    storage, records, sql = chain
    for seq in range(20, 0, -1):            # make room at 1, as a forger would
        await sql("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq + 1, seq))
    forged = AuditRecord(**{**entry(99, actor_name="Mallory").__dict__, "seq": 1, "prev_hash": GENESIS_HASH})
    forged = AuditRecord(**{**forged.__dict__, "hash": forged.computed_hash()})
    stored = audit.to_dict(forged)

    await storage.run_transaction(lambda tx: tx.execute(
        "INSERT INTO audit_log (seq, at, event, actor_id, actor_name, actor_upn, tenant_id, action, workspace, target, "
        "parameters, before_state, after_state, approval_id, outcome, activity_id, detail, prev_hash, hash, chain) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (1, stored["at"], forged.event, forged.actor_id, forged.actor_name, forged.actor_upn,
         forged.tenant_id, forged.action, forged.workspace, forged.target, json.dumps(forged.parameters),
         json.dumps(forged.before), json.dumps(forged.after), forged.approval_id, forged.outcome,
         forged.activity_id, json.dumps(forged.detail, ensure_ascii=False), forged.prev_hash, forged.hash,
         forged.chain)))

    result = await verify(storage)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 1, "record 1 was inserted")


def test_entry_refusals_name_the_field():
    with pytest.raises(ValueError, match=r"^at must be a timezone-aware datetime$"):
        entry(at=datetime(2025, 3, 14, 12, 0))
    with pytest.raises(ValueError, match=r"^event must not be empty$"):
        entry(event="")
