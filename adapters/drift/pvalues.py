"""The two p-values the engine reports, as scipy.stats computes them, from scipy.special alone.

Importing scipy.stats takes about half a second and 65 MB of memory (it builds a hundred
distribution objects); `mlops-bot drift` on big files needs only two of its formulas:

- `kstwo_sf(d, n)`: scipy.stats.kstwo.sf(d, n), the asymptotic p-value of the two-sample
  Kolmogorov-Smirnov test (ks_2samp above 10,000 values a side). The branches that big samples
  reach are repeated here exactly (scipy/stats/_ksstats.py `_kolmogn`: 2·smirnov(n, d) in the
  tail, the Pelz-Good series below it); the others (the Durbin matrix for n <= 100,000 near the
  centre, Ruben-Gambino at the very ends) are left to scipy.stats itself.
- `chi2_contingency_pvalue(counts_r, counts_c)`: scipy.stats.chi2_contingency on the 2 x k table,
  correction=False: Pearson's statistic over the expected frequencies, then chdtrc(k - 1, stat).

Every operation is scipy's own, in scipy's order and on the same types, so the results are equal
to the last bit (tests/unit/test_drift_pvalues.py checks both against scipy.stats over grids that
reach every branch). numpy and scipy are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# scipy/stats/_ksstats.py's thresholds: the Pelz-Good series gives up below exp(_MIN_LOG); up to
# _SMALL_N `_kolmogn` uses exact formulas, and up to _PELZ_GOOD_FROM_N near the centre the Durbin
# matrix (both left to scipy.stats)
_MIN_LOG = -708
_SMALL_N = 140
_PELZ_GOOD_FROM_N = 100_000


def kstwo_sf(d: float, n: float) -> float:
    """scipy.stats.kstwo.sf(d, n): P(D_n > d) for the two-sided one-sample statistic, n >= 1 whole."""
    import numpy as np

    n_int = int(n)
    x = np.asarray(d, dtype=np.float64)             # scipy's rv_continuous.sf: x as a float64 array
    if np.isnan(x) or n_int != n or n_int < 1:
        return _scipy_kstwo_sf(d, n)
    if x <= 0.5 / n:                                # at or below the support: sf = 1
        return 1.0
    if x >= 1.0:                                    # at or above it: sf = 0
        return 0.0
    value = _kolmogn_sf(n_int, x)
    if value is None:
        return _scipy_kstwo_sf(d, n)
    return float(value)


def _scipy_kstwo_sf(d: float, n: float) -> float:
    from scipy import stats

    return float(stats.kstwo.sf(d, n))


def _kolmogn_sf(n: int, x: "np.ndarray") -> "np.floating | float | None":
    """scipy's `_kolmogn(n, x, cdf=False)` for 0.5/n < x < 1, where it needs scipy.special only;
    None where it would take another branch."""
    import numpy as np

    t = n * x
    if t <= 1.0 or t >= n - 1 or n <= _SMALL_N:     # Ruben-Gambino, and the small-n branches
        return None
    if x >= 0.5:                                    # exact: 2·smirnov
        return _twice_smirnov(n, x)
    nxsquared = t * x
    if nxsquared >= 370.0:
        return 0.0
    if nxsquared >= 2.2:
        return _twice_smirnov(n, x)
    if n <= _PELZ_GOOD_FROM_N and n * x**1.5 <= 1.4:  # the Durbin matrix: left to scipy.stats
        return None
    cdfprob = _kolmogn_pelz_good(n, x)
    return np.clip(1.0 - cdfprob, 0.0, 1.0)


def _twice_smirnov(n: int, x: "np.ndarray") -> "np.floating":
    """2·smirnov(n, x), clipped to [0, 1]: linear in n (half a second at n = 500,000)."""
    import numpy as np
    import scipy.special

    return np.clip(2 * scipy.special.smirnov(n, x), 0.0, 1.0)


def _kolmogn_pelz_good(n: int, x: "np.ndarray") -> float:
    """scipy/stats/_ksstats.py `_kolmogn_PelzGood(n, x, cdf=True)`, line for line (BSD-3-Clause,
    Copyright (c) 2001-2002 Enthought, Inc. 2003, SciPy Developers): the Pelz-Good approximation
    of P(D_n <= x), called for 0 < x < 1."""
    import numpy as np

    pi_squared, pi_four, pi_six = np.pi ** 2, np.pi ** 4, np.pi ** 6
    sqrt_2pi, sqrt3 = np.sqrt(2 * np.pi), np.sqrt(3)
    z = np.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z**2, z**3, z**4, z**6

    qlog = -pi_squared / 8 / zsquared
    if qlog < _MIN_LOG:  # z ~ 0.041743441416853426
        return 0.0

    q = np.exp(qlog)

    k1a = -zsquared
    k1b = pi_squared / 4

    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * pi_squared / 4
    k2c = pi_four * (1 - 2 * zsquared) / 16

    k3d = pi_six * (5 - 30 * zsquared) / 64
    k3c = pi_four * (-60 * zsquared + 212 * zfour) / 16
    k3b = pi_squared * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z**8

    k0to3 = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        msquared, mfour, msix = m**2, m**4, m**6
        qpower = np.power(q, 8 * k)
        coeffs = np.array([1.0,
                           k1a + k1b*msquared,
                           k2a + k2b*msquared + k2c*mfour,
                           k3a + k3b*msquared + k3c*mfour + k3d*msix])
        k0to3 *= qpower
        k0to3 += coeffs
    k0to3 *= q
    k0to3 *= sqrt_2pi
    k0to3 /= np.array([z, 6 * zfour, 72 * z**7, 6480 * z**10])

    q = np.exp(-pi_squared / 2 / zsquared)
    ks = np.arange(maxk, 0, -1)
    ksquared = ks ** 2
    sqrt3z = sqrt3 * z
    kspi = np.pi * ks
    qpwers = q ** ksquared
    k2extra = np.sum(ksquared * qpwers)
    k2extra *= pi_squared * sqrt_2pi / (-36 * zthree)
    k0to3[2] += k2extra
    k3extra = np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwers)
    k3extra *= pi_squared * sqrt_2pi / (216 * zsix)
    k0to3[3] += k3extra
    powers_of_n = np.power(n * 1.0, np.arange(len(k0to3)) / 2.0)
    k0to3 /= powers_of_n
    return sum(k0to3)


def chi2_contingency_pvalue(counts_r: "np.ndarray", counts_c: "np.ndarray") -> float:
    """scipy.stats.chi2_contingency(np.vstack([counts_r, counts_c]), correction=False).pvalue for
    two count vectors over the same k categories, each side with at least one count."""
    import numpy as np
    import scipy.special

    observed = np.vstack([counts_r, counts_c])
    if observed.size == 0 or np.any(observed < 0):
        return _scipy_chi2_contingency_pvalue(observed)
    table = np.asarray(observed, dtype=np.float64)
    # scipy.stats.contingency.expected_freq: the product of the margins over the total
    expected = (np.sum(table, axis=1, keepdims=True) * np.sum(table, axis=0, keepdims=True)) / table.sum() ** 1
    if np.any(expected == 0):
        return _scipy_chi2_contingency_pvalue(observed)       # scipy refuses the table: let it say so
    dof = expected.size - sum(expected.shape) + expected.ndim - 1
    if dof == 0:
        return 1.0
    # scipy.stats.power_divergence, lambda_=1 (Pearson), every cell; the p-value is chi2's sf
    terms = (table - expected)**2 / expected
    statistic = np.sum(terms)
    return float(scipy.special.chdtrc(np.float64(dof), statistic))


def _scipy_chi2_contingency_pvalue(observed: "np.ndarray") -> float:
    from scipy import stats

    return float(stats.chi2_contingency(observed, correction=False).pvalue)
