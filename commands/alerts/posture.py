"""`posture [--workspace NAME]`: each configured workspace against the production security checklist,
and posture changes as news (issue 22).

    posture                       # every configured workspace
    posture --workspace ml-prod

Each line is pass, fail or cannot tell (with why: a read the bot's identity may not make names the
RBAC action it lacks), the checklist item in the seed's words, what was seen and the one-line fix;
a failing line says since when it fails. The checklist itself is adapters.posture.evaluate, over
the reads of the port's `security_posture`.

Every scan, typed or scheduled, is remembered (adapters.storage.posture): a line that goes from pass
to fail is news, published as a `posture` alert (commands.alerts.alerts.publish: the subscribed
conversations get a card through the outbox, in the same transaction that records the change), and
listed in the digest's "Needs attention"; a line that passes again resolves its alert (the card is
edited, nothing new is posted). The scheduler (bot/scheduler.py) scans each workspace every
SCAN_EVERY while some conversation subscribes to posture (`subscribe posture`), one replica per
period (a compare-and-set in storage); each digest scans its workspace too (commands/digests/digest.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from adapters.azureml.events import FIRED, RESOLVED, Event
from adapters.posture import CHECKLIST, FAIL, PASS, STATUS_WORDS, UNKNOWN, PostureCheck, evaluate
from adapters.service import ServiceError
from adapters.storage import posture as stored
from adapters.storage import Storage, subscriptions
from commands.alerts.alerts import publish
from commands.base.context import Context, Reply, UnknownWorkspace, Workspaces, workspace_line
from commands.base.registry import Arg, UsageError, command
from commands.base.ui import MAX_CARD_BYTES, card, plain, reply, section, text, when
from adapters.nonblocking import NonBlockingService

log = logging.getLogger(__name__)

SCAN_EVERY = timedelta(hours=1)       # the scheduler's scan of each workspace, while someone subscribes
MAX_PASSING_NAMES = 4                 # passing lines of one item are summed up, naming this many
ICONS = {PASS: "✅", FAIL: "❌", UNKNOWN: "❔"}


@dataclass(frozen=True)
class Line:
    check: PostureCheck
    failing_since: datetime | None = None     # when it last became fail (stored), for failing lines
    news: bool = False                         # it turned from pass to fail in this scan
    never_passed: bool = False                 # failing since the first time the bot saw it


@dataclass(frozen=True)
class WorkspacePosture:
    name: str
    environment: str
    lines: tuple[Line, ...] = ()
    unreadable: str = ""                       # why nothing could be read at all

    def count(self, status: str) -> int:
        return sum(1 for line in self.lines if line.check.status == status)


# ---------------------------------------------------------------- scanning and remembering


async def scan(ml: NonBlockingService) -> list[PostureCheck]:
    """The checklist for one workspace (a NonBlockingService). ServiceError if it cannot be read at all."""
    return evaluate(await ml.security_posture())


def posture_event(workspace: str, check: PostureCheck, state: stored.CheckState, *, recovered: bool = False) -> Event:
    """The alert of one line that turned to fail (or passes again: `recovered`)."""
    at = state.since.strftime("%Y-%m-%dT%H:%M:%SZ")
    endpoint = check.target if check.check.startswith("endpoint-") else ""
    if recovered:
        title = f"Posture: {check.item} passes again for {check.subject}"
    else:
        title = f"Posture: {check.item} now fails for {check.subject}"
    facts = [("Checklist item", check.item), ("Resource", check.subject), ("Found", check.finding)]
    if not recovered:
        facts += [("Failing since", when(state.known_since)), ("Fix", check.fix)]
    return Event(id=f"posture:{workspace}:{check.key}:{at}", kind="posture", type="posture.CheckChanged",
                 key=f"posture:{workspace}:{check.key}", status=RESOLVED if recovered else FIRED, title=title,
                 source="posture", workspace=workspace, endpoint=endpoint, time=at,
                 summary="It passed before." if not recovered else "", facts=tuple(facts))


async def remember(store: Storage, workspace: str, checks: list[PostureCheck], now: datetime
                   ) -> tuple[dict[str, stored.CheckState], set[str], int]:
    """Record this scan and publish its news, in one transaction: (states by key, keys that turned
    to fail now, alert cards queued)."""
    by_key = {c.key: c for c in checks}
    # a whole read that failed ("compute-ssh" without a target): none of that family's lines is known gone
    keep = sorted({c.check.split("-", 1)[0] + "-" for c in checks if c.status == UNKNOWN and not c.target
                   and not c.check.startswith("workspace-")})

    async def work(tx) -> tuple[dict[str, stored.CheckState], set[str], int]:
        changes = await stored.record(tx, workspace, [(c.key, c.check, c.status, c.item, c.finding) for c in checks],
                                      now, keep=keep)
        cards = 0
        for change in changes:
            if change.news or change.recovered:
                cards += await publish(tx, posture_event(workspace, by_key[change.key], change.state,
                                                         recovered=change.recovered), now)
        return await stored.states(tx, workspace), {c.key for c in changes if c.news}, cards

    return await store.run_transaction(work)


def _lines(checks: list[PostureCheck], states: dict[str, stored.CheckState], news: set[str]) -> tuple[Line, ...]:
    out = []
    for c in checks:
        state = states.get(c.key)
        failing = state is not None and state.known == FAIL and c.status == FAIL
        out.append(Line(c, state.known_since if failing else None, c.key in news,
                        never_passed=failing and state.turned_failing_at is None))
    return tuple(out)


async def check_workspace(ml: NonBlockingService, store: Storage, now: datetime) -> tuple[WorkspacePosture, int]:
    """Scan one workspace, remember it (when there is a store) and build its part of the card."""
    try:
        checks = await scan(ml)
    except ServiceError as error:
        return WorkspacePosture(ml.name, ml.environment, unreadable=error.message), 0
    if store is None:
        return WorkspacePosture(ml.name, ml.environment, _lines(checks, {}, set())), 0
    states, news, cards = await remember(store, ml.name, checks, now)
    return WorkspacePosture(ml.name, ml.environment, _lines(checks, states, news)), cards


async def scan_due(store: Storage, workspaces: Workspaces, *, owner: str, clock: Callable[[], datetime],
                   every: timedelta = SCAN_EVERY, wake: Callable[[], None] | None = None) -> int:
    """The scheduler's pass: scan each workspace whose scan is due, while a conversation subscribes
    to posture (for it, or for every workspace); one replica per period. Returns alert cards queued."""
    now = clock()
    async def subscribed(tx) -> list[subscriptions.Subscription]:
        return await subscriptions.of_kind(tx, "posture")
    wanted = await store.run_transaction(subscribed, write=False)
    if not wanted:
        return 0
    queued = 0
    for ml in workspaces:
        if not any(not s.workspace or s.workspace.lower() == ml.name.lower() for s in wanted):
            continue
        if not await store.run_transaction(functools.partial(stored.claim_scan, workspace=ml.name, owner=owner,
                                                             now=now, every=every)):
            continue
        try:
            checks = await scan(ml)
        except ServiceError as error:
            log.info("posture of %s: cannot read it now (%s); next scan in %s", ml.name, error.message, every)
            continue
        except Exception:  # noqa: BLE001 - one workspace must not stop the others
            log.exception("posture of %s: the scan failed", ml.name)
            continue
        _, news, cards = await remember(store, ml.name, checks, now)
        queued += cards
        if news:
            log.info("posture of %s: %d checks turned to fail, %d cards queued", ml.name, len(news), cards)
    if queued and wake is not None:
        wake()
    return queued


# ---------------------------------------------------------------- the card


def posture_card(reports: list[WorkspacePosture], now: datetime) -> dict[str, Any]:
    """The checklist of each workspace, failing lines first within each item; at most MAX_CARD_BYTES."""
    # what gives way first when the card grows too big: the names of passing resources, then the
    # fixes, then failing lines beyond the first few of each item (an "N more" line says so)
    for passing_names, show_fixes, per_item in ((MAX_PASSING_NAMES, True, None), (0, True, None),
                                                (0, False, None), (0, False, 5), (0, False, 2), (0, False, 1)):
        built = _build(reports, now, passing_names, show_fixes, per_item)
        if len(json.dumps(built, ensure_ascii=False).encode("utf-8")) <= MAX_CARD_BYTES:
            break
    return built


def _build(reports: list[WorkspacePosture], now: datetime, passing_names: int, show_fixes: bool,
           per_item: int | None) -> dict[str, Any]:
    body = []
    for report in reports:
        body.append(section(workspace_line(report.name, report.environment)))
        if report.unreadable:
            body.append(text(f"{ICONS[UNKNOWN]} Cannot tell anything: {plain(report.unreadable)}", color="Warning"))
            continue
        counts = " · ".join(f"{report.count(s)} {STATUS_WORDS[s]}" for s in (FAIL, UNKNOWN, PASS))
        news = [line for line in report.lines if line.news]
        body.append(text(counts + (f" · {len(news)} turned to fail just now" if news else ""),
                         color="Attention" if report.count(FAIL) else "Good", spacing="None"))
        for item in CHECKLIST:
            lines = [line for line in report.lines if line.check.item == item]
            if not lines:
                continue
            body.append(text(f"**{item}**", spacing="Small"))
            shown = sorted((line for line in lines if line.check.status != PASS),
                           key=lambda line: ({FAIL: 0, UNKNOWN: 1}[line.check.status], line.check.subject))
            for line in shown[:per_item]:
                body += _line(line, show_fixes)
            if per_item is not None and len(shown) > per_item:
                body.append(text(f"… and {len(shown) - per_item} more not passing: `posture --workspace "
                                 f"{report.name}` in a smaller scope, or the portal", subtle=True, spacing="None"))
            passing = [line.check for line in lines if line.check.status == PASS]
            if passing:
                names = ", ".join(plain(c.subject) for c in passing[:passing_names])
                more = len(passing) - min(len(passing), passing_names)
                named = f": {names}" + (f" and {more} more" if more else "") if names else ""
                body.append(text(f"{ICONS[PASS]} {len(passing)} pass{named}", subtle=True, spacing="None"))
    body.append(text("Checked against the production security checklist from what Azure ML and Resource Manager "
                     "expose to the bot. `subscribe posture` posts a check that turns from pass to fail.",
                     subtle=True, size="Small", spacing="Medium"))
    title = "Security posture" + (f" · {len(reports)} workspaces" if len(reports) > 1 else "")
    return card(title, body, subtitle=f"As of {when(now)}")


def _line(line: Line, show_fixes: bool) -> list[dict[str, Any]]:
    c = line.check
    label = STATUS_WORDS[c.status]
    since = ""
    if line.failing_since:
        since = (f" (failing when first checked, {when(line.failing_since)})" if line.never_passed
                 else f" (failing since {when(line.failing_since)})")
    new = " — new" if line.news else ""
    head = text(f"{ICONS[c.status]} {label}{new} · {plain(c.subject)}: {plain(c.finding)}{since}",
                color="Attention" if c.status == FAIL else "Warning", spacing="None")
    out = [head]
    if show_fixes:
        out.append(text(f"Fix: {c.fix}", subtle=True, size="Small", spacing="None"))
    return out


# ---------------------------------------------------------------- the command


@command("posture", Arg("--workspace", help="only this workspace (default: every configured one)", metavar="NAME"),
         phrases=("posture", "security posture", "security checklist", "is it secure", "public network access", "security check", "hardening",
                  "workspace secure"),
         summary="Check each workspace against the production security checklist: pass, fail or cannot tell, "
                 "with the fix and since when a check fails.",
         example="posture --workspace ml-prod", uses_workspace=False)
async def posture(ctx: Context, workspace: str | None) -> Reply:
    try:
        targets = [ctx.workspaces.get(workspace)] if workspace else list(ctx.workspaces)
    except UnknownWorkspace as error:
        raise UsageError(str(error)) from None
    now = ctx.now()
    results = await asyncio.gather(*(check_workspace(ml, ctx.store, now) for ml in targets))
    if any(cards for _, cards in results) and ctx.gate is not None:
        ctx.gate.wake_outbox()
    return reply(posture_card([report for report, _ in results], now))


def digest_lines(states: list[stored.CheckState]) -> list[str]:
    """The digest's words for the lines that turned to fail: "<item>: <subject> (<finding>)"."""
    out = []
    for s in states:
        check, _, target = s.key.partition(":")
        subject = PostureCheck(check, target, s.item, s.status, s.finding, "").subject
        out.append(f"{s.item}: {subject} ({s.finding})")
    return out


__all__ = ["SCAN_EVERY", "Line", "WorkspacePosture", "check_workspace", "digest_lines", "posture", "posture_card",
           "posture_event", "remember", "scan", "scan_due"]
