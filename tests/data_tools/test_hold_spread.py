"""The hold-to-hold spread: known patterns, the simulator's jitter knob, clear errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.preprocessing import PreprocessingConfig
from rohde.data_tools.hold_spread import hold_patterns, hold_spread
from rohde.simulation.simulator import SimulatorConfig, simulate_recording


def _cluster(rng: np.random.Generator, centre: np.ndarray, n: int, sd: float) -> list[np.ndarray]:
    return [centre + rng.normal(0.0, sd, centre.size) for _ in range(n)]


def test_tight_clusters_are_recognised_and_wide_ones_are_not() -> None:
    rng = np.random.default_rng(0)
    centres = [rng.normal(0.0, 1.0, 32) for _ in range(3)]
    tight = [(g, p) for g, c in enumerate(centres, start=1) for p in _cluster(rng, c, 8, 0.05)]
    wide = [(g, p) for g, c in enumerate(centres, start=1) for p in _cluster(rng, c, 8, 2.0)]
    t, w = hold_spread(tight), hold_spread(wide)
    assert (t.n_holds, t.n_gestures) == (24, 3)
    assert t.nearest_mean_accuracy == 1.0 and t.corr_to_mean > 0.99 and t.dispersion < 0.05
    # Spread twice the distance between gestures: patterns no longer tell the gestures apart.
    assert w.nearest_mean_accuracy < 0.8 and w.corr_to_mean < 0.5 and w.dispersion > 1.0


def test_dispersion_does_not_depend_on_the_number_of_holds() -> None:
    rng = np.random.default_rng(1)
    centres = [rng.normal(0.0, 1.0, 64) for _ in range(4)]
    few = hold_spread([(g, p) for g, c in enumerate(centres) for p in _cluster(rng, c, 3, 0.3)])
    many = hold_spread([(g, p) for g, c in enumerate(centres) for p in _cluster(rng, c, 30, 0.3)])
    assert few.dispersion == pytest.approx(many.dispersion, rel=0.2)


def test_too_few_holds_raise_a_clear_error() -> None:
    one_gesture = [(1, np.ones(8)), (1, np.zeros(8))]
    with pytest.raises(ConfigError, match="two gestures with two holds"):
        hold_spread(one_gesture)
    with pytest.raises(ConfigError, match="two gestures with two holds"):
        hold_spread([(1, np.ones(8)), (2, np.zeros(8))])


def test_more_muscle_jitter_gives_more_spread() -> None:
    small = SimulatorConfig(
        fs_hz=1000.0, gestures=DEFAULT_GESTURES[:4], rest_s=0.4, gesture_s=0.8, ramp_s=0.1, repetitions=2
    )
    pre = PreprocessingConfig(fs_hz=small.fs_hz)
    spreads = []
    for jitter in (0.05, 0.6):
        config = replace(small, muscle_jitter=jitter)
        recordings = [simulate_recording(config=config, subject=1, session=1, trial=t, seed=0) for t in (1, 2, 3)]
        patterns = [h for r in recordings for h in hold_patterns(r, pre)]
        assert len(patterns) == 3 * 2 * 3  # three trials, two passes, three active gestures
        assert {label for label, _ in patterns} == {1, 2, 3}  # never the rest class
        spreads.append(hold_spread(patterns))
    assert spreads[0].dispersion < spreads[1].dispersion
    assert spreads[0].corr_to_mean > spreads[1].corr_to_mean
