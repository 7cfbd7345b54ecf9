"""Simulator: determinism, realism statistics against real-data ranges, learnability, live stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.gestures import CONDITIONS, DEFAULT_GESTURES, UNUSABLE
from rohde.core.layouts import ElectrodeLayout, layout_from_spec
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording, load_recording
from rohde.core.windows import window_ends
from rohde.simulation.disturbances import affected_channels
from rohde.simulation.electrode_geometry import electrode_geometry
from rohde.simulation.emg_model import EmgGenerator, make_anatomy, make_session, synergy_matrix
from rohde.simulation.simulator import LiveSimulator, SimulatorConfig, simulate_dataset, simulate_recording

# Short trials: one pass through the six active gestures (~14 s).
SHORT = SimulatorConfig(rest_s=0.8, gesture_s=1.2, ramp_s=0.2, repetitions=1)
FLEX = SimulatorConfig(fs_hz=1000.0, layout="flexemg16x4", rest_s=0.8, gesture_s=1.2, ramp_s=0.2, repetitions=1)


def _filtered(rec: Recording, *, notch_hz: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Band-passed samples and labels with the first 0.5 s (filter start-up) dropped."""
    skip = int(0.5 * rec.fs_hz)
    filtered = filter_recording(rec.samples, PreprocessingConfig(fs_hz=rec.fs_hz, notch_hz=notch_hz))
    return filtered[skip:].astype(np.float64), rec.labels[skip:]


def _median_frequency(x: np.ndarray, fs_hz: float) -> np.ndarray:
    """Per-channel median frequency of `(n_samples, n_channels)`."""
    freqs, power = signal.welch(x, fs=fs_hz, nperseg=int(fs_hz // 4), axis=0)
    cumulative = np.cumsum(power, axis=0)
    idx = np.argmax(cumulative >= cumulative[-1] / 2, axis=0)
    return np.asarray(freqs[idx])


def _realism_figures(rec: Recording, *, notch_hz: float = 50.0) -> dict[str, float]:
    filtered, labels = _filtered(rec, notch_hz=notch_hz)
    rest = filtered[labels == 0]
    active = filtered[labels > 0]
    rest_rms = np.sqrt((rest**2).mean(0))
    active_rms = np.sqrt((active**2).mean(0))
    mdf = _median_frequency(active, rec.fs_hz)
    corr = np.corrcoef(active.T)
    neighbours = np.array([corr[a, b] for a, b in rec.layout.neighbour_pairs()])
    raw = rec.samples[int(0.5 * rec.fs_hz) :][labels > 0].astype(np.float64)
    freqs, power = signal.welch(raw - raw.mean(0), fs=rec.fs_hz, nperseg=int(rec.fs_hz // 2), axis=0)
    in_band = power[(freqs >= 20) & (freqs <= 450)].sum() / power.sum()
    return {
        "rest_rms_p10": float(np.percentile(rest_rms, 10)),
        "rest_rms_p50": float(np.median(rest_rms)),
        "rest_rms_p90": float(np.percentile(rest_rms, 90)),
        "active_rms_p10": float(np.percentile(active_rms, 10)),
        "active_rms_p50": float(np.median(active_rms)),
        "active_rms_p90": float(np.percentile(active_rms, 90)),
        "active_rms_max": float(active_rms.max()),
        "median_freq_p50": float(np.median(mdf)),
        "median_freq_p10": float(np.percentile(mdf, 10)),
        "median_freq_p90": float(np.percentile(mdf, 90)),
        "neighbour_corr_p10": float(np.percentile(neighbours, 10)),
        "neighbour_corr_p50": float(np.median(neighbours)),
        "neighbour_corr_p90": float(np.percentile(neighbours, 90)),
        "raw_power_20_450": float(in_band),
    }


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="layout"):
        SimulatorConfig(layout="banana")
    with pytest.raises(ConfigError, match="synergy"):
        SimulatorConfig(gestures=("no_movement", "juggling"))
    with pytest.raises(ConfigError, match="rest class"):
        SimulatorConfig(gestures=("hand_open", "hand_close"))
    with pytest.raises(ConfigError, match="fs_hz"):
        SimulatorConfig(fs_hz=200.0)
    with pytest.raises(ConfigError, match="Unknown disturbance"):
        simulate_recording(config=SHORT, subject=1, session=1, trial=1, condition="wet")


def test_same_seed_same_arrays_other_seed_differs() -> None:
    cfg = SimulatorConfig(layout="1x8x8", rest_s=0.5, gesture_s=0.5, ramp_s=0.1, repetitions=1)
    a = simulate_recording(config=cfg, subject=1, session=1, trial=1, condition="CA", seed=3)
    b = simulate_recording(config=cfg, subject=1, session=1, trial=1, condition="CA", seed=3)
    c = simulate_recording(config=cfg, subject=1, session=1, trial=1, condition="CA", seed=4)
    assert a.disturbance_mask is not None and b.disturbance_mask is not None
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.disturbance_mask, b.disturbance_mask)
    assert not np.array_equal(a.samples, c.samples)
    # The clean counterpart of a disturbed trial: identical off the CA region; inside it, unmasked
    # samples only carry the last few percent of a strike's exponential recovery.
    clean = simulate_recording(config=cfg, subject=1, session=1, trial=1, condition="clean", seed=3)
    region = affected_channels(a.layout, "CA")
    off = np.setdiff1d(np.arange(a.n_channels), region)
    np.testing.assert_array_equal(clean.samples[:, off], a.samples[:, off])
    np.testing.assert_array_equal(clean.labels, a.labels)
    diff = np.abs(clean.samples - a.samples)[:, region]
    assert diff[~a.disturbance_mask[:, region]].max() < 0.06 * diff.max()


def test_labels_cover_every_gesture_with_unusable_ramps() -> None:
    rec = simulate_recording(config=FLEX, subject=1, session=1, trial=1)
    assert rec.gesture_names == DEFAULT_GESTURES
    assert set(np.unique(rec.labels).tolist()) == {UNUSABLE, *range(len(DEFAULT_GESTURES))}
    assert rec.labels[0] == 0 and rec.labels[-1] == 0  # starts and ends at rest
    # Every hold: ramp (UNUSABLE) between rest and the gesture plateau, never a direct jump.
    changes = np.flatnonzero(np.diff(rec.labels) != 0)
    for i in changes:
        assert UNUSABLE in (rec.labels[i], rec.labels[i + 1])
    plateau_s = np.sum(rec.labels == 3) / rec.fs_hz
    assert plateau_s == pytest.approx(FLEX.gesture_s * FLEX.repetitions, abs=0.01)
    assert rec.duration_s == pytest.approx(FLEX.trial_s, abs=0.01)
    assert rec.disturbance_mask is not None and not rec.disturbance_mask.any()


@pytest.mark.parametrize(
    ("config", "name"), [(SHORT, "3x8x8 @ 2048 Hz"), (FLEX, "flexemg 16x4 @ 1000 Hz")], ids=["default", "flexemg"]
)
def test_realism_statistics(config: SimulatorConfig, name: str) -> None:
    figures = _realism_figures(simulate_recording(config=config, subject=1, session=1, trial=1))
    print(f"\nrealism {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()))  # noqa: T201
    # Real references: flexemg rest 5.7-13 uV, gestures 17-54 uV, MDF 147-172 Hz, corr 0.6-0.8;
    # OTB thigh grid 127-214 uV, MDF 50 Hz, corr 0.95.
    assert 1.5 <= figures["rest_rms_p50"] <= 10.0
    assert figures["rest_rms_p90"] <= 15.0
    assert 15.0 <= figures["active_rms_p50"] <= 200.0
    assert figures["active_rms_max"] <= 400.0
    assert 60.0 <= figures["median_freq_p50"] <= 180.0
    assert 0.6 <= figures["neighbour_corr_p50"] <= 0.95
    assert figures["neighbour_corr_p10"] >= 0.3
    assert figures["raw_power_20_450"] >= 0.9


@pytest.mark.realdata
def test_realism_against_real_flexemg(flexemg_dir: Path) -> None:
    """The same figures, same code, on real flexemg trials (US mains: 60 Hz notch) and on the simulator."""
    from rohde.core.datasets import load_flexemg_trial

    keys = (
        "rest_rms_p50",
        "active_rms_p10",
        "active_rms_p50",
        "active_rms_p90",
        "median_freq_p50",
        "neighbour_corr_p50",
    )
    real = [
        _realism_figures(load_flexemg_trial(flexemg_dir / "data" / f), notch_hz=60.0)
        for f in ("001-Session1Train/001-001.mat", "002-Session1Train/002-003.mat")
    ]
    sim = _realism_figures(simulate_recording(config=FLEX, subject=1, session=1, trial=1))
    print("\nfigure               real 001   real 002   simulated")  # noqa: T201
    for k in keys:
        print(f"{k:20s} {real[0][k]:9.3g} {real[1][k]:9.3g} {sim[k]:10.3g}")  # noqa: T201
    lo = {k: min(r[k] for r in real) for k in keys}
    hi = {k: max(r[k] for r in real) for k in keys}
    for k in ("rest_rms_p50", "active_rms_p50"):
        assert lo[k] / 3 <= sim[k] <= hi[k] * 3, k
    assert 0.7 * lo["median_freq_p50"] <= sim["median_freq_p50"] <= 1.4 * hi["median_freq_p50"]
    assert lo["neighbour_corr_p50"] - 0.15 <= sim["neighbour_corr_p50"] <= hi["neighbour_corr_p50"] + 0.1


def test_any_layout_and_rate() -> None:
    for spec, fs in (("2x8x8", 2048.0), ("4x8x8", 2048.0), ("1x8x8", 1000.0)):
        cfg = SimulatorConfig(fs_hz=fs, layout=spec, rest_s=0.4, gesture_s=0.4, ramp_s=0.1, repetitions=1)
        rec = simulate_recording(config=cfg, subject=2, session=1, trial=1, condition="LC")
        assert rec.n_channels == layout_from_spec(spec).n_channels
        assert rec.samples.dtype == np.float32 and np.isfinite(rec.samples).all()
        assert rec.disturbance_mask is not None
        lc = affected_channels(rec.layout, "LC")
        assert rec.disturbance_mask[:, lc].all() and rec.disturbance_mask.sum() == len(lc) * rec.n_samples


def test_layout_object_with_unmapped_channels() -> None:
    grid = layout_from_spec("1x4x4").grids[0]
    layout = ElectrodeLayout(name="4x4+aux", grids=(grid,), n_channels=18)  # channels 16, 17: auxiliary inputs
    cfg = SimulatorConfig(fs_hz=1000.0, layout=layout, rest_s=0.4, gesture_s=0.6, ramp_s=0.1)
    rec = simulate_recording(config=cfg, subject=1, session=1, trial=1, condition="CA")
    filtered, labels = _filtered(rec)
    rms = np.sqrt((filtered[labels > 0] ** 2).mean(0))
    assert rec.n_channels == 18 and rms[:16].min() > 5 * rms[16:].max()  # no EMG on auxiliary inputs
    assert rec.disturbance_mask is not None and not rec.disturbance_mask[:, 16:].any()
    assert rec.provenance["config"]["layout"] == "4x4+aux"


def test_fatigue_lowers_median_frequency_and_raises_amplitude() -> None:
    layout = layout_from_spec("1x8x8")
    fs = 2048.0
    gen = EmgGenerator(
        layout=layout,
        fs_hz=fs,
        anatomy=make_anatomy(np.random.default_rng(1)),
        session=make_session(np.random.default_rng(2), layout.n_channels, noise_uv=1.0, hum_uv=0.0),
    )
    rng = np.random.default_rng(3)
    drive = np.full((int(fs), gen.n_muscles), 0.5)
    seconds = [gen.generate(drive, rng) for _ in range(40)]
    cfg = PreprocessingConfig(fs_hz=fs)
    early = filter_recording(np.concatenate(seconds[:5]), cfg)[int(0.5 * fs) :]
    late = filter_recording(np.concatenate(seconds[-5:]), cfg)[int(0.5 * fs) :]
    mdf_early, mdf_late = np.median(_median_frequency(early, fs)), np.median(_median_frequency(late, fs))
    rms_early, rms_late = np.sqrt(np.mean(early**2)), np.sqrt(np.mean(late**2))
    print(  # noqa: T201
        f"\nfatigue over 40 s at 50 %: MDF {mdf_early:.1f} -> {mdf_late:.1f} Hz, "
        f"RMS {rms_early:.1f} -> {rms_late:.1f} uV"
    )
    assert mdf_late < 0.95 * mdf_early
    assert rms_late > rms_early


def test_sessions_and_subjects_vary() -> None:
    """Same drive, same noise: a new donning changes the map a little, a new arm changes it more."""
    layout = layout_from_spec("3x8x8")
    fs = 2048.0
    drive = np.tile(synergy_matrix(DEFAULT_GESTURES)[3], (int(fs), 1))  # hand_close

    def pattern(subject: int, session: int) -> np.ndarray:
        gen = EmgGenerator(
            layout=layout,
            fs_hz=fs,
            anatomy=make_anatomy(np.random.default_rng([0, 1, subject])),
            session=make_session(np.random.default_rng([0, 2, subject, session]), 192, noise_uv=1.6, hum_uv=2.0),
        )
        x = filter_recording(gen.generate(drive, np.random.default_rng(9)), PreprocessingConfig(fs_hz=fs))
        return np.asarray(np.log(np.sqrt((x[int(0.3 * fs) :].astype(np.float64) ** 2).mean(0))))

    base = pattern(1, 1)
    r_session = np.mean([np.corrcoef(base, pattern(1, s))[0, 1] for s in (2, 3)])
    r_subject = np.mean([np.corrcoef(base, pattern(s, 1))[0, 1] for s in (2, 3)])
    print(f"\nhand_close log-RMS map correlation: other session {r_session:.3f}, other subject {r_subject:.3f}")  # noqa: T201
    np.testing.assert_array_equal(base, pattern(1, 1))
    assert 0.7 < r_session < 0.995
    assert r_subject < r_session - 0.05


def _log_rms_windows(rec: Recording) -> tuple[np.ndarray, np.ndarray]:
    """Log per-channel RMS over 200 ms windows every 50 ms, only windows inside one label."""
    filtered, labels = _filtered(rec)
    window, hop = int(0.2 * rec.fs_hz), int(0.05 * rec.fs_hz)
    ends = window_ends(len(labels), window, hop)
    feats, ys = [], []
    for end in ends:
        lab = labels[end - window : end]
        if lab.min() < 0 or lab.min() != lab.max():
            continue
        feats.append(np.log(np.sqrt((filtered[end - window : end] ** 2).mean(0)) + 1e-3))
        ys.append(int(lab[0]))
    return np.asarray(feats), np.asarray(ys)


class _TinyLDA:
    """Linear discriminant analysis with a shared, lightly shrunk covariance."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _TinyLDA:
        self.classes = np.unique(y)
        means = np.stack([x[y == c].mean(0) for c in self.classes])
        centred = x - means[np.searchsorted(self.classes, y)]
        cov = centred.T @ centred / len(x)
        cov += np.eye(cov.shape[0]) * 1e-3 * np.trace(cov) / cov.shape[0]
        self.w = np.linalg.solve(cov, means.T).T
        self.b = -0.5 * np.sum(self.w * means, axis=1)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes[np.argmax(x @ self.w.T + self.b, axis=1)])


def test_gestures_are_learnable_and_disturbances_hurt() -> None:
    def data(trial: int, condition: str = "clean") -> tuple[np.ndarray, np.ndarray]:
        return _log_rms_windows(
            simulate_recording(config=SHORT, subject=1, session=1, trial=trial, condition=condition)
        )

    train = [data(t) for t in (1, 2, 3)]
    lda = _TinyLDA().fit(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
    table = {}
    for name, (x, y) in {
        "clean t4": data(4),
        "clean t5": data(5),
        "CA t6": data(6, "CA"),
        "LC t7": data(7, "LC"),
    }.items():
        table[name] = float(np.mean(lda.predict(x) == y))
    print("\nLDA on log-RMS (train: clean t1-t3, subject 1, session 1)")  # noqa: T201
    for name, acc in table.items():
        print(f"  {name:10s} {100 * acc:5.1f} %")  # noqa: T201
    clean = (table["clean t4"] + table["clean t5"]) / 2
    assert clean >= 0.9
    assert table["CA t6"] <= clean - 0.1
    assert table["LC t7"] <= clean - 0.1


def test_simulate_dataset_quick(tmp_path: Path) -> None:
    started = time.perf_counter()
    paths = simulate_dataset(tmp_path, preset="quick", seed=1)
    elapsed = time.perf_counter() - started
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"\nquick dataset: {len(paths)} files, {size_mb:.1f} MB, {elapsed:.1f} s")  # noqa: T201
    index = json.loads((tmp_path / "dataset.json").read_text())
    assert [r["file"] for r in index["recordings"]] == [p.name for p in paths]
    assert {r["condition"] for r in index["recordings"]} == {"clean", "CA", "LC"}
    assert paths[0].name == "s01_sess1_t01_clean.rohde.npz"
    rec = load_recording(paths[-1])
    assert rec.condition == index["recordings"][-1]["condition"]
    assert rec.duration_s == pytest.approx(index["recordings"][-1]["duration_s"], abs=1e-3)
    assert rec.disturbance_mask is not None and rec.disturbance_mask.any()
    with pytest.raises(ConfigError, match="preset"):
        simulate_dataset(tmp_path, preset="huge")


def test_live_stream_is_independent_of_chunk_sizes() -> None:
    cfg = SimulatorConfig(rest_s=0.3, gesture_s=0.3, ramp_s=0.05)
    whole = LiveSimulator(cfg, seed=5, schedule=("clean", "CA", "LC"), condition_s=0.4).read(int(cfg.fs_hz))
    live = LiveSimulator(cfg, seed=5, schedule=("clean", "CA", "LC"), condition_s=0.4)
    rng = np.random.default_rng(0)
    parts = []
    remaining = int(cfg.fs_hz)
    while remaining:
        n = min(remaining, int(rng.integers(1, 700)))
        parts.append(live.read(n))
        remaining -= n
    np.testing.assert_array_equal(np.concatenate([p.samples for p in parts]), whole.samples)
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
    np.testing.assert_array_equal(np.concatenate([p.mask for p in parts]), whole.mask)
    np.testing.assert_array_equal(np.concatenate([p.condition_index for p in parts]), whole.condition_index)
    assert parts[1].start_sample == parts[0].samples.shape[0]
    assert whole.samples.dtype == np.float32 and whole.labels.dtype == np.int16


def test_live_stream_cycles_conditions_and_gestures() -> None:
    cfg = SimulatorConfig(rest_s=0.5, gesture_s=0.5, ramp_s=0.1)
    live = LiveSimulator(cfg, seed=1, schedule=("clean", "CA", "LC"), condition_s=2.0)
    assert (live.fs_hz, live.n_channels, live.gesture_names) == (2048.0, 192, DEFAULT_GESTURES)
    chunk = live.read(int(6 * live.fs_hz))
    fs = int(live.fs_hz)
    assert chunk.condition == "clean"
    seg = [chunk.condition_index[i * 2 * fs : (i + 1) * 2 * fs] for i in range(3)]
    assert [CONDITIONS[int(s[0])] for s in seg] == ["clean", "CA", "LC"]
    assert all((s == s[0]).all() for s in seg)
    mask = chunk.mask
    assert not mask[: 2 * fs].any()
    ca, lc = affected_channels(live.layout, "CA"), affected_channels(live.layout, "LC")
    assert mask[2 * fs : 4 * fs].any() and not np.delete(mask[2 * fs : 4 * fs], ca, axis=1).any()
    assert mask[4 * fs :, lc].all() and not np.delete(mask[4 * fs :], lc, axis=1).any()
    assert set(np.unique(chunk.labels).tolist()) >= {0, UNUSABLE}
    assert len(set(np.unique(chunk.labels).tolist()) - {0, UNUSABLE}) >= 3
    assert live.read(1).condition == "clean"  # the schedule wraps around
    assert live.condition_at(9 * fs) == "CA"


def test_placed_live_disturbance_moves_across_the_grid() -> None:
    cfg = SimulatorConfig(rest_s=0.5, gesture_s=0.5, ramp_s=0.1)
    live = LiveSimulator(cfg, seed=3, schedule=("clean", "LC@any"), condition_s=2.0, move_s=0.5)
    fs = int(live.fs_hz)
    chunk = live.read(4 * fs + 7)  # clean, then four placements of LC, chunk sizes irrelevant as before
    assert not chunk.mask[: 2 * fs].any()
    assert [CONDITIONS[int(c)] for c in chunk.condition_index[[0, 2 * fs]]] == ["clean", "LC"]
    sites = [frozenset(np.flatnonzero(chunk.mask[2 * fs + k * fs // 2 : 2 * fs + (k + 1) * fs // 2].any(axis=0)))
             for k in range(4)]
    assert all(0 < len(s) <= 0.15 * live.n_channels + 1 for s in sites)  # MOVING_SEVERITY of 192 electrodes
    assert len(set(sites)) == 4  # a new place every move_s
    again = LiveSimulator(cfg, seed=3, schedule=("clean", "LC@any"), condition_s=2.0, move_s=0.5)
    np.testing.assert_array_equal(np.concatenate([again.read(1000).mask for _ in range(9)])[: chunk.mask.shape[0]],
                                  chunk.mask)
    with pytest.raises(ConfigError, match="KIND@SHAPE"):
        LiveSimulator(cfg, schedule=("CA@somewhere",))
    with pytest.raises(ConfigError, match="KIND@SHAPE"):
        LiveSimulator(cfg, schedule=("clean@any",))


def test_live_speed_is_reported() -> None:
    live = LiveSimulator(seed=2, schedule=("clean", "CA", "LC"), condition_s=1.0)
    live.read(256)
    started_cpu, started = time.process_time(), time.perf_counter()
    live.read(int(3 * live.fs_hz))
    cpu, wall = (time.process_time() - started_cpu) / 3, (time.perf_counter() - started) / 3
    print(f"\nlive 192 ch @ 2048 Hz: {1000 * wall:.1f} ms wall, {1000 * cpu:.1f} ms CPU per simulated second")  # noqa: T201
    assert live.samples_read == 256 + 3 * 2048


def test_geometry_axes() -> None:
    default = electrode_geometry(layout_from_spec("3x8x8"))
    flex = electrode_geometry(layout_from_spec("flexemg16x4"))
    assert not default.rows_are_circumferential and flex.rows_are_circumferential
    assert default.span_mm == pytest.approx(240.0)
    assert flex.span_mm == pytest.approx(64.0)
