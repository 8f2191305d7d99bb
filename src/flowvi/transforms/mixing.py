"""Fixed linear mixing before a coupling split (NICE-perm and NICE-orth, section 4.3 and Table 2).

Both are volume preserving (``|det| = 1``) with exact inverses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..validation import check_event
from .base import FlowTransform, zeros_ladj


def random_permutation(dim: int, generator: torch.Generator | None = None) -> Tensor:
    return torch.randperm(dim, generator=generator)


def random_orthogonal(dim: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
    """A Haar-distributed orthogonal matrix: QR of an i.i.d. N(0, 1) matrix, columns sign-corrected
    so that ``R`` has a positive diagonal (Mezzadri 2007)."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.to(dtype)


def check_permutation(perm: Tensor) -> Tensor:
    """``perm`` must be a 1-D permutation of ``0 … D−1`` (one host synchronisation); returns its inverse."""
    if perm.dim() != 1 or perm.dtype.is_floating_point or perm.dtype.is_complex or perm.dtype == torch.bool:
        raise ValueError(f"perm must be a 1-D integer tensor, got {perm.dtype} {tuple(perm.shape)}")
    if not torch.equal(torch.sort(perm).values, torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)):
        raise ValueError("perm must be a permutation of 0..D-1 (each index exactly once)")
    return torch.argsort(perm)


class PermutationTransform(FlowTransform):
    """``y = z[..., perm]``.

    Args:
        perm: ``(D,)`` integer tensor, a permutation of ``0 … D−1``.
        inv_perm: ``argsort(perm)`` when already known (a :class:`~flowvi.Permutation` step keeps it).
        validate_args: check the permutation (``None``: :func:`flowvi.set_validation`).

    >>> t = fv.PermutationTransform(torch.tensor([2, 0, 1]))
    >>> y = t(torch.tensor([10.0, 20.0, 30.0]))
    >>> y, t.inv(y)
    (tensor([30., 10., 20.]), tensor([10., 20., 30.]))
    """

    volume_preserving = True

    def __init__(self, perm: Tensor, cache_size: int = 0, validate_args: bool | None = None,
                 inv_perm: Tensor | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        if perm.dim() != 1:
            raise ValueError(f"perm must be a 1-D tensor, got shape {tuple(perm.shape)}")
        if self.validate_args:
            checked_inv = check_permutation(perm)
            if inv_perm is not None and not torch.equal(inv_perm.to(perm.device), checked_inv):
                raise ValueError("inv_perm must be argsort(perm), the inverse permutation")
            inv_perm = checked_inv if inv_perm is None else inv_perm
        self.perm = perm
        self.inv_perm = torch.argsort(perm) if inv_perm is None else inv_perm
        self.dim = perm.numel()

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        return z.index_select(-1, self.perm.to(z.device)), zeros_ladj(z)

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        return y.index_select(-1, self.inv_perm.to(y.device))


def check_orthogonal(q: Tensor) -> Tensor:
    """``q`` must be orthogonal, ``Q Qᵀ = I`` to 1e-10 in float64, 1e-5 otherwise (one host synchronisation)."""
    if q.dim() != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"Q must be a square matrix, got shape {tuple(q.shape)}")
    eye = torch.eye(q.shape[0], dtype=q.dtype, device=q.device)
    tol = 1e-5 if q.dtype != torch.float64 else 1e-10
    if not torch.allclose(q @ q.T, eye, atol=tol):
        raise ValueError("Q must be orthogonal (Q Qᵀ = I)")
    return q


class OrthogonalTransform(FlowTransform):
    """``y = Q z`` for a fixed orthogonal ``Q``; inverse ``Qᵀ y``.

    ``Q`` is applied in the input's dtype and device (cast once per dtype/device and cached).

    Args:
        q: ``(D, D)`` orthogonal matrix (e.g. :func:`random_orthogonal`).
        validate_args: check that ``Q`` is orthogonal (``None``: :func:`flowvi.set_validation`).

    >>> t = fv.OrthogonalTransform(torch.tensor([[0.0, -1.0], [1.0, 0.0]]))   # a quarter turn
    >>> y = t(torch.tensor([1.0, 0.0]))
    >>> y, t.inv(y)
    (tensor([0., 1.]), tensor([1., 0.]))
    """

    volume_preserving = True

    def __init__(self, q: Tensor, cache_size: int = 0, validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        if q.dim() != 2 or q.shape[0] != q.shape[1]:
            raise ValueError(f"Q must be a square matrix, got shape {tuple(q.shape)}")
        if self.validate_args:
            check_orthogonal(q)
        self.q = q
        self.dim = q.shape[0]
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def _q_like(self, z: Tensor) -> Tensor:
        key = (z.dtype, z.device)
        if key not in self._cast:
            self._cast[key] = self.q.to(dtype=z.dtype, device=z.device)
        return self._cast[key]

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        return z @ self._q_like(z).T, zeros_ladj(z)

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        return y @ self._q_like(y)
