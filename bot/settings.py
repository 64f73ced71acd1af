"""All configuration, read once from the environment (and an optional .env file), failing fast.

Names follow Azure Bot Service (`MicrosoftAppId`, `MicrosoftAppPassword`, `MicrosoftAppType`,
`MicrosoftAppTenantId`); everything of our own starts with `MLOPSBOT_`. No other module reads
`os.environ`.

The one relaxed rule: an empty Microsoft App ID is accepted only for the local backend on a
loopback address (the Agents Playground and `mlops-bot chat`). Anything else refuses to start and
says what to set.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_plus

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from commands.base.context import HealthThresholds, Role, RoleBook
from commands.changes.policy import Policy, load_policy


# The Teams and Bot Framework connector hosts of the public cloud and GCC (sovereign clouds:
# smba.infra.gov.teams.microsoft.us for GCC High, smba.infra.dod.teams.microsoft.us for DoD).
DEFAULT_SERVICE_URL_HOSTS = ("smba.trafficmanager.net", "smba.infra.gcc.teams.microsoft.com", "*.botframework.com")


class SettingsError(Exception):
    """The configuration is unusable; the message says what to set."""


class AzureWorkspace(BaseModel):
    """One Azure ML workspace the bot may operate."""

    name: str
    subscription_id: str
    resource_group: str
    environment: str = "prod"
    metrics_endpoint: str = ""       # regional Azure Monitor endpoint, e.g. https://westeurope.metrics.monitor.azure.com
    tenant_id: str = ""              # Entra tenant for studio links (`tid`); default MicrosoftAppTenantId


def _list(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Bot Framework identity (Azure Bot Service names)
    app_id: str = Field("", validation_alias=AliasChoices("MicrosoftAppId", "MICROSOFT_APP_ID"))
    app_password: str = Field("", validation_alias=AliasChoices("MicrosoftAppPassword", "MICROSOFT_APP_PASSWORD"),
                              repr=False)
    app_type: Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"] = Field(
        "MultiTenant", validation_alias=AliasChoices("MicrosoftAppType", "MICROSOFT_APP_TYPE"))
    app_tenant_id: str = Field("", validation_alias=AliasChoices("MicrosoftAppTenantId", "MICROSOFT_APP_TENANT_ID"))

    # Host
    host: str = Field("127.0.0.1", validation_alias="MLOPSBOT_HOST")
    port: int = Field(3978, ge=1, le=65535, validation_alias="MLOPSBOT_PORT")
    data_dir: Path = Field(Path("data"), validation_alias="MLOPSBOT_DATA_DIR")
    storage_url: str = Field("", validation_alias="MLOPSBOT_STORAGE_URL",
                             description="sqlite:///path or postgresql://...; default: SQLite in the data dir")
    log_level: str = Field("INFO", validation_alias="MLOPSBOT_LOG_LEVEL")
    instance_id: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9._:-]*$", validation_alias="MLOPSBOT_INSTANCE_ID",
                             description="this replica's name, the same after a restart (default: the host name); "
                                         "a restarted bot takes back at once what its earlier run held")

    # Backend
    backend: Literal["local", "azure"] = Field("local", validation_alias="MLOPSBOT_BACKEND")
    azure_workspaces: Annotated[list[AzureWorkspace], NoDecode] = Field(
        default_factory=list, validation_alias="MLOPSBOT_AZURE_WORKSPACES")
    managed_identity_client_id: str = Field("", validation_alias="MLOPSBOT_MANAGED_IDENTITY_CLIENT_ID")
    azure_timeout: float = Field(30.0, gt=0, validation_alias="MLOPSBOT_AZURE_TIMEOUT")
    azure_max_concurrency: int = Field(8, ge=1, le=64, validation_alias="MLOPSBOT_AZURE_MAX_CONCURRENCY")
    demo_size: int | None = Field(None, ge=3, le=10_000, validation_alias="MLOPSBOT_DEMO_SIZE",
                                  description="online endpoints in the local demo when it is seeded (a new data "
                                              "dir or --reset-demo); default: the demo's story alone (3)")
    # Telemetry (off when empty): traces and metrics to Application Insights through the Azure Monitor distro
    applicationinsights_connection_string: str = Field("", validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING",
                                                       repr=False)
    read_cache_seconds: float = Field(5.0, ge=0, le=300, validation_alias="MLOPSBOT_READ_CACHE_SECONDS",
                                      description="identical reads are shared this long (0: only reads in flight)")

    # Who may do what
    allowed_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                            validation_alias="MLOPSBOT_ALLOWED_TENANTS")
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MLOPSBOT_ADMINS")
    approvers: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MLOPSBOT_APPROVERS")
    operators: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="MLOPSBOT_OPERATORS")
    default_role: str = Field("", validation_alias="MLOPSBOT_DEFAULT_ROLE",
                              description="role of everyone not listed; default viewer (admin in development mode)")

    # Approvals and the pipeline API
    policy_file: str = Field("", validation_alias="MLOPSBOT_POLICY_FILE")
    approval_channel: str = Field("", validation_alias="MLOPSBOT_APPROVAL_CHANNEL",
                                  description="conversation id where requests from personal chats are also posted")
    api_token: str = Field("", validation_alias="MLOPSBOT_API_TOKEN", repr=False)
    # The audit chain's HMAC key: kept outside the database (e.g. a Key Vault reference), so that
    # who can write the database cannot re-hash a rewritten trail. Required outside development.
    audit_key: str = Field("", validation_alias="MLOPSBOT_AUDIT_KEY", repr=False)
    # The bot's own public address (https://bot.example.com): where `audit export` links point
    public_url: str = Field("", validation_alias="MLOPSBOT_PUBLIC_URL",
                            description="the bot's public https address, for signed audit export links")
    # When an endpoint's health turns red (its card colours and summarises by these figures)
    health_p99_ms: float = Field(1000.0, gt=0, validation_alias="MLOPSBOT_HEALTH_P99_MS",
                                 description="p99 latency above this many ms is unhealthy")
    health_5xx_percent: float = Field(1.0, ge=0, le=100, validation_alias="MLOPSBOT_HEALTH_5XX_PERCENT",
                                      description="5xx answers above this percent of requests is unhealthy")
    # Plain-language questions and requests (commands/language): on unless switched off
    plain_language: bool = Field(True, validation_alias="MLOPSBOT_PLAIN_LANGUAGE",
                                 description="understand text that is not a command (changes are only proposed)")
    # Event Grid and Azure Monitor webhooks (bot/ingress.py): the shared key in ?code= or x-functions-key
    webhook_key: str = Field("", validation_alias="MLOPSBOT_WEBHOOK_KEY", repr=False)
    watch_minutes: int = Field(15, ge=1, le=24 * 60, validation_alias="MLOPSBOT_WATCH_MINUTES",
                               description="minutes the bot watches an endpoint after a traffic change")
    # The outbox (bot/outbox.py): how long a message Teams keeps refusing is retried, how long one send may take
    outbox_deadline_hours: float = Field(24.0, gt=0, le=24 * 14, validation_alias="MLOPSBOT_OUTBOX_DEADLINE_HOURS",
                                         description="hours a message is retried through transient failures")
    outbox_send_timeout: float = Field(10.0, gt=0, le=120, validation_alias="MLOPSBOT_OUTBOX_SEND_TIMEOUT",
                                       description="seconds one send to Teams may take before it is retried")
    change_requests_per_minute: int = Field(
        20, ge=0, le=10_000, validation_alias="MLOPSBOT_CHANGE_REQUESTS_PER_MINUTE",
        description="changes (requests opened and changes run directly) one person or pipeline requester may ask "
                    "for in any minute, counted in storage for every replica; 0 turns the limit off")
    pipeline_requests_per_minute: int = Field(
        60, ge=0, le=100_000, validation_alias="MLOPSBOT_PIPELINE_REQUESTS_PER_MINUTE",
        description="change requests the pipeline API takes in any minute from all requesters together; "
                    "0 turns the limit off")

    # Where replies may go (the activity's serviceUrl), when an app id is set
    service_url_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SERVICE_URL_HOSTS), validation_alias="MLOPSBOT_SERVICE_URL_HOSTS",
        description="hosts an activity's serviceUrl may name (https only); *.suffix matches subdomains")

    _split = field_validator("allowed_tenants", "admins", "approvers", "operators", "service_url_hosts",
                             mode="before")(_list)

    @field_validator("service_url_hosts")
    @classmethod
    def _service_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            scheme, sep, host = entry.lower().rpartition("://")
            if sep and not (scheme == "http" and _is_loopback(host)):
                raise ValueError(f"MLOPSBOT_SERVICE_URL_HOSTS lists host names (e.g. smba.trafficmanager.net, "
                                 f"*.botframework.com), not '{entry}'; only a loopback host may be given as "
                                 "http://127.0.0.1 (a local stand-in for the connector)")
            if not host or "/" in host or host.count("*") > (1 if host.startswith("*.") else 0):
                raise ValueError(f"MLOPSBOT_SERVICE_URL_HOSTS: '{entry}' is not a host name or *.domain")
        return [v.lower() for v in value]

    @field_validator("azure_workspaces", mode="before")
    @classmethod
    def _workspaces(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"MLOPSBOT_AZURE_WORKSPACES must be a JSON list of objects with name, "
                                 f"subscription_id, resource_group, environment ({error})") from None
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value and not value.lower().startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db")
        return value

    @field_validator("default_role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value:
            Role.parse(value)
        return value

    @field_validator("policy_file")
    @classmethod
    def _policy_file(cls, value: str) -> str:
        if value:
            load_policy(value)           # a bad file refuses to start, naming the line
        return value

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("MLOPSBOT_API_TOKEN must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("audit_key")
    @classmethod
    def _audit_key(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("MLOPSBOT_AUDIT_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`, "
                             "kept in Key Vault)")
        return value

    @field_validator("webhook_key")
    @classmethod
    def _webhook_key(cls, value: str) -> str:
        if value and (len(value) < 32 or not value.isascii() or any(c in value for c in "&#?/ %+")):
            raise ValueError("MLOPSBOT_WEBHOOK_KEY must be at least 32 URL-safe ASCII characters "
                             "(it travels in webhook URLs; e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("applicationinsights_connection_string")
    @classmethod
    def _telemetry(cls, value: str) -> str:
        import importlib.util
        if value and importlib.util.find_spec("azure.monitor.opentelemetry") is None:
            raise ValueError("APPLICATIONINSIGHTS_CONNECTION_STRING is set but the telemetry extra is not installed "
                             "(pip install 'mlops-teams-bot[telemetry]')")
        if value and "InstrumentationKey=" not in value:
            raise ValueError("APPLICATIONINSIGHTS_CONNECTION_STRING must be an Application Insights connection "
                             "string (InstrumentationKey=...;IngestionEndpoint=...)")
        return value

    def policy(self) -> Policy:
        return load_policy(self.policy_file)

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        problem = self._inconsistency()
        if problem is not None:
            raise ValueError(problem)
        return self

    def _inconsistency(self) -> str | None:
        """What makes the settings unusable together, or None. Undecorated (unlike the validator
        that calls it) so that mutation testing reaches it: mutmut skips decorated functions."""
        if not self.app_id and not self.development:
            return (
                "MicrosoftAppId is required: without it the bot cannot verify who is calling. An empty app id "
                "is only allowed with MLOPSBOT_BACKEND=local on a loopback host (127.0.0.1, ::1, localhost); "
                f"this configuration has backend={self.backend} and host={self.host}.")
        if self.app_id and self.app_type != "UserAssignedMSI" and not self.app_password:
            return ("MicrosoftAppPassword is required with MicrosoftAppId (or set "
                    "MicrosoftAppType=UserAssignedMSI).")
        if self.app_type in ("SingleTenant", "UserAssignedMSI") and self.app_id and not self.app_tenant_id:
            return f"MicrosoftAppTenantId is required with MicrosoftAppType={self.app_type}."
        if self.app_id and not self.allowed_tenants and not self.app_tenant_id:
            return (
                "MLOPSBOT_ALLOWED_TENANTS is required for a multi-tenant app (MicrosoftAppType=MultiTenant with no "
                "MicrosoftAppTenantId): list the Entra tenant ids whose people may use the bot, comma-separated, "
                "or set it to * to let every tenant in (anyone who installs the app could then read your "
                "workspaces as a Viewer).")
        if "*" in self.allowed_tenants and len(self.allowed_tenants) > 1:
            return "MLOPSBOT_ALLOWED_TENANTS is either * (every tenant) or a list of tenant ids, not both."
        if self.backend == "azure" and not self.azure_workspaces:
            return ('MLOPSBOT_BACKEND=azure needs MLOPSBOT_AZURE_WORKSPACES, e.g. '
                    '[{"name":"ml-prod","subscription_id":"...","resource_group":"...","environment":"prod"}]')
        names = [w.name for w in self.azure_workspaces]
        if len(set(names)) != len(names):
            return "MLOPSBOT_AZURE_WORKSPACES names must be unique."
        if not self.audit_key and not self.development:
            return ("MLOPSBOT_AUDIT_KEY is required outside development mode: the secret that keys the audit "
                    "chain, at least 32 characters (e.g. `openssl rand -hex 32`), kept outside the database "
                    "(a Key Vault secret, as an App Service or Container Apps Key Vault reference). Without it "
                    "anyone who can write the database could rewrite the audit trail unnoticed. Keep the same "
                    "key for every replica and across restarts: records keyed with another key fail "
                    "`audit verify`.")
        return None

    @field_validator("public_url")
    @classmethod
    def _public_url_is_https(cls, value: str) -> str:
        value = value.strip()
        if value and not (re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", value)
                          or re.fullmatch(r"http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?/?", value)):
            raise ValueError("MLOPSBOT_PUBLIC_URL must be the bot's https:// address, e.g. https://bot.example.com "
                             "(http only for localhost)")
        return value

    def export_base_url(self) -> str:
        """Where signed export links point: MLOPSBOT_PUBLIC_URL, or this loopback host in development
        ("" otherwise: `audit export` then says what to set)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}" if self.development else ""

    def audit_key_bytes(self) -> bytes | None:
        """The audit chain key for the storage; None in development without one (the public key)."""
        return self.audit_key.encode("utf-8") if self.audit_key else None

    @property
    def development(self) -> bool:
        """No app id, local backend, loopback only: the Agents Playground and local chat."""
        return not self.app_id and self.backend == "local" and _is_loopback(self.host)

    @property
    def tenant_allow_list(self) -> list[str]:
        """The tenants the bot answers; empty means every tenant (MLOPSBOT_ALLOWED_TENANTS=*, or
        development mode). With an app id and no list, the app's own tenant (MicrosoftAppTenantId)."""
        return self._tenants_answered()

    def _tenants_answered(self) -> list[str]:
        # undecorated, for mutation testing (see `_inconsistency`)
        if "*" in self.allowed_tenants:
            return []
        if not self.allowed_tenants and self.app_id and self.app_tenant_id:
            return [self.app_tenant_id]
        return list(self.allowed_tenants)

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or f"sqlite:///{(self.data_dir / 'bot.db').resolve()}"

    @property
    def effective_instance_id(self) -> str:
        """MLOPSBOT_INSTANCE_ID, or the host name (unique per replica in Kubernetes and Docker)."""
        return self.instance_id or re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:100] or "bot"

    def health_thresholds(self) -> HealthThresholds:
        return HealthThresholds(p99_ms=self.health_p99_ms, error_percent=self.health_5xx_percent)

    def role_book(self) -> RoleBook:
        """Development mode without MLOPSBOT_DEFAULT_ROLE: everyone is Admin until a role is assigned."""
        default = Role.parse(self.default_role) if self.default_role else Role.VIEWER
        assignments: dict[str, Role] = {}
        for role, ids in ((Role.OPERATOR, self.operators), (Role.APPROVER, self.approvers),
                          (Role.ADMIN, self.admins)):
            assignments.update({i: role for i in ids})
        return RoleBook(assignments, default, open_until_assigned=self.development and not self.default_role)

    def public_summary(self) -> dict[str, object]:
        """What may be logged: never a password or a secret."""
        return {"app_id": self.app_id or "(none: development mode)", "backend": self.backend,
                "host": self.host, "port": self.port, "storage": _redact(self.effective_storage_url),
                "workspaces": [w.name for w in self.azure_workspaces] or [f"local ({self.data_dir / 'workspace.db'})"]}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SECRET_PARAMETER = re.compile(r"pass|secret|key|token|credential|auth", re.IGNORECASE)


def _redact(url: str) -> str:
    """postgresql://user:secret@host/db?sslpassword=x -> postgresql://user:***@host/db?sslpassword=***

    Any query parameter named like a password, secret, key, token or credential is hidden too
    (libpq reads `password`, `sslpassword`, `sslkey`... from the query as well as from user:pass@)."""
    scheme, sep, rest = url.partition("://")
    rest, qsep, query = rest.partition("?")
    if "@" in rest and ":" in rest.rsplit("@", 1)[0]:
        user = rest.rsplit("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@" + rest.rsplit("@", 1)[1]
    if qsep:
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
    return scheme + sep + rest + qsep + query


def _redact_parameter(part: str) -> str:
    name, equals, _ = part.partition("=")
    return f"{name}=***" if equals and _SECRET_PARAMETER.search(unquote_plus(name)) else part


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise SettingsError with a readable message when they are unusable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise SettingsError(f"The bot's configuration is not usable: {problems}") from None


def _problem(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
