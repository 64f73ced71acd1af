"""Untrusted text on cards stays text: what someone typed, a display name, or anything Azure or a
webhook sent cannot add a link, an image, bold or a line of its own to a card (`commands.ui.plain`).

The security probe's findings, replayed: a typed `--reason` with a link, a forged Submit whose
reason fakes the card's status lines, a vote comment with an image, and a run tag (the drift
monitor's name) with bold and a link in the alert card's title. Each asserts the exact value a card
shows, and that the bot's own markdown beside it is unchanged.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adapters.events import BREACH_TAG
from adapters.service import Job, ModelVersion, OnlineEndpoint
from adapters.storage.audit import AuditRecord
from adapters.storage.traffic_history import Entry
from bot.app import create_app
from bot.chat import TerminalChat
from bot.settings import load_settings
from commands.audit import audit_card
from commands.context import User
from commands.job_rows import job_row
from commands.jobs import job_card
from commands.models import model_card
from commands.rollout import history_card
from commands.ui import INVISIBLE, as_text, card, facts, plain, reply, text
from tests.card_schema import assert_valid_card
from tests.replay import azure_breach_message
from tests.teams_client import ALICE, BOB, Person, TeamsStandIn
from tests.waiting import wait_until

Z = INVISIBLE
KEY = "k" * 8 + "0123456789abcdef0123456789abcdef"
CHANNEL = "19:ml-platform@thread.tacv2;messageid=1700000000000"
MALLORY = Person("29:1mallory", "Mallory\n\n**Security Team** [verified](https://evil.example/badge)",
                 "00000000-0000-0000-0000-0000000000ee")
RUN_EVENT = Path(__file__).parent / "fixtures" / "azure" / "eventgrid/ml/eventgrid_schema/RunStatusChanged.json"

LINK = "[Approved by CISO - click to view](https://evil.example/login)"
FAKE_STATUS = "green passed shadow\n\n**Approved and done** ✅\n\nBob Builder approved 2026-11-26 10:02 UTC"
PIXEL = "![x](https://evil.example/pixel.png) [see runbook](https://evil.example)"
MONITOR = "fraud-monitor](https://evil.example) **Sev0 - [re-login to Azure](https://evil.example/aad)**"


def texts(element: dict) -> list[str]:
    """Every TextBlock's text in a card or element, in order, however deep."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(element)
    return found


def fact_values(card_: dict) -> dict[str, str]:
    return {f["title"]: f["value"] for block in card_["body"] if block.get("type") == "FactSet"
            for f in block["facts"]}


# ---------------------------------------------------------------- the rule

@pytest.mark.parametrize("value, shown", [
    (LINK, f"[Approved by CISO - click to view]{Z}(https://evil.example/login)"),
    (PIXEL, f"![x]{Z}(https://evil.example/pixel.png) [see runbook]{Z}(https://evil.example)"),
    (FAKE_STATUS, "green passed shadow ∗∗Approved and done∗∗ ✅ Bob Builder approved 2026-11-26 10:02 UTC"),
    ("_urgent_ ~~done~~ `approve 1`", "ˍurgent_ ∼∼done∼∼ ˋapprove 1ˋ"),
    ("[see][ref] [ref]: https://evil.example", f"[see]{Z}[ref] [ref]{Z}: https://evil.example"),
    ("{{DATE(2026-11-26T10:00:00Z, SHORT)}}", f"{{{Z}{{DATE(2026-11-26T10:00:00Z, SHORT)}}}}"),
    ("# Approved", f"{Z}# Approved"), ("- Bob approved", f"{Z}- Bob approved"), ("1. x", f"{Z}1. x"),
    ("a\r\nb\tc\x00d\x1b[31m\u202eevil\u2028e", "a b c d [31m evil e"),
    ("ends with [", "ends with ["), ("ends with ]", f"ends with ]{Z}"),
    # what needs no change stays as it is: names, ids, log prefixes, plain words
    ("credit_score", "credit_score"), ("frosty_kettle_8k2x9q7m", "frosty_kettle_8k2x9q7m"),
    ("31.1105 (> 25 breaches)", "31.1105 (> 25 breaches)"), ("-0.5", "-0.5"), ("#hashtag", "#hashtag"),
    ("2026-11-26 10:00:00,499 I [34] ready", "2026-11-26 10:00:00,499 I [34] ready"),
    ("  green   is better ", "green is better"), ("", ""), (None, ""), (3, "3"),
])
def test_plain_leaves_no_markdown_in_effect_and_keeps_the_words(value, shown):
    assert plain(value) == shown


def test_the_bots_own_markdown_around_an_untrusted_value_is_unchanged():
    built = card("Model fraud-model", [text(f"**{plain('**v9** [admin](https://evil.example)')}**"),
                                       facts([("Description", plain("_fast_"))])])
    assert texts(built)[0] == "Model fraud-model"
    assert texts(built)[1] == f"**∗∗v9∗∗ [admin]{Z}(https://evil.example)**"
    assert fact_values(built) == {"Description": "ˍfast_"}


def test_the_terminal_shows_the_words_without_the_invisible_breaks():
    built = card("Approval request #1", [facts([("Reason", plain(LINK))])])
    assert as_text(built).splitlines()[1] == f"Reason: {plain(LINK)}"          # the fallback stays inert
    out = io.StringIO()
    TerminalChat(handler=None, user=User("dev", "dev"), out=out).say(reply(built))
    assert out.getvalue() == ("bot> Approval request #1\n"
                              "     Reason: [Approved by CISO - click to view](https://evil.example/login)\n")


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

def test_a_model_description_and_tags_from_the_registry_are_text():
    model = ModelVersion("fraud-model", "9", stage="Staging",
                         description="Approved for **Production** by the CISO.\n\n[Sign in](https://evil.example)",
                         tags={"owner": "_risk team_", "[docs](https://evil.example)": "see **here**"})
    built = model_card(model, workspace="Workspace ml-prod (prod)")
    assert_valid_card(built)
    shown = fact_values(built)
    assert shown["Description"] == f"Approved for ∗∗Production∗∗ by the CISO. [Sign in]{Z}(https://evil.example)"
    assert shown["owner"] == "ˍrisk team_"
    assert shown[f"[docs]{Z}(https://evil.example)"] == "see ∗∗here∗∗"
    assert texts(built)[0] == "Model fraud-model:9"


def test_a_job_display_name_and_error_from_azure_are_text():
    job = Job("frosty_kettle_8k2x9q7m", "Failed", display_name="**nightly** [rerun](https://evil.example)",
              error="UserError: see [the fix](https://evil.example)\n# Approved",
              created_at=datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc))
    built = job_card(job, workspace="Workspace ml-prod (prod)")
    assert_valid_card(built)
    shown_name = f"∗∗nightly∗∗ [rerun]{Z}(https://evil.example)"
    assert texts(built)[0] == f"Job {shown_name}"
    assert texts(built)[2] == "**Failed**"                          # the bot's own bold status
    error = texts(built)[texts(built).index("Error") + 1]
    assert error == f"UserError: see [the fix]{Z}(https://evil.example) # Approved"
    assert fact_values(built)["Name"] == "frosty_kettle_8k2x9q7m"
    row = texts(job_row(job))
    assert row[0] == f"**{shown_name}**"                            # bold by the bot, inert inside


def test_names_and_reasons_in_the_audit_trail_and_the_traffic_history_are_text():
    at = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    mallory = f"Mallory ∗∗Security Team∗∗ [verified]{Z}(https://evil.example/badge)"
    record = AuditRecord(at=at, event="requested", actor_id=MALLORY.id, actor_name=MALLORY.name, action="traffic",
                         target="endpoint fraud-api", workspace="ml-prod", approval_id=2, seq=7)
    trail = texts(audit_card([record], filters="actor **Bob**"))
    assert trail[1] == "actor ∗∗Bob∗∗"
    assert f"{mallory} asked for #2 (traffic on fraud-api in ml-prod)" in trail  # sentences since issue #19 item 8
    entry = Entry(workspace="ml-prod", endpoint="fraud-api", at=at, action="traffic", before={"blue": 100},
                  after={"blue": 0, "green": 100}, actor_id=MALLORY.id, actor_name=MALLORY.name, reason=LINK, id=3)
    history = texts(history_card(OnlineEndpoint("fraud-api", "Succeeded", traffic={"green": 100}), [entry],
                                 workspace="Workspace ml-prod (prod)"))
    assert f"2026-11-26 10:00 UTC · traffic · {mallory} · “{plain(LINK)}”" in history
    assert "**#3** blue=100 green=0 → blue=0 green=100" in history                # the bot's own bold entry number


async def test_a_link_typed_into_a_command_is_not_a_link_in_the_bots_text_answer(teams):
    """A text answer that repeats typed words ("No model named '…'") is rendered as markdown by
    Teams: in a channel, a typed link would become a link posted by the bot."""
    [answer] = await teams.say("model [Sign-in-expired](https://evil.example/login)",
                               conversation="19:ml@thread.tacv2;messageid=1", kind="channel", mention=True)
    assert answer.card is None
    assert answer.text == "No model named '[Sign-in-expired]\u200b(https'."       # (model:version split at ':')
    [again] = await teams.say("endpoint [Sign-in](https://evil.example/login)")
    assert again.text.startswith("No endpoint named '[Sign-in]\u200b(https://evil.example/login)'."), again.text
