"""The disturbance GAN: tiny training, sampling, splicing, persistence, resume, segment extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rohde.core.errors import ConfigError
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.layouts import grid_layout
from rohde.core.recording import Recording
from rohde.training.gan import (
    CHECKPOINT_NAME,
    DisturbanceGAN,
    ca_gate,
    extract_disturbance_segments,
    tile_segments,
    train_disturbance_gan,
)
from rohde.training.gan_models import GANConfig
from tests.training.conftest import GAN_FS_HZ, GAN_REGIONS

LAYOUT = grid_layout(1, 4, 4)  # 16 channels, column-major: the last row is channels 3, 7, 11, 15


# ----------------------------------------------------------------------------- training and sampling


def test_tiny_gan_samples_shapes_and_units(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained_gan
    assert gan.conditions == ("CA", "LC")
    assert gan.segment_samples == GANConfig.tiny().segment_samples(GAN_FS_HZ)
    for condition, region in GAN_REGIONS.items():
        x = gan.sample(condition, 5, np.random.default_rng(1))
        assert x.shape == (5, len(region), gan.segment_samples)
        assert x.dtype == np.float32
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(x.mean(axis=2), 0.0, atol=1e-3 * max(1.0, float(np.abs(x).max())))
    same = gan.sample("CA", 3, np.random.default_rng(9)), gan.sample("CA", 3, np.random.default_rng(9))
    np.testing.assert_array_equal(*same)
    assert gan.sample("LC", 0, np.random.default_rng(0)).shape == (0, 4, gan.segment_samples)


def test_training_writes_checkpoint_tensorboard_and_model(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    _, out_dir = trained_gan
    ckpt = torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["step"] == GANConfig.tiny().steps
    assert {"generator", "critic", "opt_g", "opt_d", "config", "torch_rng", "np_rng"} <= set(ckpt)
    assert list((out_dir / "tb").glob("events.out.tfevents.*"))
    assert (out_dir / "model" / "gan.json").is_file()


def test_unknown_condition_and_bad_segments_are_refused(trained_gan: tuple[DisturbanceGAN, Path],
                                                        gan_segments: dict[str, np.ndarray]) -> None:  # fmt: skip
    gan, _ = trained_gan
    with pytest.raises(ConfigError, match="powerline"):
        gan.sample("powerline", 2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="region_channels"):
        train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=GANConfig.tiny(),
                              region_channels={"CA": GAN_REGIONS["CA"]})  # fmt: skip
    with pytest.raises(ConfigError, match="segment_ms"):
        train_disturbance_gan(gan_segments, fs_hz=2 * GAN_FS_HZ, config=GANConfig.tiny(), region_channels=GAN_REGIONS)


def test_save_load_round_trip_gives_identical_samples(trained_gan: tuple[DisturbanceGAN, Path], tmp_path: Path) -> None:
    gan, _ = trained_gan
    gan.save(tmp_path / "gan")
    loaded = DisturbanceGAN.load(tmp_path / "gan")
    assert loaded.conditions == gan.conditions
    assert loaded.region_channels == gan.region_channels
    assert loaded.fs_hz == gan.fs_hz and loaded.segment_samples == gan.segment_samples
    for condition in gan.conditions:
        np.testing.assert_array_equal(
            gan.sample(condition, 4, np.random.default_rng(5)), loaded.sample(condition, 4, np.random.default_rng(5))
        )


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(
    gan_segments: dict[str, np.ndarray], tmp_path: Path
) -> None:
    full = GANConfig.tiny()
    half = GANConfig.from_dict({**full.to_dict(), "steps": full.steps // 2})
    straight = train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=full, region_channels=GAN_REGIONS, seed=1)
    train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=half, region_channels=GAN_REGIONS, out_dir=tmp_path,
                          seed=1)  # fmt: skip
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == half.steps
    resumed = train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=full, region_channels=GAN_REGIONS,
                                    out_dir=tmp_path, seed=1, resume=True)  # fmt: skip
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == full.steps
    for name, value in straight.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[name], value, rtol=0, atol=1e-6)
    other = GANConfig.from_dict({**full.to_dict(), "latent_dim": 4})
    with pytest.raises(ConfigError, match="another config"):
        train_disturbance_gan(gan_segments, fs_hz=GAN_FS_HZ, config=other, region_channels=GAN_REGIONS,
                              out_dir=tmp_path, resume=True)  # fmt: skip


# ----------------------------------------------------------------------------- splicing


def _clean_recording(rng: np.random.Generator, n_samples: int) -> Recording:
    labels = np.repeat(np.arange(4, dtype=np.int16), n_samples // 4 + 1)[:n_samples]
    return Recording(samples=20.0 * rng.standard_normal((n_samples, LAYOUT.n_channels)), fs_hz=GAN_FS_HZ,
                     layout=LAYOUT, labels=labels, gesture_names=DEFAULT_GESTURES)  # fmt: skip


@pytest.mark.parametrize("n_samples", [1, 20, 1000])
def test_splice_touches_only_the_region(trained_gan: tuple[DisturbanceGAN, Path], n_samples: int) -> None:
    gan, _ = trained_gan
    clean = _clean_recording(np.random.default_rng(2), n_samples)
    before = clean.samples.copy()
    for condition, region in GAN_REGIONS.items():
        disturbed, mask = gan.splice(clean.samples, condition, np.random.default_rng(4))
        np.testing.assert_array_equal(clean.samples, before)  # input untouched
        assert disturbed.shape == clean.samples.shape and disturbed.dtype == np.float32
        assert mask.shape == clean.samples.shape and mask.dtype == bool
        outside = np.setdiff1d(np.arange(LAYOUT.n_channels), region)
        assert mask[:, region].all() and not mask[:, outside].any()
        np.testing.assert_array_equal(disturbed[:, outside], before[:, outside])
    lc, _ = gan.splice(clean.samples, "LC", np.random.default_rng(4))
    assert not np.allclose(lc[:, GAN_REGIONS["LC"]], before[:, GAN_REGIONS["LC"]])


def test_lc_splice_replaces_the_region_with_tiled_generated_segments(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained_gan
    clean = _clean_recording(np.random.default_rng(2), gan.segment_samples - 1)
    # A span shorter than a segment is the first generated segment, unfaded, whatever the clean signal.
    disturbed, _ = gan.splice(clean.samples, "LC", np.random.default_rng(7))
    expected = gan.sample("LC", 1, np.random.default_rng(7))[0, :, : gan.segment_samples - 1].T
    np.testing.assert_allclose(disturbed[:, GAN_REGIONS["LC"]], expected, rtol=1e-6)


def test_ca_splice_adds_to_the_clean_signal(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained_gan
    clean = _clean_recording(np.random.default_rng(2), 600)
    disturbed, _ = gan.splice(clean.samples, "CA", np.random.default_rng(7))
    assert np.all(np.isfinite(disturbed))
    # Additive: the disturbance is the generated track on top of the clean signal, whatever it is.
    silent, _ = gan.splice(np.zeros_like(clean.samples), "CA", np.random.default_rng(7))
    np.testing.assert_allclose(disturbed - clean.samples, silent, atol=1e-3)
    # Gated: under EMG far louder than anything generated the gate stays shut; the clean signal shows through.
    loud = 1e5 * clean.samples
    gated, _ = gan.splice(loud, "CA", np.random.default_rng(7), ca_gated=True)
    np.testing.assert_array_equal(gated, loud.astype(np.float32))
    # Additive: a constant offset of the clean region comes through one for one (LC would erase it).
    shifted, _ = gan.splice(clean.samples + 100.0, "CA", np.random.default_rng(7))
    np.testing.assert_allclose(shifted[:, GAN_REGIONS["CA"]], disturbed[:, GAN_REGIONS["CA"]] + 100.0, atol=1e-3)
    lc_shifted, _ = gan.splice(clean.samples + 100.0, "LC", np.random.default_rng(7))
    lc, _ = gan.splice(clean.samples, "LC", np.random.default_rng(7))
    np.testing.assert_array_equal(lc_shifted[:, GAN_REGIONS["LC"]], lc[:, GAN_REGIONS["LC"]])


def test_ca_gate_opens_on_strikes_only() -> None:
    rng = np.random.default_rng(0)
    clean = 10.0 * rng.standard_normal((1000, 2))
    track = 10.0 * rng.standard_normal((1000, 2))  # EMG-level activity: must not be added
    track[500:520, 0] += 300.0  # a strike on channel 0
    gate = ca_gate(track, clean, fs_hz=GAN_FS_HZ, emg_floor_uv=5.0)
    assert gate.shape == (1000, 2) and gate.dtype == np.float32
    assert gate[505:515, 0].min() == 1.0
    assert gate[:400].max() == 0.0 and gate[:, 1].max() == 0.0


def test_tiling_keeps_a_periodic_component_in_phase() -> None:
    fs_hz, t = 1000.0, 100
    rng = np.random.default_rng(0)
    phases = rng.uniform(0, 2 * np.pi, size=(30, 1, 1))
    segments = np.sin(2 * np.pi * 50.0 * np.arange(t) / fs_hz + phases).astype(np.float32)  # (30, 1, T)
    track = tile_segments(segments, 1000, fade=10, search=25)[:, 0]
    assert track.shape == (1000,)
    # Coherent 50 Hz amplitude over the whole track: about 1 when the phase never jumps.
    coherent = 2 * abs(np.sum(track * np.exp(-2j * np.pi * 50.0 * np.arange(1000) / fs_hz))) / 1000
    assert coherent > 0.9
    with pytest.raises(ConfigError, match="cannot fill"):
        tile_segments(segments[:2], 1000, fade=10, search=25)


def test_splice_recording_keeps_labels(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained_gan
    clean = _clean_recording(np.random.default_rng(3), 500)
    out = gan.splice_recording(clean, "LC", np.random.default_rng(0))
    np.testing.assert_array_equal(out.labels, clean.labels)
    assert out.condition == "LC" and out.disturbance_mask is not None
    assert out.disturbance_mask[:, GAN_REGIONS["LC"]].all()


def test_splice_refuses_samples_of_another_layout(trained_gan: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained_gan
    with pytest.raises(ConfigError, match="channels"):
        gan.splice(np.zeros((100, 8), dtype=np.float32), "LC", np.random.default_rng(0))


# ----------------------------------------------------------------------------- segments from recordings


def test_extract_segments_takes_the_disturbed_episode_of_the_region() -> None:
    rng = np.random.default_rng(0)
    rec = _clean_recording(rng, 2000)
    mask = np.zeros(rec.samples.shape, dtype=bool)
    mask[500:1500, GAN_REGIONS["LC"]] = True
    lc = Recording(samples=rec.samples, fs_hz=GAN_FS_HZ, layout=LAYOUT, labels=rec.labels,
                   gesture_names=DEFAULT_GESTURES, condition="LC", disturbance_mask=mask)  # fmt: skip
    seg = extract_disturbance_segments([rec, lc], condition="LC", segment_ms=100.0, hop_ms=50.0,
                                       region_channels=GAN_REGIONS["LC"])  # fmt: skip
    assert seg.shape == (19, 4, 100) and seg.dtype == np.float32  # (1000 - 100) / 50 + 1 windows
    np.testing.assert_array_equal(seg[0], rec.samples[500:600, GAN_REGIONS["LC"]].T)
    with pytest.raises(ConfigError, match="CA"):
        extract_disturbance_segments([rec, lc], condition="CA", segment_ms=100.0, hop_ms=50.0)


@pytest.mark.parametrize("condition", ["CA", "LC"])
def test_extract_segments_from_simulated_disturbed_recordings(condition: str) -> None:
    from rohde.simulation.disturbances import affected_channels
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    config = SimulatorConfig(fs_hz=1000.0, layout="2x4x4", rest_s=0.3, gesture_s=0.3, ramp_s=0.1)
    recordings = [
        simulate_recording(config=config, subject=1, session=1, trial=t, condition=c, seed=0)
        for t, c in ((1, "clean"), (2, condition))
    ]
    region = affected_channels(recordings[1].layout, condition)
    seg = extract_disturbance_segments(recordings, condition=condition, segment_ms=50.0, hop_ms=25.0)
    assert seg.ndim == 3 and seg.shape[1:] == (len(region), 50) and seg.shape[0] > 10
    assert seg.dtype == np.float32 and np.all(np.isfinite(seg))
    # Segments come from the disturbed recording's region: the first one starts at the episode onset.
    mask = recordings[1].disturbance_mask
    assert mask is not None
    onset = int(np.flatnonzero(mask[:, region].any(axis=1))[0])
    np.testing.assert_array_equal(seg[0], recordings[1].samples[onset : onset + 50, region].T)


# ----------------------------------------------------------------------------- quality
