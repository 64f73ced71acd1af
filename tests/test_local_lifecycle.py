"""The local workspace's retraining, archive and schema migration (issue 9), with an injected clock."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from adapters.local.schema import SCHEMA, SCHEMA_VERSION
from adapters.local.workspace import LocalWorkspace
from adapters.service import InvalidRequest, NotFound
from tests.conftest import Clock

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def ws(tmp_path, clock):
    with LocalWorkspace(tmp_path / "workspace.db", clock=clock) as workspace:
        yield workspace


def test_retraining_runs_the_pipeline_and_registers_one_new_version(ws, clock):
    job = ws.trigger_retraining("fraud-model")
    assert (job.status, job.type, job.display_name, job.tags) == (
        "Queued", "pipeline", "train-fraud-pipeline", {"schedule": "weekly-fraud-retrain"})
    assert [c.display_name for c in job.children] == ["prep_data", "train_model", "evaluate_model", "register_model"]
    clock.advance(minutes=20)
    assert ws.get_job(job.name).status == "Running"
    assert [m.version for m in ws.list_models("fraud-model")] == ["4", "3", "2", "1"]    # nothing yet
    clock.advance(minutes=40)                                   # 2 + 14 + 33 + 3 + 2 = 54 minutes after the trigger
    done = ws.get_job(job.name)
    assert (done.status, done.ended_at) == ("Completed", NOW + timedelta(minutes=54))
    new = ws.get_model("fraud-model")
    basis = ws.get_model("fraud-model", "4")
    assert (new.version, new.stage, new.job, new.archived, new.created_at, new.created_by) == (
        "5", "None", job.name, False, NOW + timedelta(minutes=54), "mlops-bot")
    assert new.tags == basis.tags and set(new.metrics) == set(basis.metrics)
    assert all(abs(new.metrics[k] / basis.metrics[k] - 1) <= 0.02 for k in basis.metrics)
    assert new.description == f"Retrained by train-fraud-pipeline (job {job.name})."
    clock.advance(hours=2)                                      # later reads register nothing more
    assert [m.version for m in ws.list_models("fraud-model")] == ["5", "4", "3", "2", "1"]


def test_a_pipeline_first_seen_ended_still_has_its_start(ws, clock):
    job = ws.trigger_retraining("fraud-model")
    clock.advance(hours=2)                                      # nobody looked while it ran
    done = ws.get_job(job.name)
    assert (done.status, done.started_at, done.ended_at) == (
        "Completed", NOW + timedelta(minutes=2), NOW + timedelta(minutes=54))


def test_a_retraining_run_that_fails_or_is_canceled_registers_nothing(ws, clock):
    job = ws.trigger_retraining("churn-model")
    ws.cancel_job(job.name).wait(None)
    clock.advance(hours=2)
    assert [m.version for m in ws.list_models("churn-model")] == ["3", "2", "1"]


def test_the_registered_version_survives_a_restart(tmp_path, clock):
    path = tmp_path / "workspace.db"
    with LocalWorkspace(path, clock=clock) as first:
        job = first.trigger_retraining("churn-model")
    clock.advance(hours=1)
    with LocalWorkspace(path, clock=clock) as second:
        assert (second.get_model("churn-model").version, second.get_model("churn-model").job) == ("4", job.name)


def test_retraining_refusals(ws):
    with pytest.raises(InvalidRequest) as untagged:
        ws.trigger_retraining("credit-risk")
    assert untagged.value.message == ("No version of credit-risk names its retraining schedule: tag one with "
                                      "training_schedule=‹schedule name›, or trigger the schedule directly.")
    with pytest.raises(NotFound):
        ws.trigger_retraining("fraud-modle")


def test_archive_and_restore_keep_the_stage(ws):
    archived = ws.archive_model("fraud-model", "3")
    assert (archived.stage, archived.archived) == ("Production", True)
    assert "fraud-model:3" in [m.ref for m in ws.list_models(stage="Production")]    # archived still counts
    assert ws.restore_model("fraud-model", "3").archived is False
    with pytest.raises(NotFound) as missing:
        ws.archive_model("fraud-model", "9")
    assert missing.value.message == "Model fraud-model has no version 9 (versions: 1, 2, 3, 4)."


def test_a_schema_1_file_is_migrated_in_place(tmp_path, clock):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO models (name, version, stage, description, tags, metrics, created_at, created_by, "
                     "path) VALUES ('fraud-model', '1', 'Production', '', '{}', '{\"auc\": 0.9}', ?, 'Ada', '')",
                     (NOW.isoformat(),))
        conn.execute("PRAGMA user_version = 1")
    with LocalWorkspace(path, clock=clock) as ws:
        model = ws.get_model("fraud-model", "1")
        assert (model.stage, model.metrics, model.archived, model.job) == ("Production", {"auc": 0.9}, False, "")
        assert ws.list_feature_stores() == []                   # migrated, not re-seeded: the file keeps its data
        assert ws.archive_model("fraud-model", "1").archived is True
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_reset_reseeds_the_feature_store(ws):
    ws.reset(demo=False)
    assert ws.list_feature_stores() == []
    ws.reset(demo=True)
    assert [f.ref for f in ws.list_feature_sets("contoso-features")] == ["customers:1", "transactions:2"]
