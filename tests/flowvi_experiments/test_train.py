"""Training (section 6.2): config, data order, atomic checkpoints, bit-identical resume, NaN stops."""

import argparse
import json
import os
import signal
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import flowvi_experiments.training.trainer as trainer_mod
from flowvi.loop import Hook
from flowvi_experiments.atomic import atomic_write
from flowvi_experiments.training import (
    EpochBatches,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    add_config_arguments,
    load_checkpoint,
    overrides_from_args,
    save_checkpoint,
)
from flowvi_experiments.training.trainer import learning_rate


def tiny_config(**kw) -> TrainConfig:
    base = dict(family="planar", K=2, latent=4, hidden=8, updates=24, batch_size=10, val_every=7, ckpt_every=5,
                log_every=4, optimizer="adam", lr=1e-3, lr_schedule="cosine", lr_final=1e-4, anneal_steps=10,
                progress=False, tensorboard=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def data(n: int, seed: int, grey: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    return x if grey else (x < 0.3).float()


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


class SignalAfter(Hook):
    """Sends ``signum`` to this process after update ``update`` (the trainer's real handler takes it)."""

    def __init__(self, update: int, signum: int = signal.SIGINT) -> None:
        self.update, self.signum = update, signum

    def after_update(self, loop, update: int) -> None:
        if update == self.update:
            os.kill(os.getpid(), self.signum)


def poisoned_at(call: int, poison):
    """:func:`loss_and_bound` with ``poison(loss, bound)`` applied at its ``call``-th call (call 1 is the
    checked pass before the first update, so call ``n + 1`` is update ``n``)."""
    calls = {"n": 0}

    def loss(model, x, beta):
        calls["n"] += 1
        out = trainer_mod.loss_and_bound(model, x, beta)
        return poison(*out) if calls["n"] == call else out

    return loss


@pytest.mark.parametrize("binarization", ["static", "dynamic"])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, binarization):
    """SIGINT mid-run saves a checkpoint; --resume then ends with exactly the uninterrupted parameters."""
    cfg = tiny_config(binarization=binarization)
    grey = binarization == "dynamic"
    train_x, valid_x = data(60, 0, grey), data(20, 1)
    a = Trainer(cfg, tmp_path / "a", train_x, valid_x)
    res_a = a.run()
    assert res_a.status == "completed" and res_a.updates == 24

    b = Trainer(cfg, tmp_path / "b", train_x, valid_x, hooks=[SignalAfter(14)])  # the real handler: stop, save
    handler_before = signal.getsignal(signal.SIGINT)
    res_b = b.run()
    assert res_b.status == "interrupted" and res_b.updates == 14
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["update"] == 14
    assert signal.getsignal(signal.SIGINT) is handler_before  # the previous handler is restored

    c = Trainer(cfg, tmp_path / "b", train_x, valid_x, resume=True)
    assert c.update == 14
    res_c = c.run()
    assert res_c.updates == 24 and res_c.status == "completed"
    pa, pc = params(a), params(c)
    assert pa.keys() == pc.keys()
    for k in pa:
        assert torch.equal(pa[k], pc[k]), k
    assert res_c.val_bound == res_a.val_bound
    # the resumed logs match the uninterrupted ones update for update
    rows_a = [json.loads(r) for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    rows_c = [json.loads(r) for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows_a] == [r["update"] for r in rows_c]
    assert [r["val_bound"] for r in rows_a] == [r["val_bound"] for r in rows_c]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["updates"] == 24 and summary["status"] == "completed" and summary["wall_s"] > 0


class HostReads(TorchFunctionMode):
    """Counts the calls that read a tensor's value on the host (a synchronisation on a GPU)."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.numpy, torch.Tensor.cpu}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))




@pytest.mark.parametrize("family", ["diagonal", "planar", "radial", "hvi", "sylvester-orth", "iaf",
                                    "nice-perm"])
def test_an_update_reads_nothing_from_the_device(family):
    """The training update (minibatch, loss, backward, clipping, optimizer step, the device-side sums and
    flags) never reads a value on the host: no synchronisation per update on a GPU. The value checks of
    the library ran once, in the checked pass before the first update (and do read)."""
    from flowvi.loop import TrainStep
    from flowvi_experiments.training.trainer import AnnealedObjective, build_model

    cfg = tiny_config(family=family, K=0 if family == "diagonal" else 2, nice_hidden=6, nice_depth=1)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)  # torch's Adam reads its CPU step count: not ours
    step = TrainStep(AnnealedObjective(model), list(model.parameters()), opt, aux_names=("bound",), grad_clip=5.0)
    x = data(10, 0)
    with HostReads() as first:
        step(x, 0.5)
    with HostReads() as later:
        for _ in range(2):
            step(x, 0.5)
    assert first.reads and not later.reads, later.reads


def test_training_lowers_the_validation_bound(tmp_path):
    cfg = tiny_config(updates=60, val_every=30, anneal_steps=0, lr=3e-3, lr_schedule="constant")
    t = Trainer(cfg, tmp_path, data(100, 0), data(30, 1))
    before = trainer_mod.validation_bound(t.model, t.valid_x, t.device, 0)
    res = t.run()
    assert res.val_bound < before - 10  # random 0.3-pixels: the best bound is about 479 nats
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert header.split(",")[:6] == ["update", "epoch", "beta", "lr", "loss", "train_bound"]


def test_non_finite_loss_stops_and_names_the_update(tmp_path):
    """The loss is checked on the device and read every log_every (4) updates, at validations (every 7)
    and before each checkpoint (every 5): a NaN at update 6 is found at the check after update 7, the
    error names update 6 and the checkpoint of update 5, and no checkpoint is written after it."""
    nan_loss = poisoned_at(7, lambda loss, bound: (loss * float("nan"), bound))  # update 6
    t = Trainer(tiny_config(), tmp_path, data(60, 0), data(20, 1), loss=nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at update 6 \(between the clean check after "
                       r"update 5 and the check after update 7\); last checkpoint is at update 5: .*checkpoint.pt"):
        t.run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["update"] == 5


def test_non_finite_gradient_is_named_and_no_checkpoint_follows_it(tmp_path):
    """A finite loss whose gradient is NaN (here at update 3) stops the run at the next check (the
    checkpoint due at update 5 is not written)."""

    def nan_gradient(loss, bound):  # the value is kept, the gradient is NaN
        loss = loss * 1.0
        loss.register_hook(lambda grad: grad * float("nan"))
        return loss, bound

    t = Trainer(tiny_config(log_every=10), tmp_path, data(60, 0), data(20, 1), loss=poisoned_at(4, nan_gradient))
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient norm at update 3 \(between the clean check "
                       r"after update 0 and the check after update 5\); no checkpoint has been written yet"):
        t.run()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_best_checkpoint_keeps_the_lowest_validation_bound(tmp_path):
    """Model selection: best.pt holds the model of the lowest validation bound and its update."""
    import csv
    import math

    cfg = tiny_config(updates=40, val_every=5, lr=3e-3)
    t = Trainer(cfg, tmp_path, data(60, 0), data(20, 1))
    t.run()
    rows = [r for r in csv.DictReader((tmp_path / "log.csv").open()) if r["val_bound"] not in ("", "nan")]
    vals = [(float(r["val_bound"]), int(r["update"])) for r in rows]
    assert len(vals) == 8 and all(math.isfinite(v) for v, _ in vals)
    best_val, best_update = min(vals)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["update"] == best_update and best["val_bound"] == pytest.approx(best_val)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_update"] == best_update and summary["best_val_bound"] == pytest.approx(best_val)
    # the stored model reproduces its validation bound
    t.model.load_state_dict(best["model"])
    again = trainer_mod.validation_bound(t.model, t.valid_x, t.device, cfg.seed + 7919)
    assert again == pytest.approx(best_val, abs=1e-4)


def test_early_stopping(tmp_path):
    cfg = tiny_config(updates=200, val_every=2, early_stopping=2, lr=1e-9, lr_schedule="constant")
    res = Trainer(cfg, tmp_path, data(60, 0), data(20, 1)).run()
    assert res.status == "early_stopped" and res.updates < 200


def test_checkpoint_write_is_atomic(tmp_path):
    """A write that fails part way (after some bytes), or a state that cannot be serialized, leaves the
    previous checkpoint and no temporary file."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"update": 1, "w": torch.ones(3)})

    def crash(fh):
        fh.write(b"partial bytes")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)  # the writer save_checkpoint uses
    assert load_checkpoint(path)["update"] == 1

    class Unserializable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"update": 2, "bad": Unserializable()})
    assert load_checkpoint(path)["update"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_epoch_batches_order_shards_and_state():
    b = EpochBatches(n=35, batch_size=10, seed=1)
    assert b.batches_per_epoch == 3
    seen = torch.cat([b.next()[1] for _ in range(3)])
    assert len(set(seen.tolist())) == 30  # one epoch: no repeats
    epoch, _ = b.next()
    assert epoch == 1
    state = b.state_dict()
    ahead = [b.next()[1] for _ in range(4)]
    c = EpochBatches(n=35, batch_size=10, seed=1)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next()[1]) for x in ahead)
    r0, r1 = EpochBatches(40, 5, 0, rank=0, world_size=2), EpochBatches(40, 5, 0, rank=1, world_size=2)
    i0 = torch.cat([r0.next()[1] for _ in range(4)])
    i1 = torch.cat([r1.next()[1] for _ in range(4)])
    assert set(i0.tolist()).isdisjoint(i1.tolist()) and len(set(i0.tolist()) | set(i1.tolist())) == 40
    with pytest.raises(ValueError, match="cannot fill a batch"):
        EpochBatches(n=5, batch_size=10, seed=0)
    with pytest.raises(ValueError, match="seed"):
        EpochBatches(n=35, batch_size=10, seed=2).load_state_dict(state)


def test_learning_rate_schedules():
    cos = tiny_config(updates=100, lr=1e-3, lr_final=1e-5, lr_schedule="cosine")
    assert learning_rate(cos, 0) == pytest.approx(1e-3)
    assert learning_rate(cos, 50) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(cos, 100) == pytest.approx(1e-5)
    exp = tiny_config(updates=100, lr=1e-3, lr_final=1e-5, lr_schedule="exponential")
    assert learning_rate(exp, 50) == pytest.approx(1e-4)
    warm = tiny_config(updates=100, lr=1e-3, lr_schedule="constant", warmup=10)
    assert learning_rate(warm, 0) == pytest.approx(1e-4) and learning_rate(warm, 10) == pytest.approx(1e-3)


def test_paper_recipe_is_the_default():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size, cfg.updates) == ("rmsprop", 1e-5, 0.9, 100, 500_000)
    assert (cfg.anneal_start, cfg.anneal_steps, cfg.latent, cfg.hidden, cfg.window) == (0.01, 10_000, 40, 400, 4)


def test_every_config_key_is_a_command_line_flag():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--updates", "7", "--data-dir", "/d", "--family", "nice-orth", "--K", "3",
                              "--lr", "0.01", "--progress", "false", "--train-limit", "5"])
    assert overrides_from_args(args) == {"updates": 7, "data_dir": "/d", "family": "nice-orth", "K": 3,
                                         "lr": 0.01, "progress": False, "train_limit": 5}
    flags = set(vars(parser.parse_args([])))  # every destination, given or not
    assert {f"cfg_{f.name}" for f in fields(TrainConfig)} <= flags
    # a boolean flag alone means true, and still takes a value
    args = parser.parse_args(["--compile", "--tensorboard", "no"])
    assert overrides_from_args(args) == {"compile": True, "tensorboard": False}


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown config key 'updatez' \\(did you mean 'updates'\\?\\); the keys are: "
                       "name, data, .*, family, K, .*, cuda_graph$") as info:
        TrainConfig.from_dict({"updatez": 3})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown config keys 'famly' \\(did you mean 'family'\\?\\), 'zzz';"):
        TrainConfig.from_dict({"famly": "planar", "zzz": 1})
    with pytest.raises(ValueError, match="cuda_graph needs device cuda, this run has device 'cpu'"):
        TrainConfig(cuda_graph=True)
    with pytest.raises(ValueError, match="optimizer must be"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="updates must be >= 1"):
        TrainConfig(updates=0)
    with pytest.raises(ValueError, match="optimizer_impl must be one of default, foreach, fused, got 'fast'"):
        TrainConfig(optimizer="adam", optimizer_impl="fast")
    with pytest.raises(ValueError, match="optimizer_impl fused needs optimizer adam .*use foreach for RMSprop$"):
        TrainConfig(optimizer="rmsprop", optimizer_impl="fused")


@pytest.mark.parametrize("optimizer, impl", [("adam", "fused"), ("adam", "foreach"), ("rmsprop", "foreach")])
def test_optimizer_impls_train_the_same_model_up_to_rounding(tmp_path, optimizer, impl):
    """optimizer_impl picks torch's kernel, not the update: the run follows the default one to rounding, and an
    interrupted run resumes bit for bit in its own implementation."""
    train_x, valid_x = data(60, 0), data(20, 1)
    kw = dict(optimizer=optimizer, lr=1e-2 if optimizer == "adam" else 1e-3, updates=16, val_every=8, ckpt_every=4)
    ref = Trainer(tiny_config(**kw), tmp_path / "ref", train_x, valid_x)
    ref.run()
    cfg = tiny_config(optimizer_impl=impl, **kw)
    alt = Trainer(cfg, tmp_path / "alt", train_x, valid_x)
    assert alt.optimizer.defaults[impl] is True and not ref.optimizer.defaults[impl]
    alt.run()
    p_ref, p_alt = params(ref), params(alt)
    p_init = params(Trainer(cfg, tmp_path / "init", train_x, valid_x))
    assert max((p_ref[k] - p_init[k]).abs().max().item() for k in p_ref) > 1e-2  # training moved them, far
    for k in p_ref:
        torch.testing.assert_close(p_alt[k], p_ref[k], rtol=1e-4, atol=1e-5, msg=k)
    cut = Trainer(cfg, tmp_path / "cut", train_x, valid_x, hooks=[SignalAfter(10)])
    assert cut.run().status == "interrupted"
    resumed = Trainer(cfg, tmp_path / "cut", train_x, valid_x, resume=True)
    assert resumed.optimizer.defaults[impl] is True
    resumed.run()
    for k, v in params(resumed).items():
        assert torch.equal(v, p_alt[k]), k


def test_shipped_configs_parse_and_cover_table2():
    root = Path(__file__).resolve().parents[2] / "configs" / "mnist"
    from flowvi_experiments.training import load_config_file

    names = {p.stem for p in root.glob("*.yaml")}
    rows = ["diagonal"] + [f"{f}-k{k}" for f in ("planar", "nice-perm", "nice-orth") for k in (10, 20, 40, 80)]
    assert set(rows) <= names and {f"fast-{r}" for r in rows} <= names
    for row in rows:
        paper = TrainConfig.from_dict(load_config_file(root / f"{row}.yaml"))
        assert (paper.optimizer, paper.lr, paper.momentum, paper.updates, paper.anneal_steps) == (
            "rmsprop", 1e-5, 0.9, 500_000, 10_000)
        fast = TrainConfig.from_dict(load_config_file(root / f"fast-{row}.yaml"))
        assert fast.optimizer == "adam" and (fast.family, fast.K) == (paper.family, paper.K)


def test_table2_budget_configs_are_one_recipe():
    """configs/mnist/b100k/: every Table 2 row at one budget; they differ only in family, K, conditioning, family
    options, seed."""
    from flowvi_experiments.training import load_config_file

    root = Path(__file__).resolve().parents[2] / "configs" / "mnist" / "b100k"
    # optimizer_impl picks torch's kernel (the same update up to rounding: test_optimizer_impls_...), not the recipe
    cfgs = {p.stem: TrainConfig.from_dict({**load_config_file(p), "optimizer_impl": "default"})
            for p in sorted(root.glob("*.yaml"))}
    ks = (10, 20, 40, 80)
    rows = {"diagonal", *(f"planar-k{k}" for k in ks), *(f"nice-perm-global-k{k}" for k in ks), "nice-perm-k10",
            "nice-perm-k80", *(f"{r}-s{s}" for r in ("diagonal", "planar-k10", "planar-k80") for s in (1, 2)),
            *(f"{f}-k{k}" for f in ("sylvester-orth", "sylvester-householder", "sylvester-triangular", "iaf")
              for k in (4, 8, 16))}
    assert rows <= set(cfgs)
    for k in (4, 8, 16):  # the later families' rows: their options, one recipe with planar's
        assert cfgs[f"sylvester-orth-k{k}"].family_options == {"m": 20, "shared_q": True}
        assert cfgs[f"sylvester-householder-k{k}"].family_options == {"reflections": 8}
        assert cfgs[f"sylvester-triangular-k{k}"].family_options == {}
        assert cfgs[f"iaf-k{k}"].family_options == {"hidden": 320, "depth": 2, "gate_bias": 1.0}
        for row in (f"sylvester-orth-k{k}", f"sylvester-householder-k{k}", f"sylvester-triangular-k{k}",
                    f"iaf-k{k}"):
            planar, new = cfgs["planar-k10"].to_dict(), cfgs[row].to_dict()
            assert {key for key in planar if planar[key] != new[key]} <= {"name", "family", "K", "family_options"}
            assert {"name", "family", "K"} <= {key for key in planar if planar[key] != new[key]}
    ablations = ("-anneal10k", "-2layers", "-refit")
    main = {k: c for k, c in cfgs.items() if not k.endswith(ablations) and "-2layers-" not in k}
    recipe = {(c.optimizer, c.lr, c.lr_schedule, c.lr_final, c.grad_clip, c.updates, c.anneal_steps, c.batch_size,
               c.binarization, c.val_every, c.hidden_layers) for c in main.values()}
    assert recipe == {("adam", 3e-4, "cosine", 1e-5, 10.0, 100_000, 3000, 100, "static", 5000, 1)}
    for k in (10, 80):  # the ablations change one thing each
        base, anneal, deep = (cfgs[f"planar-k{k}{s}"].to_dict() for s in ("", "-anneal10k", "-2layers"))
        assert {key for key in base if base[key] != anneal[key]} == {"name", "anneal_steps"}
        assert {key for key in base if base[key] != deep[key]} == {"name", "hidden_layers"}
    for seed in (1, 2):  # more seeds of the two-layer K = 80 ablation: only the seed changes
        base, other = cfgs["planar-k80-2layers"].to_dict(), cfgs[f"planar-k80-2layers-s{seed}"].to_dict()
        assert {key for key in base if base[key] != other[key]} == {"name", "seed"} and other["seed"] == seed
    # the refit on train + valid: the config `flowvi train --refit-from` makes of the committed planar-k10 result
    base, refit = cfgs["planar-k10"].to_dict(), cfgs["planar-k10-refit"].to_dict()
    assert {key for key in base if base[key] != refit[key]} == {"name", "train_on"}
    from flowvi_experiments.cli.train import _refit_values
    from flowvi_experiments.report.runs import EXECUTION_KEYS

    selected = _refit_values(root.parents[2] / "results" / "mnist" / "b100k-planar-k10")
    selected = TrainConfig.from_dict({**selected, "optimizer_impl": "default"}).to_dict()
    assert {k: v for k, v in selected.items() if k not in EXECUTION_KEYS} == {
        k: v for k, v in refit.items() if k not in EXECUTION_KEYS}
    base, deep = cfgs["diagonal"].to_dict(), cfgs["diagonal-2layers"].to_dict()  # the two-layer rows' reference
    assert {key for key in base if base[key] != deep[key]} == {"name", "hidden_layers"}
    assert all(c.ckpt_every <= 5000 for c in cfgs.values())
    assert cfgs["nice-perm-global-k80"].nice_conditioning == "global" and cfgs["planar-k80-s2"].seed == 2


def test_train_config_builds_the_model_config():
    """The model keys of TrainConfig are DLGMConfig's (same names and defaults): one source of truth,
    DLGMArchitecture, whose fields TrainConfig inherits; config.yaml keeps its flat keys and order."""
    from flowvi_experiments.models import DLGMConfig
    from flowvi_experiments.models.dlgm import DLGMArchitecture
    from flowvi_experiments.training.config import MODEL_KEYS

    assert issubclass(TrainConfig, DLGMArchitecture) and issubclass(DLGMConfig, DLGMArchitecture)
    keys = list(TrainConfig().to_dict())
    assert keys[:8] == ["name", "data", "data_dir", "binarization", "verify_data", "train_limit", "val_size",
                        "train_on"]
    assert keys[8:8 + len(MODEL_KEYS)] == list(MODEL_KEYS) and keys[8 + len(MODEL_KEYS)] == "optimizer"

    model_defaults = {f.name: f.default for f in fields(DLGMConfig)}
    train_defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert set(MODEL_KEYS) == set(model_defaults) - {"x_dim"}
    same = [k for k in MODEL_KEYS if k != "likelihood"]  # TrainConfig's "" means: the one its data calls for
    assert {k: train_defaults[k] for k in same} == {k: model_defaults[k] for k in same}
    assert TrainConfig(family="planar", K=3).model_config() == DLGMConfig(family="planar", K=3)
    with pytest.raises(ValueError, match="unknown model config key"):
        DLGMConfig.from_dict({"family": "planar", "updates": 3})
def test_every_shipped_mnist_config_parses():
    """Every recipe the README and docs quote is a file (configs/mnist/**): each one is a valid TrainConfig."""
    from flowvi_experiments.training import load_config_file

    root = Path(__file__).resolve().parents[2] / "configs" / "mnist"
    paths = sorted(root.rglob("*.yaml"))
    assert len(paths) > 60
    for p in paths:
        cfg = TrainConfig.from_dict(load_config_file(p))
        assert cfg.name == p.stem or cfg.name.endswith(p.stem), p
    b40 = {p.stem: TrainConfig.from_dict(load_config_file(p)) for p in (root / "b40k").glob("*.yaml")}
    assert {(c.updates, c.grad_clip, c.lr) for c in b40.values()} == {(40_000, 10.0, 1e-3)}
    assert b40["nice-perm-global-k10-s1"].seed == 1 and b40["nice-perm-global-k10"].nice_conditioning == "global"


@pytest.mark.slow
def test_a_compiled_run_follows_the_eager_run_and_resumes_eagerly(tmp_path):
    """``compile: true`` (minutes of compilation on a small CPU): the same random numbers as eager mode,
    so the logged losses and the parameters agree up to float rounding; its checkpoint (the optimizer state
    in torch's format) continues in eager mode."""
    cfg = tiny_config(updates=6, log_every=2, val_every=6, ckpt_every=3, lr_schedule="constant")
    runs = {}
    for compile in (False, True):
        out = tmp_path / str(compile)
        t = Trainer(TrainConfig(**{**cfg.to_dict(), "compile": compile}), out, data(60, 0), data(20, 1))
        assert t.run().status == "completed"
        runs[compile] = ([json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()], params(t))
    (eager_rows, eager_params), (rows, compiled_params) = runs[False], runs[True]
    assert [r["update"] for r in rows] == [r["update"] for r in eager_rows] == [2, 4, 6]
    for r, e in zip(rows, eager_rows, strict=True):
        assert r["loss"] == pytest.approx(e["loss"], rel=1e-5)
        assert (r["val_bound"] is None) == (e["val_bound"] is None)
        assert e["val_bound"] is None or r["val_bound"] == pytest.approx(e["val_bound"], rel=1e-5)
    for k in eager_params:
        torch.testing.assert_close(compiled_params[k], eager_params[k], rtol=1e-4, atol=1e-5)
    more = TrainConfig(**{**cfg.to_dict(), "updates": 8})
    resumed = Trainer(more, tmp_path / "True", data(60, 0), data(20, 1), resume=True)
    assert resumed.run().updates == 8
