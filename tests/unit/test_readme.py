"""The README stays true: its command reference and its test command."""

from __future__ import annotations

import re
from pathlib import Path

from commands.catalog import catalog, reference_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"


def test_command_reference_matches_the_registry():
    section = re.search(r"<!-- commands:start.*?-->\n(.*?)\n<!-- commands:end -->", README, re.S)
    assert section is not None
    assert section.group(1) == reference_table(), "run `python -m commands.catalog` and paste it into README.md"


def test_every_command_is_documented_with_an_example():
    for command in catalog():
        assert f"`{command.example}`" in README, command.name


def test_ci_runs_the_readme_test_command():
    assert f"```bash\n{TEST_COMMAND}\n```" in README
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
