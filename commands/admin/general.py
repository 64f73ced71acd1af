"""Commands about the bot itself and the caller: help (by task), whoami (under the policy in
force), workspace, checklist (the first-run set-up card), and the answer to a greeting (`greet`)."""

from __future__ import annotations

import functools

from adapters.storage import digests, grants, subscriptions
from commands.alerts.alerts import home
from commands.base.context import Context, Reply, Role
from commands.base.registry import CATALOG, Arg, command
from commands.base.ui import button, card, columns, facts, plain, reply, section, text


@command("help", Arg("command", nargs="?", help="a command to explain"),
         phrases=("help", "what can you do", "how do i", "commands", "usage", "how to use", "instructions",
                  "what do you do"),
         summary="List what I can do for you, by task, or explain one command.", example="help traffic",
         uses_workspace=False, group="set up", common=True)
async def help_(ctx: Context, command: str | None) -> Reply:
    if command:
        found = CATALOG.lookup(command)
        body = [text(line) for line in found.help().splitlines()]
        if found.change and ctx.gate is not None:     # the same answer the gate will give
            body += [text(f"In {ws.name} ({ws.environment}) it {ctx.gate.rule(found.name, ws.environment).describe()}.")
                     for ws in ctx.workspaces]
        return reply(card(f"help {found.name}", body))
    return _overview(ctx.role, len(CATALOG.allowed(Role.ADMIN)))


@functools.lru_cache(maxsize=64)
def _overview(role: Role, commands: int) -> Reply:
    """The list of what `role` may run, by task, the common commands first: the same for everyone
    with that role while the catalog has the same `commands`, so it is built once per role; the
    most frequent message is a 15 KB card. Nobody edits a Reply's card after it was built (the
    Teams seam sends it as it is)."""
    allowed = CATALOG.allowed(role)
    body: list = []
    for group, commands_ in CATALOG.by_task(allowed):
        body.append(section(GROUP_TITLES[group]))
        common = [c for c in commands_ if c.common]
        body += [columns(text(f"**{c.name}**"), text(c.summary), widths=["auto", "stretch"]) for c in common]
        rest = [c for c in commands_ if not c.common]
        if rest:
            body.append(text(("Also: " if common else "") + ", ".join(f"`{c.name}`" for c in rest), subtle=True,
                             spacing="None" if common else None))
    hidden = len(list(CATALOG)) - len(allowed)
    body.append(text("Type `help ‹command›` for its usage and an example, e.g. `help endpoint`.", subtle=True,
                     spacing="Medium"))
    if hidden:
        body.append(text(f"{hidden} more command{'s' if hidden > 1 else ''} need a higher role than "
                         f"yours ({role.label}).", subtle=True))
    return reply(card("What I can do", body))


GROUP_TITLES = {"set up": "Set up", "look": "Look", "change": "Change", "approve": "Approve", "alerts": "Alerts"}


@command("whoami",
         phrases=("whoami", "who am i", "my role", "what is my role", "what can i do", "my permissions",
                  "am i admin"),
         summary="Show who you are to me and what your role lets you do under the policy in force.",
         example="whoami", uses_workspace=False, group="set up", common=True)
async def whoami(ctx: Context) -> Reply:
    body = [facts([("Name", plain(ctx.user.name)), ("User id", ctx.user.id), ("Tenant", ctx.user.tenant_id),
                   ("Role", ctx.role.label)]), text(role_allows(ctx.role))]
    if ctx.gate is not None:
        body += [text(line) for line in policy_allows(ctx)]
    if ctx.development:
        body.append(text("Development mode: no Microsoft App ID is configured, so identities are not "
                         "verified.", color="Warning"))
    return reply(card(f"You are {plain(ctx.user.name)}", body))


def policy_allows(ctx: Context) -> list[str]:
    """Per environment, what the policy in force makes of the caller's changes and approvals (read
    through the policy's public `rule`): what runs at once, what asks to confirm, what needs an
    approval, and whether the caller's role may give that approval."""
    lines = []
    environments = list(dict.fromkeys(ws.environment for ws in ctx.workspaces))
    changes = [c for c in CATALOG if c.change]
    for environment in environments:
        names = ", ".join(ws.name for ws in ctx.workspaces if ws.environment == environment)
        mine = [c for c in changes if c.role <= ctx.role]
        rules = [(c.name, ctx.gate.rule(c.name, environment)) for c in changes]
        direct = [f"`{n}`" for n, r in rules if r.mode == "direct" and n in {c.name for c in mine}]
        confirm = [f"`{n}`" for n, r in rules if r.mode == "confirm" and n in {c.name for c in mine}]
        approval = [(n, r) for n, r in rules if r.mode == "approval"]
        parts = []
        if direct:
            parts.append(f"{_and(direct)} run{'s' if len(direct) == 1 else ''} at once")
        if confirm:
            parts.append(f"{_and(confirm)} ask{'s' if len(confirm) == 1 else ''} you to confirm first")
        requested = [f"`{n}`" for n, r in approval if n in {c.name for c in mine}]
        if requested:
            parts.append(f"{_and(requested)} need{'s' if len(requested) == 1 else ''} an approval before "
                         "they run")
        others_only = [f"`{n}`" for n, r in approval if ctx.role >= r.approver_role and not r.allow_self]
        own_too = [f"`{n}`" for n, r in approval if ctx.role >= r.approver_role and r.allow_self]
        cannot = sorted({r.approver_role for n, r in approval if ctx.role < r.approver_role})
        if others_only:
            parts.append(f"you can approve {_and(others_only)} (others' requests, not your own)")
        if own_too:
            parts.append(f"you can approve {_and(own_too)}, your own requests too")
        if cannot:
            parts.append(f"you cannot approve {environment} changes that need " + " or ".join(
                f"an {r.label}" for r in cannot))
        if parts:
            lines.append(f"In {environment} ({names}): " + "; ".join(parts) + ".")
    return lines


GREETINGS = ("hi", "hello", "hey", "hiya", "howdy", "good morning", "good afternoon", "good evening",
             "hi there", "hello there", "hey there")


def is_greeting(words: str) -> bool:
    """"hi", "Hello!", "hey bot": a greeting rather than a command."""
    cleaned = " ".join(words.lower().replace("!", " ").replace(".", " ").replace(",", " ").split())
    cleaned = cleaned.removesuffix(" bot").removesuffix(" mlops bot")
    return cleaned in GREETINGS


async def greet(ctx: Context) -> Reply:
    """The answer to a greeting: who the bot is, the few commands to start with, for this role."""
    first = plain(ctx.user.name.split()[0]) if ctx.user.name.strip() else "there"
    common = [c for c in CATALOG.allowed(ctx.role) if c.common and c.name not in ("help",)][:8]
    lines = [f"Hi {first}! I run Azure Machine Learning from this chat: models, endpoints, jobs, drift alerts "
             "and approvals.",
             "To start: " + ", ".join(f"`{c.example}`" for c in common) + ".",
             f"You are {ctx.role.label} here; `whoami` says what that allows, `help` lists everything by task"
             + (", `checklist` shows what is set up." if ctx.role >= Role.ADMIN else ".")]
    return Reply("\n\n".join(lines))


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def role_allows(role: Role) -> str:
    """What `role` may do, from the same declarations the permission check reads."""
    allowed = CATALOG.allowed(role)
    changes = [f"`{c.name}`" for c in allowed if c.role > Role.VIEWER]
    refused = [c for c in CATALOG if c.role > role]
    text_ = f"As {role.label} you can look at everything"
    text_ += f" and change things with {_and(changes)}." if changes else ", but change nothing."
    if refused:
        needs = sorted({c.role for c in refused})
        text_ += " " + " ".join(f"{_and([f'`{c.name}`' for c in refused if c.role == r])} "
                                f"need{'s' if sum(c.role == r for c in refused) == 1 else ''} the {r.label} role."
                                for r in needs)
    return text_


# ---------------------------------------------------------------- first run


@command("checklist",
         phrases=("checklist", "setup", "set up", "getting started", "what is left to set up", "onboarding"),
         summary="The set-up checklist: roles, approval channel, subscriptions, digest; done or not.",
         example="checklist", uses_workspace=False, group="set up")
async def checklist(ctx: Context) -> Reply:
    return reply(await setup_card(ctx))


async def setup_card(ctx: Context) -> dict:
    """The set-up checklist (shown to the installer when the bot is added, and by `checklist`): each
    step done ✅ or not ⬜, with the command that does it."""
    book = ctx.role_book
    where = home(ctx) if ctx.conversation_id else ""

    async def read(tx):
        granted = await grants.list_grants(tx)
        approvals = await subscriptions.of_kind(tx, "approvals")
        here = await subscriptions.for_conversation(tx, where) if where else []
        digest = await digests.get(tx, where) if where else None
        return granted, approvals, here, digest

    if ctx.store is not None:
        granted, approvals, here, digest = await ctx.store.run_transaction(read, write=False)
    else:
        granted, approvals, here, digest = [], [], [], None
    assigned = dict(book.assignments) if book is not None else {}
    admins = [u for u, r in assigned.items() if r >= Role.ADMIN] + [g for g in granted if g.role == "admin"]
    approvers = [u for u, r in assigned.items() if r == Role.APPROVER] + [g for g in granted if g.role == "approver"]
    open_to_all = book is not None and book.open_until_assigned and not assigned and not granted
    steps = [
        (bool(admins) and not open_to_all, "Roles",
         f"{len(admins)} admin{'s' if len(admins) != 1 else ''}, {len(approvers)} approver"
         f"{'s' if len(approvers) != 1 else ''}" if admins and not open_to_all else
         "nobody is assigned a role yet" + (": everyone is Admin (development mode)" if open_to_all else ""),
         "grant @person approver", "roles"),
        (bool(approvals), "Approval channel",
         f"{len({s.conversation_id for s in approvals})} conversation(s) get approval requests" if approvals else
         "no conversation gets approval requests: type `subscribe approvals` in the approvers' channel",
         "subscribe approvals", "subscriptions"),
        (any(s.kind in ("drift", "alerts") for s in here), "Alerts here",
         ", ".join(sorted({s.kind for s in here})) + " subscribed" if here else
         "this conversation hears no alerts: `subscribe drift ‹model›`, `subscribe alerts`",
         "subscribe drift", "subscriptions"),
        (digest is not None, "Digest",
         f"`{digest.cron}` in {digest.time_zone}" if digest is not None else
         "no model-health digest here: `digest schedule weekdays 09:00 --tz ‹zone›`",
         "digest schedule weekdays 09:00", "digest show"),
    ]
    body = []
    for done, title, detail, _, _ in steps:
        body.append(text(f"{'✅' if done else '⬜'} **{title}**: {detail}", spacing="Small"))
    left = sum(not done for done, *_ in steps)
    body.append(text(f"{len(steps) - left} of {len(steps)} done." + (" `help` lists the commands by task; "
                     "`policies` shows who must approve what." if left else " All set."), subtle=True,
                     spacing="Medium"))
    actions = [button("Show roles", "roles"), button("Show subscriptions", "subscriptions"),
               button("Policies", "policies")]
    return card("Setting up the MLOps bot", body, actions=actions)


@command("workspace",
         phrases=("workspace", "which workspace", "what workspace", "subscription", "resource group", "region",
                  "where are you connected", "environment"),
         summary="Show the Azure ML workspace I work on, and the others configured.",
         example="workspace", group="look")
async def workspace(ctx: Context) -> Reply:
    info = await ctx.ml.workspace()
    body = [facts([("Name", info.name), ("Environment", info.environment), ("Backend", info.backend),
                   ("Subscription", info.subscription_id), ("Resource group", info.resource_group),
                   ("Location", info.location), ("Description", plain(info.description))])]
    others = [ws for ws in ctx.workspaces if ws.name != info.name]
    if others:
        body.append(section("Also configured"))
        body += [text(f"{ws.name} ({ws.environment})") for ws in others]
    return reply(card(f"Workspace {info.name}", body))
