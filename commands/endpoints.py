"""Online and batch endpoint commands: endpoints, endpoint, traffic, scale, logs, batch."""

from __future__ import annotations

import asyncio
import re

from adapters.service import BatchEndpoint, EndpointMetrics, OnlineEndpoint, ServiceError
from commands.changes import accepted
from commands.context import Context, Reply, Role
from commands.registry import Arg, UsageError, command, whole_number
from commands.ui import button, card, columns, facts, limited, reply, section, text

STATE_COLORS = {"Succeeded": "Good", "Failed": "Attention", "Updating": "Warning", "Creating": "Warning",
                "Deleting": "Warning"}


def traffic_text(traffic: dict[str, int]) -> str:
    shown = [f"{name}={pct}" for name, pct in sorted(traffic.items(), key=lambda kv: -kv[1]) if pct]
    return " ".join(shown) or "no traffic"


def endpoint_row(endpoint: OnlineEndpoint) -> dict:
    detail = f"{endpoint.provisioning_state} · traffic {traffic_text(endpoint.traffic)} · " \
             f"{len(endpoint.deployments)} deployment{'s' if len(endpoint.deployments) != 1 else ''}"
    return columns([text(f"**{endpoint.name}**"), text(detail, subtle=True, spacing="None")],
                   {"type": "ActionSet", "actions": [button("Details", "endpoint", endpoint.name)]},
                   widths=["stretch", "auto"])


def batch_row(endpoint: BatchEndpoint) -> dict:
    detail = f"{endpoint.provisioning_state} · default deployment {endpoint.default_deployment or '—'}"
    return columns([text(f"**{endpoint.name}** (batch)"), text(detail, subtle=True, spacing="None")])


def endpoints_card(online: list[OnlineEndpoint], batch: list[BatchEndpoint], *, workspace: str) -> dict:
    body = [section("Online endpoints"), *limited(online, endpoint_row, noun="online endpoint"),
            section("Batch endpoints"), *limited(batch, batch_row, noun="batch endpoint")]
    return card("Endpoints", body, subtitle=workspace)


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def health_facts(metrics: EndpointMetrics) -> dict:
    error_rate = metrics.error_rate
    return facts([
        ("Latency p50", _fmt(metrics.latency_p50_ms, " ms")),
        ("Latency p99", _fmt(metrics.latency_p99_ms, " ms")),
        ("Requests", _fmt(metrics.requests_per_minute, " /min", 1)),
        ("5xx errors", "—" if error_rate is None else f"{error_rate:.2%}"),
    ])


def endpoint_card(endpoint: OnlineEndpoint, metrics: EndpointMetrics | None, metrics_error: str, *,
                  workspace: str) -> dict:
    body = [
        text(endpoint.provisioning_state, weight="Bolder", color=STATE_COLORS.get(endpoint.provisioning_state)),
        facts([("Traffic", traffic_text(endpoint.traffic)),
               ("Mirrored", traffic_text(endpoint.mirror_traffic) if endpoint.mirror_traffic else "—"),
               ("Auth", endpoint.auth_mode), ("Scoring URI", endpoint.scoring_uri),
               ("Description", endpoint.description)]),
        section("Deployments"),
    ]
    utilisation = {d.deployment: d for d in (metrics.deployments if metrics else ())}

    def deployment_row(d):
        usage = utilisation.get(d.name)
        cpu = f" · CPU {usage.cpu_utilization:.0f}%" if usage and usage.cpu_utilization is not None else ""
        detail = f"{d.model or 'model ?'} · {d.instance_count} × {d.instance_type or '?'} · {d.provisioning_state}{cpu}"
        return columns([text(f"**{d.name}**"), text(detail, subtle=True, spacing="None")],
                       text(f"**{endpoint.traffic.get(d.name, 0)}%**"), widths=["stretch", "auto"])

    body += limited(list(endpoint.deployments), deployment_row, noun="deployment")
    window = f" (last {metrics.window_minutes} min)" if metrics else ""
    body.append(section(f"Health{window}"))
    body.append(health_facts(metrics) if metrics else text(f"Health figures unavailable: {metrics_error}", subtle=True))
    return card(f"Endpoint {endpoint.name}", body, subtitle=workspace,
                actions=[button("Refresh", "endpoint", endpoint.name)])


@command("endpoints", summary="List online and batch endpoints with their traffic.", example="endpoints")
async def endpoints(ctx: Context) -> Reply:
    online, batch = await asyncio.gather(ctx.ml.list_endpoints(), ctx.ml.list_batch_endpoints())
    return reply(endpoints_card(online, batch, workspace=ctx.where))


@command("endpoint", Arg("name", help="an online endpoint"),
         summary="Show an online endpoint: deployments, traffic split, instances, health.",
         example="endpoint fraud-api")
async def endpoint(ctx: Context, name: str) -> Reply:
    found, (metrics, error) = await asyncio.gather(ctx.ml.get_endpoint(name), _metrics(ctx, name))
    return reply(endpoint_card(found, metrics, error, workspace=ctx.where))


async def _metrics(ctx: Context, name: str) -> tuple[EndpointMetrics | None, str]:
    """Health figures are extra: their absence must not hide the endpoint itself."""
    try:
        return await ctx.ml.endpoint_metrics(name), ""
    except ServiceError as error:
        return None, error.message


def parse_split(words: list[str]) -> dict[str, int]:
    """`blue=90 green=10` -> {"blue": 90, "green": 10}; the workspace checks names and the sum.
    Percentages are ASCII digits only: int() would take '²' or '٣' and choke on 5,000 digits."""
    split: dict[str, int] = {}
    for word in words:
        name, sep, value = word.partition("=")
        percent = value.strip().removesuffix("%")
        if not sep or not name or not re.fullmatch(r"[0-9]{1,3}", percent):
            shown = word if len(word) <= 40 else word[:40] + "…"
            raise UsageError(f"'{shown}' is not deployment=percent. Usage: `traffic <endpoint> "
                             "<deployment=percent> ...`, e.g. `traffic fraud-api blue=90 green=10`.")
        if name in split:
            raise UsageError(f"Deployment '{name}' is given twice.")
        split[name] = int(percent)
    return split


@command("traffic", Arg("endpoint", help="an online endpoint"),
         Arg("split", nargs="+", metavar="deployment=percent", help="the new split; it must add up to 100"),
         summary="Shift traffic between deployments of an online endpoint (blue/green, canary).",
         role=Role.OPERATOR, example="traffic fraud-api blue=90 green=10")
async def traffic(ctx: Context, endpoint: str, split: list[str]) -> Reply:
    new = parse_split(split)
    operation = await ctx.ml.set_traffic(endpoint, new)
    return accepted(ctx, operation, f"Traffic on {endpoint} is moving to {traffic_text(new)}.")


@command("scale", Arg("endpoint", help="an online endpoint"), Arg("deployment", help="one of its deployments"),
         Arg("instances", type=whole_number(1, 100, "instances"), help="how many instances (1 to 100)"),
         summary="Change how many instances serve one deployment.", role=Role.OPERATOR,
         example="scale fraud-api green 3")
async def scale(ctx: Context, endpoint: str, deployment: str, instances: int) -> Reply:
    operation = await ctx.ml.scale_deployment(endpoint, deployment, instances)
    return accepted(ctx, operation, f"{endpoint}/{deployment} is scaling to {instances} instance"
                                    f"{'s' if instances != 1 else ''}.")


@command("logs", Arg("endpoint", help="an online endpoint"), Arg("deployment", help="one of its deployments"),
         Arg("--lines", type=whole_number(1, 500, "lines"), default=30, help="how many lines from the end (default 30)", metavar="N"),
         summary="Show the last lines of a deployment's container log.", example="logs fraud-api green --lines 50")
async def logs(ctx: Context, endpoint: str, deployment: str, lines: int) -> Reply:
    tail = await ctx.ml.deployment_logs(endpoint, deployment, lines)
    shown = tail[-6000:]
    body = [text(f"```\n{shown}\n```" if shown.strip() else "The log is empty.", size="Small")]
    if len(tail) > len(shown):
        body.insert(0, text(f"Showing the last {len(shown)} characters.", subtle=True))
    return reply(card(f"Logs of {endpoint}/{deployment}", body, subtitle=ctx.where))


@command("batch", Arg("endpoint", help="a batch endpoint"), Arg("input", help="the data to score (an azureml:// or https:// URI)"),
         Arg("--deployment", help="a deployment other than the default", metavar="NAME"),
         summary="Start a batch scoring job on a batch endpoint.", role=Role.OPERATOR,
         example="batch churn-batch azureml://datastores/workspaceblobstore/paths/churn/2026-11/")
async def batch(ctx: Context, endpoint: str, input: str, deployment: str | None) -> Reply:
    if not input.startswith(("azureml:", "https://", "abfss://", "wasbs://")):
        raise UsageError(f"'{input}' is not a data URI. Use an azureml://, https://, abfss:// or wasbs:// URI.")
    job = await ctx.ml.invoke_batch_endpoint(endpoint, input, deployment)
    return Reply(f"⏳ Batch job {job.name} started on {endpoint} ({job.status}). Follow it with `job {job.name}`. "
                 f"[{ctx.where}]")
