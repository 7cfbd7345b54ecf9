"""The held-out disturbance kind never reaches training: augmentation and the GAN refuse it."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.simulation.disturbances import HELD_OUT_KIND, HeldOutDisturbanceError
from rohde.simulation.simulator import simulate_recording
from rohde.training import augment
from rohde.training.gan import train_disturbance_gan
from rohde.training.gan_models import GANConfig
from tests.training.conftest import SMALL_CONFIG


def test_augmentation_and_gan_refuse_the_held_out_kind() -> None:
    rec = simulate_recording(config=SMALL_CONFIG, subject=1, session=1, trial=1, condition="clean", seed=0)
    with pytest.raises(HeldOutDisturbanceError):
        augment.oracle_augment(rec, HELD_OUT_KIND, seed=0)
    with pytest.raises(HeldOutDisturbanceError):
        augment.oracle_augment(rec, f"LC+{HELD_OUT_KIND}", seed=0)
    with pytest.raises(HeldOutDisturbanceError):
        augment.gan_augment(rec, object(), HELD_OUT_KIND, rng=np.random.default_rng(0))
    segments = {HELD_OUT_KIND: np.zeros((4, 2, 64), dtype=np.float32)}
    with pytest.raises(HeldOutDisturbanceError):
        train_disturbance_gan(segments, fs_hz=1000.0, config=GANConfig.tiny(), region_channels={HELD_OUT_KIND: [0, 1]})
    # Every other placed kind is allowed to train on.
    out = augment.oracle_augment(rec, "pop", seed=0)
    assert out.disturbance_mask is not None and out.disturbance_mask.any()


def test_mask_augment_rebuilds_random_channels_from_neighbours() -> None:
    rec = simulate_recording(config=SMALL_CONFIG, subject=1, session=1, trial=1, condition="clean", seed=0)
    out = augment.mask_augment(rec, rng=np.random.default_rng(0), block_ms=500.0, severity=(0.1, 0.3))
    assert out.samples.shape == rec.samples.shape and np.array_equal(out.labels, rec.labels)
    block = int(0.5 * rec.fs_hz)
    changed = [set(np.flatnonzero((out.samples[s : s + block] != rec.samples[s : s + block]).any(axis=0)))
               for s in range(0, rec.n_samples, block)]  # fmt: skip
    assert all(1 <= len(c) <= 0.3 * rec.n_channels + 1 for c in changed)
    assert len({frozenset(c) for c in changed}) >= len(changed) - 1  # new channels every block
