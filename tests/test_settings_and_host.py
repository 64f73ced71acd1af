"""Settings fail fast with a message that says what to set; the host answers health probes."""

from __future__ import annotations


import pytest



@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppType", "MicrosoftAppTenantId",
                 "MLOPSBOT_BACKEND", "MLOPSBOT_HOST", "MLOPSBOT_AZURE_WORKSPACES", "MLOPSBOT_DEFAULT_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


async def test_healthz_and_readyz(aiohttp_client, settings):
    from bot.app import create_app
    client = await aiohttp_client(create_app(settings, reset_demo=True))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    # issue 17: readiness also counts the outbox's pending and given-up messages
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "storage": "ok", "workspaces": ["ml-prod"],
                                                        "outbox": {"pending": 0, "dead": 0}})


async def test_readyz_is_503_when_storage_is_gone(aiohttp_client, settings):
    from bot.app import STORAGE, create_app
    app = create_app(settings, reset_demo=True)
    client = await aiohttp_client(app)
    await app[STORAGE].close()
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["status"] == "unavailable"


# ---------------------------------------------------------------- the exact refusals and tenant decisions




def test_terminal_chat_prints_the_outcome_of_a_long_change(tmp_path):
    """A change Azure ML applies in the background is acknowledged at once, and its outcome is
    printed when it is done: the terminal keeps the acknowledgement's promise ("I'll post here")."""
    import asyncio
    import io
    from bot.chat import run_chat
    from bot.settings import load_settings
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmode = "direct"\n')
    stdin = io.StringIO("traffic fraud-api blue=50 green=50\nquit\n")
    out = io.StringIO()
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", policy_file=str(policy))
    assert asyncio.run(run_chat(settings, user_name="Terry", reset_demo=True, stdin=stdin, out=out)) == 0
    said = [line for line in out.getvalue().splitlines() if line.startswith("bot> ")]
    assert said == [
        "bot> ⏳ Traffic on fraud-api is moving to blue=50 green=50. Azure ML is applying it; I'll post here when "
        "it's done. [Workspace ml-prod (prod)]",
        "bot> ✅ Traffic on fraud-api is now blue=50 green=50. [Workspace ml-prod (prod)]",
    ]
