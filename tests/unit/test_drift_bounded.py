"""`compare_files` reads one feature's columns at a time (issue #21 item 4) and gives exactly the
figures of reading both files whole and comparing in memory (`read_columns` + `compare`).

Exact equality, not a tolerance: the same values go through the same computations. Memory and
time are measured in bench/drift_memory.py, never asserted here.
"""

from __future__ import annotations

import csv
import gzip
import os
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.drift import NoRows, UnreadableFile, compare, compare_files
from adapters.drift import files as drift_files
from adapters.drift.engine import PARALLEL_FROM_VALUES, compare_columns
from adapters.drift import numerical
from adapters.drift.numerical import numerical_figures


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(zip(*(columns[n] for n in names)))
    return path


def tables(n: int, seed: int = 5) -> tuple[dict[str, list], dict[str, list]]:
    """Text columns as a CSV holds them: numbers, categories, numbers-as-codes, missing values,
    a numerical column whose current side has words in it, and one that is all missing."""
    rng = np.random.default_rng(seed)

    def side(shift: float) -> dict[str, list]:
        amount = [f"{v:.3f}" for v in rng.lognormal(3 + shift, 1, n)]
        amount[::97] = [""] * len(amount[::97])
        age = [f"{v:.1f}" for v in rng.normal(40 + 10 * shift, 8, n)]
        return {
            "amount": amount,
            "age": age,
            "count": [str(v) for v in rng.poisson(3 + shift, n)],
            "city": list(rng.choice(["paris", "lyon", "nice", "lille"], n, p=[0.4, 0.3, 0.2, 0.1])),
            "zip": list(rng.choice(["007", "7", "123", "0123"], n)),
            "constant": ["1.5"] * n,
            "empty": [""] * n,
        }

    reference, current = side(0.0), side(0.3)
    current["age"][:5] = ["NA", "unknown", "-", "1e3", "n/a"]       # missing, words, a number
    current["city"][:3] = ["berlin", "", "NULL"]
    return reference, current


def in_memory(reference: Path, current: Path, **kw):
    """The path before issue #21: both files read whole, then compared."""
    ref, cur = drift_files.open_data(reference), drift_files.open_data(current)
    names = kw.pop("features", None) or ref.columns
    return compare(drift_files.read_columns(ref, names), drift_files.read_columns(cur, names), features=names, **kw)


@pytest.fixture
def csv_files(tmp_path):
    reference, current = tables(3000)
    return write_csv(tmp_path / "reference.csv", reference), write_csv(tmp_path / "current.csv", current)


def test_csv_figures_equal_reading_the_files_whole(csv_files):
    ref, cur = csv_files
    assert compare_files(ref, cur).to_dict() == in_memory(ref, cur).to_dict()


def test_named_categories_and_a_subset_of_features(csv_files):
    ref, cur = csv_files
    kw = {"categorical": ["count", "zip"], "features": ["zip", "count", "age"]}
    bounded = compare_files(ref, cur, **kw)
    assert bounded.to_dict() == in_memory(ref, cur, **kw).to_dict()
    assert [f.name for f in bounded.features] and {f.kind for f in bounded.features} == {"categorical", "numerical"}


def test_csv_parsed_in_many_blocks_gives_the_same_figures(csv_files, monkeypatch):
    """A big CSV arrives in many blocks: each spilled column then has many chunks."""
    ref, cur = csv_files
    monkeypatch.setattr(drift_files, "SPILL_BLOCK_BYTES", 4096)
    source = drift_files._CsvSource(drift_files.open_data(ref), ["amount", "city"], ref.parent)
    assert source.rows == 3000 and source.column("amount").num_chunks > 10
    assert compare_files(ref, cur).to_dict() == in_memory(ref, cur).to_dict()


def test_gzipped_csv_and_parquet_equal_their_whole_reads(csv_files, tmp_path):
    ref, cur = csv_files
    packed = tmp_path / "current.csv.gz"
    packed.write_bytes(gzip.compress(cur.read_bytes()))
    assert compare_files(ref, packed).to_dict() == in_memory(ref, packed).to_dict()
    rng = np.random.default_rng(9)
    values = rng.normal(0, 1, 5000)
    values[::50] = np.nan
    pq.write_table(pa.table({"x": pa.array(values, from_pandas=True), "n": rng.integers(0, 9, 5000),
                             "c": pa.array(rng.choice(["a", "b", None], 5000)).dictionary_encode()}),
                   tmp_path / "r.parquet", row_group_size=1000)
    pq.write_table(pa.table({"x": rng.normal(0.2, 1, 4000), "n": rng.integers(0, 12, 4000),
                             "c": pa.array(rng.choice(["a", "c"], 4000)).dictionary_encode()}),
                   tmp_path / "c.parquet")
    parquet = (tmp_path / "r.parquet", tmp_path / "c.parquet")
    assert compare_files(*parquet).to_dict() == in_memory(*parquet).to_dict()
    assert compare_files(*parquet, categorical=["n"]).to_dict() == in_memory(*parquet, categorical=["n"]).to_dict()


def test_large_enough_to_use_threads_the_figures_are_the_same(tmp_path):
    """Above PARALLEL_FROM_VALUES both paths compute features side by side (the bounded one reading
    each feature's columns as it starts it); a single feature is computed with threads inside it."""
    rng = np.random.default_rng(11)
    n = PARALLEL_FROM_VALUES // 4 + 1
    reference = {"a": np.round(rng.normal(5, 2, n), 3), "b": rng.poisson(4, n).astype(float),
                 "k": rng.choice(["x", "y", "z"], n)}
    current = {"a": np.round(rng.normal(5.3, 2, n), 3), "b": rng.poisson(4.2, n).astype(float),
               "k": rng.choice(["x", "y", "w"], n)}
    pq.write_table(pa.table(reference), tmp_path / "r.parquet")
    pq.write_table(pa.table(current), tmp_path / "c.parquet")
    files = (tmp_path / "r.parquet", tmp_path / "c.parquet")
    bounded = compare_files(*files, workers=2)
    assert bounded.to_dict() == in_memory(*files, workers=2).to_dict()
    assert bounded.to_dict() == compare(reference, current, workers=1).to_dict()
    for name in ("a", "k"):
        alone = compare_files(*files, features=[name], workers=2)
        assert alone.to_dict() == compare(reference, current, features=[name], workers=1).to_dict()


def test_compare_columns_loads_each_feature_when_it_starts_and_lets_go_of_it_after():
    """At most `workers` features' columns are alive at once: the bound on memory."""
    rng = np.random.default_rng(2)
    n = PARALLEL_FROM_VALUES
    names = ["u", "g", "e", "p", "w"]
    reference = {"u": rng.uniform(0, 1, n), "g": rng.normal(0, 1, n), "e": rng.exponential(1, n),
                 "p": rng.poisson(3, n).astype(float), "w": rng.weibull(2, n)}
    current = {name: values[::-1] + 0.01 for name, values in reference.items()}
    for workers in (1, 2, 3):
        loaded: list[str] = []
        alive: set[str] = set()
        crowded: list[int] = []
        lock = threading.Lock()

        def load(name):
            with lock:
                loaded.append(name)
                crowded.append(len(alive))
                alive.add(name)
            columns = reference[name].copy(), current[name].copy()
            weakref.finalize(columns[0], alive.discard, name)
            return columns

        lazily = compare_columns(names, load, n, n, workers=workers)
        assert sorted(loaded) == sorted(names)                      # each once
        assert max(crowded) < workers and not alive                 # the others let go of before the next
        if workers == 1:
            assert loaded == names                                  # in order
        assert lazily.to_dict() == compare(reference, current, workers=2).to_dict()


@pytest.mark.parametrize("n_r, n_c", [(1, 1), (3, 2), (50_000, 40_001)])
def test_sorting_and_searching_apart_gives_the_same_figures(n_r, n_c):
    rng = np.random.default_rng(4)
    r, c = np.round(rng.normal(0, 1, n_r), 2), np.round(rng.normal(0.01, 1.1, n_c), 2)
    r[:100] = 0.0
    c[:100] = -0.0                                                  # equal values of both signs
    assert numerical_figures(r, c, sort_apart=True) == numerical_figures(r, c)


def test_the_spilled_columns_are_deleted(csv_files, tmp_path, monkeypatch):
    ref, cur = csv_files
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spill"))
    os.mkdir(tmp_path / "spill")
    compare_files(ref, cur)
    assert os.listdir(tmp_path / "spill") == []
    header_only = write_csv(tmp_path / "none.csv", {name: [] for name in tables(1)[0]})
    with pytest.raises(NoRows):
        compare_files(ref, header_only)
    broken = tmp_path / "broken.csv"
    broken.write_text(ref.read_text().splitlines()[0] + "\n1,2\n")
    with pytest.raises(UnreadableFile, match="broken.csv is not a readable CSV file"):
        compare_files(ref, broken)
    also_broken = tmp_path / "also_broken.csv"
    also_broken.write_text(ref.read_text().splitlines()[0] + "\n1,2,3\n")
    with pytest.raises(UnreadableFile, match="also_broken.csv is not"):     # both parsed at once: the
        compare_files(also_broken, broken)                                  # reference's problem first
    assert os.listdir(tmp_path / "spill") == []


# ---------------------------------------------------------------- the merge, block by block


def whole_merge(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """The Wasserstein distance and KS statistic as the engine computed them before it walked the
    merge in blocks: the whole merged sequence, its gaps and counts in memory at once."""
    n_r, n_c = r.size, c.size
    n = n_r + n_c
    position_c = np.searchsorted(r, c, side="right") + np.arange(n_c)
    step = np.full(n, n_c, dtype=np.int64)
    step[position_c] = -n_r
    merged = np.empty(n, dtype=np.float64)
    merged[position_c] = c
    merged[step > 0] = r
    gaps = np.diff(merged)
    scaled_gap = np.abs(np.cumsum(step[:-1]))
    scale = float(n_r) * float(n_c)
    run_ends = gaps != 0
    wasserstein = float(np.sum(scaled_gap * gaps)) / scale
    ks_statistic = float(np.max(scaled_gap, where=run_ends, initial=0)) / scale if run_ends.any() else 0.0
    return wasserstein, ks_statistic


def samples(kind: int, n_r: int, n_c: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if kind == 0:
        r, c = rng.normal(0, 1, n_r), rng.normal(0.1, 1, n_c)
    elif kind == 1:                                                 # integers: long runs of ties
        r, c = rng.poisson(3, n_r).astype(float), rng.poisson(3.2, n_c).astype(float)
    elif kind == 2:                                                 # zeros of both signs
        r, c = np.round(rng.normal(0, 1, n_r), 2), np.round(rng.normal(0, 1.1, n_c), 2)
        r[: n_r // 3] = 0.0
        c[: n_c // 3] = -0.0
    elif kind == 3:                                                 # one value everywhere: no run ends
        r, c = np.full(n_r, 5.0), np.full(n_c, 5.0)
    else:                                                           # sums that overflow to inf
        r, c = rng.uniform(0, 1.7e308, n_r), rng.uniform(1e307, 1.79e308, n_c)
    return np.sort(r), np.sort(c)


@pytest.mark.parametrize("block", [128, 1000, 1 << 16])
def test_the_merge_walked_in_blocks_gives_the_figures_of_the_whole_merge(block, monkeypatch):
    monkeypatch.setattr(numerical, "MERGE_BLOCK", block)
    rng = np.random.default_rng(6)
    sizes = [(1, 1), (1, 9), (7, 2), (100, 130), (5000, 3001), (40_000, 65_537), (150_000, 90_001)]
    for kind in range(5):
        for n_r, n_c in sizes:
            r, c = samples(kind, n_r, n_c, rng)
            with np.errstate(over="ignore", invalid="ignore"):
                expected = whole_merge(r, c)
                for split in (False, True):
                    got = numerical._cdf_distances(r, c, split=split)
                    assert got == expected or (np.isnan(got[0]) and np.isnan(expected[0]) and got[1] == expected[1]), \
                        (kind, n_r, n_c, split)


def test_block_sums_added_up_the_pairwise_tree_are_np_sum():
    """What the blocks rely on: np.sum of an array is the sum of its pieces, cut and added as numpy's
    pairwise summation cuts and adds (if a numpy release changes that, this fails, not the figures)."""
    rng = np.random.default_rng(7)
    for n in [1, 7, 8, 127, 128, 129, 1000, 65_536, 65_537, 131_075, 1_000_003, int(rng.integers(2, 3_000_000))]:
        values = rng.lognormal(0, 3, n) * rng.choice([-1.0, 1.0], n)
        blocks = numerical._pairwise_blocks(0, n)
        assert blocks[0][0] == 0 and blocks[-1][1] == n and all(b[1] == a[0] for b, a in zip(blocks, blocks[1:]))
        sums = [np.sum(values[start:end]) for start, end in blocks]
        assert numerical._pairwise_total(sums, blocks, 0, n) == np.sum(values), n


def test_sorting_in_place_gives_the_same_figures_and_leaves_the_callers_arrays_alone():
    """The engine sorts the arrays `prepare` made for it in place; a caller's arrays (numpy, or Arrow
    ones numpy views without copying) are copied first, never reordered."""
    rng = np.random.default_rng(13)
    r, c = np.round(rng.normal(0, 1, 30_000), 2), np.round(rng.normal(0.1, 1, 20_000), 2)
    r[:50], c[:50] = 0.0, -0.0
    assert numerical_figures(r.copy(), c.copy(), in_place=True) == numerical_figures(r, c)
    for split in (True, False):
        assert numerical_figures(r.copy(), c.copy(), in_place=True, sort_apart=split) == numerical_figures(r, c)
    with_nulls = r.copy()
    with_nulls[::7] = np.nan
    columns = {"numpy": r, "ints": np.arange(30_000)[::-1], "arrow": pa.chunked_array([pa.array(r)]),
               "arrow_nulls": pa.chunked_array([pa.array(with_nulls, from_pandas=True)])}
    before = {name: np.asarray(column).copy() for name, column in columns.items()}
    report = compare(columns, columns, workers=1)                  # the same objects on both sides
    assert all(f.metrics["normalized_wasserstein_distance"].value == 0.0 for f in report.features)
    for name, column in columns.items():
        assert np.array_equal(np.asarray(column), before[name], equal_nan=True), name
