r"""A normalizing flow posterior as a module: ``flow(context) -> FlowPosterior`` (sections 4.1–4.2).

``q_K`` is the law of ``z_K = f_K ∘ … ∘ f_1(z_0)``, ``z_0 ~ q_0`` (eq. 6–7). The module holds the
base :mod:`~flowvi.bases` distribution and the :mod:`~flowvi.steps`; each of them gets its raw
parameters from the source chosen when the flow is built (:mod:`flowvi.params`): its own global
parameters, or its slice of one shared linear head from the encoder features (amortized).

>>> flow = fv.NormalizingFlow(2, fv.planar_steps(2, K=8), base=fv.StandardNormal(2))   # global parameters
>>> q = flow()
>>> z, log_q = q.rsample_and_log_prob((256,))
>>> enc_flow = fv.NormalizingFlow(40, fv.planar_steps(40, K=10), context_features=400)  # amortized
>>> h = torch.randn(16, 400)              # encoder features of B = 16 data points
>>> enc_flow(h).batch_shape               # a batch of B posteriors
torch.Size([16])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .bases import BaseDistribution, DiagonalNormal, StandardNormal
from .distribution import Context, FlowPosterior, as_context
from .params import AmortizedHead, own_parameters
from .steps import FlowStep


class NormalizingFlow(nn.Module):
    """Base ``q_0`` followed by ``steps``: ``flow(context)`` is the :class:`~flowvi.FlowPosterior` ``q_K``.

    Args:
        dim: latent dimension D.
        steps: the flow steps ``f_1 … f_K`` (see :mod:`flowvi.steps`; :func:`~flowvi.planar_steps`
            gives one fused :class:`~flowvi.PlanarChain` for a run of planar steps).
        base: ``q_0``; default :class:`~flowvi.DiagonalNormal` (learned, amortized in an amortized flow).
        context_features: ``None`` for global parameters; else the width H of the encoder features
            from which one linear head produces every amortized parameter per data point.
        trainable_base: shorthand kept from earlier versions: ``True`` for ``DiagonalNormal(dim)``,
            ``False`` for ``StandardNormal(dim)``; give ``base`` instead.

    >>> flow = fv.NormalizingFlow(2, fv.planar_steps(2, 8), base=fv.StandardNormal(2))
    >>> z, log_q = flow().rsample_and_log_prob((100,))
    >>> z.shape, log_q.shape, flow.K
    (torch.Size([100, 2]), torch.Size([100]), 8)
    """

    _version = 2  #: 1: parameters under ``params.head`` / ``params.values`` (before flowvi 0.2)

    def __init__(
        self,
        dim: int,
        steps: Sequence[FlowStep] = (),
        *,
        base: BaseDistribution | None = None,
        context_features: int | None = None,
        trainable_base: bool | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if base is not None and trainable_base is not None:
            raise ValueError("give base or trainable_base, not both")
        if base is None:
            base = StandardNormal(dim) if trainable_base is False else DiagonalNormal(dim)
        if not isinstance(base, BaseDistribution) or base.dim != dim:
            raise ValueError(f"base must be a BaseDistribution of dim {dim}, got {base!r}")
        for i, step in enumerate(steps):
            if not isinstance(step, FlowStep):
                raise TypeError(f"step {i} must be a FlowStep, got {type(step).__name__}")
            if step.dim != dim:
                raise ValueError(f"step {i} ({type(step).__name__}) has dim {step.dim}, the flow has dim {dim}")
        self.dim = dim
        self.base = base
        self.steps = nn.ModuleList(steps)
        self.amortized = context_features is not None
        consumers: list[nn.Module] = [base, *self.steps]
        layouts = [c.layout() for c in consumers]  # in this order: initial values draw from the global RNG
        #: per consumer: the index of its slice of the head (its amortized entries), or None for none
        self._source: list[int | None] = []
        #: per consumer: the names of its own global parameters (the rest of its layout is in its head slice)
        self._own: list[list[str]] = []
        amortized = []
        for i, (consumer, layout) in enumerate(zip(consumers, layouts, strict=True)):
            wants = consumer.amortize if consumer.amortize is not None else self.amortized
            if wants and not self.amortized:
                raise ValueError(f"{_name(i, consumer)} asks for amortized parameters: give the flow context_features")
            unknown = sorted(set(consumer.shared) - set(layout))
            if unknown:
                raise ValueError(f"{_name(i, consumer)} shares {', '.join(map(repr, unknown))}, which its layout does "
                                 f"not have: it has {', '.join(map(repr, layout)) or 'no parameters'}")
            per_point = {k: v for k, v in layout.items() if wants and k not in consumer.shared}
            if per_point:
                self._source.append(len(amortized))
                amortized.append(per_point)
            else:
                self._source.append(None)
            self._own.append(own_parameters(consumer, {k: v for k, v in layout.items() if k not in per_point}))
        self.head = AmortizedHead(amortized, context_features) if context_features is not None else None

    @property
    def K(self) -> int:
        """The number of elementary flow steps (a :class:`~flowvi.PlanarChain` counts as its K)."""
        return sum(step.length for step in self.steps)

    def forward(self, context: Context | Tensor | None = None) -> FlowPosterior:
        """``q_K`` given the encoder features (a tensor, or a :class:`~flowvi.Context`; ``None`` when global)."""
        context = as_context(context).features
        if context is not None and not self.amortized:
            raise ValueError("this flow has global parameters (context_features=None) and takes no context; "
                             "build it with context_features=H to condition on encoder features")
        sliced = self.head(context) if self.head is not None else []
        consumers = [self.base, *self.steps]
        raws = [
            {name: getattr(c, name) for name in own} | ({} if src is None else sliced[src])
            for c, own, src in zip(consumers, self._own, self._source, strict=True)
        ]
        batch = context.shape[:-1] if self.amortized and context is not None else torch.Size()
        loc, scale = self.base.build(raws[0], batch)
        if loc.shape[:-1] != batch:
            loc, scale = loc.expand(batch + loc.shape[-1:]), scale.expand(batch + scale.shape[-1:])
        transforms = [step.build(raw) for step, raw in zip(self.steps, raws[1:], strict=True)]
        return FlowPosterior(loc, scale, transforms)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, *args) -> None:
        if local_metadata.get("version") == 1 or f"{prefix}params.head.weight" in state_dict or any(
            k.startswith(prefix + "params.values.") for k in state_dict
        ):
            _upgrade_v1(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def _name(i: int, consumer: nn.Module) -> str:
    return "the base" if i == 0 else f"step {i - 1} ({type(consumer).__name__})"


def _upgrade_v1(flow: NormalizingFlow, state: dict[str, Any], prefix: str) -> None:
    """Rename a state dict written before the parameter sources (``params.head.*``, ``params.values.N``
    and the fixed base's ``_loc``/``_scale``) to today's keys, in place. The columns of the head and the
    order of the global values are unchanged, so old checkpoints load into the same model. Old flows
    listed a run of planar steps one by one where a :class:`~flowvi.PlanarChain` now stands: the
    indices of the steps after it shift."""
    old_index, renumber = 0, {}
    for i, step in enumerate(flow.steps):
        renumber[old_index] = i
        old_index += step.length
    moved = {}
    for key in [k for k in state if k.startswith(prefix + "steps.")]:
        index, _, rest = key[len(prefix + "steps."):].partition(".")
        if index.isdigit() and int(index) in renumber:
            moved[f"{prefix}steps.{renumber[int(index)]}.{rest}"] = state.pop(key)
    state.update(moved)
    for name in ("weight", "bias"):
        old = f"{prefix}params.head.{name}"
        if old in state:
            state[f"{prefix}head.linear.{name}"] = state.pop(old)
    values = sorted((int(k[len(prefix) + len("params.values."):]), k) for k in state
                    if k.startswith(prefix + "params.values."))
    if values:
        flat = torch.cat([state.pop(k).reshape(-1) for _, k in values])
        consumers = [flow.base, *flow.steps]
        names = ["base"] + [f"steps.{i}" for i in range(len(flow.steps))]
        offset = 0
        for consumer, owner, own in zip(consumers, names, flow._own, strict=True):
            for name in own:
                like = getattr(consumer, name)
                state[f"{prefix}{owner}.{name}"] = flat[offset : offset + like.numel()].reshape(like.shape)
                offset += like.numel()
    for old, new in (("_loc", "loc"), ("_scale", "scale")):
        if prefix + old in state:
            value = state.pop(prefix + old)
            if isinstance(flow.base, StandardNormal):
                state[f"{prefix}base.{new}"] = value
