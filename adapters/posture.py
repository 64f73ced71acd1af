"""Security posture of a workspace: what the backends read (`PostureFacts`) and the production
checklist judged over it (`evaluate`), one pure function shared by the Azure and local backends.

    facts = service.security_posture()       # MLService port: the reads, each one possibly Unreadable
    checks = evaluate(facts)                 # [PostureCheck]: pass / fail / cannot tell, with the fix

The checklist is the seed's "Security Checklist for Production" (private endpoints, managed network,
Entra-only auth, least-privilege RBAC, managed identities, customer-managed keys, exfiltration
prevention, diagnostic settings, tags for cost), judged only from what azure-ai-ml and Azure
Resource Manager expose to the bot's role:

    workspace GET        public network access, approved private endpoint connections, managed network
                         isolation mode, customer-managed key (encryption), high-business-impact flag,
                         identity type, tags
    online endpoints     public network access, auth mode (key / aml_token / aad_token), identity
    computes             instances: SSH public access, public IP, idle shutdown; clusters: SSH, public IP,
                         minimum nodes (billed at rest)
    datastores           credentials (account key, SAS, service principal) or identity-based ("None")
    diagnostic settings  (Azure Monitor, on the workspace) whether some setting sends its logs somewhere
    role assignments     (Microsoft.Authorization, at or above the workspace) broad roles given close to it

A read that failed gives "cannot tell" with its reason (e.g. the RBAC action the bot's identity
lacks). Least-privilege RBAC is judged from the role assignments that apply to the workspace (at it
or inherited, `$filter=atScope()`): Owner, Contributor and the access administrator roles given on
the workspace or its resource group fail it (those on the subscription and above are out of the
workspace team's hands and are not judged). The last two
kinds of lines (idle shutdown, minimum nodes) are the issue's cost-at-rest checks, filed under the
item "Tags for cost" (cost tracking) since the seed's list has no cost item of its own.

Each check has a stable `key` (check id + target) under which its state is remembered
(adapters.storage.posture), so that a check turning from pass to fail is news.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"      # UNKNOWN is shown as "cannot tell"
STATUS_WORDS = {PASS: "pass", FAIL: "fail", UNKNOWN: "cannot tell"}

# The seed's checklist items, in its words and order.
PRIVATE_ENDPOINTS = "Private endpoints"
MANAGED_NETWORK = "Managed network"
ENTRA_ONLY = "Entra-only auth"
LEAST_PRIVILEGE = "Least-privilege RBAC"
MANAGED_IDENTITIES = "Managed identities"
CUSTOMER_KEYS = "Customer-managed keys"
EXFILTRATION = "Exfiltration prevention"
DIAGNOSTICS = "Diagnostic settings"
COST_TAGS = "Tags for cost"
CHECKLIST = (PRIVATE_ENDPOINTS, MANAGED_NETWORK, ENTRA_ONLY, LEAST_PRIVILEGE, MANAGED_IDENTITIES, CUSTOMER_KEYS,
             EXFILTRATION, DIAGNOSTICS, COST_TAGS)

# The RBAC action each read needs (the message of a 403 names it).
ML = "Microsoft.MachineLearningServices"
READ_ACTIONS = {
    "workspace": f"{ML}/workspaces/read",
    "endpoints": f"{ML}/workspaces/onlineEndpoints/read",
    "compute": f"{ML}/workspaces/computes/read",
    "datastores": f"{ML}/workspaces/datastores/read",
    "diagnostics": "Microsoft.Insights/diagnosticSettings/read",
    "roles": "Microsoft.Authorization/roleAssignments/read",
}
# Built-in roles by definition id (Azure's "Azure built-in roles"): the privileged ones fail least privilege.
BUILT_IN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42dd-ab28-4bb2b6a3e2ad": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c4a72741": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815": "AzureML Compute Operator",
}
PRIVILEGED_ROLES = ("Owner", "Contributor", "User Access Administrator", "Role Based Access Control Administrator")
# Tag names that attribute cost (compared without case, '-', '_' or spaces).
COST_TAG_NAMES = ("costcenter", "costcentre", "project", "team", "owner", "department", "billing", "budget")
IDENTITY_CREDENTIALS = ("none", "")                 # a datastore without credentials uses identity


@dataclass(frozen=True)
class Unreadable:
    """A read the bot could not make, and why ("the bot's identity lacks <action>")."""

    reason: str


@dataclass(frozen=True)
class WorkspaceSecurity:
    public_network_access: str = ""          # "Enabled" | "Disabled" | "" (not said)
    private_endpoints: int = 0               # approved private endpoint connections
    isolation_mode: str = ""                 # "Disabled" | "AllowInternetOutbound" | "AllowOnlyApprovedOutbound"
    customer_managed_key: bool = False
    key_vault_key: str = ""                  # the key's identifier, when there is one
    hbi_workspace: bool = False
    identity_type: str = ""                  # "SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned", ...
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointSecurity:
    name: str
    public_network_access: str = ""          # "Enabled" | "Disabled"
    auth_mode: str = ""                      # "key" | "aml_token" | "aad_token"
    identity_type: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComputeSecurity:
    name: str
    type: str                                # "computeinstance" | "amlcompute" | ...
    ssh_public_access: bool | None = None    # None: not said
    public_ip: bool | None = None
    idle_shutdown_minutes: int | None = None  # instances: None = never shut down when idle
    min_nodes: int | None = None             # clusters
    size: str = ""


@dataclass(frozen=True)
class DatastoreSecurity:
    name: str
    type: str                                # "AzureBlob", "AzureDataLakeGen2", "AzureFile", ...
    credentials: str                         # "AccountKey" | "Sas" | "ServicePrincipal" | "Certificate" | "None"


@dataclass(frozen=True)
class DiagnosticSetting:
    """One of the workspace's diagnostic settings (Azure Monitor): where it sends what."""

    name: str
    logs: bool                               # some log category (or category group) is enabled
    destinations: tuple[str, ...] = ()       # "Log Analytics", "storage account", "event hub", "partner"


@dataclass(frozen=True)
class RoleAssignment:
    """One role assignment that applies to the workspace (at it or above it)."""

    role: str                                # the role definition's id (a GUID) or a built-in's name
    principal_type: str = ""                 # "User", "Group", "ServicePrincipal", ...
    scope: str = ""                          # "workspace" | "resource group" | "subscription" | "above"

    @property
    def role_name(self) -> str:
        return BUILT_IN_ROLES.get(self.role.lower(), self.role if not _GUID.match(self.role)
                                  else f"custom role {self.role[:8]}")


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class PostureFacts:
    workspace: str                           # its name
    settings: WorkspaceSecurity | Unreadable
    endpoints: tuple[EndpointSecurity, ...] | Unreadable = ()
    compute: tuple[ComputeSecurity, ...] | Unreadable = ()
    datastores: tuple[DatastoreSecurity, ...] | Unreadable = ()
    diagnostics: tuple[DiagnosticSetting, ...] | Unreadable = Unreadable("diagnostic settings were not read")
    role_assignments: tuple[RoleAssignment, ...] | Unreadable = Unreadable("role assignments were not read")


@dataclass(frozen=True)
class PostureCheck:
    check: str                               # stable id, e.g. "endpoint-auth"
    target: str                              # "" for the workspace itself, else the resource's name
    item: str                                # the checklist item, in the seed's words
    status: str                              # PASS | FAIL | UNKNOWN
    finding: str                             # what was seen, or why it cannot be told
    fix: str                                 # one line

    @property
    def key(self) -> str:
        return f"{self.check}:{self.target}" if self.target else self.check

    @property
    def subject(self) -> str:
        """What the line is about: "workspace", "endpoint fraud-api", "compute ds-ci-alice", ..."""
        kind = self.check.split("-", 1)[0]
        if not self.target:
            return {"endpoint": "online endpoints", "datastore": "datastores"}.get(kind, kind)
        return f"{kind} {self.target}"


def lacks(action: str) -> str:
    return f"the bot's identity lacks {action}"


# ---------------------------------------------------------------- the checklist


def evaluate(facts: PostureFacts) -> list[PostureCheck]:
    """Every checklist line for these facts, in checklist order (workspace, endpoints, compute, datastores)."""
    ws = facts.workspace
    out: list[PostureCheck] = []
    out += _workspace(ws, facts.settings)
    out += _endpoints(ws, facts.endpoints)
    out += _compute(ws, facts.compute)
    out += _datastores(ws, facts.datastores)
    out.append(_rbac(ws, facts.role_assignments))
    out.append(_diagnostics(ws, facts.diagnostics))
    order = {item: i for i, item in enumerate(CHECKLIST)}
    return sorted(out, key=lambda c: order[c.item])


def _cannot(check: str, item: str, what: Unreadable, fix: str, target: str = "") -> PostureCheck:
    return PostureCheck(check, target, item, UNKNOWN, what.reason, fix)


def _workspace(ws: str, s: WorkspaceSecurity | Unreadable) -> list[PostureCheck]:
    fixes = {
        "workspace-public-network": (PRIVATE_ENDPOINTS, f"`az ml workspace update -n {ws} --public-network-access "
                                                        "Disabled` (after adding a private endpoint)"),
        "workspace-private-endpoint": (PRIVATE_ENDPOINTS, f"`az network private-endpoint create` for {ws} "
                                                          "(group id amlworkspace), then approve it"),
        "workspace-managed-network": (MANAGED_NETWORK, f"`az ml workspace update -n {ws} --managed-network "
                                                       "allow_internet_outbound` (or allow_only_approved_outbound)"),
        "workspace-outbound": (EXFILTRATION, f"`az ml workspace update -n {ws} --managed-network "
                                             "allow_only_approved_outbound`, with outbound rules for what jobs need"),
        "workspace-identity": (MANAGED_IDENTITIES, f"Give {ws} a managed identity: `identity: {{type: "
                                                   f"system_assigned}}` in its YAML, `az ml workspace update -n {ws} "
                                                   "--file workspace.yml`"),
        "workspace-cmk": (CUSTOMER_KEYS, "Customer-managed keys are chosen when a workspace is created: a new one "
                                         "with `customer_managed_key: {key_vault: <id>, key_uri: <key url>}` in its "
                                         "YAML, then move the assets"),
        "workspace-hbi": (CUSTOMER_KEYS, "The high-business-impact flag is chosen at creation: a new workspace with "
                                         "`hbi_workspace: true` in its YAML (less diagnostic data collected, "
                                         "scratch disk encrypted)"),
        "workspace-tags": (COST_TAGS, f"`az ml workspace update -n {ws} --tags cost-center=<code> owner=<team>`"),
    }
    if isinstance(s, Unreadable):
        return [_cannot(check, item, s, fix) for check, (item, fix) in fixes.items()]

    def line(check: str, ok: bool, finding: str) -> PostureCheck:
        item, fix = fixes[check]
        return PostureCheck(check, "", item, PASS if ok else FAIL, finding, fix)

    access = s.public_network_access or "Enabled (Azure's default)"
    mode = s.isolation_mode or "Disabled"
    identity = s.identity_type if s.identity_type and s.identity_type.lower() != "none" else ""
    tags = cost_tags(s.tags)
    return [
        line("workspace-public-network", s.public_network_access.lower() == "disabled",
             f"public network access {access}"),
        line("workspace-private-endpoint", s.private_endpoints > 0,
             f"{s.private_endpoints} approved private endpoint{'' if s.private_endpoints == 1 else 's'}"),
        line("workspace-managed-network", mode.lower() in ("allowinternetoutbound", "allowonlyapprovedoutbound"),
             f"managed network isolation {mode}"),
        line("workspace-outbound", mode.lower() == "allowonlyapprovedoutbound",
             f"outbound {'only to approved destinations' if mode.lower() == 'allowonlyapprovedoutbound' else 'open'}"
             f" (isolation {mode})"),
        line("workspace-identity", bool(identity), f"identity {identity or 'none'}"),
        line("workspace-cmk", s.customer_managed_key,
             "encrypted with a customer-managed key" if s.customer_managed_key else "Microsoft-managed keys"),
        line("workspace-hbi", s.hbi_workspace, f"high business impact {'on' if s.hbi_workspace else 'off'}"),
        line("workspace-tags", bool(tags), f"cost tags {', '.join(tags)}" if tags else
             f"no cost tag ({'tags: ' + ', '.join(sorted(s.tags)) if s.tags else 'no tags'})"),
    ]


def _endpoints(ws: str, found: tuple[EndpointSecurity, ...] | Unreadable) -> list[PostureCheck]:
    if isinstance(found, Unreadable):
        return [_cannot("endpoint-public-network", PRIVATE_ENDPOINTS, found, "Give the bot's identity "
                        f"{READ_ACTIONS['endpoints']} (the MLOps bot role has it)"),
                _cannot("endpoint-auth", ENTRA_ONLY, found, "Same: the endpoints could not be read")]
    out = []
    for e in found:
        public = e.public_network_access.lower() != "disabled"
        out.append(PostureCheck(
            "endpoint-public-network", e.name, PRIVATE_ENDPOINTS, FAIL if public else PASS,
            f"public network access {e.public_network_access or 'Enabled'}",
            f"`az ml online-endpoint update -n {e.name} -w {ws} --set public_network_access=disabled` "
            "(the workspace needs a private endpoint)"))
        entra = e.auth_mode.lower() == "aad_token"
        out.append(PostureCheck(
            "endpoint-auth", e.name, ENTRA_ONLY, PASS if entra else FAIL,
            f"auth mode {e.auth_mode or 'unknown'}" + ("" if entra else
                                                        " (callers use keys or Azure ML tokens, not Entra ID)"),
            f"Set `auth_mode: aad_token` on {e.name} (`az ml online-endpoint update -n {e.name} -w {ws} "
            "--set auth_mode=aad_token`) and give callers a role with onlineEndpoints/score/action"))
    return out


def _compute(ws: str, found: tuple[ComputeSecurity, ...] | Unreadable) -> list[PostureCheck]:
    if isinstance(found, Unreadable):
        return [_cannot("compute-ssh", ENTRA_ONLY, found, f"Give the bot's identity {READ_ACTIONS['compute']}"),
                _cannot("compute-public-ip", MANAGED_NETWORK, found, "Same: the compute could not be read")]
    out = []
    for c in found:
        instance = c.type.lower() == "computeinstance"
        cluster = c.type.lower() == "amlcompute"
        if not (instance or cluster):
            continue                         # attached compute (Kubernetes, ...) has its own controls
        recreate = (f"`az ml compute create -n {c.name} --type {'ComputeInstance' if instance else 'AmlCompute'} "
                    "--ssh-public-access-enabled false --enable-node-public-ip false` (set at creation only)")
        if c.ssh_public_access is None:
            out.append(PostureCheck("compute-ssh", c.name, ENTRA_ONLY, UNKNOWN, "Azure did not say whether SSH is "
                                    "open", recreate))
        else:
            out.append(PostureCheck("compute-ssh", c.name, ENTRA_ONLY, FAIL if c.ssh_public_access else PASS,
                                    "SSH open to the internet (key login, not Entra)" if c.ssh_public_access
                                    else "no public SSH", recreate))
        if c.public_ip is None:
            out.append(PostureCheck("compute-public-ip", c.name, MANAGED_NETWORK, UNKNOWN,
                                    "Azure did not say whether its nodes have public IPs", recreate))
        else:
            out.append(PostureCheck("compute-public-ip", c.name, MANAGED_NETWORK, FAIL if c.public_ip else PASS,
                                    "public IP address" if c.public_ip else "no public IP", recreate))
        if instance:
            idle = c.idle_shutdown_minutes
            out.append(PostureCheck(
                "compute-idle-shutdown", c.name, COST_TAGS, PASS if idle else FAIL,
                f"shuts down after {idle} idle minutes" if idle else "never shuts down when idle (billed at rest)",
                f"`az ml compute update -n {c.name} -w {ws} --idle-time-before-shutdown-minutes 60`"))
        else:
            nodes = c.min_nodes or 0
            out.append(PostureCheck(
                "compute-min-nodes", c.name, COST_TAGS, FAIL if nodes > 0 else PASS,
                f"{nodes} node{'' if nodes == 1 else 's'} kept at rest" + (f" ({c.size}), billed while idle"
                                                                            if nodes and c.size else ""),
                f"`az ml compute update -n {c.name} -w {ws} --min-instances 0`"))
    return out


def _datastores(ws: str, found: tuple[DatastoreSecurity, ...] | Unreadable) -> list[PostureCheck]:
    if isinstance(found, Unreadable):
        return [_cannot("datastore-credentials", MANAGED_IDENTITIES, found,
                        f"Give the bot's identity {READ_ACTIONS['datastores']} (the MLOps bot role has it)")]
    out = []
    for d in found:
        identity = d.credentials.lower() in IDENTITY_CREDENTIALS
        out.append(PostureCheck(
            "datastore-credentials", d.name, MANAGED_IDENTITIES, PASS if identity else FAIL,
            "identity-based access" if identity else f"stores a credential ({_credential_words(d.credentials)})",
            f"Re-create {d.name} without credentials (`credentials: none`, identity-based) and give the workspace's "
            "managed identity Storage Blob Data Reader on the account"))
    return out


def _rbac(ws: str, found: tuple[RoleAssignment, ...] | Unreadable) -> PostureCheck:
    fix = (f"Replace them with AzureML Data Scientist, AzureML Compute Operator or a custom role on {ws} "
           f"(`az role assignment list --scope <id of {ws}> --include-inherited` lists them)")
    if isinstance(found, Unreadable):
        return PostureCheck("workspace-rbac", "", LEAST_PRIVILEGE, UNKNOWN, found.reason, fix)
    close = [a for a in found if a.scope in ("workspace", "resource group")]
    broad = [a for a in close if a.role_name in PRIVILEGED_ROLES]
    if not broad:
        return PostureCheck("workspace-rbac", "", LEAST_PRIVILEGE, PASS,
                            f"no Owner, Contributor or access administrator among the {len(close)} role assignment"
                            f"{'' if len(close) == 1 else 's'} on the workspace and its resource group", fix)
    counts: dict[str, int] = {}
    for a in broad:
        label = f"{a.role_name} to a {a.principal_type or 'principal'} on the {a.scope}"
        counts[label] = counts.get(label, 0) + 1
    words = ", ".join(f"{label}" + (f" ×{n}" if n > 1 else "") for label, n in sorted(counts.items()))
    return PostureCheck("workspace-rbac", "", LEAST_PRIVILEGE, FAIL, f"broad roles given: {words}", fix)


def role_assignment(body: dict, workspace_id: str) -> RoleAssignment:
    """A RoleAssignment (Azure's JSON) as the checklist reads it: its role, who, and how close its scope is."""
    props = body.get("properties") or {}
    role = str(props.get("roleDefinitionId") or "").rstrip("/").rsplit("/", 1)[-1]
    scope = str(props.get("scope") or "").rstrip("/").lower()
    target = workspace_id.rstrip("/").lower()
    group = target.split("/providers/", 1)[0]
    subscription = "/".join(group.split("/")[:3])
    where = ("workspace" if scope.startswith(target) else "resource group" if scope == group
             else "subscription" if scope == subscription else "above")
    return RoleAssignment(role, str(props.get("principalType") or ""), where)


def _diagnostics(ws: str, found: tuple[DiagnosticSetting, ...] | Unreadable) -> PostureCheck:
    fix = (f"`az monitor diagnostic-settings create --name audit --resource <id of {ws}> --workspace <Log Analytics "
           "id> --logs '[{\"categoryGroup\":\"allLogs\",\"enabled\":true}]'`")
    if isinstance(found, Unreadable):
        return PostureCheck("workspace-diagnostics", "", DIAGNOSTICS, UNKNOWN, found.reason, fix)
    sending = [d for d in found if d.logs and d.destinations]
    if sending:
        where = sorted({place for d in sending for place in d.destinations})
        return PostureCheck("workspace-diagnostics", "", DIAGNOSTICS, PASS,
                            f"logs sent to {', '.join(where)} ({', '.join(d.name for d in sending)})", fix)
    finding = ("no diagnostic setting" if not found else
               f"{len(found)} diagnostic setting{'' if len(found) == 1 else 's'}, none sending logs anywhere")
    return PostureCheck("workspace-diagnostics", "", DIAGNOSTICS, FAIL, finding, fix)


def diagnostic_setting(body: dict) -> DiagnosticSetting:
    """A DiagnosticSettingsResource (Azure Monitor's JSON) as the checklist reads it."""
    props = body.get("properties") or {}
    places = [label for key, label in (("workspaceId", "Log Analytics"), ("storageAccountId", "storage account"),
                                       ("eventHubAuthorizationRuleId", "event hub"),
                                       ("marketplacePartnerId", "partner solution")) if props.get(key)]
    logs = any(isinstance(entry, dict) and entry.get("enabled") for entry in props.get("logs") or [])
    return DiagnosticSetting(str(body.get("name") or ""), logs, tuple(places))


def _credential_words(kind: str) -> str:
    return {"accountkey": "account key", "sas": "SAS token", "serviceprincipal": "service principal secret",
            "certificate": "service principal certificate"}.get(kind.lower(), kind)


def cost_tags(tags: dict[str, str]) -> list[str]:
    """The tags among `tags` that attribute cost, as name=value."""
    def norm(name: str) -> str:
        return re.sub(r"[\s_\-]", "", name.lower())
    return [f"{k}={v}" for k, v in sorted(tags.items()) if norm(k) in COST_TAG_NAMES and str(v).strip()]
