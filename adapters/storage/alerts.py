"""Alerts: one row per alert (by its key, across firings), and the card each conversation shows.

    alert, fresh = await alerts.record(tx, key, kind, status, event_json, value, now)   # insert or update
    await alerts.card_of(tx, alert.id, conversation_id)      # the dedupe key of its first card there
    await alerts.remember_card(tx, alert.id, conversation_id, first_key)
    await alerts.acknowledge(tx, alert.id, "Bob Builder", now)
    await alerts.snooze(tx, alert.id, "Bob Builder", until)

`revision` counts every change of the row, so each card update gets its own outbox dedupe key.
`history` keeps the last HISTORY values (the worst figure of each firing) for the card's trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from adapters.storage.base import (Transaction, decode_json, decode_optional_time, decode_time, encode_json,
                                   encode_time, for_update, utc)

HISTORY = 12


@dataclass(frozen=True)
class Alert:
    id: int
    key: str
    kind: str
    status: str
    event: dict[str, Any]
    history: list[float]
    fired_count: int
    first_at: datetime
    updated_at: datetime
    acknowledged_by: str
    acknowledged_at: datetime | None
    snoozed_by: str
    snoozed_until: datetime | None
    revision: int

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > now


_COLUMNS = ("id, alert_key, kind, status, event, history, fired_count, first_at, updated_at, acknowledged_by, "
            "acknowledged_at, snoozed_by, snoozed_until, revision")


def _from_row(row: Sequence[Any]) -> Alert:
    (alert_id, key, kind, status, event, history, fired, first_at, updated_at, ack_by, ack_at, snoozed_by,
     snoozed_until, revision) = row
    return Alert(int(alert_id), key, kind, status, decode_json(event), list(decode_json(history)), int(fired),
                 decode_time(first_at), decode_time(updated_at), ack_by, decode_optional_time(ack_at),
                 snoozed_by, decode_optional_time(snoozed_until), int(revision))


async def get(tx: Transaction, alert_id: int, *, for_update_lock: bool = False) -> Alert | None:
    lock = for_update(tx) if for_update_lock else ""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?{lock}", (alert_id,))
    return _from_row(rows[0]) if rows else None


async def by_key(tx: Transaction, key: str) -> Alert | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE alert_key = ?", (key,))
    return _from_row(rows[0]) if rows else None


async def record(tx: Transaction, key: str, kind: str, status: str, event: dict[str, Any], value: float | None,
                 now: datetime, *, fired: bool) -> tuple[Alert, bool]:
    """Insert the alert or update it with this event; (the alert, True when it is new).

    A firing after a resolution clears the acknowledgement (it is a new incident); the
    snooze stays until it runs out.
    """
    moment = encode_time(utc(now, "now"))
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE alert_key = ?{for_update(tx)}", (key,))
    if not rows:
        inserted = await tx.fetch(
            "INSERT INTO alerts (alert_key, kind, status, event, history, fired_count, first_at, updated_at, revision) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (alert_key) DO NOTHING "
            f"RETURNING {_COLUMNS}",
            (key, kind, status, encode_json(event), encode_json([value] if value is not None else []),
             1 if fired else 0, moment, moment))
        if inserted:
            return _from_row(inserted[0]), True
        rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE alert_key = ?{for_update(tx)}", (key,))
    current = _from_row(rows[0])
    history = (current.history + ([value] if value is not None else []))[-HISTORY:]
    reopened = fired and current.status != status
    rows = await tx.fetch(
        "UPDATE alerts SET status = ?, event = ?, history = ?, fired_count = fired_count + ?, updated_at = ?, "
        "revision = revision + 1"
        + (", acknowledged_by = '', acknowledged_at = NULL" if reopened else "")
        + f" WHERE id = ? RETURNING {_COLUMNS}",
        (status, encode_json(event), encode_json(history), 1 if fired else 0, moment, current.id))
    return _from_row(rows[0]), False


async def acknowledge(tx: Transaction, alert_id: int, who: str, now: datetime) -> Alert | None:
    """Record who acknowledged; None when the alert does not exist."""
    rows = await tx.fetch("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, revision = revision + 1 "
                          f"WHERE id = ? RETURNING {_COLUMNS}", (who, encode_time(utc(now, "now")), alert_id))
    return _from_row(rows[0]) if rows else None


async def snooze(tx: Transaction, alert_id: int, who: str, until: datetime) -> Alert | None:
    rows = await tx.fetch("UPDATE alerts SET snoozed_by = ?, snoozed_until = ?, revision = revision + 1 "
                          f"WHERE id = ? RETURNING {_COLUMNS}", (who, encode_time(utc(until, "until")), alert_id))
    return _from_row(rows[0]) if rows else None


async def cards(tx: Transaction, alert_id: int) -> list[tuple[str, str]]:
    """(conversation_id, first card's outbox dedupe key) of every conversation showing the alert."""
    rows = await tx.fetch("SELECT conversation_id, first_key FROM alert_cards WHERE alert_id = ? "
                          "ORDER BY conversation_id", (alert_id,))
    return [(conversation, key) for conversation, key in rows]


async def remember_card(tx: Transaction, alert_id: int, conversation_id: str, first_key: str) -> None:
    """The outbox dedupe key of the alert's card in this conversation (replacing a lost one)."""
    await tx.execute("INSERT INTO alert_cards (alert_id, conversation_id, first_key) VALUES (?, ?, ?) "
                     "ON CONFLICT (alert_id, conversation_id) DO UPDATE SET first_key = excluded.first_key",
                     (alert_id, conversation_id, first_key))


async def recent(tx: Transaction, limit: int = 20) -> list[Alert]:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,))
    return [_from_row(row) for row in rows]
