"""`rohde data detector`: the per-kind scoring of the neighbour detector and its faint-window diagnostic."""

from __future__ import annotations

import numpy as np

from rohde.data_tools.detector_eval import DetectorEvalOptions, evaluate_detector, format_detector_table, window_sdr_db
from rohde.simulation.simulator import SimulatorConfig, simulate_recording


def test_window_sdr_ignores_an_offset_the_window_mean_removes() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(0.0, 10.0, (512, 3)).astype(np.float32)
    disturbed = clean.copy()
    disturbed[:, 0] += 500.0  # a constant offset: nothing a mean-removed window shows
    disturbed[:, 1] += rng.normal(0.0, 10.0, 512).astype(np.float32)  # as strong as the signal
    sdr = window_sdr_db(clean, disturbed)
    assert sdr[0] > 60 and abs(sdr[1]) < 1 and sdr[2] > 100


def test_scores_carry_the_faint_share_and_the_recall_on_the_rest() -> None:
    config = SimulatorConfig(gestures=("no_movement", "hand_close"), rest_s=0.5, gesture_s=1.0, repetitions=1)
    rec = simulate_recording(config=config, subject=1, session=1, trial=1, condition="clean", seed=0)
    options = DetectorEvalOptions(draws=1, window_stride=2, seed=1)
    results = evaluate_detector([rec], kinds=("dead",), options=options)
    dead = results["dead"]
    assert dead["recall"] == 1.0 and dead["faint_share"] == 0.0 and dead["recall_not_faint"] == 1.0
    assert results["clean"]["false_alarm_rate"] < 0.01
    table = format_detector_table("simulator", results)
    assert "| faint | recall, not faint |" in table and "| dead |" in table
