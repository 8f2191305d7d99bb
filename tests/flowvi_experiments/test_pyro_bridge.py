"""The Pyro bridge: batched log-density of a Pyro model, pyro.sample with a flowvi posterior, the autoguide."""

import math

import pytest
import torch

pyro = pytest.importorskip("pyro")
import pyro.distributions as dist  # noqa: E402

import flowvi as fv  # noqa: E402
from flowvi_experiments.pyro_bridge import AutoFlowGuide, PyroFlowPosterior, log_density  # noqa: E402

torch.manual_seed(0)
X = torch.randn(30, 3)
Y = (X @ torch.tensor([1.0, -1.0, 0.5]) + 0.3 * torch.randn(30)).detach()


def model(X, y):  # written for one sample (as most Pyro models are)
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))  # constrained: biject_to adds its log-Jacobian
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


def plate_model(X, y):  # the same model following Pyro's plate conventions (broadcasts on the left)
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((X * w).sum(-1), sigma), obs=y)


def manual(u):
    w, s = u[:, :3], u[:, 3].exp()
    lp = dist.Normal(0.0, 1.0).log_prob(w).sum(-1) + dist.HalfNormal(1.0).log_prob(s) + u[:, 3]
    return lp + dist.Normal(w @ X.T, s[:, None]).log_prob(Y).sum(-1)


def test_log_density_batched_matches_loop_and_hand_written():
    u = torch.randn(16, 4)
    ld = log_density(model, X, Y)
    assert ld.dim == 4 and list(ld.sites) == ["w", "sigma"]
    ref = log_density(model, X, Y, vectorize="loop")(u)
    assert torch.allclose(ref, manual(u), atol=1e-3)
    assert torch.allclose(ld(u), ref, atol=1e-3)
    assert torch.allclose(log_density(plate_model, X, Y, vectorize="plate")(u), ref, atol=1e-3)
    assert ld(u.reshape(4, 4, 4)).shape == (4, 4)
    u.requires_grad_(True)
    (g,) = torch.autograd.grad(ld(u).sum(), u)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="vectorize"):
        log_density(model, X, Y, vectorize="jit")


def test_fit_a_pyro_model():
    ld = log_density(model, X, Y)
    q, r = fv.fit(ld, ld.dim, "planar", 2, updates=150, samples=16, lr=0.05, eval_samples=500, progress=False)
    assert r.khat < 0.7
    values, _ = ld.unpack(q.sample((2000,)))
    assert torch.allclose(values["w"].mean(0), torch.linalg.lstsq(X, Y[:, None]).solution[:, 0], atol=0.2)


def test_pyro_sample_with_a_flow_posterior():
    torch.manual_seed(0)
    q = PyroFlowPosterior.from_posterior(fv.NormalizingFlow(2, fv.planar_steps(2, 2))())

    def m():
        z = pyro.sample("z", q)
        with pyro.plate("obs", 4):
            pyro.sample("o", dist.Normal(z.sum(-1), 1.0), obs=torch.zeros(4))
        with pyro.plate("many", 5):
            pyro.sample("zs", q)  # broadcast by the plate through expand
        pyro.sample("zi", q.to_event(0))

    tr = pyro.poutine.trace(m).get_trace()
    tr.compute_log_prob()
    z = tr.nodes["z"]["value"]
    assert z.shape == (2,) and tr.nodes["zs"]["value"].shape == (5, 2)
    assert torch.allclose(tr.nodes["z"]["log_prob"], fv.FlowPosterior.log_prob(q, z), atol=1e-4)


def test_guide_round_trip_reuses_the_one_pass_log_q():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(model, family="planar", K=2)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    first = svi.step(X, Y)
    losses = [svi.step(X, Y) for _ in range(150)]
    assert sum(losses[-20:]) / 20 < first
    assert len(pyro.get_param_store().keys()) == 2 + 1  # base μ, σ and the planar chain's stacked (w, u, b) rows
    sample = guide(X, Y)
    assert set(sample) == {"w", "sigma"} and sample["sigma"] > 0
    # a flow without an inverse (Sylvester) shows where ln q comes from: inverting it raises
    for cache, inverts in ((True, False), (False, True)):
        pyro.clear_param_store()
        guide = AutoFlowGuide(model, family="sylvester-orth", K=2, cache_log_prob=cache)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
        if inverts:  # without the cache Pyro's log_prob inverts the flow
            with pytest.raises(fv.InverseNotAvailable):
                svi.step(X, Y)
        else:  # the guide's ln q came from the forward pass
            assert all(math.isfinite(svi.step(X, Y)) for _ in range(3))


def test_guide_with_vectorized_particles_and_predictive():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(plate_model, family="planar", K=2)
    elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = pyro.infer.SVI(plate_model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    losses = [svi.step(X, Y) for _ in range(30)]
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    pred = pyro.infer.Predictive(plate_model, guide=guide, num_samples=7)(X, None)
    assert pred["y"].shape == (7, 30) and pred["w"].shape[0] == 7
    for call in (guide.median, lambda: guide.quantiles([0.5])):
        with pytest.raises(NotImplementedError, match="no closed-form .*estimate it from draws"):
            call()


def test_guide_family_options_are_checked_when_built_and_reach_the_steps():
    with pytest.raises(ValueError, match="family_options of the sylvester-orth family: m must be >= 1, got 0"):
        AutoFlowGuide(model, family="sylvester-orth", K=2, family_options={"m": 0})
    with pytest.raises(TypeError, match="does not take 'M'"):
        AutoFlowGuide(model, family="sylvester-orth", K=2, family_options={"M": 2})
    pyro.clear_param_store()
    guide = AutoFlowGuide(model, family="sylvester-orth", K=2, family_options={"m": 2, "shared_q": True})
    pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO()).step(X, Y)
    assert [s.m for s in guide.flow.steps] == [2, 2] and all(s.shared_q for s in guide.flow.steps)
    with pytest.warns(DeprecationWarning):
        assert AutoFlowGuide(model, family="iaf", K=1, step_options={"hidden": 6}).family_options == {"hidden": 6}
    pyro.clear_param_store()
