"""What the embedded local workspace makes up, the way Azure ML would report it: endpoint
metrics (Azure Monitor-like, deterministic per endpoint and 5-minute bucket) and deployment logs.

Pure functions of a deployment's demo health (adapters.local.demo.Health), its traffic and the
clock: adapters.local.workspace calls them when asked for metrics or logs.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from adapters.local.demo import Health
from adapters.local.times import iso_text
from adapters.service import Deployment, DeploymentMetrics, EndpointMetrics, OnlineEndpoint

METRICS_BUCKET_SECONDS = 300


def _daily_factor(now: datetime) -> float:
    """Traffic follows the working day: lowest around 03:00 UTC, highest around 15:00 UTC."""
    hour = now.hour + now.minute / 60
    return 0.8 + 0.2 * math.sin((hour - 9) / 24 * 2 * math.pi)


def simulated_metrics(endpoint: OnlineEndpoint, load_rpm: float, health: dict[str, Health], now: datetime,
                      window_minutes: int) -> EndpointMetrics:
    """Azure Monitor-like endpoint metrics, deterministic for (endpoint, 5-minute bucket, window).

    Live requests are split by the traffic percentages and by each deployment's error rates;
    latency percentiles are traffic-weighted; CPU follows requests (live and mirrored) per instance.
    Longer windows average out more of the noise.
    """
    bucket = int(now.timestamp() // METRICS_BUCKET_SECONDS)
    rng = random.Random(f"{endpoint.name}|{bucket}|{window_minutes}")
    spread = 0.12 / math.sqrt(max(window_minutes, 5) / 5)

    def wobble() -> float:
        return 1 + rng.uniform(-spread, spread)

    total = load_rpm * _daily_factor(now) * wobble()
    by_status = {"2xx": 0.0, "4xx": 0.0, "5xx": 0.0}
    p50 = p99 = 0.0
    per_deployment = []
    for dep in endpoint.deployments:
        h = health[dep.name]
        share = endpoint.traffic.get(dep.name, 0) / 100
        live = total * share
        mirrored = total * endpoint.mirror_traffic.get(dep.name, 0) / 100
        own: dict[str, float] = {}
        dep_p50 = dep_p99 = None
        if live:
            client_errors = live * h.rate_4xx * wobble()
            server_errors = live * h.rate_5xx * wobble()
            own = {"2xx": live - client_errors - server_errors, "4xx": client_errors, "5xx": server_errors}
            for key, value in own.items():
                by_status[key] += value
            dep_p50, dep_p99 = h.p50_ms * wobble(), h.p99_ms * wobble()
            p50 += share * dep_p50
            p99 += share * dep_p99
        per_instance = (live + mirrored) / max(dep.instance_count, 1)
        cpu = min(99.0, h.idle_cpu + h.cpu_per_rpm * per_instance * wobble())
        per_deployment.append(DeploymentMetrics(
            dep.name, cpu_utilization=round(cpu, 1), capacity=float(dep.instance_count),
            latency_p50_ms=round(dep_p50, 1) if dep_p50 is not None else None,
            latency_p99_ms=round(dep_p99, 1) if dep_p99 is not None else None,
            requests_per_minute=round(sum(own.values()), 2),
            requests_by_status={key: round(value, 2) for key, value in own.items()}))
    served = sum(endpoint.traffic.values()) > 0
    return EndpointMetrics(
        endpoint.name, window_minutes,
        latency_p50_ms=round(p50, 1) if served else None,
        latency_p99_ms=round(p99, 1) if served else None,
        requests_per_minute=round(sum(by_status.values()), 2),
        requests_by_status={key: round(value, 2) for key, value in by_status.items()} if served else {},
        deployments=tuple(per_deployment), read_at=now)


def simulated_log(dep: Deployment, health: Health, now: datetime, lines: int) -> list[str]:
    """The last `lines` lines of the deployment's inference-server log, deterministic per minute.

    The log covers the current worker: its start-up banner (which names the model) followed by
    the requests it served since, up to `now`; 5xx answers come with the exception that caused them.
    """
    model_name, _, model_version = dep.model.partition(":")
    model_dir = f"/var/azureml-app/azureml-models/{model_name}/{model_version}"
    rng = random.Random(f"{dep.endpoint}/{dep.name}|{iso_text(now.replace(second=0, microsecond=0))}")

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"

    requests: list[str] = []
    moment = now
    for _ in range(rng.randint(40, 60)):
        moment -= timedelta(milliseconds=rng.randint(150, 2500))
        roll = rng.random()
        if roll < 0.04:
            requests.append(f'{stamp(moment)} I [34] gunicorn.access - 10.0.0.4 - - "GET / HTTP/1.1" 200 7 '
                            f'"-" "kube-probe/1.29"')
        elif roll < 0.04 + health.rate_5xx * 4:
            requests.append(f"{stamp(moment)} I [34] azmlinfsrv - POST /score 500 60012.417ms 0")
            requests.append(f"{stamp(moment)} E [34] azmlinfsrv - Encountered Exception: TimeoutError: "
                            f"scoring with {dep.model} exceeded 60000 ms")
        elif roll < 0.04 + health.rate_5xx * 4 + health.rate_4xx:
            requests.append(f"{stamp(moment)} W [34] azmlinfsrv - POST /score 422 {rng.uniform(1, 4):.3f}ms 98")
        else:
            latency = health.p50_ms * rng.lognormvariate(0, 0.35)
            requests.append(f"{stamp(moment)} I [34] azmlinfsrv - POST /score 200 {latency:.3f}ms "
                            f"{rng.randint(28, 64)}")
    requests.reverse()
    booted = moment - timedelta(seconds=6)
    ready = moment - timedelta(seconds=2)
    banner = [
        "Azure ML Inferencing HTTP server v1.3.2", "", "Server Settings", "---------------",
        "Entry Script Name: /var/azureml-app/onlinescoring/score.py", f"Model Directory: {model_dir}",
        "Worker Count: 1", "Worker Timeout (seconds): 300", "Server Port: 31311",
        "Application Insights Enabled: false", "", "Server Routes", "---------------",
        "Liveness Probe: GET   127.0.0.1:31311/", "Score:          POST  127.0.0.1:31311/score", "",
        f"{stamp(booted)} I [1] gunicorn.error - Starting gunicorn 22.0.0",
        f"{stamp(booted)} I [1] gunicorn.error - Listening at: http://0.0.0.0:31311 (1)",
        f"{stamp(booted)} I [34] gunicorn.error - Booting worker with pid: 34",
        f"{stamp(booted)} I [34] azmlinfsrv - Loading model {dep.model} from {model_dir}",
        f"{stamp(ready)} I [34] azmlinfsrv - Users's init has completed successfully",
        f"{stamp(ready)} I [34] azmlinfsrv - Scoring timeout is set to 60000",
    ]
    return (banner + requests)[-lines:]
