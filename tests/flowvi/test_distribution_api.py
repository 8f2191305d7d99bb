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


@pytest.mark.parametrize("family", ["nice-perm", "nice-orth", "planar", "radial"])
def test_posteriors_pickle(family):
    torch.manual_seed(0)
    q = fv.NormalizingFlow(4, fv.make_steps(family, 4, 2))()
    q2 = pickle.loads(pickle.dumps(q))
    x = torch.randn(3, 4)
    assert torch.allclose(q.log_prob(x), q2.log_prob(x), atol=1e-6)


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


def test_validate_args_default_is_off():
    q = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [])  # None: no torch-style checks (flowvi's own only)
    assert torch.isnan(q.log_prob(torch.full((2,), math.nan)))  # torch's support check is not run
    checked = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [], validate_args=True)
    with pytest.raises(ValueError, match="support"):  # ... which validate_args=True runs
        checked.log_prob(torch.full((2,), math.nan))
