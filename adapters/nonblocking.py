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
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable

from adapters.service import AzureScope, MLService, Operation, Unavailable


async def run_blocking(pool: Executor, timeout: float, what: str, fn: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise Unavailable(f"The workspace did not answer {what} within {timeout:g} s.") from None


@dataclass(frozen=True)
class PendingOperation:
    """An accepted long-running change; `await wait()` for its outcome (a one-line summary)."""

    kind: str
    target: str
    _operation: Operation
    _pool: Executor
    _timeout: float

    async def wait(self) -> str:
        return await run_blocking(self._pool, self._timeout, f"on {self.kind} of {self.target}",
                                  self._operation.wait, self._timeout)


class NonBlockingService:
    """Async facade over one workspace. Method names and arguments are those of `MLService`."""

    def __init__(self, service: MLService, *, name: str, environment: str, pool: Executor,
                 wait_pool: Executor | None = None, timeout: float = 30.0,
                 operation_timeout: float = 1800.0, azure: AzureScope | None = None) -> None:
        self.service = service
        self.name = name
        self.environment = environment
        self.azure = azure               # where the workspace lives in Azure (None: local), for studio links
        self._pool = pool
        self._wait_pool = wait_pool or pool
        self._timeout = timeout
        self._operation_timeout = operation_timeout

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or method not in MLService.__dict__:
            raise AttributeError(method)
        target = getattr(self.service, method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await run_blocking(self._pool, self._timeout, f"to {method}", target, *args, **kwargs)
            if isinstance(result, Operation):
                return PendingOperation(result.kind, result.target, result, self._wait_pool,
                                        self._operation_timeout)
            return result

        call.__name__ = method
        return call
