r"""NICE additive coupling (Dinh et al. 2014; Rezende & Mohamed 2015, eq. 16–19).

.. math::
    f(z) = (z_A,\; z_B + h_\lambda(z_A)), \qquad g(z') = (z'_A,\; z'_B - h_\lambda(z'_A)),

volume preserving (``ln |det| = 0``, eq. 18), with the analytic inverse ``g`` (eq. 17).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..validation import check_event
from .base import FlowTransform, zeros_ladj


def coupling_partition(mask: Tensor) -> tuple[Tensor, Tensor]:
    """The positions ``(A, B)`` of a coupling mask (``True`` on ``A``), checked: ``mask`` must be a 1-D
    boolean tensor that splits the coordinates into two non-empty parts. Data-dependent (one host
    synchronisation): a step computes it once, when it is built, not per call."""
    if mask.dtype != torch.bool or mask.dim() != 1:
        raise ValueError(f"mask must be a 1-D boolean tensor, got {mask.dtype} {tuple(mask.shape)}")
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError("mask must split the coordinates into two non-empty parts (True on A, False on B)")
    return mask.nonzero().squeeze(-1), (~mask).nonzero().squeeze(-1)


class AdditiveCouplingTransform(FlowTransform):
    """Additive coupling on a fixed partition of the coordinates.

    Args:
        mask: boolean ``(D,)`` tensor, ``True`` on the conditioning part ``A`` (left unchanged).
        shift: the coupling function ``h_λ``: maps ``z_A`` of shape ``(..., |A|)`` to a shift of
            shape ``(..., |B|)``. Any parameters it closes over (also per-data-point ones)
            broadcast against the leading dimensions.
        partition: ``coupling_partition(mask)`` when already known (a step computes it once); else
            computed here, which checks the mask. With ``validate_args`` it is checked against ``mask``.

    >>> mask = torch.tensor([True, False, True, False])          # A = positions 0 and 2
    >>> t = fv.AdditiveCouplingTransform(mask, lambda z_a: 2.0 * z_a)   # h(z_A) = 2 z_A
    >>> y, ladj = t.call_and_ladj(torch.tensor([[1.0, 0.0, 2.0, 0.0]]))
    >>> y, ladj, t.inv(y)
    (tensor([[1., 2., 2., 4.]]), tensor([0.]), tensor([[1., 0., 2., 0.]]))
    """

    volume_preserving = True

    def __init__(self, mask: Tensor, shift: Callable[[Tensor], Tensor], cache_size: int = 0,
                 validate_args: bool | None = None, partition: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        if mask.dtype != torch.bool or mask.dim() != 1:
            raise ValueError(f"mask must be a 1-D boolean tensor, got {mask.dtype} {tuple(mask.shape)}")
        if partition is None:
            partition = coupling_partition(mask)
        elif self.validate_args:
            expected = coupling_partition(mask)
            if any(p.shape != e.shape or not torch.equal(p, e.to(p.device)) for p, e in zip(partition, expected,
                                                                                                strict=True)):
                raise ValueError("partition must be coupling_partition(mask): the positions of True and False in mask")
        self.mask = mask
        self.dim = mask.numel()
        self.idx_a, self.idx_b = partition
        self.shift = shift

    def _apply(self, z: Tensor, sign: float) -> Tensor:
        check_event("z", z, self.dim)
        z_a = z.index_select(-1, self.idx_a)
        h = self.shift(z_a)
        if h.shape[-1] != self.idx_b.numel():
            raise ValueError(
                f"coupling function returned last dimension {h.shape[-1]}, expected {self.idx_b.numel()}"
            )
        # y = z + (0 on A, h on B); h broadcasts over any per-data-point parameters it closes over
        delta = h.new_zeros(h.shape[:-1] + (self.dim,)).index_copy(-1, self.idx_b, h)
        return z + sign * delta

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        y = self._apply(z, 1.0)
        return y, zeros_ladj(y)

    def _inverse(self, y: Tensor) -> Tensor:
        return self._apply(y, -1.0)
