"""How the local workspace stores a time: ISO 8601 text in UTC, to the microsecond."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_text(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
