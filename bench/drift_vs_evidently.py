"""The drift engine (adapters/drift) against Evidently, on the same data, side by side.

Data: bench/drift_engine.py's tables, 1,000,000 rows by 20 numerical and 5 categorical columns
(shapes with ties, nulls, shifts; 3 to 1,000 categories), written once as Parquet.

- Evidently runs in its own virtual environment, bench/.venv-evidently (created on first use with
  `pip install evidently 'pandas<3'`: Evidently 0.7 still imports a function pandas 3 removed), in a
  subprocess that reads the Parquet files into pandas and times one Report with its data drift
  preset set to the methods whose definitions coincide with ours: `wasserstein` (normalized
  Wasserstein distance) for the numerical columns and `jensenshannon` for the categorical ones.
- The engine (`adapters.drift.compare`) runs on the same columns in memory (numpy and Arrow, as
  the bot's file reader hands them over) and computes every figure it knows (Wasserstein, PSI,
  Jensen-Shannon, KS and chi-squared p-values, data quality), not just those two.

Figures: the wall time of each (the best of REPEAT runs; data loading excluded on both sides), their
ratio (target: the engine at least 20 times faster) and the largest difference between the two
figures per column: normalized Wasserstein as is, Jensen-Shannon after converting the log base
(Evidently uses the natural log: its distance is ours times sqrt(ln 2)). Also the bot's own cost
of a monitor run at that size: `mlops-bot drift` on the Parquet files as a new process (reading
the files, the engine, the report), its time and peak memory (max RSS).

    python bench/drift_vs_evidently.py [--rows 1000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_importable()

from adapters.drift import compare  # noqa: E402
from drift_engine import CATEGORICAL, NUMERICAL, best_of, engine_inputs, make_tables, run_cli  # noqa: E402

VENV = _common.ROOT / "bench" / ".venv-evidently"
TARGET_SPEEDUP = 20.0
JS_BASE_FACTOR = math.sqrt(math.log(2))          # Evidently's JS distance (natural log) / ours (base 2)

EVIDENTLY_SIDE = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import pandas as pd
import evidently
from evidently.legacy.metric_preset import DataDriftPreset
from evidently.legacy.pipeline.column_mapping import ColumnMapping
from evidently.legacy.report import Report

reference_path, current_path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
numerical = [c for c in reference.columns if c.startswith("num_")]
categorical = [c for c in reference.columns if c.startswith("cat_")]
mapping = ColumnMapping(numerical_features=numerical, categorical_features=categorical, target=None,
                        prediction=None)
best, result = float("inf"), None
for _ in range(repeat):
    report = Report(metrics=[DataDriftPreset(num_stattest="wasserstein", cat_stattest="jensenshannon")])
    started = time.perf_counter()
    report.run(reference_data=reference, current_data=current, column_mapping=mapping)
    result = report.as_dict()
    best = min(best, time.perf_counter() - started)
scores = {}
for metric in result["metrics"]:
    drift = metric.get("result", {}).get("drift_by_columns")
    if drift:
        for name, column in drift.items():
            scores[name] = {"score": float(column["drift_score"]), "method": column["stattest_name"]}
print(json.dumps({"seconds": best, "scores": scores, "evidently": evidently.__version__, "pandas": pd.__version__}))
'''


def evidently_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV.relative_to(_common.ROOT)} with Evidently (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "evidently", "pandas<3"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    load_before = _common.load_average()
    python = evidently_python()
    print(f"generating {args.rows:,} rows x {NUMERICAL + CATEGORICAL} columns ...", flush=True)
    reference, current = make_tables(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, cur_path = Path(tmp) / "reference.parquet", Path(tmp) / "current.parquet"
        pq.write_table(reference, ref_path)
        pq.write_table(current, cur_path)

        ref_in, cur_in = engine_inputs(reference), engine_inputs(current)
        compare(ref_in, cur_in)                                    # warm up (imports scipy.stats)
        engine_seconds, engine_cpu, report = best_of(args.repeat, lambda: compare(ref_in, cur_in))
        load_engine = _common.load_average()
        print(f"engine: {engine_seconds:.2f} s ({engine_cpu:.2f} s CPU), load {load_engine}", flush=True)

        started = time.perf_counter()
        done = subprocess.run([str(python), "-c", EVIDENTLY_SIDE, str(ref_path), str(cur_path), str(args.repeat)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the Evidently side failed:\n{done.stderr[-3000:]}")
        evidently = json.loads(done.stdout.strip().splitlines()[-1])
        load_evidently = _common.load_average()
        print(f"Evidently {evidently['evidently']}: {evidently['seconds']:.2f} s per report "
              f"({time.perf_counter() - started:.0f} s with loading), load {load_evidently}", flush=True)

        monitor_seconds, _, monitor_peak = run_cli(ref_path, cur_path)
        print(f"monitor run (mlops-bot drift on Parquet, a new process): {monitor_seconds:.2f} s, "
              f"peak RSS {monitor_peak:,.0f} MiB", flush=True)

    ours = {f.name: f for f in report.features}
    agreement = {}
    for name, theirs in sorted(evidently["scores"].items()):
        figure = ours[name]
        metrics = {name_: m.value for name_, m in figure.metrics.items()}
        if name.startswith("num_"):
            mine, method = metrics.get("normalized_wasserstein_distance"), "normalized Wasserstein"
        else:
            js = metrics.get("jensen_shannon_distance")
            mine, method = (js * JS_BASE_FACTOR if js is not None else None), "Jensen-Shannon (natural log)"
        agreement[name] = {"method": method, "engine": mine, "evidently": theirs["score"],
                           "difference": None if mine is None else abs(mine - theirs["score"])}
    differences = [a["difference"] for a in agreement.values() if a["difference"] is not None]
    speedup = evidently["seconds"] / engine_seconds
    figures = {"rows": args.rows, "columns": {"numerical": NUMERICAL, "categorical": CATEGORICAL},
               "engine_seconds": round(engine_seconds, 3), "engine_cpu_seconds": round(engine_cpu, 3),
               "evidently_seconds": round(evidently["seconds"], 3), "speedup": round(speedup, 1),
               "largest_difference": max(differences) if differences else None,
               "columns_compared": len(differences), "agreement": agreement,
               "monitor_run": {"seconds": round(monitor_seconds, 2), "peak_rss_mib": round(monitor_peak)},
               "evidently_version": evidently["evidently"], "evidently_pandas": evidently["pandas"],
               "load_1min": {"engine": load_engine, "evidently": load_evidently}}
    met = speedup >= TARGET_SPEEDUP
    print(f"engine {engine_seconds:.2f} s vs Evidently {evidently['seconds']:.2f} s: {speedup:.1f} times faster "
          f"(target at least {TARGET_SPEEDUP:g}: {'met' if met else 'NOT met'}); largest difference over "
          f"{len(differences)} columns: {figures['largest_difference']:.2e}")
    _common.write_results("drift_vs_evidently", {**figures, "target_met": met},
                          {"speedup_at_least": TARGET_SPEEDUP, "agreement": "same figures where the definitions coincide"},
                          load_before=load_before)


if __name__ == "__main__":
    main()
