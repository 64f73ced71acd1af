"""Untrusted text stays text on the cards, checked on the card builders (the chat and HTTP halves are
tests/test_card_injection.py).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from adapters.service import Job, ModelVersion, OnlineEndpoint
from adapters.storage.audit import AuditRecord
from adapters.storage.traffic_history import Entry
from bot.chat import TerminalChat
from commands.changes.audit import audit_card
from commands.base.context import User
from commands.resources.job_rows import job_row
from commands.resources.jobs import job_card
from commands.resources.models import model_card
from commands.resources.rollout import history_card
from commands.base.ui import INVISIBLE, as_text, card, facts, plain, reply, text
from tests.card_schema import assert_valid_card
from tests.teams_client import Person

Z = INVISIBLE


MALLORY = Person("29:1mallory", "Mallory\n\n**Security Team** [verified](https://evil.example/badge)",
                 "00000000-0000-0000-0000-0000000000ee")


LINK = "[Approved by CISO - click to view](https://evil.example/login)"


FAKE_STATUS = "green passed shadow\n\n**Approved and done** ✅\n\nBob Builder approved 2026-11-26 10:02 UTC"


PIXEL = "![x](https://evil.example/pixel.png) [see runbook](https://evil.example)"


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
