"""Long operations in flight (a traffic shift Azure ML is applying), so that their outcome is
reported even when the process that started them stops.

    op = await operations.create(tx, operations.NewOperation(owner="replica-a", change={...}, ...))
    await operations.set_ack(tx, op.id, activity_id)          # where the "⏳ ..." message landed
    if await operations.finish(tx, op.id, outcome={"text": "✅ ...", "ok": True}, now=now):
        ... audit the outcome, edit the acknowledgement through the outbox ...
    await operations.mark_posted(tx, op.id)

`finish` is a compare-and-set (pending -> done): of the process that waited for the operation and a
process that re-checked its resource after a restart, exactly one reports it. `posted` says that
the outcome has been put in the outbox (as an edit of the acknowledgement, or a new message).

The gate writes the operation *before* it calls Azure, in the transaction that moves its request
to `executing` (the intent), so a process killed at any point leaves a row to settle. A process
that settles operations others left behind first `claim`s each one (a compare-and-set with a
lease), so that of several replicas starting together one re-checks it. An approval request has
at most one operation (a unique index): `adopt` gives one, once, to a request an older version
left `executing` without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.leases import Lease
from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, for_update, utc)

PENDING, DONE = "pending", "done"
LEASE = Lease("pending_operations", keep_state=PENDING)    # adapters.storage.leases


@dataclass(frozen=True)
class NewOperation:
    owner: str                          # the process waiting for it
    change: dict[str, Any]              # the gate's Change, as JSON
    notes: dict[str, Any]               # what the gate's preparers read before it (JSON)
    actor_id: str
    actor_name: str
    tenant_id: str
    conversation_id: str
    activity_id: str
    started_at: datetime
    approval_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "started_at", utc(self.started_at, "started_at"))


@dataclass(frozen=True)
class PendingOperation(NewOperation):
    id: int = 0
    state: str = PENDING
    outcome: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None
    ack_activity_id: str = ""
    posted: bool = False
    claimed_by: str = ""                # the process settling it after a restart (see `claim`)
    claimed_until: datetime | None = None


_COLUMNS = ("id, owner, change, notes, approval_id, actor_id, actor_name, tenant_id, conversation_id, activity_id, "
            "started_at, state, outcome, finished_at, ack_activity_id, posted, claimed_by, claimed_until")


def _from_row(row: Sequence[Any]) -> PendingOperation:
    (op_id, owner, change, notes, approval_id, actor_id, actor_name, tenant_id, conversation_id, activity_id,
     started_at, state, outcome, finished_at, ack_activity_id, posted, claimed_by, claimed_until) = row
    return PendingOperation(owner=owner, change=decode_json(change), notes=decode_json(notes), actor_id=actor_id,
                            actor_name=actor_name, tenant_id=tenant_id, conversation_id=conversation_id,
                            activity_id=activity_id, started_at=decode_time(started_at),
                            approval_id=int(approval_id) if approval_id is not None else None, id=int(op_id),
                            state=state, outcome=decode_json(outcome), finished_at=decode_optional_time(finished_at),
                            ack_activity_id=ack_activity_id, posted=bool(posted), claimed_by=claimed_by,
                            claimed_until=decode_optional_time(claimed_until))


async def create(tx: Transaction, op: NewOperation) -> PendingOperation:
    rows = await tx.fetch(
        "INSERT INTO pending_operations (owner, change, notes, approval_id, actor_id, actor_name, tenant_id, "
        "conversation_id, activity_id, started_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"RETURNING {_COLUMNS}",
        (op.owner, encode_json(op.change), encode_json(op.notes), op.approval_id, op.actor_id, op.actor_name,
         op.tenant_id, op.conversation_id, op.activity_id, encode_time(op.started_at), PENDING))
    return _from_row(rows[0])


async def adopt(tx: Transaction, op: NewOperation) -> PendingOperation | None:
    """Store an operation for a request that has none (left `executing` by an older version);
    None when it has one already (another replica adopted it first)."""
    rows = await tx.fetch(
        "INSERT INTO pending_operations (owner, change, notes, approval_id, actor_id, actor_name, tenant_id, "
        "conversation_id, activity_id, started_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT (approval_id) DO NOTHING RETURNING {_COLUMNS}",
        (op.owner, encode_json(op.change), encode_json(op.notes), op.approval_id, op.actor_id, op.actor_name,
         op.tenant_id, op.conversation_id, op.activity_id, encode_time(op.started_at), PENDING))
    return _from_row(rows[0]) if rows else None


async def get(tx: Transaction, op_id: int, *, lock: bool = False) -> PendingOperation | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM pending_operations WHERE id = ?{for_update(tx) if lock else ''}",
                          (op_id,))
    return _from_row(rows[0]) if rows else None


async def finish(tx: Transaction, op_id: int, *, outcome: dict[str, Any], now: datetime) -> bool:
    """pending -> done with its outcome; False when it was already reported."""
    changed = await tx.execute("UPDATE pending_operations SET state = ?, outcome = ?, finished_at = ? "
                               "WHERE id = ? AND state = ?",
                               (DONE, encode_json(outcome), encode_time(utc(now, "now")), op_id, PENDING))
    return changed == 1


async def set_ack(tx: Transaction, op_id: int, activity_id: str) -> PendingOperation | None:
    await tx.execute("UPDATE pending_operations SET ack_activity_id = ? WHERE id = ?", (activity_id, op_id))
    return await get(tx, op_id)


async def mark_posted(tx: Transaction, op_id: int) -> bool:
    changed = await tx.execute("UPDATE pending_operations SET posted = ? WHERE id = ? AND posted = ?",
                               (True, op_id, False))
    return changed == 1


async def unfinished(tx: Transaction, *, not_owned_by: str) -> list[PendingOperation]:
    """Every pending operation another process started (oldest first)."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM pending_operations WHERE state = ? AND owner <> ? ORDER BY id",
                          (PENDING, not_owned_by))
    return [_from_row(row) for row in rows]


async def claim(tx: Transaction, op_id: int, owner: str, *, now: datetime, lease_seconds: float) -> bool:
    """Claim pending operation `op_id` for `owner` to settle it, unless another process holds an
    unexpired claim on it; True for the one caller that wins."""
    return await LEASE.take(tx, op_id, owner, now=now, seconds=lease_seconds)


async def release(tx: Transaction, op_id: int, owner: str) -> bool:
    """Give up `owner`'s claim (the operation is still in progress: look again later)."""
    return await LEASE.release(tx, op_id, owner)


async def executing_without_operation(tx: Transaction, *, updated_before: datetime) -> list[int]:
    """Approval requests `executing` since before `updated_before` that have no operation."""
    rows = await tx.fetch("SELECT id FROM approvals WHERE state = ? AND updated_at <= ? AND NOT EXISTS "
                          "(SELECT 1 FROM pending_operations p WHERE p.approval_id = approvals.id) ORDER BY id",
                          ("executing", encode_time(utc(updated_before, "updated_before"))))
    return [int(row[0]) for row in rows]


async def unreported(tx: Transaction, *, not_owned_by: str, started_before: datetime) -> list[PendingOperation]:
    """Operations another process started before `started_before` that are still pending."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM pending_operations WHERE state = ? AND owner <> ? "
                          "AND started_at <= ? ORDER BY id", (PENDING, not_owned_by,
                                                              encode_time(utc(started_before, "started_before"))))
    return [_from_row(row) for row in rows]


async def done_unposted(tx: Transaction, *, finished_before: datetime) -> list[PendingOperation]:
    """Reported operations whose outcome was never posted (their acknowledgement never landed)."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM pending_operations WHERE state = ? AND posted = ? "
                          "AND finished_at <= ? ORDER BY id", (DONE, False,
                                                               encode_time(utc(finished_before, "finished_before"))))
    return [_from_row(row) for row in rows]
