"""`wait_until`: the one polling helper for tests that wait for something a background task does.

    await wait_until(lambda: len(teams.connector.sent) == 2)          # a plain predicate
    await wait_until(lambda: pending(storage), timeout=10)             # or one that returns an awaitable

It polls every `interval` seconds and fails with asyncio.TimeoutError after `timeout` seconds (the
timeout bounds a hang; no test asserts on how long the wait took).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, *, interval: float = 0.02) -> None:
    async def poll() -> None:
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(interval)
    await asyncio.wait_for(poll(), timeout)
