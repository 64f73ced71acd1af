"""Rolling out and back: `history`, `rollback`, `canary`, and the local workspace's `demo degrade`.

Every split the bot applies (traffic, canary, rollback) is written to the endpoint's traffic
history in the transaction that audits its success (`record_split`, the `record` of their change
kinds in commands/changes/kinds.py), together with a watch: after the window (MLOPSBOT_WATCH_MINUTES)
the bot compares the endpoint's p99 latency and 5xx rate with the figures read just before the
change (`commands.changes.verdicts.read_baseline`, their `prepare`) and posts one verdict card (bot/scheduler.py,
commands/changes/verdicts.py).

A split changed outside the bot (portal, CLI, a pipeline) is recorded as such the first time one of
these commands reads the endpoint, and before the bot records its own next change of it.

`rollback <endpoint>` restores the split from before the newest history entry; `--to N` restores the
split from before entry N (undoing N and everything after it). The Rollback buttons carry `--to N`,
so a second click finds the split already restored and changes nothing.
"""

from __future__ import annotations

from typing import Any

from adapters.service import NotFound, OnlineEndpoint
from adapters.storage import approvals, audit, inbox, traffic_history, watches
from adapters.storage.approvals import Approval
from adapters.storage.traffic_history import Entry, live
from commands.changes.background import accepted
from commands.base.context import Context, Reply, Role
from commands.resources.splits import traffic_change, traffic_text
from commands.changes.change import Accepted, Change, Stale
from commands.base.registry import Arg, UsageError, command, one_of, whole_number
from commands.base.ui import button, card, columns, limited, plain, reply, text



# ---------------------------------------------------------------- canary arithmetic


def canary_split(current: dict[str, int], deployments: list[str], deployment: str, percent: int) -> dict[str, int]:
    """`deployment` gets `percent`; the others share the rest in proportion to their current
    shares, in whole percents summing to 100 (largest remainder: each gets the floor of its quota,
    and the points left over go to the largest fractional parts, ties to the larger share, then
    the name). When the others have no traffic now they share the rest equally.

    >>> canary_split({"blue": 90, "green": 10}, ["blue", "green", "red"], "red", 5)
    {'blue': 86, 'green': 9, 'red': 5}
    """
    if deployment not in deployments:
        raise ValueError(f"unknown deployment {deployment!r}")
    if not 0 <= percent <= 100:
        raise ValueError("percent must be from 0 to 100")
    others = [d for d in deployments if d != deployment]
    rest = 100 - percent
    if rest and not others:
        raise ValueError(f"{deployment} is the only deployment, so it must take 100%.")
    weights = {d: max(0, int(current.get(d, 0))) for d in others}
    if not sum(weights.values()):
        weights = {d: 1 for d in others}
    total = sum(weights.values())
    split = {d: rest * weights[d] // total for d in others}
    left = rest - sum(split.values())
    order = sorted(others, key=lambda d: (-(rest * weights[d] % total), -weights[d], d))
    for name in order[:left]:
        split[name] += 1
    split[deployment] = percent
    return {d: split[d] for d in deployments}


# ---------------------------------------------------------------- reading what is there


async def _read(ctx: Context, name: str) -> tuple[OnlineEndpoint, list[Entry]]:
    """The endpoint and its history, newest first; an outside change is recorded on the way."""
    if ctx.store is None or ctx.gate is None:
        raise UsageError("Traffic history lives in the bot's database, which this chat does not open; "
                         "use the bot in Teams (or `mlops-bot serve`).")
    endpoint = await ctx.ml.get_endpoint(name)
    now = ctx.now()
    workspace = ctx.ml.name

    async def work(tx) -> list[Entry]:
        await note_outside(tx, workspace, name, endpoint.traffic, now)
        return await traffic_history.for_endpoint(tx, workspace, name)

    return endpoint, await ctx.store.run_transaction(work)


async def note_outside(tx, workspace: str, name: str, traffic: dict[str, int], now) -> Entry | None:
    """Record (history and audit) a live split that differs from the last one recorded."""
    noted = await traffic_history.note_outside_change(tx, workspace, name, traffic, now)
    if noted is not None:
        await audit.append(tx, audit.AuditEntry(
            at=now, event="observed", actor_id="mlops-bot", actor_name="MLOps bot", action="traffic",
            workspace=workspace, target=f"endpoint {name}", before={"traffic": noted.before},
            after={"traffic": noted.after}, outcome="split changed outside the bot", detail={"history_id": noted.id}))
    return noted


def _split_change(ctx: Context, action: str, endpoint: OnlineEndpoint, new: dict[str, int], summary: str,
                  extra: dict[str, Any] | None = None) -> Change:
    deployments = [d.name for d in endpoint.deployments]
    full = {d: int(new.get(d, 0)) for d in deployments}
    return Change(action=action, workspace=ctx.ml.name, environment=ctx.ml.environment,
                  target=f"endpoint {endpoint.name}", parameters={"endpoint": endpoint.name, "traffic": full,
                                                                  **(extra or {})},
                  before={"traffic": dict(endpoint.traffic)}, after={"traffic": full}, summary=summary)


# ---------------------------------------------------------------- history


def history_card(endpoint: OnlineEndpoint, entries: list[Entry], *, workspace: str,
                 deciders: dict[int, str] | None = None) -> dict:
    """`deciders`: request id -> who approved it and what they said ("approved by Bob: “fine”")."""
    def row(entry: Entry) -> dict:
        who = plain(entry.actor_name) if entry.source == "bot" else "changed outside the bot"
        approved = f" · request #{entry.approval_id}" if entry.approval_id else ""
        decided = (deciders or {}).get(entry.approval_id) if entry.approval_id else None
        if decided:
            approved += f" {plain(decided)}"
        why = f" · “{plain(entry.reason)}”" if entry.reason else ""
        detail = f"{entry.at:%Y-%m-%d %H:%M} UTC · {entry.action} · {who}{approved}{why}"
        return columns([text(f"**#{entry.id}** {traffic_change(entry.before, entry.after)}"),
                        text(detail, subtle=True, spacing="None")])

    body = [text(f"Now: {traffic_text(endpoint.traffic)}", weight="Bolder")]
    if entries:
        body += limited(entries, row, noun="change")
        body.append(text(f"`rollback {endpoint.name}` restores the split before #{entries[0].id}; "
                         f"`rollback {endpoint.name} --to N` the split before entry N.", subtle=True))
    else:
        body.append(text("No traffic change recorded yet. Changes the bot makes from now on appear here.",
                         subtle=True))
    actions = [button("Rollback", "rollback", endpoint.name, "--to", str(entries[0].id))] if entries else []
    return card(f"Traffic history of {endpoint.name}", body, subtitle=workspace, actions=actions)


@command("history", Arg("endpoint", help="an online endpoint"),
         phrases=("history", "traffic history", "who changed traffic", "what changed on", "past changes",
                  "changes to", "previous splits", "what happened to", "changed traffic", "traffic changes"),
         summary="Show an endpoint's traffic changes, newest first (who, when, why, approval).",
         example="history fraud-api")
async def history(ctx: Context, endpoint: str) -> Reply:
    found, entries = await _read(ctx, endpoint)
    ids = sorted({e.approval_id for e in entries[:20] if e.approval_id})

    async def read(tx) -> dict[int, str]:
        deciders = {}
        for approval_id in ids:
            request = await approvals.get(tx, approval_id)
            if request is not None and request.approvals:
                deciders[approval_id] = "approved by " + ", ".join(
                    vote.voter_name + (f" (“{vote.comment}”)" if vote.comment else "") for vote in request.approvals)
        return deciders
    deciders = await ctx.store.run_transaction(read, write=False) if ids else {}
    return reply(history_card(found, entries, workspace=ctx.where, deciders=deciders))


# ---------------------------------------------------------------- rollback


def _entry_number(value: str) -> int:
    return whole_number(1, 10**12, "history entry")(value.lstrip("#"))


@command("rollback", Arg("endpoint", help="an online endpoint"),
         Arg("--to", type=_entry_number, metavar="N",
             help="restore the split from before history entry N (default: before the newest)"),
         phrases=("roll back", "rollback", "revert", "undo", "put back", "back how it was", "back to how it was",
                  "restore", "go back", "undo last change", "back to before", "as it was"),
         summary="Restore an endpoint's traffic split from before its last change (see `history`).",
         role=Role.OPERATOR, example="rollback fraud-api", change=True, common=True)
async def rollback(ctx: Context, endpoint: str, to: int | None) -> Reply:
    if ctx.activity_id:                   # a redelivered activity asks nothing twice
        async def first(tx) -> bool:
            return await inbox.first_time(tx, f"rollback:{ctx.activity_id}", ctx.now())
        if not await ctx.store.run_transaction(first):
            return Reply("Already handled.")
    planned = await plan_rollback(ctx, endpoint, to)
    if isinstance(planned, Reply):
        return planned
    return await ctx.gate.submit(ctx, planned)


async def plan_rollback(ctx: Context, endpoint: str, to: int | None) -> Change | Reply:
    """The rollback to submit, or the Reply that explains why there is none."""
    found, entries = await _read(ctx, endpoint)
    if not entries:
        return Reply(f"Nothing to roll back: the bot has recorded no traffic change of {endpoint} yet (`history "
                     f"{endpoint}` lists them). Use `traffic {endpoint} deployment=percent ...` to set a split. "
                     f"[{ctx.where}]")
    if to is None:
        entry = entries[0]
    else:
        entry = next((e for e in entries if e.id == to), None)
        if entry is None:
            shown = ", ".join(f"#{e.id}" for e in entries[:10])
            raise UsageError(f"Entry #{to} is not in the history of {endpoint} (its entries: {shown}). "
                             f"Type `history {endpoint}` to see them.")
    target = dict(entry.before)
    existing = [d.name for d in found.deployments]
    missing = sorted(name for name in target if name not in existing)
    if missing:
        plural = len(missing) > 1
        return Reply(f"❌ Cannot roll {endpoint} back to {traffic_text(target)}: deployment{'s' if plural else ''} "
                     f"{', '.join(missing)} no longer exist{'' if plural else 's'} (it has: "
                     f"{', '.join(existing) or 'none'}). Use `traffic` to choose a split of the deployments that "
                     f"remain. [{ctx.where}]", ok=False)
    if not target:
        return Reply(f"Entry #{entry.id} starts from no traffic at all; there is no split to restore.", ok=False)
    if live(found.traffic) == live(target):
        return Reply(f"{endpoint} already has the split from before #{entry.id} ({traffic_text(target)}); "
                     f"nothing to roll back. [{ctx.where}]")
    return _split_change(
        ctx, "rollback", found, target,
        f"Rollback of {endpoint} (undo #{entry.id}): {traffic_change(found.traffic, target)}",
        {"undo": entry.id})


# ---------------------------------------------------------------- canary


@command("canary", Arg("endpoint", help="an online endpoint"), Arg("deployment", help="the deployment to give traffic"),
         Arg("percent", type=whole_number(0, 100, "percent"), help="its new share, 0 to 100"),
         phrases=("canary", "give more", "give less", "percent to", "share of traffic", "more traffic",
                  "less traffic", "bump", "ramp up", "ramp down", "increase", "decrease", "send percent"),
         summary="Give one deployment a share of traffic, taken from the others in proportion.",
         role=Role.OPERATOR, example="canary fraud-api green 20", change=True)
async def canary(ctx: Context, endpoint: str, deployment: str, percent: int) -> Reply:
    found, _ = await _read(ctx, endpoint)
    names = [d.name for d in found.deployments]
    if deployment not in names:
        raise NotFound("deployment", f"{endpoint}/{deployment}", f"Endpoint {endpoint} has no deployment named "
                       f"'{deployment}' (it has: {', '.join(names) or 'none'}).")
    try:
        new = canary_split(found.traffic, names, deployment, percent)
    except ValueError as error:
        return Reply(f"❌ {error} [{ctx.where}]", ok=False)
    if live(new) == live(found.traffic):
        return Reply(f"{deployment} already has {percent}% of {endpoint} ({traffic_text(found.traffic)}); "
                     f"nothing to change. [{ctx.where}]")
    return await ctx.gate.submit(ctx, _split_change(
        ctx, "canary", found, new,
        f"Canary on {endpoint}: {deployment} to {percent}% ({traffic_change(found.traffic, new)})",
        {"deployment": deployment, "percent": percent}))


# ---------------------------------------------------------------- executing and recording


async def apply_split(ctx: Context, change: Change) -> Reply | Accepted:
    """Carry out a rollback or a canary: the split asked for, if the endpoint still has the one it replaces."""
    endpoint, new = change.parameters["endpoint"], change.parameters["traffic"]
    current = await ctx.ml.get_endpoint(endpoint)
    if live(current.traffic) != live(change.before["traffic"]):
        raise Stale(f"the split on {endpoint} is now {traffic_text(current.traffic)}, no longer "
                    f"{traffic_text(change.before['traffic'])}.")
    operation = await ctx.ml.set_traffic(endpoint, new, expected=change.before["traffic"])
    return accepted(ctx, operation, f"Traffic on {endpoint} is moving to {traffic_text(new)}.")


async def split_applied(ctx: Context, change: Change) -> Reply | None:
    """After a restart: has the endpoint taken the split (None while Azure ML is still updating it)?"""
    endpoint = await ctx.ml.get_endpoint(change.parameters["endpoint"])
    wanted = live(change.parameters["traffic"])
    if live(endpoint.traffic) == wanted:
        return Reply(f"✅ Traffic on {endpoint.name} is now {traffic_text(wanted)}. [{ctx.where}]", ok=True)
    if endpoint.provisioning_state in ("Creating", "Updating"):
        return None
    return Reply(f"❌ {change.summary} did not take effect: the split is {traffic_text(endpoint.traffic)} "
                 f"(the endpoint is {endpoint.provisioning_state}). [{ctx.where}]", ok=False)


async def record_split(tx, ctx: Context, change: Change, request: Approval | None, now, notes: dict) -> None:
    """History entry and watch, in the transaction of the success record."""
    endpoint = change.parameters["endpoint"]
    before, after = change.before["traffic"], change.parameters["traffic"]
    await traffic_history.note_outside_change(tx, change.workspace, endpoint, before, now)
    who_id, who_name = (request.requester_id, request.requester_name) if request else (ctx.user.id, ctx.user.name)
    entry = await traffic_history.add(tx, traffic_history.NewEntry(
        workspace=change.workspace, endpoint=endpoint, at=now, action=change.action, before=before, after=after,
        actor_id=who_id, actor_name=who_name, approval_id=request.id if request else None,
        reason=change.reason))
    rule = ctx.gate.rule(change.action, change.environment) if ctx.gate is not None else None
    await watches.create(tx, watches.NewWatch(
        workspace=change.workspace, endpoint=endpoint, action=change.action, history_id=entry.id, started_at=now,
        baseline=notes.get("baseline", {}),
        auto_rollback=bool(rule and rule.auto_rollback) and change.action != "rollback",
        approval_id=request.id if request else None,
        conversation_id=request.conversation_id if request else ctx.conversation_id,
        tenant_id=request.tenant_id if request else ctx.user.tenant_id, requester_name=who_name))


# ---------------------------------------------------------------- the local workspace's demo switches


@command("demo", Arg("what", type=one_of(("degrade", "heal"), "demo switch"), metavar="degrade|heal",
                     help="degrade: make a deployment slow and failing; heal: make it healthy again"),
         Arg("endpoint", help="an online endpoint"), Arg("deployment", help="one of its deployments"),
         phrases=("degrade", "heal", "make misbehave", "simulate failure", "break on purpose"),
         summary="Local workspace only: make a deployment misbehave (or recover), to see a verdict.",
         role=Role.ADMIN, example="demo degrade fraud-api green")
async def demo(ctx: Context, what: str, endpoint: str, deployment: str) -> Reply:
    summary = await ctx.ml.demo_switch(what, endpoint, deployment)
    if summary is None:
        return Reply(f"`demo {what}` works only on the local workspace; {ctx.ml.name} is a real Azure ML "
                     f"workspace. [{ctx.where}]")
    now = ctx.now()

    async def work(tx) -> None:
        await audit.append(tx, audit.AuditEntry(
            at=now, event="executed", actor_id=ctx.user.id, actor_name=ctx.user.name, tenant_id=ctx.user.tenant_id,
            action=f"demo {what}", workspace=ctx.ml.name, target=f"deployment {endpoint}/{deployment}",
            outcome=summary, activity_id=ctx.activity_id))
    await ctx.store.run_transaction(work)
    return Reply(f"🧪 {summary} [{ctx.where}]")
