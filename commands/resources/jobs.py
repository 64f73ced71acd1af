"""Job and pipeline commands: jobs, job, cancel."""

from __future__ import annotations

from adapters.service import JOB_STATUSES, REQUESTED_BY, Job, NotFound
from commands.changes.background import accepted
from commands.base.context import Context, Reply, Role
from commands.changes.change import Accepted, Change, Stale, settled
from commands.base.registry import Arg, command, one_of, whole_number
from commands.resources.job_rows import job_row, status_text
from commands.base.studio import open_in_studio, studio
from commands.base.ui import button, card, columns, facts, limited, plain, reply, section, text, when

MAX_JOBS = 50
DISPLAY_NAME_SCAN = 200      # how many recent jobs a display name is looked up among


def jobs_card(jobs: list[Job], *, status: str | None, workspace: str) -> dict:
    title = f"{status} jobs" if status else "Recent jobs"
    return card(title, limited(jobs, job_row, noun="job"), subtitle=workspace)


def child_row(job: Job) -> dict:
    """A pipeline step, with its id (which `job` and the Azure portal know it by)."""
    named = [text(plain(job.display_name))] if job.display_name and job.display_name != job.name else []
    return columns(named + [text(f"id {job.name}", subtle=True, spacing="None" if named else None)],
                   status_text(job), widths=["stretch", "auto"])


def requested_or_created(job: Job) -> tuple[str, str]:
    """Jobs the bot started say who asked for them, not the bot's own identity."""
    if job.tags.get(REQUESTED_BY):
        return "Requested by", f"{plain(job.tags[REQUESTED_BY])} from chat"
    return "By", plain(job.created_by)


def job_card(job: Job, *, workspace: str, studio_url: str | None = None) -> dict:
    body = [status_text(job),
            facts([("Name", job.name), ("Type", job.type), ("Experiment", job.experiment), ("Compute", job.compute),
                   ("Created", when(job.created_at)), ("Started", when(job.started_at)),
                   ("Ended", when(job.ended_at)), requested_or_created(job)])]
    if job.error:
        body += [section("Error"), text(plain(job.error), color="Attention")]
    if job.children:
        body += [section("Steps"), *limited(list(job.children), child_row, noun="step")]
    actions = [button("Refresh", "job", job.name, refresh=True)]
    if not job.terminal:
        actions.append(button("Cancel job", "cancel", job.name, style="destructive"))
    return card(f"Job {plain(job.display_name or job.name)}", body, subtitle=workspace,
                actions=actions + open_in_studio(studio_url))


@command("jobs", Arg("--status", type=one_of(JOB_STATUSES, "status"), help="only jobs in this status", metavar="STATUS"),
         Arg("--limit", type=whole_number(1, MAX_JOBS, "jobs"), default=10, help=f"how many (1 to {MAX_JOBS}, default 10)", metavar="N"),
         phrases=("jobs", "list jobs", "recent jobs", "failed jobs", "running jobs", "what is running",
                  "what failed", "queued jobs", "pipelines", "pipeline runs", "training runs", "what is training",
                  "any failures", "what broke", "job failures", "experiments", "runs"),
         summary="List recent jobs and pipelines, newest first.", example="jobs --status Failed --limit 5", common=True)
async def jobs(ctx: Context, status: str | None, limit: int) -> Reply:
    found = await ctx.ml.list_jobs(status=status, limit=limit)
    return reply(jobs_card(found, status=status, workspace=ctx.where))


@command("job", Arg("name", help="a job's id, or its display name when no other job has it"),
         phrases=("show job", "job details", "why did job fail", "what happened to job", "status of job",
                  "job status", "error of", "how far is", "pipeline steps", "status of {job}",
                  "what happened to {job}"),
         summary="Show one job: status, times, error, pipeline steps.", example="job frosty_kettle_8k2x9q7m")
async def job(ctx: Context, name: str) -> Reply:
    site = studio(ctx)
    try:
        found = await ctx.ml.get_job(name)
    except NotFound:
        named = [j for j in await ctx.ml.list_jobs(limit=DISPLAY_NAME_SCAN) if j.display_name.lower() == name.lower()]
        if not named:
            raise
        if len(named) > 1:
            return reply(card(f"{len(named)} jobs are named {plain(named[0].display_name)}", [
                text("Pick one by its id:", subtle=True), *limited(named, job_row, noun="job")], subtitle=ctx.where))
        found = await ctx.ml.get_job(named[0].name)
    return reply(job_card(found, workspace=ctx.where, studio_url=site.job(found.name) if site else None))


@command("cancel", Arg("job", help="a running or queued job"),
         phrases=("cancel", "kill", "abort", "stop job", "stop run", "stop pipeline", "terminate job",
                  "cancel job", "stop training"),
         summary="Cancel a running or queued job.",
         role=Role.OPERATOR, example="cancel amber_river_7d3kq9wz", change=True)
async def cancel(ctx: Context, job: str) -> Reply:
    found = await ctx.ml.get_job(job)
    if found.terminal:
        return Reply(f"Job {job} has already ended ({found.status}); nothing to cancel. [{ctx.where}]")
    return await ctx.gate.submit(ctx, Change(
        action="cancel", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"job {job}",
        parameters={"job": job}, before={"status": found.status}, after={"status": "Canceled"},
        summary=f"Cancel job {found.display_name or job} ({job}), now {found.status}"))


async def apply_cancel(ctx: Context, change: Change) -> Reply | Accepted:
    job = change.parameters["job"]
    found = await ctx.ml.get_job(job)
    if found.terminal:
        raise Stale(f"job {job} has ended meanwhile ({found.status}).")
    operation = await ctx.ml.cancel_job(job)
    return accepted(ctx, operation, f"Job {job} is being canceled.")


async def canceled(ctx: Context, change: Change) -> Reply | None:
    """After a restart: was the job canceled (None while it is being canceled)?"""
    found = await ctx.ml.get_job(change.parameters["job"])
    return settled(ctx, change, {"status": found.status}, busy=found.status == "CancelRequested")
