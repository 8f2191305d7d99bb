"""The free energy (eq. 15), its annealed form (eq. 20) and the importance-sampled ln p(x)."""

import math

import pytest
import torch

import flowvi as fv


def _gaussian_log_joint(mean, var):
    # unnormalized: ln p(x, z) = ln N(z; mean, var) + c, with c = ln p(x) = 1.5
    def log_joint(z):
        return torch.distributions.Normal(mean, math.sqrt(var)).log_prob(z).sum(-1) + 1.5

    return log_joint


def test_free_energy_of_the_exact_posterior_is_minus_log_evidence():
    q = fv.FlowPosterior(torch.full((2,), 0.5), torch.full((2,), 2.0), [])
    f = fv.free_energy(q, _gaussian_log_joint(torch.full((2,), 0.5), 4.0), n_samples=16)
    torch.testing.assert_close(f, torch.tensor(-1.5), atol=1e-5, rtol=0)  # zero variance at the optimum


def test_free_energy_is_an_upper_bound_and_annealing_scales_only_the_joint():
    torch.manual_seed(0)
    q = fv.FlowPosterior(torch.zeros(3, 2), torch.ones(3, 2), [])
    lj = _gaussian_log_joint(torch.ones(2), 0.5)
    f = fv.free_energy(q, lj, n_samples=20000)
    assert f.shape == (3,)
    assert (f > -1.5).all()  # F ≥ −ln p(x)
    torch.manual_seed(1)
    f_beta = fv.free_energy(q, lj, n_samples=5, beta=0.3)
    torch.manual_seed(1)
    z, log_q = q.rsample_and_log_prob((5,))
    torch.testing.assert_close(f_beta, (log_q - 0.3 * lj(z)).mean(0))


def test_annealing_schedule():
    beta = fv.LinearAnnealing()
    assert beta(0) == pytest.approx(0.01)
    assert beta(5000) == pytest.approx(0.51)
    assert beta(9900) == pytest.approx(1.0)
    assert beta(10**6) == 1.0
    assert fv.LinearAnnealing(steps=0)(0) == 1.0


def test_importance_sampling_is_exact_for_the_exact_posterior_and_chunking_is_invisible():
    q = fv.FlowPosterior(torch.zeros(4, 2), torch.full((4, 2), 0.7), [])
    lj = _gaussian_log_joint(torch.zeros(2), 0.49)
    est = fv.importance_log_marginal(q, lj, n_samples=50, chunk_size=7)
    torch.testing.assert_close(est.log_marginal, torch.full((4,), 1.5), atol=1e-4, rtol=0)

    q2 = fv.FlowPosterior(torch.zeros(4, 2), torch.ones(4, 2), [])
    torch.manual_seed(0)
    a = fv.importance_log_marginal(q2, lj, n_samples=64, chunk_size=64)
    torch.manual_seed(0)
    b = fv.importance_log_marginal(q2, lj, n_samples=64, chunk_size=64)
    torch.testing.assert_close(a.log_marginal, b.log_marginal)
    assert (a.log_marginal >= a.elbo).all()  # Jensen on the same samples


def test_importance_sampling_rejects_non_finite_weights():
    q = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [])
    with pytest.raises(FloatingPointError, match="non-finite importance weight"):
        fv.importance_log_marginal(q, lambda z: torch.full(z.shape[:-1], float("nan")), n_samples=4)


def test_log_joint_shape_is_checked():
    q = fv.FlowPosterior(torch.zeros(3, 2), torch.ones(3, 2), [])
    with pytest.raises(ValueError, match="log_joint returned shape"):
        fv.free_energy(q, lambda z: z.sum(), n_samples=2)
