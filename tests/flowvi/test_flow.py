"""NormalizingFlow and FlowPosterior: global and amortized parameters through one abstraction."""

import math

import pytest
import torch

import flowvi as fv

FAMILIES = ["planar", "radial", "nice-perm", "nice-orth"]


def _flow(family, dim=3, K=4, context=None, dtype=torch.float64):
    torch.manual_seed(0)
    return fv.NormalizingFlow(dim, fv.make_steps(family, dim, K), context_features=context).to(dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_global_flow_sample_and_density_agree(family):
    q = _flow(family)()
    z, log_q = q.rsample_and_log_prob((200,))
    assert z.shape == (200, 3) and log_q.shape == (200,)
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_amortized_flow_gives_one_posterior_per_data_point(family):
    flow = _flow(family, context=6)
    for p in flow.parameters():  # make the head matter
        p.data.normal_(0, 0.5)
    h = torch.randn(5, 6, dtype=torch.float64)
    q = flow(h)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    z, log_q = q.rsample_and_log_prob((7,))
    assert z.shape == (7, 5, 3) and log_q.shape == (7, 5)
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=1e-8, atol=1e-8)
    # data point i's posterior equals the flow evaluated on h[i] alone
    for i in range(5):
        torch.testing.assert_close(flow(h[i : i + 1]).log_prob(z[:, i : i + 1]), log_q[:, i : i + 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_flow_density_integrates_to_one(family):
    """ln q_K through the inverses is a normalized density (quadrature on a wide 2-D grid)."""
    torch.manual_seed(1)
    kw = {"hidden": 8, "depth": 1} if family.startswith("nice") else {}
    flow = fv.NormalizingFlow(2, fv.make_steps(family, 2, 3, **kw)).double()
    for p in flow.parameters():
        # radial: β near −α makes a density spike at z0 that a 601² grid cannot resolve
        p.data.add_({"planar": 0.8, "radial": 0.4}.get(family, 0.3) * torch.randn_like(p))
    q = flow()
    xs = torch.linspace(-12, 12, 601, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = q.log_prob(grid).exp().sum() * (xs[1] - xs[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=2e-3)


def test_log_q_matches_change_of_variables_formula():
    """Eq. (7) computed by hand from the steps equals rsample_and_log_prob."""
    flow = _flow("planar", K=3)
    q = flow()
    torch.manual_seed(3)
    z, log_q = q.rsample_and_log_prob((4,))
    torch.manual_seed(3)
    eps = torch.randn(4, 3, dtype=torch.float64)
    z0 = q.loc + q.scale * eps
    expected = q.base.log_prob(z0)
    x = z0
    for t in q.transforms:
        y = t(x)
        expected = expected - t.log_abs_det_jacobian(x, y)
        x = y
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(log_q, expected)


def test_rsample_is_differentiable_in_every_parameter():
    flow = _flow("planar", context=4)
    h = torch.randn(2, 4, dtype=torch.float64)
    z, log_q = flow(h).rsample_and_log_prob((3,))
    (z.sum() + log_q.sum()).backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert flow.head.linear.weight.grad.abs().sum() > 0


def test_fixed_standard_normal_base():
    flow = fv.NormalizingFlow(2, fv.planar_steps(2, 2), base=fv.StandardNormal(2))
    q = flow()
    torch.testing.assert_close(q.loc, torch.zeros(2))
    torch.testing.assert_close(q.scale, torch.ones(2))
    assert all("base" not in n for n, _ in flow.named_parameters())


def test_diagonal_flow_is_the_gaussian():
    q = fv.NormalizingFlow(3, [])()
    z = torch.randn(10, 3)
    expected = torch.distributions.Normal(torch.zeros(3), torch.ones(3)).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), expected)


def test_sample_has_no_grad_and_entropy_estimate():
    q = fv.NormalizingFlow(2, fv.planar_steps(2, 2), base=fv.StandardNormal(2))()
    assert not q.sample((5,)).requires_grad
    # identity-ish flow: entropy of N(0, I_2) = 1 + ln 2π
    fv_entropy = q.entropy_estimate(20000).item()
    assert abs(fv_entropy - (1 + math.log(2 * math.pi))) < 0.3


def test_amortized_flow_starts_like_the_global_one():
    torch.manual_seed(0)
    amortized = fv.NormalizingFlow(3, fv.planar_steps(3, 2), context_features=5)
    q = amortized(torch.zeros(4, 5))
    torch.testing.assert_close(q.loc, torch.zeros(4, 3))
    torch.testing.assert_close(q.scale, torch.ones(4, 3))


def test_base_is_an_object_and_trainable_base_a_shorthand():
    fixed = fv.NormalizingFlow(2, fv.planar_steps(2, 2), base=fv.StandardNormal(2))
    assert isinstance(fv.NormalizingFlow(2, [], trainable_base=False).base, fv.StandardNormal)
    assert isinstance(fv.NormalizingFlow(2, []).base, fv.DiagonalNormal)
    q = fixed()
    assert torch.equal(q.loc, torch.zeros(2)) and torch.equal(q.scale, torch.ones(2))
    amortized = fv.NormalizingFlow(2, [], base=fv.StandardNormal(2), context_features=3)
    assert amortized(torch.zeros(4, 3)).batch_shape == (4,)  # the fixed base, once per data point
    glob = fv.NormalizingFlow(2, fv.planar_steps(2, 1), base=fv.DiagonalNormal(2, amortize=False), context_features=3)
    q = glob(torch.randn(4, 3))
    assert q.batch_shape == (4,) and torch.equal(q.loc[0], q.loc[1])  # global q_0, amortized steps
    with pytest.raises(ValueError, match="not both"):
        fv.NormalizingFlow(2, [], base=fv.StandardNormal(2), trainable_base=False)
    with pytest.raises(ValueError, match="asks for amortized parameters"):
        fv.NormalizingFlow(2, [fv.Planar(2, amortize=True)])
