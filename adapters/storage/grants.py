"""Role grants made by admins in chat (`grant`, `revoke`, `roles`): one role per user.

Repository functions take the open `Transaction`. Roles from the environment
(MLOPSBOT_ADMINS, ...) are not stored here; the role book combines both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_time, encode_time, for_update, utc


@dataclass(frozen=True)
class Grant:
    """`user_id` (Entra object id) holds `role`, granted by `granted_by_*` at `granted_at`."""

    user_id: str
    user_name: str
    role: str
    granted_by_id: str
    granted_by_name: str
    granted_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "granted_at", utc(self.granted_at, "granted_at"))
        if not self.user_id or not self.role:
            raise ValueError("user_id and role must not be empty")


_COLUMNS = "user_id, user_name, role, granted_by_id, granted_by_name, granted_at"


def _from_row(row: Sequence[Any]) -> Grant:
    user_id, user_name, role, granted_by_id, granted_by_name, granted_at = row
    return Grant(user_id=user_id, user_name=user_name, role=role, granted_by_id=granted_by_id,
                 granted_by_name=granted_by_name, granted_at=decode_time(granted_at))


async def put_grant(tx: Transaction, grant: Grant) -> Grant | None:
    """Give `grant.user_id` the role (replacing any earlier grant); return the previous grant."""
    values = (grant.user_id, grant.user_name, grant.role, grant.granted_by_id, grant.granted_by_name,
              encode_time(grant.granted_at))
    while True:
        previous = await get_grant(tx, grant.user_id, lock=True)
        if previous is not None:
            await tx.execute("UPDATE role_grants SET user_name = ?, role = ?, granted_by_id = ?, "
                             "granted_by_name = ?, granted_at = ? WHERE user_id = ?", (*values[1:], grant.user_id))
            return previous
        inserted = await tx.execute(f"INSERT INTO role_grants ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                                    "ON CONFLICT (user_id) DO NOTHING", values)
        if inserted == 1:
            return None
        # Another replica inserted the same user meanwhile (PostgreSQL): lock its row and update it.


async def remove_grant(tx: Transaction, user_id: str) -> Grant | None:
    """Remove the user's grant; return what was removed (None when there was none)."""
    rows = await tx.fetch(f"DELETE FROM role_grants WHERE user_id = ? RETURNING {_COLUMNS}", (user_id,))
    return _from_row(rows[0]) if rows else None


async def get_grant(tx: Transaction, user_id: str, *, lock: bool = False) -> Grant | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM role_grants WHERE user_id = ?"
                          f"{for_update(tx) if lock else ''}", (user_id,))
    return _from_row(rows[0]) if rows else None


async def list_grants(tx: Transaction) -> list[Grant]:
    """Every grant, by user name (case-insensitive), then user id."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM role_grants ORDER BY LOWER(user_name), user_name, user_id")
    return [_from_row(row) for row in rows]


async def any_grant(tx: Transaction) -> bool:
    """True when at least one role is granted (development mode stops making everyone Admin)."""
    return bool(await tx.fetch("SELECT 1 FROM role_grants LIMIT 1"))


async def role_lookup(tx: Transaction, user_id: str) -> tuple[str | None, bool]:
    """The role granted to `user_id` (None: none) and whether any role is granted at all, in one
    statement: every turn asks, and each statement is a trip to the storage thread (SQLite). It is
    the last statement of its transaction (`last=True`: on SQLite a read needs no BEGIN/COMMIT then)."""
    rows = await tx.fetch("SELECT (SELECT role FROM role_grants WHERE user_id = ?), "
                          "EXISTS (SELECT 1 FROM role_grants)", (user_id,), last=True)
    role, granted = rows[0]
    return role, bool(granted)
