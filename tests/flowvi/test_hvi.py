"""Hamiltonian flow and HVI (sections 3.2 and 4.3): leapfrog is volume preserving and reversible; the HVI bound
is a bound on the linear-Gaussian model (factor analysis), and more leapfrog steps fit it no worse."""

from __future__ import annotations

import math

import pytest
import torch

from flowvi import free_energy, importance_log_marginal
from flowvi.hamiltonian import HamiltonianVI, HVIPosterior, leapfrog
from flowvi.langevin import energy_and_grad


def banana_energy(z: torch.Tensor) -> torch.Tensor:
    """A non-quadratic energy (so the leapfrog map is non-linear)."""
    return 0.5 * z[..., 0] ** 2 + 0.5 * (z[..., 1] - z[..., 0] ** 2) ** 2 + 0.1 * z[..., 0] ** 4


def _grad(z: torch.Tensor) -> torch.Tensor:
    return energy_and_grad(banana_energy, z, create_graph=torch.is_grad_enabled())[1]


def _trajectory(z, omega, steps, inv_mass):
    grad = None
    for eps in steps:
        z, omega, grad = leapfrog(z, omega, _grad, eps, inv_mass, grad)
    return z, omega


def test_leapfrog_is_volume_preserving_float64():
    gen = torch.Generator().manual_seed(0)
    steps = 0.05 + 0.3 * torch.rand(5, 2, generator=gen, dtype=torch.float64)  # per-dimension ε_t
    inv_mass = 0.5 + torch.rand(2, generator=gen, dtype=torch.float64)

    def f(state):
        z, w = _trajectory(state[:2], state[2:], steps, inv_mass)
        return torch.cat([z, w])

    for _ in range(5):
        state = torch.randn(4, generator=gen, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(f, state)
        assert not torch.allclose(jac, torch.eye(4, dtype=torch.float64), atol=1e-2)  # a non-trivial map
        assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-10


def test_leapfrog_is_reversible():
    gen = torch.Generator().manual_seed(1)
    steps = 0.05 + 0.3 * torch.rand(6, 2, generator=gen, dtype=torch.float64)
    inv_mass = 0.5 + torch.rand(2, generator=gen, dtype=torch.float64)
    z0 = torch.randn(100, 2, generator=gen, dtype=torch.float64)
    w0 = torch.randn(100, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z, w = _trajectory(z0, w0, steps, inv_mass)
        assert (z - z0).abs().max() > 0.1
        zb, wb = _trajectory(z, -w, steps.flip(0), inv_mass)
    torch.testing.assert_close(zb, z0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-wb, w0, rtol=0, atol=1e-10)


def test_leapfrog_energy_error_is_second_order_in_the_step_size():
    z0, w0 = torch.randn(500, 2, dtype=torch.float64), torch.randn(500, 2, dtype=torch.float64)
    inv_mass = torch.tensor([1.0, 0.5], dtype=torch.float64)

    def h(z, w):
        return banana_energy(z) + 0.5 * (w * w * inv_mass).sum(-1)

    def error(eps: float, n: int) -> float:
        with torch.no_grad():
            z, w = _trajectory(z0, w0, [torch.full((2,), eps, dtype=torch.float64)] * n, inv_mass)
        return float((h(z, w) - h(z0, w0)).abs().mean())

    coarse, fine = error(0.02, 10), error(0.01, 20)  # same simulated time 0.2
    assert coarse < 0.05 and 3.0 < coarse / fine < 5.0  # halving ε divides the error by ≈ 4


# ---- factor analysis: x = W z + noise, z ~ N(0, I), noise ~ N(0, diag ψ); ln p(x) in closed form ----
W = torch.tensor([[1.0, 1.0], [0.5, -0.3]])
PSI = torch.tensor([0.1, 2.0])


def fa_log_joint(x: torch.Tensor):
    def log_joint(z: torch.Tensor) -> torch.Tensor:
        prior = -0.5 * (z * z).sum(-1) - math.log(2 * math.pi)
        mean = z @ W.T
        lik = (-0.5 * (x - mean) ** 2 / PSI - 0.5 * torch.log(2 * math.pi * PSI)).sum(-1)
        return prior + lik

    return log_joint


def fa_log_marginal(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(torch.zeros(2), W @ W.T + torch.diag(PSI)).log_prob(x)


X = torch.tensor([1.5, -0.5])  # posterior correlation ≈ −0.9: a diagonal Gaussian cannot fit it


def _fit(n_leapfrog: int, iters: int = 400, seed: int = 0, n_samples: int = 64) -> HamiltonianVI:
    torch.manual_seed(seed)
    hvi = HamiltonianVI(2, n_leapfrog, hidden=32, init_step_size=0.1)
    opt = torch.optim.Adam(hvi.parameters(), lr=0.02)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    log_joint = fa_log_joint(X)
    for _ in range(iters):
        opt.zero_grad()
        loss = free_energy(hvi(None, log_joint), log_joint, n_samples=n_samples).mean()
        loss.backward()
        opt.step()
        schedule.step()
    return hvi


def _bound(hvi: HamiltonianVI, n: int = 20_000) -> tuple[float, float]:
    log_joint = fa_log_joint(X)
    with torch.no_grad():
        z, log_q_aux = hvi(None, log_joint).rsample_and_log_prob((n,))
        terms = log_joint(z) - log_q_aux
    return float(terms.mean()), float(terms.std() / math.sqrt(n))


@pytest.fixture(scope="module")
def fitted() -> dict[int, HamiltonianVI]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {t: _fit(t) for t in (0, 1, 4)}
    finally:
        torch.set_num_threads(n)


def test_fitted_hvi_bound_never_exceeds_log_marginal_and_improves_with_leapfrog_steps(fitted):
    log_px = float(fa_log_marginal(X))
    torch.manual_seed(10)
    bounds = {t: _bound(hvi) for t, hvi in fitted.items()}
    for t, (b, se) in bounds.items():
        assert b <= log_px + 4 * se, (t, b, se, log_px)
    # stated: more leapfrog steps do not make the fitted bound worse, up to the optimizer's tolerance
    # (0.02 nats: the spread of the fitted bound over seeds) plus 4 Monte Carlo standard errors
    (b0, s0), (b1, s1), (b4, s4) = bounds[0], bounds[1], bounds[4]
    assert b1 >= b0 - 0.02 - 4 * math.hypot(s0, s1)
    assert b4 >= b1 - 0.02 - 4 * math.hypot(s1, s4)
    # and the diagonal Gaussian's gap (≈ −½ ln(1 − ρ²)) is in fact narrowed by the dynamics
    assert log_px - b0 > 0.5 and b4 > b0 + 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_hvi_bound_never_exceeds_log_marginal(seed):
    torch.manual_seed(seed)
    hvi = HamiltonianVI(2, 3, hidden=8, init_step_size=0.3)
    with torch.no_grad():  # random networks: the bound must hold for any parameters
        for p in hvi.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b, se = _bound(hvi)
    assert b <= float(fa_log_marginal(X)) + 4 * se


def test_importance_estimate_on_extended_space_recovers_log_marginal(fitted):
    torch.manual_seed(11)
    log_joint = fa_log_joint(X)
    est = importance_log_marginal(fitted[4](None, log_joint), log_joint, n_samples=2000, chunk_size=500)
    assert abs(float(est.log_marginal) - float(fa_log_marginal(X))) < 0.02
    assert float(est.elbo) <= float(est.log_marginal)


def test_free_energy_is_minus_the_hvi_bound():
    torch.manual_seed(3)
    hvi = HamiltonianVI(2, 2)
    log_joint = fa_log_joint(X)
    q = hvi(None, log_joint)
    torch.manual_seed(4)
    f = free_energy(q, log_joint, n_samples=64)
    torch.manual_seed(4)
    z, w, terms = q.rsample_with_terms((64,))
    bound = (log_joint(z) + terms.log_r - terms.log_q0 - terms.log_q_omega).mean(0)
    torch.testing.assert_close(f, -bound)


def test_zero_leapfrog_steps_is_the_diagonal_gaussian_bound():
    torch.manual_seed(5)
    hvi = HamiltonianVI(2, 0)
    q = hvi(None, fa_log_joint(X))
    _, _, terms = q.rsample_with_terms((1000,))
    # without dynamics ω_T = ω_0 and both networks start at N(0, I): the auxiliary terms cancel
    torch.testing.assert_close(terms.log_q_omega, terms.log_r)


def test_gradients_flow_through_the_dynamics_to_every_parameter():
    torch.manual_seed(6)
    hvi = HamiltonianVI(2, 2)
    log_joint = fa_log_joint(X)
    free_energy(hvi(None, log_joint), log_joint, n_samples=8).sum().backward()
    for name, p in hvi.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert hvi.log_step_size.grad.abs().sum() > 0 and hvi.log_mass.grad.abs().sum() > 0


def test_amortized_hvi_shapes_and_context_dependence():
    torch.manual_seed(7)
    B, H, D = 5, 6, 3
    hvi = HamiltonianVI(D, 2, context_features=H, hidden=16)
    h = torch.randn(B, H)
    x = torch.randn(B, D)

    def log_joint(z):  # (S, B, D) -> (S, B): a Gaussian likelihood per data point
        return -0.5 * (z * z).sum(-1) - 0.5 * ((x - z) ** 2).sum(-1)

    q = hvi(h, log_joint)
    assert isinstance(q, HVIPosterior) and q.batch_shape == (B,)
    z, log_q = q.rsample_and_log_prob((4,))
    assert z.shape == (4, B, D) and log_q.shape == (4, B)
    f = free_energy(q, log_joint, n_samples=3)
    assert f.shape == (B,)
    f.sum().backward()
    assert hvi.initial.head.linear.weight.grad.abs().sum() > 0
    # (the output layer starts at zero, so the first layer only gets gradients after a step)
    assert hvi.momentum.net[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context"):
        hvi(None, log_joint).rsample((1,))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_leapfrog"):
        HamiltonianVI(2, -1)
    with pytest.raises(ValueError, match="init_step_size"):
        HamiltonianVI(2, 1, init_step_size=0.0)
    with pytest.raises(ValueError, match="dim"):
        HamiltonianVI(0, 1)
    with pytest.raises(ValueError, match="log joint"):
        HamiltonianVI(2, 1)()
    assert not hasattr(HamiltonianVI(2, 1)(None, fa_log_joint(X)), "log_prob")  # q(z_T|x) is intractable


def test_diverging_dynamics_raise_a_clear_error():
    hvi = HamiltonianVI(2, 3, init_step_size=1.0)

    def log_joint(z):  # a log joint whose gradient overflows away from the origin
        return -torch.exp(20 * z.abs()).sum(-1)

    with pytest.raises(FloatingPointError, match="leapfrog step"):
        hvi(None, log_joint).rsample((16,))


# ---- integration: the energy experiment's flow registry and the DLGM's posterior registry ----


def test_hvi_in_the_energy_registry_trains_and_reports_its_bound(tmp_path):
    from flowvi_experiments.energies import load_target
    from flowvi_experiments.experiments.energy import EnergyConfig, run_energy
    from flowvi_experiments.family_table import energy_families

    assert "hvi" in energy_families()
    target = load_target("U1")
    config = EnergyConfig(flow="hvi", K=2, steps=30, batch_size=64, eval_samples=2000, grid_n=40, log_every=10)
    m = run_energy(target, config, tmp_path, plots=False)
    assert m["flow"] == "hvi" and m["steps_done"] == 30
    # F = −(HVI bound) ≥ −ln Z, so the extended-space KL = F + ln Z is ≥ 0 up to Monte Carlo error
    assert math.isfinite(m["free_energy"]) and m["kl"] > -4 * m["free_energy_se"]
    assert "kl_box" not in m  # q(z_T) has no density: no grid KL
    assert (tmp_path / "flow.pt").exists() and (tmp_path / "metrics.json").exists()


def test_hvi_as_a_dlgm_posterior_family():
    from flowvi_experiments.models.dlgm import DLGM, DLGMConfig
    from flowvi_experiments.models.posterior import posterior_families

    assert "hvi" in posterior_families()
    torch.manual_seed(8)
    model = DLGM(DLGMConfig(x_dim=12, latent=3, hidden=8, window=2, family="hvi", K=2))
    x = (torch.rand(5, 12) < 0.5).float()
    q = model.q(x)
    assert isinstance(q, HVIPosterior)
    loss = model.loss(x, beta=0.5)
    loss.backward()
    assert model.decoder[-1].weight.grad.abs().sum() > 0  # θ gets gradients through ln p and through ∇U
    assert model.posterior.log_step_size.grad.abs().sum() > 0
    est = importance_log_marginal(model.q(x), model.log_joint(x), n_samples=20, chunk_size=7)
    assert est.log_marginal.shape == (5,) and (est.elbo <= est.log_marginal + 1e-4).all()
    with pytest.raises(ValueError, match="leapfrog"):
        DLGM(DLGMConfig(x_dim=12, latent=3, hidden=8, window=2, family="hvi", K=0))
    with pytest.raises(ValueError, match="supports 1 stochastic layer"):
        DLGM(DLGMConfig(x_dim=12, latent=3, hidden=8, window=2, family="hvi", K=1, stochastic_layers=2))


@pytest.mark.parametrize("K", [1, 2, 8, 32])
def test_energy_hvi_starts_every_chain_length_from_the_same_integration_time(K):
    from flowvi_experiments.energies import load_target
    from flowvi_experiments.experiments.infinitesimal import INITIAL_TIME
    from flowvi_experiments.family_table import FAMILIES

    model = FAMILIES["hvi"].energy(K, load_target("U1"))
    total_time = model.hvi.step_sizes().sum(0)  # Σ_t ε_t per dimension
    torch.testing.assert_close(total_time, torch.full((2,), INITIAL_TIME))
