"""An alert fanned out to 1,000 conversations of one tenant, through the real outbox worker.

The bot is the real app (bot.app.create_app over a temporary SQLite database): its outbox worker
(bot/outbox.py) claims the items and sends each through TeamsBot.deliver (botbuilder's
CloudAdapter.continue_conversation) to a connector stand-in that enforces Teams' documented
limits, counted on arrival: per conversation 7 in 1 s, 8 in 2 s, 60 in 30 s; per tenant 30 in 1 s
(an excess is answered 429 with Retry-After), and that also answers 429 at random (RANDOM_429 of
the sends, Retry-After 1 s) as Teams does under load. One alert card per conversation is put in
the outbox in one transaction, as commands.alerts.alerts.publish does; the clock starts when it commits.

Figures: total time until the last message was accepted, against the minimum the tenant limit
allows ((ceil(N / 30) - 1) seconds: 30 go at once, then 30 more each second); target at most 1.1
times. Messages lost (never accepted) or duplicated (accepted twice for one conversation);
target none. Also how many 429s the worker provoked itself (limit violations) besides the random ones.

    python bench/fan_out.py [--conversations 1000] [--random-429 0.03]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_importable()

from adapters.storage import ConversationRecord, outbox  # noqa: E402
from bot.app import STORAGE, WORKER, create_app  # noqa: E402
from bot.settings import load_settings  # noqa: E402

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CONVERSATION_WINDOWS = ((1.0, 7), (2.0, 8), (30.0, 60))
TENANT_WINDOWS = ((1.0, 30),)
TARGET_RATIO = 1.1


class LimitedConnector:
    """The Bot Connector with Teams' rate limits, counted on arrival, and random 429s."""

    def __init__(self, random_429: float, seed: int = 12) -> None:
        self.random_429 = random_429
        self.rng = random.Random(seed)
        self.accepted: collections.Counter[str] = collections.Counter()
        self.accepted_at: list[float] = []
        self.random_refusals = 0
        self.limit_refusals = 0
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._ids = 0

    def _wait(self, key: str, windows, now: float) -> float:
        times = self._times[key]
        while times and times[0] <= now - max(w for w, _ in windows):
            times.popleft()
        wait = 0.0
        for window, limit in windows:
            recent = [t for t in times if t > now - window]
            if len(recent) >= limit:
                wait = max(wait, recent[-limit] + window - now)
        return wait

    async def receive(self, request: web.Request) -> web.Response:
        await request.read()
        conversation = request.match_info["conversation"]
        now = time.monotonic()
        if self.rng.random() < self.random_429:
            self.random_refusals += 1
            return web.json_response({"error": {"code": "Throttled"}}, status=429, headers={"Retry-After": "1"})
        wait = max(self._wait(f"c:{conversation}", CONVERSATION_WINDOWS, now),
                   self._wait(f"t:{TENANT}", TENANT_WINDOWS, now))
        if wait > 0:
            self.limit_refusals += 1
            return web.json_response({"error": {"code": "Throttled"}}, status=429,
                                     headers={"Retry-After": f"{math.ceil(wait)}"})
        self._times[f"c:{conversation}"].append(now)
        self._times[f"t:{TENANT}"].append(now)
        self.accepted[conversation] += 1
        self.accepted_at.append(now)
        self._ids += 1
        return web.json_response({"id": f"activity-{self._ids}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/v3/conversations/{conversation}/activities{tail:.*}", self.receive)
        return app


def alert_card(n: int) -> dict:
    return {"type": "AdaptiveCard", "version": "1.5", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "body": [{"type": "TextBlock", "text": "Drift alert: fraud-model", "weight": "Bolder", "size": "Medium"},
                     {"type": "FactSet", "facts": [{"title": "Monitor", "value": "fraud-drift"},
                                                   {"title": "Feature", "value": "amount"},
                                                   {"title": "Wasserstein", "value": "0.31 (threshold 0.1)"}]},
                     {"type": "TextBlock", "text": f"Alert #{n}", "isSubtle": True}]}


async def run(conversations: int, random_429: float, data: Path) -> dict:
    connector = LimitedConnector(random_429)
    runner = web.AppRunner(connector.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    settings = load_settings(data_dir=data, host="127.0.0.1")
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server()
    storage = app[STORAGE]
    ids = [f"a:fan-out-{i:04d}" for i in range(conversations)]
    now = datetime.now(timezone.utc)
    for start in range(0, conversations, 200):
        records = [ConversationRecord(
            conversation_id=c, kind="personal", tenant_id=TENANT, team_id="", channel_id="", user_id=f"user-{c}",
            updated_at=now, reference={"activityId": "1", "user": {"id": f"29:{c}"},
                                       "bot": {"id": "28:mlops-bot", "name": "MLOps bot"},
                                       "conversation": {"id": c, "conversationType": "personal", "tenantId": TENANT},
                                       "channelId": "msteams", "serviceUrl": service_url})
            for c in ids[start:start + 200]]
        for record in records:
            await storage.save_conversation(record)

    async def publish(tx) -> None:
        for i, c in enumerate(ids):
            await outbox.enqueue(tx, c, {"text": "Drift alert: fraud-model", "card": alert_card(i)},
                                 dedupe_key=f"bench-alert:{c}", tenant_id=TENANT, now=datetime.now(timezone.utc))

    load_start = _common.load_average()
    await storage.run_transaction(publish)
    started = time.monotonic()
    app[WORKER].wake()
    deadline = started + 30 + conversations / 30 * 3
    while sum(connector.accepted.values()) < conversations and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    finished = connector.accepted_at[-1] if connector.accepted_at else time.monotonic()
    await asyncio.sleep(1.0)                    # a duplicate would arrive now
    states = await storage.run_transaction(
        lambda tx: tx.fetch("SELECT state, COUNT(*) FROM outbox GROUP BY state"), write=False)
    await server.close()
    await runner.cleanup()
    total = finished - started
    minimum = float(math.ceil(conversations / 30) - 1)
    lost = sum(1 for c in ids if connector.accepted[c] == 0)
    duplicated = sum(count - 1 for count in connector.accepted.values() if count > 1)
    accepted = [t - started for t in connector.accepted_at]
    timeline = {f"{q}%": round(accepted[max(0, math.ceil(len(accepted) * q / 100) - 1)], 2)
                for q in (10, 50, 90, 99, 100)} if accepted else {}
    return {"conversations": conversations, "random_429_rate": random_429, "total_seconds": round(total, 2),
            "accepted_by_seconds": timeline,
            "minimum_seconds": minimum, "ratio": round(total / minimum, 3) if minimum else None,
            "lost": lost, "duplicated": duplicated, "random_429s": connector.random_refusals,
            "limit_429s": connector.limit_refusals, "outbox_states": {str(s): int(n) for s, n in states},
            "load_1min_at_start": load_start, "load_1min_at_end": _common.load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--random-429", type=float, default=0.03, help="share of sends answered 429 at random")
    args = parser.parse_args()
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        os.environ.pop(name, None)
    load_before = _common.load_average()
    with tempfile.TemporaryDirectory() as data:
        os.chdir(data)
        figures = asyncio.run(run(args.conversations, args.random_429, Path(data)))
    met = figures["ratio"] is not None and figures["ratio"] <= TARGET_RATIO and not figures["lost"] \
        and not figures["duplicated"]
    print(f"{figures['conversations']} conversations: {figures['total_seconds']:.1f} s, minimum "
          f"{figures['minimum_seconds']:.0f} s, ratio {figures['ratio']} (target at most {TARGET_RATIO}); "
          f"lost {figures['lost']}, duplicated {figures['duplicated']}; 429s: {figures['random_429s']} random, "
          f"{figures['limit_429s']} for exceeding the limits; outbox {figures['outbox_states']}; "
          f"load {figures['load_1min_at_start']} -> {figures['load_1min_at_end']}")
    print("target met" if met else "target NOT met")
    _common.write_results("fan_out", {**figures, "target_met": met},
                          {"ratio_to_minimum_at_most": TARGET_RATIO, "lost": 0, "duplicated": 0},
                          load_before=load_before)


if __name__ == "__main__":
    main()
