"""The everyday screens a first real user met (issue 7, items 9 to 17), over HTTP where they are chat."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.app import create_app
from bot.settings import load_settings
from commands.endpoints import log_card
from commands.ui import MAX_CARD_BYTES
from tests.card_schema import assert_valid_card
from tests.teams_client import TeamsStandIn

# ---------------------------------------------------------------- 9. logs


async def test_logs_show_one_monospace_line_per_log_line_newest_last(teams):
    [reply] = await teams.say("logs fraud-api green --lines 40")
    card = reply.card
    assert_valid_card(card)
    lines = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert len(lines) == 40
    assert all(b["type"] == "TextBlock" and "\n" not in b["text"] for b in lines)
    stamps = [b["text"].lstrip("❗ ")[:23] for b in lines if b["text"][:1] in "2❗"]
    assert stamps == sorted(stamps) and len(stamps) > 10            # oldest first, newest last


def test_error_lines_are_marked_and_coloured():
    tail = ("2026-11-26 10:00:00,001 I [34] azmlinfsrv - POST /score 500 60012.417ms 0\n"
            "2026-11-26 10:00:00,002 E [34] azmlinfsrv - Encountered Exception: TimeoutError: slow\n"
            "2026-11-26 10:00:00,003 W [34] azmlinfsrv - POST /score 422 1.2ms 98\n")
    card = log_card(tail, title="Logs", workspace="w")
    blocks = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert [(b["text"][:2], b.get("color")) for b in blocks] == [("20", None), ("❗ ", "Attention"), ("20", "Warning")]
    assert card["body"][2]["text"] == "3 lines, newest last · 1 error line marked ❗."


def test_a_long_log_keeps_its_newest_lines_within_the_card_limit():
    tail = "\n".join(f"2026-11-26 10:00:{i // 1000:02d},{i % 1000:03d} I [34] line {i} " + "x" * 150
                     for i in range(500))
    card = log_card(tail, title="Logs", workspace="w")
    assert len(json.dumps(card, ensure_ascii=False).encode()) <= MAX_CARD_BYTES + 2_500
    blocks = [b for b in card["body"] if b.get("fontType") == "Monospace"]
    assert blocks[-1]["text"].startswith("2026-11-26 10:00:00,499 I [34] line 499 ")
    assert card["body"][2]["text"] == f"The last {len(blocks)} of 500 lines (all that fit in one message), newest last."
    assert 50 < len(blocks) < 500


# ---------------------------------------------------------------- 10. clicks keep their card


async def test_refresh_updates_the_card_in_place_with_the_time_it_was_read(teams):
    [reply] = await teams.say("endpoint fraud-api")
    status, body = await teams.click(reply.card, "Refresh")
    assert status == 200
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    refreshed = body["value"]
    assert refreshed["body"][0]["text"] == "Endpoint fraud-api"
    assert refreshed["body"][2]["id"] == "as-of" and refreshed["body"][2]["text"].startswith("As of ")
    assert refreshed["body"][2]["text"].endswith(" UTC")
    assert_valid_card(refreshed)
    again = await teams.click(refreshed, "Refresh")
    assert [b.get("id") for b in again[1]["value"]["body"]].count("as-of") == 1
    assert len(teams.connector.sent) == 1                  # nothing posted: the card itself changed


async def test_a_refused_click_keeps_the_card_and_explains_in_a_message(aiohttp_server, settings, monkeypatch):
    monkeypatch.setenv("MLOPSBOT_DEFAULT_ROLE", "viewer")
    viewer_settings = load_settings(data_dir=settings.data_dir, host="127.0.0.1")
    server = await aiohttp_server(create_app(viewer_settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [reply] = await teams.say("job amber_river_7d3kq9wz")
        status, body = await teams.click(reply.card, "Cancel job")
        assert (status, body["type"]) == (200, "application/vnd.microsoft.activity.message")
        assert body["value"] == "`cancel` needs the Operator role; you have Viewer. Ask a bot admin to grant it."
        [explained] = (await teams.connector.wait_for(2))[1:]
        assert explained.text == body["value"]


async def test_a_failed_refresh_keeps_the_card_and_explains_in_a_message(teams):
    card = {"actions": [{"type": "Action.Execute", "title": "Refresh", "verb": "endpoint",
                         "data": {"args": ["gone-api"], "refresh": True}}]}
    status, body = await teams.click(card, "Refresh")
    assert (status, body["type"]) == (200, "application/vnd.microsoft.activity.message")
    [explained] = await teams.connector.wait_for(1)
    assert explained.text.startswith("No endpoint named 'gone-api'.")


# ---------------------------------------------------------------- 16. acknowledge first, then report


async def test_an_outcome_is_never_posted_before_its_acknowledgement(teams):
    teams.connector.failures.append((429, {"Retry-After": "0.3"}))      # the ack is delayed by Teams
    await teams.post(teams.message("scale fraud-api green 3"))
    ack, done = await teams.connector.wait_for(2)
    assert ack.text.startswith("⏳ fraud-api/green is scaling to 3 instances.")
    assert done.text.startswith("✅ Deployment green on fraud-api now runs 3 instances")
