"""Conversations the bot can reach proactively: `ConversationRecord` and its repository functions.

Each function takes the open `Transaction`, so it composes with others in one unit of work.
A conversation where Teams answered 403/404 (the bot was removed) is marked gone, and the
outbox skips it until the bot is added again (saving the conversation clears the mark).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from adapters.storage.base import Transaction, decode_json, decode_time, encode_time

CONVERSATION_KINDS = ("personal", "groupChat", "channel")


@dataclass(frozen=True)
class ConversationRecord:
    """Where the bot can send proactive messages: one Teams conversation.

    `reference` is the serialized Bot Framework ConversationReference (a JSON-compatible dict).
    `user_id` is the user's aadObjectId for a personal chat and "" otherwise; `team_id` and
    `channel_id` are "" outside channels. `updated_at` must be timezone-aware; it is kept in UTC.
    """

    conversation_id: str
    kind: str
    reference: dict[str, Any]
    tenant_id: str
    team_id: str
    channel_id: str
    user_id: str
    updated_at: datetime

    def __post_init__(self) -> None:
        if not self.conversation_id:
            raise ValueError("conversation_id must not be empty")
        if self.kind not in CONVERSATION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONVERSATION_KINDS)}, not {self.kind!r}")
        if not isinstance(self.reference, dict):
            raise ValueError("reference must be a dict (a serialized ConversationReference)")
        if not isinstance(self.updated_at, datetime) or self.updated_at.tzinfo is None:
            raise ValueError("updated_at must be a timezone-aware datetime")
        object.__setattr__(self, "updated_at", self.updated_at.astimezone(timezone.utc))


_COLUMNS = "conversation_id, kind, reference, tenant_id, team_id, channel_id, user_id, updated_at"


def _from_row(row: Sequence[Any]) -> ConversationRecord:
    conversation_id, kind, reference, tenant_id, team_id, channel_id, user_id, updated_at = row
    return ConversationRecord(conversation_id=conversation_id, kind=kind, reference=decode_json(reference),
                              tenant_id=tenant_id, team_id=team_id, channel_id=channel_id,
                              user_id=user_id, updated_at=decode_time(updated_at))


async def save_conversation(tx: Transaction, ref: ConversationRecord) -> None:
    """Insert or replace the record with the same conversation_id (and clear a "gone" mark)."""
    await tx.execute(
        f"INSERT INTO conversations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (conversation_id) DO UPDATE SET kind = excluded.kind, "
        "reference = excluded.reference, tenant_id = excluded.tenant_id, "
        "team_id = excluded.team_id, channel_id = excluded.channel_id, "
        "user_id = excluded.user_id, updated_at = excluded.updated_at, gone_at = NULL",
        (ref.conversation_id, ref.kind, json.dumps(ref.reference, ensure_ascii=False), ref.tenant_id,
         ref.team_id, ref.channel_id, ref.user_id, encode_time(ref.updated_at)))


async def get_conversation(tx: Transaction, conversation_id: str) -> ConversationRecord | None:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM conversations WHERE conversation_id = ?", (conversation_id,))
    return _from_row(rows[0]) if rows else None


async def list_conversations(tx: Transaction, *, kind: str | None = None) -> list[ConversationRecord]:
    """All records (of one kind if given), ordered by conversation_id."""
    if kind is not None and kind not in CONVERSATION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CONVERSATION_KINDS)}, not {kind!r}")
    where, params = ("WHERE kind = ? ", (kind,)) if kind else ("", ())
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM conversations {where}ORDER BY conversation_id", params)
    return [_from_row(row) for row in rows]


async def mark_conversation_gone(tx: Transaction, conversation_id: str, now: datetime) -> bool:
    """Remember that Teams answered 403/404 for this conversation (the bot was removed).

    True when a stored conversation was marked now; False when it is unknown or already marked.
    """
    changed = await tx.execute("UPDATE conversations SET gone_at = ? WHERE conversation_id = ? AND gone_at IS NULL",
                               (encode_time(now), conversation_id))
    return changed == 1


async def is_gone(tx: Transaction, conversation_id: str) -> bool:
    """True when the conversation was marked gone (and not saved again since)."""
    rows = await tx.fetch("SELECT 1 FROM conversations WHERE conversation_id = ? AND gone_at IS NOT NULL",
                          (conversation_id,))
    return bool(rows)


async def gone_since(tx: Transaction, conversation_id: str) -> datetime | None:
    """When the conversation was marked gone, or None."""
    rows = await tx.fetch("SELECT gone_at FROM conversations WHERE conversation_id = ?", (conversation_id,))
    return decode_time(rows[0][0]) if rows and rows[0][0] is not None else None
