"""Builders of the DLGM's amortized posteriors ``q(z|x)`` (section 4.2), one per kind of family.

Each maps ``(dim, K, context_features, **options)`` to a module called as ``posterior(Context(h,
log_joint))``: a :class:`flowvi.NormalizingFlow` whose base ``q_0 = N(μ(x), diag σ²(x))`` and flow
parameters come from the encoder features ``h(x)``, or Hamiltonian VI. Which family uses which
builder, and its K rules, are in :mod:`flowvi_experiments.family_table`; :func:`build_posterior` looks
the family up there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from flowvi.bases import StandardNormal
from flowvi.flow import NormalizingFlow
from flowvi.hamiltonian import HamiltonianVI
from flowvi.steps import make_steps

#: a builder maps (dim, K, context_features, **options) to a module ``posterior(context) -> q(z|x)``
PosteriorBuilder = Callable[..., nn.Module]


def posterior_families() -> list[str]:
    """The families the DLGM can use."""
    from ..family_table import dlgm_families

    return dlgm_families()


def build_posterior(family: str, dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """The amortized posterior ``q(z|x)`` of ``family`` with ``K`` steps on ``dim`` latents."""
    from ..family_table import get_family

    fam = get_family(family)
    if fam.dlgm is None:
        raise ValueError(f"the {fam.name} family has no DLGM posterior")
    fam.check_K(K)
    return fam.dlgm(dim, K, context_features, **options)


def diagonal_posterior(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """``q(z|x) = N(μ(x), diag σ²(x))``."""
    return NormalizingFlow(dim, [], context_features=context_features)


def flow_posterior(family: str) -> PosteriorBuilder:
    """The builder of an amortized normalizing flow of ``family`` (:func:`flowvi.make_steps`); its
    options (:meth:`~flowvi_experiments.family_table.Family.dlgm_options`: NICE's ``hidden``, ``depth``,
    ``conditioning``, or a config's ``family_options``) are keywords of ``make_steps``."""

    def builder(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
        return NormalizingFlow(dim, make_steps(family, dim, K, **options), context_features=context_features)

    builder.__name__ = f"{family.replace('-', '_')}_posterior"
    return builder


def full_rank_posterior(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """``q(z|x) = N(μ(x), L(x)L(x)ᵀ)``: a full-rank Gaussian (a :class:`flowvi.FullRank` step over the
    fixed N(0, I) base), the Cholesky factor per data point."""
    return NormalizingFlow(dim, make_steps("full-rank", dim, K), base=StandardNormal(dim),
                           context_features=context_features)


def hvi_posterior(dim: int, K: int, context_features: int, **options: Any) -> nn.Module:
    """Hamiltonian variational inference with ``K`` leapfrog steps (Salimans et al. 2015); it takes
    the batch's ``ln p(x, z)`` from the :class:`flowvi.Context`."""
    return HamiltonianVI(dim, K, context_features=context_features, hidden=200, init_step_size=0.05)
