r"""Radial flow (Rezende & Mohamed 2015, eq. 14 and appendix A.2).

.. math::
    f(z) = z + \beta h(\alpha, r)(z - z_0), \quad r = \|z - z_0\|, \quad h(\alpha, r) = 1/(\alpha + r),

    |\det \partial f/\partial z| = [1 + \beta h]^{D-1}\,[1 + \beta h + \beta h'(\alpha, r)\, r].

Invertible iff ``β ≥ −α`` (α > 0). :func:`radial_constrain` maps raw ``(α', β')`` to
``α = softplus(α') + ALPHA_MIN`` and ``β = −α(1 − RADIAL_MARGIN) + softplus(β')``.

Inverse: ``f`` keeps the direction of ``z − z0`` and maps the radius ``r`` to
``ρ = r (α + β + r)/(α + r)``, increasing in ``r`` when ``β ≥ −α``. The 1-D root in ``r`` solves
the quadratic ``r² + (α + β − ρ) r − αρ = 0``; we take its non-negative root in the
cancellation-free form, so the inverse is exact to rounding (no iteration needed), then
``z = z0 + (y − z0)(α + r)/(α + β + r)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_event, check_tensor, check_values, not_finite
from .base import FlowTransform

#: ``β ≥ −α (1 − RADIAL_MARGIN)``: keeps the log-det finite at ``z = z0`` (the paper's bound
#: ``β = −α`` makes ``det`` vanish there). ``ALPHA_MIN`` keeps ``α > 0`` when softplus underflows.
RADIAL_MARGIN = 1e-4
ALPHA_MIN = 1e-6


def radial_constrain(alpha_raw: Tensor, beta_raw: Tensor) -> tuple[Tensor, Tensor]:
    """Map unconstrained ``(α', β')`` to ``(α, β)`` with ``α > 0`` and ``β ≥ −α`` (appendix A.2)."""
    alpha = F.softplus(alpha_raw) + ALPHA_MIN
    beta = -alpha * (1.0 - RADIAL_MARGIN) + F.softplus(beta_raw)
    return alpha, beta


class RadialTransform(FlowTransform):
    """``f(z) = z + β (z − z0)/(α + ‖z − z0‖)`` for constrained ``α > 0``, ``β ≥ −α``.

    Args:
        z0: ``(..., D)`` centre. alpha, beta: ``(...)`` tensors (:func:`radial_constrain` maps raw values).
        validate_args: check them (finite, ``α > 0``, ``β ≥ −α``); ``None`` follows :func:`flowvi.set_validation`.

    >>> t = fv.RadialTransform(torch.zeros(2), torch.tensor(1.0), torch.tensor(1.0))
    >>> y = t(torch.tensor([3.0, 4.0]))              # r = 5: moved out by β r/(α + r) = 5/6
    >>> y, t.inv(y)
    (tensor([3.5000, 4.6667]), tensor([3., 4.]))
    """

    def __init__(self, z0: Tensor, alpha: Tensor, beta: Tensor, cache_size: int = 0,
                 validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        check_tensor("z0", z0)
        check_tensor("alpha", alpha)
        check_tensor("beta", beta)
        if z0.dim() == 0:
            raise ValueError("z0 must have a last (event) dimension, got a scalar")
        self.dim = z0.shape[-1]
        check_values(lambda: [(f"{name} has {{n}} non-finite entries (NaN or inf)", not_finite(v))
                      for name, v in (("z0", z0), ("alpha", alpha), ("beta", beta))]
                     + [("α <= 0 in {n} radial step(s): h(α, r) = 1/(α + r) needs α > 0 (use radial_constrain)",
                         alpha <= 0),
                        ("β < −α in {n} radial step(s): the flow is not invertible (use radial_constrain)",
                         beta < -alpha)], enabled=self.validate_args)
        self.z0, self.alpha, self.beta = z0, alpha, beta

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        diff = z - self.z0
        r = diff.norm(dim=-1)
        denom = self.alpha + r
        bh = self.beta / denom
        y = z + bh.unsqueeze(-1) * diff
        # 1 + βh = (α + β + r)/(α + r);  1 + βh + βh'r = 1 + βα/(α + r)²
        log1 = torch.log(self.alpha + self.beta + r) - torch.log(denom)
        log2 = torch.log1p(self.beta * self.alpha / denom**2)
        return y, (self.dim - 1) * log1 + log2

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        alpha, beta = self.alpha, self.beta
        if bool((beta < -alpha).any()):
            raise ValueError("radial flow is not invertible: β < −α (use radial_constrain)")
        diff = y - self.z0
        rho = diff.norm(dim=-1)
        p = alpha + beta - rho
        q = alpha * rho
        root = torch.sqrt(p * p + 4.0 * q)
        # positive root of r² + p r − q = 0 without cancellation in either sign of p
        pos = p > 0
        r = torch.where(
            pos,
            2.0 * q / torch.where(pos, p + root, torch.ones_like(p)),
            0.5 * (root - p),
        )
        scale = (alpha + r) / (alpha + beta + r)
        return self.z0 + scale.unsqueeze(-1) * diff
