"""Builders of every flow step with random, extreme or batched parameters, shared by the tests."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from flowvi.transforms import (
    AdditiveCouplingTransform,
    OrthogonalTransform,
    PermutationTransform,
    PlanarTransform,
    RadialTransform,
    planar_reparameterize,
    radial_constrain,
    random_orthogonal,
)

FAMILIES = ("planar", "radial", "coupling", "permutation", "orthogonal")
#: steps of flowvi.families, built through their layout (raw parameters) and build (constraints)
SYLVESTER = ("sylvester-orth", "sylvester-orth-m", "sylvester-householder", "sylvester-triangular")
STEP_FAMILIES = (*SYLVESTER, "iaf", "iaf-reverse", "full-rank")


def make_transform(family: str, dim: int, *, batch=(), scale: float = 1.0, dtype=torch.float64, seed: int = 0,
                   requires_grad: bool = False):
    """One step with raw parameters ~ scale * N(0, 1), constrained as the library does.

    Returns ``(transform, leaves)`` where ``leaves`` are the raw parameter tensors.
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        t = scale * torch.randn(tuple(shape), generator=g, dtype=dtype)
        return t.requires_grad_(requires_grad)

    if family == "planar":
        w, u, b = randn(*batch, dim), randn(*batch, dim), randn(*batch)
        u_hat, uw = planar_reparameterize(u, w)
        return PlanarTransform(w, u_hat, b, uw=uw), [w, u, b]
    if family == "radial":
        z0, a, bta = randn(*batch, dim), randn(*batch), randn(*batch)
        alpha, beta = radial_constrain(a, bta)
        return RadialTransform(z0, alpha, beta), [z0, a, bta]
    if family == "coupling":
        if dim < 2:
            return None, []
        mask = torch.arange(dim) % 2 == 0
        n_a, n_b = int(mask.sum()), dim - int(mask.sum())
        w1, w2, c = randn(n_a, 8), randn(8, n_b), randn(*batch, 8)

        def shift(z_a):
            return torch.tanh(z_a @ w1 + c) @ w2

        return AdditiveCouplingTransform(mask, shift), [w1, w2, c]
    if family == "permutation":
        return PermutationTransform(torch.randperm(dim, generator=g)), []
    if family == "orthogonal":
        return OrthogonalTransform(random_orthogonal(dim, g, dtype=dtype)), []
    raise ValueError(family)


def make_step(family: str, dim: int, *, seed: int = 0, dtype=torch.float64):
    """A :mod:`flowvi.families` step (its shared weights drawn under ``seed``), in ``dtype``."""
    from flowvi.families import IAF, FullRank, SylvesterHouseholder, SylvesterOrthogonal, SylvesterTriangular

    builders = {
        "sylvester-orth": lambda: SylvesterOrthogonal(dim),
        "sylvester-orth-m": lambda: SylvesterOrthogonal(dim, m=max(1, dim // 2)),
        "sylvester-householder": lambda: SylvesterHouseholder(dim, reflections=3),
        "sylvester-triangular": lambda: SylvesterTriangular(dim, reverse=seed % 2 == 1),
        "iaf": lambda: IAF(dim, hidden=16),
        "iaf-reverse": lambda: IAF(dim, hidden=16, reverse=True),
        "full-rank": lambda: FullRank(dim),
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return builders[family]().to(dtype)


def make_step_transform(family: str, dim: int, *, batch=(), scale: float = 1.0, dtype=torch.float64,
                        seed: int = 0, requires_grad: bool = False):
    """A :mod:`flowvi.families` step built from raw per-point parameters ~ scale * N(0, 1) with leading
    dimensions ``batch`` (one set per data point, as an amortized head gives); an IAF's shared MADE
    weights are redrawn ~ scale * N(0, 1/fan_in) (its output layer starts at zero otherwise).

    Returns ``(transform, raw, step)``.
    """
    step = make_step(family, dim, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    raw = {}
    for name, value in step.layout().items():
        raw[name] = (scale * torch.randn(tuple(batch) + tuple(value.shape), generator=g, dtype=dtype))
        raw[name].requires_grad_(requires_grad)
    if family.startswith("iaf"):
        with torch.no_grad():
            for p in step.made.parameters():
                fan_in = p.shape[1] if p.dim() == 2 else 1
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=dtype) / fan_in**0.5)
    return step.build(raw), raw, step


def autograd_logdet(t, x):
    """``ln |det ∂t/∂x|`` of the Jacobian computed by autograd at one point ``x`` of shape ``(D,)``."""
    from torch.autograd.functional import jacobian

    return torch.linalg.slogdet(jacobian(lambda v: t(v), x))[1]


def check_logdet_batched(t, raw, step, x, rtol=1e-9, atol=1e-9):
    """Per-point parameters (leading dim B of ``raw``) against ``x`` of shape ``(S, B, D)``: the batched
    log-det equals, point by point, the autograd log-det of the step built from that point's parameters."""
    y, ladj = t.call_and_ladj(x)
    assert y.shape == x.shape and ladj.shape == x.shape[:-1]
    for i in range(x.shape[1]):
        ti = step.build({name: value[i] for name, value in raw.items()})
        for s in range(x.shape[0]):
            yi, li = ti.call_and_ladj(x[s, i])
            torch.testing.assert_close(yi, y[s, i], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(li, ladj[s, i], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(li, autograd_logdet(ti, x[s, i]), rtol=rtol, atol=atol)


def softplus_inv(x: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(x, dtype=torch.float64))))


__all__ = [
    "FAMILIES",
    "F",
    "STEP_FAMILIES",
    "SYLVESTER",
    "autograd_logdet",
    "check_logdet_batched",
    "make_step",
    "make_step_transform",
    "make_transform",
    "softplus_inv",
]


def warns_ill_conditioned(fn):
    """``(fn(), whether it warned that an inverse is ill-conditioned)``; its warnings are recorded, not shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, any(issubclass(w.category, RuntimeWarning) and "ill-conditioned" in str(w.message) for w in caught)


def check_inverse_accurate_or_warned(t, z, tolerance: float) -> None:
    """``t.inv(t(z))`` warns that it is ill-conditioned, or is finite and within ``tolerance`` of ``z`` (plus 8 eps
    of ``|z|``, the rounding of ``z`` itself)."""
    z_back, warned = warns_ill_conditioned(lambda: t.inv(t(z)))
    if warned:
        return
    assert torch.isfinite(z_back).all(), "a non-finite inverse without a warning"
    err = (z_back - z).abs().max().item()
    bound = tolerance + 8 * torch.finfo(z.dtype).eps * z.abs().max().item()
    assert err <= bound, f"z off by {err:.3g} without a warning"
