"""A Teams stand-in for tests: it posts activities to the bot over HTTP, like the Bot Framework
channel does, and runs a small Bot Connector service that receives the bot's replies.

    async with TeamsStandIn(bot_url) as teams:
        replies = await teams.say("models")               # POST /api/messages, wait for replies
        card = replies[0].card                            # the Adaptive Card the bot sent
        response = await teams.click(card, "Versions")   # adaptiveCard/action invoke, 200 + card
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

CARD = "application/vnd.microsoft.card.adaptive"
BOT_ID = "28:mlops-bot"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    aad_object_id: str


ALICE = Person("29:1alice", "Alice Analyst", "00000000-0000-0000-0000-00000000a11c")
BOB = Person("29:1bob", "Bob Builder", "00000000-0000-0000-0000-000000000b0b")


@dataclass
class Sent:
    """One activity the bot sent to the connector."""

    method: str
    path: str
    body: dict[str, Any]
    authorization: str = ""          # the Authorization header the bot sent with it

    @property
    def conversation_id(self) -> str:
        return self.path.split("/")[3]

    @property
    def text(self) -> str | None:
        return self.body.get("text")

    @property
    def card(self) -> dict[str, Any] | None:
        for attachment in self.body.get("attachments") or []:
            if attachment.get("contentType") == CARD:
                return attachment["content"]
        return None


@dataclass
class Connector:
    """The Bot Connector service the bot replies to (its serviceUrl)."""

    sent: list[Sent] = field(default_factory=list)
    refused: list[Sent] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)   # answer these first
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    members: dict[str, "Person"] = field(default_factory=dict)    # Teams' member API, by Teams user id
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v3/conversations/{tail:.*}", self._receive)
        app.router.add_post("/v3/conversations", self._create)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        if request.method == "GET" and "/members/" in request.path:
            member = self.members.get(request.path.rsplit("/members/", 1)[1])
            if member is None:
                return web.json_response({"error": {"code": "MemberNotFoundInConversation"}}, status=404)
            return web.json_response({"id": member.id, "name": member.name, "aadObjectId": member.aad_object_id,
                                      "userPrincipalName": f"{member.name.split()[0].lower()}@contoso.com",
                                      "tenantId": TENANT})
        if self.failures:
            status, headers = self.failures.pop(0)
            self.refused.append(Sent(request.method, request.path, await request.json()))
            return web.json_response({"error": {"code": "Throttled", "message": "slow down"}}, status=status,
                                     headers=headers)
        self.sent.append(Sent(request.method, request.path, await request.json(),
                              request.headers.get("Authorization", "")))
        self.arrived.set()
        return web.json_response({"id": f"activity-{next(self._ids)}"})

    async def _create(self, request: web.Request) -> web.Response:
        self.sent.append(Sent(request.method, request.path, await request.json()))
        return web.json_response({"id": f"19:new-thread-{next(self._ids)}@thread.tacv2", "activityId": "1"})

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Sent]:
        async def enough() -> None:
            while len(self.sent) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.sent[:count]


class TeamsStandIn:
    def __init__(self, bot_url: str, *, token: str | None = None) -> None:
        self.bot_url = bot_url
        self.token = token
        self.connector = Connector()
        self._runner: web.AppRunner | None = None
        self.service_url = ""
        self._ids = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "TeamsStandIn":
        self._runner = web.AppRunner(self.connector.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.service_url = f"http://127.0.0.1:{port}/"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None and self._runner is not None
        await self.session.close()
        await self._runner.cleanup()

    # ------------------------------------------------------------ activities

    def activity(self, type_: str, *, user: Person = ALICE, conversation: str | None = None,
                 kind: str = "personal", **extra: Any) -> dict[str, Any]:
        conversation = conversation or f"a:personal-{user.id}"
        body: dict[str, Any] = {
            "type": type_,
            "id": f"1{next(self._ids):012d}",
            "timestamp": "2026-11-26T10:00:00.000Z",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {"id": user.id, "name": user.name, "aadObjectId": user.aad_object_id},
            "conversation": {"id": conversation, "conversationType": kind, "tenantId": TENANT},
            "recipient": {"id": BOT_ID, "name": "MLOps bot"},
            "channelData": {"tenant": {"id": TENANT}},
            "locale": "en-US",
        }
        if kind == "channel":
            body["channelData"].update({"team": {"id": "19:team@thread.tacv2"},
                                        "channel": {"id": conversation.split(";")[0]}})
        body.update(extra)
        return body

    def message(self, text: str, *, mention: bool = False, people: tuple["Person", ...] = (),
                **kw: Any) -> dict[str, Any]:
        """`people` are @mentioned where `@Name` stands in `text`, as Teams sends it (<at>Name</at>)."""
        entities = []
        for person in people:
            text = text.replace(f"@{person.name}", f"<at>{person.name}</at>")
            entities.append({"type": "mention", "text": f"<at>{person.name}</at>",
                             "mentioned": {"id": person.id, "name": person.name}})
        if mention:
            tag = "<at>MLOps bot</at>"
            body = self.activity("message", text=f"{tag} {text}", **kw)
            body["entities"] = [{"type": "mention", "text": tag,
                                 "mentioned": {"id": BOT_ID, "name": "MLOps bot"}}, *entities]
            return body
        if entities:
            return self.activity("message", text=text, entities=entities, **kw)
        return self.activity("message", text=text, textFormat="plain", **kw)

    def invoke(self, verb: str, args: list[str], *, data: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """An Action.Execute click; Teams sends the button's whole `data` (`args` and any flags)."""
        return self.activity("invoke", name="adaptiveCard/action", value={
            "action": {"type": "Action.Execute", "verb": verb, "data": {**(data or {}), "args": args}},
            "trigger": "manual"}, **kw)

    # ------------------------------------------------------------ sending

    async def post(self, body: Any, *, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> aiohttp.ClientResponse:
        assert self.session is not None
        sent_headers = {"Content-Type": "application/json"}
        if self.token:
            sent_headers["Authorization"] = f"Bearer {self.token}"
        sent_headers.update(headers or {})
        data = raw if raw is not None else None
        async with self.session.post(self.bot_url, json=None if raw is not None else body, data=data,
                                     headers=sent_headers) as response:
            await response.read()
            return response

    async def send(self, body: dict[str, Any], replies: int = 1) -> list[Sent]:
        """Post an activity and return the `replies` activities the bot sent back for it."""
        before = len(self.connector.sent)
        response = await self.post(body)
        assert response.status in (200, 201), f"bot answered HTTP {response.status}"
        sent = await self.connector.wait_for(before + replies)
        return sent[before:]

    async def say(self, text: str, **kw: Any) -> list[Sent]:
        return await self.send(self.message(text, **kw))

    async def click(self, card: dict[str, Any], title: str, *, inputs: dict[str, str] | None = None,
                    **kw: Any) -> tuple[int, dict[str, Any]]:
        """Press a card's Action.Execute button by title; return (HTTP status, invoke response body).
        `inputs`: what was typed into the card's Input.Text boxes (Teams merges them into `data`)."""
        action = find_action(card, title)
        assert self.session is not None
        body = self.invoke(action["verb"], action["data"]["args"], data={**action["data"], **(inputs or {})}, **kw)
        async with self.session.post(self.bot_url, json=body) as response:
            return response.status, await response.json()


def find_action(card: dict[str, Any], title: str) -> dict[str, Any]:
    """The first Action.Execute with this title anywhere in the card."""
    def walk(node: Any):
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("title") == title:
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    found = next(walk(card), None)
    if found is None:
        raise AssertionError(f"no button titled {title!r} in the card")
    return found
