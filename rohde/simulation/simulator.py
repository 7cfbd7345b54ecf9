"""Simulated HD-EMG recordings and the endless live stream behind the simulated amplifier.

The signal model lives in `rohde.simulation.emg_model`, the gesture protocol (rest and held gestures
with realistic onsets, effort per hold) in `rohde.simulation.gesture_timeline`; this module adds the
configuration, the variability across trials,
sessions and subjects, the disturbance conditions (from `rohde.simulation.disturbances`), the dataset
writer and `LiveSimulator`.

Seeds: everything derives from `seed` and the (subject, session, trial, condition) numbers through
`numpy.random.default_rng([...])`, so the same call always gives the same arrays.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.gestures import CONDITIONS, DEFAULT_GESTURES, REST_GESTURES
from rohde.core.layouts import ElectrodeLayout, layout_from_spec
from rohde.core.recording import Recording
from rohde.simulation.disturbances import DisturbanceField, disturbance_field, split_condition
from rohde.simulation.emg_model import (
    EmgGenerator,
    make_anatomy,
    make_session,
    synergy_matrix,
)
from rohde.simulation.gesture_timeline import CuedTimeline, GestureTimeline
from rohde.simulation.placement import SHAPES, Placement

logger = logging.getLogger(__name__)

_CONDITION_CODES = {"clean": 0, "CA": 1, "LC": 2, "powerline": 3, "dropout": 4}
BLOCK_S = 0.25  # the generator's internal block: reads of any size are served from these blocks
MOVE_S = 5.0  # a placed live disturbance ("CA@any") jumps to other electrodes this often
MOVING_SEVERITY = (0.05, 0.15)  # ... covering this fraction of the electrodes each time


def parse_live_condition(entry: str) -> tuple[str, Placement | None]:
    """A live schedule entry: a condition ("clean", "CA", ...) as the recordings have, or `KIND@SHAPE`
    ("CA@any", "LC@patch"), the disturbance placed at random electrodes of that shape (see
    `rohde.simulation.placement`) and moved to new ones every `MOVE_S`."""
    condition, at, shape = entry.partition("@")
    split_condition(condition)
    if condition not in CONDITIONS:
        raise ConfigError(f"Live schedule condition {condition!r} must be one of {CONDITIONS}.")
    if not at:
        return condition, None
    if condition == "clean" or shape not in SHAPES:
        raise ConfigError(f"Live schedule entry {entry!r}: a placed disturbance is KIND@SHAPE with a kind other "
                          f"than clean and a shape of {list(SHAPES)}, e.g. 'CA@any'.")
    return condition, Placement(shape, MOVING_SEVERITY)


@dataclass(frozen=True)
class SimulatorConfig:
    """What a simulated recording or stream looks like."""

    fs_hz: float = 2048.0  # sampling rate
    layout: str | ElectrodeLayout = "3x8x8"  # spec for `layout_from_spec` (preset, GRIDSxROWSxCOLS) or a layout
    gestures: tuple[str, ...] = DEFAULT_GESTURES  # class names; one must be a rest class (no_movement)
    rest_s: float = 2.0  # rest between two held gestures (and before the first)
    gesture_s: float = 3.0  # plateau of each held gesture
    ramp_s: float = 0.3  # onset / offset ramp of a gesture (labelled UNUSABLE)
    repetitions: int = 2  # passes through all active gestures in one trial
    shuffle: bool = True  # random gesture order in each pass (seeded)
    effort_range: tuple[float, float] = (0.65, 1.3)  # per-hold effort factor range (uniform)
    # Per-hold lognormal spread of each muscle's share of the synergy. 0.30 gives holds of one gesture
    # the spread of real ones (`rohde data spread`, ten trials of a session): pattern correlation with
    # the gesture's mean 0.985-0.987 and dispersion 0.15-0.16, where flexemg's four train sessions
    # give medians of 0.985 and 0.161 (0.45 gave 0.977-0.980 and 0.19-0.21).
    muscle_jitter: float = 0.30
    coactivation: float = 0.06  # per-hold extra drive of every muscle, uniform in [0, coactivation]
    drive_fluctuation: float = 0.3  # relative RMS of the slow (~1.5 Hz) drive fluctuation within a hold
    noise_uv: float = 3.0  # RMS of white amplifier + electrode noise per channel (before band-pass)
    hum_uv: float = 2.0  # residual power-line pickup on clean recordings
    powerline_hz: float = 50.0  # mains frequency (50 or 60)
    fatigue: bool = True  # spectral compression and amplitude growth under sustained drive

    def __post_init__(self) -> None:
        if self.fs_hz < 500:
            raise ConfigError(f"fs_hz must be at least 500 Hz to carry surface EMG, got {self.fs_hz}.")
        for name in ("rest_s", "gesture_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.ramp_s < 0 or self.repetitions < 1:
            raise ConfigError(f"ramp_s must be >= 0 and repetitions >= 1, got {self.ramp_s}, {self.repetitions}.")
        lo, hi = self.effort_range
        if not 0 < lo <= hi:
            raise ConfigError(f"effort_range must be (low, high) with 0 < low <= high, got {self.effort_range}.")
        if self.powerline_hz not in (50.0, 60.0):
            raise ConfigError(f"powerline_hz must be 50 or 60, got {self.powerline_hz}.")
        synergy_matrix(self.gestures)  # raises for gestures without a synergy
        self.rest_index  # noqa: B018 - raises when there is no rest class
        self.electrode_layout()  # raises for a bad layout spec

    def electrode_layout(self) -> ElectrodeLayout:
        if isinstance(self.layout, ElectrodeLayout):
            return self.layout
        return layout_from_spec(self.layout)

    @property
    def rest_index(self) -> int:
        for i, g in enumerate(self.gestures):
            if g in REST_GESTURES:
                return i
        raise ConfigError(f"gestures {self.gestures} need a rest class named one of {REST_GESTURES}.")

    @property
    def trial_s(self) -> float:
        """Length of one simulated trial."""
        n_active = len(self.gestures) - 1
        return self.rest_s + self.repetitions * n_active * (self.gesture_s + 2 * self.ramp_s + self.rest_s)


def _timeline(config: SimulatorConfig, rng: np.random.Generator, *, passes: int | None) -> GestureTimeline:
    return GestureTimeline(
        fs_hz=config.fs_hz,
        gestures=config.gestures,
        rest_index=config.rest_index,
        rest_s=config.rest_s,
        gesture_s=config.gesture_s,
        ramp_s=config.ramp_s,
        shuffle=config.shuffle,
        effort_range=config.effort_range,
        muscle_jitter=config.muscle_jitter,
        coactivation=config.coactivation,
        rng=rng,
        passes=passes,
    )


def _subject_rngs(seed: int, subject: int, session: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng([seed, 1, subject]), np.random.default_rng([seed, 2, subject, session])


def _make_generator(
    config: SimulatorConfig, layout: ElectrodeLayout, *, seed: int, subject: int, session: int
) -> EmgGenerator:
    anatomy_rng, session_rng = _subject_rngs(seed, subject, session)
    anatomy = make_anatomy(anatomy_rng)
    placement = make_session(session_rng, layout.n_channels, noise_uv=config.noise_uv, hum_uv=config.hum_uv)
    return EmgGenerator(
        layout=layout,
        fs_hz=config.fs_hz,
        anatomy=anatomy,
        session=placement,
        powerline_hz=config.powerline_hz,
        fatigue=config.fatigue,
        drive_fluctuation=config.drive_fluctuation,
    )


def simulate_recording(
    *,
    config: SimulatorConfig,
    subject: int,
    session: int,
    trial: int,
    condition: str = "clean",
    seed: int = 0,
) -> Recording:
    """One trial of `config.repetitions` passes through all gestures under `condition`.

    `subject` fixes the anatomy, `session` the electrode placement, `trial` the effort and gesture
    order; a disturbed condition ("CA", "LC", "powerline", "dropout" or a `+` combination) is
    applied with `rohde.simulation.disturbances` and recorded in `disturbance_mask`. The EMG does not
    depend on `condition`: the same call with `condition="clean"` gives the exact clean
    counterpart of a disturbed trial.
    """
    parts = split_condition(condition)
    layout = config.electrode_layout()
    generator = _make_generator(config, layout, seed=seed, subject=subject, session=session)
    code = sum(_CONDITION_CODES[p] << (3 * i) for i, p in enumerate(parts))
    trial_rng = np.random.default_rng([seed, 3, subject, session, trial])
    timeline = _timeline(config, trial_rng, passes=config.repetitions)
    n_total = timeline.length
    block = max(1, int(round(BLOCK_S * config.fs_hz)))
    samples = np.empty((n_total, layout.n_channels), dtype=np.float32)
    labels = np.empty(n_total, dtype=np.int16)
    for start in range(0, n_total, block):
        n = min(block, n_total - start)
        activation, labels[start : start + n] = timeline.render(start, n)
        samples[start : start + n] = generator.generate(activation, trial_rng)
    mask = np.zeros(samples.shape, dtype=bool)
    if parts:
        dist_rng = np.random.default_rng([seed, 4, subject, session, trial, code])
        built = disturbance_field(
            n_total,
            fs_hz=config.fs_hz,
            layout=layout,
            condition=condition,
            rng=dist_rng,
            powerline_hz=config.powerline_hz,
        )
        built.apply(samples, mask)
    return Recording(
        samples=samples,
        fs_hz=config.fs_hz,
        layout=layout,
        labels=labels,
        gesture_names=tuple(config.gestures),
        condition=condition,
        disturbance_mask=mask,
        subject=f"s{subject:02d}",
        session=f"sess{session}",
        trial=f"t{trial:02d}",
        provenance={
            "source": "rohde.simulation.simulator",
            "seed": seed,
            "powerline_hz": config.powerline_hz,
            "config": _config_dict(config),
        },
    )


def _config_dict(config: SimulatorConfig) -> dict[str, Any]:
    data = asdict(config)
    data["layout"] = config.electrode_layout().name if isinstance(config.layout, ElectrodeLayout) else config.layout
    data["gestures"] = list(config.gestures)
    data["effort_range"] = list(config.effort_range)
    return data


@dataclass(frozen=True)
class DatasetPreset:
    """Size and protocol of a simulated data set."""

    subjects: int  # number of subjects (1-based numbers in the file names)
    sessions: int  # sessions (electrode donnings) per subject
    trials: tuple[tuple[str, int], ...]  # (condition, number of trials) per session
    config: SimulatorConfig = field(default_factory=SimulatorConfig)


# A 192-channel, 2048 Hz float32 recording is ~1.5 MB per second on disk (noise barely compresses).
# "default" holds each gesture 2 s (one pass per trial, ~23 s, ~35 MB) and writes 3 subjects x
# 3 sessions x 8 trials (~2.5 GB): two sessions to train across electrode placements, one unseen
# session to test, and six clean trials per session so the model sees each gesture in many holds
# (hold-to-hold variation, not window noise, is what a model of few holds gets wrong).
# "full" is the live simulator's own protocol (3 s holds, two passes; ~6 GB) for when disk and time allow.
PRESETS: dict[str, DatasetPreset] = {
    "default": DatasetPreset(
        subjects=3,
        sessions=3,
        trials=(("clean", 6), ("CA", 1), ("LC", 1)),
        config=SimulatorConfig(rest_s=1.0, gesture_s=2.0, ramp_s=0.3, repetitions=1),
    ),
    "full": DatasetPreset(
        subjects=3,
        sessions=3,
        trials=(("clean", 4), ("CA", 2), ("LC", 2)),
        config=SimulatorConfig(),
    ),
    "quick": DatasetPreset(
        subjects=1,
        sessions=1,
        trials=(("clean", 2), ("CA", 1), ("LC", 1)),
        config=SimulatorConfig(rest_s=0.5, gesture_s=0.6, ramp_s=0.15, repetitions=1),
    ),
}


def simulate_dataset(out_dir: str | Path, *, preset: str = "default", seed: int = 0) -> list[Path]:
    """Write a simulated data set of `.rohde.npz` files plus a `dataset.json` index into `out_dir`.

    File names: `s01_sess1_t01_clean.rohde.npz` (subject, session, trial, condition; trials are
    numbered within a session across conditions). Returns the recording paths in write order.
    """
    if preset not in PRESETS:
        raise ConfigError(f"Unknown dataset preset {preset!r}; use one of {sorted(PRESETS)}.")
    spec = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    index: list[dict[str, Any]] = []
    started = time.perf_counter()
    for subject in range(1, spec.subjects + 1):
        for session in range(1, spec.sessions + 1):
            trial = 0
            for condition, count in spec.trials:
                for _ in range(count):
                    trial += 1
                    rec = simulate_recording(
                        config=spec.config,
                        subject=subject,
                        session=session,
                        trial=trial,
                        condition=condition,
                        seed=seed,
                    )
                    name = f"s{subject:02d}_sess{session}_t{trial:02d}_{condition}.rohde.npz"
                    paths.append(rec.save(out / name))
                    index.append(
                        {
                            "file": name,
                            "subject": subject,
                            "session": session,
                            "trial": trial,
                            "condition": condition,
                            "duration_s": round(rec.duration_s, 4),
                        }
                    )
    meta = {
        "preset": preset,
        "seed": seed,
        "fs_hz": spec.config.fs_hz,
        "layout": spec.config.electrode_layout().name,
        "gesture_names": list(spec.config.gestures),
        "recordings": index,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    logger.info("Wrote %s simulated recordings to %s in %.1f s", len(paths), out, time.perf_counter() - started)
    return paths


@dataclass
class SimChunk:
    """A chunk of the live stream.

    `condition` is the schedule entry of the chunk's *first* sample ("CA", or "CA@any" when placed);
    `condition_index` gives the condition per sample as an index into `rohde.core.gestures.CONDITIONS`
    (a chunk may straddle a change).
    """

    samples: np.ndarray  # (n, n_channels) float32 uV
    labels: np.ndarray  # (n,) int16 gesture index, -1 during onset/offset ramps
    mask: np.ndarray  # (n, n_channels) bool, True where a disturbance acts
    condition: str  # condition of the first sample
    condition_index: np.ndarray  # (n,) int16 index into CONDITIONS
    start_sample: int  # stream index of the first sample


class LiveSimulator:
    """Endless simulated amplifier: cycles gestures and, every `condition_s`, the disturbance schedule
    (entries as `parse_live_condition` reads them; a placed one moves every `move_s` within its turn).

    Samples are generated in fixed internal blocks, so the stream does not depend on how it is
    read: `read(1000)` once equals `read(1)` a thousand times.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        subject: int = 0,
        session: int = 0,
        seed: int = 0,
        schedule: Sequence[str] = ("clean", "CA", "LC"),
        condition_s: float = 30.0,
        move_s: float = MOVE_S,
    ) -> None:
        self.config = config or SimulatorConfig()
        if not schedule:
            raise ConfigError("schedule must name at least one condition, e.g. ('clean',).")
        parsed = [parse_live_condition(entry) for entry in schedule]
        if condition_s <= 0 or move_s <= 0:
            raise ConfigError(f"condition_s and move_s must be positive, got {condition_s} and {move_s}.")
        self._layout = self.config.electrode_layout()
        self._seed = seed
        self._subject = subject
        self._session = session
        self._schedule = tuple(schedule)  # entries as given: what `condition_at` and the truth markers say
        self._kinds = tuple(condition for condition, _ in parsed)  # what `condition_index` codes
        self._placements = tuple(placement for _, placement in parsed)
        self._condition_n = max(1, int(round(condition_s * self.config.fs_hz)))
        self._move_n = min(self._condition_n, max(1, int(round(move_s * self.config.fs_hz))))
        self._block = max(1, int(round(BLOCK_S * self.config.fs_hz)))
        self._generator = _make_generator(self.config, self._layout, seed=seed, subject=subject, session=session)
        self._rng = np.random.default_rng([seed, 5, subject, session])
        self._timeline: GestureTimeline | CuedTimeline = _timeline(
            self.config, np.random.default_rng([seed, 6, subject, session]), passes=None
        )
        self._generated = 0  # samples generated into the buffer so far
        self._served = 0  # samples handed out by read()
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self._segment: tuple[tuple[int, int], DisturbanceField] | None = None  # (segment, piece) -> its field

    @property
    def fs_hz(self) -> float:
        return self.config.fs_hz

    @property
    def n_channels(self) -> int:
        return self._layout.n_channels

    @property
    def layout(self) -> ElectrodeLayout:
        return self._layout

    @property
    def gesture_names(self) -> tuple[str, ...]:
        return tuple(self.config.gestures)

    @property
    def samples_read(self) -> int:
        return self._served

    def set_gesture(self, gesture: str, *, at_sample: int | None = None) -> None:
        """Hold `gesture` (one of `gesture_names`) from stream sample `at_sample` on, or from the next generated
        block (within `BLOCK_S`) when None or already generated.

        The first call replaces the built-in gesture cycle with a `CuedTimeline`, so an outside protocol
        (the calibration cues of `rohde record`) decides what the simulated person does; the truth labels
        follow (ramps between gestures are UNUSABLE).
        """
        if gesture not in self.config.gestures:
            raise ConfigError(f"Gesture {gesture!r} is not simulated; use one of {list(self.config.gestures)}.")
        timeline = self._timeline
        if not isinstance(timeline, CuedTimeline):
            cfg = self.config
            timeline = CuedTimeline(fs_hz=cfg.fs_hz, gestures=cfg.gestures, rest_index=cfg.rest_index,
                                    ramp_s=cfg.ramp_s, effort_range=cfg.effort_range, muscle_jitter=cfg.muscle_jitter,
                                    coactivation=cfg.coactivation,
                                    rng=np.random.default_rng([self._seed, 8, self._subject, self._session]))
            self._timeline = timeline
        timeline.cue(self.config.gestures.index(gesture), at_sample)

    def condition_at(self, sample: int) -> str:
        """Condition scheduled at stream sample `sample`."""
        return self._schedule[(sample // self._condition_n) % len(self._schedule)]

    def _piece_n(self, segment: int) -> int:
        """Samples per piece of `segment`: a placed disturbance is drawn anew for each piece."""
        placed = self._placements[segment % len(self._schedule)] is not None
        return self._move_n if placed else self._condition_n

    def _field(self, segment: int, piece: int) -> DisturbanceField | None:
        index = segment % len(self._schedule)
        condition, placement = self._kinds[index], self._placements[index]
        if condition == "clean":
            return None
        if self._segment is None or self._segment[0] != (segment, piece):
            seed = [self._seed, 7, self._subject, self._session, segment]
            rng = np.random.default_rng(seed if placement is None else [*seed, piece, 11])
            built = disturbance_field(
                self._piece_n(segment),
                fs_hz=self.fs_hz,
                layout=self._layout,
                condition=condition,
                rng=rng,
                powerline_hz=self.config.powerline_hz,
                placement=placement,
            )
            self._segment = ((segment, piece), built)
        return self._segment[1]

    def _generate_block(self) -> None:
        start, n = self._generated, self._block
        activation, labels = self._timeline.render(start, n)
        samples = self._generator.generate(activation, self._rng)
        mask = np.zeros(samples.shape, dtype=bool)
        pos = start
        while pos < start + n:
            segment = pos // self._condition_n
            offset = pos - segment * self._condition_n
            piece_n = self._piece_n(segment)
            piece = offset // piece_n
            piece_end = segment * self._condition_n + min(self._condition_n, (piece + 1) * piece_n)
            end = min(start + n, piece_end)
            built = self._field(segment, piece)
            if built is not None:
                sl = slice(pos - start, end - start)
                built.apply(samples[sl], mask[sl], start=offset - piece * piece_n)
            pos = end
        self._buffer.append((samples, labels, mask))
        self._buffered += n
        self._generated += n

    def read(self, n_samples: int) -> SimChunk:
        """The next `n_samples` (>= 1) of the stream, continuing where the last read stopped."""
        if n_samples < 1:
            raise ConfigError(f"read() needs n_samples >= 1, got {n_samples}.")
        while self._buffered < n_samples:
            self._generate_block()
        samples = np.concatenate([b[0] for b in self._buffer])
        labels = np.concatenate([b[1] for b in self._buffer])
        mask = np.concatenate([b[2] for b in self._buffer])
        rest = samples.shape[0] - n_samples
        self._buffer = [(samples[n_samples:], labels[n_samples:], mask[n_samples:])] if rest else []
        self._buffered = rest
        start = self._served
        self._served += n_samples
        idx = np.arange(start, start + n_samples) // self._condition_n % len(self._schedule)
        codes = np.array([CONDITIONS.index(c) for c in self._kinds], dtype=np.int16)[idx]
        return SimChunk(
            samples=samples[:n_samples],
            labels=labels[:n_samples],
            mask=mask[:n_samples],
            condition=self.condition_at(start),
            condition_index=codes,
            start_sample=start,
        )
