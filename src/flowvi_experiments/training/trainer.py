"""The training of the DLGM (Algorithm 1, section 6.2): minibatch, one posterior sample per data
point, the annealed free energy (eq. 20), a preconditioned SGD step.

The loop is the library's (:class:`flowvi.loop.FitLoop`: schedule, clipping, non-finite checks, history,
interrupts); this module supplies the DLGM's objective and data, and the hooks of a run directory:
validation with model selection (``best.pt``) and early stopping, the logs, and the checkpoints.

No host synchronisation per update: the training set lives on the device as one tensor, minibatches
are indexed there, and the loss, the bound and the non-finite flags accumulate on the device and are
read every ``log_every`` updates, at validations and before each checkpoint (a NaN then stops the run,
naming the update where it appeared and the last good checkpoint, which is never written after a NaN).
``compile: true`` runs the whole update as one ``torch.compile(fullgraph=True)`` graph, ``cuda_graph:
true`` replays it as a CUDA graph (CUDA only).

Run state (model, optimizer, update count, data position, RNG states) lives in one checkpoint,
written atomically on a schedule, at the end, and on SIGINT/SIGTERM; ``resume=True`` continues from
it and ends with the same parameters as an uninterrupted run (same seed, CPU).

Under ``torchrun`` (world size > 1, see :mod:`flowvi_experiments.training.distributed` and docs/distributed.md)
the processes are a :class:`~flowvi_experiments.training.distributed.DataParallel` strategy: the objective
is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, ``batch_size`` stays the global
minibatch, each process draws its share with its own posterior-noise stream, DDP averages the gradients,
and the ranks agree on every stop (end, signal, NaN, early stopping) at the same update (a signal stops
all of them at the next check). Rank 0 alone writes the run directory. With world size 1 the strategy
is :class:`flowvi.loop.Local` and the trajectory is the single-process one.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from flowvi.loop import Diverged, FitLoop, Hook, TrainStep, learning_rate_schedule
from flowvi.objectives import LinearAnnealing

from ..allocator import retain_freed_memory
from ..models import DLGM
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint, write_json, write_text
from .config import TrainConfig
from .data_source import binarize_epoch
from .device import rank_device, set_threads
from .logs import MetricsLogger, NullLogger
from .resume import check_same_model, warn_if_threads_changed
from .selection import record_validation
from .sharding import EpochBatches

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  #: the model at its best validation bound (model selection), beside the last checkpoint
CONFIG = "config.yaml"
SUMMARY = "summary.json"


class NonFiniteLossError(FloatingPointError):
    """The loss or its gradient became NaN/inf: the run stops, naming the update and the last checkpoint."""


@dataclass
class TrainResult:
    status: str  #: completed, interrupted or early_stopped
    updates: int
    wall_s: float
    val_bound: float | None


def build_model(cfg: TrainConfig) -> DLGM:
    """The DLGM of ``cfg``, its data dimension that of ``cfg.data`` (784 for MNIST, 3072 for CIFAR-10)."""
    return DLGM(cfg.model_config())


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` (RMSprop or Adam) in the implementation ``cfg.optimizer_impl`` names."""
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[cfg.optimizer_impl]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, momentum=cfg.momentum, **impl)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), **impl)


def schedule(cfg: TrainConfig) -> Any:
    """The learning rate of update ``t`` (0-based) as a function: linear warm-up, then the schedule to ``lr_final``."""
    return learning_rate_schedule(cfg.lr_schedule, cfg.lr, cfg.lr_final, cfg.updates, cfg.warmup)


def learning_rate(cfg: TrainConfig, t: int) -> float:
    """Learning rate of update ``t`` (0-based): linear warm-up, then the schedule to ``lr_final``."""
    return schedule(cfg)(t)


#: ``loss(model, x, β) -> (F^β, F)``: the minibatch objective and, from the same sample, the free energy
Loss = Callable[[DLGM, Tensor, float], tuple[Tensor, Tensor]]


def loss_and_bound(model: DLGM, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """``(mean F^β(x), mean F(x))``: the annealed objective (eq. 20) and, from the same sample,
    the un-annealed free energy (eq. 15), one posterior sample per data point."""
    z, log_q = model.q(x).rsample_and_log_prob((1,))
    log_p = model.log_joint(x)(z)
    return (log_q - beta * log_p).mean(), (log_q - log_p).detach().mean()


class AnnealedObjective(nn.Module):
    """The training objective as a module: ``forward(x, β)`` is ``loss(model, x, β)``.

    DistributedDataParallel synchronises gradients only for what runs through the forward of the
    module it wraps, so the loss is computed here (also for HVI, whose forward differentiates
    ``ln p(x, z)`` with respect to ``z`` with ``create_graph=True``).

    Args:
        model: the DLGM.
        loss: ``(model, x, β) -> (F^β, F)`` (default :func:`loss_and_bound`).
    """

    def __init__(self, model: DLGM, loss: Loss = loss_and_bound) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        return self.loss(self.model, x, beta)


@torch.no_grad()
def validation_bound(model: DLGM, x: Tensor, device: torch.device, seed: int, batch_size: int = 500) -> float:
    """Mean free energy ``F(x)`` (eq. 15, one sample per point) over ``x``, with its own RNG stream
    so that validating does not change the training trajectory."""
    was_training = model.training
    model.eval()
    total = 0.0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            total += float(model.free_energy(xb).sum())  # a synchronisation per batch: validation only
    model.train(was_training)
    return total / x.shape[0]


class Trainer:
    """Trains a DLGM on ``train_x`` (validating on ``valid_x``) into ``out_dir``.

    Args:
        cfg: the run's configuration.
        out_dir: run directory (config.yaml, checkpoint.pt, log.csv/jsonl, summary.json).
        train_x, valid_x: images, ``(N, 784)``; binary, or grey levels with dynamic binarization.
        resume: continue from ``out_dir/checkpoint.pt``.
        rank, world_size: this process in a data-parallel job; ``world_size`` > 1 needs the default
            process group initialized (:func:`flowvi_experiments.training.distributed.process_group`).
        local_rank: the process's index on its machine (its GPU, ``cuda:local_rank``); default ``rank``.
        loss: the minibatch objective ``(model, x, β) -> (F^β, F)``, default :func:`loss_and_bound`
            (eq. 20 and eq. 15 from one posterior sample per data point); another estimator of the same
            bound, or a wrapper that watches or perturbs it (the tests inject a NaN this way).
        hooks: more :class:`flowvi.loop.Hook` s of the fit loop, called after the run directory's own
            (validation, logs, checkpoints) on every process: custom logging, a stop rule, a signal.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        train_x: Tensor,
        valid_x: Tensor,
        *,
        resume: bool = False,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int | None = None,
        loss: Loss = loss_and_bound,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        self.hooks = list(hooks)
        self.rank, self.world_size = rank, world_size
        if world_size > 1 and (cfg.compile or cfg.cuda_graph):
            raise ValueError("compile and cuda_graph run in a single process: drop them, or train without torchrun")
        set_threads(cfg.threads)
        retain_freed_memory()  # no page faults per update (bit for bit the same values)
        self.device = rank_device(cfg.device, rank if local_rank is None else local_rank, world_size)
        self.strategy = distributed.strategy(rank, world_size, self.device)
        if cfg.train_limit:
            train_x = train_x[: cfg.train_limit]
        if cfg.val_size:
            valid_x = valid_x[: cfg.val_size]
        self.train_x = train_x  #: where dynamic binarization draws each epoch from (on the CPU)
        self.valid_x = valid_x.to(self.device)
        self.anneal = LinearAnnealing(cfg.anneal_start, cfg.anneal_steps)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        if cfg.init_output_bias:  # for grey levels the mean is the expected binarized mean
            self.model.init_output_bias(train_x.mean(0))
        self.model.to(self.device)
        # data parallel: DDP broadcasts rank 0's parameters; each rank then draws its own noise
        self.objective: nn.Module = self.strategy.wrap(AnnealedObjective(self.model, loss))
        self.strategy.seed_noise(cfg.seed)
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.step = TrainStep(self.objective, list(self.model.parameters()), self.optimizer,
                              aux_names=("train_bound",), grad_clip=cfg.grad_clip, compile=cfg.compile,
                              cuda_graph=cfg.cuda_graph, check_objective=AnnealedObjective(self.model, loss))
        self.batches = EpochBatches.for_global_batch(train_x.shape[0], cfg.batch_size, cfg.seed, rank, world_size,
                                                     device=self.device)
        self._update = 0
        self._loop: FitLoop | None = None
        self.wall_s = 0.0
        self.best_val = math.inf
        self.best_update: int | None = None
        self.bad_vals = 0
        self.last_val: float | None = None
        self._binarized_epoch = -1
        #: the training set of this epoch, on the device (one tensor; a fresh draw per epoch when dynamic)
        self._epoch_x = train_x.to(self.device) if cfg.binarization != "dynamic" else train_x
        self._ckpt_update = 0  #: update of the last checkpoint written or resumed from
        self._window: list[float] = [0.0, 0.0, 0]  #: [Σ loss, Σ bound, updates] of the log window open there
        if resume:
            self._restore(load_checkpoint(self.out / CHECKPOINT, map_location=self.device))
        elif self.strategy.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    @property
    def update(self) -> int:
        """Updates done (live during :meth:`run`)."""
        return self._loop.update if self._loop is not None else self._update

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The run state. With world size > 1 this is a collective (every rank's RNG state is
        gathered to rank 0 under ``rng_ranks``); call it on all ranks."""
        own = {"rng_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "format": 1,
            "config": self.cfg.to_dict(),
            "update": self.update,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            **own,
            "best_val": self.best_val,
            "best_update": self.best_update,
            "bad_vals": self.bad_vals,
            "last_val": self.last_val,
            "world_size": self.world_size,
            "threads": torch.get_num_threads(),
            "log_window": list(self._window),
        }
        ranks = self.strategy.gather_objects(own)
        if ranks is not None:
            state["rng_ranks"] = ranks
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        check_same_model(state.get("config", {}), self.cfg, self.out)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        saved_world = state.get("world_size", 1)
        if saved_world == self.world_size:
            rng = state["rng_ranks"][self.rank] if "rng_ranks" in state else state  # before rng_ranks: world 1
            torch.set_rng_state(rng["rng_cpu"].cpu())
            if "rng_cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["rng_cuda"].cpu(), self.device)
        else:  # same data order, model and optimizer; the noise streams cannot continue: re-derive them
            torch.manual_seed(distributed.rank_seed(self.cfg.seed, self.rank) + state["update"])
            if self.strategy.is_main:
                warnings.warn(f"resuming a run trained by {saved_world} process(es) with {self.world_size}: the data "
                              "order, parameters and optimizer state continue exactly, the posterior noise is "
                              "re-seeded per rank (not bit-identical to an uninterrupted run)", stacklevel=2)
        self._update, self.wall_s = state["update"], state["wall_s"]
        self._ckpt_update = self.update
        self.best_val, self.bad_vals, self.last_val = state["best_val"], state["bad_vals"], state["last_val"]
        self.best_update = state.get("best_update")
        self._window = list(state.get("log_window", (0.0, 0.0, 0)))  # format 1: the window restarts
        warn_if_threads_changed(state, self.rank)

    def save(self) -> None:
        """Write the checkpoint (rank 0); with world size > 1 every rank must call this."""
        state = self.state_dict()
        if self.strategy.is_main:
            save_checkpoint(self.out / CHECKPOINT, state, keep_previous=True)
        self._ckpt_update = self.update

    # -- loop -------------------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        """The next minibatch, indexed on the device (the epoch's order is drawn on the CPU, as always)."""
        epoch, idx = self.batches.next()
        if self.cfg.binarization == "dynamic" and epoch != self._binarized_epoch:
            self._epoch_x = binarize_epoch(self.train_x, self.cfg.seed, epoch).to(self.device)
            self._binarized_epoch = epoch
        return self._epoch_x.index_select(0, idx)

    def _inputs(self, t: int) -> tuple[Tensor, float]:
        return self._batch(), self.anneal(t)

    def run(self) -> TrainResult:
        cfg = self.cfg
        main = self.strategy.is_main
        logger = MetricsLogger(self.out, resume_from=self.update if self.update else None,
                               tensorboard=cfg.tensorboard) if main else NullLogger()
        bar = tqdm(total=cfg.updates, initial=self.update, unit="upd", disable=not (cfg.progress and main),
                   dynamic_ncols=True, mininterval=1.0)
        self._t_start, self._seg_start = time.perf_counter(), self.update
        loop = FitLoop(self.step, self._inputs, updates=cfg.updates, log_every=cfg.log_every, schedule=schedule(cfg),
                       hooks=[_Validation(self), _Log(self, logger, bar), _Checkpoints(self), *self.hooks],
                       strategy=self.strategy, start=self.update, window=(self._window[:-1], int(self._window[-1])),
                       signals=(signal.SIGINT, signal.SIGTERM))
        self._loop = loop
        self.model.train()
        try:
            status = loop.run()
        except Diverged as exc:
            raise NonFiniteLossError(f"{exc}; {self._last_checkpoint()}") from exc
        finally:
            self._update, self._loop = loop.update, None
            bar.close()
            logger.close()
        result = TrainResult(status, self.update, self.wall_s, self.last_val)
        if main:
            write_json(self.out / SUMMARY, self._summary(result))
        return result

    def _last_checkpoint(self) -> str:
        if self._ckpt_update == 0:
            return f"no checkpoint has been written yet (the first is due at update {self.cfg.ckpt_every})"
        return f"last checkpoint is at update {self._ckpt_update}: {self.out / CHECKPOINT}"

    def _validate(self) -> float:
        """The validation bound; with world size > 1 computed on rank 0 and broadcast, so that all
        ranks take the same early-stopping decisions."""
        seed = self.cfg.seed + 7919
        value = validation_bound(self.model, self.valid_x, self.device, seed) if self.strategy.is_main else None
        return self.strategy.broadcast(value)

    def _save_best(self, val: float) -> None:
        """Model selection: keep the model with the lowest validation bound in ``best.pt`` (written
        atomically, rank 0), with the update it comes from."""
        self.best_val, self.best_update = val, self.update
        if self.strategy.is_main:
            save_checkpoint(self.out / BEST, {"format": 1, "kind": "best", "config": self.cfg.to_dict(),
                                              "update": self.update, "wall_s": self.wall_s, "val_bound": val,
                                              "model": self.model.state_dict()})

    def _checkpoint(self, loop: FitLoop) -> None:
        """Check the device values (nothing is saved after a NaN), then write the checkpoint; the time
        spent writing it does not count as training time."""
        sums, n = loop.check()
        self._window = [*sums, n]
        self.wall_s += time.perf_counter() - self._t_start
        self.save()
        self._t_start, self._seg_start = time.perf_counter(), self.update

    def _summary(self, result: TrainResult) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "status": result.status,
            "updates": result.updates,
            "target_updates": self.cfg.updates,
            "wall_s": round(result.wall_s, 3),
            "updates_per_s": round(result.updates / result.wall_s, 2) if result.wall_s > 0 else None,
            "val_bound": result.val_bound,
            "best_val_bound": None if math.isinf(self.best_val) else self.best_val,
            "best_update": self.best_update,
            "device": str(self.device),
            "world_size": self.world_size,
            "backend": self.strategy.backend,
            "threads": torch.get_num_threads(),
            "train_examples": int(self.train_x.shape[0]),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "torch": torch.__version__,
            "config": self.cfg.to_dict(),
        }


class _Validation(Hook):
    """Every ``val_every`` updates and at the last: the validation bound, ``best.pt`` when it is the
    lowest so far, and early stopping after ``early_stopping`` validations without an improvement
    (:func:`~flowvi_experiments.training.selection.record_validation`)."""

    def __init__(self, trainer: Trainer) -> None:
        self.tr = trainer

    def records(self, update: int) -> bool:
        return update % self.tr.cfg.val_every == 0 or update == self.tr.cfg.updates

    def on_record(self, loop: FitLoop, record: dict[str, Any]) -> None:
        tr, cfg = self.tr, self.tr.cfg
        record["val_bound"] = math.nan
        if not self.records(record["update"]):
            return
        val = tr._validate()
        record["val_bound"] = tr.last_val = val
        lowest, tr.bad_vals = record_validation(tr.best_val, tr.bad_vals, val)
        if lowest:
            tr._save_best(val)
        if cfg.early_stopping and tr.bad_vals >= cfg.early_stopping:
            loop.stop("early_stopped")


class _Log(Hook):
    """A row of log.csv/log.jsonl (and TensorBoard) per record, and the progress bar."""

    def __init__(self, trainer: Trainer, logger: MetricsLogger | NullLogger, bar: tqdm) -> None:
        self.tr, self.logger, self.bar = trainer, logger, bar

    def on_record(self, loop: FitLoop, record: dict[str, Any]) -> None:
        tr, t = self.tr, record["update"]
        elapsed = time.perf_counter() - tr._t_start
        rate = (t - tr._seg_start) / elapsed if elapsed > 0 else math.nan
        beta = tr.anneal(t - 1)
        self.logger.log({"update": t, "epoch": tr.batches.epoch, "beta": beta, "lr": loop.lr,
                         "loss": record["loss"], "train_bound": record["train_bound"],
                         "val_bound": record["val_bound"], "updates_per_s": rate, "wall_s": tr.wall_s + elapsed})
        self.bar.update(t - self.bar.n)
        self.bar.set_postfix(bound=f"{record['train_bound']:.2f}", beta=f"{beta:.2f}",
                             val="-" if tr.last_val is None else f"{tr.last_val:.2f}")


class _Checkpoints(Hook):
    """``checkpoint.pt`` every ``ckpt_every`` updates and when the run ends (also on a signal or early stop)."""

    def __init__(self, trainer: Trainer) -> None:
        self.tr = trainer

    def after_update(self, loop: FitLoop, update: int) -> None:
        if update % self.tr.cfg.ckpt_every == 0 and update < self.tr.cfg.updates:
            self.tr._checkpoint(loop)

    def on_end(self, loop: FitLoop, status: str) -> None:
        self.tr._checkpoint(loop)
