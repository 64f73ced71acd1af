"""Peak memory and time of `mlops-bot drift` on 1,000,000 rows x 25 columns, Parquet and CSV.

Generates the reference and current tables of bench/drift_engine.py (20 numerical columns, 5
categorical ones) into a temporary directory as Parquet and as CSV, then runs, each as a new
process whose peak RSS (ru_maxrss, from wait4) and CPU time are read when it ends:

- bounded: `mlops-bot drift --reference R --current C --json`, as shipped (a feature's columns in
  memory only while it is computed, one feature per core at a time; issue #21 item 4);
- whole: the path before, in the same code: both files read whole (`read_columns`), then
  `compare` with features side by side on the default allocator;

alternating, ROUNDS times each, and checks that both print the same report. Then, in one more
process per format, how long reading takes against computing: the engine alone on columns already
in memory (compute), and `compare_files` as a whole (reading = the whole minus compute).

    .venv/bin/python bench/drift_memory.py            # writes bench/results/drift_memory.json
    .venv/bin/python bench/drift_memory.py --rows 200000 --rounds 1

Targets: Parquet under 300 MB at its peak and no slower than reading whole; CSV reading at most
twice the compute time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, ensure_importable, load_average, write_results

ensure_importable()


ROUNDS = 2
COLUMNS = 25                                  # bench/drift_engine.py's tables: 20 numerical, 5 categorical

# The data is generated in a process of its own: a child's peak RSS (ru_maxrss) counts what it
# shared with its parent between fork and exec, so the measuring process must stay small.
GENERATE = """
import sys
sys.path.insert(0, "bench")
import pyarrow.csv as pa_csv, pyarrow.parquet as pq
from drift_engine import make_tables
reference, current = make_tables(int(sys.argv[1]))
folder = sys.argv[2]
pq.write_table(reference, f"{folder}/reference.parquet")
pq.write_table(current, f"{folder}/current.parquet")
pa_csv.write_csv(reference, f"{folder}/reference.csv")
pa_csv.write_csv(current, f"{folder}/current.csv")
"""
PEAK_TARGET_MIB = 300
READ_TO_COMPUTE_TARGET = 2.0

WHOLE = """
import json, sys
from pathlib import Path
from adapters.drift import compare
from adapters.drift.files import open_data, read_columns
ref, cur = open_data(Path(sys.argv[1])), open_data(Path(sys.argv[2]))
report = compare(read_columns(ref, ref.columns), read_columns(cur, ref.columns), features=ref.columns)
print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
"""

PHASES = """
import json, sys, time
from pathlib import Path
from adapters.drift import compare, compare_files
from adapters.drift.files import open_data, read_columns
ref_path, cur_path = Path(sys.argv[1]), Path(sys.argv[2])
ref, cur = open_data(ref_path), open_data(cur_path)
compare(*(read_columns(d, ref.columns[:2]) for d in (ref, cur)))          # warm up: scipy's imports
started = time.perf_counter()
compare_files(ref_path, cur_path)
bounded = time.perf_counter() - started
started = time.perf_counter()
columns = [read_columns(d, ref.columns) for d in (ref, cur)]
read_whole = time.perf_counter() - started
started = time.perf_counter()
compare(*columns, features=ref.columns)
compute = time.perf_counter() - started
print(json.dumps({"bounded_seconds": bounded, "read_whole_seconds": read_whole, "compute_seconds": compute}))
"""


def run(command: list[str]) -> dict:
    """One process: wall seconds, CPU seconds, peak RSS (MiB), its standard output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = load_average()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(command[:4])} failed: {err.read().decode()[-2000:]}")
        return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mib": round(usage.ru_maxrss / 1024), "load": load, "stdout": out.read().decode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    load_before = load_average()
    print(f"Generating {args.rows:,} rows x {COLUMNS} columns ...", flush=True)
    figures: dict = {"rows": args.rows, "columns": COLUMNS, "rounds": args.rounds, "formats": {},
                     "measuring_process_rss_mib": None}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {"parquet": (folder / "reference.parquet", folder / "current.parquet"),
                 "csv": (folder / "reference.csv", folder / "current.csv")}
        run([sys.executable, "-c", GENERATE, str(args.rows), str(folder)])
        figures["measuring_process_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        for kind, (ref, cur) in files.items():
            commands = {
                "bounded": [sys.executable, "-m", "bot.cli", "drift", "--reference", str(ref), "--current", str(cur),
                            "--json"],
                "whole": [sys.executable, "-c", WHOLE, str(ref), str(cur)],
            }
            runs: dict[str, list[dict]] = {"bounded": [], "whole": []}
            for _ in range(args.rounds):
                for mode, command in commands.items():
                    result = run(command)
                    runs[mode].append(result)
                    print(f"{kind:>7} {mode:>7}: {result['seconds']:6.2f} s, CPU {result['cpu_seconds']:6.2f} s, "
                          f"peak {result['peak_rss_mib']:5d} MiB (load {result['load']})", flush=True)
            same = all(json.loads(r["stdout"]) == json.loads(runs["whole"][0]["stdout"])
                       for r in runs["bounded"] + runs["whole"])
            phases = json.loads(run([sys.executable, "-c", PHASES, str(ref), str(cur)])["stdout"])
            reading = phases["bounded_seconds"] - phases["compute_seconds"]
            summary = {
                "bytes": ref.stat().st_size + cur.stat().st_size,
                "same_report": same,
                **{f"{mode}_{key}": [r[key] for r in found] for mode, found in runs.items()
                   for key in ("seconds", "cpu_seconds", "peak_rss_mib", "load")},
                "phases_in_one_process": {key: round(value, 2) for key, value in phases.items()},
                "bounded_reading_seconds": round(reading, 2),
                "reading_to_compute": round(reading / phases["compute_seconds"], 2),
            }
            summary["bounded_peak_max_mib"] = max(summary["bounded_peak_rss_mib"])
            summary["bounded_median_seconds"] = statistics.median(summary["bounded_seconds"])
            summary["whole_median_seconds"] = statistics.median(summary["whole_seconds"])
            figures["formats"][kind] = summary
            print(f"{kind:>7}: same report {same}; reading {reading:.2f} s against computing "
                  f"{phases['compute_seconds']:.2f} s (x{summary['reading_to_compute']}); whole-file read "
                  f"{phases['read_whole_seconds']:.2f} s", flush=True)
    parquet, csv = figures["formats"]["parquet"], figures["formats"]["csv"]
    figures["parquet_peak_within_target"] = parquet["bounded_peak_max_mib"] < PEAK_TARGET_MIB
    figures["parquet_no_slower"] = parquet["bounded_median_seconds"] <= parquet["whole_median_seconds"]
    figures["csv_reading_within_target"] = csv["reading_to_compute"] <= READ_TO_COMPUTE_TARGET
    print(f"Parquet peak under {PEAK_TARGET_MIB} MiB: {figures['parquet_peak_within_target']}; no slower than "
          f"reading whole: {figures['parquet_no_slower']}; CSV reading at most {READ_TO_COMPUTE_TARGET:g} x compute: "
          f"{figures['csv_reading_within_target']}")
    write_results("drift_memory", figures, {"parquet_peak_mib": f"< {PEAK_TARGET_MIB}",
                                            "parquet_seconds": "<= reading whole",
                                            "csv_reading_to_compute": f"<= {READ_TO_COMPUTE_TARGET}"},
                  load_before=load_before)


if __name__ == "__main__":
    main()
