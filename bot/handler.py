"""Turns one chat request (typed text or a card button) into a Reply, whatever goes wrong.

This is the single place where errors become words: usage problems, unknown names, missing
roles and backend failures each get a helpful answer; anything unexpected is logged with an
incident id and the user sees a short apology carrying that id (never a stack trace).
It knows nothing of botbuilder, so the terminal chat and the Teams seam share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from adapters.nonblocking import fresh_reads, read_log
from adapters.service import PermissionDenied, ServiceError, Unavailable
from adapters.storage import Storage, StorageUnavailable, grants
from commands.base.context import Context, HealthThresholds, Reply, Role, RoleBook, User, Workspaces
from commands.admin.general import greet, is_greeting
from commands.language import Interpreter
from commands.base.registry import CommandError, Registry
from commands.base.ui import read_stamp

if TYPE_CHECKING:
    from commands.changes.gate import Pipeline
    from commands.changes.gate import Gate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    user: User
    conversation_id: str
    text: str | None = None                       # typed command
    verb: str | None = None                       # card button: command name ...
    args: Sequence[Any] = field(default_factory=list)   # ... and its words
    activity_id: str = ""                         # the Teams activity (audit, redelivery)
    conversation_kind: str = ""                   # personal | groupChat | channel
    mentioned: tuple[User, ...] = ()              # other people @mentioned, ids resolved
    refresh: bool = False                         # a card's Refresh button: read afresh, reuse nothing


class ChatHandler:
    def __init__(self, registry: Registry, workspaces: Workspaces, roles: RoleBook, *,
                 development: bool = False, allowed_tenants: Sequence[str] = (),
                 # always given by the host (bot/app.py); None only in tests of read-only commands,
                 # hence typed as present, as on Context
                 store: Storage = None,  # type: ignore[assignment]
                 gate: Gate = None,  # type: ignore[assignment]
                 clock: Callable[[], datetime] | None = None,
                 health: HealthThresholds | None = None, plain_language: bool = True,
                 export_links: Any = None) -> None:
        self.registry = registry
        # text that is not a command is understood (questions answered, changes only proposed)
        self.language = Interpreter(registry) if plain_language else None
        self.export_links = export_links      # commands.changes.export_links.ExportLinks (None: no `audit export`)
        self.workspaces = workspaces
        self.roles = roles
        self.development = development
        self.allowed_tenants = set(allowed_tenants)
        self.store = store              # the bot's storage: grants, approvals, audit
        self.gate = gate                # commands.changes.gate.Gate
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.health = health or HealthThresholds()

    async def role_of(self, user: User) -> tuple[Role, str]:
        """The caller's role and its source, from the environment, a stored grant, or the default."""
        if self.store is None:
            return self.roles.placed(user)

        async def read(tx) -> tuple[Role | None, bool]:
            if not user.id:
                return None, await grants.any_grant(tx)
            role, any_grant = await grants.role_lookup(tx, user.id)
            return (Role.parse(role) if role is not None else None), any_grant

        granted, any_grant = await self.store.run_transaction(read, write=False)
        return self.roles.placed(user, granted, any_grant=any_grant)

    async def context(self, request: Request) -> Context:
        role, source = await self.role_of(request.user)
        return Context(user=request.user, role=role, workspaces=self.workspaces,
                       conversation_id=request.conversation_id, development=self.development,
                       activity_id=request.activity_id, conversation_kind=request.conversation_kind,
                       gate=self.gate, store=self.store, role_source=source, role_book=self.roles,
                       mentioned=tuple(request.mentioned), clock=self.clock, health=self.health,
                       export_links=self.export_links)

    async def context_for(self, user: User, conversation_id: str, *, role: Role, pipeline: Pipeline | None = None,
                          activity_id: str = "") -> Context:
        """A context for a caller that is not a chat user (the pipeline API): a fixed role.
        `activity_id` identifies the call, so that a retried one is recognised (Idempotency-Key)."""
        return Context(user=user, role=role, workspaces=self.workspaces, conversation_id=conversation_id,
                       development=self.development, gate=self.gate, store=self.store, role_source="api",
                       role_book=self.roles, clock=self.clock, pipeline=pipeline, health=self.health,
                       activity_id=activity_id)

    def tenant_allowed(self, tenant_id: str) -> bool:
        return not self.allowed_tenants or tenant_id in self.allowed_tenants

    async def handle(self, request: Request) -> Reply:
        if not self.tenant_allowed(request.user.tenant_id):
            log.warning("refused a request from tenant %s", request.user.tenant_id or "(none)")
            return Reply("This bot is not enabled for your organization. Ask your Teams admin.")
        try:
            with read_log() as reads, (fresh_reads() if request.refresh else contextlib.nullcontext()):
                ctx = await self.context(request)
                if request.verb is not None:
                    reply = await self.registry.run_action(ctx, request.verb, request.args)
                elif request.text and is_greeting(request.text):
                    reply = await greet(ctx)             # "hi": answered, not "I don't know the command"
                elif self.language is not None:
                    reply = await self.language.respond(ctx, request.text or "")
                else:
                    reply = await self.registry.run(ctx, request.text or "")
        except Exception as error:  # noqa: BLE001 - this is the one place errors become replies
            return explain(error, request)
        if reply.card is not None and reads.oldest is not None:
            # every card says when its figures were read (they may be a few seconds old: see
            # adapters.nonblocking's shared reads)
            reply = dataclasses.replace(reply, card=read_stamp(reply.card, reads.oldest, datetime.now(timezone.utc)))
        return reply

    def is_change(self, verb: object) -> bool:
        """Whether the command `verb` changes something (passes the gate)."""
        found = self.registry.find(verb) if isinstance(verb, str) and len(verb) <= 64 else None
        return bool(found and found.change)

    async def delivered(self, reply: Reply, conversation_id: str, activity_id: str) -> None:
        """The host sent `reply` as message `activity_id`: approval cards remember where they are."""
        track = reply.track
        if track is None or self.gate is None or not activity_id:
            return
        if track.kind == "approval":
            await self.gate.card_sent(track.id, conversation_id, activity_id)
        else:
            await self.gate.ack_sent(track.id, activity_id)     # the outcome will edit this message


def explain(error: Exception, request: Request | None = None) -> Reply:
    if isinstance(error, CommandError):
        return Reply(error.message)
    if isinstance(error, PermissionDenied):
        text = f"Azure refused: {error.message.rstrip('.')}."
        if error.identity and error.identity not in text:
            text += f" I ran as {error.identity}."
        if error.role:
            text += f" Assign it the Azure role **{error.role}** on {getattr(error, 'scope', None) or 'the workspace'}."
        return Reply(text)
    if isinstance(error, Unavailable):
        return Reply(f"The workspace is not answering right now ({error.message}). Try again in a minute.")
    if isinstance(error, StorageUnavailable):
        return Reply("My own database is not answering right now, so I cannot check roles or record "
                     "changes. Try again in a minute.")
    if isinstance(error, ServiceError):
        code = f" ({error.code})" if error.code else ""
        return Reply(f"The workspace refused{code}: {error.message}")
    incident = uuid.uuid4().hex[:8]
    log.exception("incident %s while handling %r", incident,
                  request.text if request and request.text else (request.verb if request else None))
    return Reply(apology(incident))


def apology(incident: str) -> str:
    return f"Sorry, something went wrong on my side (incident {incident}). The team can look it up in the logs."


ACK_WAIT_SECONDS = 60.0     # an acknowledgement is sent within the turn; this only bounds a stuck one


class FollowUps:
    """Replies that come after the turn (long operations): each outcome runs as a task, a failure
    becomes words like any other error, and the Reply goes to `deliver`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def schedule(self, outcome: Awaitable[Reply], deliver: Callable[[Reply], Awaitable[None]], *,
                 after: asyncio.Event | None = None) -> None:
        """Run `outcome` now; deliver its Reply once `after` is set (the turn's acknowledgement
        was sent), so the conversation reads acknowledgement first, outcome second."""
        async def run() -> None:
            try:
                reply = await outcome
            except Exception as error:  # noqa: BLE001 - the user gets told, whatever happened
                reply = explain(error)
            if after is not None:
                try:
                    await asyncio.wait_for(after.wait(), ACK_WAIT_SECONDS)
                except asyncio.TimeoutError:
                    log.warning("delivering a follow-up although its acknowledgement was not sent in time")
            await deliver(reply)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Let pending outcomes finish (at shutdown, and at the end of a terminal chat). Jobs started
        from chat are not among them: their watches are stored (bot/scheduler.py)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
