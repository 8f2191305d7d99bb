r"""Sylvester flows (van den Berg, Hasenclever, Tomczak & Welling, UAI 2018).

A rank-``M`` generalisation of the planar flow (Rezende & Mohamed 2015, eq. 10):

.. math::
    f(z) = z + Q R\, h(\tilde R Q^\top z + b), \qquad h = \tanh,

with ``Q`` a ``D × M`` matrix of orthonormal columns and ``R``, ``R̃`` upper-triangular ``M × M``
(the paper's ``A = QR``, ``B = R̃Qᵀ``, §3). Sylvester's determinant identity
``det(I_D + AB) = det(I_M + BA)`` (Theorem 1) and ``QᵀQ = I`` give (Theorem 2)

.. math::
    \det \frac{\partial f}{\partial z} = \det\bigl(I_M + \operatorname{diag}(h'(\tilde R Q^\top z + b))\,
    \tilde R R\bigr) = \prod_{i=1}^M \bigl(1 + h'(\cdot)_i\, \tilde r_{ii} r_{ii}\bigr),

an ``O(M)`` log-det since ``R̃R`` is upper triangular. ``f`` is invertible when
``r_ii r̃_ii > −1/‖h'‖_∞ = −1`` (Theorem 2); :func:`sylvester_diagonal` enforces it by construction
as in the paper, ``r_ii = (1 − SYLVESTER_MARGIN) tanh(r'_ii)``, so ``|r_ii r̃_ii| < 1``
(the margin keeps ``1 + h' r̃_ii r_ii ≥ 2·margin`` where float32's ``tanh`` rounds to ``±1``).

The three variants of the paper differ only in ``Q`` (built in :mod:`flowvi.families`):
orthogonal (§3.1; here the Cayley map of a skew-symmetric matrix, exactly orthogonal for any raw
parameters, in place of the paper's iterative orthogonalisation), Householder (§3.2, a product of
reflections, ``M = D``) and triangular (§3.3, ``Q`` a fixed permutation alternating between the
identity and the reversal, ``M = D``).

There is no closed-form inverse: :meth:`SylvesterTransform._inverse` raises
:class:`~flowvi.transforms.InverseNotAvailable`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..validation import check_event, check_tensor, check_values, not_finite
from .base import FlowTransform, InverseNotAvailable, promote

#: ``|r_ii| ≤ 1 − SYLVESTER_MARGIN``, so ``1 + h' r̃_ii r_ii ≥ 1 − (1 − margin)² ≈ 2·margin > 0``.
SYLVESTER_MARGIN = 1e-4


def sylvester_diagonal(raw: Tensor) -> Tensor:
    """Map unconstrained diagonal entries to ``(1 − margin) tanh(raw) ∈ (−1, 1)`` (Theorem 2's condition)."""
    return (1.0 - SYLVESTER_MARGIN) * torch.tanh(raw)


def upper_triangular(diag: Tensor, strict_upper: Tensor) -> Tensor:
    """``(..., M, M)`` upper-triangular matrix from its diagonal ``(..., M)`` and the ``M(M−1)/2``
    entries above it ``(..., M(M−1)/2)``, row by row (the order of ``torch.triu_indices(M, M, 1)``)."""
    m = diag.shape[-1]
    batch = torch.broadcast_shapes(diag.shape[:-1], strict_upper.shape[:-1])
    out = diag.new_zeros(batch + (m, m))
    rows, cols = torch.triu_indices(m, m, 1, device=diag.device)
    out[..., rows, cols] = strict_upper.expand(batch + strict_upper.shape[-1:])
    return out + torch.diag_embed(diag.expand(batch + (m,)))


def cayley_orthogonal(skew_raw: Tensor, dim: int, m: int) -> Tensor:
    r"""The first ``m`` columns of the Cayley transform ``(I + S)^{-1}(I − S)`` of the skew-symmetric
    ``S`` whose ``D(D−1)/2`` entries above the diagonal are ``skew_raw`` (``(..., D(D−1)/2)``).

    ``I + S`` is invertible for every real skew ``S`` (its eigenvalues are ``1 + iλ``), so the result
    has orthonormal columns for any raw parameters, to rounding."""
    rows, cols = torch.triu_indices(dim, dim, 1, device=skew_raw.device)
    s = skew_raw.new_zeros(skew_raw.shape[:-1] + (dim, dim))
    s[..., rows, cols] = skew_raw
    s = s - s.transpose(-1, -2)
    eye = torch.eye(dim, dtype=skew_raw.dtype, device=skew_raw.device)
    return torch.linalg.solve(eye + s, (eye - s)[..., :m])


def householder_orthogonal(vectors: Tensor) -> Tensor:
    r"""``Q = H_1 H_2 ⋯ H_T`` with ``H_t = I − 2 v̂_t v̂_tᵀ`` for the rows ``v_t`` of ``vectors``
    (``(..., T, D)``) normalised to unit length (van den Berg et al. 2018, §3.2); a ``v_t`` shorter than
    the dtype's machine epsilon gives ``H_t = I`` (the gradient of ``v/‖v‖`` grows as ``1/‖v‖``: at a
    denormal length it overflows to inf and the backward pass gives NaN). Returns the ``(..., D, D)``
    orthogonal matrix."""
    norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    nonzero = norm > torch.finfo(norm.dtype).eps
    v = torch.where(nonzero, vectors / torch.where(nonzero, norm, torch.ones_like(norm)), torch.zeros_like(vectors))
    dim = v.shape[-1]
    q = torch.eye(dim, dtype=v.dtype, device=v.device).expand(v.shape[:-2] + (dim, dim))
    for t in range(v.shape[-2] - 1, -1, -1):  # Q = H_1 (H_2 (⋯ H_T)): apply H_t on the left
        vt = v[..., t, :]
        q = q - 2.0 * vt.unsqueeze(-1) * (vt.unsqueeze(-2) @ q)
    return q


class SylvesterTransform(FlowTransform):
    """``f(z) = z + Q R tanh(R̃ Qᵀ z + b)`` (van den Berg et al. 2018, §3, Theorem 2).

    Args:
        q: ``(..., D, M)`` with orthonormal columns (the caller's responsibility: the log-det
            formula assumes ``QᵀQ = I``). r, r_tilde: ``(..., M, M)`` upper triangular with
            ``r_ii r̃_ii > −1`` (use :func:`sylvester_diagonal` and :func:`upper_triangular`).
            b: ``(..., M)``. Leading dimensions are per-data-point parameters and broadcast.
        validate_args: check that they are finite (one host synchronisation); ``None`` follows
            :func:`flowvi.set_validation`.

    >>> from flowvi.transforms import SylvesterTransform, cayley_orthogonal, sylvester_diagonal, upper_triangular
    >>> D, M = 3, 2
    >>> q = cayley_orthogonal(torch.randn(D * (D - 1) // 2), D, M)            # (D, M), QᵀQ = I
    >>> r, r_tilde = (upper_triangular(sylvester_diagonal(torch.randn(M)), torch.randn(1)) for _ in range(2))
    >>> t = SylvesterTransform(q, r, r_tilde, torch.zeros(M))
    >>> z = torch.randn(D)
    >>> y, ladj = t.call_and_ladj(z)
    >>> exact = torch.linalg.slogdet(torch.autograd.functional.jacobian(t, z))[1]   # Theorem 2 vs autograd
    >>> bool(torch.allclose(ladj, exact, atol=1e-5))
    True
    """

    def __init__(self, q: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor, cache_size: int = 0,
                 validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        named = (("q", q), ("r", r), ("r_tilde", r_tilde), ("b", b))
        for name, value in named:
            check_tensor(name, value)
        check_values(lambda: [(f"{name} has {{n}} non-finite entries (NaN or inf)", not_finite(value))
                      for name, value in named], enabled=self.validate_args)
        if q.dim() < 2 or r.dim() < 2 or r_tilde.dim() < 2 or b.dim() < 1:
            raise ValueError("q, r, r_tilde must be matrices (..., D, M), (..., M, M) and b a vector (..., M)")
        m = q.shape[-1]
        if r.shape[-2:] != (m, m) or r_tilde.shape[-2:] != (m, m) or b.shape[-1] != m:
            raise ValueError(
                f"shape mismatch: q{tuple(q.shape)}, r{tuple(r.shape)}, "
                f"r_tilde{tuple(r_tilde.shape)}, b{tuple(b.shape)}"
            )
        self.dim, self.m = q.shape[-2], m
        self.q, self.r, self.r_tilde, self.b = q, r, r_tilde, b
        # diagonal of R̃R (both upper triangular): r̃_ii r_ii
        self.diag_prod = torch.diagonal(r_tilde, dim1=-2, dim2=-1) * torch.diagonal(r, dim1=-2, dim2=-1)

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        z, q, r, r_tilde, b, diag_prod = promote(z, self.q, self.r, self.r_tilde, self.b, self.diag_prod)
        qz = (z.unsqueeze(-2) @ q).squeeze(-2)  # Qᵀz: (..., M)
        pre = (qz.unsqueeze(-2) @ r_tilde.transpose(-1, -2)).squeeze(-2) + b  # R̃Qᵀz + b
        h = torch.tanh(pre)
        rh = (h.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)  # R h
        y = z + (rh.unsqueeze(-2) @ q.transpose(-1, -2)).squeeze(-2)  # + Q R h
        dh = 1.0 - h * h  # tanh' ∈ [0, 1]
        ladj = torch.log1p(dh * diag_prod).sum(-1)
        return y, ladj

    def _inverse(self, y: Tensor) -> Tensor:
        raise InverseNotAvailable(
            "Sylvester flows have no closed-form inverse (van den Berg et al. 2018 use them only in the "
            "sampling direction): use rsample_and_log_prob for ln q at the flow's own samples"
        )
