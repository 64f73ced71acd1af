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

The lifecycle (PagerDuty's: open → acknowledged → resolved, with snoozes, an assignee and notes):
`alerts` lists them with who is on each (everyone may look); `resolve`, `unsnooze`, `note` and
`assign` need the Operator role, are audited (who, when) and edit every copy of the alert's card.
Escalation: a subscription may name people (`--notify @person`) and a time (`--escalate-after
15m`); an alert still firing and unacknowledged that long after it fired is posted again in that
conversation with those people @mentioned, once per period (`escalate`, run by the scheduler loop,
through the outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from adapters.azureml.events import INFO, KINDS, RESOLVED, SEVERITIES, Event
from adapters.service import ServiceError
from adapters.storage import alerts, audit, conversations, inbox, outbox, subscriptions, traffic_history
from adapters.storage import people as people_table
from adapters.storage.alerts import Alert
from adapters.storage.subscriptions import NewSubscription, Subscription
from commands.admin.admin import _known_as, _person
from commands.alerts.alert_card import AlertState, Undo, alert_card, worst_first
from commands.base.context import Context, Reply, Role, User, Workspaces
from commands.resources.endpoints import health_headline
from commands.changes.policy import parse_duration
from commands.base.registry import MAX_ID, Arg, Forbidden, UsageError, command, one_of, suggest, whole_number
from commands.base.ui import MAX_ROWS, as_text, button, card, columns, limited, local_time, plain, reply, section, text, when

log = logging.getLogger(__name__)

alert_number = whole_number(1, MAX_ID, "an alert id")
SUBSCRIPTION_ID = whole_number(1, MAX_ID, "a subscription number")
SUBSCRIPTION_KINDS = KINDS
MAX_SNOOZE = timedelta(days=7)
DEFAULT_SNOOZE = timedelta(hours=24)
MAX_FILTER_CHARS = 200
MAX_NOTE_CHARS = 1000


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


def state_of(alert: Alert, notes: list[alerts.Note] | None = None) -> AlertState:
    last = notes[-1] if notes else None
    return AlertState(id=alert.id, status=alert.status, fired_count=alert.fired_count, first_at=alert.first_at,
                      history=tuple(alert.history), acknowledged_by=alert.acknowledged_by,
                      acknowledged_at=alert.acknowledged_at, snoozed_by=alert.snoozed_by,
                      snoozed_until=alert.snoozed_until, history_at=tuple(alert.history_at),
                      assignee=alert.assignee_name, resolved_by=alert.resolved_by, resolved_at=alert.resolved_at,
                      last_note=(last.author_name, last.at, last.body) if last else None, notes=len(notes or ()))


async def rollback_target(tx, event: Event) -> Undo | None:
    """The traffic change a Rollback button on the event's card would undo: the newest one the bot
    recorded of the event's endpoint, when it has a split to restore. None: no Rollback button
    (it could only answer "Nothing to roll back")."""
    if not (event.endpoint and event.workspace) or event.kind not in ("drift", "alerts"):
        return None
    newest = await traffic_history.latest(tx, event.workspace, event.endpoint)
    if newest is None or not newest.before:
        return None
    return Undo(newest.id, newest.at, dict(newest.before), dict(newest.after))


async def card_of(tx, alert: Alert, now: datetime, health: str = "") -> dict[str, Any]:
    event = Event.from_json(alert.event)
    state = replace(state_of(alert, await alerts.notes(tx, alert.id)), health=health)
    return alert_card(event, state, now, await rollback_target(tx, event))


async def payload_of(tx, alert: Alert, now: datetime, health: str = "") -> dict[str, Any]:
    built = await card_of(tx, alert, now, health)
    return {"text": built["fallbackText"], "card": built}


HEALTH_SECONDS = 3.0          # an alert is not held back longer than this for the endpoint's health


async def endpoint_health(workspaces: Workspaces, event: Event, limits: Any) -> str:
    """The event's endpoint's health now, in one line (the endpoint card's judgement), for its
    alert card; "" when the event names no endpoint of a configured workspace, or the workspace
    does not answer within HEALTH_SECONDS (the alert goes out without it)."""
    if workspaces is None or not (event.endpoint and event.workspace) or event.kind not in ("drift", "alerts"):
        return ""
    try:
        ws = workspaces.get(event.workspace)
        if ws.name.lower() != event.workspace.lower():
            return ""

        async def metrics():
            try:
                return await ws.endpoint_metrics(event.endpoint)
            except ServiceError:
                return None
        found, figures = await asyncio.wait_for(asyncio.gather(ws.get_endpoint(event.endpoint), metrics()),
                                                HEALTH_SECONDS)
    except Exception as error:  # noqa: BLE001 - health is extra: an alert never waits on, or fails for, it
        log.info("alert on %s: its endpoint's health could not be read (%r)", event.endpoint, error)
        return ""
    return health_headline(found, figures, limits)[0]


async def publish(tx, event: Event, now: datetime, *, health: str = "") -> int:
    """Record the event's alert and enqueue its card for every matching conversation; how many items.
    `health`: the endpoint's health now (`endpoint_health`, read before the transaction). A figure
    that does not say its previous value takes it from the alert's last firing, if it had one."""
    event = await _with_previous(tx, event)
    worst = worst_first(event.figures)
    alert, _ = await alerts.record(tx, event.key, event.kind, event.status, event.to_json(),
                                   worst[0].value if worst else None, now, fired=event.status not in (RESOLVED, INFO))
    wanted = {}
    for subscription in await subscriptions.of_kind(tx, event.kind):
        if matches(subscription, event):
            wanted.setdefault(subscription.conversation_id, subscription.tenant_id)
    shown = dict(await alerts.cards(tx, alert.id))
    return await _send_cards(tx, alert, now, shown, wanted, health)


async def _with_previous(tx, event: Event) -> Event:
    if not event.figures or all(f.previous is not None for f in event.figures):
        return event
    before = await alerts.by_key(tx, event.key)
    if before is None:
        return event
    earlier = {(f.feature, f.metric): f.value for f in Event.from_json(before.event).figures}
    return replace(event, figures=tuple(f if f.previous is not None or (f.feature, f.metric) not in earlier
                                        else replace(f, previous=earlier[(f.feature, f.metric)])
                                        for f in event.figures))


async def _send_cards(tx, alert: Alert, now: datetime, shown: dict[str, str], wanted: dict[str, str],
                      health: str = "") -> int:
    """Edit the card in each conversation that has one; post one where `wanted` and none yet."""
    payload = await payload_of(tx, alert, now, health)
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


async def escalate(tx, now: datetime) -> int:
    """Re-post every alert still firing that nobody acknowledged within its subscriptions'
    `escalate_after`, @mentioning the people they name (their `notify`); once per alert per period:
    the alert's `escalated_at` moves by compare-and-set, so one replica posts it. Snoozed alerts
    wait. Returns how many messages were queued (the scheduler loop calls this on every pass)."""
    watching = [s for kind in SUBSCRIPTION_KINDS if kind != "approvals"
                for s in await subscriptions.of_kind(tx, kind) if s.escalate_after > 0 and s.notify]
    if not watching:
        return 0
    queued = 0
    for alert in await alerts.unacknowledged_firing(tx):
        if alert.snoozed(now):
            continue
        event = Event.from_json(alert.event)
        wanted = [s for s in watching if matches(s, event)]
        if not wanted:
            continue
        period = timedelta(seconds=min(s.escalate_after for s in wanted))
        since = alert.escalated_at or alert.fired_at or alert.first_at
        if now - since < period:
            continue
        if not await alerts.mark_escalated(tx, alert.id, now, previous=alert.escalated_at):
            continue                                  # another replica escalated it
        waited = now - (alert.fired_at or alert.first_at)
        by_conversation: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        for subscription in wanted:
            tenant, people = by_conversation.setdefault(subscription.conversation_id, (subscription.tenant_id, []))
            people += [p for p in subscription.notify if p not in people]
        for conversation_id, (tenant, people) in sorted(by_conversation.items()):
            if await conversations.is_gone(tx, conversation_id):
                continue
            payload = escalation_payload(alert, event, people, waited)
            key = f"escalate:{alert.id}:{encode_moment(now)}:{conversation_id}"
            if await outbox.enqueue(tx, conversation_id, payload, dedupe_key=key, tenant_id=tenant,
                                    now=now) is not None:
                queued += 1
    return queued


def encode_moment(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def escalation_payload(alert: Alert, event: Event, people: list[tuple[str, str]], waited: timedelta) -> dict:
    """A short card that @mentions `people` (Teams mentions in a card: `msteams.entities`, each
    `<at>name</at>` in the text matching one entity; the id may be an Entra object id)."""
    shown = [(user_id, plain(name) or "someone") for user_id, name in people]
    mentions = ", ".join(f"<at>{name}</at>" for _, name in shown)
    minutes = int(waited.total_seconds() // 60)
    built = card(f"⏰ Alert #{alert.id} is unacknowledged after {_duration(minutes * 60) if minutes else 'a moment'}",
                 [text(f"{mentions}: {plain(event.title)} is still firing and nobody has acknowledged it."),
                  text(f"Fired at {local_time(alert.fired_at or alert.first_at)}.", subtle=True)],
                 actions=[button("Acknowledge", "acknowledge", str(alert.id)),
                          button("Show", "alerts", str(alert.id))])
    built["msteams"] = {**built.get("msteams", {}), "entities": [
        {"type": "mention", "text": f"<at>{name}</at>", "mentioned": {"id": user_id, "name": name}}
        for user_id, name in shown]}
    return {"text": built["fallbackText"], "card": built}


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
    said = f"#{subscription.id} {subscription.kind}" + (f" ({', '.join(filters)})" if filters else " (everything)")
    if subscription.escalate_after and subscription.notify:
        said += (f"; unacknowledged after {_duration(subscription.escalate_after)}: "
                 + ", ".join(name for _, name in subscription.notify))
    return said


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


@command("subscribe", Arg("kind", type=one_of(SUBSCRIPTION_KINDS, "kind"), metavar="|".join(SUBSCRIPTION_KINDS),
                          help="what to hear about"),
         Arg("name", nargs="?", help="a model (drift, models) or endpoint (alerts) to hear about: "
                                     "`subscribe drift fraud-model` is `subscribe drift --model fraud-model`"),
         Arg("--workspace", help="only events of this workspace", metavar="W"),
         Arg("--model", help="only events about this model", metavar="M"),
         Arg("--endpoint", help="only events about this endpoint", metavar="E"),
         Arg("--severity", type=one_of(SEVERITIES, "severity"), metavar="S",
             help="only alerts at least this severe (Sev0 most severe .. Sev4; alerts and jobs only)"),
         Arg("--escalate-after", metavar="DURATION",
             help="re-post an alert nobody acknowledged this long after it fired, @mentioning --notify "
                  "(e.g. 15m; default 15m when --notify is given, else off; `off` turns it off)"),
         Arg("--notify", nargs="+", metavar="PERSON", help="who to @mention when an alert escalates"),
         phrases=("subscribe", "notify", "alert me", "tell me when", "let us know", "post alerts", "watch for",
                  "follow", "keep posted", "send alerts", "notify us about", "notify about"),
         summary="Post drift alerts, Azure Monitor alerts, job, model, approval or security posture events "
                 "in this chat "
                 "(Operators by default; the policy's [subscriptions] role decides).",
         example="subscribe drift fraud-model --escalate-after 15m --notify @Bob", uses_workspace=False,
         group="set up", common=True)
async def subscribe(ctx: Context, kind: str, name: str | None, workspace: str | None, model: str | None,
                    endpoint: str | None, severity: str | None, escalate_after: str | None,
                    notify: list[str] | None) -> Reply:
    model, endpoint = _positional(kind, name, model, endpoint)
    _applies(kind, model=model, endpoint=endpoint, severity=severity)
    escalation = _escalation(ctx, escalate_after, notify)
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
    after, people = escalation if escalation is not None else (0, ())
    new = NewSubscription(where_to, kind, tenant_id=ctx.user.tenant_id, workspace=workspace,
                          model=model, endpoint=endpoint,
                          severity=severity or "", created_by_id=ctx.user.id, created_by_name=ctx.user.name,
                          escalate_after=after, notify=people)
    now = ctx.now()

    async def work(tx) -> tuple[Subscription, bool]:
        await _reach_channel(tx, ctx, where_to)
        found, created = await subscriptions.add(tx, new, now)
        if created:
            await audit.append(tx, _entry(ctx, "subscribed", "subscribe", describe(found),
                                          {"conversation": where_to, "subscription": found.id}))
        elif escalation is not None and (found.escalate_after, found.notify) != escalation:
            found = await subscriptions.set_escalation(tx, found.id, after, people)
            await audit.append(tx, _entry(ctx, "subscription changed", "subscribe", describe(found),
                                          {"conversation": where_to, "subscription": found.id}))
            return found, True
        return found, created

    found, created = await store.run_transaction(work)
    if not created:
        return Reply(f"{where_words(ctx).capitalize()} already has that subscription: {describe(found)}.")
    where = where_words(ctx)
    return Reply(f"Subscribed {where}: {describe(found)}. `subscriptions` lists them; "
                 f"`unsubscribe {found.id}` stops it." + "".join(f" {note}" for note in unchecked))


def where_words(ctx: Context) -> str:
    return {"personal": "this chat", "groupChat": "this group chat", "channel": "this channel"}.get(
        ctx.conversation_kind, "this conversation")


POSITIONAL = {"drift": "model", "models": "model", "alerts": "endpoint"}    # kind -> what its bare name names
APPLIES = {"model": ("drift", "jobs", "models"), "endpoint": ("drift", "alerts", "jobs", "models"),
           "severity": ("alerts", "jobs")}     # which kinds of events carry the field a filter compares
DEFAULT_ESCALATION = timedelta(minutes=15)
MIN_ESCALATION = timedelta(minutes=1)


def _positional(kind: str, name: str | None, model: str | None, endpoint: str | None) -> tuple[str | None, str | None]:
    """`subscribe drift fraud-model`: the bare name is the model (drift, models) or endpoint (alerts)."""
    if not name:
        return model, endpoint
    what = POSITIONAL.get(kind)
    if what is None:
        raise UsageError(f"`subscribe {kind}` takes no name; filter with --workspace"
                         + (" or --severity" if kind == "jobs" else "") + f" (e.g. `subscribe {kind} --workspace "
                         "ml-prod`).")
    given = model if what == "model" else endpoint
    if given and given != name:
        raise UsageError(f"Two {what}s given ('{name}' and --{what} {given}); give one.")
    return (name, endpoint) if what == "model" else (model, name)


def _applies(kind: str, **filters: str | None) -> None:
    """Refuse a filter that events of `kind` never carry: it would silently match nothing."""
    for name, value in filters.items():
        if value and kind not in APPLIES[name]:
            carriers = ", ".join(APPLIES[name])
            raise UsageError(f"--{name} cannot apply to {kind}: {kind} events carry no {name}, so the subscription "
                             f"would never post anything. --{name} filters {carriers}.")


def _escalation(ctx: Context, after: str | None, notify: list[str] | None) -> tuple[int, tuple] | None:
    """(seconds, ((user id, name), ...)) when the command sets escalation, else None (unchanged)."""
    if after is None and not notify:
        return None
    if after is not None and after.strip().lower() in ("off", "never", "0"):
        return 0, ()
    try:
        length = parse_duration(after) if after else DEFAULT_ESCALATION
    except ValueError as error:
        raise UsageError(f"--escalate-after: {error} (e.g. `--escalate-after 15m`).") from None
    if not MIN_ESCALATION <= length <= MAX_SNOOZE:
        raise UsageError("--escalate-after must be between 1 minute and 7 days.")
    people = tuple(dict.fromkeys((p.id, p.name) for p in (_person(ctx, word) for word in notify or ())))
    if not people:
        raise UsageError("--escalate-after needs someone to tell: add `--notify @person`.")
    return int(length.total_seconds()), people


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
         uses_workspace=False, group="set up")
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
        return Reply(f"{where_words(ctx).capitalize()} has no subscription {which}. `subscriptions` lists them.")
    return Reply("Removed " + "; ".join(describe(s) for s in removed) + ".")


@command("subscriptions",
         phrases=("subscriptions", "what are we subscribed to", "what am i subscribed to", "which alerts",
                  "notifications", "what do we follow"),
         summary="List what this chat or channel is subscribed to.", example="subscriptions",
         uses_workspace=False, group="set up")
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
    return reply(card(f"Subscriptions of {where_words(ctx)}", body))


# ---------------------------------------------------------------- acting on an alert

@command("acknowledge", Arg("id", type=alert_number, help="the alert number, as its card shows it"),
         phrases=("acknowledge", "ack", "i'm on it", "on it", "take alert", "claim alert"),
         summary="Acknowledge an alert: every copy of its card shows who is on it.", role=Role.OPERATOR,
         example="acknowledge 7", uses_workspace=False, group="alerts", common=True)
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


@command("snooze", Arg("id", type=alert_number, help="the alert number"),
         Arg("duration", nargs="?", help="how long, like 4h or 2d (default 24h, at most 7d)"),
         phrases=("snooze", "silence", "quiet", "hush", "mute alert"),
         summary="Snooze an alert: its cards stay up to date but nothing new is posted.", role=Role.OPERATOR,
         example="snooze 7 24h", uses_workspace=False, group="alerts")
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


@command("unsnooze", Arg("id", type=alert_number, help="the alert number"),
         phrases=("unsnooze", "unmute", "end the snooze", "stop snoozing", "wake alert"),
         summary="End an alert's snooze: new firings are posted again.", role=Role.OPERATOR,
         example="unsnooze 7", uses_workspace=False, group="alerts")
async def unsnooze(ctx: Context, id: int) -> Reply:
    def awake(current: Alert, now: datetime) -> str | None:
        return None if current.snoozed(now) else f"Alert #{current.id} is not snoozed."
    return await _change_alert(ctx, id, "unsnoozed", lambda tx, now: alerts.unsnooze(tx, id), refuse=awake)


@command("resolve", Arg("id", type=alert_number, help="the alert number"),
         phrases=("resolve", "close alert", "mark resolved", "it is fixed", "all clear on"),
         summary="Mark an alert resolved: every copy of its card says who resolved it and when.",
         role=Role.OPERATOR, example="resolve 7", uses_workspace=False, group="alerts", common=True)
async def resolve(ctx: Context, id: int) -> Reply:
    """A firing after this (Azure or a monitor fires again) reopens the alert as a new incident."""
    def done(current: Alert, now: datetime) -> str | None:
        if current.status != RESOLVED:
            return None
        by = f" by {current.resolved_by}" if current.resolved_by else " by its sender"
        return f"Alert #{current.id} is already resolved{by}" + (
            f" ({when(current.resolved_at)})." if current.resolved_at else ".")
    return await _change_alert(ctx, id, "resolved", lambda tx, now: alerts.resolve(tx, id, ctx.user.name, now),
                               refuse=done)


@command("note", Arg("id", type=alert_number, help="the alert number"),
         Arg("text", nargs="+", help="what you found or did"),
         phrases=("note", "add a note", "write a note", "leave a note", "comment on alert"),
         summary="Keep a note on an alert (who and when are recorded; its cards show the newest).",
         role=Role.OPERATOR, example="note 7 restarted the scorer, watching latency", uses_workspace=False,
         group="alerts")
async def note(ctx: Context, id: int, text: list[str]) -> Reply:
    body = " ".join(text).strip()
    if len(body) > MAX_NOTE_CHARS:
        raise UsageError(f"That note is too long ({len(body)} characters; at most {MAX_NOTE_CHARS}).")
    return await _change_alert(ctx, id, "noted",
                               lambda tx, now: alerts.add_note(tx, id, ctx.user.id, ctx.user.name, body, now),
                               {"note": body})


@command("assign", Arg("id", type=alert_number, help="the alert number"),
         Arg("person", help="an @mention (or an Entra object id)"),
         phrases=("assign", "put on alert", "hand alert", "give alert", "owner of alert"),
         summary="Put someone on an alert: `alerts` and its cards show who has it.", role=Role.OPERATOR,
         example="assign 7 @Bob", uses_workspace=False, group="alerts")
async def assign(ctx: Context, id: int, person: str) -> Reply:
    who = await _assignee(ctx, person)
    return await _change_alert(ctx, id, "assigned", lambda tx, now: alerts.assign(tx, id, who.id, who.name),
                               {"assignee": who.name, "assignee_id": who.id})


async def _assignee(ctx: Context, person: str) -> User:
    """An @mention or an object id as before; also yourself by your own name, and someone the bot
    has met by their exact display name when only one person has it (what a plain-language
    proposal carries: "assign alert 7 to me" -> `assign 7 "Dana Dev"`)."""
    if person in (ctx.user.id, ctx.user.name) and not any(p.name == person for p in ctx.mentioned):
        return ctx.user
    try:
        return _person(ctx, person) if ctx.store is None else await _known_as(ctx, _person(ctx, person))
    except UsageError:
        if ctx.store is None:
            raise
        found = await ctx.store.run_transaction(lambda tx: people_table.by_name(tx, person, ctx.user.tenant_id),
                                                write=False)
        if len(found) != 1:
            raise
        return User(id=found[0], name=person, tenant_id=ctx.user.tenant_id)


STATE_ICONS = {"open": "🔴", "acknowledged": "🟡", "snoozed": "💤", "resolved": "✅"}


@command("alerts", Arg("id", nargs="?", type=alert_number, help="one alert, with all its notes"),
         phrases=("alerts", "open alerts", "list alerts", "what is firing", "any alerts", "who is on", "incidents", "active alerts"),
         summary="List open, acknowledged, snoozed and resolved alerts, and who is on each.",
         example="alerts", uses_workspace=False, group="alerts", common=True)
async def alerts_(ctx: Context, id: int | None) -> Reply:
    store = _store(ctx)
    now = ctx.now()
    if id is not None:
        first = await store.run_transaction(lambda tx: alerts.get(tx, id), write=False)
        health = await endpoint_health(ctx.workspaces, Event.from_json(first.event), ctx.health) if first else ""

        async def one(tx):
            found = await alerts.get(tx, id)
            return (found, await card_of(tx, found, now, health), await alerts.notes(tx, id)) if found else None
        got = await store.run_transaction(one, write=False)
        if got is None:
            raise UsageError(f"There is no alert #{id}. `alerts` lists them.")
        found, built, kept = got
        if kept:
            built = {**built, "body": [*built["body"], section(f"Notes ({len(kept)})"),
                                       *[text(f"{local_time(n.at)} {plain(n.author_name)}: {plain(n.body)}")
                                         for n in kept[-MAX_ROWS:]]]}
            built["fallbackText"] = as_text(built)[:2000]
        return Reply(text=built["fallbackText"], card=built)
    found = await store.run_transaction(lambda tx: alerts.listed(tx), write=False)
    order = {"open": 0, "acknowledged": 1, "snoozed": 2, "resolved": 3}
    found.sort(key=lambda a: (order.get(a.state(now), 4), -a.updated_at.timestamp(), -a.id))

    def row(alert: Alert) -> dict:
        state = alert.state(now)
        event = Event.from_json(alert.event)
        on_it = {"open": alert.assignee_name and f"assigned to {plain(alert.assignee_name)}" or "nobody on it",
                 "acknowledged": f"{plain(alert.assignee_name or alert.acknowledged_by)} on it",
                 "snoozed": f"snoozed by {plain(alert.snoozed_by)} until {local_time(alert.snoozed_until)}",
                 "resolved": f"resolved by {plain(alert.resolved_by)}" if alert.resolved_by
                 else "resolved by its sender",
                 }[state]
        since = local_time(alert.fired_at or alert.first_at)
        line = f"{STATE_ICONS[state]} **#{alert.id}** {state} · {plain(event.title)} · since {since} · {on_it}"
        buttons = [button("Show", "alerts", str(alert.id))]
        if state == "open":
            buttons.append(button("Acknowledge", "acknowledge", str(alert.id)))
        elif state == "snoozed":
            buttons.append(button("Unsnooze", "unsnooze", str(alert.id)))
        return columns(text(line), {"type": "ActionSet", "actions": buttons}, widths=["stretch", "auto"])

    body = limited(found, row, noun="alert")
    if not found:
        body.append(text("No alerts yet. `subscribe drift` or `subscribe alerts` posts them in a chat.", subtle=True))
    counts = {s: sum(a.state(now) == s for a in found) for s in order}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    return reply(card(f"Alerts ({summary})", body))


async def _change_alert(ctx: Context, alert_id: int, event_name: str, change, detail: dict | None = None, *,
                        refuse=None) -> Reply:
    """Apply `change` to the alert (locked), edit its cards, audit it. `refuse(current, now)`, when
    given, may answer a sentence instead: then nothing changes and no card is touched."""
    store = _store(ctx)
    now = ctx.now()
    refusal: list[str] = []
    before = await store.run_transaction(lambda tx: alerts.get(tx, alert_id), write=False)
    health = await endpoint_health(ctx.workspaces, Event.from_json(before.event), ctx.health) if before else ""

    async def work(tx) -> tuple[Alert, dict[str, Any]] | None:
        current = await alerts.get(tx, alert_id, for_update_lock=True)
        if current is None:
            return None
        if ctx.activity_id and not await inbox.first_time(tx, f"activity:{ctx.activity_id}", now):
            return current, await card_of(tx, current, now, health)     # Teams redelivered the click: recorded once
        if refuse is not None and (answer := refuse(current, now)):
            refusal.append(answer)
            return current, {}
        changed = await change(tx, now)
        await _send_cards(tx, changed, now, dict(await alerts.cards(tx, changed.id)), {}, health)
        event = Event.from_json(changed.event)
        await audit.append(tx, _entry(ctx, event_name, "alert", event.title,
                                      {"alert": changed.id, "key": changed.key, **(detail or {})},
                                      workspace=event.workspace))
        return changed, await card_of(tx, changed, now, health)

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
