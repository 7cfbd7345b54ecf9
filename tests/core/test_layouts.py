"""Electrode layouts: explicit maps, presets, JSON round trip, the flexemg arraymap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from rohde.core.errors import LayoutError
from rohde.core.layouts import (
    ElectrodeGrid,
    ElectrodeLayout,
    default_layout,
    flexemg_layout,
    grid_layout,
    layout_from_spec,
)


def test_default_layout_is_column_major_three_grids() -> None:
    layout = default_layout()
    assert layout.n_channels == 192 and len(layout.grids) == 3 and layout.grid_shape == (8, 8)
    # Channels 8, 16, ..., 64 (1-based) form the first grid's last row.
    assert layout.grids[0].row_channels([-1]) == [8 * k - 1 for k in range(1, 9)]
    assert layout.position(0) == (0, 0, 0)
    assert layout.position(1) == (0, 1, 0)
    assert layout.position(8) == (0, 0, 1)
    assert layout.position(64) == (1, 0, 0)
    assert layout.position(191) == (2, 7, 7)


def test_channel_map_covers_every_channel_once() -> None:
    for layout in (default_layout(), flexemg_layout(), layout_from_spec("2x8x8"), layout_from_spec("4x8x8")):
        channels = [e["channel"] for e in layout.channel_map()]
        assert channels == list(range(layout.n_channels))


def test_json_round_trip() -> None:
    for layout in (default_layout(), flexemg_layout()):
        assert ElectrodeLayout.from_json(layout.to_json()) == layout


def test_to_image_uses_the_map_not_a_reshape() -> None:
    layout = flexemg_layout()
    values = np.arange(64, dtype=np.float32)
    image = layout.to_image(values)
    assert image.shape == (1, 16, 4)
    assert image[0, 0, 0] == 28  # arraymap[0][0] is channel 29 (1-based)
    assert image[0, 8, 0] == 63
    batch = layout.to_image(np.zeros((5, 7, 64), np.float32))
    assert batch.shape == (5, 7, 1, 16, 4)


def test_neighbours_are_adjacent_sites() -> None:
    layout = grid_layout(1, 2, 2, order="row")
    assert sorted(layout.neighbour_pairs()) == [(0, 1), (0, 2), (1, 3), (2, 3)]


@pytest.mark.realdata
def test_flexemg_preset_matches_arraymap_file(flexemg_dir: Path) -> None:
    arraymap = scipy.io.loadmat(flexemg_dir / "arraymap.mat")["arraymap"].astype(int) - 1
    np.testing.assert_array_equal(flexemg_layout().index_array()[0], arraymap)


def test_invalid_layouts_are_refused() -> None:
    with pytest.raises(LayoutError, match="appears twice"):
        ElectrodeLayout("bad", (ElectrodeGrid("g", ((0, 0),)),), n_channels=2)
    with pytest.raises(LayoutError, match="outside"):
        ElectrodeLayout("bad", (ElectrodeGrid("g", ((0, 5),)),), n_channels=2)
    with pytest.raises(LayoutError, match="Unknown layout"):
        layout_from_spec("hexagon")
    with pytest.raises(LayoutError, match="malformed"):
        ElectrodeLayout.from_dict({"name": "x"})
    with pytest.raises(LayoutError, match="channels"):
        default_layout().to_image(np.zeros(64))
