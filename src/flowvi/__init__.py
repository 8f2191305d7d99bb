"""flowvi: variational inference with normalizing flows (Rezende & Mohamed, ICML 2015)."""

from .bases import BaseDistribution, DiagonalNormal, StandardNormal
from .distribution import Context, FlowPosterior
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
    "FlowPosterior",
    "FlowStep",
    "FlowTransform",
    "ImportanceEstimate",
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
