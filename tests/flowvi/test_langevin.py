"""Langevin flow (section 3.2, eq. 9): ULA and MALA reach the target; sample divergence to U1 falls with t."""

from __future__ import annotations

import math

import pytest
import torch

from flowvi.langevin import energy_and_grad, langevin, mala_step, ula_step
from flowvi_experiments.energies import u1
from flowvi_experiments.histograms import histogram_kl, histogram_kl_floor, target_bin_masses

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
PRECISION = torch.linalg.inv(COV)


def gaussian_energy(z: torch.Tensor) -> torch.Tensor:
    d = z - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(-1)


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(0), torch.cov(z.T)


def test_energy_and_grad_matches_analytic_gradient():
    z = torch.randn(7, 3, 2)
    u, g = energy_and_grad(gaussian_energy, z)
    assert u.shape == (7, 3) and g.shape == z.shape
    torch.testing.assert_close(g, (z - MEAN) @ PRECISION)
    assert not u.requires_grad and not g.requires_grad


def test_energy_and_grad_works_under_no_grad_and_keeps_graph_on_request():
    z = torch.randn(5, 2, requires_grad=True)
    with torch.no_grad():
        _, g = energy_and_grad(gaussian_energy, z)
    assert not g.requires_grad
    _, g2 = energy_and_grad(lambda v: (v**4).sum(-1), z, create_graph=True)
    (second,) = torch.autograd.grad(g2.sum(), z)
    torch.testing.assert_close(second, 12 * z.detach() ** 2)


@pytest.mark.parametrize(
    ("adjusted", "step_size", "tol_mean", "tol_cov"),
    [(True, 0.2, 0.06, 0.10), (False, 0.02, 0.06, 0.10)],
)
def test_langevin_reaches_gaussian_mean_and_covariance(adjusted, step_size, tol_mean, tol_cov):
    # stated tolerances: |mean − μ|∞ < tol_mean, |cov − Σ|∞ < tol_cov with 20,000 chains from N(0, I)
    # (Monte Carlo standard errors: ≈ 0.01 for the mean, ≈ 0.02 for the covariance entries)
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(20_000, 2, generator=gen)
    run = langevin(gaussian_energy, z0, 400, step_size, adjusted=adjusted, generator=gen)
    mean, cov = _moments(run.z)
    assert (mean - MEAN).abs().max() < tol_mean, mean
    assert (cov - COV).abs().max() < tol_cov, cov
    if adjusted:
        assert 0.5 < run.acceptance_rate <= 1.0
    else:
        assert run.acceptance_rate is None


def test_ula_discretization_bias_is_visible_and_mala_removes_it():
    # for a Gaussian target ULA's stationary covariance is Σ (I − εΣ⁻¹/2)⁻¹ (inflated); MALA is exact
    gen = torch.Generator().manual_seed(2)
    z0 = MEAN + torch.randn(20_000, 2, generator=gen) @ torch.linalg.cholesky(COV).T
    eps = 0.5
    ula = langevin(gaussian_energy, z0, 200, eps, generator=gen).z
    mala = langevin(gaussian_energy, z0, 200, eps, adjusted=True, generator=gen).z
    expected_ula = COV @ torch.linalg.inv(torch.eye(2) - eps * PRECISION / 2)
    assert (torch.cov(ula.T) - expected_ula).abs().max() < 0.15
    assert (torch.cov(ula.T) - COV).abs().max() > 0.3  # the bias (≈ 0.41 on Σ₁₁) is well above the noise
    assert (torch.cov(mala.T) - COV).abs().max() < 0.1


def test_langevin_on_u1_histogram_kl_falls_with_steps():
    # KL(q̂_t ‖ p) on [−4, 4]², 40×40 bins, 10,000 MALA chains from N(0, I), ε = 0.003
    box = (-4.0, 4.0, -4.0, 4.0)
    masses = target_bin_masses(u1, box, bins=40)
    floor = histogram_kl_floor(masses, 10_000)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(10_000, 2, generator=gen)
    run = langevin(u1, z0, 1000, 0.003, adjusted=True, record_at=[0, 10, 100, 1000], generator=gen)
    kl = {t: histogram_kl(z, masses, box).kl for t, z in run.snapshots.items()}
    assert kl[0] > kl[10] > kl[100] > kl[1000]
    assert kl[0] > 4.0 and kl[100] > kl[1000] + 0.03
    assert kl[1000] < floor + 0.015, (kl, floor)


def test_histogram_kl_of_exact_samples_is_at_the_floor_and_of_wrong_samples_is_large():
    box = (-4.0, 4.0, -4.0, 4.0)
    masses = target_bin_masses(u1, box, bins=20)
    gen = torch.Generator().manual_seed(3)
    idx = torch.multinomial(masses.reshape(-1).double(), 20_000, replacement=True, generator=gen)
    width = 8.0 / 20
    xs = -4.0 + (idx // 20 + torch.rand(20_000, generator=gen)) * width
    ys = -4.0 + (idx % 20 + torch.rand(20_000, generator=gen)) * width
    exact = histogram_kl(torch.stack([xs, ys], -1), masses, box)
    assert exact.outside == 0.0 and exact.n_samples == 20_000
    assert exact.kl < 2 * histogram_kl_floor(masses, 20_000)
    shifted = histogram_kl(torch.stack([xs, ys], -1) * 0.5, masses, box)
    assert shifted.kl > 1.0
    far = histogram_kl(torch.tensor([[10.0, 0.0], [0.0, 2.0]]), masses, box)
    assert far.outside == 0.5 and far.n_samples == 1


def test_target_bin_masses_sum_to_one_and_match_symmetry():
    m = target_bin_masses(u1, (-4.0, 4.0, -4.0, 4.0), bins=16)
    assert m.shape == (16, 16)
    assert math.isclose(float(m.sum()), 1.0, abs_tol=1e-12)
    torch.testing.assert_close(m, m.flip(0), rtol=1e-5, atol=1e-9)  # U1 is symmetric in z1
    torch.testing.assert_close(m, m.flip(1), rtol=1e-5, atol=1e-9)  # and in z2


def test_vectorized_chains_with_per_dimension_step_size():
    z0 = torch.randn(3, 50, 2)
    run = langevin(gaussian_energy, z0, 5, torch.tensor([0.01, 0.05]), record_at=[0, 5])
    assert run.z.shape == z0.shape
    torch.testing.assert_close(run.snapshots[0], z0)
    torch.testing.assert_close(run.snapshots[5], run.z)


def test_single_steps_are_consistent():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(100, 2)
    z1 = ula_step(gaussian_energy, z, 0.1, generator=gen)
    assert z1.shape == z.shape and not torch.equal(z1, z)
    state = mala_step(gaussian_energy, z, 0.1, generator=gen)
    u, g = energy_and_grad(gaussian_energy, state.z)
    torch.testing.assert_close(state.energy, u)
    torch.testing.assert_close(state.grad, g)
    # rejected chains stay where they were
    torch.testing.assert_close(state.z[~state.accepted], z[~state.accepted])


def test_ula_with_too_large_step_diverges_loudly_and_mala_does_not():
    z0 = torch.randn(100, 2)
    with pytest.raises(FloatingPointError, match="Langevin step"):
        langevin(gaussian_energy, z0, 2000, 10.0)
    run = langevin(gaussian_energy, z0, 200, 10.0, adjusted=True)
    assert torch.isfinite(run.z).all() and run.acceptance_rate < 0.2


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_step_size_is_rejected(bad):
    with pytest.raises(ValueError, match="step_size"):
        langevin(gaussian_energy, torch.zeros(4, 2), 3, bad)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="energy must map"):
        langevin(lambda z: z.sum(), torch.zeros(4, 2), 3, 0.1)
    with pytest.raises(ValueError, match="record_at"):
        langevin(gaussian_energy, torch.zeros(4, 2), 3, 0.1, record_at=[4])
    with pytest.raises(ValueError, match="n_steps"):
        langevin(gaussian_energy, torch.zeros(4, 2), -1, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        langevin(gaussian_energy, torch.full((4, 2), float("nan")), 3, 0.1)
    with pytest.raises(FloatingPointError, match="non-finite"):
        langevin(lambda z: torch.log(z[..., 0]), torch.full((4, 2), -1.0), 3, 0.1)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        histogram_kl(torch.zeros(4, 3), torch.full((4, 4), 1 / 16), (-1.0, 1.0, -1.0, 1.0))


def test_cli_energy_langevin_writes_the_density_figure_and_divergence_plot(tmp_path, capsys):
    from flowvi_experiments.cli.main import main

    out = tmp_path / "run"
    code = main(["energy", "U1", "--flow", "langevin", "-K", "50", "--step-size", "0.02", "--chains", "2000",
                 "--out", str(out)])
    assert code == 0
    for name in ("metrics.json", "divergence.csv", "density.png", "divergence.png"):
        assert (out / name).stat().st_size > 0, name
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["sampler"] == "ULA" and set(m["kl_hist"]) == {"0", "1", "2", "5", "10", "20", "50"}
    assert m["kl_hist"]["50"] < 0.3 * m["kl_hist"]["0"]
    assert "KL(q_t||p)" in capsys.readouterr().out


def test_cli_energy_langevin_rejects_bad_options(tmp_path, capsys):
    from flowvi_experiments.cli.main import main

    assert main(["energy", "U1", "--flow", "langevin", "--step-size", "0", "--out", str(tmp_path)]) == 2
    assert "--step-size" in capsys.readouterr().err
    assert main(["energy", "U1", "--flow", "langevin", "-K", "0", "--out", str(tmp_path)]) == 2
    assert "-K" in capsys.readouterr().err


@pytest.mark.slow
def test_mala_on_u1_reaches_the_exact_sample_floor_with_100k_chains():
    # the documented run (docs/infinitesimal.md): 100,000 MALA chains, ε = 0.01, 40×40 bins on [−4, 4]²
    box = (-4.0, 4.0, -4.0, 4.0)
    masses = target_bin_masses(u1, box, bins=40)
    floor = histogram_kl_floor(masses, 100_000)
    gen = torch.Generator().manual_seed(0)
    run = langevin(u1, torch.randn(100_000, 2, generator=gen), 1000, 0.01, adjusted=True,
                   record_at=[10, 100, 1000], generator=gen)
    kl = {t: histogram_kl(z, masses, box).kl for t, z in run.snapshots.items()}
    assert kl[10] > 0.5 > kl[100] and kl[100] > kl[1000]
    assert kl[1000] < 1.3 * floor, (kl, floor)


def test_langevin_on_a_dlgm_posterior_log_joint():
    from flowvi_experiments.models.dlgm import DLGM, DLGMConfig

    torch.manual_seed(9)
    model = DLGM(DLGMConfig(x_dim=12, latent=3, hidden=8, window=2))
    x = (torch.rand(4, 12) < 0.5).float()
    log_joint = model.log_joint(x)
    z0 = model.q(x).sample((6,))  # (S, B, D) chains from the inference network
    run = langevin(lambda z: -log_joint(z), z0, 20, 0.05, adjusted=True)
    assert run.z.shape == (6, 4, 3) and 0.0 < run.acceptance_rate <= 1.0
    assert all(p.grad is None for p in model.parameters())  # sampling builds no graph into the model
