"""Jobs started from chat, watched until they end: stored, so that a restart does not lose them.

    watch = await job_watches.create(tx, job_watches.NewJobWatch(...))   # when the job is started
    due = await job_watches.claim_due(tx, "replica-a", now=now, lease_seconds=300)
    await job_watches.release(tx, watch.id, "replica-a", next_check=now + timedelta(minutes=1))  # still running
    await job_watches.finish(tx, watch.id, "replica-a", outcome={...}, now=now)  # with the report's outbox item

A watch is `watching` until its next check is due; then one replica claims it (a compare-and-set:
`watching` -> `checking`, or a `checking` whose lease ran out, e.g. after a crash), looks at the
job, and either releases it with the time of the next check or marks it `done` in the same
transaction as the end report's outbox item. One job is watched at most once per conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.leases import Lease
from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, utc)

WATCHING, CHECKING, DONE = "watching", "checking", "done"
LEASE = Lease("job_watches", free=WATCHING, held=CHECKING)   # adapters.storage.leases


@dataclass(frozen=True)
class NewJobWatch:
    workspace: str
    job_name: str
    what: str                         # what started it, for the report: "Retraining of fraud-model"
    requester_name: str
    conversation_id: str
    started_at: datetime
    tenant_id: str = ""
    model: str = ""                   # retraining: the model whose new version the report names
    since_version: str = ""           # that model's latest version when the job started

    def __post_init__(self) -> None:
        object.__setattr__(self, "started_at", utc(self.started_at, "started_at"))


@dataclass(frozen=True)
class JobWatch(NewJobWatch):
    id: int = 0
    state: str = WATCHING
    next_check: datetime | None = None
    claimed_by: str = ""
    claimed_until: datetime | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None


_COLUMNS = ("id, workspace, job_name, what, requester_name, conversation_id, tenant_id, model, since_version, "
            "started_at, state, next_check, claimed_by, claimed_until, outcome, finished_at")


def _from_row(row: Sequence[Any]) -> JobWatch:
    (watch_id, workspace, job_name, what, requester_name, conversation_id, tenant_id, model, since_version,
     started_at, state, next_check, claimed_by, claimed_until, outcome, finished_at) = row
    return JobWatch(workspace=workspace, job_name=job_name, what=what, requester_name=requester_name,
                    conversation_id=conversation_id, tenant_id=tenant_id, model=model, since_version=since_version,
                    started_at=decode_time(started_at), id=int(watch_id), state=state,
                    next_check=decode_optional_time(next_check), claimed_by=claimed_by,
                    claimed_until=decode_optional_time(claimed_until), outcome=decode_json(outcome),
                    finished_at=decode_optional_time(finished_at))


async def create(tx: Transaction, watch: NewJobWatch, *, first_check: datetime) -> JobWatch | None:
    """Store the watch; None when this conversation already watches this job (a redelivered turn)."""
    rows = await tx.fetch(
        "INSERT INTO job_watches (workspace, job_name, what, requester_name, conversation_id, tenant_id, model, "
        "since_version, started_at, state, next_check) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT (workspace, job_name, conversation_id) DO NOTHING RETURNING {_COLUMNS}",
        (watch.workspace, watch.job_name, watch.what, watch.requester_name, watch.conversation_id, watch.tenant_id,
         watch.model, watch.since_version, encode_time(watch.started_at), WATCHING,
         encode_time(utc(first_check, "first_check"))))
    return _from_row(rows[0]) if rows else None


async def get(tx: Transaction, watch_id: int) -> JobWatch | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM job_watches WHERE id = ?", (watch_id,))
    return _from_row(rows[0]) if rows else None


async def claim_due(tx: Transaction, owner: str, *, now: datetime, lease_seconds: float = 300.0, limit: int = 20,
                    conversation_id: str | None = None, except_conversation: str | None = None) -> list[JobWatch]:
    """Claim the watches whose next check is due, and checks whose lease ran out; each by one owner
    only (compare-and-set). `conversation_id`: only that conversation's (the terminal chat);
    `except_conversation`: all but that one's (the bot leaves the terminal's to the terminal)."""
    where, params = "next_check <= ?", [encode_time(utc(now, "now"))]
    if conversation_id is not None:
        where += " AND conversation_id = ?"
        params.append(conversation_id)
    elif except_conversation is not None:
        where += " AND conversation_id <> ?"
        params.append(except_conversation)
    ids = await LEASE.claim_due(tx, owner, now=now, seconds=lease_seconds, where=where, params=tuple(params),
                                order="next_check, id", limit=limit)
    claimed = [await get(tx, watch_id) for watch_id in ids]
    return [w for w in claimed if w is not None]


async def release(tx: Transaction, watch_id: int, owner: str, *, next_check: datetime) -> bool:
    """The job is still running: look again at `next_check`. False when `owner` lost the claim."""
    return await LEASE.release(tx, watch_id, owner, state=WATCHING, also="next_check = ?",
                               also_params=(encode_time(utc(next_check, "next_check")),))


async def finish(tx: Transaction, watch_id: int, owner: str, *, outcome: dict[str, Any], now: datetime) -> bool:
    """The job ended (or the watch gave up): record it; False when `owner` lost the claim."""
    changed = await tx.execute(
        "UPDATE job_watches SET state = ?, outcome = ?, finished_at = ?, claimed_until = NULL "
        "WHERE id = ? AND state = ? AND claimed_by = ?",
        (DONE, encode_json(outcome), encode_time(utc(now, "now")), watch_id, CHECKING, owner))
    return changed == 1


async def open_watches(tx: Transaction, *, limit: int = 100) -> list[JobWatch]:
    """Watches not done yet, oldest first."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM job_watches WHERE state <> ? ORDER BY id LIMIT ?", (DONE, limit))
    return [_from_row(row) for row in rows]
