"""Disturbances placed at random: shapes and severity on any layout, the new kinds, the held-out kind."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout, default_layout, flexemg_layout
from rohde.simulation.disturbances import (
    DISTURBANCE_CONDITIONS,
    HELD_OUT_KIND,
    PLACED_KINDS,
    CAParams,
    HeldOutDisturbanceError,
    affected_channels,
    apply_disturbance,
    ensure_trainable,
)
from rohde.simulation.placement import Placement, adjacency, place

LAYOUTS = [(default_layout(), 2048.0), (flexemg_layout(), 1000.0)]
IDS = ["3x8x8@2048", "flexemg16x4@1000"]


def _emg_like(n: int, n_channels: int, fs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sos = signal.butter(2, [30.0, 0.4 * fs], btype="bandpass", fs=fs, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal((n, n_channels)), axis=0)
    return (30.0 * x / x.std()).astype(np.float32)


def _connected(channels: np.ndarray, near: dict[int, list[int]]) -> bool:
    todo, seen = [int(channels[0])], {int(channels[0])}
    members = {int(c) for c in channels}
    while todo:
        for b in near[todo.pop()]:
            if b in members and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen == members


@pytest.mark.parametrize(("layout", "fs"), LAYOUTS, ids=IDS)
def test_severity_sets_the_count_and_positions_vary(layout: ElectrodeLayout, fs: float) -> None:
    rng = np.random.default_rng(0)
    n = layout.n_channels
    for shape in ("patch", "rows", "columns", "cluster", "scatter"):
        for severity in (0.0, 0.1, 0.25, 0.5):
            ch = place(layout, Placement(shape, severity), rng)
            assert ch.size == max(1, round(severity * n)), (shape, severity)
            assert ch.min() >= 0 and ch.max() < n
        draws = {tuple(place(layout, Placement(shape, 0.1), rng)) for _ in range(20)}
        assert len(draws) >= 10, shape  # not a fixed region
    # Across many draws every electrode is hit at some point: no channel is safe.
    hits = np.zeros(n)
    for _ in range(300):
        hits[place(layout, Placement("any", 0.1), rng)] += 1
    assert (hits > 0).all()


@pytest.mark.parametrize(("layout", "fs"), LAYOUTS, ids=IDS)
def test_contiguous_shapes_are_neighbours(layout: ElectrodeLayout, fs: float) -> None:
    rng = np.random.default_rng(1)
    near = adjacency(layout)
    for shape in ("patch", "cluster", "rows", "columns"):
        for _ in range(10):
            ch = place(layout, Placement(shape, 0.08), rng)
            assert _connected(ch, near), (shape, ch)


def test_rows_columns_and_grids_are_whole() -> None:
    layout = default_layout()
    rng = np.random.default_rng(2)
    for _ in range(10):
        ch = place(layout, Placement("rows", 16 / 192), rng)  # two whole rows
        rows = {layout.position(int(c))[:2] for c in ch}
        assert len(rows) == 2 and len({g for g, _ in rows}) == 1
        ch = place(layout, Placement("columns", 8 / 192), rng)  # one whole column
        assert len({layout.position(int(c))[::2] for c in ch}) == 1
    ch = place(layout, Placement("grid", 0.3), rng)
    assert ch.size == 64 and len({layout.position(int(c))[0] for c in ch}) == 1
    assert place(layout, Placement("grid", 0.5), rng).size == 128


def test_placement_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="shape"):
        Placement("ring")
    with pytest.raises(ConfigError, match="severity"):
        Placement("patch", 1.5)
    with pytest.raises(ConfigError, match="severity"):
        Placement("patch", (0.3, 0.1))
    with pytest.raises(ConfigError, match="placed at random"):
        affected_channels(default_layout(), "CA", CAParams(placement=Placement("patch", 0.1)))
    with pytest.raises(ConfigError, match="placed at random"):
        affected_channels(default_layout(), "pop")


@pytest.mark.parametrize(("layout", "fs"), LAYOUTS, ids=IDS)
@pytest.mark.parametrize("condition", DISTURBANCE_CONDITIONS)
def test_every_kind_touches_exactly_its_mask(layout: ElectrodeLayout, fs: float, condition: str) -> None:
    n = int(3 * fs)
    clean = _emg_like(n, layout.n_channels, fs)
    placement = Placement("any", 0.2) if condition in ("CA", "LC", "powerline", "dropout") else None
    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition=condition,
                                  rng=np.random.default_rng(3), placement=placement)  # fmt: skip
    touched = mask.any(axis=0)
    assert touched.any()
    assert np.array_equal(out[:, ~touched], clean[:, ~touched])  # nothing outside the mask's channels
    diff = np.abs(out - clean)
    assert diff[mask].mean() > 5 * diff[~mask].mean() + 1e-3  # the disturbance sits where the mask says
    assert np.isfinite(out).all()


def test_new_kinds_have_their_physical_signature() -> None:
    layout, fs = default_layout(), 2048.0
    n = int(4 * fs)
    clean = _emg_like(n, 192, fs)
    rng = np.random.default_rng(4)

    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="dead", rng=rng)
    dead = np.flatnonzero(mask.all(axis=0))
    assert dead.size and np.ptp(out[:, dead], axis=0).max() == 0  # zero or a constant

    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="saturation", rng=rng)
    ch = np.flatnonzero(mask.any(axis=0))
    rail = np.abs(out[:, ch]).max()
    assert 2500 <= rail <= 6000 and np.isclose(np.abs(out[:, ch]), rail).sum() > 0.05 * fs  # held at the rail

    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="bridge", rng=rng)
    ch = np.flatnonzero(mask.any(axis=0))
    assert ch.size >= 2 and ch.size % 2 == 0  # whole pairs
    corr = np.corrcoef(out[:, ch].T)
    np.fill_diagonal(corr, 0)
    assert (corr.max(axis=1) > 0.95).all()  # each bridged electrode nearly copies its partner

    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="hum", rng=rng,
                                  params=None, placement=Placement("patch", 0.05))  # fmt: skip
    ch = np.flatnonzero(mask.any(axis=0))
    f, p = signal.welch(out[:, ch[0]] - clean[:, ch[0]], fs=fs, nperseg=4096)
    assert min(abs(f[np.argmax(p)] - 50.0), abs(f[np.argmax(p)] - 60.0)) < 1.0  # mains, 50 or 60 Hz

    out, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition="motion", rng=rng)
    ch = np.flatnonzero(mask.any(axis=0))
    f, p = signal.welch(out[:, ch[0]] - clean[:, ch[0]], fs=fs, nperseg=8192)
    assert f[np.argmax(p)] < 10.0  # slow


@pytest.mark.parametrize("kind", PLACED_KINDS)
def test_placed_kinds_follow_their_severity(kind: str) -> None:
    layout, fs = default_layout(), 2048.0
    clean = _emg_like(int(2 * fs), 192, fs)
    for severity in (0.05, 0.3):
        _, mask = apply_disturbance(clean, fs_hz=fs, layout=layout, condition=kind,
                                    rng=np.random.default_rng(5), placement=Placement("patch", severity))  # fmt: skip
        target = round(severity * 192)
        hit = int(mask.any(axis=0).sum())
        assert target * 0.3 <= hit <= target + 1, (kind, severity, hit)  # pops / CA hit a part; bridges add a partner


def test_the_held_out_kind_cannot_be_trained_on() -> None:
    assert HELD_OUT_KIND in DISTURBANCE_CONDITIONS
    with pytest.raises(HeldOutDisturbanceError, match="held out"):
        ensure_trainable(HELD_OUT_KIND)
    with pytest.raises(HeldOutDisturbanceError):
        ensure_trainable(f"CA+{HELD_OUT_KIND}")
    for condition in DISTURBANCE_CONDITIONS:
        if condition != HELD_OUT_KIND:
            ensure_trainable(condition)
