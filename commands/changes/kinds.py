"""Every change the bot can make, and what carrying it out means: one declaration per action.

The gate (commands/changes/gate.py) decides *whether* a change runs (policy, approvals, confirmations);
this table says *what* running it does (see commands/changes/change.py for each field). It is the one
place to read, or to add to, when a change is added: a change command builds a `Change` with one
of these actions and submits it; the gate refuses an action that is not here (`mlops-bot` and the
approvals API list them with `Gate.executable_actions`).

    traffic, canary, rollback  a new split; the endpoint's figures are read just before (the
                               baseline), and its history entry and watch are written with the
                               success record, so a verdict follows after the watch window
    scale                      a deployment's instance count
    batch, retrain             start a job (watched until it ends; never joined or superseding)
    schedule                   enable or disable a schedule, or start a run of it
    start, stop                a compute instance
    cancel                     a job
    promote, archive           a model version's stage
"""

from __future__ import annotations

from typing import Any, Mapping

from commands.changes import evidence, verdicts
from commands.changes.change import ChangeKind, Executor, always, kinds
from commands.resources import endpoints, jobs, lifecycle, platform, rollout


def _split(action: str, execute: Executor) -> ChangeKind:
    """A change of an online endpoint's traffic split: the baseline read before it, the history
    entry and watch written with its success, a verdict after the watch window."""
    return ChangeKind(action, execute=execute, prepare=[verdicts.read_baseline], record=[rollout.record_split],
                      recheck=rollout.split_applied, gather=evidence.endpoint_evidence)


def _schedule_run(parameters: Mapping[str, Any]) -> bool:
    return parameters.get("do") == "run"


CHANGE_KINDS: Mapping[str, ChangeKind] = kinds(
    _split("traffic", endpoints.apply_traffic),
    _split("canary", rollout.apply_split),
    _split("rollback", rollout.apply_split),
    ChangeKind("scale", execute=endpoints.apply_scale, recheck=endpoints.scaled, gather=evidence.endpoint_evidence),
    ChangeKind("batch", execute=endpoints.apply_batch, starts_run=always),
    ChangeKind("retrain", execute=lifecycle.apply_retrain, gather=evidence.retrain_evidence, starts_run=always),
    ChangeKind("schedule", execute=platform.apply_schedule, recheck=platform.schedule_state,
               starts_run=_schedule_run),
    ChangeKind("start", execute=platform.apply_start, recheck=platform.compute_state),
    ChangeKind("stop", execute=platform.apply_stop, recheck=platform.compute_state),
    ChangeKind("cancel", execute=jobs.apply_cancel, recheck=jobs.canceled),
    ChangeKind("promote", execute=lifecycle.apply_promote, recheck=lifecycle.promoted),
    ChangeKind("archive", execute=lifecycle.apply_archive, recheck=lifecycle.archived),
)
