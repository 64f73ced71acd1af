"""Schedule and compute commands: schedules, schedule, compute, start, stop."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.service import Compute, Schedule
from commands.changes import accepted, requested_tags, started
from commands.context import Context, Reply, Role
from commands.registry import Arg, command
from commands.schedule_times import next_run_text
from commands.ui import button, card, columns, limited, reply, text


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


@command("schedules", summary="List job and monitor schedules, enabled or not.", example="schedules")
async def schedules(ctx: Context) -> Reply:
    found = await ctx.ml.list_schedules()
    now = datetime.now(timezone.utc)
    return reply(card("Schedules", limited(found, lambda s: schedule_row(s, now), noun="schedule"),
                      subtitle=ctx.where))


@command("compute", summary="List compute clusters and instances with their state.", example="compute")
async def compute(ctx: Context) -> Reply:
    found = await ctx.ml.list_compute()
    return reply(card("Compute", limited(found, compute_row, noun="compute target"), subtitle=ctx.where))


@command("schedule", Arg("action", choices=("enable", "disable", "run"), help="what to do"),
         Arg("name", help="a schedule, as `schedules` shows it"),
         summary="Enable or disable a schedule, or run it once now.", role=Role.OPERATOR,
         example="schedule disable nightly-churn-retrain")
async def schedule(ctx: Context, action: str, name: str) -> Reply:
    if action == "run":
        job = await ctx.ml.trigger_schedule(name, tags=requested_tags(ctx))
        return started(ctx, job, f"Schedule {name}")
    found = next((s for s in await ctx.ml.list_schedules() if s.name == name), None)
    if found is not None and found.enabled == (action == "enable"):
        return Reply(f"Schedule {name} is already {action}d; nothing to change. [{ctx.where}]")
    change = ctx.ml.enable_schedule if action == "enable" else ctx.ml.disable_schedule
    return accepted(ctx, await change(name), f"Schedule {name} is being {action}d.")


async def _already(ctx: Context, name: str, state: str) -> Reply | None:
    """The answer to a start or stop that would change nothing, asked before any operation starts."""
    found = next((c for c in await ctx.ml.list_compute() if c.name == name), None)
    if found is not None and found.type == "computeinstance" and found.state == state:
        return Reply(f"Compute instance {name} is already {state}; nothing to change. [{ctx.where}]")
    return None


@command("start", Arg("compute", help="a compute instance"), summary="Start a stopped compute instance.",
         role=Role.OPERATOR, example="start ds-ci-alice")
async def start(ctx: Context, compute: str) -> Reply:
    return await _already(ctx, compute, "Running") or accepted(
        ctx, await ctx.ml.start_compute(compute), f"Compute {compute} is starting.")


@command("stop", Arg("compute", help="a compute instance"), summary="Stop a compute instance to save money.",
         role=Role.OPERATOR, example="stop ds-ci-alice")
async def stop(ctx: Context, compute: str) -> Reply:
    return await _already(ctx, compute, "Stopped") or accepted(
        ctx, await ctx.ml.stop_compute(compute), f"Compute {compute} is stopping.")
