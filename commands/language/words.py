"""Reading a message: normalised words and the small values in it (numbers, percentages, versions,
stages, windows, statuses). Pure functions, no workspace, no registry.

    >>> read("Give green 10% more on Fraud-API, please?").percent
    10
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_WORD = re.compile(r"[a-z0-9]+")
_POSSESSIVE = re.compile(r"(?<=[a-z0-9])'s?\b")

# words that carry no meaning for choosing a command
STOP = frozenset("""a an the of on for to in at by with and or your it its this that these those is are was were
be been am do does did please pls plz could would will shall should just some any there here up about from into
tell get let lets see look can't hey hi hello bot thanks thank one ones right now currently""".split())

_IRREGULAR = {"ran": "run", "went": "go", "did": "do", "done": "do", "broke": "break", "broken": "break",
              "began": "begin", "begun": "begin", "shown": "show", "took": "take", "gave": "give",
              "given": "give", "kept": "keep", "brought": "bring", "said": "say", "put": "put",
              "vms": "vm", "its": "it", "wrong": "wrong", "models": "model", "status": "status",
              "canaries": "canary", "previous": "previous", "yesterday": "yesterday", "was": "be",
              "is": "be", "are": "be", "were": "be", "been": "be"}


def stem(word: str) -> str:
    """A crude stem, enough to meet "deploys", "deployed", "deploying" at "deploy"."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix in ("ing", "ied", "ies", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith(("ss", "us", "is")):
            word = word[: -len(suffix)] + ("y" if suffix in ("ied", "ies") else "")
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]        # running -> run
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def words_of(text: str) -> list[str]:
    """Lower-case words, possessives removed ("bob's" -> "bob"), hyphens and punctuation as spaces."""
    text = _POSSESSIVE.sub("", text.translate(_QUOTES).lower())
    return _WORD.findall(text)


# ---------------------------------------------------------------- numbers and shares

_FRACTIONS = {"half": 50, "a half": 50, "a third": 33, "one third": 33, "a quarter": 25, "one quarter": 25,
              "a fifth": 20, "one fifth": 20, "a tenth": 10, "one tenth": 10, "two thirds": 67,
              "three quarters": 75, "all": 100, "everything": 100, "none": 0, "nothing": 0}
_NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
            "forty": 40, "fifty": 50, "a couple": 2, "a few": 3}
_PERCENT = re.compile(r"(?<![\w.])(\d{1,3})(?:\.\d+)?\s*(?:%|percent\b|pct\b|per cent\b)")
_VERSION = re.compile(r"(?:(?<=\s)|^|(?<=:))(?:v|version\s*|ver\s*|#)(\d{1,6})\b|:(\d{1,6})\b")
_NUMBER = re.compile(r"(?<![\w.:#-])(\d{1,9})(?![\w.%:-])")
_DURATION = re.compile(r"\b(\d{1,4})\s*(m|min|mins|minutes?|h|hrs?|hours?|d|days?|w|wks?|weeks?)\b")

STAGE_WORDS = {"production": "Production", "prod": "Production", "champion": "Production", "live": "Production",
               "staging": "Staging", "candidate": "Staging", "challenger": "Staging", "staged": "Staging",
               "archived": "Archived", "archive": "Archived", "retired": "Archived"}
STATUS_WORDS = {"failed": "Failed", "failing": "Failed", "failure": "Failed", "failures": "Failed",
                "broken": "Failed", "broke": "Failed", "fail": "Failed", "crashed": "Failed", "running": "Running",
                "queued": "Queued",
                "waiting": "Queued", "pending": "Queued", "completed": "Completed", "finished": "Completed",
                "succeeded": "Completed", "canceled": "Canceled", "cancelled": "Canceled"}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass
class Message:
    """One message, read: its words (and their stems) and the values found in it."""

    raw: str
    words: list[str]
    stems: list[str]
    percent: int | None = None            # "20%", "a fifth", "half"
    relative: int = 0                     # +1 "more", -1 "less", 0 absolute
    numbers: list[int] = field(default_factory=list)
    version: str | None = None            # "v4", "version 4", "fraud-model:4"
    stage: str | None = None              # Production | Staging | Archived
    status: str | None = None             # a job status
    since: str | None = None              # an audit span: 30m, 12h, 7d
    duration: str | None = None           # "for 4 hours" -> 4h
    me: bool = False

    @property
    def content(self) -> list[str]:
        return [s for w, s in zip(self.words, self.stems) if w not in STOP]


def read(text: str, now: datetime | None = None) -> Message:
    clean = text.translate(_QUOTES).strip()
    lower = clean.lower()
    words = words_of(clean)
    message = Message(clean, words, [stem(w) for w in words])
    message.percent = _percent(lower)
    message.relative = _relative(lower)
    message.version = _version(lower)
    message.numbers = [int(n) for n in _NUMBER.findall(lower)] + [
        value for name, value in _NUMBERS.items() if re.search(rf"\b{name}\b", lower) and value]
    message.stage = next((STAGE_WORDS[w] for w in words if w in STAGE_WORDS), None)
    message.status = next((STATUS_WORDS[w] for w in words if w in STATUS_WORDS), None)
    message.since = window(lower, now) if now else None
    if found := _DURATION.search(lower):
        message.duration = f"{found.group(1)}{found.group(2)[0]}"
    message.me = bool(re.search(r"\b(me|my|mine|i|i'm|myself)\b", lower))
    return message


def _percent(lower: str) -> int | None:
    if found := _PERCENT.search(lower):
        return int(found.group(1))
    for phrase, value in sorted(_FRACTIONS.items(), key=lambda item: -len(item[0])):
        if re.search(rf"\b{phrase}\b", lower) and phrase not in ("all", "everything", "none", "nothing"):
            return value
    return None


_AMOUNT = r"(?:\d+\s*(?:%|percent|pct|instances?|nodes?|replicas?)?|half|a (?:fifth|quarter|third|tenth)|one|two|three)"


def _relative(lower: str) -> int:
    """+1 for "10% more", "add 2 instances", "one more", "by 10%" after "increase"; -1 for the
    opposite; 0 when the number is the new value ("to 30%")."""
    if re.search(rf"{_AMOUNT}\s+(?:more|extra|additional)\b|\b(?:add|another|one more|plus)\b", lower):
        return 1
    if re.search(rf"{_AMOUNT}\s+(?:less|fewer)\b|\b(?:remove|minus)\b", lower):
        return -1
    if re.search(r"\b(?:increase|raise|bump|up)\b.*\bby\b", lower):
        return 1
    if re.search(r"\b(?:decrease|reduce|lower|cut|down)\b.*\bby\b", lower):
        return -1
    return 0


def _version(lower: str) -> str | None:
    if found := _VERSION.search(lower):
        return found.group(1) or found.group(2)
    return None


def window(lower: str, now: datetime) -> str | None:
    """An audit span (`--since`) for "today", "yesterday", "since Monday", "last week", "this week",
    "in the last 3 days", "past hour"."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def hours_since(start: datetime) -> str:
        return f"{max(1, math.ceil((now - start).total_seconds() / 3600))}h"

    if found := re.search(r"\b(?:last|past|previous)\s+(\d{1,4})\s*(minute|hour|day|week)s?\b", lower):
        return f"{found.group(1)}{found.group(2)[0]}"
    if found := re.search(r"\b(?:last|past|previous)\s+(minute|hour|day|week|month)\b", lower):
        return {"minute": "1m", "hour": "1h", "day": "1d", "week": "7d", "month": "30d"}[found.group(1)]
    if found := re.search(r"\bsince\s+(" + "|".join(_WEEKDAYS) + r")\b", lower):
        days = (now.weekday() - _WEEKDAYS.index(found.group(1))) % 7
        return hours_since(midnight - timedelta(days=days or 7))
    if "yesterday" in lower:
        return hours_since(midnight - timedelta(days=1))
    if re.search(r"\b(today|this morning|so far)\b", lower):
        return hours_since(midnight)
    if re.search(r"\bthis week\b", lower):
        return hours_since(midnight - timedelta(days=now.weekday()))
    if re.search(r"\bthis month\b", lower):
        return hours_since(midnight.replace(day=1))
    if re.search(r"\b(lately|recently|recent)\b", lower):
        return "7d"
    return None
