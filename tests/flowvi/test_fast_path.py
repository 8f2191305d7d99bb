"""The fused planar chain (PlanarChain step, PlanarChainTransform) against the reference path
(one Planar step, one PlanarTransform per step): outputs, log-dets (eq. 12–13) and gradients agree
to float tolerance."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import flowvi
from flowvi.transforms import ComposeFlow, PlanarChainTransform, PlanarTransform, planar_reparameterize

torch.set_num_threads(1)

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def _params(param_batch: tuple[int, ...], K: int, D: int, dtype: torch.dtype, scale: float = 1.0, seed: int = 0):
    """Constrained parameters ``(w, û, b, wᵀû)`` of shape ``(*pb, K, D)``, far from the identity."""
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(*param_batch, K, D, generator=g, dtype=dtype)
    u = scale * torch.randn(*param_batch, K, D, generator=g, dtype=dtype)
    b = torch.randn(*param_batch, K, generator=g, dtype=dtype)
    u_hat, uw = planar_reparameterize(u, w)
    return w, u_hat, b, uw


def _reference(w, u_hat, b, uw):
    K = w.shape[-2]
    steps = [
        PlanarTransform(w[..., k, :], u_hat[..., k, :], b[..., k], uw=None if uw is None else uw[..., k])
        for k in range(K)
    ]
    return ComposeFlow(steps)


def _outputs_and_grads(transform_factory, z, params):
    leaves = [z] + [p for p in params if p is not None]
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    z_leaf, rest = leaves[0], iter(leaves[1:])
    args = [next(rest) if p is not None else None for p in params]
    y, ladj = transform_factory(*args).call_and_ladj(z_leaf)
    g = torch.Generator().manual_seed(123)
    cy = torch.randn(y.shape, generator=g, dtype=y.dtype)
    cl = torch.randn(ladj.shape, generator=g, dtype=y.dtype)
    loss = (cy * y).sum() + (cl * ladj).sum()
    grads = torch.autograd.grad(loss, leaves)
    return y.detach(), ladj.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "z_shape, param_batch",
    [((7, 3), ()), ((5, 4, 3), (4,)), ((2, 5, 4, 3), (4,)), ((4, 3), (4,))],
    ids=["global", "amortized", "amortized-2sample-dims", "amortized-no-sample-dim"],
)
@pytest.mark.parametrize("given_uw", [True, False], ids=["uw-given", "uw-computed"])
def test_chain_matches_reference(dtype, z_shape, param_batch, given_uw):
    K, D = 6, z_shape[-1]
    w, u_hat, b, uw = _params(param_batch, K, D, dtype, scale=1.2)
    if not given_uw:
        uw = None
    z = torch.randn(z_shape, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 2.0
    y_f, l_f, g_f = _outputs_and_grads(PlanarChainTransform, z, (w, u_hat, b, uw))
    y_r, l_r, g_r = _outputs_and_grads(_reference, z, (w, u_hat, b, uw))
    tol = TOL[dtype]
    assert y_f.shape == y_r.shape == torch.broadcast_shapes(z_shape, (*param_batch, D))
    torch.testing.assert_close(y_f, y_r, **tol)
    torch.testing.assert_close(l_f, l_r, **tol)
    assert (l_r.abs() > 1e-2).any()  # the log-dets are not trivially zero
    names = ["z", "w", "u_hat", "b"] + (["uw"] if given_uw else [])
    for name, a, r in zip(names, g_f, g_r, strict=True):
        assert a.shape == r.shape, name
        torch.testing.assert_close(a, r, **tol, msg=lambda m, name=name: f"gradient w.r.t. {name}: {m}")


def test_chain_gradcheck_float64():
    w, u_hat, b, uw = _params((3,), 4, 2, torch.float64, scale=1.0)
    z = torch.randn(2, 3, 2, dtype=torch.float64)
    inputs = [x.clone().requires_grad_() for x in (z, w, u_hat, b, uw)]

    def f(z, w, u_hat, b, uw):
        return PlanarChainTransform(w, u_hat, b, uw=uw).call_and_ladj(z)

    assert torch.autograd.gradcheck(f, inputs)


def test_chain_operators_pass_torch_library_opcheck():
    """The chain's forward and backward operators (``flowvi::planar_chain``, ``flowvi::planar_chain_backward``):
    schema, fake (meta) kernels with the real kernels' shapes and strides, autograd registration, and AOT
    dispatch, as :func:`torch.library.opcheck` tests them; on strided parameter views as the chain passes them,
    and with one of the two output gradients missing."""
    from flowvi.transforms.planar_chain import _chain_backward_op, _chain_op

    g = torch.Generator().manual_seed(3)
    K, B, D = 3, 4, 5
    # parameters laid out (B, K, D) as a head emits them, passed step-major as strided views
    w, u = (torch.randn(B, K, D, dtype=torch.float64, generator=g).movedim(1, 0) for _ in range(2))
    u = 0.3 * u
    b = torch.randn(B, K, dtype=torch.float64, generator=g).movedim(1, 0)
    c = torch.linalg.vecdot(w, u).clamp(min=-0.5)
    z = torch.randn(B, D, dtype=torch.float64, generator=g)
    leaves = [x.clone().requires_grad_() for x in (z, w, u, b, c)]
    torch.library.opcheck(_chain_op, tuple(leaves))
    with torch.no_grad():
        saved = _chain_op(z, w, u, b, c)[2:]
    g_out, g_ladj = torch.randn(B, D, dtype=torch.float64), torch.randn(B, dtype=torch.float64)
    for grads, needs in (((g_out, g_ladj), [True] * 5), ((None, g_ladj), [False, True, True, False, True]),
                         ((g_out, None), [True, False, True, True, False])):
        torch.library.opcheck(_chain_backward_op, (z, w, u, b, c, *saved, *grads, needs))


def test_chain_only_one_output_used():
    """Gradients flow when only ``y`` or only the log-det is used (the other grad is None)."""
    w, u_hat, b, uw = _params((), 5, 3, torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64)
    for pick in (0, 1):
        outs = []
        for factory in (PlanarChainTransform, _reference):
            zz = z.clone().requires_grad_()
            ww = w.clone().requires_grad_()
            out = factory(ww, u_hat, b, uw).call_and_ladj(zz)[pick]
            outs.append(torch.autograd.grad(out.sin().sum(), (zz, ww)))
        for a, r in zip(*outs, strict=True):
            torch.testing.assert_close(a, r)


def test_chain_without_grad_matches_with_grad():
    w, u_hat, b, uw = _params((4,), 8, 3, torch.float64)
    z = torch.randn(5, 4, 3, dtype=torch.float64)
    chain = PlanarChainTransform(w, u_hat, b, uw=uw)
    with torch.no_grad():
        y0, l0 = chain.call_and_ladj(z)
    y1, l1 = chain.call_and_ladj(z.requires_grad_())
    torch.testing.assert_close(y0, y1.detach())
    torch.testing.assert_close(l0, l1.detach())


def test_chain_inverse_round_trip_and_log_abs_det():
    w, u_hat, b, uw = _params((4,), 5, 3, torch.float64)
    chain = PlanarChainTransform(w, u_hat, b, uw=uw)
    z = torch.randn(6, 4, 3, dtype=torch.float64)
    y, ladj = chain.call_and_ladj(z)
    torch.testing.assert_close(chain.inv(y), z, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(chain.log_abs_det_jacobian(z, y), ladj)
    assert chain.K == 5 and len(chain.steps()) == 5


def test_chain_log_det_matches_autograd_jacobian():
    """ln|det ∂f/∂z| of the whole chain (eq. 13) against the determinant of the autograd Jacobian."""
    w, u_hat, b, uw = _params((), 7, 3, torch.float64, scale=1.5)
    chain = PlanarChainTransform(w, u_hat, b, uw=uw)
    z = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: chain.call_and_ladj(x)[0], z)
    torch.testing.assert_close(chain.call_and_ladj(z)[1], torch.linalg.slogdet(jac)[1])


def test_chain_rejects_bad_input():
    w, u_hat, b, _ = _params((), 3, 2, torch.float64)
    with pytest.raises(ValueError, match="same shape"):
        PlanarChainTransform(w, u_hat[..., :1], b)
    with pytest.raises(ValueError, match="b must have shape"):
        PlanarChainTransform(w, u_hat, b[:2])
    with pytest.raises(ValueError, match="non-finite"):
        PlanarChainTransform(w, u_hat, torch.full_like(b, float("nan")))
    with pytest.raises(ValueError, match="last .*dimension of size 2"):
        PlanarChainTransform(w, u_hat, b).call_and_ladj(torch.zeros(4, 3, dtype=torch.float64))


def _flow_results(flow: flowvi.NormalizingFlow, context, n_samples: int = 3):
    torch.manual_seed(7)
    q = flow(context)
    z, log_q = q.rsample_and_log_prob((n_samples,))
    loss = (z.sin().sum() + (log_q * torch.linspace(0.5, 1.5, log_q.numel()).view_as(log_q)).sum())
    grads = torch.autograd.grad(loss, list(flow.parameters()) + ([context] if context is not None else []))
    log_p = q.log_prob(z.detach())
    return z.detach(), log_q.detach(), torch.cat([g.reshape(-1) for g in grads]), log_p.detach(), q


def _fused_and_reference(D: int, H: int | None, dtype: torch.dtype):
    """The same flow twice: planar runs as PlanarChain steps (the factory's choice) and as K Planar
    steps (the reference). Same seed, so the same initial values; the reference then moves away from
    the near-identity start and the fused flow takes the same values (parameters in the same order)."""
    flows = []
    for fused in (True, False):
        torch.manual_seed(0)
        steps = flowvi.planar_steps(D, 5, fused) + flowvi.radial_steps(D, 2) + flowvi.planar_steps(D, 3, fused)
        steps += flowvi.nice_steps(D, 1, hidden=8) + flowvi.planar_steps(D, 1, fused)
        flows.append(flowvi.NormalizingFlow(D, steps, context_features=H).to(dtype))
    fast, ref = flows
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.5 * torch.randn_like(p))
    vector_to_parameters(parameters_to_vector(ref.parameters()), fast.parameters())
    return fast, ref


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("amortized", [False, True], ids=["global", "amortized"])
def test_fused_and_per_step_flows_agree(dtype, amortized):
    D, H = 4, 6
    fast, ref = _fused_and_reference(D, H if amortized else None, dtype)
    assert fast.K == ref.K == 5 + 2 + 3 + 2 + 1  # the NICE step is a permutation and a coupling
    context = torch.randn(5, H, dtype=dtype, requires_grad=True) if amortized else None
    z_r, lq_r, g_r, lp_r, q_r = _flow_results(ref, context)
    z_f, lq_f, g_f, lp_f, q_f = _flow_results(fast, context)
    assert len(q_r.transforms) == 5 + 2 + 3 + 2 + 1
    assert [type(t).__name__ for t in q_f.transforms] == [
        "PlanarChainTransform", "RadialTransform", "RadialTransform", "PlanarChainTransform",
        "PermutationTransform", "AdditiveCouplingTransform", "PlanarChainTransform",
    ]
    tol = TOL[dtype]
    torch.testing.assert_close(z_f, z_r, **tol)
    torch.testing.assert_close(lq_f, lq_r, **tol)
    inv_tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(lp_f, lp_r, **inv_tol)
    torch.testing.assert_close(lp_f, lq_f, **inv_tol)
    torch.testing.assert_close(g_f, g_r, **tol)


def test_factory_chooses_the_fused_chain():
    assert [type(s) for s in flowvi.planar_steps(3, 4)] == [flowvi.PlanarChain]
    assert [type(s) for s in flowvi.make_steps("planar", 3, 4, fused=False)] == [flowvi.Planar] * 4
    flow = flowvi.NormalizingFlow(3, flowvi.planar_steps(3, 4))
    assert [type(t) for t in flow().transforms] == [PlanarChainTransform]
    ref = flowvi.NormalizingFlow(3, flowvi.planar_steps(3, 4, fused=False))
    assert [type(t) for t in ref().transforms] == [PlanarTransform] * 4
    chain = flow().transforms[0]
    assert [type(t) for t in chain.steps()] == [PlanarTransform] * 4


def test_amortized_chain_checks_context():
    flow = flowvi.NormalizingFlow(3, flowvi.planar_steps(3, 2), context_features=5)
    with pytest.raises(ValueError, match="needs a context"):
        flow(None)
    with pytest.raises(ValueError, match="last dimension 5"):
        flow(torch.zeros(2, 4))


def test_free_energy_training_step_same_on_both_paths():
    """One optimiser step of eq. (15) moves the parameters identically on both paths."""
    D = 2

    def log_joint(z):
        return -0.5 * ((z - 1.0) ** 2).sum(-1) * 3.0

    states = []
    for fused in (False, True):
        torch.manual_seed(3)
        flow = flowvi.NormalizingFlow(D, flowvi.planar_steps(D, 8, fused), base=flowvi.StandardNormal(D)).double()
        opt = torch.optim.SGD(flow.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            flowvi.free_energy(flow(), log_joint, n_samples=64).backward()
            opt.step()
        states.append(parameters_to_vector(flow.parameters()).detach())
    torch.testing.assert_close(states[0], states[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chain_on_strided_parameter_views_gives_the_contiguous_results_exactly(dtype):
    """The chain reads an amortized head's slices in place (views with a row stride, as
    ``PlanarChain.build`` splits them out of one ``(B, K, 2D + 1)`` block): outputs, log-dets and
    gradients are bit for bit those of contiguous copies, so skipping the copies changes no number."""
    B, K, D = 6, 5, 3
    g = torch.Generator().manual_seed(4)
    wub = torch.randn(B, K, 2 * D + 1, generator=g, dtype=dtype)
    z0 = torch.randn(2, B, D, generator=g, dtype=dtype)
    results = []
    for contiguous in (False, True):
        leaf = wub.clone().requires_grad_()
        z = z0.clone().requires_grad_()
        w, u, b = leaf.split([D, D, 1], -1)
        u_hat, uw = planar_reparameterize(u, w)
        parts = (w, u_hat, b.squeeze(-1), uw)
        if contiguous:
            parts = tuple(x.contiguous() for x in parts)
        else:
            assert not w.is_contiguous() and not b.squeeze(-1).is_contiguous()
        y, ladj = PlanarChainTransform(*parts[:3], uw=parts[3]).call_and_ladj(z)
        (y.square().sum() + (ladj * torch.arange(ladj.numel(), dtype=dtype).view(ladj.shape)).sum()).backward()
        results.append((y.detach(), ladj.detach(), leaf.grad, z.grad))
    for strided, copied in zip(*results, strict=True):
        assert torch.equal(strided, copied)
