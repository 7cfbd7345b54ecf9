"""Small simulated recordings for the training tests (two sessions, clean / CA / LC) and a tiny trained GAN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rohde.core.recording import Recording
from rohde.simulation.simulator import SimulatorConfig, simulate_recording
from rohde.training.gan import DisturbanceGAN, train_disturbance_gan
from rohde.training.gan_models import GANConfig

GAN_FS_HZ = 1000.0
# Affected channels of a 1x4x4 grid (column-major: the last row is channels 3, 7, 11, 15).
GAN_REGIONS = {"CA": [8, 9, 10, 11, 12, 13], "LC": [3, 7, 11, 15]}

SMALL_CONFIG = SimulatorConfig(
    fs_hz=1000.0,
    layout="2x4x4",
    gestures=("no_movement", "hand_close", "hand_open"),
    rest_s=0.6,
    gesture_s=1.0,
    ramp_s=0.1,
    repetitions=1,
)


def small_recordings() -> list[Recording]:
    """Per session: three clean trials, one CA and one LC trial of one subject (32 ch, 1000 Hz)."""
    recordings = []
    for session in (1, 2):
        trial = 0
        for condition, count in (("clean", 3), ("CA", 1), ("LC", 1)):
            for _ in range(count):
                trial += 1
                recordings.append(
                    simulate_recording(config=SMALL_CONFIG, subject=1, session=session, trial=trial,
                                       condition=condition, seed=0)  # fmt: skip
                )
    return recordings


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small simulated `.rohde.npz` recordings, written once per test session."""
    out = tmp_path_factory.mktemp("small_sim")
    for rec in small_recordings():
        rec.save(out / f"s01_{rec.session}_{rec.trial}_{rec.condition}")
    return out


def disturbed_segments(rng: np.random.Generator, n: int, t: int) -> dict[str, np.ndarray]:
    """Segments with the character of each condition: sparse large transients on EMG-level noise (CA),
    low-level noise plus a slow drift (LC)."""
    ca = 15.0 * rng.standard_normal((n, len(GAN_REGIONS["CA"]), t))
    hits = rng.random((n, len(GAN_REGIONS["CA"]))) < 0.5
    onset = rng.integers(0, t // 2, size=n)
    decay = np.exp(-np.arange(t) / 4.0)
    for i in range(n):
        ca[i, hits[i], onset[i] :] += 400.0 * decay[: t - onset[i]]
    drift = np.sin(2 * np.pi * rng.random((n, 1, 1)) + np.linspace(0, 1, t)[None, None, :])
    lc = 3.0 * rng.standard_normal((n, len(GAN_REGIONS["LC"]), t)) + 50.0 * drift
    return {"CA": ca.astype(np.float32), "LC": lc.astype(np.float32)}


@pytest.fixture(scope="session")
def gan_segments() -> dict[str, np.ndarray]:
    return disturbed_segments(np.random.default_rng(0), 48, GANConfig.tiny().segment_samples(GAN_FS_HZ))


@pytest.fixture(scope="session")
def trained_gan(
    tmp_path_factory: pytest.TempPathFactory, gan_segments: dict[str, np.ndarray]
) -> tuple[DisturbanceGAN, Path]:
    """A tiny GAN trained once per test session, with the folder of its checkpoint and TensorBoard log."""
    out_dir = tmp_path_factory.mktemp("gan")
    gan = train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=GANConfig.tiny(), region_channels=GAN_REGIONS,
                                out_dir=out_dir, seed=3)  # fmt: skip
    return gan, out_dir
