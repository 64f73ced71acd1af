"""Security checks that need no server: token and activity checks, redaction, limits, escaping (the
HTTP half is tests/test_security.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from botframework.connector.auth.jwt_token_extractor import _OpenIdMetadata

import bot.signing_keys
import bot.teams
from adapters.storage import open_storage
from bot.app import create_app
from bot.settings import load_settings
from tests.signing_keys import SigningKey, trust
from tests.teams_client import ALICE, TENANT, Person, TeamsStandIn

APP_ID = "11111111-2222-3333-4444-555555555555"


async def started(aiohttp_server, tmp_path, monkeypatch, **overrides):
    """A bot over HTTP built from settings with `overrides`, and its storage opened beside it."""
    monkeypatch.chdir(tmp_path)
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MLOPSBOT_BACKEND", "MLOPSBOT_STORAGE_URL",
                 "MLOPSBOT_ALLOWED_TENANTS", "MLOPSBOT_SERVICE_URL_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(data_dir=tmp_path / "data", **{"host": "127.0.0.1", **overrides})
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    storage = open_storage(settings.effective_storage_url)
    await storage.open()
    return SimpleNamespace(url=str(server.make_url("/api/messages")), server=server, storage=storage,
                           settings=settings)


class KeyDownloads:
    """Stands in for `_download_keys` (the blocking HTTP calls): counts the fetches, answers `keys`
    or raises `error`."""

    def __init__(self, keys=(), error: Exception | None = None) -> None:
        self.keys, self.error, self.urls = list(keys), error, []

    def __call__(self, url: str, timeout: float) -> list[dict]:
        self.urls.append(url)
        if self.error is not None:
            raise self.error
        return list(self.keys)


def stale_metadata(age: timedelta, *keys: SigningKey, url: str = "https://keys.test/openid") -> _OpenIdMetadata:
    metadata = _OpenIdMetadata(url)
    metadata.keys = [k.jwk() for k in keys]
    metadata.last_updated = datetime.now() - age
    return metadata


async def test_after_a_failed_key_fetch_tokens_are_refused_without_fetching_for_the_quiet_period(monkeypatch):
    published = SigningKey("published-key")
    downloads = KeyDownloads([published.jwk()])
    monkeypatch.setattr(bot.signing_keys, "_download_keys", downloads)
    metadata = stale_metadata(timedelta(days=2))
    failed_at = datetime.now() - bot.signing_keys.KEY_FAILURE_QUIET + timedelta(seconds=5)
    metadata._mlopsbot_failed_at = failed_at
    with pytest.raises(bot.signing_keys.SigningKeysUnavailable) as refused:
        await bot.signing_keys._get_signing_key(metadata, "published-key")
    assert str(refused.value) == f"the last fetch of {metadata.url} failed {failed_at:%H:%M:%S}"
    assert downloads.urls == []                                   # answered at once, nobody waits for a fetch
    metadata._mlopsbot_failed_at = datetime.now() - bot.signing_keys.KEY_FAILURE_QUIET - timedelta(seconds=1)
    found = await bot.signing_keys._get_signing_key(metadata, "published-key")
    assert downloads.urls == [metadata.url] and found.endorsements == ["msteams"]
    assert metadata._mlopsbot_failed_at is None and [k["kid"] for k in metadata.keys] == ["published-key"]


async def test_a_key_fetch_that_fails_is_remembered_and_named(monkeypatch):
    downloads = KeyDownloads(error=ConnectionError("no route"))
    monkeypatch.setattr(bot.signing_keys, "_download_keys", downloads)
    metadata = stale_metadata(timedelta(days=2))
    with pytest.raises(bot.signing_keys.SigningKeysUnavailable) as refused:
        await bot.signing_keys._get_signing_key(metadata, "any-key")
    assert str(refused.value) == f"cannot fetch {metadata.url}: ConnectionError('no route')"
    assert datetime.now() - metadata._mlopsbot_failed_at < timedelta(seconds=5)
    assert (downloads.urls, metadata.keys) == ([metadata.url], [])


async def test_concurrent_tokens_share_one_key_fetch(monkeypatch):
    published = SigningKey("published-key")
    downloads = KeyDownloads([published.jwk()])
    monkeypatch.setattr(bot.signing_keys, "_download_keys", downloads)
    metadata = stale_metadata(timedelta(days=2))
    found = await asyncio.gather(*(bot.signing_keys._get_signing_key(metadata, "published-key") for _ in range(3)))
    assert downloads.urls == [metadata.url] and all(f is not None for f in found)


async def test_a_key_fetch_that_hangs_is_given_up_after_the_fetch_timeout(monkeypatch):
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hanging(url: str, timeout: float) -> list[dict]:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return []

    monkeypatch.setattr(bot.signing_keys, "_download_keys", hanging)
    monkeypatch.setattr(bot.signing_keys, "KEY_FETCH_TIMEOUT", 0.05)
    metadata = stale_metadata(timedelta(days=2))
    with pytest.raises(bot.signing_keys.SigningKeysUnavailable) as refused:
        await bot.signing_keys._refresh_keys(metadata)
    assert str(refused.value) == f"fetching {metadata.url} took over 0.05 s"
    assert metadata._mlopsbot_failed_at is not None
    release.set()
    await metadata._mlopsbot_fetch


@pytest.mark.parametrize("age,kid,fetches,found", [
    (timedelta(minutes=10), "published-key", 0, True),           # fresh keys: no fetch
    (timedelta(minutes=10), "unknown-key", 0, False),            # unknown id, fetched lately: 401, no fetch
    (timedelta(minutes=59), "unknown-key", 0, False),
    (timedelta(minutes=61), "unknown-key", 1, False),            # unknown id, fetched over an hour ago: once more
    (timedelta(minutes=61), "rotated-key", 1, True),             # ... and the rotated key is then found
    (timedelta(hours=23), "published-key", 0, True),
    (timedelta(hours=25), "published-key", 1, True),             # keys older than a day: fetched before use
])
async def test_signing_keys_are_fetched_by_botbuilders_rules(monkeypatch, age, kid, fetches, found):
    published, rotated = SigningKey("published-key"), SigningKey("rotated-key")
    downloads = KeyDownloads([published.jwk(), rotated.jwk()])
    monkeypatch.setattr(bot.signing_keys, "_download_keys", downloads)
    metadata = stale_metadata(age, published)
    if found:
        key = await bot.signing_keys._get_signing_key(metadata, kid)
        assert key.endorsements == ["msteams"]
    else:
        with pytest.raises(bot.signing_keys.UnknownSigningKey) as refused:
            await bot.signing_keys._get_signing_key(metadata, kid)
        assert str(refused.value) == f"no signing key with id {kid!r}"
    assert len(downloads.urls) == fetches


def test_a_key_id_is_found_only_among_published_keys():
    metadata = stale_metadata(timedelta(0), SigningKey("published-key"))
    assert bot.signing_keys._find_key(metadata, "published-key").endorsements == ["msteams"]
    assert bot.signing_keys._find_key(metadata, "other-key") is None
    metadata.keys = ["not-a-key"]
    assert bot.signing_keys._find_key(metadata, "published-key") is None
    metadata.keys = None
    assert bot.signing_keys._find_key(metadata, "published-key") is None


def valid_activity(**fields) -> dict:
    body = {"type": "message", "id": "1", "channelId": "msteams", "serviceUrl": "https://smba.trafficmanager.net/amer/",
            "from": {"id": "29:alice", "name": "Alice", "aadObjectId": "aad-alice"},
            "recipient": {"id": "28:bot", "name": "bot"},
            "conversation": {"id": "a:1", "conversationType": "personal", "tenantId": TENANT, "name": "chat"},
            "channelData": {"tenant": {"id": TENANT}, "team": {"id": "team-1"}, "channel": {"id": "channel-1"}},
            "text": "models", "entities": [], "attachments": [], "membersAdded": [{"id": "28:bot"}]}
    for path, value in fields.items():
        *parents, last = path.split("__")
        node = body
        for name in parents:
            node = node[name]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return body


DROP = object()


ACTIVITY_PROBLEMS = [
    ([], "an activity needs a 'type'"),
    ({"type": ""}, "an activity needs a 'type'"),
    (valid_activity(type=7), "an activity needs a 'type'"),
    (valid_activity(conversation=DROP), "an activity needs 'conversation.id'"),
    (valid_activity(conversation="a:1"), "an activity needs 'conversation.id'"),
    (valid_activity(conversation__id=""), "an activity needs 'conversation.id'"),
    (valid_activity(**{"from": DROP}), "an activity needs 'from.id'"),
    (valid_activity(**{"from": "29:alice"}), "an activity needs 'from.id'"),
    (valid_activity(from__id=""), "an activity needs 'from.id'"),
    (valid_activity(serviceUrl=DROP), "an activity needs a 'serviceUrl'"),
    (valid_activity(serviceUrl=["https://smba.trafficmanager.net/"]), "an activity needs a 'serviceUrl'"),
    (valid_activity(serviceUrl="ftp://smba.trafficmanager.net/"), "an activity needs a 'serviceUrl'"),
    (valid_activity(from__name=7), "'from.name' must be a string"),
    (valid_activity(from__aadObjectId=["aad-alice"]), "'from.aadObjectId' must be a string"),
    (valid_activity(conversation__tenantId={"id": TENANT}), "'conversation.tenantId' must be a string"),
    (valid_activity(text=False), "'text' must be a string"),
    (valid_activity(conversation__name=1), "'conversation.name' must be a string"),
    (valid_activity(conversation__conversationType="meeting"),
     "'conversation.conversationType' must be one of personal, groupChat, channel"),
    (valid_activity(recipient="28:bot"), "'recipient' must be an object with an 'id'"),
    (valid_activity(recipient={"name": "bot"}), "'recipient' must be an object with an 'id'"),
    (valid_activity(channelData="tenant"), "'channelData' must be an object"),
    (valid_activity(channelData__tenant=TENANT), "'channelData.tenant' must be an object with a string 'id'"),
    (valid_activity(channelData__team={"id": 7}), "'channelData.team' must be an object with a string 'id'"),
    (valid_activity(channelData__channel={"id": ""}), "'channelData.channel' must be an object with a string 'id'"),
    (valid_activity(channelData__tenant={"id": "other-tenant"}),
     "'channelData.tenant.id' and 'conversation.tenantId' name different tenants"),
    (valid_activity(membersAdded={"id": "x"}), "'membersAdded' must be a list of objects"),
    (valid_activity(membersRemoved=["x"]), "'membersRemoved' must be a list of objects"),
    (valid_activity(entities=[{}, None]), "'entities' must be a list of objects"),
    (valid_activity(attachments="card"), "'attachments' must be a list of objects"),
    (valid_activity(membersAdded=[{"id": "28:bot"}, {"name": "x"}]), "every member in 'membersAdded' needs an 'id'"),
    (valid_activity(membersRemoved=[{"id": ""}]), "every member in 'membersRemoved' needs an 'id'"),
]


@pytest.mark.parametrize("body,problem", ACTIVITY_PROBLEMS)
def test_activity_problem_names_exactly_what_is_wrong(body, problem):
    from bot.teams import activity_problem
    assert activity_problem(body) == problem


@pytest.mark.parametrize("body", [
    valid_activity(),
    valid_activity(serviceUrl="http://127.0.0.1:3978/", recipient=None, channelData=None, text=None,
                   conversation__conversationType=None, conversation__tenantId=None, from__name=None,
                   from__aadObjectId=None, conversation__name=None, membersAdded=None, entities=None),
    valid_activity(conversation__conversationType="groupChat", channelData__tenant={"id": None}),
    valid_activity(conversation__conversationType="channel", channelData__team={}, channelData__channel=None,
                   conversation__tenantId=DROP),
    valid_activity(channelData={}),
    valid_activity(channelData={"tenant": {"id": TENANT}}, conversation__tenantId=""),
], ids=["complete", "optional fields null", "group chat", "channel", "empty channelData", "tenant only in channelData"])
def test_activity_problem_lets_a_usable_activity_through(body):
    from bot.teams import activity_problem
    assert activity_problem(body) is None


def test_an_activity_botbuilder_cannot_read_is_refused_naming_the_reason():
    from bot.teams import activity_problem
    problem = activity_problem(valid_activity(timestamp="yesterday-ish"))
    assert problem.startswith("the activity cannot be read: ") and "yesterday-ish" in problem
    assert len(problem) <= len("the activity cannot be read: ") + 200


def test_a_whole_number_type_takes_its_whole_range_in_ascii_digits_only():
    from commands.base.registry import whole_number
    entry = whole_number(1, 10**12, "history entry")
    assert [entry(v) for v in ("1", "+7", "0001", " 42 ", "1000000000000", "0" * 40 + "5")] == [
        1, 7, 1, 42, 10**12, 5]          # 10**12 has 13 digits: it used to be refused by a 12-digit cap
    for value, message in [("1000000000001", "history entry must be between 1 and 1000000000000"),
                           ("0", "history entry must be between 1 and 1000000000000"),
                           ("-5", "history entry must be between 1 and 1000000000000"),
                           ("9" * 4000, "history entry must be between 1 and 1000000000000"),
                           ("²", "'²' is not a whole number of history entry"),
                           ("١٢", "'١٢' is not a whole number of history entry"),
                           ("1e3", "'1e3' is not a whole number of history entry")]:
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            entry(value)
        assert str(refused.value) == message


UNKNOWN_BUTTON = ("That button doesn't carry a command I know. It may come from an older version of this bot; "
                  "type `help` to see the commands.")


TOO_MUCH = ("That button carries more than a command can hold. It may come from an older version of this bot; "
            "type `help` to see the commands.")


@pytest.mark.parametrize("url,shown", [
    ("postgresql://bot:hunter2@db:5432/bot", "postgresql://bot:***@db:5432/bot"),
    ("postgresql://bot@db/bot?password=hunter2&sslmode=require",
     "postgresql://bot@db/bot?password=***&sslmode=require"),
    ("postgresql://db/bot?sslpassword=hunter2&sslkey=/k.pem&application_name=bot",
     "postgresql://db/bot?sslpassword=***&sslkey=***&application_name=bot"),
    ("postgresql://db/bot?PassWord=hunter2&client_secret=hunter2&api_token=hunter2&access%5Fkey=hunter2",
     "postgresql://db/bot?PassWord=***&client_secret=***&api_token=***&access%5Fkey=***"),
    ("postgresql://bot:p%40ss@db/bot?options=-c%20search_path%3Dbot", "postgresql://bot:***@db/bot?options=-c%20search_path%3Dbot"),
    ("postgresql://db/bot?password=hunter=2&user=bot", "postgresql://db/bot?password=***&user=bot"),
    ("postgresql://bot:p@ss:w@db:5432/bot", "postgresql://bot:***@db:5432/bot"),            # '@' and ':' in it
    ("postgresql://bot@myserver:hunter2@myserver.postgres.database.azure.com/bot",           # Azure's user@server
     "postgresql://bot@myserver:***@myserver.postgres.database.azure.com/bot"),
    ("postgresql://bot:hunter2@db/bot?application_name=x://y", "postgresql://bot:***@db/bot?application_name=x://y"),
    ("postgresql://bot@db:5432/bot?sslmode=require", "postgresql://bot@db:5432/bot?sslmode=require"),
    ("postgresql://db/bot?sslmode=require&Authorization=hunter2&password",
     "postgresql://db/bot?sslmode=require&Authorization=***&password"),                    # no value: nothing hidden
    ("sqlite:////data/bot.db", "sqlite:////data/bot.db"),
])
def test_storage_secrets_are_redacted_in_the_logged_summary(url, shown, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPSBOT_STORAGE_URL", raising=False)
    assert load_settings(storage_url=url).public_summary()["storage"] == shown


@pytest.mark.parametrize("overrides,message", [
    ({"port": 0}, "port: must be a whole number from 1 to 65535, not 0"),
    ({"storage_url": "mysql://db"},
     "storage_url: MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db"),
    ({"default_role": "overlord"}, "default_role: "),
])
def test_a_bad_setting_is_named_in_the_refusal(overrides, message, tmp_path, monkeypatch):
    from bot.settings import SettingsError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    assert str(refused.value).startswith("The bot's configuration is not usable: " + message)


@pytest.fixture
async def production(aiohttp_server, tmp_path, monkeypatch):
    """A bot with an app id and the default serviceUrl allow-list, trusting one signing key."""
    key = SigningKey("channel-key-1")
    trust(monkeypatch, key)
    bot_ = await started(aiohttp_server, tmp_path, monkeypatch, host="0.0.0.0", app_id=APP_ID, allowed_tenants=["*"],
                         app_password="not-a-real-secret")
    bot_.key = key
    yield bot_
    await bot_.storage.close()


@pytest.mark.parametrize("service_url,allowed", [
    ("https://smba.trafficmanager.net/amer/", True),
    ("https://smba.trafficmanager.net:443/emea/", True),
    ("https://SMBA.trafficmanager.net/teams/", True),
    ("https://smba.infra.gcc.teams.microsoft.com/gcc/", True),
    ("https://webchat.botframework.com/", True),
    ("https://smba.infra.gov.teams.microsoft.us/teams/", False),      # GCC High: set the hosts for it
    ("https://user@smba.trafficmanager.net.evil.example/", False),
    ("https://evil.example/?https://smba.trafficmanager.net/", False),
    ("http://127.0.0.1:3978/", False),
    ("not a url at all", False),
])
def test_the_default_service_hosts(service_url, allowed):
    from bot.settings import DEFAULT_SERVICE_URL_HOSTS
    from bot.activity import service_url_problem
    assert (service_url_problem(service_url, DEFAULT_SERVICE_URL_HOSTS) is None) == allowed


def test_sovereign_clouds_set_their_own_service_hosts(tmp_path, monkeypatch):
    from bot.activity import service_url_problem
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPSBOT_SERVICE_URL_HOSTS", "smba.infra.gov.teams.microsoft.us, *.botframework.azure.us")
    hosts = load_settings(app_id=APP_ID, app_password="p", host="0.0.0.0", allowed_tenants=["*"]).service_url_hosts
    assert hosts == ["smba.infra.gov.teams.microsoft.us", "*.botframework.azure.us"]
    assert service_url_problem("https://smba.infra.gov.teams.microsoft.us/teams/", hosts) is None
    assert service_url_problem("https://smba.trafficmanager.net/amer/", hosts) is not None


@pytest.mark.parametrize("entry", ["http://smba.trafficmanager.net", "https://smba.trafficmanager.net",
                                   "smba.trafficmanager.net/amer", "evil*.example"])
def test_service_hosts_are_host_names_and_only_loopback_may_use_http(entry, tmp_path, monkeypatch):
    from bot.settings import SettingsError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="MLOPSBOT_SERVICE_URL_HOSTS"):
        load_settings(app_id=APP_ID, app_password="p", host="0.0.0.0", allowed_tenants=["*"], service_url_hosts=[entry])


def test_the_escaping_formatter_keeps_tracebacks_readable():
    from bot.logsafe import FORMAT, EscapingFormatter
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "incident %s for %s", ("ab12", "a\rb"),
                                   sys.exc_info())
    formatted = EscapingFormatter(FORMAT).format(record)
    first, *rest = formatted.split("\n")
    assert first.endswith("incident ab12 for a\\rb")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


OPERATOR = Person("29:1olga", "Olga Operator", "00000000-0000-0000-0000-0000000000a9")


@pytest.fixture
def pauses(monkeypatch):
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(bot.teams, "_pause", pause)
    return waited


def test_production_knows_people_by_their_entra_object_id_only():
    """A channel user id set to an admin's object id (what a Direct Line client could send) is
    nobody in production; in development (the playground) the channel id stands in."""
    from botbuilder.schema import Activity

    from bot.teams import TeamsBot

    body = TeamsStandIn("http://unused").activity("message", text="whoami", user=ALICE)
    body["from"] = {"id": ALICE.aad_object_id, "name": "Alice Analyst"}        # no aadObjectId
    activity = Activity().deserialize(body)
    production = TeamsBot(None, None, None, APP_ID, teams_only=True)
    development = TeamsBot(None, None, None, "", teams_only=False)
    assert production._request(activity, text="whoami").user.id == ""
    assert development._request(activity, text="whoami").user.id == ALICE.aad_object_id
    body["from"]["aadObjectId"] = ALICE.aad_object_id
    assert production._request(Activity().deserialize(body), text="whoami").user.id == ALICE.aad_object_id


@pytest.mark.parametrize("service_url,problem", [
    ("https://smba.trafficmanager.net/amer/", None),
    ("https://SMBA.TrafficManager.net:443/amer/", None),
    ("https://eu.webchat.botframework.com/", None),                       # *.domain: any depth of subdomain
    ("https://botframework.com/", "'serviceUrl' host 'botframework.com' is not a Teams or Bot Framework service "
                                  "(MLOPSBOT_SERVICE_URL_HOSTS)"),
    ("https://evilbotframework.com/", "'serviceUrl' host 'evilbotframework.com' is not a Teams or Bot Framework "
                                      "service (MLOPSBOT_SERVICE_URL_HOSTS)"),
    ("https://smba.trafficmanager.net:8443/amer/", "'serviceUrl' must be an https URL of a Teams or Bot Framework service"),
    ("http://smba.trafficmanager.net/amer/", "'serviceUrl' must be an https URL of a Teams or Bot Framework service"),
    ("http://127.0.0.1:3978/", None),                                     # listed as http://127.0.0.1
    ("http://localhost:3978/", "'serviceUrl' must be an https URL of a Teams or Bot Framework service"),
    ("https://127.0.0.1/", "'serviceUrl' host '127.0.0.1' is not a Teams or Bot Framework service "
                           "(MLOPSBOT_SERVICE_URL_HOSTS)"),
    ("https://smba.trafficmanager.net:99999/", "'serviceUrl' is not a URL"),
    ("https://[::1/", "'serviceUrl' is not a URL"),
    ("https:///amer/", "'serviceUrl' host '' is not a Teams or Bot Framework service (MLOPSBOT_SERVICE_URL_HOSTS)"),
])
def test_service_url_problem_decides_and_says_why(service_url, problem):
    from bot.activity import service_url_problem
    hosts = ["smba.trafficmanager.net", "*.botframework.com", "http://127.0.0.1"]
    assert service_url_problem(service_url, hosts) == problem


def test_the_tenant_comes_from_channel_data_then_the_conversation():
    from botbuilder.schema import Activity

    from bot.activity import tenant_of
    both = valid_activity(channelData__tenant={"id": "tenant-cd"}, conversation__tenantId="tenant-conv")
    assert tenant_of(Activity().deserialize(both)) == "tenant-cd"
    assert tenant_of(Activity().deserialize(valid_activity(channelData__tenant={"id": ""},
                                                           conversation__tenantId="tenant-conv"))) == "tenant-conv"
    assert tenant_of(Activity().deserialize(valid_activity(channelData=None,
                                                           conversation__tenantId="tenant-conv"))) == "tenant-conv"
    legacy = valid_activity(channelData={}, conversation__tenantId=DROP)
    legacy["conversation"]["tenantID"] = "tenant-schema"                   # botbuilder's own key for tenant_id
    assert tenant_of(Activity().deserialize(legacy)) == "tenant-schema"
    assert tenant_of(Activity().deserialize(valid_activity(channelData={}, conversation__tenantId=DROP))) == ""
    no_conversation = Activity().deserialize(valid_activity(channelData={}))
    no_conversation.conversation = None
    assert tenant_of(no_conversation) == ""


@pytest.mark.parametrize("entra_only,sender,user", [
    (True, {"id": "29:alice", "name": "Alice", "aadObjectId": "aad-alice"}, ("aad-alice", "Alice")),
    (False, {"id": "29:alice", "name": "Alice", "aadObjectId": "aad-alice"}, ("aad-alice", "Alice")),
    (True, {"id": "29:alice", "name": "Alice"}, ("", "Alice")),           # production: the channel id is nobody
    (False, {"id": "29:alice", "name": "Alice"}, ("29:alice", "Alice")),  # the playground: the channel id stands in
    (False, {"id": "29:alice"}, ("29:alice", "someone")),
    (False, DROP, ("", "someone")),
    (True, DROP, ("", "someone")),
])
def test_user_of_names_the_sender_by_entra_object_id(entra_only, sender, user):
    """`entra_only` is production's; without it (the playground, stored references) the channel id stands in."""
    from botbuilder.schema import Activity

    from bot.activity import user_of
    activity = Activity().deserialize(valid_activity(**{"from": sender}))
    found = user_of(activity, entra_only=entra_only) if entra_only else user_of(activity)
    assert (found.id, found.name, found.tenant_id) == (*user, TENANT)


@pytest.mark.parametrize("teams_only,hosts,fields,problem", [
    (True, (), {}, None),
    (True, (), {"channelId": "directline"},
     "this bot answers Microsoft Teams only (channelId 'msteams'), not 'directline'"),
    (True, (), {"channelId": DROP}, "this bot answers Microsoft Teams only (channelId 'msteams'), not 'None'"),
    (True, (), {"channelId": "x" * 100}, f"this bot answers Microsoft Teams only (channelId 'msteams'), not {'x' * 40!r}"),
    (False, (), {"channelId": "directline"}, None),                                  # development: any channel
    (True, ("smba.trafficmanager.net",), {"serviceUrl": "https://evil.example/"},
     "'serviceUrl' host 'evil.example' is not a Teams or Bot Framework service (MLOPSBOT_SERVICE_URL_HOSTS)"),
    (False, (), {"serviceUrl": "https://evil.example/"}, None),                      # no hosts: any (development)
    (True, ("smba.trafficmanager.net",), {"from": DROP, "channelId": "directline"}, "an activity needs 'from.id'"),
    (True, ("smba.trafficmanager.net",), {"channelId": "directline", "serviceUrl": "https://evil.example/"},
     "this bot answers Microsoft Teams only (channelId 'msteams'), not 'directline'"),
])
def test_check_activity_refuses_other_channels_and_service_urls_in_that_order(teams_only, hosts, fields, problem, caplog):
    from bot.teams import TeamsBot
    checker = TeamsBot(None, None, None, APP_ID if teams_only else "", service_url_hosts=hosts, teams_only=teams_only)
    caplog.set_level(logging.WARNING, logger="bot.teams")
    assert checker.check_activity(valid_activity(**fields)) == problem
    assert [r.getMessage() for r in caplog.records] == ([] if problem is None else [f"refused an activity: {problem}"])


class Sent:
    def __init__(self, id):
        self.id = id


def http_error(status: int, headers: dict | None = None):
    from msrest.exceptions import HttpOperationError
    response = SimpleNamespace(status_code=status, headers=headers or {}, reason="refused",
                               raise_for_status=lambda: None)
    return HttpOperationError(None, response)


class Connector:
    """A turn context whose send_activity fails with `failures` (HTTP statuses), then answers `answer`."""

    def __init__(self, failures, answer=Sent("activity-1")):
        self.failures, self.answer, self.tries = list(failures), answer, 0

    async def send_activity(self, activity):
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.answer


@pytest.mark.parametrize("answer,activity_id", [(Sent("activity-1"), "activity-1"), (Sent(None), ""), (None, "")])
async def test_send_with_retry_returns_the_sent_activity_id(pauses, answer, activity_id):
    assert await bot.teams.send_with_retry(Connector([], answer), None) == activity_id
    assert pauses == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
async def test_send_with_retry_does_not_retry_what_teams_does_not_ask_to_retry(pauses, status):
    from msrest.exceptions import HttpOperationError
    connector = Connector([http_error(status)])
    with pytest.raises(HttpOperationError):
        await bot.teams.send_with_retry(connector, None)
    assert (connector.tries, pauses) == (1, [])


@pytest.mark.parametrize("status", sorted(bot.teams.RETRYABLE_STATUSES))
async def test_send_with_retry_backs_off_exponentially_on_each_retryable_status(pauses, monkeypatch, status):
    monkeypatch.setattr(bot.teams.random, "random", lambda: 0.5)            # the jitter's middle: factor 1
    connector = Connector([http_error(status)] * 3, Sent("activity-4"))
    assert await bot.teams.send_with_retry(connector, None) == "activity-4"
    assert (connector.tries, pauses) == (4, [0.5, 1.0, 2.0])


async def test_send_with_retry_gives_up_after_send_attempts_and_honours_retry_after(pauses, monkeypatch):
    from msrest.exceptions import HttpOperationError
    monkeypatch.setattr(bot.teams.random, "random", lambda: 1.0)
    failures = [http_error(429, {"Retry-After": "3"}), http_error(429, {"Retry-After": "-5"}),
                http_error(502, {"Retry-After": "soon"}), http_error(429, {"Retry-After": "1"})]
    connector = Connector(failures + [http_error(429)])
    with pytest.raises(HttpOperationError):
        await bot.teams.send_with_retry(connector, None)
    assert (connector.tries, pauses) == (4, [3.0, 0.0, 0.5 * 2 ** 2 * 1.5])


class StubWorkspace:
    """A workspace service with one online endpoint and one batch endpoint."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def get_batch_endpoint(self, name: str):
        from adapters.service import NotFound
        if name != "nightly-batch":
            raise NotFound("batch_endpoint", name)
        return name

    async def names(self, kind: str) -> list[str]:
        return ["fraud-api", "churn-api"]


def stub_registry():
    """A registry of three commands that report what reached them."""
    from adapters.service import NotFound
    from commands.base.context import Reply, Role
    from commands.base.registry import Arg, Registry
    registry = Registry()

    @registry.command("look", Arg("name"), summary="look", example="look x")
    async def look(ctx, name):
        if name != "fraud-api":
            raise NotFound("endpoint", name)
        return Reply(text=f"looked at {name} in {ctx.ml.name}")

    @registry.command("shift", Arg("name"), summary="shift", example="shift x", role=Role.OPERATOR, change=True)
    async def shift(ctx, name):
        return Reply(text=f"shifted {name} in {ctx.ml.name} because {ctx.reason!r}")

    @registry.command("vote", summary="vote", example="vote", role=Role.APPROVER, uses_workspace=False)
    async def vote(ctx):
        return Reply(text=f"voted, workspace {ctx.workspace}")

    return registry


def stub_context(role):
    from commands.base.context import Context, User, Workspaces
    return Context(user=User(id="aad-1", name="Ann"), role=role,
                   workspaces=Workspaces([StubWorkspace("ml-prod"), StubWorkspace("ml-dev")]))


@pytest.mark.parametrize("role,command,allowed", [
    ("VIEWER", "look", True), ("VIEWER", "shift", False), ("VIEWER", "vote", False),
    ("OPERATOR", "shift", True), ("OPERATOR", "vote", False),
    ("APPROVER", "shift", True), ("APPROVER", "vote", True), ("ADMIN", "vote", True),
])
async def test_invoke_runs_a_command_only_for_its_role_or_a_higher_one(role, command, allowed):
    from commands.base.context import Role
    from commands.base.registry import Forbidden
    registry, ctx = stub_registry(), stub_context(Role[role])
    cmd = registry.find(command)
    argv = [] if command == "vote" else ["fraud-api"]
    if allowed:
        assert (await registry.invoke(ctx, cmd, argv)).text.startswith(("looked", "shifted", "voted"))
    else:
        with pytest.raises(Forbidden) as refused:
            await registry.invoke(ctx, cmd, argv)
        assert str(refused.value) == (f"`{command}` needs the {cmd.role.label} role; you have {Role[role].label}. "
                                      "Ask a bot admin to grant it (`roles` lists them).")


async def test_invoke_sets_the_workspace_and_the_reason_and_bounds_the_reason():
    from commands.base.context import Role
    from commands.base.registry import MAX_REASON_CHARS, UsageError
    registry, ctx = stub_registry(), stub_context(Role.OPERATOR)
    shift = registry.find("shift")
    reply = await registry.invoke(ctx, shift, ["fraud-api", "--workspace", "ml-dev", "--reason", "r" * MAX_REASON_CHARS])
    assert reply.text == f"shifted fraud-api in ml-dev because {'r' * MAX_REASON_CHARS!r}"
    assert (await registry.invoke(stub_context(Role.OPERATOR), shift, ["fraud-api"])).text == (
        "shifted fraud-api in ml-prod because ''")
    with pytest.raises(UsageError) as refused:
        await registry.invoke(stub_context(Role.OPERATOR), shift, ["fraud-api", "--reason", "r" * (MAX_REASON_CHARS + 1)])
    assert str(refused.value) == f"The reason is too long ({MAX_REASON_CHARS + 1} characters; at most {MAX_REASON_CHARS})."
    with pytest.raises(UsageError) as unknown:
        await registry.invoke(stub_context(Role.OPERATOR), shift, ["fraud-api", "--workspace", "ml-prd"])
    assert str(unknown.value) == "No workspace named 'ml-prd'. Did you mean `ml-prod`? Configured: ml-prod, ml-dev."
    vote = await registry.invoke(stub_context(Role.ADMIN), registry.find("vote"), [])
    assert vote.text == "voted, workspace None"


async def test_invoke_tells_a_batch_endpoint_from_an_unknown_name():
    from commands.base.context import Role
    from commands.base.registry import UnknownName, UsageError
    registry = stub_registry()
    look = registry.find("look")
    with pytest.raises(UsageError) as batch:
        await registry.invoke(stub_context(Role.VIEWER), look, ["nightly-batch"])
    assert str(batch.value) == ("nightly-batch is a batch endpoint; canary, history, rollback, traffic, scale and logs "
                                "work on online endpoints. `endpoint nightly-batch` shows it, `batch nightly-batch "
                                "‹input›` scores data with it.")
    with pytest.raises(UnknownName) as typo:
        await registry.invoke(stub_context(Role.VIEWER), look, ["fraud-apj"])
    assert str(typo.value) == "No endpoint named 'fraud-apj'. Did you mean `fraud-api`?"


async def test_a_change_is_logged_with_who_ran_it_and_a_read_is_not(caplog):
    from commands.base.context import Role
    registry = stub_registry()
    caplog.set_level(logging.INFO, logger="commands.base.registry")
    await registry.invoke(stub_context(Role.VIEWER), registry.find("look"), ["fraud-api"])
    await registry.invoke(stub_context(Role.OPERATOR), registry.find("shift"), ["fraud-api", "--workspace", "ml-dev"])
    await registry.invoke(stub_context(Role.ADMIN), registry.find("vote"), [])
    assert [r.getMessage() for r in caplog.records if r.name == "commands.base.registry"] == [
        "change requested: Ann (aad-1) ran shift fraud-api --workspace ml-dev in ml-dev",
        "change requested: Ann (aad-1) ran vote  in -"]


@pytest.mark.parametrize("verb,args,refusal", [
    ("look", ["fraud-api"], None),
    ("LOOK", [7], None),
    ("look", [True], "UNKNOWN"), ("look", [1.5], "UNKNOWN"), ("look", "fraud-api", "UNKNOWN"),
    ("nope", ["fraud-api"], "UNKNOWN"), (None, [], "UNKNOWN"),
    ("look", ["fraud-api"] + ["--workspace", "ml-prod"] * 15 + ["--workspace=ml-prod"], None),   # 32 args: run
    ("look", ["fraud-api"] * 33, "TOO_MUCH"),
    ("look", ["w" * 4095], None), ("look", ["w" * 4096], "TOO_MUCH"),                  # bytes with a separator
    ("look", ["é" * 2047], None), ("look", ["é" * 2048], "TOO_MUCH"),                  # counted in UTF-8
])
async def test_run_action_bounds_a_button_like_typed_text(verb, args, refusal):
    from commands.base.context import Role
    from commands.base.registry import UnknownName, UsageError
    registry = stub_registry()
    try:
        reply = await registry.run_action(stub_context(Role.VIEWER), verb, args)
    except UnknownName as error:
        assert refusal is None and error.name == str(args[0])   # parsed and run: the name is not an endpoint
    except UsageError as error:
        assert refusal is not None and str(error) == {"UNKNOWN": UNKNOWN_BUTTON, "TOO_MUCH": TOO_MUCH}[refusal]
    else:
        assert refusal is None and reply.text == "looked at fraud-api in ml-prod"


class TurnRecorder:
    """A TeamsBot whose activity handlers only record that they ran, over a recording storage."""

    def __init__(self, allowed_tenant: str) -> None:
        from bot.teams import TeamsBot
        recorder = self
        self.handled: list[str] = []
        self.saved: list[str] = []
        self.people = 0

        class Storage:
            async def save_conversation(self, record):
                recorder.saved.append(record.conversation_id)

            async def run_transaction(self, work):
                recorder.people += 1

        class Handler:
            def tenant_allowed(self, tenant_id):
                return tenant_id == allowed_tenant

        class Recording(TeamsBot):
            async def on_message_activity(self, turn_context):
                recorder.handled.append("message")

            async def on_invoke_activity(self, turn_context):
                recorder.handled.append("invoke")

            async def on_conversation_update_activity(self, turn_context):
                recorder.handled.append("conversationUpdate")

            async def on_installation_update(self, turn_context):
                recorder.handled.append("installationUpdate")

            async def on_message_reaction_activity(self, turn_context):
                recorder.handled.append("messageReaction")

        self.bot = Recording(Handler(), Storage(), None, APP_ID)

    async def turn(self, kind: str, **fields) -> None:
        from botbuilder.schema import Activity
        activity = Activity().deserialize(valid_activity(type=kind, **fields))
        await self.bot.on_turn(SimpleNamespace(activity=activity, turn_state={}))


@pytest.mark.parametrize("kind", ["message", "invoke", "conversationUpdate", "installationUpdate", "messageReaction"])
async def test_a_refused_tenant_reaches_only_the_handlers_that_answer_in_words(kind, caplog):
    caplog.set_level(logging.WARNING, logger="bot.teams")
    turns = TurnRecorder(allowed_tenant="tenant-ours")
    await turns.turn(kind)
    assert turns.handled == ([kind] if kind in ("message", "invoke") else [])
    assert (turns.saved, turns.people) == ([], 0)                   # no stored reference, nobody remembered
    assert [r.getMessage() for r in caplog.records] == [f"refused a {kind} activity from tenant {TENANT}"]


async def test_an_activity_without_a_tenant_is_logged_as_such(caplog):
    caplog.set_level(logging.WARNING, logger="bot.teams")
    turns = TurnRecorder(allowed_tenant="tenant-ours")
    await turns.turn("message", channelData={}, conversation__tenantId=DROP)
    assert [r.getMessage() for r in caplog.records] == ["refused a message activity from tenant (none)"]


async def test_an_allowed_tenant_is_served_and_its_conversation_saved_once_unless_it_changes():
    turns = TurnRecorder(allowed_tenant=TENANT)
    await turns.turn("message")
    await turns.turn("message")                                     # the same reference: not written again
    assert (turns.handled, turns.saved, turns.people) == (["message", "message"], ["a:1"], 1)
    await turns.turn("conversationUpdate")                          # may mean the bot was re-added: always saved
    await turns.turn("installationUpdate")
    await turns.turn("message", serviceUrl="https://smba.trafficmanager.net/emea/")     # the reference changed
    assert turns.saved == ["a:1"] * 4
    await turns.turn("message", from__aadObjectId="aad-bob", from__id="29:bob")   # someone new: remembered
    assert turns.people == 2


async def test_each_conversation_is_remembered_under_its_own_id():
    turns = TurnRecorder(allowed_tenant=TENANT)
    for conversation in ("a:1", "a:2", "a:1", "a:2"):
        await turns.turn("message", conversation__id=conversation)
    assert turns.saved == ["a:1", "a:2"]


def test_a_remembered_service_url_verdict_is_the_same_as_a_fresh_one():
    """checked_service_url remembers its last verdicts (issue 21): asked again, the same URL gets
    the same answer, refused ones stay refused, and what is not a string is refused uncached."""
    from bot.activity import _checked_service_url, checked_service_url
    urls = ["https://smba.trafficmanager.net/amer/", "https://evil.example\\@smba.trafficmanager.net/",
            "https://smba.trafficmanager.net:443/emea/", "http://127.0.0.1:3978/", "", "x" * 3000]
    for url in urls * 2:
        assert checked_service_url(url) == _checked_service_url(url)
    assert checked_service_url("https://smba.trafficmanager.net:443/emea/") == ("https://smba.trafficmanager.net/emea/", None)
    assert checked_service_url("https://evil.example\\@smba.trafficmanager.net/")[1] is not None
    for value in (None, 42, ["https://smba.trafficmanager.net/"], {"url": 1}):
        assert checked_service_url(value) == ("", "'serviceUrl' is not a URL")
