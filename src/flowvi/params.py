"""Where a flow's parameters come from: a source per consumer, chosen when the flow is built.

Every consumer of raw (unconstrained) parameters, the base distribution and each flow step,
declares what it needs for one data point as a layout ``{name: initial value}``. A flow gives each
consumer one of two sources:

- **global**: the consumer owns the values as ``nn.Parameter`` s (:func:`own_parameters`), shared by
  all data points; the 2-D experiments, and NICE couplings shared by all ``x`` in an amortized flow;
- **amortized**: a slice of the flow's one shared linear head, which maps encoder features ``h(x)``
  of shape ``(B, H)`` to every amortized parameter of every consumer at once (one GEMM), shape
  ``(B, *shape)``: the paper's inference network, which outputs μ, σ and all flow parameters λ
  (section 4.2). The head's bias starts at the layouts' initial values and its weights near zero, so
  an untrained amortized flow starts where the global one would.

The source is chosen per parameter: a consumer's ``shared`` names layout entries that stay global
even when the rest of it is amortized (a Sylvester step's ``Q`` with ``shared_q=True``: one matrix per
step, while ``R``, ``R̃``, ``b`` come from the head), so the head holds only the per-point entries.

Consumers never know which source feeds them; their transforms broadcast either shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

Layout = dict[str, Tensor]


def own_parameters(module: nn.Module, layout: Layout) -> list[str]:
    """Register the layout's values on ``module`` as ``nn.Parameter`` s named like the layout (global source)."""
    for name, value in layout.items():
        if hasattr(module, name) and name not in module._parameters:
            raise ValueError(f"{type(module).__name__} already has an attribute {name!r}: rename the layout entry")
        module.register_parameter(name, nn.Parameter(value.detach().clone()))
    return list(layout)


class HeadSlice:
    """The columns ``[start, start + Σ sizes)`` of the shared head's output, split into named entries."""

    def __init__(self, start: int, layout: Layout) -> None:
        self.start = start
        self.names = list(layout)
        self.shapes = [tuple(v.shape) for v in layout.values()]
        self.sizes = [max(v.numel(), 1) for v in layout.values()]

    @property
    def stop(self) -> int:
        return self.start + sum(self.sizes)


class AmortizedHead(nn.Module):
    """One linear map from encoder features to the raw parameters of every amortized consumer.

    Args:
        layouts: the amortized consumers' layouts, in the order their columns are laid out.
        context_features: H, the width of the encoder features.
        init_scale: standard deviation of the weights times ``√H`` (near zero: start at the layouts).

    ``head(context)`` returns one dict of raw tensors per layout, each of shape ``(*batch, *shape)``.
    A :class:`~flowvi.NormalizingFlow` with ``context_features`` builds one (its ``head``).

    >>> head = fv.AmortizedHead([{"w": torch.zeros(3), "b": torch.zeros(())}], context_features=5)
    >>> raw = head(torch.randn(2, 5))                 # one GEMM: (2, 5) -> (2, 3 + 1)
    >>> raw[0]["w"].shape, raw[0]["b"].shape, head.out_features
    (torch.Size([2, 3]), torch.Size([2]), 4)
    """

    def __init__(self, layouts: Sequence[Layout], context_features: int, init_scale: float = 1e-2) -> None:
        super().__init__()
        if context_features <= 0:
            raise ValueError(f"context_features must be positive, got {context_features}")
        self.context_features = context_features
        self.slices: list[HeadSlice] = []
        start = 0
        for layout in layouts:
            self.slices.append(HeadSlice(start, layout))
            start = self.slices[-1].stop
        self.linear = nn.Linear(context_features, start)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, init_scale / math.sqrt(context_features))
            values = [v.detach().reshape(-1) for layout in layouts for v in layout.values()]
            if values:
                self.linear.bias.copy_(torch.cat(values))

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, context: Tensor | None) -> list[dict[str, Tensor]]:
        if context is None:
            raise ValueError("an amortized flow needs a context (encoder features), got None")
        if context.dim() < 1 or context.shape[-1] != self.context_features:
            raise ValueError(
                f"context must have last dimension {self.context_features}, got shape {tuple(context.shape)}"
            )
        flat = self.linear(context)
        batch = flat.shape[:-1]
        chunks = iter(flat.split([n for s in self.slices for n in s.sizes], -1))
        return [
            {name: next(chunks).reshape(batch + shape) for name, shape in zip(s.names, s.shapes, strict=True)}
            for s in self.slices
        ]
