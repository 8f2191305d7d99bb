r"""The deep latent Gaussian model of the MNIST experiment (section 2, eq. 4; section 6.2).

Generative model with ``L`` stochastic layers (1 by default = the VAE, 2 as an option):

.. math::
    p(x, z_1, …, z_L) = p(x \mid f_0(z_1)) \prod_{l=1}^{L-1} p(z_l \mid f_l(z_{l+1}))\; p(z_L),
    \qquad p(z_L) = N(0, I),

with ``p(x|·)`` Bernoulli (binarized MNIST) or a discretized logistic per pixel-channel (8-bit images
such as CIFAR-10, the paper's Table 3; :mod:`flowvi_experiments.models.likelihood`), ``p(z_l|·)`` diagonal
Gaussian and every ``f`` a network of Maxout layers (400 units, window 4). The inference network maps ``x``
to features ``h(x)``; the posterior family (:mod:`flowvi_experiments.family_table`) turns ``h(x)`` into
``q_K(z_1|x)``: μ, σ and all flow parameters are amortized (section 4.2). With two layers
``q(z_1, z_2|x) = q_K(z_1|x) q_K(z_2|z_1)``.

Training minimizes the annealed free energy (eq. 20) through :meth:`DLGM.loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvi.distribution import Context, diagonal_normal_log_prob
from flowvi.objectives import free_energy

from ..keys import unknown_keys_error
from .likelihood import bernoulli_log_likelihood, build_likelihood  # noqa: F401 - re-exported
from .maxout import maxout_mlp
from .posterior import build_posterior


@dataclass
class DLGMArchitecture:
    """The DLGM's architecture and posterior family (section 6.2 defaults): every key of
    :class:`DLGMConfig` but the data dimension. A run's :class:`~flowvi_experiments.training.TrainConfig`
    is built on these fields (its config.yaml names them flat, beside the training keys)."""

    latent: int = 40  #: latent variables per stochastic layer
    hidden: int = 400  #: Maxout units per deterministic layer
    window: int = 4  #: Maxout window
    hidden_layers: int = 1  #: deterministic Maxout layers in each network
    stochastic_layers: int = 1
    family: str = "diagonal"  #: posterior family (see :mod:`flowvi_experiments.family_table`)
    K: int = 0  #: flow length
    nice_hidden: int = 64  #: width of the NICE coupling networks
    nice_depth: int = 2  #: hidden layers of the NICE coupling networks
    #: NICE couplings conditioned on x by the encoder ("amortized") or shared by all x ("global")
    nice_conditioning: str = "amortized"
    #: the observation model p(x|z): bernoulli (binary pixels) or discretized_logistic (8-bit levels k/255)
    likelihood: str = "bernoulli"
    #: options of the family's steps, keywords of :func:`flowvi.make_steps` (Sylvester's ``m`` and ``shared_q``,
    #: the IAF's ``hidden`` …); the family table says which it takes (:class:`~flowvi_experiments.family_table.Family`)
    family_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DLGMConfig(DLGMArchitecture):
    """Architecture of the DLGM (section 6.2 defaults) and the data dimension ``x_dim``.

    >>> DLGMConfig(family="planar", K=10)            # MNIST: x_dim = 784
    """

    x_dim: int = 784

    def __post_init__(self) -> None:
        if self.stochastic_layers not in (1, 2):
            raise ValueError(f"stochastic_layers must be 1 or 2, got {self.stochastic_layers}")
        for name in ("x_dim", "latent", "hidden", "window", "hidden_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        from ..family_table import FAMILIES  # the family table imports this package's builders

        family = FAMILIES.get(str(self.family).lower())
        if family is not None:  # an unknown family is named when the posterior is built
            self.family_options = family.check_options(
                {} if self.family_options is None else self.family_options, self.latent)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DLGMConfig:
        known = [f.name for f in fields(cls)]
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(unknown_keys_error("model config", unknown, known))
        return cls(**values)


class StackedPosterior:
    """``q(z_1, z_2|x) = q(z_1|x) q(z_2|z_1)`` for the two-layer DLGM, as one distribution on
    ``[z_1, z_2]`` with ``rsample_and_log_prob`` (the contract of :func:`flowvi.free_energy`)."""

    def __init__(self, q1: Any, upper: Callable[[Tensor], Any]) -> None:
        self.q1, self.upper = q1, upper

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] | torch.Size = ()) -> tuple[Tensor, Tensor]:
        z1, log_q1 = self.q1.rsample_and_log_prob(sample_shape)
        z2, log_q2 = self.upper(z1).rsample_and_log_prob(())
        return torch.cat([z1, z2], -1), log_q1 + log_q2

    def rsample(self, sample_shape: tuple[int, ...] | torch.Size = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]


class DLGM(nn.Module):
    """DLGM with an amortized flow posterior (section 6.2).

    >>> model = DLGM(DLGMConfig(family="planar", K=10))
    >>> loss = model.loss(x_batch, beta=0.5)      # annealed free energy (eq. 20), mean over the batch
    >>> loss.backward()
    """

    def __init__(self, config: DLGMConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or DLGMConfig()
        if overrides:
            cfg = DLGMConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        H, D = cfg.hidden, cfg.latent
        from ..family_table import get_family  # the family table imports this package's builders

        family = get_family(cfg.family)
        if cfg.stochastic_layers not in family.stochastic_layers:
            raise ValueError(f"the {family.name} posterior supports {' or '.join(map(str, family.stochastic_layers))} "
                             f"stochastic layer(s), got {cfg.stochastic_layers}")
        self.likelihood = build_likelihood(cfg.likelihood)
        opts = family.dlgm_options(cfg)
        # inference network: x -> h(x) -> q_K(z_1|x)
        self.encoder = maxout_mlp(cfg.x_dim, H, cfg.hidden_layers, cfg.window)
        self.posterior = build_posterior(cfg.family, D, cfg.K, H, **opts)
        # generative network: z_1 -> the likelihood's parameters (Bernoulli logits, or logistic μ and ln s)
        out = cfg.x_dim * self.likelihood.params_per_dim
        self.decoder = nn.Sequential(maxout_mlp(D, H, cfg.hidden_layers, cfg.window), nn.Linear(H, out))
        if cfg.stochastic_layers == 2:
            self.encoder2 = maxout_mlp(D, H, cfg.hidden_layers, cfg.window)
            self.posterior2 = build_posterior(cfg.family, D, cfg.K, H, **opts)
            self.prior1 = nn.Sequential(maxout_mlp(D, H, cfg.hidden_layers, cfg.window), nn.Linear(H, 2 * D))

    @property
    def latent_dim(self) -> int:
        """Total latent dimension (``latent × stochastic_layers``)."""
        return self.config.latent * self.config.stochastic_layers

    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point tensor")
        if x.dim() != 2 or x.shape[-1] != self.config.x_dim:
            raise ValueError(f"x must have shape (B, {self.config.x_dim}), got {tuple(x.shape)}")
        return x

    def q(self, x: Tensor) -> Any:
        """The approximate posterior ``q_φ(z|x)`` for a batch ``x`` of shape ``(B, x_dim)``."""
        # the one posterior contract: encoder features and ln p(x, z) (used by HVI's dynamics)
        q1 = self.posterior(Context(self.encoder(self._check_x(x)), self.log_joint(x)))
        if self.config.stochastic_layers == 1:
            return q1
        return StackedPosterior(q1, lambda z1: self.posterior2(Context(self.encoder2(z1))))

    def decode(self, z1: Tensor) -> Tensor:
        """The parameters of ``p(x|z_1)`` (Bernoulli logits; logistic ``[μ, ln s]``)."""
        return self.decoder(z1)

    def log_joint(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """``z ↦ ln p(x, z)`` mapping ``(S, B, latent_dim)`` to ``(S, B)`` for the batch ``x`` (eq. 4)."""
        x = self._check_x(x)
        D = self.config.latent

        def log_p(z: Tensor) -> Tensor:
            if z.shape[-1] != self.latent_dim:
                raise ValueError(f"z must have last dimension {self.latent_dim}, got {tuple(z.shape)}")
            z1 = z[..., :D]
            out = self.likelihood.log_prob(x, self.decode(z1))
            if self.config.stochastic_layers == 1:
                return out + diagonal_normal_log_prob(z1, termwise=True)  # the pinned order: see there
            z2 = z[..., D:]
            loc, raw_scale = self.prior1(z2).chunk(2, -1)
            prior1 = diagonal_normal_log_prob(z1, loc, F.softplus(raw_scale) + 1e-4, termwise=True)
            return out + prior1 + diagonal_normal_log_prob(z2, termwise=True)

        return log_p

    def free_energy(self, x: Tensor, beta: float = 1.0, n_samples: int = 1) -> Tensor:
        """Per-data-point Monte Carlo free energy ``F^β(x)`` (eq. 15, annealed eq. 20), shape ``(B,)``."""
        return free_energy(self.q(x), self.log_joint(x), n_samples=n_samples, beta=beta)

    def loss(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """The training objective: the batch mean of ``F^{β_t}(x)`` (eq. 20), one sample per point."""
        return self.free_energy(x, beta).mean()

    def init_output_bias(self, x_mean: Tensor, eps: float = 1e-3) -> None:
        """Start the decoder's output bias at the mean training image: ``logit(mean pixel)`` for the
        Bernoulli, ``μ = mean pixel`` (and a fixed initial scale) for the discretized logistic."""
        with torch.no_grad():
            self.likelihood.init_output_bias(self.decoder[-1].bias, x_mean, eps)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``E[x|z]`` for ``n`` draws from the prior, shape ``(n, x_dim)``."""
        dev = self.decoder[-1].bias.device
        D = self.config.latent
        z = torch.randn(n, D, generator=generator, device=dev)
        if self.config.stochastic_layers == 2:
            loc, raw_scale = self.prior1(z).chunk(2, -1)
            z = loc + (F.softplus(raw_scale) + 1e-4) * torch.randn(n, D, generator=generator, device=dev)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Pixel means ``E[x|z]`` for one ``z ~ q(z|x)`` per image, shape ``(B, x_dim)``."""
        z = self.q(x).rsample_and_log_prob(())[0]
        return self.likelihood.mean(self.decode(z[..., : self.config.latent]))
