"""From a message to a command: which one, with which words, and how sure.

    Vocabulary  each command's declared `phrases` (next to its @command) plus its own name, stemmed;
                a phrase matches when all its meaningful words appear in the message in order;
                rarer words weigh more (like an IDF weight), so "roll back" beats "show".
    Slots       one small builder per command turns the message's values and the workspace names it
                mentions into that command's words (`canary fraud-api green 20`); a command without
                one gets a builder made from its declared `Arg`s (an alert number, a choice, free
                text, a person, `--workspace`), see `declared`.
    Decision    phrase score + filled slots - missing ones; the best must win by a margin, else
                the two or three likeliest are offered. Nothing is ever run from here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from commands.language.entities import EntityIndex, Mention
from commands.language.words import STOP, Message, read, stem, words_of
from commands.base.registry import Command, Registry
from commands.language.readings import Reading

# commands that list things: "endpoints" in their phrases means the word, not one endpoint's name
LISTS = frozenset({"endpoints", "models", "jobs", "compute", "schedules", "monitors", "featuresets", "featurestores",
                   "approvals", "subscriptions"})
# the nouns for a kind of thing: in a phrase, "model" also matches a model's name ("refresh {model}")
KIND_NOUNS = {kind: frozenset(stem(w) for w in words) for kind, words in {
    "endpoint": ("endpoint", "api"), "batch_endpoint": ("endpoint", "batch"), "model": ("model",),
    "job": ("job", "pipeline", "run"), "schedule": ("schedule",), "compute": ("compute", "vm", "instance", "machine"),
    "featureset": ("feature", "featureset"), "monitor": ("monitor",)}.items()}



@dataclass
class Filled:
    argv: list[str] = field(default_factory=list)
    filled: int = 0
    missing: list[str] = field(default_factory=list)

    def add(self, *words: str, slot: bool = True) -> None:
        self.argv.extend(words)
        self.filled += 1 if slot else 0

    def need(self, what: str) -> None:
        self.missing.append(what)


# ---------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Phrase:
    stems: tuple[str, ...]


class Vocabulary:
    """The phrases of every command, stemmed, with a weight per word (rarer across commands: heavier)."""

    def __init__(self, registry: Registry) -> None:
        self.commands: dict[str, Command] = {c.name: c for c in registry}
        self.phrases: dict[str, list[Phrase]] = {}
        users: dict[str, set[str]] = {}
        for cmd in registry:
            texts = [cmd.name, *cmd.phrases]
            phrases = []
            for text in texts:
                stems = tuple(_phrase_words(text))
                if stems:
                    phrases.append(Phrase(stems))
                    for s in stems:
                        users.setdefault(s, set()).add(cmd.name)
            self.phrases[cmd.name] = phrases
        total = len(self.commands)
        self.weight = {s: 1.0 + 0.75 * math.log(total / len(names)) for s, names in users.items()}
        self.known = frozenset(users)

    def score(self, name: str, stems: list[str], kinds: frozenset[str] = frozenset()) -> float:
        """The best of the command's phrases that the message says; `{kind}` in a phrase is met
        by a name of that kind anywhere in the message ("how is {endpoint} doing")."""
        best = 0.0
        for phrase in self.phrases[name]:
            words = tuple(s for s in phrase.stems if not s.startswith("@"))
            slots = [s[1:] for s in phrase.stems if s.startswith("@")]
            if any(kind not in kinds for kind in slots):
                continue
            own = name in LISTS or (len(phrase.stems) == 1 and phrase.stems[0] == name)
            found = _in_order(stems, words, own=own) if words else []
            if found is None:
                continue
            value = sum(self.weight.get(s, 1.0) for s in words) + 1.0 * len(slots)
            if found and found[-1] - found[0] == len(found) - 1:
                value += 0.3 * (len(found) - 1)     # said as one phrase
            best = max(best, value)
        return best


def _phrase_words(text: str) -> list[str]:
    """A phrase's meaningful words, stemmed; `{endpoint}` stays a placeholder (`@endpoint`)."""
    out: list[str] = []
    for part in re.split(r"(\{[a-z_]+\})", text):
        if part.startswith("{"):
            out.append("@" + part[1:-1])
        else:
            out += [stem(w) for w in words_of(part) if w not in STOP]
    return out


def _in_order(stems: list[str], wanted: tuple[str, ...], own: bool = False) -> list[int] | None:
    """Where the wanted words occur in order (gaps allowed). A kind word in a phrase ("model")
    also matches a name of that kind (`@model`), except in a command's bare name."""
    at, positions = 0, []
    for w in wanted:
        for i in range(at, len(stems)):
            token = stems[i]
            if token == w or (not own and token.startswith("@") and w in KIND_NOUNS.get(token[1:], ())):
                break
        else:
            return None
        positions.append(i)
        at = i + 1
    return positions


# ---------------------------------------------------------------- what the message mentions


@dataclass
class Facts:
    """A message with the workspace names it mentions, for the slot builders."""

    msg: Message
    index: EntityIndex
    mentions: list[Mention]
    user_name: str
    content: list[str]
    workspaces: Sequence[str] = ()          # the configured workspaces' names

    def best(self, *kinds: str, floor: float = 1.0) -> str | None:
        for m in self.mentions:
            if m.entity.kind in kinds and m.strength >= floor:
                return m.entity.name
        return None

    def deployments(self, endpoint: str | None) -> list[str]:
        """Deployments of `endpoint` the message names, in the order it names them."""
        found = self.index.endpoints.get(endpoint or "")
        names = [d.name for d in found.deployments] if found else []
        return [w for w in self.msg.words if w in names]

    def endpoint_of_deployment(self) -> str | None:
        """The one endpoint that has a deployment the message names ("shadow" -> credit-api)."""
        owners = {e.name for e in self.index.endpoints.values()
                  for d in e.deployments if d.name in self.msg.words}
        return owners.pop() if len(owners) == 1 else None

    def has(self, *words: str) -> bool:
        return any(stem(w) in self.msg.stems for w in words)

    def model_ref(self, model: str) -> tuple[str, bool]:
        """`model:version` from a version or a stage word ("the candidate"), else the model alone."""
        if self.msg.version:
            return f"{model}:{self.msg.version}", True
        after = re.search(re.escape(model.lower()).replace("\\-", "[\\s-]") + r"\s+(\d{1,6})\b", self.msg.raw.lower())
        if after:
            return f"{model}:{after.group(1)}", True
        stage = self.stage_from()
        if stage:
            version = self.version_in(model, stage)
            if version:
                return f"{model}:{version}", True
        return model, False

    def version_in(self, model: str, stage: str) -> str | None:
        versions = [v for v in self.index.models.get(model, []) if v.stage == stage]
        return versions[-1].version if versions else None

    def stage_from(self) -> str | None:
        """The stage that picks a version (not the one something moves *to*)."""
        stages = _stage_words(self.msg.words)
        target = self.stage_to()
        rest = [s for s, after_to in stages if not after_to]
        if rest:
            return rest[0]
        return stages[0][0] if stages and target is None else None

    def stage_to(self) -> str | None:
        stages = _stage_words(self.msg.words)
        if "make" in self.msg.words and len(stages) >= 2:
            return stages[-1][0]                # "make the candidate the champion"
        for stage, after_to in stages:
            if after_to:
                return stage
        return None


_STAGES = {"production": "Production", "prod": "Production", "champion": "Production", "live": "Production",
           "staging": "Staging", "candidate": "Staging", "challenger": "Staging",
           "archived": "Archived", "archive": "Archived", "retired": "Archived"}


def _stage_words(words: list[str]) -> list[tuple[str, bool]]:
    found = []
    for i, w in enumerate(words):
        if w in _STAGES:
            after_to = i > 0 and words[i - 1] in ("to", "into", "in") or (i > 1 and words[i - 2] in ("to", "into"))
            found.append((_STAGES[w], after_to))
    return found


# ---------------------------------------------------------------- slot builders, one per command

Builder = Callable[[Facts], Filled]
BUILDERS: dict[str, Builder] = {}
# a name the message mentions that no phrase claims: these commands show that kind of thing
BY_KIND = {"endpoint": "endpoint", "batch_endpoint": "endpoint", "model": "model", "job": "job",
           "featureset": "featureset", "monitor": "drift", "compute": "compute", "schedule": "schedules"}


def builds(*names: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        for name in names:
            BUILDERS[name] = fn
        return fn
    return register


def _endpoint(f: Facts, out: Filled, *, batch: bool = False, online: bool = True) -> str | None:
    kinds = (("endpoint",) if online else ()) + (("batch_endpoint",) if batch else ())
    name = f.best(*kinds)
    if name is None and online:
        name = f.endpoint_of_deployment()
    if name:
        out.add(name)
    else:
        out.need("endpoint")
    return name


@builds("endpoint")
def _b_endpoint(f: Facts) -> Filled:
    out = Filled()
    _endpoint(f, out, batch=True)
    return out


@builds("history", "rollback")
def _b_history(f: Facts) -> Filled:
    out = Filled()
    _endpoint(f, out)
    return out


@builds("logs")
def _b_logs(f: Facts) -> Filled:
    out = Filled()
    endpoint = _endpoint(f, out)
    named = f.deployments(endpoint)
    found = f.index.endpoints.get(endpoint or "")
    if named:
        out.add(named[0])
    elif found and len(found.deployments) == 1:
        out.add(found.deployments[0].name, slot=False)
    else:
        out.need("deployment")
    lines = [n for n in f.msg.numbers if re.search(rf"\b{n}\s+(?:log\s+)?lines?\b", f.msg.raw.lower())]
    if lines:
        out.add("--lines", str(lines[0]))
    return out


@builds("canary")
def _b_canary(f: Facts) -> Filled:
    out = Filled()
    endpoint = _endpoint(f, out)
    found = f.index.endpoints.get(endpoint or "")
    named = f.deployments(endpoint)
    deployment = named[0] if named else None
    if deployment is None and found and len(found.deployments) == 2:
        deployment = min(found.deployments, key=lambda d: found.traffic.get(d.name, 0)).name   # the canary
    if deployment:
        out.add(deployment, slot=bool(named))
    else:
        out.need("deployment")
    percent = f.msg.percent
    if percent is None and f.msg.relative == 0 and f.has("all", "everything"):
        percent = 100
    if percent is None:
        out.need("percent")
        return out
    if f.msg.relative and found and deployment:
        percent = max(0, min(100, found.traffic.get(deployment, 0) + f.msg.relative * percent))
    out.add(str(percent))
    return out


@builds("traffic")
def _b_traffic(f: Facts) -> Filled:
    out = Filled()
    endpoint = _endpoint(f, out)
    found = f.index.endpoints.get(endpoint or "")
    if not found:
        out.need("split")
        return out
    names = [d.name for d in found.deployments]
    pairs = re.findall(r"\b(" + "|".join(map(re.escape, names)) + r")\b\s*(?:=|:|to|at|gets?)?\s*(\d{1,3})\s*%?",
                       f.msg.raw.lower()) if names else []
    if pairs:
        split = {d: int(p) for d, p in pairs}
        if len(split) == len(names) - 1 and sum(split.values()) <= 100:
            rest = next(n for n in names if n not in split)
            split[rest] = 100 - sum(split.values())
        out.add(*[f"{d}={split[d]}" for d in names if d in split])
        return out
    named = f.deployments(endpoint)
    if named and (f.has("all", "everything", "fully", "entirely") or f.msg.percent == 100):
        out.add(*[f"{d}={100 if d == named[0] else 0}" for d in names])
        return out
    out.need("split")
    return out


@builds("scale")
def _b_scale(f: Facts) -> Filled:
    out = Filled()
    endpoint = _endpoint(f, out)
    found = f.index.endpoints.get(endpoint or "")
    named = f.deployments(endpoint)
    deployment = named[0] if named else (found.deployments[0].name if found and len(found.deployments) == 1 else None)
    if deployment:
        out.add(deployment, slot=bool(named))
    else:
        out.need("deployment")
    count = next((n for n in f.msg.numbers if 0 < n <= 20), None)
    if count is not None and f.msg.relative and found and deployment:
        current = next((d.instance_count for d in found.deployments if d.name == deployment), 0)
        count = current + f.msg.relative * count
    elif count is None and f.msg.relative and found and deployment:
        current = next((d.instance_count for d in found.deployments if d.name == deployment), 0)
        count = current + f.msg.relative
    if count is None:
        out.need("instances")
    else:
        out.add(str(count))
    return out


@builds("batch")
def _b_batch(f: Facts) -> Filled:
    out = Filled()
    _endpoint(f, out, batch=True, online=False)
    uri = re.search(r"\b((?:azureml|https|abfss|wasbs):\S+)", f.msg.raw)
    if uri:
        out.add(uri.group(1))
    else:
        out.need("input")
    return out


@builds("demo")
def _b_demo(f: Facts) -> Filled:
    out = Filled()
    what = "heal" if f.has("heal", "fix", "recover", "healthy") else "degrade" if f.has(
        "degrade", "break", "slow", "misbehave", "fail") else None
    if what:
        out.add(what)
    else:
        out.need("degrade|heal")
    endpoint = _endpoint(f, out)
    named = f.deployments(endpoint)
    if named:
        out.add(named[0])
    else:
        out.need("deployment")
    return out


@builds("models")
def _b_models(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model", floor=1.5)
    if model:
        out.add(model)
    stage = f.stage_from() or f.stage_to()
    if stage:
        out.add("--stage", stage, slot=model is None)
    return out


@builds("model")
def _b_model(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model")
    if model:
        out.add(f.model_ref(model)[0])
    else:
        out.need("model")
    return out


@builds("compare")
def _b_compare(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model")
    if not model:
        out.need("model")
        return out
    versions = re.findall(r"(?:\bv|\bversion\s*|:)(\d{1,6})\b", f.msg.raw.lower()) or [
        str(n) for n in f.msg.numbers[:2]]
    if len(versions) >= 2:
        out.add(f"{model}:{versions[0]}", versions[1])
    elif len(versions) == 1:
        out.add(f"{model}:{versions[0]}")
    else:
        out.add(model)
    return out


@builds("promote")
def _b_promote(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model")
    if not model:
        out.need("model:version")
    else:
        ref, pinned = f.model_ref(model)
        if pinned:
            out.add(ref)
        else:
            out.need("version")
    target = f.stage_to() or ("Production" if f.has("promote", "ship", "release") and f.stage_from() == "Staging"
                              else None)
    if target:
        out.add(target)
    else:
        out.need("stage")
    return out


@builds("archive")
def _b_archive(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model")
    if not model:
        out.need("model:version")
        return out
    ref, pinned = f.model_ref(model)
    if pinned:
        out.add(ref)
    else:
        out.need("version")
    return out


@builds("retrain")
def _b_retrain(f: Facts) -> Filled:
    out = Filled()
    model = f.best("model")
    if model:
        out.add(model)
    else:
        out.need("model")
    return out


@builds("jobs")
def _b_jobs(f: Facts) -> Filled:
    out = Filled()
    if f.msg.status:
        out.add("--status", f.msg.status)
    count = re.search(r"\b(?:last|latest|recent|top)\s+(\d{1,2})\b", f.msg.raw.lower())
    if count:
        out.add("--limit", count.group(1))
    return out


@builds("job", "cancel")
def _b_job(f: Facts) -> Filled:
    out = Filled()
    job = f.best("job", floor=0.6)
    if job:
        out.add(job)
    else:
        out.need("job")
    return out


@builds("featuresets")
def _b_featuresets(f: Facts) -> Filled:
    return Filled()


@builds("featureset")
def _b_featureset(f: Facts) -> Filled:
    out = Filled()
    name = f.best("featureset")
    if name:
        out.add(name)
    else:
        out.need("feature set")
    return out


@builds("drift")
def _b_drift(f: Facts) -> Filled:
    out = Filled()
    target = f.best("model", "endpoint", "monitor")
    if target:
        out.add(target)
    else:
        out.need("model")
    days = re.search(r"\b(\d{1,3})\s*(?:d|days?)\b", f.msg.raw.lower())
    if days:
        out.add("--window", f"{days.group(1)}d")
    elif f.msg.since and f.msg.since.endswith("d"):
        out.add("--window", f.msg.since)
    return out


@builds("schedule")
def _b_schedule(f: Facts) -> Filled:
    out = Filled()
    if f.has("enable", "resume", "unpause", "reenable") or re.search(r"\bturn\b.*\bon\b|\bswitch\b.*\bon\b",
                                                                       f.msg.raw.lower()):
        out.add("enable")
    elif f.has("disable", "pause", "suspend", "stop", "off", "halt"):
        out.add("disable")
    elif f.has("run", "trigger", "kick", "fire", "start", "launch"):
        out.add("run")
    else:
        out.need("enable|disable|run")
    name = f.best("schedule")
    if name:
        out.add(name)
    else:
        out.need("schedule")
    return out


@builds("grant")
def _b_grant_only(f: Facts) -> Filled:
    out = _b_grant(f)
    if len(out.argv) < 2 and not out.missing:
        out.need("role")
    return out


@builds("revoke")
def _b_revoke(f: Facts) -> Filled:
    out = _b_grant(f)
    del out.argv[1:]
    return out


@builds("start", "stop")
def _b_compute(f: Facts) -> Filled:
    out = Filled()
    name = f.best("compute")
    if name is None:
        person = f.best("person", floor=1.5)
        first = words_of(person)[0] if person else None
        owned = [c for c in f.index.compute if first and first in words_of(c)]
        name = owned[0] if len(owned) == 1 else None
    if name is None and f.msg.me:
        first = words_of(f.user_name)[:1]
        owned = [c for c in f.index.compute if first and first[0] in words_of(c)]
        name = owned[0] if len(owned) == 1 else None
    if name:
        out.add(name)
    else:
        out.need("compute")
    return out


def _id(f: Facts, out: Filled, what: str) -> None:
    found = re.search(r"(?:#|\bnumber\s+|\bno\.?\s*|\brequest\s+|\balert\s+|\bapproval\s+|\bid\s+)?\b(\d{1,9})\b",
                      f.msg.raw)
    if found:
        out.add(found.group(1))
    else:
        out.need(what)


@builds("approval", "confirm", "withdraw", "acknowledge")
def _b_id(f: Facts) -> Filled:
    out = Filled()
    _id(f, out, "id")
    return out


@builds("approve", "reject")
def _b_vote(f: Facts) -> Filled:
    out = Filled()
    _id(f, out, "id")
    return out


@builds("snooze")
def _b_snooze(f: Facts) -> Filled:
    out = Filled()
    _id(f, out, "id")
    if f.msg.duration and not out.missing:
        out.add(f.msg.duration)
    return out


@builds("approvals")
def _b_approvals(f: Facts) -> Filled:
    out = Filled()
    if f.msg.me:
        out.add("mine", slot=False)
    elif f.has("all", "every", "ever"):
        out.add("all", slot=False)
    return out


KINDS = ("drift", "alerts", "jobs", "models", "approvals")


@builds("subscribe", "unsubscribe")
def _b_subscribe(f: Facts) -> Filled:
    out = Filled()
    kind = next((k for k in KINDS if stem(k) in f.msg.stems or (k == "alerts" and f.has("alert"))), None)
    if kind is None and f.has("approval"):
        kind = "approvals"
    if kind:
        out.add(kind)
    else:
        out.need("kind")
    return out


@builds("digest")
def _b_digest(f: Facts) -> Filled:
    out = Filled()
    if f.has("off", "stop", "cancel", "disable", "unschedule"):
        out.add("off")
    elif f.has("when", "which", "what time", "show") and not f.has("now"):
        out.add("show")
    elif f.has("every", "daily", "weekly", "morning") or (f.has("schedule") and not f.has("now")):
        out.need("cron")
    elif f.has("now", "send", "summary", "report", "health", "today", "give", "post"):
        out.add("now")
    else:
        out.need("schedule|now|show|off")
    return out


AUDIT_ACTIONS = {"traffic": "traffic", "canary": "canary", "rollback": "rollback", "roll": "rollback",
                 "revert": "rollback", "scale": "scale", "scal": "scale", "promot": "promote", "archiv": "archive",
                 "retrain": "retrain", "cancel": "cancel", "approv": "approved", "reject": "rejected",
                 "grant": "grant"}


@builds("audit")
def _b_audit(f: Facts) -> Filled:
    out = Filled()
    if f.has("verify", "tamper", "intact", "integrity", "altered"):
        out.add("verify")
        return out
    if f.msg.since:
        out.add("--since", f.msg.since)
    person = f.best("person", floor=1.5)
    if person:
        out.add("--actor", person)
    elif re.search(r"\b(did i|i did|have i|by me|i changed|my changes|i've|i have)\b", f.msg.raw.lower()) \
            and f.user_name:
        out.add("--actor", f.user_name)
    target = f.best("endpoint", "model", "compute", "schedule", "batch_endpoint", floor=1.5)
    if target:
        out.add("--target", target)
    action = next((AUDIT_ACTIONS[s] for s in f.msg.stems if s in AUDIT_ACTIONS), None)
    if action and action not in ("approved", "rejected") or (action and not target):
        out.add("--action", action)
    return out


_PERSON_ID = re.compile(r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b|(?<!\w)(@\w[\w.-]*)",
                        re.IGNORECASE)
ROLE_WORDS = ("viewer", "operator", "approver", "admin")


@builds("grant", "revoke")
def _b_grant(f: Facts) -> Filled:
    out = Filled()
    who = _PERSON_ID.search(f.msg.raw)
    if who:
        out.add(who.group(1) or who.group(2))
    else:
        out.need("user")
    role = next((r for r in ROLE_WORDS if r in f.msg.words or r + "s" in f.msg.words), None)
    if role and not f.has("revoke", "remove", "take"):
        out.add(role)
    return out


# ---------------------------------------------------------------- slots read from a command's declaration
# Commands without a builder of their own get one made from their `Arg`s: a number-typed positional
# (`Arg("id", type=alert_number)`) takes "alert 7", "#7", "item 7" (or a bare number when it is required),
# free text (`text`, `comment`, `reason`) takes what follows a colon or the number, a person
# (`person`, `user`) takes "me", an @mention, an object id or a name the bot has met, and a
# positional whose metavar lists its values (`dead|retry`, `id|all`) takes the value the message
# names, or says with a word of CHOICE_WORDS. Any command with a `--workspace` option gets the name
# of a configured workspace that the message says in full.

# words that say a value without naming it; the values whose words are verbs come first, so that
# "resend the undelivered messages" is a retry and not a listing
CHOICE_WORDS: dict[str, tuple[str, ...]] = {
    "retry": ("retry", "resend", "redeliver", "again"),
    "all": ("all", "every", "everything"),
    "dead": ("dead", "undelivered", "delivered", "deliveries", "given up", "gave up", "stuck"),
}
FREE_TEXT = frozenset({"text", "comment", "reason", "message"})
PEOPLE_ARGS = frozenset({"person", "user", "who"})
NUMBER_WORDS = frozenset({"id", "number", "n"})
_MARKED_NUMBER = re.compile(r"(?:#\s*|\b(?:alert|item|number|no\.?|id)\s+#?)(\d{1,9})\b", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"(?<![\w.:#-])(\d{1,9})(?![\w.%:-])(?!\s*(?:%|percent|pct|m\b|mins?\b|minutes?|h\b|hrs?\b|"
                          r"hours?|d\b|days?|w\b|wks?\b|weeks?))", re.IGNORECASE)


def _numeric(arg: Any) -> bool:
    """Whether an argument's type takes whole numbers only (an alert id, an item number)."""
    try:
        arg.type("1")
    except Exception:  # noqa: BLE001 - a type that refuses 1 is not a number type
        return False
    try:
        arg.type("x")
    except Exception:  # noqa: BLE001 - refusing a word is what makes it a number type
        return True
    return False


def _number(f: Facts, bare: bool) -> tuple[str, int] | None:
    """The number the message gives for an id, and where it ends: a marked one ("alert 7", "#7")
    first; a bare one ("stop snoozing 8") only when `bare`."""
    found = _MARKED_NUMBER.search(f.msg.raw) or (_BARE_NUMBER.search(f.msg.raw) if bare else None)
    return (found.group(1), found.end()) if found else None


def _said(f: Facts, value: str) -> bool:
    words = CHOICE_WORDS.get(value, ()) + (value,)
    return any(re.search(rf"\b{re.escape(w)}\b", f.msg.raw.lower()) for w in words)


def _person(f: Facts) -> str | None:
    who = _PERSON_ID.search(f.msg.raw)
    if who:
        return who.group(1) or who.group(2)
    person = f.best("person", floor=1.5)
    if person:
        return person
    if f.msg.me and f.user_name:
        return f.user_name
    return None


def _workspace_named(f: Facts) -> str | None:
    """A configured workspace the message names in full (`ml-prod`)."""
    for name in f.workspaces:
        stems = [stem(w) for w in words_of(name)]
        n = len(stems)
        if n and any(f.msg.stems[i:i + n] == stems for i in range(len(f.msg.stems) - n + 1)):
            return name
    return None


def declared(cmd: Command) -> Builder:
    """A builder for `cmd` made from its declared arguments (see above)."""
    positionals = [a for a in cmd.args if not a.is_option]
    numeric = {a.name for a in positionals if _numeric(a)}       # once, not per message

    def build(f: Facts) -> Filled:
        out = Filled()
        end = 0                                 # where the words given so far end, in the raw text
        for arg in positionals:
            required = arg.nargs not in ("?", "*")
            alternatives = (arg.metavar or "").split("|") if arg.metavar and "|" in arg.metavar else []
            if arg.name in numeric:
                found = _number(f, bare=required)
                if found:
                    out.add(found[0])
                    end = found[1]
                elif required:
                    out.need(arg.name)
                    return out
            elif alternatives:
                literal = [v for v in alternatives if v not in NUMBER_WORDS]
                ordered = [v for v in CHOICE_WORDS if v in literal] + [v for v in literal if v not in CHOICE_WORDS]
                value = next((v for v in ordered if re.search(rf"\b{re.escape(v)}\b", f.msg.raw.lower())), None) \
                    or next((v for v in ordered if _said(f, v)), None)
                number = _number(f, bare=False) if value is None and len(literal) < len(alternatives) else None
                if value:
                    out.add(value)
                elif number:
                    out.add(number[0])
                elif required:
                    out.need(arg.metavar or arg.name)
                    return out
            elif arg.name in FREE_TEXT and arg.nargs in ("+", "*"):
                colon = f.msg.raw.find(":", end)
                rest = f.msg.raw[colon + 1:] if colon >= 0 else f.msg.raw[end:]
                words = rest.lstrip(" ,;-–—").split()      # "review change 7, right call": not ", right"
                if words:
                    out.add(*words)
                elif required:
                    out.need(arg.name)
            elif arg.name in PEOPLE_ARGS:
                person = _person(f)
                if person:
                    out.add(person)
                elif required:
                    out.need(arg.name)
        return out
    return build


def with_workspace(cmd: Command, build: Builder) -> Builder:
    """`build`, plus `--workspace NAME` when the command takes one and the message names one; a
    filled slot only for a command whose own arguments declare it (`posture --workspace`)."""
    own = any(a.name == "--workspace" for a in cmd.args)
    if not own and not cmd.uses_workspace:
        return build

    def build_with(f: Facts) -> Filled:
        out = build(f)
        name = _workspace_named(f)
        if name and "--workspace" not in out.argv:
            out.add("--workspace", name, slot=own)
        return out
    return build_with


# ---------------------------------------------------------------- scoring


class Understander:
    """Turns a message into readings, best first, for one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.vocabulary = Vocabulary(registry)
        self.builders = {c.name: with_workspace(c, BUILDERS.get(c.name) or declared(c)) for c in registry}

    def readings(self, text: str, index: EntityIndex, *, now: datetime, user_name: str = "",
                 limit: int = 3, workspaces: Sequence[str] = ()) -> list[Reading]:
        msg = read(text, now)
        mentions = index.find(msg.stems)
        # words that name something in the workspace ("fraud model", "alice's compute instance")
        # are not also words for a command
        # the words that name something in the workspace ("fraud model", "alice's compute instance")
        # become one token for that kind of thing (`@model`), which a phrase's kind word matches
        first: dict[int, str] = {}
        named: set[int] = set()
        for m in mentions:
            if m.strength >= 1.6 and not (m.covers & named):
                named |= m.covers
                first[min(m.covers)] = "@" + m.entity.kind
        content = []
        for i, (w, s) in enumerate(zip(msg.words, msg.stems)):
            if i in first:
                content.append(first[i])
            elif w not in STOP and i not in named:
                content.append(s)
        if msg.percent is not None and "percent" not in content:
            content.append("percent")
        facts = Facts(msg, index, mentions, user_name, content, tuple(workspaces))
        top = max((m.strength for m in mentions), default=0.0)
        kinds = {m.entity.kind for m in mentions if m.strength >= max(1.4, top - 0.3)}
        present = frozenset({m.entity.kind for m in mentions if m.strength >= 1.3}
                            | ({"to_stage"} if facts.stage_to() else set())       # "... to staging"
                            | ({"number"} if msg.numbers else set()))
        number = _MARKED_NUMBER.search(msg.raw)
        marked = number.group(1) if number else None       # "alert 7", "#7": one thing, by its number
        found: list[Reading] = []
        for name in self.vocabulary.commands:
            score = self.vocabulary.score(name, content, present)
            prior = 0.5 if score == 0 and any(BY_KIND.get(k) == name for k in kinds) else 0.0
            filled = self.builders[name](facts)
            if score == 0 and prior == 0 and filled.filled < 2:
                continue
            if name == "jobs" and any(m.entity.kind == "job" and m.strength >= 1.2 for m in mentions):
                prior -= 2.0                    # one job named: not the list
            total = score + prior + 0.8 * filled.filled - 1.5 * len(filled.missing)
            if marked and marked not in filled.argv:
                total -= 1.5                    # "assign alert 7 to me" is about alert 7: not `subscribe alerts`
            found.append(Reading(name, tuple(filled.argv), round(total, 3), tuple(filled.missing)))
        found.sort(key=lambda r: (-r.score, not r.complete))
        unique: list[Reading] = []
        for reading in found:
            if all(r.line != reading.line for r in unique):
                unique.append(reading)
        return unique[:limit]

    def related(self, text: str, limit: int = 3) -> list[str]:
        """Commands whose words (phrases, summary) share meaning with the message: the suggestions
        when nothing was understood. Never a spelling guess."""
        stems = {stem(w) for w in words_of(text) if w not in STOP}
        ranked = []
        for cmd in self.registry:
            words = {stem(w) for w in words_of(" ".join([cmd.name, cmd.summary, *cmd.phrases])) if w not in STOP}
            overlap = sum(self.vocabulary.weight.get(s, 1.0) for s in stems & words)
            if overlap:
                ranked.append((-overlap, cmd.name))
        return [name for _, name in sorted(ranked)[:limit]]
