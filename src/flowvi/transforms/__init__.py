"""Flow steps as ``torch.distributions.Transform`` objects built from parameter tensors."""

from .base import ComposeFlow, FlowTransform
from .coupling import AdditiveCouplingTransform
from .mixing import OrthogonalTransform, PermutationTransform, random_orthogonal, random_permutation
from .planar import PLANAR_MARGIN, PlanarTransform, planar_constrain, planar_reparameterize
from .planar_chain import PlanarChainTransform
from .radial import ALPHA_MIN, RADIAL_MARGIN, RadialTransform, radial_constrain

__all__ = [
    "ALPHA_MIN",
    "AdditiveCouplingTransform",
    "ComposeFlow",
    "FlowTransform",
    "OrthogonalTransform",
    "PLANAR_MARGIN",
    "PermutationTransform",
    "PlanarChainTransform",
    "PlanarTransform",
    "RADIAL_MARGIN",
    "RadialTransform",
    "planar_constrain",
    "planar_reparameterize",
    "radial_constrain",
    "random_orthogonal",
    "random_permutation",
]
