"""`PostgresStorage`: bot state in PostgreSQL, for several replicas behind one bot registration.

One psycopg 3 `AsyncConnection` per storage, one transaction at a time (an asyncio lock): the bot's
storage traffic is small, and a single connection keeps failure handling simple. A connection that
dropped (server restart, failover, idle kill) is replaced on the next call. A transaction is
retried (once, on a new connection) only when BEGIN itself failed on a dead connection, that is
before the work ran: a work function is never run twice, so its writes are never applied twice.
A connection lost during the work is reported as StorageUnavailable (the server rolled it back);
one lost during COMMIT likewise, with the outcome unknown: callers make such writes idempotent
(compare-and-set transitions, unique vote and dedupe keys) rather than blindly retrying them.

Schema migration runs under `pg_advisory_xact_lock`, so replicas starting together take turns.
`schema=` puts the bot's tables in their own schema (created if missing), e.g. for tests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.storage import SqlStorage
from adapters.storage.base import StorageError, StorageUnavailable, Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

# Key of the advisory lock held while migrating ("mlopsbot" in ASCII, fits a signed bigint).
MIGRATION_LOCK_KEY = 0x6D6C6F7073626F74

# libpq settings applied unless the DSN sets them: fail fast, and notice dead peers.
_CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "mlops-bot",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def to_psycopg(sql: str) -> str:
    """Rewrite qmark placeholders (`?`) as psycopg's `%s`, escaping literal `%` first."""
    return sql.replace("%", "%%").replace("?", "%s")


def quote_identifier(name: str) -> str:
    """`name` as a PostgreSQL quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


class PostgresStorage(SqlStorage):
    """Bot state in the PostgreSQL database at `dsn` (a libpq URI or key=value string)."""

    dialect = "postgres"

    def __init__(self, dsn: str, *, schema: str | None = None, ping_timeout: float = 5.0,
                 audit_key: bytes | None = None) -> None:
        self.audit_key = audit_key
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"Invalid PostgreSQL connection string: {exc}") from None
        for key, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        self._conninfo = make_conninfo("", **params)
        self.where = (f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
                      f"/{params.get('dbname', '')}")
        self.schema = schema
        self.ping_timeout = ping_timeout
        self._connection: psycopg.AsyncConnection | None = None
        self._is_open = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStorage({self.where!r}, schema={self.schema!r})"

    async def open(self) -> None:
        async with self._lock:
            self._is_open = True
            try:
                await self._connect()
            except BaseException:
                self._is_open = False
                raise
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        async with self._lock:
            self._is_open = False
            await self._discard()

    async def run_transaction(self, work: Callable[[Transaction], Awaitable[T]], *, write: bool = True) -> T:
        async with self._lock:
            for attempt in (1, 2):
                if not self._is_open:
                    raise StorageUnavailable(f"The PostgreSQL storage at {self.where} is not open.")
                connection = await self._connect()
                try:
                    await connection.execute("BEGIN")
                except psycopg.Error as exc:
                    # Nothing ran yet: the one failure worth a retry is a connection that had died
                    # while idle (server restart, failover, idle kill), found out by BEGIN.
                    broken = connection.broken or connection.closed
                    await self._discard()
                    if broken and attempt == 1:
                        log.warning("PostgreSQL connection to %s dropped (%s); retrying on a new one",
                                    self.where, exc)
                        continue
                    raise StorageUnavailable(f"PostgreSQL at {self.where}: {exc}") from exc
                except asyncio.CancelledError:
                    await self._discard()
                    raise
                # From here on the work has run: never run it again. A failure before COMMIT rolls
                # back; a failure *during* COMMIT leaves the outcome unknown, which the error says.
                committing = False
                try:
                    result = await work(_PostgresTransaction(connection, self.audit_key))
                    committing = True
                    await connection.execute("COMMIT")
                    return result
                except psycopg.Error as exc:
                    if connection.broken or connection.closed:
                        await self._discard()
                        outcome = ("whether the transaction committed is unknown" if committing
                                   else "the transaction was rolled back")
                        raise StorageUnavailable(f"Lost the connection to PostgreSQL at {self.where} "
                                                 f"({outcome}): {exc}") from exc
                    await self._rollback(connection)
                    kind = StorageUnavailable if isinstance(exc, psycopg.OperationalError) else StorageError
                    raise kind(f"PostgreSQL at {self.where}: {exc}") from exc
                except asyncio.CancelledError:
                    await self._discard()  # the protocol state is unknown: start afresh next time
                    raise
                except BaseException:
                    await self._rollback(connection)
                    raise
        raise AssertionError("unreachable")

    async def _prepare_migration(self, tx: Transaction) -> None:
        await tx.fetch("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
        if self.schema and not await tx.fetch("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.schema,)):
            await tx.execute(f"CREATE SCHEMA {quote_identifier(self.schema)}")

    async def _has_table(self, tx: Transaction, name: str) -> bool:
        rows = await tx.fetch("SELECT to_regclass(?) IS NOT NULL", (name,))
        return bool(rows[0][0])

    # ------------------------------------------------------------ connection

    async def _connect(self) -> psycopg.AsyncConnection:
        """The live connection, opening a new one if there is none or it dropped."""
        connection = self._connection
        if connection is not None and not connection.closed and not connection.broken:
            return connection
        await self._discard()
        try:
            # autocommit: run_transaction sends BEGIN/COMMIT itself. No server-side prepared
            # statements, so that transaction-mode poolers (PgBouncer) work.
            connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                               prepare_threshold=None)
        except psycopg.Error as exc:
            raise StorageUnavailable(f"Cannot connect to PostgreSQL at {self.where}: {exc}") from exc
        try:
            if self.schema:
                await connection.execute(f"SET search_path TO {quote_identifier(self.schema)}")
        except psycopg.Error as exc:
            await connection.close()
            raise StorageUnavailable(f"Cannot set up the PostgreSQL session at {self.where}: {exc}") from exc
        self._connection = connection
        return connection

    async def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # already dead; nothing more to release
                pass

    async def _rollback(self, connection: psycopg.AsyncConnection) -> None:
        try:
            await connection.execute("ROLLBACK")
        except psycopg.Error:
            await self._discard()


class _PostgresTransaction:
    """The `Transaction` handed to `run_transaction` work, on the storage's connection."""

    dialect = "postgres"

    def __init__(self, connection: psycopg.AsyncConnection, audit_key: bytes | None = None) -> None:
        self._connection = connection
        self.audit_key = audit_key

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._run(sql, params)
        return cursor.rowcount

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, last: bool = False) -> list[tuple[Any, ...]]:
        cursor = await self._run(sql, params)
        return await cursor.fetchall()

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        async with self._connection.cursor() as cursor:     # psycopg pipelines the rows: one round trip
            await cursor.executemany(to_psycopg(sql), [tuple(row) for row in rows])
            return cursor.rowcount

    async def _run(self, sql: str, params: Sequence[Any]) -> psycopg.AsyncCursor:
        if params:
            return await self._connection.execute(to_psycopg(sql), tuple(params))
        return await self._connection.execute(sql)
