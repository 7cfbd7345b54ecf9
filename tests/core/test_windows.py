"""Windows: offline slicing and streaming windower agree for any chunking."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.core.windows import StreamWindower, WindowConfig, extract_windows, window_ends


def test_window_config_samples() -> None:
    config = WindowConfig(window_ms=200.0, hop_ms=50.0)
    assert config.window_samples(2048.0) == 410
    assert config.hop_samples(2048.0) == 102
    assert config.window_samples(1000.0) == 200
    with pytest.raises(ConfigError):
        WindowConfig(window_ms=0.0, hop_ms=50.0)


def test_window_ends_and_extraction() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)  # (n_samples, n_channels)
    ends = window_ends(10, window=4, hop=3)
    assert ends.tolist() == [4, 7, 10]
    windows = extract_windows(x, ends, 4)
    assert windows.shape == (3, 2, 4)
    np.testing.assert_array_equal(windows[1, 0], [6, 8, 10, 12])  # samples 3..6 of channel 0
    assert window_ends(3, window=4, hop=1).size == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_windower_matches_offline_windows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 5)).astype(np.float32)
    window, hop = 300, 70
    windower = StreamWindower(5, window, hop)
    got: list[tuple[int, np.ndarray]] = []
    start = 0
    while start < len(x):
        n = int(rng.integers(1, 900))  # chunks larger than the ring capacity included
        got += windower.push(x[start : start + n])
        start += n
    ends = window_ends(len(x), window, hop)
    assert [e for e, _ in got] == ends.tolist()
    np.testing.assert_array_equal(np.stack([w for _, w in got]), extract_windows(x, ends, window))


def test_ring_write_wraps_like_modulo_indexing() -> None:
    from rohde.core.windows import ring_write

    rng = np.random.default_rng(0)
    ring, expected = np.zeros((7, 2)), np.zeros((7, 2))
    index = 0
    for n in [3, 7, 1, 5, 6, 0, 2]:
        values = rng.normal(size=(n, 2))
        ring_write(ring, index, values)
        expected[(index + np.arange(n)) % 7] = values
        index += n
        np.testing.assert_array_equal(ring, expected)
