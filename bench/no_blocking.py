"""No blocking: 50 concurrent users against a backend whose every call takes 300 ms, and a stuck
workspace beside a healthy one.

The real app (bot.app.create_app, CloudAdapter over HTTP, in a process of its own; this process
posts the activities and runs the connector stand-in receiving the replies) runs on the local demo workspace wrapped in a
`SlowService` whose every MLService call sleeps first (a blocking sleep in the calling thread, as
the Azure SDK blocks), behind the real NonBlockingService facade and the app's thread pool of
MLOPSBOT_AZURE_MAX_CONCURRENCY threads.

1. Load: USERS people, each asking `endpoint fraud-api` (two backend calls, made at once), then
   thinking 1 to 3 s (uniformly at random) before asking again, for DURATION seconds in all.
   Figures: p50 and p99 turn latency, target p99 at most 350 ms (300 ms of backend plus 50 ms of
   ours); and the backend calls a second, target at most 25 (what Azure Resource Manager sustains
   for one subscription and principal).
2. Isolation: a second workspace, `ml-stuck`, whose calls take STUCK seconds; STUCK_CALLS people ask
   it at once (each about a different endpoint, so nothing is shared), and meanwhile one person asks
   the healthy workspace ROUNDS times. Figures: that person's p50 and max latency, against the same
   turns without the stuck workspace. Target: no slower (within 50 ms).

Each pool size given runs twice, as bot.app builds the workspaces (a pool of threads each): with
reads shared as configured by default (MLOPSBOT_READ_CACHE_SECONDS=5: identical reads in flight
answered once, a result reused 5 s) and, as the anchor, with reuse off (=0: only reads in flight
shared). All the settings' servers are up at once and their load phases alternate (PHASES each,
each setting going first in turn), so that a change in the machine's load hits all alike; the
1-minute load average is printed after each phase.

    python bench/no_blocking.py [--users 50] [--duration 20] [--phases 4] [--pool 8] [--cache 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_importable()

from adapters.local.workspace import LocalWorkspace  # noqa: E402
from adapters.nonblocking import NonBlockingService  # noqa: E402
from bot.app import create_app, thread_pools  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from commands.base.context import Workspaces  # noqa: E402
from tests.teams_client import Person, TeamsStandIn  # noqa: E402

BACKEND_SECONDS = 0.3
TARGET_P99_MS = 350.0
ISOLATION_SLACK_MS = 50.0
# Azure Resource Manager's sustained read rate per subscription and principal (a bucket of 250
# refilled at 25 a second: "Request limits and throttling", learn.microsoft.com/azure/
# azure-resource-manager/management/request-limits-and-throttling)
ARM_READS_PER_S = 25.0


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


class Setting:
    """One configuration of the real app (own data directory, own server), kept up for the whole run
    so that its load phases can alternate with the other configurations'."""

    def __init__(self, pool_size: int, cache_seconds: float, args: argparse.Namespace, data: Path) -> None:
        self.pool_size, self.cache_seconds, self.args, self.data = pool_size, cache_seconds, args, data
        self.label = (f"{pool_size} threads per workspace, reads shared "
                      + (f"{cache_seconds:g} s" if cache_seconds else "only in flight (MLOPSBOT_READ_CACHE_SECONDS=0)"))
        self.latencies: list[float] = []
        self.calls = 0
        self.seconds = 0.0
        self.loads: list[float] = []

    async def __aenter__(self) -> "Setting":
        """The bot in a process of its own (as in production, and so that this process's load
        generator and connector stand-in do not take the bot's event loop)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--pool", str(self.pool_size), "--cache", str(self.cache_seconds),
             "--stuck", str(self.args.stuck), "--data", str(self.data)], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"the bot did not start: {line!r}")
        self.base = f"http://127.0.0.1:{line.split()[1]}"
        self.teams = TeamsStandIn(f"{self.base}/api/messages")
        await self.teams.__aenter__()
        before = await self.backend_calls()
        await turn(self.teams, "endpoint fraud-api", person(0))                   # warm up
        self.calls_per_turn = await self.backend_calls() - before
        return self

    async def backend_calls(self) -> int:
        assert self.teams.session is not None
        async with self.teams.session.get(f"{self.base}/bench/calls") as response:
            return int((await response.json())["calls"])

    async def __aexit__(self, *exc: object) -> None:
        await self.teams.__aexit__(None, None, None)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    async def load(self, seconds: float, seed: int) -> None:
        """USERS people asking `endpoint fraud-api` and thinking 1 to 3 s, for `seconds`."""
        deadline = time.perf_counter() + seconds
        rng = random.Random(seed)
        calls_before, started = await self.backend_calls(), time.perf_counter()

        async def user(i: int) -> None:
            await asyncio.sleep(rng.uniform(0, 2))
            while time.perf_counter() < deadline:
                self.latencies.append(await turn(self.teams, "endpoint fraud-api", person(i)))
                await asyncio.sleep(rng.uniform(1, 3))

        await asyncio.gather(*(user(i) for i in range(1, self.args.users + 1)))
        self.calls += await self.backend_calls() - calls_before
        self.seconds += time.perf_counter() - started
        self.loads.append(_common.load_average())

    async def isolation(self) -> dict[str, Any]:
        args, teams = self.args, self.teams

        async def rounds() -> list[float]:
            return [await turn(teams, "endpoint fraud-api", person(999)) for _ in range(args.rounds)]

        baseline = await rounds()
        stuck_turns = [asyncio.create_task(turn(teams, f"endpoint stuck-{i} --workspace ml-stuck", person(500 + i)))
                       for i in range(args.stuck_calls)]
        await asyncio.sleep(0.2)
        during = await rounds()
        stuck_latencies = await asyncio.gather(*stuck_turns)
        return {"stuck_seconds": args.stuck, "stuck_calls": args.stuck_calls,
                "baseline_p50_ms": round(statistics.median(baseline), 1), "baseline_max_ms": round(max(baseline), 1),
                "during_p50_ms": round(statistics.median(during), 1), "during_max_ms": round(max(during), 1),
                "stuck_turns_max_s": round(max(stuck_latencies) / 1000, 2), "load_1min": _common.load_average()}

    def figures(self) -> dict[str, Any]:
        latencies = self.latencies
        rate = self.calls / self.seconds if self.seconds else 0.0
        return {"setting": self.label, "pool_threads": self.pool_size, "read_cache_seconds": self.cache_seconds,
                "backend_calls_per_turn_alone": self.calls_per_turn,
                "load": {"users": self.args.users, "turns": len(latencies),
                         "p50_ms": round(_common.percentile(latencies, 50), 1),
                         "p99_ms": round(_common.percentile(latencies, 99), 1),
                         "max_ms": round(max(latencies), 1),
                         "backend_calls_per_s": round(rate, 1),
                         "load_1min_after_each_phase": self.loads},
                "p99_met": _common.percentile(latencies, 99) <= TARGET_P99_MS,
                "arm_budget_met": rate <= ARM_READS_PER_S}


def serve(args: argparse.Namespace) -> None:
    """The child process: the real app over a slow healthy workspace and a stuck one, each with its
    own call pool as bot.app.build_workspaces gives them; prints `PORT <n>`; stops on SIGTERM.
    GET /bench/calls answers how many calls reached the healthy workspace's backend."""
    from aiohttp import web
    data = Path(args.data)
    os.chdir(data)

    async def main() -> None:
        settings = load_settings(data_dir=data, host="127.0.0.1", azure_max_concurrency=args.pool[0],
                                 read_cache_seconds=args.cache)
        pools = [*thread_pools(settings), thread_pools(settings)[0]]
        calls, waits, stuck_calls = pools
        healthy = LocalWorkspace(data / "healthy.db")
        healthy.reset(demo=True)
        stuck = LocalWorkspace(data / "stuck.db")
        stuck.reset(demo=True)
        slow = SlowService(healthy, BACKEND_SECONDS)
        workspaces = Workspaces([
            NonBlockingService(slow, name="ml-prod", environment="prod", pool=calls, wait_pool=waits,
                               timeout=settings.azure_timeout, read_cache_seconds=settings.read_cache_seconds),
            NonBlockingService(SlowService(stuck, args.stuck), name="ml-stuck", environment="prod",
                               pool=stuck_calls, wait_pool=waits, timeout=settings.azure_timeout,
                               read_cache_seconds=settings.read_cache_seconds)])
        app = create_app(settings, workspaces=workspaces)

        async def counted(request: web.Request) -> web.Response:
            return web.json_response({"calls": slow.calls})

        app.router.add_get("/bench/calls", counted)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        for executor in pools:
            executor.shutdown(wait=False, cancel_futures=True)

    asyncio.run(main())


async def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    configurations = [(size, cache) for size in args.pool for cache in (args.cache, 0.0)]
    async with contextlib.AsyncExitStack() as stack:
        settings = [await stack.enter_async_context(Setting(size, cache, args, root / f"setting-{i}"))
                    for i, (size, cache) in enumerate(configurations)]
        phase = args.duration / args.phases
        for round_ in range(args.phases):                  # interleaved: each goes first in turn
            order = settings[round_ % len(settings):] + settings[:round_ % len(settings)]
            for setting in order:
                await setting.load(phase, seed=round_)
        results = []
        for setting in settings:
            result = setting.figures()
            result["isolation"] = isolation = await setting.isolation()
            result["isolation_met"] = isolation["during_max_ms"] <= isolation["baseline_max_ms"] + ISOLATION_SLACK_MS
            load = result["load"]
            print(f"{setting.label}: {load['users']} users, {load['turns']} turns, p50 {load['p50_ms']:.0f} ms, "
                  f"p99 {load['p99_ms']:.0f} ms (target {TARGET_P99_MS:.0f}: {'met' if result['p99_met'] else 'NOT met'}); "
                  f"{load['backend_calls_per_s']} backend calls/s (ARM allows {ARM_READS_PER_S}: "
                  f"{'within' if result['arm_budget_met'] else 'OVER'}); load average after each phase "
                  f"{load['load_1min_after_each_phase']}")
            print(f"{setting.label}: {args.stuck_calls} calls stuck {args.stuck:g} s in ml-stuck; another "
                  f"conversation on ml-prod: median {isolation['baseline_p50_ms']:.0f} -> {isolation['during_p50_ms']:.0f} ms, "
                  f"max {isolation['baseline_max_ms']:.0f} -> {isolation['during_max_ms']:.0f} ms "
                  f"({'met' if result['isolation_met'] else 'NOT met'}); load {isolation['load_1min']}", flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--pool", type=int, nargs="+", default=[8], help="MLOPSBOT_AZURE_MAX_CONCURRENCY values")
    parser.add_argument("--cache", type=float, default=5.0,
                        help="MLOPSBOT_READ_CACHE_SECONDS of the shared-reads setting (its anchor runs with 0)")
    parser.add_argument("--phases", type=int, default=4, help="load phases per setting, interleaved")
    parser.add_argument("--stuck", type=float, default=5.0, help="seconds each call to the stuck workspace takes")
    parser.add_argument("--stuck-calls", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL",
                 "MLOPSBOT_AZURE_MAX_CONCURRENCY"):
        os.environ.pop(name, None)
    load_before = _common.load_average()
    print(f"load average {load_before} on {os.cpu_count()} cores: latencies from a loaded machine are upper bounds",
          flush=True)
    with tempfile.TemporaryDirectory() as data:
        os.chdir(data)
        results = asyncio.run(run(args, Path(data)))
    _common.write_results("no_blocking", {"backend_seconds": BACKEND_SECONDS, "settings": results},
                          {"p99_ms_at_most": TARGET_P99_MS, "backend_calls_per_s_at_most": ARM_READS_PER_S,
                           "isolation": f"another conversation's max latency within {ISOLATION_SLACK_MS:g} ms "
                                        "of its max without the stuck workspace"},
                          load_before=load_before)

if __name__ == "__main__":
    main()
