"""The 2-D energies U1–U4 (section 6.1) and loading a user's target file."""

import math

import pytest
import torch

from flowvi_experiments.energies import BUILTIN, DEFAULT_BOX, TargetError, load_target, u1, u2, u3, u4


def test_energies_match_the_formulas_at_hand_computed_points():
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
    # U1 at (2, 0): ring term 0, modes: -ln(e^0 + e^{-0.5 (4/0.6)^2})
    assert u1(z)[0].item() == pytest.approx(-math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2)), abs=1e-6)
    # U1 at (0, 2): ring term 0, both modes at distance 2
    assert u1(z)[1].item() == pytest.approx(-math.log(2 * math.exp(-0.5 * (2 / 0.6) ** 2)), abs=1e-5)
    w1 = math.sin(2 * math.pi * 1.0 / 4)  # = 1 at z1 = 1
    assert u2(z)[2].item() == pytest.approx(0.5 * ((0.5 - w1) / 0.4) ** 2, abs=1e-6)
    w2 = 3.0  # 3 exp(0) at z1 = 1
    d = 0.5 - w1
    u3_ref = -math.log(math.exp(-0.5 * (d / 0.35) ** 2) + math.exp(-0.5 * ((d + w2) / 0.35) ** 2))
    assert u3(z)[2].item() == pytest.approx(u3_ref, abs=1e-5)
    w3 = 3 * 0.5  # 3 σ(0)
    u4_ref = -math.log(math.exp(-0.5 * (d / 0.4) ** 2) + math.exp(-0.5 * ((d + w3) / 0.35) ** 2))
    assert u4(z)[2].item() == pytest.approx(u4_ref, abs=1e-5)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_energies_are_finite_far_out_and_batched(name):
    energy = BUILTIN[name][0]
    z = torch.tensor([[50.0, -50.0], [0.0, 0.0], [-3.0, 40.0]])
    out = energy(z)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    target = load_target(name.lower())
    assert target.name == name and target.box == DEFAULT_BOX
    assert target.log_density(torch.zeros(4, 5, 2)).shape == (4, 5)


def _write(tmp_path, body):
    path = tmp_path / "mine.py"
    path.write_text("import torch\n" + body)
    return path


def test_user_target_loads_with_its_box(tmp_path):
    path = _write(tmp_path, "def U(z):\n    return 0.5 * (z ** 2).sum(-1)\n")
    target = load_target(f"{path}:U", box=(-5, 5, -6, 6))
    assert target.box == (-5.0, 5.0, -6.0, 6.0) and target.normalizable
    assert target.energy(torch.zeros(3, 2)).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "body, spec_fn, message",
    [
        (None, "U", "does not exist"),
        ("def U(z):\n    return z.sum(-1)\n", "V", "has no function 'V'"),
        ("U = 3\n", "U", "not callable"),
        ("def U(z):\n    return z\n", "U", "must map (N, 2) to (N,)"),
        ("def U(z):\n    return z.sum()\n", "U", "must map (N, 2) to (N,)"),
        ("def U(z):\n    return torch.log(z[:, 0] - 100)\n", "U", "non-finite"),
        ("def U(z):\n    return [1.0]\n", "U", "must return a torch.Tensor"),
        ("def U(z):\n    raise KeyError('x')\n", "U", "raised KeyError"),
        ("import no_such_module_xyz\n", "U", "importing"),
    ],
)
def test_bad_user_targets_give_clear_errors(tmp_path, body, spec_fn, message):
    path = tmp_path / "missing.py" if body is None else _write(tmp_path, body)
    with pytest.raises(TargetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_target(f"{path}:{spec_fn}")


@pytest.mark.parametrize("box", [(1, 0, 0, 1), (0, 1, 0, float("inf"))])
def test_bad_boxes_are_refused(box):
    with pytest.raises(TargetError, match="box"):
        load_target("U1", box=box)


def test_spec_without_function_is_refused():
    with pytest.raises(TargetError, match="path/to/file.py:function"):
        load_target("U7")


def test_energies_have_finite_second_derivatives_far_out_in_float32():
    """Langevin and HVI differentiate ∇U: the log-sum-exp terms must not overflow in double backward."""
    import torch

    from flowvi_experiments.energies import u1, u3, u4

    # (‖z‖ in U1 has no Hessian at z = 0 itself, a cone point, so the origin is not among them)
    z = torch.tensor([[9.0, 0.5], [-12.0, 1.0], [20.0, -3.0], [0.1, 0.2]], requires_grad=True)
    for energy in (u1, u3, u4):
        (grad,) = torch.autograd.grad(energy(z).sum(), z, create_graph=True)
        (hess_diag,) = torch.autograd.grad(grad.sum(), z)
        assert torch.isfinite(grad).all() and torch.isfinite(hess_diag).all(), energy.__name__
