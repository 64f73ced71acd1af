"""The policy: defaults per environment, the TOML file, and its validation with line numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.settings import SettingsError, load_settings
from commands.context import Role
from commands.policy import (
    APPROVAL, CONFIRM, DIRECT, PolicyError, Rule, default_rule, load_policy, parse_duration, parse_policy,
)


@pytest.mark.parametrize("action", ["traffic", "rollback", "scale", "promote", "archive", "retrain", "batch"])
def test_prod_changes_need_one_approval_from_someone_else(action):
    rule = default_rule(action, "prod")
    assert (rule.mode, rule.quorum, rule.allow_self, rule.approver_role, rule.expiry) == (
        APPROVAL, 1, False, Role.APPROVER, timedelta(hours=24))


@pytest.mark.parametrize("action", ["cancel", "schedule", "start", "stop"])
def test_prod_operations_need_a_confirmation(action):
    assert default_rule(action, "prod").mode == CONFIRM


@pytest.mark.parametrize("action,mode", [("traffic", CONFIRM), ("scale", CONFIRM), ("cancel", DIRECT),
                                         ("batch", DIRECT), ("start", DIRECT), ("promote", DIRECT)])
def test_elsewhere_traffic_and_scale_confirm_and_the_rest_is_direct(action, mode):
    assert default_rule(action, "dev").mode == mode
    assert default_rule(action, "staging").mode == mode


def test_a_policy_file_overrides_rule_by_rule_and_the_last_match_wins():
    policy = parse_policy('''
[[rule]]
action = "*"
environment = "staging"
mode = "approval"

[[rule]]
action = ["traffic", "scale"]
environment = ["prod"]
mode = "approval"
quorum = 2
approver_role = "admin"
expiry = "4h"
allow_self = true
''', source="policy.toml")
    assert policy.rule("traffic", "prod") == Rule(APPROVAL, 2, True, Role.ADMIN, timedelta(hours=4),
                                                  source="policy.toml line 7")
    assert policy.rule("cancel", "staging").mode == APPROVAL
    assert policy.rule("cancel", "prod").mode == CONFIRM          # untouched: the default
    assert policy.rule("batch", "dev").mode == DIRECT


@pytest.mark.parametrize("text,message", [
    ('[[rule]]\naction = "trafic"\nmode = "approval"\n', "policy line 1 (rule 1): unknown action 'trafic'"),
    ('\n\n[[rule]]\nmode = "aproval"\n', "policy line 3 (rule 1): mode must be one of direct, confirm, approval"),
    ('[[rule]]\nmode = "direct"\n[[rule]]\nmode = "approval"\nquorum = 0\n', "policy line 3 (rule 2): quorum must be"),
    ('[[rule]]\nmode = "approval"\napprover_role = "viewer"\n', "approver_role must be operator, approver or admin"),
    ('[[rule]]\nmode = "approval"\nexpiry = "soon"\n', "'soon' is not a duration"),
    ('[[rule]]\nmode = "approval"\nquorom = 2\n', "unknown key 'quorom'"),
    ('[rules]\nmode = "approval"\n', "policy line 1: unknown section or key 'rules'"),
    ('[[rule]]\nmode = "approval\n', "policy: "),
])
def test_a_bad_policy_is_refused_naming_the_line(text, message):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert message in str(caught.value)


def test_a_bad_policy_file_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "policy.toml"
    bad.write_text('[[rule]]\nmode = "sometimes"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(host="127.0.0.1", policy_file=str(bad))
    assert f"{bad} line 1 (rule 1): mode must be one of" in str(caught.value)
    with pytest.raises(SettingsError, match="cannot read the policy file"):
        load_settings(host="127.0.0.1", policy_file=str(tmp_path / "missing.toml"))


def test_a_good_policy_file_is_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "policy.toml"
    good.write_text('[[rule]]\naction = "scale"\nenvironment = "prod"\nmode = "direct"\n')
    settings = load_settings(host="127.0.0.1", policy_file=str(good))
    assert settings.policy().rule("scale", "prod").mode == DIRECT
    assert settings.policy().digest() != load_policy(None).digest()


@pytest.mark.parametrize("text,value", [("30m", timedelta(minutes=30)), ("4h", timedelta(hours=4)),
                                        (" 2d ", timedelta(days=2))])
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["0h", "4", "h", "4 weeks", "-1h", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rules_describe_themselves_in_words():
    assert Rule(APPROVAL).describe() == "needs 1 approval from an Approver other than the requester within 24 h"
    assert Rule(APPROVAL, quorum=2, allow_self=True, expiry=timedelta(hours=4)).describe() == (
        "needs 2 approvals from Approvers within 4 h")
    assert Rule(CONFIRM).describe() == "asks you to confirm first"
    assert Rule(DIRECT).describe() == "runs at once"
