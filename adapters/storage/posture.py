"""Security posture states: each checklist line's last status per workspace, since when, and its
transitions (issue 22). Tables of migration 17.

    changes = await posture.record(tx, "ml-prod", [(key, check, status, item, finding)], now)
    [c for c in changes if c.news]              # pass -> fail: posted to subscribers
    await posture.states(tx, "ml-prod")         # key -> CheckState (status, since when)
    await posture.turned_failing(tx, "ml-prod", since)     # for the digest's "Needs attention"
    if await posture.claim_scan(tx, "ml-prod", owner, now, every): ...   # one replica scans

A line's `status` is pass, fail or unknown ("cannot tell"); `known` is its last pass or fail and
`known_since` when it became that, so a read that fails for a while neither hides nor repeats a
change: fail -> unknown -> fail is not news, pass -> unknown -> fail is. A line seen for the first
time is never news (the first scan is the baseline). Transitions go to `posture_transitions` rather
than the audit trail: the audit records what people did through the bot (actor, command, approval),
and a posture change has no actor.

Lines of resources that are gone are forgotten, except those of a read that failed this time (`keep`:
check id prefixes such as "compute-").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from adapters.storage.base import Transaction, decode_optional_time, decode_time, encode_time, for_update, utc

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@dataclass(frozen=True)
class CheckState:
    key: str
    check: str
    status: str
    since: datetime                  # when it took this status
    known: str                       # last pass or fail ("" while never known)
    known_since: datetime | None
    turned_failing_at: datetime | None   # the last pass -> fail, while it still fails
    item: str = ""
    finding: str = ""
    checked_at: datetime | None = None


@dataclass(frozen=True)
class Change:
    key: str
    check: str
    before: str                      # the stored status ("" when first seen)
    after: str
    known_before: str
    state: CheckState

    @property
    def news(self) -> bool:
        """A check that turned from pass to fail (through "cannot tell" or not)."""
        return self.after == FAIL and self.known_before == PASS

    @property
    def recovered(self) -> bool:
        return self.after == PASS and self.known_before == FAIL


_COLUMNS = "check_key, check_id, status, since, known, known_since, turned_failing_at, item, finding, checked_at"


def _state(row: Sequence[Any]) -> CheckState:
    key, check, status, since, known, known_since, turned, item, finding, checked_at = row
    return CheckState(key, check, status, decode_time(since), known, decode_optional_time(known_since),
                      decode_optional_time(turned), item, finding, decode_optional_time(checked_at))


async def states(tx: Transaction, workspace: str) -> dict[str, CheckState]:
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM posture_checks WHERE workspace = ?", (workspace,))
    return {row[0]: _state(row) for row in rows}


async def record(tx: Transaction, workspace: str, lines: Iterable[tuple[str, str, str, str, str]], now: datetime,
                 *, keep: Iterable[str] = ()) -> list[Change]:
    """Store this scan's lines (key, check id, status, checklist item, finding); the changes it made.
    Rows of checks not in this scan are deleted unless their check id starts with one of `keep`
    (e.g. "compute-": the compute could not be read this time, so its lines are not known gone)."""
    now = utc(now, "now")
    at = encode_time(now)
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM posture_checks WHERE workspace = ?{for_update(tx)}", (workspace,))
    before = {row[0]: _state(row) for row in rows}
    changes: list[Change] = []
    seen = set()
    # a scan has a line or two per endpoint: its writes are gathered and sent as one batch per kind
    # of statement (Transaction.execute_many), not one trip to the database per line
    inserts: list[tuple[Any, ...]] = []
    checked: list[tuple[Any, ...]] = []
    turned_rows: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    for key, check, status, item, finding in lines:
        if status not in (PASS, FAIL, UNKNOWN):
            raise ValueError(f"unknown posture status {status!r}")
        seen.add(key)
        old = before.get(key)
        if old is None:
            known = status if status != UNKNOWN else ""
            inserts.append((workspace, key, check, status, at, known, at if known else None, item, finding, at))
            continue
        if old.status == status:
            checked.append((item, finding, at, workspace, key))
            continue
        known, known_since = old.known, old.known_since
        turned = old.turned_failing_at
        if status != UNKNOWN and status != old.known:
            known, known_since = status, now
            turned = now if (status == FAIL and old.known == PASS) else None
        turned_rows.append((status, at, known, encode_time(known_since) if known_since else None,
                            encode_time(turned) if turned else None, item, finding, at, workspace, key))
        moves.append((workspace, key, old.status, status, at, finding))
        changes.append(Change(key, check, old.status, status, old.known,
                              CheckState(key, check, status, now, known, known_since, turned, item, finding, now)))
    await tx.execute_many(
        "INSERT INTO posture_checks (workspace, check_key, check_id, status, since, known, known_since, "
        "turned_failing_at, item, finding, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) "
        "ON CONFLICT (workspace, check_key) DO NOTHING", inserts)
    await tx.execute_many("UPDATE posture_checks SET item = ?, finding = ?, checked_at = ? "
                          "WHERE workspace = ? AND check_key = ?", checked)
    await tx.execute_many(
        "UPDATE posture_checks SET status = ?, since = ?, known = ?, known_since = ?, turned_failing_at = ?, "
        "item = ?, finding = ?, checked_at = ? WHERE workspace = ? AND check_key = ?", turned_rows)
    await tx.execute_many(
        "INSERT INTO posture_transitions (workspace, check_key, before_status, after_status, at, finding) "
        "VALUES (?, ?, ?, ?, ?, ?)", moves)
    kept = tuple(keep)
    await tx.execute_many("DELETE FROM posture_checks WHERE workspace = ? AND check_key = ?",
                          [(workspace, key) for key, old in before.items()
                           if key not in seen and not (kept and old.check.startswith(kept))])
    return changes


async def transitions(tx: Transaction, workspace: str, key: str | None = None,
                      limit: int = 50) -> list[tuple[str, str, str, datetime, str]]:
    """(key, before, after, at, finding), newest first."""
    where, params = "workspace = ?", [workspace]
    if key is not None:
        where, params = where + " AND check_key = ?", params + [key]
    rows = await tx.fetch(f"SELECT check_key, before_status, after_status, at, finding FROM posture_transitions "
                          f"WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit))
    return [(k, b, a, decode_time(at), f) for k, b, a, at, f in rows]


async def turned_failing(tx: Transaction, workspace: str, since: datetime) -> list[CheckState]:
    """The lines of `workspace` that turned from pass to fail at or after `since` and fail still."""
    rows = await tx.fetch(f"SELECT {_COLUMNS} FROM posture_checks WHERE workspace = ? AND status = ? "
                          "AND turned_failing_at IS NOT NULL AND turned_failing_at >= ? ORDER BY turned_failing_at",
                          (workspace, FAIL, encode_time(utc(since, "since"))))
    return [_state(row) for row in rows]


async def claim_scan(tx: Transaction, workspace: str, owner: str, now: datetime, every: timedelta) -> bool:
    """Take the workspace's due scan (compare-and-set of its next time): True for one caller per period."""
    now = utc(now, "now")
    await tx.execute("INSERT INTO posture_scans (workspace, next_at, claimed_by) VALUES (?, ?, '') "
                     "ON CONFLICT (workspace) DO NOTHING", (workspace, encode_time(now)))
    changed = await tx.execute("UPDATE posture_scans SET next_at = ?, claimed_by = ? WHERE workspace = ? "
                               "AND next_at <= ?", (encode_time(now + every), owner, workspace, encode_time(now)))
    return changed == 1
