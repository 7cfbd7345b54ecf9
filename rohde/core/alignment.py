"""Label-free alignment of an electrode grid that was put on again somewhere else.

Each time the array is re-applied, the activity pattern of a gesture lands on other electrodes: on
the flexemg forearm array the per-gesture maps of a later day match the first day's after a shift
of 4-5 rows and up to 2 columns, at 1.4-1.9 times the amplitude. This module estimates that shift
and gain from a few seconds of *unlabelled* data of the new session, and undoes it.

- `GridShift`: a rigid move of the activity pattern on every grid of a layout, in electrode sites
  (`rows`, `cols`, fractions allowed), a rotation about the grid centre and an amplitude gain. It
  is the ground truth of the simulated shift (`rohde.simulation.electrode_shift`) and what
  `estimate_shift` returns.
- `resampling_matrix(layout, shift)`: the linear map `(C, C)` that moves samples `(n, C)` by a
  shift: every output site reads its source position by bilinear interpolation, wrapping around
  along an axis the grid marks as `wraps`, else taking the nearest edge electrode. Being linear
  and the same for every sample, it commutes with the causal filters, so raw data and filtered
  data can be moved alike. `resampling_weights` is the same move as four weighted sources per
  channel, which the shift search builds for every translation it tries.
- `AlignmentReference`: the training data's spatial signature, stored in the model package
  (`ModelMetadata.alignment`): the per-channel mean absolute value (MAV) of the filtered
  training data, all gestures and rest mixed, as a new session's first seconds mix them too.
  `AlignmentReference.from_recordings` makes it: `rohde train` stores it in every package it
  writes, and the offline tools (`rohde calibrate`, `rohde cross-day`) compute it the same way.
  Trained on several subjects, it also keeps each subject's own map (`groups`): one donning of one
  subject matches the pooled map of three simulated subjects with a correlation of only 0.70-0.90,
  its own subject's map with 0.90-0.99.
- `estimate_shift(reference, activity, layout)`: the shift (and gain) that best carries the
  reference map onto the new map (correlation of log-MAV over the sites whose source lies on the
  grid, coarse grid search then a fractional refinement), searched against every map of the
  reference; the best-correlated map wins (`ShiftEstimate.reference` names it). `alignment_matrix`
  is its inverse, the map that brings the new session's samples back onto the reference's
  electrodes. A shift is kept
  only when it raises the correlation over the unshifted map (the best of the reference's maps) by
  `MIN_IMPROVEMENT`; otherwise the estimate snaps to no shift (the gain alone), since two trials of one
  placement already differ by fractions of a site.

Pure numpy: the offline tools and the server share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.sparse import csr_array

from rohde.core.channel_repair import ChannelRepair
from rohde.core.errors import ConfigError
from rohde.core.layouts import NO_ELECTRODE, ElectrodeGrid, ElectrodeLayout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording

if TYPE_CHECKING:
    from rohde.core.recording import Recording

# A candidate shift must leave at least this share of a grid's sites reading from inside the grid:
# a 16 x 4 array moved by 4 rows and 2 columns keeps 0.375 of its sites.
MIN_OVERLAP = 0.35
_LOG_FLOOR = 1e-3  # keeps silent (or edge-filled zero) channels out of log(0)
# How much a shift must raise the map correlation over the unshifted map to be applied. Chosen on
# pairs of one placement (each trial of a flexemg Train folder against the map of that folder's first
# eight trials but itself; 2 subjects x 2 sessions x 10 trials, truth: no shift; `rohde cross-day`
# repeats the check against all other trials): the best fractional shift raised the correlation by at
# most 0.034 there, while a moved
# copy of a real map gains 0.04-0.11 for half a row and 0.17-0.41 for one row. 0.05 is 1.5 times the
# largest no-shift gain. A move of one column (a quarter of the 4-column flexemg array's width) gains
# only 0.02-0.07 and is mostly left alone: trial-to-trial variation looks the same.
# With several maps the margin is taken over the best unshifted map of any: the same 40 trials against
# references that also hold the other subject's map of the same session, or all three other Train folders'
# maps (two of them other placements), moved 0 of 40, the best shift of any map rising at most 0.031 and
# 0.036 over it; a margin checked map by map instead moved 13 of 40 onto another folder's placement (a shifted
# noise-free map of a look-alike forearm beat the trial's own map unshifted by 0.005-0.035).
MIN_IMPROVEMENT = 0.05
# An estimate whose map correlation stays under this is not applied (the server's default
# `alignment_min_score`, and what the offline checks replay).
MIN_SCORE = 0.9


@dataclass(frozen=True)
class GridShift:
    """The activity pattern moved by (`rows`, `cols`) sites and rotated by `rotation_deg` about the
    grid centre (counter-clockwise in (row, col) index space), then scaled by `gain`.

    A positive `rows` means what the old grid saw at row r the new grid sees at row r + rows: the
    array itself moved the other way on the skin.
    """

    rows: float = 0.0
    cols: float = 0.0
    rotation_deg: float = 0.0
    gain: float = 1.0

    def __post_init__(self) -> None:
        values = (self.rows, self.cols, self.rotation_deg, self.gain)
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"GridShift needs finite values, got {self}.")
        if self.gain <= 0:
            raise ConfigError(f"GridShift.gain must be positive, got {self.gain}.")

    def inverse(self) -> GridShift:
        """The shift that undoes this one (exactly, away from the grid's edges)."""
        theta = math.radians(-self.rotation_deg)
        cos, sin = math.cos(theta), math.sin(theta)
        rows = -(cos * self.rows - sin * self.cols)
        cols = -(sin * self.rows + cos * self.cols)
        return GridShift(rows=rows + 0.0, cols=cols + 0.0, rotation_deg=-self.rotation_deg, gain=1.0 / self.gain)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridShift:
        return cls(**{k: float(v) for k, v in data.items()})


def _source_positions(grid: ElectrodeGrid, shift: GridShift) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) float positions `(R, Cc)` each output site reads from under `shift`."""
    rows, cols = grid.rows, grid.cols
    rr, cc = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    centre_r, centre_c = (rows - 1) / 2.0, (cols - 1) / 2.0
    # Output site q reads the input at T^-1(q) = R(-theta) (q - centre - t) + centre.
    dr, dc = rr - centre_r - shift.rows, cc - centre_c - shift.cols
    theta = math.radians(-shift.rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    return cos * dr - sin * dc + centre_r, sin * dr + cos * dc + centre_c


def _inside(position: np.ndarray, size: int, wraps: bool) -> np.ndarray:
    """True where a source position lies on the grid along one axis (always, on a wrapping axis)."""
    if wraps:
        return np.ones(position.shape, dtype=bool)
    return (position > -0.5) & (position < size - 0.5)


def _resolve_index(index: np.ndarray, size: int, wraps: bool) -> np.ndarray:
    return np.mod(index, size) if wraps else np.clip(index, 0, size - 1)


def _nearest_present(index: np.ndarray, row: float, col: float) -> int:
    present = np.argwhere(index != NO_ELECTRODE)
    nearest = present[np.argmin((present[:, 0] - row) ** 2 + (present[:, 1] - col) ** 2)]
    return int(index[nearest[0], nearest[1]])


def resampling_weights(layout: ElectrodeLayout, shift: GridShift) -> tuple[np.ndarray, np.ndarray]:
    """`resampling_matrix` (gain left out) as each channel's four sources `(C, 4)` int and weights `(C, 4)`:
    `moved[:, c] = sum_k weights[c, k] * samples[:, sources[c, k]]`. A tenth of the dense map's cost to build
    and apply, which the shift search pays for every translation it tries."""
    sources, weights, _ = _resampling(layout, shift)
    return sources, weights


def _resampling(layout: ElectrodeLayout, shift: GridShift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`resampling_weights` and `valid_sites` from one pass over the grids (the shift search needs both)."""
    n = layout.n_channels
    sources = np.repeat(np.arange(n, dtype=np.int64)[:, None], 4, axis=1)
    weights = np.zeros((n, 4), dtype=np.float64)
    weights[:, 0] = 1.0  # channels on no grid pass through
    valid = np.zeros(n, dtype=bool)
    geometry: dict[tuple[int, int, tuple[bool, bool]], tuple[np.ndarray, ...]] = {}  # grids of one shape share it
    for grid in layout.grids:
        index = grid.index_array()
        present = index != NO_ELECTRODE
        out = index[present]  # (S,) output channels, their sites in row-major order
        key = (grid.rows, grid.cols, grid.wraps)
        if key not in geometry:
            geometry[key] = _bilinear_neighbours(grid, shift)
        src_r, src_c, on_grid, rr, cc, wk = geometry[key]  # (R, Cc) sources and whether on the grid; (R*Cc, 4)
        valid[index[present & on_grid]] = True
        in_ch = index[rr, cc][present.ravel()]  # (S, 4) the neighbours' channels
        wk = wk[present.ravel()]
        use = (wk > 1e-12) & (in_ch != NO_ELECTRODE)
        src = np.where(use, in_ch, out[:, None])
        w = np.where(use, wk, 0.0)
        total = w.sum(axis=1)
        # Every neighbour an absent electrode: read the nearest present one.
        for j in np.flatnonzero(total <= 0):
            site = np.argwhere(present)[j]
            src[j] = _nearest_present(index, float(src_r[site[0], site[1]]), float(src_c[site[0], site[1]]))
            w[j] = (1.0, 0.0, 0.0, 0.0)
            total[j] = 1.0
        sources[out] = src
        weights[out] = w / total[:, None]
    return sources, weights, valid


def _bilinear_neighbours(grid: ElectrodeGrid, shift: GridShift) -> tuple[np.ndarray, ...]:
    """Where every site of a grid of this shape reads from under `shift`: source positions `(R, Cc)` (row and
    column) and whether they lie on the grid `(R, Cc)`; per site in row-major order, its four bilinear
    neighbours' rows, columns and weights `(R*Cc, 4)`."""
    src_r, src_c = _source_positions(grid, shift)
    wrap_r, wrap_c = grid.wraps
    on_grid = _inside(src_r, grid.rows, wrap_r) & _inside(src_c, grid.cols, wrap_c)
    r0, c0 = np.floor(src_r).ravel(), np.floor(src_c).ravel()
    fr, fc = src_r.ravel() - r0, src_c.ravel() - c0
    d = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])  # (0, 0), (0, 1), (1, 0), (1, 1)
    rr = _resolve_index((r0[:, None] + d[0]).astype(np.int64), grid.rows, wrap_r)
    cc = _resolve_index((c0[:, None] + d[1]).astype(np.int64), grid.cols, wrap_c)
    wk = np.where(d[0], fr[:, None], 1.0 - fr[:, None]) * np.where(d[1], fc[:, None], 1.0 - fc[:, None])
    return src_r, src_c, on_grid, rr, cc, wk


def resampling_matrix(layout: ElectrodeLayout, shift: GridShift, *, include_gain: bool = False) -> np.ndarray:
    """`(C, C)` float64 map M with `moved = samples @ M.T` for samples `(n, C)` (see the module doc).

    Every grid is moved within itself by the same shift. A source position off the grid reads the
    nearest edge electrode (or wraps around on a `wraps` axis); absent electrodes are left out of
    the interpolation and the other weights renormalised. Channels on no grid pass through.
    `include_gain` multiplies by `shift.gain`.
    """
    sources, weights = resampling_weights(layout, shift)
    n = layout.n_channels
    matrix = np.zeros((n, n), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(n), 4), sources.ravel()), weights.ravel())
    if include_gain:
        matrix *= shift.gain
    return matrix


def round_trip_matrix(layout: ElectrodeLayout, shift: GridShift) -> np.ndarray:
    """`(C, C)` map of `shift` followed by its inverse (gain left out): the grid back in place, but the sites
    whose signal moved off the grid read the edge's copy and fractional moves interpolate twice. What exact
    alignment leaves of a re-donned recording."""
    plain = GridShift(rows=shift.rows, cols=shift.cols, rotation_deg=shift.rotation_deg)
    return resampling_matrix(layout, plain.inverse()) @ resampling_matrix(layout, plain)


def valid_sites(layout: ElectrodeLayout, shift: GridShift) -> np.ndarray:
    """`(C,)` bool: mapped channels whose source position under `shift` lies on their grid."""
    return _resampling(layout, shift)[2]


def apply_shift(
    samples: np.ndarray, layout: ElectrodeLayout, shift: GridShift, *, include_gain: bool = True
) -> np.ndarray:
    """Samples `(n, C)` moved by `shift` (gain included unless told otherwise); float32."""
    if samples.ndim != 2 or samples.shape[1] != layout.n_channels:
        raise ConfigError(f"Expected samples (n, {layout.n_channels}) for layout {layout.name!r}, got {samples.shape}.")
    matrix = resampling_matrix(layout, shift, include_gain=include_gain)
    return (samples.astype(np.float64) @ matrix.T).astype(np.float32)


def activity_map(filtered: np.ndarray) -> np.ndarray:
    """Per-channel mean absolute value `(C,)` float64 of filtered samples `(n, C)`."""
    if filtered.ndim != 2 or filtered.shape[0] == 0:
        raise ConfigError(f"activity_map needs filtered samples (n > 0, C), got shape {filtered.shape}.")
    finite = np.where(np.isfinite(filtered), filtered, 0.0)
    return np.mean(np.abs(finite.astype(np.float64)), axis=0)


POOLED = "pooled"  # the name of a reference's map of all its data together


def _activity_values(values: Any, what: str) -> tuple[float, ...]:
    try:
        activity = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Alignment reference {what} is malformed ({exc!r}); expected a list of numbers.") from exc
    return activity


@dataclass(frozen=True)
class AlignmentReference:
    """The spatial signature a model was trained on: per-channel MAV (uV) of its filtered training data,
    all of it together and, when it holds several subjects, each subject's on its own."""

    activity_uv: tuple[float, ...]  # (C,) mean absolute value, rest and gestures mixed, every subject pooled
    seconds: float = 0.0  # how much data the map summarises
    groups: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (subject, (C,) map of that subject's data alone)

    def __post_init__(self) -> None:
        for name, activity in self.maps():
            if not activity or not all(math.isfinite(v) and v >= 0 for v in activity):
                raise ConfigError(f"AlignmentReference map {name!r} must hold one finite, non-negative value per "
                                  "channel.")  # fmt: skip
            if len(activity) != len(self.activity_uv):
                raise ConfigError(f"AlignmentReference map {name!r} has {len(activity)} channels; the pooled map "
                                  f"has {len(self.activity_uv)}.")  # fmt: skip
        names = [name for name, _ in self.maps()]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"AlignmentReference map names must be distinct and non-empty, got {names}.")

    def maps(self) -> list[tuple[str, tuple[float, ...]]]:
        """Every map the estimate is matched against: the pooled one first, then each group's."""
        return [(POOLED, self.activity_uv), *self.groups]

    def moved(self, matrix: np.ndarray) -> AlignmentReference:
        """Every map moved by a `(C, C)` map (e.g. `resampling_matrix`): what a moved grid would see."""
        def move(activity: tuple[float, ...]) -> tuple[float, ...]:
            return tuple(float(v) for v in matrix @ np.asarray(activity, dtype=np.float64))

        return AlignmentReference(move(self.activity_uv), self.seconds,
                                  tuple((name, move(activity)) for name, activity in self.groups))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": "mav_map", "activity_uv": list(self.activity_uv), "seconds": self.seconds}
        if self.groups:
            data["groups"] = [{"name": name, "activity_uv": list(activity)} for name, activity in self.groups]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignmentReference:
        """Read `to_dict`'s output; a reference written before `groups` existed has the pooled map only."""
        if data.get("method", "mav_map") != "mav_map":
            raise ConfigError(f"Unknown alignment reference method {data.get('method')!r}; this RoHDE reads 'mav_map'.")
        try:
            groups = tuple((str(g["name"]), _activity_values(g["activity_uv"], f"group {g['name']!r}"))
                           for g in data.get("groups", []))  # fmt: skip
            return cls(activity_uv=_activity_values(data["activity_uv"], "activity_uv"),
                       seconds=float(data.get("seconds", 0)), groups=groups)  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"Alignment reference is malformed ({exc!r}); expected activity_uv and, optionally, "
                              "groups of name and activity_uv.") from exc  # fmt: skip

    @classmethod
    def from_filtered(cls, filtered: np.ndarray, fs_hz: float) -> AlignmentReference:
        return cls(activity_uv=tuple(activity_map(filtered).tolist()), seconds=filtered.shape[0] / fs_hz)

    @classmethod
    def from_recordings(cls, recordings: Sequence[Recording], preprocessing: PreprocessingConfig) -> AlignmentReference:
        """The MAV map of the recordings (a model's training data), each filtered from a zero state as
        the model's input is, every sample (rest, gestures, transitions) mixed: the map of all of them
        concatenated, computed one recording at a time. Of several subjects, each subject's own map too
        (`groups`, sorted by subject)."""
        if not recordings:
            raise ConfigError("An alignment reference needs at least one recording.")
        n_channels = recordings[0].n_channels
        totals: dict[str, np.ndarray] = {}  # subject -> (C,) sum of |x|
        counts: dict[str, int] = {}
        for rec in recordings:
            if rec.fs_hz != preprocessing.fs_hz or rec.n_channels != n_channels:
                raise ConfigError(f"Recording {rec.subject}/{rec.session}/{rec.trial} has {rec.n_channels} channels "
                                  f"at {rec.fs_hz} Hz; the reference is of {n_channels} at {preprocessing.fs_hz} Hz.")
            total = totals.setdefault(rec.subject, np.zeros(n_channels, dtype=np.float64))
            total += activity_map(filter_recording(rec.samples, preprocessing)) * rec.n_samples
            counts[rec.subject] = counts.get(rec.subject, 0) + rec.n_samples
        n_samples = sum(counts.values())
        pooled = np.sum(list(totals.values()), axis=0) / n_samples
        groups = tuple((subject, tuple((totals[subject] / counts[subject]).tolist())) for subject in sorted(totals))
        return cls(activity_uv=tuple(pooled.tolist()), seconds=n_samples / preprocessing.fs_hz,
                   groups=groups if len(groups) > 1 else ())  # fmt: skip


@dataclass(frozen=True)
class ShiftEstimate:
    shift: GridShift  # reference -> new session (gain included): the one to apply
    score: float  # correlation of log maps under `shift`, over the valid sites
    score_unshifted: float  # the same without any shift: how much the shift explains
    best: GridShift | None = None  # the best-scoring translation searched (set when it was not applied)
    best_score: float | None = None  # its correlation
    reference: str = POOLED  # the reference map matched (`AlignmentReference.maps`)

    @property
    def moved(self) -> bool:
        """True when a translation is applied (not the gain alone)."""
        return self.shift.rows != 0.0 or self.shift.cols != 0.0 or self.shift.rotation_deg != 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"shift": self.shift.to_dict(), "score": self.score,
                                "score_unshifted": self.score_unshifted, "moved": self.moved,
                                "reference": self.reference}  # fmt: skip
        if self.best is not None:
            data["best"] = self.best.to_dict()
            data["best_score"] = self.best_score
        return data


def _match(predicted: np.ndarray, new_log: np.ndarray, valid: np.ndarray) -> float:
    """Correlation of the log of the reference map as moved (`predicted`) with the new log map, on `valid` sites."""
    a, b = np.log(np.maximum(predicted[valid], _LOG_FLOOR)), new_log[valid]
    if a.size < 3:
        return -1.0
    a, b = a - a.mean(), b - b.mean()
    ss_a, ss_b = float(a @ a), float(b @ b)
    if ss_a < a.size * 1e-18 or ss_b < b.size * 1e-18:  # a flat map (standard deviation under 1e-9)
        return -1.0
    return float(a @ b) / math.sqrt(ss_a * ss_b)


def _axis_candidates(limit: float, step: float) -> np.ndarray:
    k = int(math.floor(limit / step + 1e-9))
    return np.arange(-k, k + 1) * step


class _Moves:
    """The resampling weights and scored sites of each searched translation, built once per estimate and
    shared by the reference's maps (building them is most of a search's cost)."""

    def __init__(self, layout: ElectrodeLayout, measured: np.ndarray, min_sites: float) -> None:
        self.layout = layout
        self.measured = measured
        self.min_sites = min_sites
        self._cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    def moved(self, ref: np.ndarray, rows: float, cols: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The map `ref` `(C,)` moved by the translation, and its `(C,)` valid sites; None where too few sites
        read from the grid."""
        key = (float(rows), float(cols))
        if key not in self._cache:
            sources, weights, valid = _resampling(self.layout, GridShift(rows=key[0], cols=key[1]))
            valid &= self.measured
            self._cache[key] = None if valid.sum() < self.min_sites else (sources, weights, valid)
        move = self._cache[key]
        if move is None:
            return None
        sources, weights, valid = move
        return (weights * ref[sources]).sum(axis=1), valid


def estimate_shift(
    reference: AlignmentReference,
    activity: np.ndarray,
    layout: ElectrodeLayout,
    *,
    max_rows: float | None = None,
    max_cols: float | None = None,
    step: float = 0.25,
    min_overlap: float = MIN_OVERLAP,
    min_improvement: float = MIN_IMPROVEMENT,
    known: np.ndarray | None = None,
) -> ShiftEstimate:
    """The translation (sites, fractions of `step`) and gain carrying `reference` onto `activity` `(C,)`.

    Searched over every shift up to `max_rows` / `max_cols` (default: half the grid along an
    edge-limited axis, the whole circumference along a wrapping one) that keeps at least
    `min_overlap` of the sites reading from inside the grid: integer steps first, then `step`
    refinements around the best. Score: correlation of log-MAV over the sites whose source lies on
    the grid (edge-filled sites carry no evidence). The best translation is applied only when its
    score beats the unshifted map's by `min_improvement`; otherwise the estimate is no shift
    (`best` keeps what the search found). Gain: the median ratio of the new map to the
    (shifted) reference over the valid sites. `known` `(C,)` bool leaves the other sites of `activity` out of
    the score and the gain (channels flagged bad while it was measured); None: every site is known.

    Each of the reference's maps (`AlignmentReference.maps`) is searched so; the best translation of any
    map is applied only when it beats the best unshifted map (of any) by `min_improvement`, else the estimate
    is no shift against that best unshifted map. `reference` names the map; the pooled one wins a tie.
    """
    if not math.isfinite(min_improvement) or min_improvement < 0:
        raise ConfigError(f"min_improvement must be a non-negative correlation difference, got {min_improvement}.")
    new = np.asarray(activity, dtype=np.float64)
    if len(reference.activity_uv) != layout.n_channels or new.shape != (layout.n_channels,):
        raise ConfigError(
            f"Reference ({len(reference.activity_uv)}) and activity ({new.size}) must both hold {layout.n_channels} "
            f"channels of layout {layout.name!r}; was the model trained on this layout?"
        )
    if not np.all(np.isfinite(new)) or np.any(new < 0):
        raise ConfigError("activity must be a finite, non-negative MAV per channel.")
    if step <= 0 or step > 1:
        raise ConfigError(f"step must be in (0, 1] sites, got {step}.")
    measured = np.ones(layout.n_channels, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    if measured.shape != (layout.n_channels,):
        raise ConfigError(f"known must be a ({layout.n_channels},) bool mask, got shape {measured.shape}.")
    rows, cols = layout.grid_shape
    # Half the grid: on a wrapping axis that is every distinct shift, on an edge-limited one the
    # most that still leaves half the sites reading real electrodes.
    limits = (rows / 2.0 if max_rows is None else max_rows, cols / 2.0 if max_cols is None else max_cols)
    n_sites = int((layout.index_array() != NO_ELECTRODE).sum())
    moves = _Moves(layout, measured, min_overlap * n_sites)
    searches = [_search_map(name, np.asarray(ref, dtype=np.float64), new, layout, moves, limits=limits, step=step)
                for name, ref in reference.maps()]  # fmt: skip
    top = max(searches, key=lambda m: m.best_score)  # the best translation of any map; the pooled map on a tie
    still = max(searches, key=lambda m: m.unshifted)  # the best map without a translation
    if top.best_score >= still.unshifted + min_improvement:
        return ShiftEstimate(shift=_with_gain(top.best, top.ref, new, layout, moves.measured), score=top.best_score,
                             score_unshifted=top.unshifted, reference=top.name)  # fmt: skip
    return ShiftEstimate(shift=_with_gain(GridShift(), still.ref, new, layout, moves.measured), score=still.unshifted,
                         score_unshifted=still.unshifted, best=top.best, best_score=top.best_score,
                         reference=still.name)  # fmt: skip


@dataclass(frozen=True)
class _MapSearch:
    name: str  # the map's name (`AlignmentReference.maps`)
    ref: np.ndarray  # (C,) the map
    best: GridShift  # the best-scoring translation searched
    best_score: float  # its correlation
    unshifted: float  # the correlation without a translation


def _search_map(
    name: str,
    ref: np.ndarray,
    new: np.ndarray,
    layout: ElectrodeLayout,
    moves: _Moves,
    *,
    limits: tuple[float, float],
    step: float,
) -> _MapSearch:
    """`estimate_shift`'s search against one map `ref` `(C,)`: integer steps, then `step` refinements."""
    rows, cols = layout.grid_shape
    limit_r, limit_c = limits
    ref_mav = np.maximum(ref, _LOG_FLOOR)  # silent channels floored, as their log is
    new_log = np.log(np.maximum(new, _LOG_FLOOR))

    def score(dr: float, dc: float) -> float:
        move = moves.moved(ref_mav, dr, dc)
        return -2.0 if move is None else _match(move[0], new_log, move[1])

    coarse = [(score(dr, dc), dr, dc) for dr in _axis_candidates(limit_r, 1.0) for dc in _axis_candidates(limit_c, 1.0)]
    best_score, best_r, best_c = max(coarse)
    fine_offsets = _axis_candidates(1.0 - step, step)
    fine = [
        (score(best_r + a, best_c + b), best_r + a, best_c + b)
        for a in (fine_offsets if rows > 1 else [0.0])
        for b in (fine_offsets if cols > 1 else [0.0])
        if abs(best_r + a) <= limit_r and abs(best_c + b) <= limit_c
    ]
    best_score, best_r, best_c = max([(best_score, best_r, best_c), *fine])
    unshifted = _match(ref_mav, new_log, valid_sites(layout, GridShift()) & moves.measured)
    return _MapSearch(name, ref, GridShift(rows=float(best_r) + 0.0, cols=float(best_c) + 0.0), best_score, unshifted)


def _with_gain(shift: GridShift, ref: np.ndarray, new: np.ndarray, layout: ElectrodeLayout,
               measured: np.ndarray) -> GridShift:  # fmt: skip
    """`shift` with its gain: the median ratio of the new map to the moved reference over the valid sites."""
    valid = valid_sites(layout, shift) & measured
    predicted = resampling_matrix(layout, shift) @ ref
    ratio = new[valid] / np.maximum(predicted[valid], _LOG_FLOOR)
    gain = max(float(np.median(ratio)) if ratio.size else 1.0, 1e-6)
    return GridShift(rows=shift.rows, cols=shift.cols, gain=gain)


def alignment_matrix(layout: ElectrodeLayout, estimate: ShiftEstimate, *, correct_gain: bool = True) -> np.ndarray:
    """`(C, C)` map bringing the new session's samples back onto the reference's electrodes."""
    return resampling_matrix(layout, estimate.shift.inverse(), include_gain=correct_gain)


def normalized_matrix(matrix: np.ndarray, scale_uv: np.ndarray) -> np.ndarray:
    """`(C, C)` map for windows already divided by per-channel scales `(C,)`: diag(1/s) M diag(s).

    Normalisation is linear too, so moving normalised windows with this map equals moving the filtered
    uV samples with `matrix` and normalising after (what the offline path does).
    """
    scale = np.asarray(scale_uv, dtype=np.float64)
    if scale.shape != (matrix.shape[0],) or np.any(scale <= 0):
        raise ConfigError(f"scale_uv must hold {matrix.shape[0]} positive values, got shape {scale.shape}.")
    return matrix * (scale[None, :] / scale[:, None])


MIN_GOOD_SHARE = 0.5  # a channel flagged for more of the warm-up than this is filled from its neighbours


class LiveAlignment:
    """A stream's alignment from its first `warmup_s` seconds: pure state, no threads (server-ready).

    Feed it the filtered chunks `(n, C)` in uV as they arrive; once `warmup_s` seconds are in, it
    estimates the shift against the model's reference and from then on `matrix` moves every window back
    onto the training grid (`align_window`). With `scale_uv` (the model's `Normalization.scale_uv`) the
    windows given to `align_window` are the normalised ones. An estimate whose map correlation stays
    under `min_score` is not applied (the identity stays): the first seconds did not mix enough
    movements, as 10 s of rest and one gesture do not on the flexemg array, where one full cycle (about
    25 s) does. An estimate that snapped to no shift (`ShiftEstimate.moved` false) corrects the gain
    alone. `restart` forgets everything and collects again (a re-estimate on request).
    """

    def __init__(
        self,
        reference: AlignmentReference,
        layout: ElectrodeLayout,
        fs_hz: float,
        *,
        warmup_s: float = 30.0,
        min_score: float = MIN_SCORE,
        scale_uv: tuple[float, ...] | None = None,
    ) -> None:
        if len(reference.activity_uv) != layout.n_channels:
            raise ConfigError(f"The reference has {len(reference.activity_uv)} channels; layout {layout.name!r} "
                              f"has {layout.n_channels}.")  # fmt: skip
        if warmup_s <= 0 or fs_hz <= 0:
            raise ConfigError(f"warmup_s and fs_hz must be positive, got {warmup_s} and {fs_hz}.")
        if scale_uv is not None and len(scale_uv) != layout.n_channels:
            raise ConfigError(f"scale_uv has {len(scale_uv)} values; layout {layout.name!r} has {layout.n_channels}.")
        self.reference = reference
        self.layout = layout
        self.fs_hz = fs_hz
        self.warmup_s = warmup_s
        self.min_score = min_score
        self.scale_uv = scale_uv
        self._repair: ChannelRepair | None = None  # built when a channel must be filled
        self.restart()

    def restart(self) -> None:
        n_channels = self.layout.n_channels
        self._abs_sum = np.zeros(n_channels, dtype=np.float64)  # (C,) sum of |x| over each channel's good samples
        self._good = np.zeros(n_channels, dtype=np.int64)  # (C,) samples in which the channel was not flagged
        self._n = 0
        self.estimate: ShiftEstimate | None = None
        self.matrix: np.ndarray | None = None  # (C, C), None until an accepted estimate
        self._sparse: Any = None  # the same matrix in CSR form: a site is read from at most 4 others

    @property
    def collected_s(self) -> float:
        return self._n / self.fs_hz

    @property
    def state(self) -> str:
        """`collecting`, `aligned` (estimate applied) or `rejected` (estimate too uncertain to apply)."""
        if self.estimate is None:
            return "collecting"
        return "aligned" if self.matrix is not None else "rejected"

    def push(self, filtered: np.ndarray) -> ShiftEstimate | None:
        """Take a filtered chunk `(n, C)`; returns the estimate when this chunk completes the warm-up."""
        if not self.collect(filtered):
            return None
        return self.accept(self.estimate_from(self.activity(), self.known))

    def collect(self, filtered: np.ndarray, bad_channels: Sequence[int] = (), *,
                scale: np.ndarray | None = None) -> bool:
        """Add a filtered chunk `(n, C)` to the map, leaving out the channels flagged bad during it; True once
        `warmup_s` seconds are in (nothing estimated yet: `push` does both, a caller that estimates elsewhere
        calls `estimate_from(activity(), known)` and `accept`). With `scale` `(C,)` positive, the chunk is
        filtered uV divided by it (a normalised window's samples)."""
        if self.estimate is not None or filtered.shape[0] == 0:
            return False
        if filtered.ndim != 2 or filtered.shape[1] != self.layout.n_channels:
            raise ConfigError(f"Expected chunks (n, {self.layout.n_channels}), got {filtered.shape}.")
        if self.collected_s >= self.warmup_s:
            return True
        sums = np.abs(filtered).sum(axis=0, dtype=np.float64)  # (C,)
        if not np.isfinite(sums).all():  # a non-finite sample counts as zero
            sums = np.abs(np.where(np.isfinite(filtered), filtered, 0.0)).sum(axis=0, dtype=np.float64)
        if scale is not None:
            sums *= scale
        good = np.ones(filtered.shape[1], dtype=bool)
        good[list(bad_channels)] = False
        self._abs_sum[good] += sums[good]
        self._good[good] += filtered.shape[0]
        self._n += filtered.shape[0]
        return self.collected_s >= self.warmup_s

    @property
    def known(self) -> np.ndarray:
        """`(C,)` bool: the channels not flagged for at least `MIN_GOOD_SHARE` of the warm-up."""
        return self._good >= MIN_GOOD_SHARE * max(self._n, 1)

    def activity(self) -> np.ndarray:
        """The mean absolute value `(C,)` of what was collected, each channel over its good samples; a channel
        not `known` is filled from its neighbours (`ChannelRepair.fill`: it carries no weight in the estimate
        made with `known`, but the map stays whole)."""
        mean = self._abs_sum / np.maximum(self._good, 1)
        known = self.known
        if known.all():
            return mean
        if self._repair is None:
            self._repair = ChannelRepair(self.layout)
        return self._repair.fill(mean, ~known)

    def estimate_from(self, activity: np.ndarray, known: np.ndarray | None = None) -> ShiftEstimate:
        """The estimate for an activity map `(C,)`, scored on its `known` sites (all when None; no state changes:
        safe to run off the owner's thread)."""
        return estimate_shift(self.reference, activity, self.layout, known=known)

    def accept(self, estimate: ShiftEstimate) -> ShiftEstimate:
        """Adopt `estimate`: its correction is applied when its score reaches `min_score`."""
        self.estimate = estimate
        if self.estimate.score >= self.min_score:
            matrix = alignment_matrix(self.layout, self.estimate)
            if self.scale_uv is not None:
                matrix = normalized_matrix(matrix, np.asarray(self.scale_uv))
            self.matrix = matrix.astype(np.float32)
            self._sparse = csr_array(self.matrix)  # ~5x cheaper per 192-channel window than the dense product
        return self.estimate

    def align_window(self, window: np.ndarray) -> np.ndarray:
        """A window `(C, W)` (or a batch `(B, C, W)`; normalised when `scale_uv` was given) moved onto the
        training grid; unchanged until aligned."""
        if self.matrix is None:
            return window
        if window.ndim == 2:
            return np.asarray(self._sparse @ window, dtype=np.float32)
        return np.matmul(self.matrix, window).astype(np.float32, copy=False)

    def snapshot(self) -> dict[str, Any]:
        """What `/streams` would show for this stream."""
        return {
            "state": self.state,
            "collected_s": round(self.collected_s, 1),
            "warmup_s": self.warmup_s,
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
        }
