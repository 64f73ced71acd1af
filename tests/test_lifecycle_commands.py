"""compare, featurestores, featuresets, featureset, `models --stage` and the studio links (issue 9).

In-process over the demo local workspace (`chat`), over the Azure replay (cards with studio links),
and over HTTP through the real CloudAdapter (`teams`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.nonblocking import NonBlockingService
from adapters.service import AzureScope, ModelVersion
from bot.handler import ChatHandler, Request
from commands.catalog import catalog
from commands.resources.compare import compare_versions, direction
from commands.base.context import Role, RoleBook, User, Workspaces
from commands.base.studio import Studio
from tests.card_schema import assert_valid_card
from tests.replay import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, demo_azure
from tests.test_commands import buttons, fact, rows

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
WSID = (f"wsid=/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/")


def open_urls(reply) -> list[tuple[str, str]]:
    return [(a["title"], a["url"]) for a in reply.card.get("actions", []) if a["type"] == "Action.OpenUrl"]


def table(reply) -> list[list[str]]:
    """The compare card's metric rows (header first), as the texts of their cells."""
    found = []
    for element in reply.card["body"]:
        if element["type"] == "ColumnSet" and len(element["columns"]) == 5:
            found.append([c["items"][0]["text"].replace("**", "") for c in element["columns"]])
    return found


# ---------------------------------------------------------------- compare: the arithmetic


@pytest.mark.parametrize("metric,way", [
    ("auc", "higher"), ("AUC", "higher"), ("val_accuracy", "higher"), ("f1", "higher"), ("precision", "higher"),
    ("recall", "higher"), ("r2", "higher"), ("test_r2_score", "higher"), ("rmse", "lower"), ("mae", "lower"),
    ("mse", "lower"), ("log_loss", "lower"), ("latency_p99_ms", "lower"), ("p95_latency", "lower"),
    ("mape", "lower"), ("eval_loss", "lower"), ("customer_score", ""), ("lift", "")])
def test_direction_of_common_metrics(metric, way):
    assert direction(metric) == way


def test_compare_versions_judges_each_metric_by_its_direction():
    candidate = ModelVersion("m", "2", metrics={"auc": 0.95, "rmse": 4.0, "latency_ms": 30.0, "lift": 2.0, "f1": 0.7})
    baseline = ModelVersion("m", "1", metrics={"auc": 0.93, "rmse": 3.5, "latency_ms": 30.0, "lift": 1.5,
                                               "recall": 0.6})
    assert [(r.metric, r.candidate, r.baseline, None if r.difference is None else round(r.difference, 6), r.better)
            for r in compare_versions(candidate, baseline)] == [
        ("auc", 0.95, 0.93, 0.02, "candidate"),
        ("f1", 0.7, None, None, ""),
        ("latency_ms", 30.0, 30.0, 0.0, "equal"),
        ("lift", 2.0, 1.5, 0.5, ""),
        ("recall", None, 0.6, None, ""),
        ("rmse", 4.0, 3.5, 0.5, "baseline"),
    ]


# ---------------------------------------------------------------- compare: the command


async def test_compare_defaults_to_staging_against_production(chat):
    reply = await chat("compare fraud-model")
    assert reply.card["body"][0]["text"] == "fraud-model: v4 vs v3"
    assert reply.card["body"][2]["text"] == "v4 is better on 3 of 3 metrics, v3 on 0."
    assert table(reply) == [["metric", "v4", "v3", "difference", "better"],
                            ["auc", "0.953", "0.941", "+0.012", "v4"],
                            ["precision", "0.88", "0.87", "+0.01", "v4"],
                            ["recall", "0.79", "0.75", "+0.04", "v4"]]
    assert fact(reply, "Training job") == "v4: gentle_fox_1k9sz7ra · v3: —"
    assert fact(reply, "Stage") == "v4: Staging · v3: Production"
    assert fact(reply, "dataset (differs)") == "v4: transactions:7 · v3: transactions:6"
    assert buttons(reply) == [("Model v4", "model", ["fraud-model:4"]), ("Model v3", "model", ["fraud-model:3"])]
    assert open_urls(reply) == []                                       # local: no studio
    assert_valid_card(reply.card)


async def test_compare_named_versions_with_lower_is_better_metrics(chat):
    reply = await chat("compare demand-forecast:2 1")
    assert table(reply)[1:] == [["mape", "0.109", "0.118", "-0.009", "v2"], ["rmse", "38.2", "41.7", "-3.5", "v2"]]


async def test_compare_a_worse_candidate_and_a_metric_without_direction(chat):
    reply = await chat("compare credit-risk:1 2")
    assert table(reply)[1:] == [["auc", "0.781", "0.803", "-0.022", "v2"], ["gini", "0.562", "0.606", "-0.044", "v2"],
                                ["ks", "0.42", "0.46", "-0.04", "v2"]]
    assert reply.card["body"][2]["text"] == "v1 is better on 0 of 3 metrics, v2 on 3."


@pytest.mark.parametrize("typed,answer", [
    ("compare churn-model", "churn-model has no version in Staging. Name the versions instead: "
                            "`compare churn-model:‹candidate› ‹baseline›`."),
    ("compare fraud-model:4 4", "That compares fraud-model v4 with itself. Name two versions: "
                                "`compare fraud-model:‹candidate› ‹baseline›`."),
    ("compare fraud-model:9 3", "Model fraud-model has no version 9 (versions: 1, 2, 3, 4)."),
    ("compare fraud-modle", "No model named 'fraud-modle'. Did you mean `fraud-model`?"),
    ("compare :4", "':4' is not a model reference. Usage: `compare model[:version] [version]`, e.g. "
                   "`compare fraud-model:4 3`, or `compare fraud-model` for Staging vs Production."),
])
async def test_compare_refusals(chat, typed, answer):
    assert (await chat(typed)).text == answer


# ---------------------------------------------------------------- models --stage


async def test_models_in_staging_name_the_version_in_production(chat):
    reply = await chat("models --stage Staging")
    details = [e["columns"][0]["items"][1]["text"] for e in reply.card["body"] if e["type"] == "ColumnSet"]
    assert rows(reply) == ["credit-risk v3", "fraud-model v4"]
    assert [d.split(" · ")[:2] for d in details] == [["Staging", "Production: v2"], ["Staging", "Production: v3"]]


async def test_a_model_card_names_and_opens_its_training_job(chat):
    reply = await chat("model fraud-model:4")
    assert fact(reply, "Training job") == "gentle_fox_1k9sz7ra"
    assert buttons(reply) == [("All versions", "models", ["fraud-model"]), ("Training job", "job", ["gentle_fox_1k9sz7ra"])]
    assert (await chat.click("job", "gentle_fox_1k9sz7ra")).card["body"][0]["text"] == "Job register-fraud-model-v4"


async def test_archived_versions_are_marked(chat, workspaces):
    await workspaces.default.archive_model("fraud-model", "1")
    reply = await chat("models fraud-model")
    details = [e["columns"][0]["items"][1]["text"] for e in reply.card["body"] if e["type"] == "ColumnSet"]
    # the Archived *stage* and Azure's archive *flag* read apart
    assert details[-1].startswith("Archived · hidden from lists (archived) · ")
    model = await chat("model fraud-model:1")
    assert model.card["body"][3]["text"] == "Hidden from lists (archived): still usable by deployments."
    assert fact(await chat("compare fraud-model:3 1"), "Stage") == "v3: Production · v1: Archived, hidden from lists (archived)"


# ---------------------------------------------------------------- feature store


async def test_featurestores(chat):
    reply = await chat("featurestores")
    assert rows(reply) == ["contoso-features"]
    assert buttons(reply) == [("Feature sets", "featuresets", ["--store", "contoso-features"])]
    assert_valid_card(reply.card)


async def test_featuresets_uses_the_only_store(chat):
    reply = await chat("featuresets")
    assert reply.card["body"][0]["text"] == "Feature sets in contoso-features"
    assert rows(reply) == ["customers", "transactions"]
    assert buttons(reply) == [("Details", "featureset", ["customers", "--store", "contoso-features"]),
                              ("Details", "featureset", ["transactions", "--store", "contoso-features"])]


async def test_featureset_shows_keys_features_and_materialization(chat):
    reply = await chat("featureset transactions")
    assert reply.card["body"][0]["text"] == "Feature set transactions:2"
    assert fact(reply, "Version") == "2 (also: 1)"
    texts = [e["text"] for e in reply.card["body"] if e["type"] == "TextBlock"]
    assert "**account**:1 · join on account_id (String)" in texts
    assert "Features (6)" in texts
    features = [[c["items"][0]["text"] for c in e["columns"]] for e in reply.card["body"] if e["type"] == "ColumnSet"]
    assert features[:2] == [["transaction_amount_7d_sum", "Double"], ["transaction_count_7d", "Long"]]
    assert fact(reply, "Stores") == "offline and online"
    assert fact(reply, "Schedule") == "every 3 hours"
    assert fact(reply, "Last job").startswith("Completed · recurrent · ")
    assert fact(reply, "Last job").endswith(" · job mat_txn2_recur_7w1c")
    assert_valid_card(reply.card)


async def test_featureset_flags_a_failed_materialization(chat):
    reply = await chat("featureset customers:1 --store contoso-features")
    assert fact(reply, "Stores") == "offline"
    content = [b for b in reply.card["body"] if b.get("id") != "read-at"]     # the footer says when it was read
    assert content[-1]["text"] == ("The last materialization failed: features served from customers:1 "
                                   "may be stale.")


@pytest.mark.parametrize("typed,answer", [
    ("featureset transactionz", "Feature store contoso-features has no feature set named 'transactionz' "
                                "(it has: customers, transactions)."),
    ("featureset transactions:7", "Feature set transactions has no version 7 (versions: 1, 2)."),
    ("featuresets --store contoso-featurez", "No feature store named 'contoso-featurez'. Did you mean "
                                             "`contoso-features`? Feature stores: contoso-features."),
    ("featureset transactions:", "'transactions:' is not a feature set reference. Usage: "
                                 "`featureset name[:version]`, e.g. `featureset transactions:2`."),
])
async def test_feature_store_refusals(chat, typed, answer):
    assert (await chat(typed)).text == answer


async def test_without_a_store_featuresets_says_so(chat, workspaces):
    workspaces.default.service.reset(demo=False)
    assert (await chat("featuresets")).text == (
        "I see no feature store beside this workspace. On Azure, feature stores are the workspaces of kind "
        "featurestore in the workspace's resource group that the bot's identity may read: it needs a role on each "
        "store itself.")
    assert (await chat("featurestores")).text.splitlines()[2:] == [
        "No feature stores.", "On Azure, feature stores are the workspaces of kind featurestore in the workspace's "
        "resource group that the bot's identity may read: it needs a role on each store itself."]


# ---------------------------------------------------------------- studio links (Azure)


@pytest.fixture
async def azure_chat():
    _, service = demo_azure()
    pool = ThreadPoolExecutor(max_workers=4)
    ml = NonBlockingService(service, name=WORKSPACE, environment="prod", pool=pool,
                            azure=AzureScope(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, TENANT))
    handler = ChatHandler(catalog(), Workspaces([ml]), RoleBook(default=Role.VIEWER))

    async def say(text: str):
        return await handler.handle(Request(User("u-1", "Uma"), "conv-az", text=text))

    yield say
    pool.shutdown(wait=True)


async def test_azure_cards_link_to_the_studio(azure_chat):
    endpoint = await azure_chat("endpoint fraud-api")
    assert open_urls(endpoint) == [("Open in Azure ML studio", f"https://ml.azure.com/endpoints/realtime/fraud-api/"
                                                               f"detail?{WSID}{WORKSPACE}&tid={TENANT}")]
    model = await azure_chat("model fraud-model:3")
    assert open_urls(model) == [("Open in Azure ML studio",
                                 f"https://ml.azure.com/model/fraud-model:3/details?{WSID}{WORKSPACE}&tid={TENANT}")]
    job = await azure_chat("job frosty_kettle_8k2x9q7m")
    assert open_urls(job) == [("Open in Azure ML studio",
                               f"https://ml.azure.com/runs/frosty_kettle_8k2x9q7m?{WSID}{WORKSPACE}&tid={TENANT}")]
    featureset = await azure_chat("featureset transactions")
    assert open_urls(featureset) == [(
        "Open in Azure ML studio", f"https://ml.azure.com/featureStore/contoso-features/featureSets/transactions/2/"
                                   f"details?{WSID}contoso-features&tid={TENANT}")]
    compared = await azure_chat("compare fraud-model")
    assert [title for title, _ in open_urls(compared)] == ["v4 in studio", "v3 in studio"]
    for reply in (endpoint, model, job, featureset, compared):
        assert_valid_card(reply.card)


async def test_the_feature_store_over_azure_matches_the_local_one(azure_chat, chat):
    azure, local = await azure_chat("featureset customers"), await chat("featureset customers")

    def shown(reply) -> str:     # all but the title lines; the demo's windows depend on when each was built
        return "\n".join(line for line in reply.text.splitlines()[2:] if not line.startswith("Last job: "))

    assert shown(azure) == shown(local) + " | Open in Azure ML studio"       # the actions line ends the text
    assert fact(azure, "Last job").startswith("Failed · recurrent · ")
    assert fact(azure, "Last job").endswith(" · job mat_cust1_recur_8z3n")


def test_studio_urls_without_a_tenant_and_with_odd_names():
    site = Studio(AzureScope("s", "rg", "ws"))
    assert site.job("my job") == ("https://ml.azure.com/runs/my%20job?wsid=/subscriptions/s/resourceGroups/rg"
                                  "/providers/Microsoft.MachineLearningServices/workspaces/ws")


# ---------------------------------------------------------------- over HTTP through the CloudAdapter


@pytest.mark.parametrize("typed,expected", [
    ("compare fraud-model", ["fraud-model: v4 vs v3", "auc  0.953  0.941  +0.012  v4"]),
    ("compare demand-forecast:2 1", ["rmse  38.2  41.7  -3.5  v2"]),
    ("featurestores", ["Feature stores", "contoso-features"]),
    ("featuresets", ["Feature sets in contoso-features", "transactions v2"]),
    ("featureset transactions", ["Feature set transactions:2", "account:1 · join on account_id (String)",
                                 "Schedule: every 3 hours"]),
    ("models --stage Staging", ["fraud-model v4 Staging · Production: v3"]),
])
async def test_the_new_commands_over_http(teams, typed, expected):
    [reply] = await teams.say(typed)
    words = reply.card["fallbackText"]
    for word in expected:
        assert word in words, (word, words)
    assert_valid_card(reply.card)


async def test_a_feature_set_button_click_over_http(teams):
    [reply] = await teams.say("featuresets")
    status, body = await teams.click(reply.card, "Details")         # first row: customers
    assert status == 200
    posted = teams.connector.sent[-1].card          # navigation posts its answer as a new message
    assert posted["body"][0]["text"] == "Feature set customers:1"
    assert_valid_card(posted)


async def test_no_role_on_the_feature_store_tells_where_to_assign_one():
    workspace, service = demo_azure(identity="mi-mlops-bot")
    workspace.transport.fail("GET", r"/workspaces/contoso-features/featuresets$", 403, "AuthorizationFailed",
                             "The client does not have authorization to perform action.")
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        ml = NonBlockingService(service, name=WORKSPACE, environment="prod", pool=pool)
        handler = ChatHandler(catalog(), Workspaces([ml]), RoleBook(default=Role.VIEWER))
        reply = await handler.handle(Request(User("u-1", "Uma"), "c", text="featuresets"))
    finally:
        pool.shutdown(wait=True)
    assert reply.text == (
        "Azure refused: mi-mlops-bot may not read feature store contoso-features. A feature store is a workspace of "
        "its own: the bot's identity needs a role on the feature store itself (AzureML Data Scientist, or the MLOps "
        "bot custom role assigned on the store or its resource group), not only on ws-prod. Assign it the Azure "
        "role **AzureML Data Scientist** on the feature store contoso-features.")
