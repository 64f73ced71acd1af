"""Subscriptions: which conversation hears about which kind of event, with optional filters.

    sub = await subscriptions.add(tx, NewSubscription(conversation_id, "drift", workspace="ml-prod", ...), now)
    await subscriptions.for_conversation(tx, conversation_id)
    await subscriptions.matching(tx, "drift")          # every subscription of a kind, for matching
    await subscriptions.remove(tx, conversation_id, id=3) / (..., kind="drift")

A filter left empty matches anything. The same subscription (same conversation, kind and
filters) is stored once: `add` answers the existing one and `created=False`. Escalation
(`escalate_after` seconds, 0 = off, and the `notify` people as (user id, name) pairs) is not part
of that identity: `set_escalation` changes it on the stored subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_json, decode_time, encode_json, encode_time, utc


@dataclass(frozen=True)
class NewSubscription:
    conversation_id: str
    kind: str
    tenant_id: str = ""
    workspace: str = ""
    model: str = ""
    endpoint: str = ""
    severity: str = ""
    created_by_id: str = ""
    created_by_name: str = ""
    escalate_after: int = 0              # seconds without an acknowledgement before re-notifying; 0 = never
    notify: tuple[tuple[str, str], ...] = ()     # (user id, name) to @mention when re-notifying


@dataclass(frozen=True)
class Subscription(NewSubscription):
    id: int = 0
    created_at: datetime | None = None


_COLUMNS = ("id, conversation_id, tenant_id, kind, workspace, model, endpoint, severity, created_by_id, "
            "created_by_name, created_at, escalate_after, notify")


def _from_row(row: Sequence[Any]) -> Subscription:
    (sub_id, conversation_id, tenant_id, kind, workspace, model, endpoint, severity, by_id, by_name,
     created_at, escalate_after, notify) = row
    return Subscription(conversation_id=conversation_id, kind=kind, tenant_id=tenant_id, workspace=workspace,
                        model=model, endpoint=endpoint, severity=severity, created_by_id=by_id,
                        created_by_name=by_name, id=int(sub_id), created_at=decode_time(created_at),
                        escalate_after=int(escalate_after or 0),
                        notify=tuple(tuple(p) for p in decode_json(notify or "[]")))


async def add(tx: Transaction, new: NewSubscription, now: datetime) -> tuple[Subscription, bool]:
    """Store the subscription; (it, True), or (the identical one already stored, False)."""
    if not new.conversation_id or not new.kind:
        raise ValueError("conversation_id and kind must not be empty")
    existing = await _same(tx, new)
    if existing is not None:                 # looked up first, so a repeat does not use up an id
        return existing, False
    rows = await tx.fetch(
        "INSERT INTO subscriptions (conversation_id, tenant_id, kind, workspace, model, endpoint, severity, "
        "created_by_id, created_by_name, created_at, escalate_after, notify) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (conversation_id, kind, workspace, model, endpoint, severity) DO NOTHING "
        f"RETURNING {_COLUMNS}",
        (new.conversation_id, new.tenant_id, new.kind, new.workspace, new.model, new.endpoint, new.severity,
         new.created_by_id, new.created_by_name, encode_time(utc(now, "now")), int(new.escalate_after),
         encode_json([list(p) for p in new.notify])))
    if rows:
        return _from_row(rows[0]), True
    return await _same(tx, new), False       # another replica stored it in the meantime


async def _same(tx: Transaction, new: NewSubscription) -> Subscription | None:
    rows = await tx.fetch(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE conversation_id = ? AND kind = ? AND workspace = ? "
        "AND model = ? AND endpoint = ? AND severity = ?",
        (new.conversation_id, new.kind, new.workspace, new.model, new.endpoint, new.severity))
    return _from_row(rows[0]) if rows else None


async def for_conversation(tx: Transaction, conversation_id: str) -> list[Subscription]:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM subscriptions WHERE conversation_id = ? ORDER BY id",
                          (conversation_id,))
    return [_from_row(row) for row in rows]


async def of_kind(tx: Transaction, kind: str) -> list[Subscription]:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM subscriptions WHERE kind = ? ORDER BY id", (kind,))
    return [_from_row(row) for row in rows]


async def remove(tx: Transaction, conversation_id: str, *, id: int | None = None,
                 kind: str | None = None) -> list[Subscription]:
    """Delete this conversation's subscription `id`, or all of its subscriptions of `kind`; the removed ones."""
    if (id is None) == (kind is None):
        raise ValueError("give exactly one of id and kind")
    column, value = ("id", id) if id is not None else ("kind", kind)
    rows = await tx.fetch(f"DELETE FROM subscriptions WHERE conversation_id = ? AND {column} = ? "
                          f"RETURNING {_COLUMNS}", (conversation_id, value))
    return sorted((_from_row(row) for row in rows), key=lambda s: s.id)


async def set_escalation(tx: Transaction, subscription_id: int, escalate_after: int,
                         notify: tuple[tuple[str, str], ...]) -> Subscription | None:
    """Change who is re-notified, and after how long, on an existing subscription."""
    rows = await tx.fetch(f"UPDATE subscriptions SET escalate_after = ?, notify = ? WHERE id = ? RETURNING {_COLUMNS}",
                          (int(escalate_after), encode_json([list(p) for p in notify]), subscription_id))
    return _from_row(rows[0]) if rows else None
