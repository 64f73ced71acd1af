"""The gate every change passes: policy decides, approvals are stored, execution happens once.

A change command reads what it is about to change, builds a `Change` (what, where, before ->
after) and returns `await ctx.gate.submit(ctx, change)`. The gate asks the policy:

    direct     the executor runs now (audited: executed, then succeeded / failed)
    confirm    a request only its requester can confirm (Confirm / Cancel card)
    approval   a request that `quorum` eligible people approve (Approve / Reject card)

An approved or confirmed request runs the stored `Change` through the same executor as the
direct path: one code path for "do it", whatever allowed it. What running a change means (its
executor, what it prepares, records and re-checks, its evidence) is its `ChangeKind`
(commands/changes/change.py), all of them listed in commands/changes/kinds.py and given to the gate:
the gate holds no action's name. Each executor re-reads its target first and raises `Stale` when
it is no longer the "before" that was approved.

Every decision is a compare-and-set in storage written in the same transaction as its audit
record and the outbox items that update the cards (one unit of work), so two clicks, two
replicas or a redelivered activity can never execute a request twice or count a vote twice, and
a crash never leaves a decision without its record.

Intent first: the operation a change starts is recorded in the same transaction that moves its
request to executing (or audits a direct change), before Azure is called. A process killed at any
point therefore leaves a stored operation, and `recover_operations` (run by the watch loop, first
at start-up) settles it from the resource: done, not done, or "could not tell: look at X".

Lifecycle: pending -> approved -> executing -> succeeded | failed; or rejected, expired, withdrawn.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Mapping, Sequence

from adapters.service import ServiceError
from adapters.storage import (Storage, approvals, audit, conversations, grants, inbox, instances, operations, outbox,
                              people)
from adapters.storage.approvals import (
    APPROVED, EXECUTING, FAILED, PENDING, REJECTED, SUCCEEDED, WITHDRAWN, Approval, NewApproval, Vote,
)
from commands.changes.change import Change, ChangeKind, Recheck, Stale
from commands.base.context import Context, Reply, Role, RoleBook, Track, UnknownWorkspace, User, Workspaces
from commands.alerts.alerts import approval_subscribers
from commands.changes.approval_card import approval_card, review_card
from commands.base.registry import CommandError
from commands.changes.policy import APPROVAL, CONFIRM, DIRECT, REQUESTER_ONLY, Policy, Rule, duration_text
from commands.changes.ratelimit import ChangeLimits, TooManyRequests  # noqa: F401 (TooManyRequests: raised through the gate)

log = logging.getLogger(__name__)

RECOVERY_GRACE = timedelta(minutes=1)     # an operation another process started this recently is its own
# Without a recheck only the wait itself can tell, so another process gives up on it only after the
# longest wait (NonBlockingService's operation timeout, 30 min) has surely passed.
UNCHECKED_GRACE = timedelta(minutes=35)
CLAIM_SECONDS = 120.0                     # a claim to settle an operation; a process that stops mid-way loses it


class Refused(Exception):
    """A vote, confirmation or withdrawal that is not allowed; the message says why."""


async def gather_evidence(kind: ChangeKind | None, ctx: Context, change: Change,
                          now: datetime) -> dict[str, Any] | None:
    """The evidence for `change` (None when its kind has none); a failure to read becomes a line."""
    gather = kind.gather if kind is not None else None
    if gather is None:
        return None
    try:
        found = await gather(replace(ctx, workspace=change.workspace), change)
    except ServiceError as error:
        found = {"error": f"Could not read the evidence: {error.message}"}
    except UnknownWorkspace:
        return None
    except Exception:  # noqa: BLE001 - evidence is extra: it never blocks a request
        log.exception("reading the evidence for %s failed", change.summary)
        found = {"error": "Could not read the evidence (an error on the bot's side, logged)."}
    return {**found, "as_of": now.isoformat()}


@dataclass(frozen=True)
class Pipeline:
    """A request from a CI/CD pipeline (POST /api/approvals): always asks for approval, in the
    conversation it names, and links the pipeline run."""

    run_url: str
    conversation_id: str
    tenant_id: str
    execute: bool = True


def change_of(request: Approval) -> Change:
    return Change(request.action, request.workspace, request.environment, request.target,
                  {k: v for k, v in request.parameters.items() if k not in ("_evidence", "_untold")},
                  dict(request.before), dict(request.after), request.summary or request.target, request.reason)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# Teams redelivers an activity it thinks was not answered in time; the second copy must not ask
# or do anything again. Keyed like votes (one activity is one command).
REDELIVERED = Reply("Teams delivered that message twice; the first one is being handled, so this copy does "
                    "nothing. Type `approvals` or look above for its answer.")


async def first_delivery(tx, ctx: Context, now: datetime) -> bool:
    """True the first time this turn's activity asks for a change (always, without an activity id)."""
    return not ctx.activity_id or await inbox.first_time(tx, f"activity:{ctx.activity_id}", now)


async def _recheck(ctx: Context, change: Change, recheck: Recheck | None) -> Reply | None:
    """How an operation a stopped process left in flight ended (None: still running)."""
    try:
        ctx.ml
    except UnknownWorkspace:
        return Reply(f"⚠️ The bot restarted while {change.summary} was in flight, and workspace {change.workspace} "
                     f"is no longer configured, so it cannot tell how it ended.", ok=False)
    if recheck is None:
        return Reply(f"⚠️ The bot restarted while {change.summary} was in flight and cannot tell how it ended; "
                     f"look at {change.target} to check.", ok=False)
    return await recheck(ctx, change)


@dataclass
class Gate:
    """The one place that decides and records. `store` is the bot's SqlStorage."""

    policy: Policy
    store: Storage
    kinds: Mapping[str, ChangeKind]                     # what each action does (commands/changes/kinds.py)
    clock: Callable[[], datetime] = _utc_now
    roles: RoleBook = field(default_factory=RoleBook)   # the environment's assignments (grants are stored)
    approval_channel: str = ""                          # also ask here for requests from personal chats
    wake_outbox: Callable[[], None] = lambda: None      # the host's outbox worker: new items to send
    spawn: Callable[[Awaitable[Any]], None] = lambda awaitable: None   # run in the background (host's tasks)
    owner: str = "this-process"                         # who waits for the operations it starts (restarts)
    requests_per_minute: int = 20                       # changes one requester may ask for a minute (0: no limit)
    pipeline_requests_per_minute: int = 60              # requests all pipelines together may open a minute (0: none)
    limiter: ChangeLimits | None = None                 # counted in `store`, shared by replicas (commands/changes/ratelimit.py)

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = ChangeLimits(self.requests_per_minute, self.pipeline_requests_per_minute)

    # ------------------------------------------------------------ asking

    def rule(self, action: str, environment: str) -> Rule:
        return self.policy.rule(action, environment)

    def executable_actions(self) -> list[str]:
        return sorted(self.kinds)

    def _starts_a_run(self, action: str, parameters: dict[str, Any]) -> bool:
        """Changes that start a job (retraining, batch scoring, a schedule run) and leave their target as it was."""
        kind = self.kinds.get(action)
        return kind is not None and kind.starts_run(parameters)

    async def submit(self, ctx: Context, change: Change) -> Reply:
        if ctx.reason and not change.reason:
            change = replace(change, reason=ctx.reason)
        rule = self.rule(change.action, change.environment)
        if ctx.pipeline is not None:                     # a pipeline's gate always asks people
            if rule.mode != APPROVAL:
                rule = Rule(APPROVAL, source="api default")
            return await self.open_request(ctx, change, rule)
        if ctx.emergency:
            if not rule.emergency and rule.mode != DIRECT:
                return Reply(f"The policy does not allow {change.action} in {change.environment} as an emergency "
                             f"({rule.describe()}). Ask for it without `--emergency`, or an admin can allow it "
                             f"with `emergency = true` in the policy file.", ok=False)
            if rule.mode != DIRECT or rule.review:
                return await self.run_direct(ctx, change, review=rule, emergency=ctx.emergency)
        if rule.mode == DIRECT:
            return await self.run_direct(ctx, change, review=rule if rule.review else None)
        return await self.open_request(ctx, change, rule)

    async def open_request(self, ctx: Context, change: Change, rule: Rule) -> Reply:
        now = self.clock()
        confirm = rule.mode == CONFIRM
        conversation = ctx.conversation_id
        pipeline = ctx.pipeline
        evidence = None if confirm else await gather_evidence(self.kinds.get(change.action), ctx, change, now)
        new = NewApproval(
            action=change.action, workspace=change.workspace, environment=change.environment,
            target=change.target, parameters={**change.parameters, **({"_evidence": evidence} if evidence else {})},
            summary=change.summary, before=change.before, after=change.after, reason=change.reason,
            requester_id=ctx.user.id, requester_name=ctx.user.name, tenant_id=ctx.user.tenant_id,
            conversation_id=conversation, quorum=1 if confirm else rule.quorum,
            allow_self=True if confirm else rule.allow_self,
            approver_role=REQUESTER_ONLY if confirm else rule.approver_role.name.lower(),
            created_at=now, expires_at=now + rule.expiry, execute=pipeline.execute if pipeline else True,
            source="api" if pipeline else "chat", run_url=pipeline.run_url if pipeline else "")

        async def work(tx) -> tuple[Approval, dict, str] | None:
            if not await first_delivery(tx, ctx, now):
                return None
            same = (await self._identical_pending(tx, new)
                    if pipeline is None and not self._starts_a_run(new.action, new.parameters) else None)
            if same is not None:                          # the same change is already asked for: join it
                await audit.append(tx, self._entry(ctx.user, "joined", same, activity_id=ctx.activity_id,
                                                   detail={"reason": change.reason} if change.reason else {}))
                return same, self.card(same, now, ctx), "joined"
            told = 0
            if not confirm and pipeline is None:          # who will learn of it (the card says when nobody)
                told = await self._tell_approvers(tx, ctx, new, now, dry=True)
                if not told:
                    new_ = replace(new, parameters={**new.parameters, "_untold": True})
                else:
                    new_ = new
            else:
                new_ = new
            # raises TooManyRequests when over the limit: the rollback leaves nothing written
            await self.limiter.take(tx, ctx.user, pipeline=pipeline is not None, now=now.timestamp())
            request = await approvals.create(tx, new_)
            await audit.append(tx, self._entry(ctx.user, "requested", request, activity_id=ctx.activity_id,
                                               detail={"mode": rule.mode, "policy": rule.source}))
            if told:
                await self._tell_approvers(tx, ctx, request, now)
            payload = await self._card_payload(tx, request, now, in_channel=ctx.conversation_kind in ("channel",
                                                                                                     "groupChat"))
            if pipeline is not None:                      # no turn to answer in: post the card
                await outbox.enqueue(tx, conversation, {**payload, "track": Track("approval", request.id).key()},
                                     dedupe_key=f"approval:{request.id}:card:{conversation}",
                                     tenant_id=pipeline.tenant_id, now=now)
            elif (not confirm and self.approval_channel and ctx.conversation_kind == "personal"
                    and self.approval_channel != conversation):
                await outbox.enqueue(tx, self.approval_channel, payload,
                                     dedupe_key=f"approval:{request.id}:card:{self.approval_channel}",
                                     tenant_id=ctx.user.tenant_id, now=now)
            if not confirm:                               # conversations subscribed to approvals (`subscribe approvals`)
                for target, tenant in await approval_subscribers(tx, change.workspace):
                    if tenant and ctx.user.tenant_id and tenant != ctx.user.tenant_id:
                        continue                  # another tenant's channel never sees this request
                    if target not in (conversation, self.approval_channel):
                        await outbox.enqueue(tx, target, payload, dedupe_key=f"approval:{request.id}:card:{target}",
                                             tenant_id=tenant or ctx.user.tenant_id, now=now)
            return request, payload["card"], "opened" if confirm or told or pipeline is not None else "untold"

        opened = await self.store.run_transaction(work)
        if opened is None:
            return REDELIVERED
        request, card, how = opened
        self.wake_outbox()
        if how == "joined":
            return Reply(f"The same change is already waiting as request #{request.id} ({request.state}, asked by "
                         f"{request.requester_name}); you joined it instead of opening another: {change.summary}",
                         card=card)
        text = f"{'Confirmation' if confirm else 'Approval request'} #{request.id}: {change.summary}"
        return Reply(text=text, card=card, track=Track("approval", request.id))

    async def _identical_pending(self, tx, new: NewApproval) -> Approval | None:
        """A pending request for the same action, target and after-state in the same workspace and tenant."""
        for other in await approvals.pending_on(tx, new.workspace, new.target, besides=0):
            if (other.action == new.action and other.after == new.after and other.tenant_id == new.tenant_id
                    and other.approver_role == new.approver_role and other.expires_at > new.created_at):
                return other
        return None

    async def _eligible(self, tx, role: Role, *, besides: str = "") -> list[str]:
        """Entra object ids of everyone with `role` or above (environment assignments and grants)."""
        wanted = [uid for uid, have in self.roles.assignments.items() if have >= role]
        wanted += [g.user_id for g in await grants.list_grants(tx) if Role.parse(g.role) >= role
                   and g.user_id not in self.roles.assignments]
        return [uid for uid in dict.fromkeys(wanted) if uid and uid != besides]

    async def _personal_chats(self, tx, object_ids: Sequence[str], tenant: str) -> list[tuple[str, str]]:
        """(conversation id, tenant) of the personal chats the bot has with `object_ids` (of `tenant`)."""
        wanted = set(object_ids)
        found = []
        for record in await conversations.list_conversations(tx, kind="personal"):
            if record.user_id in wanted and (not tenant or not record.tenant_id or record.tenant_id == tenant) \
                    and not await conversations.is_gone(tx, record.conversation_id):
                found.append((record.conversation_id, record.tenant_id or tenant))
        return found

    async def _tell_approvers(self, tx, ctx: Context, request: Any, now: datetime, *,
                              role: Role | None = None, key: str = "card", payload: dict | None = None,
                              dry: bool = False) -> int:
        """Tell the people who may decide `request` (or everyone with `role`): in the approval
        channel when one is set, else in each one's personal chat with the bot; in a channel or
        group chat the card @mentions them. Returns how many places or people were told (`dry`:
        would be told; nothing is sent)."""
        role = role or Role.parse(request.approver_role)
        personal: dict | None = None
        if not dry:       # a channel's copy @mentions the approvers; a personal chat's does not
            payload = payload or await self._card_payload(tx, request, now, in_channel=True)
            personal = {**await self._card_payload(tx, request, now), "text": payload.get("text", "")}
        tenant = ctx.user.tenant_id or request.tenant_id
        told = 0
        if self.approval_channel:
            if not dry and (self.approval_channel != ctx.conversation_id or key != "card"):
                await outbox.enqueue(tx, self.approval_channel, payload,
                                     dedupe_key=f"approval:{request.id}:{key}:{self.approval_channel}",
                                     tenant_id=tenant, now=now)
            return 1
        ids = await self._eligible(tx, role, besides="" if request.allow_self else request.requester_id)
        for target, chat_tenant in await self._personal_chats(tx, ids, tenant):  # noqa: B007
            if target == ctx.conversation_id and key == "card":
                continue
            if not dry:
                await outbox.enqueue(tx, target, personal, dedupe_key=f"approval:{request.id}:{key}:{target}",
                                     tenant_id=chat_tenant, now=now)
            told += 1
        if key == "card" and ctx.conversation_kind in ("channel", "groupChat"):
            told += len(await people.teams_ids(tx, ids))       # @mentioned on the card posted there
        subscribed = [target for target, tenant_of in await approval_subscribers(tx, request.workspace)
                      if not (tenant_of and tenant and tenant_of != tenant)]
        return told + len(subscribed)

    async def remind_due(self) -> int:
        """Requests still waiting after their rule's `remind` time: remind the approvers once and
        widen to the admins (their personal chats, or the approval channel)."""
        now = self.clock()

        async def work(tx) -> int:
            count = 0
            for request in await approvals.find(tx, states=[PENDING], limit=500):
                if self._is_confirmation(request) or request.source != "chat":
                    continue
                rule = self.rule(request.action, request.environment)
                if request.created_at + rule.remind > now or request.expires_at <= now:
                    continue
                if not await inbox.first_time(tx, f"approval-reminder:{request.id}", now):
                    continue
                waited = duration_text(now - request.created_at)
                payload = await self._card_payload(tx, request, now, in_channel=True)
                payload = {**payload, "text": f"⏰ Request #{request.id} has waited {waited} without a decision: "
                                              f"{request.summary or request.target}. "
                                              "The admins are told too."}
                reach = User(request.requester_id, request.requester_name, request.tenant_id)
                ctx = Context(user=reach, role=Role.VIEWER, workspaces=(), conversation_id="")
                await self._tell_approvers(tx, ctx, request, now, key="reminder", payload=payload)
                await self._tell_approvers(tx, ctx, request, now, role=Role.ADMIN, key="reminder", payload=payload)
                await audit.append(tx, self._entry(User("mlops-bot", "MLOps bot"), "reminded", request,
                                                   detail={"waited": waited, "widened_to": "admin"}))
                count += 1
            return count

        count = await self.store.run_transaction(work)
        if count:
            self.wake_outbox()
        return count

    # ------------------------------------------------------------ deciding

    async def vote(self, ctx: Context, approval_id: int, decision: str, comment: str = "") -> Reply:
        """Approve or reject (or, for a confirmation, confirm or cancel) request `approval_id`."""
        now = self.clock()

        async def work(tx) -> tuple[str, Approval | None]:
            if ctx.activity_id and not await inbox.first_time(tx, f"activity:{ctx.activity_id}", now):
                return "duplicate", None
            self._check_identified(ctx)
            request = await approvals.get(tx, approval_id, for_update=True)
            if request is None or not self._visible(ctx, request):
                raise Refused(f"There is no approval request #{approval_id}. Type `approvals` to see the open ones.")
            if request.state != PENDING:
                return "closed", request
            if request.expires_at <= now:
                await self._close(tx, request, "expired", now, actor=ctx.user, activity_id=ctx.activity_id)
                return "expired", await approvals.get(tx, approval_id)
            self._check_eligible(ctx, request, decision)
            vote = Vote(voter_id=ctx.user.id, voter_name=ctx.user.name, decision=decision,
                        comment=comment[:500], activity_id=ctx.activity_id, at=now)
            if not await approvals.add_vote(tx, approval_id, vote):
                return "already", request
            event = "rejected" if decision == "reject" else ("confirmed" if self._is_confirmation(request) else "approved")
            await audit.append(tx, self._entry(ctx.user, f"vote:{decision}", request, activity_id=ctx.activity_id,
                                               detail={"comment": comment[:500]} if comment else {}))
            request = await approvals.get(tx, approval_id)
            if decision == "reject":
                await approvals.transition(tx, approval_id, PENDING, REJECTED, now=now,
                                           result=f"rejected by {ctx.user.name}" + (f": {comment}" if comment else ""))
                await audit.append(tx, self._entry(ctx.user, "rejected", request, activity_id=ctx.activity_id))
            elif len(request.approvals) >= request.quorum:
                await approvals.transition(tx, approval_id, PENDING, APPROVED, now=now)
                await audit.append(tx, self._entry(ctx.user, event, request, activity_id=ctx.activity_id))
            request = await approvals.get(tx, approval_id)
            await self._update_cards(tx, request, now)
            return "voted", request

        try:
            status, request = await self.store.run_transaction(work)
        except Refused as refusal:
            return Reply(str(refusal))
        self.wake_outbox()
        if status == "duplicate":
            return Reply("Already handled.")   # a redelivered activity: nothing happens twice
        assert request is not None
        if status == "already":
            return Reply(f"You have already voted on request #{approval_id}.", card=self.card(request, now, ctx))
        if status in ("closed", "expired"):
            return Reply(f"Request #{approval_id} is {request.state}; nothing to decide any more.",
                         card=self.card(request, now, ctx))
        if request.state == APPROVED:
            if request.execute:
                return await self.execute(ctx, request)
            return Reply(f"Request #{approval_id} is approved; the pipeline that asked will carry it out.",
                         card=self.card(request, now, ctx))
        verb = {"approve": "Approved", "reject": "Rejected"}[decision]
        return Reply(f"{verb}: request #{approval_id} ({len(request.approvals)} of {request.quorum} approvals).",
                     card=self.card(request, now, ctx))

    async def withdraw(self, ctx: Context, approval_id: int) -> Reply:
        now = self.clock()

        async def work(tx) -> Approval:
            self._check_identified(ctx)
            request = await approvals.get(tx, approval_id, for_update=True)
            if request is None or not self._visible(ctx, request):
                raise Refused(f"There is no approval request #{approval_id}.")
            if request.requester_id != ctx.user.id and ctx.role < Role.ADMIN:
                raise Refused(f"Only {request.requester_name}, who asked, or an Admin can withdraw request "
                              f"#{approval_id}.")
            if request.state != PENDING:
                raise Refused(f"Request #{approval_id} is {request.state}; it can no longer be withdrawn.")
            await self._close(tx, request, WITHDRAWN, now, actor=ctx.user, activity_id=ctx.activity_id)
            return await approvals.get(tx, approval_id)

        try:
            request = await self.store.run_transaction(work)
        except Refused as refusal:
            return Reply(str(refusal))
        self.wake_outbox()
        return Reply(f"Request #{approval_id} withdrawn.", card=self.card(request, now, ctx))

    async def expire_due(self) -> int:
        """Mark every pending request past its expiry as expired and update its cards."""
        now = self.clock()

        async def work(tx) -> int:
            count = 0
            for request in await approvals.due_to_expire(tx, now):
                if await self._close(tx, request, "expired", now, actor=None):
                    count += 1
            return count

        count = await self.store.run_transaction(work)
        if count:
            self.wake_outbox()
        return count

    def card(self, request: Approval, now: datetime, viewer: Context | None = None,
             approver_ids: Sequence[str] = (), mentions: Sequence[tuple[str, str]] = (),
             evidence: dict[str, Any] | None = None) -> dict:
        """The card for one `viewer` (buttons only if they may act), or for everyone (buttons for
        all when no eligible approver's Teams id is known, else refreshed for those approvers).
        `evidence`: figures read just now (else those stored when the request was opened)."""
        if viewer is None:
            return approval_card(request, now, approver_ids=approver_ids, buttons=not approver_ids,
                                 mentions=mentions, evidence=evidence)
        may_act = self._may_vote(viewer, request) and viewer.user.id not in {v.voter_id for v in request.votes}
        return approval_card(request, now, buttons=may_act, evidence=evidence)

    async def _approvers(self, tx, request: Approval) -> list[str]:
        """Teams ids of the people who may decide `request` (for `refresh.userIds`)."""
        if request.approver_role == REQUESTER_ONLY:
            wanted = [request.requester_id]
        else:
            needed = Role.parse(request.approver_role)
            wanted = [uid for uid, role in self.roles.assignments.items() if role >= needed]
            wanted += [g.user_id for g in await grants.list_grants(tx) if Role.parse(g.role) >= needed
                       and g.user_id not in self.roles.assignments]
            if not request.allow_self:
                wanted = [uid for uid in wanted if uid != request.requester_id]
        voted = {v.voter_id for v in request.votes}
        known = await people.teams_ids(tx, [uid for uid in wanted if uid not in voted])
        return sorted(known.values())

    async def list_requests(self, ctx: Context, which: str) -> list[Approval]:
        tenant = ctx.user.tenant_id or None         # each tenant sees only its own requests

        async def work(tx) -> list[Approval]:
            if which == "pending":
                return await approvals.find(tx, states=[PENDING], tenant_id=tenant)
            if which == "mine":
                asked = await approvals.find(tx, requester_id=ctx.user.id, tenant_id=tenant) if ctx.user.id else []
                voted = await approvals.find(tx, voter_id=ctx.user.id, tenant_id=tenant) if ctx.user.id else []
                waiting = [r for r in await approvals.find(tx, states=[PENDING], tenant_id=tenant)
                           if self._may_vote(ctx, r)]
                merged = {r.id: r for r in [*asked, *voted, *waiting]}
                return sorted(merged.values(), key=lambda r: -r.id)
            return await approvals.find(tx, tenant_id=tenant)
        return await self.store.run_transaction(work, write=False)

    async def show(self, ctx: Context, approval_id: int) -> Reply:
        request = await self._get(approval_id)
        if request is None or not self._visible(ctx, request):
            return Reply(f"There is no approval request #{approval_id}. Type `approvals all` to see them.")
        now = self.clock()
        evidence = None
        if request.state == PENDING and "_evidence" in request.parameters:     # a voter opens it: figures now
            evidence = await gather_evidence(self.kinds.get(request.action), ctx, change_of(request), now)
        return Reply(f"Request #{approval_id}: {request.state}", card=self.card(request, now, ctx, evidence=evidence))

    @staticmethod
    def _visible(ctx: Context, request: Approval) -> bool:
        """With several tenants, a request belongs to the tenant it was asked in: no other tenant
        sees, votes on or withdraws it (it is "no request" to them, which says nothing about it)."""
        return not ctx.user.tenant_id or not request.tenant_id or request.tenant_id == ctx.user.tenant_id

    @staticmethod
    def _check_identified(ctx: Context) -> None:
        """A sender without an Entra object id (an anonymous meeting participant) is nobody in
        particular: all of them share the empty id, so none of them may decide anything."""
        if not ctx.user.id:
            raise Refused("You joined without an organization account (no Entra object id), so you can read "
                          "but not vote, confirm or withdraw. Sign in to Teams with your work account.")

    def _may_vote(self, ctx: Context, request: Approval) -> bool:
        if not ctx.user.id or not self._visible(ctx, request):
            return False
        try:
            self._check_eligible(ctx, request, "approve")
        except Refused:
            return False
        return True

    async def card_sent(self, approval_id: int, conversation_id: str, activity_id: str) -> None:
        """The host sent the request's card as a turn reply: remember it so updates can edit it."""
        async def work(tx) -> None:
            await approvals.set_card(tx, approval_id, conversation_id, activity_id)
        await self.store.run_transaction(work)

    # ------------------------------------------------------------ executing

    async def run_direct(self, ctx: Context, change: Change, *, wait: bool = False, review: Rule | None = None,
                         emergency: str = "", limited: bool = True) -> Reply:
        """Policy says direct: run now, audited before and after. `wait`: return the outcome of a
        long operation rather than its acknowledgement (the caller reports it: the watch's rollback).
        `review`: the rule whose approvers review it afterwards (break-glass: a rollback, or an
        `emergency`, which pages them): they get a review card in the same transaction.
        `limited`: counts against the requester's limit (not the bot's own automatic rollback)."""
        notes = await self._prepare(ctx, change)
        now = self.clock()
        if emergency:
            change = replace(change, reason=f"EMERGENCY: {emergency}" + (f" ({change.reason})" if change.reason
                                                                          else ""))

        async def begin(tx) -> int | None:
            if not await first_delivery(tx, ctx, now):
                return None
            if limited:          # raises TooManyRequests when over the limit: nothing is written
                await self.limiter.take(tx, ctx.user, pipeline=ctx.pipeline is not None, now=now.timestamp())
            detail: dict[str, Any] = {"mode": DIRECT}
            if review is not None:
                detail["review"] = "emergency" if emergency else "afterwards"
            await audit.append(tx, self._entry(ctx.user, "executed", change, activity_id=ctx.activity_id,
                                               detail=detail))
            op_id = await self._intend(tx, ctx, change, None, notes)
            if review is not None:
                told["count"] = await self._ask_review(tx, ctx, change, op_id, review, now, emergency=emergency)
            return op_id
        told: dict[str, int] = {}
        op_id = await self.store.run_transaction(begin)
        if op_id is None:
            return REDELIVERED
        if review is not None:
            self.wake_outbox()
        reply = await self._perform(ctx, change, None, notes, op_id, wait=wait)
        if review is not None and reply.text:
            how = "emergency" if emergency else "the safe direction"
            if told.get("count"):
                who = "paged" if emergency else "sent a review card"
                note = f"Ran at once ({how}); the approvers were {who} (`review {op_id}`)."
            else:
                note = (f"Ran at once ({how}); no approver could be told (no approval channel, and no approver "
                        f"has a chat with the bot): ask one to `review {op_id}`.")
            reply = replace(reply, text=reply.text + "\n" + note)
        return reply

    async def _ask_review(self, tx, ctx: Context, change: Change, op_id: int, rule: Rule, now: datetime, *,
                          emergency: str = "") -> int:
        """The approvers learn that `change` ran without them and can review it (`review <op>`);
        returns in how many places."""
        card = review_card(op_id, change, ctx.user.name, now, emergency=emergency)
        payload = {"text": card.get("fallbackText", ""), "card": card}
        tenant = ctx.user.tenant_id
        targets: list[tuple[str, str]] = []
        if self.approval_channel:
            targets.append((self.approval_channel, tenant))
        else:
            ids = await self._eligible(tx, rule.approver_role, besides=ctx.user.id)
            targets += await self._personal_chats(tx, ids, tenant)
        targets += [(t, tn or tenant) for t, tn in await approval_subscribers(tx, change.workspace)
                    if not (tn and tenant and tn != tenant)]
        sent = 0
        for target, target_tenant in dict.fromkeys(targets):
            if target == ctx.conversation_id:
                continue
            await outbox.enqueue(tx, target, payload, dedupe_key=f"review:{op_id}:{target}",
                                 tenant_id=target_tenant, now=now)
            sent += 1
        await audit.append(tx, self._entry(ctx.user, "review_requested", change, activity_id=ctx.activity_id,
                                           detail={"operation": op_id, "told": sent,
                                                   **({"emergency": emergency} if emergency else {})}))
        return sent

    async def review(self, ctx: Context, op_id: int, comment: str) -> Reply:
        """An approver reviews a change that ran without approval (break-glass): recorded once per reviewer."""
        now = self.clock()

        async def work(tx) -> str:
            self._check_identified(ctx)
            op = await operations.get(tx, op_id)
            if op is None or op.approval_id is not None or (
                    ctx.user.tenant_id and op.tenant_id and op.tenant_id != ctx.user.tenant_id):
                raise Refused(f"There is no change #{op_id} waiting for a review.")
            change = Change(**op.change)
            rule = self.rule(change.action, change.environment)
            if ctx.role < rule.approver_role:
                raise Refused(f"Reviewing needs the {rule.approver_role.label} role; you have {ctx.role.label}.")
            if op.actor_id == ctx.user.id:
                raise Refused("You made that change, so someone else must review it.")
            if not await inbox.first_time(tx, f"review:{op_id}:{ctx.user.id}", now):
                return "already"
            await audit.append(tx, self._entry(ctx.user, "reviewed", change, activity_id=ctx.activity_id,
                                               detail={"operation": op_id, "comment": comment[:500],
                                                       "by_whom": op.actor_name}))
            return change.summary

        try:
            summary = await self.store.run_transaction(work)
        except Refused as refusal:
            return Reply(str(refusal))
        if summary == "already":
            return Reply(f"You have already reviewed change #{op_id}.")
        return Reply(f"Reviewed change #{op_id} ({summary})" + (f": {comment}" if comment else "") +
                     ". Recorded in the audit trail.", ok=True)

    async def execute(self, ctx: Context, request: Approval) -> Reply:
        """Run an approved request exactly once (the approved -> executing compare-and-set decides).

        The operation is recorded (the intent) in the transaction that moves the request to
        executing, before Azure is called: a process killed after that leaves an operation that
        `recover_operations` settles from the resource, so no request stays `executing`."""
        now = self.clock()
        workspace_ctx = replace(ctx, workspace=request.workspace)
        change = change_of(request)
        notes = await self._prepare(workspace_ctx, change)       # reads only: harmless if the claim is lost

        async def claim(tx) -> int | None:
            if not await approvals.transition(tx, request.id, APPROVED, EXECUTING, now=now):
                return None
            await audit.append(tx, self._entry(ctx.user, "executed", request, activity_id=ctx.activity_id))
            return await self._intend(tx, ctx, change, request, notes)

        op_id = await self.store.run_transaction(claim)
        if op_id is None:
            current = await self._get(request.id)
            return Reply(f"Request #{request.id} is already {current.state}.", card=self.card(current, now, ctx))
        return await self._perform(workspace_ctx, change, request, notes, op_id)

    async def _prepare(self, ctx: Context, change: Change) -> dict[str, Any]:
        """What the preparers read before the change (figures for later: never blocks it)."""
        notes: dict[str, Any] = {}
        kind = self.kinds.get(change.action)
        for prepare in kind.prepare if kind is not None else ():
            try:
                notes.update(await prepare(ctx, change))
            except ServiceError as error:
                log.info("could not prepare %s for %s: %s", prepare.__name__, change.action, error.message)
            except UnknownWorkspace:
                break
        return notes

    async def _intend(self, tx, ctx: Context, change: Change, request: Approval | None, notes: dict[str, Any]) -> int:
        """Record the operation about to be carried out (in the caller's transaction)."""
        new = operations.NewOperation(
            owner=self.owner, change=asdict(change), notes=notes, actor_id=ctx.user.id, actor_name=ctx.user.name,
            tenant_id=ctx.user.tenant_id, conversation_id=ctx.conversation_id, activity_id=ctx.activity_id,
            started_at=self.clock(), approval_id=request.id if request else None)
        return (await operations.create(tx, new)).id

    async def _perform(self, ctx: Context, change: Change, request: Approval | None, notes: dict[str, Any],
                       op_id: int, *, wait: bool = False) -> Reply:
        kind = self.kinds.get(change.action)
        if kind is None:
            return await self._finish(ctx, change, request, Reply(f"❌ I don't know how to carry out {change.action}.",
                                                                  ok=False), operation_id=op_id)
        run_ctx = replace(ctx, approval=request)
        try:
            answer = await kind.execute(run_ctx, change)
        except Stale as stale:
            return await self._finish(ctx, change, request, Reply(
                f"❌ Not done: {stale} The request was for {change.summary}; ask again if it is still wanted.",
                ok=False), operation_id=op_id)
        except ServiceError as error:
            code = f" ({error.code})" if error.code else ""
            return await self._finish(ctx, change, request, Reply(f"❌ {change.summary} failed{code}: {error.message}",
                                                                  ok=False), operation_id=op_id)
        except CommandError as error:         # the target is no longer as the change needs it
            return await self._finish(ctx, change, request, Reply(
                f"❌ Not done: {error.message} The request was for {change.summary}.", ok=False), operation_id=op_id)
        except UnknownWorkspace:
            return await self._finish(ctx, change, request, Reply(
                f"❌ Not done: workspace {change.workspace} is no longer configured in the bot "
                f"({change.summary}).", ok=False), operation_id=op_id)
        except Exception:  # noqa: BLE001 - settled now, not left `executing` until a restart
            incident = uuid.uuid4().hex[:8]
            log.exception("incident %s: carrying out %s failed", incident, change.summary)
            return await self._finish(ctx, change, request, Reply(
                f"⚠️ Could not tell whether {change.summary} took effect: something went wrong on my side "
                f"(incident {incident}). Look at {change.target} to check.", ok=False), operation_id=op_id)
        if isinstance(answer, Reply):         # an immediate change: done
            return await self._finish(ctx, change, request, replace(answer, ok=True if answer.ok is None else answer.ok),
                                      notes=notes, operation_id=op_id)
        reply, outcome = answer.reply, answer.outcome     # Accepted: Azure applies it in the background

        async def finished() -> Reply:
            try:
                result = await outcome
            except ServiceError as error:
                result = Reply(f"❌ {change.summary} failed: {error.message}", ok=False)
            await self._finish(ctx, change, request, result, announce=request is not None, notes=notes,
                               operation_id=op_id, in_turn=wait)
            return result

        if wait:
            return await finished()
        # The outcome edits what the turn showed: the approval card, or (direct) the acknowledgement,
        # whose activity id the host reports through `ack_sent` (the track below).
        self.spawn(finished())
        if request is not None:
            current = await self._get(request.id)
            return Reply(reply.text, card=self.card(current, self.clock(), ctx))
        return replace(reply, track=Track("operation", op_id))

    async def ack_sent(self, operation_id: int, activity_id: str) -> None:
        """The host sent the acknowledgement of operation `operation_id` as `activity_id`: its outcome
        will edit that message (at once, when the outcome is already known)."""
        now = self.clock()

        async def work(tx) -> bool:
            op = await operations.get(tx, operation_id, lock=True)
            if op is None or op.posted:
                return False
            op = await operations.set_ack(tx, operation_id, activity_id)
            if op is not None and op.state == operations.DONE:
                return await self._post_outcome(tx, op, now)
            return False

        if await self.store.run_transaction(work):
            self.wake_outbox()

    async def _post_outcome(self, tx, op: "operations.PendingOperation", now: datetime) -> bool:
        """Put the outcome in the outbox: an edit of the acknowledgement when it landed, else a new message."""
        if not op.conversation_id or not await operations.mark_posted(tx, op.id):
            return False
        payload: dict[str, Any] = {"text": str(op.outcome.get("text") or "")}
        if op.ack_activity_id:
            payload["update"] = op.ack_activity_id
        await outbox.enqueue(tx, op.conversation_id, payload, dedupe_key=f"operation:{op.id}:outcome",
                             tenant_id=op.tenant_id, now=now)
        return True

    async def recover_operations(self, workspaces: Workspaces) -> int:
        """Settle what stopped processes left in flight: claim each unfinished operation (once
        across replicas), re-check its resource, record the outcome in the audit trail, move its
        request to succeeded or failed and edit its card (or the acknowledgement) through the
        outbox; post outcomes whose acknowledgement never landed. Returns how many outcomes were
        reported or posted.

        An operation an earlier run of this same instance started (owner `<instance>/<boot>`) is
        settled at once: that run is gone. One another process started is left to it for
        RECOVERY_GRACE (it may be waiting for it), or UNCHECKED_GRACE when only its wait can tell."""
        now = self.clock()
        mine = instances.instance_of(self.owner)
        await self._adopt_stranded_requests(now)

        async def read(tx):
            return (await operations.unfinished(tx, not_owned_by=self.owner),
                    await operations.done_unposted(tx, finished_before=now - RECOVERY_GRACE))

        unfinished, unposted = await self.store.run_transaction(read, write=False)
        count = 0
        for op in unfinished:
            change = Change(**op.change)
            kind = self.kinds.get(change.action)
            recheck = kind.recheck if kind is not None else None
            orphaned = bool(mine) and instances.instance_of(op.owner) == mine     # an earlier run of this instance
            if not orphaned and op.started_at > now - (RECOVERY_GRACE if recheck else UNCHECKED_GRACE):
                continue                       # its process may still be waiting for it

            async def claim(tx, op=op) -> bool:
                return await operations.claim(tx, op.id, self.owner, now=now, lease_seconds=CLAIM_SECONDS)
            if not await self.store.run_transaction(claim):
                continue                       # another replica is settling it
            count += await self._settle(op, change, recheck, workspaces)
        for op in unposted:
            async def post(tx, op=op) -> bool:
                current = await operations.get(tx, op.id, lock=True)
                return current is not None and not current.posted and await self._post_outcome(tx, current, now)
            count += await self.store.run_transaction(post)
        if count:
            self.wake_outbox()
        return count

    async def _settle(self, op: "operations.PendingOperation", change: Change, recheck: Recheck | None,
                      workspaces: Workspaces) -> int:
        """Re-check claimed operation `op` and report its outcome (1), or release it for a later pass (0)."""
        request = await self._get(op.approval_id) if op.approval_id else None
        ctx = Context(user=User(op.actor_id, op.actor_name, op.tenant_id), role=Role.ADMIN,
                      workspaces=workspaces, conversation_id=op.conversation_id, workspace=change.workspace,
                      activity_id=op.activity_id, gate=self, store=self.store, clock=self.clock)
        try:
            result = await _recheck(ctx, change, recheck)
        except ServiceError as error:
            log.info("operation %s: cannot re-check %s yet: %s", op.id, change.target, error.message)
            result = None
        except Exception:  # noqa: BLE001 - one operation must not stop the report of the others
            log.exception("operation %s: re-checking %s failed", op.id, change.target)
            result = None
        if result is None:                     # still in progress, or Azure did not answer: a later pass
            await self.store.run_transaction(lambda tx: operations.release(tx, op.id, self.owner))
            return 0
        log.info("operation %s (%s) left in flight by %s: settled as %s", op.id, change.summary, op.owner or "?",
                 "done" if result.ok else "not done")
        await self._finish(ctx, change, request, result, notes=op.notes, operation_id=op.id, in_turn=False,
                           detail={"settled_after_restart": True, "operation": op.id})
        return 1

    async def _adopt_stranded_requests(self, now: datetime) -> None:
        """Requests an older version left `executing` without an operation get one (once), so that
        they are settled like any other."""
        async def find(tx) -> list[int]:
            return await operations.executing_without_operation(tx, updated_before=now - RECOVERY_GRACE)
        for approval_id in await self.store.run_transaction(find, write=False):
            async def adopt(tx, approval_id=approval_id) -> None:
                request = await approvals.get(tx, approval_id, for_update=True)
                if request is None or request.state != EXECUTING:
                    return
                voter = request.approvals[-1] if request.approvals else None
                await operations.adopt(tx, operations.NewOperation(
                    owner="", change=asdict(change_of(request)), notes={},
                    actor_id=voter.voter_id if voter else request.requester_id,
                    actor_name=voter.voter_name if voter else request.requester_name, tenant_id=request.tenant_id,
                    conversation_id=request.conversation_id, activity_id=voter.activity_id if voter else "",
                    started_at=request.updated_at or now, approval_id=request.id))
            await self.store.run_transaction(adopt)

    async def _finish(self, ctx: Context, change: Change, request: Approval | None, result: Reply, *,
                      announce: bool = False, notes: dict[str, Any] | None = None, operation_id: int | None = None,
                      in_turn: bool = True, detail: dict[str, Any] | None = None) -> Reply:
        """Record the outcome once. `in_turn`: the turn's reply carries it; otherwise it edits the
        approval card or the acknowledgement (operation `operation_id`)."""
        now = self.clock()
        state = SUCCEEDED if result.ok else FAILED
        summary = result.text.splitlines()[0] if result.text else state
        lost = object()

        async def work(tx) -> Any:
            if operation_id is not None and not await operations.finish(
                    tx, operation_id, outcome={"text": result.text, "ok": result.ok}, now=now):
                return lost                    # another process reported it already
            subject = request or change
            kind = self.kinds.get(change.action)
            if result.ok and kind is not None:
                for record in kind.record:
                    await record(tx, ctx, change, request, now, notes or {})
            await audit.append(tx, self._entry(ctx.user, state, subject, activity_id=ctx.activity_id,
                                               outcome=summary, detail=detail))
            if operation_id is not None:
                if in_turn or request is not None:
                    await operations.mark_posted(tx, operation_id)
                else:
                    op = await operations.get(tx, operation_id, lock=True)
                    if op is not None and op.ack_activity_id:
                        await self._post_outcome(tx, op, now)
            if result.ok:
                await self._note_superseded(tx, change, request, now)
            if request is None:
                return None
            await approvals.transition(tx, request.id, (EXECUTING, APPROVED), state, now=now, result=summary)
            current = await approvals.get(tx, request.id)
            await self._update_cards(tx, current, now)
            return current

        current = await self.store.run_transaction(work)
        if current is lost:
            return result
        if current is None:
            self.wake_outbox()
            return result
        self.wake_outbox()
        return Reply(result.text, card=self.card(current, now, ctx), ok=result.ok)

    # ------------------------------------------------------------ helpers

    async def _note_superseded(self, tx, change: Change, done: Approval | None, now: datetime) -> None:
        """A change on a target went through: other requests still waiting on that target were made
        against what it was before, and their executors will refuse them if it no longer applies.
        Say so on their cards now, rather than after someone approves."""
        if self._starts_a_run(change.action, change.parameters):
            return                                     # a job started: the target itself is as it was
        by = f"request #{done.id}" if done is not None else f"{change.action} (no approval needed)"
        text = (f"{change.target} changed after this request was made ({by}: {change.summary}). Approving it "
                f"will be refused if the change no longer applies; look again before voting.")
        for other in await approvals.pending_on(tx, change.workspace, change.target, besides=done.id if done else 0):
            if self._starts_a_run(other.action, other.parameters):
                continue
            if await approvals.note(tx, other.id, text, now=now):
                await self._update_cards(tx, await approvals.get(tx, other.id), now)

    def _is_confirmation(self, request: Approval) -> bool:
        return request.approver_role == REQUESTER_ONLY

    def _check_eligible(self, ctx: Context, request: Approval, decision: str) -> None:
        if self._is_confirmation(request):
            if ctx.user.id != request.requester_id:
                raise Refused(f"Only {request.requester_name}, who asked, can confirm or cancel request #{request.id}.")
            return
        needed = Role.parse(request.approver_role)
        if ctx.user.id == request.requester_id and not request.allow_self and decision == "approve":
            raise Refused(f"You asked for request #{request.id}, so you cannot approve it yourself; "
                          f"someone else with the {needed.label} role must.")
        if ctx.role < needed:
            raise Refused(f"Voting on request #{request.id} needs the {needed.label} role; you have "
                          f"{ctx.role.label}. A bot admin can grant it with `grant <user> {needed.name.lower()}`.")

    async def _close(self, tx, request: Approval, state: str, now: datetime, *, actor: User | None,
                     activity_id: str = "") -> bool:
        won = await approvals.transition(tx, request.id, PENDING, state, now=now,
                                         result=f"{state} by {actor.name}" if actor else state)
        if won:
            who = actor or User(id="mlops-bot", name="MLOps bot")
            await audit.append(tx, self._entry(who, state, request, activity_id=activity_id))
            await self._update_cards(tx, await approvals.get(tx, request.id), now)
        return won

    async def _update_cards(self, tx, request: Approval, now: datetime) -> None:
        """Every copy of the request's card is edited for everyone, through the outbox."""
        payload = await self._card_payload(tx, request, now)
        version = f"{request.state}:{len(request.votes)}"
        if request.card_activity_id:
            await outbox.enqueue(tx, request.card_conversation_id, {**payload, "update": request.card_activity_id},
                                 dedupe_key=f"approval:{request.id}:update:{request.card_conversation_id}:{version}",
                                 tenant_id=request.tenant_id, now=now)
        copies = [self.approval_channel] if self.approval_channel else []
        copies += [target for target, _ in await approval_subscribers(tx, request.workspace)
                   if target not in copies and target != request.card_conversation_id]
        if not self.approval_channel and not self._is_confirmation(request):      # approvers' personal chats
            ids = await self._eligible(tx, Role.parse(request.approver_role))
            copies += [target for target, _ in await self._personal_chats(tx, ids, request.tenant_id)
                       if target not in copies and target != request.card_conversation_id]
        for target in copies:
            original = f"approval:{request.id}:card:{target}"
            if await outbox.find_items(tx, dedupe_key=original):
                await outbox.enqueue(tx, target, {**payload, "update_of": original},
                                     dedupe_key=f"approval:{request.id}:update:{target}:{version}",
                                     tenant_id=request.tenant_id, now=now)

    async def _card_payload(self, tx, request: Approval, now: datetime, *, in_channel: bool = False) -> dict[str, Any]:
        mentions: list[tuple[str, str]] = []
        if in_channel and request.state == PENDING and not self._is_confirmation(request):
            ids = await self._eligible(tx, Role.parse(request.approver_role),
                                       besides="" if request.allow_self else request.requester_id)
            known, named = await people.teams_ids(tx, ids), await people.names(tx, ids)
            mentions = [(known[uid], named.get(uid) or "approver") for uid in sorted(known)]
        card = self.card(request, now, approver_ids=await self._approvers(tx, request), mentions=mentions)
        return {"text": card.get("fallbackText", ""), "card": card}

    async def _get(self, approval_id: int) -> Approval | None:
        async def work(tx) -> Approval | None:
            return await approvals.get(tx, approval_id)
        return await self.store.run_transaction(work, write=False)

    def _entry(self, actor: User, event: str, subject: Approval | Change, *, activity_id: str = "", outcome: str = "",
               detail: dict[str, Any] | None = None) -> audit.AuditEntry:
        params = {k: v for k, v in subject.parameters.items() if not k.startswith("_")}
        return audit.AuditEntry(
            at=self.clock(), event=event, actor_id=actor.id, actor_name=actor.name,
            actor_upn=getattr(actor, "upn", ""),
            tenant_id=actor.tenant_id or (subject.tenant_id if isinstance(subject, Approval) else ""),
            action=subject.action,
            workspace=subject.workspace, target=subject.target, parameters=params,
            before=dict(subject.before), after=dict(subject.after),
            approval_id=subject.id if isinstance(subject, Approval) else None,
            outcome=outcome, activity_id=activity_id, detail=dict(detail or {}), reason=subject.reason)


async def record_policy(store: Storage, policy: Policy, now: datetime) -> None:
    """Audit the policy in force when it differs from the last one recorded (one record per change,
    not per start)."""
    digest = policy.digest()

    async def work(tx) -> None:
        last = await audit.query(tx, action="policy_loaded", limit=1)
        if last and last[0].detail.get("sha256") == digest:
            return
        await audit.append(tx, audit.AuditEntry(
            at=now, event="policy_loaded", actor_id="mlops-bot", actor_name="MLOps bot",
            detail={"source": policy.source or "defaults", "sha256": digest}))

    await store.run_transaction(work)
