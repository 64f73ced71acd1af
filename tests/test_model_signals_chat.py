"""Feature attribution drift and model performance in chat (issue #22 items 3 and 4): the local
workspace computes them from data with delayed labels; `drift`, `monitors`, alert cards and the digest
show them worst first, with the level in words and the change since the last run; and `drift` answers
over HTTP through the real CloudAdapter. The clock is moved by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.local import monitors as local_monitors
from adapters.drift import attribution_drift, model_performance
from adapters.drift.definitions import level_words
from adapters.local.workspace import LocalWorkspace
from adapters.storage import ConversationRecord, outbox
from bot.app import create_app
from bot.settings import load_settings
from bot.scheduler import Scheduler
from commands.alerts.monitoring import drift_card, monitors_card
from commands.base.ui import as_text
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.teams_client import ALICE, TeamsStandIn

START = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)     # the demo is seeded then (its epoch)
FRAUD = next(spec for spec in local_monitors.DEMO_MONITORS if spec.name == "fraud-model-monitor")
CHANNEL = "19:ml-alerts@thread.tacv2"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def ws(tmp_path, clock):
    workspace = LocalWorkspace(tmp_path / "workspace.db", clock=clock)
    yield workspace
    workspace.close()


def signal(report, name: str):
    return next(s for s in report.signals if s.name == name)


def test_performance_and_attribution_are_the_engines_figures_on_the_day_whose_labels_arrived(ws):
    report = ws.drift_report("fraud-model", 7)
    run_day = report.latest.started_at.date()
    labelled_day = (run_day - timedelta(days=1 + FRAUD.label_delay_days) - START.date()).days
    assert (run_day.isoformat(), FRAUD.label_delay_days, labelled_day) == ("2026-11-26", 2, -3)
    data = local_monitors.production_data(FRAUD, labelled_day)
    truth = local_monitors.labels(FRAUD, data, labelled_day + 0.5)
    expected = model_performance(truth, data["fraud_score"], task="classification", positive_label="1",
                                 decision_threshold=FRAUD.decision_threshold)
    performance = signal(report, "model-performance")
    assert [f.metric for f in performance.figures] == ["accuracy", "precision", "recall", "f1_score", "auc"]
    for figure in performance.figures:
        assert (figure.feature, figure.data_type) == ("", "")
        assert figure.value == expected.metrics[figure.metric].value
        assert figure.breached == (figure.value < figure.threshold)
        assert len(figure.history) == 7 and figure.history[-1] == figure.value
    attribution = attribution_drift(local_monitors.reference_data(FRAUD), data, [f.name for f in FRAUD.features],
                                    local_monitors.reference_labels(FRAUD).astype(float), truth.astype(float),
                                    categorical=FRAUD.categorical)
    [ndcg, *importances] = signal(report, "feature-attribution-drift").figures
    assert (ndcg.metric, ndcg.value, ndcg.threshold) == ("normalized_discounted_cumulative_gain",
                                                         attribution.metric.value, 0.9)
    # beside it, the importances it compared (as Azure's component logs them), by current rank
    assert [(f.feature, f.metric, f.value, f.threshold, f.breached) for f in importances] == [
        (name, metric, value[name], None, False) for name in attribution.ranking("current")
        for metric, value in (("baseline_feature_importance", attribution.reference),
                              ("production_feature_importance", attribution.current))]
    assert "on the traffic of 2026-11-23, whose labels (is_fraud) arrive 2 days after scoring" in report.figures_source
    # labels are delayed: a run computes the same labelled day whenever it is read
    again = local_monitors.labelled_figures(FRAUD, FRAUD.signals[-1], labelled_day)
    assert [f["value"] for f in again] == [f.value for f in performance.figures]


def test_the_demo_fraud_model_loses_performance_then_its_importance_ranking(ws, clock):
    quiet = ws.drift_report("fraud-model", 7)
    assert signal(quiet, "model-performance").breached is False
    assert signal(quiet, "feature-attribution-drift").breached is False
    clock.advance(days=6)                  # 2 Dec: the labels of 29 Nov, once fraud's mechanism has moved
    moved = ws.drift_report("fraud-model", 7)
    assert "model-performance" in moved.latest.breached_signals
    assert "feature-attribution-drift" not in moved.latest.breached_signals
    clock.advance(days=2)                  # 4 Dec: the ranking of importances has changed too
    late = ws.drift_report("fraud-model", 7)
    assert {"model-performance", "feature-attribution-drift"} <= set(late.latest.breached_signals)
    [ndcg, *_] = signal(late, "feature-attribution-drift").figures
    assert ndcg.value < 0.9 and ndcg.breached
    # churn and credit stay within every threshold
    for model in ("churn-model", "credit-risk"):
        assert ws.drift_report(model, 7).latest.breached is False

    card = drift_card(late, workspace="Workspace ml-prod (prod)")
    assert_valid_card(card)
    words = as_text(card)
    assert "Model performance (model-performance): breached" in words
    assert "Feature attribution drift (feature-attribution-drift): breached" in words
    performance = signal(late, "model-performance").figures
    worst = max((f for f in performance if f.breached), key=lambda f: f.threshold / f.value)
    first_row = words.split("Model performance (model-performance): breached\n", 1)[1].splitlines()[0]
    change = f"{worst.value - worst.history[-2]:+.3f} since the last run"
    assert first_row.startswith(f"{worst.metric if worst.metric != 'f1_score' else 'F1'} "
                                f"{level_words(worst.metric, worst.value, worst.threshold)} · {change}")
    assert f"NDCG {ndcg.value:.3g} < 0.9" in words
    assert "Importance, reference → current: country 0.05 → 0.30 (rank 3 → 1), " in words
    for definition in ("sklearn.metrics.ndcg_score with the reference importances as the true relevance",
                       "|Pearson correlation| with the target", "sklearn.metrics.roc_auc_score",
                       "Level: slightly / clearly / far past the threshold"):
        assert definition in words

    listed = as_text(monitors_card(ws.list_monitors(), workspace="Workspace ml-prod (prod)"))
    assert "Feature attribution drift `feature-attribution-drift`: NDCG < 0.9 · all features" in listed
    assert ("Model performance `model-performance`: accuracy < 0.85, precision < 0.6, recall < 0.45, F1 < 0.55, "
            "AUC < 0.85") in listed
    assert "feature-attribution-drift, model-performance" in listed


async def subscribe(store, chat: Chat, conversation: str, words: str) -> None:
    await store.save_conversation(ConversationRecord(conversation, "channel", {"conversation": {"id": conversation}},
                                                     "t1", "", "", "", START))
    assert (await chat(words, conversation=conversation)).text.startswith("Subscribed this chat")


async def test_performance_and_attribution_breaches_alert_and_read_like_drift(clocked, store, clock):
    chat = Chat(clocked, store, clock=clock)
    loop = Scheduler(store, clocked, chat.gate, owner="replica-1", clock=clock)
    await subscribe(store, chat, "c-all", "subscribe drift")
    clock.advance(days=8)                                   # the runs of 27 Nov to 4 Dec
    await loop.run_once()
    items = await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    cards = {}
    for item in items:
        text = item.payload["text"]
        kind = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Signal: "))
        cards[kind] = item.payload["card"]                  # the latest card of each signal's alert
    assert {"model-performance", "feature-attribution-drift"} <= set(cards)
    performance = cards["model-performance"]
    assert_valid_card(performance)
    words = performance["fallbackText"].splitlines()
    assert "Per metric, worst first" in words
    start = words.index("Feature  Metric  Value  Threshold  Level, change") + 1
    rows = [line for line in words[start:start + 5] if line.startswith("whole signal")]
    report = next(iter(clocked)).service.drift_report("fraud-model", 7)
    figures = sorted(signal(report, "model-performance").figures, key=lambda f: -(f.threshold / f.value))
    assert rows[0].startswith(f"whole signal  {'F1' if figures[0].metric == 'f1_score' else figures[0].metric}  "
                              f"{figures[0].value:.4g} ⚠  < {figures[0].threshold:g}  "
                              f"{level_words(figures[0].metric, figures[0].value, figures[0].threshold)}, "
                              f"{figures[0].value - figures[0].history[-2]:+.4g} since the last run")
    attribution = as_text(cards["feature-attribution-drift"])
    assert "whole signal  NDCG" in attribution and "below threshold" in attribution
    assert "sklearn.metrics.ndcg_score" in attribution

    # the digest names them beside drift, worst first, with level and change
    digest = as_text((await chat("digest now", conversation="c-all")).card)
    line = next(text for text in digest.splitlines() if text.startswith("fraud-model:3"))
    assert "⚠ drift detected, feature attribution and model performance past threshold" in line
    assert "model normalized_discounted_cumulative_gain" in line and "below threshold" in line
    assert "since the last run" in line
    assert "normalized_discounted_cumulative_gain: normalized discounted cumulative gain of the current" in digest


# ---------------------------------------------------------------- over HTTP, through the real CloudAdapter


@pytest.fixture
async def app(aiohttp_server, tmp_path, monkeypatch, clock, clocked):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id)
    return await aiohttp_server(create_app(settings, workspaces=clocked, clock=clock))


async def test_drift_and_monitors_show_performance_and_attribution_over_http(app, clock):
    clock.advance(days=8)
    async with TeamsStandIn(str(app.make_url("/api/messages"))) as teams:
        [sent] = await teams.say("drift fraud-model")
        assert_valid_card(sent.card)
        words = as_text(sent.card)
        assert "Latest run: threshold breached: " in words and "model-performance" in words
        assert "Model performance (model-performance): breached" in words
        assert "Feature attribution drift (feature-attribution-drift): breached" in words
        assert "below threshold" in words and "since the last run" in words
        [listed] = await teams.say("monitors")
        assert_valid_card(listed.card)
        assert "Model performance `model-performance`: accuracy < 0.85" in as_text(listed.card)


def test_a_demo_monitor_stored_before_labels_gains_the_two_signals_on_reopening(tmp_path, clock):
    import json
    import sqlite3
    from dataclasses import asdict

    path = tmp_path / "old.db"
    LocalWorkspace(path, clock=clock).close()
    old = asdict(FRAUD)
    old["signals"] = old["signals"][:3]                 # data drift, prediction drift, data quality
    for key in ("label", "positive_label", "decision_threshold", "label_delay_days"):
        del old[key]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE monitors SET definition = ? WHERE name = ?", (json.dumps(old), FRAUD.name))
    reopened = LocalWorkspace(path, clock=clock)
    try:
        monitor = next(m for m in reopened.list_monitors() if m.name == FRAUD.name)
        assert [s.kind for s in monitor.signals][-2:] == ["feature_attribution_drift", "model_performance"]
    finally:
        reopened.close()


# ---------------------------------------------------------------- worst first, whichever way a figure breaches


def test_the_digest_ranks_breached_figures_by_how_far_past_their_threshold_whichever_way():
    from adapters.service import DriftReport, FeatureFigure, Monitor, SignalReport
    from commands.digests.digest import _worst_features

    report = DriftReport(Monitor("m"), 7, None, signals=(
        SignalReport("data-drift", "data_drift", True, (
            FeatureFigure("amount", "normalized_wasserstein_distance", 0.12, 0.1, True, "numerical", (0.09, 0.12)),)),
        SignalReport("model-performance", "model_performance", True, (
            FeatureFigure("", "accuracy", 0.5, 0.85, True, "", (0.8, 0.5)),
            FeatureFigure("", "recall", 0.84, 0.85, True, "", (0.84,)))),
    ))
    # accuracy is 0.85/0.5 = 1.7 times short of its threshold, NWD 1.2 times over it, recall 1.01 times short
    assert _worst_features(report) == [
        "model accuracy 0.5 < 0.85 (far below threshold, -0.300 since the last run)",
        "amount normalized_wasserstein_distance 0.12 > 0.1 (slightly above threshold, +0.030 since the last run)",
        "model recall 0.84 < 0.85 (slightly below threshold, first run)"]


async def test_an_azure_alert_firing_again_shows_each_figures_change_since_its_last_firing(store):
    from adapters.azureml.events import FIRED, Event, Figure
    from commands.alerts.alerts import publish

    def breach(accuracy: float, ndcg: float, event_id: str) -> Event:
        return Event(id=event_id, kind="drift", type="Microsoft.MachineLearningServices.RunStatusChanged",
                     key="drift:ws:fraud-monitor:model-performance", status=FIRED, title="Drift", source="eventgrid",
                     workspace="ws", monitor="fraud-monitor", signal="model-performance",
                     figures=(Figure("", "accuracy", accuracy, 0.85),
                              Figure("", "normalized_discounted_cumulative_gain", ndcg, 0.9)))

    await store.save_conversation(ConversationRecord(CHANNEL, "channel", {"conversation": {"id": CHANNEL}},
                                                     "t1", "", "", "", START))
    from adapters.storage import subscriptions
    from adapters.storage.subscriptions import NewSubscription

    await store.run_transaction(lambda tx: subscriptions.add(tx, NewSubscription(CHANNEL, "drift", tenant_id="t1"),
                                                             START))
    await store.run_transaction(lambda tx: publish(tx, breach(0.8, 0.7, "e1"), START))
    await store.run_transaction(lambda tx: publish(tx, breach(0.71, 0.62, "e2"), START + timedelta(days=1)))
    items = await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    first, second = (item.payload["card"]["fallbackText"].splitlines() for item in items)
    assert "Per metric, worst first" in second
    assert "whole signal  NDCG  0.62 ⚠  < 0.9  far below threshold, -0.08 since the last run" in second
    assert "whole signal  accuracy  0.71 ⚠  < 0.85  clearly below threshold, -0.09 since the last run" in second
    assert "whole signal  NDCG  0.7 ⚠  < 0.9  far below threshold" in first       # nothing earlier to compare


def test_a_model_past_its_performance_thresholds_is_not_called_drifting():
    from commands.digests.digest_card import Digest, ModelHealth, attention, digest_card

    performance = ModelHealth("churn-model", "2", "Production", "breached",
                              ("model recall 0.4 < 0.55 (far below threshold, -0.100 since the last run)",),
                              breached_kinds=("model_performance",), metrics=("recall",))
    drifting = ModelHealth("fraud-model", "3", "Production", "breached", breached_kinds=("data_drift",))
    unknown = ModelHealth("credit-risk", "2", "Production", "breached")        # Azure's tag named no kind
    digest = Digest("ml-prod", "prod", START, None, models=(performance, drifting, unknown))
    assert attention(digest) == ["credit-risk, fraud-model drifting", "churn-model past its monitor thresholds"]
    words = as_text(digest_card(digest))
    assert "churn-model:2 (Production) — ⚠ model performance past threshold · worst: model recall 0.4" in words
    assert "recall: tp / (tp + fn)" in words


def test_a_long_window_with_every_signal_still_fits_a_teams_card(ws, clock):
    import json

    from commands.base.ui import MAX_CARD_BYTES

    for _ in range(6):                      # sixty days of runs
        clock.advance(days=10)
        ws.list_monitors()
    card = drift_card(ws.drift_report("fraud-model", 90), workspace="Workspace ml-prod (prod)")
    assert_valid_card(card)
    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES
    words = as_text(card)
    assert "Trend: one block per run over the last 7 runs, oldest first" in words          # cut to fit, and said
    assert "Model performance (model-performance): breached" in words
