"""Outcomes that survive a restart, and the acknowledgement edited in place with the outcome."""

from __future__ import annotations

import pytest

from adapters.storage import audit as audit_log, operations, outbox, traffic_history
from bot.app import GATE, SCHEDULER, create_app
from bot.settings import load_settings
from commands.changes.kinds import CHANGE_KINDS
from commands.base.context import Track
from commands.changes.gate import Gate
from tests.conftest import Chat, Clock
from tests.teams_client import ALICE, TeamsStandIn
from tests.test_approvals_http import wait_until


async def outbox_items(store):
    async def read(tx):
        return await outbox.find_items(tx)
    return await store.run_transaction(read, write=False)


async def events(store):
    return [(r.event, r.action) for r in await store.run_transaction(audit_log.scan, write=False)
            if r.event != "policy_loaded"]


async def test_the_acknowledgement_is_edited_with_the_outcome_whatever_comes_first(chat, store):
    ack = await chat("traffic fraud-api blue=60 green=40")
    assert ack.track == Track("operation", 1)
    await chat.handler.delivered(ack, "conv-1", "ack-activity-1")      # the host sent the "⏳ ..." message
    [outcome] = await chat.settle()
    assert outcome.text.startswith("✅ Traffic on fraud-api is now")
    [item] = await outbox_items(store)
    assert (item.conversation_id, item.payload) == ("conv-1", {"text": outcome.text, "update": "ack-activity-1"})

    second = await chat("traffic fraud-api blue=70 green=30")         # the outcome before the host's report
    await chat.settle()
    assert len(await outbox_items(store)) == 1
    await chat.handler.delivered(second, "conv-1", "ack-activity-2")
    await chat.handler.delivered(second, "conv-1", "ack-activity-2")  # reported twice: posted once
    items = await outbox_items(store)
    assert [i.payload.get("update") for i in items] == ["ack-activity-1", "ack-activity-2"]
    assert items[1].payload["text"].startswith("✅ Traffic on fraud-api is now blue=70")


async def test_an_operation_left_in_flight_is_reported_once_after_a_restart(workspaces, store):
    clock = Clock()
    old = Chat(workspaces, store, clock=clock)
    old.gate.owner = "old-process"
    ack = await old("traffic fraud-api blue=30 green=70 --reason 'before the restart'")
    await old.handler.delivered(ack, "conv-1", "ack-activity-1")
    [orphan] = old.background            # the process stops here: nobody awaits the operation
    old.background.clear()
    assert await events(store) == [("executed", "traffic")]

    clock.advance(minutes=5)
    new = Gate(old.gate.policy, store, CHANGE_KINDS, clock=clock, roles=old.gate.roles, owner="new-process")
    assert await new.recover_operations(workspaces) == 1
    assert await new.recover_operations(workspaces) == 0             # reported once
    assert await events(store) == [("executed", "traffic"), ("succeeded", "traffic")]
    [item] = await outbox_items(store)
    assert item.payload == {"text": "✅ Traffic on fraud-api is now green=70 blue=30. [Workspace ml-prod (prod)]",
                            "update": "ack-activity-1"}

    async def history(tx):
        return await traffic_history.for_endpoint(tx, "ml-prod", "fraud-api")
    [entry] = await store.run_transaction(history, write=False)
    assert (entry.after, entry.reason, entry.actor_name) == (
        {"blue": 30, "green": 70}, "before the restart", "Dana Dev")

    late = await orphan                  # the old process's wait finishing after all changes nothing
    assert late.ok is True
    assert len(await events(store)) == 2 and len(await outbox_items(store)) == 1


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")    # the stopped process's wait
async def test_a_recheck_that_finds_the_change_missing_reports_a_failure(workspaces, store):
    clock = Clock()
    old = Chat(workspaces, store, clock=clock)
    old.gate.owner = "old-process"
    await old("canary fraud-api green 50")
    old.background.clear()                                            # stopped; the coroutine is dropped
    workspaces.default.service.set_traffic("fraud-api", {"blue": 90, "green": 10}).wait(None)   # undone meanwhile
    clock.advance(minutes=5)
    new = Gate(old.gate.policy, store, CHANGE_KINDS, clock=clock, roles=old.gate.roles, owner="new-process")
    assert await new.recover_operations(workspaces) == 1          # reported; the ack never landed: nothing to edit

    async def ops(tx):
        return await operations.get(tx, 1)
    op = await store.run_transaction(ops, write=False)
    assert (op.state, op.posted, op.outcome["ok"]) == ("done", False, False)
    assert op.outcome["text"].startswith("❌ Canary on fraud-api: green to 50% (blue=90 green=10 → blue=50 green=50) "
                                         "did not take effect: the split is blue=90 green=10")
    clock.advance(minutes=2)
    assert await new.recover_operations(workspaces) == 1           # posted as a new message instead
    [item] = await outbox_items(store)
    assert "update" not in item.payload and item.payload["text"] == op.outcome["text"]
    assert [e for e in await events(store)] == [("executed", "canary"), ("failed", "canary")]


@pytest.fixture
def restart_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = tmp_path / "direct.toml"
    policy.write_text('[[rule]]\nmode = "direct"\n')
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", policy_file=str(policy))


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_over_http_a_restarted_bot_edits_the_acknowledgement_with_the_outcome(aiohttp_server, restart_settings):
    clock = Clock()
    first = await aiohttp_server(create_app(restart_settings, reset_demo=True, clock=clock))
    first.app[GATE].spawn = lambda awaitable: awaitable.close()        # the process dies before the outcome
    async with TeamsStandIn(str(first.make_url("/api/messages"))) as teams:
        [ack] = await teams.say("traffic fraud-api blue=20 green=80")
        assert ack.text.startswith("⏳ Traffic on fraud-api is moving to green=80 blue=20.")
        await first.close()

        clock.advance(minutes=3)
        second = await aiohttp_server(create_app(restart_settings, clock=clock))
        teams.bot_url = str(second.make_url("/api/messages"))
        await second.app[SCHEDULER].run_once()        # what the loop does when it starts
        await wait_until(lambda: len(teams.connector.sent) >= 2)
        done = teams.connector.sent[1]
        assert (done.method, done.text) == ("PUT", "✅ Traffic on fraud-api is now green=80 blue=20. "
                                                   "[Workspace ml-prod (prod)]")
        assert done.path.endswith("/activity-1") and done.conversation_id == f"a:personal-{ALICE.id}"
        [audit] = await teams.say("audit --target fraud-api")
        assert "traffic on fraud-api in ml-prod succeeded" in audit.card["fallbackText"]   # sentences, #19 item 8


async def test_a_clicked_change_edits_its_acknowledgement_with_its_outcome(aiohttp_server, restart_settings):
    """The clicked card stays as it is (issue 7); the acknowledgement the click posted is edited
    with the outcome."""
    server = await aiohttp_server(create_app(restart_settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        await teams.say("traffic fraud-api blue=50 green=50")
        await wait_until(lambda: len(teams.connector.sent) >= 2)
        [history] = await teams.say("history fraud-api")                   # message activity-3
        status, body = await teams.click(history.card, "Rollback", replyToId="activity-3")
        assert status == 200
        ack = teams.connector.sent[-1]
        assert ack.method == "POST" and ack.text.startswith("⏳ Traffic on fraud-api is moving to blue=90 green=10")
        ack_id = f"activity-{len(teams.connector.sent)}"                   # the stand-in numbers what it receives
        await wait_until(lambda: any(s.method == "PUT" and s.path.endswith(f"/{ack_id}")
                                     for s in teams.connector.sent))
        [edited] = [s for s in teams.connector.sent if s.method == "PUT" and s.path.endswith(f"/{ack_id}")]
        assert edited.text == "✅ Traffic on fraud-api is now blue=90 green=10. [Workspace ml-prod (prod)]"
        assert not any(s.method == "PUT" and s.path.endswith("/activity-3") for s in teams.connector.sent)


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
async def test_an_operation_nobody_can_recheck_is_given_up_only_after_the_longest_wait(workspaces, store):
    clock = Clock()
    old = Chat(workspaces, store, clock=clock)
    old.gate.owner = "old-process"
    await old("traffic fraud-api blue=10 green=90")
    old.background.clear()

    async def disguise(tx):                  # as if it were a change without a recheck (none is declared)
        await tx.execute("UPDATE pending_operations SET change = ? WHERE id = 1",
                         ('{"action": "unknown-action", "workspace": "ml-prod", "environment": "prod", '
                          '"target": "endpoint fraud-api", "parameters": {}, "before": {}, "after": {}, '
                          '"summary": "Something slow", "reason": ""}',))
    await store.run_transaction(disguise)
    new = Gate(old.gate.policy, store, CHANGE_KINDS, clock=clock, roles=old.gate.roles, owner="new-process")
    clock.advance(minutes=30)
    assert await new.recover_operations(workspaces) == 0
    clock.advance(minutes=6)
    assert await new.recover_operations(workspaces) == 1
    assert (await events(store))[-1] == ("failed", "unknown-action")


@pytest.mark.filterwarnings("ignore:coroutine 'outcome' was never awaited")   # the stopped process's, on purpose
async def test_an_operation_on_a_workspace_no_longer_configured_does_not_stop_the_others(workspaces, store):
    from dataclasses import asdict

    from commands.changes.change import Change

    clock = Clock()
    old = Chat(workspaces, store, clock=clock)
    old.gate.owner = "old-process"

    async def orphan(workspace: str, target: str) -> None:
        change = Change("traffic", workspace, "prod", f"endpoint {target}", {"endpoint": target,
                        "traffic": {"blue": 50, "green": 50}}, {"traffic": {"blue": 90, "green": 10}},
                        {"traffic": {"blue": 50, "green": 50}}, f"Traffic on {target}")
        await store.run_transaction(lambda tx: operations.create(tx, operations.NewOperation(
            owner="old-process", change=asdict(change), notes={}, actor_id="u-1", actor_name="Olga", tenant_id="t1",
            conversation_id="conv-1", activity_id="", started_at=clock(), approval_id=None)))

    await orphan("ml-old", "fraud-api")              # its workspace was removed from the configuration
    ack = await old("traffic fraud-api blue=30 green=70")
    await old.handler.delivered(ack, "conv-1", "ack-activity-1")
    for outcome in old.background:                   # the process stops with both in flight
        outcome.close()
    old.background.clear()

    clock.advance(minutes=5)
    new = Gate(old.gate.policy, store, CHANGE_KINDS, clock=clock, roles=old.gate.roles, owner="new-process")
    assert await new.recover_operations(workspaces) == 2
    clock.advance(minutes=2)                         # no acknowledgement to edit: posted on a later pass
    assert await new.recover_operations(workspaces) == 1
    assert [i.payload["text"] for i in await outbox_items(store)] == [
        "✅ Traffic on fraud-api is now green=70 blue=30. [Workspace ml-prod (prod)]",      # edits its acknowledgement
        "⚠️ The bot restarted while Traffic on fraud-api was in flight, and workspace ml-old is no longer "
        "configured, so it cannot tell how it ended."]
