"""How long does the drift engine take on 1,000,000 rows by 25 columns, and the whole command?

Generates a reference and a current table (20 numerical columns of various shapes, some with
ties, nulls or a shift; 5 categorical columns of 3 to 1,000 categories, some drifting), then
times:

- the engine alone (`adapters.drift.compare`) on the columns in memory: numerical columns as
  numpy float64, categorical ones as Arrow string arrays (as the file reader hands them over);
- the whole command, `mlops-bot drift --reference ref.csv --current cur.csv --json`, as a new
  process (interpreter start, imports, reading both CSV files, the engine, the JSON);
- the same command on Parquet files.

Prints the figures and writes them to bench/results/drift_engine.json.

    .venv/bin/python bench/drift_engine.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import scipy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.drift import compare  # noqa: E402

NUMERICAL = 20
CATEGORICAL = 5


def make_tables(rows: int, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """Reference and current tables; current drifts in some columns and not in others."""
    rng = np.random.default_rng(seed)
    reference: dict[str, pa.Array] = {}
    current: dict[str, pa.Array] = {}
    for i in range(NUMERICAL):
        shift = 0.0 if i % 3 else 0.05 * i  # every third column drifts, more and more
        shape = i % 4
        if shape == 0:
            r, c = rng.normal(50, 10, rows), rng.normal(50 + 10 * shift, 10, rows)
        elif shape == 1:
            r, c = rng.lognormal(10, 1, rows), rng.lognormal(10 + shift, 1, rows)
        elif shape == 2:  # integers: many ties
            r, c = rng.poisson(4, rows).astype(float), rng.poisson(4 + 4 * shift, rows).astype(float)
        else:
            r, c = rng.uniform(0, 1, rows), rng.uniform(shift, 1 + shift, rows)
        r, c = np.round(r, 4), np.round(c, 4)
        if i % 5 == 4:  # some missing values, more of them in the current data
            r[rng.random(rows) < 0.01] = np.nan
            c[rng.random(rows) < 0.03] = np.nan
        reference[f"num_{i:02d}"] = pa.array(r, from_pandas=True)
        current[f"num_{i:02d}"] = pa.array(c, from_pandas=True)
    for i in range(CATEGORICAL):
        k = (3, 12, 50, 200, 1000)[i]
        categories = np.array([f"c{j:04d}" for j in range(k)])
        weights = rng.dirichlet(np.ones(k))
        drifted = rng.dirichlet(np.ones(k)) if i % 2 == 0 else weights
        reference[f"cat_{i}"] = pa.array(categories[rng.choice(k, rows, p=weights)])
        current[f"cat_{i}"] = pa.array(categories[rng.choice(k, rows, p=drifted)])
    return pa.table(reference), pa.table(current)


def engine_inputs(table: pa.Table) -> dict[str, object]:
    return {name: (table.column(name).to_numpy() if name.startswith("num_") else table.column(name))
            for name in table.column_names}


def best_of(repeat: int, run) -> tuple[float, float, object]:
    """(best wall-clock seconds, CPU seconds of that run, result): CPU time barely depends on
    how busy the machine is, wall-clock time does."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = run()
        seconds = time.perf_counter() - started
        if seconds < best:
            best, cpu = seconds, time.process_time() - started_cpu
    return best, cpu, result


def run_cli(reference: Path, current: Path) -> tuple[float, dict, float]:
    """(seconds, parsed JSON, peak RSS in MiB) of one `mlops-bot drift ... --json` process."""
    command = [sys.executable, "-m", "bot.cli", "drift", "--reference", str(reference),
               "--current", str(current), "--json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"mlops-bot drift failed ({process.returncode}): {err.read().decode()}")
        return seconds, json.loads(out.read()), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="engine runs; the best is reported")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift_engine.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    print(f"Generating {args.rows:,} rows x {NUMERICAL + CATEGORICAL} columns ...", flush=True)
    reference, current = make_tables(args.rows)
    ref_in, cur_in = engine_inputs(reference), engine_inputs(current)
    compare(ref_in, cur_in)  # warm up: imports scipy.stats once, as any first run does
    engine_seconds, engine_cpu, report = best_of(args.repeat, lambda: compare(ref_in, cur_in))
    single_seconds, _, _ = best_of(args.repeat, lambda: compare(ref_in, cur_in, workers=1))
    print(f"engine: {engine_seconds:.2f} s with {os.cpu_count()} threads ({engine_cpu:.2f} s of CPU), "
          f"{single_seconds:.2f} s on one thread; {len(report.drifted)} of {len(report.features)} features "
          f"drifted (load average {os.getloadavg()[0]:.1f})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {"csv": (folder / "reference.csv", folder / "current.csv"),
                 "parquet": (folder / "reference.parquet", folder / "current.parquet")}
        pa_csv.write_csv(reference, files["csv"][0])
        pa_csv.write_csv(current, files["csv"][1])
        pq.write_table(reference, files["parquet"][0])
        pq.write_table(current, files["parquet"][1])
        results = {}
        for kind, (ref_path, cur_path) in files.items():
            seconds, output, peak_mib = run_cli(ref_path, cur_path)
            assert output["summary"]["drifted_features"] == report.summary()["drifted_features"], kind
            size = ref_path.stat().st_size + cur_path.stat().st_size
            results[kind] = {"seconds": round(seconds, 3), "peak_rss_mib": round(peak_mib),
                             "bytes_read": size}
            print(f"mlops-bot drift on {kind}: {seconds:.2f} s for {size / 2**20:,.0f} MiB of files, "
                  f"peak RSS {peak_mib:,.0f} MiB", flush=True)

    figures = {
        "rows": args.rows,
        "columns": {"numerical": NUMERICAL, "categorical": CATEGORICAL},
        "engine_seconds": round(engine_seconds, 3),
        "engine_cpu_seconds": round(engine_cpu, 3),
        "engine_seconds_one_thread": round(single_seconds, 3),
        "cli": results,
        "drifted": report.summary()["drifted_features"],
        # Other processes on the machine slow every figure down; this says how busy it was.
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": scipy.__version__, "pyarrow": pa.__version__, "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"Wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
