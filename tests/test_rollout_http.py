"""canary, history, rollback, demo degrade and the verdict card over HTTP, through the real CloudAdapter.

Production defaults: Alice (Operator) asks, Bob (Approver, and Admin for the demo switch) approves."""

from __future__ import annotations

import pytest

from bot.app import SCHEDULER, create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.conftest import Clock
from tests.teams_client import ALICE, BOB, TeamsStandIn, find_action
from tests.test_approvals_http import CAROL, CHANNEL, TOKEN, api, card_words, wait_until


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def app_server(aiohttp_server, tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id, admins=BOB.aad_object_id, watch_minutes=10,
                             api_token=TOKEN)
    return await aiohttp_server(create_app(settings, reset_demo=True, clock=clock))


@pytest.fixture
async def teams(app_server):
    async with TeamsStandIn(str(app_server.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def ask(teams, typed: str, title: str, **kw):
    """Type `typed` and return the answer whose card starts with `title` (the outbox may send card
    updates to the same stand-in meanwhile)."""
    def answers():
        return [s for s in teams.connector.sent if s.method == "POST" and s.card and card_words(s).startswith(title)]
    before = len(answers())
    await teams.say(typed, **kw)
    await wait_until(lambda: len(answers()) > before)
    return answers()[-1]


async def split(teams) -> str:
    reply = await ask(teams, "endpoint fraud-api", "Endpoint fraud-api", user=BOB)
    return next(line for line in card_words(reply).splitlines() if line.startswith("Traffic:"))


async def approve_and_wait(teams, asked, words: str, comment: str = "") -> None:
    count = len(teams.connector.sent)
    status, _ = await teams.click(asked.card, "Approve", user=BOB, inputs={"comment": comment} if comment else None)
    assert status == 200
    await wait_until(lambda: any(s.method == "PUT" and "Approved and done" in card_words(s)
                                 for s in teams.connector.sent[count:]))
    assert words in await split(teams)


async def test_canary_verdict_and_one_click_rollback(teams, app_server, clock):
    [asked] = await teams.say("canary fraud-api green 50 --reason 'v4 canary'")
    assert_valid_card(asked.card)
    assert "Canary on fraud-api: green to 50% (blue=90 green=10 → blue=50 green=50)" in card_words(asked)
    # the approver's comment, typed into the card's box, is sent with the click (issue #19 item 4)
    await approve_and_wait(teams, asked, "Traffic: blue=50 green=50", comment="v4 beat v3 offline")

    shown = await ask(teams, "history fraud-api", "Traffic history of fraud-api")
    assert_valid_card(shown.card)
    assert "#1 blue=90 green=10 → blue=50 green=50" in card_words(shown)
    # history names the approver and their comment (issue #19 item 4)
    assert ("canary · Alice Analyst · request #1 approved by Bob Builder (“v4 beat v3 offline”) · “v4 canary”"
            in card_words(shown))

    [degraded] = await teams.say("demo degrade fraud-api green", user=BOB)
    assert degraded.text.startswith("🧪 Deployment green on fraud-api is now degraded")
    [refused] = await teams.say("demo degrade fraud-api green")
    assert refused.text.startswith("`demo` needs the Admin role; you have Operator.")

    clock.advance(minutes=11)
    assert await app_server.app[SCHEDULER].conclude_due() == 1
    await wait_until(lambda: any(s.card and "Degraded after the canary on fraud-api" in card_words(s)
                                 for s in teams.connector.sent))
    [verdict] = [s for s in teams.connector.sent if s.card and "Degraded after the canary" in card_words(s)]
    assert_valid_card(verdict.card)
    assert verdict.method == "POST" and verdict.conversation_id == f"a:personal-{ALICE.id}"
    assert find_action(verdict.card, "Rollback")["data"] == {"args": ["fraud-api", "--to", "1"]}

    # Production, since issue #19 item 1: the safe direction runs at once for the on-call Operator, and
    # the approvers (Bob, who has a personal chat with the bot) get a review card.
    status, body = await teams.click(verdict.card, "Rollback")
    assert status == 200
    await wait_until(lambda: any(s.card and "Review change #" in card_words(s) and s.conversation_id ==
                                 f"a:personal-{BOB.id}" for s in teams.connector.sent))
    assert await split(teams) == "Traffic: blue=90 green=10"
    [review] = [s for s in teams.connector.sent if s.card and "Review change #" in card_words(s)]
    assert_valid_card(review.card)
    assert "Ran at once by Alice Analyst (the safe direction): please review" in card_words(review)
    assert "Rollback of fraud-api (undo #1): blue=50 green=50 → blue=90 green=10" in card_words(review)
    status, _ = await teams.click(review.card, "Reviewed", user=BOB, inputs={"comment": "right call at 3 a.m."})
    assert status == 200
    await wait_until(lambda: any("Reviewed change #" in (s.text or "") and "right call at 3 a.m." in (s.text or "")
                                 for s in teams.connector.sent))

    before = len(teams.connector.sent)
    status, again = await teams.click(verdict.card, "Rollback")         # a second click changes nothing
    assert status == 200
    # the answer, not sent[-1]: the outbox may still be editing the approval card in place (a PUT)
    await wait_until(lambda: any("fraud-api already has the split from before #1 (blue=90 green=10)" in (s.text or "")
                                 for s in teams.connector.sent[before:]))


async def test_refusals_over_http(teams):
    [viewer] = await teams.say("canary fraud-api green 10", user=CAROL)
    assert viewer.text.startswith("`canary` needs the Operator role; you have Viewer.")
    [unknown] = await teams.say("canary fraud-api purple 10")
    assert unknown.text == "Endpoint fraud-api has no deployment named 'purple' (it has: blue, green)."
    [bad] = await teams.say("canary fraud-api green 150")
    assert bad.text.startswith("Percent must be between 0 and 100.")
    [nothing] = await teams.say("rollback fraud-api")
    assert nothing.text.startswith("Nothing to roll back: the bot has recorded no traffic change of fraud-api")
    [rollback_viewer] = await teams.say("rollback fraud-api", user=CAROL)
    assert rollback_viewer.text.startswith("`rollback` needs the Operator role; you have Viewer.")
    [history] = await teams.say("history fraud-apy")
    assert "Did you mean `fraud-api`?" in history.text


async def test_a_pipeline_asks_for_a_canary_and_the_history_names_it(teams):
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")    # the bot knows the channel
    status, created = await api(teams, "POST", "/api/approvals", body={
        "action": "canary", "workspace": "ml-prod", "execute": True, "conversation": CHANNEL,
        "parameters": {"endpoint": "fraud-api", "deployment": "green", "percent": 25},
        "reason": "release 2026.11.4", "requester": "GitHub Actions (release.yml)",
        "run_url": "https://github.com/contoso/fraud/actions/runs/43"})
    assert status == 201, created
    assert created["summary"] == "Canary on fraud-api: green to 25% (blue=90 green=10 → blue=75 green=25)"
    await wait_until(lambda: any(s.card and "Approval request #1" in card_words(s) for s in teams.connector.sent))
    posted = next(s for s in teams.connector.sent if s.card and "Approval request #1" in card_words(s))
    status, _ = await teams.click(posted.card, "Approve", user=BOB, conversation=CHANNEL, kind="channel")
    assert status == 200
    assert await split(teams) == "Traffic: blue=75 green=25"
    shown = await ask(teams, "history fraud-api", "Traffic history of fraud-api", conversation=CHANNEL, kind="channel")
    # the approver is named since issue #19 item 4
    assert ("canary · GitHub Actions (release.yml) · request #1 approved by Bob Builder · “release 2026.11.4”"
            in card_words(shown))
