r"""One fit loop for every optimisation in flowvi and in the paper's experiments.

Every fit here is stochastic gradient descent on a Monte Carlo objective: at update ``t = 1, …, T`` a
loss on fresh posterior samples (the annealed free energy ``F^{β_t}`` of eq. 20 for the DLGM, the
negative ELBO ``−L`` of eq. 15 for :func:`flowvi.fit`), its gradient, the gradient's global norm
clipped, an optimizer step at the learning rate of a schedule. Two pieces do it:

- :class:`TrainStep`: one update as a function of tensors, **without host synchronisation**: the loss,
  auxiliary values (e.g. the un-annealed bound) and a non-finite flag accumulate on the device. Eager
  (``torch.optim``'s own step, bit-identical to a hand-written loop), compiled (loss, backward,
  clipping and the optimizer's arithmetic as one ``torch.compile(fullgraph=True)`` graph) or captured
  once as a CUDA graph and replayed.
- :class:`FitLoop`: the schedule, the windows of the history (means over ``log_every`` updates),
  the non-finite checks (the device values are read at the end of each window and whenever a hook asks,
  e.g. before a checkpoint: a NaN or inf raises :class:`Diverged` naming the update where it first
  appeared), interrupts (SIGINT and, if asked, SIGTERM finish the current update and stop), and
  :class:`Hook` s for validation, checkpoints, logging and early stopping.

Where the processes are is a :class:`Strategy`: :class:`Local` (one process), or data parallel
(``flowvi_experiments.training.distributed.DataParallel``); the loop has no other case.

>>> model = torch.nn.Linear(3, 1)
>>> x, y = torch.randn(64, 3), torch.randn(64, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=1e-2)
>>> step = TrainStep(lambda x: ((model(x) - y) ** 2).mean(), list(model.parameters()), opt, grad_clip=10.0)
>>> loop = FitLoop(step, lambda t: (x,), updates=200, log_every=50, schedule=cosine_schedule(1e-2, 1e-4, 200))
>>> loop.run(), loop.update
('completed', 200)
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .validation import set_validation

#: ``objective(*inputs) -> loss`` or ``(loss, aux)``: a scalar loss and a tuple of scalar auxiliary values
Objective = Callable[..., Any]
Schedule = Callable[[int], float]


class Diverged(FloatingPointError):
    """A non-finite loss or gradient norm (NaN or inf).

    Attributes: ``update`` (1-based) where it first appeared, ``checked`` the update of the check that
    found it, ``clean`` the update of the last check that found none, ``what`` (``"loss"`` or
    ``"gradient norm"``), and ``ranks`` of ``world_size`` processes that saw it.

    >>> w = torch.nn.Parameter(torch.ones(1))
    >>> nan_at_4 = lambda t: (w ** 2).sum() * (float("nan") if t == 3 else 1.0)   # t: the 0-based update
    >>> loop = FitLoop(TrainStep(nan_at_4, [w], torch.optim.SGD([w], lr=0.1)), lambda t: (t,), updates=10,
    ...                log_every=5)
    >>> try:
    ...     loop.run()
    ... except Diverged as exc:
    ...     print(exc)
    non-finite loss at update 4 (between the clean check after update 0 and the check after update 5)
    """

    def __init__(self, update: int, checked: int, clean: int, what: str, ranks: int = 1, world_size: int = 1) -> None:
        self.update, self.checked, self.clean, self.what = update, checked, clean, what
        self.ranks, self.world_size = ranks, world_size
        where = f" on {ranks} of {world_size} processes" if world_size > 1 else ""
        window = (f"between the clean check after update {clean} and the check after update {checked}"
                  if checked > update else f"found at once, the previous check after update {clean} being clean")
        super().__init__(f"non-finite {what}{where} at update {update} ({window})")


def learning_rate_schedule(kind: str, lr: float, lr_final: float, updates: int, warmup: int = 0) -> Schedule:
    """The learning rate of update ``t`` (0-based): linear warm-up over ``warmup`` updates, then
    ``constant``, ``cosine`` (from ``lr`` to ``lr_final`` at update ``updates``) or ``exponential``."""
    if kind not in ("constant", "cosine", "exponential"):
        raise ValueError(f"the schedule must be constant, cosine or exponential, got {kind!r}")
    if kind == "exponential" and not (lr_final > 0 and lr > 0):
        raise ValueError("an exponential schedule needs lr > 0 and lr_final > 0")
    span = max(updates - warmup, 1)

    def at(t: int) -> float:
        if warmup and t < warmup:
            return lr * (t + 1) / warmup
        if kind == "constant":
            return lr
        frac = min(max(t - warmup, 0) / span, 1.0)
        if kind == "cosine":
            return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * frac))
        return lr * (lr_final / lr) ** frac

    return at


def cosine_schedule(lr: float, lr_final: float, updates: int) -> Schedule:
    """``lr_t = lr_final + ½ (lr − lr_final)(1 + cos(π t / updates))`` for ``t = 0, …, updates − 1``."""
    return learning_rate_schedule("cosine", lr, lr_final, updates)


# -- where the processes are --------------------------------------------------------------------------
class Strategy(Protocol):
    """How a fit runs over processes: :class:`Local`, or data parallel (one replica per process)."""

    rank: int
    world_size: int
    backend: str | None  #: the collectives' backend (gloo, nccl), None for one process

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints."""
        ...

    def wrap(self, objective: nn.Module) -> nn.Module:
        """The objective the step differentiates (data parallel: synchronising its gradients)."""
        ...

    def gather(self, values: Tensor) -> Tensor:
        """Every process's ``values`` (1-D, on the device) as a ``(world_size, n)`` CPU tensor, on every process."""
        ...

    def should_stop(self, signalled_here: bool, signalled_anywhere: bool) -> bool:
        """Whether to stop now: after a signal here (one process), or one seen by all at the last check."""
        ...

    def broadcast(self, value: float | None) -> float:
        """The main process's ``value`` on every process (e.g. a validation bound)."""
        ...

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` as a list on the main process (None elsewhere)."""
        ...

    def seed_noise(self, seed: int) -> None:
        """Seed this process's posterior-noise stream after the model is built."""
        ...


class Local:
    """One process: nothing to wrap, gather or agree on (the default :class:`Strategy` of :class:`FitLoop`).

    >>> Local().gather(torch.tensor([1.0, 2.0])), Local().is_main
    (tensor([[1., 2.]]), True)
    """

    rank = 0
    world_size = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return True

    def wrap(self, objective: nn.Module) -> nn.Module:
        return objective

    def gather(self, values: Tensor) -> Tensor:
        return values.detach().reshape(1, -1).cpu()

    def should_stop(self, signalled_here: bool, signalled_anywhere: bool) -> bool:
        return signalled_here

    def broadcast(self, value: float | None) -> float:
        return math.nan if value is None else float(value)

    def gather_objects(self, obj: Any) -> list[Any] | None:
        return [obj]

    def seed_noise(self, seed: int) -> None:
        """One process continues the stream that built the model."""


# -- one update -------------------------------------------------------------------------------------
def _split(out: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    if isinstance(out, Tensor):
        return out, ()
    loss, aux = out
    if aux is None:
        return loss, ()
    return loss, (aux,) if isinstance(aux, Tensor) else tuple(aux)


class TrainStep:
    """One update of ``params``: the loss ``objective(*inputs)``, its gradient, the global gradient norm
    clipped to ``grad_clip`` (0: not clipped, the norm is still computed for the check), the optimizer
    step, and the running sums the loop reads: ``Σ loss``, ``Σ aux`` and whether the loss and the
    gradient norm stayed finite, all on the device (no host synchronisation).

    Args:
        objective: ``objective(*inputs) -> loss`` or ``(loss, aux)`` (a tuple of ``len(aux_names)``
            scalar tensors, e.g. the un-annealed bound), differentiable in ``params``.
        params: the parameters to update (those of ``optimizer``).
        optimizer: a ``torch.optim`` optimizer; for ``compile`` and ``cuda_graph``, :class:`torch.optim.Adam`
            or :class:`torch.optim.RMSprop` (their arithmetic is then part of the graph).
        aux_names: names of the auxiliary values, for the loop's records.
        grad_clip: the max global gradient norm (0: no clipping).
        compile: the whole update as one ``torch.compile(fullgraph=True)`` graph (random numbers as in
            eager mode: ``fallback_random``). Needs an objective without data-dependent Python control
            flow (the DLGM with planar, radial, diagonal, NICE, Sylvester or HVI posteriors compiles); a graph
            break is an error, not a silent slowdown.
        cuda_graph: capture the update once as a CUDA graph and replay it (CUDA only; with ``compile``,
            ``torch.compile``'s ``reduce-overhead`` mode). Inputs are copied into static buffers.
        record_each: keep the loss of each update of a window of up to this many updates (0: none).
        check_objective: the objective of the one checked forward pass (default ``objective``; give the
            unwrapped module when ``objective`` is a ``DistributedDataParallel``).

    Before the first update, the objective runs once with :func:`flowvi.set_validation`'s value checks
    on (on a forked RNG, so the trajectory does not change): the checks run once, when the step is built,
    instead of costing a synchronisation in every update, which runs with them off.

    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> step = TrainStep(lambda: (w ** 2).sum(), [w], torch.optim.SGD([w], lr=0.1), grad_clip=1.0)
    >>> step()                             # the gradient 6 is clipped to norm 1: w = 3 − 0.1
    >>> w.detach(), step.state()[:3]       # Σ loss, all finite, loss finite (read from the device)
    (tensor([2.9000]), tensor([9., 1., 1.], dtype=torch.float64))
    """

    def __init__(
        self,
        objective: Objective,
        params: Sequence[Tensor],
        optimizer: torch.optim.Optimizer,
        *,
        aux_names: Sequence[str] = (),
        grad_clip: float = 0.0,
        compile: bool = False,
        cuda_graph: bool = False,
        record_each: int = 0,
        check_objective: Objective | None = None,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("TrainStep needs at least one parameter that requires grad")
        if not grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0, got {grad_clip}")
        self.objective, self.optimizer = objective, optimizer
        self.check_objective = check_objective or objective
        self.aux_names = tuple(aux_names)
        self.max_norm = grad_clip if grad_clip > 0 else math.inf
        self.device = self.params[0].device
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph needs parameters on a CUDA device; these are on {self.device}: "
                             "drop cuda_graph or train with device cuda")
        self.compile, self.cuda_graph = bool(compile), bool(cuda_graph)
        self.functional = self.compile or self.cuda_graph
        if self.functional:
            functional_update(optimizer)  # an unsupported optimizer is named now, before any work
        dev, f64 = self.device, torch.float64
        self.sums = torch.zeros(1 + len(self.aux_names), dtype=f64, device=dev)  #: Σ loss, Σ aux of the window
        self.ok = torch.ones(2, dtype=f64, device=dev)  #: [all finite, loss finite] since the last check
        self.good = torch.zeros(2, dtype=f64, device=dev)  #: updates before the first non-finite one (each kind)
        self.capacity = record_each
        self.values = torch.zeros(max(record_each, 1), dtype=f64, device=dev)
        self.count = torch.zeros((), dtype=torch.int64, device=dev)
        self._recorded = 0  #: updates of this window done by this step (not those of a resumed window)
        self._lr = torch.zeros((), dtype=f64, device=dev)  #: the learning rate of compile and cuda_graph
        self._scalars: list[Tensor] = []  #: device buffers of the float inputs (compile, cuda_graph)
        self._checked = False
        self._compiled: Callable[..., None] | None = None
        self._graph: Any = None
        self._static: list[Tensor] = []

    # -- the loop's side ------------------------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        """The learning rate of the next update (every parameter group)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.functional:
            self._lr.fill_(lr)  # a kernel, not a copy from the host: no synchronisation

    def state(self) -> Tensor:
        """``[Σ loss, Σ aux…, all finite, loss finite, updates before the first non-finite (2)]`` on the device."""
        return torch.cat([self.sums, self.ok, self.good])

    def reset_checks(self) -> None:
        self.ok.fill_(1.0)
        self.good.zero_()

    def reset_window(self, sums: Sequence[float] | None = None) -> None:
        """Start a window: the sums at ``sums`` (a resumed window) or 0."""
        if sums is None:
            self.sums.zero_()
        else:
            self.sums.copy_(torch.tensor(list(sums), dtype=torch.float64))
        self.count.zero_()
        self._recorded = 0

    def recorded(self) -> list[float]:
        """The loss of each update of the window done by this step (``record_each`` > 0; the updates of a
        resumed window before ``start`` are in the sums only)."""
        return self.values[: min(self._recorded, self.capacity)].tolist() if self.capacity else []

    # -- one update ---------------------------------------------------------------------------------
    def __call__(self, *inputs: Any) -> None:
        if not self._checked:
            self._check(inputs)
        self._run(inputs)
        self._recorded += 1

    def _run(self, inputs: tuple[Any, ...]) -> None:
        if not self.functional:
            with set_validation(False):
                self.optimizer.zero_grad(set_to_none=True)
                self._eager(*inputs)
            return
        tensors = self._tensors(inputs)
        if self.cuda_graph and not self.compile:
            self._replay(tensors)
            return
        if self._compiled is None:
            self._init_functional()
            mode = "reduce-overhead" if self.cuda_graph else None
            self._compiled = torch.compile(self._functional_update, fullgraph=True, mode=mode)
        self.optimizer.zero_grad(set_to_none=True)
        with _compile_config(), set_validation(False):
            self._compiled(*tensors)

    def _check(self, inputs: tuple[Any, ...]) -> None:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), set_validation(True), torch.enable_grad():
            loss, aux = _split(self.check_objective(*inputs))
        if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
            raise ValueError(f"the objective must return a floating-point scalar loss, got {_describe(loss)}")
        if len(aux) != len(self.aux_names) or any(not isinstance(a, Tensor) or a.numel() != 1 for a in aux):
            raise ValueError(f"the objective must return {len(self.aux_names)} scalar auxiliary value(s) "
                             f"({', '.join(self.aux_names) or 'none'}), got {len(aux)}")
        self._checked = True

    def _eager(self, *inputs: Any) -> None:
        loss, aux = _split(self.objective(*inputs))
        loss.backward()
        norm = self._clip_grad_norm()
        self.optimizer.step()
        self._accumulate(loss, aux, norm)

    def _clip_grad_norm(self) -> Tensor:
        """:func:`torch.nn.utils.clip_grad_norm_`, bit for bit. Without clipping (``grad_clip`` 0) only the
        norm is computed, for the non-finite check: ``clip_grad_norm_`` would rescale every gradient by
        ``min(1, ∞ / ‖g‖) = 1``, a pass over all of them that changes nothing (still no host read: GPU-ready)."""
        if math.isinf(self.max_norm):
            return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        return torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)

    def _functional_update(self, *inputs: Tensor) -> None:
        loss, aux = _split(self.objective(*inputs))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        with torch.no_grad():
            self._rule(self.optimizer, self._lr)
        self._accumulate(loss, aux, norm)

    def _accumulate(self, loss: Tensor, aux: tuple[Tensor, ...], norm: Tensor) -> None:
        with torch.no_grad():
            values = torch.stack([loss.detach().reshape(()), *(a.detach().reshape(()) for a in aux)])
            values = values.to(torch.float64)
            self.sums.add_(values)  # float64 sums: the sequential sum of the float32 losses, as on the host
            finite_loss = torch.isfinite(loss.detach())
            finite = torch.stack([finite_loss & torch.isfinite(norm), finite_loss]).to(torch.float64)
            self.ok.mul_(finite)
            self.good.add_(self.ok)
            if self.capacity:
                self.values.index_copy_(0, self.count.clamp(max=self.capacity - 1).reshape(1), values[:1])
                self.count.add_(1)

    # -- compile and CUDA graphs ----------------------------------------------------------------------
    def _tensors(self, inputs: tuple[Any, ...]) -> list[Tensor]:
        """The inputs as device tensors: Python floats go to persistent device scalars (filled by a kernel)."""
        out, k = [], 0
        for value in inputs:
            if isinstance(value, Tensor):
                out.append(value)
                continue
            if not isinstance(value, (int, float)):
                raise TypeError(f"a compiled step takes tensors and numbers as inputs, got {type(value).__name__}")
            if k == len(self._scalars):
                self._scalars.append(torch.zeros((), dtype=torch.get_default_dtype(), device=self.device))
            self._scalars[k].fill_(float(value))
            out.append(self._scalars[k])
            k += 1
        return out

    def _init_functional(self) -> None:
        """Create the optimizer's state as its own first step would (then zeroed: Adam's and RMSprop's
        initial state is zeros), with the step counts on the parameters' device."""
        self._rule = functional_update(self.optimizer)
        if any(p not in self.optimizer.state or not self.optimizer.state[p] for p in self.params):
            saved = [(g, g["lr"]) for g in self.optimizer.param_groups]
            for g, _ in saved:
                g["lr"] = 0.0
            for p in self.params:
                p.grad = torch.zeros_like(p)
            self.optimizer.step()  # lr 0 and zero gradients: the parameters do not move
            for g, lr in saved:
                g["lr"] = lr
            for p in self.params:
                p.grad = None
                for value in self.optimizer.state[p].values():
                    if isinstance(value, Tensor):
                        value.zero_()
        for p in self.params:
            state = self.optimizer.state[p]
            state["step"] = state["step"].to(device=self.device)

    def _replay(self, tensors: list[Tensor]) -> None:
        if self._graph is None:
            self._capture(tensors)
        for static, value in zip(self._static, tensors, strict=True):
            static.copy_(value)
        self._graph.replay()

    def _capture(self, tensors: list[Tensor]) -> None:
        """Warm up on a side stream (then the parameters, the optimizer state, the sums and the RNG are put
        back: the warm-up leaves no trace in the run), and capture one update."""
        self._init_functional()
        self._static = [t.detach().clone() for t in tensors]
        rng = torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
        saved = [p.detach().clone() for p in self.params]
        state = [{k: v.clone() for k, v in self.optimizer.state[p].items() if isinstance(v, Tensor)}
                 for p in self.params]
        sums = [t.clone() for t in (self.sums, self.ok, self.good, self.values, self.count)]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), set_validation(False):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self._functional_update(*self._static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        with torch.no_grad():
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)
            for p, st in zip(self.params, state, strict=True):
                for k, v in st.items():
                    self.optimizer.state[p][k].copy_(v)
            for t, s in zip((self.sums, self.ok, self.good, self.values, self.count), sums, strict=True):
                t.copy_(s)
        torch.set_rng_state(rng[0])
        torch.cuda.set_rng_state(rng[1], self.device)
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), set_validation(False):
            self._functional_update(*self._static)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


@contextmanager
def _compile_config() -> Iterator[None]:
    """Trace ``loss.backward()`` into the graph and draw random numbers as eager mode does."""
    import torch._dynamo
    import torch._inductor.config

    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        raise RuntimeError(f"compiling the whole update needs a torch whose dynamo traces backward(); "
                           f"torch {torch.__version__} does not: train without compile")
    with torch._dynamo.config.patch(trace_autograd_ops=True), torch._inductor.config.patch(fallback_random=True):
        yield


# -- the optimizers' arithmetic, as tensor operations (compile, CUDA graphs) --------------------------
def functional_update(optimizer: torch.optim.Optimizer) -> Callable[[torch.optim.Optimizer, Tensor], None]:
    """``update(optimizer, lr)``: the step of ``optimizer`` as tensor operations with a tensor learning rate
    ``lr`` (no host synchronisation, no recompilation when ``lr`` changes), in the order of torch's
    single-tensor implementation; what a compiled or captured :class:`TrainStep` runs. For
    :class:`torch.optim.Adam` (also with decoupled weight decay) and :class:`torch.optim.RMSprop`; the
    optimizer's state must exist (after one step of its own, or loaded)."""
    name = type(optimizer).__name__
    for group in optimizer.param_groups:
        unsupported = [k for k in ("amsgrad", "maximize", "differentiable") if group.get(k)]
        if unsupported:
            raise ValueError(f"a compiled or captured step does not support {name} with {', '.join(unsupported)}")
    if isinstance(optimizer, torch.optim.Adam):
        return _adam
    if isinstance(optimizer, torch.optim.RMSprop):
        return _rmsprop
    raise ValueError(f"a compiled or captured step supports Adam and RMSprop, got {name}: train without compile "
                     "and cuda_graph, or use one of them")


def _adam(optimizer: torch.optim.Optimizer, lr: Tensor) -> None:
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        decoupled = group.get("decoupled_weight_decay", False)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            grad, step = p.grad, state["step"]
            step.add_(1)
            if wd and decoupled:
                p.mul_(1 - lr * wd)
            elif wd:
                grad = grad.add(p, alpha=wd)
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - torch.pow(beta1, step)
            bias2 = 1 - torch.pow(beta2, step)
            denom = (state["exp_avg_sq"].sqrt() / bias2.sqrt()).add_(eps)
            p.sub_(state["exp_avg"] / denom * (lr / bias1))


def _rmsprop(optimizer: torch.optim.Optimizer, lr: Tensor) -> None:
    for group in optimizer.param_groups:
        alpha, eps, wd = group["alpha"], group["eps"], group["weight_decay"]
        momentum, centered = group["momentum"], group["centered"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            grad = p.grad
            state["step"].add_(1)
            if wd:
                grad = grad.add(p, alpha=wd)
            square_avg = state["square_avg"]
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if centered:
                grad_avg = state["grad_avg"]
                grad_avg.lerp_(grad, 1 - alpha)
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            else:
                avg = square_avg.sqrt()
            avg = avg.add_(eps)
            if momentum > 0:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).addcdiv_(grad, avg)
                p.sub_(buf * lr)
            else:
                p.sub_(grad / avg * lr)


# -- the loop ----------------------------------------------------------------------------------------
class Hook:
    """What a fit does besides updating; override what you need. Called on every process.

    >>> class Converged(Hook):             # stop when a window's mean loss is small
    ...     def on_record(self, loop, record):
    ...         if record["loss"] < 1e-2:
    ...             loop.stop("converged")
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> step = TrainStep(lambda: (w ** 2).sum(), [w], torch.optim.SGD([w], lr=0.1))   # w ← 0.8 w
    >>> loop = FitLoop(step, lambda t: (), updates=1000, log_every=10, hooks=[Converged()])
    >>> loop.run(), loop.update
    ('converged', 30)
    """

    def records(self, update: int) -> bool:
        """Whether update ``update`` (1-based) ends a window (e.g. to validate there); besides every
        ``log_every`` updates and the last."""
        return False

    def on_record(self, loop: FitLoop, record: dict[str, Any]) -> None:
        """A window ended: ``record`` has ``update``, ``n`` (its updates), ``loss`` and the auxiliary
        values (means over the window), and ``values`` (each update's loss, with ``record_each``).
        Hooks run in order and may add keys for the next ones; ``loop.stop(status)`` stops the fit."""

    def after_update(self, loop: FitLoop, update: int) -> None:
        """After every update the loop did not stop at (e.g. a checkpoint every N updates: call
        :meth:`FitLoop.check` first, so that nothing is saved after a NaN)."""

    def on_end(self, loop: FitLoop, status: str) -> None:
        """The fit ended (completed, interrupted or a hook's status); not called after :class:`Diverged`."""


class FitLoop:
    """Runs ``step`` from update ``start`` to ``updates``: ``step(*inputs(t))`` at the learning rate
    ``schedule(t)`` (``t`` 0-based; ``None`` leaves the optimizer's), reading the device values every
    ``log_every`` updates, at the last update and when a hook asks (:meth:`Hook.records`, :meth:`check`).

    Args:
        step: the update (:class:`TrainStep`).
        inputs: ``t -> tuple`` of the inputs of update ``t`` (tensors on the step's device, or numbers).
        updates, log_every: the last update, and the longest window between two reads of the device.
        schedule: the learning rate of update ``t``.
        hooks: validation, logging, checkpoints, early stopping (:class:`Hook`), called in order.
        strategy: :class:`Local` (default) or data parallel.
        start: updates already done (a resumed fit); window: ``(sums, n)`` of the window open at ``start``.
        signals: signals that stop the fit after the current update (the previous handlers are restored
            at the end; only in the main thread). A ``KeyboardInterrupt`` also stops it (``interrupted``).

    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> step = TrainStep(lambda: (w ** 2).sum(), [w], torch.optim.SGD([w], lr=0.1), record_each=10)
    >>> class Show(Hook):
    ...     def on_record(self, loop, record):
    ...         print(record["update"], record["n"], len(record["values"]), f"lr {loop.lr:.3f}")
    >>> FitLoop(step, lambda t: (), updates=25, log_every=10, schedule=cosine_schedule(0.1, 0.01, 25),
    ...         hooks=[Show()]).run()
    10 10 10 lr 0.074
    20 10 10 lr 0.022
    25 5 5 lr 0.010
    'completed'
    """

    def __init__(
        self,
        step: TrainStep,
        inputs: Callable[[int], Sequence[Any]],
        *,
        updates: int,
        log_every: int,
        schedule: Schedule | None = None,
        hooks: Sequence[Hook] = (),
        strategy: Strategy | None = None,
        start: int = 0,
        window: tuple[Sequence[float], int] | None = None,
        signals: Sequence[int] = (signal.SIGINT,),
    ) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        if step.capacity and step.capacity < log_every:
            raise ValueError(f"record_each ({step.capacity}) must be at least log_every ({log_every})")
        self.step, self.inputs, self.updates, self.log_every = step, inputs, updates, log_every
        self.schedule, self.hooks = schedule, list(hooks)
        self.strategy: Strategy = strategy or Local()
        self.update = self._checked = start
        self.signals = tuple(signals)
        self.lr: float | None = None
        self._signal: int | None = None
        self._anywhere = False
        self._status: str | None = None
        sums, self._n = (None, 0) if window is None or not window[1] else (window[0], int(window[1]))
        step.reset_window(sums)

    # -- for hooks ------------------------------------------------------------------------------------
    def stop(self, status: str) -> None:
        """Stop after this update with ``status`` (e.g. ``early_stopped``)."""
        self._status = status

    def check(self) -> tuple[list[float], int]:
        """Read the device values now (every process): raises :class:`Diverged` after a NaN or inf;
        returns ``(sums, n)`` of the open window (means over processes), e.g. to store in a checkpoint."""
        rows = self.strategy.gather(torch.cat([self.step.state(), self._flag()]))
        k = len(self.step.sums)
        ok, ok_loss, good, good_loss, flag = (rows[:, k + i] for i in range(5))
        self._anywhere = self._anywhere or bool(flag.max() > 0)
        bad = ok < 1
        if bool(bad.any()):
            first_at = self._checked + good + 1  # per process: the update of its first non-finite value
            first = int(first_at[bad].min())
            loss_at = torch.where(ok_loss < 1, self._checked + good_loss + 1, math.inf)
            world = rows.shape[0]
            if bool((loss_at == first).any()):  # data parallel: the processes whose loss it was at that update
                raise Diverged(first, self.update, self._checked, "loss", int((loss_at == first).sum()), world)
            raise Diverged(first, self.update, self._checked, "gradient norm",
                           int((bad & (first_at == first)).sum()), world)
        self.step.reset_checks()
        self._checked = self.update
        sums = [float(v) for v in rows[:, :k].sum(0)]
        return [s / rows.shape[0] for s in sums], self._n

    def flush(self) -> dict[str, Any] | None:
        """Close the open window now and return its record (None when it is empty), e.g. in
        :meth:`Hook.on_end` to keep the updates done before an interrupt."""
        return self._record() if self._n else None

    @property
    def window(self) -> int:
        """Updates in the open window."""
        return self._n

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until ``updates``, a signal or a hook's stop; returns the status (``completed``,
        ``interrupted`` or the hook's). Raises :class:`Diverged` after a NaN or inf."""
        status = "completed"
        with self._interrupts():
            try:
                while self.update < self.updates:
                    if self.strategy.should_stop(self._signal is not None, self._anywhere):
                        status = "interrupted"
                        break
                    t0 = self.update
                    inputs = self.inputs(t0)
                    if self.schedule is not None:
                        self.lr = self.schedule(t0)
                        self.step.set_lr(self.lr)
                    self.step(*inputs)
                    self.update, self._n = t0 + 1, self._n + 1
                    t = self.update
                    if t % self.log_every == 0 or t == self.updates or any(h.records(t) for h in self.hooks):
                        record = self._record()
                        for h in self.hooks:
                            h.on_record(self, record)
                    if self._status is not None:
                        status = self._status
                        break
                    for h in self.hooks:
                        h.after_update(self, t)
            except KeyboardInterrupt:  # no handler installed (not the main thread), or raised by a hook
                status = "interrupted"
            # still under the loop's handlers: a signal while the hooks finish (a checkpoint, the history) is
            # recorded, not raised into them, so what they write is complete
            for h in self.hooks:
                h.on_end(self, status)
        return status

    def _record(self) -> dict[str, Any]:
        sums, n = self.check()
        names = ("loss", *self.step.aux_names)
        record: dict[str, Any] = {"update": self.update, "n": n}
        record.update({name: s / n for name, s in zip(names, sums, strict=True)})
        if self.step.capacity:
            record["values"] = self.step.recorded()
        self.step.reset_window()
        self._n = 0
        return record

    def _flag(self) -> Tensor:
        return torch.tensor([0.0 if self._signal is None else 1.0], dtype=torch.float64, device=self.step.device)

    @contextmanager
    def _interrupts(self) -> Iterator[None]:
        if not self.signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            self._signal = signum

        previous = {s: signal.signal(s, handler) for s in self.signals}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
