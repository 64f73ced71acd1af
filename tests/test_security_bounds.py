"""Nothing lost, nothing forged (issue 17, security items 7, 8, 9, 12 and 13): what a stranger sends
is checked as the code that uses it will read it, costs at most linear time, and is bounded in
shape before it is stored.

Worst-case inputs run under a per-test timeout (pytest-timeout) rather than an assertion on
measured time; bench/hostile_inputs.py measures the figures."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from adapters.storage import open_storage
from bot.app import STORAGE, create_app
from tests.conftest import Guard
from tests.teams_client import TeamsStandIn

CHANNEL = "19:ml-platform@thread.tacv2;messageid=1700000000000"
TOKEN = "t" * 40
KEY = "k" * 32


@pytest.fixture
def guard() -> Guard:
    return Guard(key=KEY, token=TOKEN, channel=CHANNEL)


# the guarded bot of tests/conftest.py, under the names these tests use
@pytest.fixture
def bounds_settings(guarded_settings):
    return guarded_settings


@pytest.fixture
def server(guarded_server):
    return guarded_server


@pytest.fixture
def teams(guarded_teams):
    return guarded_teams


async def call(teams: TeamsStandIn, method: str, path: str, *, raw: bytes | None = None, body=None,
               headers: dict | None = None) -> tuple[int, dict | str, dict]:
    url = teams.bot_url.replace("/api/messages", path)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", "x-functions-key": KEY, **(headers or {})}
    if path != "/api/messages":                   # there a token is the channel's JWT
        sent.setdefault("Authorization", f"Bearer {TOKEN}")
    async with teams.session.request(method, url, data=data, headers=sent) as response:
        text = await response.text()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = text
        return response.status, answer, dict(response.headers)


def gate_body(**fields) -> dict:
    return {"action": "deploy", "target": "fraud-model:7", "requester": "ci", "conversation": CHANNEL, **fields}


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


# ---------------------------------------------------------------- 9. bounded structure at the door


@pytest.mark.parametrize("field", ["parameters", "before", "after"])
async def test_a_stored_json_value_nested_too_deep_is_422_naming_the_field_and_exports_still_work(teams, field):
    status, answer, _ = await call(teams, "POST", "/api/approvals", body=gate_body(**{field: nested(600)}))
    assert (status, answer) == (400, {"error": "body is not JSON: the JSON is nested deeper than 32 levels"})
    status, answer, _ = await call(teams, "POST", "/api/approvals", body=gate_body(**{field: nested(20)}))
    assert status == 422
    assert answer["field"] == field and "nested deeper than 8 levels" in answer["error"]
    status, answer, _ = await call(teams, "POST", "/api/approvals", body=gate_body(**{field: nested(8)}))
    assert status == 201
    for fmt in ("csv", "jsonl"):
        status, text, _ = await call(teams, "GET", f"/api/audit?format={fmt}")
        assert status == 200 and "fraud-model:7" in text


@pytest.mark.parametrize("path", ["/api/approvals", "/api/events", "/api/alerts", "/api/messages"])
@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": [Infinity]}', b'{"a": -Infinity}', b'{"a": 1e999}'])
async def test_nan_and_infinities_are_400_on_every_route(teams, server, path, raw):
    from tests.test_hardening import row_counts
    before = await row_counts(server.app[STORAGE])
    status, answer, _ = await call(teams, "POST", path, raw=raw)
    assert status == 400, answer
    assert "not a JSON number" in answer["error"]
    assert await row_counts(server.app[STORAGE]) == before


# ---------------------------------------------------------------- 8. no input costs more than linear time

MAX_SIZES = {"/api/approvals": 64 * 1024, "/api/events": 1024 * 1024, "/api/alerts": 1024 * 1024,
             "/api/messages": 256 * 1024}


def worst_cases(size: int) -> dict[str, bytes]:
    """Bodies of exactly `size` bytes that a naive scanner or a backtracking pattern chokes on."""
    return {
        "unterminated string of \\\" pairs": (b'"' + b'\\"' * size)[:size],
        "open brackets": b"[" * size,
        "flat empty lists": (b"[" + b"[]," * size)[:size - 3] + b"[]]",
        "brackets in one long string": (b'["' + b"[" * size)[:size - 2] + b'"]',
        "escaped backslashes": (b'["' + b"\\\\" * size)[:size - 2] + b'"]',
    }


@pytest.mark.timeout(20, method="thread")   # a regex stuck in C never sees a signal
@pytest.mark.parametrize("path", list(MAX_SIZES))
async def test_a_worst_case_body_of_the_largest_size_is_answered_and_the_bot_stays_up(teams, server, path):
    from tests.test_hardening import row_counts
    before = await row_counts(server.app[STORAGE])
    for name, raw in worst_cases(MAX_SIZES[path]).items():
        assert len(raw) == MAX_SIZES[path], name
        status, answer, _ = await call(teams, "POST", path, raw=raw)
        if name in ("flat empty lists", "brackets in one long string", "escaped backslashes"):
            assert status == (400 if path == "/api/messages" else 422), (name, answer)   # JSON of another shape
        else:
            assert status == 400, (name, answer)
        assert (await call(teams, "GET", "/healthz"))[0] == 200
    assert await row_counts(server.app[STORAGE]) == before


def test_the_depth_scanner_understands_strings_and_escapes():
    from adapters.jsonsafe import too_deep
    assert not too_deep('["' + "[" * 100 + '"]', 32)                   # brackets inside a string
    assert too_deep('["\\\\", ' + "[" * 33 + "]" * 33 + "]", 32)      # an escaped backslash ends the string
    assert not too_deep('["\\"' + "[" * 40 + '"]', 32)                 # an escaped quote does not
    assert not too_deep('"' + '\\"' * 1000, 32)                        # unterminated: not deep (and not JSON)
    assert too_deep("{" * 33, 32) and not too_deep("{" * 32, 32)


@pytest.mark.timeout(10, method="thread")   # a regex stuck in C never sees a signal
@pytest.mark.parametrize("text", ["<a" * 60_000, "<a" * 120_000, "<at>" * 60_000, "<" * 240_000, "<a" * 8_000],
                         ids=["<a x 60000", "<a x 120000", "<at> x 60000", "< x 240000", "<a x 8000 (under the raw cut)"])
async def test_message_text_that_defeated_the_tag_stripper_gets_an_answer(teams, text):
    [reply] = await teams.say(text, mention=True, conversation=CHANNEL, kind="channel")
    assert "too long for a command" in (reply.text or "")
    [reply] = await teams.say("whoami", mention=True, conversation=CHANNEL, kind="channel")
    assert "Alice" in (reply.text or json.dumps(reply.card))


def test_command_text_strips_tags_and_mentions_as_before():
    from botbuilder.schema import Activity

    from bot.activity import command_text
    activity = Activity().deserialize({"type": "message", "text": "<at>MLOps bot</at> <p>models&nbsp;fraud</p> a<b",
                                       "entities": []})
    assert command_text(activity) == "models fraud a<b"


@pytest.fixture
async def served_like_run_app(bounds_settings):
    """The app behind an AppRunner with run_app's defaults (aiohttp's test server cancels a handler
    whose client left, which `mlops-bot serve` does not), on a free port: (host, port)."""
    from aiohttp import web
    runner = web.AppRunner(create_app(bounds_settings, reset_demo=True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield "127.0.0.1", site._server.sockets[0].getsockname()[1]
    await runner.cleanup()


@pytest.mark.timeout(20)
async def test_a_body_that_never_finishes_gets_408_and_one_that_is_abandoned_one_log_line(served_like_run_app,
                                                                                          monkeypatch, caplog):
    import asyncio

    import bot.bodies
    monkeypatch.setattr(bot.bodies, "BODY_READ_SECONDS", 0.5)
    caplog.set_level(logging.INFO)
    host, port = served_like_run_app

    async def partial(path: str, *, close: bool) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     f"Authorization: Bearer {TOKEN}\r\nx-functions-key: {KEY}\r\nContent-Length: 1000\r\n\r\n"
                     '{"action": "dep'.encode())
        await writer.drain()
        if close:
            await asyncio.sleep(0.2)                # the handler is waiting for the rest
            writer.close()
            return b""
        answer = await reader.read(4096)
        writer.close()
        return answer

    for path in ("/api/approvals", "/api/events", "/api/messages"):
        answer = await partial(path, close=False)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 0.5 seconds" in answer
    for path in ("/api/approvals", "/api/events", "/api/messages"):
        caplog.clear()
        await partial(path, close=True)
        for _ in range(100):
            if any("went away" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        lines = [r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith("aiohttp.access")]
        assert [(r.name, r.levelname, r.exc_info) for r in lines] == [("bot.app", "INFO", None)]
        assert f"POST {path}: the client went away" in lines[0].getMessage()


# ---------------------------------------------------------------- 7. serviceUrl as the HTTP client reads it


@pytest.mark.parametrize("service_url,problem", [
    ("https://evil.example\\@smba.trafficmanager.net/amer/",
     "'serviceUrl' may not contain backslashes, spaces, control or non-ASCII characters"),
    ("https://evil.example%40@smba.trafficmanager.net/", "'serviceUrl' may not carry user information ('@' before the host)"),
    ("https://user@smba.trafficmanager.net/", "'serviceUrl' may not carry user information ('@' before the host)"),
    ("https://evil%2esmba.trafficmanager.net/", "'serviceUrl' may not contain %-escapes in its host"),
    ("https://smba.trafficmanager.net%2eevil.example/", "'serviceUrl' may not contain %-escapes in its host"),
    ("https://smba.trafficmanager.net/amer/?x=1", "'serviceUrl' may not carry a query or a fragment"),
    ("https://smba.trafficmanager.net./amer/", "'serviceUrl' host 'smba.trafficmanager.net.' is not a host name"),
    ("https://smba.trafficmanager.net\t/amer/",
     "'serviceUrl' may not contain backslashes, spaces, control or non-ASCII characters"),
    ("https://smba.traffícmanager.net/amer/",
     "'serviceUrl' may not contain backslashes, spaces, control or non-ASCII characters"),
    ("https://smba.trafficmanager.net/amer/", None),
])
def test_service_url_is_checked_as_the_http_clients_read_it(service_url, problem):
    from bot.settings import DEFAULT_SERVICE_URL_HOSTS
    from bot.activity import service_url_problem
    assert service_url_problem(service_url, DEFAULT_SERVICE_URL_HOSTS) == problem
    assert service_url_problem(service_url, ()) == problem          # development: any host, read as strictly


def test_every_client_the_bot_sends_with_reads_the_accepted_host():
    """What made the forgery work: the standard parser and requests/urllib3 disagree on the host."""
    import urllib3.util
    from urllib.parse import urlsplit
    forged = "https://evil.example\\@smba.trafficmanager.net/"
    assert urlsplit(forged).hostname == "smba.trafficmanager.net"
    assert urllib3.util.parse_url(forged).host == "evil.example"
    from bot.activity import _clients_read_host
    assert _clients_read_host("https://smba.trafficmanager.net/amer/") == {"smba.trafficmanager.net"}


def test_the_stored_reference_carries_the_url_rebuilt_from_its_checked_parts():
    from botbuilder.schema import Activity

    from bot.teams import conversation_record
    activity = Activity().deserialize({
        "type": "message", "id": "1", "channelId": "msteams", "serviceUrl": "https://SMBA.TrafficManager.net:443/amer/",
        "from": {"id": "29:a", "aadObjectId": "aad-a"}, "recipient": {"id": "28:bot"},
        "conversation": {"id": "a:1", "conversationType": "personal", "tenantId": "t"}})
    assert conversation_record(activity).reference["serviceUrl"] == "https://smba.trafficmanager.net/amer/"


async def test_a_signed_activity_with_a_forged_service_url_is_refused_and_nothing_is_stored(
        aiohttp_server, tmp_path, monkeypatch):
    from tests.signing_keys import SigningKey, trust
    from tests.test_security import APP_ID, started
    key = SigningKey("channel-key-1")
    trust(monkeypatch, key)
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, host="0.0.0.0", app_id=APP_ID, allowed_tenants=["*"],
                         app_password="not-a-real-secret")
    forged = "https://evil.example\\@smba.trafficmanager.net/amer/"
    try:
        async with TeamsStandIn(bot_.url) as teams:
            body = teams.message("whoami", serviceUrl=forged)
            token = key.token(audience=APP_ID, service_url=forged)
            async with teams.session.post(teams.bot_url, json=body,
                                          headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 400
                assert "backslashes" in (await response.json())["error"]
        assert await bot_.storage.list_conversations() == []
    finally:
        await bot_.storage.close()


# ---------------------------------------------------------------- 12. development mode answers loopback names only


@pytest.mark.parametrize("host,answered", [
    ("127.0.0.1:3978", True), ("localhost", True), ("LOCALHOST:3978", True), ("[::1]:3978", True), ("[::1]", True),
    ("evil.example", False), ("evil.example:3978", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io:3978", False), ("127.0.0.2", False), ("localhost:x", False), ("", False),
])
@pytest.mark.parametrize("path", ["/api/messages", "/healthz", "/api/audit"])
async def test_development_mode_answers_only_requests_for_loopback_names(teams, host, answered, path):
    """A DNS-rebinding page (evil.example resolving to 127.0.0.1) must not drive the bot as Admin."""
    body = teams.message("whoami") if path == "/api/messages" else None
    before = len(teams.connector.sent)
    status, answer, _ = await call(teams, "POST" if body else "GET", path, body=body, headers={"Host": host})
    if answered:
        assert status in (200, 201), answer
    else:
        assert status == 421
        assert answer == {"error": "development mode answers only requests for localhost, 127.0.0.1 or [::1] "
                                   "(set MicrosoftAppId to serve other names)"}
        assert len(teams.connector.sent) == before


async def test_with_an_app_id_any_host_name_is_served(aiohttp_server, tmp_path, monkeypatch):
    from tests.test_security import APP_ID, started
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, host="0.0.0.0", app_id=APP_ID, allowed_tenants=["*"],
                         app_password="not-a-real-secret")
    try:
        async with TeamsStandIn(bot_.url) as teams:
            async with teams.session.get(bot_.url.replace("/api/messages", "/healthz"),
                                         headers={"Host": "mlops-bot.contoso.com"}) as response:
                assert response.status == 200
    finally:
        await bot_.storage.close()


# ---------------------------------------------------------------- 13. small things


def test_the_log_escaper_escapes_the_line_and_paragraph_separators():
    from bot.logsafe import EscapingFormatter, escape_controls
    assert escape_controls("Mallory\u2028INFO change approved by admin\u2029") == \
        "Mallory\\u2028INFO change approved by admin\\u2029"
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "hello %s", ("a\u2028b",), None)
    assert EscapingFormatter("%(message)s").format(record).splitlines() == ["hello a\\u2028b"]


@pytest.mark.parametrize("value,cell", [
    ("\0=1+1", "'\0=1+1"), ("\uff1d1+1", "'\uff1d1+1"), ("\uff0bcmd", "'\uff0bcmd"), ("\uff0d2+3", "'\uff0d2+3"),
    ("\uff20SUM(1)", "'\uff20SUM(1)"), ("=1", "'=1"), ("fraud-api", "fraud-api"), (-5, -5),
])
def test_the_csv_export_neutralises_nul_and_full_width_formula_starts(value, cell):
    from bot.api import _csv_cell
    assert _csv_cell(value) == cell


async def test_nul_and_full_width_formula_starts_are_quoted_in_the_csv_over_http(teams):
    import csv
    import io
    names = ["\0=1+1", "\uff1dHYPERLINK(1)", "\uff0b1", "\uff0d1", "\uff20SUM(1)"]
    for name in names:
        status, answer, _ = await call(teams, "POST", "/api/approvals", body=gate_body(requester=name))
        assert status == 201, answer
    status, table, _ = await call(teams, "GET", "/api/audit?format=csv")
    rows = [row for row in csv.DictReader(io.StringIO(table, newline="")) if row["event"] == "requested"]
    assert [row["actor_name"] for row in rows] == ["'" + name for name in names]


class Clock:
    def __init__(self):
        from datetime import datetime, timezone
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def limited(aiohttp_server, bounds_settings):
    clock = Clock()
    settings = replace(bounds_settings, change_requests_per_minute=2)
    server = await aiohttp_server(create_app(settings, reset_demo=True, clock=clock))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as stand_in:
        await stand_in.say("help", mention=True, conversation=CHANNEL, kind="channel")
        stand_in.clock = clock
        yield stand_in


async def test_change_requests_in_chat_are_limited_per_requester_with_a_clear_message(limited):
    asked = []
    for split in ("blue=10 green=90", "blue=20 green=80", "blue=30 green=70"):
        [reply] = await limited.say(f"traffic fraud-api {split}", mention=True, conversation=CHANNEL, kind="channel")
        asked.append(reply.text or reply.card.get("fallbackText", ""))
    assert "Approval request" in asked[0] and "Approval request" in asked[1]
    # A sliding window now, shared by replicas (commands/changes/ratelimit.py), not a per-process token bucket that
    # refilled one request every 60/N s: two requests at 9:00 keep the third out until 9:01, and direct
    # changes count too.
    assert asked[2] == ("You have made 2 change requests in the last minute (changes run directly count too), "
                        "the most I take from one person; try again in 60 s. (The limit keeps a loop or a slip "
                        "from flooding the approvers.)")
    limited.clock.advance(59)
    [reply] = await limited.say("traffic fraud-api blue=40 green=60", mention=True, conversation=CHANNEL,
                                kind="channel")
    assert "try again in 1 s" in reply.text
    limited.clock.advance(1)
    [reply] = await limited.say("traffic fraud-api blue=40 green=60", mention=True, conversation=CHANNEL,
                                kind="channel")
    assert "Approval request" in (reply.text or reply.card.get("fallbackText", ""))


async def test_the_pipeline_api_answers_429_with_retry_after_per_requester(limited):
    for _ in range(2):
        assert (await call(limited, "POST", "/api/approvals", body=gate_body()))[0] == 201
    status, answer, headers = await call(limited, "POST", "/api/approvals", body=gate_body())
    assert (status, headers["Retry-After"], answer["retry_after"]) == (429, "60", 60)   # a sliding minute now
    assert "2 change requests in the last minute" in answer["error"]
    status, answer, _ = await call(limited, "POST", "/api/approvals",
                                   body=gate_body(action="scale", parameters={"endpoint": "fraud-api"}))
    assert status == 429                                               # the same requester, another change
    assert (await call(limited, "POST", "/api/approvals", body=gate_body(requester="other-ci")))[0] == 201
    limited.clock.advance(60)
    assert (await call(limited, "POST", "/api/approvals", body=gate_body()))[0] == 201


async def test_a_deep_record_stored_before_the_bound_does_not_break_the_exports(teams, server):
    from datetime import datetime, timezone

    from adapters.storage import audit
    entry = audit.AuditEntry(at=datetime.now(timezone.utc), event="requested", actor_id="pipeline:ci",
                             actor_name="ci", target="legacy", parameters=nested(600))
    await server.app[STORAGE].run_transaction(lambda tx: audit.append(tx, entry))
    for fmt in ("csv", "jsonl"):
        status, text, _ = await call(teams, "GET", f"/api/audit?format={fmt}")
        assert status == 200 and "legacy" in text
    records = await server.app[STORAGE].run_transaction(lambda tx: audit.scan(tx), write=False)
    assert audit.to_dict(records[-1])["target"] == "legacy"


def test_at_most_max_mentions_people_are_looked_up_per_message():
    from botbuilder.schema import Activity

    from bot.activity import MAX_MENTIONS, _other_mentions
    entities = [{"type": "mention", "text": f"<at>P{n}</at>", "mentioned": {"id": f"29:p{n}", "name": f"P{n}"}}
                for n in range(2000)]
    activity = Activity().deserialize({"type": "message", "text": " ".join(e["text"] for e in entities),
                                       "recipient": {"id": "28:bot"}, "entities": entities})
    found = _other_mentions(activity)
    assert [member_id for _, member_id, _ in found] == [f"29:p{n}" for n in range(MAX_MENTIONS)]


async def test_a_stored_reference_with_a_forged_service_url_is_never_sent_to(tmp_path):
    from datetime import datetime, timezone

    from adapters.storage import ConversationRecord
    from bot.outbox import DeliveryFailed
    from bot.settings import DEFAULT_SERVICE_URL_HOSTS
    from bot.teams import TeamsBot

    class NoAdapter:
        async def continue_conversation(self, *args, **kwargs):
            raise AssertionError("the bot tried to send")

    storage = open_storage(f"sqlite:///{tmp_path / 'bot.db'}")
    await storage.open()
    try:
        forged = "https://evil.example\\@smba.trafficmanager.net/amer/"
        await storage.save_conversation(ConversationRecord(
            conversation_id="a:1", kind="personal", tenant_id="t", team_id="", channel_id="", user_id="aad-a",
            reference={"serviceUrl": forged, "channelId": "msteams", "conversation": {"id": "a:1"},
                       "bot": {"id": "28:bot"}, "user": {"id": "29:a"}},
            updated_at=datetime.now(timezone.utc)))
        for hosts in (DEFAULT_SERVICE_URL_HOSTS, ()):
            bot_ = TeamsBot(None, storage, NoAdapter(), "app-id", service_url_hosts=hosts)
            with pytest.raises(DeliveryFailed, match="backslashes") as refused:
                await bot_.deliver("a:1", {"text": "hello"}, None)
            assert refused.value.status == 400
    finally:
        await storage.close()
