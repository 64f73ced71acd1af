"""Operators can see the bot (issue 21, item 6): spans per turn and per workspace call, metrics for
turn and call latency, shared reads, the outbox backlog and waiting approvals, over OpenTelemetry's
in-memory exporters; and nothing of OpenTelemetry when it is off."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.storage import open_storage, outbox
from bot.app import create_app
from bot.settings import load_settings
from bot.telemetry import Telemetry
from tests.teams_client import TeamsStandIn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(tracer_provider, meter_provider), spans, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    found: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_turns_and_workspace_calls_are_traced_and_measured(aiohttp_server, settings, otel):
    telemetry, spans, reader = otel
    server = await aiohttp_server(create_app(settings, reset_demo=True, telemetry=telemetry))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("endpoint fraud-api")
        await teams.say("endpoint fraud-api")            # within the reuse window: read from the kept result
    finished = spans.get_finished_spans()
    turns = [s for s in finished if s.name == "bot.turn"]
    assert len(turns) == 2
    assert {s.attributes["http.response.status_code"] for s in turns} == {201}       # botbuilder answers a message 201
    calls = [s for s in finished if s.name.startswith("azureml.")]
    assert {s.name for s in calls} >= {"azureml.get_endpoint"}
    first_turn = turns[0].context.trace_id
    assert all(s.context.trace_id == first_turn for s in calls)       # the calls belong to the first turn
    assert all(s.attributes["mlopsbot.workspace"] == "ml-prod" for s in calls)

    measured = points(reader)
    [turn_points] = [measured["mlopsbot.turn.duration"]]
    assert sum(p.count for p in turn_points) == 2
    assert [p.attributes for p in turn_points] == [{"http.response.status_code": 201}]
    by_method = {p.attributes["method"]: p.count for p in measured["mlopsbot.azure.call.duration"]}
    assert by_method["get_endpoint"] == 1 and all(p.attributes["outcome"] == "ok"
                                                  for p in measured["mlopsbot.azure.call.duration"])
    hits = {(p.attributes["method"], p.attributes["how"]): p.value for p in measured["mlopsbot.read_cache.hits"]}
    assert hits[("get_endpoint", "cache")] == 1


async def test_a_failed_workspace_call_is_an_error_span_and_an_error_outcome(aiohttp_server, settings, otel):
    telemetry, spans, reader = otel
    server = await aiohttp_server(create_app(settings, reset_demo=True, telemetry=telemetry))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("endpoint no-such-endpoint")
    failed = [s for s in spans.get_finished_spans() if s.name == "azureml.get_endpoint"]
    assert failed and not failed[0].status.is_ok
    outcomes = {(p.attributes["method"], p.attributes["outcome"]) for p in points(reader)["mlopsbot.azure.call.duration"]}
    assert ("get_endpoint", "error") in outcomes


async def test_the_backlog_gauges_say_what_waits(tmp_path, otel):
    telemetry, _, reader = otel
    storage = open_storage(f"sqlite:///{tmp_path / 'bot.db'}")
    await storage.open()
    try:
        start = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)

        async def enqueue(tx):
            await outbox.enqueue(tx, "a:one", {"text": "hello"}, dedupe_key="k1", tenant_id="t", now=start)
            await outbox.enqueue(tx, "a:two", {"text": "again"}, dedupe_key="k2", tenant_id="t",
                                 now=start + timedelta(seconds=30))
        await storage.run_transaction(enqueue)
        backlog = await telemetry.sample(storage, now=start + timedelta(seconds=90))
    finally:
        await storage.close()
    assert (backlog.outbox_depth, backlog.outbox_oldest_age, backlog.outbox_given_up, backlog.approvals_waiting) \
        == (2, 90.0, 0, 0)
    measured = points(reader)
    assert [p.value for p in measured["mlopsbot.outbox.depth"]] == [2]
    assert [p.value for p in measured["mlopsbot.outbox.oldest_age"]] == [90.0]
    assert [p.value for p in measured["mlopsbot.outbox.given_up"]] == [0]
    assert [p.value for p in measured["mlopsbot.approvals.waiting"]] == [0]


def test_off_by_default_nothing_of_opentelemetry_is_imported(tmp_path):
    script = (
        "import sys, asyncio\n"
        "from pathlib import Path\n"
        "from bot.app import create_app\n"
        "from bot.settings import load_settings\n"
        f"settings = load_settings(data_dir=Path({str(tmp_path / 'data')!r}), host='127.0.0.1')\n"
        "assert not settings.applicationinsights_connection_string\n"
        "async def main():\n"
        "    create_app(settings, reset_demo=True)\n"
        "asyncio.run(main())\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor.opentelemetry')))\n"
        "print(loaded)\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_connection_string_is_read_from_the_environment_and_never_shown(tmp_path, monkeypatch):
    secret = "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=https://example.invalid/"
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", secret)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path, host="127.0.0.1")
    assert settings.applicationinsights_connection_string == secret
    assert "InstrumentationKey" not in repr(settings) and "InstrumentationKey" not in str(settings.public_summary())


def test_a_connection_string_that_is_not_one_refuses_to_start_without_showing_it(tmp_path, monkeypatch):
    from bot.settings import SettingsError
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "s3cr3t-not-a-connection-string")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="must be an Application Insights connection string") as refused:
        load_settings(data_dir=tmp_path, host="127.0.0.1")
    assert "s3cr3t" not in str(refused.value)
