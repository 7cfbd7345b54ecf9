"""Messages pushed to WebSocket subscribers; every one is a pydantic model with a schema version.

`PredictionMessage` carries one decision per window; `StatusMessage` announces stream loss,
recovery, refusal and model changes. Clients tell them apart by `kind`. Neither accepts NaN or
Inf in a number (`allow_inf_nan=False`): JSON has no such values, so publishing one would break every
client's parser and the published schema, and a non-finite confidence would pass for a decision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MESSAGE_SCHEMA_VERSION = 1

StatusEvent = Literal[
    "hello", "stream_connected", "stream_lost", "stream_recovered", "stream_refused", "model_changed",
    "server_stopping",
]


class PredictionMessage(BaseModel):
    """One decision for one window of one stream."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    schema_version: int = MESSAGE_SCHEMA_VERSION
    kind: Literal["prediction"] = "prediction"
    stream_id: str  # stable id of the stream (kept across a recovery with a new source_id)
    seq: int = Field(ge=0)  # per-stream sequence number of decisions
    lsl_time: float  # LSL timestamp (local clock, corrected) of the window's last sample
    server_time: float  # Unix time when the decision was made
    gesture: str  # smoothed decision (majority vote over the last `vote_k` windows)
    gesture_index: int  # index of `gesture` in `labels`
    confidence: float  # probability of the window's own top class (0.0 when the model output was not finite)
    window_gesture: str  # the window's own top class, before voting
    probabilities: list[float]  # all class probabilities of this window, in `labels` order (zeros: not finite)
    labels: list[str]  # class names of the model
    rejected: bool  # True when the decision must not be acted on
    # low_confidence, nonfinite_input, out_of_range_input, bad_channels, nonfinite_output
    reject_reason: str | None = None
    vote_k: int  # majority-vote length used
    confidence_threshold: float  # rejection threshold used
    latency_ms: float  # processing latency: last sample pulled -> decision ready
    model_name: str
    model_version: str
    # The activation (generation) of the model that ran the window, the one it was prepared for: a client can
    # check that no window was run by another model than the one named (counts from 1, new with every PUT).
    model_generation: int = Field(ge=1)
    bad_channels: list[int]  # 0-based channels the quality monitor or the pull's own check currently flags
    condition_flags: list[str] = Field(default_factory=list)  # flags seen in this window (nonfinite, out_of_range, ...)


class StatusMessage(BaseModel):
    """A change of state: stream found, lost, recovered or refused, or a new active model."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    schema_version: int = MESSAGE_SCHEMA_VERSION
    kind: Literal["status"] = "status"
    event: StatusEvent
    server_time: float
    stream_id: str | None = None
    detail: str = ""
    source_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None


class CueMessage(BaseModel):
    """A calibration cue (`rohde record`'s cue stream, forwarded as it arrives), for the dashboard to show.

    Tell it apart by `type == "cue"` (and `kind`, as for the other messages)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    schema_version: int = MESSAGE_SCHEMA_VERSION
    type: Literal["cue"] = "cue"
    kind: Literal["cue"] = "cue"
    label: str  # the gesture asked for, or "rest"
    phase: str  # "prepare", "hold", "rest" or "done"
    remaining_s: float | None  # how long this phase lasts from `lsl_time` (None when the cue stream does not say)
    index: int = Field(ge=0)  # 0-based number of this cue in the protocol
    total: int = Field(ge=0)  # cues in the protocol (0 when the cue stream does not say)
    condition: str = "clean"  # "CA" while the user is asked to tap the electrodes
    lsl_time: float  # the cue's LSL time stamp (local clock, corrected)
    server_time: float  # Unix time when the server forwarded it
    source_id: str = ""  # the cue stream's source_id
    stream_id: None = None  # cues concern every stream: every client gets them, whatever its ?stream=


# Every message the hub fans out; each says its stream (`stream_id`, None for server-wide messages).
ServerMessage = PredictionMessage | StatusMessage | CueMessage
