"""`mlops-bot drift`: figures on files equal the engine's definitions; bad files get one line, exit 2."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bot.cli import main
from tests.unit.test_drift_engine import TOLERANCE, expected_categorical, expected_numerical

ROOT = Path(__file__).resolve().parents[2]


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(zip(*(columns[n] for n in names)))
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    n = 2000
    reference = {
        "age": [f"{v:.1f}" for v in rng.normal(40, 10, n)],
        "income": [f"{v:.2f}" for v in rng.lognormal(10, 1, n)],
        "city": list(rng.choice(["paris", "lyon", "nice"], n)),
        "zip": list(rng.choice(["007", "123", "7"], n)),
    }
    current = {
        "age": [f"{v:.1f}" for v in rng.normal(46, 10, n)],
        "income": [f"{v:.2f}" for v in rng.lognormal(10, 1, n)],
        "city": list(rng.choice(["paris", "lyon", "nice", "lille"], n, p=[0.4, 0.2, 0.2, 0.2])),
        "zip": list(rng.choice(["007", "123", "7"], n)),
    }
    current["income"][:50] = [""] * 50  # missing values
    current["age"][:3] = ["NA", "unknown", "-"]  # NA is missing; the other two are not numbers
    return (write_csv(tmp_path / "reference.csv", reference), write_csv(tmp_path / "current.csv", current),
            reference, current)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["drift", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def floats(texts: list[str]) -> np.ndarray:
    out = []
    for text in texts:
        try:
            out.append(float(text))
        except ValueError:
            out.append(np.nan)
    return np.array(out)


def test_json_figures_match_the_definitions(files, capsys):
    ref_path, cur_path, reference, current = files
    status, out, err = run(capsys, "--reference", str(ref_path), "--current", str(cur_path),
                           "--categorical", "zip", "--json")
    assert (status, err) == (0, "")
    document = json.loads(out)
    by_name = {f["name"]: f for f in document["features"]}
    assert {n: f["kind"] for n, f in by_name.items()} == {
        "age": "numerical", "income": "numerical", "city": "categorical", "zip": "categorical"}
    for name in ("age", "income"):
        expected = expected_numerical(floats(reference[name]), floats(current[name]))
        for metric, value in expected.items():
            assert by_name[name]["metrics"][metric] == pytest.approx(float(value), **TOLERANCE), (name, metric)
    for name in ("city", "zip"):  # "007" and "7" stay two categories
        expected = expected_categorical(reference[name], current[name])
        for metric, value in expected.items():
            assert by_name[name]["metrics"][metric] == pytest.approx(float(value), **TOLERANCE), (name, metric)
    assert by_name["income"]["metrics"]["null_value_rate"] == pytest.approx(50 / 2000, **TOLERANCE)
    assert by_name["age"]["metrics"]["null_value_rate"] == pytest.approx(1 / 2000, **TOLERANCE)
    assert by_name["age"]["notes"] == ["2 current values are not a number (counted as out of bounds)"]
    lille = current["city"].count("lille")
    assert by_name["city"]["metrics"]["out_of_bounds_rate"] == pytest.approx(lille / 2000, **TOLERANCE)
    # Worst first, and the summary agrees with the features.
    assert [f["name"] for f in document["features"]][:2] == ["age", "city"]
    assert document["summary"]["drifted_features"] == ["age", "city"]
    assert document["summary"]["features"] == 4
    assert "log base 2" in document["summary"]["definitions"]["jensen_shannon_distance"]


def test_table_names_every_metric_and_its_log_base(files, capsys):
    ref_path, cur_path, _, _ = files
    status, out, _ = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), "--features", "income,city")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("1 of 2 features drifted")
    header = next(i for i, line in enumerate(lines) if line.startswith("feature"))
    assert [line.split()[0] for line in lines[header + 1:header + 3]] == ["city", "income"]
    legend = " ".join(out.split())  # the legend is wrapped
    for name in ("normalized_wasserstein_distance", "jensen_shannon_distance", "population_stability_index",
                 "two_sample_kolmogorov_smirnov_test", "pearsons_chi_squared_test", "null_value_rate",
                 "out_of_bounds_rate"):
        assert f"{name}:" in legend
    assert "log base 2" in legend and "natural log" in legend


def test_parquet_gives_the_same_figures_as_csv(files, tmp_path, capsys):
    ref_path, cur_path, reference, current = files
    for source, target in ((reference, tmp_path / "reference.parquet"), (current, tmp_path / "current.parquet")):
        pq.write_table(pa.table({"age": pa.array(floats(source["age"]), from_pandas=True),
                                 "city": pa.array(source["city"])}), target)
    _, from_csv, _ = run(capsys, "--reference", str(ref_path), "--current", str(cur_path),
                         "--features", "age,city", "--json")
    _, from_parquet, _ = run(capsys, "--reference", str(tmp_path / "reference.parquet"),
                             "--current", str(tmp_path / "current.parquet"), "--json")
    csv_doc, parquet_doc = json.loads(from_csv), json.loads(from_parquet)
    for a, b in zip(csv_doc["features"], parquet_doc["features"]):
        assert (a["name"], a["kind"]) == (b["name"], b["kind"])
        assert a["metrics"].keys() == b["metrics"].keys()
        for metric, value in a["metrics"].items():
            if a["name"] == "age" and metric in ("null_value_rate", "out_of_bounds_rate"):
                continue  # in Parquet, the two texts that are not numbers were written as nulls
            assert b["metrics"][metric] == pytest.approx(value, **TOLERANCE), (a["name"], metric)
    age = next(f for f in parquet_doc["features"] if f["name"] == "age")
    assert age["metrics"]["null_value_rate"] == pytest.approx(3 / 2000, **TOLERANCE)


def test_gzipped_csv_is_read(files, tmp_path, capsys):
    ref_path, cur_path, _, _ = files
    packed = tmp_path / "current.csv.gz"
    packed.write_bytes(gzip.compress(cur_path.read_bytes()))
    _, plain, _ = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), "--json")
    status, zipped, _ = run(capsys, "--reference", str(ref_path), "--current", str(packed), "--json")
    assert status == 0
    assert json.loads(zipped)["features"] == json.loads(plain)["features"]


@pytest.mark.parametrize("make, message", [
    (lambda d: write_csv(d / "c.csv", {"age": ["1"], "town": ["x"]}),
     "c.csv has no column 'city'"),
    (lambda d: write_csv(d / "c.csv", {"age": [], "city": []}),
     "c.csv has no rows (only a header)"),
    (lambda d: (d / "c.csv").write_bytes(b"") and d / "c.csv" or d / "c.csv",
     "c.csv is empty: expected CSV with a header row"),
    (lambda d: (d / "c.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") and d / "c.csv",
     "c.csv is not a CSV or Parquet file (it has binary content)"),
    (lambda d: (d / "c.csv").write_text("age,city\n1,paris\n2,lyon,extra\n") and d / "c.csv",
     "c.csv is not a readable CSV file: CSV parse error: Expected 2 columns, got 3"),
    (lambda d: (d / "c.parquet").write_bytes(b"PAR1 not really") and d / "c.parquet",
     "c.parquet is not a readable Parquet file"),
    (lambda d: d / "missing.csv", "missing.csv: no such file"),
])
def test_malformed_files_get_one_line_and_status_2(tmp_path, capsys, make, message):
    reference = write_csv(tmp_path / "r.csv", {"age": ["1", "2"], "city": ["paris", "lyon"]})
    current = make(tmp_path)
    status, out, err = run(capsys, "--reference", str(reference), "--current", str(current))
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("mlops-bot drift: ") and message in err


def test_unknown_feature_gets_did_you_mean(files, capsys):
    ref_path, cur_path, _, _ = files
    status, _, err = run(capsys, "--reference", str(ref_path), "--current", str(cur_path), "--features", "incme")
    assert status == 2
    assert err.strip().endswith("reference.csv has no column 'incme'; did you mean 'income'?")
    status, _, err = run(capsys, "--reference", str(ref_path), "--current", str(cur_path),
                         "--features", "age", "--categorical", "city")
    assert (status, err.strip()) == (2, "mlops-bot drift: --categorical names 'city', which is not among "
                                        "the compared features")


def test_runs_as_a_command(files):
    ref_path, cur_path, _, _ = files
    result = subprocess.run([sys.executable, "-m", "bot.cli", "drift", "--reference", str(ref_path),
                             "--current", str(cur_path), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["drifted_features"] == ["age", "city"]
    missing = subprocess.run([sys.executable, "-m", "bot.cli", "drift", "--reference", str(ref_path),
                              "--current", "/nonexistent.csv"], cwd=ROOT, capture_output=True, text=True)
    assert (missing.returncode, missing.stderr) == (2, "mlops-bot drift: /nonexistent.csv: no such file\n")
