"""The `ml` fixture: one `MLService` per implementation, for the contract suite.

Adding an implementation is one entry in IMPLEMENTATIONS: a factory that takes pytest's
`tmp_path` and returns a ready service (seeded with some data). If the service has `close()`, it
is called after the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from adapters.local.workspace import LocalWorkspace
from adapters.service import MLService


def make_local(tmp_path: Path) -> MLService:
    """The embedded workspace over a fresh file, seeded with the demo."""
    return LocalWorkspace(tmp_path / "workspace.db")


def make_azure(tmp_path: Path) -> MLService:
    """AzureMLService over a real MLClient and the replay transport, serving the same demo workspace."""
    from tests.replay import demo_azure

    return demo_azure(identity="contract-test")[1]


IMPLEMENTATIONS: dict[str, Callable[[Path], MLService]] = {
    "local": make_local,
    "azure": make_azure,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def ml(request, tmp_path) -> MLService:
    service = IMPLEMENTATIONS[request.param](tmp_path)
    yield service
    close = getattr(service, "close", None)
    if callable(close):
        close()
