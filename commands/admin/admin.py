"""Who may do what: grant, revoke, roles, policies.

Roles come from three places, strongest first: the environment (`MLOPSBOT_ADMINS`,
`MLOPSBOT_APPROVERS`, `MLOPSBOT_OPERATORS`, changed only by redeploying), grants an admin made in
chat (stored, audited), and the default role. A user is named by Entra object id (aadObjectId)
or by @mention, which the Teams seam resolves to the member's object id; never by display name.
"""

from __future__ import annotations

import re
from dataclasses import replace

from adapters.storage import audit, grants, people
from adapters.storage.grants import Grant
from commands.base.context import Context, Reply, Role, User
from commands.changes.policy import CHANGE_ACTIONS
from commands.base.registry import CATALOG, CLOSE, OPEN, Arg, UsageError, command, one_of
from commands.base.ui import card, columns, facts, limited, plain, reply, section, text, when

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ROLE_NAMES = tuple(r.name.lower() for r in Role)


def _person(ctx: Context, word: str) -> User:
    """The user a command names: an @mention (resolved by the seam) or an Entra object id."""
    for person in ctx.mentioned:
        if word in (person.id, person.name):
            return person
    if _OBJECT_ID.match(word):
        return User(id=word.lower(), name=word.lower(), tenant_id=ctx.user.tenant_id)
    raise UsageError(f"'{word}' is not a person I can identify. @mention them, or give their Entra object id "
                     "(a GUID such as 00000000-0000-0000-0000-000000000b0b, shown by `whoami`). If you did "
                     "@mention them: Teams tells the bot only about the members of this conversation, and I "
                     "have not met them yet; mention them in a channel they belong to, or use their object id.")


def _one_person(words: list[str] | str, usage: str, role: str) -> str:
    """The one word naming a person; a name typed in several words (`grant Bob Builder viewer`)
    gets asked to be quoted or, better, @mentioned."""
    if isinstance(words, str):
        return words
    if len(words) == 1:
        return words[0]
    name = " ".join(words)
    raise UsageError(f"'{name}' is {len(words)} words: @mention the person (`grant @{name} {role}`), or put "
                     f"the name in quotes (`grant \"{name}\" {role}`). Usage: `{usage}`")


def _store(ctx: Context):
    if ctx.store is None or ctx.role_book is None:
        raise UsageError("Role management is not available here.")
    return ctx.store


def _audit_entry(ctx: Context, event: str, person: User, before: str, after: str) -> audit.AuditEntry:
    return audit.AuditEntry(at=ctx.now(), event=event, actor_id=ctx.user.id, actor_name=ctx.user.name,
                            actor_upn=ctx.user.upn, tenant_id=ctx.user.tenant_id, action="role",
                            target=f"user {person.name} ({person.id})", before={"role": before},
                            after={"role": after}, activity_id=ctx.activity_id)


async def _known_as(ctx: Context, person: User) -> User:
    """`person` with the display name the bot knows them by, when they were given as an object id."""
    if person.name != person.id:
        return person
    known = await ctx.store.run_transaction(lambda tx: people.names(tx, [person.id]), write=False)
    return replace(person, name=known.get(person.id, person.name))


@command("grant", Arg("user", nargs="+", help="an @mention or an Entra object id"),
         Arg("role", type=one_of(ROLE_NAMES, "role"), help="viewer, operator, approver or admin"),
         phrases=("grant", "give role", "make approver", "make operator", "make admin", "make viewer",
                  "add approver"),
         summary="Give someone a role (admins only).", role=Role.ADMIN,
         example="grant 00000000-0000-0000-0000-000000000b0b approver", uses_workspace=False, group="set up")
async def grant(ctx: Context, user: list[str] | str, role: str) -> Reply:
    user = _one_person(user, f"grant {OPEN}person{CLOSE} {role}", role)
    store = _store(ctx)
    person = await _known_as(ctx, _person(ctx, user))
    fixed = ctx.role_book.assignments.get(person.id)
    if fixed is not None:
        raise UsageError(f"{person.name} is {fixed.label} through the environment (MLOPSBOT_{fixed.name}S); "
                         "change it there.")

    book = ctx.role_book

    async def work(tx) -> tuple[Grant | None, bool]:
        # Development mode makes everyone Admin until a role is assigned: the first grant would take
        # Admin from the person granting it (and from everyone), leaving no admin. Keep them Admin.
        keep_granter = (book is not None and book.open_until_assigned and not book.assignments
                        and person.id != ctx.user.id and role != "admin" and not await grants.any_grant(tx))
        previous = await grants.put_grant(tx, Grant(user_id=person.id, user_name=person.name, role=role,
                                                    granted_by_id=ctx.user.id, granted_by_name=ctx.user.name,
                                                    granted_at=ctx.now()))
        await audit.append(tx, _audit_entry(ctx, "role_granted", person, previous.role if previous else "", role))
        if keep_granter:
            await grants.put_grant(tx, Grant(user_id=ctx.user.id, user_name=ctx.user.name, role="admin",
                                             granted_by_id=ctx.user.id, granted_by_name=ctx.user.name,
                                             granted_at=ctx.now()))
            await audit.append(tx, _audit_entry(ctx, "role_granted", ctx.user, "", "admin"))
        return previous, keep_granter

    previous, kept = await store.run_transaction(work)
    was = f" (was {previous.role.capitalize()})" if previous else ""
    text = f"{person.name} is now {role.capitalize()}{was}. Recorded in the audit trail."
    if kept:
        text += (" You are now Admin by grant too: until now everyone was Admin (development mode, no role "
                 "assigned), and the first role assigned ends that for everyone else.")
    return Reply(text)


@command("revoke", Arg("user", help="an @mention or an Entra object id"),
         phrases=("revoke", "remove role", "take away role", "demote"),
         summary="Take back a role granted in chat (admins only).", role=Role.ADMIN,
         example="revoke 00000000-0000-0000-0000-000000000b0b", uses_workspace=False, group="set up")
async def revoke(ctx: Context, user: str) -> Reply:
    store = _store(ctx)
    person = _person(ctx, user)

    async def work(tx) -> Grant | None:
        removed = await grants.remove_grant(tx, person.id)
        if removed is not None:
            await audit.append(tx, _audit_entry(ctx, "role_revoked", User(person.id, removed.user_name),
                                                removed.role, ""))
        return removed

    removed = await store.run_transaction(work)
    if removed is None:
        fixed = ctx.role_book.assignments.get(person.id)
        where = f" Their {fixed.label} role comes from the environment." if fixed else ""
        return Reply(f"{person.name} has no role granted in chat.{where}")
    return Reply(f"{removed.user_name} is no longer {removed.role.capitalize()}; they now have the default role. "
                 "Recorded in the audit trail.")


@command("roles", summary="Show who has which role, and where it comes from.", example="roles",
         phrases=("roles", "who has role", "who is admin", "who are approvers", "who can approve", "permissions",
                  "who is operator", "who can change"),
         uses_workspace=False, group="set up")
async def roles(ctx: Context) -> Reply:
    store = _store(ctx)
    stored = await store.run_transaction(grants.list_grants, write=False)
    met = await store.run_transaction(lambda tx: people.names(tx, list(ctx.role_book.assignments)), write=False)
    rows = [(user_id, met.get(user_id, ""), role, "environment") for user_id, role in ctx.role_book.assignments.items()]
    rows += [(g.user_id, g.user_name, Role.parse(g.role),
              f"granted by {plain(g.granted_by_name)}, {when(g.granted_at)}") for g in stored]
    rows.sort(key=lambda row: (-row[2], row[1] or row[0]))

    def row(item) -> dict:
        user_id, name, role, source = item
        who = f"**{plain(name)}** {user_id}" if name and name != user_id else f"**{user_id}**"
        return columns([text(who, wrap=True), text(source, subtle=True, spacing="None")],
                       text(role.label), widths=["stretch", "auto"])

    default, _ = ctx.role_book.placed(User(id="", name=""), any_grant=bool(stored))
    body = limited(rows, row, noun="assignment")
    body.append(text(f"Everyone else: {default.label}.", subtle=True))
    if default < Role.ADMIN and not any(role == Role.ADMIN for _, _, role, _ in rows):
        body.append(text("Nobody is Admin, so nobody can grant or revoke roles here. Set MLOPSBOT_ADMINS to the "
                         "Entra object id of an admin (`whoami` shows yours) and restart the bot.", color="Attention"))
    return reply(card("Roles", body))


def _needs(ctx: Context, action: str, environment: str) -> str:
    """The rule in words, with the role it needs: who may ask for it, and who approves."""
    rule = ctx.gate.rule(action, environment)
    requester = CATALOG.find(action).role
    return f"{rule.describe()} (requested by {requester.label}s and above)"


@command("policies", summary="Show what each change needs: nothing, a confirmation, or approvals.",
         phrases=("policies", "policy", "rules", "what needs approval", "what needs confirmation", "gates",
                  "what needs", "approval rules", "need confirmation", "need approval", "needs approval"),
         example="policies", uses_workspace=False, group="set up")
async def policies(ctx: Context) -> Reply:
    if ctx.gate is None:
        raise UsageError("Policies are not available here.")
    environments = list(dict.fromkeys(ws.environment for ws in ctx.workspaces))
    # every environment: the configured ones, and production and "any other" when none is configured,
    # so the page also says what a workspace added later would get
    if not any(e.lower() in ("prod", "production") for e in environments):
        environments.append("prod")
    if all(e.lower() in ("prod", "production") for e in environments):
        environments.append("")
    body = []
    for environment in environments:
        names = ", ".join(ws.name for ws in ctx.workspaces if ws.environment == environment)
        body.append(section(f"{environment} ({names})" if names else
                            f"{environment} (no workspace configured)" if environment else "Any other environment"))
        body.append(facts([(action, _needs(ctx, action, environment)) for action in CHANGE_ACTIONS
                           if CATALOG.find(action)]))
    role = getattr(ctx.gate.policy, "subscription_role", Role.OPERATOR)
    body.append(text(f"Subscriptions (`subscribe`, `unsubscribe`): {role.label}s and above.", spacing="Medium"))
    if not ctx.gate.approval_channel:
        body.append(text("No approval channel is set (MLOPSBOT_APPROVAL_CHANNEL): requests reach each approver in "
                         "their personal chat with the bot, and are @mentioned where they are asked.",
                         color="Warning", wrap=True))
    source = ctx.gate.policy.source or "the built-in defaults (no MLOPSBOT_POLICY_FILE)"
    body.append(text(f"From {source}.", subtle=True))
    return reply(card("Policies", body))
