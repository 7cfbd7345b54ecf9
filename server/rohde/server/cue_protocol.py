"""The calibration protocol of `rohde record` and the cue markers it publishes on LSL.

A protocol holds each gesture `repetitions` times: per repetition a `prepare` phase (the next gesture
is announced; its samples are unusable), a `hold` phase (the gesture) and a `rest` phase (the rest
class). Gestures are visited in turn within each repetition round, so the k-th hold of every gesture
lies in round k (`rohde train` splits by these rounds). Optional disturbed trials follow: the user
holds a gesture while tapping the electrodes (condition `CA`).

The cue stream (type `Markers`, name `RoHDE-Cues`, 3 string channels) carries, per phase start:

    [label, condition, info]
      label      the class of the samples from this cue on: a gesture name, the rest class, or
                 `unusable` (prepare, done): what `rohde.core.datasets.cue_labels` reads, so XDF files
                 LabRecorder writes with this stream label their samples exactly as `rohde record` does
      condition  `clean`, or `CA` while the user taps the electrodes (the loaders' second cue channel)
      info       JSON {"cue": gesture or "rest", "phase": "prepare"|"hold"|"rest"|"done",
                 "remaining_s": seconds this phase lasts, "index": cue number, "total": cues in all}

Plain one-channel cue streams (a gesture name per marker) are understood too (`decode_marker`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rohde.core.errors import ConfigError
from rohde.core.gestures import DEFAULT_GESTURES, REST_GESTURES
from rohde.core.xdf import UNUSABLE_CUE

CUE_STREAM_NAME = "RoHDE-Cues"
CUE_STREAM_TYPE = "Markers"
CUE_CHANNELS = 3
PHASES = ("prepare", "hold", "rest", "done")
DISTURBED_CONDITION = "CA"  # what tapping the electrodes does (a contact artifact)
DEFAULT_ACTIVE_GESTURES: tuple[str, ...] = tuple(g for g in DEFAULT_GESTURES if g not in REST_GESTURES)


@dataclass(frozen=True)
class CalibrationProtocol:
    """What `rohde record` asks of the user; the defaults take 2.5 minutes (6 gestures x 4 repetitions)."""

    gestures: tuple[str, ...] = DEFAULT_ACTIVE_GESTURES  # gestures to hold (not the rest class)
    repetitions: int = 4  # holds per gesture; `rohde train` needs 3 (train, validation, test)
    hold_s: float = 3.0  # each hold
    rest_s: float = 2.0  # rest after each hold
    prepare_s: float = 1.0  # announcement of the next gesture (unusable samples; keep it above one window)
    lead_in_s: float = 2.0  # rest before the first cue
    disturbed_trials: int = 0  # extra holds while the user taps the electrodes (condition CA)
    rest_label: str | None = None  # class name of rest; None: no_movement for default gestures, else rest

    def __post_init__(self) -> None:
        if not self.gestures:
            raise ConfigError("The protocol needs at least one gesture; pass --gestures a,b,c.")
        bad = [g for g in self.gestures if not g or g.strip() != g or g == UNUSABLE_CUE or g.lower() in REST_GESTURES]
        if bad or len(set(self.gestures)) != len(self.gestures):
            raise ConfigError(f"--gestures must be distinct names, none of them a rest name {REST_GESTURES} or "
                              f"{UNUSABLE_CUE!r} (rest is recorded between holds); got {list(self.gestures)}.")
        if self.repetitions < 1 or self.disturbed_trials < 0:
            raise ConfigError(f"repetitions must be >= 1 and disturbed trials >= 0, got {self.repetitions} and "
                              f"{self.disturbed_trials}.")
        for name in ("hold_s", "rest_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.prepare_s < 0 or self.lead_in_s < 0:
            raise ConfigError(f"prepare_s and lead_in_s must be >= 0, got {self.prepare_s} and {self.lead_in_s}.")

    @property
    def rest_class(self) -> str:
        if self.rest_label is not None:
            return self.rest_label
        return "no_movement" if set(self.gestures) <= set(DEFAULT_GESTURES) else "rest"

    @property
    def gesture_names(self) -> tuple[str, ...]:
        """Class names of the recording: the rest class first, then the gestures."""
        return (self.rest_class, *self.gestures)

    @property
    def duration_s(self) -> float:
        holds = len(self.gestures) * self.repetitions + self.disturbed_trials
        return self.lead_in_s + holds * (self.prepare_s + self.hold_s + self.rest_s)


@dataclass(frozen=True)
class Cue:
    """One phase of the protocol."""

    start_s: float  # from the start of the protocol
    duration_s: float
    phase: str  # one of PHASES
    gesture: str  # the gesture shown ("rest" in rest phases)
    label: str  # the class its samples get (a gesture, the rest class, or `unusable`)
    condition: str  # clean, CA (a tapped hold) or tap (the announcement of one; its marker says clean)
    index: int  # 0-based
    total: int
    repetition: int  # 1-based round of this gesture's holds (0 for the lead-in and done)

    def marker(self) -> list[str]:
        info = {"cue": self.gesture, "phase": self.phase, "remaining_s": round(self.duration_s, 3),
                "index": self.index, "total": self.total}
        # The announcement of a tapped hold is itself clean: only the hold carries DISTURBED_CONDITION.
        return [self.label, "clean" if self.condition == "tap" else self.condition, json.dumps(info)]

    def prompt(self) -> str:
        """The line the terminal shows."""
        step = f"[{self.index + 1:>3}/{self.total}]"
        if self.phase == "prepare":
            tap = " (and TAP THE ELECTRODES while holding)" if self.condition == "tap" else ""
            return f"{step} get ready: {self.gesture}{tap} in {self.duration_s:g} s"
        if self.phase == "hold":
            tap = ", TAP THE ELECTRODES now" if self.condition != "clean" else ""
            return f"{step} HOLD {self.gesture.upper()}{tap} ({self.duration_s:g} s, repetition {self.repetition})"
        if self.phase == "rest":
            return f"{step} rest ({self.duration_s:g} s)"
        return f"{step} done: the calibration is complete"


def protocol_cues(protocol: CalibrationProtocol) -> list[Cue]:
    """Every cue of `protocol` in order, ending with a `done` cue: rounds of every gesture in turn (easy
    to follow, and the k-th hold of each gesture is in round k), then the disturbed trials."""
    plan: list[tuple[str, str, float, str, str, int]] = [("rest", "rest", protocol.lead_in_s, protocol.rest_class,
                                                          "clean", 0)] if protocol.lead_in_s > 0 else []
    holds = [(g, "clean", r + 1) for r in range(protocol.repetitions) for g in protocol.gestures]
    holds += [(protocol.gestures[k % len(protocol.gestures)], DISTURBED_CONDITION, 1)
              for k in range(protocol.disturbed_trials)]
    for gesture, condition, repetition in holds:
        # Only the hold is disturbed: the announcement says so (`tap`), its samples are clean and unusable.
        tap = "tap" if condition != "clean" else "clean"
        if protocol.prepare_s > 0:
            plan.append(("prepare", gesture, protocol.prepare_s, UNUSABLE_CUE, tap, repetition))
        plan.append(("hold", gesture, protocol.hold_s, gesture, condition, repetition))
        plan.append(("rest", "rest", protocol.rest_s, protocol.rest_class, "clean", repetition))
    plan.append(("done", "rest", 0.0, UNUSABLE_CUE, "clean", 0))
    cues, start = [], 0.0
    for index, (phase, gesture, duration, label, condition, repetition) in enumerate(plan):
        cues.append(Cue(start_s=start, duration_s=duration, phase=phase, gesture=gesture, label=label,
                        condition=condition, index=index, total=len(plan), repetition=repetition))
        start += duration
    return cues


@dataclass(frozen=True)
class CueInfo:
    """A cue marker as a listener reads it back."""

    label: str  # the gesture asked for, or "rest"
    phase: str
    remaining_s: float | None
    index: int
    total: int
    condition: str = "clean"


def decode_marker(sample: Sequence[str], *, counter: int = 0) -> CueInfo:
    """A marker of the RoHDE cue stream, or of a plain cue stream (one gesture name per marker: a hold,
    or rest for a rest name and `unusable`)."""
    values = [str(v) for v in sample]
    if not values:
        raise ConfigError("A cue marker needs at least one channel.")
    condition = values[1] if len(values) > 1 and values[1] else "clean"
    if len(values) > 2:
        try:
            info = json.loads(values[2])
            return CueInfo(label=str(info["cue"]), phase=str(info["phase"]),
                           remaining_s=None if info.get("remaining_s") is None else float(info["remaining_s"]),
                           index=int(info["index"]), total=int(info["total"]), condition=condition)
        except (ValueError, KeyError, TypeError):
            pass  # not RoHDE's JSON: read it as a plain cue
    label = values[0]
    resting = label.lower() in REST_GESTURES or label == UNUSABLE_CUE
    return CueInfo(label="rest" if resting else label, phase="rest" if resting else "hold", remaining_s=None,
                   index=counter, total=0, condition=condition)
