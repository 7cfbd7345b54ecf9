"""Decision smoothing: majority vote over the last k windows, confidence rejection, parameter checks; non-finite
model output rejected and published as finite numbers only."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from pydantic import ValidationError

from rohde.core.errors import ConfigError
from rohde.core.model_package import load_model_package
from rohde.server.decisions import DecisionSmoother
from rohde.server.inference import ModelManager
from rohde.server.inference_loop import InferenceLoop
from rohde.server.jobs import JobQueue, WindowJob
from rohde.server.messages import PredictionMessage
from rohde.server.metrics import ServerMetrics

from .conftest import ModelSet

pytestmark = pytest.mark.timeout(60)


def probs(index: int, confidence: float, n: int = 4) -> np.ndarray:
    p = np.full(n, (1 - confidence) / (n - 1))
    p[index] = confidence
    return p


def test_majority_vote_and_rejection() -> None:
    smoother = DecisionSmoother(k=3, confidence_threshold=0.6)
    assert smoother.update(probs(1, 0.9)).gesture_index == 1
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # tie 1:1 -> most recent
    d = smoother.update(probs(1, 0.9))
    assert (d.gesture_index, d.rejected) == (1, False)
    low = smoother.update(probs(3, 0.4))
    assert low.rejected and low.reject_reason == "low_confidence"
    assert low.window_index == 3 and low.gesture_index == 1  # a rejected window does not vote
    forced = smoother.update(probs(3, 0.95), input_reject_reason="nonfinite_input")
    assert forced.rejected and forced.reject_reason == "nonfinite_input"
    assert smoother.update(probs(2, 0.9)).gesture_index == 2  # history now 2, 1, 2


def test_smoother_validates_parameters() -> None:
    with pytest.raises(ConfigError, match="vote k"):
        DecisionSmoother(k=0, confidence_threshold=0.5)
    with pytest.raises(ConfigError, match="confidence_threshold"):
        DecisionSmoother(k=3, confidence_threshold=1.5)


def test_nonfinite_output_is_rejected_published_as_zeros_and_never_votes() -> None:
    smoother = DecisionSmoother(k=3, confidence_threshold=0.5)
    smoother.update(probs(1, 0.9))
    for bad in (np.array([np.nan, 0.2, 0.3, 0.5]), np.array([np.inf, 0.0, 0.0, 0.0]), np.full(4, np.nan)):
        d = smoother.update(bad)
        assert d.rejected and d.reject_reason == "nonfinite_output"
        assert (d.confidence, d.window_index, d.probabilities) == (0.0, 0, (0.0, 0.0, 0.0, 0.0))
    # The NaN passed no threshold and cast no vote; the history before it was cleared.
    assert smoother.update(probs(2, 0.9)).gesture_index == 2
    # Input already rejected keeps its own reason, and its published numbers are still finite.
    d = smoother.update(np.full(4, np.nan), input_reject_reason="bad_channels")
    assert d.reject_reason == "bad_channels" and np.isfinite(d.probabilities).all()


@pytest.mark.parametrize("reason", ["nonfinite_input", "out_of_range_input"])
def test_garbage_input_clears_the_vote_history(reason: str) -> None:
    smoother = DecisionSmoother(k=5, confidence_threshold=0.5)
    for _ in range(4):
        smoother.update(probs(1, 0.9))
    assert smoother.update(probs(2, 0.9), input_reject_reason=reason).rejected
    # Without the reset, four votes for 1 would outvote this first window after the fault.
    assert smoother.update(probs(2, 0.9)).gesture_index == 2


@pytest.mark.parametrize("reason", ["low_confidence", "bad_channels"])
def test_weak_or_partial_input_keeps_the_vote_history(reason: str) -> None:
    smoother = DecisionSmoother(k=5, confidence_threshold=0.5)
    for _ in range(3):
        smoother.update(probs(1, 0.9))
    smoother.update(probs(2, 0.3 if reason == "low_confidence" else 0.9),
                    input_reject_reason=None if reason == "low_confidence" else reason)
    assert smoother.update(probs(2, 0.9)).gesture_index == 1  # 1, 1, 1, 2


def test_messages_refuse_nonfinite_numbers() -> None:
    fields = dict(stream_id="s", seq=0, lsl_time=1.0, server_time=2.0, gesture="a", gesture_index=0, confidence=0.9,
                  window_gesture="a", probabilities=[0.9, 0.1], labels=["a", "b"], rejected=False, vote_k=5,
                  confidence_threshold=0.5, latency_ms=1.0, model_name="m", model_version="1", model_generation=1,
                  bad_channels=[])
    PredictionMessage(**fields)  # type: ignore[arg-type]
    # Every decision names the model activation that ran it; generations count from 1.
    for missing in ({k: v for k, v in fields.items() if k != "model_generation"}, {**fields, "model_generation": 0}):
        with pytest.raises(ValidationError, match="model_generation"):
            PredictionMessage(**missing)  # type: ignore[arg-type]
    for name, value in (("confidence", np.nan), ("probabilities", [np.nan, 0.1]), ("latency_ms", np.inf),
                        ("lsl_time", -np.inf)):
        with pytest.raises(ValidationError, match="finite number"):
            PredictionMessage(**{**fields, name: value})  # type: ignore[arg-type]
    # The published schema still describes plain JSON numbers.
    schema = PredictionMessage.model_json_schema()
    assert schema["properties"]["confidence"] == {"title": "Confidence", "type": "number"}


def test_the_inference_loop_publishes_finite_numbers_for_a_model_that_outputs_nan(model_set: ModelSet) -> None:
    # A window of 1e30 makes the tiny model's log power infinite and its softmax NaN (a window the
    # assembler would have rejected; a model can also produce NaN on its own).
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    meta = load_model_package(model_set.models_dir / "good").metadata
    shape = (meta.n_channels, meta.window_samples)
    rng = np.random.default_rng(0)
    published: list[PredictionMessage] = []
    loop = InferenceLoop(jobs=JobQueue(8, ServerMetrics()), models=models, metrics=ServerMetrics(),
                         publishers=[published.append], vote_k=3, confidence_threshold=0.0, max_batch=8)

    def job(window: np.ndarray, seq: int) -> WindowJob:
        return WindowJob(stream_id="s", generation=1, window=window.astype(np.float32), end_index=50 * (seq + 4),
                         lsl_time=float(seq), pulled_at=time.perf_counter(), bad_channels=(), reject_reason=None,
                         flags=())

    normal = [job(rng.standard_normal(shape), i) for i in range(3)]
    garbage = job(np.full(shape, 1e30), 3)
    messages = loop.process([*normal, garbage, job(rng.standard_normal(shape), 4)])
    assert published == messages and len(messages) == 5
    assert all(not m.rejected for m in messages[:3]) and not messages[4].rejected
    bad = messages[3]
    assert bad.rejected and bad.reject_reason == "nonfinite_output"
    assert bad.confidence == 0.0 and bad.probabilities == [0.0] * len(meta.labels)
    # The window after it is voted on alone: the history was cleared.
    assert messages[4].gesture == messages[4].window_gesture
    for message in messages:
        data = json.loads(message.model_dump_json())
        numbers = [data["confidence"], *data["probabilities"], data["latency_ms"], data["lsl_time"]]
        assert all(isinstance(x, float) and math.isfinite(x) for x in numbers)
