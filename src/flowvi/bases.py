r"""Base distributions ``q_0`` of a flow (eq. 6): where the chain ``z_0 → z_K`` starts.

- :class:`StandardNormal`: the fixed ``N(0, I)`` (the 2-D experiments of Figure 3);
- :class:`DiagonalNormal`: ``N(μ, diag σ²)`` with learned ``μ`` and ``σ = softplus(ρ)``, global, or
  amortized (``μ(x)``, ``σ(x)`` from the encoder features, the DLGM's ``q_0(z|x)``) when its flow has
  a context.

A base declares its raw parameters like a flow step (:meth:`layout`) and gets them from the source
its flow chooses (:mod:`flowvi.params`); :meth:`build` turns them into ``(loc, scale)``.

>>> flow = fv.NormalizingFlow(2, fv.planar_steps(2, 8), base=fv.StandardNormal(2))
>>> flow().rsample((5,)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class BaseDistribution(nn.Module):
    """``q_0`` as ``(loc, scale)`` of a diagonal Gaussian: a subclass declares its raw parameters
    (:meth:`layout`, for one data point) and maps them to ``(μ, σ)`` (:meth:`build`).

    Args:
        dim: D.

    Class attributes: ``amortize`` (as for a flow step: ``None``, amortized when the flow has a
    context; ``False``, global) and ``shared`` (layout entries kept global in an amortized flow).

    >>> class Shifted(fv.BaseDistribution):      # q_0 = N(1, 0.5² I), nothing learned
    ...     def build(self, raw, batch_shape):
    ...         shape = batch_shape + (self.dim,)
    ...         return torch.ones(shape), torch.full(shape, 0.5)
    >>> fv.NormalizingFlow(2, [], base=Shifted(2))().loc
    tensor([1., 1.])
    """

    amortize: bool | None = None
    shared: frozenset[str] = frozenset()  #: layout entries kept global in an amortized flow (as for a step)

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def layout(self) -> dict[str, Tensor]:
        """Raw parameters ``{name: initial value}`` for one data point (none by default)."""
        return {}

    def build(self, raw: dict[str, Tensor], batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """``(μ, σ)`` from the raw parameters (each ``(*batch, *shape)`` when amortized), broadcastable
        to ``batch_shape + (D,)``."""
        raise NotImplementedError


class StandardNormal(BaseDistribution):
    """The fixed ``q_0 = N(0, I)``; in an amortized flow the same for every data point.

    Args:
        dim: D.

    >>> flow = fv.NormalizingFlow(3, fv.planar_steps(3, 2), base=fv.StandardNormal(3), context_features=4)
    >>> q = flow(torch.randn(2, 4))          # per-point flow parameters over one N(0, I)
    >>> q.loc, q.scale
    (tensor([[0., 0., 0.],
            [0., 0., 0.]]), tensor([[1., 1., 1.],
            [1., 1., 1.]]))
    """

    amortize = False

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def build(self, raw: dict[str, Tensor], batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        shape = batch_shape + (self.dim,)
        return self.loc.expand(shape), self.scale.expand(shape)


class DiagonalNormal(BaseDistribution):
    """``q_0 = N(μ, diag σ²)``, ``σ = softplus(ρ)``, starting at ``N(0, I)``; global or amortized.

    Args:
        dim: D.
        amortize: ``False`` keeps μ, ρ global even in an amortized flow; ``None`` follows the flow.

    >>> q = fv.NormalizingFlow(2, [], base=fv.DiagonalNormal(2))()      # learned μ, σ: N(0, I) at start
    >>> bool(torch.allclose(q.scale, torch.ones(2))), q.loc.requires_grad
    (True, True)
    >>> amortized = fv.NormalizingFlow(2, [], base=fv.DiagonalNormal(2), context_features=5)
    >>> amortized(torch.randn(3, 5)).loc.shape        # μ(x), σ(x) per data point
    torch.Size([3, 2])
    """

    def __init__(self, dim: int, amortize: bool | None = None) -> None:
        super().__init__(dim)
        self.amortize = amortize

    def layout(self) -> dict[str, Tensor]:
        return {"loc": torch.zeros(self.dim), "scale": torch.full((self.dim,), inverse_softplus(1.0))}

    def build(self, raw: dict[str, Tensor], batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        return raw["loc"], F.softplus(raw["scale"])
