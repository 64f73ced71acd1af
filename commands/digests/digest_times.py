"""When a digest fires: a five-field cron expression (cronsim) read in an IANA time zone (zoneinfo).

    cron = parse_cron("0 9 * * 1-5")                  # DigestTimeError("... the day-of-week field ...")
    cron = parse_when("weekdays 09:00")               # plain forms beside cron: "0 9 * * 1-5"
    where = parse_zone("Europe/Berlin")               # DigestTimeError with "did you mean"
    where = parse_zone("IST")                         # common abbreviations and countries: Asia/Kolkata

Plain forms (`parse_when`): a day part (`daily`, `every day`, `weekdays`, `weekends`, or day names
such as `mondays`, `mon`, `monday and thursday`, `mon-fri`) and a time (`09:00`, `9am`, `9:30pm`,
`at 9`), in either order; anything else is read as cron.

Time zones (`parse_zone`): an IANA name, or one of the common abbreviations and country names in
ZONE_WORDS (a small explicit table: IST is India, Asia/Kolkata; EST/EDT America/New_York; CET/CEST
Europe/Berlin ...). Countries spanning several zones (the United States, Canada, Australia, Russia,
Brazil, Mexico) are not guessed: the answer lists their main zones.
    fires_after(cron, where, now, 3)                  # the next three fire times, aware, in `where`

Daylight saving: a fire time that falls in the hour skipped in spring runs once, right after the
change (02:30 becomes 03:00); one that falls in the hour repeated in autumn runs once, at its first
occurrence. `fires_after` never answers an instant at or before `after`, which is what keeps the
repeated hour from firing twice (cronsim, asked from inside it, offers the first 02:30 again).
"""

from __future__ import annotations

import difflib
import hashlib
import re
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


# Common abbreviations and countries people type for a time zone (case-insensitive). Each names
# the zone most people using it mean; the reply always says which IANA zone was used.
ZONE_WORDS = {
    # abbreviations (several are not IANA names, or are IANA's fixed offsets without daylight saving)
    "ist": "Asia/Kolkata", "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles", "pt": "America/Los_Angeles",
    "mst": "America/Denver", "mdt": "America/Denver", "mt": "America/Denver", "cst": "America/Chicago",
    "cdt": "America/Chicago", "ct": "America/Chicago", "est": "America/New_York", "edt": "America/New_York",
    "et": "America/New_York", "akst": "America/Anchorage", "hst": "Pacific/Honolulu", "gmt": "Europe/London",
    "bst": "Europe/London", "wet": "Europe/Lisbon", "cet": "Europe/Berlin", "cest": "Europe/Berlin",
    "eet": "Europe/Athens", "eest": "Europe/Athens", "msk": "Europe/Moscow", "gst": "Asia/Dubai",
    "pkt": "Asia/Karachi", "sgt": "Asia/Singapore", "hkt": "Asia/Hong_Kong", "jst": "Asia/Tokyo",
    "kst": "Asia/Seoul", "aest": "Australia/Sydney", "aedt": "Australia/Sydney", "awst": "Australia/Perth",
    "nzst": "Pacific/Auckland", "nzdt": "Pacific/Auckland", "brt": "America/Sao_Paulo", "sast": "Africa/Johannesburg",
    "wat": "Africa/Lagos", "eat": "Africa/Nairobi", "utc": "UTC", "z": "UTC",
    # countries with one time zone (or one that nearly everyone uses)
    "india": "Asia/Kolkata", "germany": "Europe/Berlin", "france": "Europe/Paris", "spain": "Europe/Madrid",
    "italy": "Europe/Rome", "netherlands": "Europe/Amsterdam", "belgium": "Europe/Brussels",
    "switzerland": "Europe/Zurich", "austria": "Europe/Vienna", "poland": "Europe/Warsaw",
    "sweden": "Europe/Stockholm", "norway": "Europe/Oslo", "denmark": "Europe/Copenhagen",
    "finland": "Europe/Helsinki", "ireland": "Europe/Dublin", "uk": "Europe/London",
    "united kingdom": "Europe/London", "england": "Europe/London", "portugal": "Europe/Lisbon",
    "greece": "Europe/Athens", "turkey": "Europe/Istanbul", "israel": "Asia/Jerusalem", "uae": "Asia/Dubai",
    "united arab emirates": "Asia/Dubai", "pakistan": "Asia/Karachi", "bangladesh": "Asia/Dhaka",
    "china": "Asia/Shanghai", "japan": "Asia/Tokyo", "korea": "Asia/Seoul", "south korea": "Asia/Seoul",
    "singapore": "Asia/Singapore", "hong kong": "Asia/Hong_Kong", "taiwan": "Asia/Taipei",
    "philippines": "Asia/Manila", "vietnam": "Asia/Ho_Chi_Minh", "thailand": "Asia/Bangkok",
    "new zealand": "Pacific/Auckland", "south africa": "Africa/Johannesburg", "nigeria": "Africa/Lagos",
    "kenya": "Africa/Nairobi", "egypt": "Africa/Cairo", "argentina": "America/Argentina/Buenos_Aires",
    "colombia": "America/Bogota", "chile": "America/Santiago",
}
SEVERAL_ZONES = {
    "usa": "America/New_York, America/Chicago, America/Denver, America/Los_Angeles",
    "us": "America/New_York, America/Chicago, America/Denver, America/Los_Angeles",
    "united states": "America/New_York, America/Chicago, America/Denver, America/Los_Angeles",
    "america": "America/New_York, America/Chicago, America/Denver, America/Los_Angeles",
    "canada": "America/Toronto, America/Winnipeg, America/Edmonton, America/Vancouver",
    "australia": "Australia/Sydney, Australia/Brisbane, Australia/Adelaide, Australia/Perth",
    "russia": "Europe/Moscow, Asia/Yekaterinburg, Asia/Novosibirsk, Asia/Vladivostok",
    "brazil": "America/Sao_Paulo, America/Manaus",
    "mexico": "America/Mexico_City, America/Tijuana",
    "indonesia": "Asia/Jakarta, Asia/Makassar, Asia/Jayapura",
}


def parse_zone(name: str) -> ZoneInfo:
    """The IANA zone named (case-insensitively), or the one a common abbreviation or country names
    (ZONE_WORDS, checked first: `EST` means New York's time, daylight saving included, not IANA's
    fixed EST); DigestTimeError with close names otherwise."""
    cleaned = name.strip()
    spoken = " ".join(cleaned.lower().replace("_", " ").split())
    if spoken in ZONE_WORDS:
        return ZoneInfo(ZONE_WORDS[spoken])
    if spoken in SEVERAL_ZONES:
        raise DigestTimeError(f"'{name}' spans several time zones; name one, e.g. {SEVERAL_ZONES[spoken]}.")
    by_lower = {zone.lower(): zone for zone in _zone_names()}
    exact = by_lower.get(cleaned.lower())
    if exact:
        try:
            return ZoneInfo(exact)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    wanted = cleaned.lower().replace(" ", "_")
    if len(wanted) <= 5:            # an abbreviation: "did you mean MST" for IST would mislead
        close = [ZONE_WORDS[m] for m in difflib.get_close_matches(wanted, [w for w in ZONE_WORDS if len(w) <= 5],
                                                                  n=1, cutoff=0.8)]
    else:
        close = [by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=3, cutoff=0.6)]
    hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
    raise DigestTimeError(f"I don't know the time zone '{name}'.{hint} Use an IANA name such as Europe/Berlin, "
                          "America/New_York or UTC, a common abbreviation (IST, CET, EST) or a country.")


_DAYS = {"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}
_DAY_WORDS = {**{d: n for d, n in _DAYS.items()}, **{d[:3]: n for d, n in _DAYS.items()},
              "tue": 2, "tues": 2, "wed": 3, "thu": 4, "thur": 4, "thurs": 4}
_EVERY = {"daily": "*", "everyday": "*", "every day": "*", "day": "*", "weekdays": "1-5", "weekday": "1-5",
          "workdays": "1-5", "weekends": "0,6", "weekend": "0,6"}
_TIME = re.compile(r"^(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")


def parse_when(text: str) -> str:
    """A cron expression from a plain form ("weekdays 09:00", "mondays 9am") or from cron itself."""
    words = " ".join(text.lower().replace(",", " , ").split())
    found = re.fullmatch(r"(?:(?:every\s+)?(?P<days1>[a-z ,\-]+?)\s+(?:at\s+)?(?P<time1>[0-9:]+\s*(?:am|pm)?)"
                         r"|(?:at\s+)?(?P<time2>[0-9:]+\s*(?:am|pm)?)\s+(?:on\s+|every\s+)?(?P<days2>[a-z ,\-]+))",
                         words)
    if not found or not re.search(r"[a-z]", words):
        return parse_cron(text)
    days_text = (found.group("days1") or found.group("days2")).strip()
    time_text = (found.group("time1") or found.group("time2")).strip()
    days = _day_field(days_text)
    clock = _TIME.match(time_text)
    if days is None or clock is None:
        raise DigestTimeError(f"I could not read \"{text}\" as a time: use a form like \"weekdays 09:00\", "
                              f"\"mondays 9am\", \"daily 18:30\" or {CRON_HELP}.")
    hour, minute, half = int(clock.group(1)), int(clock.group(2) or 0), clock.group(3)
    if half:
        if not 1 <= hour <= 12:
            raise DigestTimeError(f"'{time_text}' is not a time: with am or pm the hour is 1 to 12.")
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        raise DigestTimeError(f"'{time_text}' is not a time of day (00:00 to 23:59).")
    return f"{minute} {hour} * * {days}"


def _day_field(text: str) -> str | None:
    """The cron day-of-week field for "weekdays", "mondays and thursdays", "mon-fri"; None if unread."""
    if text in _EVERY:
        return _EVERY[text]
    numbers: list[str] = []
    for part in re.split(r"\s*(?:,|\band\b|&)\s*", text):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = _day(first), _day(last)
            if a is None or b is None or a > b:
                return None
            numbers.append(f"{a}-{b}")
            continue
        day = _day(part)
        if day is None:
            return None
        numbers.append(str(day))
    return ",".join(numbers) or None


def _day(word: str) -> int | None:
    word = word.strip()
    for candidate in (word, word[:-1] if word.endswith("s") else word):
        if candidate in _DAY_WORDS:
            return _DAY_WORDS[candidate]
    return None


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
