"""Security and robustness, through the real CloudAdapter over HTTP (issue 7, items 1 to 8 and 20)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from botframework.connector.auth import AuthenticationConstants
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata

import bot.teams
from adapters.storage import open_storage
from bot.app import create_app
from bot.settings import load_settings
from tests.signing_keys import SigningKey, trust
from tests.teams_client import ALICE, BOB, TENANT, Person, TeamsStandIn

APP_ID = "11111111-2222-3333-4444-555555555555"
CHANNEL_KEYS = AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL


async def started(aiohttp_server, tmp_path, monkeypatch, **overrides):
    """A bot over HTTP built from settings with `overrides`, and its storage opened beside it."""
    monkeypatch.chdir(tmp_path)
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL",
                 "MLOPSBOT_ALLOWED_TENANTS", "MLOPSBOT_SERVICE_URL_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(data_dir=tmp_path / "data", **{"host": "127.0.0.1", **overrides})
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    storage = open_storage(settings.effective_storage_url)
    await storage.open()
    return SimpleNamespace(url=str(server.make_url("/api/messages")), server=server, storage=storage,
                           settings=settings)


# ---------------------------------------------------------------- 1. signing keys never block the loop


@pytest.fixture
def black_hole(monkeypatch):
    """A TCP listener that accepts connections and never answers, used as the HTTPS proxy, so
    every fetch of the signing keys hangs until its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    address = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, address)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bot.teams, "KEY_FETCH_TIMEOUT", 2.0)
    yield address
    listener.close()


@pytest.fixture
async def secured(aiohttp_server, tmp_path, monkeypatch):
    return await started(aiohttp_server, tmp_path, monkeypatch, host="0.0.0.0", app_id=APP_ID,
                         app_password="not-a-real-secret", service_url_hosts=["http://127.0.0.1"])


async def timed(coroutine) -> tuple[float, object]:
    start = time.monotonic()
    result = await coroutine
    return time.monotonic() - start, result


@pytest.mark.parametrize("keys", ["never fetched", "an hour old, token names an unknown key"])
async def test_a_hanging_key_fetch_blocks_nothing_and_the_token_gets_503(black_hole, secured, monkeypatch, keys):
    metadata = _OpenIdMetadata(CHANNEL_KEYS)
    if keys != "never fetched":
        metadata.keys = [SigningKey("published-key").jwk()]
        metadata.last_updated = datetime.now() - timedelta(hours=2)
    monkeypatch.setitem(JwtTokenExtractor.metadataCache, CHANNEL_KEYS, metadata)
    forger = SigningKey("forged-key")
    async with TeamsStandIn(secured.url) as teams, aiohttp.ClientSession() as other:
        forged = forger.token(audience=APP_ID, service_url=teams.service_url)
        hanging = asyncio.create_task(teams.post(teams.message("models"),
                                                 headers={"Authorization": f"Bearer {forged}"}))
        await asyncio.sleep(0.2)                  # the fetch is now stuck in the black hole
        assert not hanging.done()
        health_time, health = await timed(other.get(str(secured.server.make_url("/healthz"))))
        anonymous = TeamsStandIn(secured.url)
        anonymous.session, anonymous.service_url = other, teams.service_url
        anonymous_time, unauthenticated = await timed(anonymous.post(anonymous.message("models")))
        assert (health.status, unauthenticated.status) == (200, 401)
        assert health_time < 1.0 and anonymous_time < 1.0
        assert not hanging.done()
        refused = await hanging
        assert refused.status == 503
        # while the keys cannot be had, the next token is answered at once
        again_time, again = await timed(teams.post(teams.message("models"),
                                                   headers={"Authorization": f"Bearer {forged}"}))
        assert (again.status, again_time < 1.0) == (503, True)
        assert teams.connector.sent == []
    await secured.storage.close()


async def test_the_key_refresher_retries_with_back_off_then_loads_the_keys(aiohttp_server, monkeypatch):
    key = SigningKey("rotated-key")
    answers = [500, 500, 200]

    async def openid(request):
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        if status != 200:
            return web.json_response({"error": "down"}, status=status)
        return web.json_response({"jwks_uri": str(request.url.with_path("/keys"))})

    async def keys(request):
        return web.json_response({"keys": [key.jwk()]})

    app = web.Application()
    app.router.add_get("/openid", openid)
    app.router.add_get("/keys", keys)
    server = await aiohttp_server(app)
    url = str(server.make_url("/openid"))
    monkeypatch.setitem(JwtTokenExtractor.metadataCache, url, _OpenIdMetadata(url))
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    pauses: list[float] = []
    loaded = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        if JwtTokenExtractor.metadataCache[url].keys:
            loaded.set()
            await asyncio.Event().wait()          # the refresher now sleeps for hours: stop here

    refresher = asyncio.create_task(bot.teams.keep_signing_keys_fresh(url, pause=pause))
    await asyncio.wait_for(loaded.wait(), 10)
    refresher.cancel()
    assert [k["kid"] for k in JwtTokenExtractor.metadataCache[url].keys] == ["rotated-key"]
    first, second, steady = pauses
    assert 22.5 <= first <= 37.5 and 45 <= second <= 75          # 30 s, then 60 s, with jitter
    assert steady == bot.teams.KEY_REFRESH_SECONDS / 12


# ---------------------------------------------------------------- 2 and 4. no input reaches a 500


@pytest.fixture
def refused_lines(caplog):
    caplog.set_level(logging.WARNING)
    return caplog


async def test_deeply_nested_json_gets_400_and_one_log_line(teams, refused_lines):
    response = await teams.post(None, raw=b"[" * 5000)
    assert response.status == 400
    records = [r for r in refused_lines.records if r.name.startswith("bot.")]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "nested too deeply" in records[0].getMessage()
    nested_but_parsable = b'{"type": "message", "value": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert (await teams.post(None, raw=nested_but_parsable)).status == 400
    assert teams.connector.sent == []


def wrongly(field: str, value):
    """A valid message with one field replaced (a dotted path; `None` removes nothing)."""
    def build(teams):
        body = teams.message("models")
        *parents, last = field.split(".")
        node = body
        for name in parents:
            node = node[name]
        node[last] = value
        return body
    return build


WRONG_FIELDS = {
    "channelData.tenant as a string": (wrongly("channelData.tenant", "72f988bf"), "channelData.tenant"),
    "membersAdded: [null]": (wrongly("membersAdded", [None]), "membersAdded"),
    "a member without an id": (wrongly("membersAdded", [{"name": "x"}]), "membersAdded"),
    "tenant id as a list": (wrongly("conversation.tenantId", [TENANT]), "conversation.tenantId"),
    "channelData.tenant.id as a list": (wrongly("channelData.tenant.id", [TENANT]), "channelData.tenant"),
    "unknown conversationType": (wrongly("conversation.conversationType", "meeting-room"),
                                 "conversation.conversationType"),
    "from: {}": (wrongly("from", {}), "from.id"),
    "an empty from.id": (wrongly("from", {"id": "", "name": "Alice"}), "from.id"),
    "from.name as a number": (wrongly("from.name", 7), "from.name"),
    "text as an object": (wrongly("text", {"x": 1}), "text"),
    "channelData as a list": (wrongly("channelData", ["x"]), "channelData"),
    "recipient as a string": (wrongly("recipient", "bot"), "recipient"),
    "entities: [1]": (wrongly("entities", [1]), "entities"),
    "timestamp not a date": (wrongly("timestamp", "yesterday-ish"), "activity cannot be read"),
    "tenants that disagree": (wrongly("conversation.tenantId", "00000000-0000-0000-0000-00000000beef"),
                              "channelData.tenant.id' and 'conversation.tenantId"),
}


@pytest.mark.parametrize("case", list(WRONG_FIELDS))
async def test_wrongly_typed_fields_get_400_naming_the_field(teams, case):
    build, named = WRONG_FIELDS[case]
    async with teams.session.post(teams.bot_url, json=build(teams)) as response:
        assert response.status == 400
        assert named in (await response.json())["error"]
    assert teams.connector.sent == []


async def test_an_invoke_without_a_conversation_is_refused(teams):
    body = teams.invoke("endpoint", ["fraud-api"])
    del body["conversation"]
    async with teams.session.post(teams.bot_url, json=body) as response:
        assert (response.status, await response.json()) == (400, {"error": "an activity needs 'conversation.id'"})


@pytest.mark.parametrize("case", ["from: {}", "unknown conversationType"])
async def test_with_an_app_id_a_malformed_activity_is_400_not_401(secured, case):
    async with TeamsStandIn(secured.url) as teams:
        response = await teams.post(WRONG_FIELDS[case][0](teams))
    assert response.status == 400
    await secured.storage.close()


@pytest.mark.parametrize("content_type,status", [
    ("text/plain; x=application/json", 415),
    ("application/jsonp", 415),
    ("multipart/form-data; boundary=application/json", 415),
    ("application/json; charset=utf-8", 201),
    ("application/json;charset=UTF-8", 201),
])
async def test_content_type_is_parsed_not_searched(teams, content_type, status):
    body = json.dumps(teams.message("whoami")).encode()
    response = await teams.post(None, raw=body, headers={"Content-Type": content_type})
    assert response.status == status
    if status == 201:
        await teams.connector.wait_for(1)


@pytest.mark.parametrize("typed,answer", [
    ("traffic fraud-api blue=² green=98", "'blue=²' is not deployment=percent."),
    ("traffic fraud-api blue=٩٠ green=10", "'blue=٩٠' is not deployment=percent."),
    ("traffic fraud-api blue=" + "9" * 4000 + " green=0", "' is not deployment=percent."),
    ("scale fraud-api green ³", "'³' is not a whole number of instances"),
    ("scale fraud-api green " + "7" * 4000, "instances must be between 1 and 100"),
    ("logs fraud-api green --lines ٣", "'٣' is not a whole number of lines"),
])
async def test_unicode_digits_and_huge_numbers_get_a_usage_message(teams, typed, answer):
    [reply] = await teams.say(typed)
    assert answer in reply.text and "incident" not in reply.text
    assert len(reply.text) < 400


# ---------------------------------------------------------------- 3. bounded input and output


@pytest.mark.parametrize("args", [[str(i) for i in range(10_000)], ["fraud-api", "x" * 100_000],
                                  ["fraud-api"] * 33])
async def test_card_button_arguments_are_bounded_and_never_echoed(teams, args):
    async with teams.session.post(teams.bot_url, json=teams.invoke("endpoint", args)) as response:
        status, raw = response.status, await response.read()
    assert status == 200
    assert len(raw) < 2000
    assert "more than a command can hold" in raw.decode()


async def test_a_button_with_the_most_arguments_allowed_still_runs(teams):
    words = ["endpoint", "fraud-api"] + ["--workspace", "ml-prod"] * 15      # 32 words
    status, body = 0, None
    async with teams.session.post(teams.bot_url, json=teams.invoke(words[0], words[1:])) as response:
        status, body = response.status, await response.json()
    assert status == 200
    assert body["value"]["body"][0]["text"] == "Endpoint fraud-api"
