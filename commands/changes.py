"""Long-running changes: acknowledge at once, report the outcome to the same conversation later."""

from __future__ import annotations

import asyncio
import logging

from adapters.nonblocking import NonBlockingService, PendingOperation
from adapters.service import REQUESTED_BY, Job, ServiceError, Unavailable
from commands.context import Context, Reply, Watching
from commands.job_rows import status_text
from commands.ui import button, card, facts, reply, text, when

log = logging.getLogger(__name__)
JOB_POLL_SECONDS = 60.0          # how often a job started from chat is looked at until it ends
JOB_WATCH_SECONDS = 48 * 3600    # after this, stop watching and say so


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


def requested_tags(ctx: Context) -> dict[str, str]:
    """The tags a job started from chat carries: who asked."""
    return {REQUESTED_BY: ctx.user.name}


def started(ctx: Context, job: Job, what: str) -> Reply:
    """A job was started from chat: say so now, and report in this conversation when it ends.

    The watcher polls through the non-blocking facade; it lives in this process (a restart
    forgets it; durable watching comes with the job store)."""
    ctx.follow_up(Watching(job_ended(ctx.ml, job.name, requested_by=ctx.user.name, where=ctx.where),
                           f"job {job.name}"))
    return Reply(f"⏳ {what} started job {job.name} ({job.status}). I'll post here when it ends; meanwhile "
                 f"`job {job.name}` shows it. [{ctx.where}]")


async def job_ended(ml: NonBlockingService, name: str, *, requested_by: str, where: str,
                    poll_seconds: float | None = None, watch_seconds: float | None = None) -> Reply:
    poll = JOB_POLL_SECONDS if poll_seconds is None else poll_seconds
    budget = JOB_WATCH_SECONDS if watch_seconds is None else watch_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    job: Job | None = None
    while loop.time() < deadline:
        await asyncio.sleep(poll)
        try:
            job = await ml.get_job(name)
        except Unavailable as error:        # a blip: look again next time
            log.info("could not look at job %s: %s", name, error.message)
            continue
        if job.terminal:
            return reply(job_ended_card(job, requested_by=requested_by, where=where))
    return Reply(f"Job {name} has not ended after {budget / 3600:g} hours; I stopped watching it. "
                 f"`job {name}` shows where it is. [{where}]")


JOB_ENDED_ICONS = {"Completed": "✅", "Failed": "❌", "Canceled": "⚠️"}


def job_ended_card(job: Job, *, requested_by: str, where: str) -> dict:
    icon = JOB_ENDED_ICONS.get(job.status, "")
    body = [status_text(job),
            facts([("Name", job.name), ("Requested by", f"{requested_by} from chat"),
                   ("Started", when(job.started_at)), ("Ended", when(job.ended_at))])]
    if job.error:
        body.append(text(job.error, color="Attention"))
    return card(f"{icon} Job {job.display_name or job.name} {job.status.lower()}", body, subtitle=where,
                actions=[button("Details", "job", job.name)])
