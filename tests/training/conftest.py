"""Small simulated recordings for the training tests (two sessions, clean / CA / LC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rohde.core.recording import Recording
from rohde.simulation.simulator import SimulatorConfig, simulate_recording

SMALL_CONFIG = SimulatorConfig(
    fs_hz=1000.0,
    layout="2x4x4",
    gestures=("no_movement", "hand_close", "hand_open"),
    rest_s=0.6,
    gesture_s=1.0,
    ramp_s=0.1,
    repetitions=1,
)


def small_recordings() -> list[Recording]:
    """Per session: three clean trials, one CA and one LC trial of one subject (32 ch, 1000 Hz)."""
    recordings = []
    for session in (1, 2):
        trial = 0
        for condition, count in (("clean", 3), ("CA", 1), ("LC", 1)):
            for _ in range(count):
                trial += 1
                recordings.append(
                    simulate_recording(config=SMALL_CONFIG, subject=1, session=session, trial=trial,
                                       condition=condition, seed=0)  # fmt: skip
                )
    return recordings


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small simulated `.rohde.npz` recordings, written once per test session."""
    out = tmp_path_factory.mktemp("small_sim")
    for rec in small_recordings():
        rec.save(out / f"s01_{rec.session}_{rec.trial}_{rec.condition}")
    return out
