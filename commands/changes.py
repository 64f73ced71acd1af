"""Long-running changes: acknowledge at once, report the outcome to the same conversation later."""

from __future__ import annotations

from adapters.nonblocking import PendingOperation
from adapters.service import ServiceError
from commands.context import Context, Reply


async def outcome(operation: PendingOperation, where: str) -> Reply:
    """Wait for Azure ML to finish; the reply says what happened, with Azure's own words on failure."""
    try:
        summary = await operation.wait()
    except ServiceError as error:
        code = f" ({error.code})" if error.code else ""
        return Reply(f"❌ The {operation.kind} change on {operation.target} failed{code}: {error.message} [{where}]",
                     ok=False)
    return Reply(f"✅ {summary} [{where}]", ok=True)


def accepted(ctx: Context, operation: PendingOperation, what: str) -> Reply:
    """Start waiting in the background and tell the user right away."""
    ctx.follow_up(outcome(operation, ctx.where))
    return Reply(f"⏳ {what} Azure ML is applying it; I'll post here when it's done. [{ctx.where}]")
