"""The names in the live workspace, matched forgivingly: "fraud model" -> `fraud-model`, "the credit
endpoint" -> `credit-api`, "alice's compute instance" -> `ds-ci-alice`.

An `EntityIndex` is built from the reads the bot already makes (endpoints, deployments, models,
jobs, schedules, compute, feature sets, monitors) plus the people it has met; `Interpreter` keeps
one per workspace for a minute. Matching compares words after normalising case, punctuation,
hyphens, possessives and plurals; a name matches fully (all its words, in order) or by its
distinctive words (those that are not the kind's generic words, like `api` or `cluster`), helped
by a word naming its kind ("endpoint", "VM", "schedule").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from adapters.service import TERMINAL_JOB_STATUSES
from commands.language.words import stem, words_of
from adapters.nonblocking import NonBlockingService

log = logging.getLogger(__name__)

# words that name a kind of thing (stems); also generic parts of names of that kind
KIND_WORDS: dict[str, frozenset[str]] = {
    "endpoint": frozenset({"endpoint", "api", "service", "online", "scor"}),
    "batch_endpoint": frozenset({"batch", "endpoint"}),
    "model": frozenset({"model", "classifier", "candidate", "champion", "challenger", "version"}),
    "job": frozenset({"job", "run", "pipeline", "training", "experiment", "train"}),
    "schedule": frozenset({"schedule", "retrain", "retraining", "nightly", "weekly", "daily", "monthly", "cron"}),
    "compute": frozenset({"compute", "vm", "instance", "machine", "cluster", "notebook", "box", "ci", "ds",
                          "server", "node"}),
    "featureset": frozenset({"feature", "featureset", "set", "store", "materializ"}),
    "monitor": frozenset({"monitor", "monitoring", "drift"}),
    "person": frozenset(),
}
KIND_WORDS = {kind: frozenset(stem(w) for w in words) for kind, words in KIND_WORDS.items()}
GENERIC: dict[str, frozenset[str]] = {
    **KIND_WORDS,
    "schedule": frozenset({"schedule", "retrain", "retraining"}),
    "monitor": frozenset({"monitor", "model"}),
    "compute": frozenset({"compute", "vm", "instance", "cluster", "ci", "ds"}),
    "model": frozenset({"model"}),
}
GENERIC = {kind: frozenset(stem(w) for w in words) for kind, words in GENERIC.items()}
# kind words that are also what people ask for: never taken away from the command words
ALSO_ASKED = frozenset({"retrain", "drift", "train", "run", "materializ", "scor", "monitor", "training"})


@dataclass(frozen=True)
class Entity:
    kind: str
    name: str                      # as the workspace spells it
    stems: tuple[str, ...]         # all its words, stemmed
    key: tuple[str, ...]           # its distinctive words
    parent: str = ""               # a deployment's endpoint; a job's display name
    live: bool = True              # a job still queued or running (only those match by part of a name)


@dataclass(frozen=True)
class Mention:
    entity: Entity
    strength: float                # 3 named in full; up to 2 by distinctive words (+ its kind named)
    start: int                     # first word of the message it covers
    covers: frozenset[int] = frozenset()    # the message's words it accounts for (name and kind words)


@dataclass
class EntityIndex:
    entities: list[Entity] = field(default_factory=list)
    models: dict[str, list[Any]] = field(default_factory=dict)        # name -> versions (ModelVersion)
    endpoints: dict[str, Any] = field(default_factory=dict)           # name -> OnlineEndpoint
    schedules: dict[str, Any] = field(default_factory=dict)           # name -> Schedule
    compute: dict[str, Any] = field(default_factory=dict)             # name -> Compute
    monitors: dict[str, Any] = field(default_factory=dict)            # name -> Monitor
    jobs: dict[str, Any] = field(default_factory=dict)                # name -> Job
    stores: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, parent: str = "", words: Iterable[str] | None = None,
            live: bool = True) -> None:
        stems = tuple(stem(w) for w in (words if words is not None else words_of(name)))
        if not stems:
            return
        generic = GENERIC.get(kind, frozenset())
        key = tuple(s for s in stems if s not in generic) or stems
        self.entities.append(Entity(kind, name, stems, key, parent, live))

    def of(self, kind: str) -> list[Entity]:
        return [e for e in self.entities if e.kind == kind]

    def find(self, stems: list[str]) -> list[Mention]:
        """Every entity the message's words name, strongest first. Where two names claim the same
        words, the clearly stronger one keeps them ("bob" is Bob Nguyen before `ds-ci-bob`)."""
        present = set(stems)
        found: list[Mention] = []
        for entity in self.entities:
            kind_words = KIND_WORDS.get(entity.kind, frozenset())
            start = _contiguous(stems, entity.stems)
            if start >= 0:
                span = set(range(start, start + len(entity.stems)))
                run = _kind_run(stems, span, kind_words)
                strength = 3.0 + 0.1 * len(entity.stems)
                after = max(span) + 1
                if not run and after < len(stems) and _other_kind(stems[after], entity.kind):
                    strength *= 0.5        # "alice's compute": Alice's, not Alice
                found.append(Mention(entity, strength, start, frozenset(span | run)))
                continue
            if entity.kind == "job" and not entity.live:
                continue                   # a finished job's display name counts only in full
            if entity.kind == "deployment":
                continue
            matched = [s for s in entity.key if s in present]
            if not matched:
                continue
            if len(entity.key) > 1 and all(s.isdigit() or len(s) <= 2 for s in matched):
                continue
            span = {i for i, s in enumerate(stems) if s in matched}
            run = _kind_run(stems, span, kind_words)
            kind_named = bool(kind_words & present)
            share = len(matched) / len(entity.key)
            if share < 1:
                if not kind_named:
                    continue
                strength = (1.0 if run else 0.6) + 0.8 * share
            else:
                strength = 2.0 if run else 1.8 if kind_named else 1.5
            after = max(span) + 1
            if not run and after < len(stems) and _other_kind(stems[after], entity.kind):
                strength *= 0.5            # "credit model": not the credit endpoint
            found.append(Mention(entity, strength, min(span), frozenset(span | run)))
        found.sort(key=lambda m: -m.strength)
        kept: list[Mention] = []
        for mention in found:
            if any(other.strength - mention.strength >= 0.5 and other.covers & mention.covers
                   and other.entity.kind != mention.entity.kind for other in kept):
                continue
            kept.append(mention)
        return kept


def _kind_run(stems: list[str], span: set[int], kind_words: frozenset[str]) -> set[int]:
    """The kind words right after (or right before) a name: "alice's compute instance"."""
    run: set[int] = set()
    kind_words = kind_words - ALSO_ASKED
    i = max(span) + 1
    while i < len(stems) and stems[i] in kind_words:
        run.add(i)
        i += 1
    i = min(span) - 1
    while not run and i >= 0 and stems[i] in kind_words:
        run.add(i)
        i -= 1
    return run


def _other_kind(word: str, kind: str) -> bool:
    if word in ALSO_ASKED:
        return False
    kinds = [k for k, words in KIND_WORDS.items() if word in words]
    return bool(kinds) and kind not in kinds


def _contiguous(stems: list[str], part: tuple[str, ...]) -> int:
    n = len(part)
    for i in range(len(stems) - n + 1):
        if tuple(stems[i:i + n]) == part:
            return i
    return -1


async def build_index(ml: NonBlockingService, people: Iterable[str] = ()) -> EntityIndex:
    """Read the workspace once (in parallel) and index every name in it. A kind the backend cannot
    list (a feature store missing, a slow call) is left out rather than failing the question."""
    async def safe(call, *args, **kwargs):
        try:
            return await call(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - understanding works with what it could read
            log.info("plain language: could not read %s: %s", getattr(call, "__name__", call), error)
            return []

    (endpoints, batch, models, jobs, schedules, compute, monitors, stores) = await asyncio.gather(
        safe(ml.list_endpoints), safe(ml.list_batch_endpoints), safe(ml.list_models), safe(ml.list_jobs, limit=100),
        safe(ml.list_schedules), safe(ml.list_compute), safe(ml.list_monitors), safe(ml.list_feature_stores))
    index = EntityIndex()
    versions = await asyncio.gather(*(safe(ml.list_models, m.name) for m in models))
    for model, found in zip(models, versions):
        index.models[model.name] = list(found) or [model]
        index.add("model", model.name)
    for endpoint in endpoints:
        index.endpoints[endpoint.name] = endpoint
        index.add("endpoint", endpoint.name)
        for deployment in endpoint.deployments:
            index.add("deployment", deployment.name, parent=endpoint.name)
    for endpoint in batch:
        index.add("batch_endpoint", endpoint.name)
    for job in jobs:
        index.jobs[job.name] = job
        index.add("job", job.name, live=False)
        if job.display_name and not job.parent:
            index.add("job", job.name, parent=job.display_name, words=words_of(job.display_name),
                      live=job.status not in TERMINAL_JOB_STATUSES)
    for schedule in schedules:
        index.schedules[schedule.name] = schedule
        index.add("schedule", schedule.name)
    for target in compute:
        index.compute[target.name] = target
        index.add("compute", target.name)
    for monitor in monitors:
        index.monitors[monitor.name] = monitor
        index.add("monitor", monitor.name)
    index.stores = [s.name for s in stores]
    sets = await asyncio.gather(*(safe(ml.list_feature_sets, s) for s in index.stores))
    seen: set[str] = set()
    for found in sets:
        for feature_set in found:
            if feature_set.name not in seen:
                seen.add(feature_set.name)
                index.add("featureset", feature_set.name)
    names = {m.created_by for versions_ in index.models.values() for m in versions_ if m.created_by}
    names |= {j.created_by for j in jobs if j.created_by}
    for person in [*people, *sorted(names)]:
        if person and not any(e.kind == "person" and e.name == person for e in index.entities):
            index.add("person", person)
            first = words_of(person)[:1]
            if first:
                index.add("person", person, words=first)
    return index
