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

A feature adds its tables by appending a `Migration` to `MIGRATIONS` in `adapters/storage/migrations.py`
(never editing one).

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
from typing import Awaitable, Callable, ClassVar, Protocol, TypeVar
from urllib.parse import unquote

from adapters.storage import conversations as _conversations
from adapters.storage.migrations import MIGRATIONS, MIGRATIONS_TABLE, Migration
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
                await tx.execute(MIGRATIONS_TABLE[self.dialect])
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


def open_storage(url: str, *, audit_key: bytes | None = None) -> SqlStorage:
    """The storage for `url` (not yet opened: `await storage.open()`), keying new audit records
    with `audit_key` (MLOPSBOT_AUDIT_KEY; None: the development key, adapters.storage.audit).

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
        return SqliteStorage("/" + path.lstrip("/"), audit_key=audit_key)  # "sqlite:////abs" (SQLAlchemy style) also works
    if scheme in ("postgresql", "postgres"):
        from adapters.storage.postgres import PostgresStorage

        return PostgresStorage(url, audit_key=audit_key)
    # Only the scheme is echoed: the rest may hold a password.
    raise ValueError(f"Unsupported storage URL scheme '{scheme}://'. {_URL_HELP}")
