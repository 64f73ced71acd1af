"""Every read-only command over the demo local workspace, in-process: values, not impressions."""

from __future__ import annotations

import pytest

from commands.catalog import catalog
from commands.base.context import Role
from commands.base.ui import MAX_ROWS, card, limited, text
from tests.card_schema import assert_valid_card


def rows(reply) -> list[str]:
    """The bold first words of each listed row, in order (model, endpoint, job ... names)."""
    found = []
    for element in reply.card["body"]:
        if element["type"] == "ColumnSet":
            first = element["columns"][0]["items"][0]["text"]
            found.append(first.replace("**", ""))
    return found


def fact(reply, title: str) -> str:
    for element in reply.card["body"]:
        if element["type"] == "FactSet":
            for item in element["facts"]:
                if item["title"] == title:
                    return item["value"]
    raise AssertionError(f"no fact {title!r}")


def buttons(reply) -> list[tuple[str, str, list[str]]]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.append((node["title"], node["verb"], node["data"]["args"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(reply.card)
    return found


async def test_models_lists_the_latest_version_of_each_model(chat):
    reply = await chat("models")
    assert reply.card["body"][0]["text"] == "Registered models"
    assert reply.card["body"][1]["text"] == "Workspace ml-prod (prod)"
    assert rows(reply) == ["churn-model v3", "credit-risk v3", "demand-forecast v2", "fraud-model v4"]
    assert ("Versions", "models", ["fraud-model"]) in buttons(reply)


async def test_models_of_one_name_lists_versions_newest_first(chat):
    reply = await chat("models fraud-model")
    assert rows(reply) == ["v4", "v3", "v2", "v1"]
    assert buttons(reply)[0] == ("Details", "model", ["fraud-model:4"])


async def test_models_stage_filter_is_case_insensitive(chat):
    reply = await chat("models --stage production")
    assert reply.card["body"][0]["text"] == "Registered models in Production"
    assert all("Production" in r["columns"][0]["items"][1]["text"] for r in reply.card["body"][2:]
               if r.get("id") != "read-at")       # the last line says when the figures were read


async def test_models_with_an_unknown_stage_gets_usage(chat):
    reply = await chat("models --stage Prod")
    assert reply.card is None
    assert reply.text.startswith("Unknown stage 'Prod' (use one of None, Staging, Production, Archived).")
    assert "Usage: `models [name] [--stage STAGE] [--workspace NAME]`" in reply.text


async def test_model_shows_stage_metrics_and_tags(chat):
    reply = await chat("model fraud-model:3")
    assert reply.card["body"][0]["text"] == "Model fraud-model:3"
    assert reply.card["body"][2]["text"] == "Production"
    assert fact(reply, "Version") == "3"
    assert float(fact(reply, "auc")) > 0.9


async def test_model_without_version_is_the_latest(chat):
    reply = await chat("model fraud-model")
    assert reply.card["body"][0]["text"] == "Model fraud-model:4"


@pytest.mark.parametrize("typed,answer", [
    ("model fraud-modle", "No model named 'fraud-modle'. Did you mean `fraud-model`?"),
    ("model fraud-model:99", "Model fraud-model has no version 99 (versions: 1, 2, 3, 4)."),
    ("model :3", "':3' is not a model reference. Usage: `model name[:version]`, e.g. `model fraud-model:3`."),
    ("job frosty_kettle_8k2x9q7", "No job named 'frosty_kettle_8k2x9q7'. Did you mean `frosty_kettle_8k2x9q7m`?"),
])
async def test_unknown_names_get_did_you_mean(chat, typed, answer):
    assert (await chat(typed)).text == answer


async def test_endpoint_shows_deployments_traffic_and_health(chat):
    reply = await chat("endpoint fraud-api")
    assert fact(reply, "Traffic") == "blue=90 green=10"
    assert [r for r in rows(reply)] == ["blue", "green"]
    deployment_rows = [e for e in reply.card["body"] if e["type"] == "ColumnSet"]
    assert deployment_rows[0]["columns"][1]["items"][0]["text"] == "**90%**"
    assert "fraud-model:3 · 3 × Standard_DS3_v2 · Succeeded" in deployment_rows[0]["columns"][0]["items"][1]["text"]
    assert fact(reply, "Latency p99").endswith(" ms")
    assert buttons(reply) == [("Refresh", "endpoint", ["fraud-api"])]


async def test_endpoints_lists_online_and_batch(chat):
    reply = await chat("endpoints")
    assert rows(reply) == ["churn-api", "credit-api", "fraud-api", "churn-batch (batch)",
                            "forecast-batch (batch)"]


async def test_jobs_filters_by_status_and_limits(chat):
    failed = await chat("jobs --status failed")
    assert failed.card["body"][0]["text"] == "Failed jobs"
    assert rows(failed) == ["train-fraud-pipeline", "train-credit-risk-xgb"]
    assert len(rows(await chat("jobs --limit 3"))) == 3


@pytest.mark.parametrize("typed,start", [
    ("jobs --limit 0", "Jobs must be between 1 and 50."),
    ("jobs --limit many", "'many' is not a whole number of jobs."),
    ("jobs --status Sleeping", "Unknown status 'Sleeping'"),
    ("jobs --colour red", "I didn't expect `--colour red` here. Usage:"),
    ("traffic fraud-api blue=80 green=20 --reson test",       # a misspelt option: the closest declared one
     "I didn't expect `--reson test` here. Did you mean `--reason`? Usage: `traffic ‹endpoint›"),
    ("jobs --limt 3", "I didn't expect `--limt 3` here. Did you mean `--limit`? Usage:"),
    ("models --workspce ml-prod", "I didn't expect `--workspce` here. Did you mean `--workspace`? Usage:"),
    ("endpoint", "Something is missing: ‹name› (an online or batch endpoint)."),
    ('model "fraud-model', "A quotation mark is not closed."),
])
async def test_bad_arguments_get_a_usage_line(chat, typed, start):
    reply = await chat(typed)
    assert reply.text.startswith(start), reply.text


async def test_pipeline_job_shows_steps_and_error(chat):
    reply = await chat("job frosty_kettle_8k2x9q7m")
    assert reply.card["body"][2]["text"] == "**Failed**"
    steps = [e for e in reply.card["body"] if e["type"] == "ColumnSet"]
    assert [s["columns"][1]["items"][0]["text"] for s in steps] == [
        "**Completed**", "**Completed**", "**Failed**", "**Canceled**"]
    assert any(e.get("text") == "Error" for e in reply.card["body"])


async def test_schedules_and_compute(chat):
    assert len(rows(await chat("schedules"))) >= 2
    assert rows(await chat("compute"))[:1] == ["cpu-cluster"]


async def test_help_lists_commands_and_explains_one(chat):
    listing = await chat("help")
    # issue 19: grouped by task, the common commands of each group first (with their summary), the
    # rest of the group named on one line; every command appears once
    groups = catalog().by_task(catalog().allowed(Role.ADMIN))
    assert [g for g, _ in groups] == ["set up", "look", "change", "approve", "alerts"]
    assert rows(listing) == [c.name for _, commands in groups for c in commands if c.common]
    also = [b["text"] for b in listing.card["body"] if b["type"] == "TextBlock" and "`" in b["text"]
            and b["text"].startswith("Also: ")]
    named = rows(listing) + [w.strip("`,") for line in also for w in line.removeprefix("Also: ").split()]
    assert sorted(named) == sorted(c.name for c in catalog())
    assert [b["text"] for b in listing.card["body"] if b["type"] == "TextBlock" and b.get("weight") == "Bolder"][1:] \
        == ["Set up", "Look", "Change", "Approve", "Alerts"]
    explained = await chat("help models")
    assert [b["text"] for b in explained.card["body"][1:]] == [
        "**models**: List registered models, or the versions of one model.",
        "Usage: `models [name] [--stage STAGE] [--workspace NAME]`",
        "- `name`: a model name, to list its versions",
        "- `--stage`: only versions in this stage",
        "- `--workspace`: which configured workspace (default: the first)",
        "Example: `models fraud-model --stage Production`",
    ]
    assert (await chat("help modle")).text.startswith("I don't know the command 'modle'. Did you mean `model`")


async def test_empty_message_shows_help(chat):
    assert (await chat("   ")).card["body"][0]["text"] == "What I can do"


async def test_unknown_workspace_gets_did_you_mean(chat):
    assert (await chat("models --workspace ml-prd")).text == (
        "No workspace named 'ml-prd'. Did you mean `ml-prod`? Configured: ml-prod.")


async def test_card_buttons_run_the_same_commands(chat):
    reply = await chat.click("models", "churn-model")
    assert reply.card["body"][0]["text"] == "Versions of churn-model"
    refused = await chat.click("nonsense", "x")
    assert refused.text.startswith("That button doesn't carry a command I know.")
    refused = await chat.click("models", {"not": "a word"})
    assert refused.text.startswith("That button doesn't carry a command I know.")


@pytest.mark.parametrize("typed", [c.example for c in catalog()] + ["models fraud-model", "jobs"])
async def test_every_card_validates_against_adaptive_cards_1_5(chat, typed):
    reply = await chat(typed)
    if reply.card is not None:
        assert_valid_card(reply.card)
        assert reply.text.startswith(reply.card["fallbackText"].removesuffix("…"))


def test_long_lists_are_cut_with_n_more():
    body = limited(list(range(40)), lambda i: text(f"row {i}"), noun="job")
    assert len(body) == MAX_ROWS + 1
    assert body[-1]["text"] == f"… and {40 - MAX_ROWS} more jobs."
    huge = limited(["x" * 3000] * 15, lambda s: text(s), noun="model")
    assert huge[-1]["text"].startswith("… and ") and len(huge) < 15
    assert_valid_card(card("many", huge))
