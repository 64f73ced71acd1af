"""How long does a turn take while another conversation's Azure call is stuck for 2 s?

Runs the real app (CloudAdapter over HTTP, a connector stand-in receiving replies) on a replayed
Azure workspace. One conversation asks `jobs`, whose Azure call takes STUCK_SECONDS; meanwhile
another conversation asks `endpoint churn-api` ROUNDS times. Prints the latency figures of the
fast turns, and of the same turns with no stuck call, for comparison.

    .venv/bin/python bench/stuck_turn.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.nonblocking import NonBlockingService  # noqa: E402
from bot.app import create_app  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from commands.base.context import Workspaces  # noqa: E402
from tests.replay import demo_azure  # noqa: E402
from tests.teams_client import ALICE, BOB, TeamsStandIn  # noqa: E402

STUCK_SECONDS = 2.0
ROUNDS = 20


async def fast_turns(teams: TeamsStandIn) -> list[float]:
    latencies = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await teams.say("endpoint churn-api", user=BOB)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def main() -> None:
    with tempfile.TemporaryDirectory() as data, ThreadPoolExecutor(max_workers=8) as pool:
        fake, service = demo_azure()
        workspaces = Workspaces([NonBlockingService(service, name="ml-prod", environment="prod", pool=pool)])
        settings = load_settings(data_dir=Path(data), host="127.0.0.1")
        server = TestServer(create_app(settings, workspaces=workspaces))
        await server.start_server()
        async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
            await teams.say("endpoint churn-api", user=BOB)               # warm up
            baseline = await fast_turns(teams)
            fake.transport.add("GET", r"/jobs$", json={"value": []}, delay=STUCK_SECONDS, first=True, times=1)
            stuck_started = time.perf_counter()
            stuck = asyncio.create_task(teams.post(teams.message("jobs", user=ALICE)))
            await asyncio.sleep(0.05)
            during = await fast_turns(teams)
            during_done = time.perf_counter() - stuck_started
            await stuck
            stuck_total = time.perf_counter() - stuck_started
        await server.close()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (latencies from a loaded machine are "
          "upper bounds)")
    print(f"stuck Azure call: {STUCK_SECONDS:.1f} s; the stuck turn took {stuck_total:.2f} s")
    print(f"{ROUNDS} turns of another conversation finished {during_done:.2f} s after the stuck one began")
    for label, values in (("no stuck call", baseline), ("during the stuck call", during)):
        print(f"{label:>22}: median {statistics.median(values):6.1f} ms, max {max(values):6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
