"""Schedule and compute commands: schedules, schedule, compute, start, stop."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.service import Compute, InvalidRequest, NotFound, Schedule
from commands.changes.background import accepted, requested_tags, started
from commands.base.context import Context, Reply, Role
from commands.changes.change import Accepted, Change, Stale, settled
from commands.base.registry import Arg, command
from commands.resources.schedule_times import next_run_text
from commands.base.ui import button, card, columns, limited, reply, text


def schedule_row(schedule: Schedule, now: datetime) -> dict:
    state = "enabled" if schedule.enabled else "disabled"
    detail = " · ".join(p for p in (f"{schedule.trigger} `{schedule.expression}` {schedule.time_zone}",
                                    next_run_text(schedule, now), schedule.action) if p)
    switch = (button("Disable schedule", "schedule", "disable", schedule.name) if schedule.enabled
              else button("Enable schedule", "schedule", "enable", schedule.name))
    actions = [switch, button("Run schedule now", "schedule", "run", schedule.name)]
    return columns([text(f"**{schedule.name}**"), text(detail, subtle=True, spacing="None"),
                    {"type": "ActionSet", "actions": actions}],
                   text(state, color="Good" if schedule.enabled else "Warning"), widths=["stretch", "auto"])


def compute_row(compute: Compute) -> dict:
    nodes = ""
    if compute.max_nodes is not None:
        nodes = f" · nodes {compute.current_nodes or 0} (min {compute.min_nodes or 0}, max {compute.max_nodes})"
    detail = f"{compute.type} · {compute.size or '?'}{nodes}"
    left = [text(f"**{compute.name}**"), text(detail, subtle=True, spacing="None")]
    if compute.type == "computeinstance" and compute.state in ("Running", "Stopped"):
        action = (button("Stop compute", "stop", compute.name) if compute.state == "Running"
                  else button("Start compute", "start", compute.name))
        left.append({"type": "ActionSet", "actions": [action]})
    return columns(left, text(compute.state, color="Good" if compute.state in ("Running", "Succeeded") else None),
                   widths=["stretch", "auto"])


@command("schedules",
         phrases=("schedules", "list schedules", "what schedules", "which schedules", "what runs nightly", "cron",
                  "scheduled jobs", "when does run", "what is scheduled", "recurring"),
         summary="List job and monitor schedules, enabled or not.", example="schedules")
async def schedules(ctx: Context) -> Reply:
    found = await ctx.ml.list_schedules()
    now = datetime.now(timezone.utc)
    return reply(card("Schedules", limited(found, lambda s: schedule_row(s, now), noun="schedule"),
                      subtitle=ctx.where))


@command("compute",
         phrases=("compute", "list compute", "clusters", "compute instances", "vms", "machines", "what compute",
                  "which vms", "gpu", "cpu", "nodes", "is running compute", "notebooks", "instances running"),
         summary="List compute clusters and instances with their state.", example="compute")
async def compute(ctx: Context) -> Reply:
    found = await ctx.ml.list_compute()
    return reply(card("Compute", limited(found, compute_row, noun="compute target"), subtitle=ctx.where))


@command("schedule", Arg("action", choices=("enable", "disable", "run"), help="what to do"),
         Arg("name", help="a schedule, as `schedules` shows it"),
         phrases=("enable schedule", "disable schedule", "pause", "resume", "run schedule", "trigger schedule",
                  "pause schedule", "turn off schedule", "turn on schedule", "unpause", "suspend", "enable",
                  "disable", "trigger", "turn on", "turn off", "run {schedule}"),
         summary="Enable or disable a schedule, or run it once now.", role=Role.OPERATOR,
         example="schedule disable nightly-churn-retrain", change=True)
async def schedule(ctx: Context, action: str, name: str) -> Reply:
    found = next((s for s in await ctx.ml.list_schedules() if s.name == name), None)
    if found is None:
        raise NotFound("schedule", name)
    if action != "run" and found.enabled == (action == "enable"):
        return Reply(f"Schedule {name} is already {action}d; nothing to change. [{ctx.where}]")
    state = "enabled" if found.enabled else "disabled"
    return await ctx.gate.submit(ctx, Change(
        action="schedule", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"schedule {name}",
        parameters={"schedule": name, "do": action},
        before={} if action == "run" else {"state": state},
        after={"run": "once, now"} if action == "run" else {"state": f"{action}d"},
        summary=f"Run schedule {name} once now" if action == "run" else f"{action.capitalize()} schedule {name}"))


async def apply_schedule(ctx: Context, change: Change) -> Reply | Accepted:
    name, action = change.parameters["schedule"], change.parameters["do"]
    if action == "run":
        job = await ctx.ml.trigger_schedule(name, tags=requested_tags(ctx))
        return await started(ctx, job, f"Schedule {name}")
    found = next((s for s in await ctx.ml.list_schedules() if s.name == name), None)
    if found is None:
        raise Stale(f"schedule {name} no longer exists.")
    if ("enabled" if found.enabled else "disabled") != change.before["state"]:
        raise Stale(f"schedule {name} is already {action}d.")
    change_state = ctx.ml.enable_schedule if action == "enable" else ctx.ml.disable_schedule
    return accepted(ctx, await change_state(name), f"Schedule {name} is being {action}d.")


async def _compute(ctx: Context, name: str):
    return next((c for c in await ctx.ml.list_compute() if c.name == name), None)


async def _compute_change(ctx: Context, name: str, action: str, wanted: str) -> Reply:
    """Start or stop: nothing to do when it already is so; otherwise through the gate."""
    found = await _compute(ctx, name)
    if found is None:
        raise NotFound("compute", name)
    if found.type != "computeinstance":           # refused before anyone is asked to confirm it
        raise InvalidRequest(f"Only compute instances can be started or stopped; {name} is a compute cluster "
                             f"({found.type}), which scales between {found.min_nodes or 0} and "
                             f"{found.max_nodes if found.max_nodes is not None else '?'} nodes on its own.")
    if found.state == wanted:
        return Reply(f"Compute instance {name} is already {wanted}; nothing to change. [{ctx.where}]")
    return await ctx.gate.submit(ctx, Change(
        action=action, workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"compute {name}",
        parameters={"compute": name}, before={"state": found.state},
        after={"state": wanted}, summary=f"{action.capitalize()} compute {name}"))


async def _apply_compute(ctx: Context, change: Change, wanted: str) -> Reply | Accepted:
    name = change.parameters["compute"]
    found = await _compute(ctx, name)
    if found is not None and found.state == wanted:
        raise Stale(f"compute {name} is already {wanted}.")
    if change.action == "start":
        return accepted(ctx, await ctx.ml.start_compute(name), f"Compute {name} is starting.")
    return accepted(ctx, await ctx.ml.stop_compute(name), f"Compute {name} is stopping.")


@command("start", Arg("compute", help="a compute instance"),
         phrases=("start", "turn on", "boot", "power on", "spin up", "wake up", "switch on", "start vm",
                  "start instance"),
         summary="Start a stopped compute instance.",
         role=Role.OPERATOR, example="start ds-ci-alice", change=True)
async def start(ctx: Context, compute: str) -> Reply:
    return await _compute_change(ctx, compute, "start", "Running")


async def apply_start(ctx: Context, change: Change) -> Reply | Accepted:
    return await _apply_compute(ctx, change, "Running")


@command("stop", Arg("compute", help="a compute instance"),
         phrases=("stop", "turn off", "shut down", "shutdown", "power off", "spin down", "switch off", "stop vm",
                  "stop instance", "save money"),
         summary="Stop a compute instance to save money.",
         role=Role.OPERATOR, example="stop ds-ci-alice", change=True)
async def stop(ctx: Context, compute: str) -> Reply:
    return await _compute_change(ctx, compute, "stop", "Stopped")


async def apply_stop(ctx: Context, change: Change) -> Reply | Accepted:
    return await _apply_compute(ctx, change, "Stopped")


async def compute_state(ctx: Context, change: Change) -> Reply | None:
    """After a restart: is the compute instance in the state asked for (None while it is changing)?"""
    found = await _compute(ctx, change.parameters["compute"])
    if found is None:
        return Reply(f"⚠️ Could not tell whether {change.summary} took effect: {change.target} no longer exists. "
                     f"[{ctx.where}]", ok=False)
    return settled(ctx, change, {"state": found.state},
                   busy=found.state in ("Starting", "Stopping", "Restarting", "Creating"))


async def schedule_state(ctx: Context, change: Change) -> Reply | None:
    """After a restart: is the schedule enabled or disabled as asked? A run cannot be told from it."""
    name = change.parameters["schedule"]
    if change.parameters["do"] == "run":
        return Reply(f"⚠️ The bot restarted while it was starting a run of schedule {name} and cannot tell whether "
                     f"it started: look at the jobs (`jobs`) before running it again. [{ctx.where}]", ok=False)
    found = next((s for s in await ctx.ml.list_schedules() if s.name == name), None)
    if found is None:
        return Reply(f"⚠️ Could not tell whether {change.summary} took effect: schedule {name} no longer exists. "
                     f"[{ctx.where}]", ok=False)
    return settled(ctx, change, {"state": "enabled" if found.enabled else "disabled"},
                   busy=found.provisioning_state in ("Creating", "Updating"))
