"""The command registry: one declaration per command gives its parser, usage, help, example and role.

    @command("traffic", Arg("endpoint"), Arg("split", nargs="+", metavar="deployment=percent"),
             phrases=("set traffic", "shift traffic", "move traffic", "split traffic", "send traffic",
                      "route traffic", "send everything to", "all traffic to", "switch to", "cut over", "flip to",
                      "route all", "traffic to", "route everything", "everything to", "all to"),
             summary="Shift traffic between deployments of an online endpoint.",
             role=Role.OPERATOR, example="traffic fraud-api blue=90 green=10")
    async def traffic(ctx: Context, endpoint: str, split: list[str]) -> Reply: ...

Every command that talks to a workspace also accepts `--workspace NAME` (declared here once, not
per command). Typed text and card buttons both end in `Registry.invoke`, so parsing, permission
checks and errors have one path.

Error tree (raised here, turned into replies by the bot's handler)::

    CommandError
    ├── UsageError        the words don't fit the command (carries the usage line)
    ├── UnknownCommand    no such command (carries "did you mean" suggestions)
    ├── UnknownName       no such model / endpoint / ... (carries suggestions from the workspace)
    └── Forbidden         the caller's role is below the command's
"""

from __future__ import annotations

import argparse
import difflib
import functools
import inspect
import logging
import re
import shlex
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from adapters.service import NotFound
from commands.base.context import Context, Reply, Role, UnknownWorkspace

MAX_INPUT_BYTES = 4096
# A required word in a usage line: single guillemets, not < >. Teams reads `<endpoint>` in a
# message as an HTML tag (it vanishes, or shows as `&lt;endpoint&gt;` once escaped inside code),
# while ‹endpoint› needs no escaping and reads the same in messages, cards and the terminal.
OPEN, CLOSE = "\u2039", "\u203a"
MAX_ACTION_ARGS = 32    # words a card button may carry
log = logging.getLogger(__name__)


class CommandError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CommandError):
    pass


class UnknownCommand(CommandError):
    def __init__(self, word: str, suggestions: list[str]) -> None:
        hint = f" Did you mean {_either(suggestions)}?" if suggestions else ""
        super().__init__(f"I don't know the command '{word}'.{hint} Type `help` to see what I can do.")
        self.word = word
        self.suggestions = suggestions


class UnknownName(CommandError):
    def __init__(self, error: NotFound, suggestions: list[str]) -> None:
        hint = f" Did you mean {_either(suggestions)}?" if suggestions else ""
        super().__init__(f"{error.message}{hint}")
        self.kind = error.kind
        self.name = error.name
        self.suggestions = suggestions


class Forbidden(CommandError):
    pass


def _either(words: list[str]) -> str:
    quoted = [f"`{w}`" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def suggest(word: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """Close matches, case-insensitively, in the candidates' own spelling."""
    by_lower = {c.lower(): c for c in candidates}
    return [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)]


def suggest_commands(word: str, commands: Sequence["Command"], n: int = 3) -> list[str]:
    """Commands close to `word`. A command that changes something is offered only for a plain
    typo of its name (one letter wrong, missing, extra or swapped): `status` must never lead
    anyone to `start`. When some close command starts with the same letter as `word`, only those
    are offered (people rarely mistype the first letter: `modles` is `models`, not `roles`)."""
    close = suggest(word, [c.name for c in commands], n=n)
    changes = {c.name for c in commands if c.role > Role.VIEWER}
    close = [name for name in close if name not in changes or typo_distance(word.lower(), name) <= 1]
    same_start = [name for name in close if word[:1].lower() == name[:1]]
    return same_start or close


def typo_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


@dataclass(frozen=True)
class Arg:
    """A positional argument (`Arg("endpoint")`) or an option (`Arg("--stage")`)."""

    name: str
    help: str = ""
    nargs: str | None = None          # None, "?", "*" or "+"
    choices: Sequence[str] | None = None
    type: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None

    @property
    def is_option(self) -> bool:
        return self.name.startswith("--")

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    @property
    def shown(self) -> str:
        return self.metavar or (self.dest.upper() if self.is_option else self.dest)

    def usage(self) -> str:
        if self.is_option:
            return f"[{self.name} {self.shown}]"
        return {None: f"{OPEN}{self.shown}{CLOSE}", "?": f"[{self.shown}]", "*": f"[{self.shown} ...]",
                "+": f"{OPEN}{self.shown}{CLOSE} ..."}[self.nargs]


# What `help` (and the table in docs/commands.md) groups commands by: the task they serve, in this order. A
# command declares its group (`group="alerts"`); without one, a command that changes something is
# "change" and any other "look". `common=True` puts it first in its group and in the short help.
GROUPS = ("set up", "look", "change", "approve", "alerts")

MAX_ID = 2**62          # the largest id a typed command looks up: well inside SQLite's and PostgreSQL's BIGINT


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argument type: a whole number of `what` from `low` to `high`, in ASCII digits (int()
    would also take '²' or '٣' and fail on thousands of digits; SQLite refuses integers past 2**63)."""
    widest = len(str(max(abs(low), abs(high))))

    def parse(value: str) -> int:
        digits = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", digits):
            shown = value if len(value) <= 20 else value[:20] + "…"
            raise argparse.ArgumentTypeError(f"'{shown}' is not a whole number of {what}")
        number = int(digits) if len(digits.lstrip("+-").lstrip("0")) <= widest else None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}")
        return number
    return parse


def one_of(values: Sequence[str], what: str) -> Callable[[str], str]:
    """An argument type: one of `values`, matched case-insensitively, given back in its own spelling."""
    def parse(value: str) -> str:
        for known in values:
            if known.lower() == value.lower():
                return known
        raise argparse.ArgumentTypeError(f"unknown {what} '{value}' (use one of {', '.join(values)})")
    return parse


WORKSPACE_ARG = Arg("--workspace", help="which configured workspace (default: the first)", metavar="NAME")
REASON_ARG = Arg("--reason", help="why: shown to approvers and kept in the audit trail", metavar="TEXT")
EMERGENCY_ARG = Arg("--emergency", help="run it at once as an emergency (only where the policy allows it): "
                    "the approvers are paged and review it afterwards", metavar="REASON")
MAX_REASON_CHARS = 500


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, in words for a person."""

    described: dict[str, "Arg"] = {}      # argparse's name for an argument -> its declaration

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(_in_words(message, self.described))

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or "invalid arguments")


Handler = Callable[..., Awaitable[Reply]]


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Arg, ...]
    summary: str
    role: Role
    example: str
    handler: Handler
    uses_workspace: bool = True
    change: bool = False              # passes the gate; takes --reason
    group: str = ""                   # one of GROUPS; "" = "change" for a change (or a higher role), else "look"
    common: bool = False              # among the first `help` shows
    phrases: tuple[str, ...] = ()     # how people ask for it in their own words (commands.language)

    @property
    def task(self) -> str:
        """The group `help` and docs/commands.md list the command under."""
        return self.group or ("change" if self.change or self.role > Role.VIEWER else "look")

    @functools.cached_property
    def parser(self) -> argparse.ArgumentParser:
        """argparse for the declared arguments, built on the command's first use (not at start: the
        catalog's 58 parsers cost about 5 ms of every start, and most commands are rarely typed)."""
        parser = _Parser(prog=self.name, add_help=False, allow_abbrev=False)
        for arg in self.all_args:
            kwargs: dict[str, Any] = {"help": arg.help, "type": arg.type, "default": arg.default}
            if arg.nargs:
                kwargs["nargs"] = arg.nargs
            if arg.choices:
                kwargs["choices"] = list(arg.choices)
            if arg.is_option:
                kwargs["dest"] = arg.dest
            parser.add_argument(arg.name, **kwargs)
        if self.change:       # break-glass: accepted by every change, described in docs/changes.md and `policies`
            parser.add_argument(EMERGENCY_ARG.name, dest=EMERGENCY_ARG.dest, help=EMERGENCY_ARG.help, default=None)
        parser.described = {name: a for a in self.all_args for name in {a.name, a.dest, a.shown}}
        return parser

    @property
    def all_args(self) -> tuple[Arg, ...]:
        return (self.args + ((WORKSPACE_ARG,) if self.uses_workspace else ())
                + ((REASON_ARG,) if self.change else ()))

    @property
    def usage(self) -> str:
        return " ".join([self.name, *(a.usage() for a in self.all_args)])

    def help(self) -> str:
        lines = [f"**{self.name}**: {self.summary}", f"Usage: `{self.usage}`"]
        lines += [f"- `{a.name if a.is_option else a.shown}`: {a.help}" + (
            f" (one of {', '.join(a.choices)})" if a.choices else "") for a in self.all_args if a.help]
        lines.append(f"Example: `{self.example}`")
        if self.role > Role.VIEWER:
            lines.append(f"Needs the {self.role.label} role.")
        return "\n".join(lines)

    def argv(self, parameters: dict[str, Any]) -> list[str]:
        """The words that give these named parameters (the pipeline API names arguments, chat
        types words): positionals in order, options as `--name value`. ValueError names a problem."""
        known = {a.dest: a for a in self.args}
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter '{unknown[0]}' for {self.name} (known: {', '.join(known) or 'none'})")
        words: list[str] = []
        for arg in self.args:
            value = parameters.get(arg.dest)
            if value is None:
                if not arg.is_option and arg.nargs not in ("?", "*"):
                    raise ValueError(f"{self.name} needs the parameter '{arg.dest}'")
                continue
            if isinstance(value, dict):
                values = [f"{k}={v}" for k, v in value.items()]
            elif isinstance(value, list):
                values = [str(v) for v in value]
            elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                values = str(value).split() if arg.nargs in ("+", "*") else [str(value)]
            else:
                raise ValueError(f"parameter '{arg.dest}' must be text, a number, a list or an object")
            words += ([arg.name] if arg.is_option else []) + values
        return words

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        try:
            namespace = self.parser.parse_args(list(argv))
        except UsageError as error:
            raise UsageError(f"{_sentence(error.message)} Usage: `{self.usage}` (e.g. `{self.example}`)") from None
        return vars(namespace)


_REQUIRED = re.compile(r"^the following arguments are required: (.+)$")
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.+)$")
_ABOUT = re.compile(r"^argument (\S+?)(?:/\S+)?: (.+)$", re.S)
_CHOICE = re.compile(r"^invalid choice: '(.*)' \(choose from (.+)\)$", re.S)


def _in_words(message: str, described: dict[str, "Arg"]) -> str:
    """argparse's messages, which name its internals ("the following arguments are required:
    split"), rephrased for a person; anything unforeseen passes through unchanged."""
    message = message.strip()
    if found := _REQUIRED.match(message):
        missing = [described.get(name.strip()) for name in found.group(1).split(",")]
        wanted = [f"{OPEN}{a.shown}{CLOSE}" + (f" ({a.help})" if a.help else "") if a else "more words"
                  for a in missing]
        return f"Something is missing: {_and(wanted)}"
    if found := _UNRECOGNIZED.match(message):
        options = sorted({a.name for a in described.values() if a.is_option})
        close = [match for word in found.group(1).split() if word.startswith("--")
                 for match in suggest(word.split("=", 1)[0], options, n=1)]
        hint = f". Did you mean `{close[0]}`?" if close else ""
        return f"I didn't expect `{_clip(found.group(1))}` here{hint}"
    if found := _ABOUT.match(message):
        name, problem = found.group(1), found.group(2).strip()
        arg = described.get(name)
        shown = name if name.startswith("--") else f"{OPEN}{arg.shown if arg else name}{CLOSE}"
        if problem in ("expected one argument", "expected at least one argument"):
            return f"`{name}` needs a value" + (f": {arg.help}" if arg and arg.help else "")
        if choice := _CHOICE.match(problem):
            options = [o.strip().strip("'") for o in choice.group(2).split(",")]
            return f"'{_clip(choice.group(1))}' is not a choice for {shown}: use {_or(options)}"
        return problem[:1].upper() + problem[1:]
    return message


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _sentence(message: str) -> str:
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?")) else message + "."


_APOSTROPHE = re.compile(r"(?<=[A-Za-z])'(?=[A-Za-z]|\s|$)")
# Words a person adds to a command that are not part of it: dropped from the end when the command
# does not parse with them but does without ("endpoint fraud-api please", "jobs?").
FILLER = frozenset({"please", "pls", "plz", "now", "thanks", "thx", "thank", "you", "?", "!"})


def without_filler(cmd: "Command", argv: Sequence[str]) -> list[str]:
    """`argv`, or argv without trailing filler words ("please", "now", "?") when only that parses."""
    words = list(argv)
    if words and words[-1].endswith(("?", "!")) and words[-1].rstrip("?!"):
        words[-1] = words[-1].rstrip("?!")
    trimmed = list(words)
    while trimmed and trimmed[-1].lower().rstrip("?!.,") in FILLER | {""}:
        trimmed.pop()
    for candidate in (words, list(argv), trimmed):
        try:
            cmd.parse(candidate)
        except UsageError:
            continue
        return candidate
    return list(argv)


def tokenize(text: str) -> list[str]:
    """Split typed text like a shell: quotes group words; smart quotes count as quotes."""
    if len(text.encode("utf-8")) > MAX_INPUT_BYTES:
        raise UsageError(f"That message is too long for a command (over {MAX_INPUT_BYTES // 1024} KB). "
                         "Commands are short, e.g. `models fraud-model`.")
    text = text.translate(str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'",
                                         "\u00a0": " "}))
    try:
        return shlex.split(text)
    except ValueError:
        pass
    # An apostrophe inside or at the end of a word ("what's", "bob's", "models'") is not a quote.
    marked = _APOSTROPHE.sub("\u0000", text)
    try:
        return [word.replace("\u0000", "'") for word in shlex.split(marked)]
    except ValueError:
        raise UsageError("A quotation mark is not closed. Put quotes around names with spaces, "
                         'like `model "fraud model"`.') from None


class Registry:
    """All commands, in declaration order (the order `help` and the Teams manifest show)."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def command(self, name: str, *args: Arg, summary: str, example: str, role: Role = Role.VIEWER,
                uses_workspace: bool = True, change: bool = False, group: str = "",
                common: bool = False, phrases: Sequence[str] = ()) -> Callable[[Handler], Handler]:
        """`phrases`: the words people use for this command in plain language ("roll back",
        "put back", "undo"); commands.language reads them, nothing else does."""
        if group and group not in GROUPS:
            raise ValueError(f"command {name!r}: unknown group {group!r} (one of {', '.join(GROUPS)})")

        def register(handler: Handler) -> Handler:
            if name in self._commands:
                raise ValueError(f"command {name!r} declared twice")
            cmd = Command(name, tuple(args), summary, role, example, handler, uses_workspace, change,
                          group=group, common=common, phrases=tuple(phrases))
            _check_signature(cmd)
            self._commands[name] = cmd
            return handler
        return register

    def __iter__(self):
        return iter(self._commands.values())

    def arrange(self, modules: Sequence[str]) -> None:
        """Order the commands by the module that declares them (then by declaration)."""
        rank = {name: i for i, name in enumerate(modules)}
        ordered = sorted(enumerate(self._commands.values()),
                         key=lambda item: (rank.get(item[1].handler.__module__, len(rank)), item[0]))
        self._commands = {cmd.name: cmd for _, cmd in ordered}

    def find(self, word: str) -> Command | None:
        return self._commands.get(word.lower())

    def lookup(self, word: str, role: Role | None = None) -> Command:
        """The command named `word`, or UnknownCommand suggesting names (those `role` may run)."""
        found = self.find(word)
        if found is None:
            commands = self.allowed(role) if role is not None else list(self)
            raise UnknownCommand(word, suggest_commands(word, commands))
        return found

    def allowed(self, role: Role) -> list[Command]:
        return [c for c in self if c.role <= role]

    def by_task(self, commands: Sequence[Command] | None = None) -> list[tuple[str, list[Command]]]:
        """(group, its commands, common ones first) in GROUPS order, leaving out empty groups."""
        chosen = list(self) if commands is None else list(commands)
        return [(group, [c for c in chosen if c.task == group and c.common]
                 + [c for c in chosen if c.task == group and not c.common])
                for group in GROUPS if any(c.task == group for c in chosen)]

    async def run(self, ctx: Context, text: str) -> Reply:
        """Run typed text such as `models fraud-model --stage Production`."""
        tokens = tokenize(text)
        if not tokens:
            tokens = ["help"]
        head = tokens[0]
        if self.find(head) is None and head.rstrip("?!.,") and self.find(head.rstrip("?!.,")):
            head = head.rstrip("?!.,")          # "jobs?", "compute!"
        cmd = self.lookup(head, ctx.role)
        return await self.invoke(ctx, cmd, without_filler(cmd, tokens[1:]))

    async def run_action(self, ctx: Context, verb: str, args: Sequence[Any]) -> Reply:
        """Run a card button: `verb` is a command name, `args` its words (ids only), bounded like
        typed text: a forged button cannot make the bot parse (or echo back) more than a message."""
        cmd = self.find(verb) if isinstance(verb, str) and len(verb) <= 64 else None
        if cmd is None or not isinstance(args, (list, tuple)) or not all(
                isinstance(a, str) or (isinstance(a, int) and not isinstance(a, bool)) for a in args):
            raise UsageError("That button doesn't carry a command I know. It may come from an older "
                             "version of this bot; type `help` to see the commands.")
        words = [str(a) for a in args[:MAX_ACTION_ARGS + 1]]
        if len(args) > MAX_ACTION_ARGS or sum(len(w.encode("utf-8")) + 1 for w in words) > MAX_INPUT_BYTES:
            raise UsageError("That button carries more than a command can hold. It may come from an older "
                             "version of this bot; type `help` to see the commands.")
        return await self.invoke(ctx, cmd, words)

    async def invoke(self, ctx: Context, cmd: Command, argv: Sequence[str],
                     parsed: dict[str, Any] | None = None) -> Reply:
        """Run `cmd` on its words `argv`; `parsed`: what `cmd.parse(argv)` gave, when the caller
        parsed them already (plain language checks typed words that way first)."""
        if ctx.role < cmd.role:
            raise Forbidden(f"`{cmd.name}` needs the {cmd.role.label} role; you have {ctx.role.label}. "
                            "Ask a bot admin to grant it (`roles` lists them).")
        kwargs = dict(parsed) if parsed is not None else cmd.parse(argv)
        if cmd.change:
            reason = kwargs.pop("reason") or ""
            if len(reason) > MAX_REASON_CHARS:
                raise UsageError(f"The reason is too long ({len(reason)} characters; at most {MAX_REASON_CHARS}).")
            ctx.reason = reason
            emergency = kwargs.pop("emergency", None)
            if emergency is not None:
                emergency = emergency.strip()
                if not emergency:
                    raise UsageError('An emergency needs its reason: `--emergency "<why it cannot wait>"`.')
                if len(emergency) > MAX_REASON_CHARS:
                    raise UsageError(f"The emergency reason is too long ({len(emergency)} characters; at most "
                                     f"{MAX_REASON_CHARS}).")
                ctx.emergency = emergency
        if cmd.uses_workspace:
            ctx.workspace = kwargs.pop("workspace")
            try:
                ctx.ml  # noqa: B018 - resolves the name, raising for an unknown workspace
            except UnknownWorkspace as error:
                raise UsageError(str(error)) from None
        if cmd.role > Role.VIEWER:
            log.info("change requested: %s (%s) ran %s %s in %s", ctx.user.name, ctx.user.id, cmd.name,
                     " ".join(argv), ctx.ml.name if cmd.uses_workspace else "-")
        try:
            return await cmd.handler(ctx, **kwargs)
        except NotFound as error:
            if await _is_batch_endpoint(ctx, error):
                raise UsageError(f"{error.name} is a batch endpoint; canary, history, rollback, traffic, scale and "
                                 f"logs work on online endpoints. `endpoint {error.name}` shows it, `batch "
                                 f"{error.name} {OPEN}input{CLOSE}` scores data with it.") from None
            raise UnknownName(error, await _similar_names(ctx, error)) from None


async def _is_batch_endpoint(ctx: Context, error: NotFound) -> bool:
    """Did a command that needs an online endpoint get the name of a batch endpoint? Every lookup
    of an online endpoint that fails ends here, so this is the one place that tells them apart."""
    if error.kind != "endpoint":
        return False
    try:
        await ctx.ml.get_batch_endpoint(error.name)
    except Exception:  # noqa: BLE001 - not one (or cannot tell): the "no endpoint named" answer stands
        return False
    return True


async def _similar_names(ctx: Context, error: NotFound) -> list[str]:
    if ":" in error.name or error.kind == "deployment":
        return []   # a version or deployment of something that exists: the message lists the real ones
    try:
        return suggest(error.name, await ctx.ml.names(error.kind))
    except Exception:  # suggestions are a courtesy: never let them hide the real answer
        return []


def _check_signature(cmd: Command) -> None:
    """Fail at import time when a handler's parameters don't match its declared arguments."""
    params = list(inspect.signature(cmd.handler).parameters)
    expected = ["ctx", *(a.dest for a in cmd.args)]
    if params != expected:
        raise TypeError(f"handler for {cmd.name!r} takes {params}, its declaration gives {expected}")


CATALOG = Registry()
command = CATALOG.command
