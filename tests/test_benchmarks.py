"""benchmarks/run.py at tiny sizes (a smoke test, not numbers): the floor rows, the 2-thread rows, the
``flowvi train`` rates (1 thread, 2 threads, torchrun) and the machine in the JSON; the floor's model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import cases  # noqa: E402
import train_rate  # noqa: E402


@pytest.fixture
def tiny_cases():
    cases.configure(tiny=True)
    yield
    cases.configure()


def test_tiny_run_has_floor_rows_two_thread_rows_training_rates_and_the_machine(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--tiny", "--repeats", "2", "--warmup", "1", "--no-memory",
         "--cases", "dlgm-train,train", "--train-updates", "6", "--json", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())
    machine = run["machine"]
    for key in ("cpu_model", "logical_cpus", "physical_cores", "torch", "threads", "load_average_start"):
        assert key in machine
    assert machine["torch"] == torch.__version__ and machine["threads"] == 1
    assert run["settings"]["tiny"] is True
    rows = {(r["case"], r["library"], r["K"], r["threads"]): r for r in run["records"] if r["case"] != "train"}
    for K in (0, 10, 80):
        floor, flowvi = rows[("dlgm-train", "floor", K, 1)], rows[("dlgm-train", "flowvi", K, 1)]
        assert floor["status"] == flowvi["status"] == "ok" and floor["ratio_to_floor"] == 1.0
        assert flowvi["ratio_to_floor"] == pytest.approx(flowvi["median_s"] / floor["median_s"])
        assert rows[("dlgm-train", "flowvi-reference", K, 1)]["ratio_to_floor"] > 0
    two = rows[("dlgm-train", "flowvi", 80, 2)]  # the K = 80 step again, on 2 threads
    assert two["ratio_to_floor"] == pytest.approx(two["median_s"] / rows[("dlgm-train", "floor", 80, 2)]["median_s"])
    train = {r["mode"]: r for r in run["records"] if r["case"] == "train"}
    assert list(train) == ["1-thread", "2-threads", "torchrun-2x1"]
    for r in train.values():
        assert r["status"] == "ok" and r["K"] == 80 and r["updates_per_s"] > 0, r
        assert r["rate_from"] == "log windows" and r["projected_500k_h"] > 0
        assert r["speedup_vs_1_thread"] == pytest.approx(r["updates_per_s"] / train["1-thread"]["updates_per_s"])
    assert (train["torchrun-2x1"]["processes"], train["2-threads"]["threads"]) == (2, 2)
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m flowvi_experiments.cli.main train" \
        in train["torchrun-2x1"]["command"]
    assert "target flowvi DLGM step K=80 / floor (1 thread(s)):" in proc.stdout
    assert "target K=80 training on both cores / 1 thread:" in proc.stdout


def test_floor_is_the_step_without_the_flow(tiny_cases):
    """At K = 0 the floor is flowvi's diagonal step exactly; at K = 80 it computes every head output and
    gives every parameter a gradient (no GEMM skipped), the flow columns' gradients small but nowhere zero
    (a zero gradient keeps the optimizer's state at 0, where this CPU's sqrt is several times slower)."""
    x = (torch.rand(cases.SIZES.batch, 784, generator=torch.Generator().manual_seed(3)) < 0.2).float()
    floor, flowvi = cases.FloorDLGM(0), cases.flowvi_dlgm(0, fast=True)
    torch.manual_seed(5)
    a = floor.loss(x, 0.5)
    torch.manual_seed(5)
    b = flowvi.loss(x, 0.5)
    torch.testing.assert_close(a, b)
    floor = cases.FloorDLGM(80)
    floor.loss(x, 0.5).backward()
    head = floor.net.posterior.head.linear
    assert head.out_features == 2 * cases.SIZES.latent + 80 * (2 * cases.SIZES.latent + 1)
    assert all(p.grad is not None for p in floor.parameters())
    assert head.weight.grad[: 2 * cases.SIZES.latent].abs().sum() > 0
    flow_grad = head.weight.grad[2 * cases.SIZES.latent :]
    assert (flow_grad != 0).all() and flow_grad.abs().max() < 1.0
    torch.testing.assert_close(head.bias.grad[2 * cases.SIZES.latent :],
                               torch.full((head.out_features - 2 * cases.SIZES.latent,),
                                          cases.FLOOR_WEIGHT * cases.SIZES.batch))


def test_training_modes_and_rates():
    assert train_rate.parse_modes("1-thread, torchrun-2x1,cuda-compiled") == ["1-thread", "torchrun-2x1",
                                                                               "cuda-compiled"]
    with pytest.raises(ValueError, match="unknown training mode '3-threads'"):
        train_rate.parse_modes("1-thread,3-threads")
    assert train_rate.parse_modes("1-thread-fused,2-threads-foreach") == ["1-thread-fused", "2-threads-foreach"]
    with pytest.raises(ValueError, match="unknown training mode '1-thread-fused-compiled'"):
        train_rate.parse_modes("1-thread-fused-compiled")  # one variant at a time
    with pytest.raises(ValueError, match="single process"):
        train_rate.parse_modes("1-thread,torchrun-2x1-compiled")  # flowvi train refuses it: say so before any run
    report = "flowvi train: error: compile and cuda_graph run in a single process\n===\nRoot Cause\n  exitcode: 2\n"
    assert train_rate.failure_line(report) == "flowvi train: error: compile and cuda_graph run in a single process"
    assert train_rate.failure_line("Traceback\n  boom\n") == "boom" and train_rate.failure_line("") == "no output"
    cmd, _ = train_rate.train_command("1-thread-fused", Path("out"), Path("data"), 60, 80, False, False,
                                      "--compile true", BENCH.parent / "configs/mnist/b100k/planar-k80.yaml")
    assert cmd[cmd.index("--config") + 1].endswith("b100k/planar-k80.yaml")
    assert cmd[-2:] == ["--optimizer-impl", "fused"]
    assert "--compile" not in cmd
    recs = [{"mode": m, "status": "ok", "updates_per_s": u} for m, u in (("1-thread", 10.0), ("1-thread-fused", 12.5),
                                                                           ("1-thread-compiled", 5.0))]
    train_rate.add_speedups(recs)
    assert [r.get("speedup_vs_base") for r in recs] == [None, 1.25, 0.5] and recs[2]["speedup_vs_eager"] == 0.5
    rows = [{"update": 10, "wall_s": 2.0}, {"update": 20, "wall_s": 3.0}, {"update": 30, "wall_s": 3.5},
            {"update": 40, "wall_s": 9.0}]  # the last window holds the final validation: left out
    assert train_rate.steady_rate(rows) == (20 / 1.5, 20)
    assert train_rate.steady_rate(rows[:2]) == (None, 0)


def test_compiled_rows_are_measured_against_the_compiled_floor():
    sys.path.insert(0, str(BENCH))
    import run

    recs = [{"case": "dlgm-train", "K": 80, "threads": 1, "status": "ok", "library": lib, "median_s": m}
            for lib, m in (("flowvi", 0.050), ("floor", 0.040), ("flowvi-compiled", 0.055), ("floor-compiled", 0.050))]
    run.add_ratios(recs)
    by = {r["library"]: r for r in recs}
    assert by["flowvi"]["ratio_to_floor"] == pytest.approx(1.25)
    assert by["flowvi-compiled"]["ratio_to_floor"] == pytest.approx(1.10)  # not 0.055 / 0.040
    assert by["floor-compiled"]["ratio_to_floor"] == pytest.approx(1.0)
    assert by["flowvi-compiled"]["ratio"] == pytest.approx(1.10)
