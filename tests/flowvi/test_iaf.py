"""Inverse autoregressive flow (Kingma et al. 2016): MADE masks, log-det against autograd, the
sequential inverse, the context, float32 property tests at extreme raw parameters."""

import pytest
import torch
from flow_cases import (
    autograd_logdet,
    check_inverse_accurate_or_warned,
    check_logdet_batched,
    make_step_transform,
    warns_ill_conditioned,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian

import flowvi as fv
from flowvi.transforms import MADE, made_masks

DIMS = (1, 2, 5, 20)
FAMILIES = ("iaf", "iaf-reverse")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", (0.3, 1.0, 3.0, 5.0))  # 5: σ down to e^{−200}
def test_logdet_matches_autograd_jacobian(family, dim, scale):
    """Against slogdet of the autograd Jacobian; at σ down to e^{−200} (scale 5) LU's slogdet of the
    (triangular, tested below) Jacobian loses digits, so there against ln |Π diag J| as well."""
    t, _, _ = make_step_transform(family, dim, scale=scale, seed=dim)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = 2.0 * torch.randn(dim, generator=g, dtype=torch.float64)
        y, ladj = t.call_and_ladj(x)
        assert torch.isfinite(ladj)
        jac = jacobian(t, x)
        assert (jac.triu(1) if family == "iaf" else jac.tril(-1)).abs().max().item() == 0.0
        torch.testing.assert_close(ladj, torch.diagonal(jac).abs().log().sum(), rtol=1e-9, atol=1e-9)
        if scale <= 3.0:
            torch.testing.assert_close(ladj, autograd_logdet(t, x), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ladj)


@pytest.mark.parametrize("family", FAMILIES)
def test_jacobian_is_triangular_with_diagonal_sigma(family):
    """The autoregressive property: ∂y_i/∂z_j = 0 for j > i (j < i when reversed), diag = σ."""
    t, _, _ = make_step_transform(family, 6, scale=2.0, seed=3)
    x = torch.randn(6, dtype=torch.float64)
    jac = jacobian(t, x)
    zero, nonzero = (jac.triu(1), jac.tril(-1)) if family == "iaf" else (jac.tril(-1), jac.triu(1))
    assert zero.abs().max().item() == 0.0
    assert nonzero.abs().max().item() > 1e-3  # the step is not elementwise
    m, s = t.net(x)
    torch.testing.assert_close(torch.diagonal(jac), torch.sigmoid(s))


def test_made_masks_connect_exactly_the_allowed_paths():
    """Output i reads inputs < i through some path, and never input ≥ i; degree-0 units reach every output."""
    for dim, hidden, depth in ((1, 4, 1), (3, 5, 2), (6, 16, 3)):
        masks = made_masks(dim, hidden, depth)
        paths = masks[0]
        for mk in masks[1:]:
            paths = mk @ paths
        allowed = torch.tril(torch.ones(dim, dim), -1)
        assert torch.equal((paths > 0).float(), allowed)
        assert bool((masks[-1] @ (torch.arange(hidden) % dim == 0).float() > 0).all())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", (0.3, 0.6, 1.0))
def test_inverse_round_trip(family, dim, scale):
    """The sequential inverse (D passes): round trip < 1e-9 relative in float64, per-point contexts.

    (Where σ_i < 1e-7 the forward map itself rounds z_i away, y_i ≈ m_i: no inverse recovers it; the
    scales here keep σ above 1e-3.)"""
    t, _, _ = make_step_transform(family, dim, batch=(8,), scale=scale, seed=dim + 7)
    x = 3.0 * torch.randn(16, 8, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = t(x)
    err = ((t.inv(y) - x).abs() / (1 + x.abs())).max().item()
    assert err < 1e-9, f"round-trip error {err:.2e}"
    y2 = 4.0 * torch.randn(8, dim, dtype=torch.float64)  # points not sampled from the flow
    torch.testing.assert_close(t(t.inv(y2)), y2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_context_logdet_per_point(family):
    t, raw, step = make_step_transform(family, 4, batch=(3,), scale=2.0, seed=5)
    check_logdet_batched(t, raw, step, torch.randn(2, 3, 4, dtype=torch.float64))


def test_context_changes_the_step_and_reaches_the_first_coordinate():
    """A per-point context moves every coordinate, the first included (which no input may reach)."""
    made = MADE(3, hidden=8, depth=2).double()
    torch.nn.init.normal_(made.out.weight)
    z = torch.randn(3, dtype=torch.float64)
    c = torch.randn(2, 8, dtype=torch.float64)
    m, s = made(z, c)
    assert m.shape == (2, 3)
    assert bool(((m[0] - m[1]).abs() > 1e-6).all()) and bool(((s[0] - s[1]).abs() > 1e-6).all())


def test_step_starts_at_the_gate_bias():
    step = fv.IAF(3, gate_bias=2.0)
    t = step.build(step.layout())
    z = torch.randn(5, 3)
    y, ladj = t.call_and_ladj(z)
    sigma = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(y, sigma * z)
    torch.testing.assert_close(ladj, torch.full((5,), 3 * torch.log(sigma).item()))


def test_flow_log_prob_through_the_sequential_inverse():
    flow = fv.NormalizingFlow(4, fv.make_steps("iaf", 4, 3, hidden=16), context_features=5).double()
    for p in flow.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    q = flow(torch.randn(6, 5, dtype=torch.float64))
    z, log_q = q.rsample_and_log_prob((7,))
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-9, atol=1e-9)


RAW = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.booleans(), st.data())
def test_property_finiteness_float32(dim, reverse, data):
    """Context and MADE weights anywhere in [−1e3, 1e3] (float32): σ ∈ [0, 1], outputs, log-dets and
    gradients finite (log σ = logsigmoid(s), never ln of an underflowed σ)."""
    step = fv.IAF(dim, hidden=6, depth=2, reverse=reverse)
    with torch.no_grad():
        for p in step.made.parameters():
            p.copy_(torch.tensor(data.draw(st.lists(RAW, min_size=p.numel(), max_size=p.numel()))).reshape(p.shape))
    context = torch.tensor(data.draw(st.lists(RAW, min_size=step.hidden, max_size=step.hidden)), requires_grad=True)
    t = step.build({"context": context})
    z = torch.tensor(data.draw(st.lists(RAW, min_size=dim, max_size=dim)), requires_grad=True)
    y, ladj = t.call_and_ladj(z)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all() and ladj.item() <= 0.0
    (y.sum() + ladj).backward()
    for name, leaf in (("context", context), ("z", z), *step.made.named_parameters()):
        assert torch.isfinite(leaf.grad).all(), f"non-finite gradient for {name}"


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5), st.booleans(), st.sampled_from([torch.float32, torch.float64]),
       st.sampled_from([0.1, 1.0, 10.0, 1e3]), st.floats(-40.0, 5.0), st.data())
def test_property_inverse_is_accurate_or_warns(dim, reverse, dtype, spread, gate_bias, data):
    """MADE weights anywhere in [−spread, spread], gates down to sigmoid(−40) and points up to 1e3: the sequential
    inverse comes back to within ten times the warning's threshold of z, or log_prob warns that it is
    ill-conditioned (small gates once gave NaN or a round trip 10⁴ off in float64 without a word)."""
    from flowvi.transforms.base import INVERSE_ERROR_WARN

    step = fv.IAF(dim, hidden=6, depth=2, reverse=reverse, gate_bias=gate_bias)
    unit = st.floats(-1.0, 1.0, allow_nan=False, width=32)
    with torch.no_grad():
        for p in step.made.parameters():
            drawn = torch.tensor(data.draw(st.lists(unit, min_size=p.numel(), max_size=p.numel())))
            p.copy_(spread * drawn.reshape(p.shape))
    step = step.to(dtype)
    z = torch.tensor(data.draw(st.lists(RAW, min_size=dim, max_size=dim)), dtype=dtype)
    check_inverse_accurate_or_warned(step.build(step.layout()), z, 10 * INVERSE_ERROR_WARN)


def test_ill_conditioned_inverse_warns_and_a_good_one_does_not():
    """The audit's case: gates of sigmoid(−15) in float64 (σ ≈ 3e-7, far above eps) gave NaN from log_prob with no
    word; now it warns. At the default gate bias the inverse is exact and silent, and with validation off (the check
    is one) nothing warns."""
    torch.manual_seed(0)
    for gate_bias, ill in ((-15.0, True), (2.0, False)):
        flow = fv.NormalizingFlow(4, fv.make_steps("iaf", 4, 2, hidden=8, gate_bias=gate_bias)).double()
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.1 * torch.randn_like(p))
        q = flow()
        z, log_q = q.rsample_and_log_prob((6,))
        log_prob, warned = warns_ill_conditioned(lambda: q.log_prob(z))  # noqa: B023 (called at once)
        assert warned == ill
        if not ill:
            torch.testing.assert_close(log_prob, log_q, rtol=1e-9, atol=1e-9)
        with fv.set_validation(False):
            assert not warns_ill_conditioned(lambda: flow().log_prob(z))[1]  # noqa: B023
