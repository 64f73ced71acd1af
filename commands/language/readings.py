"""What plain language makes of a message, and the rules that need no vocabulary: a `Reading`
(a command and its words, with a score), `decide` (one reading, a choice, or none) and
`is_change` (a reading that would change something is only ever proposed).

Kept apart from understand.py, which builds the vocabulary and the readings, so that the typed
commands' path (commands/language/__init__.py) does not load that machinery at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.base.context import Role
from commands.base.registry import Command

THRESHOLD = 1.2        # below this nothing was understood
MARGIN = 0.75          # the best must lead the next different reading by this much
# commands anyone may run that still change something (a subscription, a schedule of digests)
CHANGING_READS = {"subscribe", "unsubscribe"}


def is_change(cmd: Command, argv: list[str]) -> bool:
    """Whether running `cmd argv` changes anything (then it is only ever proposed)."""
    if cmd.change or cmd.role > Role.VIEWER or cmd.name in CHANGING_READS:
        return True
    return cmd.name == "digest" and bool(argv) and argv[0] in ("schedule", "off")


@dataclass(frozen=True)
class Reading:
    command: str
    argv: tuple[str, ...]
    score: float
    missing: tuple[str, ...] = ()     # what it still needs, in the command's words

    @property
    def line(self) -> str:
        return " ".join([self.command, *(_quoted(w) for w in self.argv)])

    @property
    def complete(self) -> bool:
        return not self.missing


def _quoted(word: str) -> str:
    return f'"{word}"' if (not word or any(c.isspace() for c in word)) else word


def decide(readings: list[Reading]) -> tuple[str, list[Reading]]:
    """("one", [best]) | ("choose", top two or three) | ("none", [])."""
    if not readings or readings[0].score < THRESHOLD:
        return "none", []
    best = readings[0]
    rivals = [r for r in readings[1:] if r.score >= THRESHOLD]
    if not rivals or best.score - rivals[0].score >= MARGIN:
        return "one", [best]
    return "choose", [best, *rivals[:2]]

