"""A bot killed while an approved change was executing settles it when it starts again (issue 17, item 3).

The crash is a BaseException raised inside the executor, before or after it calls the workspace:
like `kill -9`, nothing after it runs and no `except Exception` sees it. Then a new app starts over
the same database and workspace, as the restarted process would, and its first pass of the watch
loop re-checks the resource: the request ends succeeded or failed (not `executing` forever), its
card is edited through the outbox, and the audit trail records the outcome.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.storage import approvals as approval_store, audit as audit_log, instances, open_storage, operations, \
    outbox
from bot.app import GATE, build_workspaces, create_app
from bot.settings import load_settings
from commands.changes.kinds import CHANGE_KINDS
from commands.changes.gate import Gate
from commands.changes.policy import Policy
from tests.conftest import Chat, Clock, with_executor
from tests.storage_fixtures import make_storage, postgres_dsn, postgres_schema  # noqa: F401 (fixtures)
from tests.test_approvals import ARNE, OLGA, ROLES

CARD_ACTIVITY = "card-of-request-1"


class Crash(BaseException):
    """The process dies here."""


def crashing(when: str, real):
    """The traffic executor of a process killed before, or just after, it calls the workspace."""
    async def executor(ctx, change):
        if when == "before":
            raise Crash()
        await real(ctx, change)          # Azure accepted the change ...
        raise Crash()                    # ... and the process died before anything else
    return executor


@pytest.fixture
def crash_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", instance_id="bot-1")


@pytest.fixture
async def first_run(crash_settings):
    """The process that crashes: the real gate and storage over the bot's own files."""
    pools = [ThreadPoolExecutor(max_workers=4), ThreadPoolExecutor(max_workers=4)]
    workspaces = build_workspaces(crash_settings, pools, reset_demo=True)
    store = open_storage(crash_settings.effective_storage_url)
    store.audit_key = crash_settings.audit_key_bytes()     # the same MLOPSBOT_AUDIT_KEY as the restarted bot
    await store.open()
    clock = Clock()
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, clock=clock, user=OLGA)
    chat.gate.owner = instances.owner_id("bot-1", "firstrun")
    yield chat
    await store.close()
    for pool in pools:
        pool.shutdown(wait=True)


async def crash_while_executing(chat: Chat, monkeypatch, when: str) -> None:
    asked = await chat("traffic fraud-api blue=0 green=100 --reason 'green is better'")
    await chat.handler.delivered(asked, "conv-1", CARD_ACTIVITY)          # the host posted the card
    with_executor(monkeypatch, "traffic", crashing(when, CHANGE_KINDS["traffic"].execute))
    with pytest.raises(Crash):
        await chat.as_(ARNE).click("approve", "1")
    monkeypatch.undo()


async def stored(store):
    """Request #1, its operation, the audit trail, and the card edits that show a final state."""
    async def read(tx):
        edits = [item for item in await outbox.find_items(tx, conversation_id="conv-1")
                 if item.payload.get("update") == CARD_ACTIVITY and item.dedupe_key.split(":")[-2] in (
                     "succeeded", "failed")]
        return await approval_store.get(tx, 1), await operations.get(tx, 1), await audit_log.scan(tx), edits
    return await store.run_transaction(read, write=False)


async def restart(aiohttp_server, settings, clock):
    """Start the bot again over the same files; wait for its first pass to settle request #1."""
    server = await aiohttp_server(create_app(settings, clock=clock))
    store = server.app[GATE].store

    async def final() -> None:
        while True:
            request, *_ = await stored(store)
            if request.state not in ("approved", "executing"):
                return
            await asyncio.sleep(0.02)
    await asyncio.wait_for(final(), 10)
    return server, store


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")       # the dead process's wait
@pytest.mark.parametrize("when, state, outcome, split", [
    ("after", "succeeded", "✅ Traffic on fraud-api is now green=100. [Workspace ml-prod (prod)]", "green=100"),
    ("before", "failed", "❌ Traffic on fraud-api: blue=90 green=10 → blue=0 green=100 did not take effect: "
                         "the split is blue=90 green=10 (the endpoint is Succeeded). [Workspace ml-prod (prod)]",
     "blue=90 green=10"),
])
async def test_a_change_killed_mid_way_is_settled_when_the_bot_starts_again(
        first_run, crash_settings, aiohttp_server, monkeypatch, when, state, outcome, split):
    await crash_while_executing(first_run, monkeypatch, when)
    request, op, records, _ = await stored(first_run.handler.store)
    assert (request.state, op.state, op.owner) == ("executing", "pending", "bot-1/firstrun")   # intent first
    assert [r.event for r in records if r.event != "policy_loaded"][-1] == "executed"

    async def lease(tx):                             # the dead run was sending the vote's card update
        return await outbox.claim(tx, "bot-1/firstrun", now=first_run.clock(), lease_seconds=60, limit=10)
    assert await first_run.handler.store.run_transaction(lease)

    first_run.clock.advance(seconds=5)               # well inside the 1 min another replica would wait
    server, store = await restart(aiohttp_server, crash_settings, first_run.clock)
    request, op, records, edits = await stored(store)
    leased = await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)
    assert not [i for i in leased if i.lease_owner == "bot-1/firstrun"]     # taken back at once, not in 60 s
    assert request.state == state and op.state == "done"
    assert request.result == outcome
    settled = records[-1]
    assert (settled.event, settled.actor_name, settled.approval_id) == (state, "Arne Approver", 1)
    assert settled.detail == {"settled_after_restart": True, "operation": 1}
    assert (await store.run_transaction(audit_log.verify, write=False)).ok
    [edit] = edits                                   # the card everyone sees is edited, through the outbox
    assert edit.payload["update"] == CARD_ACTIVITY
    assert ("Approved and done" if state == "succeeded" else "Approved, but it failed") in edit.payload["text"]
    live = await first_run("endpoint fraud-api")
    assert f"Traffic: {split}" in live.text


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_another_replica_leaves_a_fresh_operation_to_its_owner(first_run, crash_settings, monkeypatch):
    """Only a restart of the same instance knows at once that the owner is gone; another replica
    gives the owner the grace, then settles it."""
    await crash_while_executing(first_run, monkeypatch, "after")
    store, clock = first_run.handler.store, first_run.clock
    other = Gate(first_run.gate.policy, store, CHANGE_KINDS, clock=clock, roles=ROLES, owner=instances.owner_id("bot-2", "b"))
    clock.advance(seconds=5)
    assert await other.recover_operations(first_run.handler.workspaces) == 0
    assert (await stored(store))[0].state == "executing"
    clock.advance(minutes=1)
    assert await other.recover_operations(first_run.handler.workspaces) == 1
    assert (await stored(store))[0].state == "succeeded"
    assert await other.recover_operations(first_run.handler.workspaces) == 0


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_two_replicas_settle_an_operation_exactly_once(make_storage, workspaces, monkeypatch):
    """Two replicas (SQLite file, and the real PostgreSQL server) re-check the same operation at
    the same moment: one claims it; one outcome, one audit record, one card edit."""
    first, second, third = make_storage(), make_storage(), make_storage()
    for store in (first, second, third):
        await store.open()
    clock = Clock()
    dead = Chat(workspaces, first, policy=Policy(), roles=ROLES, clock=clock, user=OLGA)
    dead.gate.owner = instances.owner_id("bot-0", "dead")
    await crash_while_executing(dead, monkeypatch, "after")
    clock.advance(minutes=2)
    replicas = [Gate(dead.gate.policy, store, CHANGE_KINDS, clock=clock, roles=ROLES, owner=instances.owner_id(name, "x"))
                for name, store in (("bot-1", second), ("bot-2", third))]
    counts = await asyncio.gather(*(gate.recover_operations(workspaces) for gate in replicas))
    assert sorted(counts) == [0, 1]

    async def read(tx):
        return (await approval_store.get(tx, 1), await audit_log.scan(tx),
                await outbox.find_items(tx, conversation_id="conv-1"), await audit_log.verify(tx))
    request, records, items, verification = await first.run_transaction(read, write=False)
    assert request.state == "succeeded" and verification.ok
    assert [r.event for r in records].count("succeeded") == 1
    assert [i.dedupe_key for i in items if i.payload.get("update") == CARD_ACTIVITY] == [
        "approval:1:update:conv-1:approved:1", "approval:1:update:conv-1:succeeded:1"]     # the vote's, the outcome's


async def test_a_request_an_older_version_left_executing_is_settled(workspaces, make_storage):
    """No operation was recorded for it (the old order: executing first, intent later): it gets
    one, once, and is settled from the resource like any other."""
    store = make_storage()
    await store.open()
    clock = Clock()
    chat = Chat(workspaces, store, policy=Policy(), roles=ROLES, clock=clock, user=OLGA)
    await chat("traffic fraud-api blue=0 green=100")

    async def strand(tx):                           # approved and moved to executing, then the process died
        await approval_store.transition(tx, 1, "pending", "executing", now=clock())
    await store.run_transaction(strand)
    clock.advance(minutes=2)
    new = Gate(chat.gate.policy, store, CHANGE_KINDS, clock=clock, roles=ROLES, owner=instances.owner_id("bot-1", "new"))
    assert await new.recover_operations(workspaces) == 1
    request = await store.run_transaction(lambda tx: approval_store.get(tx, 1), write=False)
    assert request.state == "failed"
    assert request.result.startswith("❌ Traffic on fraud-api: blue=90 green=10 → blue=0 green=100 did not take "
                                     "effect: the split is blue=90 green=10")
    assert await new.recover_operations(workspaces) == 0


async def test_a_restarted_bot_takes_back_its_earlier_runs_claims_at_once(make_storage):
    """Outbox leases, watches and job watches held by the earlier run of this instance are free
    again at start (no 60 s lease to wait out); another instance's are left alone."""
    from datetime import timedelta

    from adapters.storage import watches

    store = make_storage()
    await store.open()
    now = Clock()()

    async def setup(tx):
        # two conversations: the outbox never claims a conversation's later message while an earlier
        # one is out, so another replica's claim is only possible in another conversation
        for key, conversation in (("a", "conv-1"), ("b", "conv-2")):
            await outbox.enqueue(tx, conversation, {"text": key}, dedupe_key=key, now=now)
        await outbox.claim(tx, "bot-1/old", now=now, lease_seconds=60, limit=1)       # item a
        await outbox.claim(tx, "bot-2/live", now=now, lease_seconds=60, limit=1)      # item b
        await watches.create(tx, watches.NewWatch(workspace="ml-prod", endpoint="fraud-api", action="traffic",
                                                  history_id=1, started_at=now - timedelta(hours=1), baseline={}))
        await watches.claim_due(tx, "bot-1/old", started_before=now, now=now, lease_seconds=300)
    await store.run_transaction(setup)

    async def take_back(tx):
        return await instances.take_back(tx, instance="bot-1", owner="bot-1/new")
    assert await store.run_transaction(take_back) == {"outbox": 1, "watches": 1}

    async def claim(tx):
        return ([i.payload["text"] for i in await outbox.claim(tx, "bot-1/new", now=now, lease_seconds=60, limit=5)],
                [w.claimed_by for w in await watches.claim_due(tx, "bot-1/new", started_before=now, now=now)])
    assert await store.run_transaction(claim) == (["a"], ["bot-1/new"])


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_over_http_the_card_of_a_change_killed_mid_way_shows_its_outcome_after_the_restart(
        aiohttp_server, tmp_path, monkeypatch):
    """Through the real CloudAdapter: Alice asks in a channel, Bob approves on the card, the bot
    dies while Azure applies the change (the turn is cancelled under it, as a kill leaves it);
    the bot started again edits the card everyone sees to "Approved and done"."""
    import aiohttp

    from tests.teams_client import ALICE, BOB, TeamsStandIn
    from tests.test_approvals_http import CHANNEL, card_words, wait_until

    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                             approvers=BOB.aad_object_id, instance_id="bot-1")
    clock = Clock()
    first = await aiohttp_server(create_app(settings, reset_demo=True, clock=clock))
    real = CHANGE_KINDS["traffic"].execute

    async def dies_after_the_call(ctx, change):
        await real(ctx, change)
        raise asyncio.CancelledError()           # nothing after this runs in the dying process
    with_executor(monkeypatch, "traffic", dies_after_the_call)
    async with TeamsStandIn(str(first.make_url("/api/messages"))) as teams:
        [asked] = await teams.say("traffic fraud-api blue=0 green=100", mention=True, conversation=CHANNEL,
                                  kind="channel")
        card_activity = f"activity-{len(teams.connector.sent)}"
        with pytest.raises(aiohttp.ClientError):
            await teams.click(asked.card, "Approve", user=BOB, conversation=CHANNEL, kind="channel")
        monkeypatch.undo()
        request, op, *_ = await stored(first.app[GATE].store)
        assert (request.state, op.state) == ("executing", "pending")
        await first.close()

        clock.advance(seconds=10)
        second = await aiohttp_server(create_app(settings, clock=clock))
        teams.bot_url = str(second.make_url("/api/messages"))

        def card_done() -> bool:
            return any(s.method == "PUT" and s.path.endswith(f"/{card_activity}") and "Approved and done"
                       in card_words(s) for s in teams.connector.sent)
        await wait_until(card_done, timeout=10)
        [trail] = await teams.say("audit --target fraud-api", conversation=CHANNEL, kind="channel", mention=True)
        assert "#1 (traffic on fraud-api in ml-prod) succeeded" in card_words(trail)   # sentences, #19 item 8
        [endpoint] = await teams.say("endpoint fraud-api", conversation=CHANNEL, kind="channel", mention=True)
        assert "Traffic: green=100" in card_words(endpoint)


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
@pytest.mark.parametrize("command, action, when, ok, text", [
    ("scale fraud-api green 3", "scale", "after", True,
     "✅ Scale fraud-api/green: 1 → 3 instances: done (deployment fraud-api/green shows instances 3)."),
    ("scale fraud-api green 3", "scale", "before", False,
     "❌ Not done: Scale fraud-api/green: 1 → 3 instances. The bot stopped before it took effect: deployment "
     "fraud-api/green still shows instances 1. Ask again if it is still wanted."),
    ("archive fraud-model:1", "archive", "after", True, "✅ Archive fraud-model:1: hide it from lists"),
    ("stop ds-ci-alice", "stop", "before", False, "❌ Not done: Stop compute ds-ci-alice. The bot stopped"),
])
async def test_each_kind_of_change_is_told_from_its_resource(workspaces, store, monkeypatch, command, action, when,
                                                             ok, text):
    clock = Clock()
    old = Chat(workspaces, store, clock=clock)
    old.gate.owner = instances.owner_id("bot-1", "old")
    with_executor(monkeypatch, action, crashing(when, CHANGE_KINDS[action].execute))
    with pytest.raises(Crash):
        await old(command)
    monkeypatch.undo()
    new = Gate(old.gate.policy, store, CHANGE_KINDS, clock=clock, roles=old.gate.roles, owner=instances.owner_id("bot-1", "new"))
    assert await new.recover_operations(workspaces) == 1
    op = await store.run_transaction(lambda tx: operations.get(tx, 1), write=False)
    assert op.outcome["ok"] is ok and op.outcome["text"].startswith(text), op.outcome["text"]
    records = await store.run_transaction(audit_log.scan, write=False)
    assert [r.event for r in records if r.event != "policy_loaded"] == ["executed", "succeeded" if ok else "failed"]


def test_the_instance_id_defaults_to_the_host_name_and_is_checked(tmp_path, monkeypatch):
    import socket

    from bot.settings import SettingsError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPSBOT_INSTANCE_ID", raising=False)
    assert load_settings(data_dir=tmp_path).effective_instance_id == socket.gethostname()
    monkeypatch.setenv("MLOPSBOT_INSTANCE_ID", "bot-1")
    assert load_settings(data_dir=tmp_path).effective_instance_id == "bot-1"
    monkeypatch.setenv("MLOPSBOT_INSTANCE_ID", "bot/1")             # the separator of owner ids
    with pytest.raises(SettingsError) as refused:
        load_settings(data_dir=tmp_path)
    assert "MLOPSBOT_INSTANCE_ID" in str(refused.value)
