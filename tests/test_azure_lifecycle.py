"""Issue 9's port methods on AzureMLService over the replay transport: the exact HTTP calls.

Archive and restore go through `models.archive`/`models.restore`; a stage change never re-saves an
archived version with `models.create_or_update` (whose PUT sends isArchived: false); the feature
store is read through a second MLClient bound to the store.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.azureml.workspace import AzureMLService
from adapters.local.demo_feature_store import build_feature_stores
from adapters.service import InvalidRequest, NotFound, PermissionDenied
from tests.replay import WORKSPACE_ID, FakeWorkspace, ReplayResponse, ml_client, model_version
from tests.replay_feature_store import serve_feature_stores, store_id

WS = WORKSPACE_ID
V1 = f"{WS}/models/fraud-model/versions/1"
MODELS_API = "2023-08-01-preview"
STORE = "contoso-features"


@pytest.fixture
def workspace() -> FakeWorkspace:
    workspace = FakeWorkspace()
    serve_feature_stores(workspace, build_feature_stores(datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)))
    return workspace


@pytest.fixture
def svc(workspace) -> AzureMLService:
    return AzureMLService(ml_client(workspace.transport), environment="prod", identity="mi-mlops-bot")


def calls(workspace: FakeWorkspace) -> list[tuple[str, str, str | None]]:
    return [(r.method, r.path, r.api_version) for r in workspace.transport.sent()]


# ---------------------------------------------------------------- archive and restore


def test_archive_is_the_sdks_archive_put_and_keeps_the_stage(svc, workspace):
    model = svc.archive_model("fraud-model", "1")
    assert (model.archived, model.stage) == (True, "Archived")
    assert calls(workspace) == [("GET", V1, MODELS_API), ("GET", V1, MODELS_API), ("PUT", V1, MODELS_API),
                                ("GET", V1, MODELS_API)]
    put = workspace.transport.mutations()[0]
    assert put.body["properties"]["isArchived"] is True
    assert "stage" not in put.body["properties"]                  # what models.archive sends (see azureml.py)
    assert workspace.get("models", "fraud-model", "versions", "1")["properties"]["isArchived"] is True


def test_archiving_an_archived_version_sends_nothing(svc, workspace):
    svc.archive_model("fraud-model", "1")
    workspace.transport.clear()
    assert svc.archive_model("fraud-model", "1").archived is True
    assert workspace.transport.mutations() == []


def test_restore_is_the_sdks_restore(svc, workspace):
    svc.archive_model("fraud-model", "1")
    workspace.transport.clear()
    model = svc.restore_model("fraud-model", "1")
    assert (model.archived, model.stage) == (False, "Archived")
    [put] = workspace.transport.mutations()
    assert (put.method, put.path, put.body["properties"]["isArchived"]) == ("PUT", V1, False)


def test_if_azure_drops_the_stage_on_archive_it_is_put_back_without_unarchiving(svc, workspace):
    def strict_put(request, match):       # a PUT that replaces the properties: no stage in, no stage kept
        body = dict(request.body)
        body.update(id=V1, name="1")
        workspace.add(body)
        return ReplayResponse(json=body)

    workspace.transport.add("PUT", r"/models/fraud-model/versions/1$", handler=strict_put, first=True)
    model = svc.archive_model("fraud-model", "1")
    assert (model.archived, model.stage) == (True, "Archived")
    first, second = workspace.transport.mutations()
    assert "stage" not in first.body["properties"] and first.body["properties"]["isArchived"] is True
    assert (second.body["properties"]["stage"], second.body["properties"]["isArchived"]) == ("Archived", True)


def test_stage_change_of_an_archived_version_keeps_is_archived(svc, workspace):
    svc.archive_model("fraud-model", "1")
    workspace.transport.clear()
    model = svc.set_model_stage("fraud-model", "1", "Staging")
    assert (model.stage, model.archived) == ("Staging", True)
    assert calls(workspace) == [("GET", V1, MODELS_API), ("PUT", V1, MODELS_API)]
    [put] = workspace.transport.mutations()
    assert (put.body["properties"]["stage"], put.body["properties"]["isArchived"]) == ("Staging", True)


def test_stage_change_of_an_active_version_is_unchanged(svc, workspace):
    svc.set_model_stage("fraud-model", "3", "Production")
    [put] = workspace.transport.mutations()
    assert (put.body["properties"]["stage"], put.body["properties"]["isArchived"]) == ("Production", False)


def test_versions_are_listed_with_archived_ones_flagged(svc, workspace):
    svc.archive_model("fraud-model", "1")
    workspace.transport.clear()
    assert [(m.version, m.archived) for m in svc.list_models("fraud-model")] == [
        ("3", False), ("2", False), ("1", True)]
    [request] = workspace.transport.sent()
    assert (request.path, request.query["listViewType"]) == (f"{WS}/models/fraud-model/versions", ["All"])


def test_model_version_reports_its_training_job(svc):
    assert svc.get_model("fraud-model", "2").job == "train-fraud-041"          # properties azureml.runId


# ---------------------------------------------------------------- retraining


def test_retraining_triggers_the_tagged_schedule(svc, workspace):
    workspace.add(model_version("fraud-model", "4", tags={"training_schedule": "nightly-train"}))
    job = svc.trigger_retraining("fraud-model")
    [post] = workspace.transport.mutations()
    assert (post.method, post.path, post.api_version) == ("POST", f"{WS}/schedules/nightly-train/trigger",
                                                           "2024-01-01-preview")
    assert (job.name, job.status) == ("nightly-train-triggered-5", "NotStarted")


def test_retraining_without_a_tag_sends_no_trigger(svc, workspace):
    with pytest.raises(InvalidRequest) as refused:
        svc.trigger_retraining("fraud-model")
    assert "training_schedule" in refused.value.message
    assert workspace.transport.mutations() == []


def test_retraining_names_a_missing_schedule(svc, workspace):
    workspace.add(model_version("fraud-model", "4", tags={"training_schedule": "gone-schedule"}))
    with pytest.raises(NotFound) as missing:
        svc.trigger_retraining("fraud-model")
    assert (missing.value.kind, missing.value.name) == ("schedule", "gone-schedule")
    assert "fraud-model names schedule 'gone-schedule'" in missing.value.message


# ---------------------------------------------------------------- feature store


def test_feature_store_reads_go_to_the_store_with_its_own_client(svc, workspace):
    found = svc.get_feature_set(STORE, "transactions", "2")
    assert found.ref == "transactions:2"
    base = store_id(STORE)
    assert calls(workspace) == [
        ("GET", f"{base}/featuresets/transactions/versions", "2023-10-01"),
        ("GET", f"{base}/featuresets/transactions/versions/2", "2023-10-01"),
        ("GET", f"{base}/featuresets/transactions/versions/2/features", "2023-10-01"),
        ("GET", f"{base}/featurestoreEntities/account/versions/1", "2023-10-01"),
        ("GET", f"{base}/jobs", "2023-08-01-preview"),
    ]
    jobs = workspace.transport.sent(path_regex=r"/jobs$")[0]
    assert jobs.query["properties"] == ["azureml.FeatureSetName=transactions,azureml.FeatureSetVersion=2"]
    assert workspace.transport.sent(path_regex=r"/featuresets/transactions/versions$")[0].query["listViewType"] == [
        "All"]


def test_feature_stores_are_the_workspaces_of_kind_featurestore(svc, workspace):
    stores = svc.list_feature_stores()
    assert [(s.name, s.location, s.resource_group) for s in stores] == [(STORE, "westeurope", "rg-mlops")]
    [request] = workspace.transport.sent()
    assert (request.path, request.api_version) == (WS.rsplit("/", 1)[0], "2024-10-01-preview")


def test_no_role_on_the_store_says_so(svc, workspace):
    workspace.transport.fail("GET", r"/workspaces/contoso-features/featuresets$", 403, "AuthorizationFailed",
                             "The client does not have authorization to perform action "
                             "'Microsoft.MachineLearningServices/workspaces/featuresets/read'.")
    with pytest.raises(PermissionDenied) as denied:
        svc.list_feature_sets(STORE)
    assert denied.value.message.startswith("mi-mlops-bot may not read feature store contoso-features. A feature "
                                           "store is a workspace of its own: the bot's identity needs a role on the "
                                           "feature store itself (AzureML Data Scientist")
    assert (denied.value.role, denied.value.code) == ("AzureML Data Scientist", "AuthorizationFailed")


def test_an_unknown_store_is_not_found_naming_the_stores(svc):
    with pytest.raises(NotFound) as missing:
        svc.list_feature_sets("contoso-featurez")
    assert missing.value.message == "No feature store named 'contoso-featurez' (feature stores: contoso-features)."


def test_an_unknown_feature_set_answered_404_names_the_feature_sets(svc, workspace):
    workspace.transport.fail("GET", r"/featuresets/transactionz/versions$", 404, "UserError",
                             "Could not find asset with name transactionz")
    with pytest.raises(NotFound) as missing:
        svc.get_feature_set(STORE, "transactionz")
    assert (missing.value.kind, missing.value.message) == (
        "feature_set", "Feature store contoso-features has no feature set named 'transactionz' "
                       "(it has: customers, transactions).")
