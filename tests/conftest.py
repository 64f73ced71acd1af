"""Shared fixtures: a bot over a fresh demo workspace, in-process and over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.app import build_workspaces, create_app
from bot.handler import ChatHandler, Request
from bot.settings import Settings, load_settings
from commands.catalog import catalog
from commands.context import Reply, Role, RoleBook, User, Watching
from tests.teams_client import TeamsStandIn

DEV = User(id="dev-1", name="Dana Dev", tenant_id="t1")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)          # no stray .env file is read
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1")


@pytest.fixture
def pools():
    executors = (ThreadPoolExecutor(max_workers=4), ThreadPoolExecutor(max_workers=4))
    yield executors
    for executor in executors:
        executor.shutdown(wait=True)


@pytest.fixture
def workspaces(settings, pools):
    return build_workspaces(settings, pools, reset_demo=True)


class Chat:
    """In-process conversation with the bot's handler: `await chat("models")` -> Reply."""

    def __init__(self, workspaces, role: Role = Role.ADMIN) -> None:
        self.handler = ChatHandler(catalog(), workspaces, RoleBook(default=role))
        self.user = DEV
        self.follow_ups: list = []

    async def __call__(self, text: str) -> Reply:
        return await self.handler.handle(Request(self.user, "conv-1", text=text), self.follow_ups.append)

    async def click(self, verb: str, *args: str) -> Reply:
        return await self.handler.handle(Request(self.user, "conv-1", verb=verb, args=list(args)),
                                         self.follow_ups.append)


@pytest.fixture
async def chat(workspaces):
    conversation = Chat(workspaces)
    yield conversation
    for outcome in conversation.follow_ups:     # finish what a test left running; stop watches
        if isinstance(outcome, Watching):
            outcome.close()
        else:
            await outcome


@pytest.fixture
def viewer_chat(workspaces) -> Chat:
    return Chat(workspaces, Role.VIEWER)


@pytest.fixture
async def bot_url(aiohttp_server, settings):
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    return str(server.make_url("/api/messages"))


@pytest.fixture
async def teams(bot_url):
    async with TeamsStandIn(bot_url) as stand_in:
        yield stand_in
