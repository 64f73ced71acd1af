"""Traffic history: every split the bot applied to an online endpoint, and splits changed outside it.

    entry = await traffic_history.add(tx, traffic_history.NewEntry(workspace="ml-prod", endpoint="fraud-api",
                                      at=now, action="traffic", before={"blue": 90, "green": 10},
                                      after={"green": 100}, actor_id=..., actor_name=..., approval_id=3))
    entries = await traffic_history.for_endpoint(tx, "ml-prod", "fraud-api")   # newest first

The bot writes an entry in the transaction that audits the change's success (commands/resources/rollout.py),
so the history and the audit trail never disagree. `source` is "bot" for what the bot applied and
"outside" for a split found changed by someone else (the portal, the CLI, a pipeline) when the bot
next read the endpoint. Splits keep only deployments with live traffic (0 % and absent are the
same in Azure ML), so comparing two splits is comparing two dicts.

Replicas reading the same endpoint at once record an outside change once: on PostgreSQL
`note_outside_change` first takes a transaction-scoped advisory lock on the endpoint (SQLite's
write transactions already exclude each other). Like any row lock, take it before the audit head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_json, decode_time, encode_json, encode_time, utc

BOT, OUTSIDE = "bot", "outside"


def live(split: dict[str, Any]) -> dict[str, int]:
    """The deployments with live traffic, in a stable order."""
    return {name: int(percent) for name, percent in sorted(split.items()) if int(percent)}


@dataclass(frozen=True)
class NewEntry:
    workspace: str
    endpoint: str
    at: datetime
    action: str                   # traffic | canary | rollback | outside
    before: dict[str, int]
    after: dict[str, int]
    actor_id: str
    actor_name: str
    approval_id: int | None = None
    reason: str = ""
    source: str = BOT

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        object.__setattr__(self, "before", live(self.before))
        object.__setattr__(self, "after", live(self.after))
        if self.source not in (BOT, OUTSIDE):
            raise ValueError(f"source must be {BOT!r} or {OUTSIDE!r}")


@dataclass(frozen=True)
class Entry(NewEntry):
    id: int = 0


_COLUMNS = ("id, workspace, endpoint, at, action, source, before_split, after_split, actor_id, actor_name, "
            "approval_id, reason")


def _from_row(row: Sequence[Any]) -> Entry:
    (entry_id, workspace, endpoint, at, action, source, before, after, actor_id, actor_name, approval_id,
     reason) = row
    return Entry(workspace=workspace, endpoint=endpoint, at=decode_time(at), action=action,
                 before=decode_json(before), after=decode_json(after), actor_id=actor_id, actor_name=actor_name,
                 approval_id=int(approval_id) if approval_id is not None else None, reason=reason, source=source,
                 id=int(entry_id))


async def add(tx: Transaction, entry: NewEntry) -> Entry:
    rows = await tx.fetch(
        "INSERT INTO traffic_history (workspace, endpoint, at, action, source, before_split, after_split, "
        f"actor_id, actor_name, approval_id, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (entry.workspace, entry.endpoint, encode_time(entry.at), entry.action, entry.source,
         encode_json(entry.before), encode_json(entry.after), entry.actor_id, entry.actor_name, entry.approval_id,
         entry.reason))
    return _from_row(rows[0])


async def for_endpoint(tx: Transaction, workspace: str, endpoint: str, *, limit: int = 50) -> list[Entry]:
    """The endpoint's entries, newest first."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM traffic_history WHERE workspace = ? AND endpoint = ? "
                          "ORDER BY id DESC LIMIT ?", (workspace, endpoint, limit))
    return [_from_row(row) for row in rows]


async def get(tx: Transaction, entry_id: int) -> Entry | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM traffic_history WHERE id = ?", (entry_id,))
    return _from_row(rows[0]) if rows else None


async def latest(tx: Transaction, workspace: str, endpoint: str) -> Entry | None:
    found = await for_endpoint(tx, workspace, endpoint, limit=1)
    return found[0] if found else None


async def note_outside_change(tx: Transaction, workspace: str, endpoint: str, seen: dict[str, Any],
                              now: datetime) -> Entry | None:
    """Record that the live split `seen` differs from the last recorded one (changed outside the bot).

    Nothing is recorded when the endpoint has no history yet (there is nothing to differ from) or
    when the split is the recorded one. Returns the new entry, if any."""
    if tx.dialect == "postgres":
        await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", (f"traffic_history:{workspace}/{endpoint}",))
    last = await latest(tx, workspace, endpoint)
    if last is None or last.after == live(seen):
        return None
    return await add(tx, NewEntry(workspace=workspace, endpoint=endpoint, at=now, action="outside",
                                  before=last.after, after=live(seen), actor_id="", actor_name="outside the bot",
                                  source=OUTSIDE))
