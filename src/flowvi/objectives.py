"""Objectives: the flow free energy (eq. 15), its annealed form (eq. 20), and the importance-
sampled marginal likelihood ``ln p(x)`` (sections 4.2 and 6.2).

``log_joint`` is any callable mapping latents ``z`` of shape ``(S, *batch, D)`` to
``ln p(x, z)`` of shape ``(S, *batch)`` (for the 2-D energies, ``−U(z)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from .validation import NonFiniteError, check_values

LogJoint = Callable[[Tensor], Tensor]


class FlowDistribution(Protocol):
    def rsample_and_log_prob(self, sample_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]: ...


def _check_log_joint(value: Tensor, expected: torch.Size) -> Tensor:
    if value.shape != expected:
        raise ValueError(f"log_joint returned shape {tuple(value.shape)}, expected {tuple(expected)}")
    return value


def free_energy(q: FlowDistribution, log_joint: LogJoint, n_samples: int = 1, beta: float = 1.0) -> Tensor:
    r"""Monte Carlo estimate of the (annealed) flow free energy, per data point.

    ``F^β(x) = E_{q_0}[ln q_0(z_0) − Σ_k ln|det ∂f_k/∂z_{k−1}|] − β E_{q_0}[ln p(x, z_K)]``:
    eq. (15) for ``β = 1``, eq. (20) for an inverse temperature ``β = β_t``.
    Returns a tensor of the posterior's batch shape; ``−F`` (β = 1) is the ELBO.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    _check_beta(beta)
    z, log_q = q.rsample_and_log_prob((n_samples,))
    log_p = _check_log_joint(log_joint(z), log_q.shape)
    check_values(lambda: [("log_joint(z) has {n} NaN entries", torch.isnan(log_p))])  # -inf (p = 0) is allowed
    return (log_q - beta * log_p).mean(0)


def _check_beta(beta: float | Tensor) -> None:
    if isinstance(beta, Tensor):
        check_values(lambda: [("beta has {n} non-finite or negative entries", ~(torch.isfinite(beta) & (beta >= 0)))])
    elif not (math.isfinite(beta) and beta >= 0):
        raise NonFiniteError(f"beta (the inverse temperature of eq. 20) must be finite and >= 0, got {beta}")


@dataclass(frozen=True)
class LinearAnnealing:
    """Inverse temperature ``β_t = min(1, start + t / steps)`` (eq. 20; the default of section 6.2).

    Args:
        start: ``β_0``. steps: updates from ``β_0`` to 1 (0 or less: ``β_t = 1`` throughout).

    >>> beta = fv.LinearAnnealing(start=0.01, steps=10_000)
    >>> [round(beta(t), 4) for t in (0, 5_000, 20_000)]
    [0.01, 0.51, 1.0]
    """

    start: float = 0.01
    steps: int = 10_000

    def __call__(self, t: int) -> float:
        if self.steps <= 0:
            return 1.0
        return min(1.0, self.start + t / self.steps)


class ImportanceEstimate(NamedTuple):
    """What :func:`importance_log_marginal` returns, per data point.

    Attributes:
        log_marginal: ``ln (1/S Σ_s p(x, z_s)/q(z_s))``, the importance-sampled ``ln p(x)``.
        elbo: ``1/S Σ_s [ln p(x, z_s) − ln q(z_s)]`` from the same samples (``≤ log_marginal``).

    >>> q = fv.NormalizingFlow(2, [], base=fv.StandardNormal(2))()          # q = N(0, I)
    >>> log_joint = lambda z: torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)   # p = q
    >>> est = fv.importance_log_marginal(q, log_joint, n_samples=100)
    >>> abs(est.log_marginal.item()) < 1e-5, abs(est.elbo.item()) < 1e-5     # ln p(x) = 0 exactly
    (True, True)
    """

    log_marginal: Tensor  #: ``ln (1/S Σ_s p(x, z_s)/q(z_s))``, per data point
    elbo: Tensor  #: ``1/S Σ_s [ln p(x, z_s) − ln q(z_s)]``, per data point (the same samples)


def importance_log_marginal(
    q: FlowDistribution, log_joint: LogJoint, n_samples: int = 200, chunk_size: int = 100
) -> ImportanceEstimate:
    """Importance-sampled ``ln p(x)`` with ``q`` as proposal (section 6.2), in bounded memory.

    Samples are drawn ``chunk_size`` at a time and combined with a running log-sum-exp, so
    memory does not grow with ``n_samples``. Runs without gradients. Zero weights (``ln w = −inf``,
    samples where ``p(x, z) = 0``) are allowed as long as one weight per data point is positive; the
    ELBO of such a point is then ``−inf``.
    """
    if n_samples < 1 or chunk_size < 1:
        raise ValueError(f"n_samples and chunk_size must be >= 1, got {n_samples}, {chunk_size}")
    acc: Tensor | None = None
    total_w: Tensor | None = None
    done = 0
    with torch.no_grad():
        while done < n_samples:
            m = min(chunk_size, n_samples - done)
            z, log_q = q.rsample_and_log_prob((m,))
            log_w = _check_log_joint(log_joint(z), log_q.shape) - log_q
            # −inf is a zero weight (p(x, z) = 0): allowed; NaN and +inf are not
            if bool((torch.isnan(log_w) | (log_w == math.inf)).any()):
                raise FloatingPointError("non-finite importance weight (NaN or +inf; check the model and the proposal)")
            chunk_lse = torch.logsumexp(log_w, 0)
            acc = chunk_lse if acc is None else torch.logaddexp(acc, chunk_lse)
            total_w = log_w.sum(0) if total_w is None else total_w + log_w.sum(0)
            done += m
    assert acc is not None and total_w is not None
    if bool((acc == -math.inf).any()):
        n_bad = int((acc == -math.inf).sum())
        raise FloatingPointError(f"every importance weight is zero (ln w = -inf) for {n_bad} data point(s): "
                                 "p(x, z) = 0 at all samples of the proposal")
    return ImportanceEstimate(acc - math.log(n_samples), total_w / n_samples)
