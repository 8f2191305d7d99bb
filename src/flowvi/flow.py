"""A normalizing flow posterior as a module: ``flow(context) -> FlowPosterior`` (SPEC §2, §4).

>>> flow = NormalizingFlow(2, planar_steps(2, K=8))                  # global parameters
>>> q = flow()
>>> z, log_q = q.rsample_and_log_prob((256,))
>>> enc_flow = NormalizingFlow(40, planar_steps(40, K=10), context_features=400)  # amortized
>>> q_x = enc_flow(h)                     # h: (B, 400) encoder features -> batch of B posteriors
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distribution import FlowPosterior
from .params import AmortizedParameters, GlobalParameters
from .steps import FlowStep, inverse_softplus


class NormalizingFlow(nn.Module):
    """Base ``q_0 = N(μ, diag σ²)`` followed by ``steps``, with all per-point parameters from one source.

    Args:
        dim: latent dimension D.
        steps: the flow steps ``f_1 … f_K`` (see :mod:`flowvi.steps`).
        context_features: ``None`` for global parameters; else the width of the encoder
            features from which μ, σ and every step's parameters are produced per data point.
        trainable_base: with ``False`` the base is the fixed ``N(0, I)`` (the 2-D experiments).
    """

    def __init__(
        self,
        dim: int,
        steps: Sequence[FlowStep] = (),
        *,
        context_features: int | None = None,
        trainable_base: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        for i, step in enumerate(steps):
            if not isinstance(step, FlowStep):
                raise TypeError(f"step {i} must be a FlowStep, got {type(step).__name__}")
            if step.dim != dim:
                raise ValueError(f"step {i} ({type(step).__name__}) has dim {step.dim}, the flow has dim {dim}")
        self.dim = dim
        self.steps = nn.ModuleList(steps)
        self.trainable_base = trainable_base
        layout: dict[str, Tensor] = {}
        if trainable_base:
            layout["base.loc"] = torch.zeros(dim)
            layout["base.scale"] = torch.full((dim,), inverse_softplus(1.0))
        self._keys: list[list[tuple[str, str]]] = []
        for i, step in enumerate(steps):
            keys = []
            for name, value in step.layout().items():
                layout[f"{i}.{name}"] = value
                keys.append((name, f"{i}.{name}"))
            self._keys.append(keys)
        self.amortized = context_features is not None
        self.params = (
            AmortizedParameters(layout, context_features) if context_features is not None else GlobalParameters(layout)
        )
        if not trainable_base:
            self.register_buffer("_loc", torch.zeros(dim))
            self.register_buffer("_scale", torch.ones(dim))

    @property
    def K(self) -> int:
        return len(self.steps)

    def forward(self, context: Tensor | None = None) -> FlowPosterior:
        raw = self.params(context)
        if self.trainable_base:
            loc, scale = raw["base.loc"], F.softplus(raw["base.scale"])
        else:
            loc, scale = self._loc, self._scale
            if context is not None and self.amortized:
                loc = loc.expand(context.shape[:-1] + (self.dim,))
                scale = scale.expand_as(loc)
        transforms = [
            step.build({name: raw[key] for name, key in keys}) for step, keys in zip(self.steps, self._keys, strict=True)
        ]
        return FlowPosterior(loc, scale, transforms)
