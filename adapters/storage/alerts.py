"""Alerts: one row per alert (by its key, across firings), and the card each conversation shows.

    alert, fresh = await alerts.record(tx, key, kind, status, event_json, value, now)   # insert or update
    await alerts.card_of(tx, alert.id, conversation_id)      # the dedupe key of its first card there
    await alerts.remember_card(tx, alert.id, conversation_id, first_key)
    await alerts.acknowledge(tx, alert.id, "Bob Builder", now)
    await alerts.snooze(tx, alert.id, "Bob Builder", until)      # alerts.unsnooze(tx, alert.id)
    await alerts.resolve(tx, alert.id, "Bob Builder", now)
    await alerts.assign(tx, alert.id, user_id, "Bob Builder")
    await alerts.add_note(tx, alert.id, author_id, "Bob Builder", "restarted the scorer", now)
    await alerts.listed(tx, states=("open", "acknowledged"))   # for `alerts`
    await alerts.unacknowledged_firing(tx)                    # escalation candidates
    await alerts.mark_escalated(tx, alert.id, now)

`revision` counts every change of the row, so each card update gets its own outbox dedupe key.
`history` keeps the last HISTORY values (the worst figure of each firing) for the card's trend.
`fired_at` is when the current firing started (a firing after a resolution starts a new one and
clears the acknowledgement, the resolver and the escalation); `escalated_at` the last
re-notification of nobody acknowledging. Notes are kept per alert, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    fired_at: datetime | None = None
    resolved_by: str = ""
    resolved_at: datetime | None = None
    assignee_id: str = ""
    assignee_name: str = ""
    escalated_at: datetime | None = None
    history_at: list[datetime] = field(default_factory=list)     # when each `history` value was recorded

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > now

    def state(self, now: datetime) -> str:
        """open, acknowledged, snoozed or resolved (what `alerts` lists), or info (a notice)."""
        if self.status == "resolved":
            return "resolved"
        if self.status == "info":
            return "info"
        if self.snoozed(now):
            return "snoozed"
        return "acknowledged" if self.acknowledged_by else "open"


@dataclass(frozen=True)
class Note:
    id: int
    alert_id: int
    at: datetime
    author_id: str
    author_name: str
    body: str


_COLUMNS = ("id, alert_key, kind, status, event, history, fired_count, first_at, updated_at, acknowledged_by, "
            "acknowledged_at, snoozed_by, snoozed_until, revision, fired_at, resolved_by, resolved_at, assignee_id, "
            "assignee_name, escalated_at, history_at")


def _from_row(row: Sequence[Any]) -> Alert:
    (alert_id, key, kind, status, event, history, fired, first_at, updated_at, ack_by, ack_at, snoozed_by,
     snoozed_until, revision, fired_at, resolved_by, resolved_at, assignee_id, assignee_name, escalated_at,
     history_at) = row
    return Alert(int(alert_id), key, kind, status, decode_json(event), list(decode_json(history)), int(fired),
                 decode_time(first_at), decode_time(updated_at), ack_by, decode_optional_time(ack_at),
                 snoozed_by, decode_optional_time(snoozed_until), int(revision), decode_optional_time(fired_at),
                 resolved_by, decode_optional_time(resolved_at), assignee_id, assignee_name,
                 decode_optional_time(escalated_at), [decode_time(t) for t in decode_json(history_at or "[]")])


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
            "INSERT INTO alerts (alert_key, kind, status, event, history, fired_count, first_at, updated_at, revision, "
            "fired_at, history_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (alert_key) DO NOTHING "
            f"RETURNING {_COLUMNS}",
            (key, kind, status, encode_json(event), encode_json([value] if value is not None else []),
             1 if fired else 0, moment, moment, moment if fired else None,
             encode_json([moment] if value is not None else [])))
        if inserted:
            return _from_row(inserted[0]), True
        rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE alert_key = ?{for_update(tx)}", (key,))
    current = _from_row(rows[0])
    history = (current.history + ([value] if value is not None else []))[-HISTORY:]
    history_at = ([encode_time(t) for t in current.history_at] + ([moment] if value is not None else []))[-HISTORY:]
    reopened = fired and current.status != status
    rows = await tx.fetch(
        "UPDATE alerts SET status = ?, event = ?, history = ?, history_at = ?, fired_count = fired_count + ?, "
        "updated_at = ?, "
        "revision = revision + 1"
        + (", acknowledged_by = '', acknowledged_at = NULL, resolved_by = '', resolved_at = NULL, "
           "escalated_at = NULL, fired_at = ?" if reopened else "")
        + (", resolved_at = COALESCE(resolved_at, ?)" if status == "resolved" else "")
        + f" WHERE id = ? RETURNING {_COLUMNS}",
        (status, encode_json(event), encode_json(history), encode_json(history_at), 1 if fired else 0, moment,
         *((moment,) if reopened else ()), *((moment,) if status == "resolved" else ()), current.id))
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


async def unsnooze(tx: Transaction, alert_id: int) -> Alert | None:
    rows = await tx.fetch("UPDATE alerts SET snoozed_by = '', snoozed_until = NULL, revision = revision + 1 "
                          f"WHERE id = ? RETURNING {_COLUMNS}", (alert_id,))
    return _from_row(rows[0]) if rows else None


async def resolve(tx: Transaction, alert_id: int, who: str, now: datetime) -> Alert | None:
    """Resolved by a person (the sender may resolve it too: then `resolved_by` stays empty)."""
    rows = await tx.fetch("UPDATE alerts SET status = 'resolved', resolved_by = ?, resolved_at = ?, "
                          f"revision = revision + 1 WHERE id = ? RETURNING {_COLUMNS}",
                          (who, encode_time(utc(now, "now")), alert_id))
    return _from_row(rows[0]) if rows else None


async def assign(tx: Transaction, alert_id: int, user_id: str, user_name: str) -> Alert | None:
    rows = await tx.fetch("UPDATE alerts SET assignee_id = ?, assignee_name = ?, revision = revision + 1 "
                          f"WHERE id = ? RETURNING {_COLUMNS}", (user_id, user_name, alert_id))
    return _from_row(rows[0]) if rows else None


async def add_note(tx: Transaction, alert_id: int, author_id: str, author_name: str, body: str,
                   now: datetime) -> Alert | None:
    """Keep a note on the alert (its cards show the newest); the alert, or None when there is none."""
    rows = await tx.fetch("UPDATE alerts SET revision = revision + 1 "
                          f"WHERE id = ? RETURNING {_COLUMNS}", (alert_id,))
    if not rows:
        return None
    await tx.execute("INSERT INTO alert_notes (alert_id, at, author_id, author_name, body) VALUES (?, ?, ?, ?, ?)",
                     (alert_id, encode_time(utc(now, "now")), author_id, author_name, body))
    return _from_row(rows[0])


async def notes(tx: Transaction, alert_id: int) -> list[Note]:
    rows = await tx.fetch("SELECT id, alert_id, at, author_id, author_name, body FROM alert_notes "
                          "WHERE alert_id = ? ORDER BY id", (alert_id,))
    return [Note(int(i), int(a), decode_time(at), by_id, by_name, body) for i, a, at, by_id, by_name, body in rows]


async def listed(tx: Transaction, limit: int = 50) -> list[Alert]:
    """Firing alerts first (newest first), then the resolved ones, newest first."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE status <> 'info' "
                          "ORDER BY CASE WHEN status = 'fired' THEN 0 ELSE 1 END, updated_at DESC, id DESC LIMIT ?",
                          (limit,))
    return [_from_row(row) for row in rows]


async def unacknowledged_firing(tx: Transaction) -> list[Alert]:
    """Alerts firing with nobody on them: the escalation candidates."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM alerts WHERE status = 'fired' AND acknowledged_by = '' "
                          "ORDER BY id")
    return [_from_row(row) for row in rows]


async def mark_escalated(tx: Transaction, alert_id: int, now: datetime, *, previous: datetime | None) -> bool:
    """Compare-and-set of the last re-notification: True for the one replica that moves it."""
    moment = encode_time(utc(now, "now"))
    if previous is None:
        rows = await tx.fetch("UPDATE alerts SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL "
                              "RETURNING id", (moment, alert_id))
    else:
        rows = await tx.fetch("UPDATE alerts SET escalated_at = ? WHERE id = ? AND escalated_at = ? RETURNING id",
                              (moment, alert_id, encode_time(utc(previous, "previous"))))
    return bool(rows)
