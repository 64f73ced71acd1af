"""Build the Microsoft Teams app manifest and the zip package uploaded to Teams.

This package is a leaf: it imports nothing from ``bot``, ``commands`` or ``adapters``
and needs only the standard library at run time. The caller (the CLI) passes the
bot's Microsoft App ID and the commands to advertise, in priority order::

    manifest = build_manifest(app_id, [("help", "List what you can run"), ...])
    write_package(manifest, "dist/mlops-bot.zip")

Schema version: **1.25**. It is the first version whose bot command lists allow 12
commands (v1.19 to v1.22 allow 10), and it validates from Python once the
validator is taught the ECMA-262 class ``\\p{L}`` used by one pattern that a bot
manifest never reaches (see ``tests/unit/test_manifest.py``). v1.30 adds only
features this bot does not use (targeted messages, agent skills and connectors).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

MANIFEST_VERSION = "1.25"
SCHEMA_URL = (
    "https://developer.microsoft.com/en-us/json-schemas/teams/"
    f"v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
)

#: Scopes the bot is installed in; each gets its own command list.
BOT_SCOPES = ("personal", "team", "groupChat")

# Limits from the v1.25 schema.
MAX_COMMANDS_PER_LIST = 12
MAX_COMMAND_TITLE = 128
MAX_COMMAND_DESCRIPTION = 4000
MAX_SHORT_NAME = 30
MAX_DEVELOPER_NAME = 32
MAX_VALID_DOMAINS = 16

ACCENT_COLOR = "#0F6CBD"  # background of color.png
COLOR_ICON = "color.png"
OUTLINE_ICON = "outline.png"

# Placeholders: pass your organisation's pages for a production package.
DEFAULT_DEVELOPER_NAME = "MLOps bot team"
DEFAULT_WEBSITE_URL = "https://example.com/mlops-bot"
DEFAULT_PRIVACY_URL = "https://example.com/mlops-bot/privacy"
DEFAULT_TERMS_URL = "https://example.com/mlops-bot/terms"

SHORT_DESCRIPTION = "Run Azure Machine Learning from chat: models, endpoints, jobs, drift."
FULL_DESCRIPTION = (
    "MLOps bot lets ML teams run Azure Machine Learning from Microsoft Teams. "
    "List and promote registered models; inspect online endpoints and shift "
    "blue/green traffic between deployments, or roll back, from chat; submit, "
    "follow and cancel training jobs; get data-drift alerts from Azure ML model "
    "monitoring with the metric, threshold and feature that breached; approve or "
    "reject deployments from an Adaptive Card, with minimum approvers and no "
    "self-approval; and receive scheduled model-health digests (latency, errors, "
    "traffic, drift) in a channel or a personal chat. Every action is checked "
    "against your role and recorded in an audit log. Type 'help' to see the "
    "commands you may run."
)

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SEMVER = re.compile(r"(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)")


def build_manifest(
    app_id: str,
    commands: Sequence[tuple[str, str]],
    *,
    version: str = "1.0.0",
    name: str = "MLOps bot",
    developer_name: str = DEFAULT_DEVELOPER_NAME,
    website_url: str = DEFAULT_WEBSITE_URL,
    privacy_url: str = DEFAULT_PRIVACY_URL,
    terms_url: str = DEFAULT_TERMS_URL,
    valid_domains: Sequence[str] = (),
    sso_resource: str | None = None,
) -> dict:
    """Return a Teams app manifest (schema v1.25) for the bot ``app_id``.

    ``app_id`` is the bot's Microsoft App ID (``MicrosoftAppId``), a GUID; it is
    used as both the Teams app id and the bot id. ``commands`` are
    ``(title, description)`` pairs in priority order: each scope gets a command
    list with the first 12, titles and descriptions cut to the schema's maximum
    lengths. ``valid_domains`` are bare host names (``*.example.com`` allowed).
    ``sso_resource`` (for example ``api://botid-<app id>``) adds
    ``webApplicationInfo`` for single sign-on; it is omitted when ``None``.

    Raises ``ValueError`` with a message naming the bad value when an argument
    cannot produce a valid manifest.
    """
    app_id = _checked_app_id(app_id)
    if not _SEMVER.fullmatch(version):
        raise ValueError(f"version must be MAJOR.MINOR.PATCH such as '1.0.0', got {version!r}")
    if not name or len(name) > MAX_SHORT_NAME:
        raise ValueError(f"name must be 1 to {MAX_SHORT_NAME} characters, got {name!r}")
    if not developer_name or len(developer_name) > MAX_DEVELOPER_NAME:
        raise ValueError(
            f"developer_name must be 1 to {MAX_DEVELOPER_NAME} characters, got {developer_name!r}"
        )
    for label, url in (("website_url", website_url), ("privacy_url", privacy_url),
                       ("terms_url", terms_url)):
        if not url.lower().startswith("https://"):
            raise ValueError(f"{label} must be an https:// URL, got {url!r}")

    command_items = _command_items(commands)
    manifest: dict = {
        "$schema": SCHEMA_URL,
        "manifestVersion": MANIFEST_VERSION,
        "version": version,
        "id": app_id,
        "developer": {
            "name": developer_name,
            "websiteUrl": website_url,
            "privacyUrl": privacy_url,
            "termsOfUseUrl": terms_url,
        },
        "name": {"short": name, "full": f"{name} for Azure Machine Learning"},
        "description": {"short": SHORT_DESCRIPTION, "full": FULL_DESCRIPTION},
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": ACCENT_COLOR,
        "bots": [
            {
                "botId": app_id,
                "scopes": list(BOT_SCOPES),
                "supportsFiles": False,
                "isNotificationOnly": False,
                "commandLists": [
                    {"scopes": [scope], "commands": [dict(item) for item in command_items]}
                    for scope in BOT_SCOPES
                ],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": _checked_domains(valid_domains),
    }
    if sso_resource is not None:
        manifest["webApplicationInfo"] = {"id": app_id, "resource": sso_resource}
    return manifest


def write_package(manifest: dict, out: str | Path) -> Path:
    """Write the Teams app package (a zip) to ``out`` and return its path.

    The zip holds ``manifest.json`` and the two icons named in
    ``manifest["icons"]`` at its root, which is the layout Teams expects on
    upload. Entries carry a fixed timestamp, so the same manifest always gives
    the same bytes. Parent directories are created as needed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    icons = manifest.get("icons", {})
    files = {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
        icons.get("color", COLOR_ICON): icon_bytes(COLOR_ICON),
        icons.get("outline", OUTLINE_ICON): icon_bytes(OUTLINE_ICON),
    }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files.items():
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return out


def icon_bytes(filename: str) -> bytes:
    """Return the bytes of a committed icon (``color.png`` or ``outline.png``)."""
    return resources.files(__package__).joinpath(filename).read_bytes()


def _checked_app_id(app_id: str) -> str:
    """Return ``app_id`` if it is a GUID in 8-4-4-4-12 form, else raise ValueError."""
    if not isinstance(app_id, str) or not _GUID.fullmatch(app_id):
        raise ValueError(
            "app_id must be the bot's Microsoft App ID (MicrosoftAppId from the Azure Bot "
            "registration), a GUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'; "
            f"got {app_id!r}"
        )
    return app_id


def _command_items(commands: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Turn ``(title, description)`` pairs into at most 12 manifest command entries."""
    items: list[dict[str, str]] = []
    seen: set[str] = set()
    for title, description in commands:
        title = title.strip()
        if not title:
            raise ValueError("command titles must not be empty")
        if title in seen:
            raise ValueError(f"command {title!r} is listed twice")
        seen.add(title)
        items.append({
            "title": _truncate(title, MAX_COMMAND_TITLE),
            "description": _truncate(description.strip() or title, MAX_COMMAND_DESCRIPTION),
        })
    return items[:MAX_COMMANDS_PER_LIST]


def _checked_domains(domains: Sequence[str]) -> list[str]:
    """Return the valid domains as a list; they must be bare host names, at most 16."""
    if isinstance(domains, str):
        raise ValueError("valid_domains must be a sequence of host names, not a single string")
    domains = list(domains)
    if len(domains) > MAX_VALID_DOMAINS:
        raise ValueError(f"at most {MAX_VALID_DOMAINS} valid_domains are allowed, got {len(domains)}")
    for domain in domains:
        if not domain or "://" in domain or "/" in domain:
            raise ValueError(f"valid_domains takes host names such as 'bot.example.com', got {domain!r}")
    return domains


def _truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
