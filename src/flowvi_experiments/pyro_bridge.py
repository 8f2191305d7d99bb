r"""Pyro bridge: a Pyro model as a batched log-density, flowvi posteriors as Pyro distributions and guides.

Needs ``pyro-ppl`` (an optional dependency; this module is not imported by ``import flowvi``).

- :func:`log_density` (:class:`PyroLogDensity`): the model's joint density in *unconstrained*
  coordinates, ``ln p(x, T(u)) + ln |det ∂T/∂u|`` with ``T`` Pyro's ``biject_to`` of each latent site's
  support, for a batch of ``S`` points ``u`` at once. Three ways to batch it:

  * ``vectorize="vmap"`` (default): ``torch.func.vmap`` of one conditioned run of the model over the
    samples. Works for a model written for one sample (no plate conventions needed), as long as it has
    no Python control flow on the values of its latents; Pyro's argument validation is switched off
    inside (it branches on values).
  * ``vectorize="plate"``: one run of the model inside an outer ``pyro.plate`` over the samples, as
    Pyro's ``Trace_ELBO(vectorize_particles=True)`` does; the model must follow Pyro's plate
    conventions (batch dimensions by ``pyro.plate``, event dimensions by ``.to_event``, arithmetic that
    broadcasts on the left).
  * ``vectorize="loop"``: one run per sample (any model; slow, the reference).
- :class:`PyroFlowPosterior`: a :class:`~flowvi.FlowPosterior` that is also a Pyro distribution
  (``pyro.sample("z", q)``, plates, ``.to_event``, ``.mask``). It remembers its last sample with the
  ``ln q`` of the one-pass forward computation (eq. 7), so Pyro's ``log_prob(sample)`` on a guide's own
  sample costs nothing and needs no inverse; any other value goes through the inverse flow.
- :class:`AutoFlowGuide`: an ``AutoContinuous`` autoguide whose posterior over the model's unconstrained
  latents is a flowvi flow (any family of :func:`flowvi.make_steps`), for ``pyro.infer.SVI``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from flowvi.distribution import FlowPosterior
from flowvi.flow import NormalizingFlow
from flowvi.steps import check_step_options, make_steps

_PARTICLES = "_flowvi_particles"
#: the ways :class:`PyroLogDensity` batches the model over samples
VECTORIZE = ("vmap", "plate", "loop")


class PyroLogDensity:
    """``u ↦ ln p(x, T(u)) + ln|det ∂T/∂u|`` for a Pyro model, batched over the leading dimension.

    Attributes:
        dim: the number of unconstrained coordinates ``D`` (all latent sites, flattened, in trace order).
        sites: ``{name: (constrained shape, unconstrained shape)}`` of the latent sites.
    """

    def __init__(self, model: Callable[..., Any], *args: Any, vectorize: str = "vmap", **kwargs: Any) -> None:
        if vectorize not in VECTORIZE:
            raise ValueError(f"vectorize must be one of {', '.join(VECTORIZE)}, got {vectorize!r}")
        self.model, self.args, self.kwargs, self.vectorize = model, args, kwargs, vectorize
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        self.sites: dict[str, tuple[torch.Size, torch.Size]] = {}
        self._transforms: dict[str, torch.distributions.Transform] = {}
        self._batch_dims: dict[str, int] = {}
        nesting = 0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.dim is not None:
                    nesting = max(nesting, -frame.dim)
            if site["is_observed"] or site["infer"].get("is_auxiliary"):
                continue
            fn, value = site["fn"], site["value"]
            if fn.support.is_discrete:
                raise ValueError(f"latent site {name!r} is discrete: flow VI needs continuous latents")
            t = biject_to(fn.support)
            self._transforms[name] = t
            self.sites[name] = (value.shape, t.inv.forward_shape(value.shape))
            self._batch_dims[name] = len(value.shape) - len(fn.event_shape)
        if not self.sites:
            raise ValueError("the model has no latent sample sites")
        self.max_plate_nesting = nesting
        self.dim = sum(math.prod(u) for _, u in self.sites.values())

    def unpack(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values ``{name: (S, *shape)}`` of the flat ``(S, D)`` points and ``Σ ln|det ∂T/∂u|`` ``(S,)``."""
        S = u.shape[0]
        values, ladj, start = {}, u.new_zeros(S), 0
        for name, (_, ushape) in self.sites.items():
            n = math.prod(ushape)
            piece = u[:, start : start + n].reshape((S, *ushape))
            start += n
            t = self._transforms[name]
            x = t(piece)
            ladj = ladj + t.log_abs_det_jacobian(piece, x).reshape(S, -1).sum(-1)
            values[name] = x
        return values, ladj

    def __call__(self, u: Tensor) -> Tensor:
        if u.dim() < 2 or u.shape[-1] != self.dim:
            raise ValueError(f"expected points of shape (..., {self.dim}), got {tuple(u.shape)}")
        lead = u.shape[:-1]
        u = u.reshape(-1, self.dim)
        values, ladj = self.unpack(u)
        if self.vectorize == "plate":
            log_p = self._vectorized(values)
        elif self.vectorize == "vmap":
            with pyro.validation_enabled(False):
                log_p = torch.func.vmap(self._one, randomness="different")(values)
        else:
            log_p = torch.stack([self._one({k: v[s] for k, v in values.items()}) for s in range(u.shape[0])])
        return (log_p + ladj).reshape(lead)

    def _one(self, values: dict[str, Tensor]) -> Tensor:
        model = poutine.condition(self.model, data=values)
        return poutine.trace(model).get_trace(*self.args, **self.kwargs).log_prob_sum()

    def _vectorized(self, values: dict[str, Tensor]) -> Tensor:
        S, n = next(iter(values.values())).shape[0], self.max_plate_nesting
        data = {}
        for name, v in values.items():
            # (S, *batch, *event) -> (S, 1 … 1, *batch, *event): the particle dim left of every plate
            pad = n - self._batch_dims[name]
            data[name] = v.reshape((S,) + (1,) * pad + v.shape[1:])
        with pyro.plate(_PARTICLES, S, dim=-(n + 1)):
            trace = poutine.trace(poutine.condition(self.model, data=data)).get_trace(*self.args, **self.kwargs)
        trace.compute_log_prob()
        total = values[next(iter(values))].new_zeros(S)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site) or site["infer"].get("is_auxiliary"):
                continue
            lp = site["log_prob"]
            if lp.dim() < n + 1:  # does not depend on the particles (e.g. observed data under fixed parameters)
                total = total + lp.sum()
                continue
            total = total + lp.movedim(-(n + 1), 0).reshape(S, -1).sum(-1)
        return total


def log_density(model: Callable[..., Any], *args: Any, vectorize: str = "vmap", **kwargs: Any) -> PyroLogDensity:
    """The log-density of ``model(*args, **kwargs)`` in unconstrained coordinates, batched over samples:
    a :class:`PyroLogDensity` mapping ``(S, D)`` to ``(S,)``, ready for :func:`flowvi.fit`
    (``fv.fit(ld, ld.dim, ...)``)."""
    return PyroLogDensity(model, *args, vectorize=vectorize, **kwargs)


class PyroFlowPosterior(FlowPosterior, TorchDistributionMixin):
    """A :class:`~flowvi.FlowPosterior` usable as a Pyro distribution (``pyro.sample("z", q)``).

    ``rsample`` keeps its sample together with the ``ln q_K`` of the one-pass forward computation
    (eq. 7); ``log_prob`` of that same tensor returns it, so a guide's ``ln q`` never inverts the flow
    (``cache_log_prob=False`` turns this off). Any other value goes through the inverse flow.
    """

    def __init__(self, loc: Tensor, scale: Tensor, transforms: Sequence[Any], validate_args: bool | None = None,
                 cache_log_prob: bool = True) -> None:
        super().__init__(loc, scale, transforms, validate_args=validate_args)
        self.cache_log_prob = cache_log_prob
        self._last: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_posterior(cls, q: FlowPosterior, cache_log_prob: bool = True) -> PyroFlowPosterior:
        return cls(q.loc, q.scale, q.transforms, validate_args=q._validate_args, cache_log_prob=cache_log_prob)

    def expand(self, batch_shape: torch.Size | Sequence[int], _instance: Any = None) -> PyroFlowPosterior:
        new = self._get_checked_instance(PyroFlowPosterior, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        PyroFlowPosterior.__init__(new, self.loc.expand(shape), self.scale.expand(shape), self.transforms,
                                   validate_args=False, cache_log_prob=self.cache_log_prob)
        new._validate_args = self._validate_args
        return new

    def rsample_and_log_prob(self, sample_shape: torch.Size | Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        z, log_q = super().rsample_and_log_prob(sample_shape)
        if self.cache_log_prob:
            self._last = (z, log_q)
        return z, log_q

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        return super().log_prob(value)


class AutoFlowGuide(AutoContinuous):
    """A Pyro autoguide with a flowvi flow posterior over the model's unconstrained latents.

    ``q_K`` = learned ``N(μ, diag σ²)`` + ``K`` steps of ``family`` (``flowvi.make_steps``), on the
    ``D``-vector of all latent sites (Pyro's ``AutoContinuous`` packs and unpacks it and adds the
    ``biject_to`` log-Jacobians). ``ln q`` of its own samples comes from the one-pass forward
    computation (:class:`PyroFlowPosterior`), not from inverting the flow.

    >>> guide = AutoFlowGuide(model, family="planar", K=8)
    >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    """

    def __init__(self, model: Callable[..., Any], family: str = "planar", K: int = 8,
                 init_loc_fn: Callable[..., Any] = init_to_median, family_options: dict[str, Any] | None = None,
                 cache_log_prob: bool = True, step_options: dict[str, Any] | None = None) -> None:
        """``family_options``: keywords of ``flowvi.make_steps`` for ``family`` (as ``flowvi.fit`` takes them;
        ``step_options`` is their former name, deprecated), checked here, before the model is traced (their
        bounds by D, such as Sylvester's ``m``, when the guide first sees the model)."""
        if step_options is not None:
            if family_options is not None:
                raise ValueError("give family_options or its former name step_options, not both")
            warnings.warn("AutoFlowGuide(step_options=...) is now family_options=...", DeprecationWarning, stacklevel=2)
            family_options = step_options
        self.family, self.K = family, K
        self.family_options = check_step_options(family, dict(family_options or {}),
                                                 where=f"family_options of the {family} family")
        self.cache_log_prob = cache_log_prob
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        flow = NormalizingFlow(self.latent_dim, make_steps(self.family, self.latent_dim, self.K,
                                                           **self.family_options))
        with torch.no_grad():  # start the base at Pyro's initial point (init_loc_fn)
            flow.base.loc.copy_(self._init_loc())  # the learned DiagonalNormal base's own parameter
        self.flow = flow

    def get_posterior(self, *args: Any, **kwargs: Any) -> PyroFlowPosterior:
        flow = pyro.module(f"{self._pyro_name}.flow", self.flow)
        return PyroFlowPosterior.from_posterior(flow(), cache_log_prob=self.cache_log_prob)

    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Not available: a flow posterior has no closed-form median (Pyro's AutoContinuous reads it off a location
        and scale this guide does not have)."""
        raise NotImplementedError(_NO_CLOSED_FORM.format(what="median"))

    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Not available: see :meth:`median`."""
        raise NotImplementedError(_NO_CLOSED_FORM.format(what="quantiles"))


_NO_CLOSED_FORM = ("AutoFlowGuide has no closed-form {what}: estimate it from draws, e.g. pyro.infer.Predictive(model, "
                   "guide=guide, num_samples=4000)() and torch.quantile over the sample dimension")
