"""`rohde data info`: what a recording holds, as a JSON-ready summary and as text."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.gestures import UNUSABLE
from rohde.core.preprocessing import filter_recording
from rohde.core.recording import Recording
from rohde.data_tools.inputs import default_preprocessing, load_recording


def summarize_recording(recording: Recording, *, notch: str = "auto") -> dict[str, Any]:
    """A JSON-ready summary: shape, timing, layout, condition, class counts, disturbance, RMS range."""
    labels = recording.labels
    counts = {name: int(np.sum(labels == i)) for i, name in enumerate(recording.gesture_names)}
    counts["unusable"] = int(np.sum(labels == UNUSABLE))
    filtered = filter_recording(recording.samples, default_preprocessing(recording, notch))
    # Skip the filter's start-up transient (first 0.5 s) so it does not inflate the RMS.
    settle = min(int(0.5 * recording.fs_hz), recording.n_samples // 2)
    keep = labels != UNUSABLE
    keep[:settle] = False
    rms_source = filtered[keep] if keep.any() else filtered[settle:]
    rms = np.sqrt(np.mean(rms_source.astype(np.float64) ** 2, axis=0)) if len(rms_source) else np.zeros(0)
    mask = recording.disturbance_mask
    layout = recording.layout
    return {
        "subject": recording.subject,
        "session": recording.session,
        "trial": recording.trial,
        "condition": recording.condition,
        "n_channels": recording.n_channels,
        "fs_hz": recording.fs_hz,
        "duration_s": round(recording.duration_s, 3),
        "layout": {
            "name": layout.name,
            "grids": [f"{g.name} {g.rows}x{g.cols}" for g in layout.grids],
        },
        "class_samples": counts,
        "disturbance_fraction": None if mask is None else float(mask.mean()),
        "disturbed_channels": None if mask is None else int(mask.any(axis=0).sum()),
        "rms_uv": {
            "band_hz": list(default_preprocessing(recording, notch).effective_band_hz),
            "min": float(rms.min()) if rms.size else None,
            "p10": float(np.percentile(rms, 10)) if rms.size else None,
            "median": float(np.median(rms)) if rms.size else None,
            "p90": float(np.percentile(rms, 90)) if rms.size else None,
            "max": float(rms.max()) if rms.size else None,
        },
        "provenance": recording.provenance,
    }


def iter_summaries(paths: Sequence[Path], *, layout: str | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, summary) per recording, loading one at a time."""
    for path in paths:
        yield path, summarize_recording(load_recording(path, layout=layout))


def format_summary(path: Path, s: Mapping[str, Any]) -> str:
    """A summary as a few indented lines under the recording's path."""
    rms = s["rms_uv"]
    lines = [
        f"{path}",
        f"  subject {s['subject']}  session {s['session']}  trial {s['trial']}  condition {s['condition']}",
        f"  {s['n_channels']} channels at {s['fs_hz']:g} Hz, {s['duration_s']:.1f} s, "
        f"layout {s['layout']['name']} ({', '.join(s['layout']['grids'])})",
        "  samples per class: " + ", ".join(f"{k} {v}" for k, v in s["class_samples"].items()),
    ]
    if s["disturbance_fraction"] is None:
        lines.append("  disturbance mask: none stored")
    else:
        lines.append(
            f"  disturbance: {100 * s['disturbance_fraction']:.2f} % of channel-samples, "
            f"{s['disturbed_channels']} channels affected"
        )
    if rms["median"] is not None:
        lines.append(
            f"  RMS {rms['band_hz'][0]:g}-{rms['band_hz'][1]:g} Hz over channels (uV): min {rms['min']:.1f}, "
            f"p10 {rms['p10']:.1f}, median {rms['median']:.1f}, p90 {rms['p90']:.1f}, max {rms['max']:.1f}"
        )
    return "\n".join(lines)


def format_totals(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Recordings per condition and samples per class over several summaries."""
    totals: dict[str, int] = defaultdict(int)
    conditions: dict[str, int] = defaultdict(int)
    for summary in summaries:
        conditions[summary["condition"]] += 1
        for name, count in summary["class_samples"].items():
            totals[name] += count
    return (
        f"{len(summaries)} recordings; conditions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(conditions.items()))
        + "\nsamples per class in all: "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
    )
