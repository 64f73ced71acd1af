"""Sliding-window rate limits shared by every replica on one database (issue 17).

Each send is one row (`key`, `sent_at` in seconds since the epoch). `acquire` looks at the recent
sends of every key the send counts against (Teams: its conversation and its tenant), and either
records the send for all of them and answers 0, or records nothing and answers how many seconds
to wait. Checking and recording happen in one transaction under a lock per key (SQLite: the
write transaction; PostgreSQL: a transaction-scoped advisory lock), so two replicas asking at
the same moment cannot both take the last free slot.

    wait = await rate_limits.acquire(tx, [("conversation:19:a", ((1.0, 7), (30.0, 60))),
                                          ("tenant:t1", ((1.0, 30),))], now=time.time())

The gate counts changes here too (commands/changes/ratelimit.py: keys `change:<user>` and `pipeline:*`), in
the transaction that opens the request. The outbox worker's `prune` forgets every key's old sends.

A window (seconds, limit) is closed: a send at t counts until t + seconds inclusive, so any
interval of that length, ends included, holds at most `limit` sends. The wait returned therefore
ends just after the oldest counted send leaves its window (RESOLUTION later).
"""

from __future__ import annotations

from typing import Sequence

from adapters.storage.base import Transaction

Windows = Sequence[tuple[float, int]]
RESOLUTION = 0.001        # seconds: a send may go this long after the oldest one leaves its window
KEEP_SECONDS = 3600.0     # sends are kept this long (at least every window; diagnostics, tests), then pruned


def wait_time(sent: Sequence[float], windows: Windows, now: float) -> float:
    """Seconds until one more send fits every window, given the earlier sends' times (any order)."""
    wait = 0.0
    ordered = sorted(sent)
    for window, limit in windows:
        inside = [t for t in ordered if t >= now - window]
        if len(inside) >= limit:
            # the send that must leave the window before one more fits
            wait = max(wait, inside[len(inside) - limit] + window - now + RESOLUTION)
    return max(0.0, wait)


async def acquire(tx: Transaction, limits: Sequence[tuple[str, Windows]], *, now: float) -> float:
    """Record one send against every key now and return 0, or return the seconds to wait (nothing recorded)."""
    keys = sorted({key for key, _ in limits})
    if tx.dialect == "postgres":
        for key in keys:     # in a fixed order: two replicas locking the same keys cannot deadlock
            await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(?))", (f"rate-limit:{key}",))
    wait = 0.0
    for key, windows in limits:
        longest = max(window for window, _ in windows)
        rows = await tx.fetch("SELECT sent_at FROM rate_limit_sends WHERE key = ? AND sent_at >= ?",
                              (key, now - longest))
        wait = max(wait, wait_time([float(at) for (at,) in rows], windows, now))
    if wait > 0:
        return wait
    for key in keys:
        await tx.execute("INSERT INTO rate_limit_sends (key, sent_at) VALUES (?, ?)", (key, now))
    return 0.0


async def prune(tx: Transaction, *, now: float, keep: float = KEEP_SECONDS) -> int:
    """Delete sends older than `keep` seconds (keep at least the longest window); return how many.
    On PostgreSQL only one transaction prunes at a time; the others skip it (and answer 0)."""
    if tx.dialect == "postgres":
        [(locked,)] = await tx.fetch("SELECT pg_try_advisory_xact_lock(hashtext('rate-limit-prune'))")
        if not locked:
            return 0
    return await tx.execute("DELETE FROM rate_limit_sends WHERE sent_at < ?", (now - keep,))


async def sends(tx: Transaction, key: str) -> list[float]:
    """The recorded sends of one key, oldest first (for tests and diagnostics)."""
    return [float(at) for (at,) in await tx.fetch(
        "SELECT sent_at FROM rate_limit_sends WHERE key = ? ORDER BY sent_at, id", (key,))]
