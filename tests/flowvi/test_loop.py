"""The library's fit loop (flowvi.loop): one update without host synchronisation, the schedule, the
windows of the history, the non-finite checks, interrupts and hooks; the compiled update (slow)."""

import math
import os
import signal

import pytest
import torch

import flowvi as fv
from flowvi.distribution import diagonal_normal_log_prob
from flowvi.loop import Diverged, FitLoop, Hook, TrainStep, cosine_schedule, functional_update
from flowvi.validation import validation_enabled


def regression(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    return model, x, y


def noisy_loss(model, x, y):
    """A Monte Carlo objective: fresh noise every update, like a free energy."""
    pred = model(x + 0.1 * torch.randn_like(x))
    loss = ((pred - y) ** 2).mean()
    return loss, (loss.detach() * 2,)


# the clipping the step does without rescaling when the factor is 1 (CPU): always, sometimes, never, not asked for
@pytest.mark.parametrize("grad_clip", [1e-3, 0.5, 1e3, 0.0])
def test_eager_loop_is_bit_identical_to_a_hand_written_loop(grad_clip):
    schedule = cosine_schedule(1e-2, 1e-4, 12)
    clipped = []
    model, x, y = regression()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(7)
    losses = []
    for t in range(12):
        for g in opt.param_groups:
            g["lr"] = schedule(t)
        loss, _ = noisy_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
        clipped.append(bool(norm > grad_clip) if grad_clip else False)
        opt.step()
        losses.append(float(loss.detach()))
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model, x, y = regression()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    records = []

    class Keep(Hook):
        def on_record(self, loop, record):
            records.append(record)

    torch.manual_seed(7)
    step = TrainStep(lambda: noisy_loss(model, x, y), list(model.parameters()), opt, aux_names=("twice",),
                     grad_clip=grad_clip, record_each=5)
    status = FitLoop(step, lambda t: (), updates=12, log_every=5, schedule=schedule, hooks=[Keep()]).run()
    assert status == "completed"
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert [r["update"] for r in records] == [5, 10, 12] and [r["n"] for r in records] == [5, 5, 2]
    assert [v for r in records for v in r["values"]] == losses
    assert records[0]["loss"] == sum(losses[:5]) / 5  # float64 sums on the device: the host's sum, exactly
    assert records[2]["twice"] == pytest.approx(2 * sum(losses[10:]) / 2, rel=1e-6)
    expect_clipping = {1e-3: "all", 0.5: "some", 1e3: "none", 0.0: "none"}[grad_clip]
    assert {"all": all(clipped), "some": any(clipped) and not all(clipped), "none": not any(clipped)}[expect_clipping]


def test_value_checks_that_are_off_are_not_even_computed():
    built = []

    def checks():
        built.append(1)
        return [("x has {n} NaN entries", torch.isnan(torch.tensor([0.0, math.nan])))]

    fv.validation.check_values(checks, enabled=False)
    with fv.set_validation(False):
        fv.validation.check_values(checks)
    assert built == []
    with pytest.raises(fv.validation.NonFiniteError, match="x has 1 NaN entries"):
        fv.validation.check_values(checks, enabled=True)
    assert built == [1]


def poisoned(at: int, how: str):
    """A loss that is NaN (``how="loss"``) or has a NaN gradient (``"grad"``) at call ``at``."""
    model, x, y = regression()
    calls = [0]

    def objective():
        calls[0] += 1
        loss = ((model(x) - y) ** 2).mean()
        if calls[0] == at and how == "loss":
            loss = loss * math.nan
        elif calls[0] == at:
            loss = loss * 1.0
            loss.register_hook(lambda g: g * math.nan)
        return loss

    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    return TrainStep(objective, list(model.parameters()), opt)


@pytest.mark.parametrize("how, what", [("loss", "loss"), ("grad", "gradient norm")])
def test_a_nan_is_found_at_the_next_check_and_named(how, what):
    step = poisoned(7, how)  # call 1 is the checked pass before update 1: call 7 is update 6

    class CheckAt5(Hook):
        def after_update(self, loop, update):
            if update == 5:
                loop.check()

    loop = FitLoop(step, lambda t: (), updates=20, log_every=4, hooks=[CheckAt5()])
    with pytest.raises(Diverged) as info:
        loop.run()
    err = info.value
    assert (err.update, err.checked, err.clean, err.what) == (6, 8, 5, what)
    assert str(err) == (f"non-finite {what} at update 6 (between the clean check after update 5 and the check "
                        "after update 8)")
    assert loop.update == 8  # updates went on, without a synchronisation, until the check


def test_sigint_stops_after_the_current_update_and_restores_the_handler():
    model, x, y = regression()
    opt = torch.optim.Adam(model.parameters())
    before = signal.getsignal(signal.SIGINT)

    def inputs(t):
        if t == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return ()

    ends = []

    class End(Hook):
        def on_end(self, loop, status):
            ends.append((status, loop.update, loop.flush()["n"]))

    step = TrainStep(lambda: noisy_loss(model, x, y), list(model.parameters()), opt, aux_names=("twice",))
    assert FitLoop(step, inputs, updates=50, log_every=10, hooks=[End()]).run() == "interrupted"
    assert ends == [("interrupted", 4, 4)]  # update 4 finished, then the loop stopped; its window flushed
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_while_the_hooks_finish_does_not_cut_them_short():
    """on_end (where a run writes its last checkpoint and history) runs under the loop's handler: a SIGTERM there
    is recorded, not delivered to the handler from before the loop (by default: the end of the process), and
    that handler is back afterwards."""
    model, x, y = regression()
    opt = torch.optim.Adam(model.parameters())
    leaked, written = [], []

    def earlier(signum, frame):  # stands for the default action, which would end the process inside the hook
        leaked.append(signum)

    class SlowWriter(Hook):
        def on_end(self, loop, status):
            os.kill(os.getpid(), signal.SIGTERM)
            written.append(status)

    step = TrainStep(lambda: noisy_loss(model, x, y), list(model.parameters()), opt, aux_names=("twice",))
    previous = signal.signal(signal.SIGTERM, earlier)
    try:
        loop = FitLoop(step, lambda t: (), updates=3, log_every=3, hooks=[SlowWriter()], signals=(signal.SIGTERM,))
        assert loop.run() == "completed"
        assert signal.getsignal(signal.SIGTERM) is earlier
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert written == ["completed"] and leaked == []


def test_hooks_ask_for_records_and_stop_the_loop():
    model, x, y = regression()
    step = TrainStep(lambda: noisy_loss(model, x, y), list(model.parameters()), torch.optim.Adam(model.parameters()),
                     aux_names=("twice",))
    seen, after = [], []

    class Every3(Hook):
        def records(self, update):
            return update % 3 == 0

        def on_record(self, loop, record):
            seen.append(record["update"])
            if record["update"] == 9:
                loop.stop("early_stopped")

        def after_update(self, loop, update):
            after.append(update)

    assert FitLoop(step, lambda t: (), updates=20, log_every=4, hooks=[Every3()]).run() == "early_stopped"
    assert seen == [3, 4, 6, 8, 9] and after == list(range(1, 9))


def test_a_resumed_window_continues_its_sums():
    model, x, y = regression()
    step = TrainStep(lambda: noisy_loss(model, x, y), list(model.parameters()), torch.optim.Adam(model.parameters()),
                     aux_names=("twice",), record_each=4)
    out = []

    class Keep(Hook):
        def on_record(self, loop, record):
            out.append(record)

    FitLoop(step, lambda t: (), updates=8, log_every=4, start=6, window=([10.0, 20.0], 2), hooks=[Keep()]).run()
    (rec,) = out
    assert rec["update"] == 8 and rec["n"] == 4 and len(rec["values"]) == 2  # updates 7 and 8 ran here
    assert rec["loss"] == pytest.approx((10.0 + sum(rec["values"])) / 4)


def test_the_checks_run_once_before_the_first_update_and_never_in_it():
    model, x, y = regression()
    states = []

    def objective():
        states.append(validation_enabled())
        return noisy_loss(model, x, y)

    step = TrainStep(objective, list(model.parameters()), torch.optim.Adam(model.parameters()), aux_names=("twice",))
    FitLoop(step, lambda t: (), updates=3, log_every=3).run()
    assert states == [True, False, False, False] and validation_enabled()
    # the checked pass runs the library's checks: a flow with NaN parameters is named before any update
    flow = fv.NormalizingFlow(2, fv.planar_steps(2, 2))
    with torch.no_grad():
        for p in flow.parameters():
            p.fill_(math.nan)
    opt = torch.optim.Adam(flow.parameters())
    step = TrainStep(lambda: flow().rsample_and_log_prob((4,))[1].mean(), list(flow.parameters()), opt)
    with pytest.raises(fv.validation.NonFiniteError, match="non-finite"):
        step()
    assert not opt.state  # no update ran


def test_bad_settings_are_named_before_any_work():
    model, x, y = regression()
    params = list(model.parameters())
    with pytest.raises(ValueError, match="cuda_graph needs parameters on a CUDA device; these are on cpu"):
        TrainStep(lambda: noisy_loss(model, x, y), params, torch.optim.Adam(params), cuda_graph=True)
    with pytest.raises(ValueError, match="supports Adam and RMSprop, got SGD"):
        TrainStep(lambda: noisy_loss(model, x, y), params, torch.optim.SGD(params, lr=0.1), compile=True)
    with pytest.raises(ValueError, match="does not support Adam with amsgrad"):
        TrainStep(lambda: noisy_loss(model, x, y), params, torch.optim.Adam(params, amsgrad=True), compile=True)
    step = TrainStep(lambda: model(x).sum(-1), params, torch.optim.Adam(params))
    with pytest.raises(ValueError, match=r"scalar loss, got a torch.float32 tensor of shape \(32,\)"):
        step()
    with pytest.raises(ValueError, match="record_each"):
        FitLoop(TrainStep(lambda: model(x).mean(), params, torch.optim.Adam(params), record_each=2), lambda t: (),
                updates=5, log_every=4)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9),
    lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True, weight_decay=0.01),
], ids=["adam", "adam-wd", "adamw", "rmsprop-momentum", "rmsprop-centered"])
def test_the_functional_update_is_torch_optims_step(make):
    """What a compiled or captured step runs: torch.optim's arithmetic with a tensor learning rate."""
    results = []
    for functional in (False, True):
        model, x, y = regression()
        opt = make(list(model.parameters()))
        for t in range(5):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            if functional and t > 0:  # the state exists after one step of torch's own
                with torch.no_grad():
                    functional_update(opt)(opt, torch.tensor(opt.param_groups[0]["lr"], dtype=torch.float64))
            else:
                opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # float32 rounding of the same arithmetic


def test_the_diagonal_gaussian_log_density_is_torchs_in_both_orders():
    torch.manual_seed(0)
    x, loc, scale = torch.randn(5, 3, 4), torch.randn(3, 4), torch.rand(3, 4) + 0.5
    ref = torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(diagonal_normal_log_prob(x, loc, scale), ref)
    torch.testing.assert_close(diagonal_normal_log_prob(x, loc, scale, termwise=True), ref)
    std = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(diagonal_normal_log_prob(x), std)
    torch.testing.assert_close(diagonal_normal_log_prob(x, termwise=True), std)


# -- the compiled update (torch.compile(fullgraph=True) of loss, backward and the optimizer) ----------
class Keep(Hook):
    def __init__(self) -> None:
        self.seen = []

    def on_record(self, loop, record):
        self.seen.append(record)


def dlgm_step(family: str, K: int, compile: bool, optimizer: str = "adam"):
    from flowvi_experiments.training import TrainConfig
    from flowvi_experiments.training.trainer import AnnealedObjective, build_model, build_optimizer

    cfg = TrainConfig(family=family, K=K, latent=4, hidden=8, window=2, batch_size=10, optimizer=optimizer, lr=1e-3,
                      grad_clip=5.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model.parameters())
    step = TrainStep(AnnealedObjective(model), list(model.parameters()), opt, aux_names=("bound",),
                     grad_clip=cfg.grad_clip, compile=compile, record_each=3)
    return model, step


@pytest.mark.slow
@pytest.mark.parametrize("family, K, optimizer", [("planar", 2, "adam"), ("radial", 2, "rmsprop"),
                                                  ("diagonal", 0, "adam"), ("nice-perm", 2, "adam"),
                                                  ("nice-orth", 2, "adam")])
def test_compiled_and_eager_updates_agree(family, K, optimizer):
    """Three updates of a small DLGM, eager and as one compiled graph (minutes of compile on a loaded CPU):
    the same losses and bounds (the same random numbers: fallback_random) and the same parameters."""
    g = torch.Generator().manual_seed(1)
    xs = [(torch.rand(10, 784, generator=g) < 0.3).float() for _ in range(3)]
    out = []
    for compile in (False, True):
        model, step = dlgm_step(family, K, compile, optimizer)
        torch.manual_seed(5)
        keep = Keep()
        FitLoop(step, lambda t: (xs[t], 0.5), updates=3, log_every=3, schedule=cosine_schedule(1e-3, 1e-4, 3),
                hooks=[keep]).run()
        records = keep.seen
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}  # of the last update
        state = {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        out.append((records[0], state, grads))  # (NICE-orth's extra state, its fixed Q, is a dict)
    (eager, p_eager, g_eager), (compiled, p_compiled, g_compiled) = out
    assert g_compiled.keys() == g_eager.keys()
    for k in g_eager:
        torch.testing.assert_close(g_compiled[k], g_eager[k], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(compiled["values"]), torch.tensor(eager["values"]), rtol=1e-5, atol=1e-4)
    assert compiled["bound"] == pytest.approx(eager["bound"], rel=1e-5)
    for k in p_eager:
        torch.testing.assert_close(p_compiled[k], p_eager[k], rtol=1e-4, atol=1e-5)


# -- CUDA (skipped without a GPU: the lead runs these on one) ------------------------------------------
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_run(family: str, K: int, compile: bool, cuda_graph: bool, updates: int = 4):
    from flowvi_experiments.training import TrainConfig
    from flowvi_experiments.training.trainer import AnnealedObjective, build_model, build_optimizer

    cfg = TrainConfig(family=family, K=K, latent=4, hidden=8, window=2, batch_size=10, optimizer="adam", lr=1e-3,
                      grad_clip=5.0, device="cuda")
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    step = TrainStep(AnnealedObjective(model), list(model.parameters()), build_optimizer(cfg, model.parameters()),
                     aux_names=("bound",), grad_clip=5.0, compile=compile, cuda_graph=cuda_graph, record_each=updates)
    g = torch.Generator().manual_seed(1)
    xs = [(torch.rand(10, 784, generator=g) < 0.3).float().cuda() for _ in range(updates)]
    torch.manual_seed(5)
    keep = Keep()
    loop = FitLoop(step, lambda t: (xs[t], 0.5), updates=updates, log_every=updates, hooks=[keep])
    return loop, keep, model


@CUDA
def test_no_synchronisation_per_update_on_cuda():
    loop, keep, _ = cuda_run("planar", 2, False, False, updates=5)
    loop.step(*loop.inputs(0))  # the checked pass and the first update may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in range(1, 4):
            loop.step.set_lr(1e-3)
            loop.step(*loop.inputs(t))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@CUDA
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_cuda_graph_update_agrees_with_eager(compile):
    runs = []
    for graph in (False, True):
        loop, keep, model = cuda_run("planar", 2, compile and graph, graph)
        assert loop.run() == "completed"
        runs.append((keep.seen[0], [p.detach().clone() for p in model.parameters()]))
    (eager, p_eager), (graph, p_graph) = runs
    assert all(math.isfinite(v) for v in graph["values"])
    torch.testing.assert_close(torch.tensor(graph["values"]), torch.tensor(eager["values"]), rtol=1e-4, atol=1e-3)
    for a, b in zip(p_graph, p_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
