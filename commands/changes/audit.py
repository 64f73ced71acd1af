"""The audit trail in chat: `audit` lists who did what; `audit verify` proves nothing was altered.

Records are appended by the gate (requests, confirmations, votes, executions, outcomes), by role
changes and at start-up (the policy loaded); none is ever updated or deleted. Each carries the
HMAC-SHA256 of its canonical encoding (keyed with MLOPSBOT_AUDIT_KEY; records from before storage
migration 16 a plain SHA-256) plus the previous record's hash, so `audit verify` finds the first
record that was altered, removed or inserted, and `audit verify --head <hash>` checks the chain
against an anchor kept outside the database (the daily digest, the log): a cut tail is caught and
the records added since the anchor are counted.
"""

from __future__ import annotations

import re
from datetime import timedelta

from adapters.storage import audit as audit_log
from adapters.storage.audit import AuditRecord
from commands.base.context import Context, Reply, Role, shown_name
from commands.changes.export_links import FORMATS, LINK_TTL
from commands.base.registry import CATALOG, Arg, Forbidden, UsageError, command, suggest, whole_number
from commands.base.ui import card, columns, facts, limited, plain, reply, text, when

EXPORT_ROLE = Role.APPROVER       # who may take the whole trail away as a file

MAX_AUDIT_ROWS = 200
_HASH = re.compile(r"^[0-9a-f]{64}$")
_SINCE = re.compile(r"^([0-9]{1,5})([mhdw])$")     # ASCII digits: \d also matches '٣'


def parse_since(value: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w` -> how far back."""
    found = _SINCE.match(value.strip().lower())
    if not found or int(found.group(1)) == 0:
        raise UsageError(f"'{value}' is not a time span. Use a number and a unit: 30m, 12h, 7d or 2w.")
    number, unit = int(found.group(1)), found.group(2)
    return {"m": timedelta(minutes=number), "h": timedelta(hours=number), "d": timedelta(days=number),
            "w": timedelta(weeks=number)}[unit]


def _about(record: AuditRecord) -> str:
    """"#1 (traffic on fraud-api)", or "traffic on fraud-api" for a change without a request."""
    name = record.target
    for kind in ("batch endpoint ", "endpoint ", "deployment ", "model ", "schedule ", "job ", "compute "):
        name = name.removeprefix(kind) if name.startswith(kind) else name
    what = f"{record.action} on {name}" if record.action and name else (record.action or name)
    if record.workspace:
        what += f" in {record.workspace}"
    return f"#{record.approval_id} ({what})" if record.approval_id else what


_DECISIONS = {"vote:approve": "approved", "vote:reject": "rejected", "requested": "asked for", "joined": "joined",
              "withdrawn": "withdrew", "executed": "carried out", "confirmed": "confirmed"}


def record_line(record: AuditRecord, *, verb: str | None = None) -> str:
    """One sentence a person reads: who did what to which request, and why
    ("Bob Builder approved #1 (traffic on fraud-api): green passed the shadow test")."""
    if record.event == audit_log.DAMAGED:
        return f"⚠️ {record.detail.get('damage', 'damaged')}; audit verify checks the whole trail"
    whom = record.target.removeprefix("user ")
    who = shown_name(record.actor_id, record.actor_name)
    if record.event == "role_granted":
        was = f" (was {record.before['role'].capitalize()})" if record.before.get("role") else ""
        return f"{who} made {whom} {record.after.get('role', '?').capitalize()}{was}"
    if record.event == "role_revoked":
        return f"{who} took back {whom}'s {record.before.get('role', '?').capitalize()} role"
    if record.event == "policy_loaded":
        return f"{who} loaded the policy from {record.detail.get('source', '?')}"
    about = _about(record)
    comment = str(record.detail.get("comment") or "")
    why = comment or record.reason
    said = f": {why}" if why and record.event in ("vote:approve", "vote:reject", "requested", "reviewed") else ""
    if record.event in _DECISIONS:
        if record.event == "executed" and not record.approval_id:
            ran = " at once" if record.detail.get("review") else ""
            return f"{who} ran {about}{ran}" + (f": {record.reason}" if record.reason else "")
        return f"{who} {verb or _DECISIONS[record.event]} {about}{said}"
    if record.event in ("approved", "rejected"):            # alone (a filtered list): the decision
        return f"{who} {record.event} {about}"
    if record.event in ("succeeded", "failed"):
        return f"{about} {record.event}" + (f": {record.outcome}" if record.outcome else "")
    if record.event == "expired":
        return f"{about} expired without a decision"
    if record.event == "review_requested":
        told = record.detail.get("told", 0)
        return f"{who} asked the approvers to review {about} ({told} place{'s' if told != 1 else ''} told)"
    if record.event == "reviewed":
        return f"{who} reviewed {about} (change #{record.detail.get('operation', '?')}){said}"
    if record.event == "reminded":
        return f"{about} had waited {record.detail.get('waited', '?')}: approvers reminded, admins told"
    what = record.event.replace("vote:", "voted to ").replace("_", " ")
    subject = " ".join(p for p in (record.action, record.target) if p)
    where = f" in {record.workspace}" if record.workspace else ""
    request = f" (request #{record.approval_id})" if record.approval_id else ""
    outcome = f": {record.outcome}" if record.outcome else ""
    return f"{who} {what} {subject}{where}{request}{outcome}".replace("  ", " ")


def story(records: list[AuditRecord]) -> list[tuple[AuditRecord, str]]:
    """Each record with its sentence, one line per decision: a vote and the state change it caused
    (same person, same request, the next record) read as one line ("confirmed" wins over "approved")."""
    by_seq = {r.seq: r for r in records}
    skipped, verbs = set(), {}
    for record in records:
        if record.event in ("approved", "rejected", "confirmed") and record.approval_id:
            vote = by_seq.get(record.seq - 1)
            if vote is not None and vote.event.startswith("vote:") and vote.approval_id == record.approval_id \
                    and vote.actor_id == record.actor_id:
                skipped.add(record.seq)
                if record.event == "confirmed":
                    verbs[vote.seq] = "confirmed"
    return [(r, record_line(r, verb=verbs.get(r.seq))) for r in records if r.seq not in skipped]


def verification_body(result: audit_log.Verification, anchor: str | None) -> list[dict]:
    """What `audit verify` found, in words: the verdict, how the chain is keyed, the anchor."""
    if result.keyed_from is None:
        keyed = "No record is keyed yet."
    elif result.keyed_from == 1:
        keyed = "Every record is keyed."
    else:
        keyed = (f"Records 1 to {result.keyed_from - 1} were written before keying (plain SHA-256, protected only "
                 f"by anchors kept before them); from record {result.keyed_from} on they are keyed.")
    if not result.keyed and result.keyed_from is not None:
        keyed += (" ⚠️ Unkeyed: MLOPSBOT_AUDIT_KEY is not set (development mode), so the key is the public "
                  "development key and the chain proves nothing against someone who can write the database.")
    if not result.ok:
        return [text(f"❌ The audit trail was tampered with: {result.problem}.", color="Attention", wrap=True),
                facts([("First bad record", result.first_bad_seq), ("Records checked", result.checked)]),
                text(keyed, subtle=True, wrap=True)]
    body = [text(f"✅ The chain of {result.checked} records is intact: every record's hash and link "
                 "verify, and nothing is missing at the end.", color="Good", wrap=True),
            text(keyed, subtle=True, wrap=True)]
    if anchor is not None:
        if result.after_anchor:
            first = result.head_seq - result.after_anchor + 1
            span = f"record {first}" if result.after_anchor == 1 else f"records {first} to {result.head_seq}"
            body.append(text(f"⚠️ The anchor is record {first - 1}; {span} were added after it. Read them with "
                             f"`audit --limit {min(result.after_anchor, MAX_AUDIT_ROWS)}` and check each is "
                             "expected.", color="Warning", wrap=True))
        else:
            body.append(text(f"The anchor is the head: nothing was added after it (record {result.head_seq}).",
                             wrap=True))
    body.append(facts([("Head", f"{result.head_seq} records, {result.head_hash}")]))
    return body


def audit_row(item: AuditRecord | tuple[AuditRecord, str]) -> dict:
    record, line = item if isinstance(item, tuple) else (item, record_line(item))
    return columns(text(f"#{record.seq}", subtle=True), [text(plain(line), wrap=True),
                   text(when(record.at), subtle=True, spacing="None")], widths=["auto", "stretch"])


def audit_card(records: list[AuditRecord], *, filters: str) -> dict:
    body = limited(story(records), audit_row, noun="record", more_hint="Narrow it with --since, --actor or --target.")
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


@command("audit", Arg("verify", nargs="?", choices=("verify", "export"), metavar="verify|export",
                      help="verify: check the whole chain; export: a file of it (a signed link, personal chat)"),
         Arg("--since", help="how far back: 30m, 12h, 7d, 2w", metavar="SPAN"),
         Arg("--actor", help="who (name or Entra object id)", metavar="WHO"),
         Arg("--target", help="what was changed, e.g. fraud-api", metavar="WHAT"),
         Arg("--action", help="a change command or an event, e.g. traffic or approved", metavar="ACTION"),
         Arg("--limit", type=whole_number(1, MAX_AUDIT_ROWS, "records"), default=20,
             help=f"how many (1 to {MAX_AUDIT_ROWS}, default 20)", metavar="N"),
         Arg("--head", help="with verify: an anchor (head hash from the digest or the log) the chain must hold",
             metavar="HASH"),
         Arg("--format", choices=FORMATS, help="with export: csv (default) or jsonl", metavar="csv|jsonl"),
         phrases=("audit", "audit trail", "who changed", "who did", "what changed", "who approved", "who rejected",
                  "changes", "what did change", "what did we deploy", "recent changes", "what happened",
                  "who touched", "activity", "who promoted", "who scaled", "who rolled back", "log of changes",
                  "tampered", "verify audit", "what did i do", "who stopped", "who started"),
         summary="Show who changed, approved or rejected what; `audit verify` checks nothing was altered; "
                 "`audit export` gives you the trail as a file (Approvers and above).",
         example="audit --since 7d --target fraud-api", uses_workspace=False)
async def audit(ctx: Context, verify: str | None, since: str | None, actor: str | None, target: str | None,
                action: str | None, limit: int, head: str | None = None, format: str | None = None) -> Reply:
    if ctx.store is None:
        raise UsageError("The audit trail is not available here.")
    if format is not None and verify != "export":
        raise UsageError("--format goes with export: `audit export --since 30d --format csv`.")
    if verify == "export":
        return await _export(ctx, since, format or "csv")
    if head is not None and not verify:
        raise UsageError("--head goes with verify: `audit verify --head <hash>`.")
    if verify == "verify":
        anchor = head.strip().lower() if head else None
        if anchor is not None and not _HASH.match(anchor):
            raise UsageError("--head takes the 64-hex-digit head hash the daily digest or the log shows, "
                             "as in `audit verify --head 3f2a…`.")
        result = await ctx.store.run_transaction(lambda tx: audit_log.verify(tx, anchor=anchor), write=False)
        return reply(card("Audit trail check", verification_body(result, anchor)))
    start = ctx.now() - parse_since(since) if since else None

    async def read(tx) -> list[AuditRecord]:
        return await audit_log.query(tx, since=start, actor=actor, target=target, action=action, limit=limit,
                                     tenant_id=ctx.user.tenant_id or None)

    records = await ctx.store.run_transaction(read, write=False)
    if action and not records:
        await _known_action(ctx, action)
    filters = " · ".join(f"{name} {value}" for name, value in (("since", since), ("actor", actor),
                                                               ("target", target), ("action", action)) if value)
    return reply(audit_card(records, filters=filters))


async def _export(ctx: Context, since: str | None, fmt: str) -> Reply:
    """A signed, single-use link to the trail as a file, for the asker only (commands/changes/export_links.py)."""
    if ctx.role < EXPORT_ROLE:
        raise Forbidden(f"`audit export` needs the {EXPORT_ROLE.label} role; you have {ctx.role.label}. "
                        "`audit` shows the trail in chat.")
    if ctx.export_links is None:
        raise UsageError("Audit export needs the bot's public address: set MLOPSBOT_PUBLIC_URL "
                         "(e.g. https://bot.example.com) and restart. `audit` shows the trail in chat.")
    if ctx.conversation_kind not in ("personal", ""):
        raise UsageError("The export link is yours alone, so I give it only in a personal chat: message me "
                         "directly and type `audit export` there.")
    if not ctx.user.id:
        raise Forbidden("An export is for a signed-in person; you have no organization account id.")
    span = since or "30d"
    start = ctx.now() - parse_since(span)

    async def count(tx) -> int:
        return len(await audit_log.query(tx, since=start, limit=100_000, tenant_id=ctx.user.tenant_id or None))
    records = await ctx.store.run_transaction(count, write=False)
    url = ctx.export_links.issue(ctx.user, since=start, fmt=fmt, now=ctx.now())
    minutes = int(LINK_TTL.total_seconds() // 60)
    name = f"audit-{ctx.now():%Y%m%d}.{fmt}"
    body = [text(f"{records} record{'s' if records != 1 else ''} of the last {span}, as {fmt.upper()}.", wrap=True),
            text(f"The link works once, for {minutes} minutes, and only for you: it is signed for your account "
                 "and tenant, and the bot checks your role again when you open it. Don't forward it.",
                 subtle=True, wrap=True)]
    download = {"type": "Action.OpenUrl", "title": f"Download {name}", "url": url}
    return Reply(f"Audit export ready: {name}", card=card("Audit export", body, subtitle="Signed link, single use",
                                                         actions=[download]))
