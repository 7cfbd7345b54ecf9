"""GAN configuration and the WGAN-GP gradient penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rohde.core.errors import ConfigError
from rohde.training.gan_models import GANConfig, gradient_penalty

# ----------------------------------------------------------------------------- config


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = GANConfig.tiny()
    assert GANConfig.from_dict(config.to_dict()) == config
    default = GANConfig()
    assert (default.critic_steps, default.gp_weight, default.lr, default.betas) == (5, 10.0, 1e-4, (0.0, 0.9))
    with pytest.raises(ConfigError, match="latent_dim"):
        GANConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="Unknown GANConfig fields"):
        GANConfig.from_dict({"segment_ms": 10.0, "learning_rate": 1.0})


# ----------------------------------------------------------------------------- gradient penalty


class _LinearCritic(torch.nn.Module):
    """f(x) = <w, x>: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


class _QuadraticCritic(torch.nn.Module):
    """f(x) = ||x||^2 / 2: its gradient at the interpolate x_hat is x_hat itself."""

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).flatten(1).sum(1)


def test_gradient_penalty_of_linear_critic_is_exact() -> None:
    w = torch.full((1, 2, 3), 0.5)  # ||w|| = sqrt(6) * 0.5
    real, fake = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    gp = gradient_penalty(_LinearCritic(w), real, fake, torch.zeros(4, dtype=torch.long))
    assert gp.item() == pytest.approx((np.sqrt(6) * 0.5 - 1.0) ** 2, rel=1e-6)


def test_gradient_penalty_uses_per_sample_interpolates() -> None:
    real, fake = torch.randn(5, 3, 7), torch.randn(5, 3, 7)
    gp = gradient_penalty(_QuadraticCritic(), real, fake, torch.zeros(5, dtype=torch.long),
                          generator=torch.Generator().manual_seed(11))  # fmt: skip
    eps = torch.rand(5, 1, 1, generator=torch.Generator().manual_seed(11))
    x_hat = eps * real + (1 - eps) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_penalty_is_differentiable_for_the_critic() -> None:
    critic = _LinearCritic(torch.full((1, 2, 3), 0.5))
    gp = gradient_penalty(critic, torch.randn(2, 2, 3), torch.randn(2, 2, 3), torch.zeros(2, dtype=torch.long))
    gp.backward()
    assert critic.w.grad is not None and torch.all(critic.w.grad != 0)
