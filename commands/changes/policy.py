"""Who must agree before a change runs: the policy, per change command and workspace environment.

Every change (traffic, scale, cancel, schedule, start, stop, batch, and later rollback, promote,
archive, retrain) passes the gate (`commands.changes.gate`), which asks `Policy.rule(action, environment)`:

    direct     run it at once
    confirm    the requester confirms on a Confirm/Cancel card first
    approval   `quorum` people with `approver_role` approve (the requester only if `allow_self`)
               within `expiry`

Defaults, with no policy file: in a `prod` workspace traffic, scale, canary, promote, archive,
retrain and batch need one approval from someone other than the requester, and cancel, schedule,
start and stop need a confirmation; `rollback` (back to a split that ran before: the safe
direction, break-glass) runs at once for an Operator and is reviewed afterwards by the approvers;
elsewhere traffic and scale need a confirmation and the rest runs directly. No change may be run
as an emergency unless a rule says `emergency = true`. Requests still waiting after `remind`
(default 1 h) remind the approvers once and widen to the admins.

A policy file (TOML, `MLOPSBOT_POLICY_FILE`) overrides them, rule by rule; the last matching rule
wins, so specific rules go after general ones:

    [[rule]]
    action = "traffic"            # a change command, a list of them, or "*"
    environment = "prod"          # a workspace environment label, a list, or "*"
    mode = "approval"             # direct | confirm | approval
    quorum = 2                    # approval only; default 1
    allow_self = false            # may the requester vote? default false
    approver_role = "approver"    # operator | approver | admin; default approver
    expiry = "4h"                 # 30m, 4h, 2d; default 24h
    auto_rollback = true          # traffic, canary: roll back by itself when the watch after the
                                  # change finds the endpoint degraded (commands/changes/verdicts.py); default false
    review = true                 # direct only: the approvers get a review card afterwards
                                  # (default: true for rollback in prod, else false)
    emergency = true              # `--emergency "<reason>"` runs it at once, pages the approvers
                                  # and asks them to review; default false
    remind = "1h"                 # approval only: remind once and widen to the admins after this

Who may manage a conversation's subscriptions (`subscribe`, `unsubscribe`; operators by
default) is a top-level table:

    [subscriptions]
    role = "viewer"               # viewer | operator | approver | admin

`load_policy` validates the whole file at start-up and names the line of the first problem.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

from commands.base.context import Role

DIRECT, CONFIRM, APPROVAL = "direct", "confirm", "approval"
REQUESTER_ONLY = "requester"        # approver_role of a confirmation: only its requester decides
MODES = (DIRECT, CONFIRM, APPROVAL)

CHANGE_ACTIONS = ("traffic", "scale", "cancel", "schedule", "start", "stop", "batch", "rollback", "canary",
                  "promote", "archive", "retrain")
PROD_APPROVAL = ("traffic", "canary", "scale", "promote", "archive", "retrain", "batch")
PROD_CONFIRM = ("cancel", "schedule", "start", "stop")
ELSEWHERE_CONFIRM = ("traffic", "canary", "scale")
PROD_REVIEW = ("rollback",)          # the safe direction: at once, reviewed afterwards (break-glass)

DEFAULT_EXPIRY = timedelta(hours=24)
CONFIRM_EXPIRY = timedelta(minutes=30)
DEFAULT_REMIND = timedelta(hours=1)
MAX_QUORUM = 10
_DURATION = re.compile(r"^\s*([0-9]{1,6})\s*([mhd])\s*$")     # ASCII digits: \d also matches '٣'
_RULE_KEYS = {"action", "environment", "mode", "quorum", "allow_self", "approver_role", "expiry",
              "auto_rollback", "review", "emergency", "remind"}


class PolicyError(ValueError):
    """The policy file is unusable; the message names the line and what is wrong."""


@dataclass(frozen=True)
class Rule:
    mode: str = DIRECT
    quorum: int = 1
    allow_self: bool = False
    approver_role: Role = Role.APPROVER
    expiry: timedelta = DEFAULT_EXPIRY
    auto_rollback: bool = False
    source: str = "default"
    review: bool = False             # direct: the approvers review it afterwards
    emergency: bool = False          # may be run at once as an emergency (`--emergency "<reason>"`)
    remind: timedelta = DEFAULT_REMIND   # approval: remind and widen to the admins after this

    def describe(self) -> str:
        """In words, as `help` and `policies` show it."""
        words = self._describe_mode()
        if self.mode == DIRECT and self.review:
            words += f", reviewed afterwards by an {self.approver_role.label}"
        if self.auto_rollback:
            words += "; rolled back by itself if the endpoint degrades"
        if self.emergency and self.mode != DIRECT:
            words += "; may run at once as an emergency (`--emergency`)"
        return words

    def _describe_mode(self) -> str:
        if self.mode == DIRECT:
            return "runs at once"
        if self.mode == CONFIRM:
            return "asks you to confirm first"
        who = f"{self.approver_role.label}s" if self.quorum > 1 else f"an {self.approver_role.label}"
        self_note = "" if self.allow_self else " other than the requester"
        return (f"needs {self.quorum} approval{'s' if self.quorum > 1 else ''} from "
                f"{who}{self_note} within {duration_text(self.expiry)}")


@dataclass(frozen=True)
class _Match:
    actions: frozenset[str] | None        # None: any
    environments: frozenset[str] | None   # None: any
    rule: Rule

    def matches(self, action: str, environment: str) -> bool:
        return ((self.actions is None or action in self.actions)
                and (self.environments is None or environment.lower() in self.environments))


class Policy:
    """Defaults overridden by the rules of a policy file (the last matching rule wins)."""

    def __init__(self, rules: Iterable[_Match] = (), *, source: str = "", text: str = "",
                 subscription_role: Role = Role.OPERATOR) -> None:
        self._rules = list(rules)
        self.subscription_role = subscription_role   # who may subscribe / unsubscribe a conversation
        self.source = source          # the file it came from ("" for the defaults)
        self.text = text              # the file's content, for the audit trail's fingerprint

    def digest(self) -> str:
        """SHA-256 of the policy file's text ("defaults" for none): what the audit trail records."""
        return hashlib.sha256((self.text or "defaults").encode("utf-8")).hexdigest()

    def rule(self, action: str, environment: str) -> Rule:
        for match in reversed(self._rules):
            if match.matches(action, environment):
                return match.rule
        return default_rule(action, environment)

    def table(self, environments: Iterable[str]) -> list[tuple[str, str, Rule]]:
        """The effective rule of every change command in each environment."""
        return [(action, env, self.rule(action, env)) for env in dict.fromkeys(environments)
                for action in CHANGE_ACTIONS]


def default_rule(action: str, environment: str) -> Rule:
    if environment.lower() in ("prod", "production"):
        if action in PROD_APPROVAL:
            return Rule(APPROVAL)
        if action in PROD_CONFIRM:
            return Rule(CONFIRM, expiry=CONFIRM_EXPIRY)
        if action in PROD_REVIEW:
            return Rule(DIRECT, review=True)
    elif action in ELSEWHERE_CONFIRM:
        return Rule(CONFIRM, expiry=CONFIRM_EXPIRY)
    return Rule(DIRECT)


def duration_text(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    if minutes % (24 * 60) == 0 and minutes >= 48 * 60:
        return f"{minutes // (24 * 60)} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def parse_duration(text: str) -> timedelta:
    """`30m`, `4h`, `2d` -> timedelta; ValueError in words otherwise."""
    found = _DURATION.match(text) if isinstance(text, str) else None
    if not found or int(found.group(1)) == 0:
        raise ValueError(f"'{text}' is not a duration like 30m, 4h or 2d")
    number, unit = int(found.group(1)), found.group(2)
    return timedelta(minutes=number) if unit == "m" else timedelta(hours=number) if unit == "h" else timedelta(days=number)


def load_policy(path: str | Path | None) -> Policy:
    """The policy from a TOML file (the defaults when `path` is empty). Raises PolicyError."""
    if not path:
        return Policy()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read the policy file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"the policy file {path} is not UTF-8 text") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "policy") -> Policy:
    import tomllib           # only for a policy file: the default policy is built without it (1.5 ms a start)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{source}: {error}") from None
    unknown = set(document) - {"rule", "subscriptions"}
    if unknown:
        raise PolicyError(f"{source} line {_line_of(text, sorted(unknown)[0])}: unknown section or key "
                          f"'{sorted(unknown)[0]}' (only [[rule]] tables and [subscriptions] are allowed)")
    subscription_role = _subscription_role(document.get("subscriptions", {}), text, source)
    rules = document.get("rule", [])
    if not isinstance(rules, list):
        raise PolicyError(f"{source} line {_line_of(text, 'rule')}: write rules as [[rule]] tables")
    lines = _rule_lines(text)
    matches = []
    for index, table in enumerate(rules):
        line = lines[index] if index < len(lines) else "?"
        try:
            matches.append(_parse_rule(table, f"{source} line {line}"))
        except ValueError as error:
            raise PolicyError(f"{source} line {line} (rule {index + 1}): {error}") from None
    return Policy(matches, source=source, text=text, subscription_role=subscription_role)


def _subscription_role(table: Any, text: str, source: str) -> Role:
    where = f"{source} line {_line_of(text, '[subscriptions]')}"
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: write [subscriptions] as a table with a role")
    unknown = set(table) - {"role"}
    if unknown:
        raise PolicyError(f"{where}: unknown key '{sorted(unknown)[0]}' in [subscriptions] (known: role)")
    value = table.get("role", "operator")
    try:
        return Role.parse(value) if isinstance(value, str) else Role.parse(repr(value))
    except ValueError:
        raise PolicyError(f"{where}: [subscriptions] role must be viewer, operator, approver or admin, "
                          f"not {value!r}") from None


def _parse_rule(table: Any, where: str) -> _Match:
    if not isinstance(table, dict):
        raise ValueError("a rule must be a table")
    unknown = set(table) - _RULE_KEYS
    if unknown:
        raise ValueError(f"unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(_RULE_KEYS))})")
    actions = _names(table.get("action", "*"), "action")
    if actions is not None:
        bad = sorted(actions - set(CHANGE_ACTIONS))
        if bad:
            raise ValueError(f"unknown action '{bad[0]}' (use one of {', '.join(CHANGE_ACTIONS)}, or \"*\")")
    environments = _names(table.get("environment", "*"), "environment")
    mode = table.get("mode")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    quorum = table.get("quorum", 1)
    if not isinstance(quorum, int) or isinstance(quorum, bool) or not 1 <= quorum <= MAX_QUORUM:
        raise ValueError(f"quorum must be a whole number from 1 to {MAX_QUORUM}, not {quorum!r}")
    allow_self = table.get("allow_self", False)
    auto_rollback = table.get("auto_rollback", False)
    review = table.get("review", False)
    emergency = table.get("emergency", False)
    for key, value in (("allow_self", allow_self), ("auto_rollback", auto_rollback), ("review", review),
                       ("emergency", emergency)):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, not {value!r}")
    role_text = table.get("approver_role", "approver")
    try:
        role = Role.parse(role_text) if isinstance(role_text, str) else None
    except ValueError:
        role = None
    if role is None or role < Role.OPERATOR:
        raise ValueError(f"approver_role must be operator, approver or admin, not {role_text!r}")
    default_expiry = CONFIRM_EXPIRY if mode == CONFIRM else DEFAULT_EXPIRY
    expiry = parse_duration(table["expiry"]) if "expiry" in table else default_expiry
    remind = parse_duration(table["remind"]) if "remind" in table else DEFAULT_REMIND
    rule = Rule(mode, quorum, allow_self, role, expiry, auto_rollback, source=where, review=review,
                emergency=emergency, remind=remind)
    return _Match(actions, environments, rule)


def _names(value: Any, key: str) -> frozenset[str] | None:
    if value == "*":
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"{key} must be a name, a list of names, or \"*\"")
    if "*" in items:
        return None
    return frozenset(v.strip().lower() for v in items)


def _rule_lines(text: str) -> list[int]:
    return [number for number, line in enumerate(text.splitlines(), start=1) if line.strip().startswith("[[rule]]")]


def _line_of(text: str, word: str) -> int | str:
    for number, line in enumerate(text.splitlines(), start=1):
        if word in line:
            return number
    return "?"
