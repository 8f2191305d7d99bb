"""flowvi.fit: recovers ln Z of a Gaussian, flags a heavy-tailed target, one-sentence errors."""

import math

import pytest
import torch

import flowvi as fv

MU = torch.tensor([1.0, -2.0, 0.5])
SIGMA = torch.tensor([0.5, 2.0, 1.0])
LOG_Z = 0.5 * 3 * math.log(2 * math.pi) + float(SIGMA.log().sum())  # of exp(−½‖(z−μ)/σ‖²)


def gaussian(z):
    return -0.5 * (((z - MU) / SIGMA) ** 2).sum(-1)


@pytest.mark.parametrize("family, K", [("diagonal", 0), ("planar", 2)])
def test_gaussian_target_recovers_log_z(family, K):
    q, r = fv.fit(gaussian, 3, family, K, updates=300, samples=32, lr=0.05, eval_samples=2000, progress=False)
    assert abs(r.log_z - LOG_Z) < 3 * r.log_z_se + 0.02
    assert r.elbo <= LOG_Z + 3 * r.elbo_se
    assert LOG_Z - r.elbo < 0.1  # q close to p: KL = ln Z − ELBO small
    assert r.khat < 0.7 and r.usable and "usable" in r.khat_reading
    assert len(r.elbo_trace) == r.updates_done == 300 and not r.interrupted
    assert ((q.moments(20_000)[0] - MU).abs() < 0.15 * SIGMA).all()
    d = r.to_dict()
    assert "flow" not in d and d["log_z"] == r.log_z and d["family"] == family


def test_heavy_tailed_target_gives_large_khat():
    def cauchy(z):  # a 2-D product of Cauchy densities: q = Gaussian cannot cover its tails
        return -torch.log1p(z**2).sum(-1)

    _, r = fv.fit(cauchy, 2, "diagonal", 0, updates=200, samples=32, eval_samples=4000, progress=False)
    assert r.khat > 0.7 and not r.usable


def test_fit_is_seeded_and_reports_progress(capsys):
    seen = []
    _, a = fv.fit(gaussian, 3, "planar", 1, updates=20, samples=8, eval_samples=100, progress=True,
                  progress_every=10, callback=lambda t, elbo: seen.append(t))
    _, b = fv.fit(gaussian, 3, "planar", 1, updates=20, samples=8, eval_samples=100, progress=False)
    assert a.elbo_trace == b.elbo_trace and a.log_z == b.log_z
    assert seen == list(range(1, 21))
    err = capsys.readouterr().err
    assert err.count("flowvi.fit: update") == 2
    fv.fit(gaussian, 3, "planar", 1, updates=20, samples=8, eval_samples=100, progress=False)
    assert capsys.readouterr().err == ""


def test_fit_uses_a_learned_base_by_default():
    q, r = fv.fit(gaussian, 3, "planar", 1, updates=1, samples=8, eval_samples=100, progress=False)
    assert r.flow is not None and isinstance(r.flow.base, fv.DiagonalNormal)
    _, r = fv.fit(gaussian, 3, "planar", 1, updates=1, samples=8, eval_samples=100, progress=False,
                  flow_options={"base": fv.StandardNormal(3)})
    assert isinstance(r.flow.base, fv.StandardNormal)
    _, r = fv.fit(gaussian, 3, "diagonal", 0, updates=5, eval_samples=100, progress=False,
                  flow_options={"trainable_base": False})  # nothing to train: q = N(0, I), still evaluated
    assert r.updates_done == 0 and r.elbo < LOG_Z


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda z: z, r"must map a \(S, D\) batch to \(S,\) log-densities: for S=64, D=3 it returned shape \(64, 3\)"),
        (lambda z: z.sum(-1) * float("nan"), "non-finite values"),
        (lambda z: (z.detach() ** 2).sum(-1), "not differentiable"),
        (lambda z: torch.zeros(z.shape[0]), "not differentiable"),
        (lambda z: 1 / 0, "raised ZeroDivisionError"),
        (lambda z: [0.0], "must return a torch.Tensor"),
    ],
)
def test_bad_log_density_is_one_sentence(fn, message):
    with pytest.raises(fv.FitError, match=message) as info:
        fv.fit(fn, 3, updates=5, progress=False)
    assert "\n" not in str(info.value)


def test_bad_settings():
    with pytest.raises(fv.FitError, match="unknown flow family"):
        fv.fit(gaussian, 3, "sylvesterr", 2, progress=False)
    with pytest.raises(fv.FitError, match="does not take 'hiden'"):
        fv.fit(gaussian, 3, "planar", 2, step_options={"hiden": 3}, progress=False)
    with pytest.raises(fv.FitError, match="dim"):
        fv.fit(gaussian, 0, progress=False)


def test_fit_and_psis_stay_in_the_library_floor():
    import ast
    from pathlib import Path

    src = Path(fv.__file__).parent
    banned = {"matplotlib", "tqdm", "yaml", "pyro", "experiments", "cli", "energies", "training", "report", "data"}
    for name in ("fitting.py", "psis.py"):
        tree = ast.parse((src / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, f"{name} imports {roots & banned}"
