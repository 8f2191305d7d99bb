"""flowvi: variational inference with normalizing flows (Rezende & Mohamed, ICML 2015)."""

from .distribution import FlowPosterior
from .families import IAF, FullRank, SylvesterHouseholder, SylvesterOrthogonal, SylvesterTriangular
from .fitting import FitError, FitReport, FitResult, fit
from .flow import NormalizingFlow, fast_path_enabled, set_fast_path
from .objectives import ImportanceEstimate, LinearAnnealing, free_energy, importance_log_marginal
from .params import AmortizedParameters, GlobalParameters
from .steps import (
    AdditiveCoupling,
    FlowStep,
    Orthogonal,
    Permutation,
    Planar,
    Radial,
    SharedAdditiveCoupling,
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
    "AmortizedParameters",
    "ComposeFlow",
    "FitError",
    "FitReport",
    "FitResult",
    "FlowPosterior",
    "FlowStep",
    "FlowTransform",
    "FullRank",
    "GlobalParameters",
    "IAF",
    "ImportanceEstimate",
    "InverseNotAvailable",
    "LinearAnnealing",
    "NormalizingFlow",
    "Orthogonal",
    "OrthogonalTransform",
    "Permutation",
    "PermutationTransform",
    "PlanarChainTransform",
    "Planar",
    "PlanarTransform",
    "Radial",
    "RadialTransform",
    "SharedAdditiveCoupling",
    "SylvesterHouseholder",
    "SylvesterOrthogonal",
    "SylvesterTriangular",
    "fast_path_enabled",
    "fit",
    "free_energy",
    "importance_log_marginal",
    "make_steps",
    "nice_steps",
    "planar_constrain",
    "planar_steps",
    "radial_constrain",
    "radial_steps",
    "set_fast_path",
    "set_validation",
]
