"""Issue 19 item 10: the small things people hit on the first days."""

from __future__ import annotations

import re

import pytest

from commands.catalog import catalog
from commands.base.context import Role
from commands.digests.digest_times import DigestTimeError, ZONE_WORDS, parse_when, parse_zone
from commands.base.ui import excerpt
from tests.conftest import Chat
from tests.teams_client import ALICE, TeamsStandIn

CHANNEL = "19:ml-team@thread.tacv2"


# ---------------------------------------------------------------- grant with a name of two words


async def test_an_unquoted_two_word_name_is_asked_to_be_quoted_or_mentioned(chat):
    answer = await chat("grant Bob Builder viewer")
    assert answer.text == ("'Bob Builder' is 2 words: @mention the person (`grant @Bob Builder viewer`), or put the "
                           'name in quotes (`grant "Bob Builder" viewer`). Usage: `grant ‹person› viewer`')
    # one word still reaches the person check, and an object id still works
    assert "'Bob' is not a person I can identify" in (await chat("grant Bob viewer")).text
    assert (await chat("grant 00000000-0000-0000-0000-000000000b0b viewer")).text.startswith(
        "00000000-0000-0000-0000-000000000b0b is now Viewer.")


# ---------------------------------------------------------------- subscribe


async def test_subscribe_takes_the_positional_model_and_refuses_filters_that_cannot_apply(chat):
    assert (await chat("subscribe drift fraud-model")).text.startswith(
        "Subscribed this chat: #1 drift (model fraud-model).")
    assert (await chat("subscribe alerts fraud-api")).text.startswith(
        "Subscribed this chat: #2 alerts (endpoint fraud-api).")
    assert (await chat("subscribe drift fraud-modle")).text.startswith(
        "No model named 'fraud-modle' in workspace ml-prod. Did you mean `fraud-model`?")
    assert (await chat("subscribe drift fraud-model --model churn-model")).text == (
        "Two models given ('fraud-model' and --model churn-model); give one.")
    assert (await chat("subscribe drift --severity Sev1")).text == (
        "--severity cannot apply to drift: drift events carry no severity, so the subscription would never post "
        "anything. --severity filters alerts, jobs.")
    assert (await chat("subscribe approvals --model fraud-model")).text.startswith(
        "--model cannot apply to approvals")
    assert (await chat("subscribe jobs fraud-model")).text.startswith(
        "`subscribe jobs` takes no name; filter with --workspace or --severity")


async def test_a_channels_subscriptions_card_says_this_channel(chat):
    await chat("subscribe drift", conversation=CHANNEL, kind="channel")
    listed = await chat("subscriptions", conversation=CHANNEL, kind="channel")
    assert listed.card["body"][0]["text"] == "Subscriptions of this channel"
    assert (await chat("unsubscribe 9", conversation=CHANNEL, kind="channel")).text == (
        "This channel has no subscription 9. `subscriptions` lists them.")
    personal = await chat("subscriptions")
    assert personal.card["body"][0]["text"] == "Subscriptions of this chat"


# ---------------------------------------------------------------- time zones and plain schedules


@pytest.mark.parametrize("typed,zone", [
    ("IST", "Asia/Kolkata"), ("ist", "Asia/Kolkata"), ("India", "Asia/Kolkata"), ("EST", "America/New_York"),
    ("CET", "Europe/Berlin"), ("united kingdom", "Europe/London"), ("Japan", "Asia/Tokyo"),
    ("Europe/Berlin", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"), ("UTC", "UTC"),
])
def test_time_zones_accept_common_abbreviations_and_countries(typed, zone):
    assert parse_zone(typed).key == zone


def test_every_zone_in_the_table_exists():
    for word, zone in ZONE_WORDS.items():
        assert parse_zone(word).key == zone


@pytest.mark.parametrize("typed,message", [
    ("usa", "'usa' spans several time zones; name one, e.g. America/New_York, America/Chicago"),
    ("XST", "I don't know the time zone 'XST'."),
    ("ISTT", "I don't know the time zone 'ISTT'. Did you mean `Asia/Kolkata`?"),
])
def test_unknown_or_ambiguous_zones_are_explained(typed, message):
    with pytest.raises(DigestTimeError) as raised:
        parse_zone(typed)
    assert str(raised.value).startswith(message)
    assert "MST" not in str(raised.value)


@pytest.mark.parametrize("typed,cron", [
    ("weekdays 09:00", "0 9 * * 1-5"), ("mondays 9am", "0 9 * * 1"), ("daily 18:30", "30 18 * * *"),
    ("every day at 7", "0 7 * * *"), ("monday and thursday 9:30pm", "30 21 * * 1,4"), ("mon-fri 8:15", "15 8 * * 1-5"),
    ("at 10am on weekends", "0 10 * * 0,6"), ("12am daily", "0 0 * * *"), ("12pm daily", "0 12 * * *"),
    ("0 9 * * 1-5", "0 9 * * 1-5"),
])
def test_plain_schedule_forms_beside_cron(typed, cron):
    assert parse_when(typed) == cron


@pytest.mark.parametrize("typed,message", [
    ("someday 9am", 'I could not read "someday 9am" as a time'),
    ("weekdays 25:00", "'25:00' is not a time of day (00:00 to 23:59)."),
    ("mondays 13pm", "'13pm' is not a time: with am or pm the hour is 1 to 12."),
    ("0 9 * *", '"0 9 * *" has 4 fields'),
])
def test_unreadable_schedules_say_why(typed, message):
    with pytest.raises(DigestTimeError) as raised:
        parse_when(typed)
    assert str(raised.value).startswith(message)


async def test_digest_schedule_takes_plain_words_and_a_country(chat):
    answer = await chat("digest schedule weekdays 09:00 --tz India")
    assert answer.text.startswith("Scheduled the model-health digest of ml-prod for this chat: `0 9 * * 1-5` in "
                                  "Asia/Kolkata. Next: ")
    assert "IST" in answer.text
    quoted = await chat('digest schedule "mondays 9am" --tz IST')
    assert "`0 9 * * 1` in Asia/Kolkata" in quoted.text


# ---------------------------------------------------------------- usage lines


def test_no_usage_line_shows_angle_brackets():
    for command in catalog():
        assert not re.search(r"[<>]|&lt;|&gt;", command.usage + command.help()), command.name


@pytest.mark.parametrize("typed", ["digest schedule", "digest now weekdays", "digest schedule never-ever",
                                   "compare churn-model"])
async def test_usage_answers_show_no_angle_brackets(chat, typed):
    answer = (await chat(typed)).text
    assert "<" not in answer and "&lt;" not in answer, answer
    assert "‹" in answer or "Usage" in answer or "Name the versions" in answer


# ---------------------------------------------------------------- error excerpts


@pytest.mark.parametrize("message,limit,shown", [
    ("Short.", 160, "Short."),
    ("The job failed. It ran out of memory on node 3. " + "Details follow. " * 20, 60,
     "The job failed. It ran out of memory on node 3."),
    ("UserError: " + "word " * 60, 40, "UserError: word word word word word…"),
    ("Version 1.2.3 of azureml-core is missing. Install it and retry the pipeline now please.", 50,
     "Version 1.2.3 of azureml-core is missing."),
])
def test_error_excerpts_end_at_a_sentence(message, limit, shown):
    assert excerpt(message, limit) == shown


# ---------------------------------------------------------------- over HTTP


async def test_over_http_plain_schedules_positional_models_and_this_channel(aiohttp_server, tmp_path, monkeypatch):
    from bot.app import create_app
    from bot.settings import load_settings
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id)
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as teams:
        [answer] = await teams.say("subscribe drift fraud-model", mention=True, conversation=CHANNEL, kind="channel")
        assert answer.text.startswith("Subscribed this channel: #1 drift (model fraud-model).")
        [listed] = await teams.say("subscriptions", mention=True, conversation=CHANNEL, kind="channel")
        assert listed.card["body"][0]["text"] == "Subscriptions of this channel"
        [refused] = await teams.say("subscribe drift --severity Sev1", mention=True, conversation=CHANNEL,
                                    kind="channel")
        assert refused.text.startswith("--severity cannot apply to drift")
        [scheduled] = await teams.say("digest schedule mondays 9am --tz IST", mention=True, conversation=CHANNEL,
                                      kind="channel")
        assert "`0 9 * * 1` in Asia/Kolkata" in scheduled.text
        [usage] = await teams.say("digest schedule", mention=True, conversation=CHANNEL, kind="channel")
        assert "&lt;" not in usage.text and "<" not in usage.text
        assert "‹when›" in usage.text


async def test_a_viewer_is_told_the_role_for_grant_before_the_words(workspaces, store):
    viewer = Chat(workspaces, store, Role.VIEWER)
    assert (await viewer("grant Bob Builder viewer")).text.startswith("`grant` needs the Admin role")
