"""Where a disturbance sits: random electrode sets of a chosen shape and extent, on any layout.

A fixed region (the last electrodes, the last rows of the last grid) lets a model learn to distrust
a fixed set of channels. `Placement` draws the disturbed electrodes anew for every recording:

- `patch`: the electrodes nearest a random centre (a pressed or sweating spot; may cross into the
  neighbouring grid, which sits one inter-electrode distance away);
- `rows` / `columns`: whole rows (or columns) of a random grid from a random start, in a random
  direction, continued in the next grid when more are needed (an edge of a grid lifted off);
- `cluster`: an irregular blob grown by a random walk over adjacent electrodes;
- `grid`: one or more whole grids (a connector or a reference failing);
- `scatter`: electrodes anywhere, independent of each other (single-lead faults);
- `any`: one of patch, rows, columns, cluster per draw.

Severity is the fraction of the layout's electrodes affected, from one electrode (any fraction
that rounds to less) up to the whole array; `rows`, `columns` and `patch` cut the last row or ring
so the count is exact, `grid` rounds to whole grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout
from rohde.simulation.electrode_geometry import electrode_geometry

SHAPES: tuple[str, ...] = ("patch", "rows", "columns", "cluster", "grid", "scatter", "any")
_CONTIGUOUS = ("patch", "rows", "columns", "cluster")


@dataclass(frozen=True)
class Placement:
    """Random placement of a disturbance: a shape and the fraction of electrodes it covers."""

    shape: str = "any"  # one of SHAPES
    severity: float | tuple[float, float] = (0.0, 0.1)  # fraction of electrodes; (low, high) draws uniformly

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"Placement.shape must be one of {list(SHAPES)}, got {self.shape!r}.")
        low, high = self.severity_range
        if not 0 <= low <= high <= 1:
            raise ConfigError(
                f"Placement.severity must be a fraction in [0, 1] or a range (low, high) in it, got {self.severity}."
            )

    @property
    def severity_range(self) -> tuple[float, float]:
        if isinstance(self.severity, tuple):
            return float(self.severity[0]), float(self.severity[1])
        return float(self.severity), float(self.severity)


def adjacency(layout: ElectrodeLayout) -> dict[int, list[int]]:
    """Electrodes within 1.5 inter-electrode distances of each other (8-neighbourhood, across grids too)."""
    geo = electrode_geometry(layout)
    mapped = np.flatnonzero(geo.mapped)
    pos = np.stack([geo.circumferential_mm[mapped], geo.longitudinal_mm[mapped]], axis=1)
    dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) / geo.ied_mm[mapped][:, None]
    near = (dist > 0) & (dist <= 1.5)
    return {int(ch): [int(mapped[j]) for j in np.flatnonzero(near[i])] for i, ch in enumerate(mapped)}


def place(layout: ElectrodeLayout, placement: Placement, rng: np.random.Generator) -> np.ndarray:
    """Sorted channel indices `(k,)` int64 of one random draw of `placement` on `layout` (k >= 1)."""
    geo = electrode_geometry(layout)
    mapped = np.flatnonzero(geo.mapped)
    low, high = placement.severity_range
    n = int(np.clip(round(rng.uniform(low, high) * mapped.size), 1, mapped.size))
    shape = placement.shape if placement.shape != "any" else str(rng.choice(_CONTIGUOUS))
    if shape == "scatter":
        chosen = rng.choice(mapped, size=n, replace=False)
    elif shape == "patch":
        chosen = _patch(layout, n, rng)
    elif shape in ("rows", "columns"):
        chosen = _lines(layout, n, rng, along_rows=shape == "rows")
    elif shape == "cluster":
        chosen = _cluster(layout, n, rng)
    else:
        chosen = _grids(layout, n, rng)
    return np.unique(np.asarray(chosen, dtype=np.int64))


def _patch(layout: ElectrodeLayout, n: int, rng: np.random.Generator) -> np.ndarray:
    geo = electrode_geometry(layout)
    mapped = np.flatnonzero(geo.mapped)
    centre = rng.choice(mapped)
    d_circ = geo.circumferential_mm[mapped] - geo.circumferential_mm[centre]
    d_long = (geo.longitudinal_mm[mapped] - geo.longitudinal_mm[centre]) * rng.uniform(0.6, 1.6)  # ellipse
    dist = np.hypot(d_circ, d_long) / geo.ied_mm[mapped] + rng.uniform(0.0, 0.3, mapped.size)  # ragged edge
    return mapped[np.argsort(dist)[:n]]


def _lines(layout: ElectrodeLayout, n: int, rng: np.random.Generator, *, along_rows: bool) -> np.ndarray:
    """A block of adjacent whole rows (or columns) of a random grid, continued into the next grids if needed."""
    per_grid = []
    for grid in layout.grids:
        index = grid.index_array() if along_rows else grid.index_array().T
        per_grid.append([[int(c) for c in line if c >= 0] for line in index])
    sizes = [sum(len(line) for line in lines) for lines in per_grid]
    first_grid = int(rng.integers(len(per_grid)))
    lines = per_grid[first_grid]
    if n < len(lines[0]):  # less than one line: a run of it at a random offset
        line = lines[int(rng.integers(len(lines)))]
        start = int(rng.integers(len(line) - n + 1))
        return np.asarray(line[start : start + n], dtype=np.int64)
    if n <= sizes[first_grid]:
        need = -(-n // len(lines[0]))
        start = int(rng.integers(len(lines) - need + 1))
        block = lines[start : start + need] if rng.random() < 0.5 else lines[::-1][start : start + need]
        return np.asarray([c for line in block for c in line][:n], dtype=np.int64)
    # More than a grid: whole grids side by side (adjacent edges), the last one partly.
    total, needed = 0, 0
    while total < n:
        total += sizes[needed % len(sizes)]
        needed += 1
    first_grid = int(rng.integers(len(per_grid) - min(needed, len(per_grid)) + 1))
    flat = [c for g in range(first_grid, len(per_grid)) for line in per_grid[g] for c in line]
    return np.asarray(flat[:n], dtype=np.int64)


def _cluster(layout: ElectrodeLayout, n: int, rng: np.random.Generator) -> np.ndarray:
    near = adjacency(layout)
    channels = list(near)
    chosen = {int(rng.choice(channels))}
    frontier = set(near[next(iter(chosen))])
    while len(chosen) < n:
        if not frontier:  # an isolated part of the layout is full: jump elsewhere
            frontier = set(channels) - chosen
        pick = int(rng.choice(sorted(frontier)))
        chosen.add(pick)
        frontier |= set(near[pick])
        frontier -= chosen
    return np.asarray(sorted(chosen), dtype=np.int64)


def _grids(layout: ElectrodeLayout, n: int, rng: np.random.Generator) -> np.ndarray:
    sizes = np.asarray([int((g.index_array() >= 0).sum()) for g in layout.grids])
    n_grids = int(np.clip(round(n / sizes.mean()), 1, len(layout.grids)))
    picked = rng.choice(len(layout.grids), size=n_grids, replace=False)
    channels = np.concatenate([layout.grids[g].index_array().ravel() for g in picked])
    return channels[channels >= 0]
