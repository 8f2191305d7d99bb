"""Sylvester flows (van den Berg et al. 2018): log-det against autograd, orthogonality of Q, the
invertibility condition, no inverse, float32 property tests at extreme raw parameters."""

import pytest
import torch
from flow_cases import SYLVESTER, autograd_logdet, check_logdet_batched, make_step, make_step_transform
from hypothesis import given, settings
from hypothesis import strategies as st

import flowvi as fv
from flowvi.transforms import (
    SYLVESTER_MARGIN,
    InverseNotAvailable,
    SylvesterTransform,
    cayley_orthogonal,
    householder_orthogonal,
    upper_triangular,
)

DIMS = (1, 2, 5, 20)
SCALES = (0.3, 1.0, 5.0, 30.0)  # 30: saturated tanh, diagonals at ±(1 − margin), large off-diagonals


@pytest.mark.parametrize("family", SYLVESTER)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("scale", SCALES)
def test_logdet_matches_autograd_jacobian(family, dim, scale):
    t, _, _ = make_step_transform(family, dim, scale=scale, seed=dim)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = 2.0 * torch.randn(dim, generator=g, dtype=torch.float64)
        y, ladj = t.call_and_ladj(x)
        assert torch.isfinite(ladj)
        torch.testing.assert_close(ladj, autograd_logdet(t, x), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ladj)


@pytest.mark.parametrize("family", SYLVESTER)
@pytest.mark.parametrize("dim", (1, 4))
def test_batched_parameters_logdet_per_point(family, dim):
    """One parameter set per data point (as the amortized head gives), inputs (S, B, D)."""
    t, raw, step = make_step_transform(family, dim, batch=(3,), scale=2.0, seed=5)
    x = torch.randn(2, 3, dim, dtype=torch.float64)
    check_logdet_batched(t, raw, step, x)


@pytest.mark.parametrize("family", SYLVESTER)
@pytest.mark.parametrize("scale", (1.0, 30.0))
def test_q_has_orthonormal_columns(family, scale):
    t, _, _ = make_step_transform(family, 7, batch=(4,), scale=scale, seed=2)
    qtq = t.q.transpose(-1, -2) @ t.q
    eye = torch.eye(t.m, dtype=torch.float64).expand_as(qtq)
    torch.testing.assert_close(qtq, eye, rtol=0, atol=1e-12)


def test_cayley_and_householder_are_orthogonal_for_any_raw_values():
    raw = 1e3 * torch.randn(5, 10, dtype=torch.float64)
    q = cayley_orthogonal(raw, 5, 3)
    torch.testing.assert_close(q.transpose(-1, -2) @ q, torch.eye(3, dtype=torch.float64).expand(5, 3, 3),
                               rtol=0, atol=1e-9)
    v = torch.randn(2, 3, 4, dtype=torch.float64)
    v[0, 1] = 0.0  # a zero reflection vector is the identity reflection
    q = householder_orthogonal(v)
    torch.testing.assert_close(q @ q.transpose(-1, -2), torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    tiny = householder_orthogonal(torch.tensor([[1e-30, 0.0, 0.0], [1e-13, 2e-13, 0.0]]))  # float32
    torch.testing.assert_close(tiny @ tiny.T, torch.eye(3), rtol=0, atol=1e-6)
    # Q = H_1 H_2 H_3 explicitly
    hs = [torch.eye(4, dtype=torch.float64) - 2 * torch.outer(u, u) / (u @ u) for u in v[1]]
    torch.testing.assert_close(q[1], hs[0] @ hs[1] @ hs[2])


def test_invertibility_condition_by_construction():
    """r_ii r̃_ii > −1 (Theorem 2, ‖tanh'‖∞ = 1) however large the raw diagonals, and det J > 0."""
    t, _, _ = make_step_transform("sylvester-orth", 6, batch=(50,), scale=1e3, seed=3)
    assert bool((t.diag_prod > -1.0).all())
    assert t.diag_prod.min().item() >= -((1 - SYLVESTER_MARGIN) ** 2) - 1e-15
    from torch.autograd.functional import jacobian

    t1, _, _ = make_step_transform("sylvester-orth", 6, scale=30.0, seed=4)
    for _ in range(5):
        sign, _ = torch.linalg.slogdet(jacobian(t1, 3 * torch.randn(6, dtype=torch.float64)))
        assert sign.item() == 1.0


def test_diagonals_at_the_bound_give_the_smallest_determinant():
    """r_ii = −r̃_ii = 1 − margin and R̃Qᵀz + b = 0: every factor is 1 − (1 − margin)², finite."""
    d = torch.full((2,), 1 - SYLVESTER_MARGIN, dtype=torch.float64)
    r = upper_triangular(d, torch.zeros(1, dtype=torch.float64))
    t = SylvesterTransform(torch.eye(2, dtype=torch.float64), r, -r, torch.zeros(2, dtype=torch.float64))
    _, ladj = t.call_and_ladj(torch.zeros(2, dtype=torch.float64))
    expected = 2 * torch.log1p(-(1 - torch.tensor(SYLVESTER_MARGIN, dtype=torch.float64)) ** 2)
    torch.testing.assert_close(ladj, expected)


def test_rank_one_orthogonal_sylvester_is_a_planar_step():
    """M = 1: z + q r tanh(r̃ qᵀz + b) is the planar flow with u = r q, w = r̃ q (eq. 10)."""
    t, _, _ = make_step_transform("sylvester-orth-m", 2, scale=1.0, seed=6)  # M = 1
    q, r, rt = t.q[:, 0], t.r[0, 0], t.r_tilde[0, 0]
    p = fv.PlanarTransform(rt * q, r * q, t.b[0])
    x = torch.randn(10, 2, dtype=torch.float64)
    y, ladj = t.call_and_ladj(x)
    yp, lp = p.call_and_ladj(x)
    torch.testing.assert_close(y, yp)
    torch.testing.assert_close(ladj, lp)


def test_no_inverse_raises_the_named_error():
    t, _, _ = make_step_transform("sylvester-householder", 3, seed=1)
    with pytest.raises(InverseNotAvailable, match="no closed-form inverse"):
        t.inv(torch.zeros(3, dtype=torch.float64))
    q = fv.NormalizingFlow(3, fv.make_steps("sylvester-orth", 3, 2))()
    with pytest.raises(InverseNotAvailable):
        q.log_prob(torch.zeros(1, 3))
    assert issubclass(fv.InverseNotAvailable, NotImplementedError)


def test_triangular_steps_alternate_identity_and_reversal():
    steps = fv.make_steps("sylvester-triangular", 3, 3)
    assert torch.equal(steps[0].perm, torch.eye(3)) and torch.equal(steps[1].perm, torch.eye(3).flip(-1))
    assert torch.equal(steps[2].perm, torch.eye(3))


@pytest.mark.parametrize("step", [lambda: fv.SylvesterOrthogonal(4, shared_q=True),
                                  lambda: fv.SylvesterHouseholder(4, reflections=2, shared_q=True)])
def test_shared_q_is_a_step_parameter_not_a_per_point_one(step):
    """``shared_q``: the source of ``q`` is the step's own global parameter while R, R̃ and b stay in
    the head (chosen per parameter), so the head is D(D−1)/2 (or T·D) outputs narrower."""
    shared, per_point = step(), step()
    per_point.shared = frozenset()
    assert shared.shared == {"q"} and "q" in shared.layout()
    flow = fv.NormalizingFlow(4, [shared], context_features=3)
    full = fv.NormalizingFlow(4, [per_point], context_features=3)
    assert [n for n, _ in shared.named_parameters()] == ["q"] and not list(per_point.parameters())
    assert full.head.out_features - flow.head.out_features == shared.layout()["q"].numel()
    q = flow(torch.randn(2, 3))
    assert q.transforms[0].q.shape == (4, 4) and q.transforms[0].r.shape == (2, 4, 4)  # one Q, R per point
    z, log_q = q.rsample_and_log_prob((5,))
    (z.sum() + log_q.sum()).backward()
    assert shared.q.grad is not None and shared.q.grad.abs().sum() > 0


def test_sharing_a_name_the_layout_lacks_is_refused():
    step = fv.SylvesterOrthogonal(3)
    step.shared = frozenset({"Q"})
    with pytest.raises(ValueError, match=r"shares 'Q', which its layout does not have: it has 'r_diag'"):
        fv.NormalizingFlow(3, [step], context_features=2)


RAW = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SYLVESTER), st.integers(1, 5), st.data())
def test_property_constraint_and_finiteness_float32(family, dim, data):
    """Raw parameters anywhere in [−1e3, 1e3] (float32): r_ii r̃_ii > −1, outputs, log-dets and
    gradients (raw parameters and z) finite."""
    step = make_step(family, dim, dtype=torch.float32)
    raw = {name: torch.tensor(data.draw(st.lists(RAW, min_size=v.numel(), max_size=v.numel())),
                              dtype=torch.float32).reshape(v.shape).requires_grad_(True)
           for name, v in step.layout().items()}
    t = step.build(raw)
    assert bool((t.diag_prod > -1.0).all())
    z = torch.tensor(data.draw(st.lists(RAW, min_size=dim, max_size=dim)), requires_grad=True)
    y, ladj = t.call_and_ladj(z)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    (y.sum() + ladj).backward()
    for name, leaf in (*raw.items(), ("z", z)):
        assert torch.isfinite(leaf.grad).all(), f"non-finite gradient for {name}"


def test_householder_with_a_denormal_vector_has_finite_gradients():
    """Found by the float32 property test: ‖v‖ = 1.4e-45 made the backward of v/‖v‖ overflow to NaN."""
    from flowvi.transforms.sylvester import householder_orthogonal

    v = torch.tensor([[[1.4013e-45]], [[0.0]], [[0.5]]], requires_grad=True)  # (3 points, 1 reflection, D = 1)
    q = householder_orthogonal(v)
    assert torch.equal(q[:2], torch.ones(2, 1, 1)) and torch.equal(q[2], -torch.ones(1, 1))  # tiny v: H = I
    q.sum().backward()
    assert torch.isfinite(v.grad).all()
