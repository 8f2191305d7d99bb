"""FlowPosterior as a torch Distribution: Monte Carlo moments, expand, validate_args, dtype promotion,
pickling, and make_steps rejecting keywords it does not use."""

import math
import pickle

import pytest
import torch

import flowvi as fv


def gaussian_posterior(K: int = 0) -> fv.FlowPosterior:
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    return fv.FlowPosterior(loc, scale, fv.NormalizingFlow(2, fv.planar_steps(2, K))().transforms)


def test_monte_carlo_moments_and_entropy():
    torch.manual_seed(0)
    q = gaussian_posterior()
    n = q.mc_samples
    assert torch.allclose(q.mean, q.loc, atol=4 * 3.0 / math.sqrt(n))
    assert torch.allclose(q.stddev, q.scale, rtol=0.05)
    exact = 0.5 * 2 * (1 + math.log(2 * math.pi)) + float(q.scale.log().sum())
    assert float(q.entropy()) == pytest.approx(exact, abs=0.05)
    assert float(q.entropy(100_000)) == pytest.approx(exact, abs=0.02)
    mean, var = q.moments(50_000)
    assert torch.allclose(var.sqrt(), q.scale, rtol=0.02)
    flow_q = fv.NormalizingFlow(2, fv.planar_steps(2, 3))()
    assert flow_q.entropy().requires_grad  # reparameterized: usable in an objective


def test_expand():
    q = fv.NormalizingFlow(3, fv.planar_steps(3, 2))()
    e = q.expand((4, 5))
    assert e.batch_shape == (4, 5) and e.event_shape == (3,)
    assert e.sample((2,)).shape == (2, 4, 5, 3)
    x = torch.randn(4, 5, 3)
    assert torch.allclose(e.log_prob(x), q.log_prob(x), atol=1e-5)
    assert e.rsample_and_log_prob((6,))[1].shape == (6, 4, 5)


def test_validate_args_rejects_a_negative_scale():
    with pytest.raises(ValueError, match="scale"):
        fv.FlowPosterior(torch.zeros(2), -torch.ones(2), [], validate_args=True)
    # flowvi's own value checks refuse a scale <= 0 whatever validate_args says (docs/reliability.md) ...
    with pytest.raises(ValueError, match="base scale is <= 0"):
        fv.FlowPosterior(torch.zeros(2), -torch.ones(2), [], validate_args=False)
    fv.set_validation(False)  # ... and only switching them off leaves it unchecked, as torch does
    try:
        q = fv.FlowPosterior(torch.zeros(2), -torch.ones(2), [], validate_args=False)
    finally:
        fv.set_validation(True)
    assert q.batch_shape == ()
    with pytest.raises(ValueError):
        fv.FlowPosterior(torch.zeros(2), torch.ones(2), [], validate_args=True).log_prob(torch.full((2,), math.nan))


@pytest.mark.parametrize("fused", [True, False])
def test_dtype_promotion_as_torch(fused):
    torch.manual_seed(0)
    q = fv.NormalizingFlow(3, fv.planar_steps(3, 4, fused=fused))()
    x = torch.randn(5, 3, dtype=torch.float64)
    lp = q.log_prob(x)
    assert lp.dtype == torch.float64  # as torch.distributions.Normal(float32).log_prob(float64)
    assert torch.allclose(lp.float(), q.log_prob(x.float()), atol=1e-4)
    y, ladj = q.flow.call_and_ladj(x)
    assert y.dtype == ladj.dtype == torch.float64


#: (family, K) of every flow family, with the families whose matrix products and networks need the promotion
FAMILIES = [("planar", 2), ("radial", 2), ("nice-perm", 2), ("nice-orth", 2), ("sylvester-orth", 2),
            ("sylvester-householder", 2), ("sylvester-triangular", 2), ("iaf", 2), ("full-rank", 0)]


def _posterior(family: str, K: int, amortized: bool) -> fv.FlowPosterior:
    torch.manual_seed(0)
    flow = fv.NormalizingFlow(4, fv.make_steps(family, 4, K), context_features=5 if amortized else None)
    return flow(torch.randn(3, 5)) if amortized else flow()


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("family, K", FAMILIES)
def test_every_family_promotes_a_float64_value_of_a_float32_flow(family, K, amortized):
    """NICE's couplings, the IAF's MADE, Sylvester's and the full-rank step's matrix products compute a
    float64 input in float64 (torch's matmul refuses mixed dtypes): the same values as float32, to its rounding."""
    q = _posterior(family, K, amortized)
    x = torch.randn(3, 4, dtype=torch.float64)
    y, ladj = q.flow.call_and_ladj(x)
    y32, ladj32 = q.flow.call_and_ladj(x.float())
    assert y.dtype == ladj.dtype == torch.float64 and y32.dtype == torch.float32
    torch.testing.assert_close(y.float(), y32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ladj.float(), ladj32, rtol=1e-5, atol=1e-5)
    if family.startswith("sylvester"):
        return  # no inverse: log_prob raises InverseNotAvailable in any dtype
    lp = q.log_prob(x)
    assert lp.dtype == torch.float64
    torch.testing.assert_close(lp.float(), q.log_prob(x.float()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("amortized", [False, True])
@pytest.mark.parametrize("family, K", FAMILIES)
def test_posteriors_pickle(family, K, amortized):
    q = _posterior(family, K, amortized)
    q2 = pickle.loads(pickle.dumps(q))
    z0 = torch.randn(3, 4)
    for a, b in zip(q.flow.call_and_ladj(z0), q2.flow.call_and_ladj(z0), strict=True):
        assert torch.equal(a, b)
    if not family.startswith("sylvester"):
        assert torch.equal(q.log_prob(z0), q2.log_prob(z0))


def test_make_steps_rejects_unused_keywords():
    with pytest.raises(TypeError, match=r"make_steps\('planar'\) does not take 'hiden': it takes init_scale"):
        fv.make_steps("planar", 3, 2, hiden=3)
    with pytest.raises(TypeError, match="does not take 'init_scale'"):
        fv.make_steps("nice-perm", 4, 2, init_scale=5.0)
    with pytest.raises(TypeError, match="no keywords"):
        fv.make_steps("radial", 3, 2, hidden=3)
    steps = fv.make_steps("planar", 3, 2, init_scale=5.0)  # now used, not ignored
    assert all(s.init_scale == 5.0 for s in steps)
    assert len(fv.make_steps("nice-perm", 4, 2, hidden=8)) == 4


@pytest.mark.parametrize("family, options, message", [
    ("sylvester-orth", {"m": 2.5}, "m must be an integer, got 2.5"),
    ("sylvester-orth", {"m": True}, "m must be an integer, got True"),
    ("sylvester-orth", {"m": 5}, "m must be at most the latent dimension 4, got 5"),
    ("sylvester-orth", {"shared_q": "sometimes"}, "shared_q must be true or false, got 'sometimes'"),
    ("sylvester-householder", {"reflections": 0}, "reflections must be >= 1, got 0"),
    ("iaf", {"gate_bias": float("inf")}, "gate_bias must be finite, got inf"),
    ("iaf", {"hidden": 2.5, "depth": 0}, "hidden must be an integer, got 2.5; depth must be >= 1, got 0"),
    ("planar", {"fused": "no"}, "fused must be true or false, got 'no'"),
    ("nice-perm", {"hidden": 0}, "hidden must be >= 1, got 0"),
    ("nice-perm", {"conditioning": "x"}, "conditioning must be one of amortized, global, got 'x'"),
])
def test_make_steps_rejects_bad_values_in_one_sentence(family, options, message):
    """Values a keyword does not take fail before any step is built (some would fail deep in torch, some,
    like shared_q="sometimes" or NICE's hidden=0, would build a wrong flow), every problem in one sentence."""
    with pytest.raises(ValueError) as info:
        fv.make_steps(family, 4, 2, **options)
    assert str(info.value) == f"make_steps({family!r}): {message}"


def test_option_kinds_are_normalised_and_none_keeps_the_default():
    from flowvi.steps import check_step_options

    assert check_step_options("iaf", {"gate_bias": 1}) == {"gate_bias": 1.0}
    steps = fv.make_steps("iaf", 3, 1, gate_bias=1, hidden=None)  # None: the default width max(64, 2D)
    assert isinstance(steps[0].made.out.bias[0].item(), float) and steps[0].hidden == 64
    assert fv.make_steps("sylvester-orth", 3, 1, m=None)[0].m == 3
    with pytest.raises(TypeError, match=r"^family_options of x does not take 'M': it takes m, shared_q$"):
        check_step_options("sylvester-orth", {"M": 2}, where="family_options of x")


def test_validate_args_default_is_off():
    q = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [])  # None: no torch-style checks (flowvi's own only)
    assert torch.isnan(q.log_prob(torch.full((2,), math.nan)))  # torch's support check is not run
    checked = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [], validate_args=True)
    with pytest.raises(ValueError, match="support"):  # ... which validate_args=True runs
        checked.log_prob(torch.full((2,), math.nan))
