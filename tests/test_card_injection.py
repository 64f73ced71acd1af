"""Untrusted text on cards stays text: what someone typed, a display name, or anything Azure or a
webhook sent cannot add a link, an image, bold or a line of its own to a card (`commands.ui.plain`).

The security probe's findings, replayed: a typed `--reason` with a link, a forged Submit whose
reason fakes the card's status lines, a vote comment with an image, and a run tag (the drift
monitor's name) with bold and a link in the alert card's title. Each asserts the exact value a card
shows, and that the bot's own markdown beside it is unchanged.
"""

from __future__ import annotations

import io

import pytest

from bot.chat import TerminalChat
from commands.context import User
from commands.ui import INVISIBLE, as_text, card, facts, plain, reply, text

Z = INVISIBLE

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
