"""The README and the docs stay true: the command reference (docs/commands.md), every command's
example, and the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

from commands.catalog import catalog, reference_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
COMMANDS_PAGE = (ROOT / "docs" / "commands.md").read_text()
# An example may be shown on any page a reader is sent to: the README or a page under docs/.
DOCS = "\n".join([README, *(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))])
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"


def test_command_reference_matches_the_registry():
    section = re.search(r"<!-- commands:start.*?-->\n(.*?)\n<!-- commands:end -->", COMMANDS_PAGE, re.S)
    assert section is not None
    assert section.group(1) == reference_table(), "run `python -m commands.catalog` and paste it into docs/commands.md"


def test_every_command_is_documented_with_an_example():
    for command in catalog():
        assert f"`{command.example}`" in DOCS, command.name


def test_ci_runs_the_readme_test_command():
    assert f"```bash\n{TEST_COMMAND}\n```" in README
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
