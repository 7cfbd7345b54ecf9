"""GAN quality figures against held-out real segments, and the real vs generated plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rohde.training.gan import DisturbanceGAN
from rohde.training.gan_quality import METRICS, format_quality_table, gan_quality_report, plot_synthetic_vs_real
from tests.training.conftest import GAN_FS_HZ, disturbed_segments


def test_quality_report_has_every_metric_with_references(
    trained_gan: tuple[DisturbanceGAN, Path], gan_segments: dict[str, np.ndarray]
) -> None:
    gan, _ = trained_gan
    held_out = disturbed_segments(np.random.default_rng(99), 16, gan.segment_samples)
    report = gan_quality_report(gan, held_out, fs_hz=GAN_FS_HZ, rng=np.random.default_rng(0), n_pairs=4)
    assert set(report) == {"CA", "LC"}
    for condition in report:
        for metric in METRICS:
            row = report[condition][metric]
            assert set(row) == {"gan", "naive", "real"}
            assert all(np.isfinite(v) for v in row.values())
        # Real against real is the floor the naive generator cannot reach on shape-aware metrics.
        assert report[condition]["rms_wasserstein_uv"]["real"] < report[condition]["rms_wasserstein_uv"]["naive"]
    assert "amplitude_wasserstein_uv" in format_quality_table(report)


def test_plot_synthetic_vs_real_writes_a_png(trained_gan: tuple[DisturbanceGAN, Path], tmp_path: Path) -> None:
    gan, _ = trained_gan
    held_out = disturbed_segments(np.random.default_rng(98), 8, gan.segment_samples)
    path = plot_synthetic_vs_real(gan, held_out, out_path=tmp_path / "gan.png", rng=np.random.default_rng(0))
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
