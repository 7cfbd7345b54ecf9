"""What the data commands read: recording files under a path, loaded with the commands' options.

Also the shared filter chain a command applies to a recording, and the choice of representative
recordings by condition (read from the file header, without loading the samples).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.datasets import find_recordings, load_any
from rohde.core.errors import RecordingFormatError
from rohde.core.preprocessing import PreprocessingConfig
from rohde.core.recording import SUFFIX, Recording

REPRESENTATIVE_CONDITIONS = ("clean", "CA", "LC")


def recording_paths(path: Path) -> list[Path]:
    """The recording files under `path` (or `path` itself); raises when there is none."""
    paths = find_recordings(path)
    if not paths:
        raise RecordingFormatError(f"No recordings under {str(path)!r}; expected .rohde.npz, .mat or .xdf files.")
    return paths


def load_recording(path: Path, *, layout: str | None = None) -> Recording:
    """Load one recording; `layout` (e.g. "3x8x8") applies to XDF streams without one in their desc."""
    options: dict[str, Any] = {}
    if layout and path.name.lower().endswith(".xdf"):
        options["layout"] = layout
    return load_any(path, **options)


def default_preprocessing(recording: Recording, notch: str = "auto") -> PreprocessingConfig:
    """The shared chain for a recording: 60 Hz notch for flexemg (US mains), else 50 Hz.

    `notch` is "auto", "none" or a frequency in Hz ("50", "60").
    """
    if notch == "auto":
        notch_hz: float | None = 60.0 if recording.provenance.get("source") == "flexemg" else 50.0
    elif notch == "none":
        notch_hz = None
    else:
        notch_hz = float(notch)
    return PreprocessingConfig(fs_hz=recording.fs_hz, notch_hz=notch_hz)


def peek_condition(path: Path) -> str:
    """The condition of a recording without loading its samples (only `.rohde.npz` stores one)."""
    if not path.name.endswith(SUFFIX):
        return "clean"
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(json.loads(str(data["header"])).get("condition", "clean"))
    except (OSError, KeyError, ValueError) as exc:
        raise RecordingFormatError(f"{str(path)!r} is not a RoHDE recording ({exc}).") from exc


def representative_recordings(paths: Sequence[Path]) -> dict[str, Path]:
    """One path per condition of REPRESENTATIVE_CONDITIONS present (the first in sorted order).

    Where no clean/CA/LC condition is recorded (real data), the first recording stands for all.
    """
    chosen: dict[str, Path] = {}
    for path in sorted(paths):
        condition = peek_condition(path)
        if condition in REPRESENTATIVE_CONDITIONS and condition not in chosen:
            chosen[condition] = path
    if not chosen and paths:
        chosen[peek_condition(sorted(paths)[0])] = sorted(paths)[0]
    return chosen
