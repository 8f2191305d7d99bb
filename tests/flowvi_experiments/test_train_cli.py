"""End to end on small .amat files: flowvi train (with resume), flowvi evaluate, flowvi report."""

import json
from pathlib import Path

import pytest
import yaml

from flowvi_experiments.cli.main import main
from flowvi_experiments.evaluation import read_per_image


def common(data: Path) -> list[str]:
    return ["--data-dir", str(data), "--verify-data", "false", "--latent", "4", "--hidden", "8",
            "--batch-size", "10", "--val-every", "5", "--ckpt-every", "5", "--log-every", "5",
            "--progress", "false", "--tensorboard", "false"]


def test_train_evaluate_report(tmp_path, tiny_data, capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "mnist" / "fast-planar-k10.yaml"
    run = tmp_path / "runs" / "planar"
    rc = main(["train", "--config", str(config), "--out", str(run), "--updates", "8", "--K", "2",
               *common(tiny_data)])
    assert rc == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["updates"] == 8 and saved["K"] == 2 and saved["optimizer"] == "adam"  # CLI beats the file
    assert main(["train", "--out", str(run), "--config", str(config)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # extend the finished run by resuming with more updates
    assert main(["train", "--out", str(run), "--resume", "--updates", "12"]) == 0
    assert json.loads((run / "summary.json").read_text())["updates"] == 12
    assert main(["train", "--out", str(run), "--resume", "--K", "3"]) == 2
    assert "cannot change K" in capsys.readouterr().err

    diag, nice = tmp_path / "runs" / "diagonal", tmp_path / "runs" / "nice"
    assert main(["train", "--config", str(config), "--out", str(diag), "--updates", "12", "--family", "diagonal",
                 "--K", "0", *common(tiny_data)]) == 0
    assert main(["train", "--config", str(config), "--out", str(nice), "--updates", "12", "--family", "nice-perm",
                 "--K", "2", "--nice-conditioning", "global", *common(tiny_data)]) == 0
    assert main(["train", "--out", str(nice), "--resume", "--nice-conditioning", "amortized"]) == 2
    assert "cannot change nice_conditioning" in capsys.readouterr().err

    for r in (run, diag, nice):
        assert main(["evaluate", str(r), "--samples", "30", "--chunk-size", "7", "--data-dir", str(tiny_data),
                     "--checkpoint", "last"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["checkpoint"] == "last"
    for key in ("nll", "nll_se", "bound", "bound_se", "samples", "split", "binarization", "updates", "seed"):
        assert key in m
    assert m["nll"] > 0 and m["bound"] > 0 and m["nll_se"] > 0 and m["bound_se"] > 0
    assert (m["samples"], m["split"], m["binarization"], m["updates"], m["n_points"]) == (30, "test", "static", 12, 20)
    # the default evaluates best.pt, the model of the lowest validation bound, and records its update
    best_out = tmp_path / "best-metrics.json"
    assert main(["evaluate", str(run), "--samples", "30", "--data-dir", str(tiny_data), "--output", str(best_out)]) == 0
    mb = json.loads(best_out.read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert mb["checkpoint"] == "best" and mb["updates"] == summary["best_update"] in (5, 10, 12)
    assert mb["val_bound"] == pytest.approx(summary["best_val_bound"])
    (run / "best.pt").rename(run / "best.pt.away")
    assert main(["evaluate", str(run), "--samples", "3", "--data-dir", str(tiny_data), "--output", str(best_out)]) == 2
    assert "has no best.pt" in capsys.readouterr().err
    (run / "best.pt.away").rename(run / "best.pt")
    # refit on train + valid for the selected number of updates
    refit = tmp_path / "runs" / "planar-refit"
    assert main(["train", "--refit-from", str(run), "--out", str(refit), "--progress", "false"]) == 0
    rc = yaml.safe_load((refit / "config.yaml").read_text())
    rs = json.loads((refit / "summary.json").read_text())
    assert (rc["train_on"], rc["updates"], rc["K"], rc["name"]) == ("train+valid", summary["best_update"], 2,
                                                                    "fast-planar-k10-refit")
    assert rs["train_examples"] == 80 and rs["updates"] == summary["best_update"]  # 60 train + 20 valid images
    # a refit's validation images are training images: by default its end of training is evaluated, not best.pt
    assert main(["evaluate", str(refit), "--samples", "3", "--data-dir", str(tiny_data)]) == 0
    mr = json.loads((refit / "metrics.json").read_text())
    assert (mr["checkpoint"], mr["updates"]) == ("last", rs["updates"])
    assert main(["train", "--refit-from", str(refit), "--out", str(tmp_path / "again")]) == 2
    assert "already trained on train+valid" in capsys.readouterr().err
    assert main(["train", "--refit-from", str(tmp_path / "nope"), "--out", str(tmp_path / "again")]) == 2
    per_image = read_per_image(run / "metrics.per_image.csv")  # text: committed results open without unpickling
    assert per_image["log_marginal"].shape == (20,)
    assert -per_image["log_marginal"].mean().item() == pytest.approx(m["nll"], abs=1e-5)
    assert -per_image["elbo"].mean().item() == pytest.approx(m["bound"], abs=1e-5)

    out = tmp_path / "report"
    assert main(["report", str(run), str(diag), str(nice), str(tmp_path / "not-a-run"), "--out", str(out),
                 "--data-dir", str(tiny_data)]) == 0
    table = (out / "table2.md").read_text()
    assert "DLGM+NF (planar) K = 2" in table and "DLGM diagonal" in table and "≤ 89.9" in table
    assert "DLGM+NICE-perm (global couplings) K = 2" in table
    assert f"{m['nll']:.2f} ± {m['nll_se']:.2f}" in table
    report = (out / "report.md").read_text()
    same_budget = "| 12 updates, adam lr 0.001 cosine, anneal 3000 upd, static, seed 0 | 2 | nice-perm-global |"
    assert same_budget in report
    for name in ("figure4.png", "planar-samples.png", "planar-reconstructions.png", "report.md"):
        assert (out / name).stat().st_size > 0


def test_user_errors_are_one_line(tmp_path, tiny_data, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--optimizer", "sgd", *common(tiny_data)]) == 2
    assert "optimizer must be" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--updates", "2", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "binarized_mnist" in err and err.count("\n") == 1
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "none of the given paths is a run" in capsys.readouterr().err


def test_short_run_on_the_real_static_binarized_mnist(tmp_path, shared_data):
    run = tmp_path / "real"
    assert main(["train", "--out", str(run), "--data-dir", str(shared_data), "--updates", "20", "--train-limit",
                 "2000", "--val-size", "200", "--val-every", "20", "--optimizer", "adam", "--lr", "1e-3",
                 "--family", "nice-orth", "--K", "2", "--hidden", "50", "--progress", "false",
                 "--tensorboard", "false"]) == 0
    assert main(["evaluate", str(run), "--samples", "5", "--limit", "50"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_points"] == 50 and m["split"] == "test" and 50 < m["nll"] <= m["bound"] + 1e-6 < 800


def test_check_resolves_the_config_and_writes_nothing(tmp_path, capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "mnist" / "b100k" / "planar-k80.yaml"
    out = tmp_path / "r"
    assert main(["train", "--config", str(config), "--out", str(out), "--compile", "true", "--check"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["K"] == 80 and resolved["compile"] is True and resolved["name"] == "b100k-planar-k80"
    assert not out.exists()  # no data loaded, no directory made, no lock taken
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error
        main(["train", "--config", str(config), "--out", str(out), "--compile", "maybe", "--check"])
    assert exc.value.code == 2 and "--compile" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--out", str(out), "--family", "nosuch", "--check"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--check"]) == 2  # as the training would: no checkpoint
    assert "no checkpoint" in capsys.readouterr().err
