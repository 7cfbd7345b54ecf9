"""How close GAN-made disturbances are to real ones, with references that give the numbers meaning.

For each condition the held-out real segments are split in two halves, A and B. Every metric
compares a candidate set against A:

- `gan`: as many generated segments as B holds;
- `naive`: a naive generator built from B, Gaussian noise with B's per-channel power spectrum
  (random phases, independent channels): right spectrum and RMS, no transients, no spatial structure;
- `real`: B itself, real against real, the best a generator can hope for.

A metric is informative when `real` and `naive` differ; the GAN should sit near `real`. Real
segments are compared after removing each segment's per-channel mean, as the GAN models them
(see `rohde.training.gan_models.remove_segment_mean`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal, stats

from rohde.core.errors import ConfigError
from rohde.training.gan import DisturbanceGAN
from rohde.training.gan_models import remove_segment_mean

# name -> (what it measures, which direction is better)
METRICS: dict[str, tuple[str, str]] = {
    "dtw_per_sample_uv": (
        "fastdtw distance of random single-channel segment pairs / segment length (independent "
        "real pairs are not at 0: smaller signals score lower than real)",
        "closer to real",
    ),
    "max_xcorr": ("max over lags of |normalised cross-correlation| of random single-channel pairs", "closer to real"),
    "channel_corr_distance": ("mean |difference| of the mean channel-by-channel correlation matrices", "lower"),
    "psd_distance_db": ("mean |10 log10 ratio| of the mean Welch power spectra", "lower"),
    "psd_distance_floored_db": (
        "the same with every bin floored at 60 dB below the reference's peak bin (the "
        "shape where the power is; noise-free disturbances leave bins near zero)",
        "lower",
    ),
    "amplitude_wasserstein_uv": ("Wasserstein-1 distance of the sample-value distributions", "lower"),
    "rms_wasserstein_uv": ("Wasserstein-1 distance of per-(segment, channel) RMS distributions", "lower"),
}
CANDIDATES = ("gan", "naive", "real")
_PSD_RANGE_DB = 60.0  # dynamic range of psd_distance_floored_db


def naive_segments(reference: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` segments `(n, R, T)` of Gaussian noise with `reference`'s per-channel mean spectrum and mean."""
    t = reference.shape[2]
    centred = reference - reference.mean(axis=2, keepdims=True)
    amplitude = np.sqrt(np.mean(np.abs(np.fft.rfft(centred, axis=2)) ** 2, axis=0))  # (R, F)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, *amplitude.shape))
    noise = np.fft.irfft(amplitude[None] * np.exp(1j * phases), n=t, axis=2)
    # Random phases on real-FFT bins give noise whose power per bin matches the reference on average.
    return (noise + reference.mean(axis=(0, 2))[None, :, None]).astype(np.float32)


def _max_xcorr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denom == 0:
        return 0.0
    return float(np.max(np.abs(signal.correlate(a, b, mode="full", method="fft"))) / denom)


def _mean_corr(x: np.ndarray) -> np.ndarray:
    """Mean over segments of the `(R, R)` channel correlation matrix of `(N, R, T)` segments."""
    centred = x - x.mean(axis=2, keepdims=True)
    norms = np.sqrt(np.sum(centred**2, axis=2, keepdims=True))
    unit = centred / np.where(norms == 0, 1.0, norms)
    return np.einsum("nit,njt->ij", unit, unit) / x.shape[0]


def _mean_psd(x: np.ndarray, fs_hz: float) -> tuple[np.ndarray, np.ndarray]:
    freqs, psd = signal.welch(x, fs=fs_hz, nperseg=min(x.shape[2], 128), axis=2)
    return freqs, psd.mean(axis=(0, 1))


def _compare(cand: np.ndarray, ref: np.ndarray, *, fs_hz: float, pairs: np.ndarray, max_values: int,
             rng: np.random.Generator) -> dict[str, float]:  # fmt: skip
    from fastdtw import fastdtw

    t = ref.shape[2]
    dtw, xcorr = [], []
    for i, j, k in pairs:
        a, b = cand[i % len(cand), k].astype(np.float64), ref[j, k].astype(np.float64)
        dtw.append(fastdtw(a, b, radius=1)[0] / t)
        xcorr.append(_max_xcorr(a, b))
    corr_c, corr_r = _mean_corr(cand), _mean_corr(ref)
    upper = np.triu_indices(ref.shape[1], k=1)
    corr_dist = float(np.mean(np.abs(corr_c[upper] - corr_r[upper]))) if upper[0].size else 0.0
    _, psd_c = _mean_psd(cand, fs_hz)
    _, psd_r = _mean_psd(ref, fs_hz)
    tiny = 1e-12
    psd_db = float(np.mean(np.abs(10.0 * np.log10((psd_c + tiny) / (psd_r + tiny)))))
    floor = max(float(psd_r.max()) * 10 ** (-_PSD_RANGE_DB / 10), tiny)
    psd_floored_db = float(np.mean(np.abs(10.0 * np.log10(np.maximum(psd_c, floor) / np.maximum(psd_r, floor)))))
    vals_c, vals_r = cand.ravel(), ref.ravel()
    if vals_c.size > max_values:
        vals_c = rng.choice(vals_c, max_values, replace=False)
    if vals_r.size > max_values:
        vals_r = rng.choice(vals_r, max_values, replace=False)
    rms_c = np.sqrt(np.mean(cand.astype(np.float64) ** 2, axis=2)).ravel()
    rms_r = np.sqrt(np.mean(ref.astype(np.float64) ** 2, axis=2)).ravel()
    return {
        "dtw_per_sample_uv": float(np.mean(dtw)),
        "max_xcorr": float(np.mean(xcorr)),
        "channel_corr_distance": corr_dist,
        "psd_distance_db": psd_db,
        "psd_distance_floored_db": psd_floored_db,
        "amplitude_wasserstein_uv": float(stats.wasserstein_distance(vals_c, vals_r)),
        "rms_wasserstein_uv": float(stats.wasserstein_distance(rms_c, rms_r)),
    }


def _check_held_out(gan: DisturbanceGAN, condition: str, real: np.ndarray) -> None:
    if condition not in gan.conditions:
        raise ConfigError(f"held_out has condition {condition!r}, but the GAN knows only {list(gan.conditions)}.")
    expected = (len(gan.region_channels[condition]), gan.segment_samples)
    if real.ndim != 3 or real.shape[1:] != expected or real.shape[0] < 4:
        raise ConfigError(
            f"held_out[{condition!r}] must be (N >= 4, {expected[0]}, {expected[1]}) segments, got {real.shape}."
        )


def compare_to_real(
    real: np.ndarray,
    candidates: Mapping[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]],
    *,
    fs_hz: float,
    rng: np.random.Generator,
    n_pairs: int = 32,
    max_segments: int = 256,
    max_values: int = 200_000,
) -> dict[str, Any]:
    """Every metric of `METRICS` for each candidate set and for `naive` and `real`, against half A of `real`.

    `real` is `(N >= 4, R, T)` uV held-out segments; it is split at random into halves A and B. Each
    candidate is a function `(indices, rng) -> (len(indices), R, T)` uV, called with the indices into
    `real` of half B (a candidate may use what lies under those segments, or only their count);
    `naive` (noise with B's spectrum) and `real` (B itself) are added. Every set loses its per-segment
    channel means first. Returns `{metric: {candidate: value}}` plus `n_segments`.
    """
    if fs_hz <= 0:
        raise ConfigError(f"fs_hz must be positive, got {fs_hz}.")
    if real.ndim != 3 or real.shape[0] < 4:
        raise ConfigError(f"real must be (N >= 4, R, T) segments, got shape {real.shape}.")
    clash = sorted(set(candidates) & {"naive", "real"})
    if clash:
        raise ConfigError(f"Candidate names {clash} are taken by the references; name them otherwise.")
    real = remove_segment_mean(np.asarray(real, dtype=np.float32))
    order = rng.permutation(real.shape[0])
    half = real.shape[0] // 2
    part_a = real[order[:half][:max_segments]]
    index_b = order[half:][:max_segments]
    part_b = real[index_b]
    sets = {name: remove_segment_mean(np.asarray(make(index_b, rng))) for name, make in candidates.items()}
    for name, cand in sets.items():
        if cand.shape != part_b.shape:
            raise ConfigError(f"Candidate {name!r} gave shape {cand.shape}; expected {part_b.shape}.")
    sets["naive"] = naive_segments(part_b, len(part_b), rng)
    sets["real"] = part_b
    pairs = np.stack([rng.integers(len(part_b), size=n_pairs), rng.integers(len(part_a), size=n_pairs),
                      rng.integers(real.shape[1], size=n_pairs)], axis=1)  # fmt: skip
    per_candidate = {
        name: _compare(cand, part_a, fs_hz=fs_hz, pairs=pairs, max_values=max_values, rng=rng)
        for name, cand in sets.items()
    }
    report: dict[str, Any] = {metric: {name: per_candidate[name][metric] for name in sets} for metric in METRICS}
    report["n_segments"] = {"reference_a": int(len(part_a)), "candidates": int(len(part_b))}
    return report


def gan_quality_report(
    gan: DisturbanceGAN,
    held_out: dict[str, np.ndarray],
    *,
    fs_hz: float,
    rng: np.random.Generator,
    n_pairs: int = 32,
    max_segments: int = 256,
    max_values: int = 200_000,
) -> dict[str, Any]:
    """Per condition and metric, `{"gan": x, "naive": x, "real": x}` against held-out half A.

    `held_out` maps each condition to real segments `(N, n_region_channels, segment_samples)` uV
    not seen in training. `n_pairs` random (segment, segment, channel) pairs feed the DTW and
    cross-correlation figures; `max_segments` caps each half. See `METRICS` for the meaning.
    """
    if fs_hz <= 0:
        raise ConfigError(f"fs_hz must be positive, got {fs_hz}.")
    report: dict[str, Any] = {}
    for condition in sorted(held_out):
        real = np.asarray(held_out[condition], dtype=np.float32)
        _check_held_out(gan, condition, real)

        def generated(index: np.ndarray, r: np.random.Generator, condition: str = condition) -> np.ndarray:
            return gan.sample(condition, len(index), r)

        report[condition] = compare_to_real(real, {"gan": generated}, fs_hz=fs_hz, rng=rng, n_pairs=n_pairs,
                                            max_segments=max_segments, max_values=max_values)  # fmt: skip
    return report


def format_quality_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, one row per (condition, metric)."""
    lines = [f"{'condition':<10}{'metric':<27}{'gan':>12}{'naive':>12}{'real':>12}  better"]
    for condition, metrics in report.items():
        for metric, (_, better) in METRICS.items():
            row = metrics[metric]
            lines.append(
                f"{condition:<10}{metric:<27}{row['gan']:>12.4g}{row['naive']:>12.4g}{row['real']:>12.4g}  {better}"
            )
    return "\n".join(lines)


def plot_synthetic_vs_real(
    gan: DisturbanceGAN,
    held_out: dict[str, np.ndarray],
    *,
    out_path: Path,
    rng: np.random.Generator,
    max_traces: int = 8,
) -> Path:
    """One row per condition: a real segment, a generated one (stacked channel traces) and mean spectra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = sorted(held_out)
    if not conditions:
        raise ConfigError("held_out is empty; give at least one condition's real segments to plot.")
    fig, axes = plt.subplots(len(conditions), 3, figsize=(15, 4 * len(conditions)), squeeze=False)
    t_ms = np.arange(gan.segment_samples) / gan.fs_hz * 1000.0
    for row, condition in enumerate(conditions):
        real = np.asarray(held_out[condition], dtype=np.float32)
        _check_held_out(gan, condition, real)
        real = remove_segment_mean(real)
        synthetic = gan.sample(condition, min(len(real), 64), rng)
        channels = np.unique(np.linspace(0, real.shape[1] - 1, min(max_traces, real.shape[1])).astype(int))
        real_one = real[rng.integers(len(real))]
        # One offset for both panels, set by the real segment, so amplitudes compare by eye.
        offset = 1.2 * float(np.ptp(real_one[channels], axis=1).max())
        for col, (title, seg) in enumerate((("real", real_one), ("GAN", synthetic[0]))):
            ax = axes[row, col]
            for n, ch in enumerate(channels):
                ax.plot(
                    t_ms, seg[ch] - seg[ch].mean() - n * offset, lw=0.7, color="tab:blue" if col == 0 else "tab:red"
                )
            ax.set_yticks([-n * offset for n in range(len(channels))])
            ax.set_yticklabels([str(gan.region_channels[condition][ch] + 1) for ch in channels])
            ax.set_title(f"{condition}: {title} segment (channel, offset {offset:.0f} uV)")
            ax.set_xlabel("time (ms)")
        ax = axes[row, 2]
        for label, data, colour in (("real", real, "tab:blue"), ("GAN", synthetic, "tab:red"),
                                    ("naive", naive_segments(real, len(synthetic), rng), "tab:gray")):  # fmt: skip
            freqs, psd = _mean_psd(data, gan.fs_hz)
            ax.semilogy(freqs, psd, label=label, color=colour)
        ax.set_title(f"{condition}: mean power spectrum")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("uV^2/Hz")
        ax.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
