"""Plain language: questions are answered, changes are proposed, typed commands stay as they are.

    interpreter = Interpreter(registry)
    reply = await interpreter.respond(ctx, "how is the credit endpoint doing?")
    # -> the `endpoint credit-api` card, headed "Read as `endpoint credit-api`"
    reply = await interpreter.respond(ctx, "give green 10% more on fraud-api")
    # -> a proposal: `canary fraud-api green 20`, before -> after, and a button that runs it

How it decides (see commands/language/understand.py): the registry's own declarations (each
`@command(..., phrases=...)`) give the vocabulary, the live workspace gives the names
(entities.py, re-read at most once a minute per workspace), small parsers read the values
(words.py). Text whose first word is a command and that parses as typed runs exactly as typed;
only text that is not a command, or a command whose words do not parse, is interpreted.

Safety: nothing that changes anything runs from free text. A change is answered with the exact
command, what it would do (the command's own handler is run against a preview gate that records
the `Change` it would submit instead of submitting it: same reads, same before -> after) and an
`Action.Execute` button carrying the command, which then goes through the registry and the gate
like every other button.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

from adapters.service import ServiceError
from adapters.storage import people as people_table
from commands.base.context import Context, Reply
from commands.language.readings import Reading, decide, is_change
from commands.base.registry import (_APOSTROPHE, MAX_INPUT_BYTES, CommandError, Registry, UsageError, suggest_commands,
                               tokenize, typo_distance, without_filler)
from commands.base.ui import as_text, button, card, facts, plain, reply as card_reply, text

if TYPE_CHECKING:
    from commands.changes.gate import Gate
    from commands.language.entities import EntityIndex
    from commands.language.understand import Understander

log = logging.getLogger(__name__)

# words that join a sentence and are never a name a command takes
FREE_TEXT_ARGS = frozenset({"text", "comment", "reason"})     # words taken as they are (`note 7 restarted the ...`)
LINKING = frozenset({"to", "the", "of", "for", "on", "with", "from", "into", "my", "me", "our", "is", "are", "a", "an"})
INDEX_SECONDS = 60.0        # how long a workspace's names are reused before they are read again
# a reading that needs words the message did not give: show the list instead of asking
LIST_INSTEAD = {"endpoint": "endpoints", "model": "models", "job": "jobs", "featureset": "featuresets",
                "drift": "monitors", "approval": "approvals", "history": "endpoints", "logs": "endpoints",
                "compare": "models"}


class Interpreter:
    """Understands plain-language messages for one registry; keeps each workspace's names a minute."""

    def __init__(self, registry: Registry, *, clock: Any = time.monotonic) -> None:
        self.registry = registry
        self._clock = clock
        self._indexes: dict[str, tuple[float, EntityIndex]] = {}

    @functools.cached_property
    def understander(self) -> Understander:
        """The vocabulary and the readers, built on the first message that is not a typed command:
        typed commands, most of what a busy channel sends, never load them (about 8 ms a start)."""
        from commands.language.understand import Understander
        return Understander(self.registry)

    # ------------------------------------------------------------ the entry point

    async def respond(self, ctx: Context, text_: str) -> Reply:
        words = text_.split()
        head = words[0].lower().rstrip("?!.,") if words else ""
        cmd = self.registry.find(head) if head else None
        if len(text_.encode("utf-8")) > MAX_INPUT_BYTES or not words or (cmd is not None and len(words) == 1):
            return await self.registry.run(ctx, text_)          # typed: exactly as before
        typed = self._typed(cmd, text_) if cmd is not None else None
        if cmd is not None and typed is not None:
            return await self.registry.invoke(ctx, cmd, *typed)   # typed: as `run` would, parsed once
        if cmd is not None and (any(w.startswith("--") for w in words) or _open_quote(text_)):
            return await self.registry.run(ctx, text_)          # typed syntax: its usage error, as before
        if cmd is not None:        # a command word whose words do not parse: plain language, or a slip
            try:
                verdict, readings = await self.understand(ctx, text_, prefer=cmd.name)
            except CommandError:
                verdict, readings = "none", []
            # the same command with its words understood (`audit fraud-api`), or, for a sentence
            # that only starts with a command's name ("stop the job notifications"), another one
            if verdict != "one" or not readings[0].complete or (
                    readings[0].command != cmd.name and len(words) < 3):
                return await self.registry.run(ctx, text_)      # the usage error, as before
            understood = self.registry.find(readings[0].command)
            if not is_change(understood, list(readings[0].argv)):
                return await self.read_as(ctx, readings[0])
            proposal = await self.propose(ctx, readings[0])
            if understood is not cmd:
                return proposal
            try:       # a change: the typed command's usage answer first, the proposal beside it (only
                cmd.parse(without_filler(cmd, tokenize(text_)[1:]))     # parsed, never run)
            except CommandError as error:
                return dataclasses.replace(proposal, text=f"{error.message}\n{proposal.text}")
            return proposal         # the words parse but read as a sentence ("scale churn-api to 4")
        verdict, readings = await self.understand(ctx, text_)
        if verdict == "none" and self._typo(ctx, head, alone=len(words) == 1):
            return await self.registry.run(ctx, text_)          # "stpo", "digets now": did you mean ...?
        return await self._answer_verdict(ctx, text_, verdict, readings)

    def _typo(self, ctx: Context, word: str, *, alone: bool) -> bool:
        """A slip of a command's name (a letter wrong, missing, extra, swapped or two), or a lone
        word like no command at all: both keep today's answer. Anything else gets suggestions by meaning."""
        close = suggest_commands(word, self.registry.allowed(ctx.role))
        return (alone and not close) or any(typo_distance(word.lower(), name) <= 2 for name in close)

    def _typed(self, cmd: Any, text_: str) -> tuple[list[str], dict[str, Any]] | None:
        """The words after the command's name and their parse, when `text_` reads as `cmd` typed
        (its first word is the name, found by `respond`; shlex reads a name as it is); else None."""
        try:
            tokens = tokenize(text_)
        except UsageError:
            return None
        argv = without_filler(cmd, tokens[1:])
        try:
            parsed = cmd.parse(argv)
        except UsageError:
            return None
        # "scale churn-api to 4", "traffic history for credit-api": the words parse, but a name
        # is never "to" or "for"; unless the command takes free text (a comment, a reason)
        free_text = any(a.nargs == "*" or (a.nargs == "+" and a.name in FREE_TEXT_ARGS) for a in cmd.args)
        return (argv, parsed) if free_text or not any(t.lower() in LINKING for t in tokens[1:]) else None

    async def understand(self, ctx: Context, text_: str, *, prefer: str | None = None) -> tuple[str, list[Reading]]:
        """("one" | "choose" | "none", readings) for the message, against the caller's workspace."""
        index = await self.index(ctx)
        readings = self.understander.readings(text_, index, now=ctx.now(), user_name=ctx.user.name, limit=4,
                                              workspaces=[w.name for w in ctx.workspaces])
        if prefer:
            readings = sorted((dataclasses.replace(r, score=r.score + 1.0) if r.command == prefer else r
                               for r in readings), key=lambda r: -r.score)
        return decide(readings)

    async def interpret(self, ctx: Context, text_: str) -> Reply:
        """The answer to plain text: a read run, a change proposed, a choice, or suggestions."""
        verdict, readings = await self.understand(ctx, text_)
        return await self._answer_verdict(ctx, text_, verdict, readings)

    async def _answer_verdict(self, ctx: Context, text_: str, verdict: str, readings: list[Reading]) -> Reply:
        if verdict == "none":
            return self.suggestions(ctx, text_)
        if verdict == "choose":
            return self.choices(ctx, readings)
        return await self.answer(ctx, readings[0])

    # ------------------------------------------------------------ the workspace's names

    async def index(self, ctx: Context) -> EntityIndex:
        key = ctx.ml.name
        cached = self._indexes.get(key)
        if cached and self._clock() - cached[0] < INDEX_SECONDS:
            return cached[1]
        people: list[str] = []
        if ctx.store is not None:
            try:
                people = await ctx.store.run_transaction(people_table.met, write=False)
            except Exception as error:  # noqa: BLE001 - names of people are a help, not a need
                log.info("plain language: could not read the people met: %s", error)
        from commands.language.entities import build_index     # with the understander: not at start
        index = await build_index(ctx.ml, [ctx.user.name, *people])
        self._indexes[key] = (self._clock(), index)
        return index

    # ------------------------------------------------------------ the answers

    async def answer(self, ctx: Context, reading: Reading) -> Reply:
        cmd = self.registry.find(reading.command)
        argv = list(reading.argv)
        if not reading.complete:
            instead = LIST_INSTEAD.get(cmd.name)
            if instead and not is_change(self.registry.find(instead), []):
                return await self.read_as(ctx, Reading(instead, (), reading.score))
            return self.needs(ctx, reading)
        if is_change(cmd, argv):
            return await self.propose(ctx, reading)
        return await self.read_as(ctx, reading)

    async def read_as(self, ctx: Context, reading: Reading) -> Reply:
        line = f"Read as {code(reading.line)}"
        try:
            answer = await self.registry.invoke(ctx, self.registry.find(reading.command), list(reading.argv))
        except CommandError as error:          # the command's own answer, still saying how it was read
            return Reply(f"{line}\n{error.message}")
        return headed(answer, line)

    async def propose(self, ctx: Context, reading: Reading) -> Reply:
        cmd = self.registry.find(reading.command)
        change, said = await self.preview(ctx, cmd, list(reading.argv))
        body = [text(f"Read as {code(reading.line)}. Nothing has changed yet.", subtle=True)]
        if change is not None:
            body.append(facts([("What", plain(change.summary)), ("Before", plain(_pairs(change.before)) or "-"),
                               ("After", plain(_pairs(change.after)) or "-")]))
        elif said:
            body.append(text(f"As things are now: {plain(said)}", wrap=True))
        else:
            body.append(text(plain(cmd.summary)))
        if ctx.role < cmd.role:
            body.append(text(f"`{cmd.name}` needs the {cmd.role.label} role; you have {ctx.role.label}, so the "
                             "button will be refused. Someone with the role can run it.", color="Warning"))
        body.append(text("The button runs it through the usual checks: your role, the policy and any approvals.",
                         subtle=True))
        action = button(f"Run {reading.line}"[:60], cmd.name, *reading.argv)
        return card_reply(card("Is this the change you mean?", body, subtitle=ctx.where if cmd.uses_workspace else "",
                               actions=[action]))

    async def preview(self, ctx: Context, cmd: Any, argv: list[str]) -> tuple[Any, str]:
        """The Change the command would submit (its handler run against a gate that only records),
        or what it would answer instead ("already stopped"). Only gated changes are previewed."""
        if not cmd.change or ctx.gate is None:
            return None, ""
        preview = PreviewGate(ctx.gate)
        dry = dataclasses.replace(ctx, gate=preview, activity_id="")
        try:
            kwargs = cmd.parse(argv)
            kwargs.pop("reason", None)
            kwargs.pop("emergency", None)      # a proposal is never an emergency: the gate decides as usual
            dry.workspace = kwargs.pop("workspace", None) if cmd.uses_workspace else None
            answered = await cmd.handler(dry, **kwargs)
        except (CommandError, ServiceError) as error:
            return None, error.message
        return preview.change, "" if preview.change else answered.text.split("\n")[0]

    def needs(self, ctx: Context, reading: Reading) -> Reply:
        cmd = self.registry.find(reading.command)
        missing = ", ".join(f"‹{m}›" for m in reading.missing)
        body = [text(f"That sounds like `{cmd.name}`, but I could not tell {missing} from your words."),
                text(f"Usage: `{cmd.usage}`"), text(f"For example: `{cmd.example}`", subtle=True)]
        return card_reply(card(f"Almost: {cmd.name}", body, actions=[button(f"Help on {cmd.name}", "help", cmd.name)]))

    def choices(self, ctx: Context, readings: Sequence[Reading]) -> Reply:
        body = [text("I can read that more than one way. Which do you mean?")]
        actions = []
        for reading in readings:
            cmd = self.registry.find(reading.command)
            if reading.complete:       # a change runs only when clicked, through the gate like any button
                body.append(text(f"{code(reading.line)}: {plain(cmd.summary)}", wrap=True))
                title = f"Run {reading.line}" if is_change(cmd, list(reading.argv)) else reading.line
                actions.append(button(title[:60], cmd.name, *reading.argv))
            else:
                body.append(text(f"`{cmd.name}`: {plain(cmd.summary)}", wrap=True))
                actions.append(button(f"Help on {cmd.name}", "help", cmd.name))
        return card_reply(card("Which one?", body, actions=actions))

    def suggestions(self, ctx: Context, text_: str) -> Reply:
        related = [name for name in self.understander.related(text_) if self.registry.find(name)]
        body = [text("I did not understand that as a question or a request I can handle.")]
        actions = []
        if related:
            body.append(text("These answer questions about the words you used:"))
            for name in related:
                cmd = self.registry.find(name)
                body.append(text(f"`{cmd.example}`: {plain(cmd.summary)}", wrap=True))
                actions.append(button(f"Help on {name}", "help", name))
        body.append(text("Type `help` to see everything I can do, or ask again in other words "
                         "(e.g. \"show fraud-api\", \"failed jobs\").", subtle=True))
        return card_reply(card("Not sure what you mean", body, actions=actions))


def _open_quote(text_: str) -> bool:
    """A real quotation mark left open (`model "fraud model`), not an apostrophe ("what's")."""
    try:
        tokenize(text_)
    except UsageError:
        rest = _APOSTROPHE.sub("", text_.translate(str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'",
                                                                 "\u2019": "'"})))
        return '"' in rest or "'" in rest
    return False


class PreviewGate:
    """Stands in for the gate while a change command is previewed: it records the Change the
    command hands over and starts nothing. Anything else a handler asks the gate is answered
    by the real gate only when it is a pure question (`rule`, `policy`)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self.change: Any = None

    @property
    def policy(self) -> Any:
        return self._gate.policy

    def rule(self, action: str, environment: str) -> Any:
        return self._gate.rule(action, environment)

    async def submit(self, ctx: Context, change: Any) -> Reply:
        self.change = change
        return Reply(change.summary)


def code(line: str) -> str:
    """A command line as inline code. Its words may come from the message or the workspace (a
    URI, a person's name), so it is made inert first: no backtick can close the code early."""
    return f"`{plain(line)}`"


def _pairs(values: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        if isinstance(value, dict):
            return " ".join(f"{k}={v}" for k, v in value.items())
        return str(value)
    return ", ".join(f"{k}: {shown(v)}" for k, v in values.items())


def headed(answer: Reply, line: str) -> Reply:
    """`answer` with `line` first: above its card's title, and first in its text."""
    if answer.card is None:
        return dataclasses.replace(answer, text=f"{line}\n{answer.text}")
    head = text(line, subtle=True, spacing="None")
    body = [head, *answer.card.get("body", [])]
    new_card = {**answer.card, "body": body}
    fallback = as_text(new_card)
    new_card["fallbackText"] = fallback if len(fallback) <= 2000 else fallback[:2000] + "…"
    return dataclasses.replace(answer, text=f"{line}\n{answer.text}", card=new_card)
