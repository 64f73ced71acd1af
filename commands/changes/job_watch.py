"""The watch on a job started from chat (retrain, `schedule run`, `batch`): its end is reported in
the conversation that asked, even when the bot restarted meanwhile.

    await watch_job(ctx, job, "Retraining of fraud-model", model="fraud-model")   # stored with the start
    ... bot/scheduler.py claims due watches every poll and asks `report` ...
    reply = await report(service, watch, now=now)    # None: still running, look again in a minute

The report of a completed retraining names the model version it registered: a version whose
training job is the pipeline run or one of its steps (Azure records the step that registered it),
or failing that, versions newer than the latest when the run started.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from adapters.service import Job, ModelVersion, NotFound, ServiceError
from adapters.storage import job_watches
from adapters.storage.job_watches import JobWatch, NewJobWatch
from commands.base.context import Context, Reply, workspace_line
from commands.resources.job_rows import status_text
from commands.resources.models import headline_metrics, stage_label
from commands.base.ui import button, card, facts, plain, reply, section, text, when

log = logging.getLogger(__name__)
JOB_POLL_SECONDS = 60.0          # how often a job started from chat is looked at until it ends
JOB_WATCH_SECONDS = 48 * 3600    # after this, stop watching and say so
JOB_APPEAR_SECONDS = 300         # a job not found this soon after its start is looked for again, not called deleted
JOB_ENDED_ICONS = {"Completed": "✅", "Failed": "❌", "Canceled": "⚠️"}


async def watch_job(ctx: Context, job: Job, what: str, *, model: str = "") -> None:
    """Store the watch on `job`, reported where the change was asked (see Context.asked_in)."""
    since = ""
    if model:
        try:
            since = (await ctx.ml.get_model(model)).version
        except ServiceError as error:     # the report then names no version; the job still runs
            log.info("retraining %s: could not read its latest version: %s", model, error.message)
    conversation_id, tenant_id = ctx.asked_in
    now = ctx.now()
    new = NewJobWatch(workspace=ctx.ml.name, job_name=job.name, what=what, requester_name=ctx.asked_by,
                      conversation_id=conversation_id, tenant_id=tenant_id, started_at=now, model=model,
                      since_version=since)

    async def work(tx) -> None:
        await job_watches.create(tx, new, first_check=now + timedelta(seconds=JOB_POLL_SECONDS))
    await ctx.store.run_transaction(work)


async def report(service, watch: JobWatch, *, now: datetime) -> Reply | None:
    """The end report of the watched job, or None while it runs. ServiceError: look again later."""
    where = workspace_line(service.name, service.environment)
    try:
        job = await service.get_job(watch.job_name)
    except NotFound:
        if now - watch.started_at < timedelta(seconds=JOB_APPEAR_SECONDS):
            return None          # just triggered: Azure may list a job a little after the trigger that named it
        return Reply(f"Job {watch.job_name} ({watch.what}, asked by {watch.requester_name}) is no longer in "
                     f"{service.name}; it was deleted before it ended. [{where}]", ok=False)
    if job.terminal:
        registered = await _registered(service, watch, job) if watch.model and job.status == "Completed" else []
        return reply(job_ended_card(job, requested_by=watch.requester_name, where=where, model=watch.model,
                                    registered=registered))
    if now - watch.started_at >= timedelta(seconds=JOB_WATCH_SECONDS):
        return Reply(f"Job {watch.job_name} has not ended after {JOB_WATCH_SECONDS / 3600:g} hours; I stopped "
                     f"watching it. `job {watch.job_name}` shows where it is. [{where}]")
    return None


async def _registered(service, watch: JobWatch, job: Job) -> list[ModelVersion]:
    """The versions of `watch.model` this run registered (see the module's docstring)."""
    try:
        versions = await service.list_models(watch.model)
    except ServiceError as error:
        log.info("job %s: could not list the versions of %s: %s", job.name, watch.model, error.message)
        return []
    runs = {job.name, *(child.name for child in job.children)}
    by_run = [v for v in versions if v.job and v.job in runs]
    if by_run:
        return by_run
    return [v for v in versions if _newer(v.version, watch.since_version)]


def _newer(version: str, than: str) -> bool:
    if not than:
        return False
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return False                      # named versions have no order: only the run's own count


def job_ended_card(job: Job, *, requested_by: str, where: str, model: str = "",
                   registered: list[ModelVersion] = ()) -> dict:
    icon = JOB_ENDED_ICONS.get(job.status, "")
    body = [status_text(job),
            facts([("Name", job.name), ("Requested by", f"{plain(requested_by)} from chat"),
                   ("Started", when(job.started_at)), ("Ended", when(job.ended_at))])]
    if job.error:
        body.append(text(plain(job.error), color="Attention"))
    actions = [button("Details", "job", job.name)]
    if registered:
        newest = registered[0]
        body += [section("Registered"),
                 facts([(v.ref, " · ".join(p for p in (stage_label(v.stage), headline_metrics(v)) if p))
                        for v in registered])]
        actions += [button("Compare with Production", "compare", newest.ref),
                    button("Promote to Staging", "promote", newest.ref, "Staging")]
    elif model and job.status == "Completed":
        body.append(text(f"No new version of {model} was registered by this run.", subtle=True))
    return card(f"{icon} Job {plain(job.display_name or job.name)} {job.status.lower()}", body, subtitle=where,
                actions=actions)
