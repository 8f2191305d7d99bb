"""Normalizing constants and KL divergences of 2-D densities by quadrature on a grid (section 6.1).

For ``p(z) = e^{−U(z)} / Z``:

* ``ln Z = ln ∫ e^{−U(z)} dz``, by the midpoint rule on a regular grid (float64, log-sum-exp);
  :func:`log_z_r2` widens the box until ``ln Z`` stops changing (targets normalizable on R²).
* ``KL(q‖p) = F + ln Z`` with ``F = E_q[ln q + U]`` (the free energy, eq. 15; section 6.1:
  ``F = KL(q‖p) − ln Z``), see :func:`kl_from_free_energy`.
* ``KL_box(q‖p)`` on a bounded box (U2–U4 are not normalizable on R²): both densities restricted to
  the box and renormalized there, ``Σ q_B (ln q_B − ln p_B) ΔA`` on the grid, see :func:`kl_box`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Grid:
    """Midpoints of an ``nx × ny`` regular grid on ``box``; ``points`` has shape ``(ny·nx, 2)``."""

    box: Box
    nx: int
    ny: int

    @property
    def xs(self) -> Tensor:
        xmin, xmax, _, _ = self.box
        h = (xmax - xmin) / self.nx
        return torch.linspace(xmin + h / 2, xmax - h / 2, self.nx, dtype=torch.float64)

    @property
    def ys(self) -> Tensor:
        _, _, ymin, ymax = self.box
        h = (ymax - ymin) / self.ny
        return torch.linspace(ymin + h / 2, ymax - h / 2, self.ny, dtype=torch.float64)

    @property
    def cell_area(self) -> float:
        xmin, xmax, ymin, ymax = self.box
        return (xmax - xmin) / self.nx * (ymax - ymin) / self.ny

    @property
    def points(self) -> Tensor:
        yy, xx = torch.meshgrid(self.ys, self.xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def grid(box: Box, n: int) -> Grid:
    """A square-cell-count ``n × n`` grid on ``box``."""
    if n < 2:
        raise ValueError(f"a grid needs n >= 2 points per axis, got {n}")
    return Grid(tuple(float(v) for v in box), n, n)  # type: ignore[arg-type]


def _evaluate(fn: Callable[[Tensor], Tensor], points: Tensor, chunk: int = 1 << 18) -> Tensor:
    """``fn`` on ``points`` in chunks (float64 results); raises if any value is non-finite."""
    out = []
    for start in range(0, points.shape[0], chunk):
        part = points[start : start + chunk]
        out.append(fn(part).to(torch.float64))
    values = torch.cat(out)
    if torch.isnan(values).any():
        raise FloatingPointError(f"{int(torch.isnan(values).sum())} NaN values on the quadrature grid")
    return values


def log_z_box(energy: Callable[[Tensor], Tensor], box: Box, n: int = 2000) -> float:
    """``ln ∫_box e^{−U(z)} dz`` by the midpoint rule with ``n × n`` cells (float64)."""
    g = grid(box, n)
    u = _evaluate(energy, g.points)
    return float(torch.logsumexp(-u, 0)) + math.log(g.cell_area)


def log_z_r2(
    energy: Callable[[Tensor], Tensor], box: Box = (-4.0, 4.0, -4.0, 4.0), cells_per_unit: int = 60,
    tol: float = 1e-4, max_doublings: int = 4,
) -> float:
    """``ln ∫_{R²} e^{−U(z)} dz``: the box quadrature, widened (×2 about its centre) until it changes < ``tol``.

    Raises ``ValueError`` if it has not converged after ``max_doublings`` widenings (mass far out,
    or a target that is not normalizable).
    """
    xmin, xmax, ymin, ymax = box
    cx, cy, hx, hy = (xmin + xmax) / 2, (ymin + ymax) / 2, (xmax - xmin) / 2, (ymax - ymin) / 2
    prev: float | None = None
    for _ in range(max_doublings + 1):
        b = (cx - hx, cx + hx, cy - hy, cy + hy)
        n = max(100, int(round(cells_per_unit * 2 * max(hx, hy))))
        value = log_z_box(energy, b, min(n, 4000))
        if prev is not None and abs(value - prev) < tol:
            return value
        prev = value
        hx, hy = 2 * hx, 2 * hy
    raise ValueError(f"ln Z did not converge on growing boxes up to ±{hx / 2:g} (last value {prev:.4f})")


def kl_from_free_energy(free_energy: float, log_z: float) -> float:
    """``KL(q‖p) = F + ln Z`` (section 6.1: ``F = E_q[ln q + U] = KL(q‖p) − ln Z``)."""
    return free_energy + log_z


def kl_box(log_q: Tensor, energy: Tensor, cell_area: float) -> float:
    """``KL(q_B‖p_B)`` of ``q`` and ``p ∝ e^{−U}`` both restricted to a box and renormalized there.

    Args:
        log_q: ``ln q(z)`` at the grid midpoints (any normalization).
        energy: ``U(z)`` at the same points.
        cell_area: the grid's cell area.
    """
    log_q = log_q.to(torch.float64)
    log_p = -energy.to(torch.float64)
    if log_q.shape != log_p.shape:
        raise ValueError(f"log_q and energy must have the same shape, got {tuple(log_q.shape)}, {tuple(log_p.shape)}")
    if torch.isnan(log_q).any() or torch.isnan(log_p).any():
        raise FloatingPointError("NaN in ln q or U on the grid")
    log_q_b = log_q - (torch.logsumexp(log_q, 0) + math.log(cell_area))
    log_p_b = log_p - (torch.logsumexp(log_p, 0) + math.log(cell_area))
    q_b = log_q_b.exp()
    terms = torch.where(q_b > 0, q_b * (log_q_b - log_p_b), torch.zeros_like(q_b))
    return float(terms.sum() * cell_area)
