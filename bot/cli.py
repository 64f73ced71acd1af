"""`mlops-bot`: serve the bot, chat with it in the terminal, or build the Teams app package.

    mlops-bot serve [--host H] [--port P] [--data-dir D] [--reset-demo] [--demo-size N]
    mlops-bot chat  [--data-dir D] [--as NAME] [--reset-demo] [--demo-size N]
    mlops-bot manifest --app-id GUID [--out app.zip] [--version 1.0.0]
    mlops-bot drift --reference REF.csv --current CUR.csv [--categorical COL,...] [--features COL,...] [--json]
                    [--labels COL --predictions COL [--scores COL] [--positive-label L] [--task T]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
from pathlib import Path
from typing import Sequence

from bot.logsafe import configure_logging


DEMO_SIZE_HELP = ("seed the local demo with N online endpoints and N + 1 models (3 to 10000; with --reset-demo "
                  "or a new data dir; MLOPSBOT_DEMO_SIZE)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-bot", description="Run Azure Machine Learning from Microsoft Teams.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot's web server (POST /api/messages)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; MLOPSBOT_HOST)")
    serve.add_argument("--port", type=int, help="port (default 3978; MLOPSBOT_PORT)")
    serve.add_argument("--data-dir", type=Path, help="where SQLite files live (default ./data; MLOPSBOT_DATA_DIR)")
    serve.add_argument("--reset-demo", action="store_true", help="wipe the local workspace and load the demo")
    serve.add_argument("--demo-size", type=int, metavar="N", help=DEMO_SIZE_HELP)

    chat = sub.add_parser("chat", help="talk to the bot in this terminal, no Teams needed")
    chat.add_argument("--data-dir", type=Path, help="where SQLite files live (default ./data)")
    chat.add_argument("--as", dest="user", default="Local Developer", help="your display name")
    chat.add_argument("--reset-demo", action="store_true", help="wipe the local workspace and load the demo")
    chat.add_argument("--demo-size", type=int, metavar="N", help=DEMO_SIZE_HELP)

    manifest = sub.add_parser("manifest", help="build the Teams app package (manifest.json + icons, zipped)")
    manifest.add_argument("--app-id", required=True, help="the bot's Microsoft App ID (a GUID)")
    manifest.add_argument("--out", type=Path, default=Path("app.zip"), help="where to write the zip")
    manifest.add_argument("--version", default="1.0.0", help="the app version shown in Teams")

    drift = sub.add_parser("drift", help="compare two data files feature by feature (drift and data quality)",
                           description="Compare a current data file with a reference one, feature by feature, "
                                       "with Azure ML's drift and data quality metrics; worst first.")
    drift.add_argument("--reference", required=True, type=Path, help="reference data (CSV, CSV.gz or Parquet)")
    drift.add_argument("--current", required=True, type=Path, help="current data, same columns")
    drift.add_argument("--categorical", type=_column_list, default=[], metavar="COL,...",
                       help="columns to compare as categories even when their values are numbers")
    drift.add_argument("--features", type=_column_list, metavar="COL,...",
                       help="columns to compare (default: every column of the reference)")
    drift.add_argument("--labels", metavar="COL", help="the ground truth column: adds model performance on both "
                                                       "files and feature attribution drift (needs --predictions)")
    drift.add_argument("--predictions", metavar="COL", help="the model's output column: classes, or for two "
                                                            "classes the positive class's score in [0, 1]")
    drift.add_argument("--scores", metavar="COL", help="the positive class's score, for AUC (two classes)")
    drift.add_argument("--positive-label", metavar="L", help="the positive class of two (default: the greater, "
                                                             "1 of 0/1)")
    drift.add_argument("--task", choices=("classification", "regression"),
                       help="default: regression when the labels are numbers and not all whole numbers")
    drift.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected column names separated by commas")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "drift":
        return _drift(args)          # reads no settings, so does not import them
    from bot.settings import SettingsError
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "chat":
            return _chat(args)
        return _manifest(args)
    except SettingsError as error:
        print(f"mlops-bot: {error}", file=sys.stderr)
        return 2


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, object]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _demo_size_applies(args: argparse.Namespace, settings) -> None:
    """--demo-size only shapes a demo being seeded; on an existing workspace it would be silently
    ignored, so say so instead."""
    from bot.settings import SettingsError
    if (args.demo_size is not None and not args.reset_demo and settings.backend == "local"
            and (settings.data_dir / "workspace.db").exists()):
        raise SettingsError(f"--demo-size seeds a new demo, and {settings.data_dir / 'workspace.db'} already "
                            "holds a workspace: add --reset-demo to replace it (this wipes it), or use another "
                            "--data-dir.")


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector while the bot is imported and built.

    That is about 1,000 modules (aiohttp, botbuilder, msrest and ours) making many container
    objects and almost no garbage cycles, yet the collector ran some 170 times over them: about
    50 ms of a 0.5 s start on a two-core machine. It runs again before the server takes a request."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _serve(args: argparse.Namespace) -> int:
    with _collector_paused():
        from aiohttp import web

        from bot.app import create_app
        from bot.settings import load_settings
        settings = load_settings(**_overrides(args, "host", "port", "data_dir", "demo_size"))
        _demo_size_applies(args, settings)
        configure_logging(settings.log_level)
        app = create_app(settings, reset_demo=args.reset_demo)
    where = f"http://{settings.host}:{settings.port}/api/messages"
    print(f"MLOps bot listening on {where}" + (" (development mode: no Microsoft App ID)"
                                              if settings.development else ""), flush=True)
    from bot.ingress import AccessLogWithoutSecrets
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log_class=AccessLogWithoutSecrets)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from bot.chat import run_chat
    from bot.settings import load_settings
    settings = load_settings(**_overrides(args, "data_dir", "demo_size"), host="127.0.0.1")
    _demo_size_applies(args, settings)
    configure_logging("WARNING")
    return asyncio.run(run_chat(settings, user_name=args.user, reset_demo=args.reset_demo))


def _manifest(args: argparse.Namespace) -> int:
    from commands.catalog import catalog
    from manifest.build import build_manifest, write_package
    try:
        manifest = build_manifest(args.app_id, [(c.name, c.summary) for c in catalog()], version=args.version)
    except ValueError as error:
        print(f"mlops-bot manifest: {error}", file=sys.stderr)
        return 2
    out = write_package(manifest, args.out)
    print(f"Wrote {out}: upload it in Teams (Apps > Manage your apps > Upload an app).")
    return 0


def _drift(args: argparse.Namespace) -> int:
    from adapters.drift import (
        DriftInputError, compare_files, model_signals_of_files, render_model_signals, render_table,
    )
    model_flags = [flag for flag, value in (("--predictions", args.predictions), ("--scores", args.scores),
                                            ("--positive-label", args.positive_label), ("--task", args.task))
                   if value is not None]
    if args.labels is None and model_flags:
        print(f"mlops-bot drift: {model_flags[0]} needs --labels (the ground truth column)", file=sys.stderr)
        return 2
    if args.labels is not None and args.predictions is None:
        print("mlops-bot drift: --labels needs --predictions (the model's output column)", file=sys.stderr)
        return 2
    _reuse_freed_memory()
    try:
        report = compare_files(args.reference, args.current, categorical=args.categorical, features=args.features)
        signals = None if args.labels is None else model_signals_of_files(
            args.reference, args.current, labels=args.labels, predictions=args.predictions, scores=args.scores,
            task=args.task, positive_label=args.positive_label, categorical=args.categorical, features=args.features)
    except DriftInputError as error:
        print(f"mlops-bot drift: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), **(signals.to_dict() if signals else {})}, indent=2, allow_nan=False))
    else:
        print(render_table(report, reference_label=str(args.reference), current_label=str(args.current)))
        if signals is not None:
            print()
            print(render_model_signals(signals, reference_label=str(args.reference),
                                       current_label=str(args.current)))
    return 0


# glibc's mallopt parameters (malloc.h) and what this process sets them to
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 32 << 20
ARENA_MAX = 1


def _reuse_freed_memory() -> None:
    """This process computes a few features at a time, each with arrays of several MB that it frees
    before the next starts: make the next ones reuse that memory, so that the peak is a few
    features' arrays and the pages are not faulted in afresh for every array.

    Arrow allocates through the C library's malloc, not its own pool (whose freed memory numpy
    could not reuse). With glibc: one arena for every thread (by default each thread gets its own
    and keeps what it frees, so the features' threads and Arrow's would each hold a feature's
    worth); blocks up to 32 MB (a 4M-row float64 column) taken from that heap rather than mapped
    on their own (a block mapped is unmapped when freed, and its pages zeroed and faulted in again
    for the next: at 1M x 25 columns about 370,000 page faults, a third of the process's CPU
    time); and the heap's free memory kept rather than trimmed (the merge frees and allocates its
    blocks of a few MB thirty times a feature). This process is short-lived: what the heap keeps
    at the end is given back when it exits. Elsewhere than glibc, only the first applies."""
    import ctypes

    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL(None)                          # the C library this process runs on
        for parameter, value in ((M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                 (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
            libc.mallopt(parameter, value)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
