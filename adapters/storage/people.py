"""People the bot has met: a user's Entra object id and their Teams user id (`29:...`).

Cards address people by Teams id (`refresh.userIds` shows an approval card's buttons only to
eligible approvers), while roles are assigned by Entra object id; this table joins the two. The
Teams seam records the pair whenever someone writes to the bot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from adapters.storage.base import Transaction, encode_time


async def remember(tx: Transaction, object_id: str, teams_id: str, name: str, tenant_id: str, *,
                   now: datetime) -> None:
    """Insert or refresh one person."""
    await tx.execute(
        "INSERT INTO people (object_id, teams_id, name, tenant_id, seen_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (object_id) DO UPDATE SET teams_id = excluded.teams_id, name = excluded.name, "
        "tenant_id = excluded.tenant_id, seen_at = excluded.seen_at",
        (object_id, teams_id, name, tenant_id, encode_time(now)))


async def teams_ids(tx: Transaction, object_ids: Sequence[str]) -> dict[str, str]:
    """Entra object id -> Teams user id, for those of `object_ids` the bot has met."""
    return await _by_object_id(tx, object_ids, "teams_id")


async def names(tx: Transaction, object_ids: Sequence[str]) -> dict[str, str]:
    """Entra object id -> display name, for those of `object_ids` the bot has met and knows a name of."""
    return {object_id: name for object_id, name in (await _by_object_id(tx, object_ids, "name")).items() if name}


async def _by_object_id(tx: Transaction, object_ids: Sequence[str], column: str) -> dict[str, str]:
    """Entra object id -> `column` ("teams_id" or "name"), in chunks the databases accept."""
    wanted = sorted(set(object_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = await tx.fetch(f"SELECT object_id, {column} FROM people WHERE object_id IN ({marks})", chunk)
        found.update({object_id: value for object_id, value in rows})
    return found


async def by_teams_id(tx: Transaction, teams_id: str) -> tuple[str, str] | None:
    """(Entra object id, name) of the person with Teams user id `teams_id`, if the bot has met them."""
    rows = await tx.fetch("SELECT object_id, name FROM people WHERE teams_id = ? ORDER BY seen_at DESC LIMIT 1",
                          (teams_id,))
    return (rows[0][0], rows[0][1]) if rows else None


async def by_name(tx: Transaction, name: str, tenant_id: str) -> list[str]:
    """Entra object ids of the people of `tenant_id` the bot has met under the display name `name`
    (exactly; a name is not unique, so callers act only on a single match)."""
    rows = await tx.fetch("SELECT object_id FROM people WHERE name = ? AND tenant_id = ? ORDER BY object_id LIMIT 2",
                          (name, tenant_id))
    return [row[0] for row in rows]


async def met(tx: Transaction, limit: int = 500) -> list[str]:
    """Names of the people the bot has met, most recently seen first (plain-language questions
    name people: "what did Bob change")."""
    rows = await tx.fetch("SELECT name FROM people WHERE name <> '' ORDER BY seen_at DESC LIMIT ?", (limit,))
    return [row[0] for row in rows]
