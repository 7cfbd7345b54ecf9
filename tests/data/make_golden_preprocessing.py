"""Regenerate `golden_preprocessing.npz` (run only when the filter design changes on purpose).

The input is a fixed seeded signal; the stored output is what `filter_recording` gave when the
reference was accepted, so any later change of the filter chain shows up as a test failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rohde.core.preprocessing import PreprocessingConfig, filter_recording

CASES = {
    # Stored configs of packages written before the two-family notches: they keep their old meaning.
    "fs2048_notch50": PreprocessingConfig.from_dict({"fs_hz": 2048.0, "notch_hz": 50.0}),
    "fs1000_notch60": PreprocessingConfig.from_dict({"fs_hz": 1000.0, "notch_hz": 60.0}),
    # Today's default: both mains families, harmonics up to the 5th, 5 Hz wide notches.
    "fs2048_default": PreprocessingConfig(fs_hz=2048.0),
}


def golden_input(fs_hz: float) -> np.ndarray:
    """(n_samples, 4) float32 uV: noise, a 50 Hz hum, a 60 Hz hum, a 120 Hz tone with DC offset."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(fs_hz // 2)) / fs_hz
    columns = [
        rng.normal(0, 20, t.size),
        30 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 5, t.size),
        30 * np.sin(2 * np.pi * 60 * t) + rng.normal(0, 5, t.size),
        100 + 10 * np.sin(2 * np.pi * 120 * t),
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def main() -> None:
    """Add the cases not stored yet; a stored case is never rewritten (its test guards the old meaning)."""
    path = Path(__file__).with_name("golden_preprocessing.npz")
    arrays = dict(np.load(path)) if path.is_file() else {}
    for name, config in CASES.items():
        if f"{name}_output" in arrays:
            continue
        x = golden_input(config.fs_hz)
        arrays[f"{name}_input"] = x
        arrays[f"{name}_output"] = filter_recording(x, config)
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    main()
