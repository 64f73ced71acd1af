"""Issue #17 item 11: identity is never ambiguous (pipelines marked, no anonymous changes, tenants apart).

In-process over the real handler, gate and storage; tests/test_approvals_http.py has the pipeline
impersonation through the real CloudAdapter and the pipeline API.
"""

from __future__ import annotations

from adapters.storage import approvals as approval_store, audit as audit_log
from commands.changes.audit import record_line
from commands.base.context import Role, RoleBook, User
from commands.changes.gate import Pipeline
from commands.changes.policy import Policy
from tests.conftest import Chat
from tests.test_approvals import ARNE, OLGA, ROLES

# Two allowed tenants; each has an operator and an approver.
T2_OPS = User(id="00000000-0000-0000-0000-0000000000b1", name="Tom Operator", tenant_id="t2")
T2_APP = User(id="00000000-0000-0000-0000-0000000000b2", name="Tina Approver", tenant_id="t2")
TWO_TENANTS = RoleBook({**ROLES.assignments, T2_OPS.id: Role.OPERATOR, T2_APP.id: Role.APPROVER}, Role.VIEWER)
ANONYMOUS = User(id="", name="Guest (anonymous)", tenant_id="t1")


def people(workspaces, store, roles=ROLES, user=OLGA) -> Chat:
    return Chat(workspaces, store, policy=Policy(), roles=roles, user=user)


def test_a_sender_without_an_object_id_is_at_most_a_viewer_whatever_the_default():
    for book in (RoleBook({}, Role.ADMIN), RoleBook({}, Role.OPERATOR), RoleBook({}, Role.VIEWER),
                 RoleBook({}, Role.VIEWER, open_until_assigned=True), RoleBook({"": Role.ADMIN}, Role.VIEWER)):
        assert book.placed(ANONYMOUS, Role.ADMIN, any_grant=True) == (Role.VIEWER, "no identity")


async def test_anonymous_participants_can_read_but_never_change_or_decide(workspaces, store):
    roles = RoleBook({OLGA.id: Role.OPERATOR}, Role.ADMIN)          # a generous default
    chat = people(workspaces, store, roles=roles)
    guest = chat.as_(ANONYMOUS)

    refused = await guest("traffic fraud-api blue=0 green=100")
    assert refused.text.startswith("`traffic` needs the Operator role; you have Viewer.")
    assert (await guest("endpoint fraud-api")).card is not None            # reading still works

    await chat("traffic fraud-api blue=0 green=100")                     # Olga asks (approval)
    vote = await guest.click("approve", "1")
    assert vote.text.startswith("`approve` needs the Operator role; you have Viewer.")
    request = await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)
    assert (request.state, request.votes) == ("pending", ())

    # even with a role somehow in hand, the gate refuses an empty identity
    ctx = await chat.handler.context_for(ANONYMOUS, "conv-1", role=Role.ADMIN)
    assert (await chat.gate.vote(ctx, 1, "approve")).text == (
        "You joined without an organization account (no Entra object id), so you can read but not vote, confirm "
        "or withdraw. Sign in to Teams with your work account.")
    assert (await chat.gate.withdraw(ctx, 1)).text.startswith("You joined without an organization account")
    assert (await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)).state == "pending"


async def test_each_tenant_sees_only_its_own_approvals_and_audit_records(workspaces, store):
    one = people(workspaces, store, roles=TWO_TENANTS, user=OLGA)
    two = one.as_(T2_OPS)
    await one("traffic fraud-api blue=0 green=100 --reason 'tenant one release'")
    await two("traffic fraud-api blue=50 green=50 --reason 'tenant two release'")

    mine = await one("approvals all")
    theirs = await two("approvals all")
    assert "#1" in mine.card["fallbackText"] and "#2" not in mine.card["fallbackText"]
    assert "#2" in theirs.card["fallbackText"] and "#1" not in theirs.card["fallbackText"]
    assert (await two("approval 1")).text == "There is no approval request #1. Type `approvals all` to see them."
    cross = await one.as_(T2_APP).click("approve", "1")
    assert cross.text == "There is no approval request #1. Type `approvals` to see the open ones."
    assert (await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)).votes == ()

    trail_one = (await one("audit")).card["fallbackText"]
    trail_two = (await two("audit")).card["fallbackText"]
    assert "Olga Operator asked for #1 (traffic" in trail_one and "Tom Operator" not in trail_one
    assert "Tom Operator asked for #" in trail_two and "Olga Operator" not in trail_two   # sentences, #19 item 8

    # the tenant's own approver still decides its request; the records carry the tenant
    assert (await one.as_(ARNE).click("approve", "1")).text.startswith("⏳")
    await one.settle()
    records = await store.run_transaction(audit_log.scan, write=False)
    assert {(r.event, r.tenant_id) for r in records if r.approval_id == 1} >= {
        ("requested", "t1"), ("vote:approve", "t1"), ("approved", "t1"), ("succeeded", "t1")}
    assert [r.reason for r in records if r.event == "requested"] == ["tenant one release", "tenant two release"]


async def test_a_pipeline_named_like_an_approver_is_marked_as_a_pipeline_everywhere(workspaces, store):
    chat = people(workspaces, store)
    pipeline_user = User(id="pipeline:Arne Approver", name="Arne Approver", tenant_id="t1")
    ctx = await chat.handler.context_for(
        pipeline_user, "conv-1", role=Role.OPERATOR,
        pipeline=Pipeline(run_url="https://github.com/contoso/fraud/actions/runs/7", conversation_id="conv-1",
                          tenant_id="t1", execute=False))
    from commands.changes.change import Change
    await chat.gate.submit(ctx, Change("release", "ml-prod", "prod", "fraud 2026.12", {}, {}, {},
                                       "release fraud 2026.12", reason="nightly"))
    await chat.as_(ARNE).click("approve", "1")

    records = [r for r in await store.run_transaction(audit_log.scan, write=False) if r.approval_id == 1]
    lines = [record_line(r) for r in records]
    assert lines[0] == "Arne Approver (pipeline) asked for #1 (release on fraud 2026.12 in ml-prod): nightly"  # sentences since issue #19 item 8
    assert lines[1] == "Arne Approver approved #1 (release on fraud 2026.12 in ml-prod): nightly"
    shown = (await chat("approval 1")).card["fallbackText"]
    assert "Asked by: Arne Approver (pipeline)" in shown
    listed = (await chat("approvals all")).card["fallbackText"]
    assert "asked by Arne Approver (pipeline)" in listed
