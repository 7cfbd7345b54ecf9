"""Networks of the conditional WGAN-GP: a 1D-conv generator and critic over `(channels, time)`.

Both networks see a fixed number of region channels `n_channels` (the largest disturbance region);
a condition with a smaller region uses its first channels and the rest are held at zero (the
generator multiplies its output by the condition's channel mask, the real segments are zero-padded),
so one conditional model serves regions of different sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from rohde.core.errors import ConfigError


@dataclass(frozen=True)
class GANConfig:
    segment_ms: float = 125.0  # length of one generated segment
    latent_dim: int = 32  # size of the noise vector z
    critic_steps: int = 5  # critic updates per generator update (seed: 5)
    gp_weight: float = 10.0  # gradient-penalty weight lambda (seed: 10)
    lr: float = 1e-4  # Adam learning rate of both networks (seed: 1e-4)
    betas: tuple[float, float] = (0.0, 0.9)  # Adam betas (seed: (0.0, 0.9))
    batch_size: int = 16  # segments per critic / generator batch
    steps: int = 400  # generator updates
    g_width: int = 16  # channels of the generator's last conv stage (doubling per stage inwards)
    c_width: int = 16  # channels of the critic's first conv stage (doubling per stage)
    n_up: int = 4  # generator upsampling stages (x2 each)
    n_down: int = 4  # critic strided conv stages (/2 each)
    kernel_size: int = 5  # conv kernel length in samples
    spectral_critic: bool = True  # give the critic a view of the log power spectrum as well
    scale_percentile: float = 75.0  # percentile of |x| used as the signed-log scale (see amplitude_scale)
    log_interval: int = 10  # generator steps between TensorBoard points
    checkpoint_interval: int = 100  # generator steps between checkpoints (when out_dir is given)
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        positive = ("segment_ms", "latent_dim", "critic_steps", "lr", "batch_size", "g_width", "c_width",
                    "kernel_size", "log_interval", "checkpoint_interval")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"GANConfig.{name} must be positive, got {getattr(self, name)!r}.")
        if self.steps < 0 or self.gp_weight < 0 or self.n_up < 0 or self.n_down < 1:
            raise ConfigError(
                f"GANConfig needs steps >= 0, gp_weight >= 0, n_up >= 0, n_down >= 1; got steps={self.steps}, "
                f"gp_weight={self.gp_weight}, n_up={self.n_up}, n_down={self.n_down}."
            )
        if len(self.betas) != 2:
            raise ConfigError(f"GANConfig.betas must be two numbers, got {self.betas!r}.")
        if not 0 < self.scale_percentile <= 100:
            raise ConfigError(f"GANConfig.scale_percentile must be in (0, 100], got {self.scale_percentile!r}.")

    @classmethod
    def tiny(cls) -> GANConfig:
        """A configuration that trains in a few seconds on a CPU (tests, smoke runs)."""
        return cls(segment_ms=32.0, latent_dim=8, batch_size=8, steps=4, g_width=8, c_width=8, n_up=2,
                   n_down=2, log_interval=1, checkpoint_interval=2, progress=False)  # fmt: skip

    def segment_samples(self, fs_hz: float) -> int:
        return max(1, int(round(self.segment_ms * fs_hz / 1000.0)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown GANConfig fields {unknown}; known fields are {sorted(known)}.")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        return cls(**values)


def remove_segment_mean(segments: np.ndarray) -> np.ndarray:
    """`(N, R, T)` segments minus each segment's per-channel mean, float32.

    The GAN models what a disturbance does within a segment, not the segment's DC level: the
    offset and slow wander (LC baselines drift by hundreds of uV) are removed by the band-pass of
    every pipeline anyway, and independent offsets per tiled segment would put steps at every
    join that the band-pass turns into clicks no real disturbance has.
    """
    return (segments - segments.mean(axis=-1, keepdims=True)).astype(np.float32)


def amplitude_scale(segments: np.ndarray, *, percentile: float = 75.0) -> float:
    """The signed-log scale of one condition: the `percentile` of |x| (uV), at least 1e-3.

    Values below the scale stay nearly linear, larger ones are compressed: EMG and mains hum keep
    their shape while mV strikes are squeezed into a few units.
    """
    return max(float(np.percentile(np.abs(segments), percentile)), 1e-3)


def signed_log(x_uv: np.ndarray | torch.Tensor, scale_uv: float) -> Any:
    """`sign(x) * log1p(|x| / scale)`: compresses mV transients while keeping EMG detail."""
    if isinstance(x_uv, torch.Tensor):
        return torch.sign(x_uv) * torch.log1p(x_uv.abs() / scale_uv)
    return np.sign(x_uv) * np.log1p(np.abs(x_uv) / scale_uv)


def inverse_signed_log(y: np.ndarray, scale_uv: float, clip: float) -> np.ndarray:
    """Inverse of `signed_log`, with |y| clipped to `clip` so an odd sample cannot explode."""
    y = np.clip(y, -clip, clip)
    return (np.sign(y) * scale_uv * np.expm1(np.abs(y))).astype(np.float32)


def init_weights(module: nn.Module) -> None:
    """He init for LeakyReLU(0.2) on conv and linear weights, biases zero, embeddings N(0, 0.02).

    Without batch norm (none here: the gradient penalty is per sample) the DCGAN N(0, 0.02) init
    shrinks activations about 3x per layer, and the generator starts near zero with vanishing
    gradients; He init keeps the activation scale through the stack.
    """
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


NOISE_INIT = 0.1  # starting strength of the generator's noise inputs


class NoiseInput(nn.Module):
    """Adds independent Gaussian noise to every feature and sample, scaled per condition and feature.

    StyleGAN's noise inputs (Karras et al. 2019): the broadband texture of a disturbance (EMG-level
    activity between CA strikes, the small noise of a lifted LC electrode) comes from here, with its
    own learned strength per condition, instead of from upsampling artefacts that every condition
    shares. The weights start at `NOISE_INIT`: from zero, CA's texture grew too slowly to be learned
    in a few hundred steps.
    """

    def __init__(self, n_conditions: int, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((n_conditions, channels), NOISE_INIT))

    def forward(self, x: torch.Tensor, condition: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)  # (B, C, T)
        return x + self.weight[condition].unsqueeze(-1) * noise


class Generator(nn.Module):
    """z `(B, latent_dim)` + condition index `(B,)` -> segment `(B, n_channels, segment_samples)`.

    A linear stem makes a short `(width * 2**n_up, T / 2**n_up)` sequence; each stage doubles the
    length (linear upsampling + conv + noise input) and halves the width. Nearest upsampling was
    used before: its steps put a broadband floor into every output, 10-30 x the real one for LC;
    linear upsampling alone starved CA of high-frequency power, which the noise inputs now supply.
    The output is linear: the data are signed-log scaled, so transients stay in a few units.
    `forward` draws its noise from `generator` (a `torch.Generator`), so a seeded one gives
    reproducible segments.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        n_conditions: int,
        n_channels: int,
        segment_samples: int,
        width: int,
        n_up: int,
        kernel_size: int,
        channel_masks: torch.Tensor,
    ) -> None:
        super().__init__()
        self.segment_samples = segment_samples
        self.n_channels = n_channels
        self.start_len = math.ceil(segment_samples / 2**n_up)
        self.start_width = width * 2**n_up
        self.embed = nn.Embedding(n_conditions, latent_dim)
        self.stem = nn.Linear(2 * latent_dim, self.start_width * self.start_len)
        w = self.start_width
        pad = kernel_size // 2
        self.convs = nn.ModuleList()
        self.noises = nn.ModuleList()
        for _ in range(n_up):
            self.convs.append(nn.Conv1d(w, w // 2, kernel_size, padding=pad))
            self.noises.append(NoiseInput(n_conditions, w // 2))
            w //= 2
        self.head = nn.Conv1d(w, n_channels, kernel_size, padding=pad)
        # (n_conditions, n_channels) 1.0 on the condition's region channels, 0.0 on the padding.
        self.register_buffer("channel_masks", channel_masks.float())
        self.apply(init_weights)

    def forward(
        self, z: torch.Tensor, condition: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        h = torch.cat([z, self.embed(condition)], dim=1)  # (B, 2 * latent_dim)
        h = nn.functional.leaky_relu(self.stem(h), 0.2)
        h = h.view(z.shape[0], self.start_width, self.start_len)  # (B, W0, T0)
        for conv, noise in zip(self.convs, self.noises, strict=True):
            h = nn.functional.interpolate(h, scale_factor=2, mode="linear", align_corners=False)
            h = nn.functional.leaky_relu(noise(conv(h), condition, generator), 0.2)  # (B, W, 2T)
        x = self.head(h)[:, :, : self.segment_samples]  # (B, C, T)
        masks: torch.Tensor = self.channel_masks  # type: ignore[assignment]
        return x * masks[condition].unsqueeze(-1)


class Critic(nn.Module):
    """Segment `(B, n_channels, T)` + condition `(B,)` -> Wasserstein score `(B,)`.

    Strided convs without batch norm (the gradient penalty is per sample, batch norm would couple
    samples), global pooling so any T works, and a projection term `<embed(condition), features>`
    that makes the score condition-aware. With `segment_samples` given, a spectral branch adds a
    (condition-projected) linear score of the log power spectrum averaged over channels: small
    conv critics are slow to notice a wrong spectrum (mains harmonics, excess high-frequency power),
    and a direct view of it gives the generator that signal from the start.
    """

    def __init__(
        self,
        *,
        n_conditions: int,
        n_channels: int,
        width: int,
        n_down: int,
        kernel_size: int,
        segment_samples: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        w_in, w = n_channels, width
        pad = kernel_size // 2
        for _ in range(n_down):
            layers += [nn.Conv1d(w_in, w, kernel_size, stride=2, padding=pad), nn.LeakyReLU(0.2)]
            w_in, w = w, w * 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(w_in, 1)
        self.embed = nn.Embedding(n_conditions, w_in)
        self.spectral: nn.Linear | None = None
        self.spectral_embed: nn.Embedding | None = None
        if segment_samples is not None:
            n_freqs = segment_samples // 2 + 1
            self.spectral = nn.Linear(n_freqs, 1)
            self.spectral_embed = nn.Embedding(n_conditions, n_freqs)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, F, T / 2**n_down)
        # Mean and RMS over time: the RMS lets the critic see amplitude bursts the mean washes out.
        h = h.mean(dim=2) + h.pow(2).mean(dim=2).add(1e-8).sqrt()  # (B, F)
        score = self.out(h).squeeze(1) + (self.embed(condition) * h).sum(dim=1)
        if self.spectral is not None and self.spectral_embed is not None:
            spec = torch.fft.rfft(x, dim=2)  # (B, C, T // 2 + 1)
            power = (spec.real.pow(2) + spec.imag.pow(2)).mean(dim=1)  # (B, n_freqs)
            log_power = torch.log(power + 1e-3)
            score = score + self.spectral(log_power).squeeze(1) + (self.spectral_embed(condition) * log_power).sum(1)
        return score


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    condition: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] on random interpolates of real and fake.

    `x_hat = eps * real + (1 - eps) * fake` with one `eps ~ U(0, 1)` per sample (Gulrajani et al. 2017),
    drawn from `generator` unless given as `eps` `(B, 1, 1)` (data-parallel ranks draw a global batch's).
    """
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    score = critic(x_hat, condition)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norms = grad.flatten(start_dim=1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def channel_masks(conditions: Sequence[str], region_channels: dict[str, list[int]], n_channels: int) -> torch.Tensor:
    masks = torch.zeros(len(conditions), n_channels)
    for i, c in enumerate(conditions):
        masks[i, : len(region_channels[c])] = 1.0
    return masks


def make_generator(
    config: GANConfig, conditions: Sequence[str], region_channels: dict[str, list[int]], n_channels: int,
    segment_samples: int,
) -> Generator:  # fmt: skip
    return Generator(latent_dim=config.latent_dim, n_conditions=len(conditions), n_channels=n_channels,
                     segment_samples=segment_samples, width=config.g_width, n_up=config.n_up,
                     kernel_size=config.kernel_size,
                     channel_masks=channel_masks(conditions, region_channels, n_channels))  # fmt: skip
