"""Plain language (#20): questions are answered with the command they mean, changes are only
proposed, typed commands behave as before.

The labelled set is tests/fixtures/language/phrasings.txt (every command, three personas); the
shares asserted here are behaviour on that set, not timing (bench/language.py measures time).
"""

from __future__ import annotations

import pytest

from commands.base.context import Role, RoleBook, User
from tests.card_schema import assert_valid_card
from tests.conftest import Chat
from tests.language_cases import World
from tests.teams_client import find_action
from tests.unit.test_language import CASES

def _buttons(node):
    if isinstance(node, dict):
        if node.get("type") == "Action.Execute":
            yield node
        for value in node.values():
            yield from _buttons(value)
    elif isinstance(node, list):
        for value in node:
            yield from _buttons(value)


def _proposed(reply) -> str | None:
    """The command a proposal card offers to run, as a line."""
    if reply.card is None or reply.card["body"][0]["text"] != "Is this the change you mean?":
        return None
    [action] = list(_buttons(reply.card))
    return " ".join([action["verb"], *(f'"{a}"' if " " in a else a for a in action["data"]["args"])])


async def test_ninety_percent_understood_and_no_phrasing_changes_anything(tmp_path):
    async with World(tmp_path) as world:
        before = world.snapshot()
        reads_ok, changes_ok, wrong = 0, 0, []
        for case in CASES:
            reply = await world.say(case.text)
            if case.change:
                got = _proposed(reply)
                changes_ok += got == case.expected
            else:
                first = reply.text.split("\n", 1)[0]
                got = first
                reads_ok += first == f"Read as `{case.expected}`"
            if got not in (case.expected, f"Read as `{case.expected}`"):
                wrong.append((case.text, case.expected, got))
        after = world.snapshot()
        assert not world.spawned         # nothing was started in the background
    reads = [c for c in CASES if not c.change]
    changes = [c for c in CASES if c.change]
    assert reads_ok / len(reads) >= 0.9, wrong
    assert changes_ok / len(changes) >= 0.9, wrong
    changed = {table for table in set(before) | set(after) if before.get(table) != after.get(table)}
    assert changed == set(), changed


# ---------------------------------------------------------------- the examples of the issue


async def test_a_question_is_answered_with_the_command_and_says_how_it_was_read(chat):
    reply = await chat("show fraud api")
    assert reply.text.startswith("Read as `endpoint fraud-api`\n")
    assert reply.card["body"][0]["text"] == "Read as `endpoint fraud-api`"
    assert reply.card["body"][1]["text"] == "Endpoint fraud-api"
    assert_valid_card(reply.card)


async def test_apostrophes_in_ordinary_words_are_not_quotes(chat):
    reply = await chat("what's wrong with fraud-api")
    assert "quotation mark" not in reply.text
    assert reply.text.startswith("Read as `endpoint fraud-api`")
    assert (await chat("who\u2019s on credit-api")).text != "A quotation mark is not closed."


@pytest.mark.parametrize("typed", ["endpoint fraud-api please", "endpoint fraud-api now", "endpoint fraud-api pls",
                                   "endpoint fraud-api?", "endpoint fraud-api ?"])
async def test_a_trailing_please_or_question_mark_does_not_break_a_command(chat, typed):
    reply = await chat(typed)
    assert reply.card["body"][0]["text"] == "Endpoint fraud-api"          # ran as typed: no "Read as"


async def test_digest_now_keeps_its_now(chat):
    reply = await chat("digest now")
    assert "Read as" not in reply.text and "didn't expect" not in reply.text


async def test_a_positional_where_an_option_is_expected_is_taken(chat):
    reply = await chat("audit fraud-api")
    assert reply.text.startswith("Read as `audit --target fraud-api`")
    assert reply.card["body"][1]["text"].startswith("Audit trail")


@pytest.mark.parametrize("question", ["what models are in production", "is fraud-api healthy", "what failed",
                                      "is the feature store materializing?", "what", "is"])
async def test_questions_no_longer_get_did_you_mean_whoami_or_help(chat, question):
    text = (await chat(question)).text
    assert "Did you mean `whoami`" not in text and "Did you mean `help`" not in text
    if " " in question:
        assert "I don't know the command" not in text


async def test_a_change_is_proposed_with_before_and_after_and_nothing_runs(chat):
    reply = await chat("give green 10% more on fraud-api")
    assert reply.card["body"][0]["text"] == "Is this the change you mean?"
    assert reply.card["body"][2]["text"] == "Read as `canary fraud-api green 20`. Nothing has changed yet."
    facts = {f["title"]: f["value"] for f in reply.card["body"][3]["facts"]}
    assert facts["Before"] == "traffic: blue=90 green=10"
    assert facts["After"] == "traffic: blue=80 green=20"
    action = find_action(reply.card, "Run canary fraud-api green 20")
    assert (action["verb"], action["data"]["args"]) == ("canary", ["fraud-api", "green", "20"])
    assert_valid_card(reply.card)
    endpoint = await chat.handler.workspaces.default.get_endpoint("fraud-api")
    assert endpoint.traffic == {"blue": 90, "green": 10}          # proposed, not done
    assert chat.background == []


async def test_the_proposal_button_runs_the_change_through_the_gate(chat):
    reply = await chat("turn off alice's VM")
    action = find_action(reply.card, "Run stop ds-ci-alice")
    answer = await chat.click(action["verb"], *action["data"]["args"])
    await chat.settle()
    assert "Stopping" in answer.text or "stopping" in answer.text.lower()
    [alice] = [c for c in await chat.handler.workspaces.default.list_compute() if c.name == "ds-ci-alice"]
    assert alice.state == "Stopped"


async def test_a_viewer_sees_the_proposal_but_the_button_is_refused(workspaces, store):
    viewer = Chat(workspaces, store, Role.VIEWER)
    reply = await viewer("put churn-api back how it was")
    assert _proposed(reply) == "rollback churn-api"
    assert "needs the Operator role; you have Viewer" in reply.text
    refused = await viewer.click("rollback", "churn-api")
    assert "needs the Operator role" in refused.text


async def test_the_proposal_gate_asks_for_approval_like_any_change(workspaces, store):
    from commands.changes.policy import parse_policy
    approving = Chat(workspaces, store, policy=parse_policy('[[rule]]\nmode = "approval"\nquorum = 1\n', source="t"),
                     roles=RoleBook(default=Role.ADMIN))
    reply = await approving("promote the fraud candidate to production")
    assert _proposed(reply) == "promote fraud-model:4 Production"
    facts = {f["title"]: f["value"] for f in reply.card["body"][3]["facts"]}
    assert facts["Before"].startswith("stage: fraud-model:4 Staging") and "Production" in facts["After"]
    clicked = await approving.click("promote", "fraud-model:4", "Production")
    assert "approval" in clicked.text.lower()
    [model] = await workspaces.default.list_models("fraud-model", stage="Staging")
    assert model.version == "4"          # still waiting for an approver


async def test_ambiguous_text_offers_the_likeliest_commands_as_buttons(chat):
    reply = await chat("fraud")
    assert reply.card["body"][0]["text"] == "Which one?"
    buttons = [(a["verb"], a["data"]["args"]) for a in _buttons(reply.card)]
    assert 2 <= len(buttons) <= 3
    assert ("endpoint", ["fraud-api"]) in buttons or ("model", ["fraud-model"]) in buttons
    assert_valid_card(reply.card)


async def test_nothing_understood_gets_suggestions_by_meaning_not_by_spelling(chat):
    reply = await chat("how much money did the gpu cluster cost")
    assert reply.card["body"][0]["text"] == "Not sure what you mean"
    suggested = [a["data"]["args"][0] for a in _buttons(reply.card)]
    assert "compute" in suggested
    assert "Did you mean" not in reply.text
    assert_valid_card(reply.card)


async def test_a_reading_that_lacks_a_word_says_what_is_missing(chat):
    reply = await chat("move traffic on fraud-api")
    assert reply.card["body"][0]["text"] == "Almost: traffic"
    assert "‹split›" in reply.card["body"][1]["text"]
    assert_valid_card(reply.card)


async def test_a_typo_of_a_command_name_still_gets_did_you_mean(chat):
    assert (await chat("stpo")).text.startswith("I don't know the command 'stpo'. Did you mean `stop`?")


async def test_a_typed_change_with_a_slip_keeps_its_usage_and_adds_the_proposal(chat):
    reply = await chat("schedule pause nightly-churn-retrain")
    assert reply.text.startswith("'pause' is not a choice for ‹action›")
    assert _proposed(reply) == "schedule disable nightly-churn-retrain"
    schedules = await chat.handler.workspaces.default.list_schedules()
    [schedule] = [s for s in schedules if s.name == "nightly-churn-retrain"]
    assert schedule.enabled


async def test_people_the_bot_has_met_and_me(workspaces, store):
    from adapters.storage import people
    from datetime import datetime, timezone

    async def meet(tx):
        await people.remember(tx, "oid-zoe", "29:zoe", "Zoe Quinn", "t1", now=datetime.now(timezone.utc))
    await store.run_transaction(meet)
    chat = Chat(workspaces, store, user=User(id="u-1", name="Dana Dev", tenant_id="t1"))
    assert (await chat("what did zoe change")).text.startswith('Read as `audit --actor "Zoe Quinn"`')
    assert (await chat("what did I change")).text.startswith('Read as `audit --actor "Dana Dev"`')


@pytest.mark.parametrize("words,line", [
    ("resolve alert 7", "resolve 7"), ("close alert #12", "resolve 12"), ("stop snoozing 8", "unsnooze 8"),
    ("add a note to alert 7: restarted the scorer", "note 7 restarted the scorer"),
    ("assign alert 7 to me", 'assign 7 "Dana Dev"'),
    ("run the security checklist on ml-prod", "posture --workspace ml-prod"),
    ("which messages could not be delivered", "outbox dead"),
    ("resend all the undelivered messages", "outbox retry all")])
async def test_an_alert_number_free_text_a_person_a_workspace_and_a_choice_are_filled(chat, words, line):
    reply = await chat(words)
    assert _proposed(reply) == line or reply.text.startswith(f"Read as `{line}`\n"), reply.text[:200]


async def test_a_change_read_with_an_alert_number_runs_only_when_clicked(chat, store):
    from adapters.storage import alerts
    from commands.alerts.alerts import publish
    from tests.test_alert_lifecycle import NOW, drift_event
    await store.run_transaction(lambda tx: publish(tx, drift_event(), NOW))
    proposal = await chat("assign alert 1 to me")
    assert _proposed(proposal) == 'assign 1 "Dana Dev"'
    assert (await store.run_transaction(lambda tx: alerts.get(tx, 1), write=False)).assignee_name == ""
    [action] = list(_buttons(proposal.card))
    assert "Assigned to: Dana Dev" in (await chat.click(action["verb"], *action["data"]["args"])).text
    assert (await chat("show me alert 1")).text.startswith("Read as `alerts 1`")
    assert (await chat("resolve 1")).text.startswith("✅ Resolved")          # typed: runs as typed


async def test_an_alert_command_without_its_number_says_what_is_missing(chat):
    reply = await chat("mark it resolved")
    assert reply.card["body"][0]["text"] == "Almost: resolve"
    assert "‹id›" in reply.card["body"][1]["text"]


# ---------------------------------------------------------------- through the real CloudAdapter over HTTP


async def test_plain_question_and_proposed_change_over_http(teams):
    [answer] = await teams.say("how is the credit endpoint doing?")
    assert answer.card["body"][0]["text"] == "Read as `endpoint credit-api`"
    assert answer.card["body"][1]["text"] == "Endpoint credit-api"
    [proposal] = await teams.say("give green 10% more on fraud-api")
    assert proposal.card["body"][0]["text"] == "Is this the change you mean?"
    assert_valid_card(proposal.card)
    status, body = await teams.click(proposal.card, "Run canary fraud-api green 20")
    assert status == 200
    sent = await teams.connector.wait_for(4)        # the acknowledgement, then the outcome
    assert any("green" in (s.text or "") and "20" in (s.text or "") for s in sent[2:]), [s.text for s in sent]


async def test_words_from_the_message_cannot_break_out_of_the_read_as_line(chat):
    reply = await chat("run churn-batch on https://contoso.blob.core.windows.net/d`](http://evil.example)`x.csv")
    line = reply.card["body"][2]["text"]
    assert line.count("`") == 2, line                       # only the bot's own code span
    assert "](" not in line                                 # no link either


# ---------------------------------------------------------------- the small parsers


async def test_switched_off_text_that_is_not_a_command_is_unknown_as_before(workspaces, store):
    from bot.handler import ChatHandler, Request
    from commands.catalog import catalog
    handler = ChatHandler(catalog(), workspaces, RoleBook(default=Role.ADMIN), store=store, plain_language=False)
    reply = await handler.handle(Request(User("u", "U"), "c", text="show fraud api"))
    assert reply.text.startswith("I don't know the command 'show'")


async def test_a_sentence_that_parses_as_words_is_proposed_not_run(chat):
    reply = await chat("scale churn-api to 4")
    assert _proposed(reply) == "scale churn-api blue 4"
    endpoint = await chat.handler.workspaces.default.get_endpoint("churn-api")
    assert [d.instance_count for d in endpoint.deployments] == [2]
    assert chat.background == []
