"""The Teams seam: the only module that imports botbuilder.

It holds what speaks botbuilder-python 4.17.1: the `ActivityHandler` (`TeamsBot`), the
`CloudAdapter` construction (`build_adapter`, with `KeptAuthentication`: the connector clients
and their token kept, the token fetched off the event loop), the botbuilder/msrest patches (the
retry-policy codes, `SerializedCard`, and `guard_signing_key_fetches`, which installs
bot/signing_keys.py's fetching on botbuilder's `_OpenIdMetadata`), and the mapping of our `Reply` to botbuilder
activities and invoke answers. This module is what a move to the Microsoft 365 Agents SDK
(botbuilder-python's successor) replaces. What needs no botbuilder lives beside it:
bot/activity.py (pure checks of an inbound activity and its mapping to our `Request`) and
bot/signing_keys.py (signing-key fetching and caching, off the event loop).

It turns Bot Framework activities into `Request`s for the `ChatHandler` and its `Reply`s back
into activities:

- messages in personal chat, group chat and channels (the bot's @mention removed) and
  `Action.Submit` messages (`value = {"verb": ..., "args": [...]}`) go to the command registry;
- `adaptiveCard/action` invokes (Action.Execute) are answered here with an
  `AdaptiveCardInvokeResponse` model, not a pre-serialized dict: botbuilder 4.17.1's
  `CloudAdapter.process` serializes the invoke body itself, and `ActivityHandler`'s own handling
  hands it a dict, which fails with HTTP 500 on every click;
- a conversation reference is stored on installationUpdate, conversationUpdate and every message,
  so that the outcomes of long changes, alerts and digests can be sent proactively (bot/outbox.py);
- a short welcome is posted when the bot is added to a conversation.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence

import requests
from aiohttp import web
from botbuilder.core import (
    ActivityHandler, CardFactory, InvokeResponse, MessageFactory, TurnContext, serializer_helper,
)
from botbuilder.integration.aiohttp import (
    CloudAdapter, ConfigurationBotFrameworkAuthentication, ConfigurationServiceClientCredentialFactory,
)
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AppCredentials, AuthenticateRequestResult, AuthenticationConstants, ClaimsIdentity, ConnectorFactory, ServiceClientCredentialsFactory,
    UserTokenClient,
)
from msrest.authentication import Authentication
from msrest.exceptions import HttpOperationError
from msrest.serialization import Serializer
from msrest.universal_http.requests import ClientRetryPolicy
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata
from botbuilder.schema import (
    Activity, ActivityTypes, AdaptiveCardInvokeResponse, ChannelAccount, ConversationReference,
)

from adapters.storage import ConversationRecord, Storage, people
from bot.activity import (
    TEAMS_CHANNEL, _other_mentions, _toast, _with_typed, activity_shape_problem, checked_service_url,
    command_text, service_url_problem, tenant_of, user_of,
)
from bot.handler import ChatHandler, Request, apology
from bot.outbox import DeliveryFailed
from bot.signing_keys import SigningKeysUnavailable, _get_signing_key, _refresh_keys, refresh_periodically
from commands.base.context import Reply, User
from commands.base.ui import stamped

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


# ---------------------------------------------------------------- the connector's clients and token
#
# botbuilder 4.17.1's CloudAdapter builds, for every turn and every proactive send, new credentials
# (each with a new MSAL application, so an empty token cache), a new ConnectorClient (a new
# requests session, so a new TCP and TLS connection to the connector) and a new user-token client.
# msrest then calls the credentials' `signed_session` on the event loop, and with an app id set
# that fetches a token from Entra ID over HTTPS right there: every message blocked every
# conversation of the replica for a round trip to login.microsoftonline.com. botbuilder's older
# BotFrameworkAdapter kept its connector clients and credentials; so does this.


class KeptToken(Authentication):
    """The bot's credentials for the connector, whose token is asked for in a worker thread and kept.

    MSAL's cache (one per credentials object, now kept for the process's life) answers without a
    call while the token has more than five minutes left, and renews it otherwise. So a token is
    asked for again (`fresh()`, in a thread, before every use: see `KeptClients`) once it has been
    kept RENEW_SECONDS, and it may still be sent until VALID_SECONDS after MSAL gave it: a turn
    that began just before the renewal still signs its replies without a fetch.

    A failed fetch is not raised where the client is made (botbuilder does that before the turn
    and would answer Teams 401, as if its token were wrong); the send that needs the token fails
    instead, naming the reason, as a failed fetch made the send fail before (the outbox retries)."""

    RENEW_SECONDS = 240.0
    VALID_SECONDS = 290.0                        # under MSAL's five-minute margin
    clock = staticmethod(time.monotonic)         # a class attribute: tests move time for every token

    def __init__(self, inner: Authentication) -> None:
        self.inner = inner
        self._app = inner if isinstance(inner, AppCredentials) else None    # botbuilder's credentials
        self._token: str | None = None
        self._fetched = float("-inf")
        self._failure: Exception | None = None
        self._lock = asyncio.Lock()

    @property
    def needs_token(self) -> bool:
        """False for the empty credentials of development mode (no app id): nothing to sign."""
        return self._app is not None and bool(self._app._should_set_token(None))  # noqa: SLF001

    def _age(self) -> float:
        return self.clock() - self._fetched

    async def fresh(self) -> None:
        if self._app is None or not self.needs_token or self._age() < self.RENEW_SECONDS:
            return
        async with self._lock:                       # one fetch, however many turns are waiting
            if self._age() < self.RENEW_SECONDS:
                return
            try:                                     # MSAL, and Entra ID when due: never on the loop
                token = await asyncio.to_thread(self._app.get_access_token)
            except Exception as error:  # noqa: BLE001 - kept for the send that needs it (see the class doc)
                log.warning("cannot get a token for the Bot Connector: %s", error)
                self._failure = error
                return
            self._token, self._fetched, self._failure = token, self.clock(), None

    def signed_session(self, session: requests.Session | None = None) -> requests.Session:
        if self._app is None:                        # not botbuilder's: its own way, as before
            return self.inner.signed_session(session)
        session = session if session is not None else requests.Session()
        if not self.needs_token:
            session.headers.pop("Authorization", None)
            return session
        if self._token is None or self._age() >= self.VALID_SECONDS:
            if self._failure is not None:
                raise PermissionError(f"no token for the Bot Connector: {self._failure}")
            # a client used without `fresh()`: still correct, though on the caller's thread
            log.warning("fetching the Bot Connector token on the event loop (a client was used without fresh())")
            self._token, self._fetched = self._app.get_access_token(), self.clock()
        session.headers["Authorization"] = f"Bearer {self._token}"
        return session

    def refresh_session(self, session: requests.Session | None = None) -> requests.Session:
        self._token = None
        return self.signed_session(session)


class KeptCredentials(ServiceClientCredentialsFactory):
    """botbuilder's credentials factory, each credentials made once (per app id, scope and login
    endpoint) and wrapped in a `KeptToken` that is fresh when handed out."""

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self.inner = inner
        self._made: dict[tuple, KeptToken] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return await self.inner.is_valid_app_id(app_id)

    async def is_authentication_disabled(self) -> bool:
        return await self.inner.is_authentication_disabled()

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Authentication:
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        kept = self._made.get(key)
        if kept is None:
            kept = KeptToken(await self.inner.create_credentials(app_id, oauth_scope, login_endpoint,
                                                                 validate_authority))
            kept = self._made.setdefault(key, kept)
        await kept.fresh()
        return kept


class KeptClients(ConnectorFactory):
    """One ConnectorClient per app id, service URL and audience, kept (the least recently used
    dropped beyond MAX_CLIENTS), its token made fresh before each use. A client is shared by
    concurrent turns as BotFrameworkAdapter shared them: msrest sends through one requests
    session, whose connection pool is thread-safe, and keeps its connections open."""

    MAX_CLIENTS = 256

    def __init__(self, inner: ConnectorFactory, app_id: str, default_audience: str,
                 clients: collections.OrderedDict[tuple, ConnectorClient]) -> None:
        self.inner, self.app_id, self.default_audience, self.clients = inner, app_id, default_audience, clients

    async def create(self, service_url: str, audience: str | None = None) -> ConnectorClient:
        # a turn names the audience, a proactive send leaves it to the factory's default: the same client
        key = (self.app_id, service_url, audience or self.default_audience)
        client = self.clients.get(key)
        if client is None:
            client = await self.inner.create(service_url, audience)
            self.clients[key] = client
            while len(self.clients) > self.MAX_CLIENTS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(key)
            credentials = client.config.credentials
            if isinstance(credentials, KeptToken):
                await credentials.fresh()
        return client


class KeptAuthentication(ConfigurationBotFrameworkAuthentication):
    """botbuilder's authentication (inbound JWT validation unchanged), with the connector clients,
    the user-token clients and the credentials kept instead of built again for every activity."""

    def __init__(self, configuration: Any) -> None:
        super().__init__(configuration, credentials_factory=KeptCredentials(
            ConfigurationServiceClientCredentialFactory(configuration)))
        self._clients: collections.OrderedDict[tuple, ConnectorClient] = collections.OrderedDict()
        self._token_clients: dict[str, UserTokenClient] = {}

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        result = await super().authenticate_request(activity, auth_header)     # the turn's replies
        if result.connector_factory is not None:
            result.connector_factory = KeptClients(result.connector_factory, _app_id_of(result.claims_identity),
                                                   self.get_originating_audience(), self._clients)
        return result

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        # proactive sends (continue_conversation: the outbox) and new conversations
        return KeptClients(super().create_connector_factory(claims_identity), _app_id_of(claims_identity),
                           self.get_originating_audience(), self._clients)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        # the bot asks Teams for no user tokens (no OAuth prompts); botbuilder still builds one a turn
        app_id = _app_id_of(claims_identity)
        client = self._token_clients.get(app_id)
        if client is None:
            client = self._token_clients.setdefault(app_id, await super().create_user_token_client(claims_identity))
        return client


def _app_id_of(claims_identity: ClaimsIdentity) -> str:
    """The bot's app id in a validated request's claims (botbuilder's own rule: the audience, or
    the appid claim for the emulator; empty when authentication is off)."""
    return (claims_identity.get_claim_value(AuthenticationConstants.AUDIENCE_CLAIM)
            or claims_identity.get_claim_value(AuthenticationConstants.APP_ID_CLAIM) or "")


def build_adapter(app_id: str, app_password: str, app_type: str, tenant_id: str) -> CloudAdapter:
    """A CloudAdapter that validates every inbound JWT when an app id is set, and keeps its
    connector clients and token (`KeptAuthentication`)."""
    guard_signing_key_fetches()
    adapter = CloudAdapter(KeptAuthentication(_AdapterSettings(app_id, app_password, app_type, tenant_id)))

    async def on_error(context: TurnContext, error: Exception) -> None:
        incident = uuid.uuid4().hex[:8]
        log.error("incident %s in a turn", incident, exc_info=error)
        try:
            await context.send_activity(apology(incident))
        except Exception:  # noqa: BLE001 - the connector may be the thing that failed
            log.warning("incident %s: could not tell the user", incident)

    adapter.on_turn_error = on_error
    return adapter


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
    exponential back-off (30 s doubling to 30 min, with jitter): `signing_keys.refresh_periodically`."""
    guard_signing_key_fetches()
    await refresh_periodically(JwtTokenExtractor.get_open_id_metadata(url), pause)


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


def activity_problem(body: dict) -> str | None:
    """What makes `body` unusable as an activity, naming the field; None when it is fine: the
    checks of `activity_shape_problem` (bot/activity.py), then botbuilder's own parse of the body.

    Run before authentication and before botbuilder parses the body: botbuilder's parsing lets
    wrong types through to the turn (or fails with errors that read like a bad token)."""
    return _parsed_activity(body)[1]


def _parsed_activity(body: dict) -> tuple[Activity | None, str | None]:
    """`activity_problem`, and the Activity botbuilder's parse made of `body` when it is fine."""
    problem = activity_shape_problem(body)
    if problem is not None:
        return None, problem
    try:
        return Activity().deserialize(body), None
    except Exception as error:  # noqa: BLE001 - msrest's DeserializationError and what it wraps
        return None, f"the activity cannot be read: {str(error)[:200]}"


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


# Where `check_activity` keeps the Activity it parsed, on the aiohttp request, for `process`.
PARSED_ACTIVITY = web.RequestKey("mlopsbot.parsed_activity", Activity)

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
            activity = request.get(PARSED_ACTIVITY) if request.method == "POST" else None
            if activity is None:
                return await self.adapter.process(request, self)
            return await self._process_parsed(request, activity)
        except web.HTTPException:
            raise
        except (SigningKeysUnavailable, requests.RequestException) as error:
            log.error("cannot verify a token: %s", error)
            raise web.HTTPServiceUnavailable(text="cannot verify the caller's token right now",
                                             headers={"Retry-After": "30"}) from None
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("rejected a request whose token did not validate: %r", error)
            raise web.HTTPUnauthorized() from None

    async def _process_parsed(self, request: web.Request, activity: Activity) -> web.StreamResponse:
        """What `CloudAdapter.process` does with a POST (botbuilder 4.17.1), from the Activity that
        `check_activity` parsed already: the body is not parsed from JSON and deserialized by msrest
        a second time (about 1 ms of CPU a turn). Authentication is the adapter's, unchanged."""
        if not activity.type:
            raise web.HTTPBadRequest()
        try:
            invoke_response = await self.adapter.process_activity(
                request.headers.get("Authorization", ""), activity, self.on_turn)
        except PermissionError:
            raise web.HTTPUnauthorized() from None
        if invoke_response:
            return web.json_response(data=serializer_helper(invoke_response.body), status=invoke_response.status)
        return web.Response(status=201)

    def check_activity(self, body: Any, keep: web.Request | None = None) -> str | None:
        """Why `body` must be refused before anything else happens (400), or None. When it is fine
        and `keep` is given (the aiohttp request), the parsed Activity is kept there for `process`."""
        activity, problem = _parsed_activity(body)
        if problem is None and self.teams_only and body.get("channelId") != TEAMS_CHANNEL:
            problem = (f"this bot answers Microsoft Teams only (channelId '{TEAMS_CHANNEL}'), "
                       f"not {str(body.get('channelId'))[:40]!r}")
        if problem is None:          # no hosts listed (development): any host, but read strictly
            problem = service_url_problem(body["serviceUrl"], self.service_url_hosts)
        if problem is not None:
            log.warning("refused an activity: %s", problem)
        elif keep is not None:
            keep[PARSED_ACTIVITY] = activity
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
        reply = await self.handler.handle(request)
        activity_id = await send_with_retry(turn_context, reply_activity(reply))
        if reply.track:
            await self.handler.delivered(reply, request.conversation_id, activity_id)

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
        reply = await self.handler.handle(request)
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
        from botbuilder.core.teams import TeamsInfo    # Teams' member API, only for a message that @mentions someone
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



MESSAGE_CONTENT_TYPE = "application/vnd.microsoft.activity.message"


class _MessageInvokeResponse(AdaptiveCardInvokeResponse):
    """botbuilder's model types `value` as an object; a message answer's value is a string."""

    _attribute_map = {**AdaptiveCardInvokeResponse._attribute_map, "value": {"key": "value", "type": "str"}}


def _invoke_answer(content_type: str, value: Any) -> InvokeResponse:
    """An Action.Execute answer: a card (replaces the clicked one, for the clicker) or a message
    (Teams shows it briefly and leaves the card as it was)."""
    model = _MessageInvokeResponse if isinstance(value, str) else AdaptiveCardInvokeResponse
    if isinstance(value, dict):
        value = SerializedCard(value)
    return InvokeResponse(status=200, body=model(status_code=200, type=content_type, value=value))


