"""Deduplication of what arrives more than once: redelivered Teams activities, webhook events.

`first_time(tx, key, now)` is `INSERT ... ON CONFLICT DO NOTHING`: exactly one caller, across
replicas and restarts, sees True for a key. Keys are namespaced by the caller, e.g.
"activity:<id>" or "eventgrid:<id>". `prune` forgets keys older than the redelivery window.
"""

from __future__ import annotations

from datetime import datetime

from adapters.storage.base import Transaction, encode_time, utc


async def first_time(tx: Transaction, key: str, now: datetime) -> bool:
    """Remember `key`; True when it was not seen before (the caller should handle it)."""
    if not key:
        raise ValueError("key must not be empty")
    changed = await tx.execute("INSERT INTO inbox (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                               (key, encode_time(utc(now, "now"))))
    return changed == 1


async def prune(tx: Transaction, older_than: datetime) -> int:
    """Forget keys first seen before `older_than`; return how many were removed."""
    return await tx.execute("DELETE FROM inbox WHERE seen_at < ?", (encode_time(utc(older_than, "older_than")),))
