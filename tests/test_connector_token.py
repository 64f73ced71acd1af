"""The connector's clients and token are kept, and the token is never fetched on the event loop.

botbuilder 4.17.1's CloudAdapter builds new credentials (a new MSAL application: an empty token
cache) and a new ConnectorClient for every activity, and msrest asks the credentials for a token
on the event loop: with an app id, every reply waited for Entra ID there. These tests run the real
CloudAdapter over HTTP with an app id and validly signed requests (tests/signing_keys.py); only the
call to Entra ID itself (`MicrosoftAppCredentials.get_access_token`, MSAL's client-credentials
flow) is replaced, recording the thread it runs on.
"""

from __future__ import annotations

import itertools
import threading

import pytest
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import MicrosoftAppCredentials

from bot.app import BOT, create_app
from bot.teams import KeptToken
from tests.conftest import APP_ID
from tests.signing_keys import SigningKey
from tests.teams_client import TeamsStandIn

class Entra:
    """Stands in for the token endpoint: numbered tokens, and the threads that asked for them."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self._numbers = itertools.count(1)
        self.failures = 0

    def get_access_token(self, credentials: MicrosoftAppCredentials, force_refresh: bool = False) -> str:
        self.threads.append(threading.get_ident())
        if self.failures:
            self.failures -= 1
            raise PermissionError("Failed to get access token with error: temporarily_unavailable")
        return f"token-{next(self._numbers)}"


@pytest.fixture
def entra(monkeypatch) -> Entra:
    stand_in = Entra()
    monkeypatch.setattr(MicrosoftAppCredentials, "get_access_token",
                        lambda self, force_refresh=False: stand_in.get_access_token(self, force_refresh))
    return stand_in


@pytest.fixture
def clients_built(monkeypatch) -> list[str]:
    """The base URL of every ConnectorClient botbuilder builds."""
    built: list[str] = []
    original = ConnectorClient.__init__

    def counting(self, credentials, base_url=None, *args, **kwargs):
        built.append(base_url)
        original(self, credentials, base_url, *args, **kwargs)

    monkeypatch.setattr(ConnectorClient, "__init__", counting)
    return built


async def say_signed(teams: TeamsStandIn, key: SigningKey, text: str) -> None:
    teams.token = key.token(audience=APP_ID, service_url=teams.service_url)
    [_] = await teams.say(text)


async def test_one_token_fetched_off_the_loop_and_one_client_serve_every_turn(secured, entra, clients_built):
    url, key = secured.url, secured.key
    loop_thread = threading.get_ident()
    async with TeamsStandIn(url) as teams:
        for text in ("whoami", "help", "endpoints"):
            await say_signed(teams, key, text)
        sent = list(teams.connector.sent)
    assert len(sent) == 3
    assert [s.authorization for s in sent] == ["Bearer token-1"] * 3
    assert len(entra.threads) == 1 and loop_thread not in entra.threads
    assert clients_built == [teams.service_url]


async def test_a_kept_token_is_asked_for_again_after_its_time_in_a_worker_thread(secured, entra, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(KeptToken, "clock", staticmethod(lambda: now[0]))
    url, key = secured.url, secured.key
    loop_thread = threading.get_ident()
    async with TeamsStandIn(url) as teams:
        for moved in (0.0, KeptToken.RENEW_SECONDS - 1, 2.0, KeptToken.RENEW_SECONDS + 1):
            now[0] += moved
            await say_signed(teams, key, "whoami")
        sent = list(teams.connector.sent)
    assert [s.authorization for s in sent] == ["Bearer token-1", "Bearer token-1", "Bearer token-2",
                                               "Bearer token-3"]
    assert len(entra.threads) == 3 and loop_thread not in entra.threads


async def test_a_failed_fetch_is_not_kept_and_the_next_turn_asks_again(secured, entra):
    url, key = secured.url, secured.key
    entra.failures = 2            # a turn asks twice: for its connector client and its user-token client
    async with TeamsStandIn(url) as teams:
        teams.token = key.token(audience=APP_ID, service_url=teams.service_url)
        first = await teams.post(teams.message("whoami"))
        assert teams.connector.sent == []                  # the reply could not be signed, so it was not sent
        await say_signed(teams, key, "whoami")
        sent = list(teams.connector.sent)
    assert first.status in (200, 201)                      # Teams' request was fine: not a 401 for our token
    assert [s.authorization for s in sent] == ["Bearer token-1"]
    assert len(entra.threads) == 3


async def test_proactive_sends_share_the_turns_client_and_token(secured, entra, clients_built):
    app, url, key = secured.app, secured.url, secured.key
    async with TeamsStandIn(url) as teams:
        await say_signed(teams, key, "whoami")
        conversation_id = teams.connector.sent[0].conversation_id
        activity_id = await app[BOT].deliver(conversation_id, {"text": "An alert, through the outbox"}, None)
        sent = list(teams.connector.sent)
    assert activity_id.startswith("activity-")
    assert [s.text for s in sent][1:] == ["An alert, through the outbox"]
    assert [s.authorization for s in sent] == ["Bearer token-1"] * 2
    assert len(entra.threads) == 1
    assert clients_built == [teams.service_url]


async def test_development_mode_sends_no_token_and_keeps_one_client(aiohttp_server, settings, entra, clients_built):
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("whoami")
        await teams.say("help")
        sent = list(teams.connector.sent)
    assert [s.authorization for s in sent] == ["", ""]
    assert entra.threads == []
    assert clients_built == [teams.service_url]
