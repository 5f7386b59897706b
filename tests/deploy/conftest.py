"""Shared fixtures: a fleet config with secrets of every kind, loaded by the real config loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gymfleet.config import load_config
from tests.fleet_helpers import EXAMPLE_CONFIG, REPO, SCRIPTED_CONFIG

EXAMPLE_FILES = [str(REPO / EXAMPLE_CONFIG), str(REPO / SCRIPTED_CONFIG)]
# Values that must never appear in a generated file.
SECRET_VALUES = ("sk-env-yaml-key-123", "sk-inline-key-456", "hunter2-judge-password")


@pytest.fixture
def secret_config(tmp_path: Path) -> tuple[object, dict]:
    """A model whose key comes from env.yaml, a judge with an inline password, plus the example."""
    env_yaml = {"policy_api_key": SECRET_VALUES[0], "policy_base_url": "http://127.0.0.1:9/v1"}
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env_yaml))
    extra = {
        "judge_model": {
            "responses_api_models": {
                "openai_model": {
                    "entrypoint": "app.py",
                    "openai_base_url": "${policy_base_url}",
                    "openai_api_key": SECRET_VALUES[1],
                    "openai_model": "judge",
                    "extra_auth": {"password": SECRET_VALUES[2]},
                }
            }
        },
        "policy_model": {
            "responses_api_models": {
                "scripted_model": {
                    "entrypoint": "app.py",
                    "model": "scripted",
                    "api_key": "${policy_api_key}",
                }
            }
        },
    }
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(extra))
    cfg = load_config([f"+config_paths=[{EXAMPLE_FILES[0]},{path}]"], env_yaml_path=tmp_path / "env.yaml")
    return cfg, env_yaml
