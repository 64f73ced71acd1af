"""The audit trail in chat: `audit` lists who did what; `audit verify` proves nothing was altered.

Records are appended by the gate (requests, confirmations, votes, executions, outcomes), by role
changes and at start-up (the policy loaded); none is ever updated or deleted. Each carries the
SHA-256 of its canonical encoding plus the previous record's hash, so `audit verify` finds the
first record that was altered, removed or inserted.
"""

from __future__ import annotations

import re
from datetime import timedelta

from adapters.storage import audit as audit_log
from adapters.storage.audit import AuditRecord
from commands.context import Context, Reply
from commands.registry import CATALOG, Arg, UsageError, command, suggest, whole_number
from commands.ui import card, columns, facts, limited, plain, reply, text, when

MAX_AUDIT_ROWS = 200
_SINCE = re.compile(r"^([0-9]{1,5})([mhdw])$")     # ASCII digits: \d also matches '٣'


def parse_since(value: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w` -> how far back."""
    found = _SINCE.match(value.strip().lower())
    if not found or int(found.group(1)) == 0:
        raise UsageError(f"'{value}' is not a time span. Use a number and a unit: 30m, 12h, 7d or 2w.")
    number, unit = int(found.group(1)), found.group(2)
    return {"m": timedelta(minutes=number), "h": timedelta(hours=number), "d": timedelta(days=number),
            "w": timedelta(weeks=number)}[unit]


def record_line(record: AuditRecord) -> str:
    """One sentence a person reads: when, who, what, where, how it ended."""
    whom = record.target.removeprefix("user ")
    if record.event == "role_granted":
        was = f" (was {record.before['role'].capitalize()})" if record.before.get("role") else ""
        return f"{record.actor_name} made {whom} {record.after.get('role', '?').capitalize()}{was}"
    if record.event == "role_revoked":
        return f"{record.actor_name} took back {whom}'s {record.before.get('role', '?').capitalize()} role"
    if record.event == "policy_loaded":
        return f"{record.actor_name} loaded the policy from {record.detail.get('source', '?')}"
    what = record.event.replace("vote:", "voted to ").replace("_", " ")
    subject = " ".join(p for p in (record.action, record.target) if p)
    where = f" in {record.workspace}" if record.workspace else ""
    request = f" (request #{record.approval_id})" if record.approval_id else ""
    outcome = f": {record.outcome}" if record.outcome else ""
    return f"{record.actor_name} {what} {subject}{where}{request}{outcome}".replace("  ", " ")


def audit_row(record: AuditRecord) -> dict:
    return columns(text(f"#{record.seq}", subtle=True), [text(plain(record_line(record)), wrap=True),
                   text(when(record.at), subtle=True, spacing="None")], widths=["auto", "stretch"])


def audit_card(records: list[AuditRecord], *, filters: str) -> dict:
    body = limited(records, audit_row, noun="record", more_hint="Narrow it with --since, --actor or --target.")
    return card("Audit trail", body, subtitle=plain(filters) or "Latest records, newest first")


async def _known_action(ctx: Context, action: str) -> None:
    """UsageError with a "did you mean" when `--action` names nothing the trail holds or a change
    command could write (`trafic`, `Traffic`): "No records." would hide the typo."""
    known = await ctx.store.run_transaction(audit_log.actions, write=False)
    known |= {c.name for c in CATALOG if c.change}
    if action in known:
        return
    close = suggest(action, sorted(known), n=1)
    hint = f" Did you mean `audit --action {close[0]}`?" if close else f" It holds: {', '.join(sorted(known))}."
    raise UsageError(f"No action or event is called '{action}' in the audit trail.{hint}")


@command("audit", Arg("verify", nargs="?", choices=("verify",), help="check the whole chain instead of listing"),
         Arg("--since", help="how far back: 30m, 12h, 7d, 2w", metavar="SPAN"),
         Arg("--actor", help="who (name or Entra object id)", metavar="WHO"),
         Arg("--target", help="what was changed, e.g. fraud-api", metavar="WHAT"),
         Arg("--action", help="a change command or an event, e.g. traffic or approved", metavar="ACTION"),
         Arg("--limit", type=whole_number(1, MAX_AUDIT_ROWS, "records"), default=20,
             help=f"how many (1 to {MAX_AUDIT_ROWS}, default 20)", metavar="N"),
         phrases=("audit", "audit trail", "who changed", "who did", "what changed", "who approved", "who rejected",
                  "changes", "what did change", "what did we deploy", "recent changes", "what happened",
                  "who touched", "activity", "who promoted", "who scaled", "who rolled back", "log of changes",
                  "tampered", "verify audit", "what did i do", "who stopped", "who started"),
         summary="Show who changed, approved or rejected what; `audit verify` checks nothing was altered.",
         example="audit --since 7d --target fraud-api", uses_workspace=False)
async def audit(ctx: Context, verify: str | None, since: str | None, actor: str | None, target: str | None,
                action: str | None, limit: int) -> Reply:
    if ctx.store is None:
        raise UsageError("The audit trail is not available here.")
    if verify:
        result = await ctx.store.run_transaction(audit_log.verify, write=False)
        if result.ok:
            body = [text(f"✅ The chain of {result.checked} records is intact: every record's hash and link "
                         "verify, and nothing is missing at the end.", color="Good", wrap=True)]
        else:
            body = [text(f"❌ The audit trail was tampered with: {result.problem}.", color="Attention", wrap=True),
                    facts([("First bad record", result.first_bad_seq), ("Records checked", result.checked)])]
        return reply(card("Audit trail check", body))
    start = ctx.now() - parse_since(since) if since else None

    async def read(tx) -> list[AuditRecord]:
        return await audit_log.query(tx, since=start, actor=actor, target=target, action=action, limit=limit)

    records = await ctx.store.run_transaction(read, write=False)
    if action and not records:
        await _known_action(ctx, action)
    filters = " · ".join(f"{name} {value}" for name, value in (("since", since), ("actor", actor),
                                                               ("target", target), ("action", action)) if value)
    return reply(audit_card(records, filters=filters))
