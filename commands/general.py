"""Commands about the bot itself and the caller: help, whoami, workspace."""

from __future__ import annotations

import functools

from commands.context import Context, Reply, Role
from commands.registry import CATALOG, Arg, command
from commands.ui import card, columns, facts, plain, reply, section, text


@command("help", Arg("command", nargs="?", help="a command to explain"),
         summary="List what I can do for you, or explain one command.", example="help traffic",
         uses_workspace=False)
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
    """The list of what `role` may run: the same for everyone with that role while the catalog has
    the same `commands`, so it is built once per role; the most frequent message is a 15 KB card.
    Nobody edits a Reply's card after it was built (the Teams seam sends it as it is)."""
    allowed = CATALOG.allowed(role)
    rows = [columns(text(f"**{c.name}**"), text(c.summary), widths=["auto", "stretch"]) for c in allowed]
    hidden = len(list(CATALOG)) - len(allowed)
    body = [*rows, text("Type `help ‹command›` for its usage and an example, e.g. `help endpoint`.", subtle=True)]
    if hidden:
        body.append(text(f"{hidden} more command{'s' if hidden > 1 else ''} need a higher role than "
                         f"yours ({role.label}).", subtle=True))
    return reply(card("What I can do", body))


@command("whoami", summary="Show who you are to me and what your role lets you do.", example="whoami",
         uses_workspace=False)
async def whoami(ctx: Context) -> Reply:
    body = [facts([("Name", plain(ctx.user.name)), ("User id", ctx.user.id), ("Tenant", ctx.user.tenant_id),
                   ("Role", ctx.role.label)]), text(role_allows(ctx.role))]
    if ctx.development:
        body.append(text("Development mode: no Microsoft App ID is configured, so identities are not "
                         "verified.", color="Warning"))
    return reply(card(f"You are {plain(ctx.user.name)}", body))


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


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@command("workspace", summary="Show the Azure ML workspace I work on, and the others configured.",
         example="workspace")
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
