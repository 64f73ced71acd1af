"""Events from Azure, parsed into our own small types: Event Grid (its own schema and CloudEvents
1.0, single or batched) and Azure Monitor's common alert schema.

Pure functions over decoded JSON; no aiohttp, no botbuilder, so the host (bot/ingress.py) and any
other caller (a test, a monitor) share them.

    parsed = parse_event_grid(body)          # EventGridBatch: .validation_code or .events / .ignored
    event = parse_common_alert(body)         # Event (kind "alerts")

A delivery that is not Event Grid's shape at all (not an object or an array of objects, empty, too
large) raises `Malformed` with a reason fit for the HTTP answer (the caller answers 422). Inside a
delivery, each event stands alone: one the bot cannot use (a required field missing or of the
wrong type) is *skipped*, named with its reason in `EventGridBatch.skipped`, and never blocks the
others (Event Grid would otherwise retry the whole delivery for 24 hours, then drop it). Event
types we do not handle, and CloudEvents whose `specversion` attribute is misspelt (`specVersion`),
are counted in `ignored` (the latter with a note). The alert context of Azure Monitor varies by
alert type, so whatever of it has an unexpected type is read as absent.

Event Grid `data` keys are read case-insensitively: the documentation shows PascalCase
(`ModelName`, `ServiceName`, `RunTags`) while live workspaces send camelCase (`modelName`,
`serviceName`, `runTags`; `RunTags` on RunCompleted), as captured in the Azure SDKs' tests
(tests/fixtures/azure/SOURCES.md).

Handled Event Grid types (Microsoft.MachineLearningServices.*):

    RunStatusChanged   with the run tag `azureml_modelmonitor_threshold_breached`: one drift alert
                       per breached signal (kind "drift"); without it, a job status (kind "jobs")
    RunCompleted       kind "jobs" (or "drift" when the breach tag is there)
    ModelRegistered    kind "models"
    ModelDeployed      kind "models", with the endpoint (the service name)

The local workspace's monitors have no Event Grid: `local_breach_events` makes the same drift
alert of one of their breaching runs (the bot's scheduler reads them, bot/scheduler.py).

How an Azure ML monitor's per-feature figures reach us: the breach tag's value is the text Azure's
evaluation component writes (adapters.azureml.monitoring.parse_breach_tag: `The signal '<name>' has
failed ...` then JSON rows with `group`, `metric_value`, `metric_name`, `threshold_value`); the
signal and its figures come from it, and each signal gets its own alert key. Text in any other
form degrades to the outcome alone (no figures), never to an error.

Azure Monitor alerts are keyed by rule, target resource and the dimension values of their
condition (a rule split by deployment fires and resolves per deployment). Budget alerts (cost
alerts with no alert rule) are acknowledged and ignored (`Ignored`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from adapters import jsonsafe
from adapters.azureml.monitoring import BREACH_TAG, parse_breach_tag

ML = "Microsoft.MachineLearningServices."
VALIDATION_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
KINDS = ("drift", "alerts", "jobs", "models", "approvals", "posture")
FIRED, RESOLVED, INFO = "fired", "resolved", "info"
SEVERITIES = ("Sev0", "Sev1", "Sev2", "Sev3", "Sev4")
MAX_EVENTS = 500
MAX_DEPTH = 32
MAX_FIGURES = 50

_ARM = re.compile(r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
                  r"microsoft\.machinelearningservices/workspaces/(?P<ws>[^/]+)"
                  r"(?:/onlineendpoints/(?P<endpoint>[^/]+)(?:/deployments/(?P<deployment>[^/]+))?)?", re.I)


class Malformed(ValueError):
    """The payload is JSON but not the shape it should be; the message says what is wrong."""


@dataclass(frozen=True)
class Figure:
    """One per-feature figure of a drift signal: `metric` is Azure ML's name for it."""

    feature: str
    metric: str
    value: float
    threshold: float | None = None
    operator: str = ""             # an Azure Monitor condition's own direction (`<`, `≥` ...); "" = the metric's rule
    previous: float | None = None      # the same figure at the monitor's previous run, when known


@dataclass(frozen=True)
class Event:
    """One thing that happened, as the bot tells people about it.

    `id` is the sender's event id (deduplication); `key` names the alert across its firings
    (the same key fires again, updates, resolves); `status` is fired, resolved or info.
    """

    id: str
    kind: str                      # drift | alerts | jobs | models | approvals | posture
    type: str                      # the sender's event type
    key: str
    status: str
    title: str
    source: str = ""               # eventgrid | azure-monitor | local
    severity: str = ""             # Sev0 (critical) .. Sev4, "" when the sender has none
    workspace: str = ""
    subscription_id: str = ""
    resource_group: str = ""
    model: str = ""
    endpoint: str = ""
    deployment: str = ""
    monitor: str = ""
    signal: str = ""
    summary: str = ""
    time: str = ""
    figures: tuple[Figure, ...] = ()
    links: tuple[tuple[str, str], ...] = ()        # (title, https url)
    facts: tuple[tuple[str, str], ...] = ()        # (name, value) shown as they are

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["links"] = [list(link) for link in self.links]
        data["facts"] = [list(fact) for fact in self.facts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Event":
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}   # tolerate older rows
        values["figures"] = tuple(Figure(f["feature"], f["metric"], f["value"], f.get("threshold"),
                                         operator=f.get("operator") or "", previous=f.get("previous"))
                                  for f in data.get("figures", ()))
        values["links"] = tuple(tuple(link) for link in data.get("links", ()))
        values["facts"] = tuple(tuple(fact) for fact in data.get("facts", ()))
        return cls(**values)


@dataclass(frozen=True)
class EventGridBatch:
    validation_code: str = ""                     # answer {"validationResponse": code}
    events: tuple[Event, ...] = ()
    ignored: tuple[str, ...] = ()                 # ids of events of types we do not handle
    schema: str = "eventgrid"                     # eventgrid | cloudevents (of the first event)
    skipped: tuple[tuple[str, str], ...] = ()     # (id, reason): events of ours the bot cannot use
    notes: tuple[tuple[str, str], ...] = ()       # (id, reason) of ignored events worth a log line


@dataclass(frozen=True)
class Ignored:
    """A webhook payload acknowledged but not for the bot (e.g. a budget alert), and why."""

    id: str
    reason: str


# ---------------------------------------------------------------- JSON safety

def loads(raw: bytes) -> Any:
    """Decode a webhook body: UTF-8 JSON, at most MAX_DEPTH levels deep, finite numbers only.
    ValueError otherwise. Linear in the size of the body (adapters/jsonsafe.py says why)."""
    return jsonsafe.loads(raw, MAX_DEPTH)


# ---------------------------------------------------------------- Event Grid

def parse_event_grid(body: Any) -> EventGridBatch:
    """An Event Grid delivery: an array of events (or one event), Event Grid schema or CloudEvents.

    Each event stands alone: one the bot cannot use is skipped with its reason, never refusing
    the delivery (module doc)."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise Malformed("the batch holds no events")
    if len(items) > MAX_EVENTS:
        raise Malformed(f"a batch holds at most {MAX_EVENTS} events, not {len(items)}")
    if not any(isinstance(item, dict) for item in items):
        raise Malformed("each event must be a JSON object")
    if not any(isinstance(item, dict) and {str(k).lower() for k in item} & {"eventtype", "type", "specversion"}
               for item in items):
        raise Malformed("not an Event Grid delivery: no event has 'eventType' (Event Grid schema) or "
                        "'specversion' and 'type' (CloudEvents 1.0)")
    schema = ""
    events: list[Event] = []
    ignored: list[str] = []
    skipped: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        name = _event_name(item, index)
        if not isinstance(item, dict):
            skipped.append((name, f"event {index}: each event must be a JSON object"))
            continue
        misspelt = next((k for k in item if isinstance(k, str) and k.lower() == "specversion"
                         and k != "specversion"), None)
        if misspelt and "specversion" not in item:
            ignored.append(name)
            notes.append((name, f"event {index}: CloudEvents attribute '{misspelt}' is misspelt "
                                f"(CloudEvents 1.0 names it 'specversion'); ignored"))
            continue
        cloud = "specversion" in item
        schema = schema or ("cloudevents" if cloud else "eventgrid")
        try:
            envelope = _cloud_envelope(item, index) if cloud else _grid_envelope(item, index)
            if envelope["type"] == VALIDATION_TYPE:
                data = _keys(envelope["data"])
                code = data.get("validationcode")
                if not isinstance(code, str) or not code:
                    raise Malformed(f"event {index}: a SubscriptionValidationEvent needs data.validationCode")
                return EventGridBatch(validation_code=code, schema=schema)
            found = _ml_events(envelope, index)
        except Malformed as error:
            skipped.append((name, str(error)))
            continue
        if found is None:
            ignored.append(envelope["id"])
        else:
            events += found
    return EventGridBatch(events=tuple(events), ignored=tuple(ignored), schema=schema or "eventgrid",
                          skipped=tuple(skipped), notes=tuple(notes))


def _event_name(item: Any, index: int) -> str:
    """The event's id for logs and answers, or `#<index>` when it has none worth showing."""
    value = item.get("id") if isinstance(item, dict) else None
    return _text(value)[:200] if isinstance(value, str) and value.strip() else f"#{index}"


def _keys(data: Any) -> dict[str, Any]:
    """An object's keys in lower case, for reading Azure's `data` whatever its casing (module doc);
    of two spellings of one key (`RunTags`, `runTags`) the one with a value wins."""
    if not isinstance(data, dict):
        return {}
    folded: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and (folded.get(key.lower()) in (None, "", {}, [])):
            folded[key.lower()] = value
    return folded


def _grid_envelope(item: dict[str, Any], index: int) -> dict[str, Any]:
    for name in ("id", "eventType", "subject", "eventTime"):
        if not isinstance(item.get(name), str) or (name != "subject" and not item[name]):
            raise Malformed(f"event {index}: '{name}' must be a string (Event Grid schema)")
    return {"id": item["id"], "type": item["eventType"], "subject": item["subject"], "time": item["eventTime"],
            "topic": item.get("topic") if isinstance(item.get("topic"), str) else "", "data": item.get("data")}


def _cloud_envelope(item: dict[str, Any], index: int) -> dict[str, Any]:
    if item.get("specversion") != "1.0":
        raise Malformed(f"event {index}: only CloudEvents specversion 1.0 is understood")
    for name in ("id", "type", "source"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise Malformed(f"event {index}: '{name}' must be a non-empty string (CloudEvents 1.0)")
    data = item.get("data")
    if data is None and isinstance(item.get("data_base64"), str):
        raise Malformed(f"event {index}: binary data (data_base64) is not understood; send JSON data")
    return {"id": item["id"], "type": item["type"], "subject": _text(item.get("subject")),
            "time": _text(item.get("time")), "topic": item["source"], "data": data}


def _ml_events(envelope: dict[str, Any], index: int) -> list[Event] | None:
    kind = envelope["type"][len(ML):] if envelope["type"].startswith(ML) else ""
    if kind not in ("RunStatusChanged", "RunCompleted", "ModelRegistered", "ModelDeployed"):
        return None
    if not isinstance(envelope["data"], dict):
        raise Malformed(f"event {index}: 'data' must be an object for {envelope['type']}")
    data = _keys(envelope["data"])
    where = _arm(envelope["topic"])
    base = dict(id=envelope["id"], type=envelope["type"], source="eventgrid", time=envelope["time"],
                workspace=where.get("ws", ""), subscription_id=where.get("sub", ""),
                resource_group=where.get("rg", ""))
    if kind in ("RunStatusChanged", "RunCompleted"):
        return _run_events(kind, data, base, index)
    if kind == "ModelRegistered":
        name, version = _text(data.get("modelname")), _text(data.get("modelversion"))
        if not name:
            raise Malformed(f"event {index}: ModelRegistered needs data.modelName")
        return [Event(kind="models", key=f"model:{base['workspace']}:{name}:{version}", status=INFO,
                      title=f"Model {name}:{version} registered", model=name,
                      summary=_tags_text(data.get("modeltags")), facts=(("Version", version),), **base)]
    service = _text(data.get("servicename"))
    if not service:
        raise Malformed(f"event {index}: ModelDeployed needs data.serviceName")
    models = [m.strip() for m in _text(data.get("modelids")).split(",") if m.strip()]
    model = models[0].split(":")[0] if models else ""
    return [Event(kind="models", key=f"deployed:{base['workspace']}:{service}:{envelope['id']}", status=INFO,
                  title=f"Deployed to {service}", model=model, endpoint=service,
                  summary=f"Models: {', '.join(models) or 'not named'}",
                  facts=(("Compute", _text(data.get("servicecomputetype")) or "unknown"),), **base)]


def _run_events(kind: str, data: dict[str, Any], base: dict[str, Any], index: int) -> list[Event]:
    run_id = _text(data.get("runid"))
    if not run_id:
        raise Malformed(f"event {index}: {kind} needs data.runId")
    tags = data.get("runtags") if isinstance(data.get("runtags"), dict) else {}
    properties = data.get("runproperties") if isinstance(data.get("runproperties"), dict) else {}
    status = _text(data.get("runstatus")) or ("Completed" if kind == "RunCompleted" else "")
    experiment = _text(data.get("experimentname"))
    if BREACH_TAG in tags:
        monitor = (_text(tags.get("azureml.monitor_name")) or _text(properties.get("azureml.monitor_name"))
                   or _text(tags.get("azureml.ScheduleName")) or _text(properties.get("azureml.ScheduleName"))
                   or experiment or run_id)
        named = _text(tags.get("azureml.signal_name")) or _text(properties.get("azureml.signal_name"))
        breached = parse_breach_tag(tags.get(BREACH_TAG)) or ()
        signals = [(b.signal, tuple(Figure(r.feature, r.metric, r.value, r.threshold)
                                    for r in b.rows[:MAX_FIGURES])) for b in breached] or [(named, ())]
        events = []
        for signal, figures in signals:
            one = dict(base, id=base["id"] if len(signals) == 1 else f"{base['id']}:{signal}")
            events.append(Event(
                kind="drift", key=f"drift:{base['workspace']}:{monitor}:{signal}", status=FIRED,
                title=f"Drift: monitor {monitor} breached its thresholds", monitor=monitor, signal=signal,
                model=_text(tags.get("azureml.model_name")) or _text(properties.get("model_name")),
                endpoint=_text(tags.get("azureml.endpoint_name")),
                deployment=_text(tags.get("azureml.deployment_name")),
                summary=(f"Run {run_id} of {experiment or 'the monitor'} ({status or 'finished'})"
                         + ("" if figures else "; per-feature figures not readable from the event")),
                figures=figures, links=_run_links(base, run_id), facts=(("Run", run_id),), **one))
        return events
    failed = status.lower() in ("failed", "canceled", "cancelled")
    return [Event(kind="jobs", key=f"run:{base['workspace']}:{run_id}:{status.lower()}",
                  status=FIRED if failed else INFO, severity="Sev2" if failed else "",
                  title=f"Run {run_id} {status.lower() or 'changed'}",
                  summary=f"Experiment {experiment}" if experiment else "",
                  model=_text(properties.get("model_name")), links=_run_links(base, run_id),
                  facts=(("Status", status or "unknown"), ("Run", run_id)), **base)]


def _run_links(base: dict[str, Any], run_id: str) -> tuple[tuple[str, str], ...]:
    if not (base["subscription_id"] and base["resource_group"] and base["workspace"]):
        return ()
    if any(c in "{}" for part in (base["subscription_id"], base["resource_group"], base["workspace"]) for c in part):
        return ()           # the docs' placeholders: no link rather than a broken one
    return (("Open the run in the studio", studio_url(f"runs/{_quote(run_id)}", base)),
            ("Model monitoring in the studio", studio_url("monitoring", base)))


def studio_url(page: str, base: dict[str, Any]) -> str:
    """An Azure ML studio page of the workspace (`wsid` as the studio writes it)."""
    wsid = (f"/subscriptions/{base['subscription_id']}/resourcegroups/{base['resource_group']}"
            f"/workspaces/{base['workspace']}")
    return f"https://ml.azure.com/{page}?wsid={_quote(wsid, safe='/')}"


# ---------------------------------------------------------------- the local workspace's monitors

def local_breach_events(workspace: str, monitor: Any, run: Any, signals: Any) -> list[Event]:
    """The drift alerts of one breaching run of a local monitor (adapters.local.monitors): one per
    breached signal, with the same key as Azure ML's breach event of that monitor and signal (so
    both fire, update and are acknowledged alike), and the run's per-feature figures, each with its
    value at the monitor's previous run when the figures carry that history.

    `monitor`, `run` and `signals` are adapters.service's Monitor, MonitorRun and SignalReports."""
    endpoint, _, deployment = monitor.endpoint.partition("/")
    moment = run.started_at.strftime("%Y-%m-%dT%H:%M:%SZ") if run.started_at else ""
    events = []
    for signal in signals:
        figures = tuple(Figure(f.feature, f.metric, f.value, f.threshold,
                               previous=f.history[-2] if len(f.history) >= 2 else None) for f in signal.figures
                        if f.value is not None)[:MAX_FIGURES]
        events.append(Event(
            id=f"{run.name}:{signal.name}", kind="drift", type="local.MonitorRunCompleted",
            key=f"drift:{workspace}:{monitor.name}:{signal.name}", status=FIRED,
            title=f"Drift: monitor {monitor.name} breached its thresholds", source="local", workspace=workspace,
            model=monitor.model_name, endpoint=endpoint, deployment=deployment, monitor=monitor.name,
            signal=signal.name, time=moment,
            summary=f"Computed by the local workspace with the bot's drift engine. {run.message}".strip(),
            figures=figures, facts=(("Run", run.name),)))
    return events


# ---------------------------------------------------------------- Azure Monitor

def parse_common_alert(body: Any) -> Event | Ignored:
    """An Azure Monitor action-group webhook in the common alert schema (metric or log alert).

    A budget alert (Cost Management: `monitoringService` CostAlerts, no alert rule, no condition;
    or the older "AIP Budget Notification" schema) is not the bot's to show: `Ignored`."""
    if isinstance(body, dict) and body.get("schemaId") == "AIP Budget Notification":
        budget = body.get("data", {}).get("BudgetName") if isinstance(body.get("data"), dict) else None
        return Ignored(f"budget:{_text(budget) or 'unnamed'}", "a Cost Management budget notification, not an alert")
    if not isinstance(body, dict) or body.get("schemaId") != "azureMonitorCommonAlertSchema":
        raise Malformed("expected Azure Monitor's common alert schema (schemaId azureMonitorCommonAlertSchema)")
    data = body.get("data")
    essentials = data.get("essentials") if isinstance(data, dict) else None
    if not isinstance(essentials, dict):
        raise Malformed("data.essentials is missing")
    if essentials.get("alertRule") is None and (essentials.get("monitoringService") == "CostAlerts"
                                                or essentials.get("monitorCondition") is None):
        return Ignored(_text(essentials.get("alertId")) or "unnamed",
                       f"a {_text(essentials.get('monitoringService')) or 'rule-less'} alert without an alert rule "
                       "(a budget alert), not an alert the bot follows")
    for name in ("alertId", "alertRule", "monitorCondition", "signalType"):
        if not isinstance(essentials.get(name), str) or not essentials[name]:
            raise Malformed(f"data.essentials.{name} must be a non-empty string")
    condition = essentials["monitorCondition"]
    if condition not in ("Fired", "Resolved"):
        raise Malformed(f"data.essentials.monitorCondition must be Fired or Resolved, not {condition!r}")
    severity = _text(essentials.get("severity"))
    if severity and severity not in SEVERITIES:
        raise Malformed(f"data.essentials.severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    targets = [t for t in _listed(essentials, "alertTargetIDs") if isinstance(t, str)]
    where = next((found for found in (_arm(t) for t in targets) if found), {})
    context = data.get("alertContext") if isinstance(data.get("alertContext"), dict) else {}
    facts, summary, figures = _alert_condition(context)
    dimensions = _dimensions(context)
    rule = essentials["alertRule"]
    moment = _text(essentials.get("resolvedDateTime" if condition == "Resolved" else "firedDateTime"))
    target = targets[0].lower() if targets else ""
    items = ", ".join(_text(c) for c in _listed(essentials, "configurationItems") if _text(c))
    links = []
    alert_id = essentials["alertId"]
    if alert_id.startswith("/subscriptions/"):
        links.append(("Open the alert in the Azure portal",
                      f"https://portal.azure.com/#view/Microsoft_Azure_Monitoring_Alerts/AlertDetails.ReactView/"
                      f"alertId~/{_quote(alert_id)}"))
    candidates = [c for c in _items(context["condition"].get("allOf")) if isinstance(c, dict)] \
        if isinstance(context.get("condition"), dict) else []
    for holder, key in [*((c, "linkToFilteredSearchResultsUI") for c in candidates),
                        (context, "LinkToFilteredSearchResultsUI"), (context, "LinkToSearchResultsUI")]:
        if _https(holder.get(key)):
            links.append(("Open the query results", holder[key]))
            break
    return Event(id=f"{alert_id}:{condition}:{moment}", kind="alerts", type=f"AzureMonitor.{essentials['signalType']}",
                 key=f"azmon:{rule.lower()}:{target}" + "".join(f":{name}={value}" for name, value in dimensions),
                 status=RESOLVED if condition == "Resolved" else FIRED,
                 title=f"{rule}" + (f" on {items}" if items else ""), source="azure-monitor", severity=severity,
                 workspace=where.get("ws", ""), subscription_id=where.get("sub", ""),
                 resource_group=where.get("rg", ""), endpoint=where.get("endpoint") or "",
                 deployment=where.get("deployment") or dict(dimensions).get("deployment", ""),
                 summary=_text(essentials.get("description")) or summary, time=moment,
                 figures=figures, links=tuple(links),
                 facts=(("Signal", essentials["signalType"]), *facts))


def _dimensions(context: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The dimension values the alert fired for (`alertContext.condition.allOf[].dimensions`), as
    sorted (name, value) pairs in lower case: one alert per deployment of a rule split by deployment."""
    condition = context.get("condition") if isinstance(context.get("condition"), dict) else {}
    pairs = {(_text(d.get("name")).lower(), _text(d.get("value")).lower())
             for c in _items(condition.get("allOf")) if isinstance(c, dict)
             for d in _items(c.get("dimensions")) if isinstance(d, dict) and _text(d.get("name"))}
    return tuple(sorted(pairs))[:20]


def _alert_condition(context: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], str, tuple[Figure, ...]]:
    condition = context.get("condition") if isinstance(context.get("condition"), dict) else {}
    criteria = [c for c in _items(condition.get("allOf")) if isinstance(c, dict)]
    facts, lines, figures = [], [], []
    for criterion in criteria[:10]:
        name = _text(criterion.get("metricName")) or _text(criterion.get("searchQuery"))[:120] or "condition"
        operator = _OPERATORS.get(_text(criterion.get("operator")), _text(criterion.get("operator")))
        threshold, value = _text(criterion.get("threshold")), criterion.get("metricValue")
        aggregation = _text(criterion.get("timeAggregation"))
        number, limit = _number(value), _number(threshold)
        shown = f"{number:g}" if number is not None and isinstance(value, (int, float)) else _text(value)
        label = f"{aggregation} {name}".strip()
        facts.append((label, f"{shown or '?'} ({operator} {threshold} breaches)".strip()))
        lines.append(f"{label} {shown} {operator} {threshold}")
        dimensions = ", ".join(f"{_text(d.get('name'))}={_text(d.get('value'))}"
                               for d in _items(criterion.get("dimensions")) if isinstance(d, dict))
        if dimensions:
            facts.append(("Dimensions", dimensions[:200]))
        if number is not None:
            figures.append(Figure(name, name, number, limit, operator if operator in _OPERATORS.values() else ""))
    if not criteria and "SearchQuery" in context:       # log alerts V1 (Log Analytics, Application Insights)
        count, threshold = _number(context.get("ResultCount")), _number(context.get("Threshold"))
        operator = _OPERATORS.get(_text(context.get("Operator")), _text(context.get("Operator")))
        facts.append(("Query", _text(context.get("SearchQuery"))[:300]))
        facts.append(("Results", f"{_text(context.get('ResultCount')) or '?'} ({operator} "
                                 f"{_text(context.get('Threshold'))} breaches)"))
        lines.append(f"{_text(context.get('ResultCount'))} results")
        if count is not None:
            figures.append(Figure("results", "result count", count, threshold,
                                  operator if operator in _OPERATORS.values() else ""))
    window = _text(condition.get("windowSize"))
    if window:
        facts.append(("Window", window))
    return tuple(facts), "; ".join(lines), tuple(figures)


_OPERATORS = {"GreaterThan": ">", "GreaterThanOrEqual": "≥", "LessThan": "<", "LessThanOrEqual": "≤",
              "Equal": "=", "NotEqual": "≠", "GreaterOrLessThan": "≷"}


# ---------------------------------------------------------------- helpers

def _arm(resource_id: str) -> dict[str, str]:
    found = _ARM.search(resource_id or "")
    return {k: v for k, v in found.groupdict().items() if v} if found else {}


def _listed(essentials: dict[str, Any], name: str) -> list[Any]:
    """An essentials field the schema gives as an array: [] when absent or null, Malformed naming
    it when it is anything but a list (a string would otherwise be read letter by letter)."""
    value = essentials.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"data.essentials.{name} must be a list of strings, not {_json_type(value)}")
    return value


def _items(value: Any) -> list[Any]:
    """An alert-context array, or [] when it is not one: the context varies by alert type and is
    read as far as it goes (as a context or condition that is not an object is), never refused."""
    return value if isinstance(value, list) else []


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", dict: "an object"}.get(type(value), type(value).__name__)


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value).strip()[:500]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):      # OverflowError: an integer of 309+ digits
        return None
    return number if math.isfinite(number) else None


def _tags_text(tags: Any) -> str:
    if not isinstance(tags, dict) or not tags:
        return ""
    return "Tags: " + ", ".join(f"{_text(k)}={_text(v)}" for k, v in list(tags.items())[:10])


def _https(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("https://") and len(value) < 2000


def _quote(text: str, safe: str = "") -> str:
    from urllib.parse import quote
    return quote(text, safe=safe)


def with_status(event: Event, status: str) -> Event:
    return replace(event, status=status)
