"""Builders of every flow step with random, extreme or batched parameters, shared by the tests."""

from __future__ import annotations

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


def softplus_inv(x: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(x, dtype=torch.float64))))


__all__ = ["FAMILIES", "F", "make_transform", "softplus_inv"]
