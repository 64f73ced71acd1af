"""Small pure helpers that build Adaptive Cards 1.5, and the plain-text rendering of any card.

A card is built once; its plain-text form (`as_text`) serves as the card's `fallbackText`, the
message's text in clients that show no cards, and the terminal chat.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

from commands.base.context import Reply

# Teams refuses messages over about 28 KB; keep cards well below it (the activity adds its own
# bytes): the body gets 20 KB, the fallback text (shown only by clients without cards) 2 KB.
MAX_CARD_BYTES = 20_000
MAX_FALLBACK_CHARS = 2_000
MAX_ROWS = 15

T = TypeVar("T")
Element = dict[str, Any]


# ---------------------------------------------------------------- untrusted text

INVISIBLE = "\u200b"                      # zero-width space: breaks markdown syntax, shows nothing
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LOOKALIKES = str.maketrans({"*": "\u2217", "~": "\u223c", "`": "\u02cb"})     # ∗ ∼ ˋ
_OPENING_UNDERSCORES = re.compile(r"(?<![A-Za-z0-9_])_+")         # not inside a word: could open _italic_
_JOINED = re.compile(r"\](?=[(\[:]|$)|\{(?=\{|$)")                 # ]( ][ ]: {{, or at the end
_BLOCK_START = re.compile(r">|(#+|[-+]|\d+[.)])( |$)|---")        # a quote, heading, list item or rule


def plain(value: object) -> str:
    """`value` (a name, a comment, a tag, an error from Azure: anything the bot did not write)
    as card text that Teams shows as it is: on one line, with no markdown in effect.

    Teams renders markdown in TextBlock text and in FactSet titles and values (bold, italic, lists,
    links: "Text features", learn.microsoft.com/adaptive-cards/authoring-cards/text-features, and
    "Format cards in Teams"). There is no reliable escape: a backslash is honoured on Windows and
    macOS but shown on iOS and Android (MicrosoftDocs/msteams-docs#5793; microsoft/AdaptiveCards
    #5590, #5758). A zero-width space only helps where the syntax needs two characters side by
    side: CommonMark counts it as a letter, so `*\u200bbold*` is still emphasis, and so is a link
    whose text starts with one. Hence the rule, certain under CommonMark and Adaptive Cards' own
    parser alike, and readable:

    - newlines, control and bidi-override characters become spaces; runs of spaces one space;
    - `*`, `~` and a backtick become the look-alikes `∗`, `∼` and `ˋ` (no emphasis, no
      strikethrough, no code);
    - `_` stays inside a word (`credit_score`, which CommonMark never reads as emphasis) and becomes
      `ˍ` where it could open emphasis (`_italic_`);
    - a zero-width space parts `](`, `][` and `]:` (no link, image or link definition: each needs
      its two characters side by side) and `{{` (no `{{DATE(...)}}` function), and follows a
      final `]` or `{`, which the text after the value could complete;
    - one precedes a leading `> `, `# `, `- `, `+ `, `1. ` or `---` (no quote, heading, list or rule).

    A bare URL stays a URL (clients may make it a link, showing where it goes). Pass only untrusted
    values through here; the bot's own markdown (`**v4**`, its links and `commands`) stays as it is.
    """
    if value is None:
        return ""
    words = " ".join(_CONTROLS.sub(" ", str(value)).split()).translate(_LOOKALIKES)
    words = _OPENING_UNDERSCORES.sub(lambda run: "\u02cd" * len(run[0]), words)
    words = _JOINED.sub(lambda found: found[0] + INVISIBLE, words)
    return INVISIBLE + words if _BLOCK_START.match(words) else words


# ---------------------------------------------------------------- elements


def text(value: str, *, weight: str | None = None, size: str | None = None, color: str | None = None,
         subtle: bool = False, wrap: bool = True, spacing: str | None = None) -> Element:
    block: Element = {"type": "TextBlock", "text": value, "wrap": wrap}
    for key, val in (("weight", weight), ("size", size), ("color", color), ("spacing", spacing)):
        if val:
            block[key] = val
    if subtle:
        block["isSubtle"] = True
    return block


def facts(pairs: Iterable[tuple[str, Any]]) -> Element:
    return {"type": "FactSet", "facts": [{"title": str(k), "value": _show(v)} for k, v in pairs]}


def columns(*cells: Sequence[Element] | Element, widths: Sequence[str] | None = None) -> Element:
    """A row of columns; each cell is an element or a list of elements."""
    cols = []
    for i, cell in enumerate(cells):
        items = list(cell) if isinstance(cell, (list, tuple)) else [cell]
        cols.append({"type": "Column", "width": widths[i] if widths else "stretch", "items": items})
    return {"type": "ColumnSet", "columns": cols}


def button(title: str, verb: str, *args: str, style: str | None = None, refresh: bool = False) -> Element:
    """An Action.Execute that runs command `verb` with words `args` (ids only: state is reloaded).

    A `refresh` button reloads the card it sits on and replaces it in place; every other button
    (navigation, or a change, whose title names its effect) leaves its card alone and the answer
    comes as a new message. The Teams seam reads the distinction from `data.refresh`.
    """
    data: Element = {"args": list(args)}
    if refresh:
        data["refresh"] = True
    action: Element = {"type": "Action.Execute", "title": title, "verb": verb, "data": data}
    if style:
        action["style"] = style
    return action


def section(title: str) -> Element:
    return text(title, weight="Bolder", spacing="Medium")


def card(title: str, body: Sequence[Element], *, subtitle: str = "", actions: Sequence[Element] = ()) -> Element:
    """A complete card; `subtitle` names the workspace so nobody confuses dev with prod."""
    head = [text(title, weight="Bolder", size="Medium")]
    if subtitle:
        head.append(text(subtitle, subtle=True, spacing="None"))
    result: Element = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": head + list(body),
        "msteams": {"width": "Full"},
    }
    if actions:
        result["actions"] = list(actions)
    fallback = as_text(result)
    result["fallbackText"] = fallback if len(fallback) <= MAX_FALLBACK_CHARS else fallback[:MAX_FALLBACK_CHARS] + "…"
    return result


def stamped(card_: Element, moment: datetime) -> Element:
    """The card refreshed at `moment`: "As of ..." under its title (replacing an older stamp)."""
    body = [b for b in card_.get("body", []) if b.get("id") not in ("as-of", READ_STAMP_ID)]
    stamp = text(f"As of {moment.strftime('%H:%M:%S')} UTC", subtle=True, spacing="None")
    stamp["id"] = "as-of"
    body.insert(min(2, len(body)), stamp)
    result = {**card_, "body": body}
    fallback = as_text(result)
    result["fallbackText"] = fallback if len(fallback) <= MAX_FALLBACK_CHARS else fallback[:MAX_FALLBACK_CHARS] + "…"
    return result


READ_STAMP_ID = "read-at"


def read_stamp(card_: Element, read_at: datetime, now: datetime) -> Element:
    """The card with a last line saying when its figures were read: "Figures read at 03:12:05 UTC"
    and, when they were kept from an earlier read (adapters.nonblocking), how long before this
    answer. A card already stamped (a refresh, `stamped`) keeps its stamp."""
    body = card_.get("body")
    if not isinstance(body, list) or any(isinstance(b, dict) and b.get("id") in ("as-of", READ_STAMP_ID)
                                         for b in body):
        return card_
    age = int((now - read_at).total_seconds())
    words = f"Figures read at {read_at.strftime('%H:%M:%S')} UTC" + (f", {age} s before this answer" if age >= 1 else "")
    stamp = text(words, subtle=True, size="Small")
    stamp["id"] = READ_STAMP_ID
    return {**card_, "body": [*body, stamp]}       # the fallback text (the reply's text) stays as it was


def reply(card_: Element) -> Reply:
    """The card, and its whole plain-text form (for the terminal chat and message previews)."""
    return Reply(text=as_text(card_), card=card_)


def limited(items: Sequence[T], render: Callable[[T], Element], *, noun: str, limit: int = MAX_ROWS,
            more_hint: str = "") -> list[Element]:
    """Render at most `limit` items, then an "N more" line, so no card outgrows a Teams message."""
    shown = [render(item) for item in items[:limit]]
    while shown and len(json.dumps(shown)) > MAX_CARD_BYTES:
        shown.pop()
    rest = len(items) - len(shown)
    if rest > 0:
        shown.append(text(f"… and {rest} more {noun}{'' if rest == 1 else 's'}." + (f" {more_hint}" if more_hint else ""),
                          subtle=True))
    if not items:
        shown.append(text(f"No {noun}s.", subtle=True))
    return shown


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def excerpt(value: str, limit: int = 160) -> str:
    """The start of a long message (an error from Azure), ending at a sentence: the sentences that
    fit in `limit` characters, or, when the first alone is longer, its words up to the limit and "…"."""
    words = " ".join(str(value or "").split())
    if len(words) <= limit:
        return words
    ends = [m.end() for m in _SENTENCE_END.finditer(words, 0, limit + 1) if m.end() <= limit]
    if ends:
        return words[:ends[-1]]
    cut = words[:limit].rsplit(" ", 1)[0] if " " in words[:limit] else words[:limit]
    return cut.rstrip(" ,;:") + "…"


def local_time(moment: datetime | None, *, date: bool = True) -> str:
    """`moment` in each reader's own time zone, for a TextBlock: Adaptive Cards' `{{DATE(…, SHORT)}}
    {{TIME(…)}}` (upper case, no spaces, strict RFC 3339 in UTC, or Teams shows the raw text). The
    plain-text form of the card (`as_text`) reads it back as UTC. Never pass untrusted text here."""
    if moment is None:
        return "—"
    stamp = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock = f"{{{{TIME({stamp})}}}}"
    return f"{{{{DATE({stamp}, SHORT)}}}} {clock}" if date else clock


_LOCAL_TIME = re.compile(r"\{\{DATE\((\d{4}-\d\d-\d\dT\d\d:\d\d):\d\dZ, SHORT\)\}\} \{\{TIME\(\S+?\)\}\}")
_LOCAL_CLOCK = re.compile(r"\{\{TIME\(\d{4}-\d\d-\d\dT(\d\d:\d\d):\d\dZ\)\}\}")


def _utc_words(line: str) -> str:
    line = _LOCAL_TIME.sub(lambda m: m.group(1).replace("T", " ") + " UTC", line)
    return _LOCAL_CLOCK.sub(lambda m: m.group(1) + " UTC", line)


def _show(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return when(value)
    return str(value)


# ---------------------------------------------------------------- plain text


def as_text(card_: Element) -> str:
    """A readable plain-text rendering of a card (buttons shown as the commands they run).

    Untrusted values keep their `plain` form: its look-alikes read as what they stand for, and its
    zero-width spaces stay, since `fallbackText` may be rendered as markdown (the schema says so);
    the terminal chat drops them."""
    lines: list[str] = []
    for element in card_.get("body", []):
        _render(element, lines, "")
    actions = card_.get("actions", [])
    if actions:
        lines.append("Actions: " + " | ".join(_action_text(a) for a in actions))
    return _utc_words("\n".join(lines))


def _render(element: Element, lines: list[str], indent: str) -> None:
    kind = element.get("type")
    if kind == "TextBlock":
        lines.append(indent + element["text"].replace("**", ""))
    elif kind == "FactSet":
        lines.extend(f"{indent}{f['title']}: {f['value']}" for f in element["facts"])
    elif kind == "ColumnSet":
        parts = []
        for column in element.get("columns", []):
            sub: list[str] = []
            for item in column.get("items", []):
                _render(item, sub, "")
            parts.append(" ".join(s.strip() for s in sub if s.strip()))
        lines.append(indent + "  ".join(p for p in parts if p))
    elif kind == "Container":
        for item in element.get("items", []):
            _render(item, lines, indent)
    elif kind == "ActionSet":
        lines.append(indent + "Actions: " + " | ".join(_action_text(a) for a in element.get("actions", [])))


def _action_text(action: Element) -> str:
    if action.get("type") == "Action.ShowCard":       # a button that asks first (e.g. Reject, for a reason)
        inner = [a for a in action.get("card", {}).get("actions", []) if a.get("type") == "Action.Execute"]
        if len(inner) == 1:
            words = " ".join(inner[0].get("data", {}).get("args", []))
            return f"{action.get('title', '')} (`{inner[0]['verb']}{' ' + words if words else ''}`)"
    if action.get("type") == "Action.Execute":
        words = " ".join(action.get("data", {}).get("args", []))
        return f"{action['title']} (`{action['verb']}{' ' + words if words else ''}`)"
    if action.get("type") == "Action.ShowCard" and action.get("card", {}).get("actions"):
        return f"{action['title']}: " + ", ".join(_action_text(a) for a in action["card"]["actions"])
    return action.get("title", "")
