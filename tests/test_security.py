"""Security and robustness, through the real CloudAdapter over HTTP (issue 7, items 1 to 8 and 20)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from botframework.connector.auth import AuthenticationConstants
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata

import bot.signing_keys
import bot.teams
from bot.app import create_app
from tests.signing_keys import SigningKey
from tests.teams_client import ALICE, BOB, TENANT, Person, TeamsStandIn
from tests.unit.test_security import APP_ID, OPERATOR, TOO_MUCH, UNKNOWN_BUTTON, started
from tests.unit.test_security import pauses, production  # noqa: F401 - fixtures

CHANNEL_KEYS = AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL


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
    monkeypatch.setattr(bot.signing_keys, "KEY_FETCH_TIMEOUT", 2.0)
    yield address
    listener.close()


@pytest.fixture
async def secured(aiohttp_server, tmp_path, monkeypatch):
    return await started(aiohttp_server, tmp_path, monkeypatch, host="0.0.0.0", app_id=APP_ID, allowed_tenants=["*"],
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
    assert steady == bot.signing_keys.KEY_REFRESH_SECONDS / 12


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
    ("traffic fraud-api blue=² green=98", "'blue=²' is not deployment=percent. Usage: `traffic ‹endpoint› "
                                          "‹deployment=percent› ...`, e.g. `traffic fraud-api blue=90 green=10`."),
    ("traffic fraud-api blue=٩٠ green=10", "'blue=٩٠' is not deployment=percent."),
    ("traffic fraud-api blue=" + "9" * 4000 + " green=0", "' is not deployment=percent."),
    ("scale fraud-api green ³", "'³' is not a whole number of instances"),
    ("scale fraud-api green " + "7" * 4000, "Instances must be between 1 and 20"),
    ("logs fraud-api green --lines ٣", "'٣' is not a whole number of lines"),
])
async def test_unicode_digits_and_huge_numbers_get_a_usage_message(teams, typed, answer):
    [reply] = await teams.say(typed)
    assert answer in reply.text and "incident" not in reply.text
    assert len(reply.text) < 400


UNSUBSCRIBE_USAGE = "Usage: `unsubscribe ‹id|kind›` (e.g. `unsubscribe 3`)"
NOT_A_KIND = "is neither a subscription number nor a kind (drift, alerts, jobs, models, approvals, posture)."
NOT_A_REQUEST = "is not a request number; they look like 42 (type `approvals` to see them)."


@pytest.mark.parametrize("typed,answer", [
    ("unsubscribe 99999999999999999999",
     f"A subscription number must be between 1 and 4611686018427387904. {UNSUBSCRIBE_USAGE}"),
    ("unsubscribe ²", f"'²' {NOT_A_KIND} {UNSUBSCRIBE_USAGE}"),
    ("unsubscribe ٣", f"'٣' {NOT_A_KIND} {UNSUBSCRIBE_USAGE}"),
    ("unsubscribe #-1", f"A subscription number must be between 1 and 4611686018427387904. {UNSUBSCRIBE_USAGE}"),
    ("unsubscribe 4611686018427387904", "This chat has no subscription 4611686018427387904. `subscriptions` lists "
                                        "them."),
    ("approve ²", f"'²' {NOT_A_REQUEST} Usage: `approve ‹id› [comment ...]` (e.g. `approve 42 looks good`)"),
    ("approval 99999999999999999999", f"'99999999999999999999' {NOT_A_REQUEST} Usage: `approval ‹id›` "
                                      "(e.g. `approval 42`)"),
    ("approval 4611686018427387904", "There is no approval request #4611686018427387904. Type `approvals all` "
                                     "to see them."),
    ("acknowledge ²", "'²' is not a whole number of an alert id. Usage: `acknowledge ‹id›` (e.g. `acknowledge 7`)"),
    ("acknowledge 4611686018427387905", "An alert id must be between 1 and 4611686018427387904. Usage: "
                                        "`acknowledge ‹id›` (e.g. `acknowledge 7`)"),
    ("acknowledge 4611686018427387904", "There is no alert #4611686018427387904."),
    ("snooze 7 ٣h", "'٣h' is not a duration like 30m, 4h or 2d. Usage: `snooze ‹id› [duration]` (e.g. "
                    "`snooze 7 24h`)"),
    ("audit --since ٣d", "'٣d' is not a time span. Use a number and a unit: 30m, 12h, 7d or 2w."),
    ("audit --limit ²", "'²' is not a whole number of records. Usage: `audit [verify|export] [--since SPAN] "
                        "[--actor WHO] [--target WHAT] [--action ACTION] [--limit N] [--head HASH] [--format csv|jsonl]` "
                        "(e.g. `audit --since 7d --target fraud-api`)"),
    ("drift fraud-model --window ٣", "The window is a number of days such as 7d (1 to 90), not '٣'. Usage: "
                                     "`drift ‹model/endpoint› [--window DAYS] [--workspace NAME]` (e.g. "
                                     "`drift fraud-model --window 7d`)"),
])
async def test_ids_and_numbers_are_ascii_digits_in_range_or_a_usage_message(teams, typed, answer):
    [reply] = await teams.say(typed)
    assert reply.text == answer


# ---------------------------------------------------------------- 3. bounded input and output


@pytest.mark.parametrize("args", [[str(i) for i in range(10_000)], ["fraud-api", "x" * 100_000],
                                  ["fraud-api"] * 33])
async def test_card_button_arguments_are_bounded_and_never_echoed(teams, args):
    async with teams.session.post(teams.bot_url, json=teams.invoke("endpoint", args)) as response:
        status, raw = response.status, await response.read()
    assert status == 200
    assert len(raw) < 2000
    assert TOO_MUCH in raw.decode()


@pytest.mark.parametrize("verb,args", [("endpoint", [True]), ("endpoint", [{"id": "fraud-api"}]),
                                       (["endpoint"], ["fraud-api"]), ("x" * 65, ["fraud-api"])])
async def test_a_button_of_the_wrong_shape_is_refused_in_words(teams, verb, args):
    body = teams.invoke("endpoint", [])
    body["value"]["action"]["verb"], body["value"]["action"]["data"]["args"] = verb, args
    async with teams.session.post(teams.bot_url, json=body) as response:
        status, answer = response.status, json.dumps(await response.json())
    assert (status, UNKNOWN_BUTTON in answer) == (200, True)


async def test_a_button_with_the_most_arguments_allowed_still_runs(teams):
    words = ["endpoint", "fraud-api", "--workspace=ml-prod"] + ["--workspace", "ml-prod"] * 15   # 32 args
    status = 0
    async with teams.session.post(teams.bot_url, json=teams.invoke(words[0], words[1:])) as response:
        status, _ = response.status, await response.json()   # the answer parses as JSON
    assert status == 200
    assert teams.connector.sent[-1].card["body"][0]["text"] == "Endpoint fraud-api"   # posted as a new message


# ---------------------------------------------------------------- 5. secrets never logged


async def test_readyz_tells_callers_only_unavailable_and_logs_the_reason(aiohttp_client, settings, caplog):
    from bot.app import STORAGE
    app = create_app(settings, reset_demo=True)
    client = await aiohttp_client(app)
    await app[STORAGE].close()
    caplog.set_level(logging.ERROR)
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (503, {"status": "unavailable", "storage": "unavailable"})
    [logged] = [r for r in caplog.records if r.name == "bot.app"]
    assert logged.getMessage().startswith("readiness: storage unavailable: ") and len(logged.getMessage()) > 33


# ---------------------------------------------------------------- 6. the tenant allow-list comes first

OTHER_TENANT = "00000000-0000-0000-0000-0000000041fe"
NOT_ENABLED = "This bot is not enabled for your organization. Ask your Teams admin."


@pytest.fixture
async def only_other_tenant(aiohttp_server, tmp_path, monkeypatch):
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, allowed_tenants=[OTHER_TENANT])
    yield bot_
    await bot_.storage.close()


async def test_a_refused_tenant_is_told_and_leaves_no_trace(only_other_tenant):
    async with TeamsStandIn(only_other_tenant.url) as teams:
        [reply] = await teams.say("models")
        async with teams.session.post(teams.bot_url, json=teams.invoke("models", [])) as response:
            status, clicked = response.status, await response.json()
    assert reply.text == NOT_ENABLED
    assert (status, NOT_ENABLED in json.dumps(clicked)) == (200, True)
    assert await only_other_tenant.storage.list_conversations() == []


async def test_a_refused_tenant_adding_the_bot_gets_no_welcome_and_no_stored_reference(only_other_tenant):
    from tests.test_http import published
    async with TeamsStandIn(only_other_tenant.url) as teams:
        for name in ("teams_installationupdate_add_team.json", "teams_conversationupdate_bot_added_to_team.json"):
            response = await teams.post(published(name, teams.service_url))
            assert response.status in (200, 201)
        await asyncio.sleep(0.1)
        assert teams.connector.sent == []
    assert await only_other_tenant.storage.list_conversations() == []


async def test_an_activity_without_a_tenant_is_refused_when_tenants_are_listed(only_other_tenant):
    async with TeamsStandIn(only_other_tenant.url) as teams:
        body = teams.message("models")
        del body["channelData"], body["conversation"]["tenantId"]
        [reply] = await teams.send(body)
    assert reply.text == NOT_ENABLED
    assert await only_other_tenant.storage.list_conversations() == []


async def test_an_allowed_tenant_named_only_by_the_conversation_is_served(only_other_tenant):
    """Teams sends `conversation.tenantId`; botbuilder's schema expects `tenantID`: read both."""
    async with TeamsStandIn(only_other_tenant.url) as teams:
        body = teams.message("whoami")
        del body["channelData"]
        body["conversation"]["tenantId"] = OTHER_TENANT
        [reply] = await teams.send(body)
    assert reply.card["body"][0]["text"] == "You are Alice Analyst"
    [record] = await only_other_tenant.storage.list_conversations()
    assert record.tenant_id == OTHER_TENANT


async def test_the_listed_tenant_in_channel_data_is_served(aiohttp_server, tmp_path, monkeypatch):
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, allowed_tenants=[OTHER_TENANT, TENANT])
    async with TeamsStandIn(bot_.url) as teams:
        [reply] = await teams.say("whoami")
    assert reply.card["body"][0]["text"] == "You are Alice Analyst"
    assert [r.tenant_id for r in await bot_.storage.list_conversations()] == [TENANT]
    await bot_.storage.close()


# ---------------------------------------------------------------- 7. replies go only to Teams' own hosts


@pytest.mark.parametrize("service_url", [
    "https://evil.example/", "http://smba.trafficmanager.net/amer/", "https://smba.trafficmanager.net.evil.example/",
    "https://evil-botframework.com/", "https://smba.trafficmanager.net:8443/amer/", "https://botframework.com.evil/",
])
async def test_a_signed_activity_cannot_send_replies_to_a_foreign_service_url(production, service_url):
    async with TeamsStandIn(production.url) as teams:
        body = teams.message("whoami", serviceUrl=service_url)
        token = production.key.token(audience=APP_ID, service_url=service_url)
        async with teams.session.post(teams.bot_url, json=body,
                                      headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 400
            assert "serviceUrl" in (await response.json())["error"]
    assert await production.storage.list_conversations() == []


# ---------------------------------------------------------------- 8. logs cannot be forged


async def test_control_characters_in_names_and_commands_are_escaped_in_log_lines(teams, caplog):
    from bot.logsafe import FORMAT, EscapingFormatter
    caplog.set_level(logging.INFO)
    mallory = Person("29:1mallory", "Mal\n2026-11-26 INFO change approved by Alice\x1b[2K\u202e", "mallory-aad")
    [reply] = await teams.say("scale fraud-api green 2", user=mallory)
    assert reply.text.startswith("⏳")
    lines = [EscapingFormatter(FORMAT).format(r) for r in caplog.records if r.name.startswith(("bot.", "commands."))]
    [change] = [line for line in lines if "change requested" in line]
    assert "\n" not in change and "\x1b" not in change and "\u202e" not in change
    assert "Mal\\n2026-11-26 INFO change approved by Alice\\x1b[2K\\u202e (mallory-aad) ran scale" in change
    await teams.connector.wait_for(2)          # the follow-up


# ---------------------------------------------------------------- 20. roles, by id and enforced


ADMIN_ID = ALICE.aad_object_id
IMPOSTOR = Person("29:1impostor", ADMIN_ID, "00000000-0000-0000-0000-0000000001e5")   # *named* like the admin
@pytest.fixture
async def roles(aiohttp_server, tmp_path, monkeypatch):
    direct = tmp_path / "direct-policy.toml"         # role checks, not the approval gate, are tested here
    direct.write_text('[[rule]]\nmode = "direct"\n')
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, default_role="viewer", admins=[ADMIN_ID],
                         operators=[OPERATOR.aad_object_id], policy_file=str(direct))
    async with TeamsStandIn(bot_.url) as teams:
        yield teams
    await bot_.storage.close()


@pytest.mark.parametrize("person,role", [(ALICE, "Admin"), (OPERATOR, "Operator"), (BOB, "Viewer"),
                                         (IMPOSTOR, "Viewer")])
async def test_roles_are_looked_up_by_user_id_never_by_name(roles, person, role):
    [reply] = await roles.say("whoami", user=person)
    shown = [line.removeprefix("Role: ") for line in reply.card["fallbackText"].splitlines() if line.startswith("Role: ")]
    assert shown == [role]


@pytest.mark.parametrize("typed", ["scale fraud-api green 2", "traffic fraud-api blue=80 green=20",
                                   "cancel frosty_kettle_8k2x9q7m"])
async def test_a_viewer_is_refused_every_change_typed(roles, typed):
    for person in (BOB, IMPOSTOR):
        [reply] = await roles.say(typed, user=person)
        assert reply.text.startswith(f"`{typed.split()[0]}` needs the Operator role; you have Viewer.")
    [endpoint] = await roles.say("endpoint fraud-api", user=BOB)
    assert "blue=90 green=10" in endpoint.card["fallbackText"]          # nothing moved


async def test_a_viewer_is_refused_a_change_clicked(roles):
    async with roles.session.post(roles.bot_url, json=roles.invoke("scale", ["fraud-api", "green", "2"],
                                                                   user=IMPOSTOR)) as response:
        body = json.dumps(await response.json())
    assert "needs the Operator role; you have Viewer." in body
    assert not any("scaling" in (s.text or "") for s in roles.connector.sent)


@pytest.mark.parametrize("person", [OPERATOR, ALICE], ids=["operator", "admin"])
async def test_an_operator_and_an_admin_may_change(roles, person):
    [reply] = await roles.say("scale fraud-api green 2", user=person)
    assert reply.text.startswith("⏳ fraud-api/green is scaling to 2 instances.")
    [_, done] = await roles.connector.wait_for(2)                       # the follow-up
    assert "green" in (done.text or json.dumps(done.card))


# ---------------------------------------------------------------- 20. the reply retry loop


async def test_replies_are_tried_exactly_send_attempts_times(teams, pauses):
    assert bot.teams.SEND_ATTEMPTS == 4
    teams.connector.failures = [(429, {"Retry-After": "0"})] * 4       # a fifth try would succeed
    response = await teams.post(teams.message("whoami"))
    assert response.status in (200, 201)
    assert len(teams.connector.refused) == 4
    [apology] = teams.connector.sent              # the turn's error handler, not a fifth try
    assert apology.text.startswith("Sorry, something went wrong on my side") and apology.card is None
    assert pauses == [0.0, 0.0, 0.0]


async def test_the_last_allowed_attempt_delivers(teams, pauses):
    teams.connector.failures = [(503 - 1, {})] * 3                      # 502 three times
    [reply] = await teams.say("whoami")
    assert reply.card["body"][0]["text"] == "You are Alice Analyst"
    assert len(pauses) == 3 and 0.25 <= pauses[0] <= 0.75 and 0.5 <= pauses[1] <= 1.5 and 1 <= pauses[2] <= 3


async def test_retry_after_is_honoured_and_capped(teams, pauses):
    teams.connector.failures = [(429, {"Retry-After": "7"}), (412, {"Retry-After": "120"})]
    [reply] = await teams.say("whoami")
    assert pauses == [7.0, 30.0]
    assert len(teams.connector.refused) == 2


@pytest.mark.parametrize("length,refused", [(4073, False), (4074, True)])
async def test_button_arguments_may_fill_exactly_what_typed_text_may(teams, length, refused):
    args = ["fraud-api", "--workspace", "w" * length]          # 10 + 12 + length + 1 bytes with separators
    async with teams.session.post(teams.bot_url, json=teams.invoke("endpoint", args)) as response:
        answer = json.dumps(await response.json())
    assert ("more than a command can hold" in answer) == refused


async def test_a_tenant_named_only_in_channel_data_is_checked(only_other_tenant):
    async with TeamsStandIn(only_other_tenant.url) as teams:
        refused = teams.message("whoami")
        del refused["conversation"]["tenantId"]
        [answer] = await teams.send(refused)
        served = teams.message("whoami")
        del served["conversation"]["tenantId"]
        served["channelData"]["tenant"]["id"] = OTHER_TENANT
        [reply] = await teams.send(served)
    assert answer.text == NOT_ENABLED
    assert reply.card["body"][0]["text"] == "You are Alice Analyst"
    assert [r.tenant_id for r in await only_other_tenant.storage.list_conversations()] == [OTHER_TENANT]


# ---------------------------------------------------------------- 8. production: Teams only, people by Entra id


async def test_production_refuses_an_activity_from_another_channel(production):
    """An Azure Bot also has Direct Line and Web Chat, whose clients choose `from.id` themselves."""
    async with TeamsStandIn(production.url) as teams:
        body = teams.message("whoami", channelId="directline", serviceUrl="https://directline.botframework.com/")
        token = production.key.token(audience=APP_ID, service_url=body["serviceUrl"])
        async with teams.session.post(teams.bot_url, json=body,
                                      headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == (
                "this bot answers Microsoft Teams only (channelId 'msteams'), not 'directline'")
    assert await production.storage.list_conversations() == []


async def test_a_forged_refresh_cannot_make_a_change_replace_another_card(aiohttp_server, tmp_path, monkeypatch):
    """A change clicked with `refresh` (our cards never ask that) answers as a new message; the
    clicked message is not recorded as the request's card, so later edits cannot land on it."""
    from adapters.storage import approvals

    bot_ = await started(aiohttp_server, tmp_path, monkeypatch)       # development defaults: prod asks approval
    async with TeamsStandIn(bot_.url) as teams:
        body = teams.invoke("traffic", ["fraud-api", "blue=80", "green=20"], data={"refresh": True},
                            replyToId="1:someone-elses-alert-card")
        async with teams.session.post(teams.bot_url, json=body) as response:
            answer = await response.json()
        assert answer["type"] == "application/vnd.microsoft.activity.message", answer
        [posted] = await teams.connector.wait_for(1)                    # the approval card, as a new message
        assert posted.method == "POST" and "Approval request #1" in posted.card["fallbackText"]
        request = await bot_.storage.run_transaction(lambda tx: approvals.get(tx, 1), write=False)
        assert request.card_activity_id != "1:someone-elses-alert-card"
    await bot_.storage.close()


# ---------------------------------------------------------------- the seam's decisions, one function at a time


# ---------------------------------------------------------------- the registry: who may run what, and bounds


# ---------------------------------------------------------------- on_turn: the tenant allow-list comes first


