"""What a command handler receives (`Context`) and returns (`Reply`), and who may do what (`Role`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable, Literal

from adapters.nonblocking import NonBlockingService

if TYPE_CHECKING:
    from adapters.storage.approvals import Approval   # for the type checker only: commands.changes.gate imports this module
    from adapters.storage import Storage
    from commands.changes.gate import Gate, Pipeline


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
    upn: str = ""            # user principal name, when Teams' member API told us


# A requester that the pipeline API (bot/api.py) speaks for: its id is PIPELINE_PREFIX + the name the
# pipeline gave, never an Entra object id, so it cannot collide with a person's.
PIPELINE_PREFIX = "pipeline:"


def shown_name(user_id: str, name: str) -> str:
    """The name people read for `user_id`: a pipeline is marked as one, so that a pipeline that calls
    itself "Ann Approver" never reads like the person (audit lines, approval cards, the digest)."""
    return f"{name} (pipeline)" if user_id.startswith(PIPELINE_PREFIX) else name


@dataclass(frozen=True)
class Reply:
    """What a command answers: text (always present; also the fallback) and optionally a card."""

    text: str
    card: dict[str, Any] | None = None
    ok: bool | None = None       # for the outcome of a change: did it succeed?
    track: Track | None = None   # the host tells the gate where this message landed (commands.changes.gate)


@dataclass(frozen=True)
class Track:
    """A message whose Teams activity id the gate needs once the host has sent it: the card of
    approval request `id` (later votes and the outcome edit it), or the acknowledgement of
    operation `id` (its outcome edits it)."""

    kind: Literal["approval", "operation"]
    id: int

    def key(self) -> str:
        """As an outbox payload stores it (JSON): `approval:42`."""
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, key: object) -> Track | None:
        """The Track an outbox payload stored (None for anything else)."""
        kind, _, number = str(key or "").partition(":")
        if kind in ("approval", "operation") and number.isdigit():
            return cls("approval" if kind == "approval" else "operation", int(number))
        return None


@dataclass(frozen=True)
class RoleBook:
    """Role assignments from the environment, by user id (Entra object id, never a display name).

    Everyone else has the role an admin granted them in chat (stored; see commands.admin.admin), or
    `default`. `open_until_assigned` is development mode's convenience: everyone is Admin while no
    role is assigned anywhere (environment or grant); from the first assignment on, `default`.
    """

    assignments: dict[str, Role] = field(default_factory=dict)
    default: Role = Role.VIEWER
    open_until_assigned: bool = False

    def role_of(self, user: User, granted: Role | None = None, *, any_grant: bool = False) -> Role:
        """`granted`: the user's stored grant, if any; `any_grant`: whether anyone has one."""
        return self.placed(user, granted, any_grant=any_grant)[0]

    def placed(self, user: User, granted: Role | None = None, *, any_grant: bool = False) -> tuple[Role, str]:
        """The role and where it comes from: "environment", "grant", "default" or "no identity".

        A sender without an id (an anonymous meeting participant has no Entra object id) is nobody
        in particular: all of them would share one identity, so they get at most Viewer."""
        if not user.id:
            return min(self.default, Role.VIEWER), "no identity"
        if user.id and user.id in self.assignments:
            return self.assignments[user.id], "environment"
        if user.id and granted is not None:
            return granted, "grant"
        if self.open_until_assigned and not self.assignments and not any_grant:
            return Role.ADMIN, "default"
        return self.default, "default"


def workspace_line(name: str, environment: str) -> str:
    """`Workspace ml-prod (prod)`: the line every card and outcome carries, so nobody mistakes prod for dev."""
    return f"Workspace {name} ({environment})"


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
    workspace: str | None = None       # the --workspace the command was given, if any
    activity_id: str = ""              # the Teams activity that asked (audit; redeliveries are ignored)
    conversation_kind: str = ""        # personal | groupChat | channel
    # The host (bot/handler.py) always supplies `gate` and `store`; they default to None only so that a
    # test can build a Context for a read-only command without them, hence typed as always present.
    gate: Gate = None  # type: ignore[assignment]        # every change passes it
    store: Storage = None  # type: ignore[assignment]    # the bot's storage (adapters.storage.SqlStorage)
    role_source: str = "default"       # where the role comes from: environment, grant or default
    role_book: RoleBook | None = None  # the environment's assignments (for `roles`, `grant`)
    mentioned: tuple[User, ...] = ()   # people @mentioned in the message (not the bot), ids resolved
    reason: str = ""                   # a change command's --reason
    emergency: str = ""                # a change command's --emergency reason (run at once, reviewed after)
    export_links: Any = None           # commands.changes.export_links.ExportLinks: signed `audit export` links
    pipeline: Pipeline | None = None   # when a CI/CD pipeline asks (the API)
    approval: Approval | None = None   # the approval request being carried out (None: a direct change)
    health: HealthThresholds = field(default_factory=HealthThresholds)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    def now(self) -> datetime:
        return self.clock()

    @property
    def ml(self) -> NonBlockingService:
        return self.workspaces.get(self.workspace)

    @property
    def where(self) -> str:
        """The workspace line every card carries, so nobody mistakes prod for dev."""
        return workspace_line(self.ml.name, self.ml.environment)

    @property
    def asked_by(self) -> str:
        """Who asked for what runs now: the requester of an approved change, not its approver."""
        return self.approval.requester_name if self.approval is not None else self.user.name

    @property
    def asked_in(self) -> tuple[str, str]:
        """(conversation id, tenant id) where it was asked: later reports of the change go there."""
        if self.approval is not None:
            return self.approval.conversation_id, self.approval.tenant_id
        return self.conversation_id, self.user.tenant_id

