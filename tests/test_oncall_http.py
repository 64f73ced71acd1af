"""Issue #19 over HTTP through the real CloudAdapter: a request made in a personal chat reaches an
approver's personal chat; a canary onto an unhealthy deployment is flagged on the card and rejected
with a reason the requester reads; the audit trail is exported from Teams through a signed link.

Production defaults: Alice (Operator) asks, Bob (Approver and Admin) decides, Carol is a Viewer."""

from __future__ import annotations

import csv
import io
import json
import re
from urllib.parse import urlsplit

import pytest

from bot.app import create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.conftest import Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn, find_action
from tests.test_approvals_http import CAROL, CHANNEL, TOKEN, card_words, wait_until


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def app_server(aiohttp_server, tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id, admins=BOB.aad_object_id, api_token=TOKEN)
    return await aiohttp_server(create_app(settings, reset_demo=True, clock=clock))


@pytest.fixture
async def teams(app_server):
    async with TeamsStandIn(str(app_server.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def own_view(teams, card: dict, user, **kw) -> dict:
    """The card as Teams refreshes it for `user` (refresh.userIds): their buttons."""
    refresh = teams.invoke("approval", card["refresh"]["action"]["data"]["args"], user=user, **kw)
    refresh["value"]["action"]["data"] = card["refresh"]["action"]["data"]
    async with teams.session.post(teams.bot_url, json=refresh) as response:
        return (await response.json())["value"]


BOBS_CHAT = f"a:personal-{BOB.id}"
ALICES_CHAT = f"a:personal-{ALICE.id}"


async def test_a_request_in_a_personal_chat_reaches_the_approvers_personal_chat(teams):
    await teams.say("hello", user=BOB)                                  # Bob has a chat with the bot
    [asked] = await teams.say("traffic fraud-api blue=0 green=100 --reason 'green passed the shadow test'")
    assert "Nobody could be told" not in card_words(asked)
    await wait_until(lambda: any(s.conversation_id == BOBS_CHAT and s.card and "Approval request #1" in card_words(s)
                                 for s in teams.connector.sent))
    [told] = [s for s in teams.connector.sent if s.conversation_id == BOBS_CHAT and s.card
              and "Approval request #1" in card_words(s)]
    assert_valid_card(told.card)
    assert "Reason: green passed the shadow test" in card_words(told)
    status, _ = await teams.click(await own_view(teams, told.card, BOB, conversation=BOBS_CHAT), "Approve",
                                  user=BOB, conversation=BOBS_CHAT,
                                  inputs={"comment": "shadow numbers look right"})
    assert status == 200
    # Alice's own card is edited for her: approved, with Bob's comment
    await wait_until(lambda: any(s.method == "PUT" and s.conversation_id == ALICES_CHAT
                                 and "Bob Builder approved" in card_words(s)
                                 and "shadow numbers look right" in card_words(s) for s in teams.connector.sent))
    [shown] = await teams.say("approval 1")
    assert "shadow numbers look right" in card_words(shown)


async def test_an_unhealthy_receiver_is_flagged_and_the_rejection_reason_reaches_the_requester(teams):
    [degraded] = await teams.say("demo degrade fraud-api green", user=BOB)
    assert degraded.text.startswith("🧪 Deployment green on fraud-api is now degraded")
    [asked] = await teams.say("canary fraud-api green 30 --reason 'v4 is ready'", mention=True,
                              conversation=CHANNEL, kind="channel")
    assert_valid_card(asked.card)
    words = card_words(asked)
    assert re.search(r"⚠ green would receive traffic and is unhealthy: p99 1,[0-9]{3} ms is over 1,000 ms; "
                     r"5xx [0-9.]+% is over 1%", words), words
    assert re.search(r"green \(10%\): fraud-model:4 · p99 ", words) and re.search(r"blue \(90%\): fraud-model:3", words)
    assert "fraud-model v4 vs champion v3: better on 3 of 3 metrics, worse on 0." in words
    assert find_action(asked.card, "Compare")["data"]["args"] == ["fraud-model:4", "--workspace", "ml-prod"]
    # Bob is @mentioned where it was asked (he wrote to the bot, so his Teams id is known)
    assert asked.card["msteams"]["entities"][0]["mentioned"] == {"id": BOB.id, "name": BOB.name}
    # Reject asks first: the reason box and the button that rejects sit inside the Reject ShowCard
    view = await own_view(teams, asked.card, BOB, conversation=CHANNEL, kind="channel")
    assert_valid_card(view)
    reject = next(a for a in view["actions"] if a["title"] == "Reject")
    assert reject["type"] == "Action.ShowCard" and reject["card"]["body"][0]["isRequired"] is True
    status, _ = await teams.click(view, "Confirm rejection", user=BOB, conversation=CHANNEL, kind="channel",
                                  inputs={"reason": "green fails 8% of requests right now"})
    assert status == 200
    await wait_until(lambda: any(s.method == "PUT" and "rejected by Bob Builder: green fails 8% of requests right now"
                                 in card_words(s) for s in teams.connector.sent))
    # the answer, not an outbox edit of a card (to Bob's chat) that the connector received meanwhile
    before = len(teams.connector.sent)
    await teams.say("audit --target fraud-api", mention=True, conversation=CHANNEL, kind="channel")
    await wait_until(lambda: any(s.method != "PUT" and "Bob Builder rejected #1 (canary on fraud-api in ml-prod): "
                                 "green fails 8% of requests right now" in card_words(s)
                                 for s in teams.connector.sent[before:]))


async def test_the_audit_trail_is_exported_from_teams_through_a_signed_single_use_link(teams, app_server, clock):
    [asked] = await teams.say("traffic fraud-api blue=0 green=100 --reason 'green passed the shadow test'")
    status, _ = await teams.click(asked.card, "Approve", user=BOB)
    assert status == 200
    await wait_until(lambda: any(s.method == "PUT" and "Approved and done" in card_words(s)
                                 for s in teams.connector.sent))

    [viewer] = await teams.say("audit export", user=CAROL)
    assert viewer.text.startswith("`audit export` needs the Approver role; you have Viewer.")
    [in_channel] = await teams.say("audit export", user=BOB, mention=True, conversation=CHANNEL, kind="channel")
    assert in_channel.text.startswith("The export link is yours alone, so I give it only in a personal chat")
    [bad] = await teams.say("audit export --format xml", user=BOB)
    assert "xml" in bad.text and "csv" in bad.text

    [ready] = await teams.say("audit export --since 30d --format csv", user=BOB)
    assert_valid_card(ready.card)
    assert re.search(r"\b[0-9]+ records of the last 30d, as CSV\.", card_words(ready)), card_words(ready)
    [download] = [a for a in ready.card["actions"] if a["type"] == "Action.OpenUrl"]
    url = urlsplit(download["url"])
    assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:3978", "/api/audit/file")   # the bot's own host
    assert TOKEN not in json.dumps(ready.card)                                                    # never the API token
    client = teams.session
    link = str(app_server.make_url(f"{url.path}?{url.query}"))
    async with client.get(link) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith('attachment; filename="audit-')
        assert response.headers["Cache-Control"] == "no-store"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    sentences = [row["sentence"] for row in rows]
    assert "Bob Builder approved #1 (traffic on fraud-api in ml-prod): green passed the shadow test" in sentences
    assert "Alice Analyst asked for #1 (traffic on fraud-api in ml-prod): green passed the shadow test" in sentences
    assert len([s for s in sentences if s.startswith("Bob Builder approved #1")]) == 1   # one line per decision
    async with client.get(link) as again:                                             # single use
        assert again.status == 410
        assert "used already" in await again.text()
    async with client.get(link.replace("t=", "t=x")) as forged:
        assert forged.status == 403
    # a fresh link, opened too late
    [late] = await teams.say("audit export --format jsonl", user=BOB)
    late_url = urlsplit([a for a in late.card["actions"] if a["type"] == "Action.OpenUrl"][0]["url"])
    clock.advance(minutes=11)
    async with client.get(str(app_server.make_url(f"{late_url.path}?{late_url.query}"))) as expired:
        assert expired.status == 403
        assert "expired" in await expired.text()
    # the export itself is in the trail
    [trail] = await teams.say("audit --action exported", user=BOB)
    assert "Bob Builder exported audit" in card_words(trail)


def test_the_start_up_log_says_when_no_approval_channel_is_set(tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="bot.app")
    create_app(load_settings(data_dir=tmp_path / "a", host="127.0.0.1"), reset_demo=True)
    assert any(r.getMessage().startswith("no approval channel is set (MLOPSBOT_APPROVAL_CHANNEL)")
               for r in caplog.records)
    caplog.clear()
    create_app(load_settings(data_dir=tmp_path / "b", host="127.0.0.1", approval_channel="19:a@thread.tacv2"),
               reset_demo=True)
    assert not any("no approval channel" in r.getMessage() for r in caplog.records)
