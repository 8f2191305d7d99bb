"""The discretized logistic likelihood (a distribution over the 256 levels of each pixel-channel, stable
in float32, finite gradients at the edge bins), the DLGM for 8-bit images, and MNIST unchanged by it."""

from __future__ import annotations

import math

import pytest
import torch

from flowvi_experiments.models import DLGM, DLGMConfig
from flowvi_experiments.models.likelihood import DiscretizedLogistic, build_likelihood, discretized_logistic_log_prob
from flowvi_experiments.training import TrainConfig
from flowvi_experiments.training.trainer import build_model, build_optimizer, loss_and_bound

LEVELS = torch.arange(256) / 255.0


def _grid(dtype):
    """Locations and log-scales from far outside [0, 1] and tiny scales to very wide ones."""
    loc = torch.tensor([-3.0, -0.2, 0.0, 0.001, 0.37, 0.5, 0.999, 1.0, 1.3, 4.0], dtype=dtype)
    log_scale = torch.tensor([-7.0, -5.0, -3.0, -1.0, 0.0, 2.0, 5.0], dtype=dtype)
    return torch.meshgrid(loc, log_scale, indexing="ij")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_the_256_levels_of_a_pixel_sum_to_one(dtype, tol):
    loc, log_scale = _grid(dtype)
    x = LEVELS.to(dtype)[:, None, None]
    log_p = discretized_logistic_log_prob(x, loc, log_scale)  # (256, 10, 7)
    total = torch.logsumexp(log_p, 0)
    assert torch.isfinite(log_p).all()
    assert total.abs().max().item() < tol


def test_matches_the_logistic_cdf_difference():
    loc, log_scale = _grid(torch.float64)
    x = (torch.arange(256, dtype=torch.float64) / 255)[:, None, None]
    h = 0.5 / 255
    upper = torch.where(x == 1, 1.0, torch.sigmoid((x + h - loc) / log_scale.exp()))
    lower = torch.where(x == 0, 0.0, torch.sigmoid((x - h - loc) / log_scale.exp()))
    mass = upper - lower
    ok = mass > 1e-6  # where the plain difference of CDFs is still accurate in float64
    ours = discretized_logistic_log_prob(x, loc, log_scale)
    assert ok.sum() > 1000
    assert torch.allclose(ours[ok], mass[ok].log(), rtol=1e-7, atol=1e-9)
    # float32 agrees with float64 wherever the bin holds non-negligible mass
    ours32 = discretized_logistic_log_prob(x.float(), loc.float(), log_scale.float()).double()
    assert torch.allclose(ours32[ok], ours[ok], rtol=1e-4, atol=1e-4)


def test_gradients_are_finite_at_the_edges_in_float32():
    loc, log_scale = _grid(torch.float32)
    for level in (0, 1, 128, 254, 255):
        mu = loc.clone().requires_grad_(True)
        ls = log_scale.clone().requires_grad_(True)
        x = torch.full_like(mu, level / 255.0)
        discretized_logistic_log_prob(x, mu, ls).sum().backward()
        assert torch.isfinite(mu.grad).all() and torch.isfinite(ls.grad).all(), level
    # an edge bin pulls the location outward: ln P(0) rises as μ falls, ln P(255) as μ rises
    mu = torch.tensor([0.5, 0.5], requires_grad=True)
    discretized_logistic_log_prob(torch.tensor([0.0, 1.0]), mu, torch.tensor([-2.0, -2.0])).sum().backward()
    assert mu.grad[0] < 0 < mu.grad[1]


def test_likelihood_component_and_cifar_dlgm():
    lik = build_likelihood("discretized_logistic")
    assert isinstance(lik, DiscretizedLogistic) and lik.params_per_dim == 2
    with pytest.raises(ValueError, match="unknown likelihood"):
        build_likelihood("gaussian")
    torch.manual_seed(0)
    model = DLGM(DLGMConfig(x_dim=3072, latent=4, hidden=8, family="planar", K=2, likelihood="discretized_logistic"))
    assert model.decoder[-1].out_features == 2 * 3072
    x = torch.randint(0, 256, (5, 3072)) / 255.0
    model.init_output_bias(x.mean(0))
    loc, log_scale = model.decoder[-1].bias.detach().chunk(2)
    assert torch.allclose(loc, x.mean(0)) and torch.allclose(log_scale, torch.full((3072,), lik.init_log_scale))
    loss = model.loss(x, beta=0.3)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0  # a probability of discrete levels: positive nats
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    s = model.sample(3)
    assert s.shape == (3, 3072) and s.min() >= 0 and s.max() <= 1


def test_train_config_pairs_the_data_with_its_likelihood():
    assert TrainConfig().likelihood == "bernoulli"
    assert TrainConfig(data="cifar10").likelihood == "discretized_logistic"
    assert build_model(TrainConfig(data="cifar10", latent=2, hidden=4)).config.x_dim == 3072
    with pytest.raises(ValueError, match="data cifar10 needs likelihood discretized_logistic"):
        TrainConfig(data="cifar10", likelihood="bernoulli")
    with pytest.raises(ValueError, match="data must be one of mnist, cifar10"):
        TrainConfig(data="svhn")


# losses of the MNIST model recorded before the likelihood became a component (same seed, CPU):
# the Bernoulli DLGM must stay bit-identical
PINNED_MNIST_LOSSES = {
    "diagonal": [231.7569122314453, 232.4551544189453, 230.87826538085938, 233.6873779296875],
    "planar": [235.35952758789062, 233.50540161132812, 235.4766082763672, 234.2452850341797],
}


@pytest.mark.parametrize("family, K", [("diagonal", 0), ("planar", 3)])
def test_mnist_losses_are_pinned(family, K):
    cfg = TrainConfig(family=family, K=K, latent=4, hidden=16, optimizer="adam", lr=1e-3)
    torch.manual_seed(0)
    model = build_model(cfg)
    x = (torch.rand(20, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    model.init_output_bias(x.mean(0))
    opt = build_optimizer(cfg, model.parameters())
    losses = []
    for _ in range(4):
        loss, _ = loss_and_bound(model, x, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses == pytest.approx(PINNED_MNIST_LOSSES[family], rel=1e-6)
