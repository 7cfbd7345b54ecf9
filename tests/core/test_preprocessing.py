"""Causal preprocessing: chunk invariance, golden values, frequency response, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.preprocessing import (
    Normalization,
    PreprocessingConfig,
    StreamFilter,
    design_sos,
    filter_recording,
)
from tests.data.make_golden_preprocessing import CASES, golden_input

GOLDEN = Path(__file__).parents[1] / "data" / "golden_preprocessing.npz"


def _filter_in_random_chunks(x: np.ndarray, config: PreprocessingConfig, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stream = StreamFilter(config, x.shape[1])
    max_chunk = int(config.fs_hz)  # 1 sample to 1 s
    parts, start = [], 0
    while start < len(x):
        n = int(rng.integers(1, max_chunk + 1))
        parts.append(stream.process(x[start : start + n]))
        start += n
    return np.concatenate(parts)


@pytest.mark.parametrize("fs_hz", [2048.0, 1000.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_filtering_equals_one_call(fs_hz: float, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x = (rng.normal(0, 40, size=(int(3 * fs_hz), 16)) + 200).astype(np.float32)
    config = PreprocessingConfig(fs_hz=fs_hz)
    whole = filter_recording(x, config)
    chunked = _filter_in_random_chunks(x, config, seed)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))


def test_single_sample_chunks_equal_one_call() -> None:
    x = np.random.default_rng(5).normal(0, 30, size=(600, 3)).astype(np.float32)
    config = PreprocessingConfig(fs_hz=2048.0)
    stream = StreamFilter(config, 3)
    one_by_one = np.concatenate([stream.process(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(one_by_one, filter_recording(x, config), atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_values(name: str) -> None:
    golden = np.load(GOLDEN)
    config = CASES[name]
    x = golden_input(config.fs_hz)
    np.testing.assert_array_equal(x, golden[f"{name}_input"])
    np.testing.assert_allclose(filter_recording(x, config), golden[f"{name}_output"], rtol=1e-5, atol=1e-4)


def _gain(config: PreprocessingConfig, freq_hz: float) -> float:
    t = np.arange(int(4 * config.fs_hz)) / config.fs_hz
    x = np.sin(2 * np.pi * freq_hz * t)[:, None].astype(np.float32)
    y = filter_recording(x, config)[int(2 * config.fs_hz) :]  # steady state only
    return float(np.sqrt(np.mean(y**2)) / np.sqrt(0.5))


def test_frequency_response_passes_emg_band_and_removes_hum_and_drift() -> None:
    config = PreprocessingConfig(fs_hz=2048.0, notch_hz=50.0)
    assert 0.9 < _gain(config, 80.0) < 1.1
    assert 0.9 < _gain(config, 135.0) < 1.1
    assert _gain(config, 100.0) < 0.05  # second harmonic
    assert 0.9 < _gain(config, 325.0) < 1.1
    assert _gain(config, 50.0) < 0.05
    assert _gain(config, 150.0) < 0.05  # third harmonic
    assert _gain(config, 2.0) < 0.01  # movement drift
    assert _gain(config, 900.0) < 0.05


def _hum(fs_hz: float, mains_hz: float, seconds: float, offset_hz: float) -> np.ndarray:
    """(n, 1) float32: a fundamental of 1500 uV and the simulator's 2nd-5th harmonic shares, off by `offset_hz`."""
    t = np.arange(int(seconds * fs_hz)) / fs_hz
    shares = (1.0, 0.05, 0.3, 0.03, 0.12)
    x = sum(1500.0 * r * np.sin(2 * np.pi * h * (mains_hz + offset_hz) * t) for h, r in enumerate(shares, start=1))
    return np.asarray(x, dtype=np.float32)[:, None]


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_default_filter_removes_50_and_60_hz_hum_with_harmonics(mains_hz: float) -> None:
    fs = 2048.0
    x = _hum(fs, mains_hz, 4.0, offset_hz=0.03)  # mains a little off nominal, as it wanders
    steady = slice(int(2 * fs), None)

    def attenuation_db(config: PreprocessingConfig) -> float:
        y = filter_recording(x, config)[steady].astype(np.float64)
        return float(10 * np.log10(np.mean(x[steady].astype(np.float64) ** 2) / np.mean(y**2)))

    assert attenuation_db(PreprocessingConfig(fs_hz=fs)) > 35.0  # whichever mains, 50 Hz stays the local default
    legacy = attenuation_db(PreprocessingConfig.from_dict({"fs_hz": fs, "notch_hz": 50.0}))
    assert legacy < (20.0 if mains_hz == 50.0 else 1.0)  # the old design: 4th, 5th harmonic and 60 Hz pass


def test_old_package_configs_keep_their_meaning() -> None:
    stored = {"fs_hz": 2048.0, "bandpass_hz": [20.0, 450.0], "bandpass_order": 4, "notch_hz": 50.0,
              "notch_harmonics": 3, "notch_q": 30.0}  # fmt: skip
    old = PreprocessingConfig.from_dict(stored)
    assert old.notch_frequencies() == [50.0, 100.0, 150.0] and old.notch_quality(100.0) == 30.0
    assert design_sos(old).shape == (7, 6)
    new = PreprocessingConfig(fs_hz=2048.0)
    assert PreprocessingConfig.from_dict(new.to_dict()) == new  # today's packages store every field
    assert new.notch_frequencies()[:4] == [50.0, 60.0, 100.0, 120.0] and new.notch_frequencies()[-1] == 300.0
    assert new.notch_frequencies().count(300.0) == 1 and new.notch_quality(100.0) == 20.0


def test_upper_band_edge_scales_down_at_low_rates() -> None:
    assert PreprocessingConfig(fs_hz=1000.0).effective_band_hz == (20.0, 450.0)
    assert PreprocessingConfig(fs_hz=500.0).effective_band_hz == (20.0, 225.0)
    only_60 = PreprocessingConfig(fs_hz=500.0, notch_hz=60.0, notch_other_mains=False, notch_harmonics=3)
    assert only_60.notch_frequencies() == [60.0, 120.0, 180.0]
    assert PreprocessingConfig(fs_hz=500.0, notch_hz=60.0).notch_frequencies() == [
        50.0, 60.0, 100.0, 120.0, 150.0, 180.0, 200.0, 240.0]  # below 0.98 Nyquist  # fmt: skip


def test_bad_configuration_and_input_are_refused_with_reasons() -> None:
    with pytest.raises(ConfigError, match="notch_hz"):
        PreprocessingConfig(fs_hz=2048.0, notch_hz=55.0)
    with pytest.raises(ConfigError, match="bandpass_hz"):
        PreprocessingConfig(fs_hz=2048.0, bandpass_hz=(450.0, 20.0))
    with pytest.raises(ConfigError, match="notch_width_hz"):
        PreprocessingConfig(fs_hz=2048.0, notch_width_hz=0.0)
    with pytest.raises(ConfigError, match="Unknown preprocessing fields"):
        PreprocessingConfig.from_dict({"fs_hz": 1000.0, "lowcut": 10})
    with pytest.raises(ConfigError, match=r"\(n_samples, 4\)"):
        StreamFilter(PreprocessingConfig(fs_hz=1000.0), 4).process(np.zeros((10, 5), np.float32))


def test_config_round_trips_through_dict() -> None:
    config = PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0, bandpass_hz=(10.0, 400.0))
    assert PreprocessingConfig.from_dict(config.to_dict()) == config


def test_normalization_fit_apply_and_floor() -> None:
    filtered = np.random.default_rng(0).normal(0, 25, size=(5000, 8)).astype(np.float32)
    norm = Normalization.fit(filtered)
    assert len(norm.scale_uv) == 8 and 20 < norm.scale_uv[0] < 30
    assert abs(float(norm.apply(filtered).std()) - 25 / norm.scale_uv[0]) < 0.05
    assert Normalization.fit(np.zeros((100, 2), np.float32)).scale_uv == (1.0, 1.0)
    assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(ConfigError):
        Normalization(scale_uv=(1.0, 0.0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_products_give_the_section_recursions_samples(name: str) -> None:
    # A minute of EMG-like noise on a swinging DC offset of thousands of uV, in chunks of every size from one
    # sample to a second: within float32 rounding of what the sections give one sample at a time (SciPy, float64).
    config = CASES[name]
    rng = np.random.default_rng(11)
    n = int(60 * config.fs_hz)
    drift = 4000 * np.sin(2 * np.pi * 0.1 * np.arange(n) / config.fs_hz)[:, None]
    x = (rng.normal(0, 30, size=(n, 6)) + drift + 1500).astype(np.float32)
    reference = signal.sosfilt(design_sos(config), x.astype(np.float64), axis=0).astype(np.float32)
    for got in (filter_recording(x, config), _filter_in_random_chunks(x, config, seed=3)):
        np.testing.assert_allclose(got, reference, rtol=0, atol=2 * float(np.spacing(np.abs(reference).max())))
