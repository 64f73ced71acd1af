"""Plain language without a workspace: the labelled set's coverage, the words read from text (numbers,
versions, windows, names), slots from declared arguments, the setting (the conversations are
tests/test_language.py).
"""

from __future__ import annotations

import pytest

from tests.language_cases import load

CASES = load()


def test_the_set_is_large_and_covers_every_command():
    from commands.catalog import catalog
    assert len(CASES) >= 200
    assert {c.command for c in CASES} == {c.name for c in catalog()}
    assert {c.persona for c in CASES} == {"admin", "oncall", "approver"}
    assert sum(c.change for c in CASES) >= 60


def test_slots_come_from_any_commands_declared_arguments():
    """Not a list of phrasings: a command declared today gets its number, choice, free text, person
    and workspace read from its `Arg`s."""
    from datetime import datetime, timezone
    from commands.language.entities import EntityIndex
    from commands.language.understand import Understander
    from commands.base.registry import Arg, Registry, one_of, whole_number

    registry = Registry()

    @registry.command("page", Arg("ticket", type=whole_number(1, 999, "a ticket")),
                      Arg("mode", type=one_of(("loud", "quiet"), "mode"), metavar="loud|quiet"),
                      Arg("who"), Arg("text", nargs="+"), Arg("--workspace", metavar="NAME"),
                      phrases=("page someone",), summary="Page.", example="page 1 loud @bob hi", uses_workspace=False)
    async def page(ctx, ticket, mode, who, text, workspace):  # pragma: no cover - never run here
        raise AssertionError

    index = EntityIndex()
    index.add("person", "Zoe Quinn")
    index.add("person", "Zoe Quinn", words=["zoe"])
    [best, *_] = Understander(registry).readings(
        "page zoe about ticket #42, quiet please, in ml-dev: the disk is full", index,
        now=datetime(2026, 11, 26, tzinfo=timezone.utc), workspaces=["ml-prod", "ml-dev"])
    assert best.line == 'page 42 quiet "Zoe Quinn" the disk is full --workspace ml-dev'


@pytest.mark.parametrize("text,percent,relative", [
    ("give green 20% on fraud-api", 20, 0), ("a fifth of the traffic", 20, 0), ("send half to green", 50, 0),
    ("10 percent more for green", 10, 1), ("5% less for green", 5, -1), ("bump green to 30%", 30, 0),
    ("show fraud-api", None, 0)])
def test_percentages_and_fractions(text, percent, relative):
    from commands.language.words import read
    found = read(text)
    assert (found.percent, found.relative) == (percent, relative)


@pytest.mark.parametrize("text,version", [("fraud model v4", "4"), ("churn-model version 3", "3"),
                                          ("fraud-model:2", "2"), ("the fraud model", None)])
def test_versions(text, version):
    from commands.language.words import read
    assert read(text).version == version


@pytest.mark.parametrize("text,since", [
    ("what happened today", "9h"), ("who changed it yesterday", "33h"), ("since monday", "81h"),
    ("what did we deploy this week", "81h"), ("last week", "7d"), ("in the last 12 hours", "12h"),
    ("past 3 days", "3d"), ("what changed", None)])
def test_windows_at_thursday_nine(text, since):
    from commands.language.words import read
    from tests.language_cases import NOW
    assert read(text, NOW).since == since


def test_names_are_matched_forgivingly():
    from commands.language.entities import EntityIndex
    from commands.language.words import read
    index = EntityIndex()
    for kind, name in (("endpoint", "fraud-api"), ("endpoint", "credit-api"), ("model", "fraud-model"),
                       ("model", "credit-risk"), ("compute", "ds-ci-alice"), ("compute", "ds-ci-bob")):
        index.add(kind, name)

    def best(text):
        return index.find(read(text).stems)[0].entity.name
    assert best("show fraud model") == "fraud-model"
    assert best("the Fraud-API") == "fraud-api"
    assert best("how is the credit endpoint") == "credit-api"
    assert best("how is the credit model") == "credit-risk"
    assert best("alice's compute instance") == "ds-ci-alice"
    assert best("turn off bob\u2019s VM") == "ds-ci-bob"


def test_plain_language_is_on_by_default_and_can_be_switched_off(tmp_path, monkeypatch):
    from bot.settings import load_settings
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPSBOT_PLAIN_LANGUAGE", raising=False)
    assert load_settings(data_dir=tmp_path, host="127.0.0.1").plain_language is True
    monkeypatch.setenv("MLOPSBOT_PLAIN_LANGUAGE", "false")
    assert load_settings(data_dir=tmp_path, host="127.0.0.1").plain_language is False
