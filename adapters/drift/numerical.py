"""Drift figures of a numerical feature, from two arrays of finite values, vectorised.

The expensive part of the Wasserstein distance and of the Kolmogorov-Smirnov test is the same:
both empirical CDFs evaluated on the merged, sorted values. scipy sorts (and searches) once per
function; here each sample is sorted once and merged once, and the two CDFs, the histogram counts
and the reference range are all read off the sorted arrays. On 1,000,000 values per side this
takes about 0.05 s (numpy 2.4), against two seconds for the two scipy calls. The merge is walked in
blocks of a few MB (`_cdf_distances`), so a feature needs little more memory than its two sorted
samples.

numpy and scipy are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.drift.categorical import jensen_shannon_distance, population_stability_index
from adapters.drift.pvalues import kstwo_sf

if TYPE_CHECKING:
    import numpy as np

KS_EXACT_MAX_N = 10_000  # scipy.stats.ks_2samp's method='auto': exact up to here, asymptotic above
MIN_STD = 0.001  # the normalised Wasserstein distance divides by max(std(r), MIN_STD)


@dataclass(frozen=True)
class NumericalFigures:
    normalized_wasserstein_distance: float  # may be inf when the values are too large: see MetricResult
    jensen_shannon_distance: float | None  # None when np.histogram cannot make the bins
    population_stability_index: float | None
    two_sample_kolmogorov_smirnov_test: float
    wasserstein_distance: float
    ks_statistic: float
    reference_std: float
    bins: int
    unbinnable: str | None = None  # why the histogram figures are None


def bin_count(n_reference: int, n_current: int) -> int:
    """k = ⌈log2(min(n_r, n_c)) + 1⌉ (Sturges' rule on the smaller sample)."""
    return math.ceil(math.log2(min(n_reference, n_current)) + 1)


def numerical_figures(reference: "np.ndarray", current: "np.ndarray", *, sort_apart: bool = False,
                      in_place: bool = False) -> NumericalFigures:
    """All four drift figures. Both arrays: float64, finite, at least one value each. With
    `sort_apart`, the two samples are sorted at the same time, on two threads (numpy's sort lets go
    of the GIL): the same sorts, for a caller that computes one feature alone. With `in_place`,
    the arrays are the caller's to reorder: sorted where they are instead of copied."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):  # huge values give inf, reported as undefined
        reference_std = float(np.std(reference))        # first: its temporary is gone before the sorts

    def ordered(values: "np.ndarray") -> "np.ndarray":
        if not in_place:
            return np.sort(values)
        values.sort()
        return values

    if sort_apart:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-sort") as helper:
            sorted_current = helper.submit(ordered, current)
            r = ordered(reference)
            c = sorted_current.result()
    else:
        r = ordered(reference)
        c = ordered(current)
    n_r, n_c = r.size, c.size
    k = bin_count(n_r, n_c)
    with np.errstate(over="ignore", invalid="ignore"):  # huge values give inf, reported as undefined
        wasserstein, ks_statistic = _cdf_distances(r, c, split=sort_apart)
        histograms = _histograms(r, c, k)
    unbinnable = None
    if histograms is None:
        unbinnable = (f"np.histogram cannot make {k} bins between {min(r[0], c[0]):g} and "
                      f"{max(r[-1], c[-1]):g}")
    return NumericalFigures(
        normalized_wasserstein_distance=wasserstein / max(reference_std, MIN_STD),
        jensen_shannon_distance=jensen_shannon_distance(*histograms) if histograms else None,
        population_stability_index=population_stability_index(*histograms) if histograms else None,
        two_sample_kolmogorov_smirnov_test=_ks_pvalue(r, c, ks_statistic),
        wasserstein_distance=wasserstein,
        ks_statistic=ks_statistic,
        reference_std=reference_std,
        bins=k,
        unbinnable=unbinnable,
    )


def _cdf_distances(r: "np.ndarray", c: "np.ndarray", *, split: bool = False) -> tuple[float, float]:
    """(Wasserstein-1 distance, Kolmogorov-Smirnov statistic) of two sorted samples.

    Merges the samples (each current value after the reference values equal to it), then counts
    how many of each lie at or below every merged position. At the last of a run of equal values
    those counts are the two empirical CDFs; inside a run the next gap is zero, so they do not
    matter for the Wasserstein integral and are skipped for the KS maximum.

    The merged sequence is never built whole: it is walked in blocks of at most MERGE_BLOCK gaps
    (a few MB of arrays, not 56 MB at 1M values a side), each block's merged values and counts
    rebuilt from the sorted samples. The blocks are the nodes of numpy's pairwise summation tree
    (`_pairwise_blocks`), so the Wasserstein integral is summed exactly as np.sum sums the whole
    array of products. With `split`, the two halves of that tree are walked on two threads.
    """

    n_r, n_c = r.size, c.size
    gaps = n_r + n_c - 1
    scale = float(n_r) * float(n_c)
    if split and gaps > MERGE_BLOCK:
        from concurrent.futures import ThreadPoolExecutor

        middle = _pairwise_split(gaps)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-merge") as helper:
            second = helper.submit(_merged_block_figures, r, c, middle, gaps)
            first = _merged_block_figures(r, c, 0, middle)
            (sum_1, max_1), (sum_2, max_2) = first, second.result()
        total, largest = sum_1 + sum_2, max(max_1, max_2)
    else:
        total, largest = _merged_block_figures(r, c, 0, gaps)
    # the largest |F_r − F_c|·n_r·n_c at a run's end (all are >= 0: no run end at all gives 0)
    return float(total) / scale, float(largest) / scale if largest >= 0 else 0.0


MERGE_BLOCK = 1 << 16  # gaps per block of the merged sequence (a leaf of np.sum's pairwise tree, >= 128)


def _pairwise_split(n: int) -> int:
    """Where numpy's pairwise summation splits n > 128 values: half, rounded down to a multiple of 8."""
    half = n // 2
    return half - half % 8


def _pairwise_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) cut as np.sum's pairwise recursion cuts it, down to blocks of at most MERGE_BLOCK:
    summing each block with np.sum and adding the sums back up that tree gives np.sum of the whole."""
    if hi - lo <= MERGE_BLOCK:
        return [(lo, hi)]
    middle = lo + _pairwise_split(hi - lo)
    return _pairwise_blocks(lo, middle) + _pairwise_blocks(middle, hi)


def _merged_block_figures(r: "np.ndarray", c: "np.ndarray", lo: int, hi: int) -> tuple["np.floating", int]:
    """(Σ |F_r − F_c|·n_r·n_c·gap, the largest |F_r − F_c|·n_r·n_c at a run's end, or -1 if none)
    over the gaps lo..hi-1 of the merged sequence (gap g: merged[g + 1] − merged[g]), summed in
    np.sum's pairwise order."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):  # per thread: a helper thread needs its own
        return _merged_blocks(r, c, lo, hi)


def _merged_blocks(r: "np.ndarray", c: "np.ndarray", lo: int, hi: int) -> tuple["np.floating", int]:
    import numpy as np

    n_r, n_c = r.size, c.size
    blocks = _pairwise_blocks(lo, hi)
    # How many current values the merged sequence holds before each block's first and after its
    # last position (block [start, end) of gaps spans merged[start..end]).
    edges = np.array([start for start, _ in blocks] + [end + 1 for _, end in blocks], dtype=np.int64)
    before = _currents_before(r, c, edges)
    sums = []
    largest = -1
    for index, (start, end) in enumerate(blocks):
        # merged[start..end]: current values j_lo..j_hi-1 and reference values i_lo..i_hi-1
        j_lo, j_hi = int(before[index]), int(before[len(blocks) + index])
        i_lo, i_hi = start - j_lo, end + 1 - j_hi
        current = c[j_lo:j_hi]
        # how many reference values are <= each current value: between i_lo and i_hi, so searched
        # for in that window of r only (the same counts, a window that fits in the cache)
        position = np.searchsorted(r[i_lo:i_hi], current, side="right")
        position += np.arange(i_lo + j_lo - start, i_lo + j_hi - start)
        # F_r − F_c, scaled by n_r·n_c to stay in exact integers: each reference value adds n_c,
        # each current value takes away n_r; the sums start from the values before the block.
        step = np.full(end + 1 - start, n_c, dtype=np.int64)
        step[position] = -n_r
        merged = np.empty(end + 1 - start, dtype=np.float64)
        merged[position] = current
        merged[step > 0] = r[i_lo:i_hi]
        del position
        gaps = np.diff(merged)
        del merged
        scaled_gap = np.cumsum(step[:-1])
        del step
        scaled_gap += i_lo * n_c - j_lo * n_r
        np.abs(scaled_gap, out=scaled_gap)
        run_ends = gaps != 0
        if run_ends.any():
            largest = max(largest, int(np.max(scaled_gap, where=run_ends, initial=0)))
        # np.sum, not np.dot: BLAS threads would fight the engine's own threads (and sum pairwise).
        sums.append(np.sum(np.multiply(scaled_gap, gaps, out=gaps)))
    return _pairwise_total(sums, blocks, lo, hi), largest


def _pairwise_total(sums: list, blocks: list[tuple[int, int]], lo: int, hi: int) -> "np.floating":
    """The blocks' sums added back up np.sum's pairwise tree over [lo, hi)."""
    index = {block: position for position, block in enumerate(blocks)}

    def total(start: int, end: int):
        if (start, end) in index:
            return sums[index[(start, end)]]
        middle = start + _pairwise_split(end - start)
        return total(start, middle) + total(middle, end)

    return total(lo, hi)


def _currents_before(r: "np.ndarray", c: "np.ndarray", positions: "np.ndarray") -> "np.ndarray":
    """For each merged position m, how many current values the merged sequence holds before it.

    Current value j sits at merged position searchsorted(r, c[j], 'right') + j, which grows with
    j: a binary search over j for all positions at once (about log2(n_c) vectorised steps)."""
    import numpy as np

    low = np.zeros(positions.size, dtype=np.int64)
    high = np.full(positions.size, c.size, dtype=np.int64)
    while True:
        open_ = low < high
        if not open_.any():
            return low
        middle = (low + high) // 2
        probe = np.minimum(middle, c.size - 1)
        before = np.searchsorted(r, c[probe], side="right") + probe < positions
        low = np.where(open_ & before, middle + 1, low)
        high = np.where(open_ & ~before, middle, high)


def _histograms(r: "np.ndarray", c: "np.ndarray", k: int) -> tuple["np.ndarray", "np.ndarray"] | None:
    """np.histogram(x, bins=k, range=(lo, hi)) of both sorted samples, read by binary search.

    np.histogram puts x in bin i when edge_i <= x < edge_i+1, the last bin closed on the right; the
    edges are np.histogram_bin_edges' (which widens an empty range by 0.5 on each side). None
    where numpy refuses: a range too wide (overflow) or too narrow for k distinct edges.
    """
    import numpy as np

    lo = min(r[0], c[0])
    hi = max(r[-1], c[-1])
    try:
        edges = np.histogram_bin_edges(np.empty(0, dtype=np.float64), bins=k, range=(lo, hi))
    except ValueError:
        return None
    if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0)):
        return None
    return _counts_in_bins(r, edges), _counts_in_bins(c, edges)


def _counts_in_bins(sorted_values: "np.ndarray", edges: "np.ndarray") -> "np.ndarray":
    import numpy as np

    starts = np.searchsorted(sorted_values, edges[:-1], side="left")
    return np.diff(np.append(starts, sorted_values.size))


def _ks_pvalue(r: "np.ndarray", c: "np.ndarray", statistic: float) -> float:
    """The p-value scipy.stats.ks_2samp(r, c) returns with its default method.

    Up to KS_EXACT_MAX_N values per side scipy computes the exact distribution (cheap at that
    size, and subtle): call it. Above, scipy uses kstwo.sf(D, round(n_r·n_c/(n_r + n_c))), which
    needs only the statistic already computed from the shared sort (`pvalues.kstwo_sf`: the same
    figure without importing scipy.stats).
    """
    import numpy as np

    if max(r.size, c.size) <= KS_EXACT_MAX_N:
        from scipy import stats

        return float(stats.ks_2samp(r, c).pvalue)
    m, n = sorted([float(r.size), float(c.size)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo_sf(statistic, np.round(en)), 0.0, 1.0))
