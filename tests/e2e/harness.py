"""End-to-end harness: our bot <- Microsoft 365 Agents Playground <- headless Chromium.

    bot subprocess (python -m bot.cli serve ...)      GET /healthz, POST /api/messages
        ^  activities (message, invoke adaptiveCard/action, conversationUpdate ...)
    Agents Playground (node, tests/e2e/playground)    serves a Teams-like web UI + mock connector
        ^  clicks and keystrokes
    Chromium (Debian /usr/bin/chromium) driven by playwright's sync API

Nothing here talks to the internet: the playground runs with --disable-telemetry and
TEAMSAPPTESTER_BROWSER=none, the page aborts every request that does not go to 127.0.0.1
(the UI asks a CDN for Segoe UI fonts; it falls back to local fonts).

The playground reads its mock Teams context (tenant, current user, other users, team, channel)
from a YAML file once, at start-up: a different current user means a different playground
process. `PlaygroundPool` starts one per user on demand and keeps it for the session.

Selectors were learnt from @microsoft/m365agentsplayground 0.2.28 (see README.md next to this
file): the composer is a Lexical `[data-lexical-editor=true]` textbox, every bot message carries
the bot's avatar `span[role=img][aria-label=<bot name>]` whose parent's next sibling is the
message body, channel posts are `[role=group]` cards, the @-mention picker is `role=menuitem`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
PLAYGROUND_DIR = E2E_DIR / "playground"
PLAYGROUND_BIN = PLAYGROUND_DIR / "node_modules" / ".bin" / "agentsplayground"
OUTPUT_DIR = E2E_DIR / "output"
CHROMIUM = Path(os.environ.get("MLOPSBOT_E2E_CHROMIUM", "/usr/bin/chromium"))

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

BOT_NAME = "MLOps Bot"
BOT_ID = "00000000-0000-0000-0000-00000000b075"  # the playground's "recipient.id" for the bot
TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
TEAM_NAME = "ML Platform"
CHANNEL_NAME = "mlops-alerts"


# --------------------------------------------------------------------------- prerequisites

def missing_prerequisites() -> list[str]:
    """What the suite needs and does not find, each with how to get it."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Node.js 20 or later)")
    if not PLAYGROUND_BIN.exists():
        missing.append(f"{PLAYGROUND_BIN.relative_to(REPO_ROOT)} (npm ci --prefix tests/e2e/playground)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
    return missing


# --------------------------------------------------------------------------- small utilities

def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None,
                log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    state = f"exited with {process.returncode}" if process is not None and process.poll() is not None else "timed out"
    raise RuntimeError(f"{what}: {state} after {timeout:.0f}s\n--- log tail ({log}) ---\n{tail}")


def _stop(process: subprocess.Popen | None) -> None:
    """Stop a process we started, and its children (they share its new session)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=5)


# --------------------------------------------------------------------------- the bot

@dataclass
class BotProcess:
    """Our bot as a subprocess on a free loopback port, over a fresh demo workspace."""

    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/api/messages"

    def command(self) -> list[str]:
        """`python -m bot.cli serve ...`, or MLOPSBOT_E2E_BOT_CMD with {host} {port} {data_dir}."""
        override = os.environ.get("MLOPSBOT_E2E_BOT_CMD")
        if override:
            return [part.format(host=self.host, port=self.port, data_dir=self.data_dir, python=sys.executable)
                    for part in shlex.split(override)]
        return [sys.executable, "-m", "bot.cli", "serve", "--host", self.host, "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--reset-demo"]

    def start(self, timeout: float = 60) -> "BotProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MicrosoftApp", "MLOPSBOT_"))}  # local backend, empty app id
        env.update(ROLES)                # Alex operates, Megan approves, everyone else views
        env.update(WATCH)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.data_dir, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_until(lambda: _http_ok(f"{self.base_url}/healthz"), timeout,
                    f"bot {' '.join(self.command())}", self.process, self.log_path)
        return self

    def stop(self) -> None:
        _stop(self.process)


# --------------------------------------------------------------------------- the playground

@dataclass(frozen=True)
class PlaygroundUser:
    """A Teams user as the playground's config file spells it (`userPrincipleName` sic)."""

    id: str
    name: str
    aad_object_id: str
    email: str

    def as_config(self) -> dict:
        given, _, surname = self.name.partition(" ")
        return {"id": self.id, "name": self.name, "userPrincipleName": self.email,
                "aadObjectId": self.aad_object_id, "givenName": given, "surname": surname or given,
                "email": self.email}


ALEX = PlaygroundUser("user-id-alex", "Alex Wilber", "00000000-0000-0000-0000-000000000a01", "alexw@example.com")
MEGAN = PlaygroundUser("user-id-megan", "Megan Bowen", "00000000-0000-0000-0000-000000000a02", "meganb@example.com")
ADELE = PlaygroundUser("user-id-adele", "Adele Vance", "00000000-0000-0000-0000-000000000a03", "adelev@example.com")
ISAIAH = PlaygroundUser("user-id-isaiah", "Isaiah Langer", "00000000-0000-0000-0000-000000000a04", "isaiahl@example.com")
PATTI = PlaygroundUser("user-id-patti", "Patti Fernandez", "00000000-0000-0000-0000-000000000a05", "pattif@example.com")
LYNNE = PlaygroundUser("user-id-lynne", "Lynne Robbins", "00000000-0000-0000-0000-000000000a06", "lynner@example.com")
KNOWN_USERS = (ALEX, MEGAN, ADELE, ISAIAH, PATTI, LYNNE)
ROLES = {"MLOPSBOT_OPERATORS": ALEX.aad_object_id, "MLOPSBOT_APPROVERS": MEGAN.aad_object_id,
         "MLOPSBOT_WEBHOOK_KEY": "e2e-webhook-key-0123456789abcdefghij"}     # lets tests post Event Grid events
WATCH = {"MLOPSBOT_WATCH_MINUTES": "1"}   # the shortest window: a verdict card within about 90 s of a change


def playground_config(current_user: PlaygroundUser = ALEX) -> str:
    """The playground's `.m365agentsplayground.yml` (schema 0.1.1) as YAML text.

    The schema insists on exactly five other `users` with ids distinct from the current user's;
    the team always has a General channel (id = team id) plus at most one more channel.
    JSON is valid YAML, so no YAML library is needed.
    """
    import json

    others = [user for user in KNOWN_USERS if user.id != current_user.id][:5]
    config = {
        "version": "0.1.1",
        "tenantId": TENANT_ID,
        "bot": {"id": BOT_ID, "name": BOT_NAME},
        "currentUser": current_user.as_config(),
        "users": [user.as_config() for user in others],
        "personalChat": {"id": f"personal-chat-{current_user.id}"},
        "groupChat": {"id": "group-chat-id", "name": "Group Chat"},
        "team": {"id": "19:team-ml-platform@thread.tacv2", "name": TEAM_NAME,
                 "aadGroupId": "00000000-0000-0000-0000-0000000000bb",
                 "channels": [{"id": "19:channel-mlops-alerts@thread.tacv2", "name": CHANNEL_NAME}]},
    }
    return "# Written by tests/e2e/harness.py\n" + json.dumps(config, indent=2) + "\n"


@dataclass
class PlaygroundProcess:
    """`agentsplayground` pointed at the bot, for one configured current user."""

    bot_endpoint: str
    work_dir: Path
    user: PlaygroundUser = ALEX
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "playground.log"

    def start(self, timeout: float = 60) -> "PlaygroundProcess":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / ".m365agentsplayground.yml"
        config.write_text(playground_config(self.user))
        env = dict(os.environ,
                   TEAMSAPPTESTER_BROWSER="none",                    # do not open a browser
                   BOT_ENDPOINT=self.bot_endpoint,                   # same as -e
                   M365_AGENTS_PLAYGROUND_CONFIG_PATH=str(config),
                   M365_AGENTS_PLAYGROUND_LOGFILE=str(self.work_dir / "devtools.log"))
        for name in ("AUTH_CLIENT_ID", "AUTH_CLIENT_SECRET", "AUTH_TENANT_ID"):
            env.pop(name, None)
        command = [str(PLAYGROUND_BIN), "--app-endpoint", self.bot_endpoint, "--port", str(self.port),
                   "--channel-id", "msteams", "--disable-telemetry"]
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=self.work_dir, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def listening() -> bool:
            # "fallback to random if occupied": believe the port it prints.
            match = re.search(r"Listening on (\d+)", self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
            return bool(match) and _http_ok(self.url) and _http_ok(f"{self.url}_debug/ping")

        _wait_until(listening, timeout, "agentsplayground", self.process, self.log_path)
        return self

    def stop(self) -> None:
        _stop(self.process)


class PlaygroundPool:
    """One playground process per configured current user, started on first use."""

    def __init__(self, bot_endpoint: str, work_dir: Path) -> None:
        self.bot_endpoint = bot_endpoint
        self.work_dir = work_dir
        self._running: dict[str, PlaygroundProcess] = {}

    def get(self, user: PlaygroundUser = ALEX) -> PlaygroundProcess:
        if user.id not in self._running:
            self._running[user.id] = PlaygroundProcess(
                self.bot_endpoint, self.work_dir / f"playground-{user.id}", user).start()
        return self._running[user.id]

    def close(self) -> None:
        for playground in self._running.values():
            playground.stop()
        self._running.clear()


# --------------------------------------------------------------------------- the browser side

# Every bot message in the UI (personal chat, group chat, channel thread) carries the bot's
# avatar; the avatar's parent (message header or avatar column) is followed by the body.
_BOT_MESSAGES_JS = """
(botName) => {
  const skip = '[role=listbox],[role=menu],[role=tree],[role=treeitem],button';
  const out = [];
  for (const avatar of document.querySelectorAll('span[role=img]')) {
    if (avatar.getAttribute('aria-label') !== botName || avatar.closest(skip)) continue;
    const body = avatar.parentElement && avatar.parentElement.nextElementSibling;
    if (!body) continue;
    out.push(body.innerText.trim());
  }
  return out;
}
"""


# Mark the message body that holds a clicked card, so the harness can watch it being replaced.
_TAG_MESSAGE_BODY_JS = """
(button, [botName, tag]) => {
  for (let el = button; el && el !== document.body; el = el.parentElement) {
    const prev = el.previousElementSibling;
    if (prev && [...prev.querySelectorAll('span[role=img]')].some(a => a.getAttribute('aria-label') === botName)) {
      el.setAttribute('data-e2e-card', tag);
      return true;
    }
  }
  return false;
}
"""


@dataclass
class _OpenPage:
    """A user's page while another user acts (see Chat.switch_user)."""

    context: object
    page: object
    view: str | None
    seen: int


class ChatError(AssertionError):
    """The UI did not do what a step expected (no reply, button missing, card error)."""


class Chat:
    """A person at the playground's web UI. Every method waits for the UI, never sleeps blindly.

        chat.send("models");              text = chat.last_bot_message_text()
        chat.mention_bot_in_channel("whoami"); chat.last_bot_message_text()
        chat.click_card_button("Show deployments")
        chat.switch_user(MEGAN)           # Alex's page stays open; switch_user(ALEX) returns to it
        chat.screenshot("models-card")    # tests/e2e/output/<test name>/models-card.png
    """

    def __init__(self, browser, pool: PlaygroundPool, output_dir: Path, user: PlaygroundUser = ALEX,
                 timeout: float = 20.0) -> None:
        self.browser = browser
        self.pool = pool
        self.output_dir = output_dir
        self.timeout = timeout
        self.user = user
        self.context = None
        self.page = None
        self._seen = 0          # bot messages already returned (or present before the last send)
        self._view = None       # "personal" or the channel name
        self._clicks = 0
        self._open: dict[str, _OpenPage] = {}     # user id -> that user's page, kept while away
        self.switch_user(user)

    # ------------------------------------------------------------------ session

    def switch_user(self, user: PlaygroundUser) -> None:
        """Become `user`: a playground configured for them (started once), in their own page.

        Each user's page stays open while another user acts, as two people at two screens:
        the playground keeps chat history only in the page, so a message the bot sends to
        someone who is away (an outcome, a verdict card) is on their page when they come back,
        and `new_bot_messages()` then returns it."""
        if self.page is not None:
            self._open[self.user.id] = _OpenPage(self.context, self.page, self._view, self._seen)
        self.user = user
        kept = self._open.pop(user.id, None)
        if kept is not None:
            self.context, self.page, self._view, self._seen = kept.context, kept.page, kept.view, kept.seen
            self.page.bring_to_front()
            return
        playground = self.pool.get(user)
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.set_default_timeout(self.timeout * 1000)
        # Only loopback: the UI's CDN font requests would otherwise hang on a DNS lookup.
        self.context.route(re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort())
        self.page = self.context.new_page()
        self.page.goto(playground.url)
        self.page.get_by_text("Personal Chat", exact=True).first.wait_for()
        self._view = None
        self._seen = 0

    def close(self) -> None:
        contexts = [kept.context for kept in self._open.values()] + [self.context]
        self._open.clear()
        self.context = self.page = None
        for context in contexts:
            if context is not None:
                context.close()

    # ------------------------------------------------------------------ navigation

    def open_personal_chat(self) -> None:
        if self._view != "personal":
            self.page.get_by_text("Personal Chat", exact=True).first.click()
            self._view = "personal"
            self._settle()

    def open_channel(self, channel: str = "General") -> None:
        if self._view != channel:
            self.page.get_by_role("treeitem", name=f"{TEAM_NAME} - {channel}").click()
            self.page.get_by_role("button", name="Post", exact=True).wait_for()
            self._view = channel
            self._settle()

    def _settle(self, quiet: float = 1.0) -> None:
        """Opening a conversation makes the playground send installationUpdate and
        conversationUpdate, and the bot may welcome: wait until bot messages stop arriving,
        then count them as seen."""
        deadline = time.monotonic() + self.timeout
        count, since = len(self.bot_messages()), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            self.page.wait_for_timeout(150)
            now = len(self.bot_messages())
            if now != count:
                count, since = now, time.monotonic()
        self._seen = count

    # ------------------------------------------------------------------ sending

    def _editor(self):
        return self.page.locator("[data-lexical-editor=true]")

    def send(self, text: str) -> None:
        """Type `text` in the personal chat with the bot and press Enter."""
        self.open_personal_chat()
        self._seen = len(self.bot_messages())
        editor = self._editor().last
        editor.click()
        self.page.keyboard.type(text)
        self.page.keyboard.press("Enter")
        self._wait_for_own_message(text)

    def mention_bot_in_channel(self, text: str, channel: str = "General") -> None:
        """Start a new post in a team channel: "@<bot> text", as Teams sends it (<at>..</at>).
        The bot's answer appears in that post's thread; read it with last_bot_message_text()."""
        self.open_channel(channel)
        self._seen = len(self.bot_messages())
        editor = self._editor().first                      # the "Start a new post" composer
        editor.click()
        self.page.keyboard.type("@")
        self.page.locator("#typeahead-menu").get_by_role("menuitem", name=BOT_NAME).click()
        self.page.keyboard.type(" " + text)
        self.page.get_by_role("button", name="Post", exact=True).click()
        self._wait_for_own_message(text)

    def _wait_for_own_message(self, text: str) -> None:
        """The composer empties once the playground took the message."""
        editor = self._editor().first if self._view != "personal" else self._editor().last
        deadline = time.monotonic() + self.timeout
        while editor.inner_text().strip():
            if time.monotonic() > deadline:
                raise ChatError(f"the playground did not take the message {text!r}")
            self.page.wait_for_timeout(100)

    # ------------------------------------------------------------------ reading

    def bot_messages(self) -> list[str]:
        """Text of every bot message now on screen (cards as their rendered text), oldest first."""
        return self.page.evaluate(_BOT_MESSAGES_JS, BOT_NAME)

    def new_bot_messages(self, timeout: float | None = None, quiet: float = 0.8) -> list[str]:
        """Wait for at least one bot message after the last send (or read), and until no more
        arrive for `quiet` seconds; return them all and mark them seen."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while len(self.bot_messages()) <= self._seen:
            if time.monotonic() > deadline:
                raise ChatError(f"no new message from {BOT_NAME} within {timeout:.0f}s; on screen: "
                                f"{self.bot_messages()[-3:]!r}")
            self.page.wait_for_timeout(100)
        messages, since = self.bot_messages(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
            now = self.bot_messages()
            if len(now) != len(messages):
                messages, since = now, time.monotonic()
        fresh = messages[self._seen:]
        self._seen = len(messages)
        return fresh

    def last_bot_message_text(self, timeout: float | None = None) -> str:
        """Wait for the bot's answer to the last send and return its newest message's text."""
        return self.new_bot_messages(timeout)[-1]

    def bot_replies_text(self, timeout: float | None = None) -> str:
        """All new bot messages (e.g. a text and a card) joined by newlines."""
        return "\n".join(self.new_bot_messages(timeout))

    # ------------------------------------------------------------------ cards

    def card_buttons(self) -> list[str]:
        """Titles of the Adaptive Card buttons in the newest bot messages (all on screen)."""
        return self.page.locator("button[role=button][title]").evaluate_all(
            "els => els.map(e => e.getAttribute('title'))")

    def click_card_button(self, title: str, timeout: float | None = None) -> str:
        """Click the newest card button called `title` (Action.Execute -> invoke
        adaptiveCard/action) and wait until the bot's invoke response replaced the card.
        Returns the new card's text. Raises ChatError when the playground reports an error."""
        timeout = self.timeout if timeout is None else timeout
        button = self.page.locator(f'button[title="{title}"]').last
        if button.count() == 0:
            raise ChatError(f"no card button titled {title!r}; buttons: {self.card_buttons()!r}")
        self._clicks += 1
        tag = str(self._clicks)
        found = button.evaluate(_TAG_MESSAGE_BODY_JS, [BOT_NAME, tag])
        if not found:
            raise ChatError(f"card button {title!r} is not inside a message from {BOT_NAME}")
        holder = self.page.locator(f'[data-e2e-card="{tag}"]')
        before = holder.inner_text()
        invokes = len(self.invoke_statuses())
        button.click()
        deadline = time.monotonic() + timeout
        # The playground shows nothing on the card when the invoke fails; its log panel
        # records "-> User Application invoke <HTTP status>" for every click.
        while len(self.invoke_statuses()) <= invokes:
            if time.monotonic() > deadline:
                raise ChatError(f"clicking {title!r} sent no invoke within {timeout:.0f}s")
            self.page.wait_for_timeout(100)
        status = self.invoke_statuses()[invokes]
        if not 200 <= status < 300:
            raise ChatError(f"clicking {title!r}: the bot answered the adaptiveCard/action invoke "
                            f"with HTTP {status}")
        while holder.count() and holder.inner_text() == before and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
        self.page.wait_for_timeout(200)
        if holder.count() == 0:                 # React replaced the whole message: read it afresh
            return self.bot_messages()[-1]
        return self._strip_status(holder.inner_text())

    def invoke_statuses(self) -> list[int]:
        """HTTP status of every invoke the playground sent the bot, from its log panel."""
        return [int(code) for code in re.findall(r"User Application\s+invoke (\d{3})", self.log_panel_text())]

    @staticmethod
    def _strip_status(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("Your response was sent"))

    # ------------------------------------------------------------------ evidence

    def screenshot(self, name: str) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def log_panel_text(self) -> str:
        """The playground's own log panel (activities in and out, with status codes)."""
        return self.page.locator("div[contenteditable][spellcheck=false]").filter(has_text="Current version").first.inner_text()


def launch_chromium(playwright):
    """Debian's chromium through playwright (playwright cannot download its own browsers here)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def temporary_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
