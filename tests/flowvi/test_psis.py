"""Pareto k̂ (flowvi.psis): the generalized Pareto fit on samples of known shape, and ArviZ's k̂."""

import math

import numpy as np
import pytest

from flowvi.psis import gpd_fit, khat_reading, pareto_khat, tail_length


def gpd_sample(k: float, sigma: float, n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).uniform(size=n)
    return sigma * (u ** (-k) - 1) / k  # inverse cdf of G(x; k, σ)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.9])
def test_gpd_fit_recovers_shape_and_scale(k):
    shape, scale = gpd_fit(gpd_sample(k, 2.0, 20_000, seed=1))
    assert shape == pytest.approx(k, abs=0.04)
    assert scale == pytest.approx(2.0, rel=0.05)


def test_khat_of_light_and_heavy_weights():
    rng = np.random.default_rng(0)
    assert pareto_khat(0.3 * rng.normal(size=4000)) < 0.5  # near-constant weights
    assert pareto_khat(np.log1p(gpd_sample(0.3, 1.0, 4000, seed=2))) < 0.5
    assert pareto_khat(np.log1p(gpd_sample(1.5, 1.0, 4000, seed=3))) > 1.0
    assert pareto_khat(5.0 * rng.normal(size=4000)) > 0.7  # lognormal weights with σ = 5


def test_khat_is_invariant_to_the_scale_of_the_weights():
    lw = np.random.default_rng(4).normal(size=1000)
    assert pareto_khat(lw) == pytest.approx(pareto_khat(lw + 123.0), abs=1e-10)


def _arviz_khat(lw):
    from arviz_stats.base import array_stats

    return float(array_stats.psislw(-lw, r_eff=1.0)[1])  # psislw takes log-likelihoods (weights 1/p): −ln w


def test_khat_matches_arviz():
    pytest.importorskip("arviz_stats")
    rng = np.random.default_rng(5)
    for lw in (rng.normal(size=300), 2 * rng.normal(size=5000), np.log1p(gpd_sample(0.8, 1.0, 2000, 6)),
               rng.standard_t(3, size=100)):
        assert pareto_khat(lw) == pytest.approx(_arviz_khat(lw), abs=1e-8)


def test_khat_of_degenerate_weights_is_not_usable():
    """Weights so unequal that the tail underflows (one draw outweighs the others by e^10000; log-weights spread by
    hundreds or more): k̂ ≥ 1, never an exception (a division by zero before) nor a small k̂ fitted to a tail of
    zeros (0.03, "usable", before; arviz_stats 0.8 still gives 0.02): the tail's cutoff is floored at the smallest
    normal double, as in loo and ArviZ's former psislw, and a tail of at most 4 weights above it gives inf."""
    rng = np.random.default_rng(0)
    one_draw = np.concatenate([[0.0], -1e4 + rng.normal(size=4095)])
    assert pareto_khat(one_draw) == math.inf
    assert pareto_khat(np.concatenate([np.zeros(3), np.full(97, -800.0)])) == math.inf  # 3 weights above the floor
    for spread in (300.0, 1e3, 1e4, 1e5):
        for seed in range(3):
            khat = pareto_khat(np.random.default_rng(seed).normal(0.0, spread, 4096))
            assert khat >= 1.0, (spread, seed, khat)


def test_tail_length_and_errors():
    assert tail_length(100) == 20 and tail_length(10_000) == 300
    with pytest.raises(ValueError, match="at least 25"):
        pareto_khat(np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        pareto_khat(np.array([0.0] * 30 + [math.nan]))
    assert pareto_khat(np.zeros(100)) == math.inf  # constant weights: no tail to fit


def test_khat_with_log_weights_tied_at_the_cutoff():
    """Many equal log-weights (q ≈ p in float32) straddling the tail's cutoff: no weight of the tail falls below the
    cutoff, even for a value where libm's exp and numpy's differ by an ulp (the case fv.fit failed on)."""
    grid = -np.linspace(1e-5, 3.0, 20_001)
    mismatched = [v for v in grid if np.exp(v) < math.exp(v)]
    for v in [*mismatched[:5], -0.5]:
        lw = np.concatenate([np.full(58, v), np.linspace(v + 0.1, 0.0, 6)])  # n = 64: a tail of 12, 6 tied
        khat = pareto_khat(lw)
        assert math.isfinite(khat) and khat > 0.5  # six equal weights, then a jump: a heavy-looking tail
        assert khat == pytest.approx(pareto_khat(lw + 7.0), abs=1e-10)


def test_reading():
    assert "usable" in khat_reading(0.3) and "not usable" not in khat_reading(0.3)
    assert "unreliable" in khat_reading(0.8)
    assert "not usable" in khat_reading(1.2) and "not usable" in khat_reading(math.inf)
