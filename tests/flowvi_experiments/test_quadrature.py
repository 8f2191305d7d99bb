"""ln Z and KL by quadrature (section 6.1)."""

import math

import pytest
import torch

from flowvi_experiments.energies import u1, u2, u3, u4
from flowvi_experiments.quadrature import grid, kl_box, kl_from_free_energy, log_z_box, log_z_r2

BOX = (-4.0, 4.0, -4.0, 4.0)


def test_log_z_of_a_gaussian_is_exact():
    # U = ½ zᵀz / s²: Z = 2π s²
    s = 0.7
    value = log_z_r2(lambda z: 0.5 * (z**2).sum(-1) / s**2)
    assert value == pytest.approx(math.log(2 * math.pi * s**2), abs=1e-6)


def test_u1_log_z_on_r2_to_three_decimals():
    assert log_z_r2(u1) == pytest.approx(1.8775, abs=5e-4)


@pytest.mark.parametrize("energy, expected", [(u2, 2.082), (u3, 2.642), (u4, 2.685)])
def test_u2_u4_log_z_on_the_box(energy, expected):
    assert log_z_box(energy, BOX, 1000) == pytest.approx(expected, abs=5e-4)


def test_log_z_box_converged_in_grid_size():
    assert log_z_box(u3, BOX, 1000) == pytest.approx(log_z_box(u3, BOX, 2000), abs=1e-4)


def test_non_normalizable_target_is_reported():
    with pytest.raises(ValueError, match="did not converge"):
        log_z_r2(u2, cells_per_unit=20, max_doublings=2)


def test_kl_box_is_zero_for_equal_densities_and_matches_gaussians():
    g = grid(BOX, 400)
    pts = g.points
    energy = 0.5 * (pts**2).sum(-1)
    assert kl_box(-energy, energy, g.cell_area) == pytest.approx(0.0, abs=1e-10)
    # q = N(m, I), p = N(0, I): KL = ½|m|² (the box holds almost all mass of both)
    m = torch.tensor([0.5, -0.3], dtype=torch.float64)
    log_q = -0.5 * ((pts - m) ** 2).sum(-1)
    assert kl_box(log_q, energy, g.cell_area) == pytest.approx(0.5 * float(m @ m), abs=2e-3)


def test_kl_from_free_energy():
    assert kl_from_free_energy(-1.80, 1.8775) == pytest.approx(0.0775)


def test_grid_points_are_cell_midpoints():
    g = grid((0.0, 1.0, 0.0, 2.0), 2)
    assert g.points.tolist() == [[0.25, 0.5], [0.75, 0.5], [0.25, 1.5], [0.75, 1.5]]
    assert g.cell_area == 0.5
    with pytest.raises(ValueError):
        grid(BOX, 1)
