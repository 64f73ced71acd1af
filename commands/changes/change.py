"""What a change is, and what declaring one says: the contract between change commands and the gate.

A change command reads what it is about to change and builds a `Change` (what, where, before ->
after). The gate (commands/changes/gate.py) decides whether and when it runs; what *running* it means is
declared once per action as a `ChangeKind`, and every kind is listed in one table,
commands/changes/kinds.py, so a reader sees in one place what each change does:

    execute    carry it out: re-read the target (raise `Stale` when it is no longer the "before"
               that was approved), call the workspace, and return a `Reply` (done now) or
               `Accepted` (Azure applies it in the background: acknowledge now, outcome later)
    prepare    read before it runs, outside any transaction (figures a watch compares with later)
    record     write, inside the transaction that audits its success, what else it did
    recheck    after a restart, tell from the resource whether an operation left in flight ended
    gather     the evidence an approver decides on
    starts_run it starts a job and leaves its target as it was (never joined, never supersedes)

This module holds only types and pure helpers; it imports neither the gate nor any command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence, Union

from commands.base.context import Context, Reply

if TYPE_CHECKING:
    from adapters.storage.approvals import Approval


@dataclass(frozen=True)
class Change:
    """One change, complete enough to be shown, approved, audited and executed later.

    `parameters` is all the executor needs (JSON); `before`/`after` are what people see on the card
    and what the executor re-checks; `summary` is one line ("traffic on fraud-api: ...").
    """

    action: str
    workspace: str
    environment: str
    target: str
    parameters: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    summary: str
    reason: str = ""


class Stale(Exception):
    """The target changed since the request was made; the message says how."""


@dataclass(frozen=True)
class Accepted:
    """An executor's answer when Azure applies the change in the background: `reply` now (the
    acknowledgement), `outcome` later. The gate awaits `outcome`, records it, and edits what the
    turn showed (the approval card, or the acknowledgement) with it."""

    reply: Reply
    outcome: Awaitable[Reply]


Executor = Callable[[Context, Change], Awaitable[Union[Reply, Accepted]]]
# A preparer runs just before the executor, outside any transaction, and may read the workspace;
# what it returns ("notes") reaches the recorders. Its failure never blocks the change.
Preparer = Callable[[Context, Change], Awaitable[dict[str, Any]]]
# A recorder runs inside the transaction that audits the change's success (`tx`), so what it writes
# is committed with that record or not at all.
Recorder = Callable[[Any, Context, Change, "Approval | None", datetime, dict[str, Any]], Awaitable[None]]
# After a restart: a Reply (ok True or False) when the operation has finished, None while it runs.
Recheck = Callable[[Context, Change], Awaitable["Reply | None"]]
# What an approver needs to decide a request: read when it opens and again when a voter opens its card.
Gatherer = Callable[[Context, Change], Awaitable[dict[str, Any]]]


def never(parameters: Mapping[str, Any]) -> bool:
    return False


def always(parameters: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class ChangeKind:
    """Everything the gate needs to know about one action, declared in one place."""

    action: str
    execute: Executor
    prepare: Sequence[Preparer] = ()
    record: Sequence[Recorder] = ()
    recheck: Recheck | None = None
    gather: Gatherer | None = None
    starts_run: Callable[[Mapping[str, Any]], bool] = never   # given the change's parameters


def kinds(*declared: ChangeKind) -> dict[str, ChangeKind]:
    """The table the gate is given, keyed by action; an action declared twice is a mistake."""
    table: dict[str, ChangeKind] = {}
    for kind in declared:
        if kind.action in table:
            raise ValueError(f"change {kind.action!r} declared twice")
        table[kind.action] = kind
    return table


def _shown(state: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in state.items()) or "nothing"


def settled(ctx: Context, change: Change, current: dict[str, Any], *, busy: bool = False) -> Reply | None:
    """How a change a stopped process left in flight ended, from what its target shows now
    (`current`, in the shape of the change's before/after): done when it shows the after-state,
    not done when it still shows the before-state, otherwise "could not tell". None while the
    target is `busy` (Azure is still applying something: look again later). Rechecks use it."""
    if busy:
        return None
    where = f" [{ctx.where}]"
    if all(current.get(key) == value for key, value in change.after.items()):
        return Reply(f"✅ {change.summary}: done ({change.target} shows {_shown(change.after)}).{where}", ok=True)
    if all(current.get(key) == value for key, value in change.before.items()):
        return Reply(f"❌ Not done: {change.summary}. The bot stopped before it took effect: {change.target} still "
                     f"shows {_shown(current)}. Ask again if it is still wanted.{where}", ok=False)
    return Reply(f"⚠️ Could not tell whether {change.summary} took effect: {change.target} shows {_shown(current)}, "
                 f"neither the before nor the after. Look at {change.target}.{where}", ok=False)
