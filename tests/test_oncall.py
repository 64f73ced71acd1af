"""Issue #19 (3 a.m.): evidence on approval cards, approvers told, duplicates joined, break-glass,
reminders (in-process, real storage and gate; tests/test_oncall_http.py goes over HTTP)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from adapters.storage import audit as audit_log, outbox, people
from adapters.storage.conversations import ConversationRecord
from commands.base.context import Role, RoleBook, Track, User
from commands.changes.policy import Policy, parse_policy
from tests.card_schema import assert_valid_card
from tests.conftest import Chat, Clock
from tests.test_approvals import ARNE, BEA, OLGA, ROLES, request_of, split_of

ADA = User(id="00000000-0000-0000-0000-0000000000a9", name="Ada Admin", tenant_id="t1")
WITH_ADMIN = RoleBook({**ROLES.assignments, ADA.id: Role.ADMIN}, Role.VIEWER)


def fact_values(card: dict) -> dict[str, str]:
    found = {}
    for block in card["body"]:
        if block.get("type") == "FactSet":
            found.update({f["title"]: f["value"] for f in block["facts"]})
    return found


def texts(card: dict) -> list[str]:
    return [b["text"] for b in card["body"] if b.get("type") == "TextBlock"]


async def personal_chat(store, user: User) -> str:
    conversation = f"a:personal-{user.id}"
    await store.save_conversation(ConversationRecord(
        conversation, "personal",
        {"conversation": {"id": conversation}, "serviceUrl": "https://smba.trafficmanager.net/"},
        user.tenant_id, "", "", user.id, datetime(2026, 11, 26, tzinfo=timezone.utc)))
    return conversation


async def outbox_items(store) -> list:
    return await store.run_transaction(lambda tx: outbox.find_items(tx), write=False)


async def audit_events(store) -> list:
    return [r for r in await store.run_transaction(audit_log.scan, write=False) if r.event != "policy_loaded"]


async def test_a_canary_onto_an_unhealthy_deployment_is_flagged_on_the_card(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    workspaces.default.service.degrade_deployment("fraud-api", "green")
    asked = await olga("canary fraud-api green 30")
    card = asked.card
    assert_valid_card(card)
    words = texts(card)
    # the local workspace's figures wander a little from minute to minute: the shape and thresholds are exact
    [warning] = [w for w in words if w.startswith("⚠ green")]
    assert re.fullmatch(r"⚠ green would receive traffic and is unhealthy: p99 1,[0-9]{3} ms is over 1,000 ms; "
                        r"5xx [0-9]\.[0-9]{2}% is over 1%", warning), warning
    shown = fact_values(card)
    assert re.fullmatch(r"fraud-model:3 · p99 [0-9]{2,3} ms · 5xx 0\.[0-9]{2}% · [0-9]{3}\.[0-9] /min",
                        shown["blue (90%)"]), shown
    assert re.fullmatch(r"fraud-model:4 · p99 1,[0-9]{3} ms · 5xx [0-9]\.[0-9]{2}% · [0-9]{2}\.[0-9] /min",
                        shown["green (10%)"]), shown
    assert "fraud-model v4 vs champion v3: better on 3 of 3 metrics, worse on 0." in words
    links = [a for b in card["body"] if b.get("type") == "ActionSet" for a in b["actions"]]
    assert [(a["title"], a["data"]["args"]) for a in links] == [
        ("Endpoint", ["fraud-api", "--workspace", "ml-prod"]), ("Compare", ["fraud-model:4", "--workspace", "ml-prod"]),
        ("History", ["fraud-api", "--workspace", "ml-prod"])]
    # the approver opens it after green recovered: the figures are read again, the warning is gone
    workspaces.default.service.heal_deployment("fraud-api", "green")
    opened = await olga.as_(ARNE)("approval 1")
    assert not [w for w in texts(opened.card) if w.startswith("⚠ green")]
    assert fact_values(opened.card)["green (10%)"].startswith("fraud-model:4 · p99 ")
    # the card asks for a reason before it rejects; the reason reaches the requester's card and the trail
    reject = next(a for a in card["actions"] if a["title"] == "Reject")
    assert reject["type"] == "Action.ShowCard"
    assert reject["card"]["body"][0] | {} == {"type": "Input.Text", "id": "reason", "label": "Why reject it?",
                                             "isRequired": True, "errorMessage": "A rejection needs a reason.",
                                             "maxLength": 500, "placeholder": "The reason the requester will read"}
    rejected = await olga.as_(ARNE).click("reject", "1", "--", "green fails 8% of requests")
    assert rejected.text == "Rejected: request #1 (0 of 1 approvals)."
    assert "rejected by Arne Approver: green fails 8% of requests" in texts(rejected.card)
    assert "Arne Approver rejected" in (await olga("approval 1")).card["fallbackText"]
    [vote] = [r for r in await audit_events(store) if r.event == "vote:reject"]
    assert vote.detail == {"comment": "green fails 8% of requests"}


async def test_retrain_evidence_names_the_schedule_and_its_last_run(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    first = await olga("retrain fraud-model")
    assert fact_values(first.card)["Schedule"] == "weekly-fraud-retrain: 0 3 ∗ ∗ 0 (UTC)"
    assert fact_values(first.card)["Last run"] == "none recorded"
    assert "Retrain fraud-model (its training schedule, weekly-fraud-retrain)" in first.card["fallbackText"]
    await olga("withdraw 1")
    run = workspaces.default.service.trigger_schedule("weekly-fraud-retrain")
    second = await olga("retrain fraud-model")
    assert fact_values(second.card)["Last run"].startswith(f"{run.name}: {run.status}, ")


async def test_an_identical_pending_request_is_joined_not_opened_twice(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    first = await olga("traffic fraud-api blue=0 green=100")
    second = await olga.as_(BEA)("traffic fraud-api blue=0 green=100 --reason 'me too'")
    assert second.text == ("The same change is already waiting as request #1 (pending, asked by Olga Operator); you "
                           "joined it instead of opening another: Traffic on fraud-api: blue=90 green=10 → blue=0 "
                           "green=100")
    assert first.track == Track("approval", 1) and await request_of(store, 2) is None
    assert [(r.event, r.actor_name, r.approval_id) for r in await audit_events(store)] == [
        ("requested", "Olga Operator", 1), ("joined", "Bea Approver", 1)]
    other = await olga("traffic fraud-api blue=50 green=50")        # a different after-state: its own request
    assert other.text.startswith("Approval request #2")


async def test_a_request_in_a_personal_chat_reaches_the_approvers_personal_chats(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    arne_chat = await personal_chat(store, ARNE)
    await personal_chat(store, OLGA)                                   # the requester is not told of their own
    asked = await olga("traffic fraud-api blue=0 green=100", conversation=f"a:personal-{OLGA.id}")
    assert "Nobody could be told" not in asked.card["fallbackText"]
    [item] = await outbox_items(store)
    assert (item.conversation_id, item.dedupe_key) == (arne_chat, f"approval:1:card:{arne_chat}")
    assert "Approval request #1" in item.payload["card"]["fallbackText"]
    assert "entities" not in item.payload["card"].get("msteams", {})      # no @mention in a personal chat
    await olga.as_(ARNE)("approve 1 looks right", conversation=arne_chat)
    await olga.settle()
    updates = [i for i in await outbox_items(store) if i.payload.get("update_of") == f"approval:1:card:{arne_chat}"]
    assert updates and "Arne Approver approved" in updates[-1].payload["card"]["fallbackText"]
    assert "looks right" in updates[-1].payload["card"]["fallbackText"]


async def test_a_request_nobody_can_be_told_about_says_so(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    asked = await olga("traffic fraud-api blue=0 green=100")
    assert ("⚠️ Nobody could be told about this request: no approval channel is set (MLOPSBOT_APPROVAL_CHANNEL) and "
            "no approver has a chat with the bot.") in asked.card["fallbackText"]


async def test_a_request_in_a_channel_mentions_the_approvers(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    await store.run_transaction(lambda tx: people.remember(tx, ARNE.id, "29:arne", "Arne Approver", "t1", now=now))
    await store.run_transaction(lambda tx: people.remember(tx, OLGA.id, "29:olga", "Olga Operator", "t1", now=now))
    asked = await olga("traffic fraud-api blue=0 green=100", conversation="19:ml@thread.tacv2", kind="channel")
    assert_valid_card(asked.card)
    assert asked.card["msteams"]["entities"] == [
        {"type": "mention", "text": "<at>Arne Approver</at>", "mentioned": {"id": "29:arne", "name": "Arne Approver"}}]
    assert "For <at>Arne Approver</at>" in texts(asked.card)
    assert "Nobody could be told" not in asked.card["fallbackText"]


async def test_a_waiting_request_reminds_once_and_widens_to_the_admins(workspaces, store):
    clock = Clock()
    olga = Chat(workspaces, store, policy=Policy(), roles=WITH_ADMIN, user=OLGA, clock=clock)
    arne_chat, ada_chat = await personal_chat(store, ARNE), await personal_chat(store, ADA)
    await olga("traffic fraud-api blue=0 green=100")
    clock.advance(minutes=59)
    assert await olga.gate.remind_due() == 0
    clock.advance(minutes=2)
    assert await olga.gate.remind_due() == 1
    assert await olga.gate.remind_due() == 0                          # once
    reminders = [i for i in await outbox_items(store) if ":reminder:" in i.dedupe_key]
    assert sorted(i.conversation_id for i in reminders) == sorted([arne_chat, ada_chat])
    assert reminders[0].payload["text"] == ("⏰ Request #1 has waited 61 min without a decision: Traffic on fraud-api: "
                                           "blue=90 green=10 → blue=0 green=100. The admins are told too.")
    assert [r.event for r in await audit_events(store)][-1] == "reminded"


async def test_emergencies_are_refused_by_default_and_run_at_once_where_the_policy_allows(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    refused = await olga('traffic fraud-api blue=0 green=100 --emergency "blue is down"')
    assert refused.text.startswith("The policy does not allow traffic in prod as an emergency")
    assert await split_of(olga) == "Traffic: blue=90 green=10"
    assert (await olga('traffic fraud-api blue=0 green=100 --emergency " "')).text == (
        'An emergency needs its reason: `--emergency "<why it cannot wait>"`.')

    allowing = parse_policy('[[rule]]\naction = "traffic"\nenvironment = "prod"\nmode = "approval"\nemergency = true\n')
    olga = Chat(workspaces, store, policy=allowing, roles=ROLES, user=OLGA)
    arne_chat = await personal_chat(store, ARNE)
    ran = await olga('traffic fraud-api blue=0 green=100 --emergency "blue is down"')
    assert "Ran at once (emergency); the approvers were paged (`review 1`)." in ran.text
    await olga.settle()
    assert await split_of(olga) == "Traffic: green=100"
    [page] = [i for i in await outbox_items(store) if i.dedupe_key == f"review:1:{arne_chat}"]
    assert "🚨 Emergency change by Olga Operator: blue is down" in page.payload["card"]["fallbackText"]
    executed = [r for r in await audit_events(store) if r.event == "executed"][-1]
    assert (executed.reason, executed.detail) == ("EMERGENCY: blue is down", {"mode": "direct", "review": "emergency"})
    reviewed = await olga.as_(ARNE).click("review", "1", "--", "ok, blue was down")
    assert reviewed.text.endswith(": ok, blue was down. Recorded in the audit trail.")
    [record] = [r for r in await audit_events(store) if r.event == "reviewed"]
    assert (record.actor_name, record.detail["comment"]) == ("Arne Approver", "ok, blue was down")


async def test_policies_says_when_no_approval_channel_is_set(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    text = (await olga("policies")).text
    assert ("No approval channel is set (MLOPSBOT_APPROVAL_CHANNEL): requests reach each approver in their personal "
            "chat with the bot, and are @mentioned where they are asked.") in text
    assert "rollback: runs at once, reviewed afterwards by an Approver" in text
    olga.gate.approval_channel = "19:approvals@thread.tacv2"
    assert "No approval channel is set" not in (await olga("policies")).text


async def test_the_approval_channel_gets_every_request_with_the_approvers_mentioned(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    olga.gate.approval_channel = "19:approvals@thread.tacv2"
    await personal_chat(store, ARNE)              # with a channel, personal chats are not used
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    await store.run_transaction(lambda tx: people.remember(tx, ARNE.id, "29:arne", "Arne Approver", "t1", now=now))
    await olga("traffic fraud-api blue=0 green=100")
    [item] = await outbox_items(store)
    assert item.conversation_id == "19:approvals@thread.tacv2"
    assert item.payload["card"]["msteams"]["entities"][0]["mentioned"] == {"id": "29:arne", "name": "Arne Approver"}


# ---------------------------------------------------------------- signed export links

def test_an_export_link_is_refused_when_forged_altered_or_late():
    from datetime import timedelta

    import pytest

    from commands.changes.export_links import ExportLinks, LinkRefused

    now = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
    links = ExportLinks(b"k" * 32, "https://bot.example.com/")
    url = links.issue(ARNE, since=now - timedelta(days=30), fmt="csv", now=now)
    assert url.startswith("https://bot.example.com/api/audit/file?t=")
    token = url.split("t=", 1)[1]
    grant = links.read(token, now + timedelta(minutes=9))
    assert (grant.user_id, grant.tenant_id, grant.format, grant.since) == (ARNE.id, "t1", "csv", now - timedelta(days=30))
    with pytest.raises(LinkRefused, match="expired"):
        links.read(token, now + timedelta(minutes=10))
    with pytest.raises(LinkRefused, match="not signed by this bot"):
        ExportLinks(b"x" * 32, "https://bot.example.com").read(token, now)     # another key
    payload, signature = token.split(".")
    forged = links.issue(BEA, since=None, fmt="jsonl", now=now).split("t=", 1)[1].split(".")[0]
    with pytest.raises(LinkRefused, match="not signed by this bot"):
        links.read(f"{forged}.{signature}", now)                             # Bea's payload, Arne's signature
    with pytest.raises(LinkRefused, match="not a download link"):
        links.read("nonsense", now)


def test_the_public_url_must_be_https_and_export_needs_it_outside_development(tmp_path, monkeypatch):
    import pytest

    from bot.settings import SettingsError, load_settings

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="MLOPSBOT_PUBLIC_URL must be the bot's https:// address"):
        load_settings(data_dir=tmp_path, public_url="http://bot.example.com")
    assert load_settings(data_dir=tmp_path, public_url="https://bot.example.com/").export_base_url() == \
        "https://bot.example.com"
    assert load_settings(data_dir=tmp_path, host="127.0.0.1", port=3978).export_base_url() == "http://127.0.0.1:3978"


async def test_audit_export_without_a_public_address_says_what_to_set(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    answer = await olga.as_(ARNE)("audit export")
    assert answer.text.startswith("Audit export needs the bot's public address: set MLOPSBOT_PUBLIC_URL")
    assert (await olga("audit export")).text.startswith("`audit export` needs the Approver role; you have Operator.")
    assert (await olga.as_(ARNE)("audit --format csv")).text.startswith("--format goes with export")


async def test_a_scale_request_shows_the_scaled_deployments_health(workspaces, store):
    olga = Chat(workspaces, store, policy=Policy(), roles=ROLES, user=OLGA)
    workspaces.default.service.degrade_deployment("fraud-api", "green")
    asked = await olga("scale fraud-api green 3")
    [warning] = [w for w in texts(asked.card) if w.startswith("⚠ green")]
    assert warning.startswith("⚠ green is the one being scaled and is unhealthy: p99 ")
    assert fact_values(asked.card)["blue (90%)"].startswith("fraud-model:3 · p99 ")
    assert "fraud-model v4 vs champion v3: better on 3 of 3 metrics, worse on 0." in texts(asked.card)
