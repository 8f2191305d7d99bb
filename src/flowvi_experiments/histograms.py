"""2-D histogram diagnostics: how far a cloud of samples is from ``p(z) ∝ e^{−U(z)}`` on a box.

A fine histogram of the samples against the quadrature masses of the target: the divergence used
to show that the Langevin flow's ``q_t`` approaches ``p`` (section 3.2, Figure 3's energies).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from flowvi.langevin import Energy


class HistogramKL(NamedTuple):
    kl: float  #: ``KL(q̂_B ‖ p_B)`` in nats
    outside: float  #: fraction of samples outside the box (not in ``q̂_B``)
    n_samples: int  #: samples inside the box


def target_bin_masses(
    energy: Energy, box: tuple[float, float, float, float], bins: int, subdivisions: int = 8
) -> Tensor:
    """``p_B`` per histogram bin: ``∫_bin e^{−U} / ∫_box e^{−U}`` by the midpoint rule, ``(bins, bins)`` (x, y).

    Each bin is split into ``subdivisions²`` cells (float64).
    """
    if bins < 1 or subdivisions < 1:
        raise ValueError(f"bins and subdivisions must be >= 1, got {bins}, {subdivisions}")
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    n = bins * subdivisions
    hx, hy = (xmax - xmin) / n, (ymax - ymin) / n
    xs = torch.linspace(xmin + hx / 2, xmax - hx / 2, n, dtype=torch.float64)
    ys = torch.linspace(ymin + hy / 2, ymax - hy / 2, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, ys, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    with torch.no_grad():
        log_p = -torch.cat([energy(c).to(torch.float64) for c in points.split(1 << 17)])
    if torch.isnan(log_p).any():
        raise FloatingPointError("the energy is NaN on the quadrature grid")
    log_p = log_p.reshape(bins, subdivisions, bins, subdivisions)
    log_mass = torch.logsumexp(log_p, dim=(1, 3))
    return torch.softmax(log_mass.reshape(-1), 0).reshape(bins, bins)


def histogram_kl(
    samples: Tensor, target_masses: Tensor, box: tuple[float, float, float, float]
) -> HistogramKL:
    r"""Sample-based divergence of 2-D samples to a target on ``box``: ``KL(q̂_B ‖ p_B)``.

    ``q̂_B``: the normalized histogram of the samples inside ``box`` on the same ``bins × bins``
    grid as ``target_masses`` (from :func:`target_bin_masses`); ``p_B``: the target's bin masses
    restricted to the box. ``Σ_b q̂_b ln(q̂_b / p_b)`` is finite (``p_b > 0``), is 0 only when the
    histograms agree, and has a finite-sample floor of about ``(occupied bins − 1) / (2N)`` even
    for exact samples (see :func:`histogram_kl_floor`). Samples outside the box are counted in
    :attr:`HistogramKL.outside`, not silently dropped.
    """
    if samples.dim() != 2 or samples.shape[-1] != 2:
        raise ValueError(f"samples must have shape (N, 2), got {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain non-finite values")
    bins = target_masses.shape[0]
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    s = samples.detach().to(torch.float64)
    inside = (s[:, 0] >= xmin) & (s[:, 0] < xmax) & (s[:, 1] >= ymin) & (s[:, 1] < ymax)
    s = s[inside]
    if s.shape[0] == 0:
        raise ValueError("no sample lies inside the box")
    ix = ((s[:, 0] - xmin) / (xmax - xmin) * bins).long().clamp_(0, bins - 1)
    iy = ((s[:, 1] - ymin) / (ymax - ymin) * bins).long().clamp_(0, bins - 1)
    counts = torch.bincount(ix * bins + iy, minlength=bins * bins).to(torch.float64)
    return HistogramKL(
        _kl_counts(counts, target_masses.reshape(-1)), 1.0 - s.shape[0] / samples.shape[0], int(s.shape[0])
    )


def _kl_counts(counts: Tensor, p: Tensor) -> float:
    q = counts / counts.sum()
    nz = q > 0
    return float((q[nz] * (q[nz].log() - p[nz].log())).sum())


def histogram_kl_floor(target_masses: Tensor, n_samples: int, repeats: int = 5, seed: int = 0) -> float:
    """Mean ``KL(q̂_B ‖ p_B)`` of ``n_samples`` exact draws from ``p_B`` (multinomial over the bins).

    The value :func:`histogram_kl` reaches for a perfect sampler: the finite-sample floor.
    """
    gen = torch.Generator().manual_seed(seed)
    p = target_masses.reshape(-1).to(torch.float64)
    values = []
    for _ in range(repeats):
        idx = torch.multinomial(p, n_samples, replacement=True, generator=gen)
        values.append(_kl_counts(torch.bincount(idx, minlength=p.numel()).to(torch.float64), p))
    return sum(values) / len(values)
