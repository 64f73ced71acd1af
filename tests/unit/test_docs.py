"""The docs stay true while code moves: every function docs/architecture.md names exists where it
says, every relative link in README.md and docs/*.md leads to a file (and heading) that exists, and
every setting is documented in docs/operating.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMED = re.compile(r"`((?:bot|commands|adapters|manifest|tests)/[\w/]+\.py)(?::([\w.]+))?`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def defined_names(path: Path) -> set[str]:
    """`f`, `Class`, `Class.method` for the functions and classes a module defines."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", markdown, flags=re.S))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_architecture_page_names_functions_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = NAMED.findall(text)
    assert len(named) > 20
    wrong = []
    for file, name in named:
        path = ROOT / file
        if not path.exists():
            wrong.append(f"{file} does not exist")
        elif name and name not in defined_names(path):
            wrong.append(f"{file} defines no {name}")
    assert wrong == [], "docs/architecture.md is out of date"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_lead_somewhere(page):
    wrong = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):          # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            wrong.append(f"{target}: no file {file}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            wrong.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert wrong == []


def test_the_link_checker_reads_headings_as_github_does():
    assert slug(" Drift on files: `mlops-bot drift`") == "drift-on-files-mlops-bot-drift"
    assert slug("Rolling out and back: history, rollback, canary, and the watch after a change") == (
        "rolling-out-and-back-history-rollback-canary-and-the-watch-after-a-change")
    assert LINK.findall(prose("see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```")) == ["x.md"]


def test_every_setting_is_in_the_configuration_table():
    """The README split moved the settings to docs/operating.md; every environment variable the bot reads stays there."""
    from bot.settings import environment_names

    table = (ROOT / "docs" / "operating.md").read_text()
    names = [documented for documented, *_ in environment_names().values()]
    assert len(names) > 30
    assert [name for name in names if f"`{name}`" not in table] == []
