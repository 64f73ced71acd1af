"""What a command handler receives (`Context`) and returns (`Reply`), and who may do what (`Role`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Awaitable, Callable

from adapters.nonblocking import NonBlockingService


class Role(IntEnum):
    """Ordered: each role may do everything the roles below it may."""

    VIEWER = 1      # read anything
    OPERATOR = 2    # change endpoints, jobs, schedules, compute
    APPROVER = 3    # approve promotions and gated changes
    ADMIN = 4       # everything, including configuring the bot

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> "Role":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role '{text}': use one of {', '.join(r.name.lower() for r in cls)}") from None


@dataclass(frozen=True)
class User:
    id: str                  # Entra object id (aadObjectId) when known, else the channel's user id
    name: str
    tenant_id: str = ""


@dataclass(frozen=True)
class Reply:
    """What a command answers: text (always present; also the fallback) and optionally a card."""

    text: str
    card: dict[str, Any] | None = None


@dataclass(frozen=True)
class RoleBook:
    """Role assignments by user id (Entra object id); everyone else gets `default`."""

    assignments: dict[str, Role] = field(default_factory=dict)
    default: Role = Role.VIEWER

    def role_of(self, user: User) -> Role:
        return self.assignments.get(user.id, self.default)


class UnknownWorkspace(LookupError):
    pass


class Workspaces:
    """The configured workspaces, by name; the first is the default."""

    def __init__(self, services: list[NonBlockingService]) -> None:
        if not services:
            raise ValueError("at least one workspace is needed")
        self._by_name = {s.name: s for s in services}
        self.default = services[0]

    def __iter__(self):
        return iter(self._by_name.values())

    def get(self, name: str | None) -> NonBlockingService:
        if not name:
            return self.default
        if name in self._by_name:
            return self._by_name[name]
        close = difflib.get_close_matches(name, list(self._by_name), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise UnknownWorkspace(f"No workspace named '{name}'.{hint} Configured: {', '.join(self._by_name)}.")


FollowUp = Callable[[Awaitable[Reply]], None]


class Watching:
    """A follow-up that watches something which may take hours (a job started from chat).

    Unlike an operation's outcome, nobody waits for it at shutdown: it is cancelled (and, until
    watches are durable, forgotten)."""

    def __init__(self, outcome: Awaitable[Reply], what: str) -> None:
        self.outcome = outcome
        self.what = what

    def __await__(self):
        return self.outcome.__await__()

    def close(self) -> None:
        close = getattr(self.outcome, "close", None)
        if callable(close):
            close()


@dataclass(frozen=True)
class HealthThresholds:
    """Where an endpoint's figures stop being healthy (settings MLOPSBOT_HEALTH_P99_MS and
    MLOPSBOT_HEALTH_5XX_PERCENT)."""

    p99_ms: float = 1000.0
    error_percent: float = 1.0        # 5xx answers, percent of all requests


@dataclass
class Context:
    """One turn: who asks, with which role, where, and the workspaces they can reach."""

    user: User
    role: Role
    workspaces: Workspaces
    conversation_id: str = ""
    development: bool = False          # no Microsoft App ID: identities are not authenticated
    later: FollowUp | None = None      # deliver a Reply to this conversation when an awaitable finishes
    workspace: str | None = None       # the --workspace the command was given, if any
    health: HealthThresholds = field(default_factory=HealthThresholds)

    @property
    def ml(self) -> NonBlockingService:
        return self.workspaces.get(self.workspace)

    @property
    def where(self) -> str:
        """The workspace line every card carries, so nobody mistakes prod for dev."""
        return f"Workspace {self.ml.name} ({self.ml.environment})"

    def follow_up(self, outcome: Awaitable[Reply]) -> None:
        if self.later is None:
            raise RuntimeError("this conversation cannot receive follow-up messages")
        self.later(outcome)
