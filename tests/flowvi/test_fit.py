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


@pytest.mark.parametrize("scale", [0.003, 0.008])
def test_a_target_far_narrower_than_q_reads_not_usable(scale):
    """q = N(0, I) (no updates) against N(2, scale² I): a handful of draws carry all the weight, and the rest
    underflow. k̂ reads "not usable" (it was 0.03, "usable", with ln Z 270 nats off at 0.003, and a
    ZeroDivisionError traceback at 0.008)."""
    q, r = fv.fit(lambda z: -0.5 * (((z - 2) / scale) ** 2).sum(-1), 2, "planar", 2, updates=0, progress=False,
                  dtype=torch.float64)
    assert r.khat >= 1.0 and not r.usable and "not usable" in r.khat_reading


def test_q_equal_to_the_target_evaluates():
    """Radial steps start near the identity (β ≈ 0), so with no updates q is nearly the N(0, I) target: log-weights tie
    in float32 at the tail's cutoff, which the k̂ fit once refused with a ValueError after the whole fit."""
    q, r = fv.fit(lambda z: -0.5 * z.pow(2).sum(-1), 31, "radial", 8, updates=0, eval_samples=64, progress=False)
    assert math.isfinite(r.khat) and abs(r.elbo - r.log_z) < 1e-3


def test_evaluate_names_zero_density_and_too_few_samples():
    """A target that is −inf where q still puts mass (a constrained parameter in its raw coordinates) gives a
    named error after the fit, not Pareto k̂'s ValueError; so does an evaluation with too few samples for k̂."""
    q, _ = fv.fit(gaussian, 3, "diagonal", 0, updates=0, eval_samples=64, progress=False)

    def positive_first(z):  # −inf for z_0 < 0.5: about a third of q's samples
        out = gaussian(z)
        return torch.where(z[:, 0] < 0.5, torch.full_like(out, -math.inf), out)

    with pytest.raises(fv.FitError, match=r"log_density is -inf at \d+ of 500 samples of q, so the ELBO is -inf"):
        fv.fitting.evaluate(q, positive_first, n_samples=500)
    with pytest.raises(fv.FitError, match="evaluate needs n_samples >= 25"):
        fv.fitting.evaluate(q, gaussian, n_samples=10)
    assert math.isfinite(fv.fitting.evaluate(q, gaussian, n_samples=25)["khat"])


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
    with pytest.raises(fv.FitError, match="family_options of the planar family does not take 'hiden'"):
        fv.fit(gaussian, 3, "planar", 2, family_options={"hiden": 3}, progress=False)
    with pytest.raises(fv.FitError, match="dim"):
        fv.fit(gaussian, 0, progress=False)
    for dim in (2.5, "3", True):
        with pytest.raises(fv.FitError, match=rf"must be integers, got dim = {dim!r}$"):
            fv.fit(gaussian, dim, progress=False)
    with pytest.raises(fv.FitError, match=r"must be integers, got K = 2\.5, updates = 10\.0$"):
        fv.fit(gaussian, 3, "planar", 2.5, updates=10.0, progress=False)


def test_family_options_reach_the_steps_and_bad_ones_fail_before_any_work():
    calls = []

    def counted(z):
        calls.append(z.shape[0])
        return gaussian(z)

    _, r = fv.fit(counted, 3, "sylvester-orth", 2, family_options={"m": 2, "shared_q": True}, updates=2, samples=4,
                  eval_samples=50, progress=False)
    assert [s.m for s in r.flow.steps] == [2, 2] and all(s.shared_q for s in r.flow.steps)
    calls.clear()
    for options, message in [({"m": 4}, "family_options of the sylvester-orth family: m must be at most the latent "
                              "dimension 3, got 4"),
                             ({"m": 0, "shared_q": 1}, "m must be >= 1, got 0; shared_q must be true or false, got 1"),
                             ([("m", 2)], "family_options must be a mapping")]:
        with pytest.raises(fv.FitError, match=message) as info:
            fv.fit(counted, 3, "sylvester-orth", 2, family_options=options, progress=False)
        assert "\n" not in str(info.value)
    assert calls == []  # refused before the log-density was ever called
    with pytest.warns(DeprecationWarning, match="family_options"):  # the former name still works
        _, r = fv.fit(gaussian, 3, "iaf", 1, step_options={"hidden": 6}, updates=1, samples=4, eval_samples=50,
                      progress=False)
    assert r.flow.steps[0].hidden == 6
    with pytest.raises(fv.FitError, match="not both"):
        fv.fit(gaussian, 3, "iaf", 1, step_options={"hidden": 6}, family_options={"hidden": 6}, progress=False)


def test_full_rank_base_fits_a_correlated_gaussian_that_mean_field_cannot():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    precision = torch.linalg.inv(cov)
    log_z = math.log(2 * math.pi) + 0.5 * float(torch.logdet(cov))

    def correlated(z):
        return -0.5 * ((z @ precision) * z).sum(-1)

    settings = dict(updates=400, samples=32, lr=0.05, eval_samples=2000, progress=False)
    _, mf = fv.fit(correlated, 2, "diagonal", 0, **settings)
    q, fr = fv.fit(correlated, 2, "diagonal", 0, full_rank_base=True, **settings)
    assert isinstance(fr.flow.base, fv.StandardNormal) and isinstance(fr.flow.steps[0], fv.FullRank)
    assert fr.full_rank_base and not mf.full_rank_base
    assert log_z - fr.elbo < 0.05 < log_z - mf.elbo  # mean field misses KL = −½ ln(1 − ρ²) ≈ 0.83 nats
    torch.testing.assert_close(q.moments(50_000)[1], torch.ones(2), atol=0.1, rtol=0)
    _, both = fv.fit(correlated, 2, "full-rank", 0, **settings)  # the family alone: the same q_0
    assert isinstance(both.flow.base, fv.StandardNormal) and log_z - both.elbo < 0.05


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
