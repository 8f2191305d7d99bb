"""``flowvi fit`` end to end on a tiny target file, and its one-line errors."""

import json
import textwrap

import numpy as np
import pytest

from flowvi_experiments.cli.main import main

TARGETS = textwrap.dedent(
    """
    import torch

    def gauss(z):
        return -0.5 * (z ** 2).sum(-1)

    def wrong_shape(z):
        return z

    def boom(z):
        raise RuntimeError("inside the user's function")

    not_callable = 3
    """
)


@pytest.fixture
def target_file(tmp_path):
    path = tmp_path / "targets.py"
    path.write_text(TARGETS)
    return path


def test_fit_writes_all_outputs(tmp_path, target_file, capsys):
    out = tmp_path / "run"
    rc = main(["fit", "--target", f"{target_file}:gauss", "--dim", "3", "-K", "2", "--updates", "30",
               "--samples", "8", "--eval-samples", "200", "--draws", "300", "--out", str(out), "--quiet"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("elbo", "elbo_se", "log_z", "log_z_se", "khat", "khat_reading", "wall_seconds", "family", "K"):
        assert key in m
    assert m["updates_done"] == 30 and m["dim"] == 3
    lines = (out / "elbo.csv").read_text().splitlines()
    assert lines[0] == "update,elbo" and len(lines) == 31
    assert np.load(out / "samples.npy").shape == (300, 3)
    for png in ("elbo.png", "pairs.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "ln Z" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.py:gauss", "does not exist"),
        ("{f}:nope", "has no function 'nope'"),
        ("{f}:not_callable", "is not callable"),
        ("{f}:boom", "raised RuntimeError on a (64, 2) batch of samples: inside the user's function"),
        ("{f}:wrong_shape", "returned shape (64, 2)"),
    ],
)
def test_fit_errors_are_one_line(tmp_path, target_file, capsys, spec, message):
    spec = spec.format(f=target_file)
    rc = main(["fit", "--target", spec, "--dim", "2", "--updates", "2", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and err.startswith("flowvi fit: error:")


def test_fit_rejects_bad_family(tmp_path, target_file, capsys):
    rc = main(["fit", "--target", f"{target_file}:gauss", "--dim", "2", "--family", "nope", "--out", str(tmp_path)])
    assert rc == 2 and "unknown flow family" in capsys.readouterr().err


def test_fit_family_options_reach_the_steps_and_the_metrics(tmp_path, target_file):
    out = tmp_path / "run"
    rc = main(["fit", "--target", f"{target_file}:gauss", "--dim", "3", "--family", "sylvester-orth", "-K", "2",
               "--family-options", "{m: 2, shared_q: true}", "--full-rank-base", "--updates", "5", "--samples", "8",
               "--eval-samples", "100", "--draws", "10", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["family_options"] == {"m": 2, "shared_q": True} and metrics["full_rank_base"] is True


@pytest.mark.parametrize(
    "family, options, message",
    [
        ("sylvester-orth", "{m: 4}", "--family-options of --family sylvester-orth: m must be at most the latent "
                                     "dimension 3, got 4"),
        ("planar", "{hiden: 3}", "--family-options of --family planar does not take 'hiden': it takes init_scale, "
                                 "fused"),
        ("nice-perm", "{hidden: 0}", "hidden must be >= 1, got 0"),
        ("planar", "3", "--family-options must be a YAML mapping"),
    ],
)
def test_fit_bad_family_options_fail_before_the_target_is_loaded(tmp_path, capsys, family, options, message):
    """The target file does not exist: the options are judged first, before any user code runs."""
    out = tmp_path / "o"
    rc = main(["fit", "--target", "missing.py:f", "--dim", "3", "--family", family, "--family-options", options,
               "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and not out.exists()
