"""Where flow parameters come from: one abstraction, two sources (SPEC §4).

Every flow step declares the *raw* (unconstrained) parameters it needs for one data point
as a layout ``{name: initial value}``. A parameter source turns a layout into tensors:

- :class:`GlobalParameters`: learned ``nn.Parameter`` s shared by all points (the 2-D
  experiments); it ignores the context.
- :class:`AmortizedParameters`: a linear head that maps encoder features ``h(x)`` of shape
  ``(B, H)`` to every raw parameter per data point, shape ``(B, *shape)`` (the paper's DLGM,
  where the inference network outputs μ, σ and all flow parameters λ). Its bias starts at the
  layout's initial values and its weights near zero, so an untrained amortized flow starts
  where the global one would.

Steps never know which source feeds them; their transforms broadcast either shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

Layout = dict[str, Tensor]


class GlobalParameters(nn.Module):
    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.names = list(layout)
        self.values = nn.ParameterList([nn.Parameter(v.detach().clone()) for v in layout.values()])

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        return dict(zip(self.names, self.values, strict=True))


class AmortizedParameters(nn.Module):
    def __init__(self, layout: Layout, context_features: int, init_scale: float = 1e-2) -> None:
        super().__init__()
        if context_features <= 0:
            raise ValueError(f"context_features must be positive, got {context_features}")
        self.names = list(layout)
        self.shapes = [tuple(v.shape) for v in layout.values()]
        self.sizes = [max(v.numel(), 1) for v in layout.values()]
        self.context_features = context_features
        total = sum(self.sizes)
        self.head = nn.Linear(context_features, total)
        with torch.no_grad():
            self.head.weight.normal_(0.0, init_scale / math.sqrt(context_features))
            if total:
                self.head.bias.copy_(torch.cat([v.detach().reshape(-1) for v in layout.values()]))

    def flat(self, context: Tensor | None) -> Tensor:
        """All raw parameters per data point, concatenated in layout order: shape ``(B, total)``."""
        if context is None:
            raise ValueError("an amortized flow needs a context (encoder features), got None")
        if context.dim() < 1 or context.shape[-1] != self.context_features:
            raise ValueError(
                f"context must have last dimension {self.context_features}, got shape {tuple(context.shape)}"
            )
        return self.head(context)

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        flat = self.flat(context)
        batch = flat.shape[:-1]
        out = {}
        for name, shape, chunk in zip(self.names, self.shapes, flat.split(self.sizes, -1), strict=True):
            out[name] = chunk.reshape(batch + shape)
        return out
