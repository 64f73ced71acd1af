"""Two bot replicas on one database (a SQLite file, and the real PostgreSQL server): concurrent
clicks across both execute once, a grant made on one is seen on the other, and concurrent audit
appends keep one valid chain."""

from __future__ import annotations

import asyncio

from adapters.storage import approvals as approval_store, audit as audit_log
from commands.base.context import Role, RoleBook, User
from commands.changes.policy import Policy
from tests.conftest import Chat
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema  # noqa: F401 (fixtures)
from tests.test_approvals import OLGA, ROLES

ADA = User(id="00000000-0000-0000-0000-0000000000ad", name="Ada Admin", tenant_id="t1")
APPROVERS = [User(id=f"00000000-0000-0000-0000-1{i:011d}", name=f"Approver {i}", tenant_id="t1") for i in range(20)]
BOOK = RoleBook({**ROLES.assignments, ADA.id: Role.ADMIN, **{a.id: Role.APPROVER for a in APPROVERS}}, Role.VIEWER)


async def replicas(make_storage, workspaces) -> tuple[Chat, Chat]:
    first, second = make_storage(), make_storage()
    await first.open()
    await second.open()
    return (Chat(workspaces, first, policy=Policy(), roles=BOOK, user=OLGA),
            Chat(workspaces, second, policy=Policy(), roles=BOOK, user=OLGA))


async def test_clicks_on_two_replicas_execute_once(make_storage, workspaces):
    one, two = await replicas(make_storage, workspaces)
    await one("traffic fraud-api blue=0 green=100")
    clicks = [(one if i % 2 else two).as_(approver).click("approve", "1") for i, approver in enumerate(APPROVERS)]
    replies = await asyncio.gather(*clicks)
    await one.settle()
    await two.settle()
    assert sum(r.text.startswith("⏳ Traffic on fraud-api") for r in replies) == 1

    async def read(tx):
        return await approval_store.get(tx, 1), await audit_log.scan(tx), await audit_log.verify(tx)
    request, records, verification = await one.handler.store.run_transaction(read, write=False)
    assert request.state == "succeeded" and len(request.votes) == 1
    assert [r.event for r in records].count("executed") == 1
    assert verification.ok and verification.checked == len(records)
    assert "Traffic: green=100" in (await two("endpoint fraud-api")).text


async def test_a_grant_on_one_replica_is_seen_on_the_other(make_storage, workspaces):
    one, two = await replicas(make_storage, workspaces)
    carol = User(id="00000000-0000-0000-0000-00000000ca20", name="Carol", tenant_id="t1")
    assert "Viewer" in (await two.as_(carol)("whoami")).text
    granted = await one.as_(ADA)(f"grant {carol.id} approver")
    assert granted.text == f"{carol.id} is now Approver. Recorded in the audit trail."
    assert "Approver" in (await two.as_(carol)("whoami")).text
    await two("traffic fraud-api blue=0 green=100")
    voted = await two.as_(carol).click("approve", "1")
    assert voted.text.startswith("⏳ Traffic on fraud-api")
    await two.settle()
    revoked = await two.as_(ADA)(f"revoke {carol.id}")
    assert revoked.text.startswith(f"{carol.id} is no longer Approver")
    assert "Viewer" in (await one.as_(carol)("whoami")).text


async def test_concurrent_appends_from_two_replicas_keep_one_chain(make_storage, workspaces):
    one, two = await replicas(make_storage, workspaces)
    users = [User(id=f"00000000-0000-0000-0000-2{i:011d}", name=f"User {i}", tenant_id="t1") for i in range(30)]
    grants = [(one if i % 2 else two).as_(ADA)(f"grant {u.id} operator") for i, u in enumerate(users)]
    await asyncio.gather(*grants)
    verification = await two.handler.store.run_transaction(audit_log.verify, write=False)
    records = await one.handler.store.run_transaction(audit_log.scan, write=False)
    assert verification.ok, verification.problem
    assert [r.seq for r in records] == list(range(1, 31))
    assert sorted(r.target for r in records) == sorted(f"user {u.id} ({u.id})" for u in users)
    assert all(r.prev_hash == p.hash for p, r in zip(records, records[1:]))
