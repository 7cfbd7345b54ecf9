"""Disturbance models: regions per layout, CA strike rate and patches, LC rows and hum, masks, inject."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout, default_layout, flexemg_layout
from rohde.core.recording import Recording
from rohde.simulation.disturbances import (
    CAParams,
    DropoutParams,
    LCParams,
    PowerlineParams,
    affected_channels,
    apply_disturbance,
    inject,
    strike_times,
)

LAYOUTS = [(default_layout(), 2048.0), (flexemg_layout(), 1000.0)]
IDS = ["3x8x8@2048", "flexemg16x4@1000"]


def _emg_like(n: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """Band-limited noise of ~30 uV RMS standing in for clean EMG (the input is arbitrary data)."""
    rng = np.random.default_rng(seed)
    sos = signal.butter(2, [30.0, 300.0], btype="bandpass", fs=2048.0, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal((n, n_channels)), axis=0)
    return (30.0 * x / x.std()).astype(np.float32)


def _onsets(mask: np.ndarray) -> np.ndarray:
    """Sample indices where any channel's mask switches on."""
    active = mask.any(axis=1).astype(np.int8)
    return np.flatnonzero(np.diff(np.concatenate([[0], active])) == 1)


def test_default_regions_match_the_protocol() -> None:
    layout = default_layout()
    assert affected_channels(layout, "CA") == list(range(155, 192))  # channels 156-192, 1-based
    last = layout.grids[-1].index_array()
    assert affected_channels(layout, "LC") == sorted(last[-2:, :].ravel().tolist())
    assert affected_channels(layout, "LC")[:4] == [134, 135, 142, 143]  # rows 7-8 of grid 3, column-major
    assert affected_channels(layout, "powerline") == list(range(192))
    assert affected_channels(layout, "clean") == []


def test_flexemg_regions_follow_the_physical_layout() -> None:
    layout = flexemg_layout()
    index = layout.grids[0].index_array()
    assert affected_channels(layout, "CA") == sorted(index[-3:, :].ravel().tolist())  # last 3 of 16 rows
    assert affected_channels(layout, "LC") == sorted(index[-2:, :].ravel().tolist())
    assert affected_channels(layout, "LC", LCParams(rows=3)) == sorted(index[-3:, :].ravel().tolist())


def test_bad_requests_raise_clear_errors() -> None:
    layout = default_layout()
    rng = np.random.default_rng(0)
    x = np.zeros((100, 192), dtype=np.float32)
    with pytest.raises(ConfigError, match="Unknown disturbance condition"):
        apply_disturbance(x, fs_hz=2048.0, layout=layout, condition="rain", rng=rng)
    with pytest.raises(ConfigError, match="takes CAParams"):
        apply_disturbance(x, fs_hz=2048.0, layout=layout, condition="CA", rng=rng, params=LCParams())
    with pytest.raises(ConfigError, match="samples must be"):
        apply_disturbance(x[:, :64], fs_hz=2048.0, layout=layout, condition="CA", rng=rng)
    with pytest.raises(ConfigError, match="rows"):
        affected_channels(layout, "LC", LCParams(rows=9))


@pytest.mark.parametrize(("layout", "fs"), LAYOUTS, ids=IDS)
def test_contact_artifact(layout: ElectrodeLayout, fs: float) -> None:
    n = int(10 * fs)
    clean = _emg_like(n, layout.n_channels)
    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="CA", rng=np.random.default_rng(1))
    region = affected_channels(layout, "CA")
    outside = np.setdiff1d(np.arange(layout.n_channels), region)
    # Only the region is touched, and exactly where the mask says so.
    np.testing.assert_array_equal(out[:, outside], clean[:, outside])
    assert not mask[:, outside].any()
    onsets = _onsets(mask)
    rate = (len(onsets) - 1) / ((onsets[-1] - onsets[0]) / fs)
    hit_sets = {tuple(np.flatnonzero(mask[t])) for t in onsets}
    peak = np.abs(out - clean)[:, region].max()
    patch = np.mean([len(h) for h in hit_sets])
    print(  # noqa: T201 - the figures are part of the evidence
        f"\nCA on {layout.name}: {len(onsets)} strikes, rate {rate:.2f} Hz, {len(hit_sets)} distinct patches, "
        f"patch size {patch:.1f} of {len(region)}, peak {peak:.0f} uV"
    )
    assert 4.0 <= rate <= 5.0
    assert len(hit_sets) >= min(0.4 * len(onsets), 8)  # the electrodes hit vary from strike to strike
    assert np.mean([len(h) for h in hit_sets]) < 0.75 * len(region)
    assert 300.0 <= peak <= 5000.0
    # Transients recover: outside the masked spans only a small tail (< 10 % of the peak) remains.
    diff = np.abs(out - clean)
    assert diff[onsets[3] + int(0.004 * fs)].max() > 100.0
    assert diff[~mask].max() < 0.1 * peak
    assert mask.mean(axis=0)[region].max() < 0.5


def test_strike_times_follow_the_tapping_rate() -> None:
    times = strike_times(int(60 * 2048), 2048.0, np.random.default_rng(3), CAParams(rate_hz=(4.0, 4.0)))
    intervals = np.diff(times) / 2048.0
    assert 1 / intervals.mean() == pytest.approx(4.0, rel=0.03)
    assert 0.02 < intervals.std() / intervals.mean() < 0.2


@pytest.mark.parametrize(("layout", "fs"), LAYOUTS, ids=IDS)
def test_loose_contact(layout: ElectrodeLayout, fs: float) -> None:
    n = int(4 * fs)
    clean = _emg_like(n, layout.n_channels, seed=2)
    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="LC", rng=np.random.default_rng(4))
    rows = affected_channels(layout, "LC")
    others = np.setdiff1d(np.arange(layout.n_channels), rows)
    assert mask[:, rows].all() and not mask[:, others].any()
    np.testing.assert_array_equal(out[:, others], clean[:, others])
    freqs, power = signal.welch(out.astype(np.float64), fs=fs, nperseg=int(fs), axis=0)
    at = lambda f: power[np.argmin(np.abs(freqs - f))]  # noqa: E731
    hum_ratio = np.median(at(50.0)[rows]) / np.median(at(50.0)[others])
    h3_ratio = np.median(at(150.0)[rows]) / np.median(at(150.0)[others])
    print(f"\nLC on {layout.name}: {len(rows)} channels, 50 Hz power x{hum_ratio:.0f}, 150 Hz power x{h3_ratio:.0f}")  # noqa: T201
    assert hum_ratio > 100.0
    assert h3_ratio > 10.0


def test_loose_contact_removes_the_emg() -> None:
    layout, fs = default_layout(), 2048.0
    n = int(2 * fs)
    clean = _emg_like(n, 192, seed=5)
    rng = np.random.default_rng(6)
    params = LCParams(hum_uv=(0.0, 0.0), wander_uv=(0.0, 0.0), noise_uv=(0.0, 0.0), pop_rate_hz=0.0)
    out, _ = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="LC", rng=rng, params=params)
    rows = affected_channels(layout, "LC")
    gain = np.std(out[:, rows], axis=0) / np.std(clean[:, rows], axis=0)
    assert np.all(gain <= 0.15) and np.all(gain >= 0.02)


def test_powerline_and_dropout() -> None:
    layout, fs = default_layout(), 2048.0
    n = int(4 * fs)
    clean = _emg_like(n, 192, seed=7)
    out, mask = apply_disturbance(
        clean, fs_hz=fs, layout=layout, condition="powerline", rng=np.random.default_rng(8), params=PowerlineParams()
    )
    assert mask.all()
    freqs, power = signal.welch((out - clean).astype(np.float64), fs=fs, nperseg=int(fs), axis=0)
    assert freqs[np.argmax(power.mean(axis=1))] == pytest.approx(50.0, abs=1.0)
    out, mask = apply_disturbance(
        clean, fs_hz=fs, layout=layout, condition="dropout", rng=np.random.default_rng(9),
        params=DropoutParams(channel_fraction=0.1, duration_s=(1.0, 2.0)),
    )  # fmt: skip
    dropped = np.flatnonzero(mask.any(axis=0))
    assert len(dropped) == round(0.1 * 192)
    assert np.all(np.abs(out[mask]) < 5.0)
    np.testing.assert_array_equal(out[~mask], clean[~mask])
    assert 1.0 * fs <= mask[:, dropped].sum(axis=0).min() and mask[:, dropped].sum(axis=0).max() <= 2.0 * fs


def test_same_rng_same_disturbance() -> None:
    layout, fs = flexemg_layout(), 1000.0
    clean = _emg_like(3000, 64)
    a = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="CA+LC", rng=np.random.default_rng(1))
    b = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="CA+LC", rng=np.random.default_rng(1))
    c = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="CA+LC", rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.flatnonzero(a[1].any(axis=0))) <= set(affected_channels(layout, "CA+LC"))


def test_inject_returns_a_new_recording_with_merged_mask() -> None:
    layout, fs = flexemg_layout(), 1000.0
    clean = _emg_like(4000, 64)
    rec = Recording(
        samples=clean, fs_hz=fs, layout=layout, labels=np.zeros(4000, dtype=np.int16), gesture_names=("rest",)
    )
    ca = inject(rec, "CA", seed=1)
    assert rec.condition == "clean" and rec.disturbance_mask is None
    np.testing.assert_array_equal(rec.samples, clean)
    assert ca.condition == "CA" and ca.disturbance_mask is not None and ca.disturbance_mask.any()
    both = inject(ca, "LC", seed=2)
    assert both.condition == "CA+LC"
    assert both.disturbance_mask is not None
    assert np.all(both.disturbance_mask[ca.disturbance_mask])
    assert both.disturbance_mask[:, affected_channels(layout, "LC")].all()
    assert [d["condition"] for d in both.provenance["disturbances"]] == ["CA", "LC"]
    again = inject(rec, "CA", seed=1)
    np.testing.assert_array_equal(again.samples, ca.samples)


def test_hum_follows_the_recordings_mains() -> None:
    layout, fs = flexemg_layout(), 1000.0
    clean = _emg_like(4000, 64)
    rec = Recording(
        samples=clean,
        fs_hz=fs,
        layout=layout,
        labels=np.zeros(4000, dtype=np.int16),
        gesture_names=("rest",),
        provenance={"powerline_hz": 60.0},
    )
    rows = affected_channels(layout, "LC")
    for disturbed, mains in ((inject(rec, "LC", seed=1), 60.0), (inject(rec, "LC", seed=1, powerline_hz=50.0), 50.0)):
        freqs, power = signal.welch(disturbed.samples[:, rows].astype(np.float64), fs=fs, nperseg=1000, axis=0)
        assert freqs[np.argmax(power.mean(axis=1)[5:]) + 5] == pytest.approx(mains, abs=1.0)
