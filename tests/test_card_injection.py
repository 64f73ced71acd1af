"""Untrusted text on cards stays text: what someone typed, a display name, or anything Azure or a
webhook sent cannot add a link, an image, bold or a line of its own to a card (`commands.base.ui.plain`).

The security probe's findings, replayed: a typed `--reason` with a link, a forged Submit whose
reason fakes the card's status lines, a vote comment with an image, and a run tag (the drift
monitor's name) with bold and a link in the alert card's title. Each asserts the exact value a card
shows, and that the bot's own markdown beside it is unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adapters.azureml.events import BREACH_TAG
from bot.app import create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.replay import azure_breach_message
from tests.teams_client import ALICE, BOB, TeamsStandIn
from tests.waiting import wait_until
from tests.unit.test_card_injection import FAKE_STATUS, LINK, MALLORY, PIXEL, Z, fact_values, texts

KEY = "k" * 8 + "0123456789abcdef0123456789abcdef"
CHANNEL = "19:ml-platform@thread.tacv2;messageid=1700000000000"
RUN_EVENT = Path(__file__).parent / "fixtures" / "azure" / "eventgrid/ml/eventgrid_schema/RunStatusChanged.json"

MONITOR = "fraud-monitor](https://evil.example) **Sev0 - [re-login to Azure](https://evil.example/aad)**"


# ---------------------------------------------------------------- the rule

# ---------------------------------------------------------------- over HTTP, through the CloudAdapter

@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1",
                         operators=f"{ALICE.aad_object_id},{MALLORY.aad_object_id}",
                         approvers=BOB.aad_object_id, webhook_key=KEY)


@pytest.fixture
async def teams(aiohttp_server, settings):
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def test_a_typed_reason_a_forged_reason_and_a_vote_comment_stay_text_on_the_approval_card(teams):
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")
    [typed] = await teams.say(f"traffic fraud-api blue=0 green=100 --reason '{LINK}'", mention=True,
                              conversation=CHANNEL, kind="channel")
    assert_valid_card(typed.card)
    assert fact_values(typed.card)["Reason"] == f"[Approved by CISO - click to view]{Z}(https://evil.example/login)"
    assert texts(typed.card)[2:4] == ["**Waiting for approval**", "Traffic on fraud-api: blue=90 green=10 → blue=0 green=100"]

    # a Submit no button sends, from someone whose display name is markdown too
    forged = teams.activity("message", user=MALLORY, conversation=CHANNEL, kind="channel", value={
        "verb": "traffic", "args": ["fraud-api", "blue=10", "green=90", "--reason", FAKE_STATUS]})   # not a duplicate
    [asked] = await teams.send(forged)
    shown = fact_values(asked.card)
    assert shown["Reason"] == "green passed shadow ∗∗Approved and done∗∗ ✅ Bob Builder approved 2026-11-26 10:02 UTC"
    assert shown["Asked by"] == f"Mallory ∗∗Security Team∗∗ [verified]{Z}(https://evil.example/badge)"
    assert texts(asked.card)[2] == "**Waiting for approval**"
    assert "\n" not in shown["Reason"] + shown["Asked by"]

    [voted] = await teams.say(f"reject 1 '{PIXEL}'", user=BOB, conversation=CHANNEL, kind="channel")
    assert_valid_card(voted.card)
    comment = f"![x]{Z}(https://evil.example/pixel.png) [see runbook]{Z}(https://evil.example)"
    [row] = [line for line in texts(voted.card) if line.startswith("Bob Builder rejected")]
    assert re.fullmatch(r"Bob Builder rejected \d{4}-\d\d-\d\d \d\d:\d\d UTC: " + re.escape(comment), row), row
    outcome = texts(voted.card)[texts(voted.card).index("Outcome") + 1]
    assert outcome == f"rejected by Bob Builder: {comment}"
    assert texts(voted.card)[2] == "**Rejected**"
    # the plain-text forms (fallback, notification preview) carry the same inert words
    assert "](" not in voted.card["fallbackText"] and "](" not in json.dumps(voted.body.get("summary"))


def breach_with(monitor: str, signal: str, feature: str) -> list[dict]:
    [event] = json.loads(RUN_EVENT.read_text())
    event["id"] = "spoof-1"
    event["topic"] = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-ml/providers/"
                      "Microsoft.MachineLearningServices/workspaces/ml-prod")
    event["data"]["runStatus"] = "Completed"
    event["data"]["runTags"] = {
        BREACH_TAG: azure_breach_message(signal, [(feature, "NormalizedWassersteinDistance", 0.31, 0.1)]),
        "azureml.monitor_name": monitor, "azureml.signal_name": signal, "azureml.model_name": "fraud-model",
        "azureml.endpoint_name": "fraud-api"}
    return [event]


async def test_a_run_tag_with_markdown_is_text_on_the_drift_alert_card(teams):
    channel = CHANNEL.split(";")[0]
    await teams.say("subscribe drift", mention=True, conversation=CHANNEL, kind="channel")
    before = len(teams.connector.sent)
    url = teams.bot_url.replace("/api/messages", f"/api/events?code={KEY}")
    body = breach_with(MONITOR, "data-drift\n\n- **all clear**", "amount\n**fake row**")
    async with teams.session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
    await wait_until(lambda: any(s.card for s in teams.connector.sent[before:]))
    [posted] = [s for s in teams.connector.sent[before:] if s.card]
    assert posted.conversation_id == channel
    alert = posted.card
    assert_valid_card(alert)
    monitor = f"fraud-monitor]{Z}(https://evil.example) ∗∗Sev0 - [re-login to Azure]{Z}(https://evil.example/aad)∗∗"
    title = f"🟠 Drift: monitor {monitor} breached its thresholds"
    assert texts(alert)[0] == title
    assert alert["body"][0] == {"type": "TextBlock", "text": title, "wrap": True, "weight": "Bolder", "size": "Medium"}
    shown = fact_values(alert)
    assert shown["Monitor"] == monitor
    assert shown["Signal"] == "data-drift - ∗∗all clear∗∗"
    assert "amount ∗∗fake row∗∗" in texts(alert)
    assert posted.body["summary"] == title           # the notification's preview line
    assert "Per feature, worst first" in texts(alert)   # the bot's own section headings are untouched


# ---------------------------------------------------------------- cards built from Azure's data

async def test_a_link_typed_into_a_command_is_not_a_link_in_the_bots_text_answer(teams):
    """A text answer that repeats typed words ("No model named '…'") is rendered as markdown by
    Teams: in a channel, a typed link would become a link posted by the bot."""
    [answer] = await teams.say("model [Sign-in-expired](https://evil.example/login)",
                               conversation="19:ml@thread.tacv2;messageid=1", kind="channel", mention=True)
    assert answer.card is None
    assert answer.text == "No model named '[Sign-in-expired]\u200b(https'."       # (model:version split at ':')
    [again] = await teams.say("endpoint [Sign-in](https://evil.example/login)")
    assert again.text.startswith("No endpoint named '[Sign-in]\u200b(https://evil.example/login)'."), again.text
