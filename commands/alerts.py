"""Subscriptions and alerts: subscribe, unsubscribe, subscriptions, acknowledge, snooze; and
`publish`, which turns one event into one card per subscribed conversation, through the outbox.

    await store.run_transaction(lambda tx: publish(tx, event, now))   # ingress, monitors

The same alert (same `Event.key`) firing again edits the card it already has in each conversation
(outbox payload `update_of` the first card's dedupe key) instead of posting anew; Resolved edits
the card too and never posts a new one. While an alert is snoozed its cards are still kept up to
date but nothing new is posted. A conversation hears an event when one of its subscriptions of
the event's kind matches: every filter given (workspace, model, endpoint: equal, ignoring case;
severity: at least that severe, Sev0 being the most severe) must hold. `subscribe` checks the
workspace, model and endpoint names against what the workspaces have (a typo would never match)
and refuses an unknown one with a "did you mean"; a name is kept unchecked only when the
workspace cannot list its names, and the answer says so.

Who may subscribe and unsubscribe a conversation is the policy's `[subscriptions] role`
(operators by default); `subscriptions` is open to everyone. Acknowledge and Snooze need the
Operator role, and both are audited. The first acknowledgement stays: a second one is told who
acknowledged and when, and changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from adapters.events import INFO, KINDS, RESOLVED, SEVERITIES, Event
from adapters.service import ServiceError
from adapters.storage import alerts, audit, conversations, inbox, outbox, subscriptions, traffic_history
from adapters.storage.alerts import Alert
from adapters.storage.subscriptions import NewSubscription, Subscription
from commands.alert_card import AlertState, alert_card, worst_first
from commands.context import Context, Reply, Role
from commands.policy import parse_duration
from commands.registry import MAX_ID, Arg, Forbidden, UsageError, command, one_of, suggest, whole_number
from commands.ui import button, card, columns, limited, plain, reply, text, when

log = logging.getLogger(__name__)

ALERT_ID = whole_number(1, MAX_ID, "an alert id")
SUBSCRIPTION_ID = whole_number(1, MAX_ID, "a subscription number")
SUBSCRIPTION_KINDS = KINDS
MAX_SNOOZE = timedelta(days=7)
DEFAULT_SNOOZE = timedelta(hours=24)
MAX_FILTER_CHARS = 200


# ---------------------------------------------------------------- publishing

def matches(subscription: Subscription, event: Event) -> bool:
    """Does this subscription want this event? (Its kind and every filter it sets.)"""
    if subscription.kind != event.kind:
        return False
    for wanted, actual in ((subscription.workspace, event.workspace), (subscription.model, event.model),
                           (subscription.endpoint, event.endpoint)):
        if wanted and wanted.lower() != (actual or "").lower():
            return False
    if subscription.severity and event.severity:
        return SEVERITIES.index(event.severity) <= SEVERITIES.index(subscription.severity)
    return True


def state_of(alert: Alert) -> AlertState:
    return AlertState(id=alert.id, status=alert.status, fired_count=alert.fired_count, first_at=alert.first_at,
                      history=tuple(alert.history), acknowledged_by=alert.acknowledged_by,
                      acknowledged_at=alert.acknowledged_at, snoozed_by=alert.snoozed_by,
                      snoozed_until=alert.snoozed_until)


async def rollback_target(tx, event: Event) -> int | None:
    """The traffic change a Rollback button on the event's card would undo: the newest one the bot
    recorded of the event's endpoint, when it has a split to restore. None: no Rollback button
    (it could only answer "Nothing to roll back")."""
    if not (event.endpoint and event.workspace) or event.kind not in ("drift", "alerts"):
        return None
    newest = await traffic_history.latest(tx, event.workspace, event.endpoint)
    return newest.id if newest is not None and newest.before else None


async def card_of(tx, alert: Alert, now: datetime) -> dict[str, Any]:
    event = Event.from_json(alert.event)
    return alert_card(event, state_of(alert), now, rollback_to=await rollback_target(tx, event))


async def payload_of(tx, alert: Alert, now: datetime) -> dict[str, Any]:
    built = await card_of(tx, alert, now)
    return {"text": built["fallbackText"], "card": built}


async def publish(tx, event: Event, now: datetime) -> int:
    """Record the event's alert and enqueue its card for every matching conversation; how many items."""
    worst = worst_first(event.figures)
    alert, _ = await alerts.record(tx, event.key, event.kind, event.status, event.to_json(),
                                   worst[0].value if worst else None, now, fired=event.status not in (RESOLVED, INFO))
    wanted = {}
    for subscription in await subscriptions.of_kind(tx, event.kind):
        if matches(subscription, event):
            wanted.setdefault(subscription.conversation_id, subscription.tenant_id)
    shown = dict(await alerts.cards(tx, alert.id))
    return await _send_cards(tx, alert, now, shown, wanted)


async def _send_cards(tx, alert: Alert, now: datetime, shown: dict[str, str], wanted: dict[str, str]) -> int:
    """Edit the card in each conversation that has one; post one where `wanted` and none yet."""
    payload = await payload_of(tx, alert, now)
    quiet = alert.status in (RESOLVED,) or alert.snoozed(now)
    count = 0
    for conversation_id in sorted(set(shown) | set(wanted)):
        if await conversations.is_gone(tx, conversation_id):
            continue
        key = f"alert:{alert.id}:r{alert.revision}:{conversation_id}"
        record = await conversations.get_conversation(tx, conversation_id)
        tenant = wanted.get(conversation_id) or (record.tenant_id if record else "")
        if conversation_id in shown and not await _card_lost(tx, shown[conversation_id]):
            item = {**payload, "update_of": shown[conversation_id]}
        elif quiet:
            continue
        else:                                # first card here, or the first one was lost: post (again)
            item = payload
            await alerts.remember_card(tx, alert.id, conversation_id, key)
        if await outbox.enqueue(tx, conversation_id, item, dedupe_key=key, tenant_id=tenant, now=now) is not None:
            count += 1
    return count


async def _card_lost(tx, first_key: str) -> bool:
    """The first card's outbox item was pruned or given up: an edit would have nothing to edit."""
    found = await outbox.find_items(tx, dedupe_key=first_key)
    return not found or found[0].state == outbox.DEAD


async def approval_subscribers(tx, workspace: str) -> list[tuple[str, str]]:
    """(conversation_id, tenant_id) of conversations subscribed to approval requests in `workspace`."""
    request = Event(id="", kind="approvals", type="approval", key="", status=INFO, title="", workspace=workspace)
    found: dict[str, str] = {}
    for subscription in await subscriptions.of_kind(tx, "approvals"):
        if matches(subscription, request) and not await conversations.is_gone(tx, subscription.conversation_id):
            found.setdefault(subscription.conversation_id, subscription.tenant_id)
    return sorted(found.items())


# ---------------------------------------------------------------- subscriptions

def _may_manage(ctx: Context) -> None:
    needed = ctx.gate.policy.subscription_role if ctx.gate is not None else Role.OPERATOR
    if ctx.role < needed:
        raise Forbidden(f"Managing subscriptions needs the {needed.label} role; you have {ctx.role.label}. "
                        "Ask a bot admin to grant it (the policy's [subscriptions] role sets who may).")


def _store(ctx: Context):
    if ctx.store is None or not ctx.conversation_id:
        raise UsageError("Subscriptions are not available in this chat.")
    return ctx.store


def home(ctx: Context) -> str:
    """Where a conversation's subscriptions live: a channel as a whole, not the thread the command
    was typed in (Teams gives a channel message the id `19:...@thread.tacv2;messageid=...`), so
    each alert becomes its own post in the channel."""
    if ctx.conversation_kind == "channel":
        return ctx.conversation_id.split(";", 1)[0]
    return ctx.conversation_id


async def _reach_channel(tx, ctx: Context, target: str) -> None:
    """Store a reference to the channel itself (copied from the thread's), so the outbox can post there."""
    if target == ctx.conversation_id:
        return
    thread = await conversations.get_conversation(tx, ctx.conversation_id)
    if thread is None:
        return
    reference = dict(thread.reference)
    reference["conversation"] = {**(reference.get("conversation") or {}), "id": target}
    reference.pop("activityId", None)
    await conversations.save_conversation(tx, replace(thread, conversation_id=target, reference=reference))


def _filter(value: str | None, what: str) -> str:
    value = (value or "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise UsageError(f"The {what} filter is too long (at most {MAX_FILTER_CHARS} characters).")
    return value


def describe(subscription: Subscription) -> str:
    filters = [f"{name} {value}" for name, value in (("workspace", subscription.workspace),
                                                      ("model", subscription.model),
                                                      ("endpoint", subscription.endpoint),
                                                      ("severity ≤", subscription.severity)) if value]
    return f"#{subscription.id} {subscription.kind}" + (f" ({', '.join(filters)})" if filters else " (everything)")


@command("subscribe", Arg("kind", type=one_of(SUBSCRIPTION_KINDS, "kind"), metavar="|".join(SUBSCRIPTION_KINDS),
                          help="what to hear about"),
         Arg("--workspace", help="only events of this workspace", metavar="W"),
         Arg("--model", help="only events about this model", metavar="M"),
         Arg("--endpoint", help="only events about this endpoint", metavar="E"),
         Arg("--severity", type=one_of(SEVERITIES, "severity"), metavar="S",
             help="only alerts at least this severe (Sev0 most severe .. Sev4)"),
         phrases=("subscribe", "notify", "alert me", "tell me when", "let us know", "post alerts", "watch for",
                  "follow", "keep posted", "send alerts", "notify us about", "notify about"),
         summary="Post drift alerts, Azure Monitor alerts, job, model or approval events in this chat "
                 "(Operators by default; the policy's [subscriptions] role decides).",
         example="subscribe drift --model fraud-model", uses_workspace=False)
async def subscribe(ctx: Context, kind: str, workspace: str | None, model: str | None, endpoint: str | None,
                    severity: str | None) -> Reply:
    _may_manage(ctx)
    store = _store(ctx)
    workspace = _filter(workspace, "workspace")
    if workspace:
        names = [ws.name for ws in ctx.workspaces]
        known = {n.lower(): n for n in names}
        if workspace.lower() not in known:
            close = suggest(workspace, names)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"No workspace named '{workspace}'.{hint} Configured: {', '.join(names)}.")
        workspace = known[workspace.lower()]
    unchecked: list[str] = []
    model = await _known_name(ctx, _filter(model, "model"), "model", workspace, unchecked)
    endpoint = await _known_name(ctx, _filter(endpoint, "endpoint"), "endpoint", workspace, unchecked)
    where_to = home(ctx)
    new = NewSubscription(where_to, kind, tenant_id=ctx.user.tenant_id, workspace=workspace,
                          model=model, endpoint=endpoint,
                          severity=severity or "", created_by_id=ctx.user.id, created_by_name=ctx.user.name)
    now = ctx.now()

    async def work(tx) -> tuple[Subscription, bool]:
        await _reach_channel(tx, ctx, where_to)
        found, created = await subscriptions.add(tx, new, now)
        if created:
            await audit.append(tx, _entry(ctx, "subscribed", "subscribe", describe(found),
                                          {"conversation": where_to, "subscription": found.id}))
        return found, created

    found, created = await store.run_transaction(work)
    if not created:
        return Reply(f"This chat already has that subscription: {describe(found)}.")
    where = {"personal": "this chat", "groupChat": "this group chat", "channel": "this channel"}.get(
        ctx.conversation_kind, "this conversation")
    return Reply(f"Subscribed {where}: {describe(found)}. `subscriptions` lists them; "
                 f"`unsubscribe {found.id}` stops it." + "".join(f" {note}" for note in unchecked))


NAME_FILTERS = {"model": "models", "endpoint": "endpoints"}       # filter -> the command that lists them


async def _known_name(ctx: Context, value: str, kind: str, workspace: str, unchecked: list[str]) -> str:
    """`value` in the spelling of the workspace(s) that have it (all configured ones when the
    subscription names none): a typo would make a subscription that never matches, so an unknown
    name is refused with a "did you mean". A name is kept unchecked only when a workspace cannot
    list its names (then `unchecked` gets a sentence saying so)."""
    if not value:
        return value
    known: dict[str, str] = {}
    failed: list[str] = []
    for ws in ctx.workspaces:
        if workspace and ws.name != workspace:
            continue
        try:
            names = await ws.names(kind)
        except ServiceError as error:
            log.info("subscribe: could not list the %ss of %s (%s)", kind, ws.name, error.message)
            failed.append(ws.name)
            continue
        for name in names:
            known.setdefault(name.lower(), name)
    if value.lower() in known:
        return known[value.lower()]
    if failed:
        unchecked.append(f"I could not list the {kind}s of {', '.join(failed)} to check '{value}', so it is "
                         f"kept as typed: it matches only events that name exactly that {kind}.")
        return value
    close = suggest(value, list(known.values()))
    hint = f" Did you mean `{close[0]}`?" if close else ""
    searched = [workspace] if workspace else [ws.name for ws in ctx.workspaces]
    scope = f"workspace{'s' if len(searched) > 1 else ''} {', '.join(searched)}"
    raise UsageError(f"No {kind} named '{value}' in {scope}.{hint} `{NAME_FILTERS[kind]}` lists them.")


@command("unsubscribe", Arg("which", help="a subscription number, or a kind to remove all of that kind",
                            metavar="id|kind"),
         phrases=("unsubscribe", "stop notifying", "stop alerts", "mute", "no more alerts", "stop posting",
                  "stop notifications"),
         summary="Stop a subscription of this chat (by number, or all of one kind); same role as subscribe.",
         example="unsubscribe 3",
         uses_workspace=False)
async def unsubscribe(ctx: Context, which: str) -> Reply:
    _may_manage(ctx)
    store = _store(ctx)
    word = which.strip().lstrip("#")
    usage = "Usage: `unsubscribe ‹id|kind›` (e.g. `unsubscribe 3`)"
    if re.fullmatch(r"[+-]?[0-9]+", word):           # ASCII digits: str.isdigit() also takes '²'
        try:
            criteria: dict[str, Any] = {"id": SUBSCRIPTION_ID(word)}
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"{str(error)[:1].upper()}{str(error)[1:]}. {usage}") from None
    elif word.lower() in SUBSCRIPTION_KINDS:
        criteria = {"kind": word.lower()}
    else:
        close = suggest(word, list(SUBSCRIPTION_KINDS))
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise UsageError(f"'{which}' is neither a subscription number nor a kind ({', '.join(SUBSCRIPTION_KINDS)})."
                         f"{hint} {usage}")

    async def work(tx) -> list[Subscription]:
        removed = await subscriptions.remove(tx, home(ctx), **criteria)
        for sub in removed:
            await audit.append(tx, _entry(ctx, "unsubscribed", "unsubscribe", describe(sub),
                                          {"conversation": sub.conversation_id, "subscription": sub.id}))
        return removed

    removed = await store.run_transaction(work)
    if not removed:
        return Reply(f"This chat has no subscription {which}. `subscriptions` lists them.")
    return Reply("Removed " + "; ".join(describe(s) for s in removed) + ".")


@command("subscriptions",
         phrases=("subscriptions", "what are we subscribed to", "what am i subscribed to", "which alerts",
                  "notifications", "what do we follow"),
         summary="List what this chat is subscribed to.", example="subscriptions",
         uses_workspace=False)
async def subscriptions_(ctx: Context) -> Reply:
    store = _store(ctx)
    found = await store.run_transaction(lambda tx: subscriptions.for_conversation(tx, home(ctx)),
                                        write=False)

    def row(sub: Subscription) -> dict:
        return columns(text(plain(f"{describe(sub)} · by {sub.created_by_name or 'unknown'}")),
                       {"type": "ActionSet", "actions": [button("Stop", "unsubscribe", str(sub.id))]},
                       widths=["stretch", "auto"])

    body = limited(found, row, noun="subscription")
    if not found:
        body.append(text("Try `subscribe drift` or `subscribe alerts --severity Sev1`.", subtle=True))
    return reply(card("Subscriptions of this chat", body))


# ---------------------------------------------------------------- acting on an alert

@command("acknowledge", Arg("id", type=ALERT_ID, help="the alert number, as its card shows it"),
         phrases=("acknowledge", "ack", "i'm on it", "on it", "take alert", "claim alert"),
         summary="Acknowledge an alert: every copy of its card shows who is on it.", role=Role.OPERATOR,
         example="acknowledge 7", uses_workspace=False)
async def acknowledge(ctx: Context, id: int) -> Reply:
    """The first acknowledger stays on the alert: a second one (another copy of the card, a stale
    button, a typed command) is told who has it, and nothing changes."""
    def taken(current: Alert, now: datetime) -> str | None:
        if not current.acknowledged_by:
            return None
        at = current.acknowledged_at
        moment = "" if at is None else f" at {at:%H:%M} UTC" if at.date() == now.date() else f" on {when(at)}"
        return f"Already acknowledged by {current.acknowledged_by}{moment}."
    return await _change_alert(ctx, id, "acknowledged", lambda tx, now: alerts.acknowledge(tx, id, ctx.user.name, now),
                               refuse=taken)


@command("snooze", Arg("id", type=ALERT_ID, help="the alert number"),
         Arg("duration", nargs="?", help="how long, like 4h or 2d (default 24h, at most 7d)"),
         phrases=("snooze", "silence", "quiet", "hush", "mute alert"),
         summary="Snooze an alert: its cards stay up to date but nothing new is posted.", role=Role.OPERATOR,
         example="snooze 7 24h", uses_workspace=False)
async def snooze(ctx: Context, id: int, duration: str | None) -> Reply:
    try:
        length = parse_duration(duration) if duration else DEFAULT_SNOOZE
    except ValueError as error:
        raise UsageError(f"{str(error)[:1].upper()}{str(error)[1:]}. Usage: `snooze ‹id› [duration]` "
                         "(e.g. `snooze 7 24h`)") from None
    if length > MAX_SNOOZE:
        raise UsageError("An alert can be snoozed for at most 7 days.")
    until = ctx.now() + length
    return await _change_alert(ctx, id, "snoozed", lambda tx, now: alerts.snooze(tx, id, ctx.user.name, until),
                               {"until": until.isoformat()})


async def _change_alert(ctx: Context, alert_id: int, event_name: str, change, detail: dict | None = None, *,
                        refuse=None) -> Reply:
    """Apply `change` to the alert (locked), edit its cards, audit it. `refuse(current, now)`, when
    given, may answer a sentence instead: then nothing changes and no card is touched."""
    store = _store(ctx)
    now = ctx.now()
    refusal: list[str] = []

    async def work(tx) -> tuple[Alert, dict[str, Any]] | None:
        current = await alerts.get(tx, alert_id, for_update_lock=True)
        if current is None:
            return None
        if ctx.activity_id and not await inbox.first_time(tx, f"activity:{ctx.activity_id}", now):
            return current, await card_of(tx, current, now)     # Teams redelivered the click: recorded once
        if refuse is not None and (answer := refuse(current, now)):
            refusal.append(answer)
            return current, {}
        changed = await change(tx, now)
        await _send_cards(tx, changed, now, dict(await alerts.cards(tx, changed.id)), {})
        event = Event.from_json(changed.event)
        await audit.append(tx, _entry(ctx, event_name, "alert", event.title,
                                      {"alert": changed.id, "key": changed.key, **(detail or {})},
                                      workspace=event.workspace))
        return changed, await card_of(tx, changed, now)

    done = await store.run_transaction(work)
    if done is None:
        raise UsageError(f"There is no alert #{alert_id}.")
    if refusal:
        return Reply(refusal[0])               # text only: a clicked card stays as it is
    if ctx.gate is not None:
        ctx.gate.wake_outbox()
    built = done[1]
    return Reply(text=built["fallbackText"], card=built)


def _entry(ctx: Context, event: str, action: str, target: str, detail: dict[str, Any], *,
           workspace: str = "") -> audit.AuditEntry:
    return audit.AuditEntry(at=ctx.now(), event=event, actor_id=ctx.user.id, actor_name=ctx.user.name,
                            actor_upn=ctx.user.upn, tenant_id=ctx.user.tenant_id, action=action,
                            workspace=workspace, target=target[:200], activity_id=ctx.activity_id, detail=detail)
