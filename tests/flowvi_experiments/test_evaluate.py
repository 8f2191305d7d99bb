"""Importance-sampled −ln p(x) (section 6.2) against a linear-Gaussian DLGM, whose ln p(x) is closed form."""

import math

import pytest
import torch
from torch import nn

from flowvi import FlowPosterior
from flowvi_experiments.evaluation import estimate_log_marginal, standard_error


class LinearGaussianDLGM(nn.Module):
    """``z ~ N(0, I)``, ``x|z ~ N(Wz + b, σ² I)``: ``p(x) = N(b, WWᵀ + σ² I)``. With orthogonal columns
    of ``W`` the exact posterior is diagonal; ``shift``/``stretch`` make the proposal q imperfect."""

    def __init__(self, x_dim=6, z_dim=2, sigma=0.5, shift=0.0, stretch=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q_mat, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64))
        self.W = q_mat * torch.tensor([2.0, 0.7], dtype=torch.float64)[:z_dim]
        self.b = torch.randn(x_dim, generator=g, dtype=torch.float64)
        self.sigma, self.shift, self.stretch = sigma, shift, stretch

    def marginal(self):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov)

    def q(self, x):
        prec = 1.0 + (self.W * self.W).sum(0) / self.sigma**2  # diagonal: WᵀW is diagonal
        loc = ((x - self.b) @ self.W) / self.sigma**2 / prec
        return FlowPosterior(loc + self.shift, prec.rsqrt().expand_as(loc) * self.stretch, [])

    def log_joint(self, x):
        def log_p(z):
            mean = z @ self.W.T + self.b
            lik = torch.distributions.Normal(mean, self.sigma).log_prob(x).sum(-1)
            return lik + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

        return log_p


def test_exact_posterior_gives_the_exact_marginal_with_one_sample():
    m = LinearGaussianDLGM()
    x = m.marginal().sample((20,))
    est = estimate_log_marginal(m, x, n_samples=1)
    assert torch.allclose(est.log_marginal, m.marginal().log_prob(x), atol=1e-9)
    assert torch.allclose(est.elbo, est.log_marginal, atol=1e-9)  # the bound is tight


def test_importance_sampling_converges_and_is_never_worse_than_the_bound():
    m = LinearGaussianDLGM(shift=0.4, stretch=1.6)
    torch.manual_seed(0)
    x = m.marginal().sample((40,))
    exact = m.marginal().log_prob(x)
    errors, gaps = [], []
    for s in (1, 10, 100, 5000):
        est = estimate_log_marginal(m, x, n_samples=s, batch_size=16, chunk_size=100, seed=s)
        errors.append(float((est.log_marginal - exact).abs().mean()))
        gaps.append(float((est.log_marginal - est.elbo).mean()))
        assert est.log_marginal.mean() >= est.elbo.mean()  # −ln p(x) estimate ≤ F(x) on average
        assert est.elbo.mean() < exact.mean()  # the bound is a bound
    assert errors[-1] < 0.05 and errors[-1] < errors[1] / 3 and errors[1] < errors[0], errors
    assert gaps[-1] > gaps[1]  # more samples: a tighter estimate, further above the (S-independent) ELBO


def test_summary_statistics_and_positive_nats():
    m = LinearGaussianDLGM(shift=0.2)
    x = m.marginal().sample((30,)) + 5.0  # far from b: ln p(x) < 0, so −ln p(x) > 0
    est = estimate_log_marginal(m, x, n_samples=50)
    s = est.summary()
    assert s["nll"] > 0 and s["bound"] >= s["nll"] - 1e-9
    assert s["nll_se"] == pytest.approx(float(est.log_marginal.std() / math.sqrt(30)))
    assert s["samples"] == 50 and s["n_points"] == 30
    assert standard_error(torch.tensor([1.0])) == 0.0


def test_estimates_are_seeded_chunk_independent_and_leave_the_global_rng_alone():
    m = LinearGaussianDLGM(shift=0.3)
    x = m.marginal().sample((10,))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = estimate_log_marginal(m, x, n_samples=2000, chunk_size=2000, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    again = estimate_log_marginal(m, x, n_samples=2000, chunk_size=2000, seed=5)
    assert torch.equal(a.log_marginal, again.log_marginal)
    chunked = estimate_log_marginal(m, x, n_samples=2000, chunk_size=7, batch_size=3, seed=6)
    exact = m.marginal().log_prob(x)
    assert torch.allclose(a.log_marginal, exact, atol=0.2) and torch.allclose(chunked.log_marginal, exact, atol=0.2)


def test_bad_arguments():
    m = LinearGaussianDLGM()
    with pytest.raises(ValueError, match="importance samples"):
        estimate_log_marginal(m, torch.zeros(2, 6, dtype=torch.float64), n_samples=0)
    with pytest.raises(ValueError, match="non-empty"):
        estimate_log_marginal(m, torch.zeros(0, 6, dtype=torch.float64))


def test_the_chunk_is_chosen_from_the_device():
    """On the CPU the default chunk is 100 samples (the results of before: the same draws); on a GPU it
    is measured from the device's free memory (tested where there is one)."""
    from flowvi_experiments.evaluation import evaluation_chunk_size

    model = LinearGaussianDLGM(shift=0.3)
    x = model.marginal().sample((7,)).double()
    auto = estimate_log_marginal(model, x, 250, batch_size=4, seed=3)
    fixed = estimate_log_marginal(model, x, 250, batch_size=4, chunk_size=100, seed=3)
    assert auto.chunk_size == 100 and torch.equal(auto.log_marginal, fixed.log_marginal)
    assert evaluation_chunk_size(model, x, 30, "cpu") == 30
    if torch.cuda.is_available():
        big = LinearGaussianDLGM(shift=0.3)
        big.W, big.b = big.W.cuda(), big.b.cuda()
        chunk = evaluation_chunk_size(big, x.cuda(), 5000, "cuda")
        assert 100 < chunk <= 5000
        est = estimate_log_marginal(big, x, 5000, batch_size=4, device="cuda", seed=3)
        assert est.chunk_size == chunk and torch.isfinite(est.log_marginal).all()
