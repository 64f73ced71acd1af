"""A unit of work: an approval decision, its audit record and its outbox item commit together or not at all."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage import approvals, audit, outbox
from adapters.storage.approvals import APPROVED, PENDING, NewApproval
from adapters.storage.audit import AuditEntry
from adapters.storage.base import encode_time
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema, storage  # noqa: F401 (fixtures)

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)


def request() -> NewApproval:
    return NewApproval(action="traffic", workspace="ml-prod", environment="prod", target="fraud-api",
                       parameters={"split": {"blue": 0, "green": 100}}, before={"blue": 90, "green": 10},
                       after={"blue": 0, "green": 100}, reason="canary ok", requester_id="aad-olive",
                       requester_name="Olive", tenant_id="t1", conversation_id="19:general@thread.tacv2", quorum=1,
                       allow_self=False, approver_role="approver", created_at=NOON,
                       expires_at=NOON + timedelta(days=1))


async def decide(tx, approval_id: int, *, crash: bool) -> bool:
    if not await approvals.transition(tx, approval_id, PENDING, APPROVED, now=NOON):
        return False
    await audit.append(tx, AuditEntry(at=NOON, event="approved", actor_id="aad-ann", actor_name="Ann",
                                      action="traffic", target="fraud-api", approval_id=approval_id))
    await outbox.enqueue(tx, "19:general@thread.tacv2", {"text": "approved"}, dedupe_key=f"approval-{approval_id}",
                         now=NOON)
    if crash:
        raise RuntimeError("crashed before commit")
    return True


async def test_a_failed_unit_of_work_writes_none_of_its_parts(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request()))

    with pytest.raises(RuntimeError, match="before commit"):
        await storage.run_transaction(lambda tx: decide(tx, created.id, crash=True))

    async def state(tx):
        return ((await approvals.get(tx, created.id)).state, await audit.scan(tx), await outbox.find_items(tx),
                await audit.head(tx))

    assert await storage.run_transaction(state) == (PENDING, [], [], (0, audit.GENESIS_HASH))
    assert (await storage.run_transaction(audit.verify)).ok


async def test_a_committed_unit_of_work_writes_all_its_parts(storage):
    created = await storage.run_transaction(lambda tx: approvals.create(tx, request()))

    assert await storage.run_transaction(lambda tx: decide(tx, created.id, crash=False)) is True
    assert await storage.run_transaction(lambda tx: decide(tx, created.id, crash=False)) is False   # lost the CAS

    async def state(tx):
        return ((await approvals.get(tx, created.id)).state, [(r.seq, r.event) for r in await audit.scan(tx)],
                [i.dedupe_key for i in await outbox.find_items(tx)])

    assert await storage.run_transaction(state) == (APPROVED, [(1, "approved")], [f"approval-{created.id}"])


async def test_a_batch_of_rows_counts_its_changes_and_belongs_to_the_unit_of_work(storage):
    """Transaction.execute_many (one trip for many rows, e.g. a posture scan's lines): the rows changed
    in all, nothing for no rows, and none of it kept when the transaction fails."""
    at = encode_time(NOON)

    async def write(tx, *, crash: bool) -> tuple[int, int, int]:
        added = await tx.execute_many("INSERT INTO posture_scans (workspace, next_at) VALUES (?, ?)",
                                      [("ws-a", at), ("ws-b", at), ("ws-c", at)])
        claimed = await tx.execute_many("UPDATE posture_scans SET claimed_by = ? WHERE workspace = ?",
                                        [("r1", "ws-a"), ("r1", "ws-c"), ("r1", "ws-gone")])
        none = await tx.execute_many("DELETE FROM posture_scans WHERE workspace = ?", [])
        if crash:
            raise RuntimeError("crashed before commit")
        return added, claimed, none

    def rows(tx):
        return tx.fetch("SELECT workspace, claimed_by FROM posture_scans ORDER BY workspace")

    with pytest.raises(RuntimeError, match="before commit"):
        await storage.run_transaction(lambda tx: write(tx, crash=True))
    assert await storage.run_transaction(rows) == []
    assert await storage.run_transaction(lambda tx: write(tx, crash=False)) == (3, 2, 0)
    assert await storage.run_transaction(rows) == [("ws-a", "r1"), ("ws-b", ""), ("ws-c", "r1")]
