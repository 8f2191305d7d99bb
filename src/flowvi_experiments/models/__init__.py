"""Models built on the flow library: the deep latent Gaussian model of the MNIST experiment (section 6.2)."""

from .dlgm import DLGM, DLGMConfig
from .maxout import Maxout, maxout_mlp
from .posterior import build_posterior, posterior_families

__all__ = ["DLGM", "DLGMConfig", "Maxout", "build_posterior", "maxout_mlp", "posterior_families"]
