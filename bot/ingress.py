"""Webhooks from Azure: Event Grid (POST/OPTIONS /api/events) and Azure Monitor (POST /api/alerts).

Both authenticate with the shared key MLOPSBOT_WEBHOOK_KEY, given as the `code` query parameter
or the `x-functions-key` header (as Azure Functions take it, so an Event Grid subscription or an
action group carries it in its URL), compared in constant time. Without a configured key both
routes answer 503: webhooks are off.

    POST /api/events?code=KEY     Event Grid schema or CloudEvents 1.0, one event or a batch;
                                  the SubscriptionValidationEvent is answered {"validationResponse": code}
    OPTIONS /api/events?code=KEY  the CloudEvents abuse-protection handshake: WebHook-Allowed-Origin
    POST /api/alerts?code=KEY     Azure Monitor common alert schema (metric and log alerts, Fired/Resolved)

Content types, as the senders document them: Event Grid posts its own schema as
`application/json` and CloudEvents as `application/cloudevents+json` (learn.microsoft.com,
"CloudEvents v1.0 schema with Azure Event Grid"); a batch of CloudEvents is
`application/cloudevents-batch+json` in the CloudEvents HTTP binding. Azure Monitor posts JSON
(`application/json`). Anything else is 415, as on /api/messages and /api/approvals.

Within an Event Grid delivery each event stands alone: one the bot cannot use is skipped (a
warning names it and its reason; the answer lists its id under `skipped`) and the others are
accepted, so one bad event never makes Event Grid retry, then drop, the good ones. CloudEvents
with a misspelt `specVersion` and Azure Monitor budget alerts (no alert rule) are acknowledged,
ignored and logged.

Each event is deduplicated by its id in storage (`inbox`, so a redelivery after a restart is
still a duplicate), and in the SAME transaction its alert is recorded and one card per subscribed
conversation is put in the outbox (commands.alerts.alerts.publish). So the answer comes as soon as that
one short transaction commits, and either all of an event is accepted or none of it is (Event
Grid then redelivers). The outbox worker sends the cards.

Answers: 200 with counts (and the `skipped` ids, when any); 400 not JSON / too deep / NaN or an
infinity; 408 the body took longer than BODY_READ_SECONDS (bot/bodies.py); 401 no or wrong key; 413
too large; 415 another content type; 422 JSON that is not a delivery at all (the reason names the
field); 503 with Retry-After when storage is down (the sender retries). Never 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from adapters.azureml.events import Event, Ignored, Malformed, loads, parse_common_alert, parse_event_grid
from adapters.storage import Storage, StorageUnavailable, inbox
from bot.bodies import BodyTimeout, read_body
from commands.alerts.alerts import publish

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024      # Event Grid delivers batches of at most 1 MB
SMALL_BODY_BYTES = 64 * 1024
EVENT_GRID_TYPES = ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
AZURE_MONITOR_TYPES = ("application/json",)


class Ingress:
    def __init__(self, store: Storage, key: str, *, clock: Callable, wake: Callable[[], None],
                 health: Callable[[Event], Awaitable[str]] | None = None) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.wake = wake
        self.health = health          # the endpoint's health now, for an alert's card (bounded; "" if unknown)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/events", self.events), web.options("/api/events", self.handshake),
                web.post("/api/alerts", self.alerts)]

    # ------------------------------------------------------------ authentication and body

    def _refused(self, request: web.Request) -> web.Response | None:
        if not self.key:
            return _problem(503, "webhooks are off: set MLOPSBOT_WEBHOOK_KEY")
        given = request.query.get("code") or request.headers.get("x-functions-key") or ""
        if not given:
            return _problem(401, "missing key: pass ?code=KEY or the x-functions-key header")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.key.encode("utf-8")):
            return _problem(401, "wrong key")
        return None

    async def _body(self, request: web.Request) -> Any:
        raw = await read_body(request, MAX_WEBHOOK_BYTES)
        if not raw:
            raise ValueError("the body is empty")
        if len(raw) > SMALL_BODY_BYTES:        # decoding a large body takes a while: not on the event loop
            return await asyncio.get_running_loop().run_in_executor(None, loads, bytes(raw))
        return loads(bytes(raw))

    # ------------------------------------------------------------ routes

    async def handshake(self, request: web.Request) -> web.Response:
        """CloudEvents 1.0 webhook validation: allow the origin that asks (after the key check)."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        origin = request.headers.get("WebHook-Request-Origin", "").strip()
        if not origin or len(origin) > 255 or any(c in origin for c in "\r\n,"):
            return _problem(400, "the CloudEvents handshake needs one WebHook-Request-Origin header")
        return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "120",
                                                 "Allow": "POST, OPTIONS"})

    async def _parsed(self, request: web.Request, parse: Callable[[Any], Any],
                      content_types: tuple[str, ...]) -> tuple[Any, web.Response | None]:
        """(what `parse` made of the body, None), or (None, the answer refusing the request)."""
        refused = self._refused(request)
        if refused is not None:
            return None, refused
        if request.content_type not in content_types:       # the media type, parameters (charset) aside
            expected = " or ".join(filter(None, (", ".join(content_types[:-1]), content_types[-1])))
            return None, _problem(415, f"expected Content-Type: {expected}")
        try:
            return parse(await self._body(request)), None
        except web.HTTPRequestEntityTooLarge:
            return None, _problem(413, f"body larger than {MAX_WEBHOOK_BYTES} bytes")
        except BodyTimeout as error:
            return None, _problem(408, str(error))
        except Malformed as error:
            return None, _problem(422, str(error))
        except ValueError as error:
            return None, _problem(400, str(error))

    async def events(self, request: web.Request) -> web.Response:
        batch, refused = await self._parsed(request, parse_event_grid, EVENT_GRID_TYPES)
        if refused is not None:
            return refused
        if batch.validation_code:
            log.info("event grid: subscription validation answered")
            return web.json_response({"validationResponse": batch.validation_code})
        for event_id, reason in batch.notes:
            log.info("eventgrid: ignored event %s: %s", _loggable(event_id), _loggable(reason))
        for event_id, reason in batch.skipped:
            log.warning("eventgrid: skipped event %s, the rest of the delivery is accepted: %s",
                        _loggable(event_id), _loggable(reason))
        return await self._accept(list(batch.events), "eventgrid", ignored=len(batch.ignored),
                                  skipped=[event_id for event_id, _ in batch.skipped])

    async def alerts(self, request: web.Request) -> web.Response:
        event, refused = await self._parsed(request, parse_common_alert, AZURE_MONITOR_TYPES)
        if refused is not None:
            return refused
        if isinstance(event, Ignored):
            log.info("azure-monitor: ignored %s: %s", _loggable(event.id), _loggable(event.reason))
            return web.json_response({"accepted": 0, "duplicates": 0, "ignored": 1, "cards": 0})
        return await self._accept([event], "azure-monitor")

    async def _accept(self, events: list[Event], source: str, *, ignored: int = 0,
                      skipped: list[str] | None = None) -> web.Response:
        now = self.clock()
        healths = await asyncio.gather(*(self.health(e) for e in events)) if self.health and len(events) <= 10 \
            else [""] * len(events)

        async def work(tx) -> tuple[int, int, int]:
            accepted = duplicates = cards = 0
            for event, health in zip(events, healths):
                if not await inbox.first_time(tx, f"{source}:{event.id}", now):
                    duplicates += 1
                    continue
                accepted += 1
                cards += await publish(tx, event, now, health=health)
            return accepted, duplicates, cards

        try:
            accepted, duplicates, cards = await self.store.run_transaction(work)
        except StorageUnavailable as error:
            log.warning("%s: storage unavailable (%s); the sender will retry", source, error)
            return storage_unavailable()
        if cards:
            self.wake()
        log.info("%s: %d accepted, %d duplicates, %d ignored, %d skipped, %d cards queued", source, accepted,
                 duplicates, ignored, len(skipped or ()), cards)
        answer: dict[str, Any] = {"accepted": accepted, "duplicates": duplicates, "ignored": ignored, "cards": cards}
        if skipped:
            answer["skipped"] = skipped
        return web.json_response(answer)


INBOX_DAYS = 7          # Event Grid retries for 24 h; Teams redelivers within minutes
OUTBOX_DAYS = 30        # settled items; an alert card older than this is posted anew when it fires again
PRUNE_EVERY = 6 * 3600.0


async def prune_forever(store: Storage, clock: Callable, *, every: float = PRUNE_EVERY) -> None:
    """Forget old dedupe keys and settled outbox items, so neither table grows without end."""
    from datetime import timedelta

    from adapters.storage import StorageError, outbox

    while True:
        now = clock()

        async def work(tx) -> tuple[int, int]:
            return (await inbox.prune(tx, now - timedelta(days=INBOX_DAYS)),
                    await outbox.prune(tx, now - timedelta(days=OUTBOX_DAYS)))
        try:
            keys, items = await store.run_transaction(work)
            if keys or items:
                log.info("pruned %d dedupe keys and %d settled outbox items", keys, items)
        except StorageError as error:
            log.warning("could not prune the inbox and outbox: %s", error)
        await asyncio.sleep(every)


class AccessLogWithoutSecrets(AbstractAccessLogger):
    """aiohttp's access log without query strings: webhook URLs carry the key in `?code=`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method, request.path, response.status,
                         response.body_length, time)


def _loggable(text: str) -> str:
    """Sender-chosen text in one log line: no line breaks, at most 300 characters."""
    return " ".join(str(text).split())[:300]


def _problem(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


STORAGE_RETRY_AFTER_SECONDS = 10


def storage_unavailable() -> web.Response:
    """The answer when the bot's database is down or refuses writes: 503 with Retry-After, the
    reason only in the log (every HTTP route: bot/app.py's middleware)."""
    return web.json_response({"error": "storage unavailable; retry later"}, status=503,
                             headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)})
