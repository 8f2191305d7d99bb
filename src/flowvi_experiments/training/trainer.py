"""The training loop of the DLGM (Algorithm 1, section 6.2): minibatch, one posterior sample per
data point, the annealed free energy (eq. 20), a preconditioned SGD step.

Run state (model, optimizer, update count, data position, RNG states) lives in one checkpoint,
written atomically on a schedule, at the end, and on SIGINT/SIGTERM; ``resume=True`` continues from
it and ends with the same parameters as an uninterrupted run (same seed, CPU).

Under ``torchrun`` (world size > 1, see :mod:`flowvi_experiments.training.distributed` and docs/distributed.md)
the objective is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`: ``batch_size`` stays
the global minibatch, each process draws its share with its own posterior-noise stream, DDP
averages the gradients, and the ranks agree on every stop (end, signal, NaN, early stopping)
at the same update. Rank 0 alone writes the run directory. With world size 1 none of this runs and
the trajectory is the single-process one.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from flowvi.objectives import LinearAnnealing

from ..models import DLGM
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint, write_json, write_text
from .config import TrainConfig
from .data_source import binarize_epoch
from .device import rank_device, set_threads
from .logs import MetricsLogger, NullLogger
from .resume import check_same_model, warn_if_threads_changed
from .sharding import EpochBatches

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  #: the model at its best validation bound (model selection), beside the last checkpoint
CONFIG = "config.yaml"
SUMMARY = "summary.json"


class NonFiniteLossError(FloatingPointError):
    """The loss or its gradient became NaN/inf: the run stops and names the update."""


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
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))


def learning_rate(cfg: TrainConfig, t: int) -> float:
    """Learning rate of update ``t`` (0-based): linear warm-up, then the schedule to ``lr_final``."""
    if cfg.warmup and t < cfg.warmup:
        return cfg.lr * (t + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(cfg.updates - cfg.warmup, 1)
    frac = min(max(t - cfg.warmup, 0) / span, 1.0)
    if cfg.lr_schedule == "cosine":
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))
    return cfg.lr * (cfg.lr_final / cfg.lr) ** frac  # exponential


def loss_and_bound(model: DLGM, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """``(mean F^β(x), mean F(x))``: the annealed objective (eq. 20) and, from the same sample,
    the un-annealed free energy (eq. 15), one posterior sample per data point."""
    z, log_q = model.q(x).rsample_and_log_prob((1,))
    log_p = model.log_joint(x)(z)
    return (log_q - beta * log_p).mean(), (log_q - log_p).detach().mean()


class AnnealedObjective(nn.Module):
    """The training objective as a module: ``forward(x, β)`` is :func:`loss_and_bound` of ``model``.

    DistributedDataParallel synchronises gradients only for what runs through the forward of the
    module it wraps, so the loss is computed here (also for HVI, whose forward differentiates
    ``ln p(x, z)`` with respect to ``z`` with ``create_graph=True``).
    """

    def __init__(self, model: DLGM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        return loss_and_bound(self.model, x, beta)


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
            total += float(model.free_energy(xb).sum())
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
    ) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        self.rank, self.world_size = rank, world_size
        self.distributed = world_size > 1
        if self.distributed and not (torch.distributed.is_initialized()
                                     and torch.distributed.get_world_size() == world_size
                                     and torch.distributed.get_rank() == rank):
            raise ValueError(f"world_size {world_size} needs an initialized process group in which this process "
                             f"is rank {rank}: start the run with torchrun (see docs/distributed.md)")
        set_threads(cfg.threads)
        self.device = rank_device(cfg.device, rank if local_rank is None else local_rank, world_size)
        if cfg.train_limit:
            train_x = train_x[: cfg.train_limit]
        if cfg.val_size:
            valid_x = valid_x[: cfg.val_size]
        self.train_x, self.valid_x = train_x, valid_x
        self.anneal = LinearAnnealing(cfg.anneal_start, cfg.anneal_steps)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        if cfg.init_output_bias:  # for grey levels the mean is the expected binarized mean
            self.model.init_output_bias(train_x.mean(0))
        self.model.to(self.device)
        self.objective: nn.Module = AnnealedObjective(self.model)
        if self.distributed:  # DDP broadcasts rank 0's parameters; each rank then draws its own noise
            ids = [self.device] if self.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
            torch.manual_seed(distributed.rank_seed(cfg.seed, rank))
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        self.batches = EpochBatches.for_global_batch(train_x.shape[0], cfg.batch_size, cfg.seed, rank, world_size)
        self.update = 0
        self.wall_s = 0.0
        self.best_val = math.inf
        self.best_update: int | None = None
        self.bad_vals = 0
        self.last_val: float | None = None
        self._binarized_epoch = -1
        self._epoch_x = train_x
        self._signal: int | None = None
        self._agreed_stop = False  #: a signal reached some rank (world size > 1, agreed by all ranks)
        self._ckpt_update = 0  #: update of the last checkpoint written or resumed from
        self._window = (0.0, 0.0, 0)  #: (loss sum, bound sum, updates) of the log window open at the checkpoint
        if resume:
            self._restore(load_checkpoint(self.out / CHECKPOINT, map_location=self.device))
        elif self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The run state. With world size > 1 this is a collective (every rank's RNG state is
        gathered to rank 0 under ``rng_ranks``); call it on all ranks."""
        state = {
            "format": 1,
            "config": self.cfg.to_dict(),
            "update": self.update,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best_val": self.best_val,
            "best_update": self.best_update,
            "bad_vals": self.bad_vals,
            "last_val": self.last_val,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        state["world_size"] = self.world_size
        state["threads"] = torch.get_num_threads()
        state["log_window"] = list(self._window)
        if self.distributed:
            own = {k: state[k] for k in ("rng_cpu", "rng_cuda") if k in state}
            ranks = distributed.gather_to_main(own)
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
            rng = state["rng_ranks"][self.rank] if self.distributed else state
            torch.set_rng_state(rng["rng_cpu"].cpu())
            if "rng_cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["rng_cuda"].cpu(), self.device)
        else:  # same data order, model and optimizer; the noise streams cannot continue: re-derive them
            torch.manual_seed(distributed.rank_seed(self.cfg.seed, self.rank) + state["update"])
            if self.rank == 0:
                warnings.warn(f"resuming a run trained by {saved_world} process(es) with {self.world_size}: the data "
                              "order, parameters and optimizer state continue exactly, the posterior noise is "
                              "re-seeded per rank (not bit-identical to an uninterrupted run)", stacklevel=2)
        self.update, self.wall_s = state["update"], state["wall_s"]
        self._ckpt_update = self.update
        self.best_val, self.bad_vals, self.last_val = state["best_val"], state["bad_vals"], state["last_val"]
        self.best_update = state.get("best_update")
        self._window = tuple(state.get("log_window", (0.0, 0.0, 0)))  # format 1: the window restarts
        warn_if_threads_changed(state, self.rank)

    def save(self) -> None:
        """Write the checkpoint (rank 0); with world size > 1 every rank must call this."""
        state = self.state_dict()
        if self.rank == 0:
            save_checkpoint(self.out / CHECKPOINT, state, keep_previous=True)
        self._ckpt_update = self.update

    # -- loop -------------------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        epoch, idx = self.batches.next()
        if self.cfg.binarization == "dynamic" and epoch != self._binarized_epoch:
            self._epoch_x = binarize_epoch(self.train_x, self.cfg.seed, epoch)
            self._binarized_epoch = epoch
        return self._epoch_x[idx].to(self.device)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum

    def run(self) -> TrainResult:
        cfg = self.cfg
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        main = self.rank == 0
        logger = MetricsLogger(self.out, resume_from=self.update if self.update else None,
                               tensorboard=cfg.tensorboard) if main else NullLogger()
        bar = tqdm(total=cfg.updates, initial=self.update, unit="upd", disable=not (cfg.progress and main),
                   dynamic_ncols=True, mininterval=1.0)
        status = "completed"
        params = [p for p in self.model.parameters() if p.requires_grad]
        t_start, seg_start_update = time.perf_counter(), self.update
        loss_sum, bound_sum, n_sum = self._window  # the first window after a resume spans the right updates
        self.model.train()
        try:
            while self.update < cfg.updates:
                if self._stop_requested():
                    status = "interrupted"
                    break
                x = self._batch()
                beta = self.anneal(self.update)
                lr = learning_rate(cfg, self.update)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, bound = self.objective(x, beta)
                if self.distributed:
                    loss_value, bound_value = self._agree(loss, bound)
                else:
                    loss_value, bound_value = float(loss.detach()), float(bound)
                    if not math.isfinite(loss_value):
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss_value}) at update {self.update + 1}; "
                            f"last checkpoint is at update {self._last_ckpt_update()}"
                        )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                if not torch.isfinite(norm):
                    raise NonFiniteLossError(
                        f"non-finite gradient norm ({float(norm)}) at update {self.update + 1}; "
                        f"last checkpoint is at update {self._last_ckpt_update()}"
                    )
                self.optimizer.step()
                self.update += 1
                loss_sum += loss_value
                bound_sum += bound_value
                n_sum += 1
                bar.update(1)
                t = self.update
                stop_early = False
                val = math.nan
                if t % cfg.val_every == 0 or t == cfg.updates:
                    val = self._validate()
                    self.last_val = val
                    if val < self.best_val - 1e-3:  # early stopping counts improvements of at least 1e-3
                        self.bad_vals = 0
                    else:
                        self.bad_vals += 1
                    if val < self.best_val:
                        self._save_best(val)
                    stop_early = bool(cfg.early_stopping) and self.bad_vals >= cfg.early_stopping
                if t % cfg.log_every == 0 or not math.isnan(val) or t == cfg.updates:
                    elapsed = time.perf_counter() - t_start
                    rate = (t - seg_start_update) / elapsed if elapsed > 0 else math.nan
                    row = {"update": t, "epoch": self.batches.epoch, "beta": beta, "lr": lr,
                           "loss": loss_sum / n_sum, "train_bound": bound_sum / n_sum, "val_bound": val,
                           "updates_per_s": rate, "wall_s": self.wall_s + elapsed}
                    logger.log(row)
                    bar.set_postfix(bound=f"{bound_sum / n_sum:.2f}", beta=f"{beta:.2f}",
                                    val="-" if self.last_val is None else f"{self.last_val:.2f}")
                    loss_sum = bound_sum = 0.0
                    n_sum = 0
                if stop_early:
                    status = "early_stopped"
                    break
                if t % cfg.ckpt_every == 0 and t < cfg.updates:
                    self._window = (loss_sum, bound_sum, n_sum)
                    self._checkpoint(t_start)
                    t_start, seg_start_update = time.perf_counter(), self.update
            if self._stop_requested() and status == "completed" and self.update < cfg.updates:
                status = "interrupted"
            self._window = (loss_sum, bound_sum, n_sum)
            self._checkpoint(t_start)
        finally:
            bar.close()
            logger.close()
            for s, h in handlers.items():
                signal.signal(s, h)
        result = TrainResult(status, self.update, self.wall_s, self.last_val)
        if main:
            write_json(self.out / SUMMARY, self._summary(result))
        return result

    def _stop_requested(self) -> bool:
        """A signal arrived: on this process (world size 1), on any rank as agreed by all (else)."""
        return self._agreed_stop if self.distributed else self._signal is not None

    def _agree(self, loss: Tensor, bound: Tensor) -> tuple[float, float]:
        """One all-reduce per update (world size > 1): a non-finite loss on any rank stops all of
        them at this update, a signal on any rank makes all stop after it, and the logged loss and
        bound are the means over ranks."""
        finite = bool(torch.isfinite(loss))
        bad, signalled, loss_sum, bound_sum = distributed.all_reduce_sum([
            0.0 if finite else 1.0, 0.0 if self._signal is None else 1.0,
            float(loss.detach()) if finite else 0.0, float(bound) if finite else 0.0,
        ])
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss on {int(bad)} of {self.world_size} processes at update {self.update + 1}; "
                f"last checkpoint is at update {self._last_ckpt_update()}"
            )
        self._agreed_stop = self._agreed_stop or signalled > 0
        return loss_sum / self.world_size, bound_sum / self.world_size

    def _validate(self) -> float:
        """The validation bound; with world size > 1 computed on rank 0 and broadcast, so that all
        ranks take the same early-stopping decisions."""
        seed = self.cfg.seed + 7919
        if not self.distributed:
            return validation_bound(self.model, self.valid_x, self.device, seed)
        val = validation_bound(self.model, self.valid_x, self.device, seed) if self.rank == 0 else None
        return distributed.broadcast_float(val)

    def _save_best(self, val: float) -> None:
        """Model selection: keep the model with the lowest validation bound in ``best.pt`` (written
        atomically, rank 0), with the update it comes from."""
        self.best_val, self.best_update = val, self.update
        if self.rank == 0:
            save_checkpoint(self.out / BEST, {"format": 1, "kind": "best", "config": self.cfg.to_dict(),
                                              "update": self.update, "wall_s": self.wall_s, "val_bound": val,
                                              "model": self.model.state_dict()})

    def _last_ckpt_update(self) -> int:
        return self._ckpt_update

    def _checkpoint(self, t_start: float) -> None:
        self.wall_s += time.perf_counter() - t_start
        self.save()

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
            "backend": torch.distributed.get_backend() if self.distributed else None,
            "threads": torch.get_num_threads(),
            "train_examples": int(self.train_x.shape[0]),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "torch": torch.__version__,
            "config": self.cfg.to_dict(),
        }
