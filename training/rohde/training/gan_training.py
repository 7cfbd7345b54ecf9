"""The GAN stage of a training run: disturbance segments of the seen trials, the GAN, its quality.

Each seen disturbed trial is cut in time: the first part trains the GAN, the last
`gan.held_out_fraction` is held out to measure how close generated segments come to real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.recording import Recording
from rohde.simulation.disturbances import affected_channels
from rohde.training.gan import DisturbanceGAN, extract_disturbance_segments, train_disturbance_gan
from rohde.training.gan_models import GANConfig
from rohde.training.gan_quality import gan_quality_report
from rohde.training.run_context import RunContext, seeded_rng

logger = logging.getLogger(__name__)


@dataclass
class TrainedGAN:
    gan: DisturbanceGAN
    quality: dict[str, Any]  # the report's "gan_quality": config, metrics, segment counts
    held_out: dict[str, np.ndarray]  # condition -> held-out real segments (N, n_region_channels, T) uV


def time_split(rec: Recording, fraction: float) -> tuple[Recording, Recording]:
    """(first 1 - fraction, last fraction) of a recording in time: GAN training vs quality hold-out."""
    cut = int(round(rec.n_samples * (1 - fraction)))

    def part(sl: slice) -> Recording:
        mask = None if rec.disturbance_mask is None else rec.disturbance_mask[sl]
        return replace(rec, samples=rec.samples[sl], labels=rec.labels[sl], disturbance_mask=mask)

    return part(slice(0, cut)), part(slice(cut, None))


def gan_config(ctx: RunContext, *, progress: bool) -> GANConfig:
    """The preset of the run's config with its overrides applied."""
    settings = ctx.config.gan
    base = GANConfig.tiny() if settings.preset == "tiny" else GANConfig()
    config = GANConfig.from_dict({**base.to_dict(), **settings.overrides})
    return config if progress else replace(config, progress=False)


def train_gan(ctx: RunContext, seen: Sequence[Recording], *, progress: bool = True) -> TrainedGAN:
    """Train the conditional WGAN-GP on the seen disturbed trials and measure it on their held-out ends."""
    settings = ctx.config.gan
    config = gan_config(ctx, progress=progress)
    layout = ctx.template.layout
    regions = {c: [int(ch) for ch in affected_channels(layout, c)] for c in ctx.config.augment.conditions}
    fitted, held = {}, {}
    for condition in ctx.config.augment.conditions:
        pieces = [time_split(r, settings.held_out_fraction) for r in seen if r.condition == condition]
        fitted[condition], held[condition] = (
            extract_disturbance_segments([p[i] for p in pieces], condition=condition, segment_ms=config.segment_ms,
                                         hop_ms=settings.hop_ms, region_channels=regions[condition])
            for i in (0, 1)
        )  # fmt: skip
        logger.info("GAN %s: %s training and %s held-out segments of %s channels", condition,
                    len(fitted[condition]), len(held[condition]), len(regions[condition]))  # fmt: skip
    gan = train_disturbance_gan(
        fitted,
        fs_hz=ctx.preprocessing.fs_hz,
        config=config,
        region_channels=regions,
        out_dir=ctx.work_dir / "gan",
        seed=ctx.config.seed,
        device=ctx.device,
    )
    quality: dict[str, Any] = {"config": config.to_dict()}
    try:
        quality["metrics"] = gan_quality_report(gan, held, fs_hz=ctx.preprocessing.fs_hz,
                                                rng=seeded_rng(ctx.config.seed, 7))  # fmt: skip
    except (ImportError, ConfigError):  # figures for the report: their failure must not end the run
        logger.exception("GAN quality figures failed; the report will lack them.")
        quality["metrics"] = {}
    quality["segments"] = {c: {"train": int(len(fitted[c])), "held_out": int(len(held[c]))} for c in fitted}
    return TrainedGAN(gan=gan, quality=quality, held_out=held)
