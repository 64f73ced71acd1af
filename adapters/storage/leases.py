"""Claim with a lease: how a row is taken by one process at a time, and taken back when it stops.

Watches (`watches`), job watches (`job_watches`) and operations left in flight
(`pending_operations`) are worked on by whichever replica claims them first. A claim is a
compare-and-set that writes the claimer (`claimed_by`) and when its lease runs out
(`claimed_until`); a process that stops mid-way simply lets the lease run out, and the row is
claimable again. One `Lease` per table says which states mean "free" and "held":

    WATCHES = Lease("watches", free=WATCHING, held=EVALUATING)
    ids = await WATCHES.claim_due(tx, owner, now=now, seconds=120, where="started_at <= ?", params=(...),
                                  order="started_at, id", limit=10)

`keep_state` (operations): the row stays in its state while held, and its holder may claim it
again (a restarted instance takes back its own claims at once, adapters.storage.instances).

The outbox leases too, but claims a batch in one statement that keeps each conversation's
messages in order (adapters/storage/outbox.py); its lease columns are `lease_owner` and
`lease_until`, released the same way by `instances.take_back`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.storage.base import Transaction, encode_time, for_update, utc


@dataclass(frozen=True)
class Lease:
    table: str
    free: str = ""             # the state of a row nobody holds
    held: str = ""             # the state a claim moves it to
    keep_state: str = ""       # or: the one state claimable rows stay in while held (free/held unused)

    def claimable(self, now: datetime, owner: str = "") -> tuple[str, tuple[Any, ...]]:
        """The SQL condition (and its parameters) of a row that `owner` may claim at `now`."""
        moment = encode_time(utc(now, "now"))
        if self.keep_state:
            return ("state = ? AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?)",
                    (self.keep_state, moment, owner))
        return "(state = ? OR (state = ? AND claimed_until < ?))", (self.free, self.held, moment)

    async def take(self, tx: Transaction, row_id: int, owner: str, *, now: datetime, seconds: float) -> bool:
        """Claim row `row_id` for `owner` until `now + seconds`; True for the one caller that wins."""
        until = encode_time(utc(now, "now") + timedelta(seconds=seconds))
        condition, params = self.claimable(now, owner)
        state, state_params = ("", ()) if self.keep_state else ("state = ?, ", (self.held,))
        changed = await tx.execute(
            f"UPDATE {self.table} SET {state}claimed_by = ?, claimed_until = ? WHERE id = ? AND {condition}",
            (*state_params, owner, until, row_id, *params))
        return changed == 1

    async def claim_due(self, tx: Transaction, owner: str, *, now: datetime, seconds: float, where: str,
                        params: tuple[Any, ...], order: str, limit: int) -> list[int]:
        """Claim up to `limit` claimable rows that also match `where`, in `order`; their ids, in order.
        Rows another transaction is claiming are skipped (PostgreSQL: SKIP LOCKED), never waited for."""
        condition, claimable_params = self.claimable(now, owner)
        rows = await tx.fetch(
            f"SELECT id FROM {self.table} WHERE {where} AND {condition} ORDER BY {order} LIMIT ?"
            f"{for_update(tx, skip_locked=True)}", (*params, *claimable_params, limit))
        return [int(row_id) for (row_id,) in rows
                if await self.take(tx, int(row_id), owner, now=now, seconds=seconds)]

    async def release(self, tx: Transaction, row_id: int, owner: str, *, state: str = "",
                      also: str = "", also_params: tuple[Any, ...] = ()) -> bool:
        """Give back `owner`'s claim on `row_id` (moving it to `state`, and setting `also`);
        False when `owner` no longer holds it."""
        sets = (["state = ?"] if state else []) + ([also] if also else [])
        sets_params = ((state,) if state else ()) + also_params
        held = "" if self.keep_state else " AND state = ?"
        changed = await tx.execute(
            f"UPDATE {self.table} SET {', '.join([*sets, 'claimed_by = ?', 'claimed_until = NULL'])} "
            f"WHERE id = ?{held} AND claimed_by = ?",
            (*sets_params, "", row_id, *(() if self.keep_state else (self.held,)), owner))
        return changed == 1
