"""The patch GAN: it learns (a tiny one on a toy disturbance), patches cut at the mask, splicing anywhere."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rohde.core.errors import ConfigError
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.layouts import grid_layout
from rohde.core.recording import Recording
from rohde.simulation.disturbances import HeldOutDisturbanceError
from rohde.training.gan_models import GANConfig
from rohde.training.gan_patches import PatchGAN, PatchShape, extract_patches, grid_blocks, train_patch_gan
from rohde.training.gan_quality import compare_to_real

TOY_FS_HZ = 1024.0
TOY_T = 64  # 62.5 ms
TOY_SHAPE = PatchShape(2, 2)
# Tiny, fast-learning settings: 150 generator steps take about 6 s on one core.
TOY_CONFIG = GANConfig(segment_ms=TOY_T / TOY_FS_HZ * 1000.0, latent_dim=8, batch_size=16, steps=150, g_width=8,
                       c_width=8, n_up=3, n_down=3, lr=5e-3, critic_steps=2, log_interval=1000,
                       checkpoint_interval=1000, progress=False)  # fmt: skip


def toy_patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """A 128 Hz sinusoid of random phase, one amplitude per site, plus white noise: `(n, 4, 64)` uV."""
    t = np.arange(TOY_T) / TOY_FS_HZ
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 1, 1))
    amplitude = np.array([100.0, 80.0, 60.0, 40.0])[None, :, None]
    noise = 20.0 * rng.standard_normal((n, TOY_SHAPE.n_sites, TOY_T))
    return (amplitude * np.sin(2.0 * np.pi * 128.0 * t + phase) + noise).astype(np.float32)


def _psd_distances(steps: int, seed: int) -> tuple[float, float]:
    """PSD distance (dB) to held-out toy patches of the GAN after `steps` steps and of the untrained one."""
    train = {"hum": toy_patches(np.random.default_rng(seed), 256)}
    held = toy_patches(np.random.default_rng(100 + seed), 64)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trained = train_patch_gan(train, fs_hz=TOY_FS_HZ, config=replace(TOY_CONFIG, steps=steps), shape=TOY_SHAPE,
                                  seed=seed)  # fmt: skip
        untrained = train_patch_gan(train, fs_hz=TOY_FS_HZ, config=replace(TOY_CONFIG, steps=0), shape=TOY_SHAPE,
                                    seed=seed)  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    candidates = {name: (lambda i, r, gan=gan: gan.sample("hum", len(i), r))
                  for name, gan in (("trained", trained), ("untrained", untrained))}  # fmt: skip
    report = compare_to_real(held, candidates, fs_hz=TOY_FS_HZ, rng=np.random.default_rng(0), n_pairs=4)
    return report["psd_distance_db"]["trained"], report["psd_distance_db"]["untrained"]


def test_a_tiny_patch_gan_learns_a_toy_disturbance() -> None:
    """Training brings the spectrum of generated patches clearly closer to held-out real ones.

    Margin chosen over seeds 0-4 at 150 steps: untrained / trained PSD distance was 2.2 to 5.4 (7.2-8.4 dB
    untrained, 1.4-3.4 dB trained); a factor of 2 is asked for. With no training step the ratio is 1.
    """
    trained_db, untrained_db = _psd_distances(TOY_CONFIG.steps, seed=3)
    assert untrained_db > 2.0 * trained_db, (trained_db, untrained_db)


# ----------------------------------------------------------------------------- patches and splicing

LAYOUT = grid_layout(1, 4, 4)  # column-major: row r holds channels r, r + 4, r + 8, r + 12


def test_grid_blocks_are_every_complete_neighbourhood() -> None:
    blocks = grid_blocks(LAYOUT, PatchShape(3, 3))
    assert blocks.shape == (4, 9)
    np.testing.assert_array_equal(blocks[0], [0, 4, 8, 1, 5, 9, 2, 6, 10])  # rows 0-2, columns 0-2, row-major
    assert grid_blocks(LAYOUT, PatchShape(1, 4)).shape == (4, 4)  # row segments
    with pytest.raises(ConfigError, match="5 x 5"):
        grid_blocks(LAYOUT, PatchShape(5, 5))


def _recording(samples: np.ndarray, mask: np.ndarray | None, condition: str) -> Recording:
    return Recording(samples=samples.astype(np.float32), labels=np.zeros(len(samples), dtype=np.int16),
                     fs_hz=1000.0, layout=LAYOUT, gesture_names=tuple(DEFAULT_GESTURES), subject="1", session="1",
                     trial="1", condition=condition, disturbance_mask=mask)  # fmt: skip


def test_patches_are_cut_where_the_mask_is_set() -> None:
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((400, 16)).astype(np.float32)
    mask = np.zeros((400, 16), dtype=bool)
    inside = [0, 4, 1, 5]  # the 2 x 2 block at the top-left corner
    mask[100:150, inside] = True
    disturbed = clean.copy()
    disturbed[:, inside] += 1000.0
    pair = _recording(disturbed, mask, "hum"), _recording(clean, None, "clean")
    shape = PatchShape(2, 2)
    added = extract_patches(pair[0], "hum", shape=shape, segment_samples=20, hop_samples=10, clean=pair[1])
    # Windows [s, s + 20) overlapping samples 100-149: s = 90 ... 140, one block.
    assert added.shape == (6, 4, 20)
    np.testing.assert_allclose(added, 1000.0, atol=1e-3)  # the disturbance alone
    recorded = extract_patches(pair[0], "LC", shape=shape, segment_samples=20, hop_samples=10)
    np.testing.assert_allclose(recorded[0], disturbed[90:110, [0, 4, 1, 5]].T, atol=1e-4, rtol=0)  # the first one
    with pytest.raises(ConfigError, match="clean twin"):
        extract_patches(pair[0], "hum", shape=shape, segment_samples=20, hop_samples=10)
    with pytest.raises(HeldOutDisturbanceError):
        extract_patches(pair[0], "bridge", shape=shape, segment_samples=20, hop_samples=10)


@pytest.fixture(scope="module")
def tiny_patch_gan() -> PatchGAN:
    rng = np.random.default_rng(1)
    patches = {"hum": toy_patches(rng, 32), "LC": 0.1 * toy_patches(rng, 32)}
    return train_patch_gan(patches, fs_hz=TOY_FS_HZ, config=replace(TOY_CONFIG, steps=2), shape=TOY_SHAPE, seed=0)


def test_splice_adds_or_replaces_on_the_drawn_electrodes_of_any_layout(tiny_patch_gan: PatchGAN) -> None:
    layout = grid_layout(2, 5, 3)  # 30 channels, blocks cut at the grid edges
    clean = np.full((300, layout.n_channels), 5000.0, dtype=np.float32)
    chosen = [0, 1, 5, 6, 7, 20]
    for kind in ("hum", "LC"):
        out, mask = tiny_patch_gan.splice(clean, layout, kind, np.random.default_rng(2), channels=chosen)
        assert out.shape == clean.shape and out.dtype == np.float32
        assert sorted(np.flatnonzero(mask.all(axis=0))) == chosen and mask[:, chosen].all()
        others = np.setdiff1d(np.arange(layout.n_channels), chosen)
        np.testing.assert_array_equal(out[:, others], clean[:, others])
        centred = out[:, chosen] - out[:, chosen].mean(axis=0)
        assert np.all(centred.std(axis=0) > 0)  # a generated track on every chosen electrode
        level = float(np.mean(out[:, chosen]))  # generated tracks are zero-mean segments of at most a few 100 uV
        assert (abs(level - 5000.0) < 1000.0) if kind == "hum" else (abs(level) < 1000.0)  # added, or replacing
    out, mask = tiny_patch_gan.splice(clean, layout, "hum", np.random.default_rng(3))  # a Placement draw
    assert mask.any() and np.array_equal(out[:, ~mask.any(axis=0)], clean[:, ~mask.any(axis=0)])
    with pytest.raises(HeldOutDisturbanceError):
        tiny_patch_gan.splice(clean, layout, "bridge", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="not 'pop'"):
        tiny_patch_gan.splice(clean, layout, "pop", np.random.default_rng(0))


# ----------------------------------------------------------------------------- the study's report


def test_study_report_counts_wins_and_keeps_the_hand_written_reasons(tmp_path: Path) -> None:
    from rohde.training.gan_patch_study import REFERENCES, WHY_HEADING, PatchStudyConfig, _config_dict, write_report
    from rohde.training.gan_quality import METRICS

    with pytest.raises(HeldOutDisturbanceError):
        PatchStudyConfig(kinds=("bridge",))
    with pytest.raises(ConfigError, match="dead"):
        PatchStudyConfig(kinds=("dead",))
    values = {"gan": 1.0, "untrained": 3.0, "clean": 4.0, "naive": 2.0, "real": 0.5}
    rows = {m: {n: [values[n], 0.1] for n in REFERENCES} for m in METRICS}
    rows["max_xcorr"]["gan"] = [5.0, 0.0]  # farther from real than naive: a loss
    result = {"config": _config_dict(PatchStudyConfig()), "patches": {"hum": {"train": 10, "held_out": 8}},
              "per_seed": [{}], "table": {"hum": rows}, "train_s": [1.0], "elapsed_s": 2.0}  # fmt: skip
    docs = tmp_path / "gan_quality.md"
    docs.write_text(f"old tables\n{WHY_HEADING}\n\nreasons written by hand\n")
    write_report(result, tmp_path, docs=docs)
    text = docs.read_text()
    n = len(METRICS)
    assert f"| hum | 10 / 8 | {n - 1} of {n} | {n - 1} of {n} |" in text  # max_xcorr is lost to both
    assert "- hum: `max_xcorr`" in text
    assert "old tables" not in text and text.endswith(f"{WHY_HEADING}\n\nreasons written by hand\n")
