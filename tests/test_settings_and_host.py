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


