"""Small simulated recordings for the data command tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rohde.core.gestures import DEFAULT_GESTURES
from rohde.simulation.simulator import SimulatorConfig, simulate_recording

# Four gestures at 1000 Hz: a 5.6 s trial of 192 channels, quick enough to make a few.
SMALL = SimulatorConfig(
    fs_hz=1000.0, gestures=DEFAULT_GESTURES[:4], rest_s=0.5, gesture_s=1.0, ramp_s=0.1, repetitions=1
)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Subject 1: clean trials 1-3, a CA trial 4 and an LC trial 5, as the simulator names them."""
    out = tmp_path_factory.mktemp("sim")
    for trial, condition in enumerate(["clean", "clean", "clean", "CA", "LC"], start=1):
        rec = simulate_recording(config=SMALL, subject=1, session=1, trial=trial, condition=condition, seed=3)
        rec.save(out / f"s01_sess1_t{trial:02d}_{condition}")
    return out
