"""Flow posteriors under ``torch.compile(fullgraph=True)``: one graph, the same values and gradients as eager.

With value checks off (``with flowvi.set_validation(False)``, the training loop's hot path), building a
posterior from encoder features and drawing ``rsample_and_log_prob`` is one graph for every family of the
family table: nothing data-dependent is left per call (a NICE mask and permutation, an orthogonal ``Q``,
are checked once, when the step is built or loaded). HVI needs ``torch._dynamo.config.trace_autograd_ops``
(its leapfrog steps call ``torch.autograd.grad``). With the checks on (the default), bad inputs still
raise their one-sentence errors.

Compiling is slow on a loaded 2-core machine: the default suite compiles one mixed planar + NICE flow with
the ``aot_eager`` backend (dynamo's graph capture and AOTAutograd's traced forward and backward, eager
kernels); every family, and the inductor backend, are ``slow``.
"""

from __future__ import annotations

import pytest
import torch

import flowvi as fv
from flowvi.distribution import Context
from flowvi.transforms import (
    AdditiveCouplingTransform,
    OrthogonalTransform,
    PermutationTransform,
    PlanarTransform,
)
from flowvi.validation import NonFiniteError, validation_enabled

D, H, B, S = 3, 5, 4, 2


def log_joint(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z * z).sum(-1) - 0.1 * z[..., 0] ** 4


def _run(fn, posterior: torch.nn.Module, h: torch.Tensor):
    """``(z, ln q, gradients of every parameter)`` of a fixed loss of one draw (seeded)."""
    posterior.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    z, log_q = fn(h)
    (z.square().sum() + (log_q * torch.linspace(0.5, 1.5, log_q.numel()).view(log_q.shape)).sum()).backward()
    grads = {n: p.grad.clone() for n, p in posterior.named_parameters() if p.grad is not None}
    return z.detach(), log_q.detach(), grads


def assert_compiled_matches_eager(posterior: torch.nn.Module, backend: str) -> None:
    posterior = posterior.double()
    h = torch.randn(B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def draw(features: torch.Tensor):
        return posterior(Context(features, log_joint)).rsample_and_log_prob((S,))

    torch._dynamo.reset()
    with fv.set_validation(False):
        z_ref, lq_ref, g_ref = _run(draw, posterior, h)
        compiled = torch.compile(draw, fullgraph=True, backend=backend)
        z, lq, g = _run(compiled, posterior, h)
        z2, _, _ = _run(compiled, posterior, h)  # the cached graph: no recompilation error, same draw
    tol = dict(rtol=0.0, atol=0.0) if backend == "aot_eager" else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z, z_ref, **tol)
    torch.testing.assert_close(lq, lq_ref, **tol)
    torch.testing.assert_close(z2, z_ref, **tol)
    assert g.keys() == g_ref.keys() and g_ref  # every parameter that gets a gradient eagerly gets one compiled
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], **tol, msg=lambda m, n=name: f"{n}: {m}")
    assert validation_enabled()  # the block restored the default


def test_planar_and_nice_flow_compiles_as_one_graph_with_eager_values_and_gradients():
    """A fused planar chain, a permutation, an amortized and a global NICE coupling, and an orthogonal
    mixing, amortized from encoder features: one graph, bit-identical to eager (aot_eager backend)."""
    torch.manual_seed(0)
    steps = [fv.PlanarChain(D, 3), fv.Permutation(D), fv.AdditiveCoupling(D, parity=0, hidden=4, depth=1),
             fv.Orthogonal(D), fv.AdditiveCoupling(D, parity=1, hidden=4, depth=1, amortize=False)]
    assert_compiled_matches_eager(fv.NormalizingFlow(D, steps, context_features=H), "aot_eager")


def test_a_compiled_planar_chain_is_one_operator_whatever_its_length():
    """Compiled, the fused chain is two opaque operators (forward and hand-written backward), not its K steps
    unrolled into the graph: the forward and backward graphs of K = 2 and K = 40 have the same operations, and
    the compiled gradients equal eager ones (aot_eager: eager kernels)."""
    from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func

    def graphs(K: int) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}

        def recorder(kind: str):
            def compiler(gm: torch.fx.GraphModule, _):
                seen[kind] = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
                return make_boxed_func(gm.forward)
            return compiler

        def backend(gm, example_inputs):
            return aot_module_simplified(gm, example_inputs, fw_compiler=recorder("forward"),
                                         bw_compiler=recorder("backward"))

        g = torch.Generator().manual_seed(K)
        w, u, b = (torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
                   for shape in ((B, K, D), (B, K, D), (B, K)))
        z = torch.randn(B, D, dtype=torch.float64, generator=g)

        def loss(z, w, u, b):
            y, ladj = fv.PlanarChainTransform(w, fv.planar_constrain(u, w), b).call_and_ladj(z)
            return y.square().sum() + ladj.sum()

        torch._dynamo.reset()
        with fv.set_validation(False):
            got = torch.autograd.grad(torch.compile(loss, backend=backend, fullgraph=True)(z, w, u, b), (w, u, b))
            want = torch.autograd.grad(loss(z, w, u, b), (w, u, b))
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e, rtol=0.0, atol=0.0)
        return seen

    short = graphs(2)
    long = graphs(40)
    assert short == long
    assert short["forward"].count("flowvi.planar_chain.default") == 1
    assert short["backward"].count("flowvi.planar_chain_backward.default") == 1


def _family_cases() -> list:
    from flowvi_experiments.family_table import FAMILIES

    cases = []
    for name, fam in FAMILIES.items():
        if fam.dlgm is None:
            continue
        for conditioning in ("amortized", "global") if fam.couplings else ("amortized",):
            cases.append(f"{name}:{conditioning}" if fam.couplings else name)
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("case", _family_cases())
def test_every_family_compiles_fullgraph_with_eager_values_and_gradients(case, backend):
    """Each family's DLGM posterior, compiled vs eager (inductor: its own kernels, float64 tolerance;
    random draws through eager's generator, ``fallback_random``)."""
    from flowvi_experiments.family_table import FAMILIES
    from flowvi_experiments.models.posterior import build_posterior

    name, _, conditioning = case.partition(":")
    fam = FAMILIES[name]
    torch.manual_seed(0)
    small = {"hidden": 4, "depth": 1}  # NICE's coupling networks, the IAF's MADE; the other families take none
    options = {**small, "conditioning": conditioning} if fam.couplings else (
        {k: v for k, v in small.items() if k in {o.name for o in fam.options}})
    posterior = build_posterior(name, D, 0 if fam.max_K == 0 else 2, H, **options)
    with torch._dynamo.config.patch(trace_autograd_ops=name == "hvi"), \
            torch._inductor.config.patch(fallback_random=True):
        assert_compiled_matches_eager(posterior, backend)


# -- the checks are still there by default ------------------------------------------------------------------


def test_structural_checks_run_once_when_the_step_is_built_or_loaded():
    """A NICE step checks its mask and permutation once; the transforms it builds per call trust them, and a
    state dict with a broken permutation or mask is refused when it is loaded."""
    perm = fv.Permutation(4)
    t = perm.build({})
    assert not t.validate_args and torch.equal(t.inv_perm, torch.argsort(perm.perm))
    state = perm.state_dict()
    assert set(state) == {"perm"}  # the inverse is derived, not saved: old checkpoints still load
    with pytest.raises(ValueError, match=r"^perm must be a permutation of 0\.\.D-1 \(each index exactly once\)$"):
        perm.load_state_dict({"perm": torch.tensor([0, 1, 1, 3])})
    shuffled = torch.tensor([2, 0, 3, 1])
    perm.load_state_dict({"perm": shuffled})
    assert torch.equal(perm.inv_perm, torch.argsort(shuffled))  # recomputed for the loaded permutation

    coupling = fv.AdditiveCoupling(4, parity=0, hidden=3, depth=1)
    with pytest.raises(ValueError, match="mask must split the coordinates into two non-empty parts"):
        coupling.load_state_dict({**coupling.state_dict(), "mask": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="a loaded coupling mask has 1 of 4 positions in A, the step.s networks need"):
        coupling.load_state_dict({**coupling.state_dict(), "mask": torch.tensor([True, False, False, False])})


def test_public_transforms_still_check_their_inputs_by_default():
    """Built directly, the transforms check what they are given (one-sentence errors); ``validate_args=False``
    or ``with set_validation(False)`` skips the value checks, shapes are checked always."""
    shift = lambda z_a: z_a  # noqa: E731
    with pytest.raises(ValueError, match=r"^perm must be a permutation of 0\.\.D-1"):
        PermutationTransform(torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError, match=r"^mask must split the coordinates into two non-empty parts"):
        AdditiveCouplingTransform(torch.ones(3, dtype=torch.bool), shift)
    with pytest.raises(ValueError, match=r"^partition must be coupling_partition\(mask\)"):
        AdditiveCouplingTransform(torch.tensor([True, False]), shift,
                                  partition=(torch.tensor([1]), torch.tensor([0])))
    with pytest.raises(ValueError, match=r"^Q must be orthogonal"):
        OrthogonalTransform(2 * torch.eye(3))
    nan_w = torch.tensor([float("nan"), 0.0])
    with pytest.raises(NonFiniteError, match=r"^w has 1 non-finite entries \(NaN or inf\)$"):
        PlanarTransform(nan_w, torch.zeros(2), torch.zeros(()))
    PlanarTransform(nan_w, torch.zeros(2), torch.zeros(()), validate_args=False)  # the caller vouches
    OrthogonalTransform(2 * torch.eye(3), validate_args=False)
    with fv.set_validation(False):
        PlanarTransform(nan_w, torch.zeros(2), torch.zeros(()))
        with fv.set_validation(True):  # nested: the inner block checks again ...
            with pytest.raises(NonFiniteError):
                PlanarTransform(nan_w, torch.zeros(2), torch.zeros(()))
        assert not validation_enabled()  # ... and restores the outer setting
        with pytest.raises(ValueError, match="must have a last"):  # shapes: always
            PlanarTransform(torch.zeros(2), torch.zeros(2), torch.zeros(())).call_and_ladj(torch.zeros(3))
    assert validation_enabled()


def test_a_nan_in_a_nice_network_still_raises_in_a_compiled_posterior_with_checks_on():
    """Compiled without ``fullgraph`` and with the default checks, a NaN weight still stops the draw with
    the eager error (the check graph-breaks, as it must: it reads the data)."""
    torch.manual_seed(0)
    flow = fv.NormalizingFlow(D, fv.make_steps("nice-perm", D, 2, hidden=4, depth=1), context_features=H)
    draw = torch.compile(lambda h: flow(h).rsample_and_log_prob((S,)), backend="eager")
    draw(torch.randn(B, H))
    with torch.no_grad():
        flow.steps[1].rest[-1].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^coupling rest\.1\.weight has 1 non-finite entries \(NaN or inf\)$"):
        draw(torch.randn(B, H))
