"""No blocking: 50 concurrent users against a backend whose every call takes 300 ms, and a stuck
workspace beside a healthy one.

The real app (bot.app.create_app, CloudAdapter over HTTP, a connector stand-in receiving the
replies; the same set-up as bench/stuck_turn.py) runs on the local demo workspace wrapped in a
`SlowService` whose every MLService call sleeps first (a blocking sleep in the calling thread, as
the Azure SDK blocks), behind the real NonBlockingService facade and the app's thread pool of
MLOPSBOT_AZURE_MAX_CONCURRENCY threads.

1. Load: USERS people, each asking `endpoint fraud-api` (one backend call), then thinking 1 to 3 s
   (uniformly at random) before asking again, for DURATION seconds. Figures: p50 and p99 turn
   latency; target p99 at most 350 ms (300 ms of backend plus 50 ms of ours).
2. Isolation: a second workspace, `ml-stuck`, whose calls take STUCK seconds; STUCK_CALLS people ask
   it at once, and meanwhile one person asks the healthy workspace ROUNDS times. Figures: that
   person's p50 and max latency, against the same turns without the stuck workspace.
   Target: no slower (within 50 ms).

Both run at each pool size given (the default 8, and 64, the largest the setting allows), with the
pool shared by the workspaces as bot.app builds it; and once more at the smallest size with one
pool per workspace, to show what isolating the workspaces' threads would change.

    python bench/no_blocking.py [--users 50] [--duration 20] [--pool 8 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_importable()

from adapters.local import LocalWorkspace  # noqa: E402
from adapters.nonblocking import NonBlockingService  # noqa: E402
from bot.app import create_app, thread_pools  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from commands.context import Workspaces  # noqa: E402
from tests.teams_client import Person, TeamsStandIn  # noqa: E402

BACKEND_SECONDS = 0.3
TARGET_P99_MS = 350.0
ISOLATION_SLACK_MS = 50.0


class SlowService:
    """Any MLService, each of whose calls first blocks its thread for `delay` seconds."""

    def __init__(self, service: Any, delay: float) -> None:
        self._service = service
        self._delay = delay
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._service, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            time.sleep(self._delay)
            return target(*args, **kwargs)
        return call


def person(i: int) -> Person:
    return Person(f"29:user-{i}", f"User {i}", f"00000000-0000-0000-0000-{i:012d}")


async def turn(teams: TeamsStandIn, text: str, user: Person) -> float:
    started = time.perf_counter()
    response = await teams.post(teams.message(text, user=user, conversation=f"a:personal-{user.id}"))
    elapsed = time.perf_counter() - started
    if response.status not in (200, 201):
        raise RuntimeError(f"the bot answered HTTP {response.status}")
    return elapsed * 1000


async def one_setting(pool_size: int, args: argparse.Namespace, data: Path, *,
                      own_pools: bool = False) -> dict[str, Any]:
    """`own_pools`: each workspace gets its own thread pool, as bot.app.build_workspaces does; without
    it, one pool shared by both (how the app was before, kept to show the difference)."""
    settings = load_settings(data_dir=data, host="127.0.0.1", azure_max_concurrency=pool_size)
    pools = thread_pools(settings)
    calls, waits = pools
    stuck_calls_pool = thread_pools(settings)[0] if own_pools else calls
    healthy = LocalWorkspace(data / "healthy.db")
    healthy.reset(demo=True)
    stuck = LocalWorkspace(data / "stuck.db")
    stuck.reset(demo=True)
    slow = SlowService(healthy, BACKEND_SECONDS)
    stuck_service = SlowService(stuck, args.stuck)
    workspaces = Workspaces([
        NonBlockingService(slow, name="ml-prod", environment="prod", pool=calls, wait_pool=waits,
                           timeout=settings.azure_timeout),
        NonBlockingService(stuck_service, name="ml-stuck", environment="prod", pool=stuck_calls_pool, wait_pool=waits,
                           timeout=settings.azure_timeout)])
    server = TestServer(create_app(settings, workspaces=workspaces))
    await server.start_server()
    result: dict[str, Any] = {"pool_threads": pool_size, "pools": "one per workspace" if own_pools else
                              "shared by the workspaces (as bot.app builds them)"}
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        before = slow.calls
        await turn(teams, "endpoint fraud-api", person(0))                        # warm up
        result["backend_calls_per_turn"] = slow.calls - before

        # 1. load
        latencies: list[float] = []
        deadline = time.perf_counter() + args.duration
        rng = random.Random(3)

        async def user(i: int) -> None:
            await asyncio.sleep(rng.uniform(0, 2))
            while time.perf_counter() < deadline:
                latencies.append(await turn(teams, "endpoint fraud-api", person(i)))
                await asyncio.sleep(rng.uniform(1, 3))

        load_start = _common.load_average()
        await asyncio.gather(*(user(i) for i in range(1, args.users + 1)))
        result["load"] = {"users": args.users, "turns": len(latencies),
                          "p50_ms": round(_common.percentile(latencies, 50), 1),
                          "p99_ms": round(_common.percentile(latencies, 99), 1),
                          "max_ms": round(max(latencies), 1),
                          "load_1min": [load_start, _common.load_average()]}

        # 2. isolation
        async def rounds() -> list[float]:
            return [await turn(teams, "endpoint fraud-api", person(999)) for _ in range(args.rounds)]

        baseline = await rounds()
        stuck_turns = [asyncio.create_task(turn(teams, "endpoints --workspace ml-stuck", person(500 + i)))
                       for i in range(args.stuck_calls)]
        await asyncio.sleep(0.2)
        during = await rounds()
        stuck_latencies = await asyncio.gather(*stuck_turns)
        result["isolation"] = {
            "stuck_seconds": args.stuck, "stuck_calls": args.stuck_calls,
            "baseline_p50_ms": round(statistics.median(baseline), 1), "baseline_max_ms": round(max(baseline), 1),
            "during_p50_ms": round(statistics.median(during), 1), "during_max_ms": round(max(during), 1),
            "stuck_turns_max_s": round(max(stuck_latencies) / 1000, 2), "load_1min": _common.load_average()}
    await server.close()
    for executor in {*pools, stuck_calls_pool}:
        executor.shutdown(wait=False, cancel_futures=True)
    load = result["load"]
    isolation = result["isolation"]
    result["p99_met"] = load["p99_ms"] <= TARGET_P99_MS
    result["isolation_met"] = isolation["during_max_ms"] <= isolation["baseline_max_ms"] + ISOLATION_SLACK_MS
    label = f"pool {pool_size:>2} threads{' per workspace' if own_pools else ''}"
    print(f"{label}: {load['users']} users, {load['turns']} turns, p50 {load['p50_ms']:.0f} ms, "
          f"p99 {load['p99_ms']:.0f} ms (target {TARGET_P99_MS:.0f}: {'met' if result['p99_met'] else 'NOT met'}); "
          f"load {load['load_1min']}")
    print(f"{label}: {args.stuck_calls} calls stuck {args.stuck:g} s in ml-stuck; another "
          f"conversation on ml-prod: median {isolation['baseline_p50_ms']:.0f} -> {isolation['during_p50_ms']:.0f} ms, "
          f"max {isolation['baseline_max_ms']:.0f} -> {isolation['during_max_ms']:.0f} ms "
          f"({'met' if result['isolation_met'] else 'NOT met'})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--pool", type=int, nargs="+", default=[8, 64], help="MLOPSBOT_AZURE_MAX_CONCURRENCY values")
    parser.add_argument("--stuck", type=float, default=5.0, help="seconds each call to the stuck workspace takes")
    parser.add_argument("--stuck-calls", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL",
                 "MLOPSBOT_AZURE_MAX_CONCURRENCY"):
        os.environ.pop(name, None)
    load_before = _common.load_average()
    results = []
    for size, own in [(size, False) for size in args.pool] + [(min(args.pool), True)]:
        with tempfile.TemporaryDirectory() as data:
            os.chdir(data)
            results.append(asyncio.run(one_setting(size, args, Path(data), own_pools=own)))
    _common.write_results("no_blocking", {"backend_seconds": BACKEND_SECONDS, "settings": results},
                          {"p99_ms_at_most": TARGET_P99_MS,
                           "isolation": f"another conversation's max latency within {ISOLATION_SLACK_MS:g} ms "
                                        "of its max without the stuck workspace"},
                          load_before=load_before)


if __name__ == "__main__":
    main()
