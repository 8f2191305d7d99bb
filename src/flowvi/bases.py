r"""Base distributions ``q_0`` of a flow (eq. 6): where the chain ``z_0 → z_K`` starts.

- :class:`StandardNormal`: the fixed ``N(0, I)`` (the 2-D experiments of Figure 3);
- :class:`DiagonalNormal`: ``N(μ, diag σ²)`` with learned ``μ`` and ``σ = softplus(ρ)``, global, or
  amortized (``μ(x)``, ``σ(x)`` from the encoder features, the DLGM's ``q_0(z|x)``) when its flow has
  a context.

A base declares its raw parameters like a flow step (:meth:`layout`) and gets them from the source
its flow chooses (:mod:`flowvi.params`); :meth:`build` turns them into ``(loc, scale)``.

>>> flow = NormalizingFlow(2, planar_steps(2, 8), base=StandardNormal(2))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class BaseDistribution(nn.Module):
    """``q_0`` as ``(loc, scale)`` of a diagonal Gaussian. Args: dim: D; amortize: as for a flow step
    (``None``: amortized when the flow has a context)."""

    amortize: bool | None = None
    shared: frozenset[str] = frozenset()  #: layout entries kept global in an amortized flow (as for a step)

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def layout(self) -> dict[str, Tensor]:
        return {}

    def build(self, raw: dict[str, Tensor], batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class StandardNormal(BaseDistribution):
    """The fixed ``q_0 = N(0, I)``; in an amortized flow the same for every data point."""

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
    """

    def __init__(self, dim: int, amortize: bool | None = None) -> None:
        super().__init__(dim)
        self.amortize = amortize

    def layout(self) -> dict[str, Tensor]:
        return {"loc": torch.zeros(self.dim), "scale": torch.full((self.dim,), inverse_softplus(1.0))}

    def build(self, raw: dict[str, Tensor], batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        return raw["loc"], F.softplus(raw["scale"])
