"""The bot's own state: the `Storage` port, its value types, its errors and its schema migrations.

Two implementations share everything except connection handling:

    storage = open_storage("sqlite:///var/lib/mlops-bot/bot.db")       # default, one replica
    storage = open_storage("postgresql://bot@db.example:5432/mlopsbot")  # several replicas
    await storage.open()                      # connect, then create/migrate the schema
    await storage.save_conversation(record)   # upsert, in one transaction
    await storage.close()

`adapters.storage_sqlite.SqliteStorage` runs stdlib `sqlite3` (WAL mode) on one worker thread;
`adapters.storage_postgres.PostgresStorage` uses psycopg 3 async on one connection that is
re-opened after it drops. Both derive from `SqlStorage`, which holds the queries and the migration
runner, so a feature adds its tables by appending a `Migration` to `MIGRATIONS` and its queries
as methods built on `SqlStorage.run_transaction`.

SQL conventions: statements use qmark placeholders (`?`); `PostgresStorage` rewrites them to
psycopg's `%s` in one place (`storage_postgres.to_psycopg`). Never write a literal `?` in SQL text
(for PostgreSQL's jsonb `?` operators use `jsonb_exists()`). Times are stored in UTC; JSON is TEXT
on SQLite and JSONB on PostgreSQL.

Error tree::

    StorageError                 the database refused the statement (bug, constraint, ...)
    └── StorageUnavailable       not open, unreachable, locked or timed out; retry later
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, ClassVar, Protocol, Sequence, TypeVar
from urllib.parse import unquote

log = logging.getLogger(__name__)

T = TypeVar("T")

# ---------------------------------------------------------------- errors


class StorageError(Exception):
    """The database failed or refused an operation."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (closed, down, locked, timed out)."""


# ---------------------------------------------------------------- value types

CONVERSATION_KINDS = ("personal", "groupChat", "channel")


@dataclass(frozen=True)
class ConversationRecord:
    """Where the bot can send proactive messages: one Teams conversation.

    `reference` is the serialized Bot Framework ConversationReference (a JSON-compatible dict).
    `user_id` is the user's aadObjectId for a personal chat and "" otherwise; `team_id` and
    `channel_id` are "" outside channels. `updated_at` must be timezone-aware; it is kept in UTC.
    """

    conversation_id: str
    kind: str
    reference: dict[str, Any]
    tenant_id: str
    team_id: str
    channel_id: str
    user_id: str
    updated_at: datetime

    def __post_init__(self) -> None:
        if not self.conversation_id:
            raise ValueError("conversation_id must not be empty")
        if self.kind not in CONVERSATION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONVERSATION_KINDS)}, not {self.kind!r}")
        if not isinstance(self.reference, dict):
            raise ValueError("reference must be a dict (a serialized ConversationReference)")
        if not isinstance(self.updated_at, datetime) or self.updated_at.tzinfo is None:
            raise ValueError("updated_at must be a timezone-aware datetime")
        object.__setattr__(self, "updated_at", self.updated_at.astimezone(timezone.utc))


# ---------------------------------------------------------------- the port


class Storage(Protocol):
    """The bot's state store. Every method is a coroutine and never blocks the event loop."""

    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent; safe for concurrent replicas)."""

    async def close(self) -> None:
        """Release the connection; later calls raise StorageUnavailable until `open` again."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers (used by GET /readyz)."""

    async def save_conversation(self, ref: ConversationRecord) -> None:
        """Insert or replace the record with the same conversation_id."""

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The stored record, or None."""

    async def list_conversations(self, *, kind: str | None = None) -> list[ConversationRecord]:
        """All records (of one kind if given), ordered by conversation_id."""


class Transaction(Protocol):
    """Statements inside one `SqlStorage.run_transaction` call; qmark (`?`) placeholders."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; return all its rows as tuples."""


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

_CONVERSATION_COLUMNS = ("conversation_id, kind, reference, tenant_id, team_id, channel_id, user_id, "
                         "updated_at")


def encode_time(moment: datetime) -> str:
    """A UTC ISO 8601 string with microseconds: sorts as text on SQLite, parses on PostgreSQL."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def decode_time(value: datetime | str) -> datetime:
    """A UTC datetime from a stored value (TEXT on SQLite, TIMESTAMPTZ on PostgreSQL)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def decode_json(value: Any) -> Any:
    """A JSON value from a stored one (TEXT on SQLite, already decoded JSONB on PostgreSQL)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _conversation_from_row(row: Sequence[Any]) -> ConversationRecord:
    conversation_id, kind, reference, tenant_id, team_id, channel_id, user_id, updated_at = row
    return ConversationRecord(conversation_id=conversation_id, kind=kind, reference=decode_json(reference),
                              tenant_id=tenant_id, team_id=team_id, channel_id=channel_id,
                              user_id=user_id, updated_at=decode_time(updated_at))


class SqlStorage:
    """Queries and migrations shared by the SQLite and PostgreSQL storages.

    Subclasses set `dialect` and provide `open`, `close` and `run_transaction`; a feature's
    queries are methods here (or in a helper taking the storage) built on `run_transaction`.
    """

    dialect: ClassVar[str]
    ping_timeout: float = 5.0

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

    async def _migrate(self) -> None:
        """Apply the missing `MIGRATIONS`, all in one transaction."""
        async def work(tx: Transaction) -> None:
            await self._prepare_migration(tx)
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

    # ------------------------------------------------------------ conversations

    async def save_conversation(self, ref: ConversationRecord) -> None:
        params = (ref.conversation_id, ref.kind, json.dumps(ref.reference, ensure_ascii=False), ref.tenant_id,
                  ref.team_id, ref.channel_id, ref.user_id, encode_time(ref.updated_at))

        async def upsert(tx: Transaction) -> None:
            await tx.execute(
                f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (conversation_id) DO UPDATE SET kind = excluded.kind, "
                "reference = excluded.reference, tenant_id = excluded.tenant_id, "
                "team_id = excluded.team_id, channel_id = excluded.channel_id, "
                "user_id = excluded.user_id, updated_at = excluded.updated_at",
                params)

        await self.run_transaction(upsert)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        async def read(tx: Transaction) -> list[tuple[Any, ...]]:
            return await tx.fetch(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE conversation_id = ?",
                                  (conversation_id,))

        rows = await self.run_transaction(read, write=False)
        return _conversation_from_row(rows[0]) if rows else None

    async def list_conversations(self, *, kind: str | None = None) -> list[ConversationRecord]:
        if kind is not None and kind not in CONVERSATION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONVERSATION_KINDS)}, not {kind!r}")
        where, params = ("WHERE kind = ? ", (kind,)) if kind else ("", ())

        async def read(tx: Transaction) -> list[tuple[Any, ...]]:
            return await tx.fetch(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations {where}"
                                  "ORDER BY conversation_id", params)

        return [_conversation_from_row(row) for row in await self.run_transaction(read, write=False)]


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
        from adapters.storage_sqlite import SqliteStorage

        path = unquote(rest.split("?", 1)[0])
        if not path.startswith("/") or path == "/":
            raise ValueError(f"A SQLite storage URL needs an absolute file path after 'sqlite://', as in "
                             f"sqlite:///var/lib/mlops-bot/bot.db (three slashes), not {url!r}.")
        return SqliteStorage("/" + path.lstrip("/"))  # "sqlite:////abs" (SQLAlchemy style) also works
    if scheme in ("postgresql", "postgres"):
        from adapters.storage_postgres import PostgresStorage

        return PostgresStorage(url)
    # Only the scheme is echoed: the rest may hold a password.
    raise ValueError(f"Unsupported storage URL scheme '{scheme}://'. {_URL_HELP}")
