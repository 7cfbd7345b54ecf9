"""Server settings: precedence of CLI, environment and file, and one source of ingestion defaults."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from rohde.core.errors import ConfigError
from rohde.core.quality_monitor import QualityThresholds
from rohde.server.ingest_config import IngestConfig
from rohde.server.settings import ServerSettings, load_settings

pytestmark = pytest.mark.timeout(60)


def test_settings_precedence(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "server.toml"
    config.write_text('vote_k = 7\nport = 9100\nstream_name = "from-file"\n')
    monkeypatch.setenv("ROHDE_PORT", "9200")
    settings = load_settings(config, stream_name="from-cli")
    assert (settings.vote_k, settings.port, settings.stream_name) == (7, 9200, "from-cli")
    assert settings.stream_query == {"name": "from-cli", "type": "EMG,ExG,EEG"}
    monkeypatch.setenv("ROHDE_PROVIDERS", "CPUExecutionProvider")
    assert load_settings().providers == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="vote_k"):
        load_settings(vote_k=0)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.json")


def test_every_ingestion_default_is_defined_once() -> None:
    # Each ingestion and quality knob the settings expose has the dataclass's default, under the same name.
    shared = {
        IngestConfig: {"inlet_buffer_s", "pull_interval_ms", "stale_after_s", "gap_tolerance_samples",
                       "jitter_tolerance_ms", "reset_after_gap_ms", "max_abs_uv", "reject_bad_fraction", "lsl_config",
                       "alignment", "alignment_warmup_s", "alignment_min_score"},
        QualityThresholds: {"quality_window_s", "quality_interval_s", "flat_std_uv", "saturation_uv",
                            "powerline_ratio", "artifact_uv", "mains_hz"},
    }
    for config_type, names in shared.items():
        assert {f.name for f in fields(config_type)} & set(ServerSettings.model_fields) == names
        for f in fields(config_type):
            if f.name in names and f.default is not MISSING and f.name != "lsl_config":
                assert ServerSettings.model_fields[f.name].default == f.default, f.name
    # Settings left at their defaults give the dataclasses' defaults; only the LSL config is the server's own.
    settings = ServerSettings()
    assert settings.ingest_config() == IngestConfig(lsl_config=settings.lsl_config)


def test_ingestion_settings_reach_the_configs_by_name() -> None:
    settings = ServerSettings(inlet_buffer_s=3, pull_interval_ms=5.0, stale_after_s=2.5, gap_tolerance_samples=7,
                              jitter_tolerance_ms=20.0, reset_after_gap_ms=40.0, reject_bad_fraction=0.25,
                              quality_window_s=0.75, quality_interval_s=0.5, flat_std_uv=1.5, saturation_uv=5000.0,
                              powerline_ratio=0.6, artifact_uv=80.0, mains_hz=60.0)
    config = settings.ingest_config()
    assert (config.inlet_buffer_s, config.pull_interval_ms, config.stale_after_s, config.gap_tolerance_samples,
            config.jitter_tolerance_ms, config.reset_after_gap_ms,
            config.reject_bad_fraction) == (3, 5.0, 2.5, 7, 20.0, 40.0, 0.25)
    assert config.lsl_config == settings.lsl_config
    assert config.quality == QualityThresholds(quality_window_s=0.75, quality_interval_s=0.5, flat_std_uv=1.5,
                                               saturation_uv=5000.0, powerline_ratio=0.6, artifact_uv=80.0,
                                               mains_hz=60.0)
