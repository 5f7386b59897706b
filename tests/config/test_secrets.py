"""Secrets never show up when a config is dumped with redact=True."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from gymfleet.config import is_secret_key, load_config, redact_secrets, to_yaml


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "openai_api_key",
        "OPENAI_API_KEY",
        "apiKey",
        "apikey",
        "x-api-key",
        "hf_token",
        "access_token",
        "client_secret",
        "secret",
        "password",
        "DB_PASSWORD",
        "passwd",
        "private_key",
        "privateKey",
        "credential",
        "credentials",
        "aws_access_key",
        "Authorization",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "max_output_tokens",
        "tokenizer",
        "host",
        "port",
        "keyboard",
        "monkey",
        "name",
        "key_metrics",
    ],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_is_deep_and_leaves_the_input_alone() -> None:
    original = {
        "policy_api_key": "sk-abc",
        "m": {"openai": {"openai_api_key": "sk-abc", "openai_model": "gpt"}},
        "headers": [{"Authorization": "Bearer sk-abc"}],
        "credentials": {"user": "me", "pass": "pw"},
        "token_id_capture": True,
        "hf_token": "",
        "max_tokens": 100,
    }
    out = redact_secrets(original)
    assert out == {
        "policy_api_key": "****",
        "m": {"openai": {"openai_api_key": "****", "openai_model": "gpt"}},
        "headers": [{"Authorization": "****"}],
        "credentials": {"user": "****", "pass": "****"},
        "token_id_capture": True,
        "hf_token": "",
        "max_tokens": 100,
    }
    assert original["policy_api_key"] == "sk-abc"
    assert original["m"]["openai"]["openai_api_key"] == "sk-abc"


def test_extra_secret_values_are_masked_inside_any_string() -> None:
    out = redact_secrets(
        {"url": "https://h/v1?key=sk-SECRET-1", "n": 3}, extra_secret_values=["sk-SECRET-1", "ab"]
    )
    assert out == {"url": "https://h/v1?key=****", "n": 3}


def test_redact_accepts_omegaconf_and_keeps_interpolations_unresolved() -> None:
    cfg = OmegaConf.create(
        {"policy_api_key": "sk-x", "m": {"openai_api_key": "${policy_api_key}", "url": "${u}"}}
    )
    out = redact_secrets(cfg)
    assert out == {"policy_api_key": "****", "m": {"openai_api_key": "****", "url": "${u}"}}


def test_to_yaml_redacts_resolved_and_unresolved(tmp_path: Path, data_dir: Path) -> None:
    cfg = load_config(
        [
            "+config_paths=[example_single_tool_call.yaml,openai_model.yaml]",
            "+leak='http://x/?k=${policy_api_key}'",
        ],
        roots=[data_dir],
    )
    secret = "sk-test-0123456789"  # pragma: allowlist secret
    plain = to_yaml(cfg)
    assert "${policy_api_key}" in plain and secret in plain  # no redaction unless asked
    for resolve in (False, True):
        text = to_yaml(cfg, resolve=resolve, redact=True)
        assert secret not in text
        data = yaml.safe_load(text)
        assert data["policy_api_key"] == "****"
        assert data["policy_model"]["responses_api_models"]["openai_model"]["openai_api_key"] == "****"
    resolved = yaml.safe_load(to_yaml(cfg, resolve=True, redact=True))
    assert resolved["leak"] == "http://x/?k=****"
    assert resolved["policy_model"]["responses_api_models"]["openai_model"]["openai_model"] == "test-model"


def test_to_yaml_keeps_config_order_and_round_trips() -> None:
    data = {"z": 1, "a": {"y": [1, 2], "b": "${z}"}}
    text = to_yaml(data)
    assert text.index("z:") < text.index("a:")
    assert yaml.safe_load(text) == data
    assert yaml.safe_load(to_yaml(data, resolve=True)) == {"z": 1, "a": {"y": [1, 2], "b": 1}}
