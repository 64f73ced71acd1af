"""How long does a model-health digest of 500 online endpoints take when each metric call takes 200 ms?

A slow fake workspace (every call sleeps: metric calls METRIC_SECONDS, the others OTHER_SECONDS)
sits behind the real NonBlockingService facade with the default pool of 8 threads
(MLOPSBOT_AZURE_MAX_CONCURRENCY), and real SQLite storage. Measured:

- batched: the digest as the bot gathers it (`endpoints_metrics`, 50 endpoints a call, as Azure
  Monitor's metrics:getBatch allows), plus building the card;
- one call per endpoint: the same with batches of one, for comparison.

    .venv/bin/python bench/digest.py          # prints the figures, writes bench/results/digest.json

Target: the batched digest within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.nonblocking import NonBlockingService  # noqa: E402
from adapters.service import (Compute, Deployment, EndpointMetrics, Job, ModelVersion, OnlineEndpoint)  # noqa: E402
from adapters.storage import open_storage  # noqa: E402
from commands.digests.digest import gather  # noqa: E402
from commands.digests.digest_card import digest_card  # noqa: E402

ENDPOINTS = 500
METRIC_SECONDS = 0.2
OTHER_SECONDS = 0.2
POOL_THREADS = 8
TARGET_SECONDS = 5.0
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


class SlowWorkspace:
    """Just the calls a digest makes, each as slow as a remote service."""

    def __init__(self, endpoints: int) -> None:
        self.endpoints = [OnlineEndpoint(f"endpoint-{i:03d}", "Succeeded", traffic={"blue": 90, "green": 10},
                                         deployments=(Deployment("blue", f"endpoint-{i:03d}"),
                                                      Deployment("green", f"endpoint-{i:03d}")))
                          for i in range(endpoints)]
        self.metric_calls = 0
        self._lock = threading.Lock()

    def _figures(self, name: str) -> EndpointMetrics:
        i = int(name.rsplit("-", 1)[1])
        return EndpointMetrics(name, 60, latency_p50_ms=20.0 + i % 7, latency_p99_ms=900.0 + i,
                               requests_per_minute=100.0 + i, requests_by_status={"2xx": 99.0 + i, "5xx": 1.0})

    def endpoint_metrics(self, endpoint: str, window_minutes: int = 60) -> EndpointMetrics:
        with self._lock:
            self.metric_calls += 1
        time.sleep(METRIC_SECONDS)
        return self._figures(endpoint)

    def endpoints_metrics(self, endpoints, window_minutes: int = 60) -> dict[str, EndpointMetrics]:
        with self._lock:
            self.metric_calls += 1
        time.sleep(METRIC_SECONDS)
        return {e.name: self._figures(e.name) for e in endpoints}

    def list_endpoints(self) -> list[OnlineEndpoint]:
        time.sleep(OTHER_SECONDS)
        return list(self.endpoints)

    def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        time.sleep(OTHER_SECONDS)
        return [ModelVersion(f"model-{i:02d}", "3", stage or "None") for i in range(20)]

    def list_monitors(self) -> list:
        time.sleep(OTHER_SECONDS)
        return []

    def list_jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        time.sleep(OTHER_SECONDS)
        return [Job(f"job-{i}", status or "Completed", ended_at=NOW) for i in range(5)] if status == "Failed" else []

    def list_compute(self) -> list[Compute]:
        time.sleep(OTHER_SECONDS)
        return [Compute("ci-alice", "computeinstance", "Running", "Standard_DS11_v2")]


async def measure(store, pool, batch_size: int) -> dict:
    backend = SlowWorkspace(ENDPOINTS)
    ml = NonBlockingService(backend, name="ml-prod", environment="prod", pool=pool, timeout=60)
    started = time.perf_counter()
    gathered = await gather(ml, store, conversation_id=f"bench-{batch_size}", now=NOW, batch_size=batch_size)
    gathered_at = time.perf_counter()
    card = digest_card(gathered.digest)
    finished = time.perf_counter()
    assert len(gathered.digest.endpoints) == ENDPOINTS and not any(e.unreadable for e in gathered.digest.endpoints)
    return {"seconds": round(finished - started, 3), "gather_seconds": round(gathered_at - started, 3),
            "card_seconds": round(finished - gathered_at, 3), "metric_calls": backend.metric_calls,
            "card_bytes": len(json.dumps(card, ensure_ascii=False).encode("utf-8"))}


async def main(out: Path) -> dict:
    with tempfile.TemporaryDirectory() as data, ThreadPoolExecutor(max_workers=POOL_THREADS) as pool:
        store = open_storage(f"sqlite:///{data}/bot.db")
        await store.open()
        try:
            batched = await measure(store, pool, 50)
            single = await measure(store, pool, 1)
        finally:
            await store.close()
    results = {"endpoints": ENDPOINTS, "metric_call_seconds": METRIC_SECONDS, "other_call_seconds": OTHER_SECONDS,
               "pool_threads": POOL_THREADS, "target_seconds": TARGET_SECONDS, "batched": batched,
               "one_call_per_endpoint": single, "within_target": batched["seconds"] <= TARGET_SECONDS}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "digest.json")
    figures = asyncio.run(main(parser.parse_args().out))
    b, s = figures["batched"], figures["one_call_per_endpoint"]
    print(f"digest of {ENDPOINTS} endpoints, {METRIC_SECONDS * 1000:.0f} ms per metric call, {POOL_THREADS} threads")
    print(f"  batched:              {b['seconds']:.2f} s ({b['metric_calls']} metric calls, card {b['card_bytes']} bytes)")
    print(f"  one call per endpoint: {s['seconds']:.2f} s ({s['metric_calls']} metric calls)")
    print(f"  target {TARGET_SECONDS:g} s: {'met' if figures['within_target'] else 'MISSED'}")
