"""Model monitoring: the local workspace's monitors, the `drift` and `monitors` commands and cards."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from adapters.local import monitors as local_monitors
from adapters.drift import compare
from adapters.local.workspace import LocalWorkspace
from adapters.service import InvalidRequest, NotFound
from commands.alerts.monitoring import drift_card, monitors_card, sparkline, window_days
from commands.base.ui import MAX_CARD_BYTES
from tests.card_schema import assert_valid_card
from tests.conftest import Clock

EPOCH = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Clock:
    return Clock(EPOCH)


@pytest.fixture
def ws(tmp_path, clock):
    workspace = LocalWorkspace(tmp_path / "workspace.db", clock=clock)
    yield workspace
    workspace.close()


def figure(report, signal: str, feature: str, metric: str):
    [found] = [f for s in report.signals if s.name == signal for f in s.figures
               if (f.feature, f.metric) == (feature, metric)]
    return found


FRAUD = next(spec for spec in local_monitors.DEMO_MONITORS if spec.name == "fraud-model-monitor")


# ---------------------------------------------------------------- the local monitors


def test_each_run_gives_exactly_the_drift_engines_figures_on_the_same_samples(ws):
    report = ws.drift_report("fraud-model", 7)
    day = (report.latest.started_at.date() - timedelta(days=1) - EPOCH.date()).days
    assert day == -1                                   # the 03:00 run compares yesterday's traffic
    direct = compare(local_monitors.reference_data(FRAUD), local_monitors.production_data(FRAUD, day),
                     categorical=["merchant_category", "country"])
    engine = {f.name: f for f in direct.features}
    compared = 0
    for signal in report.signals:
        if signal.kind in local_monitors.LABELLED_KINDS:      # judged on labelled days: see the test below
            continue
        configured = next(s for s in FRAUD.signals if s.name == signal.name)
        assert {f.feature for f in signal.figures} == set(configured.features)
        for fig in signal.figures:
            expected = engine[fig.feature].metrics[fig.metric]
            assert fig.value == expected.value
            assert fig.data_type == engine[fig.feature].kind
            limit = next(t.threshold for t in configured.thresholds
                         if t.metric == fig.metric and t.data_type in ("", fig.data_type))
            assert fig.threshold == limit
            assert fig.breached == (fig.value > limit)
            assert fig.history[-1] == fig.value
            compared += 1
    assert compared == 5 * 2 + 1 * 2 + 5 * 2            # drift: NWD|JSD + PSI; prediction: NWD + PSI; quality: 2


def test_runs_follow_the_schedule_and_history_covers_the_window(ws):
    report = ws.drift_report("fraud-model", 7)
    assert report.latest.started_at == datetime(2026, 3, 10, 3, 0, tzinfo=timezone.utc)
    assert [r.started_at.day for r in report.runs] == [4, 5, 6, 7, 8, 9, 10]
    assert len(figure(report, "data-drift", "merchant_category", "jensen_shannon_distance").history) == 7
    assert len(ws.drift_report("fraud-model", 3).runs) == 3


def test_the_demo_model_drifts_and_the_breach_shows_once_the_clock_advances(ws, clock):
    before = ws.drift_report("fraud-model", 7)
    amount = figure(before, "data-drift", "transaction_amount", "normalized_wasserstein_distance")
    merchants = figure(before, "data-drift", "merchant_category", "jensen_shannon_distance")
    assert amount.value < 0.1 and not amount.breached                  # amounts have not moved yet
    assert merchants.breached and merchants.history == tuple(sorted(merchants.history))   # a steady climb
    assert before.latest.breached_signals == ("data-drift", "prediction-drift")

    clock.advance(days=3)
    after = ws.drift_report("fraud-model", 7)
    amount = figure(after, "data-drift", "transaction_amount", "normalized_wasserstein_distance")
    assert amount.value > 0.3 and amount.breached
    assert amount.history[-3:] == tuple(sorted(amount.history[-3:]))
    assert after.latest.started_at == datetime(2026, 3, 13, 3, 0, tzinfo=timezone.utc)
    assert after.latest.breached is True
    quiet = {m.name: m.last_run.breached for m in ws.list_monitors()}
    assert quiet == {"churn-model-monitor": False, "credit-risk-monitor": False, "fraud-model-monitor": True}


def test_runs_are_stored_and_not_computed_twice(tmp_path, clock):
    path = tmp_path / "workspace.db"
    with LocalWorkspace(path, clock=clock) as first:
        report = first.drift_report("fraud-api", 7)
        first.list_monitors()
    with LocalWorkspace(path, clock=clock) as again:
        assert again.drift_report("fraud-api", 7) == report
        count = again._conn.execute("SELECT COUNT(*) FROM monitor_runs").fetchone()[0]
        again.list_monitors()
        assert again._conn.execute("SELECT COUNT(*) FROM monitor_runs").fetchone()[0] == count


def test_a_long_pause_catches_up_only_the_last_runs(ws, clock):
    ws.list_monitors()
    clock.advance(days=200)
    report = ws.drift_report("churn-model", 90)
    assert len(report.runs) == local_monitors.MAX_CATCH_UP
    assert report.latest.started_at == datetime(2026, 9, 26, 3, 0, tzinfo=timezone.utc)


def test_reset_starts_the_demo_again(ws, clock):
    clock.advance(days=5)
    ws.reset(demo=True)
    report = ws.drift_report("fraud-model", 7)
    assert figure(report, "data-drift", "transaction_amount", "normalized_wasserstein_distance").breached is False


def test_a_workspace_without_the_demo_has_no_monitors(tmp_path, clock):
    with LocalWorkspace(tmp_path / "empty.db", clock=clock, demo=False) as empty:
        assert empty.list_monitors() == []
        with pytest.raises(NotFound, match="This workspace has no monitors"):
            empty.drift_report("fraud-model", 7)


@pytest.mark.parametrize("target", ["fraud-model", "fraud-model:3", "fraud-api", "fraud-api/blue",
                                    "fraud-model-monitor", "FRAUD-API"])
def test_a_monitor_is_found_by_model_endpoint_or_name(ws, target):
    assert ws.drift_report(target, 7).monitor.name == "fraud-model-monitor"


def test_unknown_targets_and_windows_are_refused_clearly(ws):
    with pytest.raises(NotFound, match=r"No monitor watches 'frud-model'\. Did you mean `fraud-model`\?"):
        ws.drift_report("frud-model", 7)
    for bad in (0, 91, True):
        with pytest.raises(InvalidRequest, match="from 1 to 90 days"):
            ws.drift_report("fraud-model", bad)


def test_due_runs_are_daily_at_three():
    after = datetime(2026, 3, 1, 3, 0, tzinfo=timezone.utc)
    assert local_monitors.due_runs(after, after) == []
    assert local_monitors.due_runs(after, datetime(2026, 3, 3, 2, 59, tzinfo=timezone.utc)) == [
        datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)]


# ---------------------------------------------------------------- cards


def test_sparkline_scales_to_the_threshold_and_marks_missing_runs():
    assert sparkline([0.0, 0.05, 0.1], threshold=0.1) == "▁▅█"
    assert sparkline([0.01, 0.02], threshold=1.0) == "▁▁"       # noise far under the threshold stays low
    assert sparkline([0.2, None, 0.4], threshold=0.1) == "▅·█"
    assert sparkline([None, None]) == "··"
    assert sparkline([]) == ""


@pytest.mark.parametrize("typed,days", [("7d", 7), ("14", 14), ("30 days", 30), ("90d", 90)])
def test_window_words(typed, days):
    assert window_days(typed) == days


def test_drift_card_is_valid_small_and_worst_first(ws, clock):
    clock.advance(days=3)
    card = drift_card(ws.drift_report("fraud-model", 14), workspace="Workspace ml-prod (prod)")
    assert_valid_card(card)
    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES
    text = card["fallbackText"]
    drift_rows = text.split("Data drift (data-drift): breached\n")[1].split("\nPrediction drift")[0].splitlines()
    assert [row.split(" ")[0] for row in drift_rows[:2]] == ["transaction_amount", "merchant_category"]
    assert len(drift_rows) == 5
    quiet = [float(row.split(" ≤ ")[0].rsplit(" ", 1)[1]) for row in drift_rows[2:]]   # NWD/JSD, all 0.1
    assert quiet == sorted(quiet, reverse=True)
    assert "NWD 0.372 > 0.1" in drift_rows[0] and "PSI" in drift_rows[0]


def test_monitors_card_lists_signals_thresholds_and_outcomes(ws):
    card = monitors_card(ws.list_monitors(), workspace="Workspace ml-prod (prod)")
    assert_valid_card(card)
    text = card["fallbackText"]
    assert "3 monitors, 1 breached at the last run." in text
    assert "Data drift `data-drift`: NWD > 0.1 (numerical), PSI > 0.25, JSD > 0.1 (categorical)" in text
    assert "Data quality `data-quality`: null > 0.01, OOB > 0.02" in text
    assert "threshold breached: data-drift, prediction-drift" in text


# ---------------------------------------------------------------- commands


async def test_drift_command_in_chat(viewer_chat):
    reply = await viewer_chat("drift fraud-model --window 7d")
    assert_valid_card(reply.card)
    assert reply.card["body"][0]["text"] == "Drift of fraud-model on fraud-api/blue"
    for words in ("Latest run: threshold breached: data-drift, prediction-drift", "merchant_category (categorical)",
                  "`normalized_wasserstein_distance`: Wasserstein-1 distance", "log base 2",
                  "bands: < 0.1 none, 0.1 to 0.25 moderate, > 0.25 significant"):
        assert words in reply.text


async def test_drift_command_answers_bad_input_with_usage_and_suggestions(viewer_chat):
    reply = await viewer_chat("drift frud-model")
    assert "No monitor watches 'frud-model'. Did you mean `fraud-model`?" in reply.text
    reply = await viewer_chat("drift fraud-model --window 2w")
    assert "The window is a number of days such as 7d" in reply.text
    assert "Usage: `drift ‹model/endpoint› [--window DAYS] [--workspace NAME]`" in reply.text


async def test_monitors_command_and_its_drift_button(viewer_chat):
    reply = await viewer_chat("monitors")
    assert "fraud-model-monitor" in reply.text and "churn-model-monitor" in reply.text
    drift = await viewer_chat.click("drift", "churn-model-monitor")
    assert drift.card["body"][0]["text"] == "Drift of churn-model on churn-api/blue"
    assert "Latest run: no threshold breached" in drift.text


async def test_drift_over_http_through_the_cloud_adapter(teams):
    [reply] = await teams.say("drift fraud-api")
    assert_valid_card(reply.card)
    assert reply.card["body"][0]["text"] == "Drift of fraud-model on fraud-api/blue"
    status, body = await teams.click(reply.card, "All monitors")
    assert status == 200
    posted = teams.connector.sent[-1].card          # navigation posts its answer as a new message
    assert posted["body"][0]["text"] == "Model monitors"
    assert_valid_card(posted)
    [listed] = await teams.say("monitors")
    assert "3 monitors, 1 breached at the last run." in listed.card["fallbackText"]


def test_disabling_the_monitors_schedule_pauses_it(ws, clock):
    ws.list_monitors()
    ws.disable_schedule("fraud-model-monitor").wait(None)
    clock.advance(days=2)
    paused = {m.name: m for m in ws.list_monitors()}
    assert paused["fraud-model-monitor"].enabled is False
    assert paused["fraud-model-monitor"].last_run.started_at.day == 10        # no run while paused
    assert paused["churn-model-monitor"].last_run.started_at.day == 12
    with pytest.raises(InvalidRequest, match="Name a model"):
        ws.drift_report("  ", 7)


def test_a_workspace_file_from_before_monitors_gets_them_when_it_holds_the_demo(tmp_path, clock):
    import sqlite3

    path = tmp_path / "old.db"
    LocalWorkspace(path, clock=clock).close()
    LocalWorkspace(tmp_path / "bare.db", clock=clock, demo=False).close()
    for name in (path, tmp_path / "bare.db"):
        with sqlite3.connect(name) as conn:         # as a file written by the previous version
            for table in local_monitors.TABLES:
                conn.execute(f"DROP TABLE {table}")
    with LocalWorkspace(path, clock=clock) as upgraded:
        assert [m.name for m in upgraded.list_monitors()] == [
            "churn-model-monitor", "credit-risk-monitor", "fraud-model-monitor"]
    with LocalWorkspace(tmp_path / "bare.db", clock=clock) as bare:   # no demo in it: no demo monitors either
        assert bare.list_monitors() == []
