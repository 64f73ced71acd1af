"""The composition root: `create_app(settings)` chooses every implementation and wires the host.

Routes:
    POST /api/messages       Bot Framework activities (JWT-validated when an app id is set)
    POST /api/approvals      a pipeline asks for an approval (bearer token; bot/api.py)
    GET  /api/approvals/{id} its state, for the pipeline to poll
    GET  /api/audit          the audit trail as JSON lines or CSV
    POST /api/events         Event Grid (and OPTIONS: the CloudEvents handshake; bot/ingress.py)
    POST /api/alerts         Azure Monitor alerts, common alert schema (bot/ingress.py)
    GET  /healthz            liveness: the process answers
    GET  /readyz             readiness: storage reachable and a backend configured; outbox pending/dead counts

Background tasks, started with the app: the outbox worker (every proactive message), the
expiry of approval requests, the watches after traffic changes, jobs and the local monitors'
drift alerts (bot/watch.py) and the digest scheduler (bot/digests.py).

Malformed requests are answered with 4xx and a short JSON reason before they reach botbuilder,
whose own parsing would turn them into HTTP 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from adapters.nonblocking import NonBlockingService
from adapters.service import AzureScope
from adapters.storage import Storage, StorageError, open_storage, outbox
from adapters.storage.outbox import OutboxItem
from bot.api import ApprovalsApi
from bot.digests import DigestScheduler
from bot.handler import ChatHandler
from bot.ingress import Ingress, prune_forever
from bot.outbox import OutboxWorker
from bot.watch import WatchLoop
from bot.settings import Settings
from bot.teams import TeamsBot, build_adapter, keep_signing_keys_fresh
from commands.catalog import catalog
from commands.context import Reply, Workspaces
from commands.gate import Gate, record_policy

log = logging.getLogger(__name__)

MAX_ACTIVITY_BYTES = 256 * 1024
HANDLER = web.AppKey("handler", ChatHandler)
BOT = web.AppKey("bot", TeamsBot)
STORAGE = web.AppKey("storage", Storage)
POOLS = web.AppKey("pools", list)
MAX_PENDING_OPERATIONS = 32
EXPIRY_CHECK_SECONDS = 60.0
WORKER = web.AppKey("outbox", OutboxWorker)
DIGESTS = web.AppKey("digests", DigestScheduler)
TASKS = web.AppKey("tasks", object)
GATE = web.AppKey("gate", Gate)
WATCHES = web.AppKey("watches", WatchLoop)
TELEMETRY = web.AppKey("telemetry", object)        # bot.telemetry.Telemetry, or None (off)


def thread_pools(settings: Settings) -> list[ThreadPoolExecutor]:
    """Threads for SDK calls, and separate ones for waiting on long-running operations.
    `build_workspaces` adds one call pool per further workspace; shut them all down at the end."""
    return [ThreadPoolExecutor(max_workers=settings.azure_max_concurrency, thread_name_prefix="azureml"),
            ThreadPoolExecutor(max_workers=MAX_PENDING_OPERATIONS, thread_name_prefix="azureml-wait")]


def build_workspaces(settings: Settings, pools: list[ThreadPoolExecutor], *, reset_demo: bool = False,
                     observer: Any = None) -> Workspaces:
    """The configured backend's workspaces, each behind the non-blocking facade.

    Each workspace has its own pool of call threads (the first uses `pools[0]`, the others get one
    appended to `pools`): a workspace whose calls hang can exhaust only its own threads, never
    delay another workspace's conversations (measured in bench/no_blocking.py)."""
    waits, wrapped = pools[1], []

    def wrap(service: Any, name: str, environment: str, azure: AzureScope | None = None) -> NonBlockingService:
        calls = pools[0]
        if wrapped:                                  # a further workspace: threads of its own
            calls = ThreadPoolExecutor(max_workers=settings.azure_max_concurrency,
                                       thread_name_prefix=f"azureml-{name}"[:30])
            pools.append(calls)
        wrapped.append(name)
        return NonBlockingService(service, name=name, environment=environment, pool=calls, wait_pool=waits,
                                  timeout=settings.azure_timeout, azure=azure,
                                  read_cache_seconds=settings.read_cache_seconds, observer=observer)

    if settings.backend == "local":
        from adapters.local import LocalWorkspace
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        local = LocalWorkspace(settings.data_dir / "workspace.db")
        if reset_demo:
            local.reset(demo=True)
        info = local.workspace()
        return Workspaces([wrap(local, info.name, info.environment)])

    from adapters.azureml import build_azure_service
    return Workspaces([
        wrap(build_azure_service(ws.subscription_id, ws.resource_group, ws.name, environment=ws.environment,
                                 managed_identity_client_id=settings.managed_identity_client_id or None,
                                 timeout=settings.azure_timeout, metrics_endpoint=ws.metrics_endpoint or None),
             ws.name, ws.environment,
             AzureScope(ws.subscription_id, ws.resource_group, ws.name, ws.tenant_id or settings.app_tenant_id))
        for ws in settings.azure_workspaces
    ])


def build_handler(settings: Settings, workspaces: Workspaces, storage: Storage, *, clock: Callable[[], datetime],
                  spawn: Callable[[Awaitable[Any]], None]) -> tuple[ChatHandler, Gate]:
    """The command handler and the gate every change passes, over the configured policy and roles
    (the web app and the terminal chat share it)."""
    roles = settings.role_book()
    gate = Gate(settings.policy(), storage, clock=clock, roles=roles, approval_channel=settings.approval_channel,
                spawn=spawn)
    handler = ChatHandler(catalog(), workspaces, roles, development=settings.development,
                          allowed_tenants=settings.tenant_allow_list, store=storage, gate=gate, clock=clock,
                          health=settings.health_thresholds())
    return handler, gate


def create_app(settings: Settings, *, workspaces: Workspaces | None = None, storage: Storage | None = None,
               reset_demo: bool = False, clock: Callable[[], datetime] | None = None,
               telemetry: Any = None) -> web.Application:
    """`telemetry`: a bot.telemetry.Telemetry (tests give one over in-memory exporters); by default one
    is started when APPLICATIONINSIGHTS_CONNECTION_STRING is set, and nothing of it exists otherwise."""
    if telemetry is None and settings.applicationinsights_connection_string:
        from bot.telemetry import start_telemetry
        telemetry = start_telemetry(settings.applicationinsights_connection_string)
        log.info("telemetry: traces and metrics go to Application Insights")
    pools = thread_pools(settings)
    if workspaces is not None and telemetry is not None:
        for service in workspaces:
            service.observer = telemetry
    workspaces = workspaces or build_workspaces(settings, pools, reset_demo=reset_demo, observer=telemetry)
    storage = storage or open_storage(settings.effective_storage_url)
    clock = clock or (lambda: datetime.now(timezone.utc))
    tasks = BackgroundTasks()
    handler, gate = build_handler(settings, workspaces, storage, clock=clock, spawn=tasks.spawn)
    adapter = build_adapter(settings.app_id, settings.app_password, settings.app_type, settings.app_tenant_id)
    bot = TeamsBot(handler, storage, adapter, settings.app_id,
                   service_url_hosts=() if settings.development else settings.service_url_hosts,
                   teams_only=not settings.development)
    worker = OutboxWorker(storage, bot.deliver, owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
                          on_sent=lambda item, activity_id: _remember(handler, item, activity_id), clock=clock,
                          send_timeout=settings.outbox_send_timeout,
                          deadline=timedelta(hours=settings.outbox_deadline_hours))
    gate.wake_outbox = worker.wake
    gate.owner = worker.owner
    watch_loop = WatchLoop(storage, workspaces, gate, owner=worker.owner, window_minutes=settings.watch_minutes,
                           clock=clock, health=settings.health_thresholds())
    scheduler = DigestScheduler(storage, workspaces, clock=clock, health=settings.health_thresholds(),
                                wake=worker.wake)

    app = web.Application(client_max_size=MAX_ACTIVITY_BYTES,
                          middlewares=[_never_500] + ([telemetry.middleware()] if telemetry is not None else []))
    app[HANDLER], app[BOT], app[STORAGE], app[POOLS] = handler, bot, storage, pools
    app[WORKER], app[TASKS], app[GATE], app[WATCHES] = worker, tasks, gate, watch_loop
    app[DIGESTS] = scheduler
    app[TELEMETRY] = telemetry
    app.router.add_post("/api/messages", messages)
    app.router.add_routes(ApprovalsApi(handler, settings.api_token).routes())
    app.router.add_routes(Ingress(storage, settings.webhook_key, clock=clock, wake=worker.wake).routes())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(_storage)         # cleanup contexts run in order: storage before the tasks
    app.cleanup_ctx.append(_background)
    if settings.app_id:
        app.cleanup_ctx.append(_signing_keys)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close)
    log.info("configured: %s", settings.public_summary())
    return app


async def _storage(app: web.Application):
    await app[STORAGE].open()
    await record_policy(app[STORAGE], app[GATE].policy, app[HANDLER].clock())
    yield


async def _remember(handler: ChatHandler, item: OutboxItem, activity_id: str) -> None:
    """An outbox message that carries a request's card: remember where it landed."""
    track = str(item.payload.get("track") or "")
    if track:
        await handler.delivered(Reply("", track=track), item.conversation_id, activity_id)


async def _background(app: web.Application):
    """The outbox worker, the approval expiry loop and the digest scheduler run as long as the app."""
    tasks = app[TASKS]
    tasks.spawn(app[WORKER].run())
    tasks.spawn(app[DIGESTS].run())
    tasks.spawn(_expire_requests(app[GATE]))
    tasks.spawn(prune_forever(app[STORAGE], app[HANDLER].clock))
    tasks.spawn(app[WATCHES].run())
    if app[TELEMETRY] is not None:
        tasks.spawn(app[TELEMETRY].run_sampler(app[STORAGE]))
    yield
    await app[WORKER].stop()     # sends under way finish and are recorded: a restart posts nothing twice
    await tasks.cancel()


async def _expire_requests(gate: Gate, every: float = EXPIRY_CHECK_SECONDS) -> None:
    while True:
        try:
            await gate.expire_due()
        except StorageError as error:
            log.warning("could not expire approval requests: %s", error)
        await asyncio.sleep(every)


class BackgroundTasks:
    """Tasks that outlive a turn (outcomes of approved changes, loops); cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a background task must not die silently
            log.exception("a background task failed")

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


async def _signing_keys(app: web.Application):
    task = asyncio.get_running_loop().create_task(keep_signing_keys_fresh())
    yield
    task.cancel()


async def _drain(app: web.Application) -> None:
    await app[BOT].drain()


async def _close(app: web.Application) -> None:
    await app[STORAGE].close()
    for pool in app[POOLS]:
        pool.shutdown(wait=False, cancel_futures=True)


def _problem(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def _never_500(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # noqa: BLE001 - a stack trace must never reach the caller
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _problem(500, "internal error")


async def messages(request: web.Request) -> web.StreamResponse:
    problem = await _check_activity(request)
    if problem is not None:
        return problem
    return await request.app[BOT].process(request)


async def _check_activity(request: web.Request) -> web.Response | None:
    """Reject what botbuilder would choke on, with the reason, before authentication (so a 4xx
    says what is wrong with the request, never "token did not validate")."""
    if request.content_type != "application/json":      # the parsed media type, any charset
        return _problem(415, "expected Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_ACTIVITY_BYTES:
        return _problem(413, f"activity larger than {MAX_ACTIVITY_BYTES} bytes")
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        return _problem(413, f"activity larger than {MAX_ACTIVITY_BYTES} bytes")
    except RecursionError:
        log.warning("refused a request from %s: JSON nested too deeply to parse", request.remote)
        return _problem(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except (ValueError, UnicodeDecodeError):
        return _problem(400, "body is not JSON")
    if _depth(body) > MAX_JSON_DEPTH:
        log.warning("refused a request from %s: JSON nested too deeply", request.remote)
        return _problem(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    problem = request.app[BOT].check_activity(body)
    return _problem(400, problem) if problem else None


MAX_JSON_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORAGE].ping()
    except StorageError as error:
        log.error("readiness: storage unavailable: %s", error)
        return web.json_response({"status": "unavailable", "storage": "unavailable"}, status=503)
    names = [ws.name for ws in request.app[HANDLER].workspaces]
    storage = request.app[STORAGE]
    try:
        async with asyncio.timeout(getattr(storage, "ping_timeout", 5.0)):
            counts = await storage.run_transaction(outbox.count_states, write=False)
    except (StorageError, TimeoutError) as error:
        log.error("readiness: storage unavailable: %s", error or "counting the outbox timed out")
        return web.json_response({"status": "unavailable", "storage": "unavailable"}, status=503)
    # Given-up messages do not make the bot unready; they are shown so that monitoring can alert on them.
    return web.json_response({"status": "ready", "storage": "ok", "workspaces": names,
                              "outbox": {"pending": counts[outbox.PENDING], "dead": counts[outbox.DEAD]}})
