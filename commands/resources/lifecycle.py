"""The model lifecycle from chat: promote, archive, retrain. Each passes the gate like every change.

Azure ML (SDK v2) has no stage-transition API: `stage` is a free-text field on a model version.
Promoting a version to Production therefore sets its stage and moves every version that held
Production to Archived, in one audited change (a step that fails undoes the ones before it, and the
outcome states each version's stage); `archive` is Azure's own archive (`is_archived`),
which hides a version from default lists and keeps it usable. `retrain` triggers the model's
training schedule (named in its `training_schedule` tag when asked, and stored in the request: the
approved schedule is the one that runs), the way Azure supports re-running a pipeline; the job's end
is reported in the conversation.
"""

from __future__ import annotations

from typing import Any

from adapters.service import (STAGES, TRAINING_SCHEDULE_TAG, InvalidRequest, ModelVersion, ServiceError, Unavailable,
                              training_schedule)
from commands.changes.background import started
from commands.resources.compare import compare_versions
from commands.base.context import Context, Reply, Role
from commands.changes.change import Change, Stale, settled
from commands.resources.models import HIDDEN, stage_label
from commands.base.registry import Arg, UsageError, command, one_of, suggest

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
         phrases=("promote", "move to production", "ship", "release", "put in production", "push to production",
                  "move to staging", "make it champion", "make champion", "mark as", "{model} {to_stage}",
                  "put {to_stage}"),
         summary="Move a model version to Staging, Production or Archived (Production moves the champion to "
                 "Archived).",
         role=Role.OPERATOR, example="promote fraud-model:4 Production", change=True)
async def promote(ctx: Context, ref: str, stage: str) -> Reply:
    name, version = _ref(ref)
    model = await ctx.ml.get_model(name, version)
    if model.stage == stage:
        return Reply(f"{model.ref} is already in {stage}; nothing to change. [{ctx.where}]")
    champions: list[ModelVersion] = []
    if stage == "Production":      # every holder: Azure's stage is free text, nothing stops two versions having it
        champions = [m for m in await ctx.ml.list_models(name, "Production") if m.version != model.version]
    before = {"stage": f"{model.ref} {stage_label(model.stage)}"}
    after = {"stage": f"{model.ref} {stage}"}
    demoted = ", ".join(c.ref for c in champions)
    if champions:
        before["champion"] = "; ".join(f"{c.ref} ({_scores(c, None)})" for c in champions)
        after["champion"] = f"{model.ref} ({_scores(model, champions[0])}); {demoted} → Archived"
    return await ctx.gate.submit(ctx, Change(
        action="promote", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"model {model.ref}",
        parameters={"model": name, "version": model.version, "stage": stage, "from": model.stage,
                    "demote": [c.version for c in champions]},
        before=before, after=after,
        summary=f"Promote {model.ref}: {stage_label(model.stage)} → {stage}" + (
            f" ({demoted} Production → Archived)" if champions else "")))


def _demoted(value: Any) -> list[str]:
    """The versions a promotion archives: a list, or (requests stored before it was one) a version or None."""
    if not value:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def apply_promote(ctx: Context, change: Change) -> Reply:
    """Set the new stage, then archive every approved Production holder, each step a PUT that the
    backend repeats while Azure says it may (429/503...). If a step still fails, the steps already
    done are undone, and the reply (the card's outcome and the audit record) states the exact stages
    the versions are in afterwards, read back from the workspace."""
    p = change.parameters
    name, demote = p["model"], _demoted(p.get("demote"))
    model = await ctx.ml.get_model(name, p["version"])
    if model.stage != p["from"]:
        raise Stale(f"{model.ref} is now in {stage_label(model.stage)}, no longer {stage_label(p['from'])}.")
    holders = ([m.version for m in await ctx.ml.list_models(name, "Production") if m.version != model.version]
               if p["stage"] == "Production" else [])
    for version in demote:
        if version not in holders:
            champion = await ctx.ml.get_model(name, version)
            raise Stale(f"{champion.ref} is no longer in Production (now {stage_label(champion.stage)}).")
    if p["stage"] == "Production" and set(holders) - set(demote):
        others = ", ".join(f"{name}:{v}" for v in sorted(set(holders) - set(demote)))
        raise Stale(f"{others} went into Production since the request was made, so promoting {model.ref} would "
                    f"leave more than one champion.")
    steps = [(model.version, p["from"], p["stage"])] + [(v, "Production", "Archived") for v in demote]
    done: list[tuple[str, str, str]] = []
    for step in steps:
        try:
            await ctx.ml.set_model_stage(name, step[0], step[2])
        except ServiceError as error:
            return await _promotion_failed(ctx, name, steps, done, step, error)
        done.append(step)
    archived = f"; {', '.join(f'{name}:{v}' for v in demote)} {'is' if len(demote) == 1 else 'are'} now Archived"
    return Reply(f"✅ {model.ref} is now in {p['stage']}{archived if demote else ''}. [{ctx.where}]", ok=True)


async def _promotion_failed(ctx: Context, name: str, steps: list[tuple[str, str, str]],
                            done: list[tuple[str, str, str]], failed: tuple[str, str, str],
                            error: ServiceError) -> Reply:
    """Undo the steps done (newest first), then say exactly which stage each version is in now: read
    back from the workspace, or, if it cannot be read, what each step's outcome implies ("unknown"
    for a PUT whose answer was lost). All on the first line: it is the card's outcome and the audit
    record's."""
    undo_failed: list[str] = []
    for version, was, _ in reversed(done):
        try:
            await ctx.ml.set_model_stage(name, version, was)
        except ServiceError:
            undo_failed.append(f"{name}:{version}")
    involved = [version for version, _, _ in steps]
    try:
        now = {m.version: m.stage for m in await ctx.ml.list_models(name)}
        stages = ", ".join(f"{name}:{v} {stage_label(now.get(v, 'None'))}" for v in involved)
        source = "Stages now"
    except ServiceError:
        undone = {v for v, _, _ in done if f"{name}:{v}" not in undo_failed}
        known = {v: (was if v in undone or v not in {d[0] for d in done} else to) for v, was, to in steps}
        known[failed[0]] = "unknown (Azure did not confirm its change)" if isinstance(error, Unavailable) else failed[1]
        stages = ", ".join(f"{name}:{v} {stage_label(known[v]) if known[v] in STAGES else known[v]}" for v in involved)
        source = "Stages as far as the bot knows (it could not read them back)"
    code = f" ({error.code})" if error.code else ""
    if not done:
        outcome = "nothing was changed"
    elif undo_failed:
        outcome = f"undoing the steps before it failed for {', '.join(undo_failed)}"
    else:
        outcome = "the steps before it were undone"
    return Reply(f"❌ Promotion failed while moving {name}:{failed[0]} to {failed[2]}{code}: {error.message} "
                 f"— {outcome}. {source}: {stages}. [{ctx.where}]", ok=False)


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


async def archived(ctx: Context, change: Change) -> Reply | None:
    """After a restart: is the version archived?"""
    model = await ctx.ml.get_model(change.parameters["model"], change.parameters["version"])
    return settled(ctx, change, {HIDDEN: "yes" if model.archived else "no"})


@command("archive", Arg("ref", help="the version to archive", metavar="model:version"),
         phrases=("archive", "retire", "hide version", "deprecate", "hide"),
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


async def apply_archive(ctx: Context, change: Change) -> Reply:
    p = change.parameters
    model = await ctx.ml.get_model(p["model"], p["version"])
    if model.archived:
        raise Stale(f"{model.ref} is already {HIDDEN}.")
    await ctx.ml.archive_model(p["model"], p["version"])
    return Reply(f"✅ {model.ref} is {HIDDEN}; deployments can still use it. [{ctx.where}]", ok=True)


@command("retrain", Arg("model", help="a registered model"),
         Arg("--schedule", help="trigger this schedule instead of the one the model names", metavar="NAME"),
         phrases=("retrain", "retraining", "train again", "kick off training", "start training", "rerun training",
                  "refresh model", "kick off retraining", "trigger training", "new training run", "train"),
         summary="Retrain a model: trigger its training schedule; its end is reported here.",
         role=Role.OPERATOR, example="retrain fraud-model", change=True)
async def retrain(ctx: Context, model: str, schedule: str | None) -> Reply:
    latest = await ctx.ml.get_model(model)
    if schedule:
        if schedule not in await ctx.ml.names("schedule"):
            raise UsageError(f"There is no schedule named '{schedule}'. Type `schedules` to see them.")
        how = f"schedule {schedule}"
    else:       # refused now, not after an approval: the same rule as the backend's trigger_retraining
        schedule = await _training_schedule(ctx, model)
        how = f"its training schedule, {schedule}"
    # the schedule is resolved now and stored in the Change: what runs is what the card named and was
    # approved, even if the model's tag names another schedule by the time it is carried out
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


async def apply_retrain(ctx: Context, change: Change) -> Reply:
    p = change.parameters
    # requests stored before the schedule was resolved at request time carry none: the model's tag decides
    job = await (ctx.ml.trigger_schedule(p["schedule"]) if p.get("schedule") else ctx.ml.trigger_retraining(p["model"]))
    return await started(ctx, job, f"Retraining of {p['model']}", model=p['model'])
