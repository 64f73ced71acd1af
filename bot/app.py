"""The composition root: `create_app(settings)` chooses every implementation and wires the host.

Routes:
    POST /api/messages       Bot Framework activities (JWT-validated when an app id is set)
    POST /api/approvals      a pipeline asks for an approval (bearer token; bot/api.py)
    GET  /api/approvals/{id} its state, for the pipeline to poll
    GET  /api/audit          the audit trail as JSON lines or CSV
    POST /api/events         Event Grid (and OPTIONS: the CloudEvents handshake; bot/ingress.py)
    POST /api/alerts         Azure Monitor alerts, common alert schema (bot/ingress.py)
    GET  /healthz            liveness: the process answers
    GET  /readyz             readiness: storage takes a write (a heartbeat row) within 5 s; outbox pending/dead counts

Background tasks, started with the app: the outbox worker (every proactive message), the
expiry of approval requests, the watches after traffic changes, jobs and the local monitors'
drift alerts (bot/scheduler.py) and the digest scheduler (bot/digests.py).

In development mode (no app id) only requests whose Host is localhost, 127.0.0.1 or [::1] (any port)
are answered; others get 421 (a DNS-rebinding page could otherwise drive the bot as Admin).

Malformed requests are answered with 4xx and a short JSON reason before they reach botbuilder,
whose own parsing would turn them into HTTP 500. Storage that is down is answered with 503 and
Retry-After on every route (the middleware), never with a 500.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from adapters import jsonsafe
from adapters.nonblocking import NonBlockingService
from adapters.service import AzureScope
from adapters.storage import Storage, StorageError, StorageUnavailable, audit as audit_log, instances, open_storage, outbox
from adapters.storage.outbox import OutboxItem
from bot.api import ApprovalsApi
from bot.bodies import BodyTimeout, ClientGone, read_body
from bot.digests import DigestScheduler
from bot.handler import ChatHandler
from bot.ingress import Ingress, prune_forever, storage_unavailable
from bot.outbox import OutboxWorker
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.teams import TeamsBot, build_adapter, keep_signing_keys_fresh
from commands.alerts.alerts import endpoint_health
from commands.catalog import catalog
from commands.base.context import Reply, Track, Workspaces
from commands.changes.export_links import ExportLinks
from commands.changes.kinds import CHANGE_KINDS
from commands.changes.gate import Gate, record_policy

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
SCHEDULER = web.AppKey("scheduler", Scheduler)
INSTANCE = web.AppKey("instance", str)
READY_WRITE_SECONDS = 5.0          # the readiness probe's write must commit within this
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
        from adapters.local.workspace import LocalWorkspace
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # with --reset-demo the demo is seeded once, by the reset (not first by a new file, then again)
        local = LocalWorkspace(settings.data_dir / "workspace.db", demo=not reset_demo, demo_size=settings.demo_size)
        if reset_demo:
            local.reset(demo=True)
        info = local.workspace()
        return Workspaces([wrap(local, info.name, info.environment)])

    from adapters.azureml.workspace import build_azure_service
    return Workspaces([
        wrap(build_azure_service(ws.subscription_id, ws.resource_group, ws.name, environment=ws.environment,
                                 managed_identity_client_id=settings.managed_identity_client_id or None,
                                 timeout=settings.azure_timeout, metrics_endpoint=ws.metrics_endpoint or None),
             ws.name, ws.environment,
             AzureScope(ws.subscription_id, ws.resource_group, ws.name, ws.tenant_id or settings.app_tenant_id))
        for ws in settings.azure_workspaces
    ])


def build_handler(settings: Settings, workspaces: Workspaces, storage: Storage, *, clock: Callable[[], datetime],
                  spawn: Callable[[Awaitable[Any]], None], wake_outbox: Callable[[], None] = lambda: None,
                  owner: str = "this-process") -> tuple[ChatHandler, Gate]:
    """The command handler and the gate every change passes, over the configured policy and roles
    (the web app and the terminal chat share it).
    `wake_outbox`: the outbox worker's wake-up; `owner`: who this process is to the operations it starts."""
    roles = settings.role_book()
    gate = Gate(settings.policy(), storage, CHANGE_KINDS, clock=clock, roles=roles, approval_channel=settings.approval_channel,
                spawn=spawn, wake_outbox=wake_outbox, owner=owner, requests_per_minute=settings.change_requests_per_minute,
                pipeline_requests_per_minute=settings.pipeline_requests_per_minute)
    base_url = settings.export_base_url()
    # Replicas share the audit key, so a link one of them signs is served by any; in development
    # without one, a key of this process (its links die with it).
    links = ExportLinks(settings.audit_key_bytes() or secrets.token_bytes(32), base_url) if base_url else None
    handler = ChatHandler(catalog(), workspaces, roles, development=settings.development,
                          allowed_tenants=settings.tenant_allow_list, store=storage, gate=gate, clock=clock,
                          health=settings.health_thresholds(), plain_language=settings.plain_language,
                          export_links=links)
    return handler, gate


def create_app(settings: Settings, *, workspaces: Workspaces | None = None, storage: Storage | None = None,
               reset_demo: bool = False, clock: Callable[[], datetime] | None = None,
               telemetry: Any = None) -> web.Application:
    """`telemetry`: a bot.telemetry.Telemetry (tests give one over in-memory exporters); by default one
    is started when APPLICATIONINSIGHTS_CONNECTION_STRING is set, and nothing of it exists otherwise.
    Workspaces given by the caller keep the observer they were built with.

    Every part is built complete, in the order its collaborators need: nothing is patched after."""
    if telemetry is None and settings.applicationinsights_connection_string:
        from bot.telemetry import start_telemetry
        telemetry = start_telemetry(settings.applicationinsights_connection_string)
        log.info("telemetry: traces and metrics go to Application Insights")
    pools = thread_pools(settings)
    workspaces = workspaces or build_workspaces(settings, pools, reset_demo=reset_demo, observer=telemetry)
    storage = storage or open_storage(settings.effective_storage_url, audit_key=settings.audit_key_bytes())
    clock = clock or (lambda: datetime.now(timezone.utc))
    tasks = BackgroundTasks()
    # The instance id survives a restart, the boot part does not: a restarted bot knows which
    # claims its earlier run held and takes them back at once (adapters.storage.instances).
    owner = instances.owner_id(settings.effective_instance_id, uuid.uuid4().hex[:8])
    outbox_wakeup = asyncio.Event()           # the gate wakes the outbox worker built after it
    handler, gate = build_handler(settings, workspaces, storage, clock=clock, spawn=tasks.spawn,
                                  wake_outbox=outbox_wakeup.set, owner=owner)
    adapter = build_adapter(settings.app_id, settings.app_password, settings.app_type, settings.app_tenant_id)
    bot = TeamsBot(handler, storage, adapter, settings.app_id,
                   service_url_hosts=() if settings.development else settings.service_url_hosts,
                   teams_only=not settings.development)
    worker = OutboxWorker(storage, bot.deliver, owner=owner, wakeup=outbox_wakeup,
                          on_sent=lambda item, activity_id: _remember(handler, item, activity_id), clock=clock,
                          send_timeout=settings.outbox_send_timeout,
                          deadline=timedelta(hours=settings.outbox_deadline_hours))
    scheduler = Scheduler(storage, workspaces, gate, owner=worker.owner, window_minutes=settings.watch_minutes,
                          clock=clock, health=settings.health_thresholds())
    digests = DigestScheduler(storage, workspaces, clock=clock, health=settings.health_thresholds(),
                              wake=worker.wake)

    middlewares = [_never_500] + ([telemetry.middleware()] if telemetry is not None else [])
    if settings.development:
        middlewares.insert(0, _loopback_names_only)
    app = web.Application(client_max_size=MAX_ACTIVITY_BYTES, middlewares=middlewares)
    app[HANDLER], app[BOT], app[STORAGE], app[POOLS] = handler, bot, storage, pools
    app[WORKER], app[TASKS], app[GATE], app[SCHEDULER] = worker, tasks, gate, scheduler
    app[DIGESTS] = digests
    app[INSTANCE] = settings.effective_instance_id
    app[TELEMETRY] = telemetry
    app.router.add_post("/api/messages", messages)
    app.router.add_routes(ApprovalsApi(handler, settings.api_token).routes())
    limits = settings.health_thresholds()
    app.router.add_routes(Ingress(storage, settings.webhook_key, clock=clock, wake=worker.wake,
                                  health=lambda event: endpoint_health(workspaces, event, limits)).routes())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(_storage)         # cleanup contexts run in order: storage before the tasks
    app.cleanup_ctx.append(_background)
    if settings.app_id:
        app.cleanup_ctx.append(_signing_keys)
    app.on_cleanup.append(_close)
    log.info("configured: %s", settings.public_summary())
    if not settings.approval_channel:
        log.info("no approval channel is set (MLOPSBOT_APPROVAL_CHANNEL): approval requests reach approvers only "
                    "in their personal chats with the bot, and @mentioned where they are asked")
    return app


async def _storage(app: web.Application):
    await app[STORAGE].open()
    await record_policy(app[STORAGE], app[GATE].policy, app[HANDLER].clock())
    await _take_back_claims(app)
    await log_audit_anchor(app[STORAGE])
    yield


async def _take_back_claims(app: web.Application) -> None:
    """Release at once what an earlier run of this instance held (it is gone: no lease to wait
    out), and write this run's heartbeat. The watch loop's first pass then settles the operations
    that run left in flight."""
    instance, owner, now = app[INSTANCE], app[GATE].owner, app[HANDLER].clock()

    async def work(tx) -> dict[str, int]:
        released = await instances.take_back(tx, instance=instance, owner=owner)
        await instances.beat(tx, instance=instance, owner=owner, now=now)
        return released
    released = await app[STORAGE].run_transaction(work)
    if released:
        log.info("took back what the earlier run of %s held: %s", instance,
                 ", ".join(f"{count} {kind}" for kind, count in sorted(released.items())))


async def log_audit_anchor(storage: Storage) -> None:
    """Write the audit chain head to the log, an anchor outside the database (`audit verify --head`)."""
    seq, head = await storage.run_transaction(audit_log.head, write=False)
    keyed = "keyed with MLOPSBOT_AUDIT_KEY" if storage.audit_key else "UNKEYED (development key, proves nothing)"
    log.info("audit anchor: %d records, head %s (%s)", seq, head, keyed)


async def _remember(handler: ChatHandler, item: OutboxItem, activity_id: str) -> None:
    """An outbox message that carries a request's card: remember where it landed."""
    track = Track.parse(item.payload.get("track"))
    if track is not None:
        await handler.delivered(Reply("", track=track), item.conversation_id, activity_id)


async def _background(app: web.Application):
    """The outbox worker, the approval expiry loop and the digest scheduler run as long as the app."""
    tasks = app[TASKS]
    tasks.spawn(app[WORKER].run())
    tasks.spawn(app[DIGESTS].run())
    tasks.spawn(_expire_requests(app[GATE]))
    tasks.spawn(prune_forever(app[STORAGE], app[HANDLER].clock))
    tasks.spawn(app[SCHEDULER].run())
    if app[TELEMETRY] is not None:
        tasks.spawn(app[TELEMETRY].run_sampler(app[STORAGE]))
    yield
    await app[WORKER].stop()     # sends under way finish and are recorded: a restart posts nothing twice
    await tasks.cancel()


async def _expire_requests(gate: Gate, every: float = EXPIRY_CHECK_SECONDS) -> None:
    while True:
        try:
            await gate.expire_due()
            await gate.remind_due()
        except StorageError as error:
            log.warning("could not expire or remind approval requests: %s", error)
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
    except StorageUnavailable as error:  # database trouble: the caller retries, as it would after a 503
        log.warning("%s %s: storage unavailable (%s)", request.method, request.path, error)
        return storage_unavailable()
    except ClientGone as gone:
        log.info("%s %s: the client went away before its body arrived (%s)", request.method, request.path, gone)
        return _problem(400, "the body did not arrive")
    except Exception:  # noqa: BLE001 - a stack trace must never reach the caller
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _problem(500, "internal error")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine by a loopback name: localhost, 127.0.0.1 or [::1],
    with or without a port."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("[") and "]" in host:
        cut = host.index("]") + 1                       # [::1]:3978
    else:
        cut = host.find(":") if ":" in host else len(host)
    name, port = host[:cut], host[cut:]
    if port and not (port.startswith(":") and port[1:].isascii() and port[1:].isdigit() and len(port) <= 6):
        return False
    return name in LOOPBACK_NAMES


@web.middleware
async def _loopback_names_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Development mode (no app id) trusts whoever reaches it: everyone may be Admin. It listens on
    loopback only, but a web page can rebind its own DNS name to 127.0.0.1 and drive it from a
    browser; such requests carry the page's name in Host. So only loopback names are answered."""
    if not loopback_host(request.headers.get("Host")):
        log.warning("development mode: refused a request for host %r", (request.headers.get("Host") or "")[:100])
        return _problem(421, "development mode answers only requests for localhost, 127.0.0.1 or [::1] "
                             "(set MicrosoftAppId to serve other names)")
    return await handler(request)


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
        raw = await read_body(request, MAX_ACTIVITY_BYTES, keep=True)
    except web.HTTPRequestEntityTooLarge:
        return _problem(413, f"activity larger than {MAX_ACTIVITY_BYTES} bytes")
    except BodyTimeout as error:
        return _problem(408, str(error))
    try:
        body = jsonsafe.loads(raw, MAX_JSON_DEPTH)
    except jsonsafe.TooDeep:
        log.warning("refused a request from %s: JSON nested too deeply", request.remote)
        return _problem(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except jsonsafe.NotJsonNumber as error:
        return _problem(400, f"body is not JSON: {error}")
    except ValueError:
        return _problem(400, "body is not JSON")
    problem = request.app[BOT].check_activity(body, keep=request)
    return _problem(400, problem) if problem else None


MAX_JSON_DEPTH = 32


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the bot can *write* its state: one small committed write (this instance's
    heartbeat row), bounded in time. A database that answers reads but refuses writes (a full
    disk, a read-only file) is not ready. The reason goes to the log, never into the body."""
    app = request.app
    instance, owner, now = app[INSTANCE], app[GATE].owner, app[HANDLER].clock()
    try:
        async with asyncio.timeout(READY_WRITE_SECONDS):
            await app[STORAGE].run_transaction(lambda tx: instances.beat(tx, instance=instance, owner=owner, now=now))
    except TimeoutError:
        log.error("readiness: storage unavailable: it did not take a write within %g s", READY_WRITE_SECONDS)
        return web.json_response({"status": "unavailable", "storage": "unavailable"}, status=503)
    except StorageError as error:
        log.error("readiness: storage unavailable: %s", error)     # unreachable, or refuses writes
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
