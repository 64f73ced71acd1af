"""`mlops-bot chat`: the same handler as in Teams, in a terminal; cards are shown as text.

Useful to try every command without Teams. You are a development user (not authenticated).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone
from typing import TextIO

from adapters.storage import StorageError, open_storage
from bot.app import build_handler, build_workspaces, thread_pools
from bot.handler import ChatHandler, FollowUps, Request
from bot.settings import Settings
from bot.scheduler import TERMINAL_CONVERSATION, follow_jobs
from commands.base.context import Reply, User
from commands.base.ui import INVISIBLE

PROMPT = "you> "
CONVERSATION = TERMINAL_CONVERSATION


class TerminalChat:
    def __init__(self, handler: ChatHandler, user: User, out: TextIO) -> None:
        self.handler = handler
        self.user = user
        self.out = out

    def say(self, reply: Reply) -> None:
        print_reply(reply, self.out)

    async def ask(self, text: str) -> Reply:
        reply = await self.handler.handle(Request(self.user, CONVERSATION, text=text))
        self.say(reply)
        return reply


def print_reply(reply: Reply, out: TextIO) -> None:
    """The reply's text: for a card, its whole plain-text rendering (without the zero-width
    spaces that keep untrusted text inert in Teams: a terminal renders no markdown)."""
    words = reply.text.replace(INVISIBLE, "")
    print("\n".join(f"bot> {line}" if i == 0 else f"     {line}"
                    for i, line in enumerate(words.splitlines() or [""])), file=out, flush=True)


async def run_chat(settings: Settings, *, user_name: str, reset_demo: bool = False,
                   stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    pools = thread_pools(settings)
    workspaces = build_workspaces(settings, pools, reset_demo=reset_demo)
    storage = open_storage(settings.effective_storage_url, audit_key=settings.audit_key_bytes())       # the same approvals and audit as the bot
    await storage.open()
    background = FollowUps()             # the outcomes of long changes, printed when Azure ML is done

    async def print_outcome(reply: Reply) -> None:
        print_reply(reply, out)
    handler, _ = build_handler(settings, workspaces, storage, clock=lambda: datetime.now(timezone.utc),
                               spawn=lambda outcome: background.schedule(outcome, print_outcome))
    chat = TerminalChat(handler, User(id="local-developer", name=user_name), out)
    print(f"MLOps bot, workspace {workspaces.default.name} ({workspaces.default.environment}). "
          "Type `help`, or `quit` to leave.", file=out, flush=True)
    loop = asyncio.get_running_loop()
    jobs = loop.create_task(report_ended_jobs(storage, workspaces, chat))
    try:
        while True:
            if stdin.isatty():
                print(PROMPT, end="", file=out, flush=True)
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            line = line.strip()
            if line in ("quit", "exit"):
                break
            if line:
                await chat.ask(line)
        await background.drain(timeout=30)
    finally:
        jobs.cancel()
        await asyncio.gather(jobs, return_exceptions=True)
        await storage.close()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
    return 0


async def report_ended_jobs(storage, workspaces, chat: TerminalChat, *, every: float = 5.0) -> None:
    """Print the end of the jobs started in this terminal while the chat is open. Their watches are
    stored, so a job still running when you leave is reported in the next terminal chat."""
    async def say(reply: Reply) -> None:
        chat.say(reply)
    while True:
        await asyncio.sleep(every)
        try:
            await follow_jobs(storage, workspaces, owner=f"terminal-{os.getpid()}", clock=lambda: datetime.now(timezone.utc),
                              conversation_id=CONVERSATION, deliver=say)
        except StorageError as error:
            print(f"(could not look at the jobs started here: {error})", file=chat.out, flush=True)
