"""The labelled plain-language set (tests/fixtures/language/phrasings.txt) and a world to try it in.

Shared by tests/test_language.py (behaviour: shares, nothing changed) and bench/language.py (the
same figures plus timing). The world is the demo workspace and a real SQLite store, with the
clock stopped at the moment the set's windows were written for (Thursday 2026-11-26 09:00 UTC).
"""

from __future__ import annotations

import shlex
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService
from adapters.storage import open_storage
from bot.handler import ChatHandler, Request
from commands.catalog import catalog
from commands.base.context import Role, RoleBook, User, Workspaces
from commands.changes.kinds import CHANGE_KINDS
from commands.changes.gate import Gate
from commands.language.readings import is_change
from commands.changes.policy import parse_policy

# Tables that read commands write by design, whoever asks: the embedded workspace materialises the
# monitor runs that fell due when a monitor is first read (Azure runs them on its own clock), and
# `digest now` remembers what it reported so that the next digest can say what changed since.
# what reading writes: due monitor runs, digest snapshots, and the security posture's observations
# (the local workspace seeds its posture settings on the first read; `posture` records since when)
BOOKKEEPING = {"workspace.monitor_runs", "workspace.monitor_figures", "bot.digest_snapshots",
               "workspace.posture_settings", "bot.posture_checks", "bot.posture_transitions", "bot.posture_scans"}
PHRASINGS = Path(__file__).parent / "fixtures" / "language" / "phrasings.txt"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
USER = User(id="dana-1", name="Dana Dev", tenant_id="t1")


@dataclass(frozen=True)
class Case:
    persona: str
    text: str
    expected: str          # the command line, as the bot would print it
    command: str
    change: bool


def load(path: Path = PHRASINGS) -> list[Case]:
    registry = catalog()
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        persona, text, expected = (part.strip() for part in line.split("|", 2))
        words = shlex.split(expected)
        cmd = registry.find(words[0])
        if cmd is None:
            raise ValueError(f"{path.name}:{number}: no command '{words[0]}'")
        cmd.parse(words[1:])          # the expected command must itself be valid
        cases.append(Case(persona, text, line_of(words), cmd.name, is_change(cmd, words[1:])))
    return cases


def line_of(words: list[str]) -> str:
    return " ".join(f'"{w}"' if any(c.isspace() for c in w) else w for w in words)


class World:
    """The demo workspace, a store, the gate (every change direct: if anything ran, it would show)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pools = [ThreadPoolExecutor(max_workers=4), ThreadPoolExecutor(max_workers=4)]
        self.local = LocalWorkspace(directory / "workspace.db", clock=lambda: NOW)
        self.workspaces = Workspaces([NonBlockingService(self.local, name="ml-prod", environment="prod",
                                                         pool=self.pools[0], wait_pool=self.pools[1], timeout=30)])
        self.store = open_storage(f"sqlite:///{directory / 'bot.db'}")
        self.spawned: list[Any] = []
        roles = RoleBook(default=Role.ADMIN)
        self.gate = Gate(parse_policy('[[rule]]\nmode = "direct"\n', source="language set"), self.store, CHANGE_KINDS,
                         clock=lambda: NOW, roles=roles, spawn=self.spawned.append)
        self.handler = ChatHandler(catalog(), self.workspaces, roles, store=self.store, gate=self.gate,
                                   clock=lambda: NOW)
        self._turns = 0

    async def __aenter__(self) -> "World":
        await self.store.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for awaitable in self.spawned:
            await awaitable
        await self.store.close()
        self.local.close()
        for pool in self.pools:
            pool.shutdown(wait=True)

    async def say(self, text: str):
        self._turns += 1
        return await self.handler.handle(Request(USER, "conv-1", text=text, activity_id=f"turn-{self._turns}",
                                                 conversation_kind="personal"))

    async def context(self):
        return await self.handler.context(Request(USER, "conv-1", text=""))

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of the workspace and of the bot's store: what "nothing changed" compares, less
        the bookkeeping that reading itself does (BOOKKEEPING)."""
        rows = {**_dump(self.directory / "workspace.db", "workspace"), **_dump(self.directory / "bot.db", "bot")}
        return {table: found for table, found in rows.items() if table not in BOOKKEEPING}


def _dump(path: Path, prefix: str) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {f"{prefix}.{table}": sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))) for table in tables}
    finally:
        conn.close()
