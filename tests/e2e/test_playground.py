"""The bot through the Microsoft 365 Agents Playground in headless Chromium (issue #4).

Each test is a short conversation as a person would have it, and keeps screenshots under
tests/e2e/output/<test name>/. The bot runs once per session over a fresh demo workspace.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import ALEX, MEGAN

pytestmark = pytest.mark.e2e


def test_help_lists_the_commands(chat):
    chat.send("help")
    answer = chat.bot_replies_text()
    chat.screenshot("help")
    assert "models" in answer
    assert "endpoint" in answer


def test_models_card_lists_the_demo_models(chat):
    chat.send("models")
    answer = chat.bot_replies_text()
    chat.screenshot("models")
    for model in ("fraud-model v4", "churn-model v3", "credit-risk v3", "demand-forecast v2"):
        assert model in answer, answer


def test_endpoint_card_shows_deployments_and_traffic(chat):
    chat.send("endpoint fraud-api")
    answer = chat.bot_replies_text()
    chat.screenshot("endpoint")
    assert "Endpoint fraud-api" in answer
    assert "blue=90 green=10" in answer, answer
    assert "90%" in answer and "10%" in answer, f"no traffic split shown: {answer!r}"


def test_card_button_replaces_the_card(chat):
    chat.send("endpoint fraud-api")
    chat.bot_replies_text()
    chat.screenshot("before-click")
    updated = chat.click_card_button("Refresh")
    chat.screenshot("after-click")
    assert "fraud-api" in updated
    assert "blue" in updated and "green" in updated
    log = chat.log_panel_text()
    assert "invoke 200" in log, log[-1500:]


def test_mistyped_command_gets_did_you_mean(chat):
    chat.send("modles")
    answer = chat.last_bot_message_text()
    chat.screenshot("did-you-mean")
    assert "Did you mean" in answer
    assert "models" in answer


def test_whoami_shows_the_current_user(chat):
    chat.send("whoami")
    answer = chat.bot_replies_text()
    chat.screenshot("whoami")
    assert "Alex Wilber" in answer


def test_failed_jobs_filter(chat):
    chat.send("jobs --status Failed")
    answer = chat.bot_replies_text()
    chat.screenshot("failed-jobs")
    assert "Failed" in answer
    for other in ("Running", "Completed", "Queued"):
        assert other not in answer, f"{other} job listed under --status Failed: {answer!r}"


def test_mention_in_channel_is_answered_in_the_thread(chat):
    chat.mention_bot_in_channel("whoami")
    answer = chat.last_bot_message_text()
    chat.screenshot("channel-mention")
    assert "Alex Wilber" in answer
    # The answer sits inside the post's thread, not as a new post.
    post = chat.page.get_by_role("group").filter(has_text="whoami").last
    assert "Alex Wilber" in post.inner_text().split("whoami", 1)[1]


@pytest.mark.parametrize("playground_user", [MEGAN], indirect=True)
def test_second_user_sees_their_own_name(chat):
    chat.send("whoami")
    answer = chat.bot_replies_text()
    chat.screenshot("whoami-megan")
    assert "Megan Bowen" in answer
    assert "Alex Wilber" not in answer


def test_switch_user_within_a_test(chat):
    chat.send("whoami")
    assert "Alex Wilber" in chat.bot_replies_text()
    chat.switch_user(MEGAN)
    chat.send("whoami")
    answer = chat.bot_replies_text()
    chat.screenshot("after-switch")
    assert "Megan Bowen" in answer


def test_a_drift_breach_reaches_a_subscribed_channel(chat, bot_server):
    """Subscribe the channel to drift alerts, post Azure ML's breach event as Event Grid sends it
    (camelCase data, the breach tag's own text; the monitor is named by the run's experiment), and
    see the alert card arrive in the channel with Acknowledge and Snooze (no Retrain: Azure's event
    names no model; no Rollback: the bot has recorded no traffic change yet)."""
    import json
    import urllib.request

    from tests.e2e.harness import REPO_ROOT, ROLES

    chat.mention_bot_in_channel("subscribe drift")
    assert "drift" in chat.last_bot_message_text()
    event = (REPO_ROOT / "docs" / "examples" / "drift-breach.eventgrid.json").read_bytes()
    request = urllib.request.Request(f"{bot_server.base_url}/api/events?code={ROLES['MLOPSBOT_WEBHOOK_KEY']}",
                                     data=event, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["cards"] == 1
    # The alert is a new post of the bot's in the channel (the page shows it at the top).
    chat.page.get_by_text("Drift: monitor fraud-model-monitor breached its thresholds").first.wait_for()
    chat.screenshot("drift-alert")
    page = chat.page.inner_text("body")
    assert "Per feature, worst first" in page and "amount" in page, page[:2000]
    buttons = chat.card_buttons()
    assert {"Acknowledge", "Snooze"} <= set(buttons) and not {"Retrain", "Rollback"} & set(buttons), buttons


def test_digest_now_in_the_channel(chat):
    chat.mention_bot_in_channel("digest now")
    digest = chat.last_bot_message_text()
    chat.screenshot("digest")
    assert "fraud-api" in digest and "fraud-model" in digest, digest


@pytest.mark.timeout(180)
def test_plain_questions_are_answered_and_a_plain_change_is_proposed(chat):
    """Issue #20 at a Teams client: three questions in plain words, each answered with the card of
    the command it means under a "Read as" line; then a change asked in plain words, which is only
    proposed (the exact command, before -> after, a Run button); the button goes through the gate
    (production's stop needs the requester's confirmation) and the compute instance stops."""
    chat.send("anything broken?")
    answer = chat.bot_replies_text()
    chat.screenshot("read-as-endpoints")
    assert "Read as endpoints" in answer.replace("`", ""), answer

    chat.send("how is the credit endpoint doing?")
    answer = chat.bot_replies_text()
    assert "Read as endpoint credit-api" in answer.replace("`", ""), answer
    assert "Endpoint credit-api" in answer, answer

    chat.send("what's wrong with fraud-api")
    answer = chat.bot_replies_text()
    chat.screenshot("read-as-endpoint")
    assert "Read as endpoint fraud-api" in answer.replace("`", ""), answer
    assert "quotation mark" not in answer

    chat.send("turn off alice's VM")
    proposal = chat.last_bot_message_text()
    chat.screenshot("proposal")
    assert "Is this the change you mean?" in proposal, proposal
    assert "Read as stop ds-ci-alice" in proposal.replace("`", ""), proposal
    assert "Nothing has changed yet" in proposal, proposal
    chat.send("compute")
    assert "ds-ci-alice" in chat.bot_replies_text()

    invokes = len(chat.invoke_statuses())
    chat.page.locator('button[title="Run stop ds-ci-alice"]').last.click()
    confirm = _wait_for_text(chat, "Stop compute ds-ci-alice", "Running → Stopped", timeout=30)
    assert chat.invoke_statuses()[invokes:] == [200], chat.invoke_statuses()
    chat.screenshot("confirm-the-proposed-change")
    # The Confirm button reaches the requester by Teams' card refresh, which the playground does
    # not perform: Alex confirms by typing, as the card says.
    import re
    number = re.search(r"Confirmation #(\d+)", confirm)
    assert number, confirm
    chat.send(f"confirm {number.group(1)}")
    _wait_for_text(chat, "Compute instance ds-ci-alice is now Stopped", timeout=60)
    chat.screenshot("proposed-change-done")
    chat.send("compute")
    listed = chat.bot_replies_text()
    alice = listed[listed.index("ds-ci-alice"):]
    assert re.match(r"ds-ci-alice\s+computeinstance[^\n]*\s+Start compute\s+Stopped", alice), alice[:200]


def _request_number(card: str) -> int:
    import re

    match = re.search(r"Approval request #(\d+)", card)
    assert match, card
    return int(match.group(1))


def _wait_for_text(chat, *needles: str, timeout: float) -> str:
    """Wait until a bot message on the page (new, or edited in place) contains every one of
    `needles`; return the newest such message."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = [message for message in chat.bot_messages() if all(needle in message for needle in needles)]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no bot message with {needles!r} within {timeout:.0f}s; "
                                 f"last: {chat.bot_messages()[-3:]!r}")
        chat.page.wait_for_timeout(500)


# ---------------------------------------------------------------- issue #19: at 3 a.m.

def _post_drift(bot_server, *, event_id: str, monitor: str, endpoint: str) -> None:
    """Azure ML's breach event (docs/examples), for a monitor of `endpoint`, as Event Grid posts it."""
    import json
    import urllib.request

    from tests.e2e.harness import REPO_ROOT, ROLES

    [event] = json.loads((REPO_ROOT / "docs" / "examples" / "drift-breach.eventgrid.json").read_text())
    event["id"] = event_id
    event["data"]["runTags"].update({"azureml.monitor_name": monitor, "azureml.endpoint_name": endpoint,
                                     "azureml.model_name": "fraud-model"})
    request = urllib.request.Request(f"{bot_server.base_url}/api/events?code={ROLES['MLOPSBOT_WEBHOOK_KEY']}",
                                     data=json.dumps([event]).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["cards"] >= 1


@pytest.mark.timeout(600)
def test_at_3_am_the_on_call_operator_rolls_back_from_the_alert_at_once(chat, bot_server):
    """Issue #19's 3 a.m. story. Yesterday green got half of fraud-api (Alex asked in his personal
    chat; the request reached Megan in hers; she approved). At 3 a.m. a drift alert arrives in the
    channel; Alex reads it and clicks Rollback: it runs at once, without waiting for anyone; Megan
    finds a review card in her chat and reviews it; the verdict after the rollback follows."""
    import re

    chat.switch_user(MEGAN)
    chat.send("whoami")                       # Megan has a personal chat with the bot: requests reach her there
    assert "Approver" in chat.bot_replies_text()
    chat.switch_user(ALEX)
    chat.mention_bot_in_channel("subscribe drift")
    assert "drift" in chat.last_bot_message_text()
    chat.send("traffic fraud-api blue=50 green=50 --reason 'v4 to half the traffic'")
    change = _request_number(chat.bot_replies_text())

    chat.switch_user(MEGAN)                   # the request arrived in her chat by itself
    told = _wait_for_text(chat, f"Approval request #{change}", "blue=90 green=10 → blue=50 green=50", timeout=30)
    assert "Alex Wilber" in told and "Evidence" in told, told
    chat.screenshot("request-reached-the-approver")
    chat.send(f"approve {change} fine for tonight")
    assert "Megan Bowen approved" in chat.bot_replies_text()

    chat.switch_user(ALEX)
    _wait_for_text(chat, "Traffic on fraud-api is now blue=50 green=50.", timeout=60)
    _post_drift(bot_server, event_id="e2e-3am-drift-1", monitor="fraud-api-drift", endpoint="fraud-api")
    chat.open_channel()
    # the alert is a new post of the bot's in the channel (the page shows it at the top)
    chat.page.get_by_text("Drift: monitor fraud-api-drift breached its thresholds").first.wait_for(timeout=30_000)
    # the alert card's rollback button says what it restores (issue #19 item 5): "Undo #N (...): a → b"
    undos = [b for b in chat.card_buttons() if b.startswith("Undo #")]
    assert undos and "blue=50 green=50 → blue=90 green=10" in undos[-1], chat.card_buttons()
    undo = undos[-1]
    chat.page.get_by_text("Drift: monitor fraud-api-drift breached its thresholds").last.scroll_into_view_if_needed()
    chat.screenshot("drift-alert")
    invokes = len(chat.invoke_statuses())
    chat.page.locator(f'button[title="{undo}"]').last.click()
    _wait_for_text(chat, "Traffic on fraud-api is now blue=90 green=10.", timeout=60)   # at once, nobody asked
    assert chat.invoke_statuses()[invokes:] == [200], chat.invoke_statuses()
    chat.screenshot("rolled-back-at-once")

    chat.switch_user(MEGAN)                   # the approvers are told, and can review
    review = _wait_for_text(chat, "Review change #", "Ran at once by Alex Wilber", timeout=30)
    assert "blue=50 green=50 → blue=90 green=10" in review, review
    chat.page.get_by_text("Ran at once by Alex Wilber").last.scroll_into_view_if_needed()
    chat.screenshot("review-card")
    number = re.search(r"Review change #(\d+)", review).group(1)
    chat.send(f"review {number} right call, green was drifting")
    assert f"Reviewed change #{number}" in chat.bot_replies_text()

    chat.switch_user(ALEX)                    # the verdict follows where he clicked
    chat.open_channel()
    # the watch window is a minute, then the scheduler's next pass: on a loaded machine well over 150 s
    verdict = _wait_for_text(chat, "after the rollback on fraud-api", timeout=300)
    chat.page.get_by_text("after the rollback on fraud-api").last.scroll_into_view_if_needed()
    chat.screenshot("verdict-after-rollback")
    assert "Before → after" in verdict, verdict
    chat.send("audit --target fraud-api")
    story = chat.bot_replies_text()
    assert "Alex Wilber ran rollback on fraud-api in ml-prod at once" in story, story
    assert f"Megan Bowen reviewed rollback on fraud-api in ml-prod (change #{number}): right call" in story, story


@pytest.mark.timeout(300)
def test_an_approver_sees_the_unhealthy_receiver_and_rejects_with_a_reason(chat, bot_server):
    """Issue #19's approver story. Green is failing; Alex asks for a canary onto it; the card says
    so; Megan opens the request, rejects it with a reason typed on the card, after being asked
    once; Alex's card shows her reason."""
    from adapters.local.workspace import LocalWorkspace

    workspace = LocalWorkspace(bot_server.data_dir / "workspace.db")
    workspace.degrade_deployment("fraud-api", "green")        # the demo switch (`demo degrade`, Admin only)
    try:
        chat.switch_user(MEGAN)
        chat.send("whoami")
        chat.bot_replies_text()
        chat.switch_user(ALEX)
        chat.send("endpoint fraud-api")
        chat.bot_replies_text()
        chat.send("canary fraud-api green 30 --reason 'v4 is ready'")
        card = chat.bot_replies_text()
        number = _request_number(card)
        assert "⚠ green would receive traffic and is unhealthy" in card, card
        chat.screenshot("canary-request")

        chat.switch_user(MEGAN)
        chat.send(f"approval {number}")       # her own view: the buttons, and the figures read now
        view = chat.bot_replies_text()
        assert "⚠ green would receive traffic and is unhealthy" in view and "fraud-model:4" in view, view
        chat.page.get_by_text("⚠ green would receive traffic").last.scroll_into_view_if_needed()
        chat.screenshot("approver-sees-unhealthy-green")
        chat.page.locator('button[title="Reject"]').last.click()              # asks first: a reason
        box = chat.page.get_by_placeholder("The reason the requester will read").last
        box.wait_for()
        box.fill("green answers 8% of requests with 5xx right now")
        chat.screenshot("reject-asks-for-a-reason")
        invokes = len(chat.invoke_statuses())
        chat.page.locator('button[title="Confirm rejection"]').last.click()
        rejected = _wait_for_text(chat, "rejected by Megan Bowen: green answers 8% of requests with 5xx", timeout=30)
        assert chat.invoke_statuses()[invokes:] == [200], chat.invoke_statuses()
        assert f"Approval request #{number}" in rejected, rejected

        chat.switch_user(ALEX)                # the requester sees the reason on his card
        seen = _wait_for_text(chat, f"Approval request #{number}", "green answers 8% of requests with 5xx",
                              timeout=30)
        assert "Rejected" in seen, seen
        chat.page.get_by_text("green answers 8% of requests with 5xx").last.scroll_into_view_if_needed()
        chat.screenshot("requester-sees-the-reason")
    finally:
        workspace.heal_deployment("fraud-api", "green")


# Last in the file: the watch after each change posts its verdict a minute later (the bot runs
# with MLOPSBOT_WATCH_MINUTES=1), and no other test should find it on its page (the issue #19 stories
# above wait for their own verdicts before they end).
@pytest.mark.timeout(420)
def test_a_traffic_change_is_approved_watched_and_rolled_back(chat):
    """Issue #9's story at a Teams client. Alex (Operator) asks in the channel for production
    traffic to move to green; his own Approve is refused; Megan (Approver) approves from her
    chat; Alex sees the change applied and, after the watch window, the verdict card in the
    post's thread; he clicks its Rollback, which runs at once (issue #19: the safe direction);
    the split is back to what it was, and `audit` tells the story."""
    chat.switch_user(MEGAN)
    chat.send("whoami")                       # the bot now knows Megan's Teams id: she is an approver
    assert "Approver" in chat.bot_replies_text()
    chat.switch_user(ALEX)
    chat.send("endpoint fraud-api")
    assert "blue=90 green=10" in chat.bot_replies_text()

    chat.mention_bot_in_channel("traffic fraud-api blue=0 green=100 --reason 'green passed shadow'")
    card = chat.last_bot_message_text()
    chat.screenshot("approval-card")
    change = _request_number(card)
    assert "Waiting for approval" in card, card
    assert "blue=90 green=10 → blue=0 green=100" in card, card
    # Megan (an approver the bot has met) gets the buttons by Teams' card refresh, which the
    # playground does not perform; everyone else's card says so. Alex approves by typing instead.
    assert "Approvers see the buttons" in card, card
    chat.send(f"approve {change}")
    refused = chat.last_bot_message_text()
    chat.screenshot("own-approve-refused")
    assert "cannot approve it yourself" in refused, refused

    chat.switch_user(MEGAN)
    chat.send(f"approve {change} looks good")
    outcome = chat.bot_replies_text()
    chat.screenshot("approved")
    assert "Approved" in outcome and "Megan Bowen approved" in outcome, outcome

    # Back at Alex's screen (his page stayed open): the outcome and, once the watch window has
    # passed, the verdict arrive in the post's thread by themselves.
    chat.switch_user(ALEX)
    chat.open_channel()
    verdict = _wait_for_text(chat, "after the traffic on fraud-api", timeout=150)
    chat.page.get_by_text("after the traffic on fraud-api").last.scroll_into_view_if_needed()
    chat.screenshot("verdict")
    # Healthy or degraded is the demo's noise: the endpoint's p99 moves from the blue/green blend to
    # green's own, about 1.4 to 1.5 times it, right at the degraded line (1.5 x and 50 ms more).
    import re
    assert re.match(r"(✅ Healthy|⚠️ Degraded) after the traffic on fraud-api\n", verdict), verdict
    assert "Before → after" in verdict and "Rollback" in verdict, verdict
    assert f"request #{change}" in verdict and "(green=100)" in verdict, verdict
    # The approval card in the thread was edited in place with the vote and the outcome.
    approved = _wait_for_text(chat, f"Approval request #{change}", timeout=5)
    assert "Approved and done" in approved and "Traffic on fraud-api is now blue=0 green=100." in approved, approved

    invokes = len(chat.invoke_statuses())
    chat.page.locator('button[title="Rollback"]').last.click()
    # Since issue #19 the safe direction runs at once in production (Megan gets a review card).
    _wait_for_text(chat, "Traffic on fraud-api is now blue=90 green=10.", timeout=60)
    assert chat.invoke_statuses()[invokes:] == [200], chat.invoke_statuses()
    chat.page.get_by_text("Traffic on fraud-api is now blue=90 green=10.").last.scroll_into_view_if_needed()
    chat.screenshot("rolled-back")
    chat.send("endpoint fraud-api")
    assert "blue=90 green=10" in chat.bot_replies_text()
    chat.send("audit --target fraud-api")
    story = chat.bot_replies_text()
    chat.screenshot("audit")
    for line in (f"Alex Wilber asked for #{change} (traffic on fraud-api in ml-prod): green passed shadow",
                 f"Megan Bowen approved #{change} (traffic on fraud-api in ml-prod): looks good",
                 "Alex Wilber ran rollback on fraud-api in ml-prod at once"):
        assert line in story, story
