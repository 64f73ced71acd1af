"""The demo feature store (adapters.local.demo_feature_store) served over a FakeWorkspace's replay transport.

A feature store is a workspace of kind `FeatureStore` in the same resource group; its assets live
under its own ARM id, which is what the second MLClient (bound to the store) asks for:

    GET .../resourceGroups/rg-mlops/providers/Microsoft.MachineLearningServices/workspaces   (feature_stores.list)
    GET .../workspaces/contoso-features/featuresets[/<name>/versions[/<v>[/features]]]
    GET .../workspaces/contoso-features/featurestoreEntities/<name>/versions/<v>
    GET .../workspaces/contoso-features/jobs?properties=azureml.FeatureSetName=<n>,azureml.FeatureSetVersion=<v>

Bodies come from the published examples (tests/fixtures/azure/ml/feature_store/, placeholders replaced
at load time) and two hand-written shapes (ml/handwritten/feature_store/); see SOURCES.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from adapters.local.demo_feature_store import DemoFeatureStore
from adapters.service import FeatureSet
from tests.replay import (RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE_ID, FakeWorkspace, RecordedRequest,
                          ReplayResponse, command_job, example, from_handwritten, load, page, system_data)

PROVIDER = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices"
MATERIALIZATION_TYPES = {"backfill": "BackfillMaterialization", "recurrent": "RecurrentMaterialization"}


def store_id(store: str, *segments: str) -> str:
    return "/".join((f"{PROVIDER}/workspaces/{store}", *segments))


def iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "2025-01-10T08:00:00Z"


def feature_store_workspace(name: str, description: str = "") -> dict[str, Any]:
    """The hand-written workspace GET, as a workspace of kind FeatureStore."""
    body = from_handwritten("ml/handwritten/workspace/get.json", id=store_id(name), name=name, kind="FeatureStore")
    body["properties"].update(friendlyName=name, description=description, featureStoreSettings={
        "computeRuntime": {"sparkRuntimeVersion": "3.4"},
        "offlineStoreConnectionName": "OfflineStoreConnectionName",
        "onlineStoreConnectionName": "OnlineStoreConnectionName"})
    return body


def feature_set_container(store: str, name: str, latest: str, description: str,
                          tags: dict[str, str]) -> dict[str, Any]:
    """ml/feature_store/FeaturesetContainer/list.json's item with real ids."""
    body = example("ml/feature_store/FeaturesetContainer/list.json")["value"][0]
    body.update(id=store_id(store, "featuresets", name), name=name,
                type="Microsoft.MachineLearningServices/workspaces/featuresets", systemData=system_data())
    body["properties"].update(description=description, tags=dict(tags), properties={}, isArchived=False,
                              latestVersion=latest, nextVersion=str(int(latest) + 1), provisioningState="Succeeded")
    return body


def recurrence(schedule: str) -> dict[str, Any] | None:
    """'every 3 hours' / 'every 1 day at 02:00' as the REST RecurrenceTrigger of materializationSettings."""
    match = re.fullmatch(r"every (?P<n>\d+) (?P<unit>minute|hour|day|week|month)s?(?: at (?P<h>\d\d):(?P<m>\d\d))?",
                         schedule)
    if not match:
        return None
    trigger: dict[str, Any] = {"triggerType": "Recurrence", "frequency": match["unit"].capitalize(),
                               "interval": int(match["n"]), "timeZone": "UTC", "startTime": "2025-01-01T00:00:00"}
    if match["h"]:
        trigger["schedule"] = {"hours": [int(match["h"])], "minutes": [int(match["m"])]}
    return trigger


def feature_set_version(fs: FeatureSet, created_at: datetime) -> dict[str, Any]:
    """ml/feature_store/FeaturesetVersion/get.json with real ids, entities and materialization settings."""
    body = example("ml/feature_store/FeaturesetVersion/get.json")
    body.update(id=store_id(fs.store, "featuresets", fs.name, "versions", fs.version), name=fs.version,
                type="Microsoft.MachineLearningServices/workspaces/featuresets/versions",
                systemData=system_data(iso(created_at)))
    props = body["properties"]
    store_type = {(True, True): "OnlineAndOffline", (True, False): "Offline", (False, True): "Online",
                  (False, False): "None"}[(fs.offline_enabled, fs.online_enabled)]
    settings = props["materializationSettings"]
    settings.update(storeType=store_type, schedule=recurrence(fs.schedule),
                    notification={"emails": ["ml-platform@contoso.com"], "emailOn": ["JobFailed"]},
                    resource={"instanceType": "standard_e8s_v3"},
                    sparkConfiguration={"spark.driver.cores": "4", "spark.executor.instances": "2"})
    props.update(description=fs.description, tags=dict(fs.tags), properties={}, stage=fs.stage,
                 entities=[f"azureml:{e.name}:{e.version}" for e in fs.entities], provisioningState="Succeeded",
                 specification={"path": f"azureml://datastores/workspaceblobstore/paths/featuresets/{fs.name}/"
                                        f"{fs.version}/spec"})
    return body


def serve_feature_stores(workspace: FakeWorkspace, stores: list[DemoFeatureStore]) -> None:
    """Add the stores' resources to `workspace` and the routes that answer for them."""
    workspaces = [from_handwritten("ml/handwritten/workspace/get.json", id=WORKSPACE_ID)]
    jobs: dict[str, list[dict[str, Any]]] = {}
    for demo in stores:
        name = demo.store.name
        workspaces.append(feature_store_workspace(name, demo.store.description))
        for entity in demo.entities:
            container = example("ml/feature_store/FeaturestoreEntityContainer/list.json")["value"][0]
            container.update(id=store_id(name, "featurestoreEntities", entity.name), name=entity.name,
                             type="Microsoft.MachineLearningServices/workspaces/featurestoreEntities",
                             systemData=system_data())
            container["properties"].update(description=entity.description, tags={}, properties={},
                                           latestVersion=entity.version, nextVersion=str(int(entity.version) + 1),
                                           provisioningState="Succeeded")
            workspace.add(container)
            version = load("ml/handwritten/feature_store/entity_version.json")
            version.update(id=store_id(name, "featurestoreEntities", entity.name, "versions", entity.version),
                           name=entity.version)
            version["properties"].update(description=entity.description, indexColumns=[
                {"columnName": column, "dataType": kind} for column, kind in entity.join_keys])
            workspace.add(version)
        latest: dict[str, FeatureSet] = {}
        for fs, created_at in demo.feature_sets:
            workspace.add(feature_set_version(fs, created_at))
            for feature in fs.features:
                body = load("ml/handwritten/feature_store/feature.json")
                body.update(id=store_id(name, "featuresets", fs.name, "versions", fs.version, "features",
                                        feature.name), name=feature.name)
                body["properties"].update(featureName=feature.name, dataType=feature.type,
                                          description=feature.description)
                workspace.add(body)
            if fs.name not in latest or int(fs.version) > int(latest[fs.name].version):
                latest[fs.name] = fs
        for fs in latest.values():
            workspace.add(feature_set_container(name, fs.name, fs.version, fs.description, fs.tags))
        for feature_set, version, run in demo.materializations:
            body = command_job(run.job, run.status, experiment=f"{feature_set}-materialization",
                               created_at=iso(run.created_at))
            body["id"] = store_id(name, "jobs", run.job)
            body["properties"]["properties"] = {
                "azureml.FeatureStoreJobType": MATERIALIZATION_TYPES[run.type],
                "azureml.FeatureSetName": feature_set, "azureml.FeatureSetVersion": version,
                "azureml.FeatureWindowStart": iso(run.window_start), "azureml.FeatureWindowEnd": iso(run.window_end)}
            jobs.setdefault(name, []).append(body)

    def list_workspaces(request: RecordedRequest, match: Any) -> ReplayResponse:
        return ReplayResponse(json=page(workspaces))

    def jobs_of(store: str):
        def answer(request: RecordedRequest, match: Any) -> ReplayResponse:
            """Azure's `properties=k=v,k=v` filter: the store's jobs whose properties hold every pair."""
            query = (request.query.get("properties") or [""])[0]
            wanted = dict(pair.split("=", 1) for pair in query.split(",") if pair)
            return ReplayResponse(json=page([j for j in jobs.get(store, []) if all(
                j["properties"]["properties"].get(k) == v for k, v in wanted.items())]))
        return answer

    t = workspace.transport
    t.add("GET", rf"^{re.escape(PROVIDER)}/workspaces$", handler=list_workspaces)
    for demo in stores:
        prefix = re.escape(store_id(demo.store.name))
        t.add("GET", rf"^{prefix}/jobs$", handler=jobs_of(demo.store.name))
        t.add("GET", rf"^{prefix}/.+", handler=workspace._get)
