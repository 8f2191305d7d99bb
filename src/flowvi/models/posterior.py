"""A registry of amortized posterior families for the DLGM (SPEC §4, §5).

``build_posterior(family, dim, K, context_features)`` returns the inference network's output
distribution: a :class:`flowvi.NormalizingFlow` whose base ``q_0 = N(μ(x), diag σ²(x))`` and
every flow step's parameters are produced from the encoder features ``h(x)``. New families
(e.g. Hamiltonian variational inference) register a builder with :func:`register_posterior`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..flow import NormalizingFlow
from ..steps import make_steps

#: a builder maps (dim, K, context_features, **options) to a module ``posterior(h) -> q(z|x)``
PosteriorBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, PosteriorBuilder] = {}


def register_posterior(name: str) -> Callable[[PosteriorBuilder], PosteriorBuilder]:
    """Decorator: register ``builder`` under ``name`` (lower case)."""

    def deco(builder: PosteriorBuilder) -> PosteriorBuilder:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"posterior family {name!r} is already registered")
        _REGISTRY[key] = builder
        return builder

    return deco


def posterior_families() -> list[str]:
    return sorted(_REGISTRY)


def build_posterior(family: str, dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """The amortized posterior ``q(z|x)`` of ``family`` with ``K`` steps on ``dim`` latents."""
    key = family.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown posterior family {family!r}: expected one of {', '.join(posterior_families())}")
    if K < 0:
        raise ValueError(f"the flow length K must be >= 0, got {K}")
    return _REGISTRY[key](dim, K, context_features, **options)


@register_posterior("diagonal")
def _diagonal(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    if K != 0:
        raise ValueError(f"the diagonal posterior has no flow steps, got K={K}")
    return NormalizingFlow(dim, [], context_features=context_features)


def _flow_builder(family: str, takes_nice_options: bool) -> PosteriorBuilder:
    def builder(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
        if K < 1:
            raise ValueError(f"the {family} posterior needs K >= 1 flow steps, got K={K}")
        kwargs = {k: v for k, v in options.items() if takes_nice_options and k in ("hidden", "depth", "conditioning")}
        return NormalizingFlow(dim, make_steps(family, dim, K, **kwargs), context_features=context_features)

    return builder


for _family, _nice in (("planar", False), ("radial", False), ("nice-perm", True), ("nice-orth", True),
                       ("sylvester-orth", False), ("sylvester-householder", False), ("sylvester-triangular", False),
                       ("iaf", False)):
    register_posterior(_family)(_flow_builder(_family, _nice))


@register_posterior("full-rank")
def _full_rank(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """``q(z|x) = N(μ(x), L(x)L(x)ᵀ)``: a full-rank Gaussian, the Cholesky factor per data point."""
    steps = make_steps("full-rank", dim, K)
    return NormalizingFlow(dim, steps, context_features=context_features, trainable_base=False)


@register_posterior("hvi")
def _hvi(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """Hamiltonian variational inference with ``K`` leapfrog steps (Salimans et al. 2015; SPEC §5).

    Its ``forward(h, log_joint)`` also takes the batch's ``ln p(x, z)`` (``needs_log_joint``).
    """
    from ..hamiltonian import HamiltonianVI

    if K < 1:
        raise ValueError(f"the hvi posterior needs K >= 1 leapfrog steps, got K={K}")
    return HamiltonianVI(dim, K, context_features=context_features, hidden=200, init_step_size=0.05)
