"""Feature store commands: featurestores, featuresets, featureset.

A feature store is a workspace of its own beside the ML workspace. `--store` picks one; without it
the only store is used, and with several the answer names them.
"""

from __future__ import annotations

from adapters.service import FeatureSet, FeatureStore, Materialization
from commands.base.context import Context, Reply
from commands.base.registry import Arg, UsageError, command, suggest
from commands.base.studio import open_in_studio, studio
from commands.base.ui import button, card, columns, facts, limited, plain, reply, section, text, when

STORE_ARG = Arg("--store", help="which feature store (default: the only one)", metavar="NAME")
NO_STORE_HINT = ("On Azure, feature stores are the workspaces of kind featurestore in the workspace's resource group "
                 "that the bot's identity may read: it needs a role on each store itself.")


def stores_card(stores: list[FeatureStore], *, workspace: str) -> dict:
    def row(store: FeatureStore) -> dict:
        detail = " · ".join(p for p in (store.location, plain(store.description)) if p)
        return columns([text(f"**{store.name}**"), text(detail, subtle=True, spacing="None")],
                       {"type": "ActionSet", "actions": [button("Feature sets", "featuresets", "--store", store.name)]},
                       widths=["stretch", "auto"])

    body = limited(stores, row, noun="feature store")
    if not stores:
        body.append(text(NO_STORE_HINT, subtle=True))
    return card("Feature stores", body, subtitle=workspace)


def feature_sets_card(store: str, sets: list[FeatureSet], *, workspace: str, studio_url: str | None = None) -> dict:
    def row(fs: FeatureSet) -> dict:
        detail = " · ".join(p for p in (f"v{fs.version}", plain(fs.description)) if p)
        return columns([text(f"**{fs.name}**"), text(detail, subtle=True, spacing="None")],
                       {"type": "ActionSet", "actions": [button("Details", "featureset", fs.name, "--store", store)]},
                       widths=["stretch", "auto"])

    return card(f"Feature sets in {store}", limited(sets, row, noun="feature set"), subtitle=workspace,
                actions=open_in_studio(studio_url, "Feature store in studio"))


def _store_switches(offline: bool, online: bool) -> str:
    return " and ".join(s for s, on in (("offline", offline), ("online", online)) if on) or "not materialized"


def _materialization_text(job: Materialization | None) -> str:
    if job is None:
        return "none yet"
    window = f"{when(job.window_start)} → {when(job.window_end)}" if job.window_start else ""
    return " · ".join(p for p in (job.status, job.type, window, f"job {job.job}") if p)


def feature_set_card(fs: FeatureSet, *, workspace: str, studio_url: str | None = None) -> dict:
    others = [v for v in fs.versions if v != fs.version]
    body = [
        facts([("Store", fs.store), ("Version", fs.version + (f" (also: {', '.join(others)})" if others else "")),
               ("Stage", fs.stage), ("Description", plain(fs.description))]),
        section("Entities and join keys"),
    ]
    body += limited(list(fs.entities), lambda e: text(
        f"**{plain(e.name)}**:{e.version} · join on " + (", ".join(plain(f"{k} ({t})") for k, t in e.join_keys)
                                                         or "—")),
        noun="entity", more_hint="")
    body.append(section(f"Features ({len(fs.features)})"))
    body += limited(list(fs.features), lambda f: columns(text(plain(f.name)), text(plain(f.type), subtle=True),
                                                         widths=["stretch", "auto"]), noun="feature")
    last = fs.last_materialization
    body += [section("Materialization"), facts([
        ("Stores", _store_switches(fs.offline_enabled, fs.online_enabled)),
        ("Schedule", fs.schedule or "none (backfill only)"),
        ("Last job", _materialization_text(last)),
    ])]
    if last is not None and last.status == "Failed":
        body.append(text(f"The last materialization failed: features served from {fs.name}:{fs.version} may be "
                         f"stale.", color="Attention"))
    actions = [button("Refresh", "featureset", fs.ref, "--store", fs.store)]
    return card(f"Feature set {fs.ref}", body, subtitle=workspace,
                actions=actions + open_in_studio(studio_url, "Open in Azure ML studio"))


async def _store(ctx: Context, store: str | None) -> str:
    """The store to use: the one named (checked), or the only one there is."""
    stores = [s.name for s in await ctx.ml.list_feature_stores()]
    if store:
        if store not in stores:
            close = suggest(store, stores)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"No feature store named '{store}'.{hint} Feature stores: {', '.join(stores) or 'none'}.")
        return store
    if not stores:
        raise UsageError(f"I see no feature store beside this workspace. {NO_STORE_HINT}")
    if len(stores) > 1:
        raise UsageError(f"There are {len(stores)} feature stores; name one with `--store`: {', '.join(stores)}.")
    return stores[0]


@command("featurestores",
         phrases=("feature stores", "which feature stores", "list feature stores", "featurestores"),
         summary="List the feature stores beside the workspace.", example="featurestores")
async def featurestores(ctx: Context) -> Reply:
    return reply(stores_card(await ctx.ml.list_feature_stores(), workspace=ctx.where))


@command("featuresets", STORE_ARG,
         phrases=("feature sets", "list feature sets", "what features", "which features", "features",
                  "materializing", "materialization", "materialized", "featuresets", "feature store materializing",
                  "what feature sets"),
         summary="List the feature sets of a feature store.",
         example="featuresets --store contoso-features")
async def featuresets(ctx: Context, store: str | None) -> Reply:
    name = await _store(ctx, store)
    site = studio(ctx)
    return reply(feature_sets_card(name, await ctx.ml.list_feature_sets(name), workspace=ctx.where,
                                   studio_url=site.feature_store(name) if site else None))


@command("featureset", Arg("ref", help="a feature set, or name:version (latest when no version)",
                           metavar="name[:version]"), STORE_ARG,
         phrases=("show feature set", "feature set details", "features of", "feature set",
                  "what is in feature set", "materialization of", "last materialization"),
         summary="Show a feature set: entities and join keys, features with types, materialization and its last job.",
         example="featureset transactions")
async def featureset(ctx: Context, ref: str, store: str | None) -> Reply:
    name, _, version = ref.partition(":")
    if not name or (ref.endswith(":") and not version):
        raise UsageError(f"'{ref}' is not a feature set reference. Usage: `featureset name[:version]`, "
                         f"e.g. `featureset transactions:2`.")
    where = await _store(ctx, store)
    found = await ctx.ml.get_feature_set(where, name, version or None)
    site = studio(ctx)
    return reply(feature_set_card(found, workspace=ctx.where,
                                  studio_url=site.feature_set(where, found.name, found.version) if site else None))
