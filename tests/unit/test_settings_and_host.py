"""Settings and the host without a server: validation, refusals, the terminal chat, the manifest
command (the HTTP health checks are tests/test_settings_and_host.py).
"""

from __future__ import annotations

import io
import json

import pytest

from bot.cli import main
from bot.settings import SettingsError, load_settings
from commands.base.context import Role, User


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


def test_serve_builds_the_app_with_the_collector_paused_and_serves_with_it_running(settings, monkeypatch):
    import gc

    from aiohttp import web

    import bot.app
    seen: dict[str, bool] = {}
    real_create_app = bot.app.create_app

    def create_app(*args, **kwargs):
        seen["building"] = gc.isenabled()
        return real_create_app(*args, **kwargs)

    monkeypatch.setattr(bot.app, "create_app", create_app)
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: seen.setdefault("serving", gc.isenabled()))
    assert gc.isenabled()
    assert main(["serve", "--data-dir", str(settings.data_dir)]) == 0
    assert seen == {"building": False, "serving": True}
    assert gc.isenabled()


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
    from adapters.azureml.workspace import AzureMLService
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
    assert "Terry asked for #1 (traffic on fraud-api in ml-prod)" in text  # sentences since issue #19 item 8


@pytest.mark.parametrize("overrides,refusal", [
    ({"host": "0.0.0.0", "backend": "local"},
     "MicrosoftAppId is required: without it the bot cannot verify who is calling. An empty app id is only "
     "allowed with MLOPSBOT_BACKEND=local on a loopback host (127.0.0.1, ::1, localhost); this configuration "
     "has backend=local and host=0.0.0.0."),
    ({"app_id": APP["app_id"], "host": "0.0.0.0"}, "MicrosoftAppPassword is required with MicrosoftAppId (or set MicrosoftAppType=UserAssignedMSI)."),
    ({**APP, "app_type": "UserAssignedMSI"}, "MicrosoftAppTenantId is required with MicrosoftAppType=UserAssignedMSI."),
    ({**APP},
     "MLOPSBOT_ALLOWED_TENANTS is required for a multi-tenant app (MicrosoftAppType=MultiTenant with no "
     "MicrosoftAppTenantId): list the Entra tenant ids whose people may use the bot, comma-separated, or set it "
     "to * to let every tenant in (anyone who installs the app could then read your workspaces as a Viewer)."),
    ({**APP, "allowed_tenants": ["tenant-a", "*"]},
     "MLOPSBOT_ALLOWED_TENANTS is either * (every tenant) or a list of tenant ids, not both."),
    ({**APP, "allowed_tenants": ["*"], "backend": "azure"},
     'MLOPSBOT_BACKEND=azure needs MLOPSBOT_AZURE_WORKSPACES, e.g. '
     '[{"name":"ml-prod","subscription_id":"...","resource_group":"...","environment":"prod"}]'),
    ({**APP, "allowed_tenants": ["*"], "backend": "azure",
      "azure_workspaces": [{"name": "ml", "subscription_id": "s", "resource_group": "a"},
                           {"name": "ml", "subscription_id": "s", "resource_group": "b"}]},
     "MLOPSBOT_AZURE_WORKSPACES names must be unique."),
])
def test_an_inconsistent_configuration_is_refused_with_exactly_its_reason(overrides, refusal):
    """A model-level refusal has no field to name: the message follows the prefix directly."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    assert str(refused.value) == "The bot's configuration is not usable: " + refusal


def test_every_bad_field_is_named_in_one_refusal():
    with pytest.raises(SettingsError) as refused:
        load_settings(port=0, storage_url="mysql://db")
    assert str(refused.value) == (
        "The bot's configuration is not usable: port: must be a whole number from 1 to 65535, not 0; storage_url: "
        "MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db")


@pytest.mark.parametrize("host,development", [("localhost", True), ("::1", True), ("127.0.0.2", True),
                                              ("0.0.0.0", False), ("bot.example", False)])
def test_only_a_loopback_host_runs_without_an_app_id(host, development):
    if development:
        assert load_settings(host=host).development is True
    else:
        with pytest.raises(SettingsError, match="MicrosoftAppId is required"):
            load_settings(host=host)


def test_a_managed_identity_needs_no_password_and_a_listed_tenant_needs_no_list():
    msi = load_settings(app_id=APP["app_id"], host="0.0.0.0", app_type="UserAssignedMSI", app_tenant_id="tenant-home")
    assert (msi.app_password, msi.tenant_allow_list) == ("", ["tenant-home"])
    multi = load_settings(**APP, app_tenant_id="tenant-home")           # MultiTenant, its home tenant named
    assert multi.tenant_allow_list == ["tenant-home"]


def test_the_allow_list_decides_over_the_home_tenant_and_development_lets_every_tenant_in():
    listed = load_settings(**APP, app_type="SingleTenant", app_tenant_id="tenant-home",
                           allowed_tenants=["tenant-a", "tenant-b"])
    assert listed.tenant_allow_list == ["tenant-a", "tenant-b"]         # not the home tenant as well
    assert load_settings(app_tenant_id="tenant-home").tenant_allow_list == []     # no app id: the playground
    assert load_settings(allowed_tenants=["tenant-a"]).tenant_allow_list == ["tenant-a"]


def test_allowed_tenants_from_the_environment_skip_empty_entries(monkeypatch):
    monkeypatch.setenv("MLOPSBOT_ALLOWED_TENANTS", " tenant-a ,, ,tenant-b,")
    assert load_settings(**APP).tenant_allow_list == ["tenant-a", "tenant-b"]
    monkeypatch.setenv("MLOPSBOT_ALLOWED_TENANTS", "*")
    assert load_settings(**APP).tenant_allow_list == []
    monkeypatch.setenv("MLOPSBOT_ALLOWED_TENANTS", " , ")
    with pytest.raises(SettingsError, match="MLOPSBOT_ALLOWED_TENANTS is required for a multi-tenant app"):
        load_settings(**APP)


def test_every_role_list_is_read_and_admin_wins_over_a_lesser_role():
    book = load_settings(**APP, allowed_tenants=["*"], operators=["aad-1", "aad-2"], approvers=["aad-2", "aad-3"],
                         admins=["aad-3"]).role_book()
    assert book.assignments == {"aad-1": Role.OPERATOR, "aad-2": Role.APPROVER, "aad-3": Role.ADMIN}
    assert (book.default, book.open_until_assigned) == (Role.VIEWER, False)
    assert load_settings(default_role="approver").role_book().open_until_assigned is False
    assert load_settings().role_book().open_until_assigned is True


def test_the_logged_summary_is_exactly_the_harmless_settings(tmp_path):
    summary = load_settings(**APP, allowed_tenants=["*"], port=8080, data_dir=tmp_path,
                            storage_url="postgresql://bot:hunter2@db/bot").public_summary()
    assert summary == {"app_id": APP["app_id"], "backend": "local", "host": "0.0.0.0", "port": 8080,
                       "storage": "postgresql://bot:***@db/bot",
                       "workspaces": [f"local ({tmp_path / 'workspace.db'})"]}
    assert load_settings().public_summary()["app_id"] == "(none: development mode)"


def test_a_field_deep_inside_a_setting_is_named_by_its_path():
    with pytest.raises(SettingsError) as refused:
        load_settings(**APP, allowed_tenants=["*"], backend="azure",
                      azure_workspaces=[{"name": "ml", "subscription_id": "s", "resource_group": "rg"},
                                        {"subscription_id": "s", "resource_group": "rg"}])
    assert str(refused.value) == "The bot's configuration is not usable: azure_workspaces.1.name: field required"


def test_health_thresholds_come_from_both_settings():
    from commands.base.context import HealthThresholds
    assert load_settings(health_p99_ms=250, health_5xx_percent=2.5).health_thresholds() == HealthThresholds(
        p99_ms=250, error_percent=2.5)
