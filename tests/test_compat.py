"""Compatibility with runs written before the redesign (issue 13).

The fixtures in ``tests/fixtures/compat`` were written by the code of commit eaddf46
(``make_fixtures.py`` there): the losses of the first 100 updates of fixed-seed amortized DLGM runs,
and run directories (``config.yaml``, ``checkpoint.pt``, ``best.pt``) with the free energies their
models give on fixed images. Every later version must reproduce the losses bit for bit, load those
run directories and give the same free energies, and resume them.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

import flowvi as fv
from flowvi_experiments.evaluation import load_run_model
from flowvi_experiments.training import TrainConfig, Trainer, load_config_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compat"
PINNED = json.loads((FIXTURES / "losses.json").read_text())
CASES = list(PINNED["cases"])


def data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=g) < 0.3).float()


def logged(run: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", CASES)
def test_first_100_losses_are_bit_identical(tmp_path, case):
    """A fixed-seed amortized DLGM run logs exactly the losses of the pre-redesign code."""
    cfg = TrainConfig(**PINNED["config"], **PINNED["cases"][case], updates=100, log_every=1, val_every=50,
                      ckpt_every=1000)
    Trainer(cfg, tmp_path / case, data(200, 0), data(20, 1)).run()
    assert logged(tmp_path / case) == PINNED["losses"][case]["loss"]
    assert logged(tmp_path / case, "train_bound") == PINNED["losses"][case]["train_bound"]


@pytest.mark.parametrize("case", CASES)
def test_old_run_directory_loads_and_gives_the_same_model(case):
    """``config.yaml`` and ``checkpoint.pt`` written by the old trainer load into the current model."""
    run = FIXTURES / "runs" / case
    expected = json.loads((run / "expected.json").read_text())
    TrainConfig.from_dict(load_config_file(run / "config.yaml"))  # the old keys still parse
    model, cfg, state = load_run_model(run, checkpoint="last")
    assert state["update"] == 3
    torch.manual_seed(11)
    with torch.no_grad() if cfg.family != "hvi" else torch.enable_grad():
        fe = model.free_energy(data(6, 2), n_samples=3)
    torch.testing.assert_close(fe.detach(), torch.tensor(expected["free_energy"]), rtol=1e-6, atol=1e-4)


def test_old_best_checkpoint_loads():
    model, _, state = load_run_model(FIXTURES / "runs" / "planar", checkpoint="best")
    assert state["kind"] == "best" and state["update"] == 3
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("case", ["planar", "nice-orth-global", "hvi"])
def test_old_checkpoint_resumes_exactly(tmp_path, case):
    """``--resume`` on an old run continues the old trajectory (optimizer state, data order, RNG)."""
    run = tmp_path / case
    shutil.copytree(FIXTURES / "runs" / case, run)
    cfg = TrainConfig.from_dict({**load_config_file(run / "config.yaml"), "updates": 6})
    Trainer(cfg, run, data(40, 0), data(10, 1), resume=True).run()
    expected = json.loads((FIXTURES / "runs" / case / "expected.json").read_text())
    assert logged(run)[-3:] == expected["resumed_loss"]


FLOWS = {  # the same structures as tests/fixtures/compat/make_flow_fixtures.py, in today's API
    "planar-global": lambda: fv.NormalizingFlow(2, fv.make_steps("planar", 2, 4), base=fv.StandardNormal(2)),
    "radial-global": lambda: fv.NormalizingFlow(2, fv.make_steps("radial", 2, 2), base=fv.StandardNormal(2)),
    "nice-perm-global": lambda: fv.NormalizingFlow(2, fv.make_steps("nice-perm", 2, 2, hidden=5, depth=1)),
    "mixed-amortized": lambda: fv.NormalizingFlow(
        3, fv.planar_steps(3, 2) + fv.radial_steps(3, 1)
        + fv.nice_steps(3, 1, hidden=4, depth=1, conditioning="global"), context_features=5),
}


@pytest.mark.parametrize("case", list(FLOWS))
def test_old_flow_state_dict_loads(case):
    """A flow's ``state_dict`` saved before the parameter sources (``flow.pt`` of the energy runs,
    the posterior inside DLGM checkpoints) loads and gives the same samples and densities."""
    expected = json.loads((FIXTURES / "flows" / "expected.json").read_text())[case]
    flow = FLOWS[case]()
    flow.load_state_dict(torch.load(FIXTURES / "flows" / f"{case}.pt"))
    ctx = None if expected["context"] is None else torch.tensor(expected["context"])
    torch.manual_seed(2)
    z, log_q = flow(ctx).rsample_and_log_prob((3,))
    torch.testing.assert_close(z, torch.tensor(expected["z"]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_q, torch.tensor(expected["log_q"]), rtol=1e-6, atol=1e-5)
