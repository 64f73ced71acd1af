"""The engine's two p-values, computed without scipy.stats, equal scipy.stats' to the last bit.

`adapters.drift.pvalues` repeats the branches of scipy.stats.kstwo.sf and chi2_contingency that
big samples reach, so that `mlops-bot drift` need not import scipy.stats (half a second, 65 MB).
Exact equality over grids that reach each branch; the branches left to scipy.stats are counted.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from adapters.drift import pvalues


def scipy_kstwo_sf(d: float, n: float) -> float:
    return float(stats.kstwo.sf(d, n))


@pytest.fixture
def left_to_scipy(monkeypatch):
    """(d, n) of the calls passed on to scipy.stats."""
    calls: list[tuple[float, float]] = []

    def counted(d, n):
        calls.append((d, n))
        return scipy_kstwo_sf(d, n)

    monkeypatch.setattr(pvalues, "_scipy_kstwo_sf", counted)
    return calls


@pytest.mark.parametrize("n", [141.0, 5_000.0, 30_000.0, 100_001.0, 487_613.0, 4_000_000.0])
def test_kstwo_sf_equals_scipy_around_the_centre_and_in_the_tail(n, left_to_scipy):
    """n·d² from 1e-3 to 500: the Pelz-Good series, 2·smirnov, zero, and the Durbin matrix (left to
    scipy). smirnov takes up to half a second for n in the hundreds of thousands: few tail points there."""
    centre = np.geomspace(1e-3, 2.19, 80)
    tail = [2.2, 3.0, 50.0, 369.9, 370.0, 371.0, 500.0] if n < 50_000 or n > 1e6 else [2.2, 369.9, 371.0]
    for d in np.sqrt(np.concatenate([centre, tail]) / n):
        assert pvalues.kstwo_sf(float(d), n) == scipy_kstwo_sf(float(d), n), (d, n)
    if n > 100_000:
        assert left_to_scipy == []                                # big samples never need scipy.stats


def test_kstwo_sf_equals_scipy_at_the_edges(left_to_scipy):
    rng = np.random.default_rng(3)
    cases = [(0.0, 500_000.0), (1e-7, 500_000.0), (0.5 / 500_000, 500_000.0), (1.0, 500_000.0),
             (0.999, 500_000.0), (0.5, 500_000.0), (0.7, 1000.0), (0.6, 150.0), (0.3, 20.0), (0.01, 1.0),
             (1.5 / 300, 300.0), (298.5 / 300, 300.0), (0.05, 140.0), (0.05, 141.0), (1e-4, 100_000.0),
             (1e-4, 100_001.0)]
    cases += [(float(d), float(np.round(n))) for d, n in zip(rng.uniform(0, 1, 300), rng.uniform(1, 3e6, 300))]
    for d, n in cases:
        assert pvalues.kstwo_sf(d, n) == scipy_kstwo_sf(d, n), (d, n)
    assert left_to_scipy                                          # small n and the ends: scipy's own code


def test_the_engines_ks_pvalue_is_the_one_it_took_from_scipy_stats():
    """The path the engine takes: ks_2samp's asymptotic p-value, kstwo.sf(D, round(n_r·n_c/(n_r + n_c)))
    of the statistic computed from the shared sort, clipped to [0, 1]."""
    from adapters.drift.numerical import numerical_figures

    rng = np.random.default_rng(8)
    for n_r, n_c, shift in [(20_000, 15_000, 0.0), (20_000, 15_000, 0.02), (120_000, 90_000, 0.0),
                            (120_000, 90_000, 0.01), (30_000, 10_001, 0.3)]:
        r, c = np.round(rng.normal(0, 1, n_r), 3), np.round(rng.normal(shift, 1, n_c), 3)
        figures = numerical_figures(r, c)
        n = np.round(float(n_r) * float(n_c) / float(n_r + n_c))
        expected = float(np.clip(stats.kstwo.sf(figures.ks_statistic, n), 0.0, 1.0))
        assert figures.two_sample_kolmogorov_smirnov_test == expected


def test_chi2_contingency_pvalue_equals_scipy():
    rng = np.random.default_rng(4)
    for _ in range(400):
        k = int(rng.integers(1, 80))
        scale = int(rng.choice([5, 1_000, 1_000_000, 1_000_000_000]))
        counts_r, counts_c = rng.integers(0, scale, k), rng.integers(0, scale, k)
        counts_r[rng.random(k) < 0.2] = 0
        counts_c[rng.random(k) < 0.2] = 0
        counts_r[(counts_r + counts_c) == 0] = 1                # every category seen on one side at least
        if counts_r.sum() == 0 or counts_c.sum() == 0:
            continue
        expected = stats.chi2_contingency(np.vstack([counts_r, counts_c]), correction=False).pvalue
        assert pvalues.chi2_contingency_pvalue(counts_r, counts_c) == float(expected), (counts_r, counts_c)
    assert pvalues.chi2_contingency_pvalue(np.array([7]), np.array([3])) == 1.0       # one category: no dof


def test_the_engine_does_not_import_scipy_stats_on_big_samples():
    code = ("import sys, numpy as np; from adapters.drift import compare\n"
            "rng = np.random.default_rng(1)\n"
            "compare({'x': rng.normal(0, 1, 200_000), 'k': ['a', 'b'] * 100_000},\n"
            "        {'x': rng.normal(0.1, 1, 200_000), 'k': ['a', 'c'] * 100_000})\n"
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
