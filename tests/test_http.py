"""Every command and card click through the real botbuilder CloudAdapter over HTTP.

A connector stand-in (tests/teams_client.py) plays the Bot Connector service and receives the
replies, so these tests see exactly what Teams would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.storage import open_storage
from bot.app import create_app
from commands.catalog import catalog
from tests.card_schema import assert_valid_card
from tests.conftest import APP_ID
from tests.signing_keys import SigningKey
from tests.teams_client import ALICE, BOB, TeamsStandIn

SAMPLES = Path(__file__).parent / "fixtures" / "teams"

# (typed command, words the reply must contain)
EVERY_COMMAND = [
    ("help", ["What I can do", "models", "endpoint", "jobs"]),
    ("help traffic", ["Usage: `traffic ‹endpoint› ‹deployment=percent› ...", "Needs the Operator role."]),
    ("whoami", ["You are Alice Analyst", ALICE.aad_object_id, "Admin"]),
    ("workspace", ["Workspace ml-prod", "prod", "local"]),
    ("models", ["Registered models", "fraud-model", "churn-model", "credit-risk"]),
    ("models fraud-model --stage Production", ["Versions of fraud-model in Production", "v3"]),
    ("model fraud-model:3", ["Model fraud-model:3", "Production", "auc"]),
    ("endpoints", ["Online endpoints", "fraud-api", "churn-api", "Batch endpoints", "churn-batch"]),
    ("endpoint fraud-api", ["Endpoint fraud-api", "blue=90 green=10", "fraud-model:3", "Latency p99"]),
    ("jobs --status Failed", ["Failed jobs", "train-fraud-pipeline"]),
    ("job frosty_kettle_8k2x9q7m", ["train-fraud-pipeline", "Failed", "Steps"]),
    ("schedules", ["Schedules", "cron", "recurrence", "disabled"]),
    ("compute", ["Compute", "cpu-cluster", "amlcompute", "Running"]),
]


def words_of(sent) -> str:
    return sent.card["fallbackText"] if sent.card else sent.text


@pytest.mark.parametrize("typed,expected", EVERY_COMMAND, ids=[c for c, _ in EVERY_COMMAND])
async def test_every_command_answers_over_http(teams, typed, expected):
    [reply] = await teams.say(typed)
    assert reply.method == "POST"
    assert reply.conversation_id == f"a:personal-{ALICE.id}"
    for word in expected:
        assert word in words_of(reply), (word, words_of(reply))
    if reply.card:
        assert_valid_card(reply.card)


@pytest.mark.parametrize("typed", [c.example for c in catalog()], ids=[c.name for c in catalog()])
async def test_every_documented_example_runs_over_http(teams, typed):
    [reply] = await teams.say(typed)
    words = words_of(reply)
    for failure in ("incident", "refused", "Usage:", "I don't know", "No "):
        assert not words.startswith(failure) and "incident" not in words, words
    if reply.card:
        assert_valid_card(reply.card)


async def test_throttled_replies_are_sent_again(teams):
    teams.connector.failures = [(429, {"Retry-After": "0"}), (502, {"Retry-After": "0"})]
    [reply] = await teams.say("whoami")
    assert [r.body["attachments"][0]["content"]["body"][0]["text"] for r in teams.connector.refused] == [
        "You are Alice Analyst"] * 2
    assert reply.card["body"][0]["text"] == "You are Alice Analyst"


async def test_a_reply_refused_for_good_is_not_retried(teams):
    teams.connector.failures = [(403, {})]
    response = await teams.post(teams.message("whoami"))
    assert response.status in (200, 201)
    assert len(teams.connector.refused) == 1


async def test_mistyped_command_gets_did_you_mean(teams):
    [reply] = await teams.say("modles")
    assert reply.text == ("I don't know the command 'modles'. Did you mean `models` or `model`? "
                          "Type `help` to see what I can do.")


async def test_unknown_endpoint_gets_did_you_mean(teams):
    [reply] = await teams.say("endpoint fraud-apy")
    assert reply.text == "No endpoint named 'fraud-apy'. Did you mean `fraud-api`?"


async def test_channel_mention_is_stripped_and_answered_in_the_thread(teams):
    thread = "19:ops@thread.tacv2;messageid=1700000000000"
    [reply] = await teams.say("models", mention=True, conversation=thread, kind="channel")
    assert reply.conversation_id == thread
    assert "Registered models" in reply.card["fallbackText"]


async def test_navigation_click_posts_a_new_message_and_keeps_the_card(teams):
    [reply] = await teams.say("models")
    status, body = await teams.click(reply.card, "Versions")   # first row: churn-model
    assert status == 200
    assert body["statusCode"] == 200
    assert body["type"] == "application/vnd.microsoft.activity.message"
    assert body["value"] == "Versions of churn-model"
    [posted] = (await teams.connector.wait_for(2))[1:]
    assert posted.card["body"][0]["text"] == "Versions of churn-model"
    assert_valid_card(posted.card)


async def test_click_with_a_foreign_verb_keeps_the_card_and_explains_in_a_message(teams):
    status, body = await teams.click({"actions": [{"type": "Action.Execute", "title": "Go", "verb": "food",
                                                  "data": {"args": ["x"]}}]}, "Go")
    assert status == 200
    assert body["type"] == "application/vnd.microsoft.activity.message"
    [posted] = await teams.connector.wait_for(1)
    assert "doesn't carry a command I know" in posted.text


async def test_action_submit_runs_the_same_command(teams):
    [reply] = await teams.send(teams.activity("message", value={"verb": "endpoint", "args": ["churn-api"]}))
    assert reply.card["body"][0]["text"] == "Endpoint churn-api"


async def test_an_inbound_activity_is_deserialized_once(teams, monkeypatch):
    """The bot's own check parses the activity and the turn runs on that Activity: botbuilder's
    CloudAdapter.process would parse the body and deserialize it a second time (issue 21)."""
    import bot.teams

    original = bot.teams.Activity.deserialize.__func__
    kinds: list[str] = []

    def counting(cls, data, content_type=None):
        if cls is bot.teams.Activity:
            kinds.append(data.get("type"))
        return original(cls, data, content_type)

    monkeypatch.setattr(bot.teams.Activity, "deserialize", classmethod(counting))
    [reply] = await teams.say("whoami")
    assert "You are Alice Analyst" in words_of(reply)
    assert kinds == ["message"]


async def test_every_message_stores_the_conversation_reference(aiohttp_server, settings):
    app = create_app(settings, reset_demo=True)
    server = await aiohttp_server(app)
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("whoami", user=BOB)
        storage = open_storage(settings.effective_storage_url)
        await storage.open()
        try:
            [record] = await storage.list_conversations()
        finally:
            await storage.close()
    assert (record.conversation_id, record.kind, record.user_id) == (f"a:personal-{BOB.id}", "personal",
                                                                     BOB.aad_object_id)
    assert record.reference["serviceUrl"] == teams.service_url


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("raw,content_type,status", [
    (b"this is not json", "application/json", 400),
    (b"[1, 2, 3]", "application/json", 400),
    (b'{"type": ""}', "application/json", 400),
    (b'{"type": "message", "text": "models"}', "application/json", 400),                 # no conversation
    (b'{"type": "message", "conversation": {"id": "c"}, "serviceUrl": "http://x"}', "application/json", 400),
    (b'{"type": "message"}', "text/plain", 415),
    (b"{" + b'"a":"' + b"x" * 300_000 + b'"}', "application/json", 413),
])
async def test_malformed_activities_get_4xx_not_500(teams, raw, content_type, status):
    response = await teams.post(None, raw=raw, headers={"Content-Type": content_type})
    assert response.status == status
    assert teams.connector.sent == []


async def test_oversized_command_text_is_refused_politely(teams):
    [reply] = await teams.say("models " + "x" * 5000)
    assert reply.text.startswith("That message is too long for a command")


# ---------------------------------------------------------------- authentication


ATTACKER = SigningKey("attacker-key")

FORGERIES = {
    "no token": lambda key, url: None,
    "not a jwt": lambda key, url: "not-a-jwt",
    "unknown key id": lambda key, url: ATTACKER.token(audience=APP_ID, service_url=url),
    "known key id, wrong signature": lambda key, url: ATTACKER.token(audience=APP_ID, service_url=url, kid=key.kid),
    "another bot's audience": lambda key, url: key.token(audience="99999999-0000-0000-0000-000000000000",
                                                         service_url=url),
    "wrong issuer": lambda key, url: key.token(audience=APP_ID, service_url=url, issuer="https://evil.example"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_with_an_app_id_unauthenticated_requests_get_401_and_run_nothing(secured, forgery):
    async with TeamsStandIn(secured.url) as teams:
        teams.token = FORGERIES[forgery](secured.key, teams.service_url)
        response = await teams.post(teams.message("models"))
        assert response.status == 401
        assert teams.connector.sent == []
    assert await secured.storage.list_conversations() == []


async def test_with_an_app_id_a_validly_signed_request_runs(secured):
    async with TeamsStandIn(secured.url) as teams:
        teams.token = secured.key.token(audience=APP_ID, service_url=teams.service_url)
        response = await teams.post(teams.message("whoami"))
    assert response.status in (200, 201)
    [record] = await secured.storage.list_conversations()
    assert record.user_id == ALICE.aad_object_id


# ---------------------------------------------------------------- Microsoft's published activities


def published(name: str, service_url: str) -> dict:
    body = json.loads((SAMPLES / name).read_text())
    body.setdefault("conversation", {"id": "a:personal-sample", "conversationType": "personal"})
    body.setdefault("from", {"id": "29:sample", "name": "Sample User"})
    body.setdefault("recipient", {"id": "28:sample-bot", "name": "MLOps bot"})
    body.setdefault("channelId", "msteams")
    body["serviceUrl"] = service_url
    return body


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
async def test_published_teams_activities_are_accepted(teams, name):
    response = await teams.post(published(name, teams.service_url))
    assert response.status in (200, 201)
    for sent in teams.connector.sent:
        assert "incident" not in (words_of(sent) or "")


async def test_bot_added_to_a_team_welcomes_and_remembers_the_channel(aiohttp_server, settings):
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        for name in ("teams_installationupdate_add_team.json", "teams_conversationupdate_bot_added_to_team.json",
                     "teams_conversationupdate_bot_added_to_team.json"):
            response = await teams.post(published(name, teams.service_url))
            assert response.status in (200, 201)
        [welcome] = teams.connector.sent          # one welcome, though the bot was "added" twice
        storage = open_storage(settings.effective_storage_url)
        await storage.open()
        try:
            [channel] = await storage.list_conversations(kind="channel")
        finally:
            await storage.close()
    assert welcome.text.startswith("Hi, I'm the MLOps bot.")
    assert welcome.conversation_id == "19:0b7f32667e064dd9b25d7969801541f4@thread.tacv2"
    assert (channel.conversation_id, channel.tenant_id) == ("19:0b7f32667e064dd9b25d7969801541f4@thread.tacv2",
                                                            "b28fdbfd-2b78-4f93-b0f8-8881793f0f8f")
    assert channel.team_id.startswith("19:")
