"""The policy: defaults per environment, the TOML file, and its validation with line numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.settings import SettingsError, load_settings
from commands.base.context import Role
from commands.changes.policy import (
    APPROVAL, CONFIRM, DIRECT, PolicyError, Rule, default_rule, load_policy, parse_duration, parse_policy,
)


# rollback left this list with issue #19 item 1: it is the safe direction, run at once and reviewed.
@pytest.mark.parametrize("action", ["traffic", "canary", "scale", "promote", "archive", "retrain", "batch"])
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


# ---------------------------------------------------------------- kills mutmut survivors (issue #17)

def test_default_confirmations_expire_after_30_minutes_and_approvals_after_a_day():
    """A confirmation left open for a day is a change anyone on the thread can confirm much later."""
    assert default_rule("cancel", "prod") == Rule(CONFIRM, expiry=timedelta(minutes=30))
    assert default_rule("traffic", "dev") == Rule(CONFIRM, expiry=timedelta(minutes=30))
    assert default_rule("traffic", "prod") == Rule(APPROVAL, expiry=timedelta(hours=24))
    assert default_rule("batch", "dev") == Rule(DIRECT)


def test_a_rule_with_auto_rollback_says_so():
    assert Rule(APPROVAL, auto_rollback=True).describe() == (
        "needs 1 approval from an Approver other than the requester within 24 h; rolled back by itself if the "
        "endpoint degrades")
    assert Rule(DIRECT, auto_rollback=True).describe() == "runs at once; rolled back by itself if the endpoint degrades"


@pytest.mark.parametrize("value,shown", [
    (timedelta(minutes=30), "30 min"), (timedelta(minutes=90), "90 min"), (timedelta(seconds=3599), "59 min"),
    (timedelta(hours=1), "1 h"), (timedelta(hours=24), "24 h"), (timedelta(hours=47), "47 h"),
    (timedelta(hours=48), "2 d"), (timedelta(hours=49), "49 h"), (timedelta(days=3), "3 d")])
def test_durations_in_words(value, shown):
    from commands.changes.policy import duration_text
    assert duration_text(value) == shown


def test_a_duration_that_is_not_text_is_refused_in_words():
    with pytest.raises(ValueError) as refused:
        parse_duration(4)
    assert str(refused.value) == "'4' is not a duration like 30m, 4h or 2d"
    assert parse_duration("90m") == timedelta(minutes=90)


def test_every_rule_key_is_read():
    rule = parse_policy('[[rule]]\naction = "traffic"\nmode = "approval"\nquorum = 10\nallow_self = true\n'
                        'approver_role = "operator"\nexpiry = "90m"\nauto_rollback = true\n',
                        source="p.toml").rule("traffic", "prod")
    assert rule == Rule(APPROVAL, 10, True, Role.OPERATOR, timedelta(minutes=90), True, source="p.toml line 1")
    plain = parse_policy('[[rule]]\nmode = "approval"\n').rule("scale", "dev")
    assert (plain.quorum, plain.allow_self, plain.approver_role, plain.expiry, plain.auto_rollback) == (
        1, False, Role.APPROVER, timedelta(hours=24), False)
    assert parse_policy('[[rule]]\nmode = "confirm"\n').rule("scale", "dev").expiry == timedelta(minutes=30)


def test_rule_names_are_trimmed_case_folded_and_star_means_any():
    policy = parse_policy('[[rule]]\naction = ["traffic", "*"]\nenvironment = [" Prod "]\nmode = "direct"\n')
    assert policy.rule("archive", "PROD").mode == DIRECT         # "*" in a list: every action
    assert policy.rule("traffic", "dev").mode == CONFIRM         # another environment: the default


@pytest.mark.parametrize("text,message", [
    ('rule = [1]\n', "policy line ? (rule 1): a rule must be a table"),     # no [[rule]] line to name
    ('rule = 3\n', "policy line 1: write rules as [[rule]] tables"),
    ('[[rule]]\nmode = "approval"\nquorum = 11\n', "policy line 1 (rule 1): quorum must be a whole number from 1 "
                                                  "to 10, not 11"),
    ('[[rule]]\nmode = "approval"\nquorum = true\n', "quorum must be a whole number from 1 to 10, not True"),
    ('[[rule]]\nmode = "approval"\nallow_self = "yes"\n', "allow_self must be true or false, not 'yes'"),
    ('[[rule]]\nmode = "approval"\nauto_rollback = 1\n', "auto_rollback must be true or false, not 1"),
    ('[[rule]]\nmode = "approval"\napprover_role = 3\n', "approver_role must be operator, approver or admin, not 3"),
    ('[[rule]]\nmode = "approval"\napprover_role = "boss"\n', "approver_role must be operator, approver or admin, "
                                                             "not 'boss'"),
    ('[[rule]]\nmode = "approval"\nwho = 1\n', "policy line 1 (rule 1): unknown key 'who' (known: action, "
                                              "allow_self, approver_role, auto_rollback, emergency, environment, "
                                              "expiry, mode, quorum, remind, review)"),
    ('[[rule]]\naction = "deploy"\nmode = "approval"\n', "unknown action 'deploy' (use one of traffic, scale, "
                                                        "cancel, schedule, start, stop, batch, rollback, canary, "
                                                        "promote, archive, retrain, or \"*\")"),
    ('[[rule]]\naction = ""\nmode = "approval"\n', 'action must be a name, a list of names, or "*"'),
    ('[[rule]]\naction = [" "]\nmode = "approval"\n', 'action must be a name, a list of names, or "*"'),
    ('[[rule]]\naction = [1]\nmode = "approval"\n', 'action must be a name, a list of names, or "*"'),
    ('[[rule]]\nenvironment = []\nmode = "approval"\n', 'environment must be a name, a list of names, or "*"'),
    ('[[rule]]\nenvironment = "prod"\nmode = "approval"\n\n[[rule]]\nmode = "maybe"\n',
     "policy line 5 (rule 2): mode must be one of direct, confirm, approval, not 'maybe'"),
])
def test_each_bad_rule_is_refused_with_its_own_message(text, message):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert message in str(caught.value)


def test_the_subscriptions_role_is_read_and_checked():
    from commands.changes.policy import Policy
    assert parse_policy('[subscriptions]\nrole = "viewer"\n').subscription_role == Role.VIEWER
    assert parse_policy('[subscriptions]\nrole = "ADMIN"\n').subscription_role == Role.ADMIN
    assert parse_policy('[[rule]]\nmode = "direct"\n').subscription_role == Role.OPERATOR
    assert parse_policy('[subscriptions]\n').subscription_role == Role.OPERATOR
    assert Policy().subscription_role == Role.OPERATOR
    for text, message in [
            ('[[rule]]\nmode = "direct"\n[subscriptions]\nrole = "boss"\n',
             "policy line 3: [subscriptions] role must be viewer, operator, approver or admin, not 'boss'"),
            ('[subscriptions]\nrole = 2\n', "policy line 1: [subscriptions] role must be viewer, operator, "
                                            "approver or admin, not 2"),
            ('[subscriptions]\nrole = "viewer"\nwho = "x"\n',
             "policy line 1: unknown key 'who' in [subscriptions] (known: role)"),
            ('subscriptions = 3\n', "policy line ?: write [subscriptions] as a table with a role")]:
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        assert str(caught.value) == message


def test_a_policy_file_that_cannot_be_read_says_why(tmp_path):
    with pytest.raises(PolicyError) as directory:
        load_policy(tmp_path)
    assert str(directory.value) == f"cannot read the policy file {tmp_path}: Is a directory"
    latin = tmp_path / "latin.toml"
    latin.write_bytes('# r\xe9gles\n'.encode("latin-1"))
    with pytest.raises(PolicyError) as encoded:
        load_policy(latin)
    assert str(encoded.value) == f"the policy file {latin} is not UTF-8 text"
    utf8 = tmp_path / "utf8.toml"
    utf8.write_bytes('[[rule]]\nenvironment = "prød"\nmode = "direct"\n'.encode("utf-8"))
    assert load_policy(utf8).rule("traffic", "prød").mode == DIRECT
    assert load_policy(utf8).digest() == __import__("hashlib").sha256(utf8.read_bytes()).hexdigest()


def test_a_prod_rollback_runs_at_once_and_is_reviewed_by_an_approver():
    rule = default_rule("rollback", "prod")
    assert (rule.mode, rule.review, rule.emergency, rule.approver_role) == (DIRECT, True, False, Role.APPROVER)
    assert rule.describe() == "runs at once, reviewed afterwards by an Approver"
    assert default_rule("rollback", "dev").review is False


def test_no_change_is_an_emergency_by_default_and_a_rule_can_allow_it_and_set_reminders():
    assert not any(default_rule(a, "prod").emergency for a in ("traffic", "canary", "scale", "retrain"))
    assert default_rule("traffic", "prod").remind == timedelta(hours=1)
    policy = parse_policy('[[rule]]\naction = "traffic"\nenvironment = "prod"\nmode = "approval"\n'
                          'emergency = true\nremind = "20m"\n\n[[rule]]\naction = "rollback"\nmode = "approval"\n')
    traffic = policy.rule("traffic", "prod")
    assert (traffic.emergency, traffic.remind) == (True, timedelta(minutes=20))
    assert traffic.describe().endswith("; may run at once as an emergency (`--emergency`)")
    assert policy.rule("rollback", "prod").mode == APPROVAL          # the file can still require approval
    with pytest.raises(PolicyError, match="emergency must be true or false, not 'yes'"):
        parse_policy('[[rule]]\nmode = "approval"\nemergency = "yes"\n')
