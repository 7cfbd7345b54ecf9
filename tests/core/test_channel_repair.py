"""`ChannelRepair.fill`: a per-channel map's bad channels filled ring by ring from their known neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.channel_repair import ChannelRepair
from rohde.core.errors import ConfigError
from rohde.core.layouts import grid_layout


def test_fill_reaches_a_patch_wider_than_one_electrode_and_keeps_the_known_values() -> None:
    layout = grid_layout(1, 8, 4, name="1x8x4")  # column-major: channel = col * 8 + row
    repair = ChannelRepair(layout)
    values = np.arange(32, dtype=float) + 1.0
    bad = np.zeros(32, dtype=bool)
    bad[[0, 1, 2, 8, 9, 10]] = True  # rows 0-2 of columns 0 and 1: channel 0 has no known neighbour
    filled = repair.fill(values, bad)
    assert np.array_equal(filled[~bad], values[~bad]) and np.all(filled[bad] > 0)
    assert filled[0] == pytest.approx(np.mean(filled[[8, 9]]))  # from the ring filled before it (1 comes with it)
    w = repair.weights(bad)  # (6, 32): the same, as one linear map of the good channels
    assert np.all(w[:, bad] == 0) and np.allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w @ values, filled[bad], rtol=1e-6)
    data = np.random.default_rng(0).standard_normal((2, 32, 7)).astype(np.float32)
    np.testing.assert_allclose(repair.rebuild(data, bad)[:, bad], np.einsum("kc,bct->bkt", w, data), rtol=1e-5)
    everything = repair.fill(values, np.ones(32, dtype=bool))
    assert np.array_equal(everything, values)  # nothing known: values kept
    with pytest.raises(ConfigError, match="values"):
        repair.fill(values[:5], bad)
