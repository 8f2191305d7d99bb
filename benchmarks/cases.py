"""Benchmark cases: for each (case, library, K) a closure running one training (or evaluation) step.

Every builder returns ``(step, n_points)``: ``step()`` runs one full step (zero_grad, loss, backward,
optimizer step; or one evaluation batch), ``n_points`` the data points it processes. Peers are
imported lazily, so a missing peer only disables its rows (:func:`missing_peer`).

:func:`configure` sets the sizes (``tiny``: a smoke test's small DLGM) and the device of the DLGM cases
(``dlgm-train`` and ``iw-eval``; the others run on the CPU).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import flowvi
from flowvi.distribution import diagonal_normal_log_prob
from flowvi_experiments.energies import u1
from flowvi_experiments.models.dlgm import DLGM, DLGMConfig

Step = Callable[[], None]

#: the peer package each library row needs
PEER_PACKAGES = {"pyro": "pyro", "normflows": "normflows", "nflows": "nflows"}


class Case(NamedTuple):
    """One group of interleaved rows; ``threads`` ``None``: the run's ``--threads``."""

    case: str
    K: int
    libraries: tuple[str, ...]
    threads: int | None = None


#: (case, K, libraries, threads), in the order they run and print. ``floor``: the DLGM step's networks and
#: amortizing head alone (see :class:`FloorDLGM`); the 2-thread rows repeat the K = 80 step on two threads
CASES: list[Case] = [
    Case("dlgm-train", 0, ("flowvi", "floor", "flowvi-reference", "pyro")),
    Case("dlgm-train", 10, ("flowvi", "floor", "flowvi-reference", "pyro")),
    Case("dlgm-train", 80, ("flowvi", "floor", "flowvi-reference", "pyro")),
    Case("dlgm-train", 80, ("flowvi", "floor"), threads=2),
    Case("energy-fit", 32, ("flowvi", "flowvi-reference", "normflows", "pyro")),
    Case("nice", 10, ("flowvi", "nflows")),
    Case("iw-eval", 80, ("flowvi", "flowvi-reference", "pyro")),
]

#: the libraries that need only torch (``flowvi-compiled`` and ``floor-compiled``: the flowvi and floor rows with
#: their loss under ``torch.compile``, asked for with ``run.py --compiled``)
OWN_LIBRARIES = ("flowvi", "floor", "flowvi-reference", "flowvi-compiled", "floor-compiled")

#: what each case is, for the table and docs
DESCRIPTIONS = {
    "dlgm-train": "DLGM training step, batch 100, 784-Maxout(400,w4)-40 latents, amortized planar, RMSprop (foreach); "
                  "floor: the same networks and head with no flow steps",
    "energy-fit": "2-D energy U1 fitting step, global planar, batch 256, fused Adam; flowvi's value checks off, "
                  "as in its fit loop",
    "nice": "NICE-perm D=40, K couplings (MLP 64x2), batch 100, global, fused Adam; flowvi's value checks off, "
            "as in its fit loop",
    "iw-eval": "importance-sampled -ln p(x), S=200 (chunks of 100), DLGM amortized planar, batch 100",
}


@dataclass(frozen=True)
class Sizes:
    """The DLGM cases' sizes: the paper's (section 6.2), or a smoke test's."""

    batch: int = 100
    latent: int = 40
    hidden: int = 400
    iw_samples: int = 200
    iw_chunk: int = 100


FULL, TINY = Sizes(), Sizes(batch=10, latent=4, hidden=16, iw_samples=20, iw_chunk=10)
SIZES = FULL
DEVICE = torch.device("cpu")


def configure(tiny: bool = False, device: str = "cpu") -> None:
    """Sizes (``tiny``: a smoke test's) and device of the DLGM cases, for the builders that follow."""
    global SIZES, DEVICE
    SIZES = TINY if tiny else FULL
    DEVICE = torch.device(device)


def synchronize() -> None:
    """Wait for the DLGM cases' device (a no-op on the CPU): a step's time is its kernels' time."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def missing_peer(library: str) -> str | None:
    """The name of the peer package ``library`` needs if it is not installed, else ``None``."""
    package = PEER_PACKAGES.get(library)
    if package is not None and importlib.util.find_spec(package) is None:
        return package
    return None


def _mnist_shaped_batch(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(SIZES.batch, 784, generator=g) < 0.13).float().to(DEVICE)  # binarized-MNIST-like density


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    return -0.5 * (eps * eps).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


# ---------------------------------------------------------------- case 1 and 4: the DLGM


def flowvi_dlgm(K: int, fast: bool) -> DLGM:
    """flowvi's DLGM of the benchmark's sizes, seed 0: diagonal (K = 0) or planar with K steps, one fused
    :class:`flowvi.PlanarChain` (``fast``) or K :class:`flowvi.Planar` steps (the per-step reference)."""
    torch.manual_seed(0)
    D, H = SIZES.latent, SIZES.hidden
    model = DLGM(DLGMConfig(family="planar" if K else "diagonal", K=K, latent=D, hidden=H))
    if K and not fast:  # the per-step reference: K Planar steps instead of one PlanarChain
        model.posterior = flowvi.NormalizingFlow(D, flowvi.planar_steps(D, K, fused=False), context_features=H)
    return model.to(DEVICE)


#: the floor's weight on the flow parameters' columns: their gradient is this constant (nonzero, see
#: :class:`FloorDLGM`); far below the bound's scale, it does not change what the floor's step computes
FLOOR_WEIGHT = 1e-3


class FloorDLGM(nn.Module):
    """The arithmetic floor of flowvi's DLGM step at K planar steps: the same encoder, decoder and
    amortizing head (``Linear(H, 2D + K(2D + 1))``, every output computed), with the flow steps replaced
    by nothing: ``z = z_0 = μ + σ ε`` and ``ln q = ln q_0``. The head's other columns enter the loss as
    ``ε_floor · Σ`` (:data:`FLOOR_WEIGHT`), so their gradient GEMMs run too and the optimizer updates every
    parameter, as in the real step. The weight is small but not zero: a zero weight gives those 2.6 million
    parameters (at K = 80) exactly zero gradients, RMSprop's ``square_avg`` stays 0 there, and torch's CPU
    ``sqrt`` is about 4.5× slower on vectors that contain zeros (measured here: 4 million zeros 125–135 ms,
    4 million ones 27 ms), an extra cost the real step does not pay, which made the floor slower by
    about 5 ms. The gap between flowvi's step and this one is what the flow itself costs."""

    def __init__(self, K: int) -> None:
        super().__init__()
        self.net = flowvi_dlgm(K, fast=True)

    def loss(self, x: Tensor, beta: float) -> Tensor:
        net, D = self.net, SIZES.latent
        flat = net.posterior.head.linear(net.encoder(x))  # μ, raw σ, then every flow parameter
        # one split (its backward is one concatenation; slices would each pad their gradient with zeros)
        loc, raw_scale, flow_params = flat.split([D, D, flat.shape[-1] - 2 * D], -1)
        scale = F.softplus(raw_scale)
        eps = torch.randn((1, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        log_q = diagonal_normal_log_prob(z, loc, scale, eps)
        fe = (log_q - beta * net.log_joint(x)(z)).mean(0)
        return fe.mean() + FLOOR_WEIGHT * flow_params.sum()


class _LinearHypernet(nn.Module):
    """Per-step linear map ``h(x) -> (b, u, w)``: the same amortization as flowvi's linear head."""

    def __init__(self, context: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(context, 2 * dim + 1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.linear(h)
        return out[..., :1], out[..., 1 : 1 + self.dim], out[..., 1 + self.dim :]


class PyroPlanarDLGM(nn.Module):
    """The same DLGM (flowvi's Maxout encoder/decoder and log joint) with a posterior built from
    Pyro's ``ConditionalPlanar`` steps, each with a linear hypernetwork from the encoder features."""

    def __init__(self, K: int) -> None:
        super().__init__()
        from pyro.distributions.transforms import ConditionalPlanar

        D, H = SIZES.latent, SIZES.hidden
        self.net = DLGM(DLGMConfig(family="diagonal", K=0, latent=D, hidden=H))
        del self.net.posterior  # replaced by the base head and the Pyro flow below
        self.base_head = nn.Linear(H, 2 * D)
        self.steps = nn.ModuleList([ConditionalPlanar(_LinearHypernet(H, D)) for _ in range(K)])

    def sample_and_log_q(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        h = self.net.encoder(x)
        loc, raw_scale = self.base_head(h).chunk(2, -1)
        scale = F.softplus(raw_scale)
        eps = torch.randn(n, *loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        log_q = _standard_normal_log_prob(eps) - scale.log().sum(-1)
        for step in self.steps:
            t = step.condition(h)
            y = t(z)
            log_q = log_q - t.log_abs_det_jacobian(z, y)
            z = y
        return z, log_q

    def loss(self, x: Tensor, beta: float) -> Tensor:
        z, log_q = self.sample_and_log_q(x, 1)
        return (log_q - beta * self.net.log_joint(x)(z)).mean()


def _rmsprop(model: nn.Module) -> torch.optim.Optimizer:
    # the paper's optimizer (section 6.2); the multi-tensor implementation (not torch's CPU default),
    # for every library alike
    return torch.optim.RMSprop(model.parameters(), lr=1e-5, momentum=0.9, foreach=True)


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, fused=True)  # fused CPU kernel, for every library alike


def dlgm_train(library: str, K: int) -> tuple[Step, int]:
    """One training step. flowvi's rows run with the value checks off (``flowvi.set_validation(False)``),
    as the trainer's hot path does; ``flowvi-compiled`` and ``floor-compiled`` are the ``flowvi`` and
    ``floor`` rows with their loss (forward and backward) under ``torch.compile(fullgraph=True)``, the
    optimizer eager: a compiled step is compared with a compiled floor."""
    x = _mnist_shaped_batch()
    if library in ("flowvi", "flowvi-reference", "flowvi-compiled"):
        model: nn.Module = flowvi_dlgm(K, fast=library != "flowvi-reference")
    elif library in ("floor", "floor-compiled"):
        model = FloorDLGM(K)
    elif library == "pyro":
        model = PyroPlanarDLGM(K).to(DEVICE)
    else:
        raise ValueError(library)
    opt = _rmsprop(model)
    loss = model.loss
    if library.endswith("-compiled"):
        loss = torch.compile(model.loss, fullgraph=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with flowvi.set_validation(False):
            loss(x, beta=0.5).backward()
        opt.step()

    return step, SIZES.batch


def iw_eval(library: str, K: int, n_samples: int | None = None, chunk: int | None = None) -> tuple[Step, int]:
    n_samples = SIZES.iw_samples if n_samples is None else n_samples
    chunk = SIZES.iw_chunk if chunk is None else chunk
    x = _mnist_shaped_batch()
    if library in ("flowvi", "flowvi-reference"):
        model = flowvi_dlgm(K, fast=library == "flowvi")

        def step() -> None:
            with torch.no_grad():
                est = flowvi.importance_log_marginal(model.q(x), model.log_joint(x), n_samples, chunk)
            assert torch.isfinite(est.log_marginal).all()

    elif library == "pyro":
        pmodel = PyroPlanarDLGM(K).to(DEVICE)

        def step() -> None:
            with torch.no_grad():
                log_w = []
                for _ in range(n_samples // chunk):  # same chunking; ln p = logsumexp − ln S
                    z, log_q = pmodel.sample_and_log_q(x, chunk)
                    log_w.append(pmodel.net.log_joint(x)(z) - log_q)
                log_p = torch.logsumexp(torch.cat(log_w), 0) - math.log(n_samples)
            assert torch.isfinite(log_p).all()

    else:
        raise ValueError(library)
    return step, SIZES.batch


# ---------------------------------------------------------------- case 2: 2-D energy fitting


def energy_fit(library: str, K: int, batch: int = 256) -> tuple[Step, int]:
    torch.manual_seed(0)
    if library in ("flowvi", "flowvi-reference"):
        flow = flowvi.NormalizingFlow(
            2, flowvi.planar_steps(2, K, fused=library == "flowvi"), base=flowvi.StandardNormal(2)
        )
        opt = _adam(flow.parameters())

        def loss() -> Tensor:
            return flowvi.free_energy(flow(), lambda z: -u1(z), n_samples=batch).mean()

    else:
        if library == "normflows":
            import normflows as nf

            steps = nn.ModuleList([nf.flows.Planar((2,)) for _ in range(K)])

            def apply(step: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
                return step(z)

        elif library == "pyro":
            from pyro.distributions.transforms import Planar

            steps = nn.ModuleList([Planar(2) for _ in range(K)])

            def apply(step: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
                y = step(z)
                return y, step.log_abs_det_jacobian(z, y)

        else:
            raise ValueError(library)
        opt = _adam(steps.parameters())

        def loss() -> Tensor:
            z = torch.randn(batch, 2)
            log_q = _standard_normal_log_prob(z)
            for step in steps:
                z, ladj = apply(step, z)
                log_q = log_q - ladj
            return (log_q + u1(z)).mean()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with flowvi.set_validation(False):  # as flowvi's fit loop runs its updates (the peers check nothing)
            loss().backward()
        opt.step()

    return step, batch


# ---------------------------------------------------------------- case 3: NICE


class _CouplingMLP(nn.Module):
    """flowvi's coupling network shape (2 hidden ReLU layers); ignores nflows' context argument."""

    def __init__(self, n_in: int, n_out: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def nice(library: str, K: int, dim: int = 40, hidden: int = 64, batch: int = 100) -> tuple[Step, int]:
    """K additive couplings with alternating partitions, each after a fixed random permutation."""
    torch.manual_seed(0)

    def log_joint(z: Tensor) -> Tensor:
        return -0.5 * ((z - 1.0) ** 2).sum(-1)

    if library == "flowvi":
        flow = flowvi.NormalizingFlow(
            dim, flowvi.nice_steps(dim, K, mixing="perm", hidden=hidden, depth=2), base=flowvi.StandardNormal(dim)
        )
        opt = _adam(flow.parameters())

        def loss() -> Tensor:
            return flowvi.free_energy(flow(), log_joint, n_samples=batch).mean()

    elif library == "nflows":
        from nflows.transforms import AdditiveCouplingTransform, CompositeTransform, RandomPermutation

        layers: list[nn.Module] = []
        for k in range(K):
            layers.append(RandomPermutation(dim))
            # nflows transforms the features where mask > 0; flowvi keeps parity-k positions fixed
            mask = torch.where(torch.arange(dim) % 2 == k % 2, -1, 1)
            layers.append(AdditiveCouplingTransform(mask, lambda i, o: _CouplingMLP(i, o, hidden)))
        transform = CompositeTransform(layers)
        opt = _adam(transform.parameters())

        def loss() -> Tensor:
            z0 = torch.randn(batch, dim)
            z, ladj = transform(z0)
            return (_standard_normal_log_prob(z0) - ladj - log_joint(z)).mean()

    else:
        raise ValueError(library)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with flowvi.set_validation(False):  # as flowvi's fit loop runs its updates (the peers check nothing)
            loss().backward()
        opt.step()

    return step, batch


BUILDERS: dict[str, Callable[[str, int], tuple[Step, int]]] = {
    "dlgm-train": dlgm_train,
    "energy-fit": energy_fit,
    "nice": nice,
    "iw-eval": iw_eval,
}


def build(case: str, library: str, K: int) -> tuple[Step, int]:
    return BUILDERS[case](library, K)
