"""Pure checks of an inbound Teams activity and its mapping to our `Request`: no botbuilder here.

- `activity_shape_problem`: what makes a raw activity body unusable, naming the field (bot/teams.py's
  `activity_problem` adds botbuilder's own parse of the body);
- `checked_service_url` / `service_url_problem`: a `serviceUrl` every HTTP client reads alike, to
  an allowed host, since the bot sends its own token there;
- `tenant_of`, `user_of`: the Entra tenant and the person an activity comes from;
- `command_text`, `_other_mentions`: the typed words (the bot's @mention removed, Teams' HTML
  undone) and the other people @mentioned;
- `_with_typed`, `_toast`: a card button's words with what was typed into the card, and the short
  message a click is answered with.

The functions read an activity by its attribute names (botbuilder's `Activity` model, or a raw
body's keys), so they import nothing of botbuilder. A move to the Microsoft 365 Agents SDK keeps
this module; only the attribute names it reads (botbuilder's `from_property`, `channel_data`,
`service_url`, `recipient`, `entities`...) would need checking against that SDK's `Activity`
model. bot/teams.py is what such a move replaces.
"""

from __future__ import annotations

import functools
import html
import re
from typing import Any, Sequence
from urllib.parse import urlsplit

from commands.base.context import Reply, User
from commands.base.registry import MAX_INPUT_BYTES


# From each '<' to the next '<' or '>': every character is looked at once or twice, whatever the
# text (`<[^>]+>` scanned to the end from each '<' of '<a<a<a...': quadratic, 21 s for 120 KB).
_TAG = re.compile(r"<[^<>]*>")
_BOT_MENTION = re.compile(r"<at>[^<]*</at>")
# Teams wraps what a person types in a little HTML (<p>, <at>Name</at>, entities). A command is at
# most MAX_INPUT_BYTES; text longer than this (room for the markup) is cut before anything scans
# it, and what is left is still over the command limit, so it gets the "too long" answer.
RAW_TEXT_LIMIT = 4 * MAX_INPUT_BYTES


def _bot_id(activity: Any) -> str | None:
    """The bot's own id (the activity's recipient), None when the activity names no recipient."""
    return getattr(activity.recipient, "id", None)


def command_text(activity: Any) -> str:
    """The typed words: the bot's @mention removed, Teams' HTML and entities undone. Text over
    RAW_TEXT_LIMIT comes back cut to that length, untouched, for the command limit to refuse."""
    value = activity.text or ""
    if len(value) > RAW_TEXT_LIMIT:
        return value[:RAW_TEXT_LIMIT]
    bot_id = _bot_id(activity)
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


def _other_mentions(activity: Any) -> list[tuple[str, str, str]]:
    """(text as typed, Teams user id, name) of the @mentions that are not the bot: the first
    MAX_MENTIONS distinct ones (a message of thousands of mention entities cost as many calls)."""
    bot_id = _bot_id(activity)
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


def tenant_of(activity: Any) -> str:
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


def user_of(activity: Any, *, entra_only: bool = False) -> User:
    """Who sent `activity`: their Entra object id, which roles and grants name. `entra_only`
    (production): never the channel's own user id, which a Direct Line client chooses itself;
    without an object id the sender is nobody in particular (the default role)."""
    sender = activity.from_property
    fallback = "" if entra_only else (getattr(sender, "id", None) or "")
    return User(id=getattr(sender, "aad_object_id", None) or fallback, name=getattr(sender, "name", None) or "someone",
                tenant_id=tenant_of(activity))



CONVERSATION_TYPES = ("personal", "groupChat", "channel")
TEAMS_CHANNEL = "msteams"


def activity_shape_problem(body: dict) -> str | None:
    """What makes `body` unusable as an activity, naming the field; None when it is fine (bot/teams.py's
    `activity_problem` then has botbuilder parse it).

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
    """(the URL rebuilt from its parts, None), or ("", why it is refused): `_checked_service_url`,
    remembered for the last few URLs (a pure function of the string, and every turn asks it of
    the same few Teams service URLs)."""
    if not isinstance(service_url, str) or len(service_url) > MAX_SERVICE_URL:
        return "", "'serviceUrl' is not a URL"
    return _checked_service_url_cached(service_url)


def _checked_service_url(service_url: str) -> tuple[str, str | None]:
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


_checked_service_url_cached = functools.lru_cache(maxsize=256)(_checked_service_url)


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



MAX_TOAST_CHARS = 150


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



def _toast(reply: Reply) -> str:
    """The short message a click answers with; the full answer is the message posted below."""
    first = (reply.text or "").strip().splitlines()[0] if (reply.text or "").strip() else "Done."
    return first if len(first) <= MAX_TOAST_CHARS else first[:MAX_TOAST_CHARS - 1] + "…"
