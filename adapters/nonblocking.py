"""Run a blocking `MLService` off the event loop: a bounded thread pool and a timeout per call.

The Azure SDK is synchronous and a slow workspace must never delay another conversation's turn,
so every call made by the bot goes through `NonBlockingService`:

    svc = NonBlockingService(AzureMLService(...), name="ml-prod", environment="prod", pool=pool)
    models = await svc.list_models(stage="Production")      # runs in `pool`, at most `timeout` s
    op = await svc.set_traffic("fraud-api", {"blue": 90, "green": 10})
    summary = await op.wait()                               # waits for the poller, longer timeout

A call that outlives its timeout raises `Unavailable`; its thread finishes on its own (Python
cannot kill threads), which is why the pool is bounded: a stuck backend can use at most
`max_workers` threads and later calls wait their turn (within their own timeout).

Waiting for a long-running operation (a poller that may take many minutes) happens in a second
pool, `wait_pool`, so that pending traffic shifts or compute starts never hold the threads that
answer people's questions.

Reads are shared (issue 21). Azure Resource Manager allows a subscription about 25 reads a second,
and fifty people asking about the same endpoint would otherwise make fifty identical reads:

- **single flight:** a read (a method in READS) whose identical call (same method, same arguments)
  is already in flight joins it instead of making its own; everyone gets the one answer or the one
  error;
- **a short reuse:** a successful read's result is reused for `read_cache_seconds` (setting
  MLOPSBOT_READ_CACHE_SECONDS; 0 turns reuse off, single flight stays), counted from when the read
  started; errors are never kept (the app's default is DEFAULT_READ_CACHE_SECONDS; the facade's
  own default is 0, reads in flight only, for callers that read a workspace they also change behind
  the facade's back);
- **changes invalidate:** any other method (a change: set_traffic, start_compute, ...) forgets every
  read of the workspace before it runs, again when it returns and when its operation finishes, and
  a read that was in flight across a change does not store its result;
- **fresh reads:** inside `with fresh_reads():` (a card's Refresh button) reads neither reuse nor
  join anything older; their results replace what was kept;
- **read times:** inside `with read_log() as log:` every read notes when its figures were read
  (`log.oldest`), so that a card can say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from adapters.service import (AzureScope, BatchEndpoint, Compute, DriftReport, EndpointMetrics, FeatureSet, FeatureStore, Job,
                              LocalOnly, MLService, ModelVersion, Monitor, MonitorRun, OnlineEndpoint, Operation,
                              Schedule, SignalReport, Unavailable, WorkspaceInfo)


async def run_blocking(pool: Executor, timeout: float, what: str, fn: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    # in the caller's context: the SDK's own spans (azure-core tracing) nest under the caller's
    future = loop.run_in_executor(pool, functools.partial(contextvars.copy_context().run, fn, *args, **kwargs))
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise Unavailable(f"The workspace did not answer {what} within {timeout:g} s.") from None


# The MLService methods that only read; every other method is a change and invalidates the reads.
if TYPE_CHECKING:
    from adapters.posture import PostureFacts

READS = frozenset({
    "workspace", "names", "list_models", "get_model", "list_endpoints", "get_endpoint", "deployment_logs",
    "endpoint_metrics", "list_batch_endpoints", "get_batch_endpoint", "list_batch_jobs", "list_jobs",
    "get_job", "list_schedules", "list_compute", "list_monitors", "drift_report", "list_feature_stores",
    "list_feature_sets", "get_feature_set", "endpoints_metrics",
})
DEFAULT_READ_CACHE_SECONDS = 5.0
MAX_CACHED_READS = 2048


class CallObserver(Protocol):
    """What the facade reports (bot.telemetry implements it; None reports nothing)."""

    def backend_call(self, workspace: str, method: str) -> contextlib.AbstractContextManager:
        """Entered around each call that reaches the backend (a span, a latency)."""
        ...

    def read_shared(self, workspace: str, method: str, how: str) -> None:
        """`how`: "cache" (a kept result) or "joined" (an identical read in flight)."""
        ...


@dataclass
class ReadLog:
    """When the figures of one turn were read: the oldest read (UTC), or None if nothing was read."""

    oldest: datetime | None = None

    def note(self, moment: datetime) -> None:
        if self.oldest is None or moment < self.oldest:
            self.oldest = moment


_FRESH: contextvars.ContextVar[bool] = contextvars.ContextVar("fresh_reads", default=False)
_LOG: contextvars.ContextVar[ReadLog | None] = contextvars.ContextVar("read_log", default=None)


@contextlib.contextmanager
def fresh_reads() -> Iterator[None]:
    """Reads made inside (in this task and the tasks it starts) go to the backend: a Refresh."""
    token = _FRESH.set(True)
    try:
        yield
    finally:
        _FRESH.reset(token)


@contextlib.contextmanager
def read_log() -> Iterator[ReadLog]:
    """Collect when the reads made inside were read (see ReadLog)."""
    log = ReadLog()
    token = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(token)


def _key(method: str, args: tuple, kwargs: dict) -> tuple | None:
    """A hashable key for one read, or None when an argument cannot be hashed (then not shared)."""
    def frozen(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(frozen(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, frozen(v)) for k, v in value.items()))
        return value
    key = (method, frozen(args), frozen(kwargs))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _own(result: Any) -> Any:
    """A shared result as the caller's own: its list or dict copied (the values are frozen
    dataclasses), so a caller that sorts or edits it changes nobody else's."""
    if isinstance(result, list):
        return list(result)
    if isinstance(result, dict):
        return dict(result)
    return result


@dataclass
class _Kept:
    result: Any
    read_at: datetime          # when the read started (UTC): the figures are at least this fresh
    expires: float             # monotonic


@dataclass
class ReadCache:
    """The shared reads of one workspace (see the module docstring). Not thread-safe: the event
    loop's thread only."""

    seconds: float = DEFAULT_READ_CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    generation: int = 0
    _kept: dict[tuple, _Kept] = field(default_factory=dict)
    _flights: dict[tuple, tuple[asyncio.Task, datetime]] = field(default_factory=dict)

    def invalidate(self) -> None:
        self.generation += 1
        self._kept.clear()
        self._flights.clear()        # reads in flight finish for their callers; nobody new joins them

    async def read(self, key: tuple | None, call: Callable[[], Any], *, workspace: str, method: str,
                   observer: CallObserver | None) -> Any:
        log = _LOG.get()
        fresh = _FRESH.get()
        if key is not None and not fresh:
            kept = self._kept.get(key)
            if kept is not None and kept.expires > self.clock():
                if log is not None:
                    log.note(kept.read_at)
                if observer is not None:
                    observer.read_shared(workspace, method, "cache")
                return _own(kept.result)
            flight = self._flights.get(key)
            if flight is not None:
                if observer is not None:
                    observer.read_shared(workspace, method, "joined")
                if log is not None:
                    log.note(flight[1])
                return _own(await asyncio.shield(flight[0]))
        generation, started, read_at = self.generation, self.clock(), self.wall()
        if log is not None:
            log.note(read_at)
        # The backend call is a task of its own, so that a caller who gives up (a cancelled turn)
        # never cancels it for the others who joined it.
        task = asyncio.get_running_loop().create_task(call())
        if key is not None:
            self._flights[key] = (task, read_at)
        task.add_done_callback(functools.partial(self._landed, key, generation, started, read_at))
        return _own(await asyncio.shield(task))

    def _landed(self, key: tuple | None, generation: int, started: float, read_at: datetime,
                flight: asyncio.Task) -> None:
        if key is not None and self._flights.get(key, (None,))[0] is flight:
            del self._flights[key]
        if flight.cancelled() or flight.exception() is not None:      # errors are never kept
            return
        if key is None or generation != self.generation or self.seconds <= 0:
            return
        kept = self._kept.get(key)
        if kept is not None and kept.read_at > read_at:
            return                   # a fresher read (a Refresh started after this one) landed first
        if len(self._kept) >= MAX_CACHED_READS:
            self._drop_expired()
        if len(self._kept) < MAX_CACHED_READS:
            self._kept[key] = _Kept(flight.result(), read_at, started + self.seconds)

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, kept in self._kept.items() if kept.expires <= now]:
            del self._kept[key]


@dataclass(frozen=True)
class PendingOperation:
    """An accepted long-running change; `await wait()` for its outcome (a one-line summary)."""

    kind: str
    target: str
    _operation: Operation
    _pool: Executor
    _timeout: float
    _done: Callable[[], None] | None = None     # the facade's invalidation, once the change is carried out

    async def wait(self) -> str:
        try:
            return await run_blocking(self._pool, self._timeout, f"on {self.kind} of {self.target}",
                                      self._operation.wait, self._timeout)
        finally:
            if self._done is not None:
                self._done()


class NonBlockingService:
    """Async facade over one workspace. Method names and arguments are those of `MLService`."""

    def __init__(self, service: MLService, *, name: str, environment: str, pool: Executor,
                 wait_pool: Executor | None = None, timeout: float = 30.0,
                 operation_timeout: float = 1800.0, azure: AzureScope | None = None,
                 read_cache_seconds: float = 0.0,
                 observer: CallObserver | None = None) -> None:
        self.service = service
        self.name = name
        self.environment = environment
        self.azure = azure               # where the workspace lives in Azure (None: local), for studio links
        self._pool = pool
        self._wait_pool = wait_pool or pool
        self._timeout = timeout
        self._operation_timeout = operation_timeout
        self.reads = ReadCache(seconds=read_cache_seconds)
        self.observer = observer

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` of the backend in the pool, within the timeout: a read (READS) is shared
        with identical reads in flight and reused for a few seconds; a change drops the shared
        reads before and after, and a long one comes back as a PendingOperation."""
        target = getattr(self.service, method)

        async def backend(*args: Any, **kwargs: Any) -> Any:
            if self.observer is None:
                return await run_blocking(self._pool, self._timeout, f"to {method}", target, *args, **kwargs)
            with self.observer.backend_call(self.name, method):
                return await run_blocking(self._pool, self._timeout, f"to {method}", target, *args, **kwargs)

        if method in READS:
            return await self.reads.read(_key(method, args, kwargs), functools.partial(backend, *args, **kwargs),
                                         workspace=self.name, method=method, observer=self.observer)
        self.reads.invalidate()
        try:
            result = await backend(*args, **kwargs)
        finally:
            self.reads.invalidate()
        if isinstance(result, Operation):
            return PendingOperation(result.kind, result.target, result, self._wait_pool,
                                    self._operation_timeout, self.reads.invalidate)
        return result

    # ------------------------------------------------------------ the port, awaitable (adapters.service.MLService)
    # One method per MLService method, same names and parameters (tests/unit/test_nonblocking_facade.py
    # checks they stay in step), so that a call such as `ctx.ml.set_traffic(...)` has a definition
    # to jump to and a type to check. A change that Azure ML applies in the background returns a
    # PendingOperation instead of the port's Operation.

    # the workspace
    async def workspace(self) -> WorkspaceInfo:
        return await self._call("workspace")

    async def names(self, kind: str) -> list[str]:
        return await self._call("names", kind)

    async def security_posture(self) -> PostureFacts:
        return await self._call("security_posture")

    # models
    async def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        return await self._call("list_models", name, stage)

    async def get_model(self, name: str, version: str | None = None) -> ModelVersion:
        return await self._call("get_model", name, version)

    async def set_model_stage(self, name: str, version: str, stage: str) -> ModelVersion:
        return await self._call("set_model_stage", name, version, stage)

    async def archive_model(self, name: str, version: str) -> ModelVersion:
        return await self._call("archive_model", name, version)

    async def restore_model(self, name: str, version: str) -> ModelVersion:
        return await self._call("restore_model", name, version)

    async def trigger_retraining(self, model: str) -> Job:
        return await self._call("trigger_retraining", model)

    # online endpoints
    async def list_endpoints(self) -> list[OnlineEndpoint]:
        return await self._call("list_endpoints")

    async def get_endpoint(self, name: str) -> OnlineEndpoint:
        return await self._call("get_endpoint", name)

    async def set_traffic(self, endpoint: str, traffic: dict[str, int], expected: dict[str, int] | None = None) -> PendingOperation:
        return await self._call("set_traffic", endpoint, traffic, expected)

    async def scale_deployment(self, endpoint: str, deployment: str, instance_count: int) -> PendingOperation:
        return await self._call("scale_deployment", endpoint, deployment, instance_count)

    async def deployment_logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        return await self._call("deployment_logs", endpoint, deployment, lines)

    async def endpoint_metrics(self, endpoint: str, window_minutes: int = 60) -> EndpointMetrics:
        return await self._call("endpoint_metrics", endpoint, window_minutes)

    async def endpoints_metrics(self, endpoints: Sequence[OnlineEndpoint], window_minutes: int = 60) -> dict[str, EndpointMetrics]:
        return await self._call("endpoints_metrics", endpoints, window_minutes)

    # batch endpoints
    async def list_batch_endpoints(self) -> list[BatchEndpoint]:
        return await self._call("list_batch_endpoints")

    async def get_batch_endpoint(self, name: str) -> BatchEndpoint:
        return await self._call("get_batch_endpoint", name)

    async def invoke_batch_endpoint(self, endpoint: str, input_uri: str, deployment: str | None = None, *, tags: dict[str, str] | None = None) -> Job:
        return await self._call("invoke_batch_endpoint", endpoint, input_uri, deployment, tags=tags)

    async def list_batch_jobs(self, endpoint: str) -> list[Job]:
        return await self._call("list_batch_jobs", endpoint)

    # jobs
    async def list_jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        return await self._call("list_jobs", status, limit)

    async def get_job(self, name: str) -> Job:
        return await self._call("get_job", name)

    async def cancel_job(self, name: str) -> PendingOperation:
        return await self._call("cancel_job", name)

    # schedules
    async def list_schedules(self) -> list[Schedule]:
        return await self._call("list_schedules")

    async def enable_schedule(self, name: str) -> PendingOperation:
        return await self._call("enable_schedule", name)

    async def disable_schedule(self, name: str) -> PendingOperation:
        return await self._call("disable_schedule", name)

    async def trigger_schedule(self, name: str, *, tags: dict[str, str] | None = None) -> Job:
        return await self._call("trigger_schedule", name, tags=tags)

    # compute
    async def list_compute(self) -> list[Compute]:
        return await self._call("list_compute")

    async def start_compute(self, name: str) -> PendingOperation:
        return await self._call("start_compute", name)

    async def stop_compute(self, name: str) -> PendingOperation:
        return await self._call("stop_compute", name)

    # model monitoring
    async def list_monitors(self) -> list[Monitor]:
        return await self._call("list_monitors")

    async def drift_report(self, target: str, window_days: int = 7) -> DriftReport:
        return await self._call("drift_report", target, window_days)

    # the feature store
    async def list_feature_stores(self) -> list[FeatureStore]:
        return await self._call("list_feature_stores")

    async def list_feature_sets(self, store: str) -> list[FeatureSet]:
        return await self._call("list_feature_sets", store)

    async def get_feature_set(self, store: str, name: str, version: str | None = None) -> FeatureSet:
        return await self._call("get_feature_set", store, name, version)

    # ------------------------------------------------------------ the local workspace only (adapters.service.LocalOnly)

    @property
    def is_local(self) -> bool:
        """The embedded local workspace (it has what adapters.service.LocalOnly lists)."""
        return isinstance(self.service, LocalOnly)

    async def demo_switch(self, what: str, endpoint: str, deployment: str) -> str | None:
        """`demo degrade|heal` on the local workspace (None on Azure ML, which has no such switch).
        The deployment's figures change behind the port, so the shared reads are dropped."""
        if not isinstance(self.service, LocalOnly) or what not in ("degrade", "heal"):
            return None
        switch = self.service.degrade_deployment if what == "degrade" else self.service.heal_deployment
        try:
            return await run_blocking(self._pool, self._timeout, f"to {what} {deployment}", switch, endpoint,
                                      deployment)
        finally:
            self.reads.invalidate()

    async def local_breaches(self, since: datetime
                             ) -> list[tuple[Monitor, MonitorRun, tuple[SignalReport, ...]]] | None:
        """The local workspace's breaching monitor runs after `since` (None on Azure ML: Event Grid
        brings those). Computing due runs can take a while: the wait pool, the operation timeout."""
        if not isinstance(self.service, LocalOnly):
            return None
        return await run_blocking(self._wait_pool, self._operation_timeout, "to compute the monitors",
                                  self.service.monitor_breaches, since)
