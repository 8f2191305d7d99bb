"""flowvi: variational inference with normalizing flows (Rezende & Mohamed, ICML 2015).

The examples in the docstrings are doctests (tests/flowvi/test_doctests.py runs them); they assume
``import torch`` and ``import flowvi as fv``.

>>> flow = fv.NormalizingFlow(2, fv.planar_steps(2, K=8))             # q_0 = N(μ, diag σ²), 8 planar steps
>>> loss = fv.free_energy(flow(), lambda z: -0.5 * (z ** 2).sum(-1), n_samples=64)   # eq. (15)
>>> loss.backward()
"""

from .bases import BaseDistribution, DiagonalNormal, StandardNormal
from .distribution import Context, FlowPosterior
from .families import IAF, FullRank, SylvesterHouseholder, SylvesterOrthogonal, SylvesterTriangular
from .fitting import FitError, FitReport, FitResult, fit
from .flow import NormalizingFlow
from .objectives import ImportanceEstimate, LinearAnnealing, free_energy, importance_log_marginal
from .params import AmortizedHead
from .steps import (
    AdditiveCoupling,
    FlowStep,
    Orthogonal,
    Permutation,
    Planar,
    PlanarChain,
    Radial,
    make_steps,
    nice_steps,
    planar_steps,
    radial_steps,
)
from .transforms import (
    AdditiveCouplingTransform,
    ComposeFlow,
    FlowTransform,
    InverseNotAvailable,
    OrthogonalTransform,
    PermutationTransform,
    PlanarChainTransform,
    PlanarTransform,
    RadialTransform,
    planar_constrain,
    radial_constrain,
)
from .validation import set_validation

__version__ = "0.1.0"

__all__ = [
    "AdditiveCoupling",
    "AdditiveCouplingTransform",
    "AmortizedHead",
    "BaseDistribution",
    "ComposeFlow",
    "Context",
    "DiagonalNormal",
    "FitError",
    "FitReport",
    "FitResult",
    "FlowPosterior",
    "FlowStep",
    "FlowTransform",
    "FullRank",
    "IAF",
    "ImportanceEstimate",
    "InverseNotAvailable",
    "LinearAnnealing",
    "NormalizingFlow",
    "Orthogonal",
    "OrthogonalTransform",
    "Permutation",
    "PermutationTransform",
    "Planar",
    "PlanarChain",
    "PlanarChainTransform",
    "PlanarTransform",
    "Radial",
    "RadialTransform",
    "StandardNormal",
    "SylvesterHouseholder",
    "SylvesterOrthogonal",
    "SylvesterTriangular",
    "fit",
    "free_energy",
    "importance_log_marginal",
    "make_steps",
    "nice_steps",
    "planar_constrain",
    "planar_steps",
    "radial_constrain",
    "radial_steps",
    "set_validation",
]
