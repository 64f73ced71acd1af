"""The body of POST /api/approvals is checked field by field, in declaration order; the 422 answer names
the first problem (tests/test_approvals_http.py drives the same through HTTP)."""

from __future__ import annotations

import pytest

from bot.api import GateRequest, _Unprocessable

BODY = {"action": "deploy", "target": "fraud-model:7", "requester": "ci", "conversation": "19:c@thread.tacv2"}


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def test_a_good_body_becomes_a_request_with_defaults():
    assert GateRequest.from_json(BODY) == GateRequest(action="deploy", workspace="", target="fraud-model:7",
                                                      parameters={}, reason="", requester="ci",
                                                      conversation="19:c@thread.tacv2", run_url="", execute=False,
                                                      before={}, after={})
    full = GateRequest.from_json({**BODY, "execute": True, "run_url": "https://ci.example/run/1",
                                  "parameters": {"split": "blue=50 green=50"}, "requester": "é" * 200})
    assert (full.execute, full.run_url, full.parameters) == (True, "https://ci.example/run/1",
                                                             {"split": "blue=50 green=50"})


@pytest.mark.parametrize("body,problem,field", [
    ([], "body: must be a JSON object", "body"),
    (None, "body: must be a JSON object", "body"),
    ({}, "action: field required", "action"),
    ({"action": "traffic"}, "requester: field required", "requester"),
    ({**BODY, "action": ""}, "action: must not be empty", "action"),
    ({**BODY, "action": "a" * 65}, "action: at most 64 characters", "action"),
    ({**BODY, "action": 5}, "action: must be a string", "action"),
    ({**BODY, "workspace": None}, "workspace: must be a string", "workspace"),
    ({**BODY, "target": "t" * 301}, "target: at most 300 characters", "target"),
    ({**BODY, "requester": "é" * 201}, "requester: at most 200 characters", "requester"),
    ({**BODY, "conversation": ""}, "conversation: must not be empty", "conversation"),
    ({**BODY, "action": "\ud800"}, "action: must be Unicode text (it holds a lone surrogate escape)", "action"),
    ({**BODY, "run_url": "javascript:alert(1)"}, "run_url: must be an https:// URL", "run_url"),
    ({**BODY, "run_url": "https://" + "x" * 993}, "run_url: at most 1000 characters", "run_url"),
    ({**BODY, "execute": "yes"}, "execute: must be true or false", "execute"),
    ({**BODY, "execute": 1}, "execute: must be true or false", "execute"),
    ({**BODY, "execute": None}, "execute: must be true or false", "execute"),
    ({**BODY, "parameters": []}, "parameters: must be a JSON object", "parameters"),
    ({**BODY, "before": nested(20)}, "before: is nested deeper than 8 levels", "before"),
    ({**BODY, "after": {"x": "y" * 9000}}, "after: is too large (8 KB at most)", "after"),
    ({**BODY, "extra": "field"}, "extra: not a field of an approval request (those are action, workspace, target, "
                                 "parameters, reason, requester, conversation, run_url, execute, before, after)",
     "extra"),
    # the first field in declaration order is named, and unknown fields only after every known one
    ({"zz": 1, "requester": "", "action": ""}, "action: must not be empty", "action"),
    ({**BODY, "zz": 1, "target": 2, "reason": 3}, "target: must be a string", "target"),
])
def test_a_bad_body_names_its_first_problem(body, problem, field):
    with pytest.raises(_Unprocessable) as refused:
        GateRequest.from_json(body)
    assert (str(refused.value), refused.value.field) == (problem, field)
