"""The outbox: every proactive message (approval cards, outcomes, alerts, digests) is stored here
first, in the same transaction as the event that causes it, then delivered at least once.

    item_id = await outbox.enqueue(tx, conversation_id, payload, dedupe_key="approval-42-card", now=now)
    items = await outbox.claim(tx, "replica-a", now=now, lease_seconds=30, limit=10)
    if await outbox.renew(tx, item.id, "replica-a", until):   # just before sending: still ours?
        ... send it through the Teams seam (outside the transaction) ...
    await outbox.mark_sent(tx, item.id, "replica-a", activity_id, now=now)     # or retry_later / mark_dead
    await outbox.revive(tx, [item.id], now=now)      # an admin's `outbox retry`: dead -> pending

An item is pending until marked sent or dead. `claim` leases items to one owner (PostgreSQL:
`FOR UPDATE SKIP LOCKED`, so replicas claiming together get disjoint items; SQLite: write
transactions already exclude each other); a lease that runs out makes the item claimable again,
which is what makes delivery at-least-once after a crash. A conversation's items are claimed in
order: none while an earlier one of the same conversation is leased or waiting for a retry. The `dedupe_key` is unique: enqueuing
the same message twice stores it once. Only the lease holder can settle an item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, for_update, utc)

PENDING, SENT, DEAD = "pending", "sent", "dead"
STATES = (PENDING, SENT, DEAD)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    conversation_id: str
    tenant_id: str
    dedupe_key: str
    payload: dict[str, Any]
    state: str  # pending | sent | dead
    attempts: int
    not_before: datetime
    lease_owner: str
    lease_until: datetime | None
    activity_id: str
    last_error: str
    created_at: datetime
    sent_at: datetime | None


_COLUMNS = ("id, conversation_id, tenant_id, dedupe_key, payload, state, attempts, not_before, lease_owner, "
            "lease_until, activity_id, last_error, created_at, sent_at")

_QUALIFIED = ", ".join(f"outbox.{column.strip()}" for column in _COLUMNS.split(","))


def _from_row(row: Sequence[Any]) -> OutboxItem:
    (item_id, conversation_id, tenant_id, dedupe_key, payload, state, attempts, not_before, lease_owner,
     lease_until, activity_id, last_error, created_at, sent_at) = row
    return OutboxItem(id=int(item_id), conversation_id=conversation_id, tenant_id=tenant_id, dedupe_key=dedupe_key,
                      payload=decode_json(payload), state=state, attempts=int(attempts),
                      not_before=decode_time(not_before), lease_owner=lease_owner,
                      lease_until=decode_optional_time(lease_until), activity_id=activity_id,
                      last_error=last_error, created_at=decode_time(created_at),
                      sent_at=decode_optional_time(sent_at))


async def enqueue(tx: Transaction, conversation_id: str, payload: dict[str, Any], *, dedupe_key: str,
                  tenant_id: str = "", now: datetime, not_before: datetime | None = None) -> int | None:
    """Store a message for `conversation_id`; its id, or None when `dedupe_key` is already stored."""
    if not conversation_id or not dedupe_key:
        raise ValueError("conversation_id and dedupe_key must not be empty")
    if not isinstance(payload, dict):
        raise ValueError("payload must be a dict")
    created = encode_time(utc(now, "now"))
    due = encode_time(utc(not_before, "not_before")) if not_before is not None else created
    rows = await tx.fetch(
        "INSERT INTO outbox (conversation_id, tenant_id, dedupe_key, payload, state, not_before, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (conversation_id, tenant_id, dedupe_key, encode_json(payload), PENDING, due, created))
    return int(rows[0][0]) if rows else None


async def claim(tx: Transaction, owner: str, *, now: datetime, lease_seconds: float, limit: int) -> list[OutboxItem]:
    """Lease up to `limit` due items to `owner` for `lease_seconds`, oldest first.

    Due: pending, `not_before <= now`, not leased or the lease ran out, and no earlier pending
    item of the same conversation is waiting for a retry or leased (so a conversation's messages
    go out in order, whichever replica sends them). Each claim counts an attempt.
    """
    if not owner:
        raise ValueError("owner must not be empty")
    if limit <= 0:
        return []
    moment = encode_time(utc(now, "now"))
    until = encode_time(utc(now, "now") + timedelta(seconds=lease_seconds))
    # Per-conversation order: an item waits while an earlier one of its conversation is pending
    # and not claimable (waiting for a retry, or leased: being sent).
    due = "SELECT id FROM outbox AS candidate WHERE state = ? AND not_before <= ? " \
          "AND (lease_until IS NULL OR lease_until <= ?) AND NOT EXISTS (SELECT 1 FROM outbox AS earlier " \
          "WHERE earlier.conversation_id = candidate.conversation_id AND earlier.state = ? " \
          "AND earlier.id < candidate.id AND (earlier.not_before > ? OR earlier.lease_until > ?)) " \
          "ORDER BY id LIMIT ?"
    due_params = (PENDING, moment, moment, PENDING, moment, moment, int(limit))
    if tx.dialect == "postgres":
        # Claims take turns (a transaction-scoped advisory lock), so a claim sees the leases of the
        # one before it: two replicas cannot take different items of one conversation at once.
        # A materialized CTE runs the locking SELECT exactly once (a subquery in WHERE may be
        # re-evaluated by the planner and lock more than `limit` rows).
        await tx.fetch("SELECT pg_advisory_xact_lock(hashtext('outbox-claim'))")
        rows = await tx.fetch(
            f"WITH due AS MATERIALIZED ({due}{for_update(tx, skip_locked=True)}) "
            f"UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = outbox.attempts + 1 "
            f"FROM due WHERE outbox.id = due.id RETURNING {_QUALIFIED}",
            (*due_params, owner, until))
    else:
        # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every other claimer.
        rows = await tx.fetch(
            f"UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
            f"WHERE id IN ({due}) RETURNING {_COLUMNS}",
            (owner, until, *due_params))
    return sorted((_from_row(row) for row in rows), key=lambda item: item.id)


async def mark_sent(tx: Transaction, item_id: int, owner: str, activity_id: str, *, now: datetime) -> bool:
    """Settle a delivered item with the activity id Teams returned; False unless `owner` holds it."""
    changed = await tx.execute(
        "UPDATE outbox SET state = ?, activity_id = ?, sent_at = ?, lease_until = NULL, last_error = '' "
        "WHERE id = ? AND state = ? AND lease_owner = ?",
        (SENT, activity_id, encode_time(utc(now, "now")), item_id, PENDING, owner))
    return changed == 1


async def retry_later(tx: Transaction, item_id: int, owner: str, not_before: datetime, error: str) -> bool:
    """Release the lease and make the item due again at `not_before`; False unless `owner` holds it."""
    changed = await tx.execute(
        "UPDATE outbox SET not_before = ?, last_error = ?, lease_owner = '', lease_until = NULL "
        "WHERE id = ? AND state = ? AND lease_owner = ?",
        (encode_time(utc(not_before, "not_before")), error, item_id, PENDING, owner))
    return changed == 1


async def mark_dead(tx: Transaction, item_id: int, owner: str, error: str) -> bool:
    """Give up on the item (e.g. the bot was removed from the conversation); False unless `owner` holds it."""
    changed = await tx.execute(
        "UPDATE outbox SET state = ?, last_error = ?, lease_until = NULL "
        "WHERE id = ? AND state = ? AND lease_owner = ?",
        (DEAD, error, item_id, PENDING, owner))
    return changed == 1


async def get_item(tx: Transaction, item_id: int) -> OutboxItem | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (item_id,))
    return _from_row(rows[0]) if rows else None


async def find_items(tx: Transaction, *, state: str | None = None, conversation_id: str | None = None,
                     dedupe_key: str | None = None) -> list[OutboxItem]:
    """Items matching every given filter, oldest first."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    where, params = [], []
    for column, value in (("state", state), ("conversation_id", conversation_id), ("dedupe_key", dedupe_key)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM outbox{clause} ORDER BY id", params)
    return [_from_row(row) for row in rows]


async def prune(tx: Transaction, older_than: datetime) -> int:
    """Delete settled (sent or dead) items created before `older_than`; return how many.

    Pending items are never pruned. Keep items as long as a message may still be updated through
    its stored activity id (e.g. an approval card).
    """
    return await tx.execute("DELETE FROM outbox WHERE state IN (?, ?) AND created_at < ?",
                            (SENT, DEAD, encode_time(utc(older_than, "older_than"))))


async def postpone(tx: Transaction, item_id: int, owner: str, not_before: datetime) -> bool:
    """Release the lease unsent, due again at `not_before`, without counting the claim as an
    attempt (the sender held it back: a rate limit, a conversation Teams asked to wait for)."""
    changed = await tx.execute(
        "UPDATE outbox SET not_before = ?, lease_owner = '', lease_until = NULL, "
        "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
        "WHERE id = ? AND state = ? AND lease_owner = ?",
        (encode_time(utc(not_before, "not_before")), item_id, PENDING, owner))
    return changed == 1


async def renew(tx: Transaction, item_id: int, owner: str, until: datetime) -> bool:
    """Extend `owner`'s lease to `until` (just before sending); False when `owner` no longer holds
    the item (another replica claimed it after the lease ran out, or it was settled): then the
    caller must not send it."""
    changed = await tx.execute(
        "UPDATE outbox SET lease_until = ? WHERE id = ? AND state = ? AND lease_owner = ?",
        (encode_time(utc(until, "until")), item_id, PENDING, owner))
    return changed == 1


async def count_states(tx: Transaction) -> dict[str, int]:
    """How many items are in each state (every state present, 0 when none)."""
    rows = await tx.fetch("SELECT state, COUNT(*) FROM outbox GROUP BY state")
    counts = {state: 0 for state in STATES}
    counts.update({state: int(count) for state, count in rows})
    return counts


async def revive(tx: Transaction, item_ids: Sequence[int] | None, *, now: datetime) -> list[int]:
    """Make given-up (dead) items pending again, due now, with a fresh deadline (`created_at` =
    now) and no attempts; all dead items when `item_ids` is None. Returns the ids revived."""
    moment = encode_time(utc(now, "now"))
    where, params = "state = ?", [DEAD]
    if item_ids is not None:
        if not item_ids:
            return []
        where += f" AND id IN ({', '.join('?' for _ in item_ids)})"
        params += [int(i) for i in item_ids]
    rows = await tx.fetch(
        f"UPDATE outbox SET state = ?, not_before = ?, created_at = ?, attempts = 0, lease_owner = '', "
        f"lease_until = NULL, last_error = '' WHERE {where} RETURNING id",
        (PENDING, moment, moment, *params))
    return sorted(int(row[0]) for row in rows)


async def oldest_pending(tx: Transaction) -> datetime | None:
    """When the oldest item still waiting to be sent was enqueued (None: nothing waits)."""
    rows = await tx.fetch("SELECT MIN(created_at) FROM outbox WHERE state = ?", (PENDING,))
    return decode_optional_time(rows[0][0]) if rows and rows[0][0] is not None else None


async def next_due(tx: Transaction) -> datetime | None:
    """When the earliest pending item may be claimed (its `not_before`, or its lease's end when
    that is later); None when nothing is pending. The worker sleeps until then, not a whole poll."""
    rows = await tx.fetch(
        "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > not_before THEN lease_until "
        "ELSE not_before END) FROM outbox WHERE state = ?", (PENDING,))
    return decode_optional_time(rows[0][0]) if rows and rows[0][0] is not None else None
