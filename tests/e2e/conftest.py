"""Fixtures for the end-to-end suite: bot + Agents Playground + headless Chromium.

Started once for the e2e package (torn down when its last test is done): the bot subprocess, Chromium, and one playground per configured
current user (see harness.PlaygroundPool). Each test gets a fresh browser context (an empty
chat history) through the `chat` fixture.

    def test_models(chat):
        chat.send("models")
        assert "fraud-model" in chat.bot_replies_text()

    @pytest.mark.parametrize("playground_user", [MEGAN], indirect=True)
    def test_as_megan(chat): ...

Missing prerequisites skip the suite with a message saying what to install
(tests/e2e/install.sh installs all of them); with CI=true they fail it instead.
Environment:
    MLOPSBOT_E2E_BOT_CMD   run this instead of `python -m bot.cli serve ...`; may use {host},
                           {port}, {data_dir}, {python}; must answer GET /healthz with 200.
    MLOPSBOT_E2E_CHROMIUM  the chromium binary (default /usr/bin/chromium).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.e2e import harness
from tests.e2e.harness import ALEX, Chat, PlaygroundPool

E2E_DIR = harness.E2E_DIR


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config, items):
    e2e_items = [item for item in items if E2E_DIR in item.path.parents]
    # Run the e2e suite last: playwright's sync API keeps an event loop running in this thread
    # until its fixtures (package-scoped) are torn down, and async tests cannot run beside it.
    items[:] = [item for item in items if item not in e2e_items] + e2e_items
    for item in e2e_items:
        item.add_marker(pytest.mark.e2e)
    missing = harness.missing_prerequisites()
    if not missing or _in_ci() or not e2e_items:
        return
    skip = pytest.mark.skip(reason="e2e prerequisites missing: " + "; ".join(missing)
                            + ". Install them with tests/e2e/install.sh")
    for item in e2e_items:
        item.add_marker(skip)


@pytest.fixture(scope="package")
def e2e_prerequisites():
    missing = harness.missing_prerequisites()
    if missing:
        # Only reachable with CI=true (otherwise the tests were skipped at collection).
        pytest.fail("CI=true and the e2e suite cannot run; missing: " + "; ".join(missing)
                    + ". Run tests/e2e/install.sh in the CI image.", pytrace=False)


@pytest.fixture(scope="package")
def e2e_tmp(tmp_path_factory, e2e_prerequisites):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="package")
def bot_server(e2e_tmp):
    """The bot as a subprocess on a free port (`python -m bot.cli serve ... --reset-demo`)."""
    bot = harness.BotProcess(data_dir=e2e_tmp / "bot-data", log_path=e2e_tmp / "bot.log")
    try:
        bot.start()
        yield bot
    finally:
        bot.stop()
        _keep_log(bot.log_path, "bot.log")


@pytest.fixture(scope="package")
def playgrounds(bot_server, e2e_tmp):
    """Agents Playground processes pointed at the bot, one per configured current user."""
    pool = PlaygroundPool(bot_server.messages_url, e2e_tmp)
    try:
        yield pool
    finally:
        pool.close()
        for log in e2e_tmp.glob("playground-*/playground.log"):
            _keep_log(log, f"{log.parent.name}.log")


@pytest.fixture(scope="package")
def browser(e2e_prerequisites):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = harness.launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def playground_user(request):
    """The playground's current user; override with
    `@pytest.mark.parametrize("playground_user", [MEGAN], indirect=True)`."""
    return getattr(request, "param", ALEX)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"e2e_report_{report.when}", report)


@pytest.fixture
def chat(request, browser, playgrounds, playground_user):
    """A fresh playground page for this test, as `playground_user`, in the personal chat."""
    output = harness.OUTPUT_DIR / _safe(request.node.name)
    session = Chat(browser, playgrounds, output, user=playground_user)
    try:
        yield session
    finally:
        report = getattr(request.node, "e2e_report_call", None)
        if report is not None and report.failed and session.page is not None:
            try:
                session.screenshot("failure")
                (output / "failure-log-panel.txt").write_text(session.log_panel_text())
            except Exception:  # evidence is best effort; never mask the real failure
                pass
        session.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\[\]-]+", "-", name)


def _keep_log(path, name: str) -> None:
    """Copy a subprocess log next to the screenshots, for CI artefacts."""
    if path.exists():
        harness.OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (harness.OUTPUT_DIR / name).write_bytes(path.read_bytes())
