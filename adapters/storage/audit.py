"""The audit trail: an append-only, hash-chained log. Repository functions take the open `Transaction`.

Each record carries `seq` (1, 2, 3, ...), `prev_hash` (the previous record's hash, "0" * 64 for the
first) and `hash` = SHA-256 of its canonical encoding (`AuditRecord.canonical`: every field except
`hash`, as JSON with sorted keys, no whitespace, UTF-8). Editing any field breaks that record's
hash; removing or inserting one breaks the links or the numbering; cutting the tail disagrees with
the chain head (`audit_head`, one row), which every append updates under a lock:

- SQLite: write transactions start with BEGIN IMMEDIATE, so appenders already take turns;
- PostgreSQL: `SELECT ... FROM audit_head WHERE id = 1 FOR UPDATE` waits for the other appender.

So appends from several replicas keep one linear chain, and an append commits together with the
state change it records (same transaction) or not at all. No code path updates or deletes an
audit row (see the README for making that true at the database level too). `verify` recomputes
everything from the stored rows and names the first record at fault.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_time, encode_json, encode_time, for_update, utc

GENESIS_HASH = "0" * 64
_PAGE = 1000


@dataclass(frozen=True)
class AuditEntry:
    """What happened, as a caller records it (the chain fields are added by `append`)."""

    at: datetime
    event: str
    actor_id: str
    actor_name: str
    actor_upn: str = ""
    tenant_id: str = ""
    action: str = ""
    workspace: str = ""
    target: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    approval_id: int | None = None
    outcome: str = ""
    activity_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        if not self.event:
            raise ValueError("event must not be empty")
        for name in ("parameters", "before", "after", "detail"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict")


@dataclass(frozen=True)
class AuditRecord(AuditEntry):
    """A stored entry with its place in the chain."""

    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    def canonical(self) -> bytes:
        """The bytes the hash covers: every field but `hash` as compact JSON with sorted keys."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hash"}
        values["at"] = encode_time(self.at)
        return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


@dataclass(frozen=True)
class Verification:
    """The outcome of `verify`: ok, how many records were checked, and the first one at fault."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str


_ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry))
_COLUMN = {name: name for name in _ENTRY_FIELDS} | {"before": "before_state", "after": "after_state"}
_JSON_FIELDS = ("parameters", "before", "after", "detail")
_COLUMNS = ", ".join([_COLUMN[name] for name in _ENTRY_FIELDS] + ["seq", "prev_hash", "hash"])


def _from_row(row: Sequence[Any]) -> AuditRecord:
    values: dict[str, Any] = dict(zip(_ENTRY_FIELDS, row))
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    values["at"] = decode_time(values["at"])
    if values["approval_id"] is not None:
        values["approval_id"] = int(values["approval_id"])
    seq, prev_hash, hash_ = row[len(_ENTRY_FIELDS):]
    return AuditRecord(**values, seq=int(seq), prev_hash=prev_hash, hash=hash_)


# ---------------------------------------------------------------- repository functions


async def append(tx: Transaction, entry: AuditEntry) -> AuditRecord:
    """Add `entry` at the end of the chain (locking the chain head until the transaction ends)."""
    head = await tx.fetch(f"SELECT seq, hash FROM audit_head WHERE id = 1{for_update(tx)}")
    head_seq, head_hash = int(head[0][0]), head[0][1]
    record = AuditRecord(**{name: getattr(entry, name) for name in _ENTRY_FIELDS},
                         seq=head_seq + 1, prev_hash=head_hash)
    record = AuditRecord(**{**_values(record), "hash": record.computed_hash()})
    stored = [_stored(name, getattr(record, name)) for name in _ENTRY_FIELDS]
    await tx.execute(f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join('?' for _ in range(len(stored) + 3))})",
                     (*stored, record.seq, record.prev_hash, record.hash))
    changed = await tx.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1 AND seq = ?",
                               (record.seq, record.hash, head_seq))
    if changed != 1:  # cannot happen under the head lock; refuse rather than fork the chain
        raise RuntimeError("The audit chain head moved during an append")
    return record


def _values(record: AuditRecord) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _stored(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return encode_json(value)
    if name == "at":
        return encode_time(value)
    return value


async def query(tx: Transaction, *, since: datetime | None = None, actor: str | None = None,
                target: str | None = None, action: str | None = None, limit: int = 50) -> list[AuditRecord]:
    """Records matching every given filter, newest first (at most `limit`).

    `actor` matches the actor's id, name or UPN (case-insensitive substring), `target` is a
    case-insensitive substring of the target, `action` equals the action or the event.
    """
    where, params = [], []
    if since is not None:
        where.append("at >= ?")
        params.append(encode_time(utc(since, "since")))
    if actor:
        where.append("(LOWER(actor_id) LIKE ? ESCAPE '\\' OR LOWER(actor_name) LIKE ? ESCAPE '\\' "
                     "OR LOWER(actor_upn) LIKE ? ESCAPE '\\')")
        params.extend([_contains(actor)] * 3)
    if target:
        where.append("LOWER(target) LIKE ? ESCAPE '\\'")
        params.append(_contains(target))
    if action:
        where.append("(action = ? OR event = ?)")
        params.extend((action, action))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM audit_log{clause} ORDER BY seq DESC LIMIT ?",
                          (*params, max(0, int(limit))))
    return [_from_row(row) for row in rows]


async def requested_by_activity(tx: Transaction, activity_id: str) -> int | None:
    """The approval request the activity `activity_id` opened, if it opened one (a retried call)."""
    rows = await tx.fetch("SELECT approval_id FROM audit_log WHERE activity_id = ? AND event = ? "
                          "AND approval_id IS NOT NULL ORDER BY seq LIMIT 1", (activity_id, "requested"))
    return int(rows[0][0]) if rows else None


async def actions(tx: Transaction) -> set[str]:
    """Every action and event the trail holds: what `query(action=...)` can match."""
    rows = await tx.fetch("SELECT action FROM audit_log UNION SELECT event FROM audit_log", ())
    return {row[0] for row in rows if row[0]}


def _contains(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def scan(tx: Transaction, *, since: datetime | None = None) -> list[AuditRecord]:
    """Every record (at or after `since` if given), oldest first, every field as stored."""
    where, params = ("WHERE at >= ? ", (encode_time(utc(since, "since")),)) if since is not None else ("", ())
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM audit_log {where}ORDER BY seq", params)
    return [_from_row(row) for row in rows]


async def head(tx: Transaction) -> tuple[int, str]:
    """The chain head: the last record's seq (0 when empty) and hash."""
    rows = await tx.fetch("SELECT seq, hash FROM audit_head WHERE id = 1")
    return int(rows[0][0]), rows[0][1]


async def verify(tx: Transaction) -> Verification:
    """Recompute every hash and link from the stored rows, compare with the head, name the first fault."""
    checked, expected_seq, expected_prev = 0, 1, GENESIS_HASH
    last: AuditRecord | None = None
    while True:
        rows = await tx.fetch(f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                              (expected_seq, _PAGE))
        if not rows:
            break
        for row in rows:
            record = _from_row(row)
            checked += 1
            problem = _check(record, expected_seq, expected_prev)
            if problem:
                return Verification(False, checked, *problem)
            expected_seq, expected_prev, last = record.seq + 1, record.hash, record
    head_seq, head_hash = await head(tx)
    end = last.seq if last else 0
    if end < head_seq:
        return Verification(False, checked, end + 1,
                            f"the chain ends at {end} but the head says {head_seq}")
    if end > head_seq:
        return Verification(False, checked, head_seq + 1,
                            f"record {head_seq + 1} was inserted (the head says the chain ends at {head_seq})")
    if last is not None and last.hash != head_hash:
        return Verification(False, checked, end, f"record {end} was altered")
    return Verification(True, checked, None, "")


def _check(record: AuditRecord, expected_seq: int, expected_prev: str) -> tuple[int, str] | None:
    """(first bad seq, problem) for `record` read where `expected_seq` should be, or None."""
    seq = record.seq
    if seq > expected_seq:
        missing = (f"record {expected_seq} is missing" if seq == expected_seq + 1
                   else f"records {expected_seq} to {seq - 1} are missing")
        return expected_seq, missing
    if record.computed_hash() != record.hash:
        # An untouched record renumbered by one betrays an insertion or a removal before it.
        if _hashes_as(record, seq - 1):
            return seq - 1, f"record {seq - 1} was inserted"
        if _hashes_as(record, seq + 1):
            return seq, f"record {seq} is missing"
        return seq, f"record {seq} was altered"
    if record.prev_hash != expected_prev:
        # This record is intact, so the link it holds is the original: the one before it changed
        # (altered and re-hashed, or forged in its place).
        if seq == 1:
            return 1, "record 1 was altered"
        return seq - 1, f"record {seq - 1} was altered"
    return None


def _hashes_as(record: AuditRecord, seq: int) -> bool:
    return seq >= 1 and AuditRecord(**{**_values(record), "seq": seq}).computed_hash() == record.hash


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """A JSON-ready dict of every field (times as UTC ISO 8601), e.g. for a JSONL export. Shallow:
    `asdict` recurses into nested values and fails on a deeply nested one."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    values["at"] = encode_time(record.at)
    return values
