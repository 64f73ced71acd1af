"""Approval requests in chat: approvals, approval, approve, reject, confirm, withdraw, review.

Each is a thin command over `commands.changes.gate.Gate`, which decides and records; the card is
`commands.changes.approval_card.approval_card`.
"""

from __future__ import annotations

import argparse

from commands.changes.approval_card import approval_row
from commands.base.context import Context, Reply, Role
from commands.base.registry import MAX_ID, Arg, UsageError, command, whole_number
from commands.base.ui import card, limited, reply

_WHOLE_REQUEST_NUMBER = whole_number(1, MAX_ID, "request number")


def request_number(value: str) -> int:
    """An argument type: a request number as cards and `approvals` show it (#42 or 42)."""
    try:
        return _WHOLE_REQUEST_NUMBER(value.removeprefix("#"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"'{value[:20]}' is not a request number; they look like 42 "
                                         "(type `approvals` to see them)") from None


def _gate(ctx: Context):
    if ctx.gate is None:
        raise UsageError("Approvals are not available in this chat.")
    return ctx.gate


# ---------------------------------------------------------------- commands

@command("approvals", Arg("which", nargs="?", choices=("pending", "mine", "all"),
                          help="pending (default), mine (asked by or waiting for you) or all"),
         phrases=("approvals", "open requests", "pending requests", "pending approvals", "waiting for approval",
                  "what is waiting", "requests", "my requests", "waiting for me", "what should i approve",
                  "anything to approve", "needs my approval"),
         summary="List approval requests: pending ones, yours, or all.", example="approvals pending",
         uses_workspace=False, group="approve", common=True)
async def list_approvals(ctx: Context, which: str | None) -> Reply:
    which = which or "pending"
    gate = _gate(ctx)
    found = await gate.list_requests(ctx, which)
    title = {"pending": "Pending approval requests", "mine": "Your approval requests",
             "all": "Approval requests"}[which]
    return reply(card(title, limited(found, approval_row, noun="request")))


@command("approval", Arg("id", type=request_number, help="the request number, as the card shows it"),
         phrases=("request details", "who approved request", "votes on", "status of request", "request number",
                  "show request {number}"),
         summary="Show one approval request with its votes and outcome.", example="approval 42",
         uses_workspace=False, group="approve")
async def approval(ctx: Context, id: int) -> Reply:
    return await _gate(ctx).show(ctx, id)


@command("approve", Arg("id", type=request_number, help="the request number"),
         Arg("comment", nargs="*", help="an optional comment, kept in the audit trail"),
         phrases=("approve", "lgtm", "sign off", "accept request", "green light"),
         summary="Approve a change someone asked for.", role=Role.OPERATOR, example="approve 42 looks good",
         uses_workspace=False, group="approve", common=True)
async def approve(ctx: Context, id: int, comment: list[str]) -> Reply:
    return await _gate(ctx).vote(ctx, id, "approve", " ".join(comment))


@command("reject", Arg("id", type=request_number, help="the request number"),
         Arg("reason", nargs="*", help="why, kept in the audit trail"),
         phrases=("reject", "deny", "decline", "refuse", "turn down request", "veto"),
         summary="Reject a change someone asked for.", role=Role.OPERATOR,
         example="reject 42 not during the sale", uses_workspace=False, group="approve", common=True)
async def reject(ctx: Context, id: int, reason: list[str]) -> Reply:
    return await _gate(ctx).vote(ctx, id, "reject", " ".join(reason))


@command("confirm", Arg("id", type=request_number, help="the request number"),
         phrases=("confirm", "yes do it", "go ahead with"),
         summary="Confirm a change you asked for (when the policy asks for a confirmation).",
         role=Role.OPERATOR, example="confirm 42", uses_workspace=False, group="approve")
async def confirm(ctx: Context, id: int) -> Reply:
    return await _gate(ctx).vote(ctx, id, "approve", "")


@command("withdraw", Arg("id", type=request_number, help="the request number"),
         phrases=("withdraw", "take back request", "retract", "cancel my request", "never mind request",
                  "withdraw my request"),
         summary="Withdraw a change you asked for that is still waiting.", role=Role.OPERATOR,
         example="withdraw 42", uses_workspace=False, group="approve")
async def withdraw(ctx: Context, id: int) -> Reply:
    return await _gate(ctx).withdraw(ctx, id)


@command("review", Arg("change", type=whole_number(1, MAX_ID, "change number"),
                       help="the change number, as its review card shows it"),
         Arg("comment", nargs="*", help="an optional comment, kept in the audit trail"),
         phrases=("review", "reviewed", "looked at the rollback", "review the change"),
         summary="Review a change that ran at once (a rollback or an emergency): recorded in the audit trail.",
         role=Role.OPERATOR, example="review 7 right call, green was failing", uses_workspace=False,
         group="approve")
async def review(ctx: Context, change: int, comment: list[str]) -> Reply:
    return await _gate(ctx).review(ctx, change, " ".join(comment))
