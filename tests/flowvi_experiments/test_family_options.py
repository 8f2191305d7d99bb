"""Family options (Sylvester's m and shared_q, the IAF's MADE sizes) as configuration: read and validated
with the config, recorded in config.yaml, refused on --resume when changed, shown by the report; the
amortized Sylvester and IAF posteriors of the DLGM against autograd Jacobians; the Table 2 rows' configs."""

from pathlib import Path

import pytest
import torch
import yaml
from torch.autograd.functional import jacobian

from flowvi_experiments.cli.main import main
from flowvi_experiments.family_table import FAMILIES, series_color, series_order
from flowvi_experiments.models import DLGM, DLGMConfig
from flowvi_experiments.report.runs import RunRecord, load_runs
from flowvi_experiments.report.table import table2_markdown
from flowvi_experiments.training import TrainConfig, load_config_file

B100K = Path(__file__).resolve().parents[2] / "configs" / "mnist" / "b100k"
SYLVESTER_ROWS = ("sylvester-orth", "sylvester-householder", "sylvester-triangular")
NEW_ROWS = [f"{f}-k{k}" for f in (*SYLVESTER_ROWS, "iaf") for k in (4, 8, 16)]
#: the family options of each new row (van den Berg et al.'s code: 8 Householder reflections, Q per data point)
ROW_OPTIONS = {"sylvester-orth": {"m": 20, "shared_q": True}, "sylvester-householder": {"reflections": 8},
               "sylvester-triangular": {}, "iaf": {"hidden": 320, "depth": 2, "gate_bias": 1.0}}


def tiny(data: Path) -> list[str]:
    """Tiny sizes for a smoke run of a shipped config (the config's latent and family options kept)."""
    return ["--data-dir", str(data), "--verify-data", "false", "--hidden", "8", "--batch-size", "10",
            "--updates", "2", "--val-every", "2", "--ckpt-every", "2", "--log-every", "1", "--progress", "false",
            "--tensorboard", "false", "--threads", "1"]


# -- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", NEW_ROWS)
def test_new_rows_round_trip_through_config_yaml(row):
    cfg = TrainConfig.from_dict(load_config_file(B100K / f"{row}.yaml"))
    expected = ROW_OPTIONS[row.rsplit("-k", 1)[0]]
    assert cfg.family_options == expected and cfg.model_config().family_options == expected
    again = TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    assert again == cfg


def test_every_declared_option_is_a_make_steps_keyword_and_builds():
    """The family table's options are keywords the library takes (no drift), and every one builds a DLGM."""
    from flowvi.steps import STEP_OPTIONS

    values = {int: 2, float: 0.5, bool: True}
    declared = {f.name: f for f in FAMILIES.values() if f.options}
    assert set(declared) == {"sylvester-orth", "sylvester-householder", "iaf"}
    for name, family in declared.items():
        assert {o.name for o in family.options} <= set(STEP_OPTIONS[name])
        options = {o.name: values[STEP_OPTIONS[name][o.name].kind] for o in family.options}
        model = DLGM(DLGMConfig(family=name, K=2, latent=4, hidden=8, family_options=options))
        z, log_q = model.q((torch.rand(3, 784) < 0.3).float()).rsample_and_log_prob((2,))
        assert z.shape == (2, 3, 4) and torch.isfinite(log_q).all()


def test_a_family_cannot_declare_an_option_the_library_does_not_take():
    from flowvi_experiments.family_table import Family, FamilyOption

    with pytest.raises(ValueError, match=r"declares options M that make_steps\('sylvester-orth'\) does not take"):
        Family("sylvester-orth", "x", options=(FamilyOption("M", "rank"),))


def test_none_keeps_the_default_and_shows_nothing_in_the_label():
    cfg = TrainConfig(family="sylvester-orth", K=2, latent=4, family_options={"m": None, "shared_q": True})
    assert cfg.family_options == {"m": None, "shared_q": True}
    assert DLGM(cfg.model_config()).posterior.steps[0].m == 4
    assert FAMILIES["sylvester-orth"].describe_options(cfg.family_options) == "shared Q"


def test_option_kinds_are_normalised_and_absent_options_keep_the_library_defaults():
    cfg = TrainConfig(family="iaf", K=2, family_options={"gate_bias": 1})
    assert cfg.family_options == {"gate_bias": 1.0} and isinstance(cfg.family_options["gate_bias"], float)
    model = DLGM(DLGMConfig(family="iaf", K=2, latent=4, hidden=8, family_options={"hidden": 12, "depth": 1}))
    made = model.posterior.steps[0].made
    assert (made.hidden, len(made.hidden_layers)) == (12, 0)  # depth 1: no hidden-to-hidden layer
    assert model.posterior.head.slices[1].sizes == [12]  # the per-point context of the first MADE layer
    default = DLGM(DLGMConfig(family="iaf", K=2, latent=4, hidden=8))
    assert default.posterior.steps[0].made.hidden == 64  # make_steps's default, max(64, 2D)


@pytest.mark.parametrize(("family", "options", "message"), [
    ("sylvester-orth", {"M": 4}, "family_options: the sylvester-orth family has no option 'M': it takes m, shared_q"),
    ("sylvester-householder", {"m": 4}, "has no option 'm': it takes reflections, shared_q"),
    ("iaf", {"width": 4}, "has no option 'width': it takes hidden, depth, gate_bias"),
    ("planar", {"m": 2}, "the planar family takes no options, got 'm' (give family_options: {})"),
    ("nice-perm", {"hidden": 2}, "the nice-perm family takes no options, got 'hidden'"),
    ("sylvester-orth", {"m": 41}, "family_options: m must be at most the latent dimension 40, got 41"),
    ("sylvester-orth", {"m": 0}, "family_options: m must be >= 1, got 0"),
    ("sylvester-orth", {"m": 2.5}, "family_options: m must be an integer, got 2.5"),
    ("sylvester-orth", {"shared_q": "sometimes"}, "family_options: shared_q must be true or false, got 'sometimes'"),
    ("iaf", {"gate_bias": float("inf")}, "family_options: gate_bias must be finite"),
    ("iaf", {"depth": True}, "family_options: depth must be an integer, got True"),
    ("iaf", [1, 2], "family_options must be a mapping of option names to values (such as {m: 20, shared_q: true}), "
                    "got [1, 2]"),
])
def test_bad_options_are_named_when_the_config_is_read(family, options, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(family=family, K=2, family_options=options)
    assert message in str(err.value)
    with pytest.raises(ValueError) as err:
        DLGMConfig(family=family, K=2, family_options=options)
    assert message in str(err.value)


def test_an_empty_family_options_entry_means_none_and_a_bad_latent_is_named_once(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("family: sylvester-orth\nK: 2\nfamily_options:\n")
    assert TrainConfig.from_dict(load_config_file(cfg)).family_options == {}
    with pytest.raises(ValueError) as err:
        TrainConfig(family="sylvester-orth", K=2, latent=0, family_options={"m": 3})
    assert str(err.value) == "latent must be >= 1, got 0"


def test_an_unknown_family_is_named_by_the_config():
    with pytest.raises(ValueError, match="unknown posterior family 'sylvester': expected one of diagonal, planar"):
        TrainConfig(family="sylvester", K=2)


def test_bad_options_in_a_config_file_or_flag_are_one_sentence_before_any_work(tmp_path, tiny_data, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("family: sylvester-orth\nK: 2\nfamily_options:\n  m: 2\n  shared: true\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), *tiny(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert "the sylvester-orth family has no option 'shared': it takes m, shared_q" in err and err.count("\n") == 1
    assert main(["train", "--config", str(cfg), "--out", str(out), "--family-options", "[m, 2]",
                 *tiny(tiny_data)]) == 2
    err = capsys.readouterr().err
    assert "family_options must be a mapping of option names to values (such as {m: 20, shared_q: true}), got " \
           "['m', 2]" in err and err.count("\n") == 1
    assert not out.exists()


def test_the_flag_replaces_the_file_mapping_and_config_yaml_records_it(tmp_path, tiny_data):
    out = tmp_path / "run"
    assert main(["train", "--config", str(B100K / "sylvester-orth-k4.yaml"), "--out", str(out), "--latent", "6",
                 "--K", "2", "--family-options", "{m: 3}", *tiny(tiny_data)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["family_options"] == {"m": 3} and saved["latent"] == 6
    assert TrainConfig.from_dict(saved).family_options == {"m": 3}


# -- resume -------------------------------------------------------------------------------------------------
def test_resume_refuses_changed_options(tmp_path, tiny_data, capsys):
    run = tmp_path / "run"
    base = ["train", "--out", str(run), "--family", "sylvester-orth", "--K", "2", "--latent", "4",
            "--family-options", "{m: 2, shared_q: true}", *tiny(tiny_data)]
    assert main(base) == 0
    assert main(["train", "--out", str(run), "--resume", "--family-options", "{m: 3, shared_q: true}"]) == 2
    assert "cannot change family_options when resuming" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--family-options", "{m: 2, shared_q: true}",
                 "--updates", "3"]) == 0  # the same options are no change
    # an edited config.yaml is caught against the checkpoint's config before the weights are loaded
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["family_options"] = {"m": 2, "shared_q": False}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["train", "--out", str(run), "--resume", "--updates", "4"]) == 2
    err = capsys.readouterr().err
    assert "its checkpoint was trained with family_options {'m': 2, 'shared_q': True}" in err
    assert err.count("\n") == 1


def test_resuming_an_older_run_without_the_key_accepts_the_default(tmp_path, tiny_data, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--family", "planar", "--K", "2", "--latent", "4",
                 *tiny(tiny_data)]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["family_options"]  # as written before family options existed
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["train", "--out", str(run), "--resume", "--family-options", "{}", "--updates", "3"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--family-options", "{m: 1}"]) == 2
    assert "cannot change family_options" in capsys.readouterr().err


# -- the amortized posteriors in the DLGM ---------------------------------------------------------------------
POSTERIORS = [("sylvester-orth", {"m": 2, "shared_q": True}), ("sylvester-orth", {"m": 3}),
              ("sylvester-householder", {"reflections": 2, "shared_q": True}), ("sylvester-triangular", {}),
              ("iaf", {"hidden": 10, "depth": 1}), ("iaf", {"hidden": 9, "depth": 2, "gate_bias": 0.5})]


@pytest.mark.parametrize(("family", "options"), POSTERIORS)
def test_dlgm_posterior_log_density_against_autograd_jacobian(family, options):
    """ln q_K(z_K|x) of the amortized posterior, per-point parameters (B, ...) broadcast against (S, B, D)
    samples, equals ln q_0(z_0|x) − ln|det ∂z_K/∂z_0| with the Jacobian by autograd (float64); the
    Jacobian across data points is zero (each point has its own flow)."""
    torch.manual_seed(0)
    S, B, D = 2, 3, 4
    model = DLGM(DLGMConfig(family=family, K=3, latent=D, hidden=8, family_options=options)).double()
    with torch.no_grad():  # as after training: per-point parameters that differ, MADE outputs not zero
        torch.nn.init.normal_(model.posterior.head.linear.weight, 0.0, 0.3)
        for p in model.posterior.steps.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = (torch.rand(B, 784) < 0.3).double()
    q = model.q(x)
    if options.get("shared_q"):
        assert q.transforms[0].q.dim() == 2 and q.transforms[0].r.shape[0] == B  # one Q, R per point
    torch.manual_seed(1)
    z, log_q = q.rsample_and_log_prob((S,))
    torch.manual_seed(1)
    z0 = q.loc + q.scale * torch.randn(S, B, D, dtype=torch.float64)
    torch.testing.assert_close(q.flow(z0), z, rtol=1e-12, atol=1e-12)
    log_q0 = torch.distributions.Normal(q.loc, q.scale).log_prob(z0).sum(-1)
    for s in range(S):
        jac = jacobian(lambda v: q.flow(v), z0[s])  # (B, D, B, D)
        for b in range(B):
            others = [c for c in range(B) if c != b]
            assert jac[b][:, others].abs().max() == 0.0
            expected = log_q0[s, b] - torch.linalg.slogdet(jac[b, :, b])[1]
            torch.testing.assert_close(log_q[s, b], expected, rtol=1e-10, atol=1e-10)
    # each point's posterior is the same when its image is encoded alone
    torch.testing.assert_close(model.q(x[1:2]).flow(z0[:, 1:2]), z[:, 1:2], rtol=1e-12, atol=1e-12)
    if family == "iaf":  # an inverse exists: the density anywhere, through it
        torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-8, atol=1e-8)


def test_shared_q_makes_the_amortized_head_affordable():
    """At D = 40, M = D: a per-point Q is 2,460 head outputs per orthogonal Sylvester step, a shared Q
    1,680 (R, R̃, b only); the shipped rows (M = 20, shared Q) 440."""
    def per_step(options):
        flow = DLGM(DLGMConfig(family="sylvester-orth", K=2, hidden=8, family_options=options)).posterior
        return (flow.head.out_features - 80) // 2  # minus the base's μ and σ (2 × 40)

    assert per_step({}) == 2460 and per_step({"shared_q": True}) == 1680
    assert per_step({"m": 20, "shared_q": True}) == 440


# -- the Table 2 rows -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", NEW_ROWS)
def test_smoke_training_from_each_new_config(tmp_path, tiny_data, row):
    """Two updates of each shipped config at tiny width (its latent dimension and family options kept):
    config.yaml records the options, the summary is complete and the bound finite."""
    out = tmp_path / row
    assert main(["train", "--config", str(B100K / f"{row}.yaml"), "--out", str(out), *tiny(tiny_data)]) == 0
    saved = TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    shipped = TrainConfig.from_dict(load_config_file(B100K / f"{row}.yaml"))
    assert (saved.family, saved.K, saved.family_options, saved.latent) == (
        shipped.family, shipped.K, shipped.family_options, 40)
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["updates"] == 2 and summary["status"] == "completed"
    assert 0 < summary["best_val_bound"] < float("inf")


def _record(name, family, K, options=None, **config):
    return RunRecord(Path(name), name, {"family": family, "K": K, "family_options": options or {}, "updates": 100,
                                        "optimizer": "adam", "lr": 3e-4, **config}, None, None)


def test_report_labels_series_and_order_of_the_new_rows(tmp_path):
    sylv = _record("s8", "sylvester-orth", 8, {"m": 20, "shared_q": True})
    iaf = _record("i4", "iaf", 4, {"hidden": 320, "depth": 1})
    assert sylv.label == "DLGM+Sylvester (orthogonal) K = 8, M = 20, shared Q"
    assert iaf.label == "DLGM+IAF K = 4, MADE width 320, depth 1"
    assert _record("h", "sylvester-householder", 4, {"reflections": 8}).label == (
        "DLGM+Sylvester (Householder) K = 4, 8 reflections")
    assert _record("g", "iaf", 2, {"gate_bias": 1.5}).label == "DLGM+IAF K = 2, gate bias 1.5"
    assert _record("old", "planar", 10).label == "DLGM+NF (planar) K = 10"  # no options: as before
    old = RunRecord(Path("o"), "o", {"family": "sylvester-orth", "K": 4}, None, None)  # no family_options key
    assert old.label == "DLGM+Sylvester (orthogonal) K = 4" and old.series == "sylvester-orth"
    assert sylv.series == "sylvester-orth (M = 20, shared Q)" and series_color(sylv.series) == FAMILIES[
        "sylvester-orth"].color
    other_m = _record("s8b", "sylvester-orth", 8, {"m": 40, "shared_q": True})
    assert other_m.series != sylv.series  # other options: another line of Figure 4
    rows = [iaf, sylv, _record("n", "nice-perm", 10), _record("p", "planar", 10), _record("d", "diagonal", 0),
            _record("hvi", "hvi", 4), _record("ng", "nice-perm", 10, nice_conditioning="global")]
    ordered = sorted(rows, key=lambda r: (series_order(r.series), r.K, r.name))
    assert [r.name for r in ordered] == ["d", "p", "n", "s8", "i4", "ng", "hvi"]  # beside planar and NICE
    table = table2_markdown(ordered)
    assert "| DLGM+Sylvester (orthogonal) K = 8, M = 20, shared Q | – |" in table
    assert table.index("DLGM+NF (planar)") < table.index("DLGM+Sylvester") < table.index("DLGM+IAF")
    for r, stem in ((sylv, "s"), (iaf, "i")):  # load_runs reads them from run directories in the same order
        (tmp_path / stem).mkdir()
        (tmp_path / stem / "config.yaml").write_text(yaml.safe_dump(r.config))
    assert [r.label for r in load_runs([tmp_path / "i", tmp_path / "s"])] == [sylv.label, iaf.label]


def test_report_orders_and_labels_the_householder_and_triangular_rows(tmp_path):
    """The three Sylvester variants and IAF, each at K = 4, 8, 16, read from run directories in any order: the
    table order (orthogonal, Householder, triangular, IAF), K ascending within each, after planar."""
    rows = [_record(f"{f}-k{k}", f, k, ROW_OPTIONS[f]) for f in (*SYLVESTER_ROWS, "iaf") for k in (4, 8, 16)]
    rows.append(_record("planar-k10", "planar", 10))
    for r in reversed(rows):
        (tmp_path / r.name).mkdir()
        (tmp_path / r.name / "config.yaml").write_text(yaml.safe_dump(r.config))
    loaded = load_runs(sorted(tmp_path.iterdir(), reverse=True))
    assert [r.name for r in loaded] == ["planar-k10"] + [r.name for r in rows[:-1]]
    labels = [r.label for r in loaded]
    assert labels[4] == "DLGM+Sylvester (Householder) K = 4, 8 reflections"
    assert labels[7] == "DLGM+Sylvester (triangular) K = 4" and labels[9] == "DLGM+Sylvester (triangular) K = 16"
    assert [r.series for r in loaded[4:10]] == ["sylvester-householder (8 reflections)"] * 3 + [
        "sylvester-triangular"] * 3
    table = table2_markdown(loaded)
    assert table.index("(orthogonal) K = 16") < table.index("(Householder) K = 4") < table.index(
        "(triangular) K = 4") < table.index("DLGM+IAF K = 4")
