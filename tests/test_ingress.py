"""Event Grid and Azure Monitor webhooks over HTTP, into subscribed conversations as alert cards.

Every Event Grid and alert sample in tests/fixtures/azure (see its SOURCES.md) goes through the
real app: POST /api/events and /api/alerts, deduplication in storage, subscriptions matched,
cards through the outbox to a Bot Connector stand-in, buttons clicked through the CloudAdapter.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.azureml.events import BREACH_TAG, Malformed, parse_common_alert, parse_event_grid
from bot.app import create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.teams_client import ALICE, BOB, Person, TeamsStandIn, find_action

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
KEY = "k" * 8 + "0123456789abcdef0123456789abcdef"
CAROL = Person("29:1carol", "Carol Curious", "00000000-0000-0000-0000-00000000ca20")
CHANNEL = "19:ml-alerts@thread.tacv2"
WORKSPACE_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-ml/providers/"
                   "Microsoft.MachineLearningServices/workspaces/ml-prod")


def sample(path: str):
    return json.loads((FIXTURES / path).read_text())


def real_topic(events):
    """The docs' `{subscription-id}` placeholders replaced by a real workspace id."""
    events = copy.deepcopy(events)
    for event in events:
        event["topic"] = WORKSPACE_TOPIC
    return events


FIGURES = [{"feature": "amount", "metric": "normalized_wasserstein_distance", "value": 0.31, "threshold": 0.1},
           {"feature": "country", "metric": "jensen_shannon_distance", "value": 0.12, "threshold": 0.1},
           {"feature": "amount", "metric": "population_stability_index", "value": 0.42, "threshold": 0.25},
           {"feature": "age", "metric": "normalized_wasserstein_distance", "value": 0.02, "threshold": 0.1}]


AZURE_NAMES = {"normalized_wasserstein_distance": "NormalizedWassersteinDistance",
               "jensen_shannon_distance": "JensenShannonDistance",
               "population_stability_index": "PopulationStabilityIndex",
               "normalized_discounted_cumulative_gain": "NormalizedDiscountedCumulativeGain",
               "accuracy": "Accuracy", "mean_absolute_error": "MeanAbsoluteError"}


def breach_message(signal: str, figures) -> str:
    """The breach tag's text as Azure's evaluation component writes it: `_generate_error_message` in
    Azure/azureml-assets model_monitor_evaluate_metrics_threshold/evaluate_metrics_threshold.py (a
    Python list of Spark toJSON rows: metric_value, metric_name, threshold_value, then group when the
    signal has groups); the exact text is checked against Azure's own unit test in
    tests/test_azure_monitors.py."""
    rows = [json.dumps({"metric_value": f["value"], "metric_name": AZURE_NAMES.get(f["metric"], f["metric"]),
                        "threshold_value": f["threshold"], **({"group": f["feature"]} if f["feature"] else {})},
                       separators=(",", ":")) for f in figures]
    return (f"The signal '{signal}' has failed due to one or more features violating metric thresholds.\n"
            "The feature names and their corresponding computed metric values violating "
            f"the threshold are \n{rows}\n")


def breach(event_id: str = "breach-1", figures=FIGURES, *, signal: str = "data-drift"):
    """RunStatusChanged as Azure ML's monitoring sends it for a breaching run (the sample, tagged)."""
    [event] = real_topic(sample("eventgrid/ml/eventgrid_schema/RunStatusChanged.json"))
    event["id"] = event_id
    event["data"]["runStatus"] = "Completed"
    tag = breach_message(signal, figures) if isinstance(figures, list) else figures
    event["data"]["runTags"] = {BREACH_TAG: tag, "azureml.monitor_name": "fraud-monitor",
                                "azureml.signal_name": signal, "azureml.model_name": "fraud-model",
                                "azureml.endpoint_name": "fraud-api"}
    return [event]


def as_cloud_event(event):
    """The CloudEvents 1.0 form of an Event Grid schema event (Event Grid's documented mapping)."""
    return {"specversion": "1.0", "id": event["id"], "type": event["eventType"], "source": event["topic"],
            "subject": event["subject"], "time": event["eventTime"], "datacontenttype": "application/json",
            "data": event["data"]}


def fired_alert():
    body = sample("alerts/common_alert_schema/sample_alert_payload_metric.json")
    body["data"]["essentials"]["monitorCondition"] = "Fired"
    del body["data"]["essentials"]["resolvedDateTime"]
    body["data"]["alertContext"] = sample("alerts/common_alert_schema/alertContext_metric_static_threshold.json")[
        "alertContext"]
    return body


# ---------------------------------------------------------------- parsing every sample

def test_the_validation_sample_gives_its_code():
    batch = parse_event_grid(sample("eventgrid/validation/SubscriptionValidationEvent.json"))
    assert {"validationResponse": batch.validation_code} == sample(
        "eventgrid/validation/SubscriptionValidationResponse.json")


def test_run_status_changed_sample_is_a_failed_job():
    [event] = parse_event_grid(real_topic(sample("eventgrid/ml/eventgrid_schema/RunStatusChanged.json"))).events
    assert (event.kind, event.status, event.workspace, event.severity, event.title) == (
        "jobs", "fired", "ml-prod", "Sev2", "Run AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc_5 failed")
    assert event.links[0] == ("Open the run in the studio", "https://ml.azure.com/runs/AutoML_ad912b2d-6467-4f32-"
                              "a616-dbe4af6dd8fc_5?wsid=/subscriptions/00000000-0000-0000-0000-000000000001/"
                              "resourcegroups/rg-ml/workspaces/ml-prod")
    # the docs' own sample keeps its {placeholders}: no link rather than a broken one
    [raw] = parse_event_grid(sample("eventgrid/ml/eventgrid_schema/RunStatusChanged.json")).events
    assert (raw.workspace, raw.links) == ("{workspace-name}", ())


def test_run_status_changed_with_the_breach_tag_is_a_drift_alert_with_figures():
    [event] = parse_event_grid(breach()).events
    assert (event.kind, event.monitor, event.signal, event.model, event.endpoint, event.key) == (
        "drift", "fraud-monitor", "data-drift", "fraud-model", "fraud-api", "drift:ml-prod:fraud-monitor:data-drift")
    assert [(f.feature, f.metric, f.value, f.threshold) for f in event.figures] == [
        (f["feature"], f["metric"], f["value"], f["threshold"]) for f in FIGURES]


def test_a_breach_whose_figures_cannot_be_read_keeps_the_outcome():
    [event] = parse_event_grid(breach(figures="true")).events
    assert (event.kind, event.figures) == ("drift", ())
    assert "per-feature figures not readable" in event.summary


def test_model_registered_sample_in_both_schemas():
    [grid] = parse_event_grid(sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json")).events
    [cloud] = parse_event_grid([as_cloud_event(e) for e in real_topic(
        sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json"))]).events
    for event in (grid, cloud):
        assert (event.kind, event.model, event.title, event.status) == (
            "models", "sklearn_regression_model", "Model sklearn_regression_model:20 registered", "info")
    assert cloud.workspace == "ml-prod"


def test_common_alert_samples():
    resolved = parse_common_alert(sample("alerts/common_alert_schema/sample_alert_payload_metric.json"))
    fired = parse_common_alert(fired_alert())
    assert (resolved.kind, resolved.status, resolved.severity, resolved.title) == (
        "alerts", "resolved", "Sev3", "WCUS-R2-Gen2 on wcus-r2-gen2")
    assert fired.status == "fired" and fired.key == resolved.key
    assert [(f.metric, f.value, f.threshold) for f in resolved.figures] == [("Percentage CPU", 7.727, 25.0)]
    assert [(f.metric, f.value, f.threshold) for f in fired.figures] == [("Percentage CPU", 31.1105, 25.0)]
    assert ("Average Percentage CPU", "31.1105 (> 25 breaches)") in fired.facts


def test_a_log_alert_in_the_common_schema():
    body = fired_alert()
    body["data"]["essentials"]["signalType"] = "Log"
    body["data"]["alertContext"] = {"conditionType": "LogQueryCriteria", "condition": {
        "windowSize": "PT10M", "allOf": [{
            "searchQuery": "AmlOnlineEndpointConsoleLog | where Message has 'error'", "metricMeasureColumn": None,
            "targetResourceTypes": "['Microsoft.MachineLearningServices/workspaces']", "operator": "GreaterThan",
            "threshold": "10", "timeAggregation": "Count", "dimensions": [], "metricValue": 42,
            "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1},
            "linkToFilteredSearchResultsUI": "https://portal.azure.com#@tenant/blade/Microsoft_Azure_Monitoring_Logs"}]}}
    event = parse_common_alert(body)
    assert (event.type, event.figures[0].value, event.links[-1][0]) == (
        "AzureMonitor.Log", 42.0, "Open the query results")


@pytest.mark.parametrize("body,reason", [
    ([], "no events"),
    ([1, 2], "JSON object"),
    ({"hello": "world"}, "not an Event Grid delivery"),
])
def test_malformed_event_grid_batches_name_the_problem(body, reason):
    with pytest.raises(Malformed, match=reason):
        parse_event_grid(body)


# Issue #16: these used to refuse the whole delivery (422), so Event Grid retried it for 24 hours and
# then dropped it, good events included. Each is now skipped with its reason; the rest is accepted.
@pytest.mark.parametrize("bad,reason", [
    ({"id": "1", "eventType": "x"}, "'subject'"),
    ({"specversion": "0.3", "id": "1", "type": "t", "source": "s"}, "specversion 1.0"),
    ({"id": "1", "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "subject": "",
      "eventTime": "2026-01-01T00:00:00Z", "data": "oops"}, "'data' must be an object"),
    ({"id": "1", "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "subject": "",
      "eventTime": "2026-01-01T00:00:00Z", "data": {"modelVersion": "3"}}, "needs data.modelName"),
])
def test_an_unusable_event_is_skipped_with_its_reason_and_the_rest_kept(bad, reason):
    good = real_topic(sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json"))[0]
    batch = parse_event_grid([bad, good])
    assert [e.title for e in batch.events] == ["Model sklearn_regression_model:20 registered"]
    [(skipped_id, why)] = batch.skipped
    assert skipped_id == "1" and reason in why and why.startswith("event 0: ")


# ---------------------------------------------------------------- over HTTP

@pytest.fixture
def alert_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                         approvers=BOB.aad_object_id, webhook_key=KEY)


@pytest.fixture
async def teams(aiohttp_server, alert_settings):
    server = await aiohttp_server(create_app(alert_settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def hook(teams, path: str, body=None, *, key: str | None = KEY, header: bool = False, raw: bytes | None = None,
               method: str = "POST", headers: dict | None = None, content_type: str = "application/json"):
    url = teams.bot_url.replace("/api/messages", path)
    sent_headers = {"Content-Type": content_type, **(headers or {})}
    if key is not None and header:
        sent_headers["x-functions-key"] = key
    elif key is not None:
        url += f"?code={key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with teams.session.request(method, url, data=data, headers=sent_headers) as response:
        text = await response.text()
        answer = json.loads(text) if text and response.content_type == "application/json" else text
        return response.status, answer, dict(response.headers)


def cards_in(teams, conversation: str = CHANNEL):
    return [s for s in teams.connector.sent if s.card and conversation in s.path and "alert #" in json.dumps(s.card)]


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def test_the_event_grid_validation_handshake(teams):
    status, answer, _ = await hook(teams, "/api/events", sample("eventgrid/validation/SubscriptionValidationEvent.json"))
    assert (status, answer) == (200, sample("eventgrid/validation/SubscriptionValidationResponse.json"))


async def test_the_cloudevents_options_handshake(teams):
    status, _, headers = await hook(teams, "/api/events", method="OPTIONS",
                                    headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert (status, headers["WebHook-Allowed-Origin"]) == (200, "eventgrid.azure.net")
    assert (await hook(teams, "/api/events", method="OPTIONS", key=None,
                       headers={"WebHook-Request-Origin": "eventgrid.azure.net"}))[0] == 401
    assert (await hook(teams, "/api/events", method="OPTIONS"))[0] == 400


async def test_webhooks_need_the_key_in_the_query_or_the_header(teams):
    body = sample("eventgrid/validation/SubscriptionValidationEvent.json")
    alert = fired_alert()
    for path, payload in (("/api/events", body), ("/api/alerts", alert)):
        status, answer, _ = await hook(teams, path, payload, key=None)
        assert (status, answer) == (401, {"error": "missing key: pass ?code=KEY or the x-functions-key header"})
        assert (await hook(teams, path, payload, key=KEY[:-1] + "x"))[:2] == (401, {"error": "wrong key"})
        assert (await hook(teams, path, payload, key=KEY[:-1] + "x", header=True))[0] == 401
        assert (await hook(teams, path, payload, key=KEY, header=True))[0] == 200


@pytest.mark.parametrize("path", ["/api/events", "/api/alerts"])
async def test_bad_bodies_get_4xx_with_a_reason_never_500(teams, path):
    assert (await hook(teams, path, raw=b"not json"))[:2] == (400, {"error": "the body is not JSON"})
    assert (await hook(teams, path, raw=b""))[:2] == (400, {"error": "the body is empty"})
    status, answer, _ = await hook(teams, path, raw=b"[" * 100_000 + b"]" * 100_000)
    assert (status, answer) == (400, {"error": "the JSON is nested deeper than 32 levels"})
    status, answer, _ = await hook(teams, path, raw=b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert (status, answer) == (413, {"error": "body larger than 1048576 bytes"})
    assert (await hook(teams, path, raw=b'\xff\xfe'))[0] == 400
    assert (await hook(teams, path, raw=b'{"a": NaN}'))[0] == 400
    status, answer, _ = await hook(teams, path, {"hello": "world"})
    assert status == 422 and answer["error"]


EVENT_GRID_415 = {"error": "expected Content-Type: application/json, application/cloudevents+json or "
                           "application/cloudevents-batch+json"}
AZURE_MONITOR_415 = {"error": "expected Content-Type: application/json"}


@pytest.mark.parametrize("path,content_type,answer", [
    ("/api/events", "application/json", None),                                   # Event Grid schema
    ("/api/events", "application/json; charset=utf-8", None),
    ("/api/events", "application/cloudevents+json; charset=utf-8", None),        # CloudEvents, one event
    ("/api/events", "application/cloudevents-batch+json; charset=utf-8", None),  # CloudEvents, batched
    ("/api/events", "text/plain", EVENT_GRID_415),
    ("/api/events", "text/plain; x=application/json", EVENT_GRID_415),
    ("/api/events", "application/x-www-form-urlencoded", EVENT_GRID_415),
    ("/api/events", "application/octet-stream", EVENT_GRID_415),                 # what no Content-Type means
    ("/api/alerts", "application/json", None),
    ("/api/alerts", "Application/JSON; charset=utf-8", None),
    ("/api/alerts", "application/cloudevents+json", AZURE_MONITOR_415),
    ("/api/alerts", "text/plain", AZURE_MONITOR_415),
    ("/api/alerts", "application/jsonp", AZURE_MONITOR_415),
])
async def test_webhooks_take_the_content_types_azure_sends_and_415_the_rest(teams, path, content_type, answer):
    [subscribed] = await teams.say("subscribe drift" if path == "/api/events" else "subscribe alerts")
    assert subscribed.text.startswith("Subscribed this chat")
    body = fired_alert() if path == "/api/alerts" else [as_cloud_event(event) for event in breach()] \
        if "cloudevents" in content_type else breach()
    status, got, _ = await hook(teams, path, body, content_type=content_type)
    if answer is None:
        assert (status, got) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 1})
    else:
        assert (status, got) == (415, answer)
        assert (await hook(teams, path, body, key=None, content_type=content_type))[0] == 401   # the key first


async def test_a_bad_alert_condition_is_422_naming_the_field(teams):
    body = fired_alert()
    body["data"]["essentials"]["monitorCondition"] = "Exploded"
    status, answer, _ = await hook(teams, "/api/alerts", body)
    assert (status, answer) == (422, {"error": "data.essentials.monitorCondition must be Fired or Resolved, "
                                               "not 'Exploded'"})


@pytest.mark.parametrize("field", ["alertTargetIDs", "configurationItems"])
@pytest.mark.parametrize("value,kind", [(5, "a number"), (1.5, "a number"), (True, "a boolean"),
                                        ("wcus-r2-gen2", "a string"), ({"0": "wcus-r2-gen2"}, "an object")])
async def test_an_alert_list_field_of_another_type_is_422_naming_it(teams, field, value, kind):
    body = fired_alert()
    body["data"]["essentials"][field] = value
    status, answer, _ = await hook(teams, "/api/alerts", body)
    assert (status, answer) == (422, {"error": f"data.essentials.{field} must be a list of strings, not {kind}"})
    body["data"]["essentials"][field] = None                 # null is "none given", as a missing field is
    assert (await hook(teams, "/api/alerts", body))[:2] == (200, {"accepted": 1, "duplicates": 0, "ignored": 0,
                                                                  "cards": 0})


@pytest.mark.parametrize("path,value", [
    (("condition", "allOf"), 5), (("condition", "allOf"), "x"), (("condition", "allOf"), True),
    (("condition", "allOf", 0, "dimensions"), 7), (("condition", "allOf", 0, "dimensions"), {"name": "x"}),
    (("condition", "allOf", 0, "metricValue"), 10 ** 400), (("condition", "allOf", 0, "threshold"), -10 ** 400),
], ids=["allOf=5", "allOf=x", "allOf=true", "dimensions=7", "dimensions={}", "metricValue=1e400 int",
        "threshold=-1e400 int"])
async def test_an_alert_context_of_unexpected_types_is_read_as_far_as_it_goes(teams, path, value):
    body = fired_alert()
    node = body["data"]["alertContext"]
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    status, answer, _ = await hook(teams, "/api/alerts", body)
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 0})
    event = parse_common_alert(body)
    assert (event.title, event.status) == ("WCUS-R2-Gen2 on wcus-r2-gen2", "fired")


def test_a_breach_figure_too_large_for_a_float_is_left_out():
    figures = [{"feature": "amount", "metric": "psi", "value": 10 ** 400, "threshold": 0.1},
               {"feature": "age", "metric": "psi", "value": 0.3, "threshold": 10 ** 400}]
    [event] = parse_event_grid(breach(figures=figures)).events
    assert [(f.feature, f.value, f.threshold) for f in event.figures] == [("age", 0.3, None)]


async def test_a_drift_breach_becomes_one_card_per_subscribed_conversation_and_updates_in_place(teams):
    # typed in a thread of the channel: the subscription (and every alert) belongs to the channel itself
    [answer] = await teams.say("subscribe drift --workspace ml-prod", mention=True, kind="channel",
                               conversation=CHANNEL + ";messageid=1732600000000")
    assert answer.text == ("Subscribed this channel: #1 drift (workspace ml-prod). `subscriptions` lists them; "
                           "`unsubscribe 1` stops it.")
    [mine] = await teams.say("subscribe drift --model fraud-model")                    # Alice's personal chat
    assert mine.text.startswith("Subscribed this chat: #2 drift (model fraud-model)")
    [other] = await teams.say("subscribe drift --model churn-model", user=BOB)          # does not match

    status, answer, _ = await hook(teams, "/api/events", breach("breach-1"))
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 2})
    await wait_until(lambda: len(cards_in(teams)) == 1 and len(cards_in(teams, "a:personal-29:1alice")) == 1)
    [posted] = cards_in(teams)
    assert posted.conversation_id == CHANNEL         # the channel itself, not the thread `subscribe` was typed in
    card = posted.card
    assert_valid_card(card)
    words = card["fallbackText"]
    assert "Monitor: fraud-monitor" in words and "Signal: data-drift" in words
    # per feature, worst first: amount's PSI is 0.42/0.25 = 1.68x, its NWD 3.1x, country's JSD 1.2x
    rows = [line for line in words.splitlines() if line.startswith(("amount", "country", "age"))]
    # with each figure's level in words (issue #22 item 4); Azure's first firing has no earlier figures to compare
    assert rows == ["amount  NWD  0.31 ⚠  > 0.1  far above threshold", "amount  PSI (significant)  0.42 ⚠  > 0.25  "
                    "past threshold", "country  JSD  0.12 ⚠  > 0.1  slightly above threshold",
                    "age  NWD  0.02  > 0.1  within threshold"]
    assert "JSD = jensen_shannon_distance: Jensen-Shannon distance, log base 2" in words
    assert "PSI bands: < 0.1 none, 0.1 to 0.25 moderate, > 0.25 significant." in words
    # no Rollback: the bot has recorded no traffic change of fraud-api, so there is nothing to roll back
    assert [(a["title"], a["verb"], a["data"]["args"]) for a in card["actions"] if a["type"] == "Action.Execute"] == [
        ("Retrain", "retrain", ["fraud-model"]), ("Acknowledge", "acknowledge", ["1"]), ("Resolve", "resolve", ["1"])]
    assert [a["data"]["args"] for a in card["actions"][-2]["card"]["actions"]] == [
        ["1", "1h"], ["1", "4h"], ["1", "24h"]]
    assert card["actions"][0]["type"] == "Action.OpenUrl" and card["actions"][0]["url"].startswith("https://ml.azure.com/")
    assert not [s for s in teams.connector.sent if "personal-29:1bob" in s.path and s.card and "alert #" in
                json.dumps(s.card)]

    # Event Grid redelivers the same event: nothing new
    status, answer, _ = await hook(teams, "/api/events", breach("breach-1"))
    assert answer == {"accepted": 1 - 1, "duplicates": 1, "ignored": 0, "cards": 0}

    # the same monitor breaches again (a new run): each card is edited, nothing new is posted
    first_activity = f"activity-{teams.connector.sent.index(posted) + 1}"
    before = len(teams.connector.sent)
    worse = [dict(f, value=f["value"] * 2) for f in FIGURES]
    status, answer, _ = await hook(teams, "/api/events", breach("breach-2", worse))
    assert answer["cards"] == 2
    await wait_until(lambda: len(teams.connector.sent) >= before + 2)
    updates = teams.connector.sent[before:]
    assert {s.method for s in updates} == {"PUT"}
    channel_update = next(s for s in updates if CHANNEL in s.path)
    assert channel_update.path.endswith(first_activity)
    assert "fired 2 times" in channel_update.card["fallbackText"]
    assert "Trend over the last 2 firings: ▁█" in channel_update.card["fallbackText"]

    # Acknowledge through the card: recorded, audited, every copy edited
    status, body = await teams.click(channel_update.card, "Acknowledge", conversation=CHANNEL, kind="channel")
    assert status == 200 and "Acknowledged: by Alice Analyst" in body["value"]["fallbackText"]
    await wait_until(lambda: any(s.method == "PUT" and "Acknowledged: by Alice Analyst" in (s.card or {}).get(
        "fallbackText", "") and "personal-29:1alice" in s.path for s in teams.connector.sent))
    [trail] = await teams.say("audit --action alert", conversation=CHANNEL, kind="channel")
    assert "Alice Analyst acknowledged" in trail.card["fallbackText"]
    # Bob clicks Acknowledge on a copy that still shows the button: Alice keeps it, no card is edited
    acknowledged_at = re.search(r"Acknowledged: by Alice Analyst, \d{4}-\d\d-\d\d (\d\d:\d\d) UTC",
                                body["value"]["fallbackText"]).group(1)
    edits = len([s for s in teams.connector.sent if s.method == "PUT"])
    status, body = await teams.click(channel_update.card, "Acknowledge", user=BOB, conversation=CHANNEL,
                                     kind="channel")
    assert (status, body["value"]) == (200, f"Already acknowledged by Alice Analyst at {acknowledged_at} UTC.")
    assert teams.connector.sent[-1].text == f"Already acknowledged by Alice Analyst at {acknowledged_at} UTC."
    await asyncio.sleep(0.2)
    assert len([s for s in teams.connector.sent if s.method == "PUT"]) == edits
    [trail] = await teams.say("audit --action alert", conversation=CHANNEL, kind="channel")
    assert "Bob Builder" not in trail.card["fallbackText"]

    # a viewer cannot snooze; an operator can
    status, body = await teams.click(channel_update.card, "24 h", user=CAROL, conversation=CHANNEL, kind="channel")
    assert "`snooze` needs the Operator role" in json.dumps(body)
    status, body = await teams.click(channel_update.card, "24 h", conversation=CHANNEL, kind="channel")
    assert "Snoozed: until" in body["value"]["fallbackText"]
    assert [a["title"] for a in body["value"]["actions"] if a["type"] == "Action.Execute"] == [
        "Retrain", "Unsnooze", "Resolve"]


async def test_an_azure_monitor_alert_fires_then_resolves_on_the_same_card(teams):
    await teams.say("subscribe alerts --severity Sev3", conversation=CHANNEL, kind="channel")
    await teams.say("subscribe alerts --severity Sev1", user=ALICE)          # Sev3 is not severe enough here
    status, answer, _ = await hook(teams, "/api/alerts", fired_alert())
    assert (status, answer["cards"]) == (200, 1)
    await wait_until(lambda: len(cards_in(teams)) == 1)
    [fired] = cards_in(teams)
    assert_valid_card(fired.card)
    assert fired.card["body"][0]["text"] == "🟠 WCUS-R2-Gen2 on wcus-r2-gen2"
    assert "Average Percentage CPU: 31.1105 (> 25 breaches)" in fired.card["fallbackText"]

    status, answer, _ = await hook(teams, "/api/alerts",
                                   sample("alerts/common_alert_schema/sample_alert_payload_metric.json"))
    assert (status, answer["cards"]) == (200, 1)
    await wait_until(lambda: any(s.method == "PUT" for s in teams.connector.sent))
    [resolved] = [s for s in teams.connector.sent if s.method == "PUT"]
    assert resolved.path.endswith(f"activity-{teams.connector.sent.index(fired) + 1}")
    assert resolved.card["body"][0]["text"] == "✅ Resolved: WCUS-R2-Gen2 on wcus-r2-gen2"
    assert_valid_card(resolved.card)
    assert not [a for a in resolved.card.get("actions", []) if a["type"] == "Action.Execute"]


async def test_a_cloudevents_batch_handles_known_types_and_ignores_others(teams):
    await teams.say("subscribe models", conversation=CHANNEL, kind="channel")
    registered = [as_cloud_event(e) for e in real_topic(sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json"))]
    other = dict(registered[0], id="other-1", type="Microsoft.Storage.BlobCreated", data={"url": "x"})
    status, answer, _ = await hook(teams, "/api/events", [*registered, other],
                                   content_type="application/cloudevents-batch+json")
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 1, "cards": 1})
    await wait_until(lambda: len(cards_in(teams)) == 1)
    assert "Model sklearn_regression_model:20 registered" in cards_in(teams)[0].card["fallbackText"]
    # a single CloudEvent (application/cloudevents+json) is accepted too, and deduplicated by id
    status, answer, _ = await hook(teams, "/api/events", registered[0], content_type="application/cloudevents+json")
    assert answer["duplicates"] == 1


async def test_every_event_grid_sample_is_accepted_and_deduplicated_by_id(teams):
    status, answer, _ = await hook(teams, "/api/events", sample("eventgrid/ml/eventgrid_schema/RunStatusChanged.json"))
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 0})
    # The docs give both samples the same event id, so the second is (rightly) a duplicate.
    status, answer, _ = await hook(teams, "/api/events", sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json"))
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 1, "ignored": 0, "cards": 0})


async def test_deduplication_survives_a_restart(aiohttp_server, alert_settings):
    first = await aiohttp_server(create_app(alert_settings, reset_demo=True))
    async with TeamsStandIn(str(first.make_url("/api/messages"))) as teams:
        assert (await hook(teams, "/api/events", breach("once")))[1]["accepted"] == 1
    await first.close()
    second = await aiohttp_server(create_app(alert_settings))
    async with TeamsStandIn(str(second.make_url("/api/messages"))) as teams:
        assert (await hook(teams, "/api/events", breach("once")))[1] == {
            "accepted": 0, "duplicates": 1, "ignored": 0, "cards": 0}


async def test_without_a_key_the_webhooks_are_off(aiohttp_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = await aiohttp_server(create_app(load_settings(data_dir=tmp_path / "data", host="127.0.0.1"),
                                             reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        status, answer, _ = await hook(teams, "/api/events", breach())
        assert (status, answer) == (503, {"error": "webhooks are off: set MLOPSBOT_WEBHOOK_KEY"})


async def test_a_channel_subscribed_to_approvals_gets_each_request_and_its_outcome(teams):
    [answer] = await teams.say("subscribe approvals --workspace ml-prod", conversation=CHANNEL, kind="channel")
    assert answer.text.startswith("Subscribed this channel: #1 approvals (workspace ml-prod)")
    [asked] = await teams.say("traffic fraud-api blue=0 green=100 --reason 'green is better'")   # Alice, personal

    def copy_in_channel():
        return [s for s in teams.connector.sent if CHANNEL in s.path and s.card
                and "Approval request #1" in s.card.get("fallbackText", "")]
    await wait_until(lambda: len(copy_in_channel()) == 1)
    [posted] = copy_in_channel()
    status, _ = await teams.click(posted.card, "Approve", user=BOB, conversation=CHANNEL, kind="channel")
    assert status == 200
    posted_id = f"activity-{teams.connector.sent.index(posted) + 1}"
    await wait_until(lambda: any(s.method == "PUT" and s.path.endswith(posted_id)
                                 and "Approved and done" in s.card.get("fallbackText", "") for s in teams.connector.sent))


@pytest.mark.parametrize("key", ["short", "x" * 31, "a" * 32 + "&code=2", "é" * 40])
def test_an_unusable_webhook_key_refuses_to_start(key, tmp_path, monkeypatch):
    from bot.settings import SettingsError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="MLOPSBOT_WEBHOOK_KEY must be at least 32 URL-safe ASCII characters"):
        load_settings(data_dir=tmp_path / "data", host="127.0.0.1", webhook_key=key)


def test_the_webhook_key_is_never_in_the_logged_settings(alert_settings):
    assert KEY not in repr(alert_settings) and KEY not in json.dumps(alert_settings.public_summary(), default=str)


async def test_pruning_forgets_old_dedupe_keys_and_settled_items_only(tmp_path):
    from adapters.storage import inbox, open_storage, outbox
    from bot.ingress import prune_forever

    now = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    storage = open_storage(f"sqlite://{tmp_path}/bot.db")
    await storage.open()
    await storage.run_transaction(lambda tx: inbox.first_time(tx, "eventgrid:old", now - timedelta(days=8)))
    await storage.run_transaction(lambda tx: inbox.first_time(tx, "eventgrid:new", now - timedelta(days=1)))
    await storage.run_transaction(lambda tx: outbox.enqueue(tx, "c", {"text": "old"}, dedupe_key="old",
                                                            now=now - timedelta(days=40)))
    task = asyncio.get_running_loop().create_task(prune_forever(storage, lambda: now, every=3600))
    await asyncio.sleep(0.2)
    task.cancel()
    assert [await storage.run_transaction(lambda tx: inbox.first_time(tx, key, now)) for key in
            ("eventgrid:old", "eventgrid:new")] == [True, False]
    assert [i.dedupe_key for i in await storage.run_transaction(lambda tx: outbox.find_items(tx))] == ["old"]  # pending
    await storage.close()


def test_an_azure_monitor_alert_on_an_online_endpoint_offers_rollback():
    from commands.alerts.alert_card import AlertState, alert_card
    body = fired_alert()
    body["data"]["essentials"]["alertTargetIDs"] = [WORKSPACE_TOPIC + "/onlineEndpoints/fraud-api"]
    event = parse_common_alert(body)
    assert (event.workspace, event.endpoint) == ("ml-prod", "fraud-api")
    moment = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    card = alert_card(event, AlertState(3, "fired", 1, moment), moment, rollback_to=7)
    assert find_action(card, "Rollback")["data"] == {"args": ["fraud-api", "--to", "7", "--workspace", "ml-prod"]}
    nothing_to_undo = alert_card(event, AlertState(3, "fired", 1, moment), moment)
    assert [a["title"] for a in nothing_to_undo["actions"]] == ["Open the alert in the Azure portal", "Acknowledge",
                                                               "Snooze", "Resolve"]


async def test_a_failed_run_reaches_a_jobs_subscription(teams):
    await teams.say("subscribe jobs --workspace ml-prod", conversation=CHANNEL, kind="channel")
    status, answer, _ = await hook(teams, "/api/events",
                                   real_topic(sample("eventgrid/ml/eventgrid_schema/RunStatusChanged.json")))
    assert (status, answer["cards"]) == (200, 1)
    await wait_until(lambda: len(cards_in(teams)) == 1)
    [posted] = cards_in(teams)
    assert_valid_card(posted.card)
    words = posted.card["fallbackText"]
    assert words.splitlines()[0] == "🟠 Run AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc_5 failed"
    assert "Severity: Sev2 (warning)" in words and "Experiment automl-local-regression" in words
    assert [a["title"] for a in posted.card["actions"]] == [
        "Open the run in the studio", "Model monitoring in the studio", "Acknowledge", "Snooze", "Resolve"]


def test_the_access_log_never_shows_the_key_in_the_query():
    import logging

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from bot.ingress import AccessLogWithoutSecrets

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.access")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    AccessLogWithoutSecrets(logger, "").log(make_mocked_request("POST", f"/api/events?code={KEY}"),
                                            web.json_response({"accepted": 1}), 0.0042)
    assert len(lines) == 1 and KEY not in lines[0] and '"POST /api/events" 200' in lines[0]


async def test_the_readme_demo_breach_becomes_a_card(teams):
    await teams.say("subscribe drift", conversation=CHANNEL, kind="channel")
    demo = json.loads((Path(__file__).parent.parent / "docs" / "examples" / "drift-breach.eventgrid.json").read_text())
    status, answer, _ = await hook(teams, "/api/events", demo)
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 1})
    await wait_until(lambda: len(cards_in(teams)) == 1)
    card = cards_in(teams)[0].card
    # Issue #16: the example is now what Azure sends (camelCase data, the breach tag's real text) and
    # no longer carries the model and endpoint tags the old hand-written one invented: no Retrain.
    assert [(a["title"], a["data"]["args"]) for a in card["actions"]
            if a["type"] == "Action.Execute"] == [("Acknowledge", ["1"]), ("Resolve", ["1"])]
    words = card["fallbackText"]
    assert "Monitor: fraud-model-monitor" in words and "Signal: data-drift" in words
    assert "amount  PSI (significant)  0.42 ⚠  > 0.25" in words


async def test_subscriptions_list_with_a_stop_button_over_http(teams):
    await teams.say("subscribe models", conversation=CHANNEL, kind="channel")
    [listed] = await teams.say("subscriptions", conversation=CHANNEL, kind="channel")
    assert_valid_card(listed.card)
    status, body = await teams.click(listed.card, "Stop", conversation=CHANNEL, kind="channel")
    assert (status, teams.connector.sent[-1].text) == (200, "Removed #1 models (everything).")   # a new message
    status, body = await teams.click(listed.card, "Stop", user=CAROL, conversation=CHANNEL, kind="channel")
    assert "Managing subscriptions needs the Operator role" in teams.connector.sent[-1].text


def test_model_deployed_and_run_completed_in_the_documented_shapes():
    # Hand-written from the Event Grid docs' data field tables (no published sample of these two).
    deployed = {"topic": WORKSPACE_TOPIC, "subject": "endpoints/fraud-api", "id": "d-1",
                "eventType": "Microsoft.MachineLearningServices.ModelDeployed", "eventTime": "2026-11-26T09:00:00Z",
                "data": {"ServiceName": "fraud-api", "ServiceComputeType": "Managed",
                         "ModelIds": "fraud-model:3,fraud-features:1", "ServiceTags": {}, "ServiceProperties": {}},
                "dataVersion": "", "metadataVersion": "1"}
    completed = {"topic": WORKSPACE_TOPIC, "subject": "experiments/e/runs/train-7", "id": "c-1",
                 "eventType": "Microsoft.MachineLearningServices.RunCompleted", "eventTime": "2026-11-26T09:00:00Z",
                 "data": {"experimentId": "e", "experimentName": "fraud-training", "runId": "train-7",
                          "runType": None, "runTags": {}, "runProperties": {}},
                 "dataVersion": "", "metadataVersion": "1"}
    first, second = parse_event_grid([deployed, completed]).events
    assert (first.kind, first.endpoint, first.model, first.title, first.summary) == (
        "models", "fraud-api", "fraud-model", "Deployed to fraud-api", "Models: fraud-model:3, fraud-features:1")
    assert (second.kind, second.status, second.title, second.severity) == ("jobs", "info", "Run train-7 completed", "")


@pytest.mark.parametrize("text,deep", [
    ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),     # brackets inside a string don't count
    ("[" * 32 + "]" * 32, False),
    ("[" * 33 + "]" * 33, True),
    ('["\\\\"' + ', [' * 40 + "]" * 40 + "]", True),                     # an escaped backslash ends the string
    ('["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]', False),         # an escaped quote does not
])
def test_nesting_depth_is_measured_outside_strings(text, deep):
    from adapters.azureml.events import loads
    if deep:
        with pytest.raises(ValueError, match="nested deeper than 32"):
            loads(text.encode())
    else:
        loads(text.encode())


async def test_a_large_valid_batch_is_accepted(teams):
    registered = real_topic(sample("eventgrid/ml/eventgrid_schema/ModelRegistered.json"))[0]
    batch = [dict(registered, id=f"bulk-{n}") for n in range(400)]
    assert len(json.dumps(batch)) > 64 * 1024
    status, answer, _ = await hook(teams, "/api/events", batch)
    assert (status, answer) == (200, {"accepted": 400, "duplicates": 0, "ignored": 0, "cards": 0})


def test_a_log_alert_v1_in_the_common_schema():
    # alertContext of a Log Analytics alert (V1), hand-written from the common schema doc's field list
    body = fired_alert()
    body["data"]["essentials"]["signalType"] = "Log"
    body["data"]["alertContext"] = {
        "SearchQuery": "AmlOnlineEndpointTrafficLog | where ResponseCode >= 500", "SearchIntervalStartTimeUtc":
        "2026-11-26T08:55:00Z", "SearchIntervalEndtimeUtc": "2026-11-26T09:00:00Z", "ResultCount": 17,
        "LinkToSearchResultsUI": "https://portal.azure.com#@tenant/blade/Microsoft_OperationsManagementSuite_Workspace",
        "SeverityDescription": "Warning", "Threshold": 5, "Operator": "Greater Than", "IncludedSearchResults": "True"}
    event = parse_common_alert(body)
    assert ("Results", "17 (Greater Than 5 breaches)") in event.facts
    assert [(f.value, f.threshold) for f in event.figures] == [(17.0, 5.0)]
    assert event.links[-1][0] == "Open the query results"


# ---------------------------------------------------------------- issue #16: what Azure really sends

CAPTURED = ("ModelRegistered", "ModelDeployed", "RunCompleted", "RunStatusChanged")


def captured(name: str):
    """An Event Grid payload captured from a live workspace (SOURCES.md: the Azure SDKs' tests)."""
    return sample(f"eventgrid/ml/captured/{name}.json")


def test_the_captured_camelcase_payloads_are_read():
    batch = parse_event_grid([event for name in CAPTURED for event in captured(name)])
    assert batch.skipped == () and batch.ignored == ()
    registered, deployed, completed, changed = batch.events
    assert (registered.kind, registered.model, registered.title, registered.summary, registered.workspace) == (
        "models", "sklearn_regression_model", "Model sklearn_regression_model:3 registered",
        "Tags: area=diabetes, type=regression", "jenns-canary")
    assert (deployed.endpoint, deployed.model, deployed.summary, deployed.facts) == (
        "aciservice1", "my_first_model", "Models: my_first_model:1, my_second_model:1", (("Compute", "ACI"),))
    assert (completed.kind, completed.status, completed.title) == (
        "jobs", "info", "Run AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc completed")
    assert (changed.kind, changed.title, changed.facts[0]) == (
        "jobs", "Run AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc running", ("Status", "Running"))
    # the same in CloudEvents 1.0
    cloud = parse_event_grid([as_cloud_event(e) for name in CAPTURED for e in captured(name)])
    assert [e.title for e in cloud.events] == [e.title for e in batch.events]


def captured_breach(event_id: str, *messages: str, tags_key: str = "runTags"):
    """The captured RunStatusChanged of a monitor's evaluation step, with Azure's breach tag."""
    [event] = captured("RunStatusChanged")
    event["id"] = event_id
    event["data"]["runStatus"] = "Completed"
    event["data"].pop("runTags")
    event["data"][tags_key] = {BREACH_TAG: "".join(messages), "azureml.monitor_name": "fraud-monitor"}
    return event


def test_the_breach_tag_azure_writes_gives_the_signal_and_its_figures():
    from tests.replay import azure_breach_message
    drift = azure_breach_message("data-drift", [("amount", "NormalizedWassersteinDistance", 0.31, 0.1),
                                                ("country", "JensenShannonDistance", 0.12, 0.1)])
    quality = azure_breach_message("data-quality", [("age", "NullValueRate", 0.2, 0.01)])
    [one] = parse_event_grid([captured_breach("b-1", drift, tags_key="RunTags")]).events
    assert (one.id, one.kind, one.monitor, one.signal, one.key) == (
        "b-1", "drift", "fraud-monitor", "data-drift", "drift:jenns-canary:fraud-monitor:data-drift")
    assert [(f.feature, f.metric, f.value, f.threshold) for f in one.figures] == [
        ("amount", "normalized_wasserstein_distance", 0.31, 0.1), ("country", "jensen_shannon_distance", 0.12, 0.1)]
    # two signals named in one tag: one alert each, each with its own key and figures
    first, second = parse_event_grid([captured_breach("b-2", drift, quality)]).events
    assert [(e.id, e.signal, e.key, len(e.figures)) for e in (first, second)] == [
        ("b-2:data-drift", "data-drift", "drift:jenns-canary:fraud-monitor:data-drift", 2),
        ("b-2:data-quality", "data-quality", "drift:jenns-canary:fraud-monitor:data-quality", 1)]
    # lower-is-worse figures are shown as breaching below their threshold
    from commands.alerts.alert_card import breached
    ndcg = azure_breach_message("attribution", [("", "NormalizedDiscountedCumulativeGain", 0.62, 0.8)])
    [event] = parse_event_grid([captured_breach("b-3", ndcg)]).events
    assert [(f.feature, f.metric, breached(f)) for f in event.figures] == [
        ("", "normalized_discounted_cumulative_gain", True)]


async def test_each_signal_of_a_monitor_is_its_own_alert_over_http(teams):
    from tests.replay import azure_breach_message
    await teams.say("subscribe drift", conversation=CHANNEL, kind="channel")
    drift = azure_breach_message("data-drift", [("amount", "NormalizedWassersteinDistance", 0.31, 0.1)])
    accuracy = azure_breach_message("model-performance", [("", "Accuracy", 0.71, 0.85)])
    status, answer, _ = await hook(teams, "/api/events", [captured_breach("s-1", drift),
                                                          captured_breach("s-2", accuracy)])
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "ignored": 0, "cards": 2})
    await wait_until(lambda: len(cards_in(teams)) == 2)
    words = [c.card["fallbackText"] for c in cards_in(teams)]
    assert "Signal: data-drift" in words[0] and "alert #1" in words[0]
    assert "Signal: model-performance" in words[1] and "alert #2" in words[1]
    assert "whole signal  accuracy  0.71 ⚠  < 0.85" in words[1]


async def test_one_unusable_event_never_blocks_the_others_of_its_delivery(teams, caplog):
    await teams.say("subscribe models", conversation=CHANNEL, kind="channel")
    [good] = captured("ModelRegistered")
    bad = dict(good, id="bad-1", data={"modelVersion": "4"})               # no model name
    broken = {"id": "bad-2", "eventType": "Microsoft.MachineLearningServices.ModelDeployed"}   # no subject/time
    with caplog.at_level("INFO", logger="bot.ingress"):
        status, answer, _ = await hook(teams, "/api/events", [bad, good, broken])
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0, "cards": 1,
                                      "skipped": ["bad-1", "bad-2"]})
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.ingress"]
    assert any("skipped event bad-1" in line and "needs data.modelName" in line for line in logged)
    assert any("skipped event bad-2" in line and "'subject'" in line for line in logged)
    await wait_until(lambda: len(cards_in(teams)) == 1)
    assert "Model sklearn_regression_model:3 registered" in cards_in(teams)[0].card["fallbackText"]


async def test_a_misspelt_specversion_is_acknowledged_and_ignored(teams, caplog):
    [event] = captured("ModelRegistered")
    cloud = as_cloud_event(event)
    cloud["specVersion"] = cloud.pop("specversion")
    with caplog.at_level("INFO", logger="bot.ingress"):
        status, answer, _ = await hook(teams, "/api/events", [cloud], content_type="application/cloudevents-batch+json")
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "ignored": 1, "cards": 0})
    assert any("ignored event 3b73ee51-bbf4-480d-9112-cfc23b41bfdb" in r.getMessage() and "'specVersion' is misspelt"
               in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["actual_cost_budget", "aip_budget_notification"])
async def test_a_budget_alert_is_acknowledged_and_ignored(teams, caplog, name):
    await teams.say("subscribe alerts", conversation=CHANNEL, kind="channel")
    with caplog.at_level("INFO", logger="bot.ingress"):
        status, answer, _ = await hook(teams, "/api/alerts", sample(f"alerts/budget/{name}.json"))
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "ignored": 1, "cards": 0})
    assert any("azure-monitor: ignored" in r.getMessage() and "budget" in r.getMessage() for r in caplog.records)


def test_the_readme_example_is_the_tag_azure_writes():
    from adapters.azureml.monitoring import parse_breach_tag
    demo = json.loads((Path(__file__).parent.parent / "docs" / "examples" / "drift-breach.eventgrid.json").read_text())
    [breached] = parse_breach_tag(demo[0]["data"]["runTags"][BREACH_TAG])
    assert breached.signal == "data-drift" and len(breached.rows) == 3


# ---------------------------------------------------------------- issue #16: alert identity per dimension

def deployment_alert(deployment: str, condition: str = "Fired"):
    """An online endpoint's metric alert split by deployment (the common schema sample, its condition's
    dimension set to the deployment as Azure reports a rule over several time series)."""
    body = fired_alert() if condition == "Fired" else \
        sample("alerts/common_alert_schema/sample_alert_payload_metric.json")
    essentials = body["data"]["essentials"]
    essentials["alertId"] = essentials["alertId"].rsplit("/", 1)[0] + "/" + {
        "blue": "b1b1b1b1-0000-4000-8000-000000000001", "green": "92ee0000-0000-4000-8000-000000000002"}[deployment]
    essentials["alertTargetIDs"] = [WORKSPACE_TOPIC + "/onlineEndpoints/fraud-api"]
    essentials["configurationItems"] = ["fraud-api"]
    [criterion] = body["data"]["alertContext"]["condition"]["allOf"]
    criterion["dimensions"] = [{"name": "deployment", "value": deployment}]
    return body


def test_alerts_split_by_dimension_have_their_own_identity():
    blue, green = parse_common_alert(deployment_alert("blue")), parse_common_alert(deployment_alert("green"))
    assert blue.key != green.key and blue.key.endswith(":deployment=blue")
    assert (blue.deployment, green.deployment) == ("blue", "green")
    assert parse_common_alert(deployment_alert("blue", "Resolved")).key == blue.key


async def test_resolving_blue_leaves_green_open(teams):
    await teams.say("subscribe alerts", conversation=CHANNEL, kind="channel")
    for body in (deployment_alert("blue"), deployment_alert("green")):
        status, answer, _ = await hook(teams, "/api/alerts", body)
        assert (status, answer["cards"]) == (200, 1)
    await wait_until(lambda: len(cards_in(teams)) == 2)
    blue_card, green_card = cards_in(teams)
    assert "alert #1" in blue_card.card["fallbackText"] and "alert #2" in green_card.card["fallbackText"]
    assert "Dimensions: deployment=blue" in blue_card.card["fallbackText"]
    assert "Dimensions: deployment=green" in green_card.card["fallbackText"]
    status, answer, _ = await hook(teams, "/api/alerts", deployment_alert("blue", "Resolved"))
    assert (status, answer["cards"]) == (200, 1)
    await wait_until(lambda: any(s.method == "PUT" for s in teams.connector.sent))
    edits = [s for s in teams.connector.sent if s.method == "PUT"]
    assert [s.path.rsplit("/", 1)[-1] for s in edits] == [f"activity-{teams.connector.sent.index(blue_card) + 1}"]
    assert edits[0].card["body"][0]["text"].startswith("✅ Resolved:")
    # green is still open: acknowledging it shows it firing, not resolved
    [acknowledged] = await teams.say("acknowledge 2", conversation=CHANNEL, kind="channel")
    words = acknowledged.card["fallbackText"]
    assert "Status: Firing" in words and "Dimensions: deployment=green" in words and "Resolved" not in words
