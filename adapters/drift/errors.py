"""Errors of the drift engine and its file reader.

A degenerate column (no values on one side, a single category, zero variance) is not an error:
its figures are defined or marked undefined with a reason (see `results.MetricResult`). Errors
are for input the engine cannot compare at all::

    DriftError                    anything the engine refuses
    └── DriftInputError           the input files or columns cannot be compared (CLI exit status 2)
        ├── UnreadableFile        missing, not CSV or Parquet, or not parseable
        ├── NoRows                a file with a header but no data rows
        ├── MissingColumn         a requested or reference column absent from a file
        └── UnsupportedColumn     a column type the engine cannot compare (lists, structs, ...)
"""

from __future__ import annotations


class DriftError(Exception):
    """The drift engine refused its input."""


class DriftInputError(DriftError):
    """The input files or columns cannot be compared; the message is one line for a person."""


class UnreadableFile(DriftInputError):
    pass


class NoRows(DriftInputError):
    pass


class MissingColumn(DriftInputError):
    pass


class UnsupportedColumn(DriftInputError):
    pass
