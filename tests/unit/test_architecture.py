"""The layering holds, and no import cycle hides inside a function (issue #18; docs/architecture.md).

    bot/  (the host)  ──▶  commands/  ──▶  adapters/        manifest/ stands alone

Imports are read with `ast` from every module of the shipped packages, including imports inside
functions (where a cycle hides) and under `if TYPE_CHECKING:` (type-only; allowed to point anywhere
the layering allows, and left out of the cycle check since they never run).

- adapters/ never imports commands/ or bot/; commands/ never imports bot/, botbuilder or aiohttp;
  only bot/teams.py imports botbuilder (the Teams seam: a move to the Agents SDK rewrites one file).
- The module-level imports between our modules form no cycle.
- Every import of our own code inside a function is listed in DEFERRED below, with why it is there:
  a new one fails until it is either moved to the top or listed with its reason. An entry said to
  dodge a cycle must still dodge one (else it belongs at the top), one said to be lazy must not
  dodge one, and a listed import that is gone fails too, so the list stays true.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "commands", "adapters", "manifest")

# Layer -> the top-level names it must never import (anywhere in the module, functions included).
FORBIDDEN = {
    "adapters": {"commands", "bot", "botbuilder", "aiohttp"},
    "commands": {"bot", "botbuilder", "aiohttp"},
    "manifest": {"bot", "commands", "adapters", "botbuilder", "aiohttp"},
    "bot": set(),
}
BOTBUILDER_SEAM = "bot.teams"

CYCLE = "cycle"      # the two modules import each other: one side must wait until it is called
LAZY = "lazy"        # no cycle: deferred so that an unused backend or tool is not loaded at start

# (importer, imported) -> (kind, why). Today's function-level imports of our own code.
DEFERRED: dict[tuple[str, str], tuple[str, str]] = {
    # The change path: the gate imports the approval card, the card shows a traffic split the way
    # commands.resources.endpoints does, and commands.resources.endpoints submits to the gate.
    # The verdict / rollback pair: commands.resources.rollout starts watches (commands.changes.verdicts), and the watch's
    # verdict rolls back with commands.resources.rollout's plan.
    ("commands.digests.digest", "commands.base.studio"): (LAZY, "the studio link, only for `digest now`"),
    # translate_error lives in the Azure ML adapter, which builds the metrics client: the Azure
    # Monitor adapter borrows it (better: move translate_error to a module both import).
    ("adapters.azureml.metrics", "adapters.azureml.workspace"): (CYCLE, "azureml -> azure_metrics"),
    ("adapters.local.monitors", "adapters.drift"): (LAZY, "numpy/scipy/pyarrow load when a monitor runs"),
    ("adapters.storage", "adapters.storage.sqlite"): (CYCLE, "the backend modules import the package"),
    ("adapters.storage", "adapters.storage.postgres"): (CYCLE, "the backend modules import the package"),
    ("bot.app", "adapters.local.workspace"): (LAZY, "only the configured backend is loaded"),
    ("bot.app", "adapters.azureml.workspace"): (LAZY, "only the configured backend is loaded (azure-ai-ml is slow)"),
    ("bot.ingress", "adapters.storage"): (LAZY, "only the pruning loop needs storage"),
    ("bot.ingress", "adapters.storage.outbox"): (LAZY, "only the pruning loop needs storage"),
    # The command line loads only what the chosen subcommand needs (start-up time of `mlops-bot`).
    ("bot.cli", "bot.app"): (LAZY, "subcommand"),
    ("bot.cli", "bot.settings"): (LAZY, "subcommand"),
    ("bot.cli", "bot.chat"): (LAZY, "subcommand"),
    ("bot.cli", "bot.ingress"): (LAZY, "subcommand"),
    ("bot.cli", "commands.catalog"): (LAZY, "subcommand"),
    ("bot.cli", "manifest.build"): (LAZY, "subcommand"),
    ("bot.cli", "adapters.drift"): (LAZY, "subcommand"),
    # An alert card shows its endpoint's health with the endpoint card's judgement, and
    # commands.resources.endpoints publishes through the gate, which imports the alerts (approval subscribers).
    ("adapters.local.monitors", "adapters.drift.definitions"): (LAZY, "the drift package loads with the monitors"),
    # The drift package gives its engine's names on first use (PEP 562 __getattr__): cards need only
    # its definitions at start.
    ("adapters.drift", "adapters.drift.engine"): (LAZY, "the engine, when something is computed"),
    ("adapters.drift", "adapters.drift.files"): (LAZY, "file reading, when something is computed"),
    ("adapters.drift", "adapters.drift.performance"): (LAZY, "model performance, when computed"),
    ("adapters.drift", "adapters.drift.render"): (LAZY, "the CLI's tables"),
    ("adapters.drift", "adapters.drift.results"): (LAZY, "result types, with the engine"),
    # Plain language's vocabulary and readers load on the first message that is not a typed command.
    ("commands.language", "commands.language.understand"): (LAZY, "the vocabulary: not for typed commands"),
    ("commands.language", "commands.language.entities"): (LAZY, "the workspace's names: not for typed commands"),
    # Telemetry is off unless APPLICATIONINSIGHTS_CONNECTION_STRING is set: nothing of it loads at start.
    ("bot.app", "bot.telemetry"): (LAZY, "OpenTelemetry only when configured"),
    ("bot.telemetry", "adapters.storage.approvals"): (LAZY, "the gauges read storage only when observed"),
    ("bot.telemetry", "adapters.storage.outbox"): (LAZY, "the gauges read storage only when observed"),
}


@dataclass(frozen=True)
class Import:
    importer: str        # module name, e.g. "commands.changes.verdicts"
    imported: str        # the module it names, resolved to a module of ours when it is one
    line: int
    deferred: bool       # inside a function
    type_only: bool      # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def resolve(name: str, known: set[str]) -> str:
    """`adapters.storage.approvals` (a module) stays; `adapters.storage.SqlStorage` becomes its module."""
    while name and name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = type_only or (isinstance(child, ast.If) and _is_type_checking(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, resolve(alias.name, known), child.lineno, inner, guarded))
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{module}:{child.lineno}: use absolute imports"
                base = child.module or ""
                for alias in child.names:
                    # `from adapters.storage import outbox` imports the submodule adapters.storage.outbox
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    found.append(Import(module, resolve(target, known), child.lineno, inner, guarded))
            visit(child, inner, guarded)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return found


def all_imports() -> list[Import]:
    modules = our_modules()
    known = set(modules)
    return [found for name, path in modules.items() for found in imports_of(name, path, known)]


def top(name: str) -> str:
    return name.split(".")[0]


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Our modules -> our modules they import when loaded (type-only imports never run)."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if found.type_only or found.deferred or top(found.imported) not in PACKAGES:
            continue
        if found.imported != found.importer:
            graph.setdefault(found.importer, set()).add(found.imported)
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


IMPORTS = all_imports()


def test_the_reader_sees_every_module_and_the_imports_inside_functions():
    modules = our_modules()
    assert {"bot.teams", "commands.changes.gate", "commands.base.context", "adapters.storage", "adapters.azureml.workspace"} <= set(modules)
    deferred = {(i.importer, i.imported) for i in IMPORTS if i.deferred}
    assert ("bot.cli", "bot.app") in deferred          # a lazy subcommand import, seen inside its function
    type_only = {(i.importer, i.imported) for i in IMPORTS if i.type_only}
    assert ("commands.base.context", "commands.changes.gate") in type_only


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_dependencies_point_inward(layer):
    wrong = [f"{i.importer}:{i.line} imports {i.imported}" for i in IMPORTS
             if top(i.importer) == layer and top(i.imported) in FORBIDDEN[layer]]
    assert wrong == [], f"{layer}/ must not import {sorted(FORBIDDEN[layer])} (docs/architecture.md)"


def test_only_the_teams_seam_imports_botbuilder():
    wrong = [f"{i.importer}:{i.line}" for i in IMPORTS if top(i.imported) == "botbuilder" and i.importer != BOTBUILDER_SEAM]
    assert wrong == []
    assert any(top(i.imported) == "botbuilder" for i in IMPORTS if i.importer == BOTBUILDER_SEAM)


def test_module_level_imports_form_no_cycle():
    assert cycles(module_graph(IMPORTS)) == []


def test_every_import_inside_a_function_is_known_with_its_reason():
    deferred = {(i.importer, i.imported): i.line for i in IMPORTS
                if i.deferred and not i.type_only and top(i.imported) in PACKAGES and i.importer != i.imported}
    new = {f"{a}:{line} -> {b}" for (a, b), line in deferred.items() if (a, b) not in DEFERRED}
    assert new == set(), ("a new import inside a function: move it to the top, or if it dodges a cycle, "
                          "list it in DEFERRED with the cycle it dodges (better: break the cycle)")
    gone = set(DEFERRED) - set(deferred)
    assert gone == set(), "no longer imported inside a function: remove it from DEFERRED"


def test_each_deferred_import_still_needs_to_be_deferred():
    top_level = module_graph(IMPORTS)
    for (importer, imported), (kind, why) in DEFERRED.items():
        if kind == CYCLE:
            assert reaches(top_level, imported, importer), f"{importer} -> {imported} no longer dodges a cycle ({why})"
        else:
            assert kind == LAZY, (importer, imported)
            assert not reaches(top_level, imported, importer), (
                f"{importer} -> {imported} is listed as lazy but dodges a cycle: say so ({why})")


# The checks themselves, on small made-up graphs, so that a broken checker cannot pass silently.

def test_the_cycle_finder_finds_a_cycle_and_only_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_the_reader_resolves_names_to_modules(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "from adapters.storage import outbox, StorageError\n"
                      "if TYPE_CHECKING:\n    from commands.changes.gate import Gate\n"
                      "def f():\n    import bot.teams\n")
    known = {"adapters.storage", "adapters.storage.outbox", "commands.changes.gate", "bot.teams"}
    found = {(i.imported, i.deferred, i.type_only) for i in imports_of("m", source, known)}
    assert found == {("typing", False, False), ("adapters.storage.outbox", False, False),
                     ("adapters.storage", False, False), ("commands.changes.gate", False, True), ("bot.teams", True, False)}
