"""The disturbance GAN: gradient penalty, tiny training, sampling, splicing, persistence, resume, quality."""

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
    GANConfig,
    ca_gate,
    extract_disturbance_segments,
    gan_quality_report,
    plot_synthetic_vs_real,
    tile_segments,
    train_disturbance_gan,
)
from rohde.training.gan_models import gradient_penalty
from rohde.training.gan_quality import METRICS, format_quality_table

FS_HZ = 1000.0
LAYOUT = grid_layout(1, 4, 4)  # 16 channels, column-major: the last row is channels 3, 7, 11, 15
REGIONS = {"CA": [8, 9, 10, 11, 12, 13], "LC": [3, 7, 11, 15]}


def _disturbed_segments(rng: np.random.Generator, n: int, t: int) -> dict[str, np.ndarray]:
    """Segments with the character of each condition: sparse large transients on EMG-level noise (CA),
    low-level noise plus a slow drift (LC)."""
    ca = 15.0 * rng.standard_normal((n, len(REGIONS["CA"]), t))
    hits = rng.random((n, len(REGIONS["CA"]))) < 0.5
    onset = rng.integers(0, t // 2, size=n)
    decay = np.exp(-np.arange(t) / 4.0)
    for i in range(n):
        ca[i, hits[i], onset[i] :] += 400.0 * decay[: t - onset[i]]
    drift = np.sin(2 * np.pi * rng.random((n, 1, 1)) + np.linspace(0, 1, t)[None, None, :])
    lc = 3.0 * rng.standard_normal((n, len(REGIONS["LC"]), t)) + 50.0 * drift
    return {"CA": ca.astype(np.float32), "LC": lc.astype(np.float32)}


@pytest.fixture(scope="module")
def segments() -> dict[str, np.ndarray]:
    return _disturbed_segments(np.random.default_rng(0), 48, GANConfig.tiny().segment_samples(FS_HZ))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, segments: dict[str, np.ndarray]) -> tuple[DisturbanceGAN, Path]:
    out_dir = tmp_path_factory.mktemp("gan")
    gan = train_disturbance_gan(segments, fs_hz=FS_HZ, config=GANConfig.tiny(), region_channels=REGIONS,
                                out_dir=out_dir, seed=3)  # fmt: skip
    return gan, out_dir


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


# ----------------------------------------------------------------------------- training and sampling


def test_tiny_gan_samples_shapes_and_units(trained: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained
    assert gan.conditions == ("CA", "LC")
    assert gan.segment_samples == GANConfig.tiny().segment_samples(FS_HZ)
    for condition, region in REGIONS.items():
        x = gan.sample(condition, 5, np.random.default_rng(1))
        assert x.shape == (5, len(region), gan.segment_samples)
        assert x.dtype == np.float32
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(x.mean(axis=2), 0.0, atol=1e-3 * max(1.0, float(np.abs(x).max())))
    same = gan.sample("CA", 3, np.random.default_rng(9)), gan.sample("CA", 3, np.random.default_rng(9))
    np.testing.assert_array_equal(*same)
    assert gan.sample("LC", 0, np.random.default_rng(0)).shape == (0, 4, gan.segment_samples)


def test_training_writes_checkpoint_tensorboard_and_model(trained: tuple[DisturbanceGAN, Path]) -> None:
    _, out_dir = trained
    ckpt = torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["step"] == GANConfig.tiny().steps
    assert {"generator", "critic", "opt_g", "opt_d", "config", "torch_rng", "np_rng"} <= set(ckpt)
    assert list((out_dir / "tb").glob("events.out.tfevents.*"))
    assert (out_dir / "model" / "gan.json").is_file()


def test_unknown_condition_and_bad_segments_are_refused(trained: tuple[DisturbanceGAN, Path],
                                                        segments: dict[str, np.ndarray]) -> None:  # fmt: skip
    gan, _ = trained
    with pytest.raises(ConfigError, match="powerline"):
        gan.sample("powerline", 2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="region_channels"):
        train_disturbance_gan(segments, fs_hz=FS_HZ, config=GANConfig.tiny(), region_channels={"CA": REGIONS["CA"]})
    with pytest.raises(ConfigError, match="segment_ms"):
        train_disturbance_gan(segments, fs_hz=2 * FS_HZ, config=GANConfig.tiny(), region_channels=REGIONS)


def test_save_load_round_trip_gives_identical_samples(trained: tuple[DisturbanceGAN, Path], tmp_path: Path) -> None:
    gan, _ = trained
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
    segments: dict[str, np.ndarray], tmp_path: Path
) -> None:
    full = GANConfig.tiny()
    half = GANConfig.from_dict({**full.to_dict(), "steps": full.steps // 2})
    straight = train_disturbance_gan(segments, fs_hz=FS_HZ, config=full, region_channels=REGIONS, seed=1)
    train_disturbance_gan(segments, fs_hz=FS_HZ, config=half, region_channels=REGIONS, out_dir=tmp_path, seed=1)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == half.steps
    resumed = train_disturbance_gan(segments, fs_hz=FS_HZ, config=full, region_channels=REGIONS, out_dir=tmp_path,
                                    seed=1, resume=True)  # fmt: skip
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == full.steps
    for name, value in straight.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[name], value, rtol=0, atol=1e-6)
    other = GANConfig.from_dict({**full.to_dict(), "latent_dim": 4})
    with pytest.raises(ConfigError, match="another config"):
        train_disturbance_gan(segments, fs_hz=FS_HZ, config=other, region_channels=REGIONS, out_dir=tmp_path,
                              resume=True)  # fmt: skip


# ----------------------------------------------------------------------------- splicing


def _clean_recording(rng: np.random.Generator, n_samples: int) -> Recording:
    labels = np.repeat(np.arange(4, dtype=np.int16), n_samples // 4 + 1)[:n_samples]
    return Recording(samples=20.0 * rng.standard_normal((n_samples, LAYOUT.n_channels)), fs_hz=FS_HZ,
                     layout=LAYOUT, labels=labels, gesture_names=DEFAULT_GESTURES)  # fmt: skip


@pytest.mark.parametrize("n_samples", [1, 20, 1000])
def test_splice_touches_only_the_region(trained: tuple[DisturbanceGAN, Path], n_samples: int) -> None:
    gan, _ = trained
    clean = _clean_recording(np.random.default_rng(2), n_samples)
    before = clean.samples.copy()
    for condition, region in REGIONS.items():
        disturbed, mask = gan.splice(clean.samples, condition, np.random.default_rng(4))
        np.testing.assert_array_equal(clean.samples, before)  # input untouched
        assert disturbed.shape == clean.samples.shape and disturbed.dtype == np.float32
        assert mask.shape == clean.samples.shape and mask.dtype == bool
        outside = np.setdiff1d(np.arange(LAYOUT.n_channels), region)
        assert mask[:, region].all() and not mask[:, outside].any()
        np.testing.assert_array_equal(disturbed[:, outside], before[:, outside])
    lc, _ = gan.splice(clean.samples, "LC", np.random.default_rng(4))
    assert not np.allclose(lc[:, REGIONS["LC"]], before[:, REGIONS["LC"]])


def test_lc_splice_replaces_the_region_with_tiled_generated_segments(trained: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained
    clean = _clean_recording(np.random.default_rng(2), gan.segment_samples - 1)
    # A span shorter than a segment is the first generated segment, unfaded, whatever the clean signal.
    disturbed, _ = gan.splice(clean.samples, "LC", np.random.default_rng(7))
    expected = gan.sample("LC", 1, np.random.default_rng(7))[0, :, : gan.segment_samples - 1].T
    np.testing.assert_allclose(disturbed[:, REGIONS["LC"]], expected, rtol=1e-6)


def test_ca_splice_adds_to_the_clean_signal(trained: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained
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
    np.testing.assert_allclose(shifted[:, REGIONS["CA"]], disturbed[:, REGIONS["CA"]] + 100.0, atol=1e-3)
    lc_shifted, _ = gan.splice(clean.samples + 100.0, "LC", np.random.default_rng(7))
    lc, _ = gan.splice(clean.samples, "LC", np.random.default_rng(7))
    np.testing.assert_array_equal(lc_shifted[:, REGIONS["LC"]], lc[:, REGIONS["LC"]])


def test_ca_gate_opens_on_strikes_only() -> None:
    rng = np.random.default_rng(0)
    clean = 10.0 * rng.standard_normal((1000, 2))
    track = 10.0 * rng.standard_normal((1000, 2))  # EMG-level activity: must not be added
    track[500:520, 0] += 300.0  # a strike on channel 0
    gate = ca_gate(track, clean, fs_hz=FS_HZ, emg_floor_uv=5.0)
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


def test_splice_recording_keeps_labels(trained: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained
    clean = _clean_recording(np.random.default_rng(3), 500)
    out = gan.splice_recording(clean, "LC", np.random.default_rng(0))
    np.testing.assert_array_equal(out.labels, clean.labels)
    assert out.condition == "LC" and out.disturbance_mask is not None
    assert out.disturbance_mask[:, REGIONS["LC"]].all()


def test_splice_refuses_samples_of_another_layout(trained: tuple[DisturbanceGAN, Path]) -> None:
    gan, _ = trained
    with pytest.raises(ConfigError, match="channels"):
        gan.splice(np.zeros((100, 8), dtype=np.float32), "LC", np.random.default_rng(0))


# ----------------------------------------------------------------------------- segments from recordings


def test_extract_segments_takes_the_disturbed_episode_of_the_region() -> None:
    rng = np.random.default_rng(0)
    rec = _clean_recording(rng, 2000)
    mask = np.zeros(rec.samples.shape, dtype=bool)
    mask[500:1500, REGIONS["LC"]] = True
    lc = Recording(samples=rec.samples, fs_hz=FS_HZ, layout=LAYOUT, labels=rec.labels,
                   gesture_names=DEFAULT_GESTURES, condition="LC", disturbance_mask=mask)  # fmt: skip
    seg = extract_disturbance_segments([rec, lc], condition="LC", segment_ms=100.0, hop_ms=50.0,
                                       region_channels=REGIONS["LC"])  # fmt: skip
    assert seg.shape == (19, 4, 100) and seg.dtype == np.float32  # (1000 - 100) / 50 + 1 windows
    np.testing.assert_array_equal(seg[0], rec.samples[500:600, REGIONS["LC"]].T)
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


def test_quality_report_has_every_metric_with_references(
    trained: tuple[DisturbanceGAN, Path], segments: dict[str, np.ndarray]
) -> None:
    gan, _ = trained
    held_out = _disturbed_segments(np.random.default_rng(99), 16, gan.segment_samples)
    report = gan_quality_report(gan, held_out, fs_hz=FS_HZ, rng=np.random.default_rng(0), n_pairs=4)
    assert set(report) == {"CA", "LC"}
    for condition in report:
        for metric in METRICS:
            row = report[condition][metric]
            assert set(row) == {"gan", "naive", "real"}
            assert all(np.isfinite(v) for v in row.values())
        # Real against real is the floor the naive generator cannot reach on shape-aware metrics.
        assert report[condition]["rms_wasserstein_uv"]["real"] < report[condition]["rms_wasserstein_uv"]["naive"]
    assert "amplitude_wasserstein_uv" in format_quality_table(report)


def test_plot_synthetic_vs_real_writes_a_png(trained: tuple[DisturbanceGAN, Path], tmp_path: Path) -> None:
    gan, _ = trained
    held_out = _disturbed_segments(np.random.default_rng(98), 8, gan.segment_samples)
    path = plot_synthetic_vs_real(gan, held_out, out_path=tmp_path / "gan.png", rng=np.random.default_rng(0))
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
