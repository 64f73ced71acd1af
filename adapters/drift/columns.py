"""From raw columns to what the metrics need: finite numbers, or category counts.

A column is *numerical* when every non-null reference value parses as a number (Arrow's decimal
parser: `12`, `-1.5e3`, `.5`, `nan`, `inf`), unless it is named categorical; otherwise it is
*categorical* and its values are compared as strings. When the reference has no values at all,
the current column decides the kind the same way.

Missing values: nulls, empty strings and, in numerical columns, NaN and ±inf. A current value of a
numerical column that does not parse as a number is not missing: it is a value outside the
reference's range (counted by `out_of_bounds_rate`, left out of the distances).

Columns may be numpy arrays, Python sequences, or pyarrow arrays (as read from CSV or Parquet).
numpy and pyarrow are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.drift.errors import UnsupportedColumn

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

# Arrow's string-to-float64 cast accepts exactly these (checked against Arrow in the tests).
SAMPLE = 1024  # values cast first when checking whether a column is all numbers
NUMBER_PATTERN = (r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                  r"|(?i:nan(?:\([0-9A-Za-z_]*\))?|inf|infinity))$")


@dataclass(frozen=True)
class NumericalColumn:
    values: "np.ndarray"  # float64, finite, in row order until the engine sorts it in place (its own array)
    rows: int
    nulls: int  # null, empty, NaN or ±inf
    not_numbers: int = 0  # non-null values that are not numbers (only ever in a current column)


@dataclass(frozen=True)
class CategoricalColumn:
    categories: "pa.Array"  # distinct non-null values, as strings
    counts: "np.ndarray"  # int64, one per category
    rows: int
    nulls: int

    @property
    def values(self) -> int:
        return self.rows - self.nulls


@dataclass(frozen=True)
class PreparedPair:
    kind: str  # "numerical" | "categorical"
    reference: NumericalColumn | CategoricalColumn
    current: NumericalColumn | CategoricalColumn
    notes: tuple[str, ...] = ()


def prepare(name: str, reference: Any, current: Any, categorical: bool = False) -> PreparedPair:
    """Decide the kind of one feature from its reference column and convert both columns."""
    r = _normalise(name, reference)
    c = _normalise(name, current)
    if categorical:
        return PreparedPair("categorical", _categories(_as_strings(r)), _categories(_as_strings(c)))
    r_numbers = r if _is_numbers(r) else _all_numbers(r)
    if r_numbers is not None and _non_null(r_numbers) == 0:
        # Nothing to learn from the reference: let the current column decide the kind.
        c_numbers = c if _is_numbers(c) else _all_numbers(c)
        note = "the reference has no values; the current column decided the kind"
        if c_numbers is None:
            return PreparedPair("categorical", _categories(_as_strings(r)), _categories(c), (note,))
        return PreparedPair("numerical", _numerical(r_numbers), _numerical(c_numbers), (note,))
    if r_numbers is None:
        return PreparedPair("categorical", _categories(r), _categories(_as_strings(c)))
    if _is_numbers(c):
        return PreparedPair("numerical", _numerical(r_numbers), _numerical(c))
    c_numbers, not_numbers = _some_numbers(c)
    notes = (f"{not_numbers:,} current value{'s are' if not_numbers != 1 else ' is'} not "
             "a number (counted as out of bounds)",) if not_numbers else ()
    return PreparedPair("numerical", _numerical(r_numbers), _numerical(c_numbers, not_numbers), notes)


# ---------------------------------------------------------------- normalising inputs


def _normalise(name: str, column: Any) -> "np.ndarray | pa.ChunkedArray":
    """A float64 numpy array (numbers, NaN for missing) or a chunked Arrow array of strings."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, np.ndarray) and column.dtype.kind in "fiu":
        return column.astype(np.float64).ravel()          # a copy: the engine sorts its arrays in place
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if not isinstance(column, pa.ChunkedArray):
        column = pa.chunked_array([_arrow_from_python(column)])
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64()).to_numpy()
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.nulls(len(column), pa.string())])
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise UnsupportedColumn(f"column {name!r} has type {kind}, which the drift engine cannot "
                                    "compare (numbers or categories only)") from error
    elif pa.types.is_large_string(kind):
        column = pc.cast(column, pa.string())
    # An empty string is a missing value (a copy of the column only when it has one: a CSV column
    # never does, its reader already reads an empty field as null).
    empty = pc.equal(column, "")
    if not pc.any(empty).as_py():
        return column
    return pc.if_else(empty, pa.scalar(None, pa.string()), column)


def _arrow_from_python(values: Any) -> "pa.Array":
    """pa.array of a sequence or object array; values of mixed types are compared as strings."""
    import numpy as np
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if _missing(v) else str(v) for v in np.asarray(values, dtype=object).ravel()],
                        type=pa.string())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _is_numbers(column: Any) -> bool:
    import numpy as np

    return isinstance(column, np.ndarray)


def _non_null(numbers: "np.ndarray") -> int:
    import numpy as np

    return int(np.count_nonzero(np.isfinite(numbers)))


# ---------------------------------------------------------------- numbers


def _all_numbers(strings: "pa.ChunkedArray") -> "np.ndarray | None":
    """The column as float64 (NaN for missing) if every non-null value parses, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        # A failing cast of a long column is slow (about 0.6 s per million strings): try a
        # thousand values first, which settles most text columns at once.
        pc.cast(strings.slice(0, SAMPLE), pa.float64())
        return pc.cast(strings, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        return None


def _some_numbers(strings: "pa.ChunkedArray") -> tuple["np.ndarray", int]:
    """The values that parse as numbers (NaN elsewhere), and how many non-null values do not."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = _all_numbers(strings)
    if numbers is not None:
        return numbers, 0
    looks_numeric = pc.match_substring_regex(strings, NUMBER_PATTERN)
    candidates = pc.if_else(looks_numeric, strings, pa.scalar(None, pa.string()))
    not_numbers = candidates.null_count - strings.null_count  # non-null, yet not a candidate
    numbers = _all_numbers(candidates)
    if numbers is None:  # the pattern let through something Arrow refuses: parse one by one
        parsed = [_parse_one(value) for value in candidates.to_pylist()]
        not_numbers += sum(1 for value, refused in parsed if refused)
        numbers = np.array([value for value, _ in parsed], dtype=np.float64)
    return numbers, not_numbers


def _parse_one(value: str | None) -> tuple[float, bool]:
    """(the number, whether Arrow refused it) for one string; NaN for null or refused."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if value is None:
        return float("nan"), False
    try:
        return pc.cast(pa.array([value]), pa.float64())[0].as_py(), False
    except pa.ArrowInvalid:
        return float("nan"), True


def _numerical(numbers: "np.ndarray", not_numbers: int = 0) -> NumericalColumn:
    """The finite values, in an array of the engine's own. `numbers` is either a copy made here (a
    caller's numpy array is copied by `_normalise`; Arrow's to_numpy copies when it must, and its
    copies are writeable) or a read-only view of Arrow's memory, copied now: the sort would copy it
    anyway, and the view's buffer is let go of as soon as `prepare` returns."""
    import numpy as np

    finite = np.isfinite(numbers)
    if not finite.all():
        values = numbers[finite]
    else:
        values = numbers if numbers.flags.writeable else numbers.copy()
    return NumericalColumn(values=values, rows=int(numbers.size),
                           nulls=int(numbers.size - values.size) - not_numbers, not_numbers=not_numbers)


# ---------------------------------------------------------------- categories


def _as_strings(column: "np.ndarray | pa.ChunkedArray") -> "pa.ChunkedArray":
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, np.ndarray):
        finite = np.where(np.isfinite(column), column, np.nan)
        return pc.cast(pa.chunked_array([pa.array(finite, from_pandas=True)]), pa.string())
    return column


def _categories(strings: "pa.ChunkedArray") -> CategoricalColumn:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    present = strings.drop_null()
    if len(present) == 0:
        return CategoricalColumn(pa.array([], pa.string()), np.zeros(0, dtype=np.int64), len(strings), len(strings))
    counted = pc.value_counts(present)
    return CategoricalColumn(categories=counted.field("values"), counts=counted.field("counts").to_numpy(),
                             rows=len(strings), nulls=strings.null_count)


def aligned_counts(reference: CategoricalColumn, current: CategoricalColumn) -> tuple["np.ndarray", "np.ndarray"]:
    """Both count vectors over the union of categories (reference's first, then new current ones)."""
    import numpy as np
    import pyarrow as pa

    union = pa.concat_arrays([reference.categories, current.categories]).dictionary_encode()
    index = union.indices.to_numpy(zero_copy_only=False)
    k = len(union.dictionary)
    counts_r = np.zeros(k, dtype=np.int64)
    counts_c = np.zeros(k, dtype=np.int64)
    counts_r[index[:len(reference.categories)]] = reference.counts
    counts_c[index[len(reference.categories):]] = current.counts
    return counts_r, counts_c
