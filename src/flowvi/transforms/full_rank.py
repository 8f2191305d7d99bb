r"""A full-rank Gaussian as a flow step: the lower-triangular affine map ``f(ε) = μ + L ε``.

Over a standard-normal base ``ε ~ N(0, I)``, ``f(ε) ~ N(μ, L Lᵀ)`` with ``L`` the Cholesky factor
of the covariance, so putting this step first gives a full-rank Gaussian ``q_0`` under any flow
(Rezende & Mohamed 2015, eq. 7, with ``q_0`` itself written as a flow of ``N(0, I)``):

.. math::
    \ln |\det \partial f/\partial \varepsilon| = \sum_i \ln L_{ii}, \qquad
    f^{-1}(y) = L^{-1}(y - \mu) \text{ (a triangular solve)}.

:func:`cholesky_factor` builds ``L`` from unconstrained values: the diagonal
``L_ii = softplus(ℓ_ii) + CHOLESKY_MIN > 0`` and the strictly lower part as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_event, check_tensor, check_values, not_finite
from .base import FlowTransform, promote, warn_if_inverse_unstable

#: floor on ``L_ii`` so that the log-det and the solve stay finite where softplus underflows
CHOLESKY_MIN = 1e-6


def cholesky_factor(diag_raw: Tensor, lower_raw: Tensor) -> Tensor:
    """``(..., D, D)`` lower-triangular ``L`` with ``L_ii = softplus(diag_raw) + CHOLESKY_MIN`` and the
    ``D(D−1)/2`` strictly-lower entries ``lower_raw`` in the order of ``torch.tril_indices(D, D, −1)``."""
    dim = diag_raw.shape[-1]
    batch = torch.broadcast_shapes(diag_raw.shape[:-1], lower_raw.shape[:-1])
    out = diag_raw.new_zeros(batch + (dim, dim))
    rows, cols = torch.tril_indices(dim, dim, -1, device=diag_raw.device)
    out[..., rows, cols] = lower_raw.expand(batch + lower_raw.shape[-1:])
    return out + torch.diag_embed((F.softplus(diag_raw) + CHOLESKY_MIN).expand(batch + (dim,)))


class LowerTriangularAffineTransform(FlowTransform):
    """``f(x) = μ + L x`` with ``L`` lower triangular with a positive diagonal.

    Args:
        loc: ``(..., D)``. tril: ``(..., D, D)`` (only the lower triangle is read); leading
            dimensions are per-data-point parameters and broadcast against the input.
        validate_args: check them (finite, positive diagonal); ``None`` follows :func:`flowvi.set_validation`.

    >>> from flowvi.transforms import LowerTriangularAffineTransform
    >>> t = LowerTriangularAffineTransform(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 1.0]))       # μ + L x; ln|det| = ln 2 + ln 1
    >>> y, ladj, t.inv(y)
    (tensor([3., 2.]), tensor(0.6931), tensor([1., 1.]))
    """

    def __init__(self, loc: Tensor, tril: Tensor, cache_size: int = 0, validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        check_tensor("loc", loc)
        check_tensor("tril", tril)
        if loc.dim() < 1 or tril.dim() < 2 or tril.shape[-2:] != (loc.shape[-1], loc.shape[-1]):
            raise ValueError(f"loc must be (..., D) and tril (..., D, D), got {tuple(loc.shape)}, {tuple(tril.shape)}")
        self.dim = loc.shape[-1]
        self.loc, self.tril = loc, tril.tril()
        diag = torch.diagonal(self.tril, dim1=-2, dim2=-1)
        check_values(lambda: [("loc has {n} non-finite entries (NaN or inf)", not_finite(loc)),
                      ("tril has {n} non-finite entries (NaN or inf)", not_finite(tril)),
                      ("the diagonal of L is <= 0 in {n} entries: it must be positive (use cholesky_factor)",
                       diag <= 0)], enabled=self.validate_args)
        self._ladj = diag.log().sum(-1)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_event("x", x, self.dim)
        x, loc, tril, ladj = promote(x, self.loc, self.tril, self._ladj)
        y = loc + (tril @ x.unsqueeze(-1)).squeeze(-1)
        return y, ladj.expand(y.shape[:-1])

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        z = self._solve(y)
        if self.validate_args:
            with torch.no_grad():
                z_, loc, tril = promote(z, self.loc, self.tril)
                magnitude = loc.abs() + (tril.abs() @ z_.abs().unsqueeze(-1)).squeeze(-1)  # the terms of μ + L z
            warn_if_inverse_unstable("full-rank Gaussian", self._solve, y, z, magnitude, "the Cholesky factor L is "
                                     "ill-conditioned for this dtype")
        return z

    def _solve(self, y: Tensor) -> Tensor:
        """``L⁻¹(y − μ)``, a triangular solve."""
        y, loc, tril = promote(y, self.loc, self.tril)
        rhs = (y - loc).unsqueeze(-1)
        batch = torch.broadcast_shapes(tril.shape[:-2], rhs.shape[:-2])
        tril = tril.expand(batch + tril.shape[-2:])
        return torch.linalg.solve_triangular(tril, rhs.expand(batch + rhs.shape[-2:]), upper=False).squeeze(-1)
