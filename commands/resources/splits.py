"""How a traffic split is read and written, the same way everywhere (pure: no I/O, no imports of commands).

`blue=90 green=10` is parsed by `parse_split`, written by `traffic_text`, and a change of it by
`traffic_change` (`blue=90 green=10 → blue=0 green=100`). Cards, verdicts, the audit trail and the
digest all use these, so a split reads the same wherever it is shown.
"""

from __future__ import annotations

import re
from typing import Iterable

from commands.base.registry import UsageError


def traffic_text(traffic: dict[str, int], *, zero: Iterable[str] = ()) -> str:
    """The one way a split is written: `blue=90 green=10`, largest share first (ties by name).
    Deployments with 0% are left out, except those named in `zero` (shown as `green=0`)."""
    shares = {**{name: 0 for name in zero}, **traffic}
    shown = [f"{name}={pct}" for name, pct in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
             if pct or name in zero]
    return " ".join(shown) or "no traffic"


def traffic_change(before: dict[str, int], after: dict[str, int]) -> str:
    """A split before → after, both sides in the same order so they read across:
    `blue=90 green=10 → blue=0 green=100`. The order is the before side's (largest first), then
    deployments that are new. A deployment whose share went to or from 0 is shown as `=0` on that
    side, so nobody wonders where it went."""
    moved = {name for name in {*before, *after} if bool(before.get(name, 0)) != bool(after.get(name, 0))}
    order = sorted({*before, *after}, key=lambda name: (-before.get(name, 0),
                                                       0 if before.get(name, 0) else -after.get(name, 0), name))

    def side(split: dict[str, int]) -> str:
        shown = [f"{name}={split.get(name, 0)}" for name in order if split.get(name, 0) or name in moved]
        return " ".join(shown) or "no traffic"
    return f"{side(before)} → {side(after)}"


def parse_split(words: list[str]) -> dict[str, int]:
    """`blue=90 green=10` -> {"blue": 90, "green": 10}; the workspace checks names and the sum.
    Percentages are ASCII digits only: int() would take '²' or '٣' and choke on 5,000 digits."""
    split: dict[str, int] = {}
    for word in words:
        name, sep, value = word.partition("=")
        percent = value.strip().removesuffix("%")
        if not sep or not name or not re.fullmatch(r"[0-9]{1,3}", percent):
            shown = word if len(word) <= 40 else word[:40] + "…"
            raise UsageError(f"'{shown}' is not deployment=percent. Usage: `traffic ‹endpoint› "
                             "‹deployment=percent› ...`, e.g. `traffic fraud-api blue=90 green=10`.")
        if name in split:
            raise UsageError(f"Deployment '{name}' is given twice.")
        split[name] = int(percent)
    return split
