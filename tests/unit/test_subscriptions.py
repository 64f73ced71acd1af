"""Subscriptions without a chat or a database: parsing the words, matching events, the alert card (the
rest is tests/test_subscriptions.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.azureml.events import FIRED, INFO, RESOLVED, Event, Figure
from adapters.storage.subscriptions import Subscription
from commands.alerts.alert_card import AlertState, alert_card, sparkline, worst_first
from commands.alerts.alerts import matches
from commands.changes.policy import PolicyError, parse_policy
from tests.card_schema import assert_valid_card

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def drift_event(**overrides) -> Event:
    values = dict(id="e1", kind="drift", type="local", key="drift:ml-prod:fraud-monitor:data-drift", status=FIRED,
                  title="Drift on fraud-model", workspace="ml-prod", model="fraud-model", endpoint="fraud-api",
                  monitor="fraud-monitor", signal="data-drift",
                  figures=(Figure("amount", "normalized_wasserstein_distance", 0.3, 0.1),))
    values.update(overrides)
    return Event(**values)


@pytest.mark.parametrize("policy,message", [
    ('[subscriptions]\nrole = "boss"\n', "[subscriptions] role must be viewer, operator, approver or admin"),
    ('[subscriptions]\nrole = "viewer"\nwho = 1\n', "unknown key 'who' in [subscriptions]"),
    ('subscriptions = 3\n', "write [subscriptions] as a table"),
])
def test_bad_subscription_policies_name_the_problem(policy, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(policy)


def sub(**filters) -> Subscription:
    return Subscription(conversation_id="c", kind=filters.pop("kind", "drift"), **filters)


@pytest.mark.parametrize("subscription,event,expected", [
    (sub(), drift_event(), True),
    (sub(kind="alerts"), drift_event(), False),
    (sub(workspace="ML-Prod"), drift_event(), True),
    (sub(workspace="ml-dev"), drift_event(), False),
    (sub(model="fraud-model", endpoint="fraud-api"), drift_event(), True),
    (sub(model="fraud-model", endpoint="other-api"), drift_event(), False),
    (sub(kind="alerts", severity="Sev2"), drift_event(kind="alerts", severity="Sev1"), True),
    (sub(kind="alerts", severity="Sev2"), drift_event(kind="alerts", severity="Sev2"), True),
    (sub(kind="alerts", severity="Sev2"), drift_event(kind="alerts", severity="Sev3"), False),
    (sub(severity="Sev0"), drift_event(severity=""), True),     # events without a severity are not filtered by it
])
def test_subscription_filters(subscription, event, expected):
    assert matches(subscription, event) is expected


STATE = AlertState(id=7, status=FIRED, fired_count=3, first_at=NOW, history=(0.1, 0.2, 0.4))


@pytest.mark.parametrize("event,state", [
    (drift_event(), STATE),
    (drift_event(figures=()), STATE),
    (drift_event(status=RESOLVED), AlertState(7, RESOLVED, 3, NOW)),
    (drift_event(kind="models", status=INFO, figures=(), model="m", endpoint=""), AlertState(8, INFO, 0, NOW)),
    (drift_event(figures=tuple(Figure(f"f{n}", "population_stability_index", n / 10, 0.25) for n in range(30))),
     STATE),
])
def test_alert_cards_are_valid_adaptive_cards(event, state):
    assert_valid_card(alert_card(event, state, NOW))


def test_the_card_names_its_metrics_and_orders_features_worst_first():
    figures = (Figure("age", "two_sample_kolmogorov_smirnov_test", 0.04, 0.05),
               Figure("amount", "population_stability_index", 0.2, 0.25),
               Figure("country", "pearsons_chi_squared_test", 0.0001, 0.05))
    assert [f.feature for f in worst_first(figures)] == ["country", "age", "amount"]
    words = alert_card(drift_event(figures=figures), STATE, NOW)["fallbackText"]
    assert "country  chi2 p  0.0001 ⚠  < 0.05" in words
    assert "amount  PSI (moderate)  0.2  > 0.25" in words
    assert "KS p = two_sample_kolmogorov_smirnov_test: p-value of the two-sided two-sample" in words
    assert "Trend over the last 3 firings: ▁▃█" in words
    assert "Status: Firing (fired 3 times since 2026-11-26 09:00 UTC)" in words


def test_sparkline():
    assert sparkline([]) == "" and sparkline([1.0]) == ""
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([2, 2, 2]) == "▄▄▄"
