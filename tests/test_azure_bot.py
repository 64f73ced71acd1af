"""The whole bot over Azure: commands run against AzureMLService on a replayed workspace.

The replayed workspace is the demo (adapters.local.demo) served by tests/replay.py's FakeWorkspace to a
real MLClient, so the same questions get the same answers as on the local backend.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService
from bot.app import create_app
from commands.catalog import catalog
from commands.base.context import Workspaces
from adapters.storage import outbox
from bot.scheduler import Scheduler
from tests.card_schema import assert_valid_card
from tests.conftest import Chat
from tests.replay import ReplayResponse, arm_id, demo_azure, monitor_answer, request_series
from tests.teams_client import ALICE, BOB, TeamsStandIn

READ_ONLY = [c for c in catalog() if c.role.name == "VIEWER"]


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def azure(pool, tmp_path):
    """Two workspaces: ml-prod on (replayed) Azure, ml-dev on the local backend."""
    fake, service = demo_azure()
    dev = LocalWorkspace(tmp_path / "dev.db", name="ml-dev", environment="dev")
    workspaces = Workspaces([
        NonBlockingService(service, name="ml-prod", environment="prod", pool=pool, timeout=10),
        NonBlockingService(dev, name="ml-dev", environment="dev", pool=pool, timeout=10),
    ])
    return fake, workspaces


@pytest.fixture
def azure_chat(azure, store) -> Chat:
    return Chat(azure[1], store)


@pytest.mark.parametrize("typed", [c.example for c in READ_ONLY if c.name != "logs"] + ["models", "jobs"])
async def test_every_read_only_command_works_on_azure(azure_chat, typed):
    reply = await azure_chat(typed)
    assert "incident" not in reply.text and "refused" not in reply.text, reply.text
    if reply.card is not None:
        assert_valid_card(reply.card)


async def test_azure_answers_like_the_local_backend(azure_chat, chat):
    for typed in ("models", "models fraud-model", "jobs --status Failed", "endpoints"):
        on_azure, on_local = await azure_chat(typed), await chat(typed)
        assert _rows(on_azure) == _rows(on_local), typed


def _rows(reply) -> list[str]:
    return [e["columns"][0]["items"][0]["text"] for e in reply.card["body"] if e["type"] == "ColumnSet"]


async def test_every_card_names_its_workspace(azure_chat):
    prod = await azure_chat("endpoints")
    dev = await azure_chat("endpoints --workspace ml-dev")
    assert prod.card["body"][1]["text"] == "Workspace ml-prod (prod)"
    assert dev.card["body"][1]["text"] == "Workspace ml-dev (dev)"


async def test_traffic_change_is_a_put_of_the_endpoint_and_is_reported(azure, azure_chat):
    fake, _ = azure
    fake.transport.clear()
    ack = await azure_chat("traffic fraud-api blue=70 green=30")
    assert ack.text.startswith("⏳ Traffic on fraud-api is moving to blue=70 green=30.")
    [outcome] = await azure_chat.settle()         # the gate awaits the operation in the background
    assert outcome.text.startswith("✅ ")
    [put] = [r for r in fake.transport.mutations() if r.method == "PUT"]
    assert put.path.endswith("/onlineEndpoints/fraud-api")
    assert put.api_version == "2022-02-01-preview"
    assert put.body["properties"]["traffic"] == {"blue": 70, "green": 30}


async def test_a_missing_azure_role_is_explained(azure, azure_chat):
    fake, _ = azure
    fake.transport.fail("GET", r"/computes$", 403, "AuthorizationFailed",
                        "The client does not have authorization to perform action "
                        "'Microsoft.MachineLearningServices/workspaces/computes/read'")
    reply = await azure_chat("compute")
    assert reply.text.startswith("Azure refused: mlops-bot-test-identity may not do this in Azure ML")
    assert "The client does not have authorization" in reply.text
    assert reply.text.endswith("Assign it the Azure role **AzureML Data Scientist** on the workspace.")


@pytest.fixture
async def azure_bot(aiohttp_server, settings, azure):
    server = await aiohttp_server(create_app(settings, workspaces=azure[1]))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        yield azure[0], teams


async def test_endpoint_over_http_on_azure(azure_bot):
    _, teams = azure_bot
    [reply] = await teams.say("endpoint fraud-api")
    assert "Traffic: blue=90 green=10" in reply.card["fallbackText"]
    assert "Latency p99" in reply.card["fallbackText"]


async def test_endpoint_card_over_http_counts_requests_on_azure(azure_bot):
    """Issue 16: an hour of 100 requests a minute answered 200, 10 answered 201 and five 503s in one
    minute is 110.08 a minute and 0.08 % 5xx (window averages added up said 60 a minute, 8.33 %)."""
    fake, teams = azure_bot
    late_503s = [None] * 17 + [5.0] + [None] * 42
    readings = {arm_id("onlineEndpoints", "fraud-api"): {
        "RequestLatency_P99": [(None, 310.0), ({"deployment": "blue"}, 300.0)],
        "RequestsPerMinute": [request_series("blue", 200, 100.0), request_series("blue", 201, 10.0),
                              request_series("blue", 503, late_503s)]}}
    fake.transport.add("POST", r"/metrics:getBatch$", handler=functools.partial(monitor_answer, readings=readings),
                       first=True)
    [reply] = await teams.say("endpoint fraud-api")
    text = reply.card["fallbackText"]
    assert "Healthy: p99 310 ms, 5xx 0.08%" in text, text
    assert "110.1 /min" in text and "8.33%" not in text


async def test_a_turn_stuck_in_the_sdk_does_not_delay_another_conversation(azure_bot):
    """Alice's `jobs` hangs inside the Azure SDK until released; Bob's turn is answered meanwhile."""
    fake, teams = azure_bot
    entered, release = threading.Event(), threading.Event()

    def stuck(request, match):
        entered.set()
        release.wait(10)
        return ReplayResponse(json={"value": []})

    fake.transport.add("GET", r"/jobs$", handler=stuck, first=True, times=1)
    alice = asyncio.create_task(teams.post(teams.message("jobs", user=ALICE)))
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)

    [bob_reply] = await teams.say("endpoint churn-api", user=BOB)

    assert bob_reply.conversation_id == f"a:personal-{BOB.id}"
    assert not alice.done()
    release.set()
    assert (await alice).status in (200, 201)
    [alice_reply] = (await teams.connector.wait_for(2))[1:]
    assert alice_reply.conversation_id == f"a:personal-{ALICE.id}"
    assert "Recent jobs" in alice_reply.card["fallbackText"]


async def test_a_pending_operation_does_not_hold_the_threads_that_answer_questions(tmp_path):
    """One thread for calls: while a compute stop is still polling, `endpoint` is answered."""
    fake, service = demo_azure()
    entered, release = threading.Event(), threading.Event()

    def still_running(request, match):
        entered.set()
        release.wait(10)
        return ReplayResponse(status=200)

    fake.transport.add("GET", r"/operationResults/[^/]+$", handler=still_running, first=True, times=1)
    with ThreadPoolExecutor(max_workers=1) as calls, ThreadPoolExecutor(max_workers=1) as waits:
        ws = NonBlockingService(service, name="ml-prod", environment="prod", pool=calls, wait_pool=waits)
        pending = await ws.stop_compute("ds-ci-alice")
        waiting = asyncio.create_task(pending.wait())
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        endpoint = await ws.get_endpoint("fraud-api")
        assert endpoint.traffic == {"blue": 90, "green": 10}
        assert not waiting.done()
        release.set()
        assert "ds-ci-alice" in await waiting


async def test_canary_and_rollback_are_puts_of_the_endpoint_on_azure(azure, azure_chat):
    fake, _ = azure
    fake.transport.clear()
    ack = await azure_chat("canary fraud-api green 30 --reason 'v4 canary'")
    assert ack.text.startswith("⏳ Traffic on fraud-api is moving to blue=70 green=30.")
    [outcome] = await azure_chat.settle()
    assert outcome.text.startswith("✅ ")
    puts = [r for r in fake.transport.mutations() if r.method == "PUT"]
    assert [p.body["properties"]["traffic"] for p in puts] == [{"blue": 70, "green": 30}]
    history = (await azure_chat("history fraud-api")).text
    assert "#1 blue=90 green=10 → blue=70 green=30" in history
    rolled = await azure_chat("rollback fraud-api")
    await azure_chat.settle()
    puts = [r for r in fake.transport.mutations() if r.method == "PUT"]
    assert rolled.text.startswith("⏳ Traffic on fraud-api is moving to blue=90 green=10."), rolled.text
    assert [p.body["properties"]["traffic"] for p in puts] == [{"blue": 70, "green": 30}, {"blue": 90, "green": 10}]

    azure_chat.clock.advance(minutes=16)
    loop = Scheduler(azure_chat.gate.store, azure[1], azure_chat.gate, owner="test", window_minutes=15,
                     clock=azure_chat.clock)
    assert await loop.conclude_due() == 2

    async def verdicts(tx):
        return [i.payload["card"] for i in await outbox.find_items(tx) if i.dedupe_key.startswith("watch:")]
    cards = await azure_chat.gate.store.run_transaction(verdicts, write=False)
    # the replayed workspace publishes no Azure Monitor figures for fraud-api: no verdict, and it says why
    assert [c["body"][0]["text"] for c in cards] == ["❔ No verdict after the canary on fraud-api",
                                                     "❔ No verdict after the rollback on fraud-api"]
    assert "There are no figures to compare" in cards[0]["fallbackText"]


def fraud_api_figures(*, green_p99_ms: float, endpoint_p99_ms: float) -> dict:
    """What Azure Monitor reports for fraud-api (blue=70 green=30): the same requests and 5xx share
    each time, blue's p99 steady; only green's p99 and the endpoint's own p99 are given."""
    def requests(deployment: str, ok: float, failed: float) -> list:
        return [request_series(deployment, 200, ok), request_series(deployment, 500, failed)]
    return {arm_id("onlineEndpoints", "fraud-api"): {
        "RequestLatency_P99": [(None, endpoint_p99_ms), ({"deployment": "blue"}, 300.0),
                               ({"deployment": "green"}, green_p99_ms)],
        "RequestsPerMinute": requests("blue", 69.5, 0.5) + requests("green", 29.7, 0.3)}}


async def test_a_deployment_whose_p99_alone_got_worse_is_found_degraded_on_azure(azure, azure_chat):
    fake, _ = azure
    readings = fraud_api_figures(green_p99_ms=320.0, endpoint_p99_ms=310.0)
    fake.transport.add("POST", r"/metrics:getBatch$", handler=functools.partial(monitor_answer, readings=readings),
                       first=True)
    await azure_chat("canary fraud-api green 30")                 # the baseline is read before the change
    await azure_chat.settle()
    readings.update(fraud_api_figures(green_p99_ms=900.0, endpoint_p99_ms=400.0))   # endpoint: < 1.5 x 310

    azure_chat.clock.advance(minutes=16)
    loop = Scheduler(azure_chat.gate.store, azure[1], azure_chat.gate, owner="test", window_minutes=15,
                     clock=azure_chat.clock)
    assert await loop.conclude_due() == 1

    async def verdicts(tx):
        return [i.payload["card"] for i in await outbox.find_items(tx) if i.dedupe_key.startswith("watch:")]
    [card] = await azure_chat.gate.store.run_transaction(verdicts, write=False)
    assert card["body"][0]["text"] == "⚠️ Degraded after the canary on fraud-api"
    worse = [e["text"] for e in card["body"] if e.get("color") == "Attention"]
    assert worse == ["- green: p99 320 ms → 900 ms"]
    assert "blue" in card["fallbackText"] and "p99 300 ms → 300 ms, 5xx 0.71% → 0.71%" in card["fallbackText"]
