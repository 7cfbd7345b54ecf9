"""Physical electrode positions of a layout, shared by the EMG simulator and the disturbance models.

Both need to know where each electrode sits on the skin, not only its grid index:

- The *circumferential* axis runs around the forearm, across the muscles; the *longitudinal* axis
  runs along the forearm, along the muscle fibres (action potentials propagate along it).
- Grids sit side by side along the circumferential axis, one inter-electrode distance apart.
- Within a grid, the longer of the layout's two spans is taken as circumferential. For the
  default 3 x 8 x 8 layout the three grids side by side span 3 x 8 columns, so columns run
  around the arm and rows along the fibres; for the single 16 x 4 flexemg array its 16 rows run
  around the arm and its 4 columns along the fibres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rohde.core.layouts import NO_ELECTRODE, ElectrodeLayout


@dataclass(frozen=True)
class ElectrodeGeometry:
    """Where every channel sits, in millimetres (NaN for channels on no grid)."""

    circumferential_mm: np.ndarray  # (n_channels,) position around the arm
    longitudinal_mm: np.ndarray  # (n_channels,) position along the fibres, 0 = grid centre
    grid: np.ndarray  # (n_channels,) int grid index, -1 for channels on no grid
    rows_are_circumferential: bool  # True when grid rows (not columns) run around the arm
    span_mm: float  # circumferential extent from the first to the last electrode plus one IED
    ied_mm: np.ndarray  # (n_channels,) inter-electrode distance of the channel's grid

    @property
    def mapped(self) -> np.ndarray:
        """(n_channels,) bool, True for channels that sit on a grid."""
        return self.grid >= 0


def electrode_geometry(layout: ElectrodeLayout) -> ElectrodeGeometry:
    """Positions of all channels of `layout` on the skin (see the module docstring for the axes)."""
    n = layout.n_channels
    circ = np.full(n, np.nan)
    longi = np.full(n, np.nan)
    grid_of = np.full(n, -1, dtype=np.int64)
    ied = np.full(n, np.nan)
    circ_span_cols = sum(g.cols * g.ied_mm for g in layout.grids)
    long_span_rows = max(g.rows * g.ied_mm for g in layout.grids)
    # A single grid longer than the whole row of grids is wide: its rows run around the arm.
    rows_circ = long_span_rows > circ_span_cols
    offset = 0.0
    for g, grid in enumerate(layout.grids):
        index = grid.index_array()
        n_circ = grid.rows if rows_circ else grid.cols
        n_long = grid.cols if rows_circ else grid.rows
        for (r, c), ch in np.ndenumerate(index):
            if ch == NO_ELECTRODE:
                continue
            i_circ, i_long = (r, c) if rows_circ else (c, r)
            circ[ch] = offset + i_circ * grid.ied_mm
            longi[ch] = (i_long - (n_long - 1) / 2.0) * grid.ied_mm
            grid_of[ch] = g
            ied[ch] = grid.ied_mm
        # Neighbouring grids are placed one inter-electrode distance apart.
        offset += n_circ * grid.ied_mm
    span = float(offset)
    return ElectrodeGeometry(
        circumferential_mm=circ,
        longitudinal_mm=longi,
        grid=grid_of,
        rows_are_circumferential=rows_circ,
        span_mm=span,
        ied_mm=ied,
    )


def physical_order(layout: ElectrodeLayout) -> list[int]:
    """Mapped channels sorted by grid, then circumferential, then longitudinal position.

    For the default column-major 3 x 8 x 8 layout this is simply channel order; for the 16 x 4
    flexemg array it runs row by row along its 16 rows.
    """
    geo = electrode_geometry(layout)
    channels = np.flatnonzero(geo.mapped)
    keys = sorted(
        channels.tolist(),
        key=lambda ch: (int(geo.grid[ch]), float(geo.circumferential_mm[ch]), float(geo.longitudinal_mm[ch])),
    )
    return [int(c) for c in keys]
