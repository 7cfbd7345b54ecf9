"""Bodies of the REST routes, as pydantic models, so `/openapi.json` describes every response.

Field names and order are those of the JSON the routes answer; `/streams` snapshots mirror the
stream worker's `snapshot()`, whose quality block mirrors `QualityMonitor.summary()` and `.channels`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    # "model_*" field names are ours, not pydantic's.
    model_config = ConfigDict(protected_namespaces=())


class ErrorResponse(_Body):
    """Why a request failed (FastAPI's `HTTPException` body)."""

    detail: str


class RequestRefused(_Body):
    """A 422: the request was refused with a sentence, or its body did not validate (FastAPI's error list)."""

    detail: str | list[dict[str, Any]]


class WorkerThreads(_Body):
    inference: bool  # the inference thread is alive
    watchdog: bool  # the stream watchdog thread is alive


class HealthResponse(_Body):
    status: Literal["ok", "degraded"]  # degraded: a thread is down or a worker reported an error
    version: str  # RoHDE version of the server
    uptime_s: float
    model: str  # the active model's quoted name, or "no model"
    provider: str | None  # ONNX Runtime provider the active model's session really runs on; None without a model
    not_ready_reason: str | None  # why /ready answers 503, None when ready
    threads: WorkerThreads
    streams: dict[str, str]  # stream id -> worker state
    errors: dict[str, str]  # "inference", "watchdog" or "stream:<id>" -> the last error


class ElectrodeGridInfo(_Body):
    name: str
    ied_mm: float  # inter-electrode distance
    channels: list[list[int]]  # channels[row][col]: the 0-based stream channel at that site, -1 for none


class ElectrodeLayoutInfo(_Body):
    """The model's electrode layout (`ElectrodeLayout.to_dict()`): where each channel sits on its grid."""

    name: str
    n_channels: int
    grids: list[ElectrodeGridInfo]


class ActiveModelInfo(_Body):
    name: str
    version: str
    folder: str  # package folder under the models directory
    generation: int  # activation counter; bumped by every model change
    provider: str  # ONNX Runtime execution provider in use
    labels: list[str]  # class names, in output order
    n_channels: int
    fs_hz: float
    window_ms: float
    hop_ms: float
    window_samples: int
    onnx_sha256: str
    metrics: dict[str, Any]  # the package's per-condition evaluation results
    layout: ElectrodeLayoutInfo  # the grids the channels lie on (the dashboard draws its heatmaps from it)


class ReadyResponse(_Body):
    ready: bool
    reason: str | None  # why not ready, None when ready
    provider: str | None  # ONNX Runtime provider the active model's session really runs on; None without a model
    model: ActiveModelInfo | None
    streams: dict[str, str]  # stream id -> worker state


class ModelPackageSummary(_Body):
    name: str  # folder name, the name to activate
    valid: bool  # the package really loads: metadata, checksum, and an ONNX Runtime session that runs
    version: str | None
    labels: list[str] | None
    n_channels: int | None
    fs_hz: float | None
    error: str | None  # why the package is invalid


class ModelsResponse(_Body):
    models_dir: str  # the models folder's name (clients are never told the server's absolute paths)
    active: str | None  # folder of the active package
    models: list[ModelPackageSummary]


class ChannelQualityReport(_Body):
    channel: int  # 0-based
    flags: list[str]  # flat, saturated, powerline, artifact, nonfinite
    rms_uv: float
    powerline_share: float  # mains share of the >20 Hz power
    lowband_uv: float  # 1-20 Hz RMS


class StreamQualityReport(_Body):
    bad_channels: list[int]  # 0-based channels with any flag
    flag_counts: dict[str, int]  # flag -> number of channels raising it
    channels: list[ChannelQualityReport]


class ChannelMappingReport(_Body):
    """How the stream's channels feed the model (`rohde.core.channel_map.ChannelMapping`)."""

    method: str  # labels (the model's electrode names), numbered_labels, stream_order (no usable labels), selection
    reordered: bool  # the model's channel order differs from the stream's
    stream_channels: list[int]  # model channel k reads stream channel stream_channels[k] (0-based)
    dropped: list[str]  # stream channels left out, "index:label" (counter, trigger, ...)
    units: dict[str, int]  # unit as the stream names it -> number of channels; all are scaled to uV
    notes: list[str]  # assumptions made (no labels: stream order; unknown unit: uV)
    summary: str  # one line of all the above


class AlignmentShiftReport(_Body):
    """Where the stream's activity pattern lies against the model's training grid."""

    rows: float  # electrode sites the pattern moved along the rows (what row r showed in training, row r + rows shows)
    cols: float  # ... along the columns
    gain: float  # amplitude of the stream against the training data


class StreamAlignmentReport(_Body):
    """Label-free alignment of the stream to the model's training grid (`rohde.server.live_alignment`)."""

    state: Literal["disabled", "unavailable", "collecting", "aligned", "rejected"]
    reason: str  # why disabled, unavailable or rejected ("" otherwise)
    collected_s: float  # seconds of accepted signal collected for the estimate
    warmup_s: float  # seconds collected before the estimate is made
    applied: Literal["shift", "gain_only", "none"] | None  # what corrects the windows; None before an estimate
    shift: AlignmentShiftReport | None  # the estimate; rows = cols = 0 when the grid did not clearly move
    score: float | None  # map correlation with the reference under the shift applied (after)
    score_unshifted: float | None  # ... without any shift (before)
    reference: str | None  # the reference map matched ("pooled", or a training subject's); None before an estimate
    estimated_at: float | None  # Unix time of the estimate
    model_generation: int  # the model whose reference it follows


class StreamSnapshot(_Body):
    """One stream the server knows; the description fields are None before a stream was attached."""

    stream_id: str
    state: str  # connected, connecting, lost, refused, stopped or waiting_for_model
    reason: str  # why the stream is in this state ("" when connected)
    error: str | None  # the worker thread's last error
    name: str | None
    type: str | None
    source_id: str | None
    hostname: str | None
    n_channels: int | None
    fs_hz: float | None  # nominal rate of the stream
    channel_format: str | None
    channel_labels: list[str]  # the stream's own labels, in stream order (quality channels are the model's)
    channel_mapping: ChannelMappingReport | None  # None until the stream's channels were mapped onto a model
    samples_received: int
    windows_emitted: int
    lost_count: int
    recovered_count: int
    last_lsl_time: float | None
    time_correction_s: float | None
    model_generation: int  # generation of the model the windows are cut for (0 before the first)
    quality: StreamQualityReport | None  # None until the first quality estimate
    alignment: StreamAlignmentReport  # label-free alignment to the model's training grid


class StreamsResponse(_Body):
    query: str  # which streams (name, accepted types, source_id) and which of their channels are served
    streams: list[StreamSnapshot]


class MessageSchemas(_Body):
    prediction: dict[str, Any]  # JSON schema of PredictionMessage
    status: dict[str, Any]  # JSON schema of StatusMessage
    cue: dict[str, Any]  # JSON schema of CueMessage
