"""Model registry commands: models, model."""

from __future__ import annotations

import asyncio

from adapters.service import STAGES, ModelVersion
from commands.base.context import Context, Reply
from commands.base.registry import Arg, UsageError, command, one_of
from commands.base.studio import open_in_studio, studio
from commands.base.ui import button, card, columns, facts, limited, plain, reply, section, text, when


STAGE_COLORS = {"Production": "Good", "Staging": "Warning", "Archived": "Default"}


def headline_metrics(model: ModelVersion, n: int = 3) -> str:
    """A version's first `n` metrics in one line: `auc 0.953, precision 0.88, recall 0.79`."""
    return ", ".join(f"{k} {v:.3g}" for k, v in list(model.metrics.items())[:n])


def stage_label(stage: str) -> str:
    return "no stage" if stage == "None" else stage


# Azure's archive flag (`is_archived`), not the Archived *stage*: the two read alike, so the flag is
# always called this, wherever it shows.
HIDDEN = "hidden from lists (archived)"


def model_row(model: ModelVersion, *, by_version: bool, in_production: str = "") -> dict:
    """One row: a version (`by_version`) or a model's latest version, with what serves in Production."""
    title = f"**v{model.version}**" if by_version else f"**{model.name}** v{model.version}"
    serving = ""
    if not by_version and model.stage != "Production":
        serving = f"Production: v{in_production}" if in_production else "nothing in Production"
    detail = " · ".join(p for p in (stage_label(model.stage), HIDDEN if model.archived else "", serving,
                                    headline_metrics(model), when(model.created_at)) if p)
    target = model.ref if by_version else model.name
    action = button("Details" if by_version else "Versions", "model" if by_version else "models", target)
    return columns([text(title), text(detail, subtle=True, spacing="None")],
                   {"type": "ActionSet", "actions": [action]}, widths=["stretch", "auto"])


def models_card(models: list[ModelVersion], *, name: str | None, stage: str | None, workspace: str,
                production: dict[str, str] | None = None) -> dict:
    """`production` maps a model name to its version in Production (for the overview)."""
    scope = f" in {stage}" if stage else ""
    title = f"Versions of {name}{scope}" if name else f"Registered models{scope}"
    serving = production or {}
    body = limited(models, lambda m: model_row(m, by_version=bool(name), in_production=serving.get(m.name, "")),
                   noun="version" if name else "model", more_hint="Narrow it with `--stage`.")
    return card(title, body, subtitle=workspace)


def model_card(model: ModelVersion, *, workspace: str, studio_url: str | None = None) -> dict:
    body = [
        text(stage_label(model.stage), weight="Bolder", color=STAGE_COLORS.get(model.stage)),
        facts([("Version", model.version), ("Created", when(model.created_at)), ("By", plain(model.created_by)),
               ("Training job", model.job), ("Description", plain(model.description))]),
    ]
    if model.archived:
        body.insert(1, text(f"{HIDDEN[:1].upper()}{HIDDEN[1:]}: still usable by deployments.", subtle=True))
    if model.path:      # a long URI: its own wrapping line, not a fact value Teams cuts off
        body += [section("Path"), text(plain(model.path), size="Small", spacing="None")]
    if model.metrics:
        body += [section("Metrics"), facts(sorted(model.metrics.items()))]
    if model.tags:
        body += [section("Tags"), facts(sorted((plain(k), plain(v)) for k, v in model.tags.items()))]
    return card(f"Model {model.ref}", body, subtitle=workspace,
                actions=[button("All versions", "models", model.name)]
                + ([button("Training job", "job", model.job)] if model.job else []) + open_in_studio(studio_url))


@command("models", Arg("name", nargs="?", help="a model name, to list its versions"),
         Arg("--stage", type=one_of(STAGES, "stage"), help="only versions in this stage", metavar="STAGE"),
         phrases=("list models", "what models", "which models", "registered models", "model registry",
                  "all models", "show models", "versions of", "model versions", "what versions", "which versions",
                  "models in production", "models in staging"),
         summary="List registered models, or the versions of one model.",
         example="models fraud-model --stage Production", common=True)
async def models(ctx: Context, name: str | None, stage: str | None) -> Reply:
    if name:
        found, production = await ctx.ml.list_models(name, stage), {}
    elif stage == "Production":
        found = await ctx.ml.list_models(stage=stage)
        production = {m.name: m.version for m in found}
    else:   # the overview (also of another stage) says which version serves in Production
        found, serving = await asyncio.gather(ctx.ml.list_models(stage=stage), ctx.ml.list_models(stage="Production"))
        production = {m.name: m.version for m in serving}
    return reply(models_card(found, name=name, stage=stage, workspace=ctx.where, production=production))


@command("model", Arg("ref", help="name or name:version (latest when no version)", metavar="name[:version]"),
         phrases=("show model", "model details", "model metrics", "how good is model", "tell me about model",
                  "which version is in production", "what is the champion", "what is the candidate",
                  "how is model doing", "auc of", "metrics of", "how is {model} doing", "show {model}",
                  "tell me about {model}", "refresh {model}"),
         summary="Show one model version: stage, metrics, tags.", example="model fraud-model:3")
async def model(ctx: Context, ref: str) -> Reply:
    name, _, version = ref.partition(":")
    if not name or (ref.endswith(":") and not version):
        raise UsageError(f"'{ref}' is not a model reference. Usage: `model name[:version]`, e.g. `model fraud-model:3`.")
    found = await ctx.ml.get_model(name, version or None)
    site = studio(ctx)
    url = site.model(found.name, found.version) if site else None
    return reply(model_card(found, workspace=ctx.where, studio_url=url))

