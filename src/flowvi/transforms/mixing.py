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


class PermutationTransform(FlowTransform):
    """``y = z[..., perm]``."""

    volume_preserving = True

    def __init__(self, perm: Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        if perm.dim() != 1 or not torch.equal(torch.sort(perm).values, torch.arange(perm.numel())):
            raise ValueError("perm must be a permutation of 0..D-1")
        self.perm = perm
        self.inv_perm = torch.argsort(perm)
        self.dim = perm.numel()

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        return z.index_select(-1, self.perm.to(z.device)), zeros_ladj(z)

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        return y.index_select(-1, self.inv_perm.to(y.device))


class OrthogonalTransform(FlowTransform):
    """``y = Q z`` for a fixed orthogonal ``Q``; inverse ``Qᵀ y``.

    ``Q`` is applied in the input's dtype and device (cast once per dtype/device and cached).
    """

    volume_preserving = True

    def __init__(self, q: Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        if q.dim() != 2 or q.shape[0] != q.shape[1]:
            raise ValueError(f"Q must be a square matrix, got shape {tuple(q.shape)}")
        eye = torch.eye(q.shape[0], dtype=q.dtype, device=q.device)
        tol = 1e-5 if q.dtype != torch.float64 else 1e-10
        if not torch.allclose(q @ q.T, eye, atol=tol):
            raise ValueError("Q must be orthogonal (Q Qᵀ = I)")
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
