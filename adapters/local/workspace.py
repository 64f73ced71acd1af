"""The embedded local workspace: an `MLService` that emulates one Azure ML workspace on SQLite.

It behaves like Azure ML wherever the bot can observe it: the same validation (traffic over
existing deployments summing to 100, 1..20 instances, known model stages), the same NotFound /
Conflict / InvalidRequest errors, jobs that move through real states as the clock advances, and
state that survives restarts (open another `LocalWorkspace` on the same file).

    ws = LocalWorkspace("data/workspace.db")          # a new file is seeded with the demo
    ws.set_traffic("fraud-api", {"blue": 80, "green": 20}).wait(None)
    ws.reset(demo=True)                               # wipe and re-seed (mlops-bot serve --reset-demo)

Design:

* one sqlite3 connection (`check_same_thread=False`) guarded by a lock, because the bot calls it
  from a thread pool; every public call is one `BEGIN IMMEDIATE ... COMMIT` transaction, so a
  rejected change writes nothing and an accepted one is never half-written;
* the schema is versioned with `PRAGMA user_version` (SCHEMA_VERSION); a file of an older version
  is migrated in place by `MIGRATIONS` (adapters/local/schema.py) when opened;
* changes are immediate: an `Operation` is returned only after the change is committed, and its
  `wait` just returns the one-line summary;
* time comes from the injected `clock`; on every call, Queued/Running jobs with a plan progress to
  the state the clock says they are in, and pipelines follow their steps (a failed step fails the
  pipeline and cancels the steps still pending, as Azure does by default);
* a completed run of the schedule a model names in its `training_schedule` tag registers a new
  version of that model (as the register step of a real training pipeline does), once per run;
* metrics and logs are simulated deterministically from each deployment's `demo.Health`, the
  current traffic split and instance count, seeded by endpoint and a 5-minute time bucket.

`names("deployment")` returns "endpoint/deployment" pairs (online and batch), and NotFound for a
deployment carries the same "endpoint/deployment" form as its name.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Sequence

from adapters.local import demo as demo_data
from adapters.local import monitors as local_monitors
from adapters.local import posture as local_posture
from adapters.local import demo_feature_store
from adapters.local.demo import Health, JobTemplate, Plan
from adapters.local.times import from_iso, iso_text
from adapters.local.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, TABLES
from adapters.local.simulators import simulated_log, simulated_metrics
from adapters.service import (
    JOB_STATUSES, MAX_INSTANCES, MIN_INSTANCES, RESOURCE_KINDS, STAGES, TERMINAL_JOB_STATUSES, BatchDeployment, BatchEndpoint, Compute, Conflict, Deployment,
    EndpointMetrics, InvalidRequest, Job, ModelVersion, NotFound, OnlineEndpoint, Operation,
    Schedule, ServiceError, WorkspaceInfo,
)
from adapters.service import DriftReport, Monitor, MonitorRun, SignalReport
from adapters.posture import PostureFacts
from adapters.service import (  # issue 9: model archive, retraining, feature store
    TRAINING_SCHEDULE_TAG, Feature, FeatureEntity, FeatureSet, FeatureStore, Materialization, training_schedule,
)

BUSY_STATES = ("Creating", "Updating", "Deleting")   # provisioning states in which Azure refuses a change
MAX_METRICS_WINDOW = 30 * 24 * 60          # minutes; Azure Monitor keeps 93 days, we allow 30
MAX_LOG_LINES = 5000
BOT_IDENTITY = "mlops-bot"                 # created_by of jobs the bot submits

_ADJECTIVES = ("amber", "brave", "calm", "eager", "frosty", "gentle", "happy", "jolly", "keen", "lucid",
               "mellow", "neat", "olive", "quiet", "silver", "sunny", "tidy", "witty", "zen", "bold")
_NOUNS = ("kettle", "river", "orchid", "lamp", "pepper", "comet", "mango", "yak", "wave", "garden", "lemon",
          "fox", "tail", "pear", "cup", "plum", "owl", "rain", "seed", "drum")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_IN_CHUNK = 500                            # names per `IN (...)` query, well under SQLite's variable limit


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _version_key(version: str) -> tuple[int, int, str]:
    """Numeric versions order numerically (and above non-numeric ones)."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def _done(kind: str, target: str, summary: str) -> Operation:
    """An Operation for a change that is already applied."""

    def wait(timeout: float | None = None) -> str:
        return summary

    return Operation(kind, target, wait)


def _split_text(traffic: dict[str, int]) -> str:
    return " ".join(f"{name}={percent}" for name, percent in traffic.items())


def _live_split(traffic: dict[str, int]) -> dict[str, int]:
    """The deployments that take live traffic; 0 % and absent mean the same, as in Azure."""
    return {name: int(percent) for name, percent in traffic.items() if int(percent)}


class LocalWorkspace:
    """An Azure ML workspace emulated on SQLite at `path`; implements `adapters.service.MLService`.

    A new (or empty) file is seeded with the demo workspace unless `demo=False`, of `demo_size`
    online endpoints when given (`adapters.local.demo.build_demo`; it applies whenever the demo is
    seeded). `clock` returns the current time (UTC; naive values are taken as UTC) and is what
    tests inject.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = demo_data.WORKSPACE_NAME,
                 environment: str = demo_data.ENVIRONMENT, clock: Callable[[], datetime] | None = None,
                 demo: bool = True, demo_size: int | None = None) -> None:
        self.path = os.fspath(path)
        self.demo_size = demo_size         # None: the demo's story alone; N: N online endpoints (adapters.local.demo)
        self.name = name
        self.environment = environment
        self._clock = clock or _utc_now
        self._lock = threading.Lock()
        self._settled = False              # pipelines and registrations derived once since open/reset (_advance_jobs)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._tx(advance=False) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ServiceError(f"{self.path} was written by a newer version (schema {version}); "
                                   f"this one understands schema {SCHEMA_VERSION}.")
            if version == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):     # v1 files are migrated in place
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if version == 0 and demo:
                self._seed(conn, self._now())
            # a file written before monitors existed gets the demo's monitors if it holds the demo
            had_monitors = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'monitors'").fetchone()
            holds_demo = conn.execute("SELECT 1 FROM endpoints WHERE name = 'fraud-api'").fetchone()
            local_monitors.ensure_schema(conn, self._now(), seed=demo and not had_monitors and bool(holds_demo))

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LocalWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, demo: bool = True) -> None:
        """Wipe the workspace in one transaction and, if `demo`, seed the demo as of now."""
        with self._tx() as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
            local_monitors.wipe(conn)
            local_posture.wipe(conn)
            if demo:
                self._seed(conn, self._now())
                local_monitors.seed_demo(conn, self._now())
        self._settled = False                  # new jobs: derive their pipelines on the next look

    def seed_demo(self) -> None:
        """Replace whatever the workspace holds with the demo (same as `reset(demo=True)`)."""
        self.reset(demo=True)

    # ------------------------------------------------------------ workspace

    def workspace(self) -> WorkspaceInfo:
        return WorkspaceInfo(self.name, self.environment, "local", location=demo_data.LOCATION,
                             description="Embedded local workspace: Azure ML emulated on the bot's own data.")

    def names(self, kind: str) -> list[str]:
        """All names of `kind`; for "deployment", "endpoint/deployment" pairs of online and batch endpoints."""
        queries = {
            "model": "SELECT DISTINCT name FROM models",
            "endpoint": "SELECT name FROM endpoints",
            "batch_endpoint": "SELECT name FROM batch_endpoints",
            "deployment": "SELECT endpoint || '/' || name FROM deployments "
                          "UNION SELECT endpoint || '/' || name FROM batch_deployments",
            "job": "SELECT name FROM jobs",
            "schedule": "SELECT name FROM schedules",
            "compute": "SELECT name FROM compute",
        }
        if kind not in queries:
            raise InvalidRequest(f"Unknown resource kind '{kind}'; use one of {', '.join(RESOURCE_KINDS)}.")
        with self._tx() as conn:
            return sorted(row[0] for row in conn.execute(queries[kind]))

    # ------------------------------------------------------------ models

    def list_models(self, name: str | None = None, stage: str | None = None) -> list[ModelVersion]:
        """See MLService; `stage` compares case-insensitively, and an unknown `name` raises NotFound."""
        with self._tx() as conn:
            if name is not None:
                versions = self._model_versions(conn, name)
                return [m for m in versions if stage is None or m.stage.lower() == stage.lower()]
            # the newest version per name, chosen on the raw rows: only the chosen ones are decoded
            latest: dict[str, sqlite3.Row] = {}
            for row in conn.execute("SELECT * FROM models"):
                if stage is not None and row["stage"].lower() != stage.lower():
                    continue
                newest = latest.get(row["name"])
                if newest is None or _version_key(row["version"]) > _version_key(newest["version"]):
                    latest[row["name"]] = row
            return [self._model_from_row(latest[key]) for key in sorted(latest)]

    def get_model(self, name: str, version: str | None = None) -> ModelVersion:
        with self._tx() as conn:
            return self._model(conn, name, version)

    def set_model_stage(self, name: str, version: str, stage: str) -> ModelVersion:
        canonical = {s.lower(): s for s in STAGES}.get(str(stage).lower())
        if canonical is None:
            raise InvalidRequest(f"Unknown stage '{stage}'; use one of {', '.join(STAGES)}.")
        with self._tx() as conn:
            model = self._model(conn, name, str(version))
            conn.execute("UPDATE models SET stage = ? WHERE name = ? AND version = ?",
                         (canonical, model.name, model.version))
            return self._model(conn, name, model.version)

    # ------------------------------------------------------------ online endpoints

    def list_endpoints(self) -> list[OnlineEndpoint]:
        with self._tx() as conn:
            return [endpoint for endpoint, _, _ in self._endpoints(conn, health=False)]

    def get_endpoint(self, name: str) -> OnlineEndpoint:
        with self._tx() as conn:
            return self._endpoint(conn, name)

    def set_traffic(self, endpoint: str, traffic: dict[str, int],
                    expected: dict[str, int] | None = None) -> Operation:
        with self._tx() as conn:
            current = self._endpoint(conn, endpoint)
            if current.provisioning_state in BUSY_STATES:
                raise Conflict(f"Endpoint {endpoint} is still {current.provisioning_state}: Azure ML accepts no new "
                               f"change to an endpoint until its current operation has finished. Try again once it "
                               f"shows Succeeded.", code="EndpointBusy")
            if expected is not None and _live_split(expected) != _live_split(current.traffic):
                raise Conflict(f"The traffic of {endpoint} changed since it was read: it is now "
                               f"{_split_text(_live_split(current.traffic)) or 'none'}, not "
                               f"{_split_text(_live_split(expected)) or 'none'}. Nothing was changed; look at the "
                               f"endpoint again and repeat the change if it still applies.", code="TrafficChanged")
            deployments = [d.name for d in current.deployments]
            for name in traffic:
                if name not in deployments:
                    raise self._no_deployment(endpoint, name, deployments)
            for name, percent in traffic.items():
                if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                    raise InvalidRequest(f"Traffic for {name} must be a whole number from 0 to 100, got {percent!r}.")
            total = sum(traffic.values())
            if total != 100:
                raise InvalidRequest(f"Traffic must sum to 100, got {total}.")
            for name, percent in traffic.items():
                if percent and current.mirror_traffic.get(name):
                    mirrored = current.mirror_traffic[name]
                    raise InvalidRequest(f"Deployment {name} receives mirrored traffic ({mirrored} %) "
                                         f"on {endpoint}; Azure ML does not let a deployment take both live and "
                                         f"mirrored traffic. Stop mirroring to it first, or leave its live share at 0.",
                                         code="MirroredDeployment")
            split = {name: int(traffic.get(name, 0)) for name in deployments}
            conn.execute("UPDATE endpoints SET traffic = ? WHERE name = ?", (json.dumps(split), endpoint))
        return _done("traffic", f"endpoint {endpoint}", f"Traffic on {endpoint} is now {_split_text(split)}.")

    def scale_deployment(self, endpoint: str, deployment: str, instance_count: int) -> Operation:
        if (not isinstance(instance_count, int) or isinstance(instance_count, bool)
                or not MIN_INSTANCES <= instance_count <= MAX_INSTANCES):
            raise InvalidRequest(f"Instance count must be a whole number from {MIN_INSTANCES} to {MAX_INSTANCES}, "
                                 f"got {instance_count!r}.")
        with self._tx() as conn:
            dep = self._deployment(conn, endpoint, deployment)
            conn.execute("UPDATE deployments SET instance_count = ? WHERE endpoint = ? AND name = ?",
                         (instance_count, endpoint, deployment))
        plural = "instance" if instance_count == 1 else "instances"
        return _done("scale", f"deployment {endpoint}/{deployment}",
                     f"Deployment {deployment} on {endpoint} now runs {instance_count} {plural} of "
                     f"{dep.instance_type} (was {dep.instance_count}).")

    def deployment_logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= MAX_LOG_LINES:
            raise InvalidRequest(f"Lines must be a whole number from 1 to {MAX_LOG_LINES}, got {lines!r}.")
        with self._tx() as conn:
            dep = self._deployment(conn, endpoint, deployment)
            health = self._health(conn, endpoint, deployment)
            now = self._now()
        return "\n".join(simulated_log(dep, health, now, lines))

    def endpoint_metrics(self, endpoint: str, window_minutes: int = 60) -> EndpointMetrics:
        return self._metrics([endpoint], window_minutes)[endpoint]

    def endpoints_metrics(self, endpoints: Sequence[OnlineEndpoint], window_minutes: int = 60
                          ) -> dict[str, EndpointMetrics]:
        """One transaction and three queries for the whole batch (not one transaction per endpoint)."""
        return self._metrics([e.name for e in endpoints], window_minutes)

    def _metrics(self, names: list[str], window_minutes: int) -> dict[str, EndpointMetrics]:
        if (not isinstance(window_minutes, int) or isinstance(window_minutes, bool)
                or not 1 <= window_minutes <= MAX_METRICS_WINDOW):
            raise InvalidRequest(f"The window must be from 1 to {MAX_METRICS_WINDOW} minutes, got {window_minutes!r}.")
        with self._tx() as conn:
            found = self._endpoints(conn, names)
            now = self._now()
        return {ep.name: simulated_metrics(ep, load, health, now, window_minutes) for ep, load, health in found}

    # ------------------------------------------------------------ batch endpoints

    def list_batch_endpoints(self) -> list[BatchEndpoint]:
        with self._tx() as conn:
            names = [row["name"] for row in conn.execute("SELECT name FROM batch_endpoints ORDER BY name")]
            return [self._batch_endpoint(conn, name) for name in names]

    def get_batch_endpoint(self, name: str) -> BatchEndpoint:
        with self._tx() as conn:
            found = self._batch_endpoint(conn, name)
            details = tuple(
                BatchDeployment(row["name"], name, row["model"], row["compute"], provisioning_state="Succeeded")
                for row in conn.execute("SELECT * FROM batch_deployments WHERE endpoint = ? ORDER BY rowid", (name,)))
        return replace(found, details=details)

    def invoke_batch_endpoint(self, endpoint: str, input_uri: str, deployment: str | None = None, *,
                              tags: dict[str, str] | None = None) -> Job:
        with self._tx() as conn:
            batch = self._batch_endpoint(conn, endpoint)
            if not input_uri or ":" not in input_uri:
                raise InvalidRequest(f"Input must be a data asset or a URI (e.g. azureml:customers-scoring:12 or "
                                     f"https://.../data.csv), got {input_uri!r}.")
            chosen = deployment or batch.default_deployment
            if not chosen:
                raise InvalidRequest(f"Batch endpoint {endpoint} has no default deployment; name one.")
            if chosen not in batch.deployments:
                raise NotFound("deployment", f"{endpoint}/{chosen}",
                               f"Batch endpoint {endpoint} has no deployment named '{chosen}' "
                               f"(it has: {', '.join(batch.deployments) or 'none'}).")
            compute = conn.execute("SELECT compute FROM batch_deployments WHERE endpoint = ? AND name = ?",
                                   (endpoint, chosen)).fetchone()[0]
            now = self._now()
            name = self._new_job_name(conn, now)
            self._insert_job(conn, Job(
                name, "Queued", "batch", f"{endpoint} {chosen} scoring", endpoint, compute, now,
                created_by=BOT_IDENTITY,
                tags={**(tags or {}), "endpoint": endpoint, "deployment": chosen, "input": input_uri}),
                Plan(now + timedelta(minutes=1), now + timedelta(minutes=12)))
            return self._job(conn, name)

    def list_batch_jobs(self, endpoint: str) -> list[Job]:
        with self._tx() as conn:
            self._batch_endpoint(conn, endpoint)
            rows = conn.execute("SELECT * FROM jobs WHERE type = 'batch' AND experiment = ? AND parent = '' "
                                "ORDER BY created_at DESC, rowid DESC", (endpoint,)).fetchall()
            return [self._job_from_row(row) for row in rows]

    # ------------------------------------------------------------ jobs

    def list_jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        wanted = None
        if status is not None:
            wanted = {s.lower(): s for s in JOB_STATUSES}.get(status.lower())
            if wanted is None:
                raise InvalidRequest(f"Unknown job status '{status}'; use one of {', '.join(JOB_STATUSES)}.")
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE parent = '' AND (? IS NULL OR status = ?) "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?", (wanted, wanted, max(limit, 0))).fetchall()
            return [self._job_from_row(row) for row in rows]

    def get_job(self, name: str) -> Job:
        with self._tx() as conn:
            return self._job(conn, name)

    def cancel_job(self, name: str) -> Operation:
        with self._tx() as conn:
            job = self._job(conn, name)
            if job.terminal:
                raise Conflict(f"Job {name} is already {job.status}.")
            now = iso_text(self._now())
            conn.execute("UPDATE jobs SET status = 'Canceled', ended_at = ? WHERE name = ? OR "
                         "(parent = ? AND status NOT IN (?, ?, ?))", (now, name, name, *TERMINAL_JOB_STATUSES))
            self._settle_pipelines(conn)
        steps = sum(1 for child in job.children if not child.terminal)
        extra = f" (and {steps} pending step{'s' if steps != 1 else ''})" if steps else ""
        return _done("cancel", f"job {name}", f"Job {name} is now Canceled{extra}.")

    # ------------------------------------------------------------ schedules

    def list_schedules(self) -> list[Schedule]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM schedules ORDER BY name").fetchall()
            return [self._schedule_from_row(row) for row in rows]

    def enable_schedule(self, name: str) -> Operation:
        return self._set_schedule_enabled(name, True)

    def disable_schedule(self, name: str) -> Operation:
        return self._set_schedule_enabled(name, False)

    def trigger_schedule(self, name: str, *, tags: dict[str, str] | None = None) -> Job:
        """Submit the schedule's job now (Queued); pipelines get their steps as child jobs."""
        with self._tx() as conn:
            row = self._schedule_row(conn, name)
            template = _template_from_json(row["template"])
            now = self._now()
            job_name = self._new_job_name(conn, now)
            tags = {**(tags or {}), "schedule": name}
            if template.steps:
                self._insert_job(conn, Job(job_name, "Queued", template.type, template.display_name,
                                           template.experiment, template.compute, now,
                                           created_by=BOT_IDENTITY, tags=tags))
                start = now + timedelta(minutes=2)
                for step, minutes in template.steps:
                    end = start + timedelta(minutes=minutes)
                    self._insert_job(conn, Job(self._new_job_name(conn, now), "Queued", "command", step,
                                               template.experiment, template.compute, now,
                                               created_by=BOT_IDENTITY, parent=job_name), Plan(start, end))
                    start = end
            else:
                start = now + timedelta(minutes=2)
                self._insert_job(conn, Job(job_name, "Queued", template.type, template.display_name,
                                           template.experiment, template.compute, now,
                                           created_by=BOT_IDENTITY, tags=tags),
                                 Plan(start, start + timedelta(minutes=template.run_minutes)))
            return self._job(conn, job_name)

    # ------------------------------------------------------------ compute

    def list_compute(self) -> list[Compute]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM compute ORDER BY name").fetchall()
            return [self._compute_from_row(row) for row in rows]

    def start_compute(self, name: str) -> Operation:
        return self._set_instance_state(name, "Running")

    def stop_compute(self, name: str) -> Operation:
        return self._set_instance_state(name, "Stopped")

    # ------------------------------------------------------------ transactions and time

    @contextmanager
    def _tx(self, *, advance: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; jobs are first brought up to date with the clock."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            settled = False
            try:
                if advance:
                    settled = self._advance_jobs(conn, self._now())
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if settled:
                self._settled = True           # only once committed: a rolled-back settling counts for nothing

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)

    def _advance_jobs(self, conn: sqlite3.Connection, now: datetime) -> bool:
        """Move planned jobs to the state the clock puts them in, then settle their pipelines and
        register what completed training runs produced; True if it settled.

        Settling scans every pipeline and every model version, so it runs only when a job changed
        state here (or on the first look since open or reset): every other change of a job's state
        settles in its own transaction (`cancel_job`), so with no change there is nothing to derive."""
        moment = iso_text(now)
        due = conn.execute(
            "SELECT name, status, plan_end, plan_outcome, plan_error FROM jobs WHERE status NOT IN (?, ?, ?) "
            "AND plan_start IS NOT NULL AND plan_start <= ?", (*TERMINAL_JOB_STATUSES, moment)).fetchall()
        changed = False
        for row in due:
            if row["plan_end"] <= moment:
                conn.execute("UPDATE jobs SET status = ?, error = ?, started_at = COALESCE(started_at, plan_start), "
                             "ended_at = plan_end WHERE name = ?",
                             (row["plan_outcome"], row["plan_error"], row["name"]))
                changed = True
            elif row["status"] != "Running":
                conn.execute("UPDATE jobs SET status = 'Running', started_at = COALESCE(started_at, plan_start) "
                             "WHERE name = ?", (row["name"],))
                changed = True
        if changed or (due and not self._settled):
            self._settle_pipelines(conn)
            self._register_retrained_models(conn)
            return True
        return False

    def _settle_pipelines(self, conn: sqlite3.Connection) -> None:
        """Derive each unfinished pipeline's state from its steps."""
        parents = conn.execute(
            "SELECT name FROM jobs WHERE status NOT IN (?, ?, ?) AND plan_start IS NULL AND name IN "
            "(SELECT parent FROM jobs WHERE parent != '')", TERMINAL_JOB_STATUSES).fetchall()
        for (parent,) in parents:
            steps = conn.execute("SELECT * FROM jobs WHERE parent = ? ORDER BY created_at, rowid",
                                 (parent,)).fetchall()
            failed = [s for s in steps if s["status"] == "Failed"]
            ended = max((s["ended_at"] for s in steps if s["ended_at"]), default=None)
            # its first step's start, also when one look finds the whole pipeline already ended
            started = min((s["started_at"] for s in steps if s["started_at"]), default=None)
            if failed:
                conn.execute("UPDATE jobs SET status = 'Canceled', ended_at = ? WHERE parent = ? AND "
                             "status NOT IN (?, ?, ?)", (ended, parent, *TERMINAL_JOB_STATUSES))
                error = f"Step {failed[0]['display_name']} failed: {failed[0]['error']}"
                conn.execute("UPDATE jobs SET status = 'Failed', error = ?, ended_at = ?, "
                             "started_at = COALESCE(started_at, ?) WHERE name = ?", (error, ended, started, parent))
            elif all(s["status"] in TERMINAL_JOB_STATUSES for s in steps):
                status = "Canceled" if any(s["status"] == "Canceled" for s in steps) else "Completed"
                conn.execute("UPDATE jobs SET status = ?, ended_at = ?, started_at = COALESCE(started_at, ?) "
                             "WHERE name = ?", (status, ended, started, parent))
            elif started:
                conn.execute("UPDATE jobs SET status = 'Running', started_at = COALESCE(started_at, ?) "
                             "WHERE name = ?", (started, parent))

    # ------------------------------------------------------------ seeding

    def _seed(self, conn: sqlite3.Connection, now: datetime) -> None:
        demo = demo_data.build_demo(now, self.demo_size)
        for model in demo.models:
            _insert(conn, "models", {**asdict(model), "created_at": iso_text(model.created_at)})
        for ep in demo.endpoints:
            _insert(conn, "endpoints", {
                "name": ep.name, "provisioning_state": ep.provisioning_state, "auth_mode": ep.auth_mode,
                "scoring_uri": ep.scoring_uri, "description": ep.description, "traffic": ep.traffic,
                "mirror_traffic": ep.mirror_traffic, "tags": ep.tags, "load_rpm": demo.endpoint_load[ep.name]})
            for dep in ep.deployments:
                health = demo.health.get((ep.name, dep.name), Health())
                _insert(conn, "deployments", {**asdict(dep), "health": asdict(health)})
        for batch in demo.batch_endpoints:
            _insert(conn, "batch_endpoints", {
                "name": batch.name, "provisioning_state": batch.provisioning_state,
                "default_deployment": batch.default_deployment, "scoring_uri": batch.scoring_uri,
                "description": batch.description})
        for bdep in demo.batch_deployments:
            _insert(conn, "batch_deployments", asdict(bdep))
        for planned in demo.jobs:
            self._insert_job(conn, planned.job, planned.plan)
        for schedule, template in demo.schedules:
            _insert(conn, "schedules", {**asdict(schedule), "template": asdict(template)})
        for compute in demo.compute:
            _insert(conn, "compute", asdict(compute))
        self._seed_feature_stores(conn, demo_feature_store.build_feature_stores(now))

    @staticmethod
    def _insert_job(conn: sqlite3.Connection, job: Job, plan: Plan | None = None) -> None:
        row = {key: value for key, value in asdict(job).items() if key != "children"}
        for key in ("created_at", "started_at", "ended_at"):
            row[key] = iso_text(row[key])
        row.update(plan_start=iso_text(plan.start_at) if plan else None, plan_end=iso_text(plan.end_at) if plan else None,
                   plan_outcome=plan.outcome if plan else None, plan_error=plan.error if plan else None)
        _insert(conn, "jobs", row)

    @staticmethod
    def _new_job_name(conn: sqlite3.Connection, now: datetime) -> str:
        """An Azure-style job name (adjective_noun_8chars), deterministic given the clock and the table."""
        count = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        rng = random.Random(f"{iso_text(now)}|{count}")
        while True:
            suffix = "".join(rng.choice(_NAME_CHARS) for _ in range(8))
            name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_NOUNS)}_{suffix}"
            if conn.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is None:
                return name

    # ------------------------------------------------------------ readers

    @staticmethod
    def _model_from_row(row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(row["name"], row["version"], row["stage"], row["description"], json.loads(row["tags"]),
                            json.loads(row["metrics"]), from_iso(row["created_at"]), row["created_by"], row["path"],
                            bool(row["archived"]), row["job"])

    def _model_versions(self, conn: sqlite3.Connection, name: str) -> list[ModelVersion]:
        """All versions of `name`, newest first; NotFound if there are none."""
        rows = conn.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchall()
        if not rows:
            raise NotFound("model", name)
        return sorted((self._model_from_row(row) for row in rows), key=lambda m: _version_key(m.version),
                      reverse=True)

    def _model(self, conn: sqlite3.Connection, name: str, version: str | None) -> ModelVersion:
        versions = self._model_versions(conn, name)
        if version is None:
            return versions[0]
        for model in versions:
            if model.version == str(version):
                return model
        raise NotFound("model", f"{name}:{version}", f"Model {name} has no version {version} "
                       f"(versions: {', '.join(m.version for m in reversed(versions))}).")

    def _endpoint(self, conn: sqlite3.Connection, name: str) -> OnlineEndpoint:
        row = conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("endpoint", name)
        deployments = tuple(
            Deployment(d["name"], d["endpoint"], d["model"], d["instance_type"], d["instance_count"],
                       d["provisioning_state"])
            for d in conn.execute("SELECT * FROM deployments WHERE endpoint = ? ORDER BY rowid", (name,)))
        return OnlineEndpoint(row["name"], row["provisioning_state"], row["auth_mode"], row["scoring_uri"],
                              row["description"], json.loads(row["traffic"]), json.loads(row["mirror_traffic"]),
                              deployments, json.loads(row["tags"]))

    def _endpoints(self, conn: sqlite3.Connection, names: Sequence[str] | None = None, *, health: bool = True
                   ) -> list[tuple[OnlineEndpoint, float, dict[str, Health]]]:
        """Endpoints with their load and (if `health`) their deployments' health, in a few queries
        whatever their number: all of them by name, or those of `names` in that order (NotFound for
        the first missing one, as `_endpoint` raises)."""
        if names is None:
            rows = conn.execute("SELECT * FROM endpoints ORDER BY name").fetchall()
            deps = conn.execute("SELECT * FROM deployments ORDER BY rowid").fetchall()
        else:
            wanted = list(dict.fromkeys(names))
            rows, deps = [], []
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start:start + _IN_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                rows += conn.execute(f"SELECT * FROM endpoints WHERE name IN ({marks})", chunk).fetchall()
                deps += conn.execute(f"SELECT * FROM deployments WHERE endpoint IN ({marks}) ORDER BY rowid",
                                     chunk).fetchall()
            by_name = {row["name"]: row for row in rows}
            for name in wanted:
                if name not in by_name:
                    raise NotFound("endpoint", name)
            rows = [by_name[name] for name in wanted]
        deps_of: dict[str, list[sqlite3.Row]] = {}
        for d in deps:                  # an endpoint's deployments all come from one query, in rowid order
            deps_of.setdefault(d["endpoint"], []).append(d)
        out = []
        for row in rows:
            mine = deps_of.get(row["name"], [])
            out.append((self._endpoint_from_rows(row, mine), row["load_rpm"],
                        {d["name"]: Health(**json.loads(d["health"])) for d in mine} if health else {}))
        return out

    @staticmethod
    def _endpoint_from_rows(row: sqlite3.Row, deployments: list[sqlite3.Row]) -> OnlineEndpoint:
        return OnlineEndpoint(row["name"], row["provisioning_state"], row["auth_mode"], row["scoring_uri"],
                              row["description"], json.loads(row["traffic"]), json.loads(row["mirror_traffic"]),
                              tuple(Deployment(d["name"], d["endpoint"], d["model"], d["instance_type"],
                                               d["instance_count"], d["provisioning_state"]) for d in deployments),
                              json.loads(row["tags"]))

    def _deployment(self, conn: sqlite3.Connection, endpoint: str, name: str) -> Deployment:
        ep = self._endpoint(conn, endpoint)
        for dep in ep.deployments:
            if dep.name == name:
                return dep
        raise self._no_deployment(endpoint, name, [d.name for d in ep.deployments])

    @staticmethod
    def _no_deployment(endpoint: str, name: str, existing: list[str]) -> NotFound:
        return NotFound("deployment", f"{endpoint}/{name}", f"Endpoint {endpoint} has no deployment named "
                        f"'{name}' (it has: {', '.join(existing) or 'none'}).")

    @staticmethod
    def _health(conn: sqlite3.Connection, endpoint: str, deployment: str) -> Health:
        row = conn.execute("SELECT health FROM deployments WHERE endpoint = ? AND name = ?",
                           (endpoint, deployment)).fetchone()
        return Health(**json.loads(row[0]))

    @staticmethod
    def _batch_endpoint(conn: sqlite3.Connection, name: str) -> BatchEndpoint:
        row = conn.execute("SELECT * FROM batch_endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("batch_endpoint", name)
        deployments = tuple(r[0] for r in conn.execute(
            "SELECT name FROM batch_deployments WHERE endpoint = ? ORDER BY rowid", (name,)))
        return BatchEndpoint(row["name"], row["provisioning_state"], row["default_deployment"], row["scoring_uri"],
                             row["description"], deployments)

    @staticmethod
    def _job_from_row(row: sqlite3.Row, children: tuple[Job, ...] = ()) -> Job:
        return Job(row["name"], row["status"], row["type"], row["display_name"], row["experiment"], row["compute"],
                   from_iso(row["created_at"]), from_iso(row["started_at"]), from_iso(row["ended_at"]), row["created_by"],
                   row["error"], row["parent"], children, json.loads(row["tags"]))

    def _job(self, conn: sqlite3.Connection, name: str) -> Job:
        """One job with its pipeline steps (oldest first) as children."""
        row = conn.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("job", name)
        children = tuple(self._job_from_row(child) for child in conn.execute(
            "SELECT * FROM jobs WHERE parent = ? ORDER BY created_at, rowid", (name,)))
        return self._job_from_row(row, children)

    @staticmethod
    def _schedule_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("schedule", name)
        return row

    @staticmethod
    def _schedule_from_row(row: sqlite3.Row) -> Schedule:
        return Schedule(row["name"], bool(row["enabled"]), row["trigger"], row["expression"], row["time_zone"],
                        row["action"], row["provisioning_state"], row["description"])

    @staticmethod
    def _compute_from_row(row: sqlite3.Row) -> Compute:
        return Compute(row["name"], row["type"], row["state"], row["size"], row["min_nodes"], row["max_nodes"],
                       row["current_nodes"])

    # ------------------------------------------------------------ small writers

    def _set_schedule_enabled(self, name: str, enabled: bool) -> Operation:
        with self._tx() as conn:
            self._schedule_row(conn, name)
            conn.execute("UPDATE schedules SET enabled = ? WHERE name = ?", (int(enabled), name))
        word = "enabled" if enabled else "disabled"
        return _done("schedule", f"schedule {name}", f"Schedule {name} is now {word}.")

    def _set_instance_state(self, name: str, state: str) -> Operation:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM compute WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound("compute", name)
            if row["type"] != "computeinstance":
                raise InvalidRequest(f"Only compute instances can be started or stopped; {name} is a "
                                     f"compute cluster ({row['type']}), which scales between {row['min_nodes']} "
                                     f"and {row['max_nodes']} nodes on its own.")
            if row["state"] == state:
                raise Conflict(f"Compute instance {name} is already {state}.")
            conn.execute("UPDATE compute SET state = ? WHERE name = ?", (state, name))
        return _done("compute", f"compute {name}", f"Compute instance {name} is now {state}.")

    # ------------------------------------------------------------ model monitoring (adapters.local.monitors)

    def list_monitors(self) -> list[Monitor]:
        """The monitors, after computing every run their schedule made due by the clock."""
        with self._tx() as conn:
            return local_monitors.list_monitors(conn, self._now())

    def drift_report(self, target: str, window_days: int = 7) -> DriftReport:
        with self._tx() as conn:
            return local_monitors.drift_report(conn, self._now(), target, window_days)

    # ------------------------------------------------------------ model archive, retraining, feature store (issue 9)

    def archive_model(self, name: str, version: str) -> ModelVersion:
        return self._set_archived(name, version, True)

    def restore_model(self, name: str, version: str) -> ModelVersion:
        return self._set_archived(name, version, False)

    def _set_archived(self, name: str, version: str, archived: bool) -> ModelVersion:
        with self._tx() as conn:
            model = self._model(conn, name, str(version))
            conn.execute("UPDATE models SET archived = ? WHERE name = ? AND version = ?",
                         (int(archived), model.name, model.version))
            return self._model(conn, name, model.version)

    def trigger_retraining(self, model: str) -> Job:
        """Trigger the schedule the model names; the pipeline registers a new version when it completes
        (see `_register_retrained_models`), as the register step of a real training pipeline does."""
        with self._tx() as conn:
            schedule = training_schedule(model, self._model_versions(conn, model))
        try:
            return self.trigger_schedule(schedule)
        except NotFound:
            raise NotFound("schedule", schedule, f"Model {model} names schedule '{schedule}' in its "
                           f"'{TRAINING_SCHEDULE_TAG}' tag, but there is no such schedule.") from None

    def _register_retrained_models(self, conn: sqlite3.Connection) -> None:
        """Each completed run of a model's training schedule registers one new version of that model
        (next number, no stage, the tags of the version that names the schedule, metrics as measured)."""
        runs = conn.execute(
            "SELECT j.name, j.display_name, j.ended_at, j.created_by, m.name AS model FROM jobs j "
            "JOIN (SELECT DISTINCT name, json_extract(tags, '$.training_schedule') AS schedule FROM models "
            "      WHERE json_extract(tags, '$.training_schedule') IS NOT NULL) m "
            "  ON json_extract(j.tags, '$.schedule') = m.schedule "
            "WHERE j.parent = '' AND j.status = 'Completed' "
            "  AND NOT EXISTS (SELECT 1 FROM models r WHERE r.name = m.name AND r.job = j.name) "
            "ORDER BY j.ended_at, j.name").fetchall()
        for run in runs:
            versions = self._model_versions(conn, run["model"])
            basis = next(v for v in versions if v.tags.get(TRAINING_SCHEDULE_TAG))
            number = max((int(v.version) for v in versions if v.version.isdigit()), default=0) + 1
            rng = random.Random(f"{run['model']}|{run['name']}")
            metrics = {key: round(value * (1 + rng.uniform(-0.02, 0.02)), 4) for key, value in basis.metrics.items()}
            model = ModelVersion(run["model"], str(number), "None",
                                 f"Retrained by {run['display_name']} (job {run['name']}).", dict(basis.tags),
                                 metrics, from_iso(run["ended_at"]), run["created_by"],
                                 demo_data.model_path(run["model"], number), False, run["name"])
            _insert(conn, "models", {**asdict(model), "created_at": iso_text(model.created_at)})

    def list_feature_stores(self) -> list[FeatureStore]:
        with self._tx() as conn:
            return [FeatureStore(row["name"], row["location"], row["description"])
                    for row in conn.execute("SELECT * FROM feature_stores ORDER BY name")]

    def list_feature_sets(self, store: str) -> list[FeatureSet]:
        with self._tx() as conn:
            self._feature_store(conn, store)
            latest: dict[str, sqlite3.Row] = {}
            for row in conn.execute("SELECT * FROM feature_sets WHERE store = ?", (store,)):
                newest = latest.get(row["name"])
                if newest is None or _version_key(row["version"]) > _version_key(newest["version"]):
                    latest[row["name"]] = row
            return [FeatureSet(row["name"], row["version"], store, row["description"], json.loads(row["tags"]))
                    for _, row in sorted(latest.items())]

    def get_feature_set(self, store: str, name: str, version: str | None = None) -> FeatureSet:
        with self._tx() as conn:
            self._feature_store(conn, store)
            rows = sorted(conn.execute("SELECT * FROM feature_sets WHERE store = ? AND name = ?", (store, name)),
                          key=lambda r: _version_key(r["version"]), reverse=True)
            if not rows:
                names = sorted({r[0] for r in conn.execute("SELECT name FROM feature_sets WHERE store = ?", (store,))})
                raise NotFound("feature_set", name, f"Feature store {store} has no feature set named '{name}' "
                                                    f"(it has: {', '.join(names) or 'none'}).")
            versions = tuple(r["version"] for r in rows)
            row = rows[0] if version is None else next((r for r in rows if r["version"] == str(version)), None)
            if row is None:
                raise NotFound("feature_set", f"{name}:{version}", f"Feature set {name} has no version {version} "
                               f"(versions: {', '.join(reversed(versions))}).")
            entities = []
            for ref in json.loads(row["entities"]):
                entity_name, _, entity_version = ref.partition(":")
                found = conn.execute("SELECT * FROM feature_entities WHERE store = ? AND name = ? AND version = ?",
                                     (store, entity_name, entity_version)).fetchone()
                keys = tuple(tuple(k) for k in json.loads(found["join_keys"])) if found else ()
                entities.append(FeatureEntity(entity_name, entity_version, keys,
                                              found["description"] if found else ""))
            last = conn.execute("SELECT * FROM materializations WHERE store = ? AND feature_set = ? AND version = ? "
                                "ORDER BY created_at DESC, job DESC LIMIT 1", (store, name, row["version"])).fetchone()
            materialization = None if last is None else Materialization(
                last["job"], last["status"], last["type"], from_iso(last["window_start"]), from_iso(last["window_end"]),
                from_iso(last["created_at"]))
            return FeatureSet(name, row["version"], store, row["description"], json.loads(row["tags"]), row["stage"],
                              tuple(entities), tuple(Feature(*f) for f in json.loads(row["features"])),
                              bool(row["offline_enabled"]), bool(row["online_enabled"]), row["schedule"],
                              materialization, versions)

    @staticmethod
    def _feature_store(conn: sqlite3.Connection, store: str) -> None:
        if conn.execute("SELECT 1 FROM feature_stores WHERE name = ?", (store,)).fetchone() is None:
            names = [r[0] for r in conn.execute("SELECT name FROM feature_stores ORDER BY name")]
            raise NotFound("feature_store", store, f"No feature store named '{store}' "
                                                   f"(feature stores: {', '.join(names) or 'none'}).")

    @staticmethod
    def _seed_feature_stores(conn: sqlite3.Connection, stores: list[demo_feature_store.DemoFeatureStore]) -> None:
        for demo in stores:
            name = demo.store.name
            _insert(conn, "feature_stores", {"name": name, "location": demo.store.location,
                                             "description": demo.store.description})
            for entity in demo.entities:
                _insert(conn, "feature_entities", {"store": name, "name": entity.name, "version": entity.version,
                                                   "description": entity.description, "join_keys": entity.join_keys})
            for fs, created_at in demo.feature_sets:
                _insert(conn, "feature_sets", {
                    "store": name, "name": fs.name, "version": fs.version, "description": fs.description,
                    "tags": fs.tags, "stage": fs.stage, "entities": [f"{e.name}:{e.version}" for e in fs.entities],
                    "features": [[f.name, f.type, f.description] for f in fs.features],
                    "offline_enabled": fs.offline_enabled, "online_enabled": fs.online_enabled,
                    "schedule": fs.schedule, "created_at": created_at})
            for feature_set, version, job in demo.materializations:
                _insert(conn, "materializations", {
                    "store": name, "feature_set": feature_set, "version": version, "job": job.job,
                    "status": job.status, "type": job.type, "window_start": job.window_start,
                    "window_end": job.window_end, "created_at": job.created_at})

    # ------------------------------------------------------------ local only, not in the port

    def monitor_breaches(self, since: datetime) -> list[tuple[Monitor, MonitorRun, tuple[SignalReport, ...]]]:
        """The monitor runs after `since` that breached a threshold, oldest first, with their breached
        signals' figures (after computing the runs due by the clock). The bot's scheduler turns them
        into drift alerts (bot/scheduler.py), as Azure ML's breach events are through Event Grid."""
        with self._tx() as conn:
            return local_monitors.breaches_since(conn, self._now(), since)

    # ------------------------------------------------------------ demo switches (local only, not in the port)

    def degrade_deployment(self, endpoint: str, deployment: str) -> str:
        """Make a deployment slow and failing (p99 x8, 8 % 5xx), so that a watch sees a breach."""
        with self._tx() as conn:
            self._deployment(conn, endpoint, deployment)
            health = self._health(conn, endpoint, deployment)
            worse = Health(health.p50_ms * 4, max(health.p99_ms * 8, health.p99_ms + 800), health.rate_4xx,
                           max(0.08, health.rate_5xx * 10), health.cpu_per_rpm * 2, health.idle_cpu)
            conn.execute("UPDATE deployments SET health = ? WHERE endpoint = ? AND name = ?",
                         (json.dumps(asdict(worse)), endpoint, deployment))
        return (f"Deployment {deployment} on {endpoint} is now degraded: p99 about {worse.p99_ms:,.0f} ms, "
                f"{worse.rate_5xx:.0%} of requests answered 5xx.")

    def heal_deployment(self, endpoint: str, deployment: str) -> str:
        """Give a deployment back its demo health."""
        with self._tx() as conn:
            self._deployment(conn, endpoint, deployment)
            health = demo_data.build_demo(self._now(), self.demo_size).health.get((endpoint, deployment), Health())
            conn.execute("UPDATE deployments SET health = ? WHERE endpoint = ? AND name = ?",
                         (json.dumps(asdict(health)), endpoint, deployment))
        return f"Deployment {deployment} on {endpoint} is healthy again (p99 about {health.p99_ms:,.0f} ms)."

    # ------------------------------------------------------------ security posture (issue 22, kept at the end)

    def security_posture(self) -> PostureFacts:
        """The demo's settings with the changes made since (adapters.local.posture), over the endpoints
        and compute the workspace holds now."""
        with self._tx(advance=False) as conn:
            return local_posture.read(conn, self.name)

    def change_security(self, kind: str, name: str, **values: Any) -> None:
        """Local only, a demo switch: change a security setting as someone could in Azure (e.g.
        `change_security("endpoint", "fraud-api", public_network_access="Enabled")`)."""
        with self._tx(advance=False) as conn:
            local_posture.change(conn, kind, name, values)


# ---------------------------------------------------------------- rows


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    """INSERT a dict; dicts, lists and tuples become JSON, booleans integers, datetimes ISO text."""

    def column(value: Any) -> Any:
        if isinstance(value, (dict, list, tuple)):
            return json.dumps(value)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, datetime):
            return iso_text(value)
        return value

    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", [column(v) for v in row.values()])


def _template_from_json(text: str) -> JobTemplate:
    data = json.loads(text)
    data["steps"] = tuple((step, minutes) for step, minutes in data.get("steps", ()))
    return JobTemplate(**data)


# ---------------------------------------------------------------- simulation
