"""Planar and radial agree with Pyro's implementations for the same constrained parameters."""

import importlib

import pytest
import torch

from flowvi.transforms import PlanarTransform, RadialTransform, radial_constrain

pyro_planar = pytest.importorskip("pyro.distributions.transforms.planar", reason="pyro-ppl is not installed")
pyro_radial = importlib.import_module("pyro.distributions.transforms.radial")


@pytest.mark.parametrize("dim", [1, 2, 10, 40])
@pytest.mark.parametrize("batched", [False, True])
def test_planar_matches_pyro(dim, batched):
    g = torch.Generator().manual_seed(dim)
    shape = (7,) if batched else ()
    w = torch.randn(*shape, dim, generator=g, dtype=torch.float64)
    u = 2 * torch.randn(*shape, dim, generator=g, dtype=torch.float64)
    b = torch.randn(*shape, 1, generator=g, dtype=torch.float64)
    theirs = pyro_planar.ConditionedPlanar((b, u, w))
    u_hat = theirs.u_hat(u, w)  # Pyro's constrained û (no margin)
    ours = PlanarTransform(w, u_hat, b.squeeze(-1))
    x = 2 * torch.randn(5, *shape, dim, generator=g, dtype=torch.float64)
    y_theirs = theirs(x)
    y_ours, ladj_ours = ours.call_and_ladj(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_ours, theirs.log_abs_det_jacobian(x, y_theirs), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dim", [1, 2, 10, 40])
@pytest.mark.parametrize("batched", [False, True])
def test_radial_matches_pyro(dim, batched):
    g = torch.Generator().manual_seed(100 + dim)
    shape = (7,) if batched else ()
    x0 = torch.randn(*shape, dim, generator=g, dtype=torch.float64)
    a_raw = torch.randn(*shape, 1, generator=g, dtype=torch.float64)
    b_raw = torch.randn(*shape, 1, generator=g, dtype=torch.float64)
    theirs = pyro_radial.ConditionedRadial((x0, a_raw, b_raw))
    # Pyro's constraint: α = softplus(α'), β = −α + softplus(β')
    alpha = torch.nn.functional.softplus(a_raw).squeeze(-1)
    beta = (-torch.nn.functional.softplus(a_raw) + torch.nn.functional.softplus(b_raw)).squeeze(-1)
    ours = RadialTransform(x0, alpha, beta)
    x = 2 * torch.randn(5, *shape, dim, generator=g, dtype=torch.float64)
    y_theirs = theirs(x)
    y_ours, ladj_ours = ours.call_and_ladj(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_ours, theirs.log_abs_det_jacobian(x, y_theirs), rtol=1e-10, atol=1e-10)


def test_our_radial_constraint_is_pyros_up_to_the_margin():
    a, b = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    alpha, beta = radial_constrain(a, b)
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(alpha, sp(a), atol=2e-6, rtol=0)
    torch.testing.assert_close(beta, -sp(a) + sp(b), atol=1e-3, rtol=0)
