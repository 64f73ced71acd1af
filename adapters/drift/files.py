"""Reading the two data files `mlops-bot drift` compares: CSV (plain or .gz/.bz2) or Parquet.

CSV goes through pyarrow's multithreaded reader with every column read as text, so the engine
sees exactly what the file says (`007` stays `007` in a categorical column) and parses numbers
itself, in one vectorised cast per column. Missing in CSV: an empty field or one of pyarrow's
null spellings (`NULL_SPELLINGS`). Parquet is read as typed; only the compared columns are read.

Every problem with a file is one `DriftInputError` with a one-line message naming the file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from adapters.drift.definitions import DEFAULT_THRESHOLDS, Thresholds
from adapters.drift.engine import compare
from adapters.drift.errors import DriftInputError, MissingColumn, NoRows, UnreadableFile
from adapters.drift.performance import (
    AttributionDrift, PerformanceReport, attribution_drift, model_performance, numeric_target, target_numbers,
)
from adapters.drift.results import DriftReport, MetricResult

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET_MAGIC = b"PAR1"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".br")
# pyarrow.csv.ConvertOptions().null_values: what a CSV field spells when it means "missing".
NULL_SPELLINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                  "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null")
CSV_BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class DataFile:
    path: Path
    format: str  # "csv" | "parquet"
    columns: list[str]

    @property
    def label(self) -> str:
        return str(self.path)


def compare_files(reference: Path | str, current: Path | str, *, categorical: Iterable[str] = (),
                  features: Iterable[str] | None = None,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS) -> DriftReport:
    """Compare two files feature by feature (every reference column unless `features` names some)."""
    ref = open_data(Path(reference))
    cur = open_data(Path(current))
    names = list(dict.fromkeys(features)) if features is not None else list(ref.columns)
    if not names:
        raise DriftInputError("no features to compare")
    for data in (ref, cur):
        for name in names:
            _require_column(data, name)
    categorical = list(dict.fromkeys(categorical))
    for name in categorical:
        if name not in names:
            _require_column(ref, name)
            raise DriftInputError(f"--categorical names {name!r}, which is not among the compared features")
    ref_columns = read_columns(ref, names)
    cur_columns = read_columns(cur, names)
    return compare(ref_columns, cur_columns, categorical=categorical, features=names, thresholds=thresholds)


@dataclass(frozen=True)
class ModelSignals:
    """Model performance on both files and the feature attribution drift between them."""

    reference: PerformanceReport
    current: PerformanceReport
    attribution: AttributionDrift

    def to_dict(self) -> dict:
        return {"model_performance": {"reference": self.reference.to_dict(), "current": self.current.to_dict()},
                "feature_attribution_drift": self.attribution.to_dict()}


def model_signals_of_files(reference: Path | str, current: Path | str, *, labels: str, predictions: str,
                           scores: str | None = None, task: str | None = None, positive_label: str | None = None,
                           categorical: Iterable[str] = (), features: Iterable[str] | None = None,
                           thresholds: Thresholds = DEFAULT_THRESHOLDS) -> ModelSignals:
    """Performance of the predictions against the labels in each file, and the NDCG of the features'
    importance rankings (importance against the labels: the positive class of two as 1, or numbers)."""
    ref = open_data(Path(reference))
    cur = open_data(Path(current))
    outputs = [name for name in (labels, predictions, scores) if name]
    for data in (ref, cur):
        for name in outputs:
            _require_column(data, name)
    names = [n for n in (list(dict.fromkeys(features)) if features is not None else ref.columns) if n not in outputs]
    for data in (ref, cur):
        for name in names:
            _require_column(data, name)
    wanted = list(dict.fromkeys([*outputs, *names]))
    ref_columns = read_columns(ref, wanted)
    cur_columns = read_columns(cur, wanted)

    def performance(columns: dict) -> PerformanceReport:
        return model_performance(columns[labels], columns[predictions], columns[scores] if scores else None,
                                 task=task, positive_label=positive_label, thresholds=thresholds)

    on_reference, on_current = performance(ref_columns), performance(cur_columns)
    try:
        if on_current.task == "regression":
            targets = numeric_target(ref_columns[labels]), numeric_target(cur_columns[labels])
            described = f"{labels} (as numbers)"
        else:
            positive = on_current.positive_label if len(on_current.classes) <= 2 else None
            (ref_target, how), (cur_target, _) = (target_numbers(ref_columns[labels], positive),
                                                  target_numbers(cur_columns[labels], positive))
            targets, described = (ref_target, cur_target), f"{labels} ({how})"
        attribution = attribution_drift(ref_columns, cur_columns, names, *targets,
                                        categorical=categorical, target=described, thresholds=thresholds)
    except DriftInputError as error:
        attribution = AttributionDrift(MetricResult.of("normalized_discounted_cumulative_gain", None, thresholds,
                                                       undefined_reason=str(error)), target=labels)
    return ModelSignals(on_reference, on_current, attribution)


def open_data(path: Path) -> DataFile:
    """Check the file exists and is CSV or Parquet, and read its column names."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{path} is a directory, not a data file") from None
    except OSError as error:
        raise UnreadableFile(f"{path} cannot be read: {error.strerror or error}") from None
    if head.startswith(PARQUET_MAGIC) or path.suffix.lower() in (".parquet", ".pq"):
        return DataFile(path, "parquet", _parquet_columns(path))
    if not head.strip():
        raise UnreadableFile(f"{path} is empty: expected CSV with a header row")
    if b"\x00" in head and path.suffix.lower() not in COMPRESSED_SUFFIXES:
        raise UnreadableFile(f"{path} is not a CSV or Parquet file (it has binary content)")
    return DataFile(path, "csv", _csv_columns(path))


def read_columns(data: DataFile, names: list[str]) -> dict[str, "pa.ChunkedArray"]:
    """The named columns (CSV: as text, nulls marked; Parquet: as typed), at least one row."""
    import pyarrow as pa

    try:
        table = _read_parquet(data, names) if data.format == "parquet" else _read_csv(data, names)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowKeyError, OSError) as error:
        raise UnreadableFile(f"{data.label} is not a readable {data.format.upper()} file: "
                             f"{_first_line(error)}") from None
    if table.num_rows == 0:
        raise NoRows(f"{data.label} has no rows" + (" (only a header)" if data.format == "csv" else ""))
    return {name: table.column(name) for name in names}


# ---------------------------------------------------------------- CSV


def _csv_columns(path: Path) -> list[str]:
    import pyarrow as pa
    from pyarrow import csv

    try:  # the streaming reader parses the first block only
        with csv.open_csv(path, read_options=csv.ReadOptions(block_size=1 << 20)) as reader:
            names = reader.schema.names
    except (pa.ArrowInvalid, OSError) as error:
        message = _first_line(error)
        if "Empty CSV file" in message:
            raise UnreadableFile(f"{path} is empty: expected CSV with a header row") from None
        raise UnreadableFile(f"{path} is not a readable CSV file: {message}") from None
    _no_duplicates(path, names)
    return names


def _read_csv(data: DataFile, names: list[str]) -> "pa.Table":
    import pyarrow as pa
    from pyarrow import csv

    convert = csv.ConvertOptions(column_types={name: pa.string() for name in names}, include_columns=names,
                                 null_values=list(NULL_SPELLINGS), strings_can_be_null=True)
    return csv.read_csv(data.path, read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                        convert_options=convert)


# ---------------------------------------------------------------- Parquet


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    from pyarrow import parquet

    try:
        names = parquet.ParquetFile(path).schema_arrow.names
    except (pa.ArrowInvalid, OSError) as error:
        raise UnreadableFile(f"{path} is not a readable Parquet file: {_first_line(error)}") from None
    _no_duplicates(path, names)
    return names


def _read_parquet(data: DataFile, names: list[str]) -> "pa.Table":
    from pyarrow import parquet

    return parquet.read_table(data.path, columns=names)


# ---------------------------------------------------------------- checks


def _require_column(data: DataFile, name: str) -> None:
    if name in data.columns:
        return
    close = difflib.get_close_matches(name, data.columns, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it has {_listing(data.columns)}"
    raise MissingColumn(f"{data.label} has no column {name!r}{hint}")


def _no_duplicates(path: Path, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UnreadableFile(f"{path} has two columns named {name!r}")
        seen.add(name)


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "no columns"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
