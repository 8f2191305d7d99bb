r"""Pareto-k̂ diagnostic of importance weights (Pareto smoothed importance sampling).

With ``S`` importance weights ``w_s = p̃(z_s) / q(z_s)``, ``z_s ~ q``, PSIS (Vehtari, Simpson, Gelman,
Yao & Gabry, *Pareto Smoothed Importance Sampling*, JMLR 2024; arXiv:1507.02646) fits a generalized
Pareto distribution

.. math::  G(x; k, σ) = 1 − (1 + k x / σ)^{−1/k},\qquad x > 0,

to the ``M = min(S/5, 3√S)`` largest weights, measured above the ``(M+1)``-th largest. The fitted shape
``k̂`` estimates how heavy the right tail of the weight distribution is: the weights have
``1/k`` finite moments, so for ``k ≥ 1/2`` their variance is infinite, and for ``k ≥ 1`` even the mean.
Read as (Vehtari et al. 2024, §3; Yao et al. 2018, *Yes, but did it work?* for variational inference):

- ``k̂ < 0.7``: importance sampling with ``q`` is usable (and ``q`` is a fair approximation);
- ``0.7 ≤ k̂ < 1``: the estimate is unreliable (convergence far slower than ``1/√S``);
- ``k̂ ≥ 1``: not usable; the mean of the weights may not exist.

The shape and scale are estimated with the empirical-Bayes method of Zhang & Stephens (*A new and
efficient estimation method for the generalized Pareto distribution*, Technometrics 2009), with the
weakly informative prior of Vehtari et al. that shrinks ``k̂`` toward 0.5 by ``10`` pseudo-observations.
Depends only on numpy. :func:`pareto_khat` can delegate to ArviZ (``arviz_stats``) when it is installed
and asked for; our implementation is the default and is tested against it.
"""

from __future__ import annotations

import math

import numpy as np

#: the thresholds of the reading (Vehtari et al. 2024)
KHAT_GOOD, KHAT_BAD = 0.7, 1.0
#: ``ln`` of the smallest normal double: the floor of the tail's cutoff (as in ArviZ's and loo's PSIS)
LOG_TINY = math.log(np.finfo(np.float64).tiny)


def gpd_fit(x: np.ndarray) -> tuple[float, float]:
    r"""Shape ``k`` and scale ``σ`` of a generalized Pareto fitted to the positive sample ``x``.

    Zhang & Stephens (2009): with ``θ = −k/σ``, the profile log-likelihood is
    ``ℓ(θ) = n (ln(θ / k(θ)) − k(θ) − 1)`` where ``k(θ) = −mean ln(1 − θ x)`` (in our sign convention
    ``k(θ) = mean ln(1 − θ x)`` with ``θ < 0`` for heavy tails). ``θ`` is averaged over
    ``m = 30 + ⌊√n⌋`` grid points weighted by the normalized likelihood, and
    ``k = mean ln(1 − θ̂ x)``, ``σ = −k / θ̂``; finally ``k ← (n k + 10 · 0.5) / (n + 10)`` (the prior of
    Vehtari et al. 2024, Appendix C).
    """
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = x.size
    if n < 5:
        raise ValueError(f"a generalized Pareto fit needs at least 5 points, got {n}")
    if not np.all(np.isfinite(x)) or x[0] < 0:
        raise ValueError("gpd_fit needs finite non-negative values")
    if x[-1] <= 0:
        raise ValueError("gpd_fit needs at least one positive value")
    prior_bs, prior_k = 3.0, 10.0
    m = 30 + int(math.sqrt(n))
    quartile = x[int(n / 4 + 0.5) - 1]
    if quartile <= 0:
        quartile = x[x > 0][0]
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    theta = theta / (prior_bs * quartile) + 1.0 / x[-1]
    k_grid = np.log1p(-theta[:, None] * x[None, :]).mean(axis=1)
    log_lik = n * (np.log(-theta / k_grid) - k_grid - 1.0)
    weights = np.exp(log_lik - log_lik.max())
    weights /= weights.sum()
    keep = weights >= 10 * np.finfo(np.float64).eps
    weights, theta = weights[keep] / weights[keep].sum(), theta[keep]
    theta_hat = float(np.sum(theta * weights))
    k = float(np.log1p(-theta_hat * x).mean())
    sigma = -k / theta_hat if theta_hat != 0.0 else math.nan  # θ̂ = 0 only for a degenerate sample (k = 0 too)
    k = (n * k + prior_k * 0.5) / (n + prior_k)
    return k, sigma


def tail_length(n: int) -> int:
    """``M = min(⌊n/5⌋, ⌊3√n⌋)``: the number of largest weights the Pareto fit uses (r_eff = 1)."""
    return int(math.floor(3 * math.sqrt(n))) if n > 225 else n // 5


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto ``k̂`` of the importance weights ``exp(log_weights)`` (any scale: only ratios matter).

    Needs at least 25 weights (a tail of 5). Returns ``inf`` when the tail is constant, and when no more than 4
    of the ``M`` largest weights are above the smallest normal double relative to the largest (the cutoff is
    floored at :data:`LOG_TINY`, as ArviZ and loo do): one weight then outweighs the others by more than
    ``e^708``, so the importance-sampled estimates rest on a single draw. The tests check it against ArviZ's
    ``psislw`` (``arviz_stats``), which the library does not import.
    """
    lw = np.asarray(log_weights, dtype=np.float64).ravel()
    if lw.size < 25:
        raise ValueError(f"Pareto k̂ needs at least 25 importance weights, got {lw.size}")
    if not np.all(np.isfinite(lw)):
        raise ValueError("log_weights must be finite")
    m = tail_length(lw.size)
    lw = np.sort(lw - lw.max())
    # one np.exp for the cutoff and the tail, and no negative excess: with math.exp for the cutoff, a tail weight
    # tied with it (q ≈ p gives many equal float32 log-weights) could come out an ulp below it, and gpd_fit refused it
    cut, tail = lw[-m - 1], lw[-m:]
    if cut < LOG_TINY:  # the cutoff weight underflows: the tail is the weights above the floor
        cut, tail = LOG_TINY, tail[tail > LOG_TINY]
        if tail.size <= 4:
            return math.inf
    w = np.exp(np.concatenate(([cut], tail)))
    x = np.maximum(w[1:] - w[0], 0.0)
    if x[-1] - x[0] < np.finfo(np.float64).tiny:
        return math.inf
    return gpd_fit(x)[0]


def khat_reading(khat: float) -> str:
    """The reading of ``k̂`` in words (Vehtari et al. 2024): usable, unreliable or not usable."""
    if not math.isfinite(khat) or khat >= KHAT_BAD:
        return f"k̂ = {khat:.2f} ≥ {KHAT_BAD}: importance sampling with q is not usable (the weights may have no mean)"
    if khat >= KHAT_GOOD:
        return f"k̂ = {khat:.2f} in [{KHAT_GOOD}, {KHAT_BAD}): the importance-sampled estimates are unreliable"
    return f"k̂ = {khat:.2f} < {KHAT_GOOD}: usable (q covers the target well enough for importance sampling)"
