"""Nothing lost, nothing forged (issue 17, security items 7, 8, 9, 12 and 13): what a stranger sends
is checked as the code that uses it will read it, costs at most linear time, and is bounded in
shape before it is stored.

Worst-case inputs run under a per-test timeout (pytest-timeout) rather than an assertion on
measured time; bench/hostile_inputs.py measures the figures."""

from __future__ import annotations

import json
import logging

import pytest

from adapters.storage import open_storage
from bot.app import STORAGE, create_app
from bot.settings import load_settings
from tests.teams_client import ALICE, BOB, TeamsStandIn

CHANNEL = "19:ml-platform@thread.tacv2;messageid=1700000000000"
TOKEN = "t" * 40
KEY = "k" * 32


@pytest.fixture
def bounds_settings(tmp_path, monkeypatch):
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                         approvers=BOB.aad_object_id, api_token=TOKEN, webhook_key=KEY)


@pytest.fixture
async def server(aiohttp_server, bounds_settings):
    return await aiohttp_server(create_app(bounds_settings, reset_demo=True))


@pytest.fixture
async def teams(server):
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as stand_in:
        await stand_in.say("help", mention=True, conversation=CHANNEL, kind="channel")   # a stored channel
        yield stand_in


async def call(teams: TeamsStandIn, method: str, path: str, *, raw: bytes | None = None, body=None,
               headers: dict | None = None) -> tuple[int, dict | str, dict]:
    url = teams.bot_url.replace("/api/messages", path)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}", "x-functions-key": KEY,
            **(headers or {})}
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


@pytest.mark.timeout(20)
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


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", ["<a" * 60_000, "<at>" * 30_000, "<" * 120_000, "<a" * 8_000],
                         ids=["<a x 60000", "<at> x 30000", "< x 120000", "<a x 8000 (under the raw cut)"])
async def test_message_text_that_defeated_the_tag_stripper_gets_an_answer(teams, text):
    [reply] = await teams.say(text, mention=True, conversation=CHANNEL, kind="channel")
    assert "too long for a command" in (reply.text or "")
    [reply] = await teams.say("whoami", mention=True, conversation=CHANNEL, kind="channel")
    assert "Alice" in (reply.text or json.dumps(reply.card))


def test_command_text_strips_tags_and_mentions_as_before():
    from botbuilder.schema import Activity

    from bot.teams import command_text
    activity = Activity().deserialize({"type": "message", "text": "<at>MLOps bot</at> <p>models&nbsp;fraud</p> a<b",
                                       "entities": []})
    assert command_text(activity) == "models fraud a<b"
