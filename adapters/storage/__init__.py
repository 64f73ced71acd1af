"""The bot's own state: the `Storage` port, its value types, its errors and its schema migrations.

Two implementations share everything except connection handling:

    storage = open_storage("sqlite:///var/lib/mlops-bot/bot.db")       # default, one replica
    storage = open_storage("postgresql://bot@db.example:5432/mlopsbot")  # several replicas
    await storage.open()                      # connect, then create/migrate the schema
    await storage.save_conversation(record)   # upsert, in one transaction
    await storage.close()

`adapters.storage.sqlite.SqliteStorage` runs stdlib `sqlite3` (WAL mode) on one worker thread;
`adapters.storage.postgres.PostgresStorage` uses psycopg 3 async on one connection that is
re-opened after it drops. Both derive from `SqlStorage`, which holds the migration runner.

A unit of work: each table group has a module of small repository functions that take the open
`Transaction` (`approvals`, `audit`, `grants`, `inbox`, `outbox`, `conversations`), so a caller
composes several of them in ONE transaction, committed together or not at all:

    from adapters.storage import approvals, audit, outbox

    async def decide(tx: Transaction) -> bool:
        if not await approvals.transition(tx, 42, approvals.PENDING, approvals.APPROVED, now=now):
            return False                      # another click or replica won
        await audit.append(tx, AuditEntry(...))
        await outbox.enqueue(tx, conversation_id, card, dedupe_key="approval-42-approved", now=now)
        return True

    won = await storage.run_transaction(decide)

Inside a unit of work, take row locks before the audit head: `approvals.get(..., for_update=True)`
or `transition` first, `audit.append` last. The head lock serializes every audited transaction
across replicas until it commits, so a consistent order avoids PostgreSQL deadlocks and keeps the
lock short. `work` must use only `tx` (never the storage's own methods) and must not call out to
Teams or Azure: enqueue in the outbox instead.

A feature adds its tables by appending a `Migration` to `MIGRATIONS` (never editing one).

SQL conventions: statements use qmark placeholders (`?`); `PostgresStorage` rewrites them to
psycopg's `%s` in one place (`adapters.storage.postgres.to_psycopg`). Never write a literal `?` in SQL text
(for PostgreSQL's jsonb `?` operators use `jsonb_exists()`). Times are stored in UTC; JSON is TEXT
on SQLite and JSONB on PostgreSQL.

Error tree::

    StorageError                 the database refused the statement (bug, constraint, ...)
    └── StorageUnavailable       not open, unreachable, locked or timed out; retry later
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, ClassVar, Protocol, TypeVar
from urllib.parse import unquote

from adapters.storage import conversations as _conversations
from adapters.storage.base import (StorageError, StorageUnavailable, Transaction, decode_json, decode_time,
                                   encode_json, encode_time, for_update)
from adapters.storage.conversations import CONVERSATION_KINDS, ConversationRecord

__all__ = ["CONVERSATION_KINDS", "MIGRATIONS", "ConversationRecord", "Migration", "SqlStorage", "Storage",
           "StorageError", "StorageUnavailable", "Transaction", "decode_json", "decode_time", "encode_json",
           "encode_time", "for_update", "open_storage"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# ---------------------------------------------------------------- the port


class Storage(Protocol):
    """The bot's state store. Every method is a coroutine and never blocks the event loop."""

    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent; safe for concurrent replicas)."""

    async def close(self) -> None:
        """Release the connection; later calls raise StorageUnavailable until `open` again."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers a read. (GET /readyz needs more:
        a committed write, `instances.beat`, so a database that only reads is not ready.)"""

    async def save_conversation(self, ref: ConversationRecord) -> None:
        """Insert or replace the record with the same conversation_id."""

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The stored record, or None."""

    async def list_conversations(self, *, kind: str | None = None) -> list[ConversationRecord]:
        """All records (of one kind if given), ordered by conversation_id."""

    async def run_transaction(self, work: Callable[[Transaction], Awaitable[T]], *, write: bool = True) -> T:
        """Run `await work(tx)` in one transaction (a unit of work): committed if it returns, rolled
        back if it raises. `work` composes the table modules' functions, all on `tx`."""


# ---------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One schema change, as statements per dialect. Never edit an applied one: append a new one."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return getattr(self, dialect)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "conversations",
        sqlite=(
            """CREATE TABLE conversations (
                   conversation_id TEXT PRIMARY KEY,
                   kind            TEXT NOT NULL,
                   reference       TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   team_id         TEXT NOT NULL DEFAULT '',
                   channel_id      TEXT NOT NULL DEFAULT '',
                   user_id         TEXT NOT NULL DEFAULT '',
                   updated_at      TEXT NOT NULL)""",
            "CREATE INDEX conversations_kind ON conversations (kind)",
        ),
        postgres=(
            """CREATE TABLE conversations (
                   conversation_id TEXT PRIMARY KEY,
                   kind            TEXT NOT NULL,
                   reference       JSONB NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   team_id         TEXT NOT NULL DEFAULT '',
                   channel_id      TEXT NOT NULL DEFAULT '',
                   user_id         TEXT NOT NULL DEFAULT '',
                   updated_at      TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX conversations_kind ON conversations (kind)",
        ),
    ),
    Migration(
        2, "approvals",
        sqlite=(
            """CREATE TABLE approvals (
                   id                   INTEGER PRIMARY KEY AUTOINCREMENT,
                   action               TEXT NOT NULL,
                   workspace            TEXT NOT NULL,
                   environment          TEXT NOT NULL,
                   target               TEXT NOT NULL,
                   parameters           TEXT NOT NULL,
                   before_state         TEXT NOT NULL,
                   after_state          TEXT NOT NULL,
                   reason               TEXT NOT NULL,
                   requester_id         TEXT NOT NULL,
                   requester_name       TEXT NOT NULL,
                   tenant_id            TEXT NOT NULL,
                   conversation_id      TEXT NOT NULL,
                   quorum               INTEGER NOT NULL CHECK (quorum >= 1),
                   allow_self           INTEGER NOT NULL,
                   approver_role        TEXT NOT NULL,
                   created_at           TEXT NOT NULL,
                   expires_at           TEXT NOT NULL,
                   execute              INTEGER NOT NULL,
                   source               TEXT NOT NULL,
                   run_url              TEXT NOT NULL,
                   state                TEXT NOT NULL,
                   updated_at           TEXT NOT NULL,
                   result               TEXT NOT NULL DEFAULT '',
                   card_conversation_id TEXT NOT NULL DEFAULT '',
                   card_activity_id     TEXT NOT NULL DEFAULT '')""",
            "CREATE INDEX approvals_state_expiry ON approvals (state, expires_at)",
            "CREATE INDEX approvals_requester ON approvals (requester_id)",
            """CREATE TABLE approval_votes (
                   approval_id INTEGER NOT NULL REFERENCES approvals (id),
                   voter_id    TEXT NOT NULL,
                   voter_name  TEXT NOT NULL,
                   decision    TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
                   comment     TEXT NOT NULL,
                   activity_id TEXT NOT NULL,
                   at          TEXT NOT NULL,
                   PRIMARY KEY (approval_id, voter_id))""",
            "CREATE INDEX approval_votes_voter ON approval_votes (voter_id)",
        ),
        postgres=(
            """CREATE TABLE approvals (
                   id                   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   action               TEXT NOT NULL,
                   workspace            TEXT NOT NULL,
                   environment          TEXT NOT NULL,
                   target               TEXT NOT NULL,
                   parameters           JSONB NOT NULL,
                   before_state         JSONB NOT NULL,
                   after_state          JSONB NOT NULL,
                   reason               TEXT NOT NULL,
                   requester_id         TEXT NOT NULL,
                   requester_name       TEXT NOT NULL,
                   tenant_id            TEXT NOT NULL,
                   conversation_id      TEXT NOT NULL,
                   quorum               INTEGER NOT NULL CHECK (quorum >= 1),
                   allow_self           BOOLEAN NOT NULL,
                   approver_role        TEXT NOT NULL,
                   created_at           TIMESTAMPTZ NOT NULL,
                   expires_at           TIMESTAMPTZ NOT NULL,
                   execute              BOOLEAN NOT NULL,
                   source               TEXT NOT NULL,
                   run_url              TEXT NOT NULL,
                   state                TEXT NOT NULL,
                   updated_at           TIMESTAMPTZ NOT NULL,
                   result               TEXT NOT NULL DEFAULT '',
                   card_conversation_id TEXT NOT NULL DEFAULT '',
                   card_activity_id     TEXT NOT NULL DEFAULT '')""",
            "CREATE INDEX approvals_state_expiry ON approvals (state, expires_at)",
            "CREATE INDEX approvals_requester ON approvals (requester_id)",
            """CREATE TABLE approval_votes (
                   approval_id BIGINT NOT NULL REFERENCES approvals (id),
                   voter_id    TEXT NOT NULL,
                   voter_name  TEXT NOT NULL,
                   decision    TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
                   comment     TEXT NOT NULL,
                   activity_id TEXT NOT NULL,
                   at          TIMESTAMPTZ NOT NULL,
                   PRIMARY KEY (approval_id, voter_id))""",
            "CREATE INDEX approval_votes_voter ON approval_votes (voter_id)",
        ),
    ),
    # The audit chain. JSON fields are TEXT on both databases (not JSONB): the hash is computed
    # over them, and JSONB would normalise what was hashed (and refuses \u0000). `audit_head` is
    # the chain head: one row, locked by every append, and the witness that catches a cut tail.
    Migration(
        3, "audit",
        sqlite=(
            """CREATE TABLE audit_log (
                   seq         INTEGER PRIMARY KEY,
                   at          TEXT NOT NULL,
                   event       TEXT NOT NULL,
                   actor_id    TEXT NOT NULL,
                   actor_name  TEXT NOT NULL,
                   actor_upn   TEXT NOT NULL,
                   tenant_id   TEXT NOT NULL,
                   action      TEXT NOT NULL,
                   workspace   TEXT NOT NULL,
                   target      TEXT NOT NULL,
                   parameters  TEXT NOT NULL,
                   before_state TEXT NOT NULL,
                   after_state TEXT NOT NULL,
                   approval_id INTEGER,
                   outcome     TEXT NOT NULL,
                   activity_id TEXT NOT NULL,
                   detail      TEXT NOT NULL,
                   prev_hash   TEXT NOT NULL,
                   hash        TEXT NOT NULL)""",
            "CREATE INDEX audit_log_at ON audit_log (at)",
            """CREATE TABLE audit_head (
                   id   INTEGER PRIMARY KEY CHECK (id = 1),
                   seq  INTEGER NOT NULL,
                   hash TEXT NOT NULL)""",
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" + "0" * 64 + "')",
        ),
        postgres=(
            """CREATE TABLE audit_log (
                   seq         BIGINT PRIMARY KEY,
                   at          TIMESTAMPTZ NOT NULL,
                   event       TEXT NOT NULL,
                   actor_id    TEXT NOT NULL,
                   actor_name  TEXT NOT NULL,
                   actor_upn   TEXT NOT NULL,
                   tenant_id   TEXT NOT NULL,
                   action      TEXT NOT NULL,
                   workspace   TEXT NOT NULL,
                   target      TEXT NOT NULL,
                   parameters  TEXT NOT NULL,
                   before_state TEXT NOT NULL,
                   after_state TEXT NOT NULL,
                   approval_id BIGINT,
                   outcome     TEXT NOT NULL,
                   activity_id TEXT NOT NULL,
                   detail      TEXT NOT NULL,
                   prev_hash   TEXT NOT NULL,
                   hash        TEXT NOT NULL)""",
            "CREATE INDEX audit_log_at ON audit_log (at)",
            """CREATE TABLE audit_head (
                   id   INTEGER PRIMARY KEY CHECK (id = 1),
                   seq  BIGINT NOT NULL,
                   hash TEXT NOT NULL)""",
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" + "0" * 64 + "')",
        ),
    ),
    Migration(
        4, "role grants",
        sqlite=(
            """CREATE TABLE role_grants (
                   user_id         TEXT PRIMARY KEY,
                   user_name       TEXT NOT NULL,
                   role            TEXT NOT NULL,
                   granted_by_id   TEXT NOT NULL,
                   granted_by_name TEXT NOT NULL,
                   granted_at      TEXT NOT NULL)""",
        ),
        postgres=(
            """CREATE TABLE role_grants (
                   user_id         TEXT PRIMARY KEY,
                   user_name       TEXT NOT NULL,
                   role            TEXT NOT NULL,
                   granted_by_id   TEXT NOT NULL,
                   granted_by_name TEXT NOT NULL,
                   granted_at      TIMESTAMPTZ NOT NULL)""",
        ),
    ),
    Migration(
        5, "inbox",
        sqlite=(
            "CREATE TABLE inbox (key TEXT PRIMARY KEY, seen_at TEXT NOT NULL)",
            "CREATE INDEX inbox_seen_at ON inbox (seen_at)",
        ),
        postgres=(
            "CREATE TABLE inbox (key TEXT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL)",
            "CREATE INDEX inbox_seen_at ON inbox (seen_at)",
        ),
    ),
    Migration(
        6, "outbox",
        sqlite=(
            """CREATE TABLE outbox (
                   id              INTEGER PRIMARY KEY AUTOINCREMENT,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   dedupe_key      TEXT NOT NULL UNIQUE,
                   payload         TEXT NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
                   attempts        INTEGER NOT NULL DEFAULT 0,
                   not_before      TEXT NOT NULL,
                   lease_owner     TEXT NOT NULL DEFAULT '',
                   lease_until     TEXT,
                   activity_id     TEXT NOT NULL DEFAULT '',
                   last_error      TEXT NOT NULL DEFAULT '',
                   created_at      TEXT NOT NULL,
                   sent_at         TEXT)""",
            "CREATE INDEX outbox_due ON outbox (state, not_before)",
            "CREATE INDEX outbox_conversation ON outbox (conversation_id)",
        ),
        postgres=(
            """CREATE TABLE outbox (
                   id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   dedupe_key      TEXT NOT NULL UNIQUE,
                   payload         JSONB NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
                   attempts        INTEGER NOT NULL DEFAULT 0,
                   not_before      TIMESTAMPTZ NOT NULL,
                   lease_owner     TEXT NOT NULL DEFAULT '',
                   lease_until     TIMESTAMPTZ,
                   activity_id     TEXT NOT NULL DEFAULT '',
                   last_error      TEXT NOT NULL DEFAULT '',
                   created_at      TIMESTAMPTZ NOT NULL,
                   sent_at         TIMESTAMPTZ)""",
            "CREATE INDEX outbox_due ON outbox (state, not_before)",
            "CREATE INDEX outbox_conversation ON outbox (conversation_id)",
        ),
    ),
    Migration(
        7, "conversations gone",
        sqlite=("ALTER TABLE conversations ADD COLUMN gone_at TEXT",),
        postgres=("ALTER TABLE conversations ADD COLUMN gone_at TIMESTAMPTZ",),
    ),
    Migration(
        8, "people",
        sqlite=("""CREATE TABLE people (
                       object_id TEXT PRIMARY KEY, teams_id TEXT NOT NULL, name TEXT NOT NULL,
                       tenant_id TEXT NOT NULL, seen_at TEXT NOT NULL)""",),
        postgres=("""CREATE TABLE people (
                         object_id TEXT PRIMARY KEY, teams_id TEXT NOT NULL, name TEXT NOT NULL,
                         tenant_id TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL)""",),
    ),
    # Subscriptions per conversation, and alerts with the cards that show them (issue 10).
    Migration(
        9, "subscriptions and alerts",
        sqlite=(
            """CREATE TABLE subscriptions (
                   id              INTEGER PRIMARY KEY AUTOINCREMENT,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   kind            TEXT NOT NULL,
                   workspace       TEXT NOT NULL DEFAULT '',
                   model           TEXT NOT NULL DEFAULT '',
                   endpoint        TEXT NOT NULL DEFAULT '',
                   severity        TEXT NOT NULL DEFAULT '',
                   created_by_id   TEXT NOT NULL,
                   created_by_name TEXT NOT NULL,
                   created_at      TEXT NOT NULL,
                   UNIQUE (conversation_id, kind, workspace, model, endpoint, severity))""",
            "CREATE INDEX subscriptions_kind ON subscriptions (kind)",
            """CREATE TABLE alerts (
                   id              INTEGER PRIMARY KEY AUTOINCREMENT,
                   alert_key       TEXT NOT NULL UNIQUE,
                   kind            TEXT NOT NULL,
                   status          TEXT NOT NULL,
                   event           TEXT NOT NULL,
                   history         TEXT NOT NULL,
                   fired_count     INTEGER NOT NULL DEFAULT 0,
                   first_at        TEXT NOT NULL,
                   updated_at      TEXT NOT NULL,
                   acknowledged_by TEXT NOT NULL DEFAULT '',
                   acknowledged_at TEXT,
                   snoozed_by      TEXT NOT NULL DEFAULT '',
                   snoozed_until   TEXT,
                   revision        INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE alert_cards (
                   alert_id        BIGINT NOT NULL REFERENCES alerts (id),
                   conversation_id TEXT NOT NULL,
                   first_key       TEXT NOT NULL,
                   PRIMARY KEY (alert_id, conversation_id))""",
        ),
        postgres=(
            """CREATE TABLE subscriptions (
                   id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   kind            TEXT NOT NULL,
                   workspace       TEXT NOT NULL DEFAULT '',
                   model           TEXT NOT NULL DEFAULT '',
                   endpoint        TEXT NOT NULL DEFAULT '',
                   severity        TEXT NOT NULL DEFAULT '',
                   created_by_id   TEXT NOT NULL,
                   created_by_name TEXT NOT NULL,
                   created_at      TIMESTAMPTZ NOT NULL,
                   UNIQUE (conversation_id, kind, workspace, model, endpoint, severity))""",
            "CREATE INDEX subscriptions_kind ON subscriptions (kind)",
            """CREATE TABLE alerts (
                   id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   alert_key       TEXT NOT NULL UNIQUE,
                   kind            TEXT NOT NULL,
                   status          TEXT NOT NULL,
                   event           JSONB NOT NULL,
                   history         JSONB NOT NULL,
                   fired_count     INTEGER NOT NULL DEFAULT 0,
                   first_at        TIMESTAMPTZ NOT NULL,
                   updated_at      TIMESTAMPTZ NOT NULL,
                   acknowledged_by TEXT NOT NULL DEFAULT '',
                   acknowledged_at TIMESTAMPTZ,
                   snoozed_by      TEXT NOT NULL DEFAULT '',
                   snoozed_until   TIMESTAMPTZ,
                   revision        INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE alert_cards (
                   alert_id        BIGINT NOT NULL REFERENCES alerts (id),
                   conversation_id TEXT NOT NULL,
                   first_key       TEXT NOT NULL,
                   PRIMARY KEY (alert_id, conversation_id))""",
        ),
    ),
    # Traffic history per endpoint (adapters.storage.traffic_history) and the watches after a
    # traffic change (adapters.storage.watches). Splits are JSON objects {deployment: percent}.
    Migration(
        10, "traffic history and watches",
        sqlite=(
            """CREATE TABLE traffic_history (
                   id            INTEGER PRIMARY KEY AUTOINCREMENT,
                   workspace     TEXT NOT NULL,
                   endpoint      TEXT NOT NULL,
                   at            TEXT NOT NULL,
                   action        TEXT NOT NULL,
                   source        TEXT NOT NULL CHECK (source IN ('bot', 'outside')),
                   before_split  TEXT NOT NULL,
                   after_split   TEXT NOT NULL,
                   actor_id      TEXT NOT NULL,
                   actor_name    TEXT NOT NULL,
                   approval_id   INTEGER,
                   reason        TEXT NOT NULL)""",
            "CREATE INDEX traffic_history_endpoint ON traffic_history (workspace, endpoint, id)",
            """CREATE TABLE watches (
                   id              INTEGER PRIMARY KEY AUTOINCREMENT,
                   workspace       TEXT NOT NULL,
                   endpoint        TEXT NOT NULL,
                   action          TEXT NOT NULL,
                   history_id      INTEGER NOT NULL,
                   approval_id     INTEGER,
                   baseline        TEXT NOT NULL,
                   auto_rollback   INTEGER NOT NULL,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   requester_name  TEXT NOT NULL,
                   started_at      TEXT NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('watching', 'evaluating', 'done')),
                   claimed_by      TEXT NOT NULL DEFAULT '',
                   claimed_until   TEXT,
                   verdict         TEXT NOT NULL DEFAULT '{}',
                   finished_at     TEXT)""",
            "CREATE INDEX watches_due ON watches (state, started_at)",
        ),
        postgres=(
            """CREATE TABLE traffic_history (
                   id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   workspace     TEXT NOT NULL,
                   endpoint      TEXT NOT NULL,
                   at            TIMESTAMPTZ NOT NULL,
                   action        TEXT NOT NULL,
                   source        TEXT NOT NULL CHECK (source IN ('bot', 'outside')),
                   before_split  JSONB NOT NULL,
                   after_split   JSONB NOT NULL,
                   actor_id      TEXT NOT NULL,
                   actor_name    TEXT NOT NULL,
                   approval_id   BIGINT,
                   reason        TEXT NOT NULL)""",
            "CREATE INDEX traffic_history_endpoint ON traffic_history (workspace, endpoint, id)",
            """CREATE TABLE watches (
                   id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   workspace       TEXT NOT NULL,
                   endpoint        TEXT NOT NULL,
                   action          TEXT NOT NULL,
                   history_id      BIGINT NOT NULL,
                   approval_id     BIGINT,
                   baseline        JSONB NOT NULL,
                   auto_rollback   BOOLEAN NOT NULL,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL,
                   requester_name  TEXT NOT NULL,
                   started_at      TIMESTAMPTZ NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('watching', 'evaluating', 'done')),
                   claimed_by      TEXT NOT NULL DEFAULT '',
                   claimed_until   TIMESTAMPTZ,
                   verdict         JSONB NOT NULL DEFAULT '{}',
                   finished_at     TIMESTAMPTZ)""",
            "CREATE INDEX watches_due ON watches (state, started_at)",
        ),
    ),
    # Long operations in flight (adapters.storage.operations): their outcome is reported even
    # when the process that started them stops; `change` and `notes` are JSON.
    Migration(
        11, "pending operations",
        sqlite=(
            """CREATE TABLE pending_operations (
                   id                  INTEGER PRIMARY KEY AUTOINCREMENT,
                   owner               TEXT NOT NULL,
                   change              TEXT NOT NULL,
                   notes               TEXT NOT NULL,
                   approval_id         INTEGER,
                   actor_id            TEXT NOT NULL,
                   actor_name          TEXT NOT NULL,
                   tenant_id           TEXT NOT NULL,
                   conversation_id     TEXT NOT NULL,
                   activity_id         TEXT NOT NULL,
                   started_at          TEXT NOT NULL,
                   state               TEXT NOT NULL CHECK (state IN ('pending', 'done')),
                   outcome             TEXT NOT NULL DEFAULT '{}',
                   finished_at         TEXT,
                   ack_activity_id     TEXT NOT NULL DEFAULT '',
                   posted              INTEGER NOT NULL DEFAULT 0)""",
            "CREATE INDEX pending_operations_open ON pending_operations (state, posted, started_at)",
        ),
        postgres=(
            """CREATE TABLE pending_operations (
                   id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   owner               TEXT NOT NULL,
                   change              JSONB NOT NULL,
                   notes               JSONB NOT NULL,
                   approval_id         BIGINT,
                   actor_id            TEXT NOT NULL,
                   actor_name          TEXT NOT NULL,
                   tenant_id           TEXT NOT NULL,
                   conversation_id     TEXT NOT NULL,
                   activity_id         TEXT NOT NULL,
                   started_at          TIMESTAMPTZ NOT NULL,
                   state               TEXT NOT NULL CHECK (state IN ('pending', 'done')),
                   outcome             JSONB NOT NULL DEFAULT '{}',
                   finished_at         TIMESTAMPTZ,
                   ack_activity_id     TEXT NOT NULL DEFAULT '',
                   posted              BOOLEAN NOT NULL DEFAULT FALSE)""",
            "CREATE INDEX pending_operations_open ON pending_operations (state, posted, started_at)",
        ),
    ),
    # Scheduled model-health digests, one schedule per conversation, and what the last digest saw
    # (issue 11). A replica claims a due digest by compare-and-set of next_run.
    Migration(
        12, "digest schedules",
        sqlite=(
            """CREATE TABLE digest_schedules (
                   conversation_id TEXT PRIMARY KEY,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   workspace       TEXT NOT NULL DEFAULT '',
                   cron            TEXT NOT NULL,
                   time_zone       TEXT NOT NULL,
                   next_run        TEXT NOT NULL,
                   last_run        TEXT,
                   created_by_id   TEXT NOT NULL,
                   created_by_name TEXT NOT NULL,
                   created_at      TEXT NOT NULL)""",
            "CREATE INDEX digest_schedules_due ON digest_schedules (next_run)",
            """CREATE TABLE digest_snapshots (
                   conversation_id TEXT NOT NULL,
                   workspace       TEXT NOT NULL,
                   taken_at        TEXT NOT NULL,
                   snapshot        TEXT NOT NULL,
                   PRIMARY KEY (conversation_id, workspace))""",
        ),
        postgres=(
            """CREATE TABLE digest_schedules (
                   conversation_id TEXT PRIMARY KEY,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   workspace       TEXT NOT NULL DEFAULT '',
                   cron            TEXT NOT NULL,
                   time_zone       TEXT NOT NULL,
                   next_run        TIMESTAMPTZ NOT NULL,
                   last_run        TIMESTAMPTZ,
                   created_by_id   TEXT NOT NULL,
                   created_by_name TEXT NOT NULL,
                   created_at      TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX digest_schedules_due ON digest_schedules (next_run)",
            """CREATE TABLE digest_snapshots (
                   conversation_id TEXT NOT NULL,
                   workspace       TEXT NOT NULL,
                   taken_at        TIMESTAMPTZ NOT NULL,
                   snapshot        JSONB NOT NULL,
                   PRIMARY KEY (conversation_id, workspace))""",
        ),
    ),
    # Jobs started from chat (retrain, schedule run, batch invoke), watched until they end
    # (adapters.storage.job_watches): the end report survives a restart (issue 9).
    Migration(
        13, "job watches",
        sqlite=(
            """CREATE TABLE job_watches (
                   id              INTEGER PRIMARY KEY AUTOINCREMENT,
                   workspace       TEXT NOT NULL,
                   job_name        TEXT NOT NULL,
                   what            TEXT NOT NULL,
                   requester_name  TEXT NOT NULL,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   model           TEXT NOT NULL DEFAULT '',
                   since_version   TEXT NOT NULL DEFAULT '',
                   started_at      TEXT NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('watching', 'checking', 'done')),
                   next_check      TEXT NOT NULL,
                   claimed_by      TEXT NOT NULL DEFAULT '',
                   claimed_until   TEXT,
                   outcome         TEXT NOT NULL DEFAULT '{}',
                   finished_at     TEXT,
                   UNIQUE (workspace, job_name, conversation_id))""",
            "CREATE INDEX job_watches_due ON job_watches (state, next_check)",
        ),
        postgres=(
            """CREATE TABLE job_watches (
                   id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   workspace       TEXT NOT NULL,
                   job_name        TEXT NOT NULL,
                   what            TEXT NOT NULL,
                   requester_name  TEXT NOT NULL,
                   conversation_id TEXT NOT NULL,
                   tenant_id       TEXT NOT NULL DEFAULT '',
                   model           TEXT NOT NULL DEFAULT '',
                   since_version   TEXT NOT NULL DEFAULT '',
                   started_at      TIMESTAMPTZ NOT NULL,
                   state           TEXT NOT NULL CHECK (state IN ('watching', 'checking', 'done')),
                   next_check      TIMESTAMPTZ NOT NULL,
                   claimed_by      TEXT NOT NULL DEFAULT '',
                   claimed_until   TIMESTAMPTZ,
                   outcome         JSONB NOT NULL DEFAULT '{}',
                   finished_at     TIMESTAMPTZ,
                   UNIQUE (workspace, job_name, conversation_id))""",
            "CREATE INDEX job_watches_due ON job_watches (state, next_check)",
        ),
    ),
    # Teams' rate limits counted in the database, so that replicas together stay within them
    # (adapters.storage.rate_limits; issue 17): one row per send, per conversation and per tenant.
    Migration(
        14, "shared rate limits",
        sqlite=(
            """CREATE TABLE rate_limit_sends (
                   id      INTEGER PRIMARY KEY,
                   key     TEXT NOT NULL,
                   sent_at REAL NOT NULL)""",
            "CREATE INDEX rate_limit_sends_key ON rate_limit_sends (key, sent_at)",
            "CREATE INDEX rate_limit_sends_time ON rate_limit_sends (sent_at)",
        ),
        postgres=(
            """CREATE TABLE rate_limit_sends (
                   id      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   key     TEXT NOT NULL,
                   sent_at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX rate_limit_sends_key ON rate_limit_sends (key, sent_at)",
            "CREATE INDEX rate_limit_sends_time ON rate_limit_sends (sent_at)",
        ),
    ),
    # Issue 17: an operation is claimed (with a lease) by the one process that settles it after a
    # restart, at most one operation per approval request (a request left `executing` by an older
    # version is adopted once), and each running bot writes a heartbeat row: the readiness probe's
    # write, so /readyz answers 503 when the database can be read but not written (a full disk).
    Migration(
        15, "operation claims and instance heartbeats",
        sqlite=(
            "ALTER TABLE pending_operations ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE pending_operations ADD COLUMN claimed_until TEXT",
            "CREATE UNIQUE INDEX pending_operations_approval ON pending_operations (approval_id)",
            """CREATE TABLE bot_instances (
                   instance_id TEXT PRIMARY KEY,
                   owner       TEXT NOT NULL,
                   started_at  TEXT NOT NULL,
                   seen_at     TEXT NOT NULL)""",
        ),
        postgres=(
            "ALTER TABLE pending_operations ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE pending_operations ADD COLUMN claimed_until TIMESTAMPTZ",
            "CREATE UNIQUE INDEX pending_operations_approval ON pending_operations (approval_id)",
            """CREATE TABLE bot_instances (
                   instance_id TEXT PRIMARY KEY,
                   owner       TEXT NOT NULL,
                   started_at  TIMESTAMPTZ NOT NULL,
                   seen_at     TIMESTAMPTZ NOT NULL)""",
        ),
    ),
    # The keyed audit chain (adapters/storage/audit.py): records written from now on carry
    # chain = 'hmac-sha256' (HMAC with MLOPSBOT_AUDIT_KEY, which the database does not hold) and
    # the requester's reason; the records already there stay 'sha256' (plain) and still verify.
    Migration(
        16, "keyed audit chain",
        sqlite=(
            "ALTER TABLE audit_log ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE audit_log ADD COLUMN chain TEXT NOT NULL DEFAULT 'sha256'",
        ),
        postgres=(
            "ALTER TABLE audit_log ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE audit_log ADD COLUMN chain TEXT NOT NULL DEFAULT 'sha256'",
        ),
    ),
    # Security posture (issue 22): each checklist line's state per workspace with since-when, its
    # transitions (not in the audit trail: they have no actor), and the periodic scan's claim.
    Migration(
        17, "security posture",
        sqlite=(
            """CREATE TABLE posture_checks (
                   workspace         TEXT NOT NULL,
                   check_key         TEXT NOT NULL,
                   check_id          TEXT NOT NULL,
                   status            TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'unknown')),
                   since             TEXT NOT NULL,
                   known             TEXT NOT NULL DEFAULT '' CHECK (known IN ('', 'pass', 'fail')),
                   known_since       TEXT,
                   turned_failing_at TEXT,
                   item              TEXT NOT NULL DEFAULT '',
                   finding           TEXT NOT NULL DEFAULT '',
                   checked_at        TEXT NOT NULL,
                   PRIMARY KEY (workspace, check_key))""",
            "CREATE INDEX posture_checks_turned ON posture_checks (workspace, turned_failing_at)",
            """CREATE TABLE posture_transitions (
                   id            INTEGER PRIMARY KEY AUTOINCREMENT,
                   workspace     TEXT NOT NULL,
                   check_key     TEXT NOT NULL,
                   before_status TEXT NOT NULL,
                   after_status  TEXT NOT NULL,
                   at            TEXT NOT NULL,
                   finding       TEXT NOT NULL DEFAULT '')""",
            "CREATE INDEX posture_transitions_check ON posture_transitions (workspace, check_key, id)",
            """CREATE TABLE posture_scans (
                   workspace  TEXT PRIMARY KEY,
                   next_at    TEXT NOT NULL,
                   claimed_by TEXT NOT NULL DEFAULT '')""",
        ),
        postgres=(
            """CREATE TABLE posture_checks (
                   workspace         TEXT NOT NULL,
                   check_key         TEXT NOT NULL,
                   check_id          TEXT NOT NULL,
                   status            TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'unknown')),
                   since             TIMESTAMPTZ NOT NULL,
                   known             TEXT NOT NULL DEFAULT '' CHECK (known IN ('', 'pass', 'fail')),
                   known_since       TIMESTAMPTZ,
                   turned_failing_at TIMESTAMPTZ,
                   item              TEXT NOT NULL DEFAULT '',
                   finding           TEXT NOT NULL DEFAULT '',
                   checked_at        TIMESTAMPTZ NOT NULL,
                   PRIMARY KEY (workspace, check_key))""",
            "CREATE INDEX posture_checks_turned ON posture_checks (workspace, turned_failing_at)",
            """CREATE TABLE posture_transitions (
                   id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   workspace     TEXT NOT NULL,
                   check_key     TEXT NOT NULL,
                   before_status TEXT NOT NULL,
                   after_status  TEXT NOT NULL,
                   at            TIMESTAMPTZ NOT NULL,
                   finding       TEXT NOT NULL DEFAULT '')""",
            "CREATE INDEX posture_transitions_check ON posture_transitions (workspace, check_key, id)",
            """CREATE TABLE posture_scans (
                   workspace  TEXT PRIMARY KEY,
                   next_at    TIMESTAMPTZ NOT NULL,
                   claimed_by TEXT NOT NULL DEFAULT '')""",
        ),
    ),
    # Issue 19: alerts have a lifecycle (resolved by someone, assigned, notes) and escalate: a
    # subscription may name people to @mention when nobody acknowledges within `escalate_after`
    # seconds (0 = off) of `fired_at` (the start of the current firing); `escalated_at` is the last
    # re-notification, so each alert is re-notified once per period.
    Migration(
        18, "alert lifecycle and escalation",
        sqlite=(
            "ALTER TABLE alerts ADD COLUMN fired_at TEXT",
            "ALTER TABLE alerts ADD COLUMN resolved_by TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN resolved_at TEXT",
            "ALTER TABLE alerts ADD COLUMN assignee_id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN assignee_name TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN escalated_at TEXT",
            "ALTER TABLE alerts ADD COLUMN history_at TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE subscriptions ADD COLUMN escalate_after INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE subscriptions ADD COLUMN notify TEXT NOT NULL DEFAULT '[]'",
            """CREATE TABLE alert_notes (
                   id          INTEGER PRIMARY KEY AUTOINCREMENT,
                   alert_id    BIGINT NOT NULL REFERENCES alerts (id),
                   at          TEXT NOT NULL,
                   author_id   TEXT NOT NULL,
                   author_name TEXT NOT NULL,
                   body        TEXT NOT NULL)""",
            "CREATE INDEX alert_notes_alert ON alert_notes (alert_id, id)",
        ),
        postgres=(
            "ALTER TABLE alerts ADD COLUMN fired_at TIMESTAMPTZ",
            "ALTER TABLE alerts ADD COLUMN resolved_by TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN resolved_at TIMESTAMPTZ",
            "ALTER TABLE alerts ADD COLUMN assignee_id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN assignee_name TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN escalated_at TIMESTAMPTZ",
            "ALTER TABLE alerts ADD COLUMN history_at JSONB NOT NULL DEFAULT '[]'",
            "ALTER TABLE subscriptions ADD COLUMN escalate_after INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE subscriptions ADD COLUMN notify TEXT NOT NULL DEFAULT '[]'",
            """CREATE TABLE alert_notes (
                   id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                   alert_id    BIGINT NOT NULL REFERENCES alerts (id),
                   at          TIMESTAMPTZ NOT NULL,
                   author_id   TEXT NOT NULL,
                   author_name TEXT NOT NULL,
                   body        TEXT NOT NULL)""",
            "CREATE INDEX alert_notes_alert ON alert_notes (alert_id, id)",
        ),
    ),
)

_MIGRATIONS_TABLE = {
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    INTEGER PRIMARY KEY,
                     name       TEXT NOT NULL,
                     applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))""",
    "postgres": """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    INTEGER PRIMARY KEY,
                       name       TEXT NOT NULL,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
}

# ---------------------------------------------------------------- shared SQL implementation


class SqlStorage:
    """Queries and migrations shared by the SQLite and PostgreSQL storages.

    Subclasses set `dialect` and provide `open`, `close` and `run_transaction`; a feature's
    queries are methods here (or in a helper taking the storage) built on `run_transaction`.
    """

    dialect: ClassVar[str]
    ping_timeout: float = 5.0
    # The audit chain's HMAC key (MLOPSBOT_AUDIT_KEY, set by the composition root); None: the
    # public development key (adapters/storage/audit.py), which proves nothing.
    audit_key: bytes | None = None

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def run_transaction(self, work: Callable[[Transaction], Awaitable[T]], *, write: bool = True) -> T:
        """Run `await work(tx)` in one transaction: committed if it returns, rolled back if it raises.

        `write=False` lets SQLite start a deferred (read) transaction. Raises StorageUnavailable
        when the storage is not open or the database cannot be reached. One transaction runs at a
        time per storage, so `work` must use only `tx`, never this storage's other methods.
        """
        raise NotImplementedError

    async def __aenter__(self) -> SqlStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ health and schema

    async def ping(self) -> None:
        async def select_one(tx: Transaction) -> None:
            await tx.fetch("SELECT 1")

        try:
            async with asyncio.timeout(self.ping_timeout):
                await self.run_transaction(select_one, write=False)
        except TimeoutError:
            raise StorageUnavailable(f"The database did not answer within {self.ping_timeout:g} s.") from None

    async def schema_version(self) -> int:
        """The highest applied migration version (0 for an empty database)."""
        async def read(tx: Transaction) -> int:
            rows = await tx.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(rows[0][0])

        return await self.run_transaction(read, write=False)

    async def _prepare_migration(self, tx: Transaction) -> None:
        """Hook run first in the migration transaction (PostgreSQL takes its advisory lock here)."""

    async def _has_table(self, tx: Transaction, name: str) -> bool:
        rows = await tx.fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows)

    async def _migrate(self) -> None:
        """Apply the missing `MIGRATIONS`, all in one transaction."""
        async def work(tx: Transaction) -> None:
            await self._prepare_migration(tx)
            # Only DDL when something is missing, so a role without CREATE rights (see docs/changes.md,
            # "An append-only audit log in PostgreSQL") can open an up-to-date database.
            if not await self._has_table(tx, "schema_migrations"):
                await tx.execute(_MIGRATIONS_TABLE[self.dialect])
            applied = {int(version) for (version,) in await tx.fetch("SELECT version FROM schema_migrations")}
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                log.info("Applying storage migration %d (%s)", migration.version, migration.name)
                for statement in migration.statements(self.dialect):
                    await tx.execute(statement)
                await tx.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                                 (migration.version, migration.name))
            newer = applied - {migration.version for migration in MIGRATIONS}
            if newer:
                log.warning("The database has migrations this version does not know: %s", sorted(newer))

        await self.run_transaction(work)

    # ------------------------------------------------------------ conversations (one transaction each)

    async def save_conversation(self, ref: ConversationRecord) -> None:
        await self.run_transaction(lambda tx: _conversations.save_conversation(tx, ref))

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return await self.run_transaction(lambda tx: _conversations.get_conversation(tx, conversation_id),
                                          write=False)

    async def list_conversations(self, *, kind: str | None = None) -> list[ConversationRecord]:
        if kind is not None and kind not in CONVERSATION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONVERSATION_KINDS)}, not {kind!r}")
        return await self.run_transaction(lambda tx: _conversations.list_conversations(tx, kind=kind),
                                          write=False)


# ---------------------------------------------------------------- choosing an implementation

_URL_HELP = ("Use sqlite:///absolute/path/bot.db (the default, one replica) or "
             "postgresql://user@host:5432/dbname (several replicas).")


def open_storage(url: str) -> SqlStorage:
    """The storage for `url` (not yet opened: `await storage.open()`).

    "sqlite:///abs/path/bot.db" gives a SqliteStorage; "postgresql://..." (or "postgres://...",
    any libpq URI) a PostgresStorage. Anything else raises ValueError saying what to use.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValueError(f"The storage URL has no scheme. {_URL_HELP}")
    if scheme == "sqlite":
        from adapters.storage.sqlite import SqliteStorage

        path = unquote(rest.split("?", 1)[0])
        if not path.startswith("/") or path == "/":
            raise ValueError(f"A SQLite storage URL needs an absolute file path after 'sqlite://', as in "
                             f"sqlite:///var/lib/mlops-bot/bot.db (three slashes), not {url!r}.")
        return SqliteStorage("/" + path.lstrip("/"))  # "sqlite:////abs" (SQLAlchemy style) also works
    if scheme in ("postgresql", "postgres"):
        from adapters.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    # Only the scheme is echoed: the rest may hold a password.
    raise ValueError(f"Unsupported storage URL scheme '{scheme}://'. {_URL_HELP}")
