"""Watches after a traffic change: stored, so that a restart does not lose them.

    watch = await watches.create(tx, watches.NewWatch(...))          # with the change's success record
    due = await watches.claim_due(tx, "replica-a", started_before=now - window, now=now, lease_seconds=120)
    await watches.finish(tx, watch.id, "replica-a", verdict={...}, now=now)

A watch is `watching` until its window has passed; then one replica claims it (a compare-and-set:
`watching` -> `evaluating`, or an `evaluating` whose lease ran out, e.g. after a crash), evaluates
it and marks it `done` with its verdict in the same transaction as the verdict card's outbox item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.leases import Lease
from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, utc)

WATCHING, EVALUATING, DONE = "watching", "evaluating", "done"
LEASE = Lease("watches", free=WATCHING, held=EVALUATING)   # adapters.storage.leases


@dataclass(frozen=True)
class NewWatch:
    workspace: str
    endpoint: str
    action: str                       # the change watched: traffic | canary | rollback
    history_id: int                   # its traffic history entry
    started_at: datetime
    baseline: dict[str, Any]          # figures before the change (see commands.changes.verdicts)
    auto_rollback: bool = False
    approval_id: int | None = None
    conversation_id: str = ""
    tenant_id: str = ""
    requester_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "started_at", utc(self.started_at, "started_at"))


@dataclass(frozen=True)
class Watch(NewWatch):
    id: int = 0
    state: str = WATCHING
    claimed_by: str = ""
    claimed_until: datetime | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None


_COLUMNS = ("id, workspace, endpoint, action, history_id, approval_id, baseline, auto_rollback, conversation_id, "
            "tenant_id, requester_name, started_at, state, claimed_by, claimed_until, verdict, finished_at")


def _from_row(row: Sequence[Any]) -> Watch:
    (watch_id, workspace, endpoint, action, history_id, approval_id, baseline, auto_rollback, conversation_id,
     tenant_id, requester_name, started_at, state, claimed_by, claimed_until, verdict, finished_at) = row
    return Watch(workspace=workspace, endpoint=endpoint, action=action, history_id=int(history_id),
                 approval_id=int(approval_id) if approval_id is not None else None, baseline=decode_json(baseline),
                 auto_rollback=bool(auto_rollback), conversation_id=conversation_id, tenant_id=tenant_id,
                 requester_name=requester_name, started_at=decode_time(started_at), id=int(watch_id), state=state,
                 claimed_by=claimed_by, claimed_until=decode_optional_time(claimed_until),
                 verdict=decode_json(verdict), finished_at=decode_optional_time(finished_at))


async def create(tx: Transaction, watch: NewWatch) -> Watch:
    rows = await tx.fetch(
        "INSERT INTO watches (workspace, endpoint, action, history_id, approval_id, baseline, auto_rollback, "
        "conversation_id, tenant_id, requester_name, started_at, state) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (watch.workspace, watch.endpoint, watch.action, watch.history_id, watch.approval_id,
         encode_json(watch.baseline), watch.auto_rollback if tx.dialect == "postgres" else int(watch.auto_rollback),
         watch.conversation_id, watch.tenant_id, watch.requester_name, encode_time(watch.started_at), WATCHING))
    return _from_row(rows[0])


async def get(tx: Transaction, watch_id: int) -> Watch | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM watches WHERE id = ?", (watch_id,))
    return _from_row(rows[0]) if rows else None


async def claim_due(tx: Transaction, owner: str, *, started_before: datetime, now: datetime,
                    lease_seconds: float = 120.0, limit: int = 10) -> list[Watch]:
    """Claim watches whose window has passed (started at or before `started_before`), and
    evaluations whose lease ran out. Each is claimed by one owner only (compare-and-set)."""
    ids = await LEASE.claim_due(tx, owner, now=now, seconds=lease_seconds, where="started_at <= ?",
                                params=(encode_time(utc(started_before, "started_before")),),
                                order="started_at, id", limit=limit)
    claimed = [await get(tx, watch_id) for watch_id in ids]
    return [w for w in claimed if w is not None]


async def finish(tx: Transaction, watch_id: int, owner: str, *, verdict: dict[str, Any], now: datetime) -> bool:
    """Record the verdict; False when `owner` no longer holds the claim (another replica took over)."""
    changed = await tx.execute(
        "UPDATE watches SET state = ?, verdict = ?, finished_at = ?, claimed_until = NULL "
        "WHERE id = ? AND state = ? AND claimed_by = ?",
        (DONE, encode_json(verdict), encode_time(utc(now, "now")), watch_id, EVALUATING, owner))
    return changed == 1


async def for_endpoint(tx: Transaction, workspace: str, endpoint: str, *, limit: int = 20) -> list[Watch]:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM watches WHERE workspace = ? AND endpoint = ? "
                          "ORDER BY id DESC LIMIT ?", (workspace, endpoint, limit))
    return [_from_row(row) for row in rows]


async def next_due(tx: Transaction) -> datetime | None:
    """When the oldest open watch started (the loop adds the window to know when to wake)."""
    rows = await tx.fetch("SELECT MIN(started_at) FROM watches WHERE state <> ?", (DONE,))
    return decode_optional_time(rows[0][0]) if rows and rows[0][0] is not None else None
