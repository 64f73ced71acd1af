"""Issue 19 item 9: a first run that guides (greeting, set-up checklist, help by task, whoami
under the policy in force, policies for every environment)."""

from __future__ import annotations

import pytest

from commands.catalog import catalog, reference_table
from commands.base.context import Role, RoleBook
from commands.changes.policy import Policy, parse_policy

DEFAULTS = Policy()          # the built-in defaults: approvals in prod
from commands.base.registry import GROUPS, Registry
from tests.card_schema import assert_valid_card
from tests.conftest import Chat
from tests.teams_client import ALICE, TeamsStandIn
from tests.test_http import published

APPROVERS = "19:approvers@thread.tacv2"


@pytest.mark.parametrize("typed", ["hi", "Hello!", "hey", "Hi there", "good morning", "hey bot"])
async def test_a_greeting_is_answered(chat, typed):
    answer = await chat(typed)
    assert answer.text.startswith("Hi Dana! I run Azure Machine Learning from this chat")
    assert "To start: `subscribe drift fraud-model --escalate-after 15m --notify @Bob`" not in answer.text
    assert "`models fraud-model --stage Production`" in answer.text
    assert "You are Admin here; `whoami` says what that allows, `help` lists everything by task, `checklist` " \
           "shows what is set up." in answer.text


async def test_words_that_only_look_like_a_greeting_are_still_commands(chat):
    assert (await chat("high")).text.startswith("I don't know the command 'high'.")
    assert (await chat("help")).card["body"][0]["text"] == "What I can do"


async def test_the_checklist_shows_what_is_done_and_what_is_not(workspaces, store):
    book = RoleBook(default=Role.VIEWER, assignments={"dev-1": Role.ADMIN})
    chat = Chat(workspaces, store, roles=book)
    first = await chat("checklist", conversation="19:ml@thread.tacv2", kind="channel")
    assert_valid_card(first.card)
    lines = [b["text"] for b in first.card["body"][1:]]
    assert lines == [
        "✅ **Roles**: 1 admin, 0 approvers",
        "⬜ **Approval channel**: no conversation gets approval requests: type `subscribe approvals` in the "
        "approvers' channel",
        "⬜ **Alerts here**: this conversation hears no alerts: `subscribe drift ‹model›`, `subscribe alerts`",
        "⬜ **Digest**: no model-health digest here: `digest schedule weekdays 09:00 --tz ‹zone›`",
        "1 of 4 done. `help` lists the commands by task; `policies` shows who must approve what."]
    await chat("subscribe approvals", conversation=APPROVERS, kind="channel")
    await chat("subscribe drift fraud-model", conversation="19:ml@thread.tacv2", kind="channel")
    await chat("digest schedule weekdays 09:00 --tz IST", conversation="19:ml@thread.tacv2", kind="channel")
    done = await chat("checklist", conversation="19:ml@thread.tacv2;messageid=7", kind="channel")
    assert [b["text"] for b in done.card["body"][1:]] == [
        "✅ **Roles**: 1 admin, 0 approvers",
        "✅ **Approval channel**: 1 conversation(s) get approval requests",
        "✅ **Alerts here**: drift subscribed",
        "✅ **Digest**: `0 9 * * 1-5` in Asia/Kolkata",
        "4 of 4 done. All set."]


async def test_in_development_mode_the_checklist_says_everyone_is_admin(workspaces, store):
    chat = Chat(workspaces, store, roles=RoleBook(default=Role.VIEWER, open_until_assigned=True))
    [roles] = [b["text"] for b in (await chat("checklist")).card["body"] if "Roles" in b.get("text", "")]
    assert roles == "⬜ **Roles**: nobody is assigned a role yet: everyone is Admin (development mode)"


def test_every_command_declares_or_derives_a_group_and_an_unknown_group_is_refused():
    assert {c.task for c in catalog()} == set(GROUPS)
    assert {c.name for c in catalog() if c.task == "alerts"} == {
        "acknowledge", "snooze", "unsnooze", "resolve", "note", "assign", "alerts"}
    assert {c.name for c in catalog() if c.task == "approve"} == {
        "approvals", "approval", "approve", "reject", "confirm", "withdraw", "review"}
    with pytest.raises(ValueError, match="unknown group 'misc'"):
        Registry().command("x", summary="x", example="x", group="misc")


def test_the_readme_table_is_grouped_like_help():
    table = reference_table().splitlines()
    assert table[0] == "| task | command | what it does | example | role |"
    tasks = [line.split(" | ")[0].lstrip("| ") for line in table[2:]]
    assert tasks == [g for g, commands in catalog().by_task() for _ in commands]
    first_alerts = [line for line in table if line.startswith("| alerts |")][0]
    assert first_alerts.startswith("| alerts | `acknowledge ‹id›`")


async def test_help_shows_a_viewer_only_what_they_may_run_grouped(workspaces, store):
    viewer = Chat(workspaces, store, Role.VIEWER)
    listing = await viewer("help")
    sections = [b["text"] for b in listing.card["body"] if b["type"] == "TextBlock" and b.get("weight") == "Bolder"]
    assert sections == ["What I can do", "Set up", "Look", "Approve", "Alerts"]      # nothing in "change" for them
    assert "`acknowledge`" not in listing.card["fallbackText"]                     # Operator's, not theirs
    assert "**alerts**" in [c["columns"][0]["items"][0]["text"] for c in listing.card["body"]
                            if c["type"] == "ColumnSet"]


async def test_whoami_says_what_the_role_allows_under_the_policy_in_force(workspaces, store):
    operator = Chat(workspaces, store, Role.OPERATOR, policy=DEFAULTS)
    lines = [b["text"] for b in (await operator("whoami")).card["body"] if b["type"] == "TextBlock"]
    [prod] = [line for line in lines if line.startswith("In prod")]
    # since issue #19 item 1 the safe direction runs at once in production (reviewed afterwards)
    assert prod == ("In prod (ml-prod): `rollback` runs at once; `cancel`, `schedule`, `start` and `stop` ask you "
                    "to confirm first; `traffic`, `scale`, `batch`, `canary`, `promote`, `archive` and `retrain` "
                    "need an approval before they run; you cannot approve prod changes that need an Approver.")
    approver = Chat(workspaces, store, Role.APPROVER, policy=DEFAULTS)
    lines = [b["text"] for b in (await approver("whoami")).card["body"] if b["type"] == "TextBlock"]
    [prod] = [line for line in lines if line.startswith("In prod")]
    assert prod.endswith("you can approve `traffic`, `scale`, `batch`, `canary`, `promote`, `archive` "
                         "and `retrain` (others' requests, not your own).")
    # a policy that lets operators approve their own scale changes says so
    relaxed = parse_policy('[[rule]]\naction = "scale"\nenvironment = "prod"\nmode = "approval"\n'
                           'approver_role = "operator"\nallow_self = true\n')
    lines = [b["text"] for b in (await Chat(workspaces, store, Role.OPERATOR, policy=relaxed)("whoami")).card["body"]
             if b["type"] == "TextBlock"]
    [prod] = [line for line in lines if line.startswith("In prod")]
    assert "; you can approve `scale`, your own requests too;" in prod      # allow_self
    assert prod.endswith("you cannot approve prod changes that need an Approver.")


async def test_policies_show_every_environment_and_the_role_each_rule_needs(workspaces, store):
    shown = (await Chat(workspaces, store, policy=DEFAULTS)("policies")).card
    assert_valid_card(shown)
    words = shown["fallbackText"]
    assert "prod (ml-prod)" in words and "Any other environment" in words
    assert ("traffic: needs 1 approval from an Approver other than the requester within 24 h (requested by "
            "Operators and above)") in words
    lines = words.splitlines()
    other = lines.index("Any other environment")
    assert "traffic: asks you to confirm first (requested by Operators and above)" in lines[other:]
    assert "cancel: runs at once (requested by Operators and above)" in lines[other:]


# ---------------------------------------------------------------- over HTTP


async def test_over_http_the_installer_gets_the_checklist_and_a_greeting_is_answered(aiohttp_server, settings):
    from bot.app import create_app
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        response = await teams.post(published("teams_installationupdate_add_team.json", teams.service_url))
        assert response.status in (200, 201)
        response = await teams.post(published("teams_conversationupdate_bot_added_to_team.json", teams.service_url))
        assert response.status in (200, 201)
        [welcome] = teams.connector.sent
        assert welcome.text.startswith("Hi, I'm the MLOps bot.")
        assert welcome.card is not None
        assert_valid_card(welcome.card)
        assert welcome.card["body"][0]["text"] == "Setting up the MLOps bot"
        # the settings name no admin, so nothing is set up yet
        assert [b["text"][:3] for b in welcome.card["body"][1:5]] == [
            "⬜ *", "⬜ *", "⬜ *", "⬜ *"]
        [hello] = await teams.say("hello", user=ALICE)
        assert hello.text.startswith("Hi Alice! I run Azure Machine Learning from this chat")
        [listing] = await teams.say("help", user=ALICE)
        assert listing.card["body"][0]["text"] == "What I can do"
        assert [b["text"] for b in listing.card["body"] if b.get("weight") == "Bolder"][1:3] == ["Set up", "Look"]

