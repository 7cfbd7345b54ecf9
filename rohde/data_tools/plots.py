"""Figures of one recording: RMS maps per gesture, disturbed vs clean traces, and their spectra.

One PNG per recording, in three parts:
1. RMS heatmaps, one per grid and gesture, placed with the layout's channel -> (row, col) map
   (never a reshape), on one colour scale so gestures compare at a glance.
2. Band-passed traces of a few disturbed channels above a few undisturbed ones over the same
   seconds, with the disturbance mask shaded (as the seed paper shows CA and LC), and a strip of
   the gesture labels underneath. Without a mask, the loudest and quietest channels are shown
   over the first 30 s.
3. Welch spectra (of the DC-free raw signal, so the low-frequency part of a disturbance shows)
   of the two channel groups, with the band-pass edges marked.

matplotlib runs on the Agg backend; the command imports this module only when plotting.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from scipy import signal  # noqa: E402

from rohde.core.gestures import UNUSABLE  # noqa: E402
from rohde.core.layouts import NO_ELECTRODE  # noqa: E402
from rohde.core.preprocessing import filter_recording  # noqa: E402
from rohde.core.recording import Recording  # noqa: E402
from rohde.data_tools.inputs import (  # noqa: E402
    default_preprocessing,
    load_recording,
    recording_paths,
    representative_recordings,
)

logger = logging.getLogger(__name__)

TRACE_SECONDS = 4.0  # length of the trace excerpt around a disturbance
SETTLE_SECONDS = 0.5  # start-up transient of the causal band-pass, left out of plots
OVERVIEW_SECONDS = 30.0  # length shown from the start of a recording without a disturbance
TRACE_BLOCK_IN = 6.2  # height of the traces + spectra block of the figure
N_TRACE_CHANNELS = 4  # channels per group (disturbed / undisturbed)


def class_rms(recording: Recording, filtered: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel RMS `(n_channels,)` in uV of the filtered samples of each gesture present."""
    settle = int(SETTLE_SECONDS * recording.fs_hz)
    out = {}
    for index, name in enumerate(recording.gesture_names):
        keep = recording.labels == index
        keep[:settle] = False
        if keep.sum() >= recording.fs_hz * 0.1:
            out[name] = np.sqrt(np.mean(filtered[keep].astype(np.float64) ** 2, axis=0))
    return out


def choose_channels(recording: Recording, filtered: np.ndarray) -> tuple[list[int], list[int], str, str]:
    """(disturbed or loudest channels, undisturbed or quietest channels, their two captions)."""
    n = min(N_TRACE_CHANNELS, max(1, recording.n_channels // 2))
    mask = recording.disturbance_mask
    if mask is not None and mask.any():
        fraction = mask.mean(axis=0)
        affected = [int(c) for c in np.argsort(-fraction, kind="stable") if fraction[c] > 0][:n]
        clean = np.flatnonzero(fraction == 0)
        if len(clean) == 0:
            clean = np.argsort(fraction, kind="stable")[:n]
        # Spread the undisturbed picks over the array rather than taking neighbours of one corner.
        picks = clean[np.linspace(0, len(clean) - 1, num=min(n, len(clean))).round().astype(int)]
        return affected, [int(c) for c in picks], "disturbed channels", "undisturbed channels"
    settled = filtered[min(int(SETTLE_SECONDS * recording.fs_hz), recording.n_samples // 2) :]
    rms = np.sqrt(np.mean(settled.astype(np.float64) ** 2, axis=0))
    order = np.argsort(rms, kind="stable")
    return [int(c) for c in order[::-1][:n]], [int(c) for c in order[:n]], "loudest channels", "quietest channels"


def _excerpt(recording: Recording, channels: list[int]) -> tuple[int, int]:
    """Sample range to show: TRACE_SECONDS where the shown channels are most disturbed, else
    OVERVIEW_SECONDS (a whole trial of gestures, to see which channels follow which gesture).

    The filter's start-up transient (first SETTLE_SECONDS) is left out where the recording allows.
    """
    mask = recording.disturbance_mask
    long_view = mask is None or not mask[:, channels].any()
    first = min(int(SETTLE_SECONDS * recording.fs_hz), recording.n_samples // 2)
    seconds = OVERVIEW_SECONDS if long_view else TRACE_SECONDS
    length = min(recording.n_samples - first, int(seconds * recording.fs_hz))
    if mask is None or long_view:
        return first, first + length
    activity = mask[first:, channels].any(axis=1).astype(np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(activity)])
    score = cumulative[length:] - cumulative[:-length]  # disturbed samples in [i, i + length)
    start = first + int(np.argmax(score))
    return start, start + length


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a bool vector as (start, stop) index pairs."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _trace_panel(
    ax: plt.Axes, t_s: np.ndarray, data: np.ndarray, channels: list[int], labels: list[str], mask: np.ndarray | None
) -> None:
    """Stacked traces `(n_samples, len(channels))` with one shared spacing and the mask shaded."""
    spread = np.percentile(np.abs(data), 99.5, axis=0) if data.size else np.ones(1)
    spacing = max(float(np.max(spread)) * 2.2, 1e-3)
    for i in range(len(channels)):
        offset = -i * spacing
        ax.plot(t_s, data[:, i] + offset, lw=0.6, color="black")
        if mask is not None and mask[:, i].any():
            # Shade this trace's own band where its mask is set, and redraw those samples in red.
            ax.fill_between(
                t_s, offset - spacing / 2, offset + spacing / 2, where=mask[:, i], color="tab:red", alpha=0.12, lw=0
            )
            ax.plot(t_s, np.where(mask[:, i], data[:, i] + offset, np.nan), lw=0.6, color="tab:red")
    ax.set_yticks([-i * spacing for i in range(len(channels))])
    ax.set_yticklabels([f"ch {c + 1}\n{labels[c]}" for c in channels], fontsize=7)
    ax.set_ylim(-(len(channels) - 0.4) * spacing, 0.6 * spacing)
    ax.text(
        1.0, 1.0, f"spacing {spacing:.0f} uV", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
        color="dimgray",
    )  # fmt: skip


def plot_recordings(path: Path, out: Path, *, layout: str | None = None) -> list[Path]:
    """One figure for a file (`out` is a PNG path or a folder), or one per representative recording of a
    folder (one clean, one CA, one LC, named `CONDITION_NAME.png` in the folder `out`); returns the PNGs."""
    if path.is_file():
        out_path = out if out.suffix.lower() == ".png" else out / (path.name.split(".")[0] + ".png")
        return [plot_recording(load_recording(path, layout=layout), out_path)]
    written = []
    for condition, chosen in representative_recordings(recording_paths(path)).items():
        name = f"{condition}_{chosen.name.split('.')[0]}.png"
        written.append(plot_recording(load_recording(chosen, layout=layout), out / name))
    return written


def plot_recording(recording: Recording, out_path: str | Path, *, title: str | None = None) -> Path:
    """Write the three-part figure of `recording` to `out_path` (PNG); returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    preprocessing = default_preprocessing(recording)
    filtered = filter_recording(recording.samples, preprocessing)
    layout = recording.layout
    maps = class_rms(recording, filtered)
    n_grids = len(layout.grids)
    n_classes = max(1, len(maps))
    grid_rows, grid_cols = max(g.rows for g in layout.grids), max(g.cols for g in layout.grids)
    # Size the heatmap block so that each cell is roughly square.
    cell_in = min(0.22, 15.0 / (n_classes * grid_cols + 2), 4.0 / (n_grids * grid_rows))
    heat_h = max(1.8, n_grids * grid_rows * cell_in + 0.3 * n_grids + 0.7)
    # Fixed margins in inches instead of a layout engine: constrained layout over ~30 axes costs
    # seconds per figure, and the placement here is simple.
    height_in = heat_h + TRACE_BLOCK_IN
    fig = plt.figure(figsize=(16, height_in))
    heat_top, heat_bottom = 1 - 0.62 / height_in, TRACE_BLOCK_IN / height_in
    heat_gs = fig.add_gridspec(
        n_grids, n_classes, left=0.06, right=0.9, top=heat_top, bottom=heat_bottom, wspace=0.08, hspace=0.08
    )
    axes = np.array([[fig.add_subplot(heat_gs[g, c]) for c in range(n_classes)] for g in range(n_grids)])

    # --- 1. RMS maps per grid and gesture
    vmax = max((float(np.percentile(v, 99)) for v in maps.values()), default=1.0)
    image = None
    for col, (name, rms) in enumerate(maps.items()):
        for g, grid in enumerate(layout.grids):
            index = grid.index_array()
            values = np.where(index == NO_ELECTRODE, np.nan, rms[np.where(index == NO_ELECTRODE, 0, index)])
            ax = axes[g, col]
            image = ax.imshow(values, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if g == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{grid.name}\n{grid.rows}x{grid.cols}", fontsize=8)
    if image is not None:
        colorbar_ax = fig.add_axes((0.92, heat_bottom + 0.02, 0.01, heat_top - heat_bottom - 0.04))
        fig.colorbar(image, cax=colorbar_ax, label="RMS (uV)")
    band = preprocessing.effective_band_hz
    fig.suptitle(
        title
        or (
            f"{recording.subject}/{recording.session}/{recording.trial}  condition {recording.condition}  "
            f"{recording.n_channels} ch, {recording.fs_hz:g} Hz, {recording.duration_s:.1f} s  "
            f"| RMS per gesture, {band[0]:g}-{band[1]:g} Hz"
        ),
        fontsize=10,
        y=1 - 0.12 / height_in,
    )

    # --- 2. traces (left) and 3. spectra (right)
    gs = fig.add_gridspec(
        3, 2, width_ratios=[2.3, 1], height_ratios=[1, 1, 0.18], left=0.07, right=0.985,
        top=(TRACE_BLOCK_IN - 0.75) / height_in, bottom=0.55 / height_in, hspace=0.3, wspace=0.14,
    )  # fmt: skip
    ax_a = fig.add_subplot(gs[0, 0])
    ax_b = fig.add_subplot(gs[1, 0], sharex=ax_a)
    ax_l = fig.add_subplot(gs[2, 0], sharex=ax_a)
    ax_s = fig.add_subplot(gs[:, 1])
    affected, clean, caption_a, caption_b = choose_channels(recording, filtered)
    start, stop = _excerpt(recording, affected)
    t_s = np.arange(start, stop) / recording.fs_hz
    mask = recording.disturbance_mask
    labels = layout.channel_labels()
    for ax, channels, caption in ((ax_a, affected, caption_a), (ax_b, clean, caption_b)):
        sub_mask = None if mask is None else mask[start:stop][:, channels]
        _trace_panel(ax, t_s, filtered[start:stop][:, channels], channels, labels, sub_mask)
        disturbed = mask is not None and bool(mask.any())
        ax.set_title(
            f"{caption} (band-passed; disturbance shaded red)" if disturbed else f"{caption} (band-passed)", fontsize=9
        )
        ax.tick_params(labelbottom=False)
    _label_strip(ax_l, recording, start, stop, t_s)

    _spectrum_panel(ax_s, recording, affected, clean, caption_a, caption_b, band)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    logger.debug("Wrote %s", out_path)
    return out_path


def _label_strip(ax: plt.Axes, recording: Recording, start: int, stop: int, t_s: np.ndarray) -> None:
    names = recording.gesture_names
    tab10 = plt.get_cmap("tab10")
    cmap = ListedColormap([(0.87, 0.87, 0.87, 1.0), *[tab10(i % 10) for i in range(len(names))]])
    codes = recording.labels[start:stop].astype(np.int64) + 1  # 0 = unusable
    ax.imshow(
        codes[None, :], aspect="auto", cmap=cmap, vmin=0, vmax=len(names), interpolation="nearest",
        extent=(float(t_s[0]), float(t_s[-1]), 0, 1),
    )  # fmt: skip
    change = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1, [len(codes)]])
    for a, b in zip(change[:-1], change[1:], strict=True):
        code = int(codes[a])
        if code == UNUSABLE + 1:
            continue
        # The name where it fits (about 0.55 % of the strip per character), else the class index.
        name = names[code - 1]
        text = name if b - a > 0.0055 * len(name) * len(codes) else str(code - 1)
        if b - a > 0.012 * len(codes):
            ax.text(t_s[(a + b - 1) // 2], 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_title(
        "labels: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + ", grey unusable", fontsize=7, loc="left"
    )
    ax.set_yticks([])
    ax.set_xlabel("time (s)")


def _spectrum_panel(
    ax: plt.Axes,
    recording: Recording,
    affected: list[int],
    clean: list[int],
    caption_a: str,
    caption_b: str,
    band: tuple[float, float],
) -> None:
    raw = recording.samples.astype(np.float64)
    raw = raw - raw.mean(axis=0)
    nperseg = int(min(recording.n_samples, recording.fs_hz))  # 1 Hz resolution
    for channels, caption, colour in ((affected, caption_a, "tab:red"), (clean, caption_b, "tab:blue")):
        freqs, psd = signal.welch(raw[:, channels], fs=recording.fs_hz, nperseg=nperseg, axis=0)
        median = np.median(psd, axis=1)
        ax.semilogy(freqs, median, color=colour, lw=1.0, label=f"{caption} (median of {len(channels)})")
        ax.fill_between(freqs, psd.min(axis=1), psd.max(axis=1), color=colour, alpha=0.15, lw=0)
    for edge in band:
        ax.axvline(edge, color="gray", ls="--", lw=0.8)
    ax.set_xlim(0, min(recording.fs_hz / 2, 600))
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("PSD (uV^2/Hz), raw minus DC")
    ax.set_title("spectra (dashed: band-pass edges)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
