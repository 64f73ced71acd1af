"""Turns one chat request (typed text or a card button) into a Reply, whatever goes wrong.

This is the single place where errors become words: usage problems, unknown names, missing
roles and backend failures each get a helpful answer; anything unexpected is logged with an
incident id and the user sees a short apology carrying that id (never a stack trace).
It knows nothing of botbuilder, so the terminal chat and the Teams seam share it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from adapters.service import PermissionDenied, ServiceError, Unavailable
from commands.context import Context, FollowUp, Reply, RoleBook, User, Workspaces
from commands.registry import CommandError, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    user: User
    conversation_id: str
    text: str | None = None                       # typed command
    verb: str | None = None                       # card button: command name ...
    args: Sequence[Any] = field(default_factory=list)   # ... and its words


class ChatHandler:
    def __init__(self, registry: Registry, workspaces: Workspaces, roles: RoleBook, *,
                 development: bool = False, allowed_tenants: Sequence[str] = ()) -> None:
        self.registry = registry
        self.workspaces = workspaces
        self.roles = roles
        self.development = development
        self.allowed_tenants = set(allowed_tenants)

    def context(self, user: User, conversation_id: str, later: FollowUp | None = None) -> Context:
        return Context(user=user, role=self.roles.role_of(user), workspaces=self.workspaces,
                       conversation_id=conversation_id, development=self.development, later=later)

    def tenant_allowed(self, tenant_id: str) -> bool:
        return not self.allowed_tenants or tenant_id in self.allowed_tenants

    async def handle(self, request: Request, later: FollowUp | None = None) -> Reply:
        if not self.tenant_allowed(request.user.tenant_id):
            log.warning("refused a request from tenant %s", request.user.tenant_id or "(none)")
            return Reply("This bot is not enabled for your organization. Ask your Teams admin.")
        ctx = self.context(request.user, request.conversation_id, later)
        try:
            if request.verb is not None:
                return await self.registry.run_action(ctx, request.verb, request.args)
            return await self.registry.run(ctx, request.text or "")
        except Exception as error:  # noqa: BLE001 - this is the one place errors become replies
            return explain(error, request)


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
    if isinstance(error, ServiceError):
        code = f" ({error.code})" if error.code else ""
        return Reply(f"The workspace refused{code}: {error.message}")
    incident = uuid.uuid4().hex[:8]
    log.exception("incident %s while handling %r", incident,
                  request.text if request and request.text else (request.verb if request else None))
    return Reply(apology(incident))


def apology(incident: str) -> str:
    return f"Sorry, something went wrong on my side (incident {incident}). The team can look it up in the logs."


class FollowUps:
    """Replies that come after the turn (long operations): each outcome runs as a task, a failure
    becomes words like any other error, and the Reply goes to `deliver`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def schedule(self, outcome: Awaitable[Reply], deliver: Callable[[Reply], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                reply = await outcome
            except Exception as error:  # noqa: BLE001 - the user gets told, whatever happened
                reply = explain(error)
            await deliver(reply)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Let pending follow-ups finish (at shutdown, and at the end of a terminal chat)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
