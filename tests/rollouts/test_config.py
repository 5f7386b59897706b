"""CollectionConfig: NeMo Gym key names, defaults and validation."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gymfleet.errors import ConfigError
from gymfleet.rollouts import CollectionConfig


def test_from_mapping_accepts_nemo_gym_keys_and_ignores_unknown_ones() -> None:
    cfg = OmegaConf.create(
        {
            "agent_name": "my_agent",
            "input_jsonl_fpath": "in.jsonl",
            "output_jsonl_fpath": "out.jsonl",
            "limit": 5,
            "num_repeats": {"my_agent": 4, "_default": 1},
            "num_samples_in_parallel": None,
            "responses_create_params": {"temperature": 0.5},
            "resume_from_cache": "true",
            "head_server": {"host": "127.0.0.1", "port": 11000},
            "upload_rollouts": True,
        }
    )
    config = CollectionConfig.from_mapping(cfg)  # type: ignore[arg-type]
    assert config.agent_name == "my_agent"
    assert config.limit == 5
    assert config.num_repeats == {"my_agent": 4, "_default": 1}
    assert config.num_samples_in_parallel == 64  # NeMo Gym's "unbounded" becomes the bounded default
    assert config.responses_create_params == {"temperature": 0.5}
    assert config.resume_from_cache is True
    assert config.max_attempts == 3 and config.rollout_timeout_s == 1800 and config.max_failure_rate == 0.5
    assert config.repeats_for("my_agent") == 4 and config.repeats_for("x") == 1


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"input_jsonl_fpath": ""}, "input_jsonl_fpath"),
        ({"num_repeats": 0}, "num_repeats"),
        ({"num_repeats": {"a": 0}}, "num_repeats"),
        ({"num_samples_in_parallel": 0}, "num_samples_in_parallel"),
        ({"max_failure_rate": 1.5}, "max_failure_rate"),
        ({"shard_index": 2, "num_shards": 2}, "shard_index"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_invalid_values_name_the_key(overrides: dict[str, object], key: str) -> None:
    values = {"agent_name": "a", "input_jsonl_fpath": "in.jsonl", "output_jsonl_fpath": "out.jsonl"}
    values.update(overrides)
    with pytest.raises(ConfigError, match=key) as info:
        CollectionConfig.from_mapping(values)
    assert info.value.key == key


def test_missing_output_is_reported() -> None:
    with pytest.raises(ConfigError, match="output_jsonl_fpath"):
        CollectionConfig.from_mapping({"input_jsonl_fpath": "in.jsonl"})
