"""The security posture reads served over replay, from published Azure REST examples (issue 22).

    serve_posture(workspace)                     # FakeWorkspace: workspace GET, computes, datastores
    serve_posture(workspace, forbidden=("datastores",))   # that read answers 403, as Azure does

The bodies come from Azure/azure-rest-api-specs examples (tests/fixtures/azure/SOURCES.md, "Issue
#22"), their placeholder values ("string", other subscriptions and workspaces) replaced at load
time with real ARM ids under the replayed workspace; the copied files stay as published.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tests.replay import (LOCATION, RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WORKSPACE_ID, FakeWorkspace,
                          ReplayResponse, arm_id, example, system_data)

_OTHER_WORKSPACE = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/", re.IGNORECASE)


def _rehome(value: Any) -> Any:
    """Every ARM id of the example moved under the replayed subscription and resource group, and the
    example's workspace ids onto the replayed workspace."""
    if isinstance(value, dict):
        return {(_rehome(k) if isinstance(k, str) and k.startswith("/subscriptions/") else k): _rehome(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rehome(v) for v in value]
    if isinstance(value, str) and value.startswith("/subscriptions/"):
        moved = _OTHER_WORKSPACE.sub(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/",
                                     value, count=1)
        return re.sub(r"/workspaces/(testworkspace|workspaces123)\b", f"/workspaces/{WORKSPACE}", moved)
    return value


def workspace_body(*, public_network_access: str | None = None, private_endpoints: bool = True,
                   isolation_mode: str | None = None, cmk: bool = True, hbi: bool | None = None,
                   identity: str | None = None, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """ml/workspace/get.json (Workspaces_Get) as the replayed workspace; each keyword overrides what
    the example says (public access Disabled, one approved private endpoint, AllowOnlyApprovedOutbound,
    a customer-managed key, hbi off, SystemAssigned,UserAssigned identity, no tags)."""
    body = _rehome(copy.deepcopy(example("ml/workspace/get.json")))
    body.update(id=WORKSPACE_ID, name=WORKSPACE, location=LOCATION, systemData=system_data())
    props = body["properties"]
    props.update(friendlyName=WORKSPACE, discoveryUrl=f"https://{LOCATION}.api.azureml.ms/discovery",
                 mlFlowTrackingUri=f"azureml://{LOCATION}.api.azureml.ms/mlflow/v1.0{WORKSPACE_ID}",
                 workspaceId="9b7c2a51-6a55-4b0e-8a5e-2f2b8d9c1a10")
    props["managedNetwork"]["outboundRules"] = {}          # the placeholder rule "some_string" -> "some_string"
    for connection in props["privateEndpointConnections"]:
        connection["id"] = f"{WORKSPACE_ID}/privateEndpointConnections/{connection['name']}"
    if public_network_access is not None:
        props["publicNetworkAccess"] = public_network_access
    if not private_endpoints:
        props["privateEndpointConnections"] = []
    if isolation_mode is not None:
        props["managedNetwork"]["isolationMode"] = isolation_mode
    if not cmk:
        props.pop("encryption")
    if hbi is not None:
        props["hbiWorkspace"] = hbi
    if identity is not None:
        body["identity"] = {"type": identity}
        if identity == "SystemAssigned":
            body["identity"].update(principalId=SUBSCRIPTION, tenantId=SUBSCRIPTION)
    if tags is not None:
        body["tags"] = dict(tags)
    return body


def compute_instance(name: str, *, ssh: bool = True, public_ip: bool | None = None,
                     idle_minutes: int | None = None) -> dict[str, Any]:
    """ml/computes/ComputeInstance.json (Compute_Get) named `name`: SSH Enabled and a public IP address
    as published; `idle_minutes` adds `idleTimeBeforeShutdown` (ISO 8601, as Compute_UpdateIdleShutdownSetting
    writes it), `public_ip` adds `enableNodePublicIp`."""
    body = _rehome(copy.deepcopy(example("ml/computes/ComputeInstance.json")))
    body.update(id=arm_id("computes", name), name=name, location=LOCATION)
    inner = body["properties"]["properties"]
    inner["subnet"] = {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                             "Microsoft.Network/virtualNetworks/vnet-ml/subnets/compute"}
    inner["sshSettings"]["sshPublicAccess"] = "Enabled" if ssh else "Disabled"
    if public_ip is not None:
        inner["enableNodePublicIp"] = public_ip
    if idle_minutes is not None:
        inner["idleTimeBeforeShutdown"] = f"PT{idle_minutes}M"
    return body


def aml_cluster(name: str, *, min_nodes: int = 0, max_nodes: int = 4, ssh: bool = True,
                public_ip: bool = True) -> dict[str, Any]:
    """ml/computes/AmlCompute.json (Compute_Get) named `name`, Linux, with its scale settings."""
    body = _rehome(copy.deepcopy(example("ml/computes/AmlCompute.json")))
    body.update(id=arm_id("computes", name), name=name, location=LOCATION)
    inner = body["properties"]["properties"]
    inner.update(osType="Linux", remoteLoginPortPublicAccess="Enabled" if ssh else "Disabled",
                 enableNodePublicIp=public_ip, currentNodeCount=min_nodes, targetNodeCount=min_nodes,
                 allocationState="Steady")
    inner["subnet"] = {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                             "Microsoft.Network/virtualNetworks/vnet-ml/subnets/compute"}
    inner["scaleSettings"].update(minNodeCount=min_nodes, maxNodeCount=max_nodes)
    return body


def datastore(name: str, *, credentials: str = "AccountKey", account: str = "mlopsdata") -> dict[str, Any]:
    """ml/datastores/list.json's item (Datastores_List) named `name`: an AzureBlob datastore with
    `credentials` "AccountKey" (as published), "Sas", or "None" (identity-based)."""
    body = copy.deepcopy(example("ml/datastores/list.json")["value"][0])
    body.update(id=arm_id("datastores", name), name=name, systemData=system_data(),
                type="Microsoft.MachineLearningServices/workspaces/datastores")
    props = body["properties"]
    props.update(description=f"{name} on {account}", tags={}, accountName=account, containerName=name,
                 isDefault=name == "workspaceblobstore")
    props.pop("properties")
    if credentials == "None":
        props["credentials"] = {"credentialsType": "None"}
    else:
        props["credentials"] = {"credentialsType": credentials, "secrets": {"secretsType": credentials}}
    return body


def serve_posture(workspace: FakeWorkspace, *, body: dict[str, Any] | None = None,
                  forbidden: tuple[str, ...] = ()) -> None:
    """Answer the workspace GET with `body` (default `workspace_body()`), add the posture's computes,
    datastores and diagnostic settings, and answer the reads named in `forbidden` ("workspace",
    "endpoints", "compute", "datastores", "diagnostics") with Azure's 403 AuthorizationFailed."""
    t = workspace.transport
    served = body or workspace_body()
    t.add("GET", rf"{re.escape(WORKSPACE_ID)}$", handler=lambda r, m: ReplayResponse(json=served), first=True)
    workspace.add(compute_instance("ds-ci-posture", ssh=True, public_ip=True))
    workspace.add(aml_cluster("gpu-warm", min_nodes=2, max_nodes=4, ssh=False, public_ip=False))
    workspace.add(datastore("workspaceblobstore", credentials="None"))
    workspace.add(datastore("legacy-exports", credentials="AccountKey"))
    serve_diagnostics(workspace, status=403 if "diagnostics" in forbidden else 200)
    serve_roles(workspace, status=403 if "roles" in forbidden else 200)
    paths = {"workspace": rf"{re.escape(WORKSPACE_ID)}$", "endpoints": r"/onlineEndpoints$",
             "compute": r"/computes$", "datastores": r"/datastores$"}
    for read in set(forbidden) - {"diagnostics", "roles"}:
        t.add("GET", paths[read], handler=lambda r, m: _forbidden(r), first=True)


def _forbidden(request: Any) -> ReplayResponse:
    """Azure's 403 for a read the identity's roles do not allow."""
    last = request.path.rstrip("/").rsplit("/", 1)[-1].lower()
    action = {"diagnosticsettings": "Microsoft.Insights/diagnosticSettings/read",
              "roleassignments": "Microsoft.Authorization/roleAssignments/read"}.get(last) or (
        "Microsoft.MachineLearningServices/workspaces/" + {
            "onlineendpoints": "onlineEndpoints/read", "computes": "computes/read",
            "datastores": "datastores/read"}.get(last, "read"))
    message = (f"The client 'mlops-bot' with object id '00000000-0000-0000-0000-0000000000b0' does not have "
               f"authorization to perform action '{action}' over scope '{request.path}' or the scope is invalid.")
    return ReplayResponse(403, {"error": {"code": "AuthorizationFailed", "message": message}},
                          headers={"x-ms-error-code": "AuthorizationFailed"})


# ---------------------------------------------------------------- the demo workspace's posture

_AUTH_MODES = {"key": "Key", "aml_token": "AMLToken", "aad_token": "AADToken"}   # ARM's spelling of auth_mode


def serve_demo_posture(workspace: FakeWorkspace, demo: Any, posture: Any) -> None:
    """The embedded workspace's posture (adapters.local.demo: `build_demo`, `demo_posture`) as Azure would
    return it, on a FakeWorkspace already seeded with `seed_from_demo(demo)`: the workspace GET from
    the published example with the demo's settings, the demo endpoints' public access and auth mode,
    its computes' SSH, public IP and idle shutdown, and its datastores."""
    w = posture.workspace
    body = workspace_body(public_network_access=w["public_network_access"],
                          private_endpoints=w["private_endpoints"] > 0,
                          isolation_mode=w["isolation_mode"], cmk=w["customer_managed_key"], hbi=w["hbi_workspace"],
                          identity=w["identity_type"], tags=w["tags"])
    workspace.transport.add("GET", rf"{re.escape(WORKSPACE_ID)}$", handler=lambda r, m: ReplayResponse(json=body),
                            first=True)
    for e in demo.endpoints:
        props = workspace.get("onlineEndpoints", e.name)["properties"]
        props.update(authMode=_AUTH_MODES[e.auth_mode],
                     publicNetworkAccess=posture.endpoints.get(e.name, {}).get("public_network_access", "Enabled"))
    for c in demo.compute:
        settings = posture.compute.get(c.name, {})
        if c.type == "computeinstance":
            body_c = compute_instance(c.name, ssh=bool(settings.get("ssh_public_access")),
                                      public_ip=bool(settings.get("public_ip")),
                                      idle_minutes=settings.get("idle_shutdown_minutes"))
            body_c["properties"]["properties"].update(vmSize=c.size, state=c.state)
        else:
            body_c = aml_cluster(c.name, min_nodes=c.min_nodes or 0, max_nodes=c.max_nodes or 1,
                                 ssh=bool(settings.get("ssh_public_access")), public_ip=bool(settings.get("public_ip")))
            body_c["properties"]["properties"]["vmSize"] = c.size
        workspace.add(body_c)
    for name, kind, credentials in posture.datastores:
        body_d = datastore(name, credentials=credentials)
        body_d["properties"]["datastoreType"] = kind
        if kind == "AzureFile":
            body_d["properties"]["fileShareName"] = body_d["properties"].pop("containerName")
        elif kind == "AzureDataLakeGen2":
            body_d["properties"]["filesystem"] = body_d["properties"].pop("containerName")
        workspace.add(body_d)
    serve_diagnostics(workspace, diagnostic_settings(*((name, logs) for name, logs, _ in posture.diagnostics)))
    from adapters.posture import BUILT_IN_ROLES
    role_ids = {name: role_id for role_id, name in BUILT_IN_ROLES.items()}
    serve_roles(workspace, role_assignments(*((role_ids[role], principal, where)
                                              for role, principal, where in posture.role_assignments)))


def diagnostic_settings(*settings: tuple[str, bool]) -> dict[str, Any]:
    """Azure Monitor's Diagnostic Settings - List answer for the workspace, from monitor/diagnostic_settings/
    listDiagnosticSettings.json: one setting per (name, logs enabled), sending to a Log Analytics
    workspace (the example's storage account and event hub destinations dropped)."""
    item = copy.deepcopy(example("monitor/diagnostic_settings/listDiagnosticSettings.json")["value"][0])
    out = []
    for name, logs in settings:
        body = copy.deepcopy(item)
        body.update(id=f"{WORKSPACE_ID}/providers/microsoft.insights/diagnosticSettings/{name}", name=name)
        props = body["properties"]
        props.pop("storageAccountId")
        props.pop("eventHubAuthorizationRuleId")
        props["workspaceId"] = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                                "Microsoft.OperationalInsights/workspaces/law-mlops")
        props["metrics"] = [{"category": "AllMetrics", "enabled": True,
                             "retentionPolicy": {"enabled": False, "days": 0}}]
        for entry in props["logs"]:
            entry["enabled"] = logs
        out.append(body)
    return {"value": out}


def serve_diagnostics(workspace: FakeWorkspace, answer: dict[str, Any] | None = None, *, status: int = 200) -> None:
    """Answer the workspace's diagnostic settings list (`answer`, default: one setting sending all logs)."""
    body = answer if answer is not None else diagnostic_settings(("audit-to-log-analytics", True))
    if status == 403:
        workspace.transport.add("GET", r"/providers/Microsoft\.Insights/diagnosticSettings$",
                                handler=lambda r, m: _forbidden(r), first=True)
    else:
        workspace.transport.add("GET", r"/providers/Microsoft\.Insights/diagnosticSettings$", json=body, first=True)


def role_assignments(*assignments: tuple[str, str, str]) -> dict[str, Any]:
    """Microsoft.Authorization's Role Assignments - List For Scope answer (RoleAssignments_ListForScope.json):
    one assignment per (role definition id, principal type, scope) with `scope` "workspace",
    "resource group" or "subscription" of the replayed workspace."""
    item = example("authorization/RoleAssignments_ListForScope.json")["value"][0]
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    scopes = {"workspace": WORKSPACE_ID, "resource group": group, "subscription": f"/subscriptions/{SUBSCRIPTION}"}
    out = []
    for n, (role, principal, where) in enumerate(assignments):
        body = copy.deepcopy(item)
        name = f"b0f43c54-e787-4862-89b1-a653fa9c{n:04d}"
        body.update(id=f"{scopes[where]}/providers/Microsoft.Authorization/roleAssignments/{name}", name=name)
        body["properties"].update(roleDefinitionId=f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/"
                                                   f"roleDefinitions/{role}",
                                  principalType=principal, scope=scopes[where])
        out.append(body)
    return {"value": out}


OWNER, CONTRIBUTOR = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42dd-ab28-4bb2b6a3e2ad"
DATA_SCIENTIST, READER_ROLE = "f6c7c914-8db3-469d-8ca1-694a8f32e121", "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def serve_roles(workspace: FakeWorkspace, answer: dict[str, Any] | None = None, *, status: int = 200) -> None:
    """Answer the role assignments that apply to the workspace (default: Owner on the subscription,
    AzureML Data Scientist to a group on the workspace)."""
    body = answer if answer is not None else role_assignments((OWNER, "User", "subscription"),
                                                              (DATA_SCIENTIST, "Group", "workspace"))
    route = r"/providers/Microsoft\.Authorization/roleAssignments$"
    if status == 403:
        workspace.transport.add("GET", route, handler=lambda r, m: _forbidden(r), first=True)
    else:
        workspace.transport.add("GET", route, json=body, first=True)
