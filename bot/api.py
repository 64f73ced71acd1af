"""The HTTP API for pipelines: an approval gate (`/api/approvals`) and the audit export (`/api/audit`).

    POST /api/approvals        open a request; 201 {"id": 42, "state": "pending", ...}
    GET  /api/approvals/{id}   its state, votes and decider, for the pipeline to poll
    GET  /api/audit?format=jsonl|csv&since=7d|2026-11-01T00:00:00Z
                               (in the CSV, a cell starting with = + - @, tab, CR, NUL or a
                               full-width ＝ ＋ － ＠ gets a leading ')

A requester opens at most MLOPSBOT_CHANGE_REQUESTS_PER_MINUTE requests in any minute (as in chat), and
all requesters together at most MLOPSBOT_PIPELINE_REQUESTS_PER_MINUTE (a loop cannot escape by renaming
its requester); beyond either POST /api/approvals answers 429 with Retry-After (seconds) and
`retry_after` in the body. Both are counted in storage, shared by every replica (commands/changes/ratelimit.py).

Every call carries `Authorization: Bearer <MLOPSBOT_API_TOKEN>`, compared in constant time; without
a configured token the API is off (503). Bad bodies get 400 (not JSON) or 422 naming the field;
never 500. When the bot's database is down, every call gets 503 with `Retry-After` (bot/app.py's
middleware turns StorageUnavailable into it): retry, as after any 503. See docs/ci-gate.md for GitHub Actions and Azure Pipelines steps.

A request with `"execute": true` names a change command (`traffic`, `scale`, ...) and its
arguments; the bot checks them like a typed command, reads the "before", and carries out the
change once approved. With `"execute": false` the bot is only the gate: any action and target,
and the pipeline does the change itself after polling `approved`.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
from dataclasses import dataclass, field as declared, fields
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from adapters import jsonsafe
from adapters.storage import StorageError, approvals as approval_store, audit as audit_log, inbox
from adapters.storage.approvals import Approval
from bot.bodies import BodyTimeout, read_body
from bot.handler import ChatHandler, explain
from commands.changes.audit import EXPORT_ROLE, parse_since, story
from commands.changes.export_links import EXPORT_PATH, LinkRefused
from commands.base.context import PIPELINE_PREFIX, Role, User
from commands.changes.change import Change
from commands.changes.gate import REDELIVERED, Pipeline
from commands.changes.ratelimit import TooManyRequests
from commands.changes.policy import APPROVAL, Rule
from commands.base.registry import CommandError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_BODY_DEPTH = 32
# What a request stores (parameters, before, after) is kept in the audit chain forever and read back
# by every export: bounded at the door, so one odd request cannot break every later export.
MAX_STORED_DEPTH = 8
MAX_STORED_BYTES = 8192
# A pipeline that retries a POST whose answer it lost sends the same key: it gets the request the
# first call opened, not a second one to approve (and perhaps run twice).
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP); some
# also read the full-width forms (U+FF1D ＝, U+FF0B ＋, U+FF0D －, U+FF20 ＠) as the ASCII ones, and
# a leading NUL is dropped by some importers, leaving what follows it at the start.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _text(least: int, most: int, *, required: bool = False, https: bool = False) -> Any:
    """A string field of GateRequest, `least` to `most` characters; "" when absent unless required."""
    rules = {"kind": "text", "least": least, "most": most, "required": required, "https": https}
    return declared(metadata=rules) if required else declared(default="", metadata=rules)


def _json_object() -> Any:
    """An object field of GateRequest: stored in the audit chain forever, so bounded at the door."""
    return declared(default_factory=dict, metadata={"kind": "object"})


@dataclass(frozen=True, kw_only=True)
class GateRequest:
    """The body of POST /api/approvals: these fields and no others, checked in this order (a 422
    answer names the first problem)."""

    action: str = _text(1, 64, required=True)
    workspace: str = _text(0, 128)
    target: str = _text(0, 300)
    parameters: dict[str, Any] = _json_object()
    reason: str = _text(0, 1000)
    requester: str = _text(1, 200, required=True)
    conversation: str = _text(1, 400, required=True)
    run_url: str = _text(0, 1000, https=True)
    execute: bool = declared(default=False, metadata={"kind": "boolean"})     # JSON true or false, not "yes" or 1
    before: dict[str, Any] = _json_object()
    after: dict[str, Any] = _json_object()

    @classmethod
    def from_json(cls, body: object) -> "GateRequest":
        """The request a decoded JSON body makes; _Unprocessable naming the first bad field otherwise."""
        if not isinstance(body, dict):
            raise _Unprocessable("body: must be a JSON object", "body")
        names = [each.name for each in fields(cls)]
        for each in fields(cls):
            if each.name in body:
                problem = _field_problem(each.metadata, body[each.name])
            else:
                problem = "field required" if each.metadata.get("required") else None
            if problem is not None:
                raise _Unprocessable(f"{each.name}: {problem}", each.name)
        for key in body:
            if key not in names:
                raise _Unprocessable(f"{key}: not a field of an approval request (those are {', '.join(names)})",
                                     key)
        return cls(**body)


def _field_problem(rules: Any, value: object) -> str | None:
    """What is wrong with one GateRequest field's value, in words, or None."""
    if rules["kind"] == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if rules["kind"] == "object":
        if not isinstance(value, dict):
            return "must be a JSON object"
        return jsonsafe.bounded(value, max_depth=MAX_STORED_DEPTH, max_bytes=MAX_STORED_BYTES)
    if not isinstance(value, str):
        return "must be a string"
    if not _unicode(value):
        return "must be Unicode text (it holds a lone surrogate escape)"
    if len(value) < rules["least"]:
        return "must not be empty"
    if len(value) > rules["most"]:
        return f"at most {rules['most']} characters"
    if rules["https"] and value and not value.startswith("https://"):
        return "must be an https:// URL"
    return None


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _problem(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


def authorized(request: web.Request, token: str) -> web.Response | None:
    """None when the caller presented the API token; otherwise the response to give."""
    if not token:
        return _problem(503, "the API is off: set MLOPSBOT_API_TOKEN to enable it")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return None


def approval_json(request: Approval) -> dict[str, Any]:
    votes = [{"voter": v.voter_name, "voter_id": v.voter_id, "decision": v.decision, "comment": v.comment,
              "at": v.at.isoformat()} for v in request.votes]
    deciders = [v["voter"] for v in votes if (v["decision"] == "reject") == (request.state == "rejected")]
    return {"id": request.id, "state": request.state, "action": request.action, "workspace": request.workspace,
            "environment": request.environment, "target": request.target,
            "summary": request.summary or request.target, "requester": request.requester_name,
            "reason": request.reason, "quorum": request.quorum, "approvals": len(request.approvals),
            "votes": votes, "decided_by": deciders if request.state not in ("pending", "expired", "withdrawn") else [],
            "result": request.result, "execute": request.execute, "run_url": request.run_url,
            "created_at": request.created_at.isoformat(), "expires_at": request.expires_at.isoformat(),
            "updated_at": request.updated_at.isoformat()}


class ApprovalsApi:
    def __init__(self, handler: ChatHandler, token: str) -> None:
        self.handler = handler
        self.token = token

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/approvals", self.create), web.get("/api/approvals/{id}", self.read),
                web.get("/api/audit", self.export), web.get(EXPORT_PATH, self.download)]

    async def create(self, request: web.Request) -> web.Response:
        denied = authorized(request, self.token)
        if denied is not None:
            return denied
        if request.content_type != "application/json":
            return _problem(415, "expected Content-Type: application/json")
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, f"body larger than {MAX_BODY_BYTES} bytes")
        except BodyTimeout as error:
            return _problem(408, str(error))
        try:
            body = jsonsafe.loads(raw, MAX_BODY_DEPTH)
        except jsonsafe.TooDeep as error:
            return _problem(400, f"body is not JSON: {error}")
        except jsonsafe.NotJsonNumber as error:
            return _problem(400, f"body is not JSON: {error}")
        except ValueError:
            return _problem(400, "body is not JSON")
        try:
            gate_request = GateRequest.from_json(body)
        except _Unprocessable as error:
            return _problem(422, str(error), field=error.field)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable() and key.isascii()):
            return _problem(400, f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
                                 "characters", field=IDEMPOTENCY_HEADER)
        call = _call_id(key) if key else ""
        try:
            approval = await self._open(gate_request, call) if not call else (
                await self._earlier(call) or await self._open(gate_request, call))
        except _Unprocessable as error:
            return _problem(422, str(error), field=error.field)
        except TooManyRequests as error:
            return web.json_response({"error": error.message, "retry_after": error.retry_after}, status=429,
                                     headers={"Retry-After": str(error.retry_after)})
        except _Retried:                         # the same key is being handled right now, or was
            approval = await self._earlier(call)
            if approval is None:
                return _problem(409, f"a request with this {IDEMPOTENCY_HEADER} is being opened; try again",
                                field=IDEMPOTENCY_HEADER)
        return web.json_response(approval_json(approval), status=201,
                                 headers={"Location": f"/api/approvals/{approval.id}"})

    async def _earlier(self, call: str) -> Approval | None:
        """The request an earlier call with the same Idempotency-Key opened."""
        async def read(tx) -> int | None:
            return await audit_log.requested_by_activity(tx, call)
        found = await self.handler.store.run_transaction(read, write=False)
        return await self._get(found) if found is not None else None

    async def _open(self, body: GateRequest, call: str = "") -> Approval:
        handler = self.handler
        if handler.gate is None or handler.store is None:
            raise _Unprocessable("approvals are not available", "action")
        conversation = await handler.store.get_conversation(body.conversation)
        if conversation is None:
            raise _Unprocessable(f"the bot is not in conversation '{body.conversation}' (add it to the channel "
                                 "first, or @mention it there once)", "conversation")
        try:
            workspace = handler.workspaces.get(body.workspace or None)
        except LookupError as error:
            raise _Unprocessable(str(error), "workspace") from None
        pipeline = Pipeline(run_url=body.run_url, conversation_id=conversation.conversation_id,
                            tenant_id=conversation.tenant_id, execute=body.execute)
        requester = User(id=f"{PIPELINE_PREFIX}{body.requester}", name=body.requester,
                         tenant_id=conversation.tenant_id)
        if body.execute:
            command = handler.registry.find(body.action)
            if command is None or body.action not in handler.gate.executable_actions():
                raise _Unprocessable(f"'{body.action}' is not a change I can carry out; use one of "
                                     f"{', '.join(handler.gate.executable_actions())}, or execute: false",
                                     "action")
            try:
                argv = command.argv(body.parameters) + ["--workspace", workspace.name] + (
                    ["--reason", body.reason] if body.reason else [])
            except ValueError as error:
                raise _Unprocessable(str(error), "parameters") from None
            ctx = await handler.context_for(requester, conversation.conversation_id, role=Role.OPERATOR,
                                            pipeline=pipeline, activity_id=call)
            try:
                reply = await handler.registry.invoke(ctx, command, argv)
            except TooManyRequests:
                raise
            except CommandError as error:
                raise _Unprocessable(error.message, "parameters") from None
            except StorageError:
                raise                            # 503 with Retry-After (bot/app.py), not the caller's fault
            except Exception as error:  # noqa: BLE001 - a workspace error is the caller's to read
                raise _Unprocessable(explain(error).text, "parameters") from None
            approval_id = reply.track.id if reply.track is not None and reply.track.kind == "approval" else None
            if approval_id is None and reply is REDELIVERED:
                raise _Retried()
            if approval_id is None:
                raise _Unprocessable(reply.text, "parameters")
            return await self._get(approval_id)
        rule = handler.gate.rule(body.action, workspace.environment)
        if rule.mode != APPROVAL:
            rule = Rule(APPROVAL, source="api default")
        change = Change(action=body.action, workspace=workspace.name, environment=workspace.environment,
                        target=body.target or body.action, parameters=body.parameters, before=body.before,
                        after=body.after, summary=f"{body.action} {body.target}".strip(), reason=body.reason)
        ctx = await handler.context_for(requester, conversation.conversation_id, role=Role.OPERATOR,
                                        pipeline=pipeline, activity_id=call)
        reply = await handler.gate.open_request(ctx, change, rule)
        if reply is REDELIVERED or reply.track is None:
            raise _Retried()
        return await self._get(reply.track.id)

    async def _get(self, approval_id: int) -> Approval:
        async def read(tx) -> Approval | None:
            return await approval_store.get(tx, approval_id)
        found = await self.handler.store.run_transaction(read, write=False)
        assert found is not None
        return found

    async def read(self, request: web.Request) -> web.Response:
        denied = authorized(request, self.token)
        if denied is not None:
            return denied
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
            return _problem(400, "the approval id is a number")

        async def read(tx) -> Approval | None:
            return await approval_store.get(tx, int(raw))
        found = await self.handler.store.run_transaction(read, write=False)
        if found is None:
            return _problem(404, f"no approval request {raw}")
        return web.json_response(approval_json(found))

    async def export(self, request: web.Request) -> web.StreamResponse:
        denied = authorized(request, self.token)
        if denied is not None:
            return denied
        fmt = request.query.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            return _problem(400, "format must be jsonl or csv")
        since = None
        if request.query.get("since"):
            try:
                since = _since(request.query["since"], self.handler.clock())
            except ValueError as error:
                return _problem(400, f"since: {error}", field="since")

        async def read(tx):
            return await audit_log.scan(tx, since=since)
        records = await self.handler.store.run_transaction(read, write=False)
        return _file([_record_dict(r) for r in records], fmt)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """`audit export` from Teams: a signed link (commands/changes/export_links.py), served once, before it
        expires, to someone who still has the role, with their tenant's records only."""
        links = self.handler.export_links
        if links is None:
            return _page(404, "Audit export is not configured on this bot.")
        now = self.handler.clock()
        try:
            grant = links.read(request.query.get("t", ""), now)
        except LinkRefused as refusal:
            return _page(403, str(refusal))
        except (ValueError, KeyError, TypeError):
            return _page(403, "This is not a download link the bot made.")
        asker = User(grant.user_id, grant.user_name, grant.tenant_id)
        if not self.handler.tenant_allowed(grant.tenant_id):
            return _page(403, "This bot no longer serves your organization.")
        role, _ = await self.handler.role_of(asker)
        if role < EXPORT_ROLE:
            return _page(403, f"Exporting the audit trail needs the {EXPORT_ROLE.label} role; you have "
                              f"{role.label} now.")

        async def take(tx):
            if not await inbox.first_time(tx, f"audit-export:{grant.nonce}", now):
                return None
            records = await audit_log.scan(tx, since=grant.since)
            if grant.tenant_id:
                records = [r for r in records if r.tenant_id == grant.tenant_id]
            await audit_log.append(tx, audit_log.AuditEntry(
                at=now, event="exported", actor_id=asker.id, actor_name=asker.name, tenant_id=asker.tenant_id,
                action="audit", detail={"records": len(records), "format": grant.format,
                                        "since": grant.since.isoformat() if grant.since else ""}))
            return records
        records = await self.handler.store.run_transaction(take)
        if records is None:
            return _page(410, "This download link was used already; type `audit export` again for a new one.")
        log.info("audit export: %d records to %s (%s)", len(records), asker.name, asker.id)
        rows = [{"sentence": line, **_record_dict(record)} for record, line in story(records)]
        response = _file(rows, grant.format)
        response.headers["Content-Disposition"] = f'attachment; filename="audit-{now:%Y%m%d}.{grant.format}"'
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def _page(status: int, message: str) -> web.Response:
    """What a person who opened a link in their browser reads."""
    return web.Response(status=status, text=message + "\n", content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


def _file(rows: list[dict[str, Any]], fmt: str) -> web.Response:
    """The records as JSON lines or CSV (cells a spreadsheet would run are quoted)."""
    if fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
        return web.Response(text=text, content_type="application/x-ndjson")
    out = io.StringIO()
    columns = list(rows[0]) if rows else ["seq"]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return web.Response(text=out.getvalue(), content_type="text/csv")


class _Retried(Exception):
    """The call's Idempotency-Key was seen before: no second request was opened."""


def _call_id(key: str) -> str:
    """The activity id a keyed API call is recorded under (hashed: keys may be long or telling)."""
    return "api:" + hashlib.sha256(key.encode("ascii")).hexdigest()[:32]


class _Unprocessable(Exception):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _since(value: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when it names no offset) or a span back from `now`, in UTC; ValueError
    in words otherwise. A time whose UTC form leaves the years 1 to 9999 (0001-01-01T00:00:00+14:00)
    is refused here: converting it raises OverflowError, which would otherwise be a 500."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            span = parse_since(value)
        except CommandError:
            raise ValueError("use an ISO 8601 time (2026-11-01T00:00:00Z) or a span (7d, 12h)") from None
        moment = None
    try:
        if moment is None:
            return now - span
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(f"'{shown}' is outside the years 1 to 9999 in UTC") from None


def _csv_cell(value: Any) -> Any:
    """A CSV cell: objects and lists as JSON; text a spreadsheet would run as a formula (it starts
    with = + - @, tab, CR, NUL or a full-width ＝ ＋ － ＠: a requester `=HYPERLINK(...)`) behind a
    single quote, as OWASP
    recommends against CSV injection. Only the CSV: the JSON lines and the stored chain keep every
    value as it is (the hashes cover them)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _record_dict(record) -> dict[str, Any]:
    """The record's fields, values as stored (shallow: `asdict` recurses into every nested value and
    failed with RecursionError on a record stored before values were bounded, making every export 500)."""
    row = {f.name: getattr(record, f.name) for f in fields(record)}
    row["at"] = record.at.isoformat()
    return row
