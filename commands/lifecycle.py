"""The model lifecycle from chat: promote, archive, retrain. Each passes the gate like every change.

Azure ML (SDK v2) has no stage-transition API: `stage` is a free-text field on a model version.
Promoting a version to Production therefore sets its stage and moves the version that held
Production to Archived, in one audited change; `archive` is Azure's own archive (`is_archived`),
which hides a version from default lists and keeps it usable. `retrain` triggers the model's
training schedule (named in its `training_schedule` tag), the way Azure supports re-running a
pipeline; the job's end is reported in the conversation.
"""

from __future__ import annotations

from adapters.service import STAGES, TRAINING_SCHEDULE_TAG, InvalidRequest, ModelVersion, training_schedule
from commands.changes import started
from commands.compare import compare_versions
from commands.context import Context, Reply, Role
from commands.gate import Change, Stale, executes, rechecks, settled
from commands.models import HIDDEN, stage_label
from commands.registry import Arg, UsageError, command, one_of, suggest

PROMOTABLE = tuple(s for s in STAGES if s != "None")      # Staging, Production, Archived
MAX_METRICS_ON_CARD = 4


def _ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition(":")
    if not name or not version:
        raise UsageError(f"'{ref}' is not model:version, e.g. `fraud-model:4`.")
    return name, version


def _scores(model: ModelVersion, against: ModelVersion | None) -> str:
    """A few headline metrics, with the difference to the champion and which is better."""
    if against is None:
        return ", ".join(f"{k} {v:.4g}" for k, v in list(sorted(model.metrics.items()))[:MAX_METRICS_ON_CARD]) or "—"
    rows = compare_versions(model, against)[:MAX_METRICS_ON_CARD]
    marks = {"candidate": " better", "baseline": " worse", "equal": " same", "": ""}
    return ", ".join(f"{r.metric} {r.candidate:.4g} ({r.difference:+.3g}{marks[r.better]})" for r in rows
                     if r.candidate is not None and r.difference is not None) or "—"


@command("promote", Arg("ref", help="the version to promote", metavar="model:version"),
         Arg("stage", type=one_of(PROMOTABLE, "stage"), help="Staging, Production or Archived"),
         summary="Move a model version to Staging, Production or Archived (Production moves the champion to "
                 "Archived).",
         role=Role.OPERATOR, example="promote fraud-model:4 Production", change=True)
async def promote(ctx: Context, ref: str, stage: str) -> Reply:
    name, version = _ref(ref)
    model = await ctx.ml.get_model(name, version)
    if model.stage == stage:
        return Reply(f"{model.ref} is already in {stage}; nothing to change. [{ctx.where}]")
    champion = None
    if stage == "Production":
        holders = [m for m in await ctx.ml.list_models(name, "Production") if m.version != model.version]
        champion = holders[0] if holders else None
    before = {"stage": f"{model.ref} {stage_label(model.stage)}"}
    after = {"stage": f"{model.ref} {stage}"}
    if champion is not None:
        before["champion"] = f"{champion.ref} ({_scores(champion, None)})"
        after["champion"] = f"{model.ref} ({_scores(model, champion)}); {champion.ref} → Archived"
    return await ctx.gate.submit(ctx, Change(
        action="promote", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"model {model.ref}",
        parameters={"model": name, "version": model.version, "stage": stage, "from": model.stage,
                    "demote": champion.version if champion else None},
        before=before, after=after,
        summary=f"Promote {model.ref}: {stage_label(model.stage)} → {stage}" + (
            f" ({champion.ref} Production → Archived)" if champion else "")))


@executes("promote")
async def apply_promote(ctx: Context, change: Change) -> Reply:
    p = change.parameters
    model = await ctx.ml.get_model(p["model"], p["version"])
    if model.stage != p["from"]:
        raise Stale(f"{model.ref} is now in {stage_label(model.stage)}, no longer {stage_label(p['from'])}.")
    if p["demote"]:
        champion = await ctx.ml.get_model(p["model"], p["demote"])
        if champion.stage != "Production":
            raise Stale(f"{champion.ref} is no longer in Production (now {stage_label(champion.stage)}).")
    await ctx.ml.set_model_stage(p["model"], p["version"], p["stage"])
    if p["demote"]:
        await ctx.ml.set_model_stage(p["model"], p["demote"], "Archived")
    demoted = f"; {p['model']}:{p['demote']} is now Archived" if p["demote"] else ""
    return Reply(f"✅ {model.ref} is now in {p['stage']}{demoted}. [{ctx.where}]", ok=True)


@rechecks("promote")
async def promoted(ctx: Context, change: Change) -> Reply | None:
    """After a restart: is the version in its new stage (and the old champion archived)?"""
    p = change.parameters
    model = await ctx.ml.get_model(p["model"], p["version"])
    champion = await ctx.ml.get_model(p["model"], p["demote"]) if p["demote"] else None
    if model.stage == p["stage"] and (champion is None or champion.stage == "Archived"):
        return Reply(f"✅ {change.summary}: done ({model.ref} is in {p['stage']}). [{ctx.where}]", ok=True)
    if model.stage == p["from"] and (champion is None or champion.stage == "Production"):
        return Reply(f"❌ Not done: {change.summary}. The bot stopped before it took effect: {model.ref} is still in "
                     f"{stage_label(model.stage)}. Ask again if it is still wanted. [{ctx.where}]", ok=False)
    now = f"{model.ref} is in {stage_label(model.stage)}" + (
        f", {champion.ref} in {stage_label(champion.stage)}" if champion else "")
    return Reply(f"⚠️ Could not tell whether {change.summary} took effect completely: {now}. Look at model "
                 f"{p['model']} (`models {p['model']}`). [{ctx.where}]", ok=False)


@rechecks("archive")
async def archived(ctx: Context, change: Change) -> Reply | None:
    """After a restart: is the version archived?"""
    model = await ctx.ml.get_model(change.parameters["model"], change.parameters["version"])
    return settled(ctx, change, {HIDDEN: "yes" if model.archived else "no"})


@command("archive", Arg("ref", help="the version to archive", metavar="model:version"),
         summary="Archive a model version: hide it from lists (its stage is kept; deployments can still use it).",
         role=Role.OPERATOR, example="archive fraud-model:1", change=True)
async def archive(ctx: Context, ref: str) -> Reply:
    name, version = _ref(ref)
    model = await ctx.ml.get_model(name, version)
    if model.archived:
        return Reply(f"{model.ref} is already {HIDDEN}; nothing to change. [{ctx.where}]")
    return await ctx.gate.submit(ctx, Change(
        action="archive", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"model {model.ref}",
        parameters={"model": name, "version": model.version}, before={HIDDEN: "no"}, after={HIDDEN: "yes"},
        summary=f"Archive {model.ref}: hide it from lists (its stage stays {stage_label(model.stage)})"))


@executes("archive")
async def apply_archive(ctx: Context, change: Change) -> Reply:
    p = change.parameters
    model = await ctx.ml.get_model(p["model"], p["version"])
    if model.archived:
        raise Stale(f"{model.ref} is already {HIDDEN}.")
    await ctx.ml.archive_model(p["model"], p["version"])
    return Reply(f"✅ {model.ref} is {HIDDEN}; deployments can still use it. [{ctx.where}]", ok=True)


@command("retrain", Arg("model", help="a registered model"),
         Arg("--schedule", help="trigger this schedule instead of the one the model names", metavar="NAME"),
         summary="Retrain a model: trigger its training schedule; its end is reported here.",
         role=Role.OPERATOR, example="retrain fraud-model", change=True)
async def retrain(ctx: Context, model: str, schedule: str | None) -> Reply:
    latest = await ctx.ml.get_model(model)
    if schedule:
        if schedule not in await ctx.ml.names("schedule"):
            raise UsageError(f"There is no schedule named '{schedule}'. Type `schedules` to see them.")
        how = f"schedule {schedule}"
    else:       # refused now, not after an approval: the same rule as the backend's trigger_retraining
        how = f"its training schedule, {await _training_schedule(ctx, model)}"
    return await ctx.gate.submit(ctx, Change(
        action="retrain", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"model {model}",
        parameters={"model": model, "schedule": schedule}, before={"latest": latest.ref},
        after={"training": f"runs {how}"}, summary=f"Retrain {model} ({how})"))


async def _training_schedule(ctx: Context, model: str) -> str:
    """The schedule `retrain` would trigger, or UsageError with the backend's words and what to type."""
    try:
        named = training_schedule(model, await ctx.ml.list_models(model))
    except InvalidRequest as error:
        jobs = sorted(s.name for s in await ctx.ml.list_schedules() if s.action.startswith("job"))
        close = suggest(model, jobs, n=1)
        hint = (f"Did you mean `retrain {model} --schedule {close[0]}`?" if close else
                f"Name one with `retrain {model} --schedule NAME`" + (f" ({', '.join(jobs)})." if jobs else "."))
        raise UsageError(f"{error.message} {hint} `schedules` lists them.") from None
    if named not in await ctx.ml.names("schedule"):
        raise UsageError(f"Model {model} names schedule '{named}' in its '{TRAINING_SCHEDULE_TAG}' tag, but there is "
                         f"no such schedule. Use `retrain {model} --schedule NAME`; `schedules` lists them.")
    return named


@executes("retrain")
async def apply_retrain(ctx: Context, change: Change) -> Reply:
    p = change.parameters
    job = await (ctx.ml.trigger_schedule(p["schedule"]) if p["schedule"] else ctx.ml.trigger_retraining(p["model"]))
    return await started(ctx, job, f"Retraining of {p['model']}", model=p['model'])
