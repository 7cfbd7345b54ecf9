from __future__ import annotations

import numpy as np
import pytest
import torch

from rohde.core.layouts import ElectrodeGrid, ElectrodeLayout, default_layout, flexemg_layout
from rohde.training.cnn import FilterBankFrontend, RohdeCNN, bandpass_bank, count_parameters
from rohde.training.config import CNNConfig


@pytest.mark.parametrize(("layout", "fs_hz"), [(default_layout(), 2048.0), (flexemg_layout(), 1000.0)])
def test_any_layout_gives_logits_per_class(layout: ElectrodeLayout, fs_hz: float) -> None:
    torch.manual_seed(0)
    model = RohdeCNN(layout=layout, n_classes=5, fs_hz=fs_hz, band_hz=(20.0, 450.0), config=CNNConfig()).eval()
    window = int(0.2 * fs_hz)
    out = model(torch.randn(3, layout.n_channels, window))
    assert out.shape == (3, 5)
    assert count_parameters(model) < 200_000


def test_channels_are_placed_by_the_layout_map_not_by_order() -> None:
    """Permuting the stream channels together with the layout's map leaves the output unchanged."""
    base = default_layout()
    perm = np.random.default_rng(0).permutation(base.n_channels)  # new stream position of old channel c
    grids = tuple(
        ElectrodeGrid(g.name, tuple(tuple(int(perm[c]) for c in row) for row in g.channels), g.ied_mm)
        for g in base.grids
    )
    permuted = ElectrodeLayout("perm", grids, base.n_channels)
    config = CNNConfig()
    torch.manual_seed(1)
    a = RohdeCNN(layout=base, n_classes=7, fs_hz=2048.0, band_hz=(20.0, 450.0), config=config).eval()
    b = RohdeCNN(layout=permuted, n_classes=7, fs_hz=2048.0, band_hz=(20.0, 450.0), config=config).eval()
    b.load_state_dict(a.state_dict() | {"head.gather_index": b.head.gather_index})
    x = torch.randn(2, base.n_channels, 410)
    x_perm = torch.empty_like(x)
    x_perm[:, perm] = x
    torch.testing.assert_close(a(x), b(x_perm))


def test_missing_electrodes_are_zeroed() -> None:
    grid = ElectrodeGrid("g", ((0, 1, 2), (3, -1, 4)))
    layout = ElectrodeLayout("holes", (grid,), 5)
    model = RohdeCNN(layout=layout, n_classes=2, fs_hz=1000.0, band_hz=(20.0, 450.0), config=CNNConfig()).eval()
    assert model(torch.randn(4, 5, 200)).shape == (4, 2)
    assert model.head.site_mask[0, 0, 1, 1] == 0


def test_filter_bank_separates_bands() -> None:
    fs = 2048.0
    config = CNNConfig(n_bands=4)
    frontend = FilterBankFrontend(config=config, fs_hz=fs, band_hz=(20.0, 450.0))
    t = np.arange(410) / fs
    low = torch.tensor(np.sin(2 * np.pi * 30 * t), dtype=torch.float32)[None, None]
    high = torch.tensor(np.sin(2 * np.pi * 350 * t), dtype=torch.float32)[None, None]
    assert int(frontend(low)[0, 0].argmax()) == 0
    assert int(frontend(high)[0, 0].argmax()) == 3
    assert not frontend.conv.weight.requires_grad
    assert bandpass_bank(n_bands=3, taps=33, fs_hz=fs, band_hz=(20.0, 450.0)).shape == (3, 33)
