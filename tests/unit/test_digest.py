"""The digest card and its comparisons, built from values (the gathering and the schedules are
tests/test_digest.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from commands.digests.digest_card import Digest, EndpointHealth, Figure, change_text, digest_card
from commands.base.ui import MAX_CARD_BYTES, as_text
from tests.card_schema import assert_valid_card

START = datetime(2026, 11, 26, 7, 0, tzinfo=timezone.utc)      # Thursday, 08:00 in Berlin


def test_a_digest_of_five_hundred_endpoints_stays_within_teams_limit():
    now = START
    sick = EndpointHealth("ep-000", {"blue": 100}, Figure(20.0), Figure(3000.0, 900.0, (800.0, 900.0)), Figure(10.0),
                          Figure(5.0), ("p99 3000 ms > 1000 ms",))
    fine = [EndpointHealth(f"ep-{i:03d}", {"blue": 50, "green": 50}, Figure(20.0, 19.0, (18.0, 19.0)),
                           Figure(90.0, 95.0, (91.0, 95.0)), Figure(100.0, 90.0, (80.0, 90.0)), Figure(0.1, 0.1, (0.1,)))
            for i in range(1, 500)]
    built = digest_card(Digest("ml-prod", "prod", now, now - timedelta(days=1), endpoints=(sick, *fine)))
    assert_valid_card(built)
    assert len(json.dumps(built, ensure_ascii=False).encode()) <= MAX_CARD_BYTES
    words = as_text(built)
    assert words.index("ep-000") < words.index("ep-001")                  # the sick one first
    assert "… and 492 more endpoints: `endpoints` lists them." in words


def test_change_against_the_previous_digest():
    assert [change_text(Figure(110.0, 100.0)), change_text(Figure(50.0, 100.0)), change_text(Figure(100.2, 100.0)),
            change_text(Figure(1.0, None)), change_text(Figure(0.0, 0.0)), change_text(Figure(3.0, 0.0))] == \
        ["+10%", "−50%", "±0%", "", "±0", "up from 0"]


def test_trend_blocks_scale_to_the_series_own_range():
    from commands.digests.digest_card import trend
    assert trend([100.0, 200.0, 400.0]) == "▁▃█"         # a real swing fills the height
    assert trend([100.0, 103.0, 106.0]) == "▄▄▅"         # a few percent stays near the middle
    assert trend([5.0, None, 5.0]) == "▄·▄"
    assert trend([0.0, 0.0]) == "▄▄"
    assert trend([None, None]) == "··"
