"""Job and pipeline commands: jobs, job, cancel."""

from __future__ import annotations

from adapters.service import JOB_STATUSES, Job
from commands.changes import accepted
from commands.context import Context, Reply, Role
from commands.registry import Arg, command, one_of, whole_number
from commands.studio import open_in_studio, studio
from commands.ui import button, card, columns, facts, limited, reply, section, text, when

STATUS_COLORS = {"Completed": "Good", "Failed": "Attention", "Canceled": "Warning", "NotResponding": "Attention"}
MAX_JOBS = 50


def status_text(job: Job) -> dict:
    return text(f"**{job.status}**", color=STATUS_COLORS.get(job.status))


def job_row(job: Job) -> dict:
    title = job.display_name or job.name
    detail = " · ".join(p for p in (job.type, job.experiment, when(job.created_at)) if p)
    return columns([text(f"**{title}**"), text(detail, subtle=True, spacing="None")], status_text(job),
                   {"type": "ActionSet", "actions": [button("Details", "job", job.name)]},
                   widths=["stretch", "auto", "auto"])


def jobs_card(jobs: list[Job], *, status: str | None, workspace: str) -> dict:
    title = f"{status} jobs" if status else "Recent jobs"
    return card(title, limited(jobs, job_row, noun="job"), subtitle=workspace)


def child_row(job: Job) -> dict:
    return columns(text(job.display_name or job.name), status_text(job), widths=["stretch", "auto"])


def job_card(job: Job, *, workspace: str, studio_url: str | None = None) -> dict:
    body = [status_text(job),
            facts([("Name", job.name), ("Type", job.type), ("Experiment", job.experiment), ("Compute", job.compute),
                   ("Created", when(job.created_at)), ("Started", when(job.started_at)),
                   ("Ended", when(job.ended_at)), ("By", job.created_by)])]
    if job.error:
        body += [section("Error"), text(job.error, color="Attention")]
    if job.children:
        body += [section("Steps"), *limited(list(job.children), child_row, noun="step")]
    actions = [button("Refresh", "job", job.name)]
    if not job.terminal:
        actions.append(button("Cancel", "cancel", job.name, style="destructive"))
    return card(f"Job {job.display_name or job.name}", body, subtitle=workspace,
                actions=actions + open_in_studio(studio_url))


@command("jobs", Arg("--status", type=one_of(JOB_STATUSES, "status"), help="only jobs in this status", metavar="STATUS"),
         Arg("--limit", type=whole_number(1, MAX_JOBS, "jobs"), default=10, help=f"how many (1 to {MAX_JOBS}, default 10)", metavar="N"),
         summary="List recent jobs and pipelines, newest first.", example="jobs --status Failed --limit 5")
async def jobs(ctx: Context, status: str | None, limit: int) -> Reply:
    found = await ctx.ml.list_jobs(status=status, limit=limit)
    return reply(jobs_card(found, status=status, workspace=ctx.where))


@command("job", Arg("name", help="a job name, as `jobs` shows it"),
         summary="Show one job: status, times, error, pipeline steps.", example="job frosty_kettle_8k2x9q7m")
async def job(ctx: Context, name: str) -> Reply:
    found, site = await ctx.ml.get_job(name), studio(ctx)
    return reply(job_card(found, workspace=ctx.where, studio_url=site.job(found.name) if site else None))


@command("cancel", Arg("job", help="a running or queued job"), summary="Cancel a running or queued job.",
         role=Role.OPERATOR, example="cancel amber_river_7d3kq9wz")
async def cancel(ctx: Context, job: str) -> Reply:
    operation = await ctx.ml.cancel_job(job)
    return accepted(ctx, operation, f"Job {job} is being canceled.")
