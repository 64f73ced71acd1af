"""What operators see: OpenTelemetry traces and metrics, exported to Application Insights.

Off unless APPLICATIONINSIGHTS_CONNECTION_STRING is set (bot/settings.py reads it). Off, nothing of
OpenTelemetry is imported (this module imports it only inside `Telemetry` and `start_telemetry`),
and nothing costs anything: the app calls no hook at all. On, `start_telemetry` configures the
Azure Monitor OpenTelemetry distro (`pip install 'mlops-teams-bot[telemetry]'`), which also turns
on azure-core's own spans for every HTTP call the Azure SDKs make, and returns a `Telemetry`:

Traces
- `bot.turn`: one span per request to /api/messages (a message or a card click), with its status;
- `azureml.<method>` (kind CLIENT): one per call the bot makes to a workspace through
  adapters.nonblocking (`azureml.get_endpoint`, `azureml.set_traffic`, ...), which is the parent of
  azure-core's spans for that call (the facade runs the call in the caller's context).

Metrics (instrument names; the attributes in brackets)
- `mlopsbot.turn.duration` (s, histogram) [http.response.status_code]
- `mlopsbot.azure.call.duration` (s, histogram) [workspace, method, outcome ok|error]
- `mlopsbot.read_cache.hits` (counter) [workspace, method, how cache|joined]: reads answered
  without a backend call (kept a few seconds, or joined to an identical read in flight)
- `mlopsbot.outbox.depth` (gauge): messages waiting to be sent
- `mlopsbot.outbox.oldest_age` (s, gauge): how long the oldest of them has waited (0 when none)
- `mlopsbot.outbox.given_up` (gauge): messages given up on (state dead; `outbox retry` revives them)
- `mlopsbot.approvals.waiting` (gauge): approval requests waiting for a decision

The four gauges come from storage, sampled by `run_sampler` every SAMPLE_SECONDS (an observable
gauge's callback runs in the exporter's thread and cannot await the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from adapters.storage import Storage

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 15.0
TURN_PATH = "/api/messages"


@dataclass
class Backlog:
    """The last sample of what waits (see `Telemetry.sample`)."""

    outbox_depth: int = 0
    outbox_oldest_age: float = 0.0
    outbox_given_up: int = 0
    approvals_waiting: int = 0


class Telemetry:
    """Spans and instruments over the given providers (the global ones when not given)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.metrics import Observation
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace = trace
        self._kind_client, self._kind_server = SpanKind.CLIENT, SpanKind.SERVER
        self._error = lambda text: Status(StatusCode.ERROR, text)
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("mlopsbot")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("mlopsbot")
        self.turn_duration = meter.create_histogram(
            "mlopsbot.turn.duration", unit="s", description="One request to /api/messages, received to answered")
        self.azure_duration = meter.create_histogram(
            "mlopsbot.azure.call.duration", unit="s", description="One call to a workspace (Azure ML or local)")
        self.read_hits = meter.create_counter(
            "mlopsbot.read_cache.hits", unit="{read}", description="Reads answered without a backend call")
        self.backlog = Backlog()

        def gauge(name: str, unit: str, description: str, value: Callable[[], float]) -> None:
            meter.create_observable_gauge(name, callbacks=[lambda options: [Observation(value())]], unit=unit,
                                          description=description)

        gauge("mlopsbot.outbox.depth", "{message}", "Messages waiting to be sent", lambda: self.backlog.outbox_depth)
        gauge("mlopsbot.outbox.oldest_age", "s", "How long the oldest waiting message has waited",
              lambda: self.backlog.outbox_oldest_age)
        gauge("mlopsbot.outbox.given_up", "{message}", "Messages given up on (state dead)",
              lambda: self.backlog.outbox_given_up)
        gauge("mlopsbot.approvals.waiting", "{request}", "Approval requests waiting for a decision",
              lambda: self.backlog.approvals_waiting)

    # ------------------------------------------------------------ turns (an aiohttp middleware)

    def middleware(self) -> Callable:
        from aiohttp import web

        @web.middleware
        async def traced(request: web.Request, handler: Callable) -> Any:
            if request.path != TURN_PATH:
                return await handler(request)
            started = time.perf_counter()
            status = 500
            with self.tracer.start_as_current_span("bot.turn", kind=self._kind_server) as span:
                try:
                    response = await handler(request)
                    status = response.status
                    return response
                except web.HTTPException as error:
                    status = error.status
                    raise
                finally:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(self._error(f"HTTP {status}"))
                    self.turn_duration.record(time.perf_counter() - started,
                                              {"http.response.status_code": status})
        return traced

    # ------------------------------------------------------------ adapters.nonblocking.CallObserver

    @contextlib.contextmanager
    def backend_call(self, workspace: str, method: str) -> Iterator[None]:
        started = time.perf_counter()
        outcome = "error"
        with self.tracer.start_as_current_span(f"azureml.{method}", kind=self._kind_client,
                                               attributes={"mlopsbot.workspace": workspace}) as span:
            try:
                yield
                outcome = "ok"
            except BaseException as error:
                span.set_status(self._error(type(error).__name__))
                raise
            finally:
                self.azure_duration.record(time.perf_counter() - started,
                                           {"workspace": workspace, "method": method, "outcome": outcome})

    def read_shared(self, workspace: str, method: str, how: str) -> None:
        self.read_hits.add(1, {"workspace": workspace, "method": method, "how": how})

    # ------------------------------------------------------------ the backlog gauges

    async def sample(self, storage: Storage, now: datetime | None = None) -> Backlog:
        """Read what waits from storage into the gauges; return it."""
        from adapters.storage import approvals, outbox

        async def read(tx: Any) -> Backlog:
            counts = await outbox.count_states(tx)
            oldest = await outbox.oldest_pending(tx)
            moment = now or datetime.now(timezone.utc)
            age = max(0.0, (moment - oldest).total_seconds()) if oldest is not None else 0.0
            return Backlog(counts[outbox.PENDING], age, counts[outbox.DEAD], await approvals.count_waiting(tx))

        self.backlog = await storage.run_transaction(read, write=False)
        return self.backlog

    async def run_sampler(self, storage: Storage, every: float = SAMPLE_SECONDS) -> None:
        while True:
            try:
                await self.sample(storage)
            except Exception as error:  # noqa: BLE001 - a gauge must never take the bot down
                log.warning("telemetry: could not sample the outbox and approvals: %s", error)
            await asyncio.sleep(every)


def start_telemetry(connection_string: str, *, service_name: str = "mlops-teams-bot") -> Telemetry:
    """Configure the Azure Monitor distro (global tracer and meter providers, azure-core tracing)
    and return the bot's instruments over them."""
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError as error:
        raise RuntimeError("APPLICATIONINSIGHTS_CONNECTION_STRING is set but the telemetry extra is not "
                           "installed: pip install 'mlops-teams-bot[telemetry]'") from error
    from opentelemetry.sdk.resources import Resource
    configure_azure_monitor(connection_string=connection_string, resource=Resource.create({"service.name": service_name}),
                            # the bot's own spans and metrics, and the Azure SDKs' spans; no
                            # automatic instrumentation of web frameworks it does not use
                            instrumentation_options={"azure_sdk": {"enabled": True}, "django": {"enabled": False},
                                                     "fastapi": {"enabled": False}, "flask": {"enabled": False},
                                                     "psycopg2": {"enabled": False}})
    return Telemetry()
