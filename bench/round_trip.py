"""Round trip over HTTP through the real CloudAdapter, side by side with a plain botbuilder echo bot.

Four servers run as their own processes, as they would in production: the bot (bot.app.create_app
on the local demo backend over a temporary data directory), a minimal botbuilder echo bot (an
ActivityHandler on the same CloudAdapter), the same echo bot with the framework fix the bot carried
when issue 21 set its targets (bot/teams.py: msrest's retry policy from a frozenset, about 10 ms of
CPU per client; the anchor of the targets "0.8 for help, 0.9 for the endpoint"), and that echo bot
with the bot's later framework change too (bot/teams.py:KeptAuthentication: the connector clients
and their token kept instead of built for every activity), so that the bot is compared with what
a new user gets from botbuilder, with the issue's anchor, and with the framework's floor once every
framework change the bot makes is in (what is left is the bot's own work). This process is Teams: it posts activities to each
(N concurrent conversations, each sending its next activity as soon as the previous one was
answered) and runs the connector stand-in that receives every reply, counting them per
conversation. Scenarios: `help`, `endpoint fraud-api` and a card click (an Action.Execute invoke
on the endpoint card's Refresh button, answered with the refreshed card in the invoke response);
the echo bot echoes the same activities (a message for a message, a card in the invoke answer for
a click). The bots take
turns, several rounds each, each going first in turn, so that a change of load on a shared
machine hits all alike.

    python bench/round_trip.py [--seconds 4] [--rounds 3] [--concurrency 8 32] [--profile]

Prints throughput, p50 and p99 per bot, scenario and concurrency, each server's CPU time per turn,
and the ratios of the bot to each echo bot (targets: at least 0.9 of the plain echo bot; 0.8 and 0.9
of the echo bot with the retry-policy fix for `help` and the endpoint), and writes bench/results/round_trip.json. With --profile, the bot runs one
more phase under cProfile and the functions where its time goes are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_importable()

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BOT_ID = "28:mlops-bot"
SCENARIOS = ("help", "endpoint", "click")
KINDS = ("echo", "echo-fixed", "echo-kept", "bot")
TARGET_RATIO = 0.9
# against the echo bot with the same framework fix (issue 21): what the bot costs above botbuilder's floor
TARGET_RATIO_FIXED = {"help": 0.8, "endpoint": 0.9}
CARD_TYPE = "application/vnd.microsoft.card.adaptive"


# ---------------------------------------------------------------- the servers (child processes)

def echo_app(fixed: bool = False, kept: bool = False) -> web.Application:
    """A plain botbuilder echo bot on CloudAdapter, as a new user writes it from the samples.
    `fixed`: with the framework fix the bot carried when issue 21 set its targets (bot/teams.py:
    msrest's retry policy built from a frozenset): the anchor of those targets. `kept`: also with
    the bot's later framework change (bot/teams.py:KeptAuthentication, the connector clients and
    their token kept), so that the bot's own cost per turn shows once the framework costs both alike."""
    if fixed:
        from msrest.universal_http.requests import ClientRetryPolicy
        ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)
    from botbuilder.core import ActivityHandler, InvokeResponse, MessageFactory, TurnContext
    from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
    from botbuilder.schema import AdaptiveCardInvokeResponse

    class Config:
        APP_ID = ""
        APP_PASSWORD = ""
        APP_TYPE = "MultiTenant"
        APP_TENANTID = ""

    class EchoBot(ActivityHandler):
        async def on_message_activity(self, turn_context: TurnContext) -> None:
            await turn_context.send_activity(MessageFactory.text(f"You said: {turn_context.activity.text}"))

        async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
            card = {"type": "AdaptiveCard", "version": "1.5", "body": [
                {"type": "TextBlock", "text": f"You clicked {turn_context.activity.value['action']['verb']}."}]}
            return InvokeResponse(status=200, body=AdaptiveCardInvokeResponse(
                status_code=200, type="application/vnd.microsoft.card.adaptive", value=card))

    if kept:
        from bot.teams import KeptAuthentication
        adapter = CloudAdapter(KeptAuthentication(Config()))
    else:
        adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(Config()))
    bot = EchoBot()

    async def messages(request: web.Request) -> web.StreamResponse:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    return app


def bot_app(data: Path) -> web.Application:
    from bot.app import create_app
    from bot.settings import load_settings
    return create_app(load_settings(data_dir=data, host="127.0.0.1"), reset_demo=True)


def serve(kind: str, data: Path, profile: str | None) -> None:
    """Run one server on a free port; print `PORT <n>`; stop on SIGTERM (writing the profile)."""
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL"):
        os.environ.pop(name, None)
    os.chdir(data)                               # no stray .env file is read
    import logging
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        app = bot_app(data) if kind == "bot" else echo_app(fixed=kind != "echo", kept=kind == "echo-kept")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        print(f"PORT {port}", flush=True)
        await stop.wait()
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        await runner.cleanup()

    asyncio.run(main())


class Server:
    def __init__(self, kind: str, data: Path, profile: str | None = None) -> None:
        self.kind, self.data, self.profile = kind, data, profile
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "Server":
        command = [sys.executable, __file__, "--serve", self.kind, "--data", str(self.data)]
        if self.profile:
            command += ["--profile-to", self.profile]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"the {self.kind} server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.split()[1]}/api/messages"
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------- Teams: the load and the connector

class Connector:
    """The Bot Connector service both bots reply to: counts the replies of each conversation."""

    def __init__(self) -> None:
        self.replies: Counter[str] = Counter()
        self.cards: dict[str, dict] = {}
        self._ids = itertools.count(1)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        conversation = request.match_info["conversation"]
        self.replies[conversation] += 1
        for attachment in body.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                self.cards[conversation] = attachment["content"]
        return web.json_response({"id": f"activity-{next(self._ids)}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v3/conversations/{conversation}/activities{tail:.*}", self.receive)
        return app


class Teams:
    def __init__(self, service_url: str, session: aiohttp.ClientSession, connector: Connector) -> None:
        self.service_url, self.session, self.connector = service_url, session, connector
        self._ids = itertools.count(1)

    def activity(self, type_: str, user: int, conversation: str, **extra: Any) -> dict[str, Any]:
        return {"type": type_, "id": f"1{next(self._ids):012d}", "timestamp": "2026-11-26T10:00:00.000Z",
                "serviceUrl": self.service_url, "channelId": "msteams",
                "from": {"id": f"29:bench-{user}", "name": f"User {user}",
                         "aadObjectId": f"00000000-0000-0000-0000-{user:012d}"},
                "conversation": {"id": conversation, "conversationType": "personal", "tenantId": TENANT},
                "recipient": {"id": BOT_ID, "name": "MLOps bot"}, "channelData": {"tenant": {"id": TENANT}},
                "locale": "en-US", **extra}

    def for_scenario(self, scenario: str, user: int, conversation: str, click: dict[str, Any]) -> dict[str, Any]:
        if scenario == "help":
            return self.activity("message", user, conversation, text="help", textFormat="plain")
        if scenario == "endpoint":
            return self.activity("message", user, conversation, text="endpoint fraud-api", textFormat="plain")
        return self.activity("invoke", user, conversation, name="adaptiveCard/action", value={
            "action": {"type": "Action.Execute", "verb": click["verb"], "data": click["data"]},
            "trigger": "manual"})

    async def post(self, url: str, body: dict[str, Any]) -> tuple[int, bytes]:
        async with self.session.post(url, json=body) as response:
            return response.status, await response.read()


def pick_click(card: dict[str, Any]) -> dict[str, Any]:
    """The endpoint card's first Action.Execute button: Refresh, today (its only one)."""
    def walk(node: Any):
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    for action in walk(card):
        return {"verb": action["verb"], "data": action.get("data") or {}, "title": action.get("title")}
    raise RuntimeError("the endpoint card has no button to click")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(teams: Teams, url: str, kind: str, scenario: str, concurrency: int, seconds: float,
                click: dict[str, Any], round_: int, pid: int) -> dict[str, Any]:
    """`concurrency` conversations, each posting its next activity when the last one was answered.

    Besides throughput and latency, the server's own CPU time per turn (from /proc): a figure a busy
    machine distorts far less than throughput, since it does not count the time spent waiting for a core."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    posted: Counter[str] = Counter()
    missing_cards: list[str] = []
    conversations = [f"a:bench-{kind}-{scenario}-{concurrency}-{round_}-{i}" for i in range(concurrency)]
    before = {c: teams.connector.replies[c] for c in conversations}
    deadline = time.perf_counter() + seconds

    async def conversation(i: int) -> None:
        conversation_id = conversations[i]
        while time.perf_counter() < deadline:
            body = teams.for_scenario(scenario, i, conversation_id, click)
            started = time.perf_counter()
            status, answer = await teams.post(url, body)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            if scenario != "click":
                posted[conversation_id] += 1              # a message is answered through the connector
            elif CARD_TYPE.encode() not in answer:
                missing_cards.append(conversation_id)     # a click, in the invoke answer

    started, cpu_before = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(conversation(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.2)                         # a straggling reply, if any, still counts
    cpu = cpu_seconds(pid) - cpu_before
    missing = sum(max(0, posted[c] - (teams.connector.replies[c] - before[c])) for c in conversations)
    missing += len(missing_cards)
    return {"turns": len(latencies), "seconds": elapsed, "latencies": latencies, "cpu_seconds": cpu,
            "statuses": dict(statuses), "replies_missing": missing}


def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for p in phases for x in p["latencies"]]
    turns = sum(p["turns"] for p in phases)
    seconds = sum(p["seconds"] for p in phases)
    statuses: Counter[int] = Counter()
    for p in phases:
        statuses.update(p["statuses"])
    return {"turns": turns, "throughput_per_s": round(turns / seconds, 1),
            "server_cpu_ms_per_turn": round(sum(p["cpu_seconds"] for p in phases) * 1000 / max(turns, 1), 2),
            "p50_ms": round(_common.percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(_common.percentile(latencies, 99) * 1000, 1),
            "statuses": {str(k): v for k, v in statuses.items()},
            "replies_missing": sum(p["replies_missing"] for p in phases)}


async def drive(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    connector = Connector()
    runner = web.AppRunner(connector.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    results: dict[str, Any] = {}
    connector_limit = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector_limit) as session:
        teams = Teams(service_url, session, connector)
        with Server("echo", data / "echo") as echo, Server("echo-fixed", data / "echo-fixed") as fixed, \
                Server("echo-kept", data / "echo-kept") as kept, \
                Server("bot", data / "bot") as bot:
            urls = {"echo": echo.url, "echo-fixed": fixed.url, "echo-kept": kept.url, "bot": bot.url}
            pids = {"echo": echo.pid, "echo-fixed": fixed.pid, "echo-kept": kept.pid, "bot": bot.pid}
            # warm up all three, and find the card button to click
            for kind in KINDS:
                for _ in range(3):
                    await teams.post(urls[kind], teams.for_scenario("endpoint", 0, "a:warm-up", {}))
            card = connector.cards.get("a:warm-up")
            if card is None:
                raise RuntimeError("the bot sent no card for `endpoint fraud-api`")
            click = pick_click(card)
            print(f"card click: the {click['title']!r} button (verb {click['verb']!r}) of the endpoint card")
            for concurrency in args.concurrency:
                for scenario in SCENARIOS:
                    collected: dict[str, list] = {kind: [] for kind in KINDS}
                    for round_ in range(args.rounds):
                        first = round_ % len(KINDS)
                        order = KINDS[first:] + KINDS[:first]                 # each goes first in turn
                        for kind in order:
                            collected[kind].append(await phase(teams, urls[kind], kind, scenario, concurrency,
                                                               args.seconds, click, round_, pids[kind]))
                    echo_figures, bot_figures = summarize(collected["echo"]), summarize(collected["bot"])
                    fixed_figures = summarize(collected["echo-fixed"])
                    kept_figures = summarize(collected["echo-kept"])
                    ratio_kept = round(bot_figures["throughput_per_s"] / kept_figures["throughput_per_s"], 3)
                    ratio = round(bot_figures["throughput_per_s"] / echo_figures["throughput_per_s"], 3)
                    ratio_fixed = round(bot_figures["throughput_per_s"] / fixed_figures["throughput_per_s"], 3)
                    cpu_ratio_fixed = round(fixed_figures["server_cpu_ms_per_turn"]
                                            / bot_figures["server_cpu_ms_per_turn"], 3)
                    key = f"{scenario}@{concurrency}"
                    results[key] = {"scenario": scenario, "concurrency": concurrency, "echo": echo_figures,
                                    "echo_fixed": fixed_figures, "echo_kept": kept_figures, "bot": bot_figures,
                                    "ratio": ratio, "ratio_to_kept_echo": ratio_kept,
                                    "ratio_to_fixed_echo": ratio_fixed, "cpu_ratio_to_fixed_echo": cpu_ratio_fixed,
                                    "load_1min": _common.load_average()}
                    print(f"{key:>14}: echo {echo_figures['throughput_per_s']:7.1f}/s "
                          f"p50 {echo_figures['p50_ms']:6.1f} p99 {echo_figures['p99_ms']:6.1f} ms | "
                          f"bot {bot_figures['throughput_per_s']:7.1f}/s p50 {bot_figures['p50_ms']:6.1f} "
                          f"p99 {bot_figures['p99_ms']:6.1f} ms | ratio {ratio:.2f} "
                          f"(to the fixed echo {fixed_figures['throughput_per_s']:.1f}/s: {ratio_fixed:.2f}; "
                          f"to the echo with the bot's framework changes {kept_figures['throughput_per_s']:.1f}/s: "
                          f"{ratio_kept:.2f}) "
                          f"| server CPU a turn: echo {echo_figures['server_cpu_ms_per_turn']:.2f}, fixed echo "
                          f"{fixed_figures['server_cpu_ms_per_turn']:.2f}, kept echo "
                          f"{kept_figures['server_cpu_ms_per_turn']:.2f}, bot {bot_figures['server_cpu_ms_per_turn']:.2f} ms "
                          f"(fixed echo / bot {cpu_ratio_fixed:.2f}) "
                          f"(load {results[key]['load_1min']})", flush=True)
        if args.profile:
            profile_path = str(data / "bot.prof")
            with Server("bot", data / "bot", profile=profile_path) as bot:
                for scenario in SCENARIOS:
                    await phase(teams, bot.url, "bot", scenario, 8, args.seconds, click, 99, bot.pid)
            stats = pstats.Stats(profile_path)
            stats.sort_stats("cumulative").print_stats(r"(bot|commands|adapters)/|json|sqlite|serializ", 30)
            stats.sort_stats("tottime").print_stats(25)
    await runner.cleanup()
    return {"click_button": click, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="phases per bot, scenario and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--profile", action="store_true", help="profile the bot afterwards (cProfile)")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        Path(args.data).mkdir(parents=True, exist_ok=True)
        serve(args.serve, Path(args.data), args.profile_to)
        return
    load_before = _common.load_average()
    print(f"load average {load_before} on {os.cpu_count()} cores: figures from a loaded machine are upper bounds "
          "(latency) and lower bounds (throughput)")
    with tempfile.TemporaryDirectory() as data:
        outcome = asyncio.run(drive(args, Path(data)))
    ratios = [r["ratio"] for r in outcome["results"].values()]
    fixed = [r["ratio_to_fixed_echo"] for r in outcome["results"].values()]
    met = all(r >= TARGET_RATIO for r in ratios)
    print(f"lowest ratio {min(ratios):.2f} (target at least {TARGET_RATIO}): {'met' if met else 'NOT met'}; "
          f"lowest against the echo bot with the same framework fix: {min(fixed):.2f}")
    fixed_met = {}
    for key, result in outcome["results"].items():
        wanted = TARGET_RATIO_FIXED.get(result["scenario"])
        if wanted is not None:
            fixed_met[key] = result["ratio_to_fixed_echo"] >= wanted
            print(f"{key}: {result['ratio_to_fixed_echo']:.2f} of the echo bot with the fix (target at least "
                  f"{wanted}): {'met' if fixed_met[key] else 'NOT met'} (load {result['load_1min']})")
    _common.write_results("round_trip", {**outcome, "lowest_ratio": min(ratios),
                                         "lowest_ratio_to_fixed_echo": min(fixed), "target_met": met,
                                         "fixed_echo_targets_met": fixed_met},
                          {"throughput_ratio_at_least": TARGET_RATIO,
                           "throughput_ratio_to_fixed_echo_at_least": TARGET_RATIO_FIXED},
                          load_before=load_before)


if __name__ == "__main__":
    main()
