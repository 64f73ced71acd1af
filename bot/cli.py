"""`mlops-bot`: serve the bot, chat with it in the terminal, or build the Teams app package.

    mlops-bot serve [--host H] [--port P] [--data-dir D] [--reset-demo]
    mlops-bot chat  [--data-dir D] [--as NAME] [--reset-demo]
    mlops-bot manifest --app-id GUID [--out app.zip] [--version 1.0.0]
    mlops-bot drift --reference REF.csv --current CUR.csv [--categorical COL,...] [--features COL,...] [--json]
                    [--labels COL --predictions COL [--scores COL] [--positive-label L] [--task T]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from bot.logsafe import configure_logging
from bot.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-bot", description="Run Azure Machine Learning from Microsoft Teams.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot's web server (POST /api/messages)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; MLOPSBOT_HOST)")
    serve.add_argument("--port", type=int, help="port (default 3978; MLOPSBOT_PORT)")
    serve.add_argument("--data-dir", type=Path, help="where SQLite files live (default ./data; MLOPSBOT_DATA_DIR)")
    serve.add_argument("--reset-demo", action="store_true", help="wipe the local workspace and load the demo")

    chat = sub.add_parser("chat", help="talk to the bot in this terminal, no Teams needed")
    chat.add_argument("--data-dir", type=Path, help="where SQLite files live (default ./data)")
    chat.add_argument("--as", dest="user", default="Local Developer", help="your display name")
    chat.add_argument("--reset-demo", action="store_true", help="wipe the local workspace and load the demo")

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
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "chat":
            return _chat(args)
        if args.command == "drift":
            return _drift(args)
        return _manifest(args)
    except SettingsError as error:
        print(f"mlops-bot: {error}", file=sys.stderr)
        return 2


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, object]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app import create_app
    settings = load_settings(**_overrides(args, "host", "port", "data_dir"))
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
    settings = load_settings(**_overrides(args, "data_dir"), host="127.0.0.1")
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


if __name__ == "__main__":
    sys.exit(main())
