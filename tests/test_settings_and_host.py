"""Settings fail fast with a message that says what to set; the host answers health probes."""

from __future__ import annotations

import io
import json

import pytest

from bot.cli import main
from bot.settings import SettingsError, load_settings
from commands.context import Role, User


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppType", "MicrosoftAppTenantId",
                 "MLOPSBOT_BACKEND", "MLOPSBOT_HOST", "MLOPSBOT_AZURE_WORKSPACES", "MLOPSBOT_DEFAULT_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_development_mode_needs_loopback_and_the_local_backend():
    settings = load_settings()
    assert (settings.development, settings.host, settings.port, settings.backend) == (True, "127.0.0.1", 3978, "local")
    book = settings.role_book()
    someone = User(id="00000000-0000-0000-0000-000000000001", name="Someone")
    assert book.role_of(someone) is Role.ADMIN                       # nobody has a role yet: open
    assert book.role_of(someone, any_grant=True) is Role.VIEWER      # once anyone is granted one: closed


def test_development_mode_is_admin_only_while_no_role_is_assigned():
    someone = User(id="00000000-0000-0000-0000-000000000001", name="00000000-0000-0000-0000-00000000ad01")
    book = load_settings(admins="00000000-0000-0000-0000-00000000ad01").role_book()
    assert book.role_of(someone) is Role.VIEWER        # named like the admin's id, but is not the admin
    assert book.role_of(User(id="00000000-0000-0000-0000-00000000ad01", name="Ada")) is Role.ADMIN
    explicit = load_settings(default_role="operator").role_book()
    assert explicit.role_of(someone) is Role.OPERATOR


@pytest.mark.parametrize("overrides,needle", [
    ({"host": "0.0.0.0"}, "MicrosoftAppId is required"),
    ({"backend": "azure"}, "MicrosoftAppId is required"),
    ({"app_id": "11111111-2222-3333-4444-555555555555"}, "MicrosoftAppPassword is required"),
    ({"app_id": "x", "app_password": "y", "app_type": "SingleTenant"}, "MicrosoftAppTenantId is required"),
    ({"app_id": "x", "app_password": "y", "backend": "azure", "allowed_tenants": ["*"]},
     "MLOPSBOT_BACKEND=azure needs MLOPSBOT_AZURE_WORKSPACES"),
    ({"default_role": "boss"}, "unknown role 'boss'"),
    ({"storage_url": "mysql://db"}, "MLOPSBOT_STORAGE_URL must be"),
])
def test_unusable_settings_refuse_with_a_reason(overrides, needle):
    with pytest.raises(SettingsError) as error:
        load_settings(**overrides)
    assert needle in str(error.value)


APP = {"app_id": "11111111-2222-3333-4444-555555555555", "app_password": "p", "host": "0.0.0.0"}


def test_a_bot_with_an_app_id_answers_only_the_tenants_it_is_told():
    """An empty allow-list used to mean every tenant: anyone who installed the app (Viewer by
    default) could read the workspaces, requests and audit trail."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**APP)
    assert "MLOPSBOT_ALLOWED_TENANTS is required for a multi-tenant app" in str(refused.value)
    single = load_settings(**APP, app_type="SingleTenant", app_tenant_id="tenant-home")
    assert single.tenant_allow_list == ["tenant-home"]                 # the app's own tenant by default
    assert load_settings(**APP, allowed_tenants=["*"]).tenant_allow_list == []       # every tenant, said out loud
    with pytest.raises(SettingsError, match="either \\* \\(every tenant\\) or a list"):
        load_settings(**APP, allowed_tenants=["*", "tenant-a"])
    assert load_settings().tenant_allow_list == []                     # development mode: the playground's


def test_environment_names_follow_azure_bot_service(monkeypatch):
    monkeypatch.setenv("MicrosoftAppId", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("MicrosoftAppPassword", "s3cret-value")
    monkeypatch.setenv("MLOPSBOT_HOST", "0.0.0.0")
    monkeypatch.setenv("MLOPSBOT_ADMINS", "aad-1, aad-2")
    monkeypatch.setenv("MLOPSBOT_OPERATORS", "aad-3")
    monkeypatch.setenv("MLOPSBOT_ALLOWED_TENANTS", "tenant-a, tenant-b")
    settings = load_settings()
    assert settings.tenant_allow_list == ["tenant-a", "tenant-b"]
    assert settings.development is False
    book = settings.role_book()
    assert (book.assignments, book.default) == ({"aad-1": Role.ADMIN, "aad-2": Role.ADMIN, "aad-3": Role.OPERATOR},
                                                Role.VIEWER)
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in json.dumps(settings.public_summary())


def test_azure_workspaces_are_read_from_json(monkeypatch):
    monkeypatch.setenv("MLOPSBOT_AZURE_WORKSPACES", json.dumps([
        {"name": "ml-prod", "subscription_id": "sub", "resource_group": "rg", "environment": "prod"},
        {"name": "ml-dev", "subscription_id": "sub", "resource_group": "rg-dev", "environment": "dev"}]))
    settings = load_settings(app_id="a", app_password="p", backend="azure", host="0.0.0.0", allowed_tenants=["*"])
    assert [(w.name, w.environment) for w in settings.azure_workspaces] == [("ml-prod", "prod"), ("ml-dev", "dev")]


def test_storage_password_is_redacted_in_the_logged_summary():
    settings = load_settings(storage_url="postgresql://bot:hunter2@db:5432/bot")
    assert settings.public_summary()["storage"] == "postgresql://bot:***@db:5432/bot"


def test_serve_refuses_to_start_without_an_app_id_on_a_public_address(capsys):
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "MicrosoftAppId is required" in capsys.readouterr().err


async def test_healthz_and_readyz(aiohttp_client, settings):
    from bot.app import create_app
    client = await aiohttp_client(create_app(settings, reset_demo=True))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "storage": "ok", "workspaces": ["ml-prod"]})


async def test_readyz_is_503_when_storage_is_gone(aiohttp_client, settings):
    from bot.app import STORAGE, create_app
    app = create_app(settings, reset_demo=True)
    client = await aiohttp_client(app)
    await app[STORAGE].close()
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["status"] == "unavailable"


def test_terminal_chat_runs_the_same_commands(settings):
    import asyncio

    from bot.chat import run_chat
    out = io.StringIO()
    stdin = io.StringIO("models\nmodles\nquit\n")
    assert asyncio.run(run_chat(settings, user_name="Tess", reset_demo=True, stdin=stdin, out=out)) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "MLOps bot, workspace ml-prod (prod). Type `help`, or `quit` to leave."
    assert lines[1] == "bot> Registered models"
    assert "     fraud-model v4 Staging · Production: v3 · auc 0.953, precision 0.88, recall 0.79" in "\n".join(lines)
    assert lines[-1] == ("bot> I don't know the command 'modles'. Did you mean `models` or `model`? "
                         "Type `help` to see what I can do.")


def test_manifest_command_builds_a_package_from_the_registry(tmp_path, capsys):
    import zipfile
    out = tmp_path / "app.zip"
    assert main(["manifest", "--app-id", "11111111-2222-3333-4444-555555555555", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as package:
        manifest = json.loads(package.read("manifest.json"))
    titles = [c["title"] for c in manifest["bots"][0]["commandLists"][0]["commands"]]
    assert titles[:4] == ["models", "model", "endpoints", "endpoint"]
    assert main(["manifest", "--app-id", "not-a-guid", "--out", str(out)]) == 2


def test_azure_backend_builds_one_service_per_configured_workspace(tmp_path, monkeypatch):
    from adapters.azureml import AzureMLService
    from bot.app import HANDLER, POOLS, create_app
    monkeypatch.setenv("MLOPSBOT_AZURE_WORKSPACES", json.dumps([
        {"name": "ml-prod", "subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg",
         "environment": "prod", "metrics_endpoint": "https://westeurope.metrics.monitor.azure.com"},
        {"name": "ml-dev", "subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg-dev",
         "environment": "dev"}]))
    settings = load_settings(app_id="11111111-2222-3333-4444-555555555555", app_password="p", backend="azure",
                             host="0.0.0.0", data_dir=tmp_path / "data", managed_identity_client_id="mi-client",
                             allowed_tenants=["72f988bf-86f1-41af-91ab-2d7cd011db47"])
    app = create_app(settings)
    workspaces = list(app[HANDLER].workspaces)
    assert [(w.name, w.environment) for w in workspaces] == [("ml-prod", "prod"), ("ml-dev", "dev")]
    assert all(isinstance(w.service, AzureMLService) for w in workspaces)
    assert workspaces[0].service.metrics is not None and workspaces[1].service.metrics is None
    # each workspace calls Azure on threads of its own: one that hangs cannot starve the other
    assert workspaces[0]._pool is not workspaces[1]._pool
    assert {id(w._pool) for w in workspaces} <= {id(p) for p in app[POOLS]}


def test_terminal_chat_passes_the_same_gate_and_audit(tmp_path):
    """`mlops-bot chat` is no back door: a production change becomes an approval request, audited."""
    import asyncio
    from bot.chat import run_chat
    stdin = io.StringIO("traffic fraud-api blue=50 green=50\nendpoint fraud-api\naudit\nquit\n")
    out = io.StringIO()
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1")
    assert asyncio.run(run_chat(settings, user_name="Terry", reset_demo=True, stdin=stdin, out=out)) == 0
    text = out.getvalue()
    assert "bot> Approval request #1: Traffic on fraud-api: blue=90 green=10 → blue=50 green=50" in text
    assert "Traffic: blue=90 green=10" in text                                  # nothing changed yet
    assert "Terry requested traffic endpoint fraud-api in ml-prod (request #1)" in text
