"""Digest schedules (one per conversation) and what each conversation's last digest saw.

    await digests.save(tx, DigestSchedule(conversation_id, cron="0 9 * * 1-5", time_zone="Europe/Berlin",
                                          next_run=first, ...))
    await digests.get(tx, conversation_id)
    await digests.due(tx, now)                                  # schedules whose next_run has come
    won = await digests.claim(tx, conversation_id, expected=schedule.next_run, next_run=later, now=now)
    await digests.remove(tx, conversation_id)
    await digests.remember(tx, conversation_id, workspace, snapshot, now) / digests.snapshot(tx, ...)

`claim` is the compare-and-set that makes a due digest go out once however many replicas look at
it: `UPDATE ... WHERE conversation_id = ? AND next_run = ?` moves next_run on, and only the
transaction whose update changed a row sends the digest (in the same transaction, via the outbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, utc)


@dataclass(frozen=True)
class DigestSchedule:
    conversation_id: str
    cron: str
    time_zone: str
    next_run: datetime               # when it is due: the cron's fire time plus the schedule's jitter
    workspace: str = ""
    tenant_id: str = ""
    created_by_id: str = ""
    created_by_name: str = ""
    created_at: datetime | None = None
    last_run: datetime | None = None


_COLUMNS = ("conversation_id, tenant_id, workspace, cron, time_zone, next_run, last_run, created_by_id, "
            "created_by_name, created_at")


def _from_row(row: Sequence[Any]) -> DigestSchedule:
    conversation_id, tenant_id, workspace, cron, zone, next_run, last_run, by_id, by_name, created_at = row
    return DigestSchedule(conversation_id=conversation_id, cron=cron, time_zone=zone, next_run=decode_time(next_run),
                          workspace=workspace, tenant_id=tenant_id, created_by_id=by_id, created_by_name=by_name,
                          created_at=decode_optional_time(created_at), last_run=decode_optional_time(last_run))


async def save(tx: Transaction, schedule: DigestSchedule, now: datetime) -> None:
    """Insert or replace the conversation's schedule (its last_run is kept when replacing)."""
    if not schedule.conversation_id or not schedule.cron or not schedule.time_zone:
        raise ValueError("conversation_id, cron and time_zone must not be empty")
    await tx.execute(
        f"INSERT INTO digest_schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) "
        "ON CONFLICT (conversation_id) DO UPDATE SET tenant_id = excluded.tenant_id, "
        "workspace = excluded.workspace, cron = excluded.cron, time_zone = excluded.time_zone, "
        "next_run = excluded.next_run, created_by_id = excluded.created_by_id, "
        "created_by_name = excluded.created_by_name, created_at = excluded.created_at",
        (schedule.conversation_id, schedule.tenant_id, schedule.workspace, schedule.cron, schedule.time_zone,
         encode_time(utc(schedule.next_run, "next_run")), schedule.created_by_id, schedule.created_by_name,
         encode_time(utc(now, "now"))))


async def get(tx: Transaction, conversation_id: str) -> DigestSchedule | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM digest_schedules WHERE conversation_id = ?", (conversation_id,))
    return _from_row(rows[0]) if rows else None


async def due(tx: Transaction, now: datetime, *, limit: int = 50) -> list[DigestSchedule]:
    """Schedules whose next_run is at or before `now`, the longest overdue first."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM digest_schedules WHERE next_run <= ? ORDER BY next_run, "
                          "conversation_id LIMIT ?", (encode_time(utc(now, "now")), max(0, int(limit))))
    return [_from_row(row) for row in rows]


async def next_due(tx: Transaction) -> datetime | None:
    """The earliest next_run of any schedule (the loop sleeps until then)."""
    rows = await tx.fetch("SELECT MIN(next_run) FROM digest_schedules")
    return decode_time(rows[0][0]) if rows and rows[0][0] is not None else None


async def claim(tx: Transaction, conversation_id: str, *, expected: datetime, next_run: datetime,
                now: datetime) -> bool:
    """Move the schedule's next_run from `expected` to `next_run` (and last_run to `now`); True when
    this transaction did it, False when another replica (or a change of the schedule) came first."""
    changed = await tx.execute(
        "UPDATE digest_schedules SET next_run = ?, last_run = ? WHERE conversation_id = ? AND next_run = ?",
        (encode_time(utc(next_run, "next_run")), encode_time(utc(now, "now")), conversation_id,
         encode_time(utc(expected, "expected"))))
    return changed == 1


async def remove(tx: Transaction, conversation_id: str) -> DigestSchedule | None:
    rows = await tx.fetch(f"DELETE FROM digest_schedules WHERE conversation_id = ? RETURNING {_COLUMNS}",
                          (conversation_id,))
    return _from_row(rows[0]) if rows else None


async def remember(tx: Transaction, conversation_id: str, workspace: str, snapshot: dict[str, Any],
                   now: datetime) -> None:
    """Keep what this conversation's digest of `workspace` saw, for the next one to compare with."""
    await tx.execute(
        "INSERT INTO digest_snapshots (conversation_id, workspace, taken_at, snapshot) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (conversation_id, workspace) DO UPDATE SET taken_at = excluded.taken_at, "
        "snapshot = excluded.snapshot",
        (conversation_id, workspace, encode_time(utc(now, "now")), encode_json(snapshot)))


async def snapshot(tx: Transaction, conversation_id: str, workspace: str) -> tuple[datetime, dict[str, Any]] | None:
    """(when, what) the last digest of `workspace` in this conversation saw, or None."""
    rows = await tx.fetch("SELECT taken_at, snapshot FROM digest_snapshots WHERE conversation_id = ? AND workspace = ?",
                          (conversation_id, workspace))
    return (decode_time(rows[0][0]), decode_json(rows[0][1])) if rows else None
