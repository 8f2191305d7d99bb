"""``flowvi energy`` / ``flowvi figure3`` end to end on short runs, and their error paths (section 6.1)."""

import json
import math
import re

import pytest
import torch
from torch import nn

from flowvi import DiagonalNormal, NormalizingFlow
from flowvi.loop import Hook
from flowvi_experiments.cli.main import main
from flowvi_experiments.energies import load_target
from flowvi_experiments.experiments.energy import EnergyConfig, TrainingDiverged, train
from flowvi_experiments.family_table import FAMILIES, Family, register_family

QUICK = ["--steps", "30", "--eval-samples", "2000", "--quiet"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_energy_end_to_end_writes_metrics_and_plots(tmp_path, capsys):
    out = tmp_path / "u1"
    code, stdout, err = _run(capsys, "energy", "U1", "--flow", "planar", "-K", "2", "--seed", "3", "--out", out, *QUICK)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    for key in ("target", "flow", "K", "steps", "seed", "free_energy", "free_energy_se", "log_z", "kl", "kl_box",
                "wall_seconds", "train_seconds"):
        assert key in m
    assert (m["target"], m["flow"], m["K"], m["steps"], m["seed"]) == ("U1", "planar", 2, 30, 3)
    assert m["log_z"] == pytest.approx(1.8775, abs=5e-4) and m["log_z_domain"] == "R2"
    assert m["kl"] == pytest.approx(m["free_energy"] + m["log_z"])
    assert m["kl"] > -3 * m["free_energy_se"]  # KL ≥ 0 up to Monte Carlo error
    assert 0 < m["free_energy_se"] < 0.1
    for name in ("density.png", "training.png", "history.csv", "flow.pt"):
        assert (out / name).stat().st_size > 0
    assert "KL(q||p)" in stdout
    assert len((out / "history.csv").read_text().splitlines()) == 2  # header + the record at step 30


def test_non_normalizable_target_reports_kl_box_only(tmp_path, capsys):
    out = tmp_path / "u3"
    code, _, err = _run(capsys, "energy", "U3", "--flow", "nice-perm", "-K", "2", "--no-anneal", "--out", out, *QUICK)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["kl"] is None and "not normalizable" in m["kl_note"]
    assert m["log_z"] == pytest.approx(2.642, abs=1e-3) and m["log_z_domain"] == "box"
    assert m["kl_box"] > 0
    assert m["config"]["anneal"] is False


RING = """
import math
import torch

CENTRES = torch.tensor([[1.5 * math.cos(a), 1.5 * math.sin(a)] for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)])
S = 0.7

def U(z):
    d2 = ((z[:, None, :] - CENTRES.to(z)) ** 2).sum(-1)
    return -torch.logsumexp(-0.5 * d2 / S**2, dim=1)
"""


def test_user_ring_mixture_is_fitted_with_small_kl(tmp_path, capsys):
    # p ∝ Σ_i exp(−|z − μ_i|²/(2 s²)): Z = 3 · 2π s² exactly
    path = tmp_path / "ring.py"
    path.write_text(RING)
    out = tmp_path / "ring"
    code, _, err = _run(capsys, "energy", "--target", f"{path}:U", "--box", -4, 4, -4, 4, "--flow", "planar",
                        "-K", "8", "--steps", "400", "--eval-samples", "20000", "--quiet", "--out", out)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["log_z"] == pytest.approx(math.log(3 * 2 * math.pi * 0.7**2), abs=1e-3)
    assert m["kl"] == pytest.approx(m["free_energy"] + m["log_z"])
    assert -0.01 < m["kl"] < 0.15


@pytest.mark.parametrize(
    "body, message",
    [
        (None, "does not exist"),
        ("def V(z):\n    return z.sum(-1)\n", "has no function 'U'"),
        ("def U(z):\n    return z\n", "must map (N, 2) to (N,)"),
        ("import torch\ndef U(z):\n    return torch.full(z.shape[:1], float('nan'))\n", "non-finite"),
    ],
)
def test_bad_target_file_exits_2_with_one_line(tmp_path, capsys, body, message):
    path = tmp_path / "t.py"
    if body is not None:
        path.write_text(body)
    code, _, err = _run(capsys, "energy", "--target", f"{path}:U", "--out", tmp_path / "o", *QUICK)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["energy", "--out", "x"], "give exactly one target"),
        (["energy", "U9", "--out", "x"], "unknown target"),
        (["energy", "U1", "--box", "1", "0", "0", "1", "--out", "x"], "xmin < xmax"),
        (["energy", "U1", "--batch-size", "0", "--out", "x"], "--batch-size"),
        (["energy", "U1", "--lr", "-1", "--out", "x"], "--lr"),
        (["energy", "U1", "-K", "-1", "--out", "x"], "-K"),
        (["energy", "U1", "--device", "nonsense", "--out", "x"], "--device"),
        (["energy", "U1", "--grad-clip", "-1", "--out", "x"], "--grad-clip"),
        (["energy", "U1", "--out", "afile"], "is not a folder"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


NAN_LATER = """
import torch
CALLS = [0]

def U(z):
    CALLS[0] += 1
    if CALLS[0] >= 5:  # the load-time check, the fit loop's checked first pass and two updates pass; then NaN
        return torch.full(z.shape[:1], float('nan'))
    return 0.5 * (z ** 2).sum(-1)
"""


def test_nan_during_training_stops_with_step_and_cause(tmp_path, capsys):
    path = tmp_path / "nan.py"
    path.write_text(NAN_LATER)
    code, _, err = _run(capsys, "energy", "--target", f"{path}:U", "-K", "2", "--out", tmp_path / "o", *QUICK)
    assert code == 2
    assert "training stopped at step 3" in err and "U(z) is non-finite" in err
    assert "Traceback" not in err


INTERRUPT_LATER = """
import torch
CALLS = [0]

def U(z):
    CALLS[0] += 1
    if CALLS[0] == 13:  # Ctrl-C during the 11th update (after the load-time check and the checked first pass)
        raise KeyboardInterrupt
    return 0.5 * (z ** 2).sum(-1)
"""


def test_ctrl_c_stops_cleanly_and_still_writes_outputs(tmp_path, capsys):
    path = tmp_path / "intr.py"
    path.write_text(INTERRUPT_LATER)
    out = tmp_path / "o"
    code, stdout, _ = _run(capsys, "energy", "--target", f"{path}:U", "-K", "2", "--out", out,
                           "--steps", "1000", "--eval-samples", "2000", "--quiet")
    assert code == 130
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] is True and m["steps_done"] == 10
    assert math.isfinite(m["free_energy"]) and (out / "density.png").exists()
    assert "interrupted at step 10" in stdout


def test_figure3_small_grid_writes_figure_table_and_reuses_cells(tmp_path, capsys):
    out = tmp_path / "fig3"
    argv = ["figure3", "--out", out, "--targets", "U2", "--flows", "planar", "nice-perm", "--Ks", "1", "2",
            "--steps", "10", "--eval-samples", "500", "--quiet"]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    for name in ("figure3.png", "bound_vs_k.png", "table.md", "table.csv"):
        assert (out / name).stat().st_size > 0
    csv_lines = (out / "table.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 2 * 2
    assert (out / "u2-nice-perm-2" / "metrics.json").exists()
    md = (out / "table.md").read_text()
    assert "| U2 | nice-perm | 2 |" in md
    mtime = (out / "u2-planar-1" / "metrics.json").stat().st_mtime_ns
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0 and "U2 planar K=1:" not in stdout  # reused, not rerun
    assert (out / "u2-planar-1" / "metrics.json").stat().st_mtime_ns == mtime
    # --existing-only trains nothing: radial has no cells, the table keeps the four done ones
    code, stdout, _ = _run(capsys, *argv[:6], "planar", "nice-perm", "radial", *argv[8:], "--existing-only")
    assert code == 0 and not (out / "u2-radial-1").exists()
    assert len((out / "table.csv").read_text().strip().splitlines()) == 1 + 2 * 2


def test_flow_registry_accepts_new_families_without_touching_the_loop():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = NormalizingFlow(2, [], base=DiagonalNormal(2))

        def forward(self):
            return self.flow()

    families = {**FAMILIES, "test-gaussian": Family("test-gaussian", "Gaussian", energy=lambda K, target: Shifted(),
                                                    min_K=0)}
    with pytest.raises(ValueError, match="already registered"):
        register_family(Family("planar", "again", energy=lambda K, target: Shifted()))
    # a Gaussian fitted to p = N((1, 0), 0.5² I): its mean moves towards (1, 0)
    target = load_target("U1")
    target = type(target)("gauss", lambda z: 0.5 * (((z - torch.tensor([1.0, 0.0])) / 0.5) ** 2).sum(-1))
    config = EnergyConfig(flow="test-gaussian", K=0, steps=300, lr=5e-2, anneal=False)
    with pytest.raises(ValueError, match="unknown flow 'test-gaussian'"):  # the default table does not have it
        train(config, target)
    result = train(config, target, families=families)
    loc = result.model.flow().loc
    assert torch.allclose(loc.detach(), torch.tensor([1.0, 0.0]), atol=0.15)


class _BreaksAt(nn.Module):
    """A Gaussian posterior whose ln q (``"log_q"``) or only its gradient (``"gradient"``) is NaN from call ``n``."""

    def __init__(self, what: str, n: int):
        super().__init__()
        self.flow = NormalizingFlow(2, [], base=DiagonalNormal(2))
        self.what, self.n, self.calls = what, n, 0

    def forward(self):
        self.calls += 1
        q, broken, what = self.flow(), self.calls >= self.n, self.what

        class Posterior:
            def rsample_and_log_prob(self, shape):
                z, log_q = q.rsample_and_log_prob(shape)
                if broken and what == "log_q":
                    return z, log_q * float("nan")
                if broken:  # value unchanged, gradient 0 · ∞ = NaN
                    return z, log_q + 0 * torch.sqrt(q.loc.sum() - q.loc.sum().detach())
                return z, log_q

        return Posterior()


@pytest.mark.parametrize("what, cause", [("log_q", "ln q_K(z) is non-finite"), ("gradient", "non-finite gradient")])
def test_a_divergence_names_the_update_and_the_cause(what, cause):
    # call 1 is the fit loop's checked first pass, so call 5 is update 4; it is read at the end of the window (20)
    families = {"test-breaks": Family("test-breaks", "breaks", energy=lambda K, t: _BreaksAt(what, 5), min_K=0)}
    config = EnergyConfig(flow="test-breaks", K=0, steps=40, batch_size=16, log_every=20)
    with pytest.raises(TrainingDiverged, match=re.escape(f"training stopped at step 4: {cause}")):
        train(config, load_target("U1"), families=families)


@pytest.mark.slow
@pytest.mark.parametrize("K, max_kl", [(32, 0.05), (8, 0.15)])
def test_quality_bar_u1_planar_default_recipe(tmp_path, capsys, K, max_kl):
    """Issue 3's bar: U1, planar, default recipe: KL ≤ 0.05 (K = 32), ≤ 0.15 (K = 8), both modes covered."""
    out = tmp_path / f"u1-{K}"
    code, _, err = _run(capsys, "energy", "U1", "--flow", "planar", "-K", K, "--quiet", "--out", out)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["kl"] <= max_kl
    assert 0.4 <= m["q_mass_z1_negative"] <= 0.6  # p puts ½ on each mode


@pytest.mark.slow
def test_quality_bar_planar_bound_improves_with_k(tmp_path, capsys):
    """Issue 3's bar: for U1–U4 the planar free energy decreases from K = 2 to 8 to 32 (as in Figure 3c)."""
    out = tmp_path / "fig3"
    code, _, err = _run(capsys, "figure3", "--out", out, "--flows", "planar", "--quiet")
    assert code == 0, err
    for target in ("u1", "u2", "u3", "u4"):
        f = {K: json.loads((out / f"{target}-planar-{K}" / "metrics.json").read_text()) for K in (2, 8, 32)}
        for a, b in ((2, 8), (8, 32)):
            se = math.hypot(f[a]["free_energy_se"], f[b]["free_energy_se"])
            assert f[b]["free_energy"] < f[a]["free_energy"] - 2 * se, (target, a, b)


class _GradNorms(Hook):
    """The global norm of the gradients the optimizer stepped with, after every update (they stay in
    ``.grad`` until the next update zeroes them)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def after_update(self, loop, update):
        grads = [p.grad for p in loop.step.params if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_grad_clip_bounds_the_gradient_norm_before_every_update():
    clipped, default = _GradNorms(), _GradNorms()
    config = EnergyConfig(flow="planar", K=4, steps=5, batch_size=32, lr=1e-2, grad_clip=1e-3)
    train(config, load_target("U1"), hooks=[clipped])
    assert len(clipped.norms) == 5 and max(clipped.norms) <= 1e-3 * (1 + 1e-4)
    train(EnergyConfig(flow="planar", K=4, steps=5, batch_size=32), load_target("U1"), hooks=[default])
    # default: off, the same updates see gradients far above that norm
    assert len(default.norms) == 5 and min(default.norms) > 1e-2


def test_family_options_reach_the_steps_and_are_recorded(tmp_path, capsys):
    out = tmp_path / "syl"
    code, _, err = _run(capsys, "energy", "U1", "--flow", "sylvester-orth", "-K", "2", "--family-options",
                        "{m: 1, shared_q: true}", "--out", out, "--steps", "5", "--eval-samples", "500", "--quiet")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["config"]["family_options"] == {"m": 1, "shared_q": True}
    state = torch.load(out / "flow.pt", weights_only=True)
    state = state.get("state", state)
    assert tuple(state["steps.0.r_diag"].shape) == (1,)  # M = 1 orthonormal column, not D = 2


@pytest.mark.parametrize(
    "flow, options, message",
    [
        ("sylvester-orth", "{m: 3}", "--family-options of --flow sylvester-orth: m must be at most the latent "
                                     "dimension 2, got 3"),
        ("sylvester-orth", "{M: 1}", "--family-options of --flow sylvester-orth does not take 'M': it takes m, "
                                     "shared_q"),
        ("iaf", "{hidden: 0, gate_bias: x}", "hidden must be >= 1, got 0; gate_bias must be a number, got 'x'"),
        ("planar", "[1, 2]", "--family-options must be a YAML mapping of option names to values"),
        ("hvi", "{m: 1}", "--family-options of --flow hvi: the hvi posterior takes no options, got 'm'"),
        ("langevin", "{m: 1}", "the langevin posterior takes no options"),
    ],
)
def test_bad_family_options_exit_2_before_any_work(tmp_path, capsys, flow, options, message):
    out = tmp_path / "run"
    code, _, err = _run(capsys, "energy", "U1", "--flow", flow, "--family-options", options, "--out", out, *QUICK)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_family_options_with_a_glued_colon_are_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["energy", "U1", "--flow", "sylvester-orth", "--family-options", "{m:1}", "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "write a space after each colon, as in '{m: 20}'" in capsys.readouterr().err
