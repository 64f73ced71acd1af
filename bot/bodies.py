"""Reading a request body from a stranger: bounded in size and in time.

`read_body(request, max_bytes)` reads at most `max_bytes` (413 beyond, without reading the rest),
and gives up after BODY_READ_SECONDS in all (a client that sends one byte a minute would otherwise
hold a connection and a handler forever): `BodyTimeout`, answered 408. A client that disconnects
mid-upload raises `ClientGone`, which the app's middleware logs as one line (no traceback): there
is nobody left to answer.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

BODY_READ_SECONDS = 30.0
CHUNK = 64 * 1024


class BodyTimeout(Exception):
    """The body did not arrive in time."""


class ClientGone(Exception):
    """The client closed the connection before its body arrived."""


async def read_body(request: web.Request, max_bytes: int, *, timeout: float | None = None,
                    keep: bool = False) -> bytes:
    """The body, at most `max_bytes`. `keep`: through `request.read()`, which aiohttp caches, so that
    a later reader (botbuilder's `request.json()`) sees the same bytes; aiohttp then also enforces
    the app's client_max_size."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)
    limit = BODY_READ_SECONDS if timeout is None else timeout
    raw = bytearray()
    try:
        async with asyncio.timeout(limit):
            if keep:
                raw += await request.read()
            else:
                async for chunk in request.content.iter_chunked(CHUNK):
                    raw += chunk
                    if len(raw) > max_bytes:
                        break
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {limit:g} seconds") from None
    except (ConnectionError, OSError) as error:        # aiohttp's ClientConnectionResetError among them
        raise ClientGone(str(error) or type(error).__name__) from None
    except Exception as error:
        if _is_payload_error(error):
            raise ClientGone(str(error) or type(error).__name__) from None
        raise
    if len(raw) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(raw))
    return bytes(raw)


def _is_payload_error(error: Exception) -> bool:
    """The body ended early (aiohttp raises its own PayloadEncodingError / ContentLengthError)."""
    from aiohttp import http_exceptions
    return isinstance(error, (http_exceptions.PayloadEncodingError, http_exceptions.ContentLengthError,
                              http_exceptions.TransferEncodingError))
