"""Bot Framework signing keys, fetched off the event loop: the half of the JWT check botbuilder gets wrong.

botbuilder-python (4.17.1) fetches the channel's OpenID metadata and key set with blocking
`requests` calls without a timeout, on the event loop, whenever a token names a key it has not
cached: one slow fetch stalls every turn. The functions here do the same work by botbuilder's own
rules (keys older than a day are fetched again; an unknown key id fetches again at most hourly), but
in a worker thread, one fetch per key set at a time, bounded by KEY_FETCH_TIMEOUT, and fail fast
(503) for KEY_FAILURE_QUIET after a failure. `refresh_periodically` keeps the keys fresh in the
background.

This module imports no botbuilder: a key set is any object with botbuilder's `_OpenIdMetadata`
attributes (`url`, `keys`, `last_updated`, `_find`). bot/teams.py installs these functions on
botbuilder's class (`guard_signing_key_fetches`) and starts the refresher. A move to the Microsoft
365 Agents SDK replaces that patch; whether the fetching itself is still needed depends on how the
new SDK fetches its keys.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import requests

log = logging.getLogger(__name__)


KEY_REFRESH_SECONDS = 12 * 3600
KEY_FETCH_TIMEOUT = 5.0            # seconds, for each of the two HTTP calls of one key fetch
KEY_MAX_AGE = timedelta(days=1)    # botbuilder's own limit: older keys are fetched again before use
KEY_RETRY_AFTER_UNKNOWN = timedelta(hours=1)   # botbuilder's: an unknown key id refetches at most hourly
KEY_FAILURE_QUIET = timedelta(seconds=30)      # after a failed fetch, requests get 503 at once this long


class SigningKeysUnavailable(Exception):
    """The Bot Framework signing keys cannot be fetched right now; the caller is answered 503."""


class UnknownSigningKey(Exception):
    """The token names a key id the channel does not publish; the caller is answered 401."""


def _download_keys(url: str, timeout: float) -> list[dict]:
    """Blocking: the OpenID metadata document, then its key set. Runs in a worker thread only."""
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    keys = requests.get(response.json()["jwks_uri"], timeout=timeout)
    keys.raise_for_status()
    found = keys.json()["keys"]
    if not isinstance(found, list):
        raise ValueError("the key set has no list of keys")
    return found


async def _refresh_keys(metadata: Any) -> None:
    """Fetch `metadata`'s keys in a worker thread, at most one fetch per key set at a time, and
    wait for it no longer than KEY_FETCH_TIMEOUT. Raise SigningKeysUnavailable if that fails, at
    once while the previous fetch failed less than KEY_FAILURE_QUIET ago."""
    failed_at = getattr(metadata, "_mlopsbot_failed_at", None)
    if failed_at is not None and datetime.now() - failed_at < KEY_FAILURE_QUIET:
        raise SigningKeysUnavailable(f"the last fetch of {metadata.url} failed {failed_at:%H:%M:%S}")
    loop = asyncio.get_running_loop()
    fetch: asyncio.Future | None = getattr(metadata, "_mlopsbot_fetch", None)
    if fetch is None or fetch.done() or fetch.get_loop() is not loop:
        fetch = loop.create_task(_fetch_into(metadata))
        fetch.add_done_callback(lambda done: done.cancelled() or done.exception())   # reported by waiters
        metadata._mlopsbot_fetch = fetch  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(asyncio.shield(fetch), KEY_FETCH_TIMEOUT)
    except asyncio.TimeoutError:
        metadata._mlopsbot_failed_at = datetime.now()  # type: ignore[attr-defined]
        raise SigningKeysUnavailable(f"fetching {metadata.url} took over {KEY_FETCH_TIMEOUT:g} s") from None


async def _fetch_into(metadata: Any) -> None:
    try:
        keys = await asyncio.to_thread(_download_keys, metadata.url, KEY_FETCH_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - any failure to fetch means: keys cannot be had now
        metadata._mlopsbot_failed_at = datetime.now()  # type: ignore[attr-defined]
        raise SigningKeysUnavailable(f"cannot fetch {metadata.url}: {error!r}") from None
    metadata.keys, metadata.last_updated = keys, datetime.now()
    metadata._mlopsbot_failed_at = None  # type: ignore[attr-defined]


async def _get_signing_key(metadata: Any, key_id: str):
    """Replaces botbuilder's `_OpenIdMetadata.get`, which fetches with blocking `requests` calls
    without a timeout on the event loop: the same rules (keys older than a day are fetched again;
    an unknown key id fetches again at most hourly), but every fetch runs off the loop, bounded."""
    if metadata.last_updated < datetime.now() - KEY_MAX_AGE:
        await _refresh_keys(metadata)
    key = _find_key(metadata, key_id)
    if key is None and metadata.last_updated < datetime.now() - KEY_RETRY_AFTER_UNKNOWN:
        await _refresh_keys(metadata)
        key = _find_key(metadata, key_id)
    if key is None:
        raise UnknownSigningKey(f"no signing key with id {key_id!r}")
    return key


def _find_key(metadata: Any, key_id: str):
    if not any(isinstance(k, dict) and k.get("kid") == key_id for k in metadata.keys or []):
        return None
    return metadata._find(key_id)  # noqa: SLF001



async def refresh_periodically(metadata: Any, pause: Callable[[float], Awaitable[Any]]) -> None:
    """Fetch `metadata`'s keys off the loop every 12 hours (twice as often as botbuilder would),
    so that a request rarely waits for a fetch; after a failure, try again with exponential
    back-off (30 s doubling to 30 min, with jitter). Runs until cancelled."""
    failures = 0
    while True:
        if datetime.now() - metadata.last_updated > timedelta(seconds=KEY_REFRESH_SECONDS):
            metadata._mlopsbot_failed_at = None   # the refresher's own retries are paced below
            try:
                await _refresh_keys(metadata)
                failures = 0
                log.info("refreshed the Bot Framework signing keys")
            except SigningKeysUnavailable as error:
                failures += 1
                delay = min(30.0 * 2 ** (failures - 1), 1800.0) * (0.75 + random.random() / 2)
                log.warning("could not refresh the Bot Framework signing keys (%s); trying again in %.0f s",
                            error, delay)
                await pause(delay)
                continue
        await pause(KEY_REFRESH_SECONDS / 12)
