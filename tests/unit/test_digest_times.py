"""Cron parsing and next fire times across daylight-saving changes (Europe/Berlin, America/New_York)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from commands.digests.digest_times import DigestTimeError, check_gap, fires_after, next_due, jitter, parse_cron, parse_zone

BERLIN = parse_zone("Europe/Berlin")
NEW_YORK = parse_zone("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def local(moments: list[datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


def test_weekday_mornings_in_berlin_keep_09_00_local_across_spring_forward():
    # Germany moves to summer time on Sunday 2026-03-29: 09:00 is 08:00 UTC before, 07:00 UTC after
    fires = fires_after("0 9 * * 1-5", BERLIN, utc(2026, 3, 26, 12), 3)
    assert local(fires) == ["2026-03-27T09:00:00+01:00", "2026-03-30T09:00:00+02:00", "2026-03-31T09:00:00+02:00"]
    assert [f.astimezone(timezone.utc).hour for f in fires] == [8, 7, 7]


def test_a_time_in_the_skipped_hour_runs_once_right_after_the_change():
    fires = fires_after("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 3)
    assert local(fires) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    fires = fires_after("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 2)
    assert local(fires) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_a_time_in_the_repeated_hour_runs_once_on_fall_back_day():
    fires = fires_after("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    assert local(fires) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    fires = fires_after("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 2)
    assert local(fires) == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


@pytest.mark.parametrize("zone, cron, inside, expected", [
    (BERLIN, "30 2 * * *", utc(2026, 10, 25, 1, 15), "2026-10-26T02:30:00+01:00"),       # 02:15 CET, the second pass
    (NEW_YORK, "30 1 * * *", utc(2026, 11, 1, 6, 15), "2026-11-02T01:30:00-05:00"),      # 01:15 EST, the second pass
])
def test_no_second_digest_from_inside_the_repeated_hour(zone, cron, inside, expected):
    # the first 02:30 / 01:30 already fired an hour ago; cronsim, asked from inside the repeated
    # hour, offers that same instant again: it must not come back
    assert inside.astimezone(zone).fold == 1
    assert local(fires_after(cron, zone, inside, 1)) == [expected]


def test_new_york_weekly_digest_across_both_changes():
    spring = fires_after("0 8 * * 1", NEW_YORK, utc(2026, 3, 1), 2)
    assert local(spring) == ["2026-03-02T08:00:00-05:00", "2026-03-09T08:00:00-04:00"]
    autumn = fires_after("0 8 * * 1", NEW_YORK, utc(2026, 10, 27), 2)
    assert local(autumn) == ["2026-11-02T08:00:00-05:00", "2026-11-09T08:00:00-05:00"]


def test_next_due_adds_the_conversations_jitter_and_the_jitter_is_small_and_stable():
    due = next_due("0 9 * * *", BERLIN, "19:a@thread.tacv2", utc(2026, 11, 26, 12))
    assert due == utc(2026, 11, 27, 8) + jitter("19:a@thread.tacv2")
    spreads = {jitter(f"conversation-{i}").total_seconds() for i in range(200)}
    assert all(0 <= s < 120 for s in spreads) and len(spreads) > 50
    assert jitter("x") == jitter("x")


@pytest.mark.parametrize("expression, message", [
    ("61 9 * * *", "The minute field of \"61 9 * * *\" is wrong: '61' (0-59)."),
    ("0 9 * 13 *", "The month field of \"0 9 * 13 *\" is wrong: '13' (1-12 or JAN-DEC)."),
    ("0 9 * * MON-SUNDAY", "The day-of-week field of \"0 9 * * MON-SUNDAY\" is wrong: 'MON-SUNDAY'"),
    ("@daily", "\"@daily\" has 1 field; a schedule needs five fields"),
])
def test_the_field_at_fault_is_named(expression, message):
    with pytest.raises(DigestTimeError) as caught:
        parse_cron(expression)
    assert str(caught.value).startswith(message)


def test_valid_expressions_are_normalised():
    assert parse_cron("  0  9 * *   MON-FRI ") == "0 9 * * MON-FRI"


def test_zones_are_looked_up_by_iana_name_with_suggestions():
    assert parse_zone("europe/berlin").key == "Europe/Berlin"
    assert parse_zone("UTC").key == "UTC"
    with pytest.raises(DigestTimeError, match=r"Did you mean `America/New_York`"):
        parse_zone("America/NewYork")
    # issue 19: common abbreviations are accepted now (CEST is Central European Summer Time)
    assert parse_zone("CEST").key == "Europe/Berlin"
    with pytest.raises(DigestTimeError, match=r"I don't know the time zone 'XST'"):
        parse_zone("XST")


def test_more_often_than_hourly_is_refused():
    check_gap("0 * * * *", BERLIN, utc(2026, 1, 1))
    with pytest.raises(DigestTimeError, match="fires every 30 minutes"):
        check_gap("0,30 9 * * *", BERLIN, utc(2026, 1, 1))
