"""The approval card: a pure function of a stored request, the same for everyone who sees it.

It shows what will change exactly (before -> after), where, who asked and why, the votes so far
(n of N), the expiry, and at the end who decided and what happened. Its buttons carry only the
request id; the gate reloads everything from storage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from adapters.storage.approvals import (
    APPROVED, EXECUTING, EXPIRED, FAILED, PENDING, REJECTED, SUCCEEDED, WITHDRAWN, Approval,
)
from commands.base.context import shown_name, workspace_line
from commands.changes.policy import REQUESTER_ONLY
from commands.resources.splits import traffic_change
from commands.base.ui import button, card, columns, facts, limited, plain, section, text, when

STATE_LABELS = {
    PENDING: ("Waiting for approval", "Warning"), APPROVED: ("Approved", "Good"),
    EXECUTING: ("Approved, being carried out", "Accent"), SUCCEEDED: ("Approved and done", "Good"),
    FAILED: ("Approved, but it failed", "Attention"), REJECTED: ("Rejected", "Attention"),
    EXPIRED: ("Expired without a decision", "Default"), WITHDRAWN: ("Withdrawn by the requester", "Default"),
}
UNTOLD = ("Nobody could be told about this request: no approval channel is set (MLOPSBOT_APPROVAL_CHANNEL) "
          "and no approver has a chat with the bot. Share this card with an approver, or have them say "
          "hello to the bot once.")
MAX_REFRESH_USERS = 60          # Teams refreshes a card automatically for at most 60 listed users


def show_value(value: Any) -> str:
    """`{"blue": 90, "green": 10}` -> "blue=90 green=10"; other values as themselves."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "—"
    if value is None or value == "":
        return "—"
    return str(value)


def change_lines(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str]]:
    """One (what, "before → after") pair per changed key; a traffic split as everywhere else
    (commands.resources.splits.traffic_change: `blue=90 green=10 → blue=100 green=0`). Keys and values
    may come from the pipeline API's caller: shown as plain text."""
    def pair(key: str) -> str:
        was, now = before.get(key), after.get(key)
        if key == "traffic" and isinstance(was, dict) and isinstance(now, dict):
            return plain(traffic_change(was, now))
        return f"{plain(show_value(was))} → {plain(show_value(now))}"

    return [(plain(key.replace("_", " ").capitalize()), pair(key)) for key in dict.fromkeys([*before, *after])]


def _is_confirmation(request: Approval) -> bool:
    return request.approver_role == REQUESTER_ONLY


def state_label(request: Approval) -> tuple[str, str]:
    """The request's state in words and its colour, the same on its card and in `approvals`."""
    if _is_confirmation(request) and request.state == PENDING:
        return "Waiting for the requester to confirm", STATE_LABELS[PENDING][1]
    return STATE_LABELS.get(request.state, (request.state, "Default"))


def approval_card(request: Approval, now: datetime, *, approver_ids: Sequence[str] = (),
                  buttons: bool = True, mentions: Sequence[tuple[str, str]] = (),
                  evidence: dict[str, Any] | None = None) -> dict:
    """The request's card. `buttons`: show Approve / Reject (Confirm / Cancel) while it is pending.
    `approver_ids` (Teams user ids, `29:...`, at most 60) get the card refreshed for them by Teams
    (verb `approval`), which answers each with their own view: buttons only for who may decide.
    `mentions` ((Teams id, name) of approvers) are @mentioned where the card is posted in a channel.
    `evidence` (figures read when the card was asked for; else those stored with the request) is
    what an approver needs to decide: each deployment's health and model, and warnings."""
    confirm = _is_confirmation(request)
    label, color = state_label(request)
    kind = "Confirmation" if confirm else "Approval request"
    summary = plain(request.summary or request.target)
    body = [
        text(f"**{label}**", color=color),
        text(summary, weight="Bolder", wrap=True),
        facts([*change_lines(request.before, request.after),
               ("Workspace", f"{request.workspace} ({request.environment})"),
               ("Asked by", plain(shown_name(request.requester_id, request.requester_name))),
               ("Reason", plain(request.reason)),
               ("Asked", when(request.created_at))]
              + ([] if confirm else [("Approvals", f"{len(request.approvals)} of {request.quorum}"
                                      + ("" if request.allow_self else " (not the requester)"))])
              + ([("Expires", _expiry(request.expires_at, now))] if request.state == PENDING else [])
              + ([("Pipeline run", request.run_url)] if request.run_url else [])),
    ]
    shown_evidence = evidence if evidence is not None else request.parameters.get("_evidence")
    links: list[dict] = []
    if isinstance(shown_evidence, dict):
        body += evidence_elements(shown_evidence)
        links = [button(str(title), str(verb), *[str(a) for a in args]) for title, verb, args
                 in shown_evidence.get("links", [])[:3] if isinstance(args, list)]
    if request.votes:
        body.append(section("Votes"))
        body += limited(list(request.votes), _vote_row, noun="vote")
    if request.result and request.state == PENDING:        # e.g. its target changed since (commands.changes.gate)
        body.append(text(f"⚠️ {plain(request.result)}", color="Warning", wrap=True))
    if request.result and request.state not in (PENDING,):
        body += [section("Outcome"), text(plain(request.result), wrap=True,
                                          color="Attention" if request.state == FAILED else None)]
    actions: list[dict] = []
    if request.state == PENDING and not buttons:
        body.append(text(f"Approvers see the buttons; or type `approve {request.id}` or "
                         f"`reject {request.id} ‹reason›`.", subtle=True) if not confirm else
                    text(f"{plain(shown_name(request.requester_id, request.requester_name))} can `confirm {request.id}` or `withdraw {request.id}`.",
                         subtle=True))
    elif request.state == PENDING:
        if confirm:
            actions = [button(f"Confirm {request.action}", "confirm", str(request.id), style="positive", refresh=True),
                       button("Cancel request", "withdraw", str(request.id), style="destructive", refresh=True)]
        else:
            # A vote edits the card it was cast on (in place, for the voter; for everyone else the
            # gate edits the posted message), so these buttons are `refresh` buttons.
            # Approve sends the optional comment typed above it; Reject asks once, with a required
            # reason, before it rejects (Teams sends the card's inputs with Action.Execute).
            body.append({"type": "Input.Text", "id": "comment", "placeholder": "Comment (optional)",
                         "maxLength": 500, "label": "Comment"})
            reject = button("Confirm rejection", "reject", str(request.id), style="destructive", refresh=True)
            actions = [button("Approve", "approve", str(request.id), style="positive", refresh=True),
                       {"type": "Action.ShowCard", "title": "Reject",
                        "card": {"type": "AdaptiveCard", "body": [
                            {"type": "Input.Text", "id": "reason", "label": "Why reject it?", "isRequired": True,
                             "errorMessage": "A rejection needs a reason.", "maxLength": 500,
                             "placeholder": "The reason the requester will read"}],
                            "actions": [reject]}}]
            body.append(text(f"Or type `approve {request.id} [comment]` or `reject {request.id} ‹reason›`. "
                             f"Needs the {request.approver_role.capitalize()} role.", subtle=True))
    if mentions and request.state == PENDING:
        body.append(text("For " + ", ".join(f"<at>{plain(name)}</at>" for _, name in mentions[:20]), wrap=True))
    if links:
        body.append({"type": "ActionSet", "actions": links})
    if request.parameters.get("_untold") and request.state == PENDING:
        body.append(text(f"⚠️ {UNTOLD}", color="Warning", wrap=True))
    result = card(f"{kind} #{request.id}", body, subtitle=workspace_line(request.workspace, request.environment),
                  actions=actions)
    if mentions and request.state == PENDING:
        result.setdefault("msteams", {})["entities"] = [
            {"type": "mention", "text": f"<at>{plain(name)}</at>", "mentioned": {"id": teams_id, "name": name}}
            for teams_id, name in mentions[:20]]
    if request.state == PENDING and approver_ids:
        result["refresh"] = {"action": {"type": "Action.Execute", "verb": "approval",
                                        "data": {"args": [str(request.id)], "refresh": True}},
                             "userIds": list(dict.fromkeys(approver_ids))[:MAX_REFRESH_USERS]}
    return result


def _vote_row(vote) -> dict:
    mark = "approved" if vote.decision == "approve" else "rejected"
    comment = f": {plain(vote.comment)}" if vote.comment else ""
    return text(f"{plain(vote.voter_name)} {mark} {when(vote.at)}{comment}", wrap=True)


def _expiry(moment: datetime, now: datetime) -> str:
    left = moment - now
    hours = int(left.total_seconds() // 3600)
    minutes = int(left.total_seconds() // 60) % 60
    remaining = "expired" if left.total_seconds() <= 0 else (f"in {hours} h {minutes} min" if hours else f"in {minutes} min")
    return f"{when(moment)} ({remaining})"


def approval_row(request: Approval) -> dict:
    label, color = state_label(request)
    summary = plain(request.summary or request.target)
    detail = (f"{request.workspace} · asked by {plain(shown_name(request.requester_id, request.requester_name))} · "
              f"{when(request.created_at)}")
    if request.state == PENDING and not _is_confirmation(request):
        detail += f" · {len(request.approvals)} of {request.quorum} approvals"
    if request.state == PENDING and request.result:
        detail += " · ⚠️ its target changed since"
    return columns([text(f"**#{request.id}** {summary}", wrap=True), text(detail, subtle=True, spacing="None")],
                   text(label, color=color),
                   {"type": "ActionSet", "actions": [button("Open", "approval", str(request.id))]},
                   widths=["stretch", "auto", "auto"])




def evidence_elements(evidence: dict[str, Any]) -> list[dict]:
    """The figures an approver decides on (commands/changes/gate.py gathers them): warnings first, then one
    line per deployment (its model, p99, 5xx rate, requests per minute), then the candidate's
    comparison headline, or the schedule and its last run."""
    out: list[dict] = [section("Evidence" + (f" (as of {when_text(evidence.get('as_of'))})"
                                             if evidence.get("as_of") else ""))]
    for warning in evidence.get("warnings", [])[:5]:
        out.append(text(f"⚠ {plain(warning)}", color="Attention", weight="Bolder", wrap=True))
    pairs = [(plain(str(name)), plain(str(line))) for name, line in evidence.get("rows", [])[:10]]
    if pairs:
        out.append(facts(pairs))
    if evidence.get("headline"):
        out.append(text(plain(str(evidence["headline"])), wrap=True))
    if evidence.get("error"):
        out.append(text(plain(str(evidence["error"])), subtle=True, wrap=True))
    return out


def when_text(value: Any) -> str:
    try:
        return when(datetime.fromisoformat(str(value)))
    except ValueError:
        return "—"


def review_card(op_id: int, change: Any, actor: str, now: datetime, *, emergency: str = "") -> dict:
    """The card the approvers get when a change ran without them (a rollback, or an emergency):
    what ran, who ran it and why, and a Reviewed button (`review <n>`)."""
    head = (f"🚨 Emergency change by {plain(actor)}: {plain(emergency)}" if emergency else
            f"Ran at once by {plain(actor)} (the safe direction): please review")
    body = [text(f"**{head}**", color="Attention" if emergency else "Warning", wrap=True),
            text(plain(change.summary), weight="Bolder", wrap=True),
            facts([*change_lines(change.before, change.after),
                   ("Workspace", f"{change.workspace} ({change.environment})"),
                   ("Reason", plain(change.reason)), ("When", when(now)), ("Change", f"#{op_id}")]),
            {"type": "Input.Text", "id": "comment", "placeholder": "Review comment (optional)", "maxLength": 500,
             "label": "Comment"},
            text(f"Or type `review {op_id} [comment]`. The verdict follows where it was run.", subtle=True)]
    actions = [button("Reviewed", "review", str(op_id), style="positive")]
    endpoint = str(change.parameters.get("endpoint") or "")
    if change.action in ("rollback", "traffic", "canary", "scale") and endpoint:
        actions += [button("Endpoint", "endpoint", endpoint, "--workspace", change.workspace),
                    button("History", "history", endpoint, "--workspace", change.workspace)]
    return card(f"Review change #{op_id}", body, subtitle=workspace_line(change.workspace, change.environment),
                actions=actions)
