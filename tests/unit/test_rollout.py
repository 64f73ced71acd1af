"""Splits and verdict cards from values: the canary's split, one way to write a split, the wording of a
verdict (the changes and watches are tests/test_rollout.py).
"""

from __future__ import annotations

import pytest

from commands.resources.splits import traffic_change, traffic_text
from commands.resources.rollout import canary_split
from tests.card_schema import assert_valid_card


@pytest.mark.parametrize("current,deployments,target,percent,expected", [
    ({"blue": 90, "green": 10}, ["blue", "green"], "green", 20, {"blue": 80, "green": 20}),
    ({"blue": 90, "green": 10}, ["blue", "green", "red"], "red", 20, {"blue": 72, "green": 8, "red": 20}),
    # 95 to share 9:1 -> 85.5 and 9.5: equal remainders, so the larger share gets the point
    ({"blue": 90, "green": 10}, ["blue", "green", "red"], "red", 5, {"blue": 86, "green": 9, "red": 5}),
    # 67 to share 2:1 -> quotas 44.67 and 22.33: the larger remainder gets the leftover point
    ({"a": 50, "b": 25, "c": 25}, ["a", "b", "c"], "c", 33, {"a": 45, "b": 22, "c": 33}),
    # equal remainders: the larger share first, then the name
    ({"a": 40, "b": 30, "c": 30}, ["a", "b", "c"], "a", 1, {"a": 1, "b": 50, "c": 49}),
    ({"a": 34, "b": 33, "c": 33}, ["a", "b", "c"], "a", 0, {"a": 0, "b": 50, "c": 50}),
    ({"blue": 90, "green": 10}, ["blue", "green"], "green", 0, {"blue": 100, "green": 0}),
    ({"blue": 90, "green": 10}, ["blue", "green"], "green", 100, {"blue": 0, "green": 100}),
    # the others have no traffic now: they share the rest equally
    ({"blue": 0, "green": 100}, ["blue", "green", "red"], "green", 10, {"blue": 45, "green": 10, "red": 45}),
    ({"x": 1, "y": 1, "z": 98}, ["x", "y", "z"], "z", 97, {"x": 2, "y": 1, "z": 97}),
])
def test_canary_split_uses_largest_remainder_and_sums_to_100(current, deployments, target, percent, expected):
    split = canary_split(current, deployments, target, percent)
    assert split == expected
    assert sum(split.values()) == 100


def test_canary_split_sums_to_100_for_every_percent():
    for percent in range(101):
        split = canary_split({"a": 13, "b": 29, "c": 58}, ["a", "b", "c", "d"], "d", percent)
        assert sum(split.values()) == 100 and split["d"] == percent
        assert all(v >= 0 for v in split.values())


def test_canary_split_refuses_a_lone_deployment_below_100():
    with pytest.raises(ValueError, match="only deployment"):
        canary_split({"blue": 100}, ["blue"], "blue", 50)
    assert canary_split({"blue": 100}, ["blue"], "blue", 100) == {"blue": 100}


def test_one_way_to_write_a_split():
    assert traffic_text({"green": 10, "blue": 90}) == "blue=90 green=10"          # largest share first
    assert traffic_text({"green": 50, "blue": 50}) == "blue=50 green=50"          # then by name
    assert traffic_text({"blue": 100, "green": 0}) == "blue=100"                  # a single split: no zeros
    assert traffic_text({"blue": 0}) == "no traffic"
    # before → after: a deployment whose share went to or from 0 shows as =0 on that side
    assert traffic_change({"blue": 90, "green": 10}, {"blue": 100, "green": 0}) == "blue=90 green=10 → blue=100 green=0"
    assert traffic_change({"blue": 90, "green": 10}, {"blue": 72, "green": 8, "red": 20}) == (
        "blue=90 green=10 red=0 → blue=72 green=8 red=20")
    # both sides in the before side's order, so they read across
    assert traffic_change({"blue": 50, "green": 50}, {"blue": 20, "green": 80}) == "blue=50 green=50 → blue=20 green=80"
    assert traffic_change({"green": 100}, {"blue": 90, "green": 10}) == "green=100 blue=0 → green=10 blue=90"
    assert traffic_change({"blue": 100, "shadow": 0}, {"blue": 100}) == "blue=100 → blue=100"


def test_an_unhealthy_verdict_that_was_healthy_before_says_it_is_not_degraded():
    from datetime import datetime, timezone

    from adapters.storage.watches import Watch
    from commands.changes.verdicts import verdict_card

    watch = Watch(workspace="ml-prod", endpoint="fraud-api", action="canary", history_id=4, started_at=datetime.now(
        timezone.utc), baseline={}, requester_name="Dana Dev")
    verdict = {"state": "unhealthy", "window_minutes": 15, "split": "blue=80 green=20", "findings": [],
               "unhealthy": ["endpoint: p99 1,040 ms is over 1,000 ms"], "unhealthy_before": False,
               "baseline": {"p99_ms": 900.0, "error_rate": 0.001}, "after": {"p99_ms": 1040.0, "error_rate": 0.002}}
    card = verdict_card(watch, verdict, workspace="Workspace ml-prod (prod)")
    assert_valid_card(card)
    assert [b["text"] for b in card["body"][:2] + card["body"][3:7]] == [
        "⚠️ Unhealthy after the canary on fraud-api", "Workspace ml-prod (prod)",
        "Over the health thresholds", "- endpoint: p99 1,040 ms is over 1,000 ms",
        "Not worse than before the change by the watch's measure (p99 over 1.5 x and 50 ms more, or 5xx over 2 x "
        "and 1 point more), but not healthy.", "Before → after"]
    assert card["body"][7]["facts"] == [{"title": "Endpoint", "value": "p99 900 ms → 1,040 ms, 5xx 0.10% → 0.20%"}]
    assert [a["title"] for a in card["actions"]] == ["Rollback", "History"]
