"""The security posture contract: the embedded workspace and Azure (the same demo, replayed through
the real MLClient) give the same checklist, line for line (issue 22)."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.local.demo import build_demo, demo_posture
from adapters.local.workspace import LocalWorkspace
from adapters.posture import PASS, evaluate
from tests.replay import demo_azure
from tests.replay_posture import serve_demo_posture


def test_both_backends_judge_the_demo_workspace_alike(tmp_path):
    local = LocalWorkspace(tmp_path / "workspace.db")
    workspace, azure = demo_azure(identity="contract-test")
    serve_demo_posture(workspace, build_demo(datetime.now(timezone.utc)), demo_posture())
    try:
        on_local = [(c.key, c.item, c.status, c.finding) for c in evaluate(local.security_posture())]
        on_azure = [(c.key, c.item, c.status, c.finding) for c in evaluate(azure.security_posture())]
    finally:
        local.close()
    assert on_azure == on_local
    assert len(on_local) == 34      # workspace 8, diagnostics 1, RBAC 1, endpoints 6, compute 15, datastores 3
    assert {status for _, _, status, _ in on_local} == {PASS, "fail"}      # every read answered
