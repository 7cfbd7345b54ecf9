"""The gesture protocol of a simulated trial or stream: when each gesture is held, and how hard.

Each hold: a raised-cosine onset over `ramp_s`, a plateau of `gesture_s`, a symmetric offset, then
`rest_s` of rest. A pass visits every active gesture once (shuffled when asked). Every hold draws
its effort (a common factor) and each muscle's share of the gesture's synergy (lognormal jitter
plus a little co-activation of all muscles), so no two repetitions look the same.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from rohde.core.gestures import UNUSABLE
from rohde.simulation.emg_model import MUSCLES, synergy_matrix


@dataclass
class _Hold:
    start: int  # sample where the onset ramp begins
    ramp: int  # ramp length in samples
    hold: int  # plateau length in samples
    gesture: int  # label of the plateau
    drive: np.ndarray  # (n_muscles,) activation at the plateau

    @property
    def end(self) -> int:
        return self.start + 2 * self.ramp + self.hold


class GestureTimeline:
    """Rest and held gestures over time, rendered block by block: activation and labels.

    Each hold: a raised-cosine onset over `ramp_s`, a plateau of `gesture_s`, a symmetric offset,
    then `rest_s` of rest. Ramps are labelled UNUSABLE; rest is the rest class. Holds are drawn
    pass by pass (a pass visits every active gesture once), lazily, so the timeline may be endless.
    """

    def __init__(
        self,
        *,
        fs_hz: float,
        gestures: tuple[str, ...],
        rest_index: int,
        rest_s: float,
        gesture_s: float,
        ramp_s: float,
        shuffle: bool,
        effort_range: tuple[float, float],
        muscle_jitter: float,
        coactivation: float,
        rng: np.random.Generator,
        passes: int | None,
    ) -> None:
        self._rng = rng
        self._passes_left = passes  # None: endless
        self._rest_index = rest_index
        self._shuffle = shuffle
        self._effort_range = effort_range
        self._muscle_jitter = muscle_jitter
        self._coactivation = coactivation
        self._synergy = synergy_matrix(gestures)
        self._active = [i for i in range(len(gestures)) if i != rest_index]
        self._ramp = int(round(ramp_s * fs_hz))
        self._hold = int(round(gesture_s * fs_hz))
        self._rest = int(round(rest_s * fs_hz))
        self._holds: list[_Hold] = []
        self._next_start = self._rest

    def _extend(self, until: int) -> None:
        while self._next_start <= until and self._passes_left != 0:
            order = list(self._active)
            if self._shuffle:
                order = [order[i] for i in self._rng.permutation(len(order))]
            for g in order:
                effort = self._rng.uniform(*self._effort_range)
                jitter = self._rng.lognormal(0.0, self._muscle_jitter, self._synergy.shape[1])
                extra = self._rng.uniform(0.0, self._coactivation, self._synergy.shape[1])
                drive = np.clip((self._synergy[g] * jitter + extra) * effort, 0.0, 1.0)
                hold = _Hold(self._next_start, self._ramp, self._hold, g, drive)
                self._holds.append(hold)
                self._next_start = hold.end + self._rest
            if self._passes_left is not None:
                self._passes_left -= 1

    def render(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Activation `(n, n_muscles)` and labels `(n,)` int16 for samples `[start, start + n)`."""
        self._extend(start + n)
        activation = np.zeros((n, len(MUSCLES)))
        labels = np.full(n, self._rest_index, dtype=np.int16)
        t = np.arange(start, start + n)
        # Holds that ended long before this block are no longer needed.
        self._holds = [h for h in self._holds if h.end > start - 1] if len(self._holds) > 64 else self._holds
        for h in self._holds:
            if h.end <= start or h.start >= start + n:
                continue
            rel = t - h.start
            env = np.zeros(n)
            if h.ramp > 0:
                up = (rel >= 0) & (rel < h.ramp)
                env[up] = 0.5 - 0.5 * np.cos(np.pi * rel[up] / h.ramp)
                down = (rel >= h.ramp + h.hold) & (rel < h.end - h.start)
                env[down] = 0.5 + 0.5 * np.cos(np.pi * (rel[down] - h.ramp - h.hold) / h.ramp)
                labels[up | down] = UNUSABLE
            plateau = (rel >= h.ramp) & (rel < h.ramp + h.hold)
            env[plateau] = 1.0
            labels[plateau] = h.gesture
            activation += env[:, None] * h.drive[None, :]
        return activation, labels

    @property
    def length(self) -> int:
        """Samples up to the end of the last hold plus the closing rest (finite timelines only)."""
        self._extend(np.iinfo(np.int64).max)
        return self._next_start


class CuedTimeline:
    """Holds whatever gesture it is told to (`cue`), as a person following cues would.

    Each change ramps (raised cosine over `ramp_s`, labelled UNUSABLE) from the current drive to the
    new gesture's, drawn like a hold of `GestureTimeline` (effort, muscle jitter, co-activation). A cue
    takes effect at the sample it names (`at_sample`, e.g. the sample of the cue's time stamp, so a
    stream that runs late still reacts at the right samples), or at the first sample rendered after it.
    """

    def __init__(
        self,
        *,
        fs_hz: float,
        gestures: tuple[str, ...],
        rest_index: int,
        ramp_s: float,
        effort_range: tuple[float, float],
        muscle_jitter: float,
        coactivation: float,
        rng: np.random.Generator,
    ) -> None:
        self._rng = rng
        self._rest_index = rest_index
        self._effort_range = effort_range
        self._muscle_jitter = muscle_jitter
        self._coactivation = coactivation
        self._synergy = synergy_matrix(gestures)
        self._ramp = max(1, int(round(ramp_s * fs_hz)))
        self._pending: list[tuple[int | None, int]] = []  # cues not rendered yet; `cue` runs on another thread
        self._lock = threading.Lock()
        self._gesture = rest_index
        self._drive = np.zeros(self._synergy.shape[1])
        self._from_drive = self._drive
        self._ramp_start = -self._ramp  # no ramp in progress

    def cue(self, gesture: int, at_sample: int | None = None) -> None:
        """Hold gesture index `gesture` from stream sample `at_sample` on (None: the next rendered sample)."""
        with self._lock:
            self._pending.append((at_sample, int(gesture)))

    def _draw(self, gesture: int) -> np.ndarray:
        if gesture == self._rest_index:
            return np.zeros(self._synergy.shape[1])
        effort = self._rng.uniform(*self._effort_range)
        jitter = self._rng.lognormal(0.0, self._muscle_jitter, self._synergy.shape[1])
        extra = self._rng.uniform(0.0, self._coactivation, self._synergy.shape[1])
        return np.clip((self._synergy[gesture] * jitter + extra) * effort, 0.0, 1.0)

    def _drive_at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = t - self._ramp_start
        ramping = rel < self._ramp
        weight = np.where(ramping, 0.5 - 0.5 * np.cos(np.pi * np.clip(rel, 0, self._ramp) / self._ramp), 1.0)
        activation = (1 - weight)[:, None] * self._from_drive[None, :] + weight[:, None] * self._drive[None, :]
        return activation, np.where(ramping, UNUSABLE, self._gesture).astype(np.int16)

    def render(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Activation `(n, n_muscles)` and labels `(n,)` int16 for samples `[start, start + n)`."""
        with self._lock:
            due = [c for c in self._pending if c[0] is None or c[0] < start + n]
            self._pending = [c for c in self._pending if not (c[0] is None or c[0] < start + n)]
        changes = sorted((max(start, at if at is not None else start), g) for at, g in due)
        activation = np.zeros((n, self._synergy.shape[1]))
        labels = np.zeros(n, dtype=np.int16)
        pos = start
        for at, gesture in [*changes, (start + n, None)]:
            if at > pos:
                part = slice(pos - start, at - start)
                activation[part], labels[part] = self._drive_at(np.arange(pos, at))
                pos = at
            if gesture is not None and gesture != self._gesture:
                self._from_drive = self._drive_at(np.array([at]))[0][0]
                self._gesture, self._drive, self._ramp_start = gesture, self._draw(gesture), at
        return activation, labels
