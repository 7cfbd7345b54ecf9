from __future__ import annotations

import json
from pathlib import Path

import pytest

from rohde.core.errors import ConfigError
from rohde.training.config import PipelineConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["tiny.json", "default.json", "flexemg.json"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert isinstance(config, PipelineConfig)
    assert PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_defaults_without_file() -> None:
    assert load_config(None) == PipelineConfig()


def test_unknown_keys_are_rejected_with_their_names(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"trainer": {"epochs": 3}}))
    with pytest.raises(ConfigError, match="epochs"):
        load_config(path)
    path.write_text(json.dumps({"trainr": {}}))
    with pytest.raises(ConfigError, match="trainr"):
        load_config(path)


def test_invalid_values_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="synthetic_fraction"):
        PipelineConfig.from_dict({"augment": {"synthetic_fraction": 1.5}})
    with pytest.raises(ConfigError, match="train_dirs"):
        PipelineConfig.from_dict({"split": {"mode": "folders"}})
    # Quality masking (on by default) comes with the generated twins, so it needs a fraction above 0.
    assert PipelineConfig().augment.quality_masking
    with pytest.raises(ConfigError, match="quality_masking"):
        PipelineConfig.from_dict({"augment": {"synthetic_fraction": 0.0}})
    assert not PipelineConfig.from_dict({"augment": {"synthetic_fraction": 0.0, "quality_masking": False}}).augment \
        .quality_masking
    with pytest.raises(ConfigError, match="mask_severity"):
        PipelineConfig.from_dict({"augment": {"mask_severity": [0.4, 0.2]}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
