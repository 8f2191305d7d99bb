"""Benchmark cases: for each (case, library, K) a closure running one training (or evaluation) step.

Every builder returns ``(step, n_points)``: ``step()`` runs one full step (zero_grad, loss, backward,
optimizer step; or one evaluation batch), ``n_points`` the data points it processes. Peers are
imported lazily, so a missing peer only disables its rows (:func:`missing_peer`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import flowvi
from flowvi_experiments.energies import u1
from flowvi_experiments.models.dlgm import DLGM, DLGMConfig

Step = Callable[[], None]

#: the peer package each library row needs
PEER_PACKAGES = {"pyro": "pyro", "normflows": "normflows", "nflows": "nflows"}

#: (case, K, libraries), in the order they run and print
CASES: list[tuple[str, int, tuple[str, ...]]] = [
    ("dlgm-train", 0, ("flowvi", "flowvi-reference", "pyro")),
    ("dlgm-train", 10, ("flowvi", "flowvi-reference", "pyro")),
    ("dlgm-train", 80, ("flowvi", "flowvi-reference", "pyro")),
    ("energy-fit", 32, ("flowvi", "flowvi-reference", "normflows", "pyro")),
    ("nice", 10, ("flowvi", "nflows")),
    ("iw-eval", 80, ("flowvi", "flowvi-reference", "pyro")),
]

#: what each case is, for the table and docs
DESCRIPTIONS = {
    "dlgm-train": "DLGM training step, batch 100, 784-Maxout(400,w4)-40 latents, amortized planar, RMSprop (foreach)",
    "energy-fit": "2-D energy U1 fitting step, global planar, batch 256, fused Adam",
    "nice": "NICE-perm D=40, K couplings (MLP 64x2), batch 100, global, fused Adam",
    "iw-eval": "importance-sampled -ln p(x), S=200 (chunks of 100), DLGM amortized planar, batch 100",
}

BATCH_MNIST = 100
LATENT = 40


def missing_peer(library: str) -> str | None:
    """The name of the peer package ``library`` needs if it is not installed, else ``None``."""
    package = PEER_PACKAGES.get(library)
    if package is not None and importlib.util.find_spec(package) is None:
        return package
    return None


def _mnist_shaped_batch(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(BATCH_MNIST, 784, generator=g) < 0.13).float()  # binarized-MNIST-like density


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    return -0.5 * (eps * eps).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


# ---------------------------------------------------------------- case 1 and 4: the DLGM


def _flowvi_dlgm(K: int, fast: bool) -> DLGM:
    model = DLGM(DLGMConfig(family="planar" if K else "diagonal", K=K))
    if K and not fast:  # the per-step reference: K Planar steps instead of one PlanarChain
        model.posterior = flowvi.NormalizingFlow(40, flowvi.planar_steps(40, K, fused=False), context_features=400)
    return model


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

        self.net = DLGM(DLGMConfig(family="diagonal", K=0))
        del self.net.posterior  # replaced by the base head and the Pyro flow below
        self.base_head = nn.Linear(400, 2 * LATENT)
        self.steps = nn.ModuleList([ConditionalPlanar(_LinearHypernet(400, LATENT)) for _ in range(K)])

    def sample_and_log_q(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        h = self.net.encoder(x)
        loc, raw_scale = self.base_head(h).chunk(2, -1)
        scale = F.softplus(raw_scale)
        eps = torch.randn(n, *loc.shape)
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
    # SPEC §6.2; the multi-tensor implementation (not torch's CPU default), for every library alike
    return torch.optim.RMSprop(model.parameters(), lr=1e-5, momentum=0.9, foreach=True)


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3, fused=True)  # fused CPU kernel, for every library alike


def dlgm_train(library: str, K: int) -> tuple[Step, int]:
    x = _mnist_shaped_batch()
    if library in ("flowvi", "flowvi-reference"):
        model: nn.Module = _flowvi_dlgm(K, fast=library == "flowvi")
    elif library == "pyro":
        model = PyroPlanarDLGM(K)
    else:
        raise ValueError(library)
    opt = _rmsprop(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(x, beta=0.5).backward()
        opt.step()

    return step, BATCH_MNIST


def iw_eval(library: str, K: int, n_samples: int = 200, chunk: int = 100) -> tuple[Step, int]:
    x = _mnist_shaped_batch()
    if library in ("flowvi", "flowvi-reference"):
        model = _flowvi_dlgm(K, fast=library == "flowvi")

        def step() -> None:
            with torch.no_grad():
                est = flowvi.importance_log_marginal(model.q(x), model.log_joint(x), n_samples, chunk)
            assert torch.isfinite(est.log_marginal).all()

    elif library == "pyro":
        pmodel = PyroPlanarDLGM(K)

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
    return step, BATCH_MNIST


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


def nice(library: str, K: int, dim: int = 40, hidden: int = 64, batch: int = BATCH_MNIST) -> tuple[Step, int]:
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
