"""The demo workspace `ml-prod` (environment `prod`) that seeds `adapters.local.workspace.LocalWorkspace`.

`build_demo(now)` returns plain values, every time relative to `now`, so a test with a fixed clock
gets the same workspace every time. Besides the port's value types it uses three small
descriptions that only the local emulator needs:

* `Health`: how a deployment serves (latency, error rates, CPU per request), which drives the
  simulated Azure Monitor metrics and logs;
* `Plan`: when a Queued/Running job starts and how it ends, so jobs move through real states as
  the clock advances;
* `JobTemplate`: what a schedule submits when it fires (pipelines list their steps).

The story the data tells: `fraud-api` runs a 90/10 canary of fraud-model:4; `churn-api` is
overloaded (high p99, some 5xx); `credit-api` mirrors traffic to a shadow deployment; the fraud
training pipeline failed at its evaluation step; a churn retraining pipeline and a GPU training
run are in flight with another GPU job queued behind them.

`build_demo(now, size=N)` adds generated endpoints, models and jobs to that story, so the bot's
costs can be measured at scale (bench/scaling.py; `MLOPSBOT_DEMO_SIZE`, `--demo-size`): N online
endpoints in all (the story's three, then `svc-0004` ... each serving its own model `svc-0004-model`,
every fifth with a 90/10 canary), so N + 1 models of three versions (Archived, Production, and a
Staging or unstaged candidate), and one training job per generated model (every tenth failed).
Everything generated is a function of N and `now` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from adapters.service import BatchEndpoint, Compute, Deployment, Job, ModelVersion, OnlineEndpoint, Schedule

WORKSPACE_NAME = "ml-prod"
ENVIRONMENT = "prod"
LOCATION = "westeurope"
STORY_ENDPOINTS = 3                 # the smallest size: the story alone
MAX_SIZE = 10_000


@dataclass(frozen=True)
class Health:
    """Simulated serving behaviour of one online deployment."""

    p50_ms: float = 30.0
    p99_ms: float = 120.0
    rate_4xx: float = 0.005          # share of requests answered 4xx
    rate_5xx: float = 0.0005         # share of requests answered 5xx
    cpu_per_rpm: float = 0.1         # CPU percent per request/minute on one instance
    idle_cpu: float = 5.0            # CPU percent with no traffic


@dataclass(frozen=True)
class Plan:
    """How an unfinished job proceeds: Running from `start_at`, `outcome` at `end_at`."""

    start_at: datetime
    end_at: datetime
    outcome: str = "Completed"
    error: str = ""


@dataclass(frozen=True)
class JobTemplate:
    """What a schedule submits. A pipeline's steps run one after another, (name, minutes) each."""

    type: str
    display_name: str
    experiment: str
    compute: str
    run_minutes: int = 30
    steps: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class BatchDeployment:
    endpoint: str
    name: str
    model: str
    compute: str


@dataclass(frozen=True)
class PlannedJob:
    job: Job
    plan: Plan | None = None


@dataclass(frozen=True)
class Demo:
    models: list[ModelVersion]
    endpoints: list[OnlineEndpoint]
    endpoint_load: dict[str, float]                    # endpoint -> requests per minute at peak
    health: dict[tuple[str, str], Health]              # (endpoint, deployment) -> Health
    batch_endpoints: list[BatchEndpoint]
    batch_deployments: list[BatchDeployment]
    jobs: list[PlannedJob]                              # parents before their children
    schedules: list[tuple[Schedule, JobTemplate]]
    compute: list[Compute]
    description: str = field(default="Production workspace of the ML platform team (local demo).")


def scoring_uri(endpoint: str) -> str:
    return f"https://{endpoint}.{LOCATION}.inference.ml.azure.com/score"


def batch_scoring_uri(endpoint: str) -> str:
    return f"https://{endpoint}.{LOCATION}.inference.ml.azure.com/jobs"


def model_path(name: str, version: int) -> str:
    return f"azureml://datastores/workspaceblobstore/paths/models/{name}/{version}/"


# ---------------------------------------------------------------- models


def _models(now: datetime) -> list[ModelVersion]:
    def mv(name: str, version: int, stage: str, days_ago: float, by: str, tags: dict[str, str],
           metrics: dict[str, float], description: str, job: str = "") -> ModelVersion:
        return ModelVersion(name, str(version), stage, description, tags, metrics,
                            now - timedelta(days=days_ago), by, model_path(name, version), job=job)

    fraud = {"framework": "lightgbm", "team": "fraud", "task": "classification",
             "training_schedule": "weekly-fraud-retrain"}
    churn = {"framework": "xgboost", "team": "growth", "task": "classification",
             "training_schedule": "nightly-churn-retrain"}
    credit = {"framework": "scikit-learn", "team": "risk", "task": "classification"}
    demand = {"framework": "lightgbm", "team": "supply-chain", "task": "forecasting"}
    return [
        mv("fraud-model", 1, "Archived", 180, "Alice Martin", {**fraud, "dataset": "transactions:3"},
           {"auc": 0.912, "precision": 0.81, "recall": 0.69}, "Baseline gradient-boosted trees."),
        mv("fraud-model", 2, "Archived", 120, "Alice Martin", {**fraud, "dataset": "transactions:5"},
           {"auc": 0.927, "precision": 0.84, "recall": 0.72}, "Adds merchant-category features."),
        mv("fraud-model", 3, "Production", 60, "Alice Martin", {**fraud, "dataset": "transactions:6"},
           {"auc": 0.941, "precision": 0.87, "recall": 0.75}, "Adds device fingerprint features."),
        mv("fraud-model", 4, "Staging", 2, "Bob Nguyen", {**fraud, "dataset": "transactions:7"},
           {"auc": 0.953, "precision": 0.88, "recall": 0.79}, "Retrained on Q1 data; canary on fraud-api/green.",
           "gentle_fox_1k9sz7ra"),
        mv("churn-model", 1, "Archived", 200, "Carla Diaz", {**churn, "dataset": "customers:2"},
           {"auc": 0.842, "f1": 0.61}, "First churn model."),
        mv("churn-model", 2, "Production", 90, "Carla Diaz", {**churn, "dataset": "customers:4"},
           {"auc": 0.871, "f1": 0.66}, "Adds support-ticket features."),
        mv("churn-model", 3, "None", 1, "Carla Diaz", {**churn, "dataset": "customers:5"},
           {"auc": 0.868, "f1": 0.67}, "Candidate from the nightly retraining pipeline.", "sunny_mango_0c4vy6tb"),
        mv("credit-risk", 1, "Archived", 365, "Dan Okafor", {**credit, "dataset": "loans:1"},
           {"auc": 0.781, "ks": 0.42, "gini": 0.562}, "Logistic regression scorecard."),
        mv("credit-risk", 2, "Production", 150, "Dan Okafor", {**credit, "dataset": "loans:3"},
           {"auc": 0.803, "ks": 0.46, "gini": 0.606}, "Gradient boosting with monotone constraints."),
        mv("credit-risk", 3, "Staging", 10, "Dan Okafor", {**credit, "dataset": "loans:4"},
           {"auc": 0.811, "ks": 0.47, "gini": 0.622}, "Shadow deployment on credit-api/shadow."),
        mv("demand-forecast", 1, "Production", 45, "Erin Walsh", {**demand, "dataset": "sales-daily:8"},
           {"mape": 0.118, "rmse": 41.7}, "Weekly SKU-level forecast."),
        mv("demand-forecast", 2, "None", 3, "Erin Walsh", {**demand, "dataset": "sales-daily:9"},
           {"mape": 0.109, "rmse": 38.2}, "Adds holiday calendar features."),
    ]


# ---------------------------------------------------------------- serving


def _endpoints() -> tuple[list[OnlineEndpoint], dict[str, float], dict[tuple[str, str], Health]]:
    def dep(endpoint: str, name: str, model: str, size: str, count: int) -> Deployment:
        return Deployment(name, endpoint, model, size, count, "Succeeded")

    endpoints = [
        OnlineEndpoint(
            "fraud-api", "Succeeded", "key", scoring_uri("fraud-api"),
            "Real-time card fraud scoring for the payments gateway.",
            traffic={"blue": 90, "green": 10},
            deployments=(dep("fraud-api", "blue", "fraud-model:3", "Standard_DS3_v2", 3),
                         dep("fraud-api", "green", "fraud-model:4", "Standard_DS3_v2", 1)),
            tags={"team": "fraud", "owner": "alice.martin@contoso.com"}),
        OnlineEndpoint(
            "churn-api", "Succeeded", "key", scoring_uri("churn-api"),
            "Churn propensity for the CRM next-best-action service.",
            traffic={"blue": 100},
            deployments=(dep("churn-api", "blue", "churn-model:2", "Standard_F4s_v2", 2),),
            tags={"team": "growth", "owner": "carla.diaz@contoso.com"}),
        OnlineEndpoint(
            "credit-api", "Succeeded", "aml_token", scoring_uri("credit-api"),
            "Credit risk scoring for loan applications; shadow-testing credit-risk:3.",
            traffic={"blue": 100, "shadow": 0}, mirror_traffic={"shadow": 20},
            deployments=(dep("credit-api", "blue", "credit-risk:2", "Standard_F4s_v2", 2),
                         dep("credit-api", "shadow", "credit-risk:3", "Standard_F4s_v2", 1)),
            tags={"team": "risk", "owner": "dan.okafor@contoso.com"}),
    ]
    load = {"fraud-api": 900.0, "churn-api": 240.0, "credit-api": 150.0}
    health = {
        ("fraud-api", "blue"): Health(22, 95, 0.008, 0.0005, 0.12, 6),
        ("fraud-api", "green"): Health(25, 140, 0.008, 0.003, 0.12, 6),
        ("churn-api", "blue"): Health(180, 2400, 0.01, 0.035, 0.6, 8),       # overloaded
        ("credit-api", "blue"): Health(45, 210, 0.012, 0.001, 0.2, 5),
        ("credit-api", "shadow"): Health(48, 230, 0.012, 0.001, 0.2, 5),
    }
    return endpoints, load, health


def _batch() -> tuple[list[BatchEndpoint], list[BatchDeployment]]:
    endpoints = [
        BatchEndpoint("churn-batch", "Succeeded", "nightly", batch_scoring_uri("churn-batch"),
                      "Nightly churn scores for the whole customer base.", ("nightly", "candidate")),
        BatchEndpoint("forecast-batch", "Succeeded", "weekly", batch_scoring_uri("forecast-batch"),
                      "Weekly SKU demand forecast.", ("weekly",)),
    ]
    deployments = [
        BatchDeployment("churn-batch", "nightly", "churn-model:2", "cpu-cluster"),
        BatchDeployment("churn-batch", "candidate", "churn-model:3", "cpu-cluster"),
        BatchDeployment("forecast-batch", "weekly", "demand-forecast:1", "cpu-cluster"),
    ]
    return endpoints, deployments


# ---------------------------------------------------------------- jobs


def _jobs(now: datetime) -> list[PlannedJob]:
    def at(minutes: float) -> datetime:
        return now + timedelta(minutes=minutes)

    def job(name: str, status: str, display: str, experiment: str, compute: str, by: str,
            created: float, started: float | None = None, ended: float | None = None, *,
            type: str = "command", error: str = "", parent: str = "", tags: dict[str, str] | None = None,
            plan: tuple[float, float] | None = None) -> PlannedJob:
        return PlannedJob(
            Job(name, status, type, display, experiment, compute, at(created),
                at(started) if started is not None else None, at(ended) if ended is not None else None,
                by, error, parent, (), tags or {}),
            Plan(at(plan[0]), at(plan[1])) if plan else None)

    eval_error = ("AssertionError: holdout AUC 0.912 is below the promotion threshold 0.930 "
                  "(evaluate.py, line 88)")
    oom = ("Execution failed. User process 'python' exited with status code 137 (killed: out of memory). "
           "Please check log file 'user_logs/std_log.txt' for more details.")
    return [
        # in flight: a queued GPU job waits for the running one to free the cluster
        job("quiet_lamp_2m8vq4xk", "Queued", "train-demand-forecast-tft", "demand-forecast", "gpu-cluster",
            "Erin Walsh", -5, plan=(50, 110)),
        job("amber_river_7d3kq9wz", "Running", "train-demand-forecast-lgbm", "demand-forecast", "gpu-cluster",
            "Erin Walsh", -70, -65, plan=(-65, 50)),
        job("brave_orchid_4n6tj1pc", "Running", "churn-retrain-pipeline", "churn-training", "train-cluster",
            "Carla Diaz", -40, -39, type="pipeline"),
        job("mighty_sail_5b1xq7ke", "Completed", "prep_data", "churn-training", "train-cluster",
            "Carla Diaz", -40, -39, -30, parent="brave_orchid_4n6tj1pc"),
        job("witty_bean_2r9vd4nm", "Running", "train_model", "churn-training", "train-cluster",
            "Carla Diaz", -40, -29, parent="brave_orchid_4n6tj1pc", plan=(-29, 20)),
        job("dreamy_owl_7k3pf0ta", "Queued", "evaluate_model", "churn-training", "train-cluster",
            "Carla Diaz", -40, parent="brave_orchid_4n6tj1pc", plan=(20, 26)),
        job("honest_spoon_4c6wz1ry", "Queued", "register_model", "churn-training", "train-cluster",
            "Carla Diaz", -40, parent="brave_orchid_4n6tj1pc", plan=(26, 28)),
        # the failed fraud pipeline: evaluation rejected the candidate, registration never ran
        job("frosty_kettle_8k2x9q7m", "Failed", "train-fraud-pipeline", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -180, -179, -128, type="pipeline", error=f"Step evaluate_model failed: {eval_error}"),
        job("plucky_cheese_9t2mh5vd", "Completed", "prep_data", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -180, -179, -165, parent="frosty_kettle_8k2x9q7m"),
        job("loyal_pillow_3q8bn6xe", "Completed", "train_model", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -180, -164, -131, parent="frosty_kettle_8k2x9q7m"),
        job("shy_tiger_6w1kr8pz", "Failed", "evaluate_model", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -180, -130, -128, parent="frosty_kettle_8k2x9q7m", error=eval_error),
        job("polite_muffin_1d5yj9sc", "Canceled", "register_model", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -180, None, -128, parent="frosty_kettle_8k2x9q7m"),
        job("neat_pepper_2q5hx4jv", "Completed", "fraud-model-monitor", "fraud-monitoring", "cpu-cluster",
            "mlops-monitor", -390, -388, -371,
            tags={"monitor": "fraud-model", "azureml_modelmonitor_threshold_breached": "true"}),
        job("olive_comet_5h2rk8sd", "Completed", "churn-batch nightly scoring", "churn-batch", "cpu-cluster",
            "mlops-bot", -445, -443, -418, type="batch",
            tags={"endpoint": "churn-batch", "deployment": "nightly",
                  "input": "azureml:customers-scoring:12"}),
        job("sunny_mango_0c4vy6tb", "Completed", "churn-retrain-pipeline", "churn-training", "cpu-cluster",
            "Carla Diaz", -450, -449, -402, type="pipeline", tags={"schedule": "nightly-churn-retrain"}),
        job("crisp_basket_3v8n1q6d", "Completed", "prep_data", "churn-training", "cpu-cluster",
            "Carla Diaz", -450, -449, -441, parent="sunny_mango_0c4vy6tb"),
        job("keen_board_8m4ts2wh", "Completed", "train_model", "churn-training", "cpu-cluster",
            "Carla Diaz", -450, -440, -409, parent="sunny_mango_0c4vy6tb"),
        job("brisk_rose_0p7fc3lu", "Completed", "evaluate_model", "churn-training", "cpu-cluster",
            "Carla Diaz", -450, -408, -402, parent="sunny_mango_0c4vy6tb"),
        job("silver_yak_9p4wm2ze", "Failed", "train-credit-risk-xgb", "credit-risk-training", "cpu-cluster",
            "Dan Okafor", -600, -596, -571, error=oom),
        job("lucid_wave_8f3nt6cy", "Completed", "eda-churn-features", "churn-exploration", "ds-ci-alice",
            "Alice Martin", -1500, -1500, -1488),
        job("tidy_garden_3x7bq5lm", "Canceled", "sweep-fraud-thresholds", "fraud-training", "cpu-cluster",
            "Alice Martin", -1700, -1695, -1650, type="sweep"),
        job("calm_lemon_6r1wd8hq", "Completed", "fraud-lgbm-hyperdrive", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -2950, -2945, -2830, type="sweep"),
        job("gentle_fox_1k9sz7ra", "Completed", "register-fraud-model-v4", "fraud-training", "cpu-cluster",
            "Bob Nguyen", -2820, -2818, -2815, tags={"model": "fraud-model:4"}),
    ]


# ---------------------------------------------------------------- schedules and compute


def _schedules() -> list[tuple[Schedule, JobTemplate]]:
    churn_steps = (("prep_data", 8), ("train_model", 30), ("evaluate_model", 6), ("register_model", 2))
    fraud_steps = (("prep_data", 14), ("train_model", 33), ("evaluate_model", 3), ("register_model", 2))
    return [
        (Schedule("nightly-churn-retrain", True, "cron", "0 2 * * *", "UTC", "job churn-retrain-pipeline",
                  "Succeeded", "Retrains churn-model every night on yesterday's customer snapshot."),
         JobTemplate("pipeline", "churn-retrain-pipeline", "churn-training", "cpu-cluster", 46, churn_steps)),
        (Schedule("weekly-demand-forecast", True, "recurrence", "every 1 week on Monday at 06:00",
                  "W. Europe Standard Time", "job train-demand-forecast-lgbm", "Succeeded",
                  "Weekly demand forecast training."),
         JobTemplate("command", "train-demand-forecast-lgbm", "demand-forecast", "gpu-cluster", 115)),
        (Schedule("fraud-model-monitor", True, "recurrence", "every 1 day at 03:00", "UTC",
                  "monitor fraud-model", "Succeeded", "Data drift monitor for fraud-api (fraud-model)."),
         JobTemplate("command", "fraud-model-monitor", "fraud-monitoring", "cpu-cluster", 17)),
        (Schedule("credit-risk-retrain", False, "cron", "0 4 1 * *", "UTC", "job train-credit-risk-xgb",
                  "Succeeded", "Monthly credit-risk retraining; paused while the out-of-memory failure is fixed."),
         JobTemplate("command", "train-credit-risk-xgb", "credit-risk-training", "cpu-cluster", 25)),
        (Schedule("weekly-fraud-retrain", True, "cron", "0 3 * * 0", "UTC", "job train-fraud-pipeline", "Succeeded",
                  "Retrains fraud-model every Sunday on the last 90 days of transactions (feature store)."),
         JobTemplate("pipeline", "train-fraud-pipeline", "fraud-training", "cpu-cluster", 52, fraud_steps)),
    ]


def _compute() -> list[Compute]:
    return [
        Compute("cpu-cluster", "amlcompute", "Succeeded", "Standard_DS3_v2", 0, 4, 0),
        Compute("train-cluster", "amlcompute", "Succeeded", "Standard_F4s_v2", 0, 8, 2),
        Compute("gpu-cluster", "amlcompute", "Succeeded", "Standard_NC6s_v3", 0, 2, 2),
        Compute("ds-ci-alice", "computeinstance", "Running", "Standard_DS11_v2"),
        Compute("ds-ci-bob", "computeinstance", "Stopped", "Standard_DS11_v2"),
    ]


# ---------------------------------------------------------------- generated (size)


def generated_name(index: int) -> str:
    """The name of the `index`-th online endpoint of a sized demo (its model adds `-model`)."""
    return f"svc-{index:04d}"


def _generated(now: datetime, size: int) -> tuple[list[ModelVersion], list[OnlineEndpoint], dict[str, float],
                                                  dict[tuple[str, str], Health], list[PlannedJob]]:
    """Endpoints number STORY_ENDPOINTS + 1 .. size, each with its own model and training job."""
    models, endpoints, load, health, jobs = [], [], {}, {}, []
    team = {"framework": "lightgbm", "team": "platform", "task": "classification"}
    for index in range(STORY_ENDPOINTS + 1, size + 1):
        endpoint = generated_name(index)
        model = f"{endpoint}-model"
        candidate = "Staging" if index % 2 == 0 else "None"
        trained = now - timedelta(hours=index % 72 + 1)
        job = f"steady_gear_{index:08d}"
        for version, stage, days_ago in ((1, "Archived", 120), (2, "Production", 30), (3, candidate, 0)):
            auc = round(0.80 + (index * 7 + version * 13) % 150 / 1000, 3)
            created = trained if version == 3 else now - timedelta(days=days_ago + index % 10)
            models.append(ModelVersion(model, str(version), stage, f"Generated model {version} for {endpoint}.",
                                       {**team, "dataset": f"{endpoint}-data:{version}"},
                                       {"auc": auc, "f1": round(auc - 0.2, 3)}, created, "Platform Bot",
                                       model_path(model, version), job=job if version == 3 else ""))
        canary = index % 5 == 0
        deployments = [Deployment("blue", endpoint, f"{model}:2", "Standard_DS3_v2", 1 + index % 3, "Succeeded")]
        if canary:
            deployments.append(Deployment("green", endpoint, f"{model}:3", "Standard_DS3_v2", 1, "Succeeded"))
        endpoints.append(OnlineEndpoint(
            endpoint, "Succeeded", "key", scoring_uri(endpoint), f"Generated endpoint {index} of a sized demo.",
            traffic={"blue": 90, "green": 10} if canary else {"blue": 100},
            deployments=tuple(deployments), tags={"team": "platform"}))
        load[endpoint] = float(50 + index * 37 % 500)
        health[(endpoint, "blue")] = Health(20 + index % 30, 90 + index % 200)
        if canary:
            health[(endpoint, "green")] = Health(22 + index % 30, 100 + index % 200)
        failed = index % 10 == 0
        jobs.append(PlannedJob(Job(
            job, "Failed" if failed else "Completed", "command", f"train-{model}", f"{endpoint}-training",
            "cpu-cluster", trained - timedelta(minutes=40), trained - timedelta(minutes=38), trained,
            "Platform Bot", "ValueError: the training data has no rows for the last day." if failed else "",
            tags={"model": f"{model}:3"})))
    return models, endpoints, load, health, jobs


def build_demo(now: datetime, size: int | None = None) -> Demo:
    """The whole demo workspace as seen at `now`; with `size`, that many online endpoints (see above)."""
    if size is not None and not STORY_ENDPOINTS <= size <= MAX_SIZE:
        raise ValueError(f"The demo size must be from {STORY_ENDPOINTS} to {MAX_SIZE}, got {size!r}.")
    endpoints, load, health = _endpoints()
    models, jobs = _models(now), _jobs(now)
    if size is not None:
        more_models, more_endpoints, more_load, more_health, more_jobs = _generated(now, size)
        models, endpoints, jobs = models + more_models, endpoints + more_endpoints, jobs + more_jobs
        load, health = {**load, **more_load}, {**health, **more_health}
    batch_endpoints, batch_deployments = _batch()
    return Demo(models, endpoints, load, health, batch_endpoints, batch_deployments, jobs,
                _schedules(), _compute())


# ---------------------------------------------------------------- security posture (issue 22)


@dataclass(frozen=True)
class DemoPosture:
    """What the production checklist reads of the demo workspace (adapters.posture); endpoints and
    compute not named here take Azure's defaults (public network access Enabled; no SSH, no public
    IP, no idle shutdown). Their auth mode and minimum nodes come from the endpoints and compute."""

    workspace: dict = field(default_factory=dict)              # WorkspaceSecurity fields
    endpoints: dict = field(default_factory=dict)              # name -> EndpointSecurity fields
    compute: dict = field(default_factory=dict)                # name -> ComputeSecurity fields
    datastores: tuple = ()                                     # (name, type, credentials)
    diagnostics: tuple = ()                                    # (name, logs enabled, destinations)
    role_assignments: tuple = ()                               # (role, principal type, scope)


def demo_posture() -> DemoPosture:
    """A realistic production workspace half-way through hardening: managed network on but outbound
    open, Microsoft-managed keys, no private endpoint yet; churn-api still public; Bob's notebook VM
    with SSH and a public IP that never shuts down; one datastore still on an account key; someone
    still Contributor on the resource group."""
    return DemoPosture(
        workspace={"public_network_access": "Enabled", "private_endpoints": 0,
                   "isolation_mode": "AllowInternetOutbound", "customer_managed_key": False, "hbi_workspace": False,
                   "identity_type": "SystemAssigned",
                   "tags": {"cost-center": "CC-4711", "owner": "ml-platform@contoso.com", "env": ENVIRONMENT}},
        endpoints={"fraud-api": {"public_network_access": "Disabled"},
                   "churn-api": {"public_network_access": "Enabled"},
                   "credit-api": {"public_network_access": "Disabled"}},
        compute={"ds-ci-alice": {"ssh_public_access": False, "public_ip": False, "idle_shutdown_minutes": 60},
                 "ds-ci-bob": {"ssh_public_access": True, "public_ip": True, "idle_shutdown_minutes": None},
                 "cpu-cluster": {"ssh_public_access": False, "public_ip": False},
                 "train-cluster": {"ssh_public_access": False, "public_ip": False},
                 "gpu-cluster": {"ssh_public_access": False, "public_ip": True}},
        datastores=(("workspaceblobstore", "AzureBlob", "None"),
                    ("workspacefilestore", "AzureFile", "AccountKey"),
                    ("sales-lake", "AzureDataLakeGen2", "None")),
        diagnostics=(("audit-to-log-analytics", True, ("Log Analytics",)),),
        role_assignments=(("Owner", "User", "subscription"),
                          ("Contributor", "User", "resource group"),
                          ("AzureML Data Scientist", "Group", "workspace"),
                          ("AzureML Compute Operator", "Group", "workspace"),
                          ("Reader", "Group", "resource group")))
