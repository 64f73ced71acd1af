"""The Teams seam: the only module that imports botbuilder.

It turns Bot Framework activities into `Request`s for the `ChatHandler` and its `Reply`s back
into activities:

- messages in personal chat, group chat and channels (the bot's @mention removed) and
  `Action.Submit` messages (`value = {"verb": ..., "args": [...]}`) go to the command registry;
- `adaptiveCard/action` invokes (Action.Execute) are answered here with an
  `AdaptiveCardInvokeResponse` model, not a pre-serialized dict: botbuilder 4.17.1's
  `CloudAdapter.process` serializes the invoke body itself, and `ActivityHandler`'s own handling
  hands it a dict, which fails with HTTP 500 on every click;
- a conversation reference is stored on installationUpdate, conversationUpdate and every message,
  so that follow-ups (and later alerts and digests) can be sent proactively;
- a short welcome is posted when the bot is added to a conversation.
"""

from __future__ import annotations

import asyncio
import collections
import html
import logging
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import requests
from aiohttp import web
from botbuilder.core import (
    ActivityHandler, CardFactory, InvokeResponse, MessageFactory, TurnContext,
)
from botbuilder.core.teams import TeamsInfo
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import AuthenticationConstants
from msrest.exceptions import HttpOperationError
from msrest.serialization import Serializer
from msrest.universal_http.requests import ClientRetryPolicy
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata
from botbuilder.schema import (
    Activity, ActivityTypes, AdaptiveCardInvokeResponse, ChannelAccount, ConversationReference,
)

from adapters.storage import ConversationRecord, Storage, people
from bot.handler import ChatHandler, FollowUps, Request, apology
from bot.outbox import DeliveryFailed
from commands.context import Reply, User
from commands.registry import MAX_INPUT_BYTES
from commands.ui import stamped

log = logging.getLogger(__name__)

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
WELCOME = ("Hi, I'm the MLOps bot. I run Azure Machine Learning from chat. Try `models`, `endpoints`, "
           "`endpoint fraud-api`, `jobs --status Failed` or `help`.")


# botbuilder builds two msrest clients per turn and per proactive send (the connector and the user
# token client); each builds a retry policy from `[i for i in range(999) if i not in safe_codes]`,
# with safe_codes a 500-element list: half a million comparisons, about 10 ms of CPU each time,
# more than the rest of a `help` turn. The same codes as a frozenset give the same policy.
ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)


class SerializedCard(dict):
    """An Adaptive Card that is JSON already (our cards are built from plain dicts, lists, strings,
    numbers and booleans, and stored as JSON in the outbox), handed to botbuilder as it is.

    botbuilder copies every outgoing activity (`copy.deepcopy` in TurnContext.send_activities) and
    msrest serializes the attachment's `content` key by key (`Serializer.serialize_object`): for
    the 15 KB `help` card, some 7 ms of CPU per message, most of a busy turn. msrest's walk of plain
    JSON values is the identity, so giving it the dict as it is leaves the wire JSON unchanged
    (tests/test_send_path.py compares it); and nobody changes a card once it is sent, so the copy may be
    the card itself."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> "SerializedCard":
        return self


_serialize_object = Serializer.serialize_object


def _serialize_object_once(self: Serializer, attr: Any, **kwargs: Any) -> Any:
    if type(attr) is SerializedCard:
        return attr
    return _serialize_object(self, attr, **kwargs)


Serializer.serialize_object = _serialize_object_once


class _AdapterSettings:
    """The attribute names ConfigurationBotFrameworkAuthentication reads."""

    def __init__(self, app_id: str, app_password: str, app_type: str, tenant_id: str) -> None:
        self.APP_ID = app_id
        self.APP_PASSWORD = app_password
        self.APP_TYPE = app_type
        self.APP_TENANTID = tenant_id


def build_adapter(app_id: str, app_password: str, app_type: str, tenant_id: str) -> CloudAdapter:
    """A CloudAdapter that validates every inbound JWT when an app id is set."""
    guard_signing_key_fetches()
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(
        _AdapterSettings(app_id, app_password, app_type, tenant_id)))

    async def on_error(context: TurnContext, error: Exception) -> None:
        incident = uuid.uuid4().hex[:8]
        log.error("incident %s in a turn", incident, exc_info=error)
        try:
            await context.send_activity(apology(incident))
        except Exception:  # noqa: BLE001 - the connector may be the thing that failed
            log.warning("incident %s: could not tell the user", incident)

    adapter.on_turn_error = on_error
    return adapter


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


async def _refresh_keys(metadata: _OpenIdMetadata) -> None:
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


async def _fetch_into(metadata: _OpenIdMetadata) -> None:
    try:
        keys = await asyncio.to_thread(_download_keys, metadata.url, KEY_FETCH_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - any failure to fetch means: keys cannot be had now
        metadata._mlopsbot_failed_at = datetime.now()  # type: ignore[attr-defined]
        raise SigningKeysUnavailable(f"cannot fetch {metadata.url}: {error!r}") from None
    metadata.keys, metadata.last_updated = keys, datetime.now()
    metadata._mlopsbot_failed_at = None  # type: ignore[attr-defined]


async def _get_signing_key(metadata: _OpenIdMetadata, key_id: str):
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


def _find_key(metadata: _OpenIdMetadata, key_id: str):
    if not any(isinstance(k, dict) and k.get("kid") == key_id for k in metadata.keys or []):
        return None
    return metadata._find(key_id)  # noqa: SLF001


def guard_signing_key_fetches() -> None:
    """Make every botbuilder signing-key lookup and refresh non-blocking (idempotent).

    botbuilder creates one `_OpenIdMetadata` per metadata URL (channel, emulator, government...)
    on demand, so the class itself is patched: no instance can fetch on the event loop."""
    _OpenIdMetadata.get = _get_signing_key  # type: ignore[method-assign]
    _OpenIdMetadata._refresh = _refresh_keys  # type: ignore[method-assign]  # noqa: SLF001


async def keep_signing_keys_fresh(url: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL, *,
                                  pause: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Fetch the channel's signing keys off the loop every 12 hours (twice as often as botbuilder
    would), so that a request rarely waits for a fetch; after a failure, try again with
    exponential back-off (30 s doubling to 30 min, with jitter)."""
    guard_signing_key_fetches()
    metadata = JwtTokenExtractor.get_open_id_metadata(url)
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


RETRYABLE_STATUSES = {412, 429, 502, 504}
SEND_ATTEMPTS = 4


async def send_with_retry(turn_context: TurnContext, activity: Activity) -> str:
    """Send, retrying what Teams asks us to retry (429 throttling, 412, 502, 504) with exponential
    back-off and jitter, honouring Retry-After. Teams limits a bot to 7 messages a second per
    conversation, so a burst of follow-ups or alerts will meet 429s."""
    for attempt in range(SEND_ATTEMPTS):
        try:
            response = await turn_context.send_activity(activity)
            return response.id if response is not None and response.id else ""
        except HttpOperationError as error:
            response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            if status not in RETRYABLE_STATUSES or attempt == SEND_ATTEMPTS - 1:
                raise
            delay = _retry_after(response)
            if delay is None:
                delay = 0.5 * 2 ** attempt * (0.5 + random.random())
            log.info("Teams answered %s; sending again in %.1f s", status, delay)
            await _pause(min(delay, 30.0))
    return ""


async def _pause(seconds: float) -> None:
    """The wait between send attempts (a seam for tests, which record it instead of waiting)."""
    await asyncio.sleep(seconds)


def _retry_after(response: Any) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After")))
    except (AttributeError, TypeError, ValueError):
        return None


# A text message is rendered as markdown by Teams, and many answers repeat what someone typed or
# what Azure said ("No model named '…'"). The bot's own text messages never contain a link, so a
# link or image in one came from someone else: in a channel it would be a link posted by the bot.
# A zero-width space between `]` and `(` leaves the words and makes the link inert.
_LINK = re.compile(r"\](?=[(\[:])")


def reply_activity(reply: Reply) -> Activity:
    if reply.card is None:
        return MessageFactory.text(_LINK.sub("]\u200b", reply.text))
    activity = MessageFactory.attachment(CardFactory.adaptive_card(SerializedCard(reply.card)))
    activity.summary = reply.text.splitlines()[0][:200] if reply.text else None
    return activity


# From each '<' to the next '<' or '>': every character is looked at once or twice, whatever the
# text (`<[^>]+>` scanned to the end from each '<' of '<a<a<a...': quadratic, 21 s for 120 KB).
_TAG = re.compile(r"<[^<>]*>")
_BOT_MENTION = re.compile(r"<at>[^<]*</at>")
# Teams wraps what a person types in a little HTML (<p>, <at>Name</at>, entities). A command is at
# most MAX_INPUT_BYTES; text longer than this (room for the markup) is cut before anything scans
# it, and what is left is still over the command limit, so it gets the "too long" answer.
RAW_TEXT_LIMIT = 4 * MAX_INPUT_BYTES


def command_text(activity: Activity) -> str:
    """The typed words: the bot's @mention removed, Teams' HTML and entities undone. Text over
    RAW_TEXT_LIMIT comes back cut to that length, untouched, for the command limit to refuse."""
    value = activity.text or ""
    if len(value) > RAW_TEXT_LIMIT:
        return value[:RAW_TEXT_LIMIT]
    bot_id = activity.recipient.id if isinstance(activity.recipient, ChannelAccount) else None
    for entity in activity.entities or []:
        props = getattr(entity, "additional_properties", None) or {}     # a null entity has none
        mentioned = props.get("mentioned") or {}
        if entity is None or not isinstance(mentioned, dict):
            continue
        if entity.type == "mention" and isinstance(props.get("text"), str) and props["text"] and (
                bot_id is None or mentioned.get("id") == bot_id):
            value = value.replace(props["text"], " ")
    value = _BOT_MENTION.sub(" ", value) if bot_id is None else value
    return " ".join(html.unescape(_TAG.sub(" ", value)).split())


MAX_MENTIONS = 20       # people looked up per message (each is a call to Teams' member API)


def _other_mentions(activity: Activity) -> list[tuple[str, str, str]]:
    """(text as typed, Teams user id, name) of the @mentions that are not the bot: the first
    MAX_MENTIONS distinct ones (a message of thousands of mention entities cost as many calls)."""
    bot_id = activity.recipient.id if isinstance(activity.recipient, ChannelAccount) else None
    found: list[tuple[str, str, str]] = []
    for entity in activity.entities or []:
        if len(found) >= MAX_MENTIONS:
            break
        props = getattr(entity, "additional_properties", None) or {}
        mentioned = props.get("mentioned") or {}
        if entity is None or entity.type != "mention" or not isinstance(mentioned, dict) or mentioned.get("id") == bot_id:
            continue
        if isinstance(props.get("text"), str) and isinstance(mentioned.get("id"), str) and len(props["text"]) <= 512:
            shown = " ".join(html.unescape(_TAG.sub(" ", props["text"])).split())
            if shown and all(mentioned["id"] != seen[1] or shown != seen[0] for seen in found):
                found.append((shown, mentioned["id"], str(mentioned.get("name") or shown)))
    return found


def tenant_of(activity: Activity) -> str:
    """The Entra tenant the activity comes from: Teams' `channelData.tenant.id`, else the
    conversation's `tenantId`. botbuilder 4.17.1's schema maps `tenant_id` to the key `tenantID`,
    but Teams (and every published sample) sends `conversation.tenantId`, which botbuilder keeps
    among the additional properties. `check_activity` has refused activities where the two differ."""
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = channel_data.get("tenant")
    if isinstance(tenant, dict) and isinstance(tenant.get("id"), str) and tenant["id"]:
        return tenant["id"]
    return _conversation_tenant(activity.conversation) or ""


def _conversation_tenant(conversation: Any) -> str | None:
    if conversation is None:
        return None
    extra = getattr(conversation, "additional_properties", None) or {}
    found = extra.get("tenantId") if isinstance(extra, dict) else None
    found = found or conversation.tenant_id
    return found if isinstance(found, str) and found else None


def user_of(activity: Activity, *, entra_only: bool = False) -> User:
    """Who sent `activity`: their Entra object id, which roles and grants name. `entra_only`
    (production): never the channel's own user id, which a Direct Line client chooses itself;
    without an object id the sender is nobody in particular (the default role)."""
    sender = activity.from_property or ChannelAccount(id="", name="")
    fallback = "" if entra_only else (sender.id or "")
    return User(id=sender.aad_object_id or fallback, name=sender.name or "someone", tenant_id=tenant_of(activity))


def conversation_record(activity: Activity) -> ConversationRecord | None:
    conversation = activity.conversation
    if conversation is None or not conversation.id or not activity.service_url:
        return None
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    kind = conversation.conversation_type or ("channel" if channel_data.get("channel") else "personal")
    reference = TurnContext.get_conversation_reference(activity)
    # stored for every later proactive message: the URL as checked, rebuilt from its parts
    reference.service_url, problem = checked_service_url(activity.service_url)
    if problem is not None:
        return None
    sender = activity.from_property
    return ConversationRecord(
        conversation_id=conversation.id,
        kind=kind,
        reference=reference.serialize(),
        tenant_id=user_of(activity).tenant_id,
        team_id=(channel_data.get("team") or {}).get("id", "") or "",
        channel_id=(channel_data.get("channel") or {}).get("id", "") or "",
        user_id=(sender.aad_object_id or "") if kind == "personal" and sender else "",
        updated_at=datetime.now(timezone.utc),
    )


CONVERSATION_TYPES = ("personal", "groupChat", "channel")
TEAMS_CHANNEL = "msteams"


def activity_problem(body: dict) -> str | None:
    """What makes `body` unusable as an activity, naming the field; None when it is fine.

    Run before authentication and before botbuilder parses the body: botbuilder's parsing lets
    wrong types through to the turn (or fails with errors that read like a bad token)."""
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not body["type"]:
        return "an activity needs a 'type'"
    sender, conversation = body.get("from"), body.get("conversation")
    if not isinstance(conversation, dict) or not _text(conversation.get("id")):
        return "an activity needs 'conversation.id'"
    if not isinstance(sender, dict) or not _text(sender.get("id")):
        return "an activity needs 'from.id'"
    if not isinstance(body.get("serviceUrl"), str) or not body["serviceUrl"].startswith(("http://", "https://")):
        return "an activity needs a 'serviceUrl'"
    for where, value in (("from.name", sender.get("name")), ("from.aadObjectId", sender.get("aadObjectId")),
                         ("conversation.tenantId", conversation.get("tenantId")), ("text", body.get("text")),
                         ("conversation.name", conversation.get("name"))):
        if value is not None and not isinstance(value, str):
            return f"'{where}' must be a string"
    kind = conversation.get("conversationType")
    if kind is not None and kind not in CONVERSATION_TYPES:
        return f"'conversation.conversationType' must be one of {', '.join(CONVERSATION_TYPES)}"
    if body.get("recipient") is not None and not (isinstance(body["recipient"], dict)
                                                  and _text(body["recipient"].get("id"))):
        return "'recipient' must be an object with an 'id'"
    channel_data = body.get("channelData")
    if channel_data is not None and not isinstance(channel_data, dict):
        return "'channelData' must be an object"
    for name in ("tenant", "team", "channel"):
        part = (channel_data or {}).get(name)
        if part is not None and not (isinstance(part, dict) and (part.get("id") is None or _text(part["id"]))):
            return f"'channelData.{name}' must be an object with a string 'id'"
    tenant = ((channel_data or {}).get("tenant") or {}).get("id")
    if tenant and conversation.get("tenantId") and tenant != conversation["tenantId"]:
        return "'channelData.tenant.id' and 'conversation.tenantId' name different tenants"
    for name in ("membersAdded", "membersRemoved", "entities", "attachments"):
        items = body.get(name)
        if items is not None and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
            return f"'{name}' must be a list of objects"
    for name in ("membersAdded", "membersRemoved"):
        if not all(_text(member.get("id")) for member in body.get(name) or []):
            return f"every member in '{name}' needs an 'id'"
    try:
        Activity().deserialize(body)
    except Exception as error:  # noqa: BLE001 - msrest's DeserializationError and what it wraps
        return f"the activity cannot be read: {str(error)[:200]}"
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


# A host name as DNS spells it (letters, digits, hyphens; dots between labels), an IPv4 address, or
# an IPv6 literal in brackets. Nothing else may stand between "//" and the path.
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]{2,45}\]")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")
MAX_SERVICE_URL = 2048


def checked_service_url(service_url: str) -> tuple[str, str | None]:
    """(the URL rebuilt from its parts, None), or ("", why it is refused).

    The parts are read strictly, so that every HTTP client agrees on the host: the standard
    library takes `https://evil.example\\@smba.trafficmanager.net/` to mean the host after the
    `@`, while requests/urllib3 (which the connector's token and send paths use) connect to
    `evil.example`; `%2e` in a host is decoded by urllib3 but not by urlsplit. So backslashes,
    user information (`@`), %-escapes, spaces and anything but printable ASCII are refused, a
    query or fragment too (a Bot Framework service URL has neither), and the host that yarl
    (aiohttp) and urllib3 (requests) parse from the rebuilt URL must be the one checked."""
    if not isinstance(service_url, str) or not service_url or len(service_url) > MAX_SERVICE_URL:
        return "", "'serviceUrl' is not a URL"
    if not (service_url.isascii() and service_url.isprintable()) or any(c in service_url for c in " \\"):
        return "", "'serviceUrl' may not contain backslashes, spaces, control or non-ASCII characters"
    scheme, sep, rest = service_url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        return "", "'serviceUrl' must be an https URL of a Teams or Bot Framework service"
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, rest = rest[:cut], rest[cut:]
    if "@" in authority:
        return "", "'serviceUrl' may not carry user information ('@' before the host)"
    if "%" in authority:
        return "", "'serviceUrl' may not contain %-escapes in its host"
    if "?" in rest or "#" in rest:
        return "", "'serviceUrl' may not carry a query or a fragment"
    if rest and not _PATH.fullmatch(rest):
        return "", "'serviceUrl' has characters its path may not contain"
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            return "", "'serviceUrl' is not a URL"
        host, port_text = authority[:close + 1].lower(), authority[close + 1:]
        if not _IPV6_LITERAL.fullmatch(host):
            return "", "'serviceUrl' is not a URL"
    else:
        host, colon, port_text = authority.partition(":")
        host, port_text = host.lower(), colon + port_text
        if host and not _HOST_NAME.fullmatch(host):
            return "", f"'serviceUrl' host {host[:80]!r} is not a host name"
    port = None
    if port_text:
        digits = port_text[1:]
        if not port_text.startswith(":") or not (digits.isascii() and digits.isdigit()) or not (
                0 < int(digits[:6] or "0") <= 65535):
            return "", "'serviceUrl' is not a URL"
        port = int(digits)
    default = 443 if scheme == "https" else 80
    rebuilt = f"{scheme}://{host}{'' if port in (None, default) else f':{port}'}{rest or '/'}"
    if host and _clients_read_host(rebuilt) != {host.strip("[]")}:
        return "", "'serviceUrl' is read differently by different HTTP clients"
    return rebuilt, None


def _clients_read_host(url: str) -> set[str]:
    """The host each HTTP client the bot sends with would connect to for `url`."""
    import urllib3.util
    import yarl
    found = set()
    try:
        found.add((yarl.URL(url).host or "").lower())
    except ValueError:
        found.add("")
    try:
        found.add((urllib3.util.parse_url(url).host or "").lower().strip("[]"))
    except ValueError:
        found.add("")
    return found


def service_url_problem(service_url: str, allowed_hosts: Sequence[str]) -> str | None:
    """None when replies may go to `service_url`: a URL every client reads alike
    (`checked_service_url`), https to an allowed host (`*.domain` matches its subdomains), or http
    to a loopback host listed as `http://host`. No `allowed_hosts` (development): any host."""
    rebuilt, problem = checked_service_url(service_url)
    if problem is not None:
        return problem
    url = urlsplit(rebuilt)
    scheme, host, port = url.scheme, (url.hostname or "").lower(), url.port
    if not allowed_hosts:
        return None if host else "'serviceUrl' names no host"
    if scheme == "http" and f"http://{host}" in allowed_hosts:
        return None
    if scheme != "https" or port not in (None, 443):
        return "'serviceUrl' must be an https URL of a Teams or Bot Framework service"
    for allowed in allowed_hosts:
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return None
    return f"'serviceUrl' host {host!r} is not a Teams or Bot Framework service (MLOPSBOT_SERVICE_URL_HOSTS)"


def _reference_key(activity: Activity) -> tuple:
    """Everything a stored ConversationRecord is made of, except the activity id: when it equals the
    last one saved for this conversation, saving again would rewrite the same row."""
    conversation = activity.conversation
    sender = activity.from_property or ChannelAccount()
    bot = activity.recipient or ChannelAccount()
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}

    def ids(key: str) -> str:
        part = channel_data.get(key)
        return str(part.get("id")) if isinstance(part, dict) else ""

    return (activity.service_url, activity.channel_id, activity.locale, sender.id, sender.name,
            sender.aad_object_id, sender.role, bot.id, bot.name, bot.role, conversation.id, conversation.name,
            conversation.conversation_type, conversation.tenant_id, conversation.is_group,
            ids("tenant"), ids("team"), ids("channel"))


class SavedConversations:
    """The conversations this process saved lately, to skip rewriting an unchanged reference on
    every message. Bounded (least recently used first out) and each entry re-saved after
    RESAVE_SECONDS, so that `updated_at` stays roughly current; forgotten when Teams says the bot
    was removed (a later save must clear the "gone" mark)."""

    MAX_ENTRIES = 10_000
    RESAVE_SECONDS = 600.0

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._saved: collections.OrderedDict[str, tuple[tuple, float]] = collections.OrderedDict()

    def unchanged(self, conversation_id: str, key: tuple) -> bool:
        entry = self._saved.get(conversation_id)
        if entry is None or entry[0] != key or self.clock() - entry[1] > self.RESAVE_SECONDS:
            return False
        self._saved.move_to_end(conversation_id)
        return True

    def remember(self, conversation_id: str, key: tuple) -> None:
        self._saved[conversation_id] = (key, self.clock())
        self._saved.move_to_end(conversation_id)
        while len(self._saved) > self.MAX_ENTRIES:
            self._saved.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        self._saved.pop(conversation_id, None)


# Activities that may mean the bot was (re)added or the conversation changed: always saved.
ALWAYS_SAVED = {"installationUpdate", "conversationUpdate"}


class TeamsBot(ActivityHandler):
    def __init__(self, handler: ChatHandler, storage: Storage, adapter: CloudAdapter, app_id: str, *,
                 service_url_hosts: Sequence[str] = (), teams_only: bool = False) -> None:
        self.handler = handler
        self.service_url_hosts = tuple(service_url_hosts)   # empty: any (development mode only)
        # Production: Teams' channel only, and people are their Entra object ids. An Azure Bot also
        # has Direct Line and Web Chat, whose clients choose `from.id` themselves.
        self.teams_only = teams_only
        self.storage = storage
        self.adapter = adapter
        self.app_id = app_id
        self._follow_ups = FollowUps()
        self._welcomed: set[str] = set()
        self._people_seen: set[tuple[str, str, str]] = set()
        self._saved = SavedConversations()

    async def process(self, request: web.Request) -> web.StreamResponse:
        """Hand an aiohttp request to the CloudAdapter: JWT validation, then this bot's turn.

        Errors inside a turn are handled by the adapter's on_turn_error, so what escapes here
        comes from authentication. botbuilder raises PermissionError for a missing or wrong token
        (the adapter answers 401) but lets other failures through: a malformed token (jwt's
        DecodeError), an unknown key id, a bad signature. All of those are 401 too; only signing
        keys that cannot be fetched are our problem (503, fast: see `guard_signing_key_fetches`),
        never a 500.
        """
        try:
            return await self.adapter.process(request, self)
        except web.HTTPException:
            raise
        except (SigningKeysUnavailable, requests.RequestException) as error:
            log.error("cannot verify a token: %s", error)
            raise web.HTTPServiceUnavailable(text="cannot verify the caller's token right now",
                                             headers={"Retry-After": "30"}) from None
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("rejected a request whose token did not validate: %r", error)
            raise web.HTTPUnauthorized() from None

    def check_activity(self, body: Any) -> str | None:
        """Why `body` must be refused before anything else happens (400), or None."""
        problem = activity_problem(body)
        if problem is None and self.teams_only and body.get("channelId") != TEAMS_CHANNEL:
            problem = (f"this bot answers Microsoft Teams only (channelId '{TEAMS_CHANNEL}'), "
                       f"not {str(body.get('channelId'))[:40]!r}")
        if problem is None:          # no hosts listed (development): any host, but read strictly
            problem = service_url_problem(body["serviceUrl"], self.service_url_hosts)
        if problem is not None:
            log.warning("refused an activity: %s", problem)
        return problem

    async def on_turn(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if not self.handler.tenant_allowed(tenant_of(activity)):
            # the allow-list comes first: no stored reference, no welcome; a person who writes is told
            log.warning("refused a %s activity from tenant %s", activity.type, tenant_of(activity) or "(none)")
            if activity.type in (ActivityTypes.message, ActivityTypes.invoke):
                await super().on_turn(turn_context)      # the handler answers "not enabled" in words
            return
        if activity.conversation is not None and activity.conversation.id and activity.service_url:
            key = _reference_key(activity)
            conversation_id = activity.conversation.id
            if activity.type in ALWAYS_SAVED or not self._saved.unchanged(conversation_id, key):
                record = conversation_record(activity)
                if record is not None:
                    await self.storage.save_conversation(record)
                    self._saved.remember(conversation_id, key)
        await self._remember_person(activity)
        await super().on_turn(turn_context)

    async def _remember_person(self, activity: Activity) -> None:
        """Note the sender's Teams id beside their Entra object id (once per process and pair), so
        that approval cards can be refreshed for eligible approvers (`refresh.userIds`)."""
        sender = activity.from_property
        if sender is None or not sender.aad_object_id or not sender.id:
            return
        key = (sender.aad_object_id, sender.id, sender.name or "")
        if key in self._people_seen:
            return
        tenant, now = tenant_of(activity), datetime.now(timezone.utc)
        await self.storage.run_transaction(
            lambda tx: people.remember(tx, key[0], key[1], key[2], tenant, now=now))
        self._people_seen.add(key)

    # ------------------------------------------------------------ messages and card actions

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        value = activity.value if isinstance(activity.value, dict) else None
        if value is not None and "verb" in value:            # Action.Submit from one of our cards
            request = self._request(activity, verb=value.get("verb"), args=value.get("args", []))
        else:
            words, mentioned = await self._resolve_mentions(turn_context)
            request = self._request(activity, text=words, mentioned=mentioned)
        acknowledged = asyncio.Event()
        try:
            reply = await self.handler.handle(request, self._later(activity, acknowledged))
            activity_id = await send_with_retry(turn_context, reply_activity(reply))
            if reply.track:
                await self.handler.delivered(reply, request.conversation_id, activity_id)
        finally:
            acknowledged.set()            # follow-ups wait for this: an outcome never precedes its ack

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse | None:
        """A card button (Action.Execute). The clicked card is never destroyed: a Refresh button
        (`data.refresh`) updates it in place, stamped "as of"; every other click (navigation, a
        change, or anything refused or failed) leaves it as it was and posts the answer as a new
        message, and the invoke is answered with a short `activity.message` that Teams shows to
        the clicker without touching the card."""
        if turn_context.activity.name != "adaptiveCard/action":
            return await super().on_invoke_activity(turn_context)
        value = turn_context.activity.value if isinstance(turn_context.activity.value, dict) else {}
        action = value.get("action") if isinstance(value.get("action"), dict) else {}
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        request = self._request(turn_context.activity, verb=action.get("verb"), args=_with_typed(data),
                                refresh=data.get("refresh") is True)
        acknowledged = asyncio.Event()
        try:
            reply = await self.handler.handle(request, self._later(turn_context.activity, acknowledged))
            # A refresh replaces the clicked card. Only our read-only and vote buttons ask for it, so a
            # forged click asking a change to replace a card is answered as a new message instead; and the
            # clicked message is never recorded as a request's card (where later edits go): the bot
            # records the cards it sends itself.
            if data.get("refresh") is True and reply.card is not None and not self.handler.is_change(request.verb):
                return _invoke_answer(CARD_CONTENT_TYPE, stamped(reply.card, datetime.now(timezone.utc)))
            activity_id = await send_with_retry(turn_context, reply_activity(reply))
            if reply.track:
                await self.handler.delivered(reply, request.conversation_id, activity_id)
            return _invoke_answer(MESSAGE_CONTENT_TYPE, _toast(reply))
        finally:
            acknowledged.set()

    def _request(self, activity: Activity, *, text: str | None = None, verb: Any = None,
                 args: Any = (), mentioned: tuple[User, ...] = (), refresh: bool = False) -> Request:
        conversation = activity.conversation
        return Request(user=user_of(activity, entra_only=self.teams_only),
                       conversation_id=conversation.id if conversation else "",
                       text=text, verb=verb, args=args if isinstance(args, list) else [args],
                       activity_id=activity.id or "", conversation_kind=(conversation.conversation_type or "")
                       if conversation else "", mentioned=mentioned, refresh=refresh)

    async def _resolve_mentions(self, turn_context: TurnContext) -> tuple[str, tuple[User, ...]]:
        """The typed words, with each @mention of a person replaced by their Entra object id
        (looked up with Teams' member API), so that `grant @Bob approver` names Bob exactly."""
        activity = turn_context.activity
        typed = command_text(activity)
        mentions = _other_mentions(activity)
        if not mentions:
            return typed, ()
        found: list[User] = []
        for shown, member_id, name in mentions:
            try:
                member = await TeamsInfo.get_member(turn_context, member_id)
                object_id = member.aad_object_id or ""
                upn = getattr(member, "user_principal_name", "") or ""
            except Exception as error:  # noqa: BLE001 - the member API is optional: say so below
                log.info("could not resolve a mention: %r", error)
                object_id, upn = "", ""
            if not object_id:
                # Teams answers for members of this conversation only (a personal chat has two): someone
                # the bot has met elsewhere is known by their Teams id.
                met = await self.storage.run_transaction(lambda tx: people.by_teams_id(tx, member_id), write=False)
                object_id = met[0] if met else ""
            if object_id:
                found.append(User(id=object_id, name=name or shown, tenant_id=user_of(activity).tenant_id, upn=upn))
            typed = typed.replace(shown, f" {object_id or shown.replace(' ', '_')} ")
        return " ".join(typed.split()), tuple(found)

    # ------------------------------------------------------------ installs and welcome

    async def on_members_added_activity(self, members_added: list[ChannelAccount],
                                        turn_context: TurnContext) -> None:
        """Welcome once per conversation and process: Teams clients (and the Agents Playground on
        every page load) repeat the bot-added events."""
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        conversation = activity.conversation.id if activity.conversation else ""
        if any(member.id == bot_id for member in members_added) and conversation not in self._welcomed:
            self._welcomed.add(conversation)
            await turn_context.send_activity(await self._welcome(activity))

    async def _welcome(self, activity: Activity) -> Activity:
        """The welcome, with the set-up checklist (`checklist`, run as the installer: what is done and
        what is not) as its card; the plain welcome alone if the checklist cannot be built."""
        try:
            checklist = await self.handler.handle(self._request(activity, text="checklist"))
        except Exception:  # noqa: BLE001 - a welcome must not fail the install
            log.exception("could not build the set-up card")
            checklist = None
        if checklist is None or checklist.card is None:
            return MessageFactory.text(WELCOME)
        return MessageFactory.attachment(CardFactory.adaptive_card(checklist.card), text=WELCOME)

    # ------------------------------------------------------------ follow-ups

    def _later(self, activity: Activity, acknowledged: asyncio.Event | None = None):
        """Follow-ups for this turn; each is delivered only after `acknowledged` is set (the turn's
        own answer was sent), so an outcome never arrives before its acknowledgement."""
        if activity.conversation is None or not activity.service_url:
            return None
        reference = TurnContext.get_conversation_reference(activity)

        def schedule(outcome: Awaitable[Reply]) -> None:
            self._follow_ups.schedule(outcome, lambda reply: self.send(reference, reply), after=acknowledged)

        return schedule

    async def send(self, reference: ConversationReference | dict, reply: Reply) -> None:
        """Send a Reply proactively into a stored conversation."""
        if isinstance(reference, dict):
            reference = ConversationReference().deserialize(reference)
        problem = service_url_problem(reference.service_url or "", self.service_url_hosts)
        if problem is not None:
            log.warning("not sending to a conversation reference: %s", problem)
            return

        async def callback(turn_context: TurnContext) -> None:
            await send_with_retry(turn_context, reply_activity(reply))

        await self.adapter.continue_conversation(reference, callback, bot_app_id=self.app_id)

    async def deliver(self, conversation_id: str, payload: dict, update_activity_id: str | None) -> str:
        """Send (or edit) one outbox message in a stored conversation; return Teams' activity id.
        Failures become DeliveryFailed with Teams' status, so the outbox worker can decide."""
        record = await self.storage.get_conversation(conversation_id)
        if record is None:
            raise DeliveryFailed(f"no stored conversation {conversation_id}", status=404)
        reference = ConversationReference().deserialize(record.reference)
        # A reference stored before serviceUrls were read strictly (or by hand) is checked again: the
        # bot sends its own token to that URL.
        problem = service_url_problem(reference.service_url or "", self.service_url_hosts)
        if problem is not None:
            log.warning("not sending to conversation %s: its stored %s", conversation_id, problem)
            raise DeliveryFailed(f"the stored reference is refused: {problem}", status=400)
        reply = Reply(str(payload.get("text") or ""), card=payload.get("card"))
        outcome: dict[str, Any] = {}

        async def callback(turn_context: TurnContext) -> None:
            activity = reply_activity(reply)
            try:
                if update_activity_id:
                    activity.id = update_activity_id
                    await turn_context.update_activity(activity)
                    outcome["id"] = update_activity_id
                else:
                    response = await turn_context.send_activity(activity)
                    outcome["id"] = response.id if response is not None and response.id else ""
            except Exception as error:  # noqa: BLE001 - re-raised below, outside botbuilder's turn
                outcome["error"] = error

        try:
            await self.adapter.continue_conversation(reference, callback, bot_app_id=self.app_id)
        except Exception as error:  # noqa: BLE001 - token or network failures before the callback
            outcome["error"] = error
        error = outcome.get("error")
        if error is None:
            return outcome.get("id", "")
        if isinstance(error, HttpOperationError):
            response = getattr(error, "response", None)
            if getattr(response, "status_code", None) in (403, 404):
                self._saved.forget(conversation_id)     # the next message from there clears "gone"
            raise DeliveryFailed(str(error)[:200], status=getattr(response, "status_code", None),
                                 retry_after=_retry_after(response))
        raise DeliveryFailed(repr(error)[:200])

    async def drain(self, timeout: float = 5.0) -> None:
        """Let pending follow-ups finish (used at shutdown)."""
        await self._follow_ups.drain(timeout)



MESSAGE_CONTENT_TYPE = "application/vnd.microsoft.activity.message"
MAX_TOAST_CHARS = 150


class _MessageInvokeResponse(AdaptiveCardInvokeResponse):
    """botbuilder's model types `value` as an object; a message answer's value is a string."""

    _attribute_map = {**AdaptiveCardInvokeResponse._attribute_map, "value": {"key": "value", "type": "str"}}


def _with_typed(data: dict) -> Any:
    """A button's words, and after them what was typed into the card's text box (Teams sends a
    card's inputs with Action.Execute: `reason` on Reject, `comment` on Approve or Reviewed), after
    `--` so that typed words are never read as options."""
    args = data.get("args", [])
    typed = next((data[key] for key in ("reason", "comment") if isinstance(data.get(key), str)
                  and data[key].strip()), "")
    if not typed or not isinstance(args, list):
        return args
    return [*args, "--", typed.strip()]


def _invoke_answer(content_type: str, value: Any) -> InvokeResponse:
    """An Action.Execute answer: a card (replaces the clicked one, for the clicker) or a message
    (Teams shows it briefly and leaves the card as it was)."""
    model = _MessageInvokeResponse if isinstance(value, str) else AdaptiveCardInvokeResponse
    if isinstance(value, dict):
        value = SerializedCard(value)
    return InvokeResponse(status=200, body=model(status_code=200, type=content_type, value=value))


def _toast(reply: Reply) -> str:
    """The short message a click answers with; the full answer is the message posted below."""
    first = (reply.text or "").strip().splitlines()[0] if (reply.text or "").strip() else "Done."
    return first if len(first) <= MAX_TOAST_CHARS else first[:MAX_TOAST_CHARS - 1] + "…"
