"""A normalizing flow posterior as a module: ``flow(context) -> FlowPosterior`` (SPEC §2, §4).

>>> flow = NormalizingFlow(2, planar_steps(2, K=8))                  # global parameters
>>> q = flow()
>>> z, log_q = q.rsample_and_log_prob((256,))
>>> enc_flow = NormalizingFlow(40, planar_steps(40, K=10), context_features=400)  # amortized
>>> q_x = enc_flow(h)                     # h: (B, 400) encoder features -> batch of B posteriors
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distribution import FlowPosterior
from .params import AmortizedParameters, GlobalParameters
from .steps import FlowStep, Planar, inverse_softplus
from .transforms import FlowTransform, planar_reparameterize
from .transforms.planar_chain import PlanarChainTransform

_FAST_PATH = True


def set_fast_path(enabled: bool) -> None:
    """Fuse runs of consecutive planar steps into one :class:`PlanarChainTransform` (default on).

    Affects flows built with ``fast_path=None``. Results agree with the per-step reference path
    (:class:`~flowvi.transforms.PlanarTransform`) to float rounding.
    """
    global _FAST_PATH
    _FAST_PATH = bool(enabled)


def fast_path_enabled() -> bool:
    return _FAST_PATH


def _planar_runs(steps: Sequence[FlowStep]) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of consecutive :class:`Planar` steps."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, step in enumerate([*steps, None]):
        is_planar = type(step) is Planar  # a subclass may build differently: keep it on the reference path
        if is_planar and start is None:
            start = i
        elif not is_planar and start is not None:
            runs.append((start, i))
            start = None
    return runs


class NormalizingFlow(nn.Module):
    """Base ``q_0 = N(μ, diag σ²)`` followed by ``steps``, with all per-point parameters from one source.

    Args:
        dim: latent dimension D.
        steps: the flow steps ``f_1 … f_K`` (see :mod:`flowvi.steps`).
        context_features: ``None`` for global parameters; else the width of the encoder
            features from which μ, σ and every step's parameters are produced per data point.
        trainable_base: with ``False`` the base is the fixed ``N(0, I)`` (the 2-D experiments).
        fast_path: fuse runs of consecutive planar steps into one fast chain transform
            (:class:`~flowvi.transforms.PlanarChainTransform`); ``None`` follows
            :func:`set_fast_path`. Same distribution either way, to float rounding.
    """

    def __init__(
        self,
        dim: int,
        steps: Sequence[FlowStep] = (),
        *,
        context_features: int | None = None,
        trainable_base: bool = True,
        fast_path: bool | None = None,
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
        self.fast_path = fast_path
        self._runs = _planar_runs(self.steps)
        names = list(layout)
        self._index = {name: j for j, name in enumerate(names)}
        sizes = [max(v.numel(), 1) for v in layout.values()]
        self._offsets = {name: sum(sizes[:j]) for j, name in enumerate(names)}
        self._shapes = {name: tuple(v.shape) for name, v in layout.items()}
        if not all(self._stacked_layout(start, stop) for start, stop in self._runs):
            self._runs = []  # the amortized head's columns are not in the (w, u, b) per-step order read below

    def _stacked_layout(self, start: int, stop: int) -> bool:
        """Steps ``start … stop−1`` hold ``w (D), u (D), b ()`` back to back in the layout."""
        first, width = self._offsets[f"{start}.w"], 2 * self.dim + 1
        for i in range(start, stop):
            for name, shift, shape in (("w", 0, (self.dim,)), ("u", self.dim, (self.dim,)), ("b", 2 * self.dim, ())):
                key = f"{i}.{name}"
                if self._offsets.get(key) != first + (i - start) * width + shift or self._shapes[key] != shape:
                    return False
        return True

    @property
    def K(self) -> int:
        return len(self.steps)

    def forward(self, context: Tensor | None = None) -> FlowPosterior:
        if context is not None and not self.amortized:
            raise ValueError("this flow has global parameters (context_features=None) and takes no context; "
                             "build it with context_features=H to condition on encoder features")
        fast = _FAST_PATH if self.fast_path is None else self.fast_path
        if fast and self._runs:
            return self._forward_fast(context)
        raw = self.params(context)
        loc, scale = self._base(raw, context)
        transforms = [
            step.build({name: raw[key] for name, key in keys})
            for step, keys in zip(self.steps, self._keys, strict=True)
        ]
        return FlowPosterior(loc, scale, transforms)

    def _base(self, raw: dict[str, Tensor], context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.trainable_base:
            return raw["base.loc"], F.softplus(raw["base.scale"])
        loc, scale = self._loc, self._scale
        if context is not None and self.amortized:
            loc = loc.expand(context.shape[:-1] + (self.dim,))
            scale = scale.expand_as(loc)
        return loc, scale

    def _forward_fast(self, context: Tensor | None) -> FlowPosterior:
        """As :meth:`forward`, with each run of planar steps read as stacked ``(…, K, D)`` tensors
        (a few slicing ops instead of ~10 per step) and built into one :class:`PlanarChainTransform`."""
        in_run = {i for start, stop in self._runs for i in range(start, stop)}
        wanted = [key for i, keys in enumerate(self._keys) if i not in in_run for _, key in keys]
        if self.trainable_base:
            wanted += ["base.loc", "base.scale"]
        if isinstance(self.params, AmortizedParameters):
            flat = self.params.flat(context)
            raw = {key: self._slice(flat, key) for key in wanted}
            blocks = {}
            for start, stop in self._runs:
                first = self._offsets[f"{start}.w"]
                block = flat[..., first : first + (stop - start) * (2 * self.dim + 1)]
                block = block.unflatten(-1, (stop - start, 2 * self.dim + 1))
                blocks[start] = (block[..., : self.dim], block[..., self.dim : 2 * self.dim], block[..., -1])
        else:
            values = self.params.values
            raw = {key: values[self._index[key]] for key in wanted}
            blocks = {}
            for start, stop in self._runs:
                blocks[start] = tuple(
                    torch.stack([values[self._index[f"{i}.{name}"]] for i in range(start, stop)], -2 + (name == "b"))
                    for name in ("w", "u", "b")
                )
        loc, scale = self._base(raw, context)
        transforms: list[FlowTransform] = []
        runs = dict(self._runs)
        i = 0
        while i < len(self.steps):
            if i in runs:
                w, u, b = blocks[i]
                u_hat, uw = planar_reparameterize(u, w)
                transforms.append(PlanarChainTransform(w, u_hat, b, uw=uw))
                i = runs[i]
            else:
                transforms.append(self.steps[i].build({name: raw[key] for name, key in self._keys[i]}))
                i += 1
        return FlowPosterior(loc, scale, transforms)

    def _slice(self, flat: Tensor, key: str) -> Tensor:
        shape = self._shapes[key]
        first = self._offsets[key]
        return flat[..., first : first + max(math.prod(shape), 1)].reshape(flat.shape[:-1] + shape)
