"""Links from cards to the matching Azure ML studio page, built in this one module.

Studio pages are addressed by a path and the workspace's ARM id (`wsid`), plus the Entra tenant
(`tid`) when known, so the studio opens the right directory:

    https://ml.azure.com/endpoints/realtime/<endpoint>/detail?wsid=/subscriptions/<sub>/resourceGroups/<rg>
        /providers/Microsoft.MachineLearningServices/workspaces/<ws>&tid=<tenant>

A feature store is a workspace of its own: its pages carry the store's `wsid` (same subscription and
resource group as the workspace: that is where `feature_stores.list()` looks). The local workspace
has no studio: `studio(ctx)` is None there and cards carry no link.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from adapters.service import AzureScope
from commands.base.context import Context

STUDIO = "https://ml.azure.com"


def _part(text: str) -> str:
    return quote(text, safe=":")


@dataclass(frozen=True)
class Studio:
    scope: AzureScope

    def _url(self, path: str, workspace: str | None = None) -> str:
        s = self.scope
        wsid = (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace or s.workspace}")
        tid = f"&tid={s.tenant_id}" if s.tenant_id else ""
        return f"{STUDIO}/{path}?wsid={wsid}{tid}"

    def endpoint(self, name: str) -> str:
        return self._url(f"endpoints/realtime/{_part(name)}/detail")

    def model(self, name: str, version: str) -> str:
        return self._url(f"model/{_part(name)}:{_part(version)}/details")

    def job(self, name: str) -> str:
        return self._url(f"runs/{_part(name)}")

    def feature_store(self, store: str) -> str:
        return self._url(f"featureStore/{_part(store)}", workspace=store)

    def feature_set(self, store: str, name: str, version: str) -> str:
        return self._url(f"featureStore/{_part(store)}/featureSets/{_part(name)}/{_part(version)}/details",
                         workspace=store)


def studio(ctx: Context) -> Studio | None:
    """The studio of the workspace this turn talks to; None for the local workspace."""
    scope = getattr(ctx.ml, "azure", None)
    return Studio(scope) if scope is not None else None


def open_in_studio(url: str | None, title: str = "Open in Azure ML studio") -> list[dict]:
    """An Action.OpenUrl button list (empty without a URL), to add to a card's actions."""
    return [{"type": "Action.OpenUrl", "title": title, "url": url}] if url else []
