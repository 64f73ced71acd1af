"""How bot/settings.py reads text into settings (plain Python since pydantic-settings left): the types,
the bounds, the names ignoring case, the .env file, and the messages, which name the variable to fix
and what it accepts. The values match what pydantic-settings read, so a deployment that started
before starts the same now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.settings import AzureWorkspace, Settings, SettingsError, environment_names, load_settings

PREFIX = "The bot's configuration is not usable: "
APP = {"app_id": "11111111-2222-3333-4444-555555555555", "app_password": "p", "host": "0.0.0.0",
       "allowed_tenants": ["*"]}


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    """No setting from the machine running the tests, and no .env but the test's own."""
    names = {name.lower() for aliases in environment_names().values() for name in aliases}
    for name in list(os.environ):
        if name.lower() in names and name != "MLOPSBOT_AUDIT_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def refusal(**overrides) -> str:
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    message = str(refused.value)
    assert message.startswith(PREFIX)
    return message.removeprefix(PREFIX)


@pytest.mark.parametrize("name,text,field,value", [
    ("MLOPSBOT_PORT", "8080", "port", 8080),
    ("MLOPSBOT_PORT", " 8080 ", "port", 8080),
    ("MLOPSBOT_PORT", "+8_080", "port", 8080),
    ("MLOPSBOT_PORT", "8080.0", "port", 8080),
    ("MLOPSBOT_AZURE_TIMEOUT", "2.5", "azure_timeout", 2.5),
    ("MLOPSBOT_AZURE_TIMEOUT", "1e1", "azure_timeout", 10.0),
    ("MLOPSBOT_AZURE_TIMEOUT", " 2.5 ", "azure_timeout", 2.5),
    ("MLOPSBOT_AZURE_TIMEOUT", "1_0.5", "azure_timeout", 10.5),
    ("MLOPSBOT_READ_CACHE_SECONDS", "0", "read_cache_seconds", 0.0),
    ("MLOPSBOT_READ_CACHE_SECONDS", "300", "read_cache_seconds", 300.0),
    ("MLOPSBOT_DEMO_SIZE", "15", "demo_size", 15),
    ("MLOPSBOT_DATA_DIR", "/srv/bot", "data_dir", Path("/srv/bot")),
    ("MLOPSBOT_DATA_DIR", "", "data_dir", Path(".")),
    ("MLOPSBOT_ADMINS", " aad-1 ,, aad-2, ", "admins", ["aad-1", "aad-2"]),
    ("MLOPSBOT_ADMINS", "", "admins", []),
    ("MLOPSBOT_SERVICE_URL_HOSTS", "", "service_url_hosts", []),
    ("MLOPSBOT_SERVICE_URL_HOSTS", "A.example, *.B.example", "service_url_hosts", ["a.example", "*.b.example"]),
    ("MLOPSBOT_AZURE_WORKSPACES", "  ", "azure_workspaces", []),
    ("MLOPSBOT_PUBLIC_URL", "  https://bot.example.com/  ", "public_url", "https://bot.example.com/"),
    ("MLOPSBOT_LOG_LEVEL", "", "log_level", ""),
    ("MicrosoftAppType", "SingleTenant", "app_type", "SingleTenant"),
])
def test_text_is_read_as_the_settings_type(monkeypatch, name, text, field, value):
    monkeypatch.setenv(name, text)
    if field == "app_type":
        monkeypatch.setenv("MicrosoftAppTenantId", "tenant-home")
    read = getattr(load_settings(), field)
    assert (read, type(read)) == (value, type(value))


@pytest.mark.parametrize("text,value", [(t, True) for t in ("1", "true", "True", "YES", "y", "on", "T")]
                         + [(t, False) for t in ("0", "false", "FALSE", "no", "N", "Off", "f")])
def test_true_and_false_are_read_as_pydantic_read_them(monkeypatch, text, value):
    monkeypatch.setenv("MLOPSBOT_PLAIN_LANGUAGE", text)
    assert load_settings().plain_language is value


@pytest.mark.parametrize("name,text,problem", [
    ("MLOPSBOT_PORT", "abc", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not 'abc'"),
    ("MLOPSBOT_PORT", "", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not ''"),
    ("MLOPSBOT_PORT", "0", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not '0'"),
    ("MLOPSBOT_PORT", "65536", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not '65536'"),
    ("MLOPSBOT_PORT", "80.5", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not '80.5'"),
    ("MLOPSBOT_PORT", "1e3", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not '1e3'"),
    ("MLOPSBOT_PORT", "٤٢", "MLOPSBOT_PORT: must be a whole number from 1 to 65535, not '٤٢'"),
    ("MLOPSBOT_DEMO_SIZE", "", "MLOPSBOT_DEMO_SIZE: must be a whole number from 3 to 10000, not ''"),
    ("MLOPSBOT_DEMO_SIZE", "2", "MLOPSBOT_DEMO_SIZE: must be a whole number from 3 to 10000, not '2'"),
    ("MLOPSBOT_CHANGE_REQUESTS_PER_MINUTE", "-1",
     "MLOPSBOT_CHANGE_REQUESTS_PER_MINUTE: must be a whole number from 0 to 10000, not '-1'"),
    ("MLOPSBOT_AZURE_TIMEOUT", "0", "MLOPSBOT_AZURE_TIMEOUT: must be a number greater than 0, not '0'"),
    ("MLOPSBOT_AZURE_TIMEOUT", "inf", "MLOPSBOT_AZURE_TIMEOUT: must be a number greater than 0, not 'inf'"),
    ("MLOPSBOT_AZURE_TIMEOUT", "nan", "MLOPSBOT_AZURE_TIMEOUT: must be a number greater than 0, not 'nan'"),
    ("MLOPSBOT_AZURE_TIMEOUT", "١", "MLOPSBOT_AZURE_TIMEOUT: must be a number greater than 0, not '١'"),
    ("MLOPSBOT_READ_CACHE_SECONDS", "301", "MLOPSBOT_READ_CACHE_SECONDS: must be a number from 0 to 300, not '301'"),
    ("MLOPSBOT_OUTBOX_SEND_TIMEOUT", "121",
     "MLOPSBOT_OUTBOX_SEND_TIMEOUT: must be a number greater than 0 and at most 120, not '121'"),
    ("MLOPSBOT_PLAIN_LANGUAGE", "ja",
     "MLOPSBOT_PLAIN_LANGUAGE: must be true or false (or yes/no, on/off, 1/0), not 'ja'"),
    ("MLOPSBOT_PLAIN_LANGUAGE", "true ",
     "MLOPSBOT_PLAIN_LANGUAGE: must be true or false (or yes/no, on/off, 1/0), not 'true '"),
    ("MLOPSBOT_BACKEND", "Local", "MLOPSBOT_BACKEND: must be local or azure, not 'Local'"),
    ("MICROSOFT_APP_TYPE", "multitenant",
     "MicrosoftAppType: must be one of MultiTenant, SingleTenant or UserAssignedMSI, not 'multitenant'"),
    ("MLOPSBOT_INSTANCE_ID", "bot/1",
     "MLOPSBOT_INSTANCE_ID: must be at most 100 letters, digits, '.', '_', ':' or '-', not 'bot/1'"),
    ("MLOPSBOT_INSTANCE_ID", "b" * 101,
     "MLOPSBOT_INSTANCE_ID: must be at most 100 letters, digits, '.', '_', ':' or '-', not '"
     + "b" * 56 + "..."),
    ("MLOPSBOT_STORAGE_URL", "mysql://db",
     "MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db"),
    ("MLOPSBOT_SERVICE_URL_HOSTS", "a*b.example", "MLOPSBOT_SERVICE_URL_HOSTS: 'a*b.example' is not a host name or *.domain"),
    ("MLOPSBOT_DEFAULT_ROLE", "boss",
     "MLOPSBOT_DEFAULT_ROLE: unknown role 'boss': use one of viewer, operator, approver, admin"),
    ("MLOPSBOT_AZURE_WORKSPACES", "not json",
     "MLOPSBOT_AZURE_WORKSPACES must be a JSON list of objects with name, subscription_id, resource_group, "
     "environment (Expecting value: line 1 column 1 (char 0))"),
    ("MLOPSBOT_AZURE_WORKSPACES", "{}",
     "MLOPSBOT_AZURE_WORKSPACES must be a JSON list of objects with name, subscription_id, resource_group, "
     "environment, not {}"),
    ("MLOPSBOT_AZURE_WORKSPACES", "[1]",
     "MLOPSBOT_AZURE_WORKSPACES.0: must be a JSON object with name, subscription_id and resource_group, not 1"),
    ("MLOPSBOT_AZURE_WORKSPACES", '[{"subscription_id": "s", "resource_group": "r"}, {"name": 2}]',
     "MLOPSBOT_AZURE_WORKSPACES.0.name: field required; MLOPSBOT_AZURE_WORKSPACES.1.name: must be text, not 2; "
     "MLOPSBOT_AZURE_WORKSPACES.1.subscription_id: field required; "
     "MLOPSBOT_AZURE_WORKSPACES.1.resource_group: field required"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_what_it_takes(monkeypatch, name, text, problem):
    monkeypatch.setenv(name, text)
    assert refusal() == problem


def test_workspaces_are_read_from_json_ignoring_keys_they_do_not_have(monkeypatch):
    monkeypatch.setenv("MLOPSBOT_AZURE_WORKSPACES", '[{"name": "ml", "subscription_id": "s", "resource_group": "rg", '
                                                    '"region": "westeurope"}]')
    assert load_settings().azure_workspaces == [AzureWorkspace(name="ml", subscription_id="s", resource_group="rg")]


def test_names_are_matched_ignoring_case_and_the_first_alias_wins(monkeypatch):
    monkeypatch.setenv("mlopsbot_port", "4321")
    monkeypatch.setenv("microsoft_app_id", "second")
    monkeypatch.setenv("MICROSOFTAPPID", "first")
    settings = load_settings(app_password="p", allowed_tenants=["*"])
    assert (settings.port, settings.app_id) == (4321, "first")
    monkeypatch.delenv("MICROSOFTAPPID")
    assert load_settings(app_password="p", allowed_tenants=["*"]).app_id == "second"


def test_a_value_given_in_code_wins_over_the_environment_and_is_checked_alike(monkeypatch):
    monkeypatch.setenv("MLOPSBOT_HOST", "0.0.0.0")
    monkeypatch.setenv("MLOPSBOT_PORT", "99")
    settings = load_settings(host="127.0.0.1", port="100", data_dir="/srv/bot", demo_size=None, admins="a, b",
                             operators=("c",), health_p99_ms=250)
    assert (settings.host, settings.port, settings.data_dir, settings.demo_size, settings.admins,
            settings.operators, settings.health_p99_ms) == ("127.0.0.1", 100, Path("/srv/bot"), None, ["a", "b"],
                                                            ["c"], 250.0)
    assert refusal(port=80.5) == "port: must be a whole number from 1 to 65535, not 80.5"
    assert refusal(host=None) == "host: must be text, not None"
    assert refusal(admins=[1]) == "admins: must be a comma-separated list, not [1]"
    with pytest.raises(TypeError, match="load_settings\\(\\) got settings it does not have: MLOPSBOT_PORT, prot"):
        load_settings(prot=1, MLOPSBOT_PORT=2)


def test_every_problem_is_told_at_once_in_declaration_order_and_the_combination_only_after():
    assert refusal(storage_url="mysql://db", port=0, host="0.0.0.0", default_role="boss") == (
        "port: must be a whole number from 1 to 65535, not 0; "
        "storage_url: MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db; "
        "default_role: unknown role 'boss': use one of viewer, operator, approver, admin")


def test_secrets_are_never_shown(monkeypatch):
    secret = "hunter2-hunter2"
    monkeypatch.setenv("MLOPSBOT_API_TOKEN", secret)
    monkeypatch.setenv("MLOPSBOT_WEBHOOK_KEY", secret)
    monkeypatch.setenv("MLOPSBOT_AUDIT_KEY", secret)
    problem = refusal(app_password=5)
    assert problem.startswith("app_password: must be text; MLOPSBOT_API_TOKEN must be at least 32 characters")
    assert secret not in problem and "5" not in problem.split(";")[0]
    settings = load_settings(**{**APP, "app_password": secret}, api_token="t" * 32 + secret,
                             webhook_key="w" * 32 + "x", audit_key="a" * 32 + secret,
                             applicationinsights_connection_string="InstrumentationKey=" + secret)
    assert secret not in repr(settings) and "w" * 32 not in repr(settings)
    assert "app_id='11111111-2222-3333-4444-555555555555'" in repr(settings)


def test_the_dotenv_file_is_read_as_python_dotenv_read_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FROM_ENV", "env")
    (tmp_path / ".env").write_text(
        "\ufeff# a comment\n"
        "export MLOPSBOT_PORT=1234 # the port\n"
        "MLOPSBOT_LOG_LEVEL='DEBUG # kept'\n"
        'MLOPSBOT_APPROVAL_CHANNEL="19:a\\tb\\"c"\n'
        "mlopsbot_instance_id = bot-${MLOPSBOT_PORT}-${FROM_ENV}-${UNSET:-x}\n"
        "MLOPSBOT_DEFAULT_ROLE\n"                          # no `=`: sets nothing
        "this line is not a setting\n"
        "MLOPSBOT_MANAGED_IDENTITY_CLIENT_ID=a#b\r\n"
        'MLOPSBOT_POLICY_FILE= # empty\n'
        "MLOPSBOT_PUBLIC_URL=\"https://bot.example.com\n\"\n", encoding="utf-8")
    monkeypatch.setenv("MLOPSBOT_PUBLIC_URL", "https://env.example.com")      # the environment wins over .env
    settings = load_settings()
    assert (settings.port, settings.log_level, settings.approval_channel, settings.instance_id,
            settings.default_role, settings.managed_identity_client_id, settings.policy_file, settings.public_url) == (
        1234, "DEBUG # kept", '19:a\tb"c', "bot-1234-env-x", "", "a#b", "", "https://env.example.com")


def test_the_environment_wins_over_dotenv_whichever_alias_each_uses(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("MicrosoftAppId=from-file\nMLOPSBOT_HOST=0.0.0.0\n")
    monkeypatch.setenv("MICROSOFT_APP_ID", "from-env")
    assert load_settings(app_password="p", allowed_tenants=["*"]).app_id == "from-env"


def test_a_dotenv_file_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / ".env").write_bytes(b"MLOPSBOT_LOG_LEVEL=\xff\n")
    assert refusal().startswith("cannot read .env: 'utf-8' codec can't decode byte 0xff")


def test_every_setting_is_declared_once_with_its_environment_names():
    names = environment_names()
    assert list(names) == [f for f in Settings.__dataclass_fields__]
    assert names["app_id"] == ("MicrosoftAppId", "MICROSOFT_APP_ID")
    assert names["port"] == ("MLOPSBOT_PORT",)
    assert all(aliases and (aliases[0].startswith("MLOPSBOT_") or aliases[0].startswith(("Microsoft", "APPLICATION")))
               for aliases in names.values())
    assert len({aliases[0].lower() for aliases in names.values()}) == len(names)
