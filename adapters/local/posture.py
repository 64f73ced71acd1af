"""The local workspace's security posture: the demo's settings (adapters.local.demo.demo_posture) with the
changes made since, read as Azure's would be (adapters.posture.PostureFacts).

Only changes are stored, in `posture_settings` of the workspace file (kind, name, field -> JSON
value), so a reset of the workspace (wipe) goes back to the demo. Endpoints and compute come from
the workspace's own tables (an endpoint's auth mode, a cluster's minimum nodes), so the checklist
follows what the workspace really holds.

    posture = read(conn, "ml-prod")
    change(conn, "endpoint", "fraud-api", {"public_network_access": "Enabled"})   # local only
    change(conn, "diagnostic", "audit-to-log-analytics", {"logs": False})
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from typing import Any

from adapters.local import demo as demo_data
from adapters.posture import (BUILT_IN_ROLES, ComputeSecurity, DatastoreSecurity, DiagnosticSetting, EndpointSecurity,
                              PostureFacts, RoleAssignment, WorkspaceSecurity)
from adapters.service import InvalidRequest, NotFound

_TABLE = """CREATE TABLE IF NOT EXISTS posture_settings (
    kind TEXT NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (kind, name, field))"""
KINDS = {"workspace": WorkspaceSecurity, "endpoint": EndpointSecurity, "compute": ComputeSecurity,
         "datastore": DatastoreSecurity, "diagnostic": DiagnosticSetting}
_FIXED = {"name", "type", "auth_mode", "min_nodes", "size"}    # read from the workspace's own tables


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.execute(_TABLE)


def wipe(conn: sqlite3.Connection) -> None:
    ensure_schema(conn)
    conn.execute("DELETE FROM posture_settings")


def _changes(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    ensure_schema(conn)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, name, field_name, value in conn.execute("SELECT kind, name, field, value FROM posture_settings"):
        out.setdefault((kind, name), {})[field_name] = json.loads(value)
    return out


def read(conn: sqlite3.Connection, workspace: str) -> PostureFacts:
    demo = demo_data.demo_posture()
    changed = _changes(conn)
    settings = WorkspaceSecurity(**{**demo.workspace, **changed.get(("workspace", ""), {})})
    endpoints = tuple(
        EndpointSecurity(name, auth_mode=auth_mode, identity_type="SystemAssigned", tags=json.loads(tags),
                         **{**demo.endpoints.get(name, {"public_network_access": "Enabled"}),
                            **changed.get(("endpoint", name), {})})
        for name, auth_mode, tags in conn.execute("SELECT name, auth_mode, tags FROM endpoints ORDER BY name"))
    compute = tuple(
        ComputeSecurity(name, type_, min_nodes=min_nodes if type_ == "amlcompute" else None, size=size,
                        **{**demo.compute.get(name, {}), **changed.get(("compute", name), {})})
        for name, type_, min_nodes, size in conn.execute(
            "SELECT name, type, min_nodes, size FROM compute ORDER BY name"))
    datastores = tuple(DatastoreSecurity(name, type_, changed.get(("datastore", name), {}).get("credentials", creds))
                       for name, type_, creds in demo.datastores)
    diagnostics = []
    for name, logs, destinations in demo.diagnostics:
        values = {"logs": logs, "destinations": destinations, **changed.get(("diagnostic", name), {})}
        diagnostics.append(DiagnosticSetting(name, bool(values["logs"]), tuple(values["destinations"])))
    role_ids = {name: role_id for role_id, name in BUILT_IN_ROLES.items()}
    roles = tuple(RoleAssignment(role_ids.get(role, role), principal, scope)
                  for role, principal, scope in demo.role_assignments)
    return PostureFacts(workspace, settings, endpoints, compute, tuple(sorted(datastores, key=lambda d: d.name)),
                        tuple(diagnostics), roles)


def change(conn: sqlite3.Connection, kind: str, name: str, values: dict[str, Any]) -> None:
    """Record changed settings of one resource (a demo switch, as if someone changed it in Azure)."""
    if kind not in KINDS:
        raise InvalidRequest(f"Unknown kind '{kind}'; one of {', '.join(KINDS)}.")
    allowed = {f.name for f in fields(KINDS[kind])} - _FIXED if kind != "datastore" else {"credentials"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise InvalidRequest(f"{kind} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(allowed))}.")
    facts = read(conn, "")
    present = {"workspace": [""], "endpoint": [e.name for e in facts.endpoints],
               "compute": [c.name for c in facts.compute], "datastore": [d.name for d in facts.datastores],
               "diagnostic": [d.name for d in facts.diagnostics]}[kind]
    if name not in present:
        raise NotFound("compute" if kind == "compute" else "endpoint" if kind == "endpoint" else kind, name)
    for field_name, value in values.items():
        conn.execute("INSERT INTO posture_settings (kind, name, field, value) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (kind, name, field) DO UPDATE SET value = excluded.value",
                     (kind, name, field_name, json.dumps(value)))
