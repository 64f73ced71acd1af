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
from typing import Any, Awaitable

import requests
from aiohttp import web
from botbuilder.core import (
    ActivityHandler, CardFactory, InvokeResponse, MessageFactory, TurnContext,
)
from botbuilder.core.teams import TeamsInfo
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import AuthenticationConstants
from msrest.exceptions import HttpOperationError
from msrest.universal_http.requests import ClientRetryPolicy
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor
from botbuilder.schema import (
    Activity, AdaptiveCardInvokeResponse, ChannelAccount, ConversationReference,
)

from adapters.storage import ConversationRecord, Storage
from bot.handler import ChatHandler, FollowUps, Request, apology
from bot.outbox import DeliveryFailed
from commands.context import Reply, User
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


class _AdapterSettings:
    """The attribute names ConfigurationBotFrameworkAuthentication reads."""

    def __init__(self, app_id: str, app_password: str, app_type: str, tenant_id: str) -> None:
        self.APP_ID = app_id
        self.APP_PASSWORD = app_password
        self.APP_TYPE = app_type
        self.APP_TENANTID = tenant_id


def build_adapter(app_id: str, app_password: str, app_type: str, tenant_id: str) -> CloudAdapter:
    """A CloudAdapter that validates every inbound JWT when an app id is set."""
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


async def keep_signing_keys_fresh() -> None:
    """Fetch the Bot Framework channel's signing keys in a worker thread, every 12 hours.

    botbuilder 4.17.1 fetches them with blocking `requests` calls inside request handling,
    on the event loop, whenever its copy is over a day old. Refreshing it here, off the loop and
    twice as often, means a request never waits for that fetch.
    """
    metadata = JwtTokenExtractor.get_open_id_metadata(AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
    while True:
        if datetime.now() - metadata.last_updated > timedelta(seconds=KEY_REFRESH_SECONDS):
            try:
                await asyncio.to_thread(lambda: asyncio.run(metadata._refresh()))  # noqa: SLF001
                log.info("refreshed the Bot Framework signing keys")
            except Exception as error:  # noqa: BLE001 - retried later; validation fetches them itself too
                log.warning("could not refresh the Bot Framework signing keys: %r", error)
        await asyncio.sleep(KEY_REFRESH_SECONDS / 12)


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
            await asyncio.sleep(min(delay, 30.0))
    return ""


def _retry_after(response: Any) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After")))
    except (AttributeError, TypeError, ValueError):
        return None


def reply_activity(reply: Reply) -> Activity:
    if reply.card is None:
        return MessageFactory.text(reply.text)
    activity = MessageFactory.attachment(CardFactory.adaptive_card(reply.card))
    activity.summary = reply.text.splitlines()[0][:200] if reply.text else None
    return activity


_TAG = re.compile(r"<[^>]+>")


def command_text(activity: Activity) -> str:
    """The typed words: the bot's @mention removed, Teams' HTML and entities undone."""
    value = activity.text or ""
    bot_id = activity.recipient.id if isinstance(activity.recipient, ChannelAccount) else None
    for entity in activity.entities or []:
        props = getattr(entity, "additional_properties", None) or {}     # a null entity has none
        mentioned = props.get("mentioned") or {}
        if entity is None or not isinstance(mentioned, dict):
            continue
        if entity.type == "mention" and isinstance(props.get("text"), str) and props["text"] and (
                bot_id is None or mentioned.get("id") == bot_id):
            value = value.replace(props["text"], " ")
    value = re.sub(r"<at>.*?</at>", " ", value) if bot_id is None else value
    return " ".join(html.unescape(_TAG.sub(" ", value)).split())


def _other_mentions(activity: Activity) -> list[tuple[str, str, str]]:
    """(text as typed, Teams user id, name) of every @mention that is not the bot."""
    bot_id = activity.recipient.id if isinstance(activity.recipient, ChannelAccount) else None
    found = []
    for entity in activity.entities or []:
        props = getattr(entity, "additional_properties", None) or {}
        mentioned = props.get("mentioned") or {}
        if entity is None or entity.type != "mention" or not isinstance(mentioned, dict) or mentioned.get("id") == bot_id:
            continue
        if isinstance(props.get("text"), str) and isinstance(mentioned.get("id"), str):
            shown = " ".join(html.unescape(_TAG.sub(" ", props["text"])).split())
            found.append((shown, mentioned["id"], str(mentioned.get("name") or shown)))
    return found


def user_of(activity: Activity) -> User:
    sender = activity.from_property or ChannelAccount(id="", name="")
    tenant = ""
    if activity.conversation is not None and activity.conversation.tenant_id:
        tenant = activity.conversation.tenant_id
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = (channel_data.get("tenant") or {}).get("id") or tenant
    return User(id=sender.aad_object_id or sender.id or "", name=sender.name or "someone", tenant_id=tenant)


def conversation_record(activity: Activity) -> ConversationRecord | None:
    conversation = activity.conversation
    if conversation is None or not conversation.id or not activity.service_url:
        return None
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    kind = conversation.conversation_type or ("channel" if channel_data.get("channel") else "personal")
    reference = TurnContext.get_conversation_reference(activity)
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
    def __init__(self, handler: ChatHandler, storage: Storage, adapter: CloudAdapter, app_id: str) -> None:
        self.handler = handler
        self.storage = storage
        self.adapter = adapter
        self.app_id = app_id
        self._follow_ups = FollowUps()
        self._welcomed: set[str] = set()
        self._saved = SavedConversations()

    async def process(self, request: web.Request) -> web.StreamResponse:
        """Hand an aiohttp request to the CloudAdapter: JWT validation, then this bot's turn.

        Errors inside a turn are handled by the adapter's on_turn_error, so what escapes here
        comes from authentication. botbuilder raises PermissionError for a missing or wrong token
        (the adapter answers 401) but lets other failures through: a malformed token (jwt's
        DecodeError), an unknown key id (IndexError), a bad signature. All of those are 401 too;
        only an unreachable key server is our problem (503), never a 500.
        """
        try:
            return await self.adapter.process(request, self)
        except web.HTTPException:
            raise
        except requests.RequestException:
            log.error("cannot fetch the Bot Framework signing keys", exc_info=True)
            raise web.HTTPServiceUnavailable(text="cannot verify the caller's token right now") from None
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("rejected a request whose token did not validate: %r", error)
            raise web.HTTPUnauthorized() from None

    async def on_turn(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if activity.conversation is not None and activity.conversation.id and activity.service_url:
            key = _reference_key(activity)
            conversation_id = activity.conversation.id
            if activity.type in ALWAYS_SAVED or not self._saved.unchanged(conversation_id, key):
                record = conversation_record(activity)
                if record is not None:
                    await self.storage.save_conversation(record)
                    self._saved.remember(conversation_id, key)
        await super().on_turn(turn_context)

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
        request = self._request(turn_context.activity, verb=action.get("verb"), args=data.get("args", []))
        acknowledged = asyncio.Event()
        try:
            reply = await self.handler.handle(request, self._later(turn_context.activity, acknowledged))
            if data.get("refresh") is True and reply.card is not None:
                return _invoke_answer(CARD_CONTENT_TYPE, stamped(reply.card, datetime.now(timezone.utc)))
            activity_id = await send_with_retry(turn_context, reply_activity(reply))
            if reply.track:
                await self.handler.delivered(reply, request.conversation_id, activity_id)
            return _invoke_answer(MESSAGE_CONTENT_TYPE, _toast(reply))
        finally:
            acknowledged.set()

    def _request(self, activity: Activity, *, text: str | None = None, verb: Any = None,
                 args: Any = (), mentioned: tuple[User, ...] = ()) -> Request:
        conversation = activity.conversation
        return Request(user=user_of(activity), conversation_id=conversation.id if conversation else "",
                       text=text, verb=verb, args=args if isinstance(args, list) else [args],
                       activity_id=activity.id or "", conversation_kind=(conversation.conversation_type or "")
                       if conversation else "", mentioned=mentioned)

    async def _resolve_mentions(self, turn_context: TurnContext) -> tuple[str, tuple[User, ...]]:
        """The typed words, with each @mention of a person replaced by their Entra object id
        (looked up with Teams' member API), so that `grant @Bob approver` names Bob exactly."""
        activity = turn_context.activity
        typed = command_text(activity)
        people = _other_mentions(activity)
        if not people:
            return typed, ()
        found: list[User] = []
        for shown, member_id, name in people:
            try:
                member = await TeamsInfo.get_member(turn_context, member_id)
                object_id = member.aad_object_id or ""
                upn = getattr(member, "user_principal_name", "") or ""
            except Exception as error:  # noqa: BLE001 - the member API is optional: say so below
                log.info("could not resolve a mention: %r", error)
                object_id, upn = "", ""
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
            await turn_context.send_activity(MessageFactory.text(WELCOME))

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


def _invoke_answer(content_type: str, value: Any) -> InvokeResponse:
    """An Action.Execute answer: a card (replaces the clicked one, for the clicker) or a message
    (Teams shows it briefly and leaves the card as it was)."""
    model = _MessageInvokeResponse if isinstance(value, str) else AdaptiveCardInvokeResponse
    return InvokeResponse(status=200, body=model(status_code=200, type=content_type, value=value))


def _toast(reply: Reply) -> str:
    """The short message a click answers with; the full answer is the message posted below."""
    first = (reply.text or "").strip().splitlines()[0] if (reply.text or "").strip() else "Done."
    return first if len(first) <= MAX_TOAST_CHARS else first[:MAX_TOAST_CHARS - 1] + "…"
