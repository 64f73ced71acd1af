"""Reading the two data files `mlops-bot drift` compares: CSV (plain or .gz/.bz2) or Parquet.

CSV goes through pyarrow's CSV reader with every column read as text, so the engine sees exactly
what the file says (`007` stays `007` in a categorical column) and parses numbers itself, in one
vectorised cast per column. Missing in CSV: an empty field or one of pyarrow's null spellings
(`NULL_SPELLINGS`). Parquet is read as typed; only the compared columns are read.

Memory stays bounded by the size of a column, not of a file (issue #21: 1M rows x 25 columns of
Parquet peaked at 920 MB when both files were read whole): `compare_files` fetches each feature's
two columns only when the engine computes that feature (`engine.compare_columns`: one feature per
core at a time, each read and computed on its own thread) and lets go of them after. Parquet is
columnar, so a column is read on its own. CSV is not: it is parsed once, block by block, and the
compared columns are written as they are parsed to an Arrow IPC file in a private temporary
directory (about as large as the CSV; deleted at the end), from which each column is then read
alone. The columns are the same text either way, so the figures are exactly those of reading the
files whole (`read_columns` + `engine.compare`).

Every problem with a file is one `DriftInputError` with a one-line message naming the file.
"""

from __future__ import annotations

import difflib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from adapters.drift.definitions import DEFAULT_THRESHOLDS, Thresholds
from adapters.drift.engine import compare_columns
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
CSV_BLOCK_BYTES = 16 << 20            # reading a CSV whole (`read_columns`): fewer, larger blocks are faster
SPILL_BLOCK_BYTES = 1 << 20           # parsing it block by block (`compare_files`): a few blocks in memory at once


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
                  thresholds: Thresholds = DEFAULT_THRESHOLDS, workers: int | None = None) -> DriftReport:
    """Compare two files feature by feature (every reference column unless `features` names some),
    holding only the columns of the features being computed in memory (see the module docstring)."""
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
    with ExitStack() as stack:
        ref_source, cur_source = _sources(ref, cur, names, stack)

        def load(name: str) -> tuple["pa.ChunkedArray", "pa.ChunkedArray"]:
            return ref_source.column(name), cur_source.column(name)

        return compare_columns(names, load, ref_source.rows, cur_source.rows, categorical=categorical,
                               thresholds=thresholds, workers=workers)


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
    """The named columns (CSV: as text, nulls marked; Parquet: as typed), at least one row, all
    in memory at once (`compare_files` reads each feature's as it computes it instead)."""
    with _unreadable(data):
        table = _read_parquet(data, names) if data.format == "parquet" else _read_csv(data, names)
    _some_rows(data, table.num_rows)
    return {name: table.column(name) for name in names}


class _unreadable:
    """Arrow's and the OS's errors while reading `data` become one UnreadableFile naming it."""

    def __init__(self, data: DataFile) -> None:
        self.data = data

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        import pyarrow as pa

        if error is not None and isinstance(error, (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowKeyError,
                                                    OSError)):
            raise UnreadableFile(f"{self.data.label} is not a readable {self.data.format.upper()} file: "
                                 f"{_first_line(error)}") from None
        return False


def _some_rows(data: DataFile, rows: int) -> None:
    if rows == 0:
        raise NoRows(f"{data.label} has no rows" + (" (only a header)" if data.format == "csv" else ""))


# ---------------------------------------------------------------- one column at a time


class _ParquetSource:
    """A Parquet file's columns, each read alone when asked for, on the asking thread.

    The engine asks from one thread per core, so a column is decoded where it is asked for
    (use_threads=False: Arrow's thread pool would only take the work from one busy thread to give
    it to another), its pages read as they are decoded (pre_buffer=False). Not memory-mapped: as
    fast here, and a file truncated while it is read would kill the process (SIGBUS) instead of
    raising an error."""

    def __init__(self, data: DataFile) -> None:
        from pyarrow import parquet

        self.data = data
        with _unreadable(data):
            self.rows = parquet.ParquetFile(data.path).metadata.num_rows
        _some_rows(data, self.rows)

    def column(self, name: str) -> "pa.ChunkedArray":
        from pyarrow import parquet

        with _unreadable(self.data):      # one reader per call: features are read from several threads
            reader = parquet.ParquetFile(self.data.path, pre_buffer=False)
            return reader.read(columns=[name], use_threads=False).column(name)


class _CsvSource:
    """A CSV file parsed once, block by block on the calling thread, each compared column (as text)
    spilled to an Arrow IPC file of its own in `folder`; a column is then read alone from its file.
    The parsed blocks are allocated from `pool` (Arrow's default pool if None)."""

    def __init__(self, data: DataFile, names: list[str], folder: Path, pool: "pa.MemoryPool | None" = None) -> None:
        import pyarrow as pa
        from pyarrow import csv, ipc

        self.data = data
        self.rows = 0
        with _unreadable(data), ExitStack() as files:
            reader = files.enter_context(csv.open_csv(
                data.path, read_options=csv.ReadOptions(block_size=SPILL_BLOCK_BYTES, use_threads=False),
                convert_options=_csv_convert(names), memory_pool=pool))
            self.paths = {name: folder / f"{index}.arrow" for index, name in enumerate(reader.schema.names)}
            writers = []
            for field in reader.schema:
                sink = files.enter_context(pa.OSFile(str(self.paths[field.name]), "wb"))
                schema = pa.schema([field])
                writers.append((schema, files.enter_context(ipc.new_stream(sink, schema))))
            for batch in reader:
                for index, (schema, writer) in enumerate(writers):
                    writer.write_batch(pa.record_batch([batch.column(index)], schema=schema))
                self.rows += batch.num_rows
        _some_rows(data, self.rows)

    def column(self, name: str) -> "pa.ChunkedArray":
        import pyarrow as pa
        from pyarrow import ipc

        with pa.OSFile(str(self.paths[name]), "rb") as source:
            return ipc.open_stream(source).read_all().column(0)


def _give_back_freed_memory() -> None:
    """Return the C allocator's free memory to the system (glibc's malloc_trim; elsewhere nothing)."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sources(ref: DataFile, cur: DataFile, names: list[str], stack: ExitStack
             ) -> tuple["_ParquetSource | _CsvSource", "_ParquetSource | _CsvSource"]:
    """Both files' sources, opened at the same time. Parsing and spilling a CSV file keeps a core
    busy (0.6 s per 170 MB), so two CSV files are parsed on two threads. A problem with the
    reference file is the one reported when both have one, as when they were opened in turn.

    The parsed blocks come from Arrow's jemalloc (or mimalloc) pool, given back when both are
    spilled: the C allocator, where the features' arrays live, fragments under the parse's
    thousands of buffers of all sizes (about 110 MB resident for 25 MB alive at once, against
    50 MB in jemalloc), and the rest of what the parse freed is returned to the system."""
    folders = {id(data): Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-bot-drift-")))
               for data in (ref, cur) if data.format == "csv"}
    pool = _parse_pool() if folders else None

    def source(data: DataFile) -> "_ParquetSource | _CsvSource":
        if data.format == "parquet":
            return _ParquetSource(data)
        return _CsvSource(data, names, folders[id(data)], pool)

    if len(folders) < 2:
        sources = source(ref), source(cur)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-spill") as helper:
            current = helper.submit(source, cur)
            reference = source(ref)
            sources = reference, current.result()
    if pool is not None:
        pool.release_unused()
    if folders:
        _give_back_freed_memory()
    return sources


def _parse_pool() -> "pa.MemoryPool | None":
    """A memory pool of Arrow's own for parsing CSV: jemalloc, or mimalloc, or None (the default)."""
    import pyarrow as pa

    for pool in (pa.jemalloc_memory_pool, pa.mimalloc_memory_pool):
        try:
            return pool()
        except NotImplementedError:
            continue
    return None


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
    from pyarrow import csv

    return csv.read_csv(data.path, read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                        convert_options=_csv_convert(names))


def _csv_convert(names: list[str]):
    import pyarrow as pa
    from pyarrow import csv

    return csv.ConvertOptions(column_types={name: pa.string() for name in names}, include_columns=names,
                              null_values=list(NULL_SPELLINGS), strings_can_be_null=True)


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
