"""The MLService contract for issue 9's port methods: archive/restore, retraining, the feature store.

Parametrised over both implementations (tests/contract/conftest.py); both serve the demo workspace
and the demo feature store (adapters.local.demo_feature_store), so the feature store values are compared
with the demo itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.local.demo_feature_store import build_feature_stores
from adapters.service import (TERMINAL_JOB_STATUSES, FeatureSet, FeatureStore, InvalidRequest, Job, NotFound,
                              TRAINING_SCHEDULE_TAG)

MISSING = "no-such-name-7q2x"
DEMO = build_feature_stores(datetime.now(timezone.utc))[0]


def model_with_versions(ml, count: int = 2):
    for model in ml.list_models():
        versions = ml.list_models(model.name)
        if len(versions) >= count:
            return versions
    pytest.skip(f"no model with {count} versions")


# ---------------------------------------------------------------- archive and restore


def test_archive_flags_the_version_keeps_its_stage_and_restore_undoes_it(ml):
    versions = model_with_versions(ml)
    target = versions[-1]
    assert not target.archived
    archived = ml.archive_model(target.name, target.version)
    assert (archived.ref, archived.archived, archived.stage) == (target.ref, True, target.stage)
    assert ml.get_model(target.name, target.version).archived is True
    listed = {m.version: m.archived for m in ml.list_models(target.name)}      # archived versions stay listed
    assert listed[target.version] is True and sum(listed.values()) == 1
    assert ml.archive_model(target.name, target.version).archived is True      # twice: no change, no error
    restored = ml.restore_model(target.name, target.version)
    assert (restored.archived, restored.stage) == (False, target.stage)
    assert ml.restore_model(target.name, target.version).archived is False


def test_a_stage_change_of_an_archived_version_keeps_it_archived(ml):
    target = model_with_versions(ml)[-1]
    ml.archive_model(target.name, target.version)
    changed = ml.set_model_stage(target.name, target.version, "Staging")
    assert (changed.stage, changed.archived) == ("Staging", True)
    again = ml.get_model(target.name, target.version)
    assert (again.stage, again.archived) == ("Staging", True)


def test_archive_of_a_missing_version_or_model_is_not_found_and_changes_nothing(ml):
    versions = model_with_versions(ml)
    with pytest.raises(NotFound):
        ml.archive_model(versions[0].name, "9999")
    with pytest.raises(NotFound):
        ml.restore_model(MISSING, "1")
    assert [m.archived for m in ml.list_models(versions[0].name)] == [False] * len(versions)


# ---------------------------------------------------------------- retraining


def test_retraining_triggers_the_schedule_the_model_names(ml):
    tagged = [m for m in ml.list_models() if m.tags.get(TRAINING_SCHEDULE_TAG)]
    if not tagged:
        pytest.skip("no model names a training schedule")
    model = tagged[0]
    schedule = model.tags[TRAINING_SCHEDULE_TAG]
    job = ml.trigger_retraining(model.name)
    assert isinstance(job, Job) and job.name and job.status not in TERMINAL_JOB_STATUSES
    assert ml.get_job(job.name).name == job.name
    assert schedule in ml.names("schedule")


def test_retraining_a_model_without_a_training_schedule_is_refused(ml):
    untagged = [m for m in ml.list_models() if not any(v.tags.get(TRAINING_SCHEDULE_TAG)
                                                       for v in ml.list_models(m.name))]
    if not untagged:
        pytest.skip("every model names a training schedule")
    before = set(ml.names("job"))
    with pytest.raises(InvalidRequest) as refused:
        ml.trigger_retraining(untagged[0].name)
    assert refused.value.code == "NoTrainingSchedule"
    assert set(ml.names("job")) == before


def test_retraining_an_unknown_model_is_not_found(ml):
    with pytest.raises(NotFound):
        ml.trigger_retraining(MISSING)


# ---------------------------------------------------------------- feature store


def test_feature_stores_and_their_feature_sets(ml):
    stores = ml.list_feature_stores()
    assert all(isinstance(s, FeatureStore) for s in stores)
    assert [s.name for s in stores] == [DEMO.store.name]
    sets = ml.list_feature_sets(DEMO.store.name)
    assert all(isinstance(f, FeatureSet) and f.store == DEMO.store.name for f in sets)
    assert [(f.name, f.version) for f in sets] == [("customers", "1"), ("transactions", "2")]


def test_a_feature_set_in_full(ml):
    found = ml.get_feature_set(DEMO.store.name, "transactions")
    expected = next(fs for fs, _ in DEMO.feature_sets if fs.ref == "transactions:2")
    assert (found.ref, found.versions, found.stage) == ("transactions:2", ("2", "1"), "Production")
    assert [(e.name, e.version, e.join_keys) for e in found.entities] == [("account", "1", (("account_id", "String"),))]
    assert [(f.name, f.type) for f in found.features] == [(f.name, f.type) for f in expected.features]
    assert (found.offline_enabled, found.online_enabled, found.schedule) == (True, True, "every 3 hours")
    last = found.last_materialization
    assert (last.job, last.status, last.type) == ("mat_txn2_recur_7w1c", "Completed", "recurrent")
    assert last.window_end - last.window_start == timedelta(hours=3)
    assert last.window_end.tzinfo is not None and last.created_at > last.window_end


def test_an_older_version_and_a_failed_materialization(ml):
    old = ml.get_feature_set(DEMO.store.name, "transactions", "1")
    assert (old.version, len(old.features), old.online_enabled, old.schedule) == ("1", 4, False, "every 1 day at 02:00")
    customers = ml.get_feature_set(DEMO.store.name, "customers", "1")
    assert (customers.last_materialization.status, customers.last_materialization.type) == ("Failed", "recurrent")


@pytest.mark.parametrize("store,name,version", [
    (MISSING, "transactions", None), (DEMO.store.name, MISSING, None), (DEMO.store.name, "transactions", "9")])
def test_missing_store_feature_set_or_version_is_not_found(ml, store, name, version):
    with pytest.raises(NotFound) as missing:
        ml.get_feature_set(store, name, version)
    assert missing.value.kind == ("feature_store" if store == MISSING else "feature_set")


def test_feature_sets_of_a_missing_store_is_not_found_naming_the_stores(ml):
    with pytest.raises(NotFound) as missing:
        ml.list_feature_sets(MISSING)
    assert missing.value.kind == "feature_store" and DEMO.store.name in missing.value.message


def test_a_stage_change_changes_the_stage_only(ml):
    """The version keeps its training job (lineage), tags, metrics and description (issue 16)."""
    candidates = [v for m in ml.list_models() for v in ml.list_models(m.name) if v.stage != "Staging"]
    if not candidates:
        pytest.skip("no model version outside Staging")
    target = next((v for v in candidates if v.job), candidates[0])
    changed = ml.set_model_stage(target.name, target.version, "Staging")
    again = ml.get_model(target.name, target.version)
    for found in (changed, again):
        assert found.stage == "Staging"
        assert (found.job, found.tags, found.metrics, found.description, found.archived) == (
            target.job, target.tags, target.metrics, target.description, target.archived)
