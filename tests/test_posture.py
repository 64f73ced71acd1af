"""Security posture (issue 22): the production checklist over the embedded workspace and over a
replayed Azure workspace (published REST examples through the real MLClient), "cannot tell" for a
read the role lacks, the states remembered with since-when, and a check turning to fail posted to
subscribers and shown in the digest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.azureml.workspace import AzureMLService
from adapters.posture import CHECKLIST, FAIL, PASS, UNKNOWN, PostureFacts, WorkspaceSecurity, evaluate
from adapters.storage import outbox
from adapters.storage import posture as stored
from commands.digests.digest import gather
from commands.digests.digest_card import attention, digest_card
from commands.alerts.posture import scan_due
from commands.base.ui import as_text
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.replay import FakeWorkspace, ml_client, online_endpoint
from tests.replay_posture import (CONTRIBUTOR, OWNER, READER_ROLE, diagnostic_settings, role_assignments,
                                  serve_diagnostics, serve_posture, serve_roles, workspace_body)
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 - fixtures

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def by_key(checks) -> dict[str, tuple[str, str]]:
    return {c.key: (c.status, c.finding) for c in checks}


# ---------------------------------------------------------------- Azure, replayed

def replayed(**kwargs) -> tuple[FakeWorkspace, AzureMLService]:
    workspace = FakeWorkspace()
    serve_posture(workspace, **kwargs)
    fraud = workspace.get("onlineEndpoints", "fraud-api")
    fraud["properties"].update(publicNetworkAccess="Disabled", authMode="AADToken")
    return workspace, AzureMLService(ml_client(workspace.transport), identity="mlops-bot")


def test_the_replayed_workspace_is_judged_on_every_item_azure_exposes():
    workspace, svc = replayed(body=workspace_body(tags={"cost-center": "CC-1234"}))
    checks = evaluate(svc.security_posture())
    found = by_key(checks)
    # Workspaces_Get as published: public access Disabled, one approved private endpoint, approved outbound
    # only, a customer-managed key, hbi off, system- and user-assigned identity
    assert found["workspace-public-network"] == (PASS, "public network access Disabled")
    assert found["workspace-private-endpoint"] == (PASS, "1 approved private endpoint")
    assert found["workspace-managed-network"] == (PASS, "managed network isolation AllowOnlyApprovedOutbound")
    assert found["workspace-outbound"][0] == PASS
    assert found["workspace-cmk"] == (PASS, "encrypted with a customer-managed key")
    assert found["workspace-hbi"] == (FAIL, "high business impact off")
    assert found["workspace-identity"] == (PASS, "identity SystemAssigned,UserAssigned")
    assert found["workspace-tags"] == (PASS, "cost tags cost-center=CC-1234")
    # online endpoints: the published example says AMLToken and nothing of public access (Azure: Enabled)
    assert found["endpoint-auth:churn-api"] == (
        FAIL, "auth mode aml_token (callers use keys or Azure ML tokens, not Entra ID)")
    assert found["endpoint-auth:fraud-api"] == (PASS, "auth mode aad_token")
    assert found["endpoint-public-network:churn-api"] == (FAIL, "public network access Enabled")
    assert found["endpoint-public-network:fraud-api"] == (PASS, "public network access Disabled")
    # Compute_Get ComputeInstance as published: SSH Enabled, no idle shutdown; AmlCompute kept warm at 2 nodes
    assert found["compute-ssh:ds-ci-posture"] == (FAIL, "SSH open to the internet (key login, not Entra)")
    assert found["compute-public-ip:ds-ci-posture"] == (FAIL, "public IP address")
    assert found["compute-idle-shutdown:ds-ci-posture"] == (FAIL, "never shuts down when idle (billed at rest)")
    assert found["compute-min-nodes:gpu-warm"] == (FAIL, "2 nodes kept at rest (STANDARD_NC6), billed while idle")
    assert found["compute-min-nodes:cpu-cluster"] == (PASS, "0 nodes kept at rest")
    assert found["compute-ssh:gpu-warm"] == (PASS, "no public SSH")
    # Datastores_List: the published AccountKey one fails, an identity-based one passes
    assert found["datastore-credentials:legacy-exports"] == (FAIL, "stores a credential (account key)")
    assert found["datastore-credentials:workspaceblobstore"] == (PASS, "identity-based access")
    # Azure Monitor's Diagnostic Settings - List (published example): all logs to Log Analytics
    assert found["workspace-diagnostics"] == (PASS, "logs sent to Log Analytics (audit-to-log-analytics)")
    # Role Assignments - List For Scope: Owner on the subscription (not judged), Data Scientist on the workspace
    assert found["workspace-rbac"] == (PASS, "no Owner, Contributor or access administrator among the 1 role "
                                             "assignment on the workspace and its resource group")
    assert {c.item for c in checks} == set(CHECKLIST)
    assert all(c.fix for c in checks)
    reads = {(r.method, r.path.rsplit("/", 1)[-1]) for r in workspace.transport.sent()}
    assert {("GET", "ws-prod"), ("GET", "onlineEndpoints"), ("GET", "computes"), ("GET", "datastores"),
            ("GET", "diagnosticSettings"), ("GET", "roleAssignments")} <= reads
    [roles] = [r for r in workspace.transport.sent() if r.path.endswith("/roleAssignments")]
    assert (roles.api_version, roles.query["$filter"]) == ("2022-04-01", ["atScope()"])
    [diagnostics] = [r for r in workspace.transport.sent() if r.path.endswith("/diagnosticSettings")]
    assert (diagnostics.host, diagnostics.api_version) == ("management.azure.com", "2021-05-01-preview")
    assert not any("listSecrets" in r.path or "listKeys" in r.path for r in workspace.transport.sent())


def test_a_workspace_without_hardening_fails_where_it_should():
    _, svc = replayed(body=workspace_body(public_network_access="Enabled", private_endpoints=False,
                                          isolation_mode="Disabled", cmk=False, identity="None", tags={"env": "prod"}))
    found = by_key(evaluate(svc.security_posture()))
    assert found["workspace-public-network"] == (FAIL, "public network access Enabled")
    assert found["workspace-private-endpoint"] == (FAIL, "0 approved private endpoints")
    assert found["workspace-managed-network"] == (FAIL, "managed network isolation Disabled")
    assert found["workspace-outbound"] == (FAIL, "outbound open (isolation Disabled)")
    assert found["workspace-cmk"] == (FAIL, "Microsoft-managed keys")
    assert found["workspace-identity"] == (FAIL, "identity none")
    assert found["workspace-tags"] == (FAIL, "no cost tag (tags: env)")


def test_diagnostic_settings_that_send_no_logs_fail():
    workspace, svc = replayed()
    serve_diagnostics(workspace, diagnostic_settings(("metrics-only", False)))
    found = by_key(evaluate(svc.security_posture()))
    assert found["workspace-diagnostics"] == (FAIL, "1 diagnostic setting, none sending logs anywhere")
    serve_diagnostics(workspace, {"value": []})
    assert by_key(evaluate(svc.security_posture()))["workspace-diagnostics"] == (FAIL, "no diagnostic setting")
    serve_diagnostics(workspace, status=403)
    assert by_key(evaluate(svc.security_posture()))["workspace-diagnostics"] == (
        UNKNOWN, "the bot's identity lacks Microsoft.Insights/diagnosticSettings/read")


def test_broad_roles_close_to_the_workspace_fail_least_privilege():
    workspace, svc = replayed()
    custom = "0b5fe924-9a61-425c-96af-cfe6e287ca2d"          # the published example's own role definition
    serve_roles(workspace, role_assignments(
        (OWNER, "User", "subscription"), (CONTRIBUTOR, "User", "resource group"), (CONTRIBUTOR, "User", "resource group"),
        (OWNER, "ServicePrincipal", "workspace"), (READER_ROLE, "Group", "workspace"), (custom, "Group", "workspace")))
    assert by_key(evaluate(svc.security_posture()))["workspace-rbac"] == (
        FAIL, "broad roles given: Contributor to a User on the resource group ×2, Owner to a ServicePrincipal on "
              "the workspace")
    serve_roles(workspace, status=403)
    assert by_key(evaluate(svc.security_posture()))["workspace-rbac"] == (
        UNKNOWN, "the bot's identity lacks Microsoft.Authorization/roleAssignments/read")


def test_a_read_the_role_lacks_is_cannot_tell_naming_the_action():
    _, svc = replayed(forbidden=("datastores",))
    facts = svc.security_posture()
    [line] = [c for c in evaluate(facts) if c.check == "datastore-credentials"]
    assert (line.status, line.finding) == (
        UNKNOWN, "the bot's identity lacks Microsoft.MachineLearningServices/workspaces/datastores/read")
    assert line.subject == "datastores"
    assert not isinstance(facts.settings, type(facts.datastores))      # the other reads still answered

    _, svc = replayed(forbidden=("workspace", "compute"))
    found = by_key(evaluate(svc.security_posture()))
    assert found["workspace-cmk"] == (UNKNOWN, "the bot's identity lacks Microsoft.MachineLearningServices/"
                                               "workspaces/read")
    assert found["compute-ssh"] == (UNKNOWN, "the bot's identity lacks Microsoft.MachineLearningServices/"
                                             "workspaces/computes/read")
    assert found["endpoint-auth:churn-api"][0] == FAIL


# ---------------------------------------------------------------- the embedded workspace and the command

async def test_posture_of_the_embedded_workspace(chat):
    answer = await chat("posture")
    assert_valid_card(answer.card)
    words = answer.text
    assert words.startswith("Security posture\nAs of ")
    assert "Workspace ml-prod (prod)" in words
    for item in CHECKLIST:
        assert item in words
    assert "❌ fail · endpoint churn-api: public network access Enabled (failing when first checked, " in words
    assert "❌ fail · compute ds-ci-bob: SSH open to the internet (key login, not Entra)" in words
    assert "❌ fail · datastore workspacefilestore: stores a credential (account key)" in words
    assert "❌ fail · workspace: broad roles given: Contributor to a User on the resource group" in words
    assert "Fix: `az ml compute update -n ds-ci-bob -w ml-prod --idle-time-before-shutdown-minutes 60`" in words
    assert "✅ 2 pass: endpoint credit-api, endpoint fraud-api" in words
    assert "turned to fail just now" not in words                       # the first scan is the baseline


async def test_posture_words_get_a_clear_answer(chat):
    assert (await chat("posture --workspace ml-dev")).text.startswith("No workspace named 'ml-dev'.")
    assert "Usage: `posture [--workspace NAME]`" in (await chat("posture --verbose")).text
    # a word `posture` does not take is plain language now (issue 20): read as the command, which says so
    assert (await chat("posture extra")).text.startswith("Read as `posture`\n")


def test_the_card_stays_valid_and_small_for_many_lines():
    from commands.alerts.posture import Line, WorkspacePosture, posture_card
    facts = PostureFacts("ml-prod", WorkspaceSecurity(), tuple(), tuple(), tuple())
    checks = evaluate(facts)
    many = checks * 60
    built = posture_card([WorkspacePosture("ml-prod", "prod", tuple(Line(c) for c in many)),
                          WorkspacePosture("ml-dev", "dev", unreadable="Azure ML did not answer")], NOW)
    assert_valid_card(built)
    words = as_text(built)
    assert "Cannot tell anything: Azure ML did not answer" in words
    assert "more not passing: `posture --workspace ml-prod`" in words


# ---------------------------------------------------------------- posture changes are news

async def items(store) -> list:
    return await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)


async def test_a_check_turning_to_fail_is_posted_shown_since_when_and_in_the_digest(workspaces, store):
    clock = Clock(NOW)
    chat = Chat(workspaces, store, clock=clock)
    local = workspaces.default.service
    assert (await chat("subscribe posture", conversation="c-sec")).text.startswith("Subscribed this chat: #1 posture")
    assert await scan_due(store, workspaces, owner="r1", clock=clock) == 0     # the baseline: nothing is news
    assert await scan_due(store, workspaces, owner="r1", clock=clock) == 0     # not due again within the hour

    clock.moment = NOW + timedelta(minutes=30)
    local.change_security("endpoint", "fraud-api", public_network_access="Enabled")
    clock.moment = NOW + timedelta(hours=1, minutes=1)
    assert await scan_due(store, workspaces, owner="r1", clock=clock) == 1
    [posted] = [i for i in await items(store) if i.conversation_id == "c-sec"]
    card = posted.payload["card"]
    assert_valid_card(card)
    assert card["body"][0]["text"] == "🟠 Posture: Private endpoints now fails for endpoint fraud-api"
    assert "Failing since: 2026-12-07 10:01 UTC" in card["fallbackText"]
    # the alert card shows facts as plain text (commands.base.ui.plain: backticks become look-alikes)
    assert "Fix: ˋaz ml online-endpoint update -n fraud-api -w ml-prod --set public_network_access=disabledˋ" in (
        card["fallbackText"])

    shown = await chat("posture")
    assert "❌ fail · endpoint fraud-api: public network access Enabled (failing since 2026-12-07 10:01 UTC)" in (
        shown.text)
    history = await store.run_transaction(lambda tx: stored.transitions(tx, "ml-prod"), write=False)
    assert history[0][:3] == ("endpoint-public-network:fraud-api", PASS, FAIL)

    gathered = await gather(workspaces.default, store, conversation_id="c-digest", now=clock.moment)
    assert "1 security check turned to fail" in attention(gathered.digest)
    built = digest_card(gathered.digest)
    assert_valid_card(built)
    assert "❌ Private endpoints: endpoint fraud-api (public network access Enabled)" in built["fallbackText"]

    # fixed again: the alert resolves (its card is edited, nothing new posted) and leaves the digest
    local.change_security("endpoint", "fraud-api", public_network_access="Disabled")
    before = len(await items(store))
    await chat("posture")
    edits = (await items(store))[before:]
    assert [(i.conversation_id, i.payload.get("update_of")) for i in edits] == [("c-sec", posted.dedupe_key)]
    assert edits[0].payload["card"]["body"][0]["text"].startswith("✅ Resolved: Posture: Private endpoints passes")
    gathered = await gather(workspaces.default, store, conversation_id="c-digest", now=clock.moment)
    assert gathered.digest.posture == ()


# ---------------------------------------------------------------- storage, both databases

async def test_states_remember_since_when_across_cannot_tell(storage):  # noqa: F811
    t0, t1, t2, t3 = (NOW + timedelta(hours=h) for h in range(4))

    async def scan(status: str, at: datetime):
        return await storage.run_transaction(lambda tx: stored.record(
            tx, "ml-prod", [("endpoint-auth:fraud-api", "endpoint-auth", status, "Entra-only auth", status)], at))

    assert await scan(PASS, t0) == []                                   # first seen: baseline
    [to_unknown] = await scan(UNKNOWN, t1)
    assert not to_unknown.news
    [to_fail] = await scan(FAIL, t2)
    assert to_fail.news and to_fail.state.known_since == t2           # pass, cannot tell, fail: news
    assert await scan(FAIL, t3) == []
    state = (await storage.run_transaction(lambda tx: stored.states(tx, "ml-prod")))["endpoint-auth:fraud-api"]
    assert (state.status, state.known_since, state.turned_failing_at, state.checked_at) == (FAIL, t2, t2, t3)
    [again_unknown] = await scan(UNKNOWN, t3)
    [still_failing] = await scan(FAIL, t3 + timedelta(hours=1))
    assert not still_failing.news and still_failing.state.known_since == t2   # fail, cannot tell, fail: not news
    turned = await storage.run_transaction(lambda tx: stored.turned_failing(tx, "ml-prod", t1))
    assert [s.key for s in turned] == ["endpoint-auth:fraud-api"]
    assert await storage.run_transaction(lambda tx: stored.turned_failing(tx, "ml-prod", t3)) == []

    # a resource gone is forgotten, unless its read failed this time
    await storage.run_transaction(lambda tx: stored.record(tx, "ml-prod", [], t3, keep=["endpoint-"]))
    assert await storage.run_transaction(lambda tx: stored.states(tx, "ml-prod"))
    await storage.run_transaction(lambda tx: stored.record(tx, "ml-prod", [], t3))
    assert await storage.run_transaction(lambda tx: stored.states(tx, "ml-prod")) == {}


async def test_one_replica_claims_each_scan(storage):  # noqa: F811
    hour = timedelta(hours=1)
    claims = [await storage.run_transaction(lambda tx, o=owner: stored.claim_scan(tx, "ml-prod", o, NOW, hour))
              for owner in ("r1", "r2")]
    assert claims == [True, False]
    assert await storage.run_transaction(lambda tx: stored.claim_scan(tx, "ml-prod", "r2", NOW + hour, hour))


def test_unknown_statuses_are_refused():
    with pytest.raises(ValueError):
        import asyncio

        class Tx:
            dialect = "sqlite"

            async def fetch(self, sql, params=()):
                return []

            async def execute(self, sql, params=()):
                return 0
        asyncio.run(stored.record(Tx(), "w", [("k", "c", "maybe", "i", "f")], NOW))


def test_online_endpoint_fixture_still_parses():
    assert online_endpoint("x", {"a": 100})["properties"]["authMode"] == "AMLToken"


def test_text_from_azure_is_shown_plain_in_the_card():
    """A tag value is Azure's data, not the bot's words: no link, no emphasis on the card."""
    from commands.alerts.posture import Line, WorkspacePosture, posture_card
    facts = PostureFacts("ml-prod", WorkspaceSecurity(tags={"[pay here](https://evil.example) **now**": "1"}))
    checks = evaluate(facts)
    built = posture_card([WorkspacePosture("ml-prod", "prod", tuple(Line(c) for c in checks))], NOW)
    assert_valid_card(built)
    shown = " ".join(block.get("text", "") for block in built["body"])
    assert "](https://evil" not in shown and "**now**" not in shown
    assert "no cost tag (tags: [pay here]\u200b(https://evil.example) \u2217\u2217now\u2217\u2217)" in shown


async def test_the_digest_scans_the_posture_itself_and_reports_what_turned_to_fail(workspaces, store):
    """No `subscribe posture` and no `posture` typed: the digest's own scan is the baseline, the next
    digest names the check that turned to fail since."""
    from adapters.storage import digests
    ml = workspaces.default
    first = await gather(ml, store, conversation_id="c-digest", now=NOW)
    assert first.digest.posture == ()
    await store.run_transaction(lambda tx: digests.remember(tx, "c-digest", ml.name, first.snapshot, NOW))
    ml.service.change_security("datastore", "sales-lake", credentials="Sas")
    later = NOW + timedelta(days=1)
    second = await gather(ml, store, conversation_id="c-digest", now=later)
    assert second.digest.posture == ("Managed identities: datastore sales-lake (stores a credential (SAS token))",)
    assert "1 security check turned to fail" in attention(second.digest)
    assert_valid_card(digest_card(second.digest))


async def test_a_read_that_fails_for_a_while_keeps_its_lines_and_their_since(store):
    """The compute read is refused for one scan: its lines (all four kinds) are neither forgotten nor
    news when it answers again."""
    from commands.alerts.posture import remember
    workspace, svc = replayed()
    first = evaluate(svc.security_posture())
    await remember(store, "ml-prod", first, NOW)
    serve_posture(workspace, forbidden=("compute",))
    blind = evaluate(svc.security_posture())
    assert by_key(blind)["compute-ssh"][0] == UNKNOWN
    _, news, cards = await remember(store, "ml-prod", blind, NOW + timedelta(hours=1))
    kept = await store.run_transaction(lambda tx: stored.states(tx, "ml-prod"), write=False)
    assert {"compute-idle-shutdown:ds-ci-posture", "compute-min-nodes:gpu-warm", "compute-ssh:ds-ci-posture",
            "compute-public-ip:gpu-warm"} <= set(kept)
    assert kept["compute-min-nodes:gpu-warm"].known_since == NOW
    _, news, cards = await remember(store, "ml-prod", first, NOW + timedelta(hours=2))
    assert (news, cards) == (set(), 0)
