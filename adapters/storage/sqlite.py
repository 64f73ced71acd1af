"""`SqliteStorage`: the default storage, a SQLite file in WAL mode, for a single replica.

`sqlite3` is blocking, so the connection lives on one dedicated worker thread and every statement
is sent there (`loop.run_in_executor`); the event loop never waits on disk. An asyncio lock keeps
one transaction at a time on the connection; write transactions start with BEGIN IMMEDIATE, so
another process on the same file waits (busy timeout) instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from adapters.storage import SqlStorage
from adapters.storage.base import StorageError, StorageUnavailable, Transaction

T = TypeVar("T")

# Primary result codes meaning "try again later" rather than "this statement is wrong".
_UNAVAILABLE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
                                sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY})


class SqliteStorage(SqlStorage):
    """Bot state in the SQLite file at `path` (its directory is created if missing)."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, audit_key: bytes | None = None) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.audit_key = audit_key
        self._connection: sqlite3.Connection | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStorage({str(self.path)!r})"

    async def open(self) -> None:
        async with self._lock:
            if self._connection is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlopsbot-sqlite")
                try:
                    self._connection = await self._call(self._connect)
                except BaseException:
                    self._worker.shutdown(wait=False)
                    self._worker = None
                    raise
        await self._migrate()

    async def close(self) -> None:
        async with self._lock:
            connection, worker = self._connection, self._worker
            self._connection = self._worker = None
            if connection is not None and worker is not None:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.get_running_loop().run_in_executor(worker, connection.close)
            if worker is not None:
                worker.shutdown(wait=False)

    async def run_transaction(self, work: Callable[[Transaction], Awaitable[T]], *, write: bool = True) -> T:
        """One transaction, with as few trips to the worker thread as it needs (each costs a thread
        hand-off, and the lock makes every other transaction wait for it): BEGIN goes with the first
        statement, and a read-only transaction's COMMIT is queued on the worker without waiting for
        it (the worker is one thread, so it runs before anything sent later, and ending a read
        cannot fail for want of a lock). A transaction that ran no statement sends nothing."""
        async with self._lock:
            connection = self._connection
            if connection is None or self._worker is None:
                raise StorageUnavailable(f"The SQLite storage at {self.path} is not open.")
            tx = _SqliteTransaction(self, connection, "BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = await work(tx)
                if tx.begun:
                    if write:
                        await self._call(connection.execute, "COMMIT")
                    else:
                        self._worker.submit(_end_read, connection)
            except asyncio.CancelledError:
                # Given up (a bounded probe timed out) while a statement waits on the worker thread:
                # its BEGIN may still run there, so end the transaction right after, before anyone
                # else's (the worker is one thread: the rollback runs after what is queued).
                if self._worker is not None:
                    self._worker.submit(_rollback, connection)
                raise
            except BaseException:
                if tx.begun:
                    await self._call(_rollback, connection)
                raise
            return result

    # ------------------------------------------------------------ worker thread

    def _connect(self) -> sqlite3.Connection:
        """Runs on the worker thread, which then owns the connection."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot create the directory for {self.path}: {exc}") from exc
        # isolation_level=None: no implicit transactions; run_transaction issues BEGIN/COMMIT itself.
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            _switch_to_wal(connection, self.busy_timeout)
            connection.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            connection.close()
            raise
        return connection

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker thread; translate sqlite3 errors to StorageError."""
        if self._worker is None:
            raise StorageUnavailable(f"The SQLite storage at {self.path} is not open.")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
                raise StorageUnavailable(f"SQLite storage at {self.path}: {exc}") from exc
            raise StorageError(f"SQLite storage at {self.path}: {exc}") from exc


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switching a new file to WAL needs an exclusive lock, and SQLite may answer "database is
    locked" at once, without its busy handler, while another process does the same: retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _SqliteTransaction:
    """The `Transaction` handed to `run_transaction` work: statements go to the worker thread, the
    first one preceded by the transaction's BEGIN in the same trip."""

    dialect = "sqlite"

    def __init__(self, storage: SqliteStorage, connection: sqlite3.Connection, begin: str) -> None:
        self._storage = storage
        self._connection = connection
        self.audit_key = storage.audit_key
        self._begin = begin
        self.begun = False           # set on the worker thread once BEGIN has run
        self._alone = False          # a read ran as the transaction's only statement, without BEGIN

    def _first(self, fn: Callable[..., T], *args: Any) -> T:
        """On the worker thread: BEGIN (if not yet), then `fn`."""
        if self._alone:
            raise RuntimeError("a statement after the one marked last=True: it would not see the same snapshot")
        if not self.begun:
            self._connection.execute(self._begin)
            self.begun = True
        return fn(*args)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._storage._call(self._first, _execute, self._connection, sql, params)

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, last: bool = False) -> list[tuple[Any, ...]]:
        if last and not self.begun and self._begin == "BEGIN":
            # The first and last statement of a read: one statement is its own snapshot, so it runs
            # without BEGIN and leaves no transaction to end (one trip to the worker, not two).
            self._alone = True
            return await self._storage._call(_fetch, self._connection, sql, params)
        return await self._storage._call(self._first, _fetch, self._connection, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        return await self._storage._call(self._first, _execute_many, self._connection, sql, rows)


def _end_read(connection: sqlite3.Connection) -> None:
    """End a read-only transaction (on the worker thread; nobody waits for it)."""
    try:
        connection.execute("COMMIT")
    except sqlite3.Error:
        _rollback(connection)


def _execute(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return connection.execute(sql, tuple(params)).rowcount


def _execute_many(connection: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    return connection.executemany(sql, [tuple(row) for row in rows]).rowcount


def _fetch(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return connection.execute(sql, tuple(params)).fetchall()


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
