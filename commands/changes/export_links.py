"""Signed download links: how `audit export` hands a file to the person who asked, in Teams.

Teams opens a link from a card in the browser; the browser carries no Teams identity, so the link
itself is the permission: an HMAC-SHA256-signed token naming who asked (Entra object id, tenant),
what (since, format), a random nonce and an expiry minutes away, on the bot's own host
(`<public url>/api/audit/file?t=<token>`). The host serves it once (the nonce is remembered),
only before it expires, only the asker's tenant's records, and only if the asker still has the
role (bot/api.py). The API token never leaves the server.

    links = ExportLinks(key, "https://bot.example.com")
    url = links.issue(user, since=None, fmt="csv", now=now)      # ".../api/audit/file?t=..."
    grant = links.read(token, now)                               # LinkRefused when forged or late
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from commands.base.context import User

EXPORT_PATH = "/api/audit/file"
LINK_TTL = timedelta(minutes=10)
FORMATS = ("csv", "jsonl")
MAX_TOKEN_CHARS = 2048


class LinkRefused(Exception):
    """The token is forged, damaged or expired; the message says which, for the person holding it."""


@dataclass(frozen=True)
class ExportGrant:
    user_id: str
    user_name: str
    tenant_id: str
    since: datetime | None
    format: str
    expires: datetime
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ExportLinks:
    """Issues and reads signed export links. `key`: secret bytes shared by the replicas."""

    def __init__(self, key: bytes, base_url: str, ttl: timedelta = LINK_TTL) -> None:
        if len(key) < 16:
            raise ValueError("an export link key needs at least 16 bytes")
        self._key = hashlib.sha256(b"mlops-bot audit export links\x00" + key).digest()
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def issue(self, user: User, *, since: datetime | None, fmt: str, now: datetime) -> str:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        body = {"u": user.id, "n": user.name[:100], "t": user.tenant_id, "f": fmt,
                "s": since.astimezone(timezone.utc).isoformat() if since else "",
                "e": int((now + self.ttl).timestamp()), "r": secrets.token_urlsafe(12)}
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return f"{self.base_url}{EXPORT_PATH}?t={_b64(payload)}.{self._sign(payload)}"

    def read(self, token: str, now: datetime) -> ExportGrant:
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise LinkRefused("This is not a download link the bot made.")
        encoded, signature = token.split(".")
        try:
            payload = _unb64(encoded)
        except ValueError:
            raise LinkRefused("This is not a download link the bot made.") from None
        if not hmac.compare_digest(self._sign(payload), signature):
            raise LinkRefused("This download link is not signed by this bot (or was altered).")
        body = json.loads(payload)
        expires = datetime.fromtimestamp(int(body["e"]), timezone.utc)
        if now >= expires:
            raise LinkRefused("This download link has expired; type `audit export` again for a new one.")
        return ExportGrant(user_id=body["u"], user_name=body["n"], tenant_id=body["t"],
                           since=datetime.fromisoformat(body["s"]) if body["s"] else None, format=body["f"],
                           expires=expires, nonce=body["r"])
