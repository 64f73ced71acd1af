"""Issue #17 item 10: a rewritten trail is detected (keyed chain, anchors, damaged records).

The attacker here can write the database (raw SQL) but does not hold MLOPSBOT_AUDIT_KEY.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from adapters.storage import audit
from adapters.storage.audit import GENESIS_HASH, PLAIN, AuditRecord, Verification
from commands.changes.audit import audit as audit_command
from commands.base.context import Context, Role, User
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)
from tests.test_storage_audit import NOON, append_all, entry

KEY = b"the-real-audit-key-from-key-vault-0123456789"
WRONG_KEY = b"a-key-the-attacker-guessed-0123456789abcdef"


async def verify(storage, anchor=None) -> Verification:
    return await storage.run_transaction(lambda tx: audit.verify(tx, anchor=anchor), write=False)


async def sql(storage, statement, params=()):
    await storage.run_transaction(lambda tx: tx.execute(statement, params))


@pytest.fixture
async def keyed(storage):
    """A storage keyed like production, with a chain of 10 records."""
    storage.audit_key = KEY
    records = await append_all(storage, [entry(n) for n in range(10)])
    assert (await verify(storage)).ok
    return storage, records


async def test_keyed_records_use_hmac_with_the_configured_key(keyed):
    storage, records = keyed
    import hmac
    assert records[0].chain == "hmac-sha256"
    assert records[0].hash == hmac.new(KEY, records[0].canonical(), hashlib.sha256).hexdigest()
    result = await verify(storage)
    assert (result.ok, result.keyed, result.keyed_from, result.head_seq, result.head_hash) == (
        True, True, 1, 10, records[9].hash)


async def test_an_edit_rehashed_with_plain_sha256_is_named(keyed):
    storage, records = keyed
    forged = AuditRecord(**{**records[4].__dict__, "actor_name": "Mallory", "chain": PLAIN, "hash": ""})

    await sql(storage, "UPDATE audit_log SET actor_name = ?, chain = ?, hash = ? WHERE seq = 5",
              ("Mallory", PLAIN, forged.computed_hash()))

    result = await verify(storage)
    assert (result.ok, result.first_bad_seq, result.problem) == (
        False, 5, "record 5 was altered and re-hashed without the key (it claims the plain chain, but the keyed "
                  "part began at record 1)")


async def test_an_edit_rehashed_as_plain_sha256_keeping_the_keyed_label_is_named(keyed):
    storage, records = keyed
    forged = AuditRecord(**{**records[4].__dict__, "outcome": "succeeded", "hash": ""})
    plain = hashlib.sha256(forged.canonical()).hexdigest()

    await sql(storage, "UPDATE audit_log SET outcome = ?, hash = ? WHERE seq = 5", ("succeeded", plain))

    assert await verify(storage) == Verification(False, 5, 5, "record 5 was altered")


async def test_an_edit_rehashed_with_a_wrong_key_and_relinked_is_named(keyed):
    """The attacker re-hashes the edited record and every later one (links and head too)."""
    storage, records = keyed
    prev = records[3].hash
    for record in records[4:]:
        changes = {"before": {"blue": 100, "green": 0}} if record.seq == 5 else {}
        forged = AuditRecord(**{**record.__dict__, **changes, "prev_hash": prev, "hash": ""})
        forged_hash = forged.computed_hash(WRONG_KEY)
        await sql(storage, "UPDATE audit_log SET before_state = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                  (json.dumps(forged.before), prev, forged_hash, record.seq))
        prev = forged_hash
    await sql(storage, "UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))

    assert await verify(storage) == Verification(False, 5, 5, "record 5 was altered")


async def test_the_wrong_configured_key_fails_at_the_first_keyed_record_and_says_so(keyed):
    storage, _ = keyed
    storage.audit_key = WRONG_KEY

    assert await verify(storage) == Verification(
        False, 1, 1, "record 1 was altered (or written with another MLOPSBOT_AUDIT_KEY than this one)")


async def test_a_cut_tail_with_a_rewritten_head_passes_alone_but_not_against_the_anchor(keyed):
    storage, records = keyed
    anchor = records[9].hash                 # what yesterday's digest showed

    await sql(storage, "DELETE FROM audit_log WHERE seq > 7")
    await sql(storage, "UPDATE audit_head SET seq = 7, hash = ? WHERE id = 1", (records[6].hash,))

    assert (await verify(storage)).ok        # HMAC cannot see a clean cut: that is what the anchor is for
    result = await verify(storage, anchor=anchor)
    assert (result.ok, result.first_bad_seq, result.problem) == (
        False, 8, f"the anchored head {anchor[:12]}… is not in the chain, which now ends at record 7: records "
                  "were cut off the end (or the chain was rewritten)")


async def test_records_appended_after_the_anchor_are_counted(keyed):
    storage, records = keyed
    anchor = records[6].hash

    result = await verify(storage, anchor=anchor)

    assert (result.ok, result.after_anchor, result.head_seq) == (True, 3, 10)
    assert (await verify(storage, anchor=records[9].hash)).after_anchor == 0
    assert (await verify(storage, anchor="ab" * 32)).ok is False


async def test_a_damaged_timestamp_names_the_record_and_raises_nothing(keyed):
    storage, _ = keyed
    if storage.dialect == "postgres":
        pytest.skip("a TIMESTAMPTZ column refuses a damaged timestamp; SQLite stores it as TEXT")
    await sql(storage, "UPDATE audit_log SET at = ? WHERE seq = 6", ("2025-03-14T12:0X:00.123456+00:00",))

    assert await verify(storage) == Verification(
        False, 6, 6, "record 6 is damaged: its time '2025-03-14T12:0X:00.123456+00:00' is not a timestamp")


async def test_damaged_json_names_the_record(keyed):
    storage, _ = keyed
    await sql(storage, "UPDATE audit_log SET parameters = ? WHERE seq = 3", ('{"split": ',))

    assert await verify(storage) == Verification(False, 3, 3, "record 3 is damaged: its parameters is not JSON")


async def test_records_from_before_keying_still_verify_and_the_keyed_part_is_named(storage):
    """Records written before migration 16 carry chain 'sha256' and the encoding of migration 3."""
    storage.audit_key = KEY
    prev = GENESIS_HASH
    for n in range(3):
        old = AuditRecord(**{**entry(n).__dict__, "seq": n + 1, "prev_hash": prev, "chain": PLAIN})
        legacy = json.loads(old.canonical())
        assert set(legacy) == {"action", "activity_id", "actor_id", "actor_name", "actor_upn", "after",
                               "approval_id", "at", "before", "detail", "event", "outcome", "parameters",
                               "prev_hash", "seq", "target", "tenant_id", "workspace"}   # migration 3's fields
        digest = hashlib.sha256(old.canonical()).hexdigest()
        await sql(storage, "INSERT INTO audit_log (seq, at, event, actor_id, actor_name, actor_upn, tenant_id, action, "
                  "workspace, target, parameters, before_state, after_state, approval_id, outcome, activity_id, detail, "
                  "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (old.seq, old.at.isoformat(), old.event, old.actor_id, old.actor_name, old.actor_upn,
                   old.tenant_id, old.action, old.workspace, old.target, json.dumps(old.parameters),
                   json.dumps(old.before), json.dumps(old.after), old.approval_id, old.outcome, old.activity_id,
                   json.dumps(old.detail, ensure_ascii=False), prev, digest))
        prev = digest
    await sql(storage, "UPDATE audit_head SET seq = 3, hash = ? WHERE id = 1", (prev,))
    await append_all(storage, [entry(3, reason="canary healthy"), entry(4)])

    result = await verify(storage)
    assert (result.ok, result.checked, result.keyed_from, result.head_seq) == (True, 5, 4, 5)
    chain = await storage.run_transaction(audit.scan)
    assert [(r.seq, r.chain, r.reason) for r in chain] == [
        (1, "sha256", ""), (2, "sha256", ""), (3, "sha256", ""), (4, "hmac-sha256", "canary healthy"),
        (5, "hmac-sha256", "")]

    await sql(storage, "UPDATE audit_log SET reason = ? WHERE seq = 2", ("made up later",))
    assert await verify(storage) == Verification(False, 2, 2, "record 2 was altered")


def texts(node) -> list[str]:
    """Every TextBlock's text in a card, in reading order."""
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "TextBlock" else []
        return own + [t for value in node.values() for t in texts(value)]
    if isinstance(node, list):
        return [t for value in node for t in texts(value)]
    return []


async def test_audit_verify_in_chat_shows_the_keyed_part_the_anchor_and_a_damaged_record(keyed):
    storage, records = keyed
    ctx = Context(user=User("aad-ann", "Ann", "t1"), role=Role.VIEWER, workspaces=None, store=storage,
                  clock=lambda: NOON + timedelta(hours=1))

    reply = await audit_command(ctx, "verify", None, None, None, None, 20, head=records[7].hash)
    assert texts(reply.card)[1:4] == [
        "✅ The chain of 10 records is intact: every record's hash and link verify, and nothing is missing at the end.",
        "Every record is keyed.",
        "⚠️ The anchor is record 8; records 9 to 10 were added after it. Read them with `audit --limit 2` and "
        "check each is expected."]

    if storage.dialect == "postgres":
        return                      # TIMESTAMPTZ refuses a damaged time (see above)
    await sql(storage, "UPDATE audit_log SET at = ? WHERE seq = 4", ("2025-03-14T12:03:00.12345x+00:00",))
    reply = await audit_command(ctx, "verify", None, None, None, None, 20)
    assert texts(reply.card)[1] == ("❌ The audit trail was tampered with: record 4 is damaged: its time "
                                             "'2025-03-14T12:03:00.12345x+00:00' is not a timestamp.")


APP = {"app_id": "11111111-2222-3333-4444-555555555555", "app_password": "p", "host": "0.0.0.0",
       "allowed_tenants": ["*"]}


def test_production_refuses_to_start_without_an_audit_key_and_says_what_to_set(monkeypatch):
    from bot.settings import SettingsError, load_settings
    monkeypatch.delenv("MLOPSBOT_AUDIT_KEY")
    with pytest.raises(SettingsError) as refused:
        load_settings(**APP)
    assert "MLOPSBOT_AUDIT_KEY is required outside development mode" in str(refused.value)
    assert "openssl rand -hex 32" in str(refused.value)
    with pytest.raises(SettingsError, match="MLOPSBOT_AUDIT_KEY must be at least 32 characters"):
        load_settings(**APP, audit_key="short")
    assert load_settings(**APP, audit_key="k" * 32).audit_key_bytes() == b"k" * 32
    development = load_settings(host="127.0.0.1")
    assert (development.development, development.audit_key_bytes()) == (True, None)   # the public key
    assert "k" * 32 not in repr(load_settings(**APP, audit_key="k" * 32))             # never logged


def test_the_daily_digest_carries_the_audit_anchor():
    from datetime import datetime, timezone
    from commands.digests.digest_card import Digest, digest_card
    now = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    head = "3f" * 32

    built = digest_card(Digest("ml-prod", "prod", now, None, audit_head=(42, head)))

    assert (f"Audit anchor: 42 records, head {head}. Kept outside the bot's database, it lets "
            f"`audit verify --head {head}` show later that no record up to it was cut or rewritten.") in texts(built)


async def test_audit_head_without_verify_or_not_a_hash_is_a_usage_error(keyed):
    from commands.base.registry import UsageError
    storage, _ = keyed
    ctx = Context(user=User("aad-ann", "Ann", "t1"), role=Role.VIEWER, workspaces=None, store=storage)
    with pytest.raises(UsageError, match="--head goes with verify"):
        await audit_command(ctx, None, None, None, None, None, 20, head="ab" * 32)
    with pytest.raises(UsageError, match="64-hex-digit head hash"):
        await audit_command(ctx, "verify", None, None, None, None, 20, head="not-a-hash")


async def test_the_bot_logs_the_audit_anchor_at_start_up(aiohttp_server, settings, caplog):
    import logging
    from bot.app import STORAGE, create_app
    caplog.set_level(logging.INFO, logger="bot.app")
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    store = server.app[STORAGE]

    seq, head = await store.run_transaction(audit.head, write=False)
    assert seq == 1                                     # the policy loaded
    assert f"audit anchor: 1 records, head {head} (keyed with MLOPSBOT_AUDIT_KEY)" in caplog.messages
    assert (await verify(store, anchor=head)).ok


async def test_listing_and_exporting_a_trail_with_a_damaged_record_still_work(keyed):
    storage, records = keyed
    if storage.dialect == "postgres":
        pytest.skip("a TIMESTAMPTZ column refuses a damaged timestamp; SQLite stores it as TEXT")
    await sql(storage, "UPDATE audit_log SET at = ? WHERE seq = 3", ("2025-03-14T12:0X:00.123456+00:00",))
    ctx = Context(user=User("aad-ann", "Ann", "t1"), role=Role.VIEWER, workspaces=None, store=storage,
                  clock=lambda: NOON + timedelta(hours=1))

    listed = texts((await audit_command(ctx, None, None, None, None, None, 20)).card)
    assert ("⚠️ record 3 is damaged: its time '2025-03-14T12:0X:00.123456+00:00' is not a timestamp; "
            "audit verify checks the whole trail") in listed
    exported = [audit.to_dict(r) for r in await storage.run_transaction(audit.scan, write=False)]
    assert [(r["seq"], r["event"]) for r in exported][1:4] == [(2, "requested"), (3, "damaged"), (4, "requested")]
    assert exported[2]["hash"] == records[2].hash


# ---- Found by mutation testing (mutmut 3.8.1 on adapters/storage/audit.py, see docs/testing.md).

async def test_a_failed_verification_still_says_it_was_checked_with_the_real_key(keyed):
    """`keyed` tells the reader whether the verdict rests on the secret key; a failure keeps it."""
    storage, _ = keyed

    await sql(storage, "UPDATE audit_head SET seq = 12 WHERE id = 1")
    ends_early = await verify(storage)
    await sql(storage, "UPDATE audit_head SET seq = 8 WHERE id = 1")
    runs_past = await verify(storage)
    await sql(storage, "UPDATE audit_log SET outcome = ? WHERE seq = 5", ("succeeded",))
    altered = await verify(storage)

    assert (ends_early.problem, ends_early.keyed) == ("the chain ends at 10 but the head says 12", True)
    assert (runs_past.problem, runs_past.keyed) == ("record 9 was inserted (the head says the chain ends at 8)", True)
    assert (altered.problem, altered.keyed) == ("record 5 was altered", True)


async def test_an_unknown_chain_name_is_quoted_cut_to_twenty_characters(keyed):
    storage, _ = keyed

    await sql(storage, "UPDATE audit_log SET chain = ? WHERE seq = 4", ("sha3-512-with-a-long-name",))

    assert await verify(storage) == Verification(
        False, 4, 4, "record 4 was altered (it names an unknown chain 'sha3-512-with-a-long')")


async def test_a_head_hash_mismatch_and_a_missing_anchor_also_keep_keyed(keyed):
    storage, _ = keyed

    unknown_anchor = await verify(storage, anchor="ab" * 32)
    await sql(storage, "UPDATE audit_head SET hash = ? WHERE id = 1", ("f" * 64,))
    head_altered = await verify(storage)

    assert (unknown_anchor.ok, unknown_anchor.first_bad_seq, unknown_anchor.keyed) == (False, 11, True)
    assert (head_altered.problem, head_altered.keyed) == ("record 10 was altered", True)


async def test_the_anchor_of_an_empty_chain_holds_and_counts_every_record_after_it(keyed):
    storage, _ = keyed

    from_genesis = await verify(storage, anchor=GENESIS_HASH)
    unanchored = await verify(storage)

    assert (from_genesis.ok, from_genesis.after_anchor, from_genesis.problem) == (True, 10, "")
    assert (unanchored.ok, unanchored.after_anchor) == (True, 0)


async def test_a_damaged_record_says_what_does_not_decode(keyed):
    storage, _ = keyed
    if storage.dialect == "postgres":
        pytest.skip("PostgreSQL's typed columns refuse these values; SQLite stores them as given")
    long_time = "2025-03-14T12:00:00.123456+00:00 and then some more text"
    await sql(storage, "UPDATE audit_log SET at = ? WHERE seq = 3", (long_time,))
    await sql(storage, "UPDATE audit_log SET approval_id = ? WHERE seq = 6", ("abc",))

    listed = {r.seq: r for r in await storage.run_transaction(audit.scan, write=False)}
    result = await verify(storage)

    assert listed[3].detail == {"damage": f"record 3 is damaged: its time {long_time[:40]!r} is not a timestamp"}
    assert listed[6].detail == {"damage": "record 6 is damaged: invalid literal for int() with base 10: 'abc'"}
    assert (result.ok, result.first_bad_seq, result.after_anchor) == (False, 3, 0)
    assert result.problem == f"record 3 is damaged: its time {long_time[:40]!r} is not a timestamp"


async def test_a_record_edited_to_hold_nan_is_named_not_raised(keyed):
    """Found through mutmut's `allow_nan` survivors: json.loads reads NaN, the canonical encoding
    refuses it, and `verify` raised ValueError instead of naming the record."""
    storage, _ = keyed
    if storage.dialect == "postgres":
        pytest.skip("PostgreSQL's JSON refuses NaN; SQLite stores the text as given")
    await sql(storage, "UPDATE audit_log SET parameters = ? WHERE seq = 4", ('{"n": NaN}',))
    await sql(storage, "UPDATE audit_log SET detail = ? WHERE seq = 7", ('{"x": -Infinity}',))

    result = await verify(storage)
    listed = {r.seq: r for r in await storage.run_transaction(audit.scan, write=False)}

    assert (result.ok, result.first_bad_seq, result.problem) == (
        False, 4, "record 4 is damaged: its parameters is not JSON")
    assert (listed[4].event, listed[4].detail) == ("damaged", {"damage": "record 4 is damaged: its parameters is not JSON"})
    assert listed[7].detail == {"damage": "record 7 is damaged: its detail is not JSON"}
