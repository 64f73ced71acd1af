"""A sized demo workspace (MLOPSBOT_DEMO_SIZE, --demo-size), and reads whose cost does not grow per endpoint.

Issue #21 item 3: `digest now` on the local workspace grew super-linearly with endpoints because
each endpoint's figures were read in a transaction of their own, and each transaction re-derived
every pipeline and rescanned every model version. These tests count the SQL statements a read
makes (sqlite3's trace callback on the workspace's own connection), never the time it takes; the
time is measured in bench/scaling.py.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from adapters.local.demo import build_demo, generated_name
from adapters.local.workspace import LocalWorkspace
from adapters.service import NotFound
from bot.app import build_workspaces
from bot.cli import main
from bot.settings import SettingsError, load_settings
from tests.conftest import Clock

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def sized(tmp_path, clock, size: int | None) -> LocalWorkspace:
    return LocalWorkspace(tmp_path / f"ws-{size}.db", clock=clock, demo_size=size)


class Statements:
    """The SQL statements the workspace's connection runs while counting."""

    def __init__(self, ws: LocalWorkspace) -> None:
        self.ws, self.seen = ws, []

    def __enter__(self) -> list[str]:
        self.ws._conn.set_trace_callback(self.seen.append)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.ws._conn.set_trace_callback(None)


# ---------------------------------------------------------------- the sized demo


def test_the_default_demo_is_the_story_alone(tmp_path, clock):
    with sized(tmp_path, clock, None) as ws:
        assert ws.names("endpoint") == ["churn-api", "credit-api", "fraud-api"]
        assert len(ws.names("model")) == 4


@pytest.mark.parametrize("size", [3, 10, 100])
def test_a_sized_demo_has_that_many_endpoints_and_one_model_more(tmp_path, clock, size):
    with sized(tmp_path, clock, size) as ws:
        endpoints = ws.names("endpoint")
        assert len(endpoints) == size
        assert len(ws.names("model")) == size + 1
        assert {"fraud-api", "churn-api", "credit-api"} <= set(endpoints)      # the story is still there
        assert ws.get_endpoint("fraud-api").traffic == {"blue": 90, "green": 10}
        # 23 story jobs, one training job per generated model
        assert len(ws.names("job")) == 23 + size - 3


def test_generated_endpoints_serve_their_own_models(tmp_path, clock):
    with sized(tmp_path, clock, 10) as ws:
        canary = ws.get_endpoint(generated_name(10))
        assert canary.traffic == {"blue": 90, "green": 10}
        assert [d.model for d in canary.deployments] == ["svc-0010-model:2", "svc-0010-model:3"]
        plain = ws.get_endpoint(generated_name(7))
        assert (plain.traffic, [d.model for d in plain.deployments]) == ({"blue": 100}, ["svc-0007-model:2"])
        assert [(m.version, m.stage) for m in ws.list_models("svc-0010-model")] == [
            ("3", "Staging"), ("2", "Production"), ("1", "Archived")]
        assert ws.list_models("svc-0007-model")[0].stage == "None"
        assert ws.get_job("steady_gear_00000010").status == "Failed"       # every tenth training job failed
        assert ws.get_job("steady_gear_00000009").status == "Completed"
        figures = ws.endpoint_metrics(generated_name(10))
        assert figures.requests_per_minute > 0 and {d.deployment for d in figures.deployments} == {"blue", "green"}


def test_a_sized_demo_is_the_same_for_the_same_clock(tmp_path, clock):
    assert build_demo(NOW, 50) == build_demo(NOW, 50)
    with sized(tmp_path, clock, 20) as one, LocalWorkspace(tmp_path / "two.db", clock=clock, demo_size=20) as two:
        assert one.list_models() == two.list_models()
        assert one.list_endpoints() == two.list_endpoints()
        assert one.endpoints_metrics(one.list_endpoints()) == two.endpoints_metrics(two.list_endpoints())


@pytest.mark.parametrize("size", [2, 10_001])
def test_a_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match="from 3 to 10000"):
        build_demo(NOW, size)
    with pytest.raises(SettingsError, match="demo_size"):
        load_settings(host="127.0.0.1", demo_size=size)


def test_reset_keeps_the_size(tmp_path, clock):
    with sized(tmp_path, clock, 12) as ws:
        ws.reset(demo=True)
        assert len(ws.names("endpoint")) == 12


def test_the_setting_reaches_the_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPSBOT_DEMO_SIZE", "15")
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1")
    assert settings.demo_size == 15
    pools: list = [None, None]
    workspaces = build_workspaces(settings, pools)
    local = next(iter(workspaces)).service
    try:
        assert len(local.names("endpoint")) == 15
    finally:
        local.close()


def test_the_cli_refuses_a_size_it_would_ignore(tmp_path, monkeypatch, capsys):
    """--demo-size on a data dir that already holds a workspace, without --reset-demo, would do nothing."""
    for name in ("MicrosoftAppId", "MLOPSBOT_BACKEND", "MLOPSBOT_DEMO_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    LocalWorkspace(data / "workspace.db").close()
    assert main(["chat", "--data-dir", str(data), "--demo-size", "10"]) == 2
    err = capsys.readouterr().err
    assert "--reset-demo" in err and "Traceback" not in err
    assert main(["serve", "--data-dir", str(data), "--demo-size", "1"]) == 2
    assert "demo_size" in capsys.readouterr().err


# ---------------------------------------------------------------- reads that do not grow per endpoint


def reads(ws: LocalWorkspace) -> list[str]:
    """The SQL statements of the reads a digest makes of the workspace."""
    endpoints = ws.list_endpoints()
    with Statements(ws) as seen:
        ws.list_endpoints()
        ws.list_models(stage="Production")
        ws.list_models(stage="Staging")
        ws.list_jobs(status="Failed", limit=100)
        ws.list_compute()
        for start in range(0, len(endpoints), 50):
            ws.endpoints_metrics(endpoints[start:start + 50], 60)
    return seen


def test_a_digests_reads_take_as_many_statements_at_100_endpoints_as_at_10(tmp_path, clock):
    """Before: one transaction per endpoint's figures, each rescanning every model version for
    retraining runs to register (about 13 statements an endpoint). After: a constant per call, so
    100 endpoints cost only the second batch of figures more than 10 do."""
    with sized(tmp_path, clock, 10) as small, sized(tmp_path, clock, 100) as large:
        few, many = reads(small), reads(large)
        endpoints = small.list_endpoints()
        with Statements(small) as one_batch:
            small.endpoints_metrics(endpoints, 60)
    assert len(many) == len(few) + len(one_batch)
    assert not [s for s in many if "FROM models r" in s]          # no rescan of every version for retraining


def test_metrics_of_a_batch_are_one_transaction(tmp_path, clock):
    with sized(tmp_path, clock, 60) as ws:
        endpoints = ws.list_endpoints()[:50]
        with Statements(ws) as seen:
            ws.endpoints_metrics(endpoints, 60)
    assert sum(1 for s in seen if s.startswith("BEGIN")) == 1


def test_metrics_of_a_batch_equal_the_endpoints_one_by_one(tmp_path, clock):
    with sized(tmp_path, clock, 30) as ws:
        endpoints = ws.list_endpoints()
        batch = ws.endpoints_metrics(endpoints, 60)
        assert list(batch) == [e.name for e in endpoints]
        assert batch == {e.name: ws.endpoint_metrics(e.name, 60) for e in endpoints}
        assert ws.endpoints_metrics(list(reversed(endpoints[:3])), 15) == {
            e.name: ws.endpoint_metrics(e.name, 15) for e in reversed(endpoints[:3])}


def test_a_batch_naming_an_unknown_endpoint_is_not_found(tmp_path, clock):
    with sized(tmp_path, clock, 10) as ws:
        known = ws.list_endpoints()
        gone = known[0].__class__("no-such-api", "Succeeded")
        with pytest.raises(NotFound) as raised:
            ws.endpoints_metrics([known[1], gone, known[2]])
        assert raised.value.name == "no-such-api"


def test_endpoints_are_listed_as_one_by_one(tmp_path, clock):
    with sized(tmp_path, clock, 25) as ws:
        assert ws.list_endpoints() == [ws.get_endpoint(name) for name in ws.names("endpoint")]


def test_a_job_that_completes_still_registers_its_model_once(tmp_path, clock):
    """Settling now runs only when a job changed state: a retraining run that completes between two
    reads still registers its version (once), however many reads come after."""
    with sized(tmp_path, clock, 10) as ws:
        before = [m.version for m in ws.list_models("churn-model")]
        ws.trigger_retraining("churn-model")
        ws.list_endpoints()
        clock.advance(hours=2)                            # the pipeline ran its steps
        for _ in range(3):
            ws.endpoints_metrics(ws.list_endpoints())
        after = [m.version for m in ws.list_models("churn-model")]
    assert after == [str(int(before[0]) + 1), *before]


def test_a_settled_state_survives_reopening(tmp_path, clock):
    db = tmp_path / "reopen.db"
    with LocalWorkspace(db, clock=clock) as ws:
        ws.trigger_retraining("churn-model")
    clock.advance(hours=2)
    with LocalWorkspace(db, clock=clock) as ws:
        assert [m.version for m in ws.list_models("churn-model")][:1] == ["4"]
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM models WHERE name = 'churn-model'").fetchone()[0] == 4
