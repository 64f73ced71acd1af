"""When a digest fires: a five-field cron expression (cronsim) read in an IANA time zone (zoneinfo).

    cron = parse_cron("0 9 * * 1-5")                  # DigestTimeError("... the day-of-week field ...")
    where = parse_zone("Europe/Berlin")               # DigestTimeError with "did you mean"
    fires_after(cron, where, now, 3)                  # the next three fire times, aware, in `where`

Daylight saving: a fire time that falls in the hour skipped in spring runs once, right after the
change (02:30 becomes 03:00); one that falls in the hour repeated in autumn runs once, at its first
occurrence. `fires_after` never answers an instant at or before `after`, which is what keeps the
repeated hour from firing twice (cronsim, asked from inside it, offers the first 02:30 again).
"""

from __future__ import annotations

import difflib
import hashlib
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

JITTER_SECONDS = 120                # due times are spread by up to this, per conversation
MIN_GAP = timedelta(hours=1)        # a digest more often than hourly is noise, not a digest
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_OF_ERROR = {"minute": 0, "hour": 1, "day-of-month": 2, "month": 3, "day-of-week": 4}
CRON_HELP = ("five fields: minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\" "
             "(09:00 Monday to Friday)")


class DigestTimeError(ValueError):
    """A cron expression or time zone that cannot be used; the message says what is wrong."""


def parse_cron(expression: str) -> str:
    """The expression, normalised (single spaces); DigestTimeError naming the field at fault."""
    words = expression.split()
    if len(words) != 5:
        raise DigestTimeError(f"\"{expression}\" has {len(words)} field{'' if len(words) == 1 else 's'}; "
                              f"a schedule needs {CRON_HELP}.")
    cron = " ".join(words)
    try:
        CronSim(cron, datetime(2026, 1, 1))
    except CronSimError as error:
        field = next((name for name in FIELDS if name in str(error).lower()), None)
        if field is None:
            raise DigestTimeError(f"\"{expression}\" is not a cron expression ({error}); use {CRON_HELP}.") from None
        raise DigestTimeError(f"The {field} field of \"{expression}\" is wrong: "
                              f"'{words[_FIELD_OF_ERROR[field]]}' ({_RANGES[field]}).") from None
    return cron


_RANGES = {"minute": "0-59", "hour": "0-23", "day-of-month": "1-31, and a day that exists in the month given",
           "month": "1-12 or JAN-DEC", "day-of-week": "0-7 or SUN-SAT, 0 and 7 are Sunday"}


@lru_cache(maxsize=1)
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


def parse_zone(name: str) -> ZoneInfo:
    """The IANA zone named (case-insensitively); DigestTimeError with close names otherwise."""
    cleaned = name.strip()
    by_lower = {zone.lower(): zone for zone in _zone_names()}
    exact = by_lower.get(cleaned.lower())
    if exact:
        try:
            return ZoneInfo(exact)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    wanted = cleaned.lower().replace(" ", "_")
    close = [by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=3, cutoff=0.6)]
    hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
    raise DigestTimeError(f"I don't know the time zone '{name}'.{hint} Use an IANA name such as Europe/Berlin, "
                          "America/New_York or UTC.")


def fires_after(cron: str, zone: ZoneInfo, after: datetime, count: int = 1) -> list[datetime]:
    """The next `count` fire times strictly after `after`, in `zone` (each a distinct instant)."""
    found: list[datetime] = []
    it = CronSim(cron, after.astimezone(zone))
    floor = after.astimezone(timezone.utc)
    for moment in it:
        instant = moment.astimezone(timezone.utc)
        if instant <= floor:
            continue              # cronsim re-offers the first pass of a repeated hour: already past
        found.append(moment)
        floor = instant
        if len(found) == count:
            break
    return found


def check_gap(cron: str, zone: ZoneInfo, now: datetime) -> None:
    """Refuse a schedule that fires more often than hourly."""
    upcoming = fires_after(cron, zone, now, 6)
    if not upcoming:
        raise DigestTimeError(f"\"{cron}\" never fires (no such date).")
    for earlier, later in zip(upcoming, upcoming[1:]):
        if later - earlier < MIN_GAP:
            raise DigestTimeError(f"\"{cron}\" fires every {_minutes(later - earlier)}; a digest may go out at most "
                                  "once an hour (e.g. \"0 9 * * *\" daily at 09:00).")


def _minutes(gap: timedelta) -> str:
    minutes = int(gap.total_seconds() // 60)
    return "minute" if minutes == 1 else f"{minutes} minutes"


def jitter(conversation_id: str) -> timedelta:
    """A fixed per-conversation delay of 0 to JITTER_SECONDS, so digests of one fire time do not all
    start in the same second (Teams' rate limits, and the workspace's)."""
    digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
    return timedelta(seconds=int.from_bytes(digest[:4], "big") % JITTER_SECONDS)


def next_due(cron: str, zone: ZoneInfo, conversation_id: str, after: datetime) -> datetime:
    """When the next digest is due (UTC): the next fire time after `after`, plus the jitter."""
    [fire] = fires_after(cron, zone, after, 1)
    return fire.astimezone(timezone.utc) + jitter(conversation_id)


def show(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local.strftime('%a %Y-%m-%d %H:%M')} {local.tzname()}"
