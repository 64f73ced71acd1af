"""Approval requests and their votes: repository functions that take the open `Transaction`.

Lifecycle (the gate in `commands/` decides which edge to take; this module makes each edge a
compare-and-set, so two clicks or two replicas can never both win it)::

    pending ──▶ approved ──▶ executing ──▶ succeeded | failed
       └──▶ rejected | expired | withdrawn

    won = await approvals.transition(tx, 42, approvals.PENDING, approvals.APPROVED, now=now)

`transition` is `UPDATE approvals SET state = ? ... WHERE id = ? AND state IN (...)`: True for the
one caller whose update changed the row. Votes have the unique key (approval_id, voter_id), so a
voter counts once however many times the click arrives. A final state never changes again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_json, decode_time, encode_json, encode_time, utc
from adapters.storage.base import for_update as lock_clause

PENDING, APPROVED, EXECUTING, SUCCEEDED, FAILED, REJECTED, EXPIRED, WITHDRAWN = (
    "pending", "approved", "executing", "succeeded", "failed", "rejected", "expired", "withdrawn")
STATES = (PENDING, APPROVED, EXECUTING, SUCCEEDED, FAILED, REJECTED, EXPIRED, WITHDRAWN)
FINAL_STATES = (SUCCEEDED, FAILED, REJECTED, EXPIRED, WITHDRAWN)
DECISIONS = ("approve", "reject")
SOURCES = ("chat", "api")


@dataclass(frozen=True)
class NewApproval:
    """A change waiting for approval, as the gate opens it. Times must be timezone-aware."""

    action: str
    workspace: str
    environment: str
    target: str
    parameters: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str
    requester_id: str
    requester_name: str
    tenant_id: str
    conversation_id: str
    quorum: int
    allow_self: bool
    approver_role: str
    created_at: datetime
    expires_at: datetime
    execute: bool = True
    source: str = "chat"
    run_url: str = ""
    summary: str = ""        # one line: "Traffic on fraud-api: blue=90 green=10 → blue=0 green=100"

    def __post_init__(self) -> None:
        object.__setattr__(self, "created_at", utc(self.created_at, "created_at"))
        object.__setattr__(self, "expires_at", utc(self.expires_at, "expires_at"))
        if not isinstance(self.quorum, int) or self.quorum < 1:
            raise ValueError(f"quorum must be a whole number of at least 1, not {self.quorum!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if not self.action or not self.requester_id:
            raise ValueError("action and requester_id must not be empty")
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")


@dataclass(frozen=True)
class Vote:
    """One approver's decision on a request."""

    voter_id: str
    voter_name: str
    decision: str  # "approve" | "reject"
    comment: str
    activity_id: str
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {self.decision!r}")
        if not self.voter_id:
            raise ValueError("voter_id must not be empty")


@dataclass(frozen=True)
class Approval(NewApproval):
    """A stored request: what was asked, where it stands, the card that shows it, its votes."""

    id: int = 0
    state: str = PENDING
    updated_at: datetime | None = None
    result: str = ""
    card_conversation_id: str = ""
    card_activity_id: str = ""
    votes: tuple[Vote, ...] = ()

    @property
    def approvals(self) -> tuple[Vote, ...]:
        return tuple(vote for vote in self.votes if vote.decision == "approve")

    @property
    def rejections(self) -> tuple[Vote, ...]:
        return tuple(vote for vote in self.votes if vote.decision == "reject")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


_NEW_FIELDS = tuple(f.name for f in fields(NewApproval))
# Stored column for each NewApproval field ("before"/"after" are SQL keywords in some dialects).
_COLUMN = {name: name for name in _NEW_FIELDS} | {"before": "before_state", "after": "after_state"}
_JSON_FIELDS = ("parameters", "before", "after")
_TIME_FIELDS = ("created_at", "expires_at")
_SELECT = ("SELECT id, " + ", ".join(_COLUMN[name] for name in _NEW_FIELDS)
           + ", state, updated_at, result, card_conversation_id, card_activity_id FROM approvals")
_VOTE_COLUMNS = "approval_id, voter_id, voter_name, decision, comment, activity_id, at"


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return encode_json(value)
    if name in _TIME_FIELDS:
        return encode_time(value)
    return value


def _decode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return decode_json(value)
    if name in _TIME_FIELDS:
        return decode_time(value)
    if name in ("allow_self", "execute"):
        return bool(value)
    return value


def _vote_from_row(row: Sequence[Any]) -> Vote:
    _, voter_id, voter_name, decision, comment, activity_id, at = row
    return Vote(voter_id=voter_id, voter_name=voter_name, decision=decision, comment=comment,
                activity_id=activity_id, at=decode_time(at))


async def _load(tx: Transaction, rows: list[tuple[Any, ...]]) -> list[Approval]:
    """Approvals from `_SELECT` rows, each with its votes (one more query for all of them)."""
    if not rows:
        return []
    ids = [int(row[0]) for row in rows]
    votes: dict[int, list[Vote]] = {approval_id: [] for approval_id in ids}
    marks = ", ".join("?" for _ in ids)
    for row in await tx.fetch(f"SELECT {_VOTE_COLUMNS} FROM approval_votes WHERE approval_id IN ({marks}) "
                              "ORDER BY at, voter_id", ids):
        votes[int(row[0])].append(_vote_from_row(row))
    approvals = []
    for row in rows:
        approval_id, *new_values = row[:1 + len(_NEW_FIELDS)]
        state, updated_at, result, card_conversation_id, card_activity_id = row[1 + len(_NEW_FIELDS):]
        values = {name: _decode(name, value) for name, value in zip(_NEW_FIELDS, new_values)}
        approvals.append(Approval(**values, id=int(approval_id), state=state, updated_at=decode_time(updated_at),
                                  result=result, card_conversation_id=card_conversation_id,
                                  card_activity_id=card_activity_id, votes=tuple(votes[int(approval_id)])))
    return approvals


def _states(value: str | Sequence[str], name: str) -> tuple[str, ...]:
    states = (value,) if isinstance(value, str) else tuple(value)
    unknown = [state for state in states if state not in STATES]
    if not states or unknown:
        raise ValueError(f"{name} must be among {', '.join(STATES)}, not {unknown or 'nothing'}")
    return states


# ---------------------------------------------------------------- repository functions


async def create(tx: Transaction, new: NewApproval) -> Approval:
    """Store a new pending request; return it with its id."""
    columns = [_COLUMN[name] for name in _NEW_FIELDS] + ["state", "updated_at"]
    values = [_encode(name, getattr(new, name)) for name in _NEW_FIELDS] + [PENDING, encode_time(new.created_at)]
    rows = await tx.fetch(f"INSERT INTO approvals ({', '.join(columns)}) "
                          f"VALUES ({', '.join('?' for _ in columns)}) RETURNING id", values)
    return Approval(**{name: getattr(new, name) for name in _NEW_FIELDS}, id=int(rows[0][0]), state=PENDING,
                    updated_at=new.created_at)


async def get(tx: Transaction, approval_id: int, *, for_update: bool = False) -> Approval | None:
    """The request with its votes, or None. `for_update` locks its row until the transaction ends
    (PostgreSQL `SELECT ... FOR UPDATE`; SQLite write transactions exclude other writers anyway)."""
    lock = lock_clause(tx) if for_update else ""
    found = await _load(tx, await tx.fetch(f"{_SELECT} WHERE id = ?{lock}", (approval_id,)))
    return found[0] if found else None



async def find(tx: Transaction, *, states: Sequence[str] | None = None, requester_id: str | None = None,
               voter_id: str | None = None, conversation_id: str | None = None, limit: int = 50,
               tenant_id: str | None = None) -> list[Approval]:
    """Requests matching every given filter, newest first (at most `limit`)."""
    where, params = [], []
    if tenant_id is not None:
        where.append("tenant_id = ?")
        params.append(tenant_id)
    if states is not None:
        wanted = _states(states, "states") if states else ()
        if not wanted:
            return []
        where.append(f"state IN ({', '.join('?' for _ in wanted)})")
        params.extend(wanted)
    if requester_id is not None:
        where.append("requester_id = ?")
        params.append(requester_id)
    if voter_id is not None:
        where.append("EXISTS (SELECT 1 FROM approval_votes v WHERE v.approval_id = approvals.id AND v.voter_id = ?)")
        params.append(voter_id)
    if conversation_id is not None:
        where.append("(conversation_id = ? OR card_conversation_id = ?)")
        params.extend((conversation_id, conversation_id))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.fetch(f"{_SELECT}{clause} ORDER BY id DESC LIMIT ?", (*params, max(0, int(limit))))
    return await _load(tx, rows)


async def add_vote(tx: Transaction, approval_id: int, vote: Vote) -> bool:
    """Record a vote; False (and nothing written) when this voter already voted on this request."""
    changed = await tx.execute(
        f"INSERT INTO approval_votes ({_VOTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (approval_id, voter_id) DO NOTHING",
        (approval_id, vote.voter_id, vote.voter_name, vote.decision, vote.comment, vote.activity_id,
         encode_time(vote.at)))
    return changed == 1


async def transition(tx: Transaction, approval_id: int, expected: str | Sequence[str], new_state: str, *,
                     now: datetime, result: str | None = None) -> bool:
    """Compare-and-set: move the request to `new_state` only if it is in one of `expected` now.

    True when this call won (its row changed); False when the request is elsewhere (another click
    or replica moved it first) or does not exist. `result` replaces the stored result when given.
    A final state is never left: `expected` may not name one.
    """
    expected_states = _states(expected, "expected")
    (new_state,) = _states(new_state, "new_state")
    final = [state for state in expected_states if state in FINAL_STATES]
    if final:
        raise ValueError(f"{', '.join(final)} is a final state: a request never leaves it")
    marks = ", ".join("?" for _ in expected_states)
    changed = await tx.execute(
        f"UPDATE approvals SET state = ?, updated_at = ?, result = COALESCE(?, result) "
        f"WHERE id = ? AND state IN ({marks})",
        (new_state, encode_time(utc(now, "now")), result, approval_id, *expected_states))
    return changed == 1


async def pending_on(tx: Transaction, workspace: str, target: str, *, besides: int) -> list[Approval]:
    """The pending requests on `target` in `workspace`, other than request `besides`."""
    rows = await tx.fetch(f"{_SELECT} WHERE workspace = ? AND target = ? AND state = ? AND id <> ? ORDER BY id",
                          (workspace, target, PENDING, besides))
    return await _load(tx, rows)


async def note(tx: Transaction, approval_id: int, text: str, *, now: datetime) -> bool:
    """Note something on a pending request (its `result`, shown as a warning while it is pending)."""
    changed = await tx.execute("UPDATE approvals SET result = ?, updated_at = ? WHERE id = ? AND state = ?",
                               (text, encode_time(utc(now, "now")), approval_id, PENDING))
    return changed == 1


async def set_card(tx: Transaction, approval_id: int, conversation_id: str, activity_id: str) -> None:
    """Remember the message that shows the request's card, so every vote can update it."""
    await tx.execute("UPDATE approvals SET card_conversation_id = ?, card_activity_id = ? WHERE id = ?",
                     (conversation_id, activity_id, approval_id))


async def due_to_expire(tx: Transaction, now: datetime) -> list[Approval]:
    """Pending requests whose expiry is at or before `now`, soonest expiry first."""
    rows = await tx.fetch(f"{_SELECT} WHERE state = ? AND expires_at <= ? ORDER BY expires_at, id",
                          (PENDING, encode_time(utc(now, "now"))))
    return await _load(tx, rows)


async def count_waiting(tx: Transaction) -> int:
    """How many requests wait for a decision (state pending)."""
    rows = await tx.fetch("SELECT COUNT(*) FROM approvals WHERE state = ?", (PENDING,))
    return int(rows[0][0]) if rows else 0
