"""A user's own recordings for `rohde train`: loaded from files and folders, on one layout, on one class list.

`load_user_recordings` loads every path (a recording file or a folder of them), applies `--layout`,
and maps every recording's labels onto one class list: the gestures asked for (`--gestures`, any names,
the rest class added when the recordings have one), or else every class that has samples. Classes the
recordings hold but that were not asked for are named in a warning (their samples are not used); a
gesture asked for that no recording holds is an error listing what there is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.datasets import load_dataset
from rohde.core.errors import ConfigError
from rohde.core.gestures import REST_GESTURES, UNUSABLE
from rohde.core.layouts import layout_from_spec
from rohde.core.recording import Recording

logger = logging.getLogger(__name__)


def _load(path: Path, layout: str | None, gestures: Sequence[str] | None) -> list[Recording]:
    is_xdf = path.is_file() and path.name.lower().endswith(".xdf")
    options: dict[str, Any] = {}
    if is_xdf and layout:
        options["layout"] = layout
    if is_xdf and gestures:
        # An XDF file's cues name its classes: the ones asked for count, under either rest name.
        options["gesture_names"] = list(dict.fromkeys([*REST_GESTURES, *gestures]))
    recordings = load_dataset(path, **options)
    if layout is None:
        return recordings
    chosen = layout_from_spec(layout)
    if any(r.n_channels != chosen.n_channels for r in recordings):
        raise ConfigError(f"--layout {layout!r} has {chosen.n_channels} channels but recordings under {str(path)!r} "
                          f"have {sorted({r.n_channels for r in recordings})}.")
    return [replace(r, layout=chosen) for r in recordings]


def class_names(recordings: Sequence[Recording], gestures: Sequence[str] | None) -> list[str]:
    """The model's classes (module docstring); raises for gestures no recording holds."""
    counts: dict[str, int] = {}
    for rec in recordings:
        found = np.bincount(rec.labels[rec.labels != UNUSABLE], minlength=len(rec.gesture_names))
        for name, n in zip(rec.gesture_names, found, strict=True):
            counts[name] = counts.get(name, 0) + int(n)
    present = [name for name, n in counts.items() if n > 0]
    if gestures is None:
        return present
    missing = [g for g in gestures if g not in present]
    if missing:
        raise ConfigError(f"--gestures names {missing}, which no recording holds; the recordings hold {present}.")
    rest = [name for name in present if name.lower() in REST_GESTURES and name not in gestures]
    chosen = [*rest[:1], *gestures]
    dropped = [name for name in present if name not in chosen]
    if dropped:
        logger.warning("The recordings also hold %s, which --gestures does not name: their samples are not used.",
                       dropped)
    return chosen


def relabel(rec: Recording, names: Sequence[str]) -> Recording:
    """`rec` with its labels mapped onto `names` (classes not in it become unusable)."""
    index = {name: i for i, name in enumerate(names)}
    lookup = np.array([index.get(name, UNUSABLE) for name in rec.gesture_names] + [UNUSABLE], dtype=np.int16)
    return replace(rec, labels=lookup[rec.labels], gesture_names=tuple(names))  # label -1 reads the extra entry


def load_user_recordings(paths: Sequence[Path], *, layout: str | None = None,
                         gestures: Sequence[str] | None = None) -> dict[Path, list[Recording]]:
    """Every path's recordings, on `layout` and one class list (module docstring)."""
    loaded = {Path(p): _load(Path(p), layout, gestures) for p in paths}
    everything = [r for recs in loaded.values() for r in recs]
    names = class_names(everything, gestures)
    if len(names) < 2:
        raise ConfigError(f"Training needs at least two classes; the recordings hold {names}.")
    logger.info("Classes: %s", names)
    return {p: [relabel(r, names) for r in recs] for p, recs in loaded.items()}
