"""Messages the bot gave up on: list them, send them again (admins only; issue 17).

The outbox (bot/outbox.py) retries every transient failure until an item's deadline
(MLOPSBOT_OUTBOX_DEADLINE_HOURS) and gives up at once on a permanent one (a 4xx other than 408,
412 and 429); given-up items stay in storage as `dead` until pruned.

    outbox dead          list them: id, conversation, age, why
    outbox retry 12      send item 12 again (fresh deadline)
    outbox retry all     send every given-up item again, except to conversations the bot was removed from

A retry is recorded in the audit trail. Items for a conversation the bot was removed from (403/404,
marked gone) are not retried: they would be settled dead again without a send until someone adds
the bot back (any message from there clears the mark).
"""

from __future__ import annotations

from adapters.storage import audit, conversations, outbox
from adapters.storage.outbox import OutboxItem
from commands.base.context import Context, Reply, Role
from commands.base.registry import Arg, UsageError, command, one_of
from commands.base.ui import card, columns, limited, plain, reply, text, when

ACTIONS = ("dead", "retry")
PREVIEW_CHARS = 80


def _store(ctx: Context):
    if ctx.store is None:
        raise UsageError("The outbox is not available here.")
    return ctx.store


def _preview(item: OutboxItem) -> str:
    payload = item.payload
    words = str(payload.get("text") or "").strip().splitlines()
    if words:
        first = words[0]
    else:
        content = ((payload.get("card") or {}).get("body") or [{}])[0]
        first = str(content.get("text") or "a card") if isinstance(content, dict) else "a card"
    return first if len(first) <= PREVIEW_CHARS else first[:PREVIEW_CHARS - 1] + "…"


@command("outbox", Arg("action", type=one_of(ACTIONS, "action"), metavar="|".join(ACTIONS),
                      help="dead (list the given-up messages) or retry"),
         Arg("which", nargs="?", help="for retry: an item id from `outbox dead`, or all", metavar="id|all"),
         phrases=("outbox", "undelivered messages", "given up messages", "dead letters", "failed deliveries", "resend messages",
                  "not delivered"),
         summary="List the messages the bot gave up delivering, or send them again (admins only).",
         role=Role.ADMIN, example="outbox retry all", uses_workspace=False)
async def outbox_command(ctx: Context, action: str, which: str | None) -> Reply:
    store = _store(ctx)
    if action == "dead":
        if which is not None:
            raise UsageError("`outbox dead` takes no argument; `outbox retry ‹id|all›` sends again.")
        return await _dead(ctx, store)
    if which is None:
        raise UsageError("Say which: `outbox retry ‹id›` (an id from `outbox dead`) or `outbox retry all`.")
    if which.lower() == "all":
        return await _retry(ctx, store, None)
    if not which.isdigit():
        raise UsageError(f"'{which}' is not an outbox item id (a number from `outbox dead`) or all.")
    return await _retry(ctx, store, int(which))


async def _dead(ctx: Context, store) -> Reply:
    async def read(tx):
        items = await outbox.find_items(tx, state=outbox.DEAD)
        gone = {i.conversation_id for i in items if await conversations.is_gone(tx, i.conversation_id)}
        return items, gone
    items, gone = await store.run_transaction(read, write=False)
    if not items:
        return Reply("Nothing given up: everything the bot had to say was delivered, or is still being tried.")
    items = sorted(items, key=lambda i: i.id, reverse=True)

    def row(item: OutboxItem) -> dict:
        where = plain(item.conversation_id) + (" (the bot was removed from it)" if item.conversation_id in gone else "")
        return columns([text(f"**#{item.id}** {plain(_preview(item))}", wrap=True),
                        text(f"to {where}, queued {when(item.created_at)}, {item.attempts} attempt(s)",
                             subtle=True, spacing="None"),
                        text(plain(item.last_error or "no reason recorded"), subtle=True, spacing="None")],
                       widths=["stretch"])

    body = limited(items, row, noun="given-up message")
    body.append(text("`outbox retry ‹id›` or `outbox retry all` sends them again.", subtle=True))
    return reply(card(f"Given-up messages: {len(items)}", body))


async def _retry(ctx: Context, store, item_id: int | None) -> Reply:
    now = ctx.now()

    async def work(tx) -> tuple[list[int], list[OutboxItem], str]:
        candidates = await outbox.find_items(tx, state=outbox.DEAD)
        if item_id is not None:
            candidates = [i for i in candidates if i.id == item_id]
            if not candidates:
                found = await outbox.get_item(tx, item_id)
                return [], [], ("no such outbox item" if found is None else f"it is {found.state}, not given up")
        skipped = [i for i in candidates if await conversations.is_gone(tx, i.conversation_id)]
        chosen = [i.id for i in candidates if i not in skipped]
        revived = await outbox.revive(tx, chosen, now=now)
        if revived:
            await audit.append(tx, audit.AuditEntry(
                at=now, event="outbox_retried", actor_id=ctx.user.id, actor_name=ctx.user.name,
                actor_upn=ctx.user.upn, tenant_id=ctx.user.tenant_id, action="outbox",
                target=f"outbox items {', '.join(f'#{i}' for i in revived)}", before={"state": "dead"},
                after={"state": "pending"}, activity_id=ctx.activity_id))
        return revived, skipped, ""

    revived, skipped, problem = await store.run_transaction(work)
    if problem:
        raise UsageError(f"Cannot retry #{item_id}: {problem}. `outbox dead` lists the given-up messages.")
    if revived and ctx.gate is not None:
        ctx.gate.wake_outbox()
    lines = []
    if revived:
        lines.append(f"Sending {_count(revived)} again: {', '.join(f'#{i}' for i in revived)}. "
                     "Each gets a fresh deadline. Recorded in the audit trail.")
    elif not skipped:
        lines.append("Nothing to send again: no message has been given up.")
    if skipped:
        lines.append(f"Not retried: {', '.join(f'#{i.id}' for i in skipped)}, for conversations the bot was "
                     "removed from. Add the bot back there (any message from there clears the mark), then retry.")
    return Reply(" ".join(lines))


def _count(ids: list[int]) -> str:
    return "1 message" if len(ids) == 1 else f"{len(ids)} messages"
