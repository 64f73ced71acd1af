"""What every storage module shares: the errors, the `Transaction` seam and the value codecs.

This module imports nothing from the rest of the package, so that the package's `__init__`, the
two implementations and the table modules can all build on it without import circles.

Error tree::

    StorageError                 the database refused the statement (bug, constraint, ...)
    └── StorageUnavailable       not open, unreachable, locked or timed out; retry later
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

# ---------------------------------------------------------------- errors


class StorageError(Exception):
    """The database failed or refused an operation."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (closed, down, locked, timed out)."""


# ---------------------------------------------------------------- the transaction seam


class Transaction(Protocol):
    """Statements inside one `SqlStorage.run_transaction` call; qmark (`?`) placeholders.

    `dialect` is "sqlite" or "postgres", for the few statements that differ (row locks);
    `audit_key` the storage's audit chain key (None: the public development key).
    """

    dialect: str
    audit_key: bytes | None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, last: bool = False) -> list[tuple[Any, ...]]:
        """Run a query (or a statement with RETURNING); return all its rows as tuples. `last`: the
        work runs no statement after this one (a read-only transaction whose only statement it is
        may then skip BEGIN and COMMIT; a statement sent after it is an error)."""

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement once per row of parameters, in one trip to the database; return the
        number of rows changed in all. For writes whose count grows with the workspace (a posture
        line per endpoint): one trip, not one per row."""


def for_update(tx: Transaction, *, skip_locked: bool = False) -> str:
    """The row-lock clause for a SELECT: PostgreSQL locks rows; SQLite needs none because its write
    transactions start with BEGIN IMMEDIATE and so already exclude every other writer."""
    if tx.dialect != "postgres":
        return ""
    return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


# ---------------------------------------------------------------- codecs


def encode_time(moment: datetime) -> str:
    """A UTC ISO 8601 string with microseconds: sorts as text on SQLite, parses on PostgreSQL."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def decode_time(value: datetime | str) -> datetime:
    """A UTC datetime from a stored value (TEXT on SQLite, TIMESTAMPTZ on PostgreSQL)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def decode_optional_time(value: datetime | str | None) -> datetime | None:
    return None if value is None else decode_time(value)


def encode_json(value: Any) -> str:
    """JSON text for a stored value (NaN and infinities are refused: JSONB cannot hold them)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)


def decode_json(value: Any) -> Any:
    """A JSON value from a stored one (TEXT on SQLite, already decoded JSONB on PostgreSQL)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def utc(moment: datetime, name: str) -> datetime:
    """`moment` in UTC; ValueError naming the field when it is naive, not a datetime, or has no UTC
    form (0001-01-01T00:00:00+14:00 is still year 0 in UTC; astimezone raises OverflowError)."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{name} is outside the years 1 to 9999 in UTC") from None
