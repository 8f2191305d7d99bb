r"""The DLGM's observation model ``p(x | f_0(z_1))``, a component chosen by name (``DLGMConfig.likelihood``).

- ``bernoulli``: binarized MNIST (Rezende & Mohamed 2015, section 6.2), one logit per pixel.
- ``discretized_logistic``: 8-bit images such as CIFAR-10 (the paper's Table 3), the discretized
  logistic of PixelCNN++ (Salimans et al. 2017) and of the IAF paper (Kingma et al. 2016): for each
  pixel-channel a logistic with location ``μ`` and scale ``s = exp(ln s)`` integrated over the bin of
  the observed level ``k ∈ {0, …, 255}``, with the edge bins taking the tails,

  .. math::
      P(k) = \begin{cases}
        σ((x + h − μ)/s) & k = 0,\\
        σ((x + h − μ)/s) − σ((x − h − μ)/s) & 0 < k < 255,\\
        1 − σ((x − h − μ)/s) & k = 255,
      \end{cases}\qquad x = k/255,\ h = 1/510,

  so that ``Σ_k P(k) = 1`` exactly. ``ln P`` summed over the 3072 pixel-channels is the image's log
  likelihood in nats; bits per dimension are ``−ln p(x) / (3072 ln 2)``.

A likelihood maps the decoder's output (``params_per_dim`` numbers per data dimension) and the data
to ``ln p(x|z)`` summed over the data dimensions; it has no parameters of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """``Σ_i x_i ln π_i + (1 − x_i) ln(1 − π_i)`` with ``π = σ(logits)``, summed over pixels."""
    return (x * logits - F.softplus(logits)).sum(-1)


def discretized_logistic_log_prob(x: Tensor, loc: Tensor, log_scale: Tensor, levels: int = 256) -> Tensor:
    r"""Per-element ``ln P(k)`` of the discretized logistic (module docstring), for ``x = k/(levels − 1)``.

    Stable in float32 for any location and scale: with ``a = (x + h − μ)/s`` and ``b = (x − h − μ)/s``
    an interior bin is ``σ(a) − σ(b) = σ(a) σ(−b) (1 − e^{−(a−b)})``, so
    ``ln P = ln σ(a) + ln σ(−b) + ln(−expm1(−(a − b)))`` with ``a − b = 2h/s > 0``: no cancellation,
    no branch on the size of the bin mass, and finite gradients at the edge bins. The edges are
    computed from the integer level ``k = round(x (levels − 1))``, so neighbouring bins share them
    exactly and the masses telescope to 1.
    """
    k = torch.round(x * (levels - 1))
    inv_s = torch.exp(-log_scale)
    # bin edges (k ± ½)/(levels − 1) from the integer level, so that neighbouring bins share an edge exactly
    a = ((k + 0.5) / (levels - 1) - loc) * inv_s
    b = ((k - 0.5) / (levels - 1) - loc) * inv_s
    log_cdf_a = F.logsigmoid(a)  # ln σ(a): the k = 0 bin
    log_sf_b = F.logsigmoid(-b)  # ln(1 − σ(b)): the k = levels − 1 bin
    interior = log_cdf_a + log_sf_b + torch.log(-torch.expm1(b - a))
    return torch.where(k <= 0, log_cdf_a, torch.where(k >= levels - 1, log_sf_b, interior))


class Likelihood:
    """An observation model: ``params_per_dim`` decoder outputs per data dimension."""

    name: str = ""
    params_per_dim: int = 1

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``ln p(x|params)`` summed over the last (data) dimension."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """The pixel means ``E[x|params]`` in [0, 1], for sample and reconstruction grids."""
        raise NotImplementedError

    def init_output_bias(self, bias: Tensor, x_mean: Tensor, eps: float = 1e-3) -> None:
        """Set the decoder's output bias (in place) from the mean training image."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Binary pixels, ``params`` the logits (the MNIST model, bit for bit as before)."""

    name = "bernoulli"
    params_per_dim = 1

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return bernoulli_log_likelihood(x, params)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def init_output_bias(self, bias: Tensor, x_mean: Tensor, eps: float = 1e-3) -> None:
        p = x_mean.detach().clamp(eps, 1 - eps).to(bias)
        bias.copy_(torch.log(p) - torch.log1p(-p))


class DiscretizedLogistic(Likelihood):
    """8-bit levels given as ``x = k/255``; ``params = [μ, ln s]`` per pixel-channel (``2 · x_dim``).

    ``ln s`` is clamped below at −7 as in PixelCNN++ (a bin then holds essentially all the mass)."""

    name = "discretized_logistic"
    params_per_dim = 2
    levels = 256
    min_log_scale = -7.0
    #: initial scale: a logistic with standard deviation 0.25 (``s = 0.25 √3 / π``), about the spread of
    #: natural-image pixels in [0, 1]
    init_log_scale = math.log(0.25 * math.sqrt(3) / math.pi)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_scale = params.chunk(2, -1)
        return loc, log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        loc, log_scale = self.split(params)
        return discretized_logistic_log_prob(x, loc, log_scale, self.levels).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return self.split(params)[0].clamp(0.0, 1.0)

    def init_output_bias(self, bias: Tensor, x_mean: Tensor, eps: float = 1e-3) -> None:
        loc, log_scale = bias.chunk(2, -1)
        loc.copy_(x_mean.detach().to(bias))
        log_scale.fill_(self.init_log_scale)


LIKELIHOODS: dict[str, Callable[[], Likelihood]] = {"bernoulli": Bernoulli, "discretized_logistic": DiscretizedLogistic}


def build_likelihood(name: str) -> Likelihood:
    """The likelihood called ``name`` (one of :data:`LIKELIHOODS`)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}: expected one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
