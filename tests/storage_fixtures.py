"""Storage fixtures shared by the tests/test_storage*.py modules (import them into a test module).

`make_storage` is parametrised over SQLite (a temporary file) and the real PostgreSQL server at
MLOPSBOT_TEST_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/test), each test in a
fresh schema dropped afterwards. Without a server the PostgreSQL cases are skipped, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from adapters.storage import open_storage
from adapters.storage.postgres import PostgresStorage, quote_identifier

POSTGRES_DSN = os.environ.get("MLOPSBOT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test server's DSN; skips (or fails, when CI=true) if it does not answer."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        message = f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_DSN


@pytest.fixture
def postgres_schema(postgres_dsn: str):
    """A schema name unique to this test; the schema is dropped afterwards."""
    name = f"mlopsbot_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def make_storage(request: pytest.FixtureRequest, tmp_path):
    """A factory of unopened storages that all point at the same (fresh) database; closes them after."""
    made = []
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")

        def build():
            return PostgresStorage(dsn, schema=schema)
    else:
        def build():
            return open_storage(f"sqlite://{tmp_path}/state/bot.db")

    def make():
        made.append(build())
        return made[-1]

    yield make
    for storage in made:
        await storage.close()


@pytest.fixture
async def storage(make_storage):
    storage = make_storage()
    await storage.open()
    return storage


