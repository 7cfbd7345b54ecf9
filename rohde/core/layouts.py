"""Electrode layouts: grids of electrodes and the explicit channel -> (grid, row, col) map.

A layout never relies on an implicit reshape: every grid stores, for each (row, col), the
0-based stream channel recorded there (or -1 where the grid has no electrode). Layouts
serialise to JSON so a model package carries the exact map it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rohde.core.errors import LayoutError

NO_ELECTRODE = -1

# Physical map of the flexible 16 x 4 forearm array of the flexemg data set (its arraymap.mat,
# 1-based channel numbers, entry [row][col]); `tests/core/test_layouts.py` checks it against the file.
_FLEXEMG_ARRAYMAP_1BASED: tuple[tuple[int, ...], ...] = (
    (29, 30, 31, 32), (25, 26, 27, 28), (21, 22, 23, 24), (17, 18, 19, 20),
    (13, 14, 15, 16), (9, 10, 11, 12), (5, 6, 7, 8), (1, 2, 3, 4),
    (64, 63, 62, 61), (60, 59, 58, 57), (56, 55, 54, 53), (52, 51, 50, 49),
    (48, 47, 46, 45), (44, 43, 42, 41), (40, 39, 38, 37), (36, 35, 34, 33),
)  # fmt: skip


@dataclass(frozen=True)
class ElectrodeGrid:
    """One electrode grid: `channels[row][col]` is the 0-based stream channel at that site."""

    name: str
    channels: tuple[tuple[int, ...], ...]
    ied_mm: float = 8.0  # inter-electrode distance
    # (rows axis, cols axis): True where that axis runs all the way around the limb, so a shift along
    # it comes back on the other side (electrode shift models, circular alignment); False for both
    # on every preset. Written to JSON only when set, so older readers and stored layouts agree.
    wraps: tuple[bool, bool] = (False, False)

    @property
    def rows(self) -> int:
        return len(self.channels)

    @property
    def cols(self) -> int:
        return len(self.channels[0]) if self.channels else 0

    def index_array(self) -> np.ndarray:
        """The map as an int array of shape (rows, cols), -1 where there is no electrode."""
        return np.asarray(self.channels, dtype=np.int64)

    def row_channels(self, rows: list[int] | range) -> list[int]:
        """Channels of the given rows (negative indices count from the last row)."""
        index = self.index_array()
        picked = index[list(rows), :].ravel()
        return [int(c) for c in picked if c != NO_ELECTRODE]


@dataclass(frozen=True)
class ElectrodeLayout:
    """Every electrode of a recording: one or more grids over `n_channels` stream channels."""

    name: str
    grids: tuple[ElectrodeGrid, ...]
    n_channels: int

    def __post_init__(self) -> None:
        if not self.grids:
            raise LayoutError(f"Layout {self.name!r} has no grids; give at least one ElectrodeGrid.")
        seen: set[int] = set()
        for grid in self.grids:
            widths = {len(row) for row in grid.channels}
            if len(widths) != 1:
                raise LayoutError(f"Grid {grid.name!r} of layout {self.name!r} has rows of unequal length.")
            for channel in grid.index_array().ravel():
                ch = int(channel)
                if ch == NO_ELECTRODE:
                    continue
                if not 0 <= ch < self.n_channels:
                    raise LayoutError(
                        f"Grid {grid.name!r} names channel {ch}, outside 0..{self.n_channels - 1} "
                        f"of layout {self.name!r}; fix the map or n_channels."
                    )
                if ch in seen:
                    raise LayoutError(f"Channel {ch} appears twice in layout {self.name!r}.")
                seen.add(ch)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) shared by all grids; raises when the grids differ in shape."""
        shapes = {(g.rows, g.cols) for g in self.grids}
        if len(shapes) != 1:
            raise LayoutError(f"Grids of layout {self.name!r} differ in shape: {sorted(shapes)}.")
        return shapes.pop()

    def index_array(self) -> np.ndarray:
        """Int array (n_grids, rows, cols) of channel indices, -1 where there is no electrode."""
        return np.stack([g.index_array() for g in self.grids])

    def position(self, channel: int) -> tuple[int, int, int]:
        """(grid, row, col) of a 0-based channel; raises for a channel not on any grid."""
        for g, grid in enumerate(self.grids):
            hits = np.argwhere(grid.index_array() == channel)
            if len(hits):
                return g, int(hits[0][0]), int(hits[0][1])
        raise LayoutError(f"Channel {channel} is not on any grid of layout {self.name!r}.")

    def channel_map(self) -> list[dict[str, int]]:
        """One entry per mapped channel: {channel, grid, row, col}, sorted by channel."""
        entries = []
        for g, grid in enumerate(self.grids):
            for (r, c), ch in np.ndenumerate(grid.index_array()):
                if ch != NO_ELECTRODE:
                    entries.append({"channel": int(ch), "grid": g, "row": int(r), "col": int(c)})
        return sorted(entries, key=lambda e: e["channel"])

    def channel_labels(self) -> list[str]:
        """Readable labels like `G1R8C1` (1-based), in channel order; unmapped channels `AUXn`."""
        labels = [f"AUX{ch + 1}" for ch in range(self.n_channels)]
        for e in self.channel_map():
            labels[e["channel"]] = f"G{e['grid'] + 1}R{e['row'] + 1}C{e['col'] + 1}"
        return labels

    def neighbour_pairs(self) -> list[tuple[int, int]]:
        """Channel pairs of adjacent electrodes (same grid, one step along a row or column)."""
        pairs = []
        for grid in self.grids:
            index = grid.index_array()
            for dr, dc in ((1, 0), (0, 1)):
                a = index[: index.shape[0] - dr, : index.shape[1] - dc]
                b = index[dr:, dc:]
                for x, y in zip(a.ravel(), b.ravel(), strict=True):
                    if x != NO_ELECTRODE and y != NO_ELECTRODE:
                        pairs.append((int(x), int(y)))
        return pairs

    def to_image(self, data: np.ndarray) -> np.ndarray:
        """Arrange `(..., n_channels)` values as `(..., n_grids, rows, cols)`; 0 where no electrode."""
        if data.shape[-1] != self.n_channels:
            raise LayoutError(f"Data has {data.shape[-1]} channels but layout {self.name!r} has {self.n_channels}.")
        index = self.index_array()
        image = np.take(data, np.where(index == NO_ELECTRODE, 0, index), axis=-1)
        image[..., index == NO_ELECTRODE] = 0
        return image

    def to_dict(self) -> dict[str, Any]:
        grids: list[dict[str, Any]] = []
        for g in self.grids:
            entry: dict[str, Any] = {"name": g.name, "ied_mm": g.ied_mm, "channels": [list(row) for row in g.channels]}
            if any(g.wraps):
                entry["wraps"] = list(g.wraps)
            grids.append(entry)
        return {"name": self.name, "n_channels": self.n_channels, "grids": grids}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElectrodeLayout:
        try:
            grids = tuple(
                ElectrodeGrid(
                    name=str(g["name"]),
                    channels=tuple(tuple(int(c) for c in row) for row in g["channels"]),
                    ied_mm=float(g.get("ied_mm", 8.0)),
                    wraps=_wraps(g.get("wraps", (False, False))),
                )
                for g in data["grids"]
            )
            return cls(name=str(data["name"]), grids=grids, n_channels=int(data["n_channels"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"Layout description is malformed ({exc!r}); expected name, n_channels, grids.") from exc

    @classmethod
    def from_json(cls, text: str) -> ElectrodeLayout:
        return cls.from_dict(json.loads(text))


def _wraps(value: Any) -> tuple[bool, bool]:
    """A grid's `wraps` from JSON: two booleans (rows axis, cols axis)."""
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(isinstance(v, bool) for v in value):
        raise ValueError(f"wraps must be two booleans (rows axis, cols axis), got {value!r}")
    return bool(value[0]), bool(value[1])


def grid_layout(
    n_grids: int,
    rows: int,
    cols: int,
    *,
    order: Literal["column", "row"] = "column",
    ied_mm: float = 8.0,
    name: str | None = None,
) -> ElectrodeLayout:
    """`n_grids` grids of rows x cols, channels numbered grid after grid.

    With `order="column"` (OT Bioelettronica style) numbering runs down each column first, so in
    an 8 x 8 grid channels 8, 16, ..., 64 (1-based) form the last row.
    """
    if min(n_grids, rows, cols) < 1:
        raise LayoutError(f"grid_layout needs positive sizes, got n_grids={n_grids}, rows={rows}, cols={cols}.")
    if order not in ("column", "row"):
        raise LayoutError(f"order must be 'column' or 'row', got {order!r}.")
    per_grid = rows * cols
    grids = []
    for g in range(n_grids):
        local = (
            np.arange(per_grid).reshape((cols, rows)).T
            if order == "column"
            else np.arange(per_grid).reshape((rows, cols))
        )
        channels = tuple(tuple(int(g * per_grid + c) for c in row) for row in local)
        grids.append(ElectrodeGrid(name=f"grid{g + 1}", channels=channels, ied_mm=ied_mm))
    return ElectrodeLayout(name=name or f"{n_grids}x{rows}x{cols}", grids=tuple(grids), n_channels=n_grids * per_grid)


def default_layout() -> ElectrodeLayout:
    """The default amplifier: three 8 x 8 grids, 192 monopolar channels, column-major numbering."""
    return grid_layout(3, 8, 8, order="column", ied_mm=10.0, name="3x8x8")


def flexemg_layout() -> ElectrodeLayout:
    """The 16 x 4 flexible forearm array of the flexemg data set (64 channels)."""
    channels = tuple(tuple(c - 1 for c in row) for row in _FLEXEMG_ARRAYMAP_1BASED)
    return ElectrodeLayout(
        name="flexemg16x4", grids=(ElectrodeGrid(name="array", channels=channels, ied_mm=4.0),), n_channels=64
    )


PRESETS = {"3x8x8": default_layout, "flexemg16x4": flexemg_layout}


def layout_from_spec(spec: str) -> ElectrodeLayout:
    """A preset name (`3x8x8`, `flexemg16x4`) or a generic `GRIDSxROWSxCOLS` such as `2x8x8`."""
    if spec in PRESETS:
        return PRESETS[spec]()
    parts = spec.lower().split("x")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        n_grids, rows, cols = (int(p) for p in parts)
        return grid_layout(n_grids, rows, cols)
    raise LayoutError(f"Unknown layout {spec!r}; use one of {sorted(PRESETS)} or GRIDSxROWSxCOLS such as '4x8x8'.")
