"""Identical reads are shared (issue 21, item 1): single flight, a short reuse, changes invalidate,
Refresh bypasses, errors are never kept. Behaviour only: no test here depends on how long anything takes.

The backend is the real local demo workspace, behind `Counted`, which counts the calls that reach it
and can hold them at a gate (a threading.Event), so that "all these reads were in flight at once"
is a fact rather than a timing.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.local.workspace import LocalWorkspace
from adapters.nonblocking import NonBlockingService, fresh_reads, read_log
from adapters.service import NotFound
from bot.app import create_app
from tests.teams_client import TeamsStandIn


class Counted:
    """The real workspace; counts each call by method, and holds calls while `gate` is clear."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.calls: dict[str, int] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.land_first = threading.Event()        # the first call returns only once this is set
        self.land_first.set()
        self.first_read = threading.Event()        # set when the first call has read, before it returns
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._service, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            self._count += 1
            first = self._count == 1
            self.entered.set()
            self.gate.wait(10)
            result = target(*args, **kwargs)
            if first:
                self.first_read.set()
                self.land_first.wait(10)
            return result
        return call


@pytest.fixture
def backend(tmp_path: Path):
    local = LocalWorkspace(tmp_path / "ws.db")
    local.reset(demo=True)
    yield Counted(local)
    local.close()


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=True)


def facade(backend: Counted, pool, seconds: float = 60.0) -> NonBlockingService:
    return NonBlockingService(backend, name="ml-prod", environment="prod", pool=pool, timeout=30,
                              read_cache_seconds=seconds)


async def until_entered(backend: Counted) -> None:
    await asyncio.get_running_loop().run_in_executor(None, backend.entered.wait, 10)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_identical_reads_make_one_backend_call(backend, pool):
    ml = facade(backend, pool, seconds=0)          # no reuse at all: only reads in flight are shared
    backend.gate.clear()
    reads = [asyncio.create_task(ml.get_endpoint("fraud-api")) for _ in range(20)]
    await until_entered(backend)
    backend.gate.set()
    endpoints = await asyncio.gather(*reads)
    assert backend.calls == {"get_endpoint": 1}
    assert {e.name for e in endpoints} == {"fraud-api"} and len({repr(e.traffic) for e in endpoints}) == 1


async def test_different_reads_are_not_shared(backend, pool):
    ml = facade(backend, pool)
    await asyncio.gather(ml.get_endpoint("fraud-api"), ml.get_endpoint("churn-api"),
                         ml.endpoint_metrics("fraud-api"), ml.endpoint_metrics("fraud-api", window_minutes=5))
    assert backend.calls == {"get_endpoint": 2, "endpoint_metrics": 2}


async def test_a_recent_read_is_reused_and_says_when_it_was_read(backend, pool):
    ml = facade(backend, pool)
    with read_log() as first:
        await ml.list_endpoints()
    with read_log() as second:
        again = await ml.list_endpoints()
    assert backend.calls == {"list_endpoints": 1}
    assert second.oldest == first.oldest is not None            # the figures are those of the first read
    again.clear()                                               # a caller's copy: the kept result is intact
    assert len(await ml.list_endpoints()) > 0


async def test_with_reuse_off_each_read_after_the_last_one_landed_goes_to_the_backend(backend, pool):
    ml = facade(backend, pool, seconds=0)
    await ml.list_endpoints()
    await ml.list_endpoints()
    assert backend.calls == {"list_endpoints": 2}


async def test_a_change_invalidates_what_was_read(backend, pool):
    ml = facade(backend, pool)
    before = await ml.get_endpoint("fraud-api")
    assert before.traffic == {"blue": 90, "green": 10}
    operation = await ml.set_traffic("fraud-api", {"blue": 50, "green": 50})
    await operation.wait()
    after = await ml.get_endpoint("fraud-api")
    assert after.traffic == {"blue": 50, "green": 50}
    assert backend.calls["get_endpoint"] == 2


async def test_a_read_in_flight_across_a_change_is_not_kept(backend, pool):
    ml = facade(backend, pool)
    backend.gate.clear()
    stale = asyncio.create_task(ml.get_endpoint("fraud-api"))
    await until_entered(backend)
    ml.reads.invalidate()              # what a change does before it runs (it needs the gate open itself)
    backend.gate.set()
    await stale
    await ml.get_endpoint("fraud-api")
    assert backend.calls["get_endpoint"] == 2


async def test_refresh_bypasses_the_kept_read_and_replaces_it(backend, pool, tmp_path):
    ml = facade(backend, pool)
    await ml.get_endpoint("fraud-api")
    # changed behind the facade's back (in Azure, by someone in the portal): only a Refresh sees it
    LocalWorkspace(tmp_path / "ws.db").set_traffic("fraud-api", {"blue": 70, "green": 30}).wait(5)
    assert (await ml.get_endpoint("fraud-api")).traffic == {"blue": 90, "green": 10}
    with fresh_reads():
        assert (await ml.get_endpoint("fraud-api")).traffic == {"blue": 70, "green": 30}
    assert (await ml.get_endpoint("fraud-api")).traffic == {"blue": 70, "green": 30}
    assert backend.calls == {"get_endpoint": 2}


async def test_errors_are_shared_in_flight_but_never_kept(backend, pool):
    ml = facade(backend, pool)
    backend.gate.clear()
    reads = [asyncio.create_task(ml.get_endpoint("nope")) for _ in range(5)]
    await until_entered(backend)
    backend.gate.set()
    outcomes = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(o, NotFound) for o in outcomes)
    assert backend.calls == {"get_endpoint": 1}
    with pytest.raises(NotFound):
        await ml.get_endpoint("nope")
    assert backend.calls == {"get_endpoint": 2}


async def test_a_caller_giving_up_does_not_cancel_the_read_for_the_others(backend, pool):
    ml = facade(backend, pool)
    backend.gate.clear()
    first = asyncio.create_task(ml.get_endpoint("fraud-api"))
    await until_entered(backend)
    second = asyncio.create_task(ml.get_endpoint("fraud-api"))
    await asyncio.sleep(0)
    first.cancel()
    backend.gate.set()
    assert (await second).name == "fraud-api"
    assert backend.calls == {"get_endpoint": 1}


# ---------------------------------------------------------------- over HTTP, through the real CloudAdapter


async def test_cards_say_when_their_figures_were_read_and_refresh_reads_afresh(aiohttp_server, settings):
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [reply] = await teams.say("endpoint fraud-api")
        stamp = reply.card["body"][-1]
        assert stamp["id"] == "read-at" and stamp["text"].startswith("Figures read at ")
        assert stamp["text"].split(" at ")[1][:8].count(":") == 2
        # someone changes the split outside the bot; a second ask within the reuse window shows the kept figures
        LocalWorkspace(settings.data_dir / "workspace.db").set_traffic("fraud-api", {"blue": 70, "green": 30}).wait(5)
        [again] = await teams.say("endpoint fraud-api")
        assert "90" in _traffic_line(again.card) and "70" not in _traffic_line(again.card)
        status, body = await teams.click(again.card, "Refresh")
        assert status == 200
        refreshed = body["value"]
        assert "70" in _traffic_line(refreshed)
        assert [b.get("id") for b in refreshed["body"]].count("as-of") == 1
        assert "read-at" not in [b.get("id") for b in refreshed["body"]]
        # and what Refresh read is what the next person sees
        [third] = await teams.say("endpoint fraud-api")
        assert "70" in _traffic_line(third.card)


def _traffic_line(card: dict) -> str:
    import json
    text = json.dumps(card["body"])
    start = text.find("blue")
    assert start >= 0, text[:400]
    return text[start:start + 120]


async def test_an_older_read_landing_after_a_refresh_does_not_replace_it(backend, pool, tmp_path):
    ml = facade(backend, pool)
    backend.land_first.clear()
    older = asyncio.create_task(ml.get_endpoint("fraud-api"))          # reads 90/10, then waits to land
    await asyncio.get_running_loop().run_in_executor(None, backend.first_read.wait, 10)
    LocalWorkspace(tmp_path / "ws.db").set_traffic("fraud-api", {"blue": 70, "green": 30}).wait(5)
    with fresh_reads():
        refreshed = await ml.get_endpoint("fraud-api")                 # lands first
    backend.land_first.set()
    assert (await older).traffic == {"blue": 90, "green": 10}
    await asyncio.sleep(0)
    assert refreshed.traffic == {"blue": 70, "green": 30}
    assert (await ml.get_endpoint("fraud-api")).traffic == {"blue": 70, "green": 30}
    assert backend.calls == {"get_endpoint": 2}


async def test_demo_degrade_forgets_the_shared_reads(chat, workspaces):
    await chat("endpoint fraud-api")
    assert workspaces.default.reads._kept != {}
    assert (await chat("demo degrade fraud-api green")).text.startswith("🧪 ")
    assert workspaces.default.reads._kept == {}
