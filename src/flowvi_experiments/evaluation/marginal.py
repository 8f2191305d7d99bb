"""Test-set evaluation of a DLGM (section 6.2): the importance-sampled ``−ln p(x)`` with the inference
network as proposal, and the free energy ``F(x)`` (eq. 15), each with its standard error.

    ln p(x) ≈ ln (1/S) Σ_s p(x, z_s) / q(z_s|x),   z_s ~ q(z|x)

Data points go through the model ``batch_size`` at a time and samples ``chunk_size`` at a time
(:func:`flowvi.importance_log_marginal` keeps a running log-sum-exp), so memory is bounded for
any ``S`` (``S = 5000`` included). The chunk is chosen from the device unless given
(:func:`evaluation_chunk_size`): 100 samples on the CPU, on a GPU as many as a quarter of its free
memory holds (measured on a probe of a few samples), which for the DLGM is often all ``S`` at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flowvi.objectives import importance_log_marginal

from ..atomic import write_text


@dataclass
class MarginalEstimate:
    """Per-data-point estimates, in nats (``log_marginal`` ≈ ln p(x), ``elbo`` = −F(x))."""

    log_marginal: Tensor
    elbo: Tensor
    samples: int
    chunk_size: int | None = None  #: samples per forward pass (the results depend on it through the RNG)

    @property
    def nll(self) -> float:
        return float(-self.log_marginal.double().mean())

    @property
    def nll_se(self) -> float:
        return standard_error(self.log_marginal)

    @property
    def bound(self) -> float:
        return float(-self.elbo.double().mean())

    @property
    def bound_se(self) -> float:
        return standard_error(self.elbo)

    def summary(self) -> dict[str, float | int]:
        return {"nll": self.nll, "nll_se": self.nll_se, "bound": self.bound, "bound_se": self.bound_se,
                "samples": self.samples, "n_points": int(self.log_marginal.numel())}


PER_IMAGE_SUFFIX = ".per_image.csv"  #: beside ``metrics.json``: ``metrics.per_image.csv``


def write_per_image(path: str | Path, est: MarginalEstimate) -> None:
    """Write the per-image ``ln p(x)`` and ELBO (in the split's order) as CSV text, 5 decimals."""
    rows = [f"{a:.5f},{b:.5f}" for a, b in zip(est.log_marginal.tolist(), est.elbo.tolist(), strict=True)]
    write_text(path, "log_marginal,elbo\n" + "".join(r + "\n" for r in rows))


def read_per_image(path: str | Path) -> dict[str, Tensor]:
    """Read :func:`write_per_image`'s file: ``{"log_marginal": (N,), "elbo": (N,)}`` in float64."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].split(",") != ["log_marginal", "elbo"]:
        raise ValueError(f"{path} is not a per-image file of flowvi evaluate (header log_marginal,elbo expected)")
    try:
        values = torch.tensor([[float(v) for v in line.split(",")] for line in lines[1:]], dtype=torch.float64)
    except ValueError as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"{path} is damaged: expected two columns per line")
    return {"log_marginal": values[:, 0], "elbo": values[:, 1]}


def standard_error(values: Tensor) -> float:
    """Standard error of the mean over data points, ``sd / √N`` (0 for a single point)."""
    n = values.numel()
    if n < 2:
        return 0.0
    return float(values.double().std(unbiased=True) / math.sqrt(n))


CPU_CHUNK = 100  #: samples per forward pass on the CPU (the default before the choice by device)
PROBE = 8  #: samples of the probe that measures the memory of one sample on a GPU


def evaluation_chunk_size(model: torch.nn.Module, xb: Tensor, n_samples: int, device: torch.device | str,
                          memory_fraction: float = 0.25) -> int:
    """Samples per forward pass for the batch ``xb`` on ``device``: :data:`CPU_CHUNK` on the CPU; on a
    GPU the most that ``memory_fraction`` of its free memory holds, from the peak memory of a probe of
    :data:`PROBE` samples (on a forked RNG: the estimate does not change the samples), at most ``n_samples``."""
    device = torch.device(device)
    if device.type != "cuda":
        return min(CPU_CHUNK, n_samples)
    probe = min(PROBE, n_samples)
    with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0]):
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        importance_log_marginal(model.q(xb), model.log_joint(xb), probe, probe)
        per_sample = max((torch.cuda.max_memory_allocated(device) - base) / probe, 1.0)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(n_samples, memory_fraction * free // per_sample)))


def estimate_log_marginal(
    model: torch.nn.Module,
    x: Tensor,
    n_samples: int = 200,
    *,
    batch_size: int = 100,
    chunk_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> MarginalEstimate:
    """Importance-sampled ``ln p(x)`` and the ELBO (from the same ``S`` samples) for every row of ``x``.

    ``model`` has ``q(x)`` (the posterior, with ``rsample_and_log_prob``) and ``log_joint(x)``
    (see :class:`flowvi_experiments.models.DLGM`). Sampling uses its own seeded RNG stream.
    ``chunk_size``: samples per forward pass; ``None`` chooses it from the device
    (:func:`evaluation_chunk_size`, once, on the first batch).
    """
    if n_samples < 1:
        raise ValueError(f"the number of importance samples must be >= 1, got {n_samples}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (N, features) tensor, got shape {tuple(x.shape)}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    log_ml, elbo = [], []
    devices = [device.index or 0] if device.type == "cuda" else []
    if chunk_size is None:
        chunk_size = evaluation_chunk_size(model, x[:batch_size].to(device), n_samples, device)
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            est = importance_log_marginal(model.q(xb), model.log_joint(xb), n_samples, chunk_size)
            log_ml.append(est.log_marginal.cpu())
            elbo.append(est.elbo.cpu())
    model.train(was_training)
    return MarginalEstimate(torch.cat(log_ml), torch.cat(elbo), n_samples, chunk_size)
