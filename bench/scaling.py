"""How do `endpoints`, `models`, `jobs` and `digest now` grow with the size of the local workspace?

For each size (10, 100, 1,000 online endpoints; the demo then holds size + 1 models of three
versions and one training job per generated model; adapters/local/demo.py), the bot is built as
`mlops-bot serve` builds it (bot.app: settings with MLOPSBOT_DEMO_SIZE, the local workspace
behind the non-blocking facade, SQLite storage, the real handler and registry) and each command
is typed into the handler in-process (no HTTP: this measures the commands and the workspace, not
botbuilder). Each command runs once to warm up, then ROUNDS times; the median is reported, and
the growth from one size to the next (10 times more endpoints should cost at most about 10 times
more: linear). Reads are not reused between turns (MLOPSBOT_READ_CACHE_SECONDS=0, `--read-cache`
to change it): a kept read would answer the later turns and hide how the workspace's reads grow.

    .venv/bin/python bench/scaling.py                 # prints the figures, writes bench/results/scaling.json
    .venv/bin/python bench/scaling.py --sizes 10 100 --rounds 3
    .venv/bin/python bench/scaling.py --profile 1000  # cProfile of `digest now` at that size, top 25,
                                                      # the event loop's and the pool threads' CPU

Target: `digest now` at 1,000 endpoints in under 1 s, and every command's cost linear in the size.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from _common import ensure_importable, load_average, write_results

ensure_importable()

from adapters.storage import open_storage  # noqa: E402
from bot.app import build_handler, build_workspaces  # noqa: E402
from bot.handler import Request  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from commands.base.context import User  # noqa: E402

SIZES = (10, 100, 1000)
ROUNDS = 5
COMMANDS = ("endpoints", "models", "jobs", "digest now")
TARGET_DIGEST_SECONDS = 1.0
USER = User(id="bench-1", name="Bench Runner", tenant_id="t1")


class Bot:
    """The bot's handler over a fresh local workspace of `size` endpoints, as `mlops-bot serve` builds it."""

    def __init__(self, data: Path, size: int, read_cache: float = 0.0) -> None:
        policy = data / "direct-policy.toml"
        policy.write_text('[[rule]]\nmode = "direct"\n')
        self.settings = load_settings(data_dir=data, host="127.0.0.1", demo_size=size, policy_file=str(policy),
                                      read_cache_seconds=read_cache)
        self.pools = [ThreadPoolExecutor(max_workers=8), ThreadPoolExecutor(max_workers=2)]
        started = time.perf_counter()
        self.workspaces = build_workspaces(self.settings, self.pools)
        self.seed_seconds = time.perf_counter() - started
        self.store = open_storage(self.settings.effective_storage_url, audit_key=self.settings.audit_key_bytes())
        self.turns = 0

    async def __aenter__(self) -> "Bot":
        await self.store.open()
        self.handler, _ = build_handler(self.settings, self.workspaces, self.store,
                                        clock=lambda: datetime.now(timezone.utc),
                                        spawn=lambda awaitable: awaitable.close())     # read commands only
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()
        for pool in self.pools:
            pool.shutdown(wait=True)
        for ws in self.workspaces:
            ws.service.close()

    async def say(self, text: str):
        self.turns += 1
        reply = await self.handler.handle(Request(USER, "bench-conversation", text=text,
                                                  activity_id=f"bench-{self.turns}", conversation_kind="personal"))
        if reply.card is None or "incident" in reply.text.lower():
            raise RuntimeError(f"`{text}` did not answer with a card: {reply.text[:200]}")
        return reply


async def measure(size: int, rounds: int, read_cache: float) -> dict:
    with tempfile.TemporaryDirectory() as data:
        bot = Bot(Path(data), size, read_cache)
        async with bot:
            local = next(iter(bot.workspaces)).service
            counts = {"endpoints": len(local.names("endpoint")), "models": len(local.names("model")),
                      "jobs": len(local.names("job"))}
            figures = {"size": size, "counts": counts, "seed_seconds": round(bot.seed_seconds, 3), "commands": {}}
            for text in COMMANDS:
                await bot.say(text)                                     # warm-up
                times, cpu = [], []
                for _ in range(rounds):
                    started, started_cpu = time.perf_counter(), time.process_time()
                    await bot.say(text)
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)      # every thread of this process
                figures["commands"][text] = {"median_ms": round(statistics.median(times) * 1000, 1),
                                             "min_ms": round(min(times) * 1000, 1),
                                             "max_ms": round(max(times) * 1000, 1),
                                             "median_cpu_ms": round(statistics.median(cpu) * 1000, 1),
                                             "load": load_average()}
            digest = await bot.say("digest now")
            figures["digest_card_bytes"] = len(str(digest.card).encode())
    return figures


async def profile(size: int, read_cache: float) -> str:
    """CPU time of one `digest now` on every thread of the bot: cProfile sees one thread only, and
    the workspace's reads and the storage's statements run on pool threads (the storage's worker is
    a ThreadPoolExecutor too), so each call submitted to a pool is profiled on its own thread."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    plain = ThreadPoolExecutor.submit

    def submit(pool, fn, /, *args, **kwargs):
        def profiled():
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profiler.disable()
                with lock:
                    profiles.append(profiler)
        return plain(pool, profiled)

    with tempfile.TemporaryDirectory() as data:
        async with Bot(Path(data), size, read_cache) as bot:
            await bot.say("digest now")
            profiler = cProfile.Profile(time.thread_time)      # CPU, not wall: the machine may be busy
            ThreadPoolExecutor.submit = submit
            try:
                profiler.enable()
                await bot.say("digest now")
                profiler.disable()
            finally:
                ThreadPoolExecutor.submit = plain
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    for other in profiles:
        stats.add(other)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def growth(results: list[dict]) -> dict:
    """Per command, how many times longer each size took than the one before, beside how many
    times larger it was (linear: the two are about equal; super-linear: the first is larger)."""
    out = {}
    for text in COMMANDS:
        steps = []
        for smaller, larger in zip(results, results[1:]):
            a, b = smaller["commands"][text], larger["commands"][text]
            steps.append({"from": smaller["size"], "to": larger["size"], "size_ratio": larger["size"] / smaller["size"],
                          "time_ratio": round(b["median_ms"] / a["median_ms"], 2) if a["median_ms"] else None,
                          "cpu_ratio": round(b["median_cpu_ms"] / a["median_cpu_ms"], 2)
                          if a["median_cpu_ms"] else None})
        out[text] = steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--read-cache", type=float, default=0.0, metavar="SECONDS",
                        help="reuse a read for this long (the bot's MLOPSBOT_READ_CACHE_SECONDS; default 0: "
                             "every turn reads the workspace)")
    parser.add_argument("--profile", type=int, metavar="SIZE", help="profile `digest now` at SIZE instead")
    args = parser.parse_args()
    if args.profile:
        print(asyncio.run(profile(args.profile, args.read_cache)))
        return
    load_before = load_average()
    results = [asyncio.run(measure(size, args.rounds, args.read_cache)) for size in sorted(args.sizes)]
    steps = growth(results)
    print(f"median of {args.rounds} turns each, in-process through the bot's handler, reads reused for "
          f"{args.read_cache:g} s (load before {load_before})")
    print(f"{'endpoints':>10} {'models':>7} {'jobs':>6} " + " ".join(f"{c:>12}" for c in COMMANDS) + "    load")
    for r in results:
        c = r["counts"]
        times = " ".join(f"{r['commands'][t]['median_ms']:>9.1f} ms" for t in COMMANDS)
        print(f"{c['endpoints']:>10} {c['models']:>7} {c['jobs']:>6} {times}    {r['commands']['digest now']['load']}")
        cpu = " ".join(f"{r['commands'][t]['median_cpu_ms']:>9.1f} ms" for t in COMMANDS)
        print(f"{'CPU':>26} {cpu}")
    for text in COMMANDS:
        print(f"  {text}: " + ", ".join(f"{s['from']}→{s['to']} ×{s['time_ratio']} wall, ×{s['cpu_ratio']} CPU "
                                         f"(size ×{s['size_ratio']:g})" for s in steps[text]))
    largest = results[-1]
    digest_seconds = largest["commands"]["digest now"]["median_ms"] / 1000
    met = largest["size"] >= 1000 and digest_seconds < TARGET_DIGEST_SECONDS
    print(f"target: `digest now` at 1,000 endpoints under {TARGET_DIGEST_SECONDS:g} s: "
          f"{'met' if met else 'MISSED' if largest['size'] >= 1000 else 'not measured'} "
          f"({digest_seconds:.3f} s at {largest['size']})")
    write_results("scaling", {"rounds": args.rounds, "read_cache_seconds": args.read_cache, "sizes": results, "growth": steps,
                              "digest_now_within_target": met},
                  {"digest_now_at_1000_endpoints_seconds": TARGET_DIGEST_SECONDS,
                   "growth": "linear: time ratio about the size ratio"}, load_before=load_before)


if __name__ == "__main__":
    main()
