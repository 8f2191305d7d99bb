"""The full-rank Gaussian step z = μ + L ε (Cholesky factor): log-det, triangular-solve inverse, the
distribution it makes over N(0, I), global and amortized, float32 property tests."""

import pytest
import torch
from flow_cases import (
    autograd_logdet,
    check_inverse_accurate_or_warned,
    check_logdet_batched,
    make_step_transform,
    warns_ill_conditioned,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal

import flowvi as fv
from flowvi.transforms import CHOLESKY_MIN, LowerTriangularAffineTransform, cholesky_factor

DIMS = (1, 2, 5, 20)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", (0.3, 1.0, 5.0, 30.0))
def test_logdet_matches_autograd_jacobian(dim, scale):
    t, _, _ = make_step_transform("full-rank", dim, scale=scale, seed=dim)
    x = 2.0 * torch.randn(dim, dtype=torch.float64)
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(ladj, autograd_logdet(t, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ladj)


def test_batched_parameters_logdet_per_point():
    t, raw, step = make_step_transform("full-rank", 4, batch=(3,), scale=2.0, seed=5)
    check_logdet_batched(t, raw, step, torch.randn(2, 3, 4, dtype=torch.float64))


@pytest.mark.parametrize("dim, scale", [(d, s) for d in DIMS for s in (0.3, 1.0, 3.0) if d < 20 or s <= 1.0])
@pytest.mark.parametrize("batch", [(), (8,)])
def test_inverse_round_trip(dim, scale, batch):
    """Round trip < 1e-9 relative in float64. (A random triangular L with large off-diagonal entries
    has a condition number growing exponentially in D, 1e18 at D = 20 and scale 3; there the error
    bound is cond · eps, so D = 20 runs at scales ≤ 1.)"""
    t, _, _ = make_step_transform("full-rank", dim, batch=batch, scale=scale, seed=dim + 7)
    x = 3.0 * torch.randn(16, *batch, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    err = ((t.inv(t(x)) - x).abs() / (1 + x.abs())).max().item()
    assert err < 1e-9, f"round-trip error {err:.2e}"


def test_cholesky_factor_layout_and_positivity():
    diag = torch.tensor([-1e3, 0.0, 1e3], dtype=torch.float64)
    lower = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    L = cholesky_factor(diag, lower)
    expected = torch.tensor([[CHOLESKY_MIN, 0, 0], [1.0, 0.6931471805599453 + CHOLESKY_MIN, 0], [2.0, 3.0, 1e3]],
                            dtype=torch.float64)
    torch.testing.assert_close(L, expected)
    with pytest.raises(ValueError, match="positive"):
        LowerTriangularAffineTransform(torch.zeros(2), -torch.eye(2))


@pytest.mark.parametrize("amortized", [False, True])
def test_flow_is_the_full_rank_gaussian(amortized):
    """A FullRank step over N(0, I) has density N(μ, LLᵀ) (global, and per data point when amortized)."""
    torch.manual_seed(0)
    flow = fv.NormalizingFlow(3, fv.make_steps("full-rank", 3, 0), trainable_base=False,
                              context_features=4 if amortized else None).double()
    for p in flow.parameters():
        p.data.add_(0.7 * torch.randn_like(p))
    h = torch.randn(5, 4, dtype=torch.float64) if amortized else None
    q = flow(h)
    t = q.transforms[0]
    mvn = MultivariateNormal(t.loc, scale_tril=t.tril)
    z, log_q = q.rsample_and_log_prob((6,))
    torch.testing.assert_close(log_q, mvn.log_prob(z))
    torch.testing.assert_close(q.log_prob(z), mvn.log_prob(z))
    if amortized:  # every data point has its own covariance
        cov = t.tril @ t.tril.transpose(-1, -2)
        assert (cov[0] - cov[1]).abs().max() > 1e-3


def test_full_rank_base_goes_first_under_any_family():
    steps = fv.make_steps("planar", 2, 3, full_rank_base=True)
    assert isinstance(steps[0], fv.FullRank) and [type(s) for s in steps[1:]] == [fv.PlanarChain]
    assert steps[1].K == 3
    with pytest.raises(ValueError, match="full_rank_base"):
        fv.make_steps("full-rank", 2, 3)


RAW = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5).flatmap(lambda d: st.tuples(*(st.lists(RAW, min_size=n, max_size=n)
                                                       for n in (d, d, d * (d - 1) // 2, d)))))
def test_property_positive_diagonal_and_finiteness_float32(values):
    loc, diag, lower, z = (torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in values)
    L = cholesky_factor(diag, lower)
    assert bool((torch.diagonal(L) > 0).all())
    t = LowerTriangularAffineTransform(loc, L)
    y, ladj = t.call_and_ladj(z)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    (y.sum() + ladj).backward()
    for name, leaf in (("loc", loc), ("diag", diag), ("lower", lower), ("z", z)):
        assert torch.isfinite(leaf.grad).all(), f"non-finite gradient for {name}"


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.sampled_from([torch.float32, torch.float64]), st.data())
def test_property_inverse_is_accurate_or_warns(dim, dtype, data):
    """Any μ, raw diagonal and strictly lower entries in [−1e3, 1e3] (a factor with L_ii from 1e-6 to 1e3 and
    off-diagonal entries up to 1e3: condition numbers far beyond 1/eps), per point or shared: the triangular solve
    comes back to within ten times the warning's threshold of z, or log_prob warns that it is ill-conditioned (it
    returned −inf, or values 1e25 off, without a word)."""
    from flowvi.transforms.base import INVERSE_ERROR_WARN

    batch = data.draw(st.sampled_from([(), (2,)]))

    def draw(n: int) -> torch.Tensor:
        return torch.tensor(data.draw(st.lists(RAW, min_size=n, max_size=n)), dtype=dtype)

    loc, diag, lower = (torch.stack([draw(n) for _ in range(2)]) if batch else draw(n)
                        for n in (dim, dim, dim * (dim - 1) // 2))
    t = LowerTriangularAffineTransform(loc, cholesky_factor(diag, lower))
    check_inverse_accurate_or_warned(t, draw(dim), 10 * INVERSE_ERROR_WARN)


def test_ill_conditioned_factor_warns_and_a_good_one_does_not():
    """L with a diagonal of 1e-6 under off-diagonal entries of 50 (float32): the solve amplifies rounding by far
    more than 1/eps, and log_prob says so; a well-conditioned factor inverts silently to rounding."""
    dim = 4
    rows, cols = torch.tril_indices(dim, dim, -1)
    for diag_value, lower_value, ill in ((1e-6, 50.0, True), (1.0, 0.3, False)):
        L = torch.diag(torch.full((dim,), diag_value))
        L[rows, cols] = lower_value
        t = LowerTriangularAffineTransform(torch.zeros(dim), L)
        z = torch.randn(5, dim, generator=torch.Generator().manual_seed(0))
        z_back, warned = warns_ill_conditioned(lambda: t.inv(t(z)))  # noqa: B023 (called at once)
        assert warned == ill
        if not ill:
            torch.testing.assert_close(z_back, z)
