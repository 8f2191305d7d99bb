r"""Langevin flow: discretized Langevin dynamics towards ``p(z) ∝ e^{−U(z)}`` (section 3.2, eq. 9).

The paper's infinitesimal flow (section 3.2) is the Langevin SDE

    dz = F(z, t) dt + G(z, t) dξ(t),   F = −∇_z U(z),   G = √2 I        (9)

whose density evolves by the Fokker–Planck equation and whose stationary density is
``q_∞(z) ∝ e^{−U(z)}``: run long enough from any ``q_0`` it reaches the target. Discretized with
the Euler–Maruyama scheme at step size ``ε`` (the time increment ``dt``):

* ULA (unadjusted Langevin algorithm): ``z' = z − ε ∇U(z) + √(2ε) ξ``, ``ξ ~ N(0, I)``; its
  stationary law is ``e^{−U}`` only up to an ``O(ε)`` discretization bias.
* MALA (Metropolis-adjusted): the ULA move is a proposal, accepted with probability
  ``min(1, e^{−U(z')} k(z | z') / (e^{−U(z)} k(z' | z)))``, ``k(z' | z) = N(z'; z − ε∇U(z), 2ε I)``;
  exact stationary law ``e^{−U}`` for every ``ε``.

Both run many independent chains at once: ``z`` has shape ``(..., D)`` and the energy maps it to
``(...)``. ``ε`` is a positive number or a tensor broadcastable to ``z`` (per-dimension step sizes).
Sampling runs without a graph; gradients of ``U`` come from autograd. How far a cloud of 2-D
samples is from ``e^{−U}`` is measured in the experiments (:mod:`flowvi_experiments.histograms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from .validation import validation_enabled

Energy = Callable[[Tensor], Tensor]
StepSize = float | Tensor


def energy_and_grad(energy: Energy, z: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """``U(z)`` and ``∇_z U(z)`` for a batch of chains ``z`` of shape ``(..., D)``.

    With ``create_graph=False`` the results are detached (sampling); with ``True`` they stay
    differentiable (second-order terms, as HVI training needs). Works under ``torch.no_grad``.
    Raises ``ValueError`` on a wrong output shape and ``FloatingPointError`` on non-finite values
    (a check that costs a host synchronisation: skipped under ``set_validation(False)``, as in the
    updates of the fit loop, whose own device-side check then sees the NaN in the loss).
    """
    with torch.enable_grad():
        zz = z if (create_graph and z.requires_grad) else z.detach().requires_grad_(True)
        u = energy(zz)
        if not isinstance(u, Tensor) or u.shape != z.shape[:-1]:
            shape = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"the energy must map z of shape {tuple(z.shape)} to {tuple(z.shape[:-1])}, got {shape}")
        (grad,) = torch.autograd.grad(u.sum(), zz, create_graph=create_graph)
    if validation_enabled() and not (torch.isfinite(u).all() and torch.isfinite(grad).all()):
        bad = int((~torch.isfinite(u)).sum() + (~torch.isfinite(grad)).any(-1).sum())
        raise FloatingPointError(
            f"the energy or its gradient is non-finite at {bad} chain(s): the chains diverged "
            "(step size too large?) or the energy is not differentiable there"
        )
    if not create_graph:
        u, grad = u.detach(), grad.detach()
    return u, grad


def _check_step_size(step_size: StepSize) -> StepSize:
    if isinstance(step_size, Tensor):
        if not step_size.is_floating_point() or not bool((step_size > 0).all() & torch.isfinite(step_size).all()):
            raise ValueError("step_size must be a positive, finite floating-point tensor")
        return step_size
    value = float(step_size)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"step_size must be positive and finite, got {step_size}")
    return value


def _check_chains(z: Tensor) -> None:
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point torch.Tensor, got {type(z).__name__}")
    if z.dim() < 1:
        raise ValueError("z must have an event dimension (shape (..., D))")
    if not torch.isfinite(z).all():
        raise ValueError("the initial chains z contain non-finite values")


def ula_step(
    energy: Energy, z: Tensor, step_size: StepSize, grad: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One unadjusted Langevin step ``z' = z − ε ∇U(z) + √(2ε) ξ`` (Euler–Maruyama of eq. 9)."""
    eps = _check_step_size(step_size)
    if grad is None:
        grad = energy_and_grad(energy, z)[1]
    noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    return z.detach() - eps * grad + _sqrt(2 * eps) * noise


def _sqrt(x: StepSize) -> StepSize:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def _log_proposal(z_to: Tensor, z_from: Tensor, grad_from: Tensor, eps: StepSize) -> Tensor:
    """``ln k(z_to | z_from)`` up to a constant that cancels in the MALA ratio."""
    diff = z_to - z_from + eps * grad_from
    return -(diff * diff / (4 * eps)).sum(-1)


class MALAState(NamedTuple):
    z: Tensor  #: the chains after the step
    energy: Tensor  #: ``U(z)``
    grad: Tensor  #: ``∇U(z)``
    accepted: Tensor  #: boolean, per chain: was the proposal accepted


def mala_step(
    energy: Energy, z: Tensor, step_size: StepSize, u: Tensor | None = None, grad: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MALAState:
    """One Metropolis-adjusted Langevin step; ``u``/``grad`` (``U(z)``, ``∇U(z)``) are reused if given."""
    eps = _check_step_size(step_size)
    z = z.detach()
    if u is None or grad is None:
        u, grad = energy_and_grad(energy, z)
    noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    proposal = z - eps * grad + _sqrt(2 * eps) * noise
    try:
        u_new, grad_new = energy_and_grad(energy, proposal)
    except FloatingPointError as exc:
        raise FloatingPointError(f"MALA proposal: {exc}") from exc
    log_ratio = (u - u_new) + _log_proposal(z, proposal, grad_new, eps) - _log_proposal(proposal, z, grad, eps)
    uniform = torch.rand(log_ratio.shape, dtype=z.dtype, device=z.device, generator=generator)
    accepted = torch.log(uniform) < log_ratio
    keep = accepted.unsqueeze(-1)
    return MALAState(
        torch.where(keep, proposal, z), torch.where(accepted, u_new, u), torch.where(keep, grad_new, grad), accepted
    )


class LangevinRun(NamedTuple):
    z: Tensor  #: the chains after ``n_steps`` steps, shape of ``z0``
    snapshots: dict[int, Tensor]  #: ``{t: z_t}`` for each requested ``t`` (``t = 0`` is ``z0``)
    acceptance_rate: float | None  #: MALA: fraction of accepted proposals over all steps and chains


def langevin(
    energy: Energy,
    z0: Tensor,
    n_steps: int,
    step_size: StepSize,
    *,
    adjusted: bool = False,
    record_at: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> LangevinRun:
    """Run ``n_steps`` of ULA (``adjusted=False``) or MALA (``adjusted=True``) from the chains ``z0``.

    Args:
        energy: ``U``, mapping ``(..., D)`` to ``(...)``; the target is ``p(z) ∝ e^{−U(z)}``.
        z0: initial chains ``(..., D)`` (e.g. ``N(0, I)`` draws: the flow's ``q_0``).
        n_steps: number of steps ``t`` (total simulated time ``t · ε``).
        step_size: ``ε > 0`` (the time increment of eq. 9), scalar or per-dimension tensor.
        record_at: step counts ``t`` at which to keep a copy of the chains (``0 ≤ t ≤ n_steps``).
    """
    _check_chains(z0)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    eps = _check_step_size(step_size)
    record = sorted(set(int(t) for t in record_at))
    if record and (record[0] < 0 or record[-1] > n_steps):
        raise ValueError(f"record_at must lie in [0, n_steps={n_steps}], got {record}")
    wanted = set(record)
    snapshots: dict[int, Tensor] = {}
    z = z0.detach().clone()
    if 0 in record:
        snapshots[0] = z.clone()
    u, grad = energy_and_grad(energy, z)
    n_accepted = 0
    for t in range(1, n_steps + 1):
        try:
            if adjusted:
                state = mala_step(energy, z, eps, u, grad, generator)
                z, u, grad = state.z, state.energy, state.grad
                n_accepted += int(state.accepted.sum())
            else:
                z = ula_step(energy, z, eps, grad, generator)
                u, grad = energy_and_grad(energy, z)
        except FloatingPointError as exc:
            raise FloatingPointError(f"Langevin step {t} of {n_steps}: {exc}") from exc
        if t in wanted:
            snapshots[t] = z.clone()
    rate = n_accepted / (n_steps * z[..., 0].numel()) if adjusted and n_steps > 0 else None
    return LangevinRun(z, snapshots, rate)
