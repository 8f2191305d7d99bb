"""Data-parallel training (torchrun + DistributedDataParallel, gloo on CPU) with 2 processes.

The multi-process tests start 2 workers with ``torch.multiprocessing`` (the same environment
variables torchrun sets, then :func:`flowvi_experiments.training.distributed.process_group`), and one test runs
the documented ``torchrun ... -m flowvi_experiments.cli.main train`` command line.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from flowvi.loop import Hook
from flowvi_experiments.cli.main import main
from flowvi_experiments.training import EpochBatches, NonFiniteLossError, TrainConfig, Trainer, load_checkpoint
from flowvi_experiments.training.distributed import DistContext, env_context, process_group, rank_seed
from flowvi_experiments.training.trainer import AnnealedObjective, build_model, loss_and_bound

WORLD = 2


def tiny_config(**kw) -> dict:
    base = dict(family="planar", K=2, latent=4, hidden=8, updates=16, batch_size=10, val_every=6, ckpt_every=5,
                log_every=4, optimizer="adam", lr=1e-3, lr_schedule="cosine", lr_final=1e-4, anneal_steps=10,
                progress=False, tensorboard=False, seed=3)
    base.update(kw)
    return base


def data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=g) < 0.3).float()


def state_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_job(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), FLOWVI_DIST_TIMEOUT="60")
    torch.set_num_threads(1)


def _train_worker(rank: int, port: int, job: dict) -> None:
    """One rank of a 2-process training run; writes its outcome to ``job['results']/rank{rank}.pt``."""
    _join_job(rank, port)
    loss, hooks = loss_and_bound, []
    if job.get("nan_at") and rank == job["nan_at"][0]:
        calls = {"n": 0}

        def loss(model, x, beta):  # NaN at the given call on this rank only (call 1: the checked pass)
            calls["n"] += 1
            value, bound = loss_and_bound(model, x, beta)
            return (value * float("nan"), bound) if calls["n"] == job["nan_at"][1] else (value, bound)

    if job.get("signal_at") and rank == job["signal_at"][0]:
        class SignalAfter(Hook):
            def after_update(self, loop, update):
                if update == job["signal_at"][1]:
                    os.kill(os.getpid(), signal.SIGINT)  # this rank only; the other must stop with it

        hooks.append(SignalAfter())
    outcome: dict = {}
    with process_group("cpu") as ctx:
        if job.get("grad_check"):  # shares this job's process group (saves starting 2 more processes)
            _grad_check(ctx, job["results"])
        t = Trainer(TrainConfig(**job["cfg"]), job["out"], data(60, 0), data(20, 1), resume=job.get("resume", False),
                    rank=ctx.rank, world_size=ctx.world_size, local_rank=ctx.local_rank, loss=loss, hooks=hooks)
        try:
            res = t.run()
            outcome.update(status=res.status, updates=res.updates, val=res.val_bound)
        except NonFiniteLossError as exc:
            outcome.update(error=str(exc), updates=t.update)
        outcome["params"] = {k: v.clone() for k, v in t.model.state_dict().items()}
        outcome["hash"] = state_hash(outcome["params"])
    torch.save(outcome, Path(job["results"]) / f"rank{rank}.pt")


def run_job(tmp_path: Path, name: str, **job) -> list[dict]:
    results = tmp_path / f"results-{name}"
    results.mkdir()
    job.setdefault("out", str(tmp_path / name))
    job["results"] = str(results)
    mp.start_processes(_train_worker, args=(free_port(), job), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """An uninterrupted 2-process planar run (16 updates, global batch 10 = 2 × 5)."""
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, run_job(tmp, "a", cfg=tiny_config(), grad_check=True)


# -- sharding and helpers (no processes) ---------------------------------------------------------
def test_global_batch_is_split_disjointly_and_an_epoch_covers_the_data_once():
    n, batch = 47, 10
    ranks = [EpochBatches.for_global_batch(n, batch, seed=5, rank=r, world_size=WORLD) for r in range(WORLD)]
    single = EpochBatches(n, batch, seed=5)
    assert ranks[0].batches_per_epoch == single.batches_per_epoch == 4
    seen: list[int] = []
    for _ in range(single.batches_per_epoch):
        parts = [b.next()[1] for b in ranks]
        assert all(len(p) == batch // WORLD for p in parts)
        assert set(parts[0].tolist()).isdisjoint(parts[1].tolist())
        union = torch.cat(parts)
        # the union is the single-process batch of the same update: the data order does not depend on the world size
        assert sorted(union.tolist()) == sorted(single.next()[1].tolist())
        seen += union.tolist()
    assert len(seen) == len(set(seen)) == 40  # one epoch, no repeats (the last 7 examples are dropped)
    assert {b.next()[0] for b in ranks} == {1}
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        EpochBatches.for_global_batch(n, 9, seed=5, rank=0, world_size=WORLD)
    assert EpochBatches.for_global_batch(n, 9, seed=5).batch_size == 9


def test_single_process_environment_is_not_distributed(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert env_context() == DistContext()
    with process_group("cpu") as ctx:
        assert ctx == DistContext() and ctx.is_main and not ctx.distributed
        assert not torch.distributed.is_initialized()
    assert len({rank_seed(3, r) for r in range(8)}) == 8
    with pytest.raises(ValueError, match="needs an initialized process group"):
        Trainer(TrainConfig(**tiny_config()), "unused", data(60, 0), data(20, 1), rank=1, world_size=2)


# -- 2 processes ---------------------------------------------------------------------------------
def test_two_process_run_completes_in_sync_and_rank0_writes_the_run(reference_run):
    tmp, (r0, r1) = reference_run
    assert r0["status"] == r1["status"] == "completed" and r0["updates"] == r1["updates"] == 16
    assert r0["hash"] == r1["hash"]  # DDP kept the replicas identical
    assert r0["val"] == r1["val"]  # the validation bound is broadcast from rank 0
    run = tmp / "a"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "checkpoint.prev.pt", "checkpoint.pt", "config.yaml",
                                                     "log.csv", "log.jsonl", "summary.json"]  # no lock left
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["world_size"], summary["backend"], summary["updates"]) == (2, "gloo", 16)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["rng_cpu"], ckpt["rng_ranks"][1]["rng_cpu"])  # own noise per rank
    assert state_hash(ckpt["model"]) == r0["hash"]
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [4, 6, 8, 12, 16]  # one writer: no duplicated rows


def test_signal_on_one_rank_stops_both_and_resume_is_bit_identical(tmp_path, reference_run):
    ref_tmp, ref = reference_run
    cfg = tiny_config()
    stopped = run_job(tmp_path, "b", cfg=cfg, signal_at=(1, 9))  # SIGINT to rank 1 only, after update 9
    assert [r["status"] for r in stopped] == ["interrupted"] * 2
    # the ranks agree at their next check (the checkpoint due after update 10), then stop together
    assert [r["updates"] for r in stopped] == [10, 10]
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["update"] == 10
    resumed = run_job(tmp_path, "b2", out=str(tmp_path / "b"), cfg=cfg, resume=True)
    for r in resumed:
        assert r["status"] == "completed" and r["updates"] == 16
        assert r["params"].keys() == ref[0]["params"].keys()
        for k in r["params"]:
            assert torch.equal(r["params"][k], ref[0]["params"][k]), k
    assert resumed[0]["val"] == ref[0]["val"]
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    log_a = [json.loads(line) for line in (ref_tmp / "a" / "log.jsonl").read_text().splitlines()]
    assert [(r["update"], r["val_bound"]) for r in log] == [(r["update"], r["val_bound"]) for r in log_a]


def test_hvi_trains_under_ddp_in_sync(tmp_path):
    """HVI differentiates ln p(x, z) w.r.t. z inside the forward (create_graph=True); DDP is fine with it."""
    r0, r1 = run_job(tmp_path, "hvi", cfg=tiny_config(family="hvi", K=2, updates=4, val_every=4, ckpt_every=4))
    assert r0["status"] == r1["status"] == "completed" and r0["updates"] == 4
    assert r0["hash"] == r1["hash"]
    start = build_model(TrainConfig(**tiny_config(family="hvi", K=2)))
    start.init_output_bias(data(60, 0).mean(0))
    assert any(not torch.equal(v, r0["params"][k]) for k, v in start.state_dict().items())  # it did train


def test_non_finite_loss_on_one_rank_stops_all_at_the_next_check(tmp_path):
    """A NaN on rank 1 at update 7 (its 8th call: the first is the checked pass before update 1) is found
    by the check after update 8 on both ranks, which stop there together, naming update 7."""
    r0, r1 = run_job(tmp_path, "nan", cfg=tiny_config(), nan_at=(1, 8))
    for r in (r0, r1):
        assert ("non-finite loss on 1 of 2 processes at update 7 (between the clean check after update 6 and the "
                "check after update 8); last checkpoint is at update 5") in r["error"]
        assert r["updates"] == 8
    assert r0["hash"] == r1["hash"]
    assert load_checkpoint(tmp_path / "nan" / "checkpoint.pt")["update"] == 5


def test_early_stopping_is_decided_together(tmp_path):
    cfg = tiny_config(updates=40, val_every=2, early_stopping=2, lr=1e-9, lr_schedule="constant")
    r0, r1 = run_job(tmp_path, "early", cfg=cfg)
    assert r0["status"] == r1["status"] == "early_stopped" and r0["updates"] == r1["updates"] < 40
    assert json.loads((tmp_path / "early" / "summary.json").read_text())["status"] == "early_stopped"


def _grad_check(ctx: DistContext, out: str) -> None:
    """One update's gradient: DDP-synchronised vs this rank's own (same noise, via a forked RNG)."""
    cfg = TrainConfig(**tiny_config(family="diagonal", K=0, batch_size=8))
    x_all = data(40, 0)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(AnnealedObjective(model))
    idx = EpochBatches.for_global_batch(40, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size).next()[1]
    torch.manual_seed(rank_seed(cfg.seed, ctx.rank))
    with torch.random.fork_rng():
        local = AnnealedObjective(model)(x_all[idx], 0.3)[0]
        own = torch.autograd.grad(local, list(model.parameters()))
    ddp(x_all[idx], 0.3)[0].backward()
    synced = [p.grad.clone() for p in model.parameters()]
    torch.save({"idx": idx, "own": own, "synced": synced, "loss": float(local.detach())},
               Path(out) / f"grad{ctx.rank}.pt")


def test_ddp_gradient_is_the_single_process_gradient_of_the_global_batch(reference_run):
    """With the same noise per example, the DDP gradient of one update equals the single-process
    gradient of the mean loss over the union batch (the global batch of 8, split 4 + 4)."""
    results = reference_run[0] / "results-a"
    g = [torch.load(results / f"grad{r}.pt", weights_only=False) for r in range(WORLD)]
    cfg = TrainConfig(**tiny_config(family="diagonal", K=0, batch_size=8))
    single = EpochBatches(40, 8, cfg.seed).next()[1]
    assert sorted(torch.cat([g[0]["idx"], g[1]["idx"]]).tolist()) == sorted(single.tolist())
    for a, b in zip(g[0]["synced"], g[1]["synced"], strict=True):
        assert torch.equal(a, b)
    # single process, union batch, each example with the noise its rank drew: mean over 8 = mean of the two means
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    x_all = data(40, 0)
    losses = []
    for r in range(WORLD):
        torch.manual_seed(rank_seed(cfg.seed, r))
        losses.append(AnnealedObjective(model)(x_all[g[r]["idx"]], 0.3)[0])
        assert float(losses[-1].detach()) == pytest.approx(g[r]["loss"], rel=1e-6)
    union_loss = torch.stack(losses).mean()
    union_grad = torch.autograd.grad(union_loss, list(model.parameters()))
    for synced, ref, own0, own1 in zip(g[0]["synced"], union_grad, g[0]["own"], g[1]["own"], strict=True):
        torch.testing.assert_close(synced, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(synced, (own0 + own1) / 2, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(o0, o1) for o0, o1 in zip(g[0]["own"], g[1]["own"], strict=True))


def test_resume_with_another_world_size_continues_the_data_and_reseeds_the_noise(tmp_path, reference_run):
    ref_tmp, _ = reference_run
    run = tmp_path / "one"
    run.mkdir()
    for name in ("checkpoint.pt", "config.yaml"):
        (run / name).write_bytes((ref_tmp / "a" / name).read_bytes())
    cfg = TrainConfig(**tiny_config(updates=20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Trainer(cfg, run, data(60, 0), data(20, 1), resume=True)
    assert any("trained by 2 process(es) with 1" in str(w.message) for w in caught)
    assert t.update == 16 and t.batches.state_dict()["offset"] == 4  # 16 updates of 10 = 2 epochs of 6, + 4
    assert t.run().updates == 20


# -- the documented command line -----------------------------------------------------------------
def test_torchrun_command_line(tmp_path, tiny_data, monkeypatch, capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "mnist" / "fast-planar-k10.yaml"
    run = tmp_path / "run"

    def torchrun(out: Path, batch_size: int) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "flowvi_experiments.cli.main", "train", "--config", str(config), "--out", str(out),
               "--updates", "6",
               "--K", "2", "--latent", "4", "--hidden", "8", "--batch-size", str(batch_size), "--val-every", "3",
               "--ckpt-every", "3", "--data-dir", str(tiny_data), "--verify-data", "false",
               "--progress", "false", "--tensorboard", "false"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWVI_DIST_TIMEOUT": "60"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)

    proc = torchrun(run, 10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("completed: 6 updates on 2 processes") == 1  # rank 0 alone reports
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["world_size"], summary["backend"], summary["status"]) == (2, "gloo", "completed")
    # an odd global batch cannot be split over 2 processes: a one-line error before joining the job
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--out", str(tmp_path / "bad"), "--batch-size", "9", "--data-dir", str(tmp_path)]) == 2
    assert "batch_size 9 (the global minibatch) is not divisible by the world size 2" in capsys.readouterr().err
    assert not torch.distributed.is_initialized()


def test_module_entry_point_reports_user_errors_in_one_line(tmp_path):
    """``python -m flowvi_experiments.cli.main`` (torchrun's form) catches CLIError like the ``flowvi`` command."""
    proc = subprocess.run([sys.executable, "-m", "flowvi_experiments.cli.main", "train", "--out", str(tmp_path / "r"),
                           "--resume"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("flowvi train: error: --resume: no checkpoint")
    assert proc.stderr.count("\n") == 1
