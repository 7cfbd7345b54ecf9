"""Gesture and condition vocabulary shared by data, training and serving."""

from __future__ import annotations

# The seven gestures of the default (simulated) amplifier set-up; index = class label.
DEFAULT_GESTURES: tuple[str, ...] = (
    "no_movement",
    "wrist_supination",
    "wrist_pronation",
    "hand_close",
    "hand_open",
    "wrist_flexion",
    "wrist_extension",
)

# Names of the rest class (no gesture held), compared in lower case.
REST_GESTURES: tuple[str, ...] = ("no_movement", "rest")

# Label of samples that must not be used (transitions, unusable margins).
UNUSABLE = -1

# Recording conditions: clean, contact artifact, loose contact, and the further knobs.
CONDITIONS: tuple[str, ...] = ("clean", "CA", "LC", "powerline", "dropout")
