"""Database trouble is answered, not crashed (issue 17, item 4).

- PostgreSQL goes away under a running bot (a TCP relay in front of the real server is shut, so
  the bot's connection breaks and the port refuses): the pipeline API answers 503 with
  Retry-After, as the webhooks do, and never a traceback.
- SQLite that can still be read but no longer written (the connection is switched to
  `query_only`, what a read-only file gives; the tests run as root, which ignores file modes):
  /readyz answers 503, with the reason in the log and not in the body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.storage.postgres import PostgresStorage
from bot.app import STORAGE, create_app
from bot.settings import load_settings
from tests.storage_fixtures import postgres_dsn, postgres_schema  # noqa: F401 (fixtures)

TOKEN = "t" * 40


class Relay:
    """A TCP relay to the PostgreSQL server that can be shut, like a server that went down."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def shut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
def api_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", api_token=TOKEN, webhook_key="k" * 32)


async def call(client, method: str, path: str, body=None):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client.request(method, path, json=body, headers=headers) as response:
        return response.status, response.headers, await response.text()


@pytest.mark.postgres
async def test_with_postgresql_down_the_api_answers_503_with_retry_after(aiohttp_client, api_settings, postgres_dsn,
                                                                         postgres_schema, caplog):
    params = conninfo_to_dict(postgres_dsn)
    relay = Relay(params.get("host", "127.0.0.1"), int(params.get("port", 5432)))
    await relay.start()
    storage = PostgresStorage(make_conninfo(postgres_dsn, host="127.0.0.1", port=str(relay.port)),
                              schema=postgres_schema)
    client = await aiohttp_client(create_app(api_settings, storage=storage, reset_demo=True))
    status, _, body = await call(client, "GET", "/api/approvals/1")
    assert (status, json.loads(body)) == (404, {"error": "no approval request 1"})        # up: a plain answer

    await relay.shut()                               # the server goes away under the running bot
    caplog.set_level(logging.WARNING)
    pipeline = {"action": "traffic", "workspace": "ml-prod", "target": "fraud-api", "requester": "CI",
                "conversation": "19:general@thread.tacv2"}
    for method, path, body in (("POST", "/api/approvals", pipeline), ("GET", "/api/approvals/1", None),
                               ("GET", "/api/audit?format=jsonl", None), ("GET", "/api/audit?format=csv", None)):
        status, headers, text = await call(client, method, path, body)
        assert (status, headers.get("Retry-After"), json.loads(text)) == (
            503, "10", {"error": "storage unavailable; retry later"}), (method, path, text)
        assert "Traceback" not in text and "psycopg" not in text
    assert "storage unavailable" in caplog.text
    status, _, _ = await call(client, "GET", "/readyz")
    assert status == 503


async def test_sqlite_that_cannot_be_written_is_not_ready(aiohttp_client, api_settings, caplog):
    client = await aiohttp_client(create_app(api_settings, reset_demo=True))
    assert (await client.get("/readyz")).status == 200
    storage = client.app[STORAGE]
    await storage._call(storage._connection.execute, "PRAGMA query_only = ON")   # reads work, writes fail

    caplog.set_level(logging.ERROR)
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (503, {"status": "unavailable", "storage": "unavailable"})
    assert "readiness: storage unavailable" in caplog.text and "readonly database" in caplog.text
    assert (await client.get("/healthz")).status == 200           # alive, only not ready
    status, headers, text = await call(client, "GET", "/api/approvals/1")
    assert status == 404                                           # reads still answer

    alert = {"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {
        "alertId": "/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a-1", "alertRule": "p99",
        "severity": "Sev2", "signalType": "Metric", "monitorCondition": "Fired", "monitoringService": "Platform",
        "alertTargetIDs": ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/"
                           "workspaces/ml-prod/onlineEndpoints/fraud-api"],
        "firedDateTime": "2026-11-26T09:00:00Z", "description": "", "essentialsVersion": "1.0",
        "alertContextVersion": "1.0", "originAlertId": "a-1", "configurationItems": ["fraud-api"]},
        "alertContext": {}}}
    posted = await client.post("/api/alerts?code=" + "k" * 32, json=alert)
    assert (posted.status, posted.headers.get("Retry-After")) == (503, "10")

    await storage._call(storage._connection.execute, "PRAGMA query_only = OFF")
    assert (await client.get("/readyz")).status == 200             # ready again once writes work


async def test_a_write_that_waits_too_long_is_not_ready_and_leaves_storage_usable(aiohttp_client, api_settings,
                                                                                    monkeypatch, caplog):
    """Another process holds SQLite's write lock: the probe gives up at its bound (503), and the
    bot is ready again once the lock goes."""
    import sqlite3

    import bot.app

    monkeypatch.setattr(bot.app, "READY_WRITE_SECONDS", 0.2)
    client = await aiohttp_client(create_app(api_settings, reset_demo=True))
    storage = client.app[STORAGE]
    other = sqlite3.connect(storage.path, isolation_level=None, timeout=10, check_same_thread=False)
    await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")      # a writer that does not let go
    try:
        caplog.set_level(logging.ERROR)
        ready = await client.get("/readyz")
        assert (ready.status, await ready.json()) == (503, {"status": "unavailable", "storage": "unavailable"})
        assert "did not take a write within 0.2 s" in caplog.text
    finally:
        await asyncio.to_thread(other.execute, "ROLLBACK")
        other.close()
    for _ in range(100):                          # the abandoned write ends within its busy timeout
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.05)
    assert (await client.get("/readyz")).status == 200
    status, _, _ = await call(client, "GET", "/api/audit")
    assert status == 200


async def test_a_transaction_given_up_while_begin_waits_leaves_no_transaction_open(tmp_path):
    """The BEGIN a bounded caller abandoned (it waits for another process's lock on the worker
    thread) gets the lock once it is free; it must be rolled back right after, not stay open
    holding SQLite's write lock against every other process and failing the next BEGIN."""
    import sqlite3

    from adapters.storage import instances, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'bot.db'}")
    await storage.open()
    other = sqlite3.connect(storage.path, isolation_level=None, timeout=10, check_same_thread=False)
    await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await storage.run_transaction(lambda tx: instances.beat(tx, instance="bot-1", owner="bot-1/a",
                                                                        now=datetime.now(timezone.utc)))
    finally:
        await asyncio.to_thread(other.execute, "ROLLBACK")
        other.close()
    async with storage._lock:                     # what the worker thread holds once its queue is done
        assert await storage._call(lambda: storage._connection.in_transaction) is False
    await storage.run_transaction(lambda tx: instances.beat(tx, instance="bot-1", owner="bot-1/a",
                                                            now=datetime.now(timezone.utc)))
    await storage.close()
