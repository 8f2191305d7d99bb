"""The DLGM of the MNIST experiment (section 6.2): Maxout, shapes, amortization, the objective, families."""

import pytest
import torch

from flowvi import free_energy
from flowvi_experiments.family_table import FAMILIES, Family, register_family
from flowvi_experiments.models import DLGM, DLGMConfig, Maxout, build_posterior, posterior_families
from flowvi_experiments.training.trainer import loss_and_bound

SMALL = dict(x_dim=784, latent=4, hidden=16, window=4)


def binary(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=g) < 0.3).float()


def test_maxout_is_max_over_windows_of_four():
    layer = Maxout(5, 3, window=4)
    x = torch.randn(7, 5)
    lin = layer.linear(x).reshape(7, 3, 4)
    assert torch.equal(layer(x), lin.max(-1).values)
    assert layer(torch.randn(2, 6, 5)).shape == (2, 6, 3)
    with pytest.raises(ValueError, match="window"):
        Maxout(5, 3, window=0)


def test_default_architecture_is_the_papers():
    cfg = DLGMConfig()
    assert (cfg.latent, cfg.hidden, cfg.window, cfg.stochastic_layers) == (40, 400, 4, 1)
    m = DLGM(family="planar", K=2)
    assert m.encoder[0].out_features == 400 and m.encoder[0].window == 4
    assert m.posterior.amortized and m.posterior.dim == 40 and m.posterior.K == 2


@pytest.mark.parametrize("family,K", [("diagonal", 0), ("planar", 3), ("radial", 2), ("nice-perm", 2),
                                      ("nice-orth", 2)])
@pytest.mark.parametrize("layers", [1, 2])
def test_shapes_and_gradients(family, K, layers):
    torch.manual_seed(0)
    m = DLGM(family=family, K=K, stochastic_layers=layers, **SMALL)
    x = binary(5)
    q = m.q(x)
    z, log_q = q.rsample_and_log_prob((3,))
    assert z.shape == (3, 5, 4 * layers) and log_q.shape == (3, 5)
    log_p = m.log_joint(x)(z)
    assert log_p.shape == (3, 5) and torch.isfinite(log_p).all()
    assert (log_p < 0).all()  # a Bernoulli likelihood times a density: finite, here negative
    loss = m.loss(x, beta=0.3)
    loss.backward()
    for name in ("encoder", "posterior", "decoder"):
        grads = [p.grad for p in getattr(m, name).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert m.sample(6).shape == (6, 784)
    assert m.reconstruct(x).shape == (5, 784)


def test_posterior_is_amortized_over_x():
    torch.manual_seed(0)
    m = DLGM(family="planar", K=2, **SMALL)
    with torch.no_grad():
        for p in m.posterior.parameters():
            p.normal_()
    a, b = m.q(binary(1, 0)), m.q(binary(1, 1))
    assert not torch.allclose(a.loc, b.loc)
    assert not torch.allclose(a.transforms[0].w, b.transforms[0].w)  # flow parameters depend on x too


@pytest.mark.parametrize("family", ["nice-perm", "nice-orth"])
def test_nice_couplings_amortized_or_global(family):
    """Amortized NICE couplings take a per-x first-layer bias from the encoder; global ones are
    shared by every x (the inference network then only sets q_0), and both invert exactly."""
    torch.manual_seed(0)
    x = binary(2).double()
    z = torch.randn(2, 4, dtype=torch.float64)
    shifts = {}
    for conditioning in ("amortized", "global"):
        m = DLGM(family=family, K=2, nice_conditioning=conditioning, **SMALL).double()
        with torch.no_grad():
            for p in m.posterior.parameters():
                p.normal_(0.0, 0.5)
        q = m.q(x)
        couplings = [t for t in q.transforms if type(t).__name__ == "AdditiveCouplingTransform"]
        assert len(couplings) == 2
        out = couplings[0](z)
        shifts[conditioning] = not torch.allclose(out[0], couplings[0](z.flip(0))[1])  # depends on x?
        z_k, log_q = q.rsample_and_log_prob((3,))
        assert torch.allclose(q.log_prob(z_k), log_q, atol=1e-8)  # through the analytic inverse (eq. 19)
        head = m.posterior.head.out_features
        biases = 2 * m.config.nice_hidden if conditioning == "amortized" else 0  # one per coupling
        assert head == 2 * 4 + biases  # q_0's loc and scale, then the couplings' first-layer biases
        m.loss(x).backward()
        assert all(p.grad is not None for p in m.posterior.parameters())
    assert shifts == {"amortized": True, "global": False}
    with pytest.raises(ValueError, match="conditioning must be one of amortized, global"):
        DLGM(family=family, K=2, nice_conditioning="per-layer", **SMALL)


def test_loss_is_the_annealed_free_energy():
    """loss(x, β) = mean over the batch of eq. (20); the trainer's loss_and_bound agrees on the same draw."""
    m = DLGM(family="planar", K=2, **SMALL)
    x = binary(8)
    torch.manual_seed(3)
    loss = m.loss(x, beta=0.25)
    torch.manual_seed(3)
    ref = free_energy(m.q(x), m.log_joint(x), beta=0.25).mean()
    torch.manual_seed(3)
    annealed, bound = loss_and_bound(m, x, 0.25)
    torch.manual_seed(3)
    exact = m.loss(x, beta=1.0)
    assert torch.allclose(loss, ref) and torch.allclose(annealed, loss)
    assert torch.allclose(bound, exact)
    assert annealed < bound  # β < 1 down-weights −ln p(x, z) > 0


def test_bernoulli_likelihood_matches_torch():
    m = DLGM(**SMALL)
    x = binary(4)
    z = torch.randn(2, 4, 4)
    logits = m.decode(z)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(m.log_joint(x)(z), ref + prior, atol=1e-4)


def test_output_bias_init_matches_data_mean():
    m = DLGM(**SMALL)
    x = binary(50)
    m.init_output_bias(x.mean(0))
    with torch.no_grad():
        for p in m.decoder.parameters():
            if p.dim() == 2:
                p.zero_()
    assert torch.allclose(m.sample(1)[0], x.mean(0).clamp(1e-3, 1 - 1e-3), atol=1e-5)


def test_bad_input_and_family_errors():
    m = DLGM(**SMALL)
    with pytest.raises(ValueError, match=r"shape \(B, 784\)"):
        m.loss(torch.zeros(3, 10))
    with pytest.raises(TypeError, match="floating"):
        m.loss(torch.zeros(3, 784, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown posterior family 'spline'"):
        DLGM(family="spline", K=2)
    with pytest.raises(ValueError, match="diagonal posterior has no flow steps"):
        DLGM(family="diagonal", K=3)
    with pytest.raises(ValueError, match="needs K >= 1"):
        DLGM(family="planar", K=0)
    with pytest.raises(ValueError, match="stochastic_layers"):
        DLGMConfig(stochastic_layers=3)


def test_registry_accepts_a_new_family():
    assert {"diagonal", "planar", "radial", "nice-perm", "nice-orth"} <= set(posterior_families())

    def _build(dim, K, context_features, **options):
        return build_posterior("diagonal", dim, 0, context_features)

    family = Family("test-double-diagonal", "DLGM double diagonal", dlgm=_build, min_K=0, max_K=0)
    try:
        register_family(family)
        assert "test-double-diagonal" in posterior_families()
        m = DLGM(family="test-double-diagonal", K=0, **SMALL)
        assert torch.isfinite(m.loss(binary(2)))
        with pytest.raises(ValueError, match="already registered"):
            register_family(family)
    finally:
        del FAMILIES["test-double-diagonal"]


def test_training_step_decreases_the_bound():
    """A few hundred Adam steps on a fixed batch lower F(x) (the model can learn)."""
    torch.manual_seed(0)
    m = DLGM(family="planar", K=2, **SMALL)
    x = binary(20)
    m.init_output_bias(x.mean(0))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    with torch.no_grad():
        before = m.free_energy(x, n_samples=20).mean()
    for _ in range(150):
        opt.zero_grad()
        m.loss(x).backward()
        opt.step()
    with torch.no_grad():
        after = m.free_energy(x, n_samples=20).mean()
    assert after < before - 5
