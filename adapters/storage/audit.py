"""The audit trail: an append-only, hash-chained, keyed log. Repository functions take the open `Transaction`.

Each record carries `seq` (1, 2, 3, ...), `prev_hash` (the previous record's hash, "0" * 64 for the
first), `chain` (how its hash is made) and `hash`:

    chain = "hmac-sha256"   HMAC-SHA256 over its canonical encoding (`AuditRecord.canonical`: every
                            field except `hash`, as JSON with sorted keys, no whitespace, UTF-8),
                            keyed with MLOPSBOT_AUDIT_KEY. The key is not in the database, so who can
                            write the database still cannot re-hash an edit, a forged record or a
                            rewritten tail. Every record appended since storage migration 16 is keyed.
    chain = "sha256"        plain SHA-256 of the encoding of migration 3 (no `reason`, no `chain`):
                            the records written before migration 16. They still verify, but anyone
                            could have re-hashed them; `verify` says where the keyed part starts, and
                            a plain record after a keyed one is a downgrade, reported as tampering.

Without a key (development mode only; the settings refuse to start elsewhere) the chain is keyed
with `DEVELOPMENT_KEY`, which is published here and so proves nothing: `verify` says "unkeyed".

Editing any field breaks that record's hash; removing or inserting one breaks the links or the
numbering; cutting the tail disagrees with the chain head (`audit_head`, one row), which every
append updates under a lock:

- SQLite: write transactions start with BEGIN IMMEDIATE, so appenders already take turns;
- PostgreSQL: `SELECT ... FROM audit_head WHERE id = 1 FOR UPDATE` waits for the other appender.

An attacker who cuts the tail can also rewrite `audit_head`; that, and appends after a point, are
caught by an anchor kept outside the database: the head (record count and hash) goes into the log
and the daily digest, and `verify(tx, anchor=hash)` checks the chain still holds that head.

So appends from several replicas keep one linear chain, and an append commits together with the
state change it records (same transaction) or not at all. No code path updates or deletes an
audit row (docs/changes.md, "An append-only audit log in PostgreSQL", makes that true at the
database level too). `verify` recomputes everything from the stored rows (off the event loop) and
names the first record at fault; a record it cannot even read (a damaged timestamp) is named,
never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_time, encode_json, encode_time, for_update, utc

GENESIS_HASH = "0" * 64
_PAGE = 1000
PLAIN = "sha256"              # records written before storage migration 16
KEYED = "hmac-sha256"         # every record since
DAMAGED = "damaged"           # the event of a row that no longer decodes (listing and export only)
DAMAGED_AT = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The key a storage without MLOPSBOT_AUDIT_KEY uses (development mode only): public, so a chain
# keyed with it is as forgeable as a plain one, and `verify` says so.
DEVELOPMENT_KEY = b"mlops-bot development audit key: public, proves nothing"


def key_of(tx: Transaction) -> tuple[bytes, bool]:
    """The chain key of `tx`'s storage and whether it is a real (secret) one."""
    key = getattr(tx, "audit_key", None)
    return (key, True) if key else (DEVELOPMENT_KEY, False)


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
    reason: str = ""

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
    chain: str = KEYED

    def canonical(self) -> bytes:
        """The bytes the hash covers: every field but `hash` as compact JSON with sorted keys.

        A plain (pre-migration-16) record is encoded as it was then, without `chain` and without an
        empty `reason` (a reason written into one later is encoded, so it breaks the hash)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hash"}
        values["at"] = encode_time(self.at)
        if self.chain == PLAIN:
            del values["chain"]
            if not self.reason:
                del values["reason"]
        return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def computed_hash(self, key: bytes = DEVELOPMENT_KEY) -> str:
        """Its hash as its `chain` makes it (`key` for a keyed record); "" for an unknown chain."""
        if self.chain == KEYED:
            return hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()
        if self.chain == PLAIN:
            return hashlib.sha256(self.canonical()).hexdigest()
        return ""


@dataclass(frozen=True)
class Verification:
    """The outcome of `verify`: ok, how many records were checked, and the first one at fault.

    `keyed_from`: the first keyed record (None when none is); `keyed`: checked with a real key
    (False: the public development key); `head_seq`/`head_hash`: the chain's last record (the
    anchor to keep); `after_anchor`: how many records follow the anchor `verify` was given.
    Two verifications are equal when their verdicts are (the first four fields)."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str
    keyed_from: int | None = field(default=None, compare=False)
    keyed: bool = field(default=True, compare=False)
    head_seq: int = field(default=0, compare=False)
    head_hash: str = field(default=GENESIS_HASH, compare=False)
    after_anchor: int = field(default=0, compare=False)


_ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry))
_COLUMN = {name: name for name in _ENTRY_FIELDS} | {"before": "before_state", "after": "after_state"}
_JSON_FIELDS = ("parameters", "before", "after", "detail")
_COLUMNS = ", ".join([_COLUMN[name] for name in _ENTRY_FIELDS] + ["seq", "prev_hash", "hash", "chain"])


def _from_row(row: Sequence[Any]) -> AuditRecord:
    """The record a row holds; a row whose values no longer decode (a damaged timestamp, broken
    JSON) becomes a record of event DAMAGED that says what is wrong, so that listing or exporting
    the trail still works (`verify` names it as tampering)."""
    try:
        return _decode(row)
    except _Damaged as damage:
        seq, prev_hash, hash_, chain = row[len(_ENTRY_FIELDS):]
        return AuditRecord(at=DAMAGED_AT, event=DAMAGED, actor_id="", actor_name="", seq=int(seq),
                           prev_hash=str(prev_hash), hash=str(hash_), chain=str(chain),
                           detail={"damage": f"record {int(seq)} is damaged: {damage}"})


# ---------------------------------------------------------------- repository functions


async def append(tx: Transaction, entry: AuditEntry) -> AuditRecord:
    """Add `entry` at the end of the chain (locking the chain head until the transaction ends)."""
    head = await tx.fetch(f"SELECT seq, hash FROM audit_head WHERE id = 1{for_update(tx)}")
    head_seq, head_hash = int(head[0][0]), head[0][1]
    record = AuditRecord(**{name: getattr(entry, name) for name in _ENTRY_FIELDS},
                         seq=head_seq + 1, prev_hash=head_hash, chain=KEYED)
    record = AuditRecord(**{**_values(record), "hash": record.computed_hash(key_of(tx)[0])})
    stored = [_stored(name, getattr(record, name)) for name in _ENTRY_FIELDS]
    await tx.execute(f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join('?' for _ in range(len(stored) + 4))})",
                     (*stored, record.seq, record.prev_hash, record.hash, record.chain))
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
                target: str | None = None, action: str | None = None, limit: int = 50,
                tenant_id: str | None = None) -> list[AuditRecord]:
    """Records matching every given filter, newest first (at most `limit`).

    `actor` matches the actor's id, name or UPN (case-insensitive substring), `target` is a
    case-insensitive substring of the target, `action` equals the action or the event;
    `tenant_id`: only that tenant's records and the bot's own (no tenant: the policy loaded).
    """
    where, params = [], []
    if tenant_id is not None:
        where.append("(tenant_id = ? OR tenant_id = '')")
        params.append(tenant_id)
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


async def verify(tx: Transaction, *, anchor: str | None = None) -> Verification:
    """Recompute every hash and link from the stored rows, compare with the head, name the first fault.

    `anchor`: a head hash kept outside the database (the log, the daily digest): the chain must
    still hold it; records after it are counted in `after_anchor`. The hashing runs in a worker
    thread, one page at a time, so a long chain does not stall the event loop."""
    key, real = key_of(tx)
    walk = _Walk(key, anchor.strip().lower() if anchor else None)
    while True:
        rows = await tx.fetch(f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                              (walk.expected_seq, _PAGE))
        if not rows:
            break
        fault = await asyncio.to_thread(walk.check_page, rows)
        if fault:
            return walk.result(False, *fault, keyed=real)
    head_seq, head_hash = await head(tx)
    end = walk.expected_seq - 1
    if end < head_seq:
        return walk.result(False, end + 1, f"the chain ends at {end} but the head says {head_seq}", keyed=real)
    if end > head_seq:
        return walk.result(False, head_seq + 1,
                           f"record {head_seq + 1} was inserted (the head says the chain ends at {head_seq})",
                           keyed=real)
    if end and walk.expected_prev != head_hash:
        return walk.result(False, end, f"record {end} was altered", keyed=real)
    if walk.anchor is not None and walk.anchor_seq is None:
        return walk.result(False, end + 1, f"the anchored head {walk.anchor[:12]}… is not in the chain, which "
                           f"now ends at record {end}: records were cut off the end (or the chain was rewritten)",
                           keyed=real)
    after = end - walk.anchor_seq if walk.anchor_seq is not None else 0
    return walk.result(True, None, "", keyed=real, after_anchor=after)


class _Damaged(Exception):
    """A stored value that does not decode; the message names the field."""


def _not_json(constant: str) -> Any:
    """NaN and infinities are not JSON and no append stores them: a row holding one was edited
    (and would make the canonical encoding raise instead of `verify` naming the record)."""
    raise ValueError(f"{constant} is not JSON")


def _decode(row: Sequence[Any]) -> AuditRecord:
    """`_from_row`, but a value that does not decode raises `_Damaged` naming its field."""
    values: dict[str, Any] = dict(zip(_ENTRY_FIELDS, row))
    for name in _JSON_FIELDS:
        try:
            values[name] = json.loads(values[name], parse_constant=_not_json)
        except (TypeError, ValueError):
            raise _Damaged(f"its {name} is not JSON") from None
    try:
        values["at"] = decode_time(values["at"])
    except (TypeError, ValueError, OverflowError):
        raise _Damaged(f"its time {str(values['at'])[:40]!r} is not a timestamp") from None
    seq, prev_hash, hash_, chain = row[len(_ENTRY_FIELDS):]
    try:
        approval = values["approval_id"]
        values["approval_id"] = int(approval) if approval is not None else None
        return AuditRecord(**values, seq=int(seq), prev_hash=prev_hash, hash=hash_, chain=chain)
    except (TypeError, ValueError) as error:
        raise _Damaged(str(error)) from None


class _Walk:
    """The state of one `verify` pass along the chain (pure computation, safe in a worker thread)."""

    def __init__(self, key: bytes, anchor: str | None) -> None:
        self.key = key
        self.anchor = anchor
        self.anchor_seq: int | None = 0 if anchor == GENESIS_HASH else None
        self.expected_seq, self.expected_prev = 1, GENESIS_HASH
        self.checked = 0
        self.keyed_from: int | None = None

    def result(self, ok: bool, first_bad: int | None, problem: str, *, keyed: bool,
               after_anchor: int = 0) -> Verification:
        return Verification(ok, self.checked, first_bad, problem, keyed_from=self.keyed_from, keyed=keyed,
                            head_seq=self.expected_seq - 1, head_hash=self.expected_prev, after_anchor=after_anchor)

    def check_page(self, rows: Sequence[Sequence[Any]]) -> tuple[int, str] | None:
        for row in rows:
            seq = int(row[len(_ENTRY_FIELDS)])
            self.checked += 1
            if seq > self.expected_seq:
                return self._missing(seq)
            try:
                record = _decode(row)
            except _Damaged as damage:
                return seq, f"record {seq} is damaged: {damage}"
            problem = self._check(record)
            if problem:
                return problem
            if record.chain == KEYED and self.keyed_from is None:
                self.keyed_from = seq
            if self.anchor is not None and record.hash == self.anchor:
                self.anchor_seq = seq
            self.expected_seq, self.expected_prev = seq + 1, record.hash
        return None

    def _missing(self, seq: int) -> tuple[int, str]:
        expected = self.expected_seq
        return expected, (f"record {expected} is missing" if seq == expected + 1
                          else f"records {expected} to {seq - 1} are missing")

    def _check(self, record: AuditRecord) -> tuple[int, str] | None:
        """(first bad seq, problem) for `record` read where `expected_seq` should be, or None."""
        seq = record.seq
        if record.chain not in (PLAIN, KEYED):
            return seq, f"record {seq} was altered (it names an unknown chain {record.chain[:20]!r})"
        if record.chain == PLAIN and self.keyed_from is not None:
            return seq, (f"record {seq} was altered and re-hashed without the key (it claims the plain chain, "
                         f"but the keyed part began at record {self.keyed_from})")
        if record.computed_hash(self.key) != record.hash:
            # An untouched record renumbered by one betrays an insertion or a removal before it.
            if self._hashes_as(record, seq - 1):
                return seq - 1, f"record {seq - 1} was inserted"
            if self._hashes_as(record, seq + 1):
                return seq, f"record {seq} is missing"
            if record.chain == KEYED and self.keyed_from is None:
                return seq, f"record {seq} was altered (or written with another MLOPSBOT_AUDIT_KEY than this one)"
            return seq, f"record {seq} was altered"
        if record.prev_hash != self.expected_prev:
            # This record is intact, so the link it holds is the original: the one before it changed
            # (altered and re-hashed, or forged in its place).
            if seq == 1:
                return 1, "record 1 was altered"
            return seq - 1, f"record {seq - 1} was altered"
        return None

    def _hashes_as(self, record: AuditRecord, seq: int) -> bool:
        return seq >= 1 and AuditRecord(**{**_values(record), "seq": seq}).computed_hash(self.key) == record.hash


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """A JSON-ready dict of every field (times as UTC ISO 8601), e.g. for a JSONL export. Shallow:
    `asdict` recurses into nested values and fails on a deeply nested one."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    values["at"] = encode_time(record.at)
    return values
