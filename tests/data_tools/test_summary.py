"""The recording summary of `rohde data info`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rohde.core.datasets import load_any
from rohde.data_tools.summary import summarize_recording


def test_summary_counts_match_labels(sim_dir: Path) -> None:
    rec = load_any(sim_dir / "s01_sess1_t05_LC.rohde.npz")
    summary = summarize_recording(rec)
    assert summary["class_samples"]["unusable"] == int(np.sum(rec.labels == -1))
    assert summary["disturbed_channels"] == int(rec.disturbance_mask.any(axis=0).sum())  # type: ignore[union-attr]
