"""Drift figures over counts: per category for categorical features, per bin for numerical ones.

`jensen_shannon_distance` and `population_stability_index` take the two count vectors over the
same bins (or categories); numerical features reuse them on their histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.drift.pvalues import chi2_contingency_pvalue

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class CategoricalFigures:
    jensen_shannon_distance: float
    population_stability_index: float
    pearsons_chi_squared_test: float
    categories: int


def jensen_shannon_distance(counts_r: "np.ndarray", counts_c: "np.ndarray") -> float:
    """scipy.spatial.distance.jensenshannon(counts_r, counts_c, base=2), no smoothing.

    Computed the same way (normalise, relative entropies to the midpoint, divide by ln 2, square
    root) but never NaN: a sum that rounding makes a hair below zero gives 0.
    """
    import numpy as np

    p = counts_r / np.sum(counts_r)
    q = counts_c / np.sum(counts_c)
    m = (p + q) / 2.0
    divergence = (_relative_entropy(p, m) + _relative_entropy(q, m)) / math.log(2)
    return math.sqrt(max(divergence / 2.0, 0.0))


def _relative_entropy(p: "np.ndarray", m: "np.ndarray") -> float:
    """Σ p·ln(p/m) over p > 0 (scipy.special.rel_entr summed; m > 0 wherever p > 0)."""
    import numpy as np

    nonzero = p > 0
    p, m = p[nonzero], m[nonzero]
    return float(np.sum(p * np.log(p / m)))


def population_stability_index(counts_r: "np.ndarray", counts_c: "np.ndarray") -> float:
    """Σ (q_i − p_i)·ln(q_i / p_i), p_i = (count_r,i + 1)/(n_r + k), q_i = (count_c,i + 1)/(n_c + k)."""
    import numpy as np

    k = counts_r.size
    p = (counts_r + 1) / (np.sum(counts_r) + k)
    q = (counts_c + 1) / (np.sum(counts_c) + k)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_squared_pvalue(counts_r: "np.ndarray", counts_c: "np.ndarray") -> float:
    """The p-value of scipy.stats.chi2_contingency([counts_r, counts_c], correction=False), computed
    as scipy does without importing scipy.stats (`pvalues.chi2_contingency_pvalue`).

    With a single category the table has no degrees of freedom and scipy answers 1.0.
    """
    return chi2_contingency_pvalue(counts_r, counts_c)


def categorical_figures(counts_r: "np.ndarray", counts_c: "np.ndarray") -> CategoricalFigures:
    """All three figures over the union of categories; both samples have at least one value."""
    return CategoricalFigures(
        jensen_shannon_distance=jensen_shannon_distance(counts_r, counts_c),
        population_stability_index=population_stability_index(counts_r, counts_c),
        pearsons_chi_squared_test=chi_squared_pvalue(counts_r, counts_c),
        categories=int(counts_r.size),
    )
