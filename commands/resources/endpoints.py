"""Online and batch endpoint commands: endpoints, endpoint, traffic, scale, logs, batch."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from adapters.service import (
    MAX_INSTANCES, MIN_INSTANCES, TRAFFIC_TOTAL, BatchDeployment, BatchEndpoint, DeploymentMetrics, EndpointMetrics,
    Job, NotFound, OnlineEndpoint, ServiceError,
)
from commands.changes.background import accepted, requested_tags, started
from commands.base.context import Context, HealthThresholds, Reply, Role
from commands.resources.job_rows import job_row
from commands.resources.splits import parse_split, traffic_change, traffic_text
from commands.changes.change import Accepted, Change, Stale, settled
from commands.base.registry import Arg, UsageError, command, whole_number
from commands.base.studio import open_in_studio, studio
from commands.base.ui import MAX_CARD_BYTES, button, card, columns, facts, limited, plain, reply, section, text

STATE_COLORS = {"Succeeded": "Good", "Failed": "Attention", "Updating": "Warning", "Creating": "Warning",
                "Deleting": "Warning"}


def ms_text(value: float | None) -> str:
    """The one way a latency is written: `1,149 ms` ("—" when unknown)."""
    return "—" if value is None else f"{value:,.0f} ms"


def endpoint_row(endpoint: OnlineEndpoint) -> dict:
    detail = f"{endpoint.provisioning_state} · traffic {traffic_text(endpoint.traffic)} · " \
             f"{len(endpoint.deployments)} deployment{'s' if len(endpoint.deployments) != 1 else ''}"
    return columns([text(f"**{endpoint.name}**"), text(detail, subtle=True, spacing="None")],
                   {"type": "ActionSet", "actions": [button("Details", "endpoint", endpoint.name)]},
                   widths=["stretch", "auto"])


def batch_row(endpoint: BatchEndpoint) -> dict:
    count = len(endpoint.deployments)
    detail = (f"{endpoint.provisioning_state} · default deployment {endpoint.default_deployment or '—'} · "
              f"{count} deployment{'s' if count != 1 else ''}")
    return columns([text(f"**{endpoint.name}** (batch)"), text(detail, subtle=True, spacing="None")],
                   {"type": "ActionSet", "actions": [button("Details", "endpoint", endpoint.name)]},
                   widths=["stretch", "auto"])


RECENT_BATCH_JOBS = 5


def batch_endpoint_card(endpoint: BatchEndpoint, jobs: list[Job], *, workspace: str) -> dict:
    """A batch endpoint: its deployments (the default marked), and its most recent scoring jobs."""
    body = [
        text(endpoint.provisioning_state, weight="Bolder", color=STATE_COLORS.get(endpoint.provisioning_state)),
        facts([("Default deployment", endpoint.default_deployment or "none: `batch` needs --deployment"),
               ("Scoring URI", endpoint.scoring_uri), ("Description", plain(endpoint.description))]),
        section("Deployments"),
    ]

    def deployment_row(d: BatchDeployment) -> dict:
        instances = f"{d.instance_count} × " if d.instance_count else ""
        detail = " · ".join(p for p in (d.model or "model ?", f"{instances}{d.compute or 'compute ?'}",
                                        d.provisioning_state) if p)
        marker = text("**default**", color="Good") if d.name == endpoint.default_deployment else text("")
        return columns([text(f"**{d.name}**"), text(detail, subtle=True, spacing="None")], marker,
                       widths=["stretch", "auto"])

    details = list(endpoint.details) or [BatchDeployment(name, endpoint.name) for name in endpoint.deployments]
    body += limited(details, deployment_row, noun="deployment")
    body.append(section("Recent jobs"))
    body += limited(jobs[:RECENT_BATCH_JOBS], job_row, noun="job")
    body.append(text(f"Score new data with `batch {endpoint.name} ‹data URI›`.", subtle=True))
    return card(f"Batch endpoint {endpoint.name}", body, subtitle=workspace,
                actions=[button("Refresh", "endpoint", endpoint.name, refresh=True)])


def endpoints_card(online: list[OnlineEndpoint], batch: list[BatchEndpoint], *, workspace: str) -> dict:
    body = [section("Online endpoints"), *limited(online, endpoint_row, noun="online endpoint"),
            section("Batch endpoints"), *limited(batch, batch_row, noun="batch endpoint")]
    return card("Endpoints", body, subtitle=workspace)


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.2%}"


def health_facts(metrics: EndpointMetrics) -> dict:
    return facts([
        ("Latency p50", ms_text(metrics.latency_p50_ms)),
        ("Latency p99", ms_text(metrics.latency_p99_ms)),
        ("Requests", _fmt(metrics.requests_per_minute, " /min", 1)),
        ("5xx errors", _percent(metrics.error_rate)),
    ])


def health_problems(p99_ms: float | None, error_rate: float | None, limits: HealthThresholds) -> list[str]:
    """What is over its threshold, in words; empty when the figures are healthy."""
    problems = []
    if p99_ms is not None and p99_ms > limits.p99_ms:
        problems.append(f"p99 {ms_text(p99_ms)} is over {ms_text(limits.p99_ms)}")
    if error_rate is not None and error_rate * 100 > limits.error_percent:
        problems.append(f"5xx {error_rate:.2%} is over {limits.error_percent:g}%")
    return problems


@dataclass(frozen=True)
class Unhealthy:
    """The endpoint as a whole (deployment "") or one deployment, over a health threshold."""

    deployment: str
    problems: tuple[str, ...]

    @property
    def text(self) -> str:
        return "; ".join(self.problems)


def unhealthy(metrics: EndpointMetrics, traffic: dict[str, int], limits: HealthThresholds) -> list[Unhealthy]:
    """The one judgement of an endpoint's health (the endpoint card, the digest and the verdict after
    a change use it): the endpoint, then each deployment that takes traffic (a share above 0 in
    `traffic`), that is over a threshold. A small canary can fail its callers while the endpoint's
    average looks fine. A deployment that takes all the traffic is the endpoint: not said twice.
    Empty: healthy (or no figures)."""
    found = []
    own = health_problems(metrics.latency_p99_ms, metrics.error_rate, limits)
    if own:
        found.append(Unhealthy("", tuple(own)))
    for usage in metrics.deployments:
        share = traffic.get(usage.deployment, 0)
        if share > 0 and not (own and share >= 100):
            problems = health_problems(usage.latency_p99_ms, usage.error_rate, limits)
            if problems:
                found.append(Unhealthy(usage.deployment, tuple(problems)))
    return found


def health_headline(endpoint: OnlineEndpoint, metrics: EndpointMetrics | None,
                    limits: HealthThresholds) -> tuple[str, str | None]:
    """One line and its colour, judged by the figures (a Succeeded deployment can still be failing
    its callers), with the provisioning state when it is not Succeeded."""
    state = "" if endpoint.provisioning_state == "Succeeded" else f"{endpoint.provisioning_state} · "
    state_color = STATE_COLORS.get(endpoint.provisioning_state)
    if metrics is None:
        return f"{state}Health unknown", state_color if state else None
    if metrics.latency_p99_ms is None and metrics.error_rate is None:
        return f"{state}No live requests in the last {metrics.window_minutes} min", state_color if state else None
    sick = unhealthy(metrics, endpoint.traffic, limits)
    if sick and not sick[0].deployment:
        return f"{state}Unhealthy: {sick[0].text}", "Attention"
    figures = f"p99 {ms_text(metrics.latency_p99_ms)}, 5xx {_percent(metrics.error_rate)}"
    if sick:
        return f"{state}Deployment {sick[0].deployment} is unhealthy: {sick[0].text} (endpoint: {figures})", \
            "Warning"
    return f"{state}Healthy: {figures}", state_color if state else "Good"


def deployment_figures(usage: DeploymentMetrics | None, limits: HealthThresholds) -> dict | None:
    """A deployment's own figures, red when over a threshold, so a canary stands out from the rest."""
    if usage is None or usage.latency_p99_ms is None and usage.error_rate is None:
        return text("no live requests", subtle=True, spacing="None") if usage is not None else None
    line = (f"p99 {ms_text(usage.latency_p99_ms)} · 5xx {_percent(usage.error_rate)} · "
            f"{_fmt(usage.requests_per_minute, ' /min', 1)}")
    if health_problems(usage.latency_p99_ms, usage.error_rate, limits):
        return text(f"⚠ {line}", color="Attention", spacing="None")
    return text(line, subtle=True, spacing="None")


def endpoint_card(endpoint: OnlineEndpoint, metrics: EndpointMetrics | None, metrics_error: str, *,
                  workspace: str, limits: HealthThresholds = HealthThresholds(),
                  read_at: datetime | None = None, studio_url: str | None = None) -> dict:
    headline, color = health_headline(endpoint, metrics, limits)
    body = [
        text(headline, weight="Bolder", color=color),
        facts([("State", endpoint.provisioning_state), ("Traffic", traffic_text(endpoint.traffic)),
               ("Mirrored", traffic_text(endpoint.mirror_traffic) if endpoint.mirror_traffic else "—"),
               ("Auth", endpoint.auth_mode), ("Scoring URI", endpoint.scoring_uri),
               ("Description", plain(endpoint.description))]),
        section("Deployments"),
    ]
    utilisation = {d.deployment: d for d in (metrics.deployments if metrics else ())}

    def deployment_row(d):
        usage = utilisation.get(d.name)
        cpu = f" · CPU {usage.cpu_utilization:.0f}%" if usage and usage.cpu_utilization is not None else ""
        detail = f"{d.model or 'model ?'} · {d.instance_count} × {d.instance_type or '?'} · {d.provisioning_state}{cpu}"
        figures = deployment_figures(usage, limits)
        left = [text(f"**{d.name}**"), text(detail, subtle=True, spacing="None")] + ([figures] if figures else [])
        return columns(left, text(f"**{endpoint.traffic.get(d.name, 0)}%**"), widths=["stretch", "auto"])

    body += limited(list(endpoint.deployments), deployment_row, noun="deployment")
    if metrics:
        moment = metrics.read_at or read_at
        read = f", read {moment.astimezone(timezone.utc).strftime('%H:%M')} UTC" if moment else ""
        body.append(section(f"Health (last {metrics.window_minutes} min{read})"))
        body.append(health_facts(metrics))
        body.append(text(f"Healthy means p99 ≤ {ms_text(limits.p99_ms)} and 5xx ≤ {limits.error_percent:g}%.",
                         subtle=True, size="Small"))
    else:
        body.append(section("Health"))
        body.append(text(f"Health figures unavailable: {plain(metrics_error)}", subtle=True))
    return card(f"Endpoint {endpoint.name}", body, subtitle=workspace,
                actions=[button("Refresh", "endpoint", endpoint.name, refresh=True)] + open_in_studio(studio_url))


@command("endpoints",
         phrases=("list endpoints", "what endpoints", "which endpoints", "all endpoints", "show endpoints",
                  "what is deployed", "what is serving", "what is live", "online endpoints", "batch endpoints",
                  "what apis", "anything broken", "anything wrong", "is everything ok", "everything healthy",
                  "overview", "status of everything", "how are things"),
         summary="List online and batch endpoints with their traffic.", example="endpoints",
         common=True)
async def endpoints(ctx: Context) -> Reply:
    online, batch = await asyncio.gather(ctx.ml.list_endpoints(), ctx.ml.list_batch_endpoints())
    return reply(endpoints_card(online, batch, workspace=ctx.where))


@command("endpoint", Arg("name", help="an online or batch endpoint"),
         phrases=("show endpoint", "endpoint details", "is it healthy", "health of", "what is wrong with",
                  "what's up with", "is up", "is down", "latency of", "errors on", "check", "how is endpoint",
                  "what traffic", "traffic split", "traffic on", "deployments of", "how is {endpoint} doing",
                  "status of {endpoint}", "is {endpoint} healthy", "state of {endpoint}",
                  "tell me about {endpoint}", "show {endpoint}"),
         summary="Show an endpoint: an online one's deployments, traffic, instances and health; a batch "
                 "one's deployments and recent jobs.",
         example="endpoint fraud-api", common=True)
async def endpoint(ctx: Context, name: str) -> Reply:
    try:
        return await _online_endpoint(ctx, name)
    except NotFound as missing:
        try:
            found = await ctx.ml.get_batch_endpoint(name)
        except NotFound:
            raise missing from None
    jobs = await ctx.ml.list_batch_jobs(name)
    return reply(batch_endpoint_card(found, jobs, workspace=ctx.where))


async def _online_endpoint(ctx: Context, name: str) -> Reply:
    asked = datetime.now(timezone.utc)
    found, (metrics, error) = await asyncio.gather(ctx.ml.get_endpoint(name), _metrics(ctx, name))
    site = studio(ctx)
    return reply(endpoint_card(found, metrics, error, workspace=ctx.where, limits=ctx.health, read_at=asked,
                               studio_url=site.endpoint(found.name) if site else None))


async def _metrics(ctx: Context, name: str) -> tuple[EndpointMetrics | None, str]:
    """Health figures are extra: their absence must not hide the endpoint itself."""
    try:
        return await ctx.ml.endpoint_metrics(name), ""
    except ServiceError as error:
        return None, error.message


@command("traffic", Arg("endpoint", help="an online endpoint"),
         Arg("split", nargs="+", metavar="deployment=percent", help=f"the new split; it must add up to {TRAFFIC_TOTAL}"),
         phrases=("set traffic", "shift traffic", "move traffic", "split traffic", "send traffic", "route traffic",
                  "send everything to", "all traffic to", "switch to", "cut over", "flip to", "route all",
                  "traffic to", "route everything", "everything to", "all to"),
         summary="Shift traffic between deployments of an online endpoint (blue/green, canary).",
         role=Role.OPERATOR, example="traffic fraud-api blue=90 green=10", change=True, common=True)
async def traffic(ctx: Context, endpoint: str, split: list[str]) -> Reply:
    new = parse_split(split)
    total = sum(new.values())
    if total != TRAFFIC_TOTAL:          # checked here, before anything is sent to the workspace
        raise UsageError(f"The split adds up to {total}%; it must add up to exactly {TRAFFIC_TOTAL}%. "
                         f"E.g. `traffic {endpoint} blue=90 green=10`.")
    current = await ctx.ml.get_endpoint(endpoint)
    known = [d.name for d in current.deployments]
    unknown = [name for name in new if name not in known]
    if unknown:
        raise UsageError(f"Endpoint {endpoint} has no deployment named '{unknown[0]}' "
                         f"(it has: {', '.join(known) or 'none'}).")
    if {k: v for k, v in current.traffic.items() if v} == {k: v for k, v in new.items() if v}:
        return Reply(f"Traffic on {endpoint} is already {traffic_text(current.traffic)}; nothing to change. "
                     f"[{ctx.where}]")
    return await ctx.gate.submit(ctx, Change(
        action="traffic", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"endpoint {endpoint}",
        parameters={"endpoint": endpoint, "traffic": new}, before={"traffic": dict(current.traffic)},
        after={"traffic": new},
        summary=f"Traffic on {endpoint}: {traffic_change(current.traffic, new)}"))


async def apply_traffic(ctx: Context, change: Change) -> Reply | Accepted:
    endpoint, new = change.parameters["endpoint"], change.parameters["traffic"]
    current = await ctx.ml.get_endpoint(endpoint)
    if current.traffic != change.before["traffic"]:
        raise Stale(f"the split on {endpoint} is now {traffic_text(current.traffic)}, no longer "
                    f"{traffic_text(change.before['traffic'])}.")
    operation = await ctx.ml.set_traffic(endpoint, new, expected=change.before["traffic"])
    return accepted(ctx, operation, f"Traffic on {endpoint} is moving to {traffic_text(new)}.")


async def scaled(ctx: Context, change: Change) -> Reply | None:
    """After a restart: how many instances does the deployment run (None while it is updating)?"""
    p = change.parameters
    found = await _deployment(ctx, p["endpoint"], p["deployment"])
    return settled(ctx, change, {"instances": found.instance_count},
                   busy=found.provisioning_state in ("Creating", "Updating", "Scaling"))


def _instances(count: int) -> str:
    return f"{count} instance{'s' if count != 1 else ''}"


@command("scale", Arg("endpoint", help="an online endpoint"), Arg("deployment", help="one of its deployments"),
         Arg("instances", type=whole_number(MIN_INSTANCES, MAX_INSTANCES, "instances"),
             help=f"how many instances ({MIN_INSTANCES} to {MAX_INSTANCES})"),
         phrases=("scale", "scale up", "scale down", "more instances", "fewer instances", "add instance",
                  "instances", "add capacity", "remove instance", "resize"),
         summary="Change how many instances serve one deployment.", role=Role.OPERATOR,
         example="scale fraud-api green 3", change=True)
async def scale(ctx: Context, endpoint: str, deployment: str, instances: int) -> Reply:
    found = await _deployment(ctx, endpoint, deployment)
    if found.instance_count == instances:
        return Reply(f"{endpoint}/{deployment} already runs {_instances(instances)}; nothing to change. "
                     f"[{ctx.where}]")
    return await ctx.gate.submit(ctx, Change(
        action="scale", workspace=ctx.ml.name, environment=ctx.ml.environment,
        target=f"deployment {endpoint}/{deployment}",
        parameters={"endpoint": endpoint, "deployment": deployment, "instances": instances},
        before={"instances": found.instance_count}, after={"instances": instances},
        summary=f"Scale {endpoint}/{deployment}: {found.instance_count} → {_instances(instances)}"))


async def apply_scale(ctx: Context, change: Change) -> Reply | Accepted:
    endpoint, deployment, instances = (change.parameters[k] for k in ("endpoint", "deployment", "instances"))
    found = await _deployment(ctx, endpoint, deployment)
    if found.instance_count != change.before["instances"]:
        raise Stale(f"{endpoint}/{deployment} now runs {_instances(found.instance_count)}, no longer "
                    f"{_instances(change.before['instances'])}.")
    operation = await ctx.ml.scale_deployment(endpoint, deployment, instances)
    return accepted(ctx, operation, f"{endpoint}/{deployment} is scaling to {_instances(instances)}.")


async def _deployment(ctx: Context, endpoint: str, deployment: str):
    current = await ctx.ml.get_endpoint(endpoint)
    found = next((d for d in current.deployments if d.name == deployment), None)
    if found is None:
        raise UsageError(f"Endpoint {endpoint} has no deployment named '{deployment}' "
                         f"(it has: {', '.join(d.name for d in current.deployments) or 'none'}).")
    return found


@command("logs", Arg("endpoint", help="an online endpoint"), Arg("deployment", help="one of its deployments"),
         Arg("--lines", type=whole_number(1, 500, "lines"), default=30, help="how many lines from the end (default 30)", metavar="N"),
         phrases=("logs", "show logs", "log of", "container log", "what does log say", "tail log", "log lines",
                  "stderr", "{endpoint} logs"),
         summary="Show the last lines of a deployment's container log.", example="logs fraud-api green --lines 50")
async def logs(ctx: Context, endpoint: str, deployment: str, lines: int) -> Reply:
    tail = await ctx.ml.deployment_logs(endpoint, deployment, lines)
    return reply(log_card(tail, title=f"Logs of {endpoint}/{deployment}", workspace=ctx.where))


ERROR_LINE = re.compile(r"^\S+ \S+ E |\b(ERROR|CRITICAL|FATAL|Traceback|Exception)\b")
WARNING_LINE = re.compile(r"^\S+ \S+ W |\bWARN(ING)?\b")
MAX_LOG_LINE_CHARS = 400


def log_line(line: str) -> dict:
    """One log line in a monospace TextBlock of its own; errors in red and marked, warnings in amber.
    Whatever the scoring code logs (its callers' input too) is shown `plain`."""
    shown = plain(line if len(line) <= MAX_LOG_LINE_CHARS else line[:MAX_LOG_LINE_CHARS] + " …")
    color = "Attention" if ERROR_LINE.search(line) else "Warning" if WARNING_LINE.search(line) else None
    block = text(f"{'❗ ' if color == 'Attention' else ''}{shown or ' '}", size="Small", color=color, spacing="None")
    block["fontType"] = "Monospace"
    return block


def log_card(tail: str, *, title: str, workspace: str) -> dict:
    """The log's last lines, oldest first and newest last, as many as fit in one Teams card."""
    all_lines = tail.rstrip("\n").split("\n") if tail.strip() else []
    blocks = [log_line(line) for line in all_lines]
    budget = MAX_CARD_BYTES - 1_500          # room for the title, the note and the fallback's share
    size = 0
    kept = 0
    for block in reversed(blocks):          # keep the newest lines
        size += len(json.dumps(block, ensure_ascii=False).encode("utf-8")) + 2
        if size > budget:
            break
        kept += 1
    shown = blocks[len(blocks) - kept:]
    errors = sum(1 for block in shown if block.get("color") == "Attention")
    note = [f"{kept} line{'s' if kept != 1 else ''}, newest last"]
    if kept < len(blocks):
        note = [f"The last {kept} of {len(blocks)} lines (all that fit in one message), newest last"]
    if errors:
        note.append(f"{errors} error line{'s' if errors != 1 else ''} marked ❗")
    body = [text(" · ".join(note) + ".", subtle=True)] + shown if blocks else [text("The log is empty.", subtle=True)]
    return card(title, body, subtitle=workspace)


@command("batch", Arg("endpoint", help="a batch endpoint"), Arg("input", help="the data to score (an azureml:// or https:// URI)"),
         Arg("--deployment", help="a deployment other than the default", metavar="NAME"),
         phrases=("batch score", "score data", "run batch", "batch scoring", "score file", "score", "run on",
                  "score with"),
         summary="Start a batch scoring job on a batch endpoint.", role=Role.OPERATOR,
         example="batch churn-batch azureml://datastores/workspaceblobstore/paths/churn/2026-11/", change=True)
async def batch(ctx: Context, endpoint: str, input: str, deployment: str | None) -> Reply:
    if not input.startswith(("azureml:", "https://", "abfss://", "wasbs://")):
        raise UsageError(f"'{input}' is not a data URI. Use an azureml://, https://, abfss:// or wasbs:// URI.")
    found = await ctx.ml.get_batch_endpoint(endpoint)
    if deployment and deployment not in found.deployments:
        raise UsageError(f"Batch endpoint {endpoint} has no deployment named '{deployment}' "
                         f"(it has: {', '.join(found.deployments) or 'none'}).")
    used = deployment or found.default_deployment or "default"
    return await ctx.gate.submit(ctx, Change(
        action="batch", workspace=ctx.ml.name, environment=ctx.ml.environment, target=f"batch endpoint {endpoint}",
        parameters={"endpoint": endpoint, "input": input, "deployment": deployment},
        before={}, after={"scoring": f"{input} with {used}"},
        summary=f"Batch scoring on {endpoint} ({used}) of {input}"))


async def apply_batch(ctx: Context, change: Change) -> Reply:
    endpoint = change.parameters["endpoint"]
    job = await ctx.ml.invoke_batch_endpoint(endpoint, change.parameters["input"], change.parameters["deployment"],
                                             tags=requested_tags(ctx))
    return await started(ctx, job, f"Batch scoring on {endpoint}")
