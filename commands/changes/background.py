"""Long-running changes: acknowledge at once, report the outcome to the same conversation later."""

from __future__ import annotations

from adapters.nonblocking import PendingOperation
from adapters.service import REQUESTED_BY, Job, ServiceError
from commands.changes.change import Accepted
from commands.base.context import Context, Reply
from commands.changes.job_watch import watch_job


async def outcome(operation: PendingOperation, where: str) -> Reply:
    """Wait for Azure ML to finish; the reply says what happened, with Azure's own words on failure."""
    try:
        summary = await operation.wait()
    except ServiceError as error:
        code = f" ({error.code})" if error.code else ""
        return Reply(f"❌ The {operation.kind} change on {operation.target} failed{code}: {error.message} [{where}]",
                     ok=False)
    return Reply(f"✅ {summary} [{where}]", ok=True)


def accepted(ctx: Context, operation: PendingOperation, what: str) -> Accepted:
    """Tell the user right away; the gate waits for the outcome and reports it."""
    return Accepted(Reply(f"⏳ {what} Azure ML is applying it; I'll post here when it's done. [{ctx.where}]"),
                    outcome(operation, ctx.where))


def requested_tags(ctx: Context) -> dict[str, str]:
    """The tags a job started from chat carries: who asked (the requester, when approved by another)."""
    return {REQUESTED_BY: ctx.asked_by}


async def started(ctx: Context, job: Job, what: str, *, model: str = "") -> Reply:
    """A job was started from chat: say so now; its end is reported in the conversation that asked
    (a stored watch, commands.changes.job_watch: a restart only delays the report). `model`: a retraining,
    whose report names the version it registered."""
    await watch_job(ctx, job, what, model=model)
    return Reply(f"⏳ {what} started job {job.name} ({job.status}). I'll post here when it ends; meanwhile "
                 f"`job {job.name}` shows it. [{ctx.where}]")
