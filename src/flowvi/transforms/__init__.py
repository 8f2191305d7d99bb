"""Flow steps as ``torch.distributions.Transform`` objects built from parameter tensors."""

from .base import ComposeFlow, FlowTransform, InverseNotAvailable, promote
from .coupling import AdditiveCouplingTransform, coupling_partition
from .full_rank import CHOLESKY_MIN, LowerTriangularAffineTransform, cholesky_factor
from .iaf import MADE, IAFTransform, MaskedLinear, made_masks
from .mixing import (
    OrthogonalTransform,
    PermutationTransform,
    check_orthogonal,
    check_permutation,
    random_orthogonal,
    random_permutation,
)
from .planar import PLANAR_MARGIN, PlanarTransform, planar_constrain, planar_reparameterize
from .planar_chain import PlanarChainTransform
from .radial import ALPHA_MIN, RADIAL_MARGIN, RadialTransform, radial_constrain
from .sylvester import (
    SYLVESTER_MARGIN,
    SylvesterTransform,
    cayley_orthogonal,
    householder_orthogonal,
    sylvester_diagonal,
    upper_triangular,
)

__all__ = [
    "ALPHA_MIN",
    "AdditiveCouplingTransform",
    "CHOLESKY_MIN",
    "IAFTransform",
    "LowerTriangularAffineTransform",
    "MADE",
    "MaskedLinear",
    "ComposeFlow",
    "FlowTransform",
    "InverseNotAvailable",
    "OrthogonalTransform",
    "PLANAR_MARGIN",
    "PermutationTransform",
    "PlanarChainTransform",
    "PlanarTransform",
    "RADIAL_MARGIN",
    "RadialTransform",
    "SYLVESTER_MARGIN",
    "SylvesterTransform",
    "cayley_orthogonal",
    "check_orthogonal",
    "check_permutation",
    "cholesky_factor",
    "coupling_partition",
    "householder_orthogonal",
    "made_masks",
    "planar_constrain",
    "planar_reparameterize",
    "promote",
    "radial_constrain",
    "random_orthogonal",
    "random_permutation",
    "sylvester_diagonal",
    "upper_triangular",
]
