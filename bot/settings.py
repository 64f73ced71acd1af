"""All configuration, read once from the environment (and an optional .env file), failing fast.

Names follow Azure Bot Service (`MicrosoftAppId`, `MicrosoftAppPassword`, `MicrosoftAppType`,
`MicrosoftAppTenantId`); everything of our own starts with `MLOPSBOT_`. No other module reads
`os.environ`.

The one relaxed rule: an empty Microsoft App ID is accepted only for the local backend on a
loopback address (the Agents Playground and `mlops-bot chat`). Anything else refuses to start and
says what to set.

Each setting is one line of `Settings`: its type, default, environment name(s), bounds and check.
`load_settings` reads it from (first found) the keyword given in code, the environment, a `.env`
file in the working directory, or the default. Environment names are matched ignoring case; the
type decides how the text is read (whole numbers, numbers, true/false, one of a few words, a path,
a comma-separated list, JSON for the workspaces). Every problem names the variable to fix and what
it accepts, and all of them are reported at once.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from functools import cache
from typing import Any, Callable, Literal, Mapping, get_args, get_origin, get_type_hints
from urllib.parse import unquote_plus

from commands.base.context import HealthThresholds, Role, RoleBook
from commands.changes.policy import Policy, load_policy


# The Teams and Bot Framework connector hosts of the public cloud and GCC (sovereign clouds:
# smba.infra.gov.teams.microsoft.us for GCC High, smba.infra.dod.teams.microsoft.us for DoD).
DEFAULT_SERVICE_URL_HOSTS = ("smba.trafficmanager.net", "smba.infra.gcc.teams.microsoft.com", "*.botframework.com")

ENV_FILE = ".env"

log = logging.getLogger(__name__)


class SettingsError(Exception):
    """The configuration is unusable; the message says what to set."""


@dataclass
class AzureWorkspace:
    """One Azure ML workspace the bot may operate."""

    name: str
    subscription_id: str
    resource_group: str
    environment: str = "prod"
    metrics_endpoint: str = ""       # regional Azure Monitor endpoint, e.g. https://westeurope.metrics.monitor.azure.com
    tenant_id: str = ""              # Entra tenant for studio links (`tid`); default MicrosoftAppTenantId


@dataclass(frozen=True)
class Declared:
    """How one setting is read: its environment names (the first is the one documented and named in
    messages), the bounds of a number, a check run on the converted value, and what it means."""

    env: tuple[str, ...]
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    check: Callable[[Any], Any] | None = None
    secret: bool = False             # never shown: not in repr(settings), not in a message
    description: str = ""


def setting(default: Any, *env: str, ge: float | None = None, gt: float | None = None, le: float | None = None,
            check: Callable[[Any], Any] | None = None, secret: bool = False, description: str = "") -> Any:
    """One line of `Settings`: the default, then the environment name(s), then how it is checked."""
    declared = Declared(env, ge, gt, le, check, secret, description)
    if isinstance(default, (list, tuple)):
        items = list(default)
        return field(default_factory=lambda: list(items), repr=not secret, metadata={"setting": declared})
    return field(default=default, repr=not secret, metadata={"setting": declared})


# ---------------------------------------------------------------- checks of single settings
# Each takes the converted value and returns it (perhaps normalised), or raises ValueError with the
# message. A message that starts with the variable's name is shown as it is; any other follows it.

def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _service_hosts(value: list[str]) -> list[str]:
    for entry in value:
        scheme, sep, host = entry.lower().rpartition("://")
        if sep and not (scheme == "http" and _is_loopback(host)):
            raise ValueError(f"MLOPSBOT_SERVICE_URL_HOSTS lists host names (e.g. smba.trafficmanager.net, "
                             f"*.botframework.com), not '{entry}'; only a loopback host may be given as "
                             "http://127.0.0.1 (a local stand-in for the connector)")
        if not host or "/" in host or host.count("*") > (1 if host.startswith("*.") else 0):
            raise ValueError(f"MLOPSBOT_SERVICE_URL_HOSTS: '{entry}' is not a host name or *.domain")
    return [v.lower() for v in value]


def _instance_id(value: str) -> str:
    if len(value) > 100 or not re.fullmatch(r"[A-Za-z0-9._:-]*", value):
        raise ValueError(f"must be at most 100 letters, digits, '.', '_', ':' or '-', not {_shown(value)}")
    return value


def _storage(value: str) -> str:
    if value and not value.lower().startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError("MLOPSBOT_STORAGE_URL must be sqlite:///absolute/path.db or postgresql://user@host/db")
    return value


def _role(value: str) -> str:
    if value:
        Role.parse(value)
    return value


def _policy_file(value: str) -> str:
    if value:
        load_policy(value)           # a bad file refuses to start, naming the line
    return value


def _token(value: str) -> str:
    if value and len(value) < 32:
        raise ValueError("MLOPSBOT_API_TOKEN must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    return value


def _audit_key(value: str) -> str:
    if value and len(value) < 32:
        raise ValueError("MLOPSBOT_AUDIT_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`, "
                         "kept in Key Vault)")
    return value


def _webhook_key(value: str) -> str:
    if value and (len(value) < 32 or not value.isascii() or any(c in value for c in "&#?/ %+")):
        raise ValueError("MLOPSBOT_WEBHOOK_KEY must be at least 32 URL-safe ASCII characters "
                         "(it travels in webhook URLs; e.g. `openssl rand -hex 32`)")
    return value


def _telemetry(value: str) -> str:
    import importlib.util
    if value and importlib.util.find_spec("azure.monitor.opentelemetry") is None:
        raise ValueError("APPLICATIONINSIGHTS_CONNECTION_STRING is set but the telemetry extra is not installed "
                         "(pip install 'mlops-teams-bot[telemetry]')")
    if value and "InstrumentationKey=" not in value:
        raise ValueError("APPLICATIONINSIGHTS_CONNECTION_STRING must be an Application Insights connection "
                         "string (InstrumentationKey=...;IngestionEndpoint=...)")
    return value


def _public_url(value: str) -> str:
    value = value.strip()
    if value and not (re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", value)
                      or re.fullmatch(r"http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?/?", value)):
        raise ValueError("MLOPSBOT_PUBLIC_URL must be the bot's https:// address, e.g. https://bot.example.com "
                         "(http only for localhost)")
    return value


# ---------------------------------------------------------------- the settings


@dataclass
class Settings:
    # Bot Framework identity (Azure Bot Service names)
    app_id: str = setting("", "MicrosoftAppId", "MICROSOFT_APP_ID")
    app_password: str = setting("", "MicrosoftAppPassword", "MICROSOFT_APP_PASSWORD", secret=True)
    app_type: Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"] = setting(
        "MultiTenant", "MicrosoftAppType", "MICROSOFT_APP_TYPE")
    app_tenant_id: str = setting("", "MicrosoftAppTenantId", "MICROSOFT_APP_TENANT_ID")

    # Host
    host: str = setting("127.0.0.1", "MLOPSBOT_HOST")
    port: int = setting(3978, "MLOPSBOT_PORT", ge=1, le=65535)
    data_dir: Path = setting(Path("data"), "MLOPSBOT_DATA_DIR")
    storage_url: str = setting("", "MLOPSBOT_STORAGE_URL", check=_storage,
                               description="sqlite:///path or postgresql://...; default: SQLite in the data dir")
    log_level: str = setting("INFO", "MLOPSBOT_LOG_LEVEL")
    instance_id: str = setting("", "MLOPSBOT_INSTANCE_ID", check=_instance_id,
                               description="this replica's name, the same after a restart (default: the host "
                                           "name); a restarted bot takes back at once what its earlier run held")

    # Backend
    backend: Literal["local", "azure"] = setting("local", "MLOPSBOT_BACKEND")
    azure_workspaces: list[AzureWorkspace] = setting([], "MLOPSBOT_AZURE_WORKSPACES",
                                                     description="a JSON list of workspaces, the first the default")
    managed_identity_client_id: str = setting("", "MLOPSBOT_MANAGED_IDENTITY_CLIENT_ID")
    azure_timeout: float = setting(30.0, "MLOPSBOT_AZURE_TIMEOUT", gt=0)
    azure_max_concurrency: int = setting(8, "MLOPSBOT_AZURE_MAX_CONCURRENCY", ge=1, le=64)
    demo_size: int | None = setting(None, "MLOPSBOT_DEMO_SIZE", ge=3, le=10_000,
                                    description="online endpoints in the local demo when it is seeded (a new data "
                                                "dir or --reset-demo); default: the demo's story alone (3)")
    # Telemetry (off when empty): traces and metrics to Application Insights through the Azure Monitor distro
    applicationinsights_connection_string: str = setting("", "APPLICATIONINSIGHTS_CONNECTION_STRING",
                                                         check=_telemetry, secret=True)
    read_cache_seconds: float = setting(5.0, "MLOPSBOT_READ_CACHE_SECONDS", ge=0, le=300,
                                        description="identical reads are shared this long (0: only reads in flight)")

    # Who may do what
    allowed_tenants: list[str] = setting([], "MLOPSBOT_ALLOWED_TENANTS")
    admins: list[str] = setting([], "MLOPSBOT_ADMINS")
    approvers: list[str] = setting([], "MLOPSBOT_APPROVERS")
    operators: list[str] = setting([], "MLOPSBOT_OPERATORS")
    default_role: str = setting("", "MLOPSBOT_DEFAULT_ROLE", check=_role,
                                description="role of everyone not listed; default viewer (admin in development mode)")

    # Approvals and the pipeline API
    policy_file: str = setting("", "MLOPSBOT_POLICY_FILE", check=_policy_file)
    approval_channel: str = setting("", "MLOPSBOT_APPROVAL_CHANNEL",
                                    description="conversation id where requests from personal chats are also posted")
    api_token: str = setting("", "MLOPSBOT_API_TOKEN", check=_token, secret=True)
    # The audit chain's HMAC key: kept outside the database (e.g. a Key Vault reference), so that
    # who can write the database cannot re-hash a rewritten trail. Required outside development.
    audit_key: str = setting("", "MLOPSBOT_AUDIT_KEY", check=_audit_key, secret=True)
    # The bot's own public address (https://bot.example.com): where `audit export` links point
    public_url: str = setting("", "MLOPSBOT_PUBLIC_URL", check=_public_url,
                              description="the bot's public https address, for signed audit export links")
    # When an endpoint's health turns red (its card colours and summarises by these figures)
    health_p99_ms: float = setting(1000.0, "MLOPSBOT_HEALTH_P99_MS", gt=0,
                                   description="p99 latency above this many ms is unhealthy")
    health_5xx_percent: float = setting(1.0, "MLOPSBOT_HEALTH_5XX_PERCENT", ge=0, le=100,
                                        description="5xx answers above this percent of requests is unhealthy")
    # Plain-language questions and requests (commands/language): on unless switched off
    plain_language: bool = setting(True, "MLOPSBOT_PLAIN_LANGUAGE",
                                   description="understand text that is not a command (changes are only proposed)")
    # Event Grid and Azure Monitor webhooks (bot/ingress.py): the shared key in ?code= or x-functions-key
    webhook_key: str = setting("", "MLOPSBOT_WEBHOOK_KEY", check=_webhook_key, secret=True)
    watch_minutes: int = setting(15, "MLOPSBOT_WATCH_MINUTES", ge=1, le=24 * 60,
                                 description="minutes the bot watches an endpoint after a traffic change")
    # The outbox (bot/outbox.py): how long a message Teams keeps refusing is retried, how long one send may take
    outbox_deadline_hours: float = setting(24.0, "MLOPSBOT_OUTBOX_DEADLINE_HOURS", gt=0, le=24 * 14,
                                           description="hours a message is retried through transient failures")
    outbox_send_timeout: float = setting(10.0, "MLOPSBOT_OUTBOX_SEND_TIMEOUT", gt=0, le=120,
                                         description="seconds one send to Teams may take before it is retried")
    change_requests_per_minute: int = setting(
        20, "MLOPSBOT_CHANGE_REQUESTS_PER_MINUTE", ge=0, le=10_000,
        description="changes (requests opened and changes run directly) one person or pipeline requester may ask "
                    "for in any minute, counted in storage for every replica; 0 turns the limit off")
    pipeline_requests_per_minute: int = setting(
        60, "MLOPSBOT_PIPELINE_REQUESTS_PER_MINUTE", ge=0, le=100_000,
        description="change requests the pipeline API takes in any minute from all requesters together; "
                    "0 turns the limit off")

    # Where replies may go (the activity's serviceUrl), when an app id is set
    service_url_hosts: list[str] = setting(
        DEFAULT_SERVICE_URL_HOSTS, "MLOPSBOT_SERVICE_URL_HOSTS", check=_service_hosts,
        description="hosts an activity's serviceUrl may name (https only); *.suffix matches subdomains")

    def policy(self) -> Policy:
        return load_policy(self.policy_file)

    def _inconsistency(self) -> str | None:
        """What makes the settings unusable together, or None (checked once every setting is valid)."""
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
        # undecorated, for mutation testing (mutmut skips decorated functions)
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


# ---------------------------------------------------------------- reading them


def environment_names() -> dict[str, tuple[str, ...]]:
    """Each setting's environment names, the documented one first (the docs test lists them)."""
    return {f.name: f.metadata["setting"].env for f in fields(Settings)}


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise SettingsError with a readable message when they are unusable.

    `overrides` are values given in code (the command line's --port, tests), by field name: they
    win over the environment and are checked alike."""
    hints = _types()
    unknown = sorted(set(overrides) - set(hints))
    if unknown:
        raise TypeError(f"load_settings() got settings it does not have: {', '.join(unknown)}")
    sources = (_lowered(os.environ), _lowered(_dotenv(Path(ENV_FILE))))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for each in fields(Settings):
        declared: Declared = each.metadata["setting"]
        found = _given(each.name, declared.env, overrides, sources)
        if found is None:
            continue
        where, raw = found
        try:
            value = _convert(raw, hints[each.name], declared)
            values[each.name] = declared.check(value) if declared.check else value
        except _Nested as nested:
            problems += [f"{where}{at}: {message}" for at, message in nested.problems]
        except ValueError as error:
            problems.append(_problem(where, str(error)))
    if not problems:
        settings = Settings(**values)
        inconsistency = settings._inconsistency()
        if inconsistency is None:
            return settings
        problems.append(inconsistency)
    raise SettingsError(f"The bot's configuration is not usable: {'; '.join(problems)}")


def _given(name: str, env: tuple[str, ...], overrides: dict[str, object],
           sources: tuple[dict[str, str], ...]) -> tuple[str, object] | None:
    """Where the setting is given (its field name for a value in code, else its documented
    environment name) and the value; None for the default."""
    if name in overrides:
        return name, overrides[name]
    for source in sources:              # the environment wins over .env, whichever name each uses
        for alias in env:
            if alias.lower() in source:
                return env[0], source[alias.lower()]
    return None


def _problem(where: str, message: str) -> str:
    """`where: message`, unless the message starts with the variable's name already."""
    return message if re.match(re.escape(where) + r"[ :]", message) else f"{where}: {message}"


@cache
def _types() -> dict[str, Any]:
    return get_type_hints(Settings)


def _lowered(variables: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in variables.items()}


# ---------------------------------------------------------------- text to values

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")
_WHOLE = re.compile(r"([+-]?[0-9]+(?:_[0-9]+)*)(?:\.0+)?")


class _Nested(ValueError):
    """Problems inside a structured setting: (where inside it, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{at}: {message}" for at, message in problems))
        self.problems = problems


def _convert(value: object, hint: Any, declared: Declared) -> Any:
    """The value of type `hint` that `value` (the environment's text, or a value given in code) stands
    for; ValueError saying what is allowed otherwise."""
    shown = "" if declared.secret else f", not {_shown(value)}"
    origin, args = get_origin(hint), get_args(hint)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError("must be text" + shown)
        return value
    if hint is bool:
        return _bool(value, shown)
    if hint is int or (args and set(args) == {int, type(None)}):
        if value is None and hint is not int:
            return None
        return _bounded(_int(value), declared, "a whole number", shown)
    if hint is float:
        return _bounded(_float(value), declared, "a number", shown)
    if hint is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError("must be a path" + shown)
        return Path(value)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be {_one_of([str(a) for a in args])}" + shown)
        return value
    if origin is list and args == (str,):
        return _names(value, shown)
    if origin is list and args == (AzureWorkspace,):
        return _workspaces(value)
    raise TypeError(f"no reader for settings of type {hint}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_of(choices: list[str]) -> str:
    return " or ".join(choices) if len(choices) < 3 else f"one of {', '.join(choices[:-1])} or {choices[-1]}"


def _bool(value: object, shown: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError("must be true or false (or yes/no, on/off, 1/0)" + shown)


def _int(value: object) -> int | None:
    """A whole number, or None when `value` is not one (as text, with `_` between digits and a
    zero fraction allowed: 8_080, 42.0)."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str):
        whole = _WHOLE.fullmatch(value.strip())
        return int(whole.group(1)) if whole else None
    return None


def _float(value: object) -> float | None:
    """A finite number, or None (NaN and the infinities are no setting's value: every number
    setting has a bound, and neither would be within it)."""
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value.isascii():
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _bounded(number: float | None, declared: Declared, kind: str, shown: str) -> Any:
    ge, gt, le = declared.ge, declared.gt, declared.le
    if (number is None or (ge is not None and number < ge) or (gt is not None and number <= gt)
            or (le is not None and number > le)):
        raise ValueError(f"must be {kind}{_range(ge, gt, le)}{shown}")
    return number


def _range(ge: float | None, gt: float | None, le: float | None) -> str:
    def number(bound: float) -> str:
        return f"{bound:g}" if bound != int(bound) else str(int(bound))
    if ge is not None and le is not None:
        return f" from {number(ge)} to {number(le)}"
    lower = f" of at least {number(ge)}" if ge is not None else f" greater than {number(gt)}" if gt is not None else ""
    return lower + (f"{' and' if lower else ''} at most {number(le)}" if le is not None else "")


def _names(value: object, shown: str) -> list[str]:
    """Comma-separated text (blank entries skipped), or a list given in code."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("must be a comma-separated list" + shown)


_WORKSPACES = ("MLOPSBOT_AZURE_WORKSPACES must be a JSON list of objects with name, subscription_id, "
               "resource_group, environment")


def _workspaces(value: object) -> list[AzureWorkspace]:
    """MLOPSBOT_AZURE_WORKSPACES: JSON text (empty: none), or a list given in code."""
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{_WORKSPACES} ({error})") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{_WORKSPACES}, not {_shown(value)}")
    workspaces: list[AzureWorkspace] = []
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        if isinstance(item, AzureWorkspace):
            workspaces.append(item)
        elif not isinstance(item, dict):
            problems.append((f".{index}", f"must be a JSON object with name, subscription_id and resource_group, "
                                          f"not {_shown(item)}"))
        else:
            wrong = _workspace_problems(item)
            problems += [(f".{index}.{key}", message) for key, message in wrong]
            if not wrong:
                workspaces.append(AzureWorkspace(**{f.name: item[f.name] for f in fields(AzureWorkspace)
                                                    if f.name in item}))
    if problems:
        raise _Nested(problems)
    return workspaces


def _workspace_problems(item: dict) -> list[tuple[str, str]]:
    """(key, message) for each missing or non-text field of one workspace; other keys are ignored."""
    problems = []
    for each in fields(AzureWorkspace):
        if each.name not in item:
            if isinstance(each.default, str):
                continue
            problems.append((each.name, "field required"))
        elif not isinstance(item[each.name], str):
            problems.append((each.name, f"must be text, not {_shown(item[each.name])}"))
    return problems


# ---------------------------------------------------------------- the .env file

_DOTENV_ENTRY = re.compile(r"""
    [^\S\r\n]*(?:export[^\S\r\n]+)?                          # `export ` is allowed and ignored
    (?:'(?P<quoted_name>[^']+)'|(?P<name>[^=\#\s]+))
    [^\S\r\n]*
    (?:(?P<equals>=[^\S\r\n]*)
       (?:'(?P<single>(?:\\.|[^'\\])*)'|"(?P<double>(?:\\.|[^"\\])*)"|(?P<bare>(?!['"])[^\r\n]*)))?
    (?:[^\S\r\n]*\#[^\r\n]*)?                                # a comment after the value
    [^\S\r\n]*(?:\r\n|\n|\r|$)
""", re.VERBOSE | re.DOTALL)
_DOTENV_ESCAPES = {"double": re.compile(r"\\[\\'\"abfnrtv]"), "single": re.compile(r"\\[\\']")}
_DOTENV_VARIABLE = re.compile(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")
_DOTENV_SKIP = {"space": re.compile(r"\s*"), "line": re.compile(r"[^\r\n]*")}


def _dotenv(path: Path) -> dict[str, str]:
    """The variables a .env file sets, read as python-dotenv reads them: `NAME=value` lines, an optional
    `export `, values in single or double quotes (which may span lines; backslash escapes), `#`
    comments, `${NAME}` and `${NAME:-default}` taken from the lines above or the environment. A line
    without `=` sets nothing; a line that cannot be read is skipped with a warning."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"The bot's configuration is not usable: cannot read {path}: {error}") from None
    found: dict[str, str] = {}
    position = _skip("space", text, 0)
    while position < len(text):
        entry = _DOTENV_ENTRY.match(text, position) if text[position] != "#" else None
        if entry is None:
            if text[position] != "#":
                log.warning("%s line %d is not NAME=value: skipped", path, text.count("\n", 0, position) + 1)
            position = _skip("line", text, position)
        else:
            position = entry.end()
            if entry["equals"] is not None:
                found[entry["quoted_name"] or entry["name"]] = _dotenv_value(entry, {**os.environ, **found})
        position = _skip("space", text, position)
    return found


def _skip(what: str, text: str, position: int) -> int:
    """Where the blanks (`space`) or the rest of the line (`line`) from `position` end."""
    match = _DOTENV_SKIP[what].match(text, position)
    return match.end() if match else position


def _dotenv_value(entry: re.Match[str], known: dict[str, str]) -> str:
    if entry["single"] is not None or entry["double"] is not None:
        quote = "single" if entry["single"] is not None else "double"
        value = _DOTENV_ESCAPES[quote].sub(lambda m: m[0].encode().decode("unicode-escape"), entry[quote])
    elif len(entry["equals"]) > 1 and entry["bare"].startswith("#"):
        value = ""                                              # `NAME= # comment`
    else:
        value = re.sub(r"\s+#.*", "", entry["bare"]).rstrip()
    return _DOTENV_VARIABLE.sub(lambda m: known.get(m["name"], m["default"] or ""), value)
