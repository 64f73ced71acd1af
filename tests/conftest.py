"""Shared fixtures: a bot over a fresh demo workspace, in-process and over real HTTP."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import shutil
import time
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.app import build_workspaces, create_app
from bot.handler import ChatHandler, Request
from bot.settings import Settings, load_settings
from commands.catalog import catalog
from adapters.storage import open_storage
from commands.base.context import Reply, Role, RoleBook, User
from commands.changes.kinds import CHANGE_KINDS
from commands.changes.gate import Gate
from commands.changes.policy import Policy, parse_policy
from tests.signing_keys import SigningKey, trust
from tests.teams_client import ALICE, BOB, TeamsStandIn


def pytest_collection_modifyitems(items):
    """Tests marked replay_audit run after all the others (a stable sort keeps every other order), so
    that they see every request the replayed Azure tests sent (tests.replay.SENT)."""
    mark_unit_tier(items)
    items.sort(key=lambda item: item.get_closest_marker("replay_audit") is not None)


# The fast tier is a folder: tests/unit holds the pure tests (parsing, policy, cards, the drift engine,
# splits, language, settings, ...) without a server, a database, a workspace or replayed Azure traffic;
# `pytest tests/unit` and `pytest -m unit` run the same tests. The integration and HTTP tests stay in
# tests/. A test in tests/unit that asks for one of IMPURE_FIXTURES is refused at collection, so the
# tier stays pure (and fast) as it grows.
UNIT_DIR = Path(__file__).resolve().parent / "unit"
IMPURE_FIXTURES = frozenset({
    "store", "storage", "chat", "viewer_chat", "teams", "bot_url", "app", "server", "workspaces", "clocked",
    "aiohttp_server", "aiohttp_client", "aiohttp_raw_server", "make_storage", "postgres_dsn", "postgres_schema",
    "local", "azure", "ws", "fixed_workspaces", "channel", "pools",
})


def mark_unit_tier(items) -> None:
    for item in items:
        if UNIT_DIR not in Path(item.path).resolve().parents:
            continue
        impure = IMPURE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if impure:
            raise pytest.UsageError(f"{item.nodeid} is in tests/unit (the fast tier) but asks for "
                                    f"{', '.join(sorted(impure))}: move it to tests/, beside its module")
        item.add_marker(pytest.mark.unit)


DEV = User(id="dev-1", name="Dana Dev", tenant_id="t1")
TEST_AUDIT_KEY = "test-audit-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def audit_key(monkeypatch) -> str:
    """Outside development mode the bot refuses to start without MLOPSBOT_AUDIT_KEY (issue #17):
    every test runs with one, as a deployment does; a test about its absence deletes it."""
    monkeypatch.setenv("MLOPSBOT_AUDIT_KEY", TEST_AUDIT_KEY)
    return TEST_AUDIT_KEY


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)          # no stray .env file is read
    policy = tmp_path / "direct-policy.toml"        # the commands' own tests: no gate in the way
    policy.write_text('[[rule]]\nmode = "direct"\n')
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", policy_file=str(policy))


APP_ID = "11111111-2222-3333-4444-555555555555"      # the bot's Microsoft App ID in production-mode tests


@pytest.fixture
async def secured(aiohttp_server, tmp_path, monkeypatch):
    """A bot with a Microsoft App ID, served over HTTP and trusting one channel signing key
    (`secured.key`): `secured.app`, `secured.url` (its /api/messages) and an open `secured.storage`
    on its database."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="0.0.0.0", app_id=APP_ID, allowed_tenants=["*"],
                             app_password="not-a-real-secret", service_url_hosts=["http://127.0.0.1"])
    key = SigningKey("channel-key-1")
    trust(monkeypatch, key)
    app = create_app(settings, reset_demo=True)
    server = await aiohttp_server(app)
    storage = open_storage(settings.effective_storage_url)
    await storage.open()
    yield SimpleNamespace(app=app, url=str(server.make_url("/api/messages")), key=key, storage=storage)
    await storage.close()


@pytest.fixture
def pools():
    executors = [ThreadPoolExecutor(max_workers=4), ThreadPoolExecutor(max_workers=4)]
    yield executors
    for executor in executors:
        executor.shutdown(wait=True)


class DemoTemplate:
    """The demo workspace seeded once and copied for each test (a file copy instead of seeding the
    demo's tables row by row, twice: on creating the file and again on reset).

    The demo is seeded "as of now" (jobs running since 65 minutes, ...), and the tests read it with
    the real clock, so a template is reused only while it is younger than MAX_AGE seconds, then
    seeded again: a copied workspace is never older than a workspace seeded at the start of a
    slow test."""

    MAX_AGE = 30.0

    def __init__(self, folder) -> None:
        self.folder = folder
        self.made: dict[int | None, tuple[object, float]] = {}       # demo size -> (file, when)
        self.seeded = 0

    def copy_to(self, path, demo_size: int | None = None) -> None:
        made = self.made.get(demo_size)
        if made is None or time.monotonic() - made[1] > self.MAX_AGE:
            from adapters.local.workspace import LocalWorkspace
            self.seeded += 1
            file = self.folder / f"demo-{demo_size or 'story'}-{self.seeded}.db"
            with LocalWorkspace(file, demo_size=demo_size) as local:     # as build_workspaces(reset_demo=True)
                local.reset(demo=True)
            made = self.made[demo_size] = (file, time.monotonic())
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made[0], path)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> DemoTemplate:
    return DemoTemplate(tmp_path_factory.mktemp("demo-template"))


def demo_copied(settings: Settings, template: DemoTemplate) -> bool:
    """Put a fresh copy of the demo where `settings` keep the local workspace. False if a workspace
    file is there already (another fixture of the same test made it and may hold it open): the
    caller then resets it in place, with reset_demo=True, as before."""
    path = settings.data_dir / "workspace.db"
    if path.exists():
        return False
    template.copy_to(path, settings.demo_size)
    return True


@pytest.fixture
def workspaces(settings, pools, demo_template):
    return build_workspaces(settings, pools, reset_demo=not demo_copied(settings, demo_template))


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
def clocked(tmp_path, pools, clock):
    """The demo workspace on the test module's `clock` fixture (each module starts it where it needs):
    its jobs and monitor runs move only when that clock does."""
    from adapters.local.workspace import LocalWorkspace
    from adapters.nonblocking import NonBlockingService
    from commands.base.context import Workspaces

    local = LocalWorkspace(tmp_path / "clocked.db", clock=clock)
    yield Workspaces([NonBlockingService(local, name="ml-prod", environment="prod", pool=pools[0],
                                         wait_pool=pools[1], timeout=30)])
    local.close()


def with_executor(monkeypatch, action: str, executor) -> None:
    """For one test, carry out `action` with `executor` (the gate's table of change kinds, restored after)."""
    monkeypatch.setitem(CHANGE_KINDS, action, dataclasses.replace(CHANGE_KINDS[action], execute=executor))


# Everything runs at once: the tests of the commands themselves. Approval tests use the defaults.
DIRECT_POLICY = parse_policy('[[rule]]\nmode = "direct"\n', source="tests: everything direct")


class Chat:
    """In-process conversation with the bot's handler: `await chat("models")` -> Reply.

    It has real storage (SQLite) and the real gate; `background` collects what the gate runs
    after a turn (the outcomes of long changes)."""

    def __init__(self, workspaces, store, role: Role = Role.ADMIN, *, policy: Policy = DIRECT_POLICY,
                 roles: RoleBook | None = None, clock: Clock | None = None, user: User = DEV) -> None:
        self.clock = clock or Clock()
        self.background: list = []
        roles = roles or RoleBook(default=role)
        self.gate = Gate(policy, store, CHANGE_KINDS, clock=self.clock, roles=roles, spawn=self.background.append)
        self.handler = ChatHandler(catalog(), workspaces, roles, store=store,
                                   gate=self.gate, clock=self.clock)
        self.user = user
        self._activities = itertools.count(1)

    def request(self, *, text: str | None = None, verb: str | None = None, args=(), activity_id: str | None = None,
                conversation: str = "conv-1", kind: str = "personal") -> Request:
        return Request(self.user, conversation, text=text, verb=verb, args=list(args),
                       activity_id=activity_id or f"activity-{next(self._activities)}", conversation_kind=kind)

    async def __call__(self, text: str, **kw) -> Reply:
        return await self.handler.handle(self.request(text=text, **kw))

    async def click(self, verb: str, *args: str, **kw) -> Reply:
        return await self.handler.handle(self.request(verb=verb, args=args, **kw))

    def as_(self, user: User) -> "Chat":
        """The same conversation, another person typing."""
        other = copy.copy(self)
        other.user = user
        return other

    async def settle(self) -> list[Reply]:
        """Await what the turns left running: the gate's background outcomes."""
        done = []
        while self.background:
            pending, self.background[:] = [*self.background], []
            for awaitable in pending:
                done.append(await awaitable)
        return done


@pytest.fixture
async def store(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'bot.db'}")
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture
async def chat(workspaces, store):
    conversation = Chat(workspaces, store)
    yield conversation
    await conversation.settle()                 # finish what a test left running; stop watches


@pytest.fixture
def viewer_chat(workspaces, store) -> Chat:
    return Chat(workspaces, store, Role.VIEWER)


@pytest.fixture
async def bot_url(aiohttp_server, settings, demo_template):
    server = await aiohttp_server(create_app(settings, reset_demo=not demo_copied(settings, demo_template)))
    return str(server.make_url("/api/messages"))


@pytest.fixture
async def teams(bot_url):
    async with TeamsStandIn(bot_url) as stand_in:
        yield stand_in


# A bot guarded as in production (issue 17): Alice operates, Bob approves, the pipeline API takes a
# bearer token and the webhooks a function key, and one channel is stored. One set of fixtures for
# every module that attacks it (tests/test_hardening.py, tests/test_security_bounds.py): the module
# says which key, token and channel by overriding `guard`.


@dataclass(frozen=True)
class Guard:
    key: str              # the webhooks' x-functions-key
    token: str            # the pipeline API's bearer token
    channel: str          # the channel stored before the test begins


@pytest.fixture
def guard() -> Guard:
    raise pytest.UsageError("a module that uses the guarded bot's fixtures defines its own `guard` fixture")


@pytest.fixture
def guarded_settings(guard, tmp_path, monkeypatch) -> Settings:
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                         approvers=BOB.aad_object_id, api_token=guard.token, webhook_key=guard.key)


@pytest.fixture
async def guarded_server(aiohttp_server, guarded_settings, demo_template):
    return await aiohttp_server(create_app(guarded_settings,
                                           reset_demo=not demo_copied(guarded_settings, demo_template)))


@pytest.fixture
async def guarded_teams(guard, guarded_server):
    async with TeamsStandIn(str(guarded_server.make_url("/api/messages"))) as stand_in:
        await stand_in.say("help", mention=True, conversation=guard.channel, kind="channel")   # a stored channel
        yield stand_in
