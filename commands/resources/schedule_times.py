"""When a schedule runs next: cron by cronsim, in the schedule's own time zone (Azure ML names
zones the Windows way, e.g. "W. Europe Standard Time"; tzlocal's CLDR table maps them to IANA)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from adapters.service import Schedule

_DAILY_OR_WEEKLY = re.compile(r"^every 1 (day|week)(?: on ([A-Za-z, ]+?))? at (\d{1,2}):(\d{2})$", re.I)
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone for an Azure (Windows) or IANA zone name; None when unknown."""
    from tzlocal.windows_tz import win_tz        # a large table (2 ms at every start): only when a schedule is read
    for candidate in (name, win_tz.get(name, "")):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return None


def as_cron(schedule: Schedule) -> str | None:
    """The schedule as a cron expression: cron as it is, a daily or weekly recurrence translated."""
    if schedule.trigger == "cron":
        return schedule.expression
    found = _DAILY_OR_WEEKLY.match(schedule.expression.strip())
    if not found:
        return None
    unit, days, hour, minute = found.groups()
    weekdays = "*"
    if unit.lower() == "week":
        if not days:
            return None
        try:
            weekdays = ",".join(str(_DAYS.index(d.strip().lower())) for d in days.split(","))
        except ValueError:
            return None
    return f"{int(minute)} {int(hour)} * * {weekdays}"


def next_run(schedule: Schedule, now: datetime) -> datetime | None:
    """The next time the schedule fires after `now` (in its own zone), or None when it is disabled
    or cannot be worked out."""
    expression = as_cron(schedule)
    where = zone(schedule.time_zone or "UTC")
    if not schedule.enabled or expression is None or where is None:
        return None
    try:
        return next(CronSim(expression, now.astimezone(where)))
    except (CronSimError, StopIteration):
        return None


def next_run_text(schedule: Schedule, now: datetime) -> str:
    moment = next_run(schedule, now)
    if moment is None:
        return "" if not schedule.enabled else "next run unknown"
    utc = moment.astimezone(timezone.utc)
    local = "" if moment.utcoffset() == utc.utcoffset() else f" ({moment.strftime('%a %H:%M')} {schedule.time_zone})"
    return f"next {utc.strftime('%a %Y-%m-%d %H:%M')} UTC{local}"
