"""Server settings: pydantic-settings with the `ROHDE_` env prefix, an optional config file, CLI flags.

Precedence, highest first: explicit overrides (CLI flags), environment variables (`ROHDE_*`), the
config file (JSON or TOML, `ROHDE_CONFIG` or `--config`), the defaults below. The ingestion and
quality defaults are those of `IngestConfig` and `QualityThresholds`, which read these settings back
by field name.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import fields
from importlib import resources, util
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rohde.core.channel_map import parse_selection
from rohde.core.errors import ConfigError
from rohde.core.quality_monitor import QualityThresholds
from rohde.server.ingest_config import IngestConfig
from rohde.server.lsl_inlet import DEFAULT_STREAM_TYPES

ENV_PREFIX = "ROHDE_"


def default_models_dir() -> Path:
    """The shipped model packages: `models/`, installed as the data-only namespace package `rohde.models`."""
    spec = util.find_spec("rohde.models")
    # A namespace package's search path may hold an editable install's hook entry beside the real folder.
    folders = [Path(p) for p in (spec.submodule_search_locations or []) if Path(p).is_dir()] if spec else []
    if not folders:
        raise ConfigError("The shipped models folder (package data `rohde.models`) is not installed; "
                          "set ROHDE_MODELS_DIR.")
    return folders[0]


def default_lsl_config() -> Path:
    """The loopback-only LSL configuration shipped with the server."""
    return Path(str(resources.files("rohde.server") / "lsl_loopback.cfg"))


class ServerSettings(BaseSettings):
    """Everything `rohde serve` can be told; one instance is passed to `create_app`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True, protected_namespaces=())

    # HTTP
    host: str = "127.0.0.1"  # bind address; loopback unless deliberately opened
    port: int = Field(default=8000, ge=0, le=65535)  # 0 picks a free port
    admin_token: str | None = None  # bearer token for PUT /models/active; None disables model changes
    # bearer token (or ?token=) every read needs (GET routes but /health, /ready and the docs, and /ws); None: open
    read_token: str | None = None
    # Origins whose pages may open /ws ("*": any); None: pages from loopback hosts. No Origin header always passes.
    allowed_origins: list[str] | None = None
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)  # larger request bodies are refused with 413

    # Models
    models_dir: Path = Field(default_factory=default_models_dir)  # folder of model packages
    model: str = "rohde-default"  # package (folder name under models_dir) activated at start-up
    providers: list[str] | None = None  # ONNX Runtime providers to try, in order; None = CUDA if present, else CPU
    require_gpu: bool = False  # refuse to start (or to activate a model) unless its session really runs on CUDA

    # Streams
    stream_name: str | None = None  # pick LSL streams by name ...
    # ... and/or by type: the accepted types, any case (ROHDE_STREAM_TYPE=EMG,ExG); empty: any type ...
    stream_type: list[str] | None = Field(default_factory=lambda: list(DEFAULT_STREAM_TYPES))
    stream_source_id: str | None = None  # ... and/or by source_id
    # which channels of a stream feed the model, in model order: 0-based indices, ranges (0-63), labels, label
    # ranges (EMG1..EMG64), type:NAME; None: found from the stream's desc (auxiliary channels dropped)
    stream_channels: str | None = None
    max_streams: int = Field(default=4, ge=1)  # streams served at once (one worker each)
    # liblsl inlet buffer; older samples are dropped on overflow
    inlet_buffer_s: int = Field(default=IngestConfig.inlet_buffer_s, ge=1)
    # sleep between non-blocking pulls when idle
    pull_interval_ms: float = Field(default=IngestConfig.pull_interval_ms, gt=0)
    resolve_interval_s: float = Field(default=1.0, gt=0)  # how often the watchdog looks for (re)appearing streams
    # a connected stream silent this long is declared lost
    stale_after_s: float = Field(default=IngestConfig.stale_after_s, gt=0)
    # timestamp jumps beyond this many sample periods are gaps
    gap_tolerance_samples: int = Field(default=IngestConfig.gap_tolerance_samples, ge=1)
    # ... unless the stamps come back to the sample grid within this time (ms): arrival jitter, not loss
    jitter_tolerance_ms: float = Field(default=IngestConfig.jitter_tolerance_ms, ge=0)
    # gaps longer than this restart the filter
    reset_after_gap_ms: float = Field(default=IngestConfig.reset_after_gap_ms, ge=0)
    # |sample| above this (uV) is outside the input range: replaced before the filter, its windows rejected
    max_abs_uv: float = Field(default=IngestConfig.max_abs_uv, gt=0)

    # Label-free alignment of each stream to the model's training grid, when the model carries a reference
    alignment: bool = IngestConfig.alignment
    # seconds of signal (rest and a few movements) collected before the shift and gain are estimated
    alignment_warmup_s: float = Field(default=IngestConfig.alignment_warmup_s, gt=0, le=600)
    # map correlation under which an estimate is not applied
    alignment_min_score: float = Field(default=IngestConfig.alignment_min_score, ge=-1.0, le=1.0)

    # Decisions
    vote_k: int = Field(default=5, ge=1)  # majority vote over the last k windows
    confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)  # below: the decision is rejected
    max_batch: int = Field(default=64, ge=1)  # most windows in one inference batch
    # flat/saturated share that rejects
    reject_bad_fraction: float = Field(default=IngestConfig.reject_bad_fraction, ge=0.0, le=1.0)

    # Quality monitor
    # raw history each quality estimate looks at
    quality_window_s: float = Field(default=QualityThresholds.quality_window_s, gt=0)
    # how often quality is re-estimated
    quality_interval_s: float = Field(default=QualityThresholds.quality_interval_s, gt=0)
    # raw standard deviation below this: flat channel
    flat_std_uv: float = Field(default=QualityThresholds.flat_std_uv, ge=0)
    # |raw| at or above this: saturated
    saturation_uv: float = Field(default=QualityThresholds.saturation_uv, gt=0)
    # share of >20 Hz power within +-2 Hz of mains
    powerline_ratio: float = Field(default=QualityThresholds.powerline_ratio, gt=0, le=1)
    # RMS in 1-20 Hz (no EMG there) above which: artifact
    artifact_uv: float = Field(default=QualityThresholds.artifact_uv, gt=0)
    mains_hz: float = Field(default=QualityThresholds.mains_hz, gt=0)  # power-line frequency for the quality monitor

    # Outputs
    inference_queue_size: int = Field(default=256, ge=1)  # windows waiting for inference before the oldest are shed
    ws_queue_size: int = Field(default=256, ge=1)  # messages held per WebSocket client before dropping oldest
    marker_outlet: bool = True  # publish decisions as an LSL marker stream
    marker_stream_name: str = "RoHDE-Decisions"  # name of that marker stream
    cue_stream_name: str = "RoHDE-Cues"  # calibration cues (`rohde record`) by this name are forwarded on /ws

    lsl_config: Path = Field(default_factory=default_lsl_config)  # LSLAPICFG used when none is set

    @field_validator("stream_channels")
    @classmethod
    def _check_channel_selection(cls, value: str | None) -> str | None:
        if value is not None:
            parse_selection(value)  # ConfigError (a ValueError) names what is wrong with it
        return value

    @field_validator("providers", "allowed_origins", "stream_type", mode="before")
    @classmethod
    def _split_comma_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @property
    def stream_query(self) -> dict[str, str]:
        """The LSL properties a stream must have to be served."""
        query = {"name": self.stream_name, "type": ",".join(self.stream_type or ()),
                 "source_id": self.stream_source_id}
        return {k: v for k, v in query.items() if v}

    def ingest_config(self) -> IngestConfig:
        """The ingestion and quality knobs, mapped by their shared field names (same name, same unit)."""
        quality = QualityThresholds(**self.model_dump(include={f.name for f in fields(QualityThresholds)}))
        shared = self.model_dump(include={f.name for f in fields(IngestConfig)} - {"quality"})
        return IngestConfig(**shared, quality=quality)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist; give an existing JSON or TOML file.")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a table of settings.")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServerSettings:
    """Build settings from defaults, a config file, `ROHDE_*` variables and `overrides` (None = not given)."""
    config_file = config_file or os.environ.get(ENV_PREFIX + "CONFIG")
    values: dict[str, Any] = {}
    if config_file:
        file_values = _read_config_file(Path(config_file))
        # The environment beats the file: keep only file values no variable overrides.
        values.update({k: v for k, v in file_values.items() if ENV_PREFIX + k.upper() not in os.environ})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServerSettings(**values)
    except ValidationError as exc:
        raise ConfigError(f"Invalid server settings: {exc}") from exc
