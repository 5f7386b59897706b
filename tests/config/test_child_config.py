"""A server process reads its config from the environment: file, or YAML/JSON text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gymfleet.config import get_instance, load_child_config, load_config, to_yaml
from gymfleet.errors import ConfigError, ServerRefNotFoundError

# The multi-node tutorial's `docker run -e NEMO_GYM_CONFIG_DICT='...'` value, byte for byte.
TUTORIAL_DOCKER_DICT = """
head_server:
  host: "192.168.1.100"
  port: 11000
example_resources:
  resources_servers:
    example_single_tool_call:
      entrypoint: app.py
      host: "0.0.0.0"
      port: 8080
"""

TWO_SERVERS = {
    "head_server": {"host": "127.0.0.1", "port": 11000},
    "a_server": {"resources_servers": {"impl": {"entrypoint": "app.py", "domain": "agent", "port": 1}}},
    "b_server": {"responses_api_models": {"impl": {"entrypoint": "app.py", "port": 2}}},
}


def test_tutorial_docker_example_without_config_path() -> None:
    cfg, name = load_child_config({"NEMO_GYM_CONFIG_DICT": TUTORIAL_DOCKER_DICT})
    assert name == "example_resources"
    assert cfg.dry_run is False
    assert OmegaConf.to_container(cfg.head_server) == {"host": "192.168.1.100", "port": 11000}
    inst = get_instance(cfg, name)
    assert (inst.server_type, inst.impl) == ("resources_servers", "example_single_tool_call")
    assert (inst.host, inst.port, inst.entrypoint) == ("0.0.0.0", 8080, "app.py")


def test_tutorial_docker_example_with_config_path() -> None:
    env = {"NEMO_GYM_CONFIG_DICT": TUTORIAL_DOCKER_DICT, "NEMO_GYM_CONFIG_PATH": "example_resources"}
    _, name = load_child_config(env)
    assert name == "example_resources"


def test_json_text_works_too() -> None:
    env = {"NEMO_GYM_CONFIG_DICT": json.dumps(TWO_SERVERS), "NEMO_GYM_CONFIG_PATH": "b_server"}
    cfg, name = load_child_config(env)
    assert name == "b_server"
    assert get_instance(cfg, name).port == 2


def test_ambiguous_dict_without_config_path_lists_candidates() -> None:
    with pytest.raises(ConfigError) as err:
        load_child_config({"NEMO_GYM_CONFIG_DICT": json.dumps(TWO_SERVERS)})
    message = str(err.value)
    assert "'a_server'" in message and "'b_server'" in message
    assert "NEMO_GYM_CONFIG_PATH=" in message


def test_unknown_config_path_suggests_close_names() -> None:
    env = {"NEMO_GYM_CONFIG_DICT": json.dumps(TWO_SERVERS), "NEMO_GYM_CONFIG_PATH": "a_servr"}
    with pytest.raises(ServerRefNotFoundError, match="Did you mean 'a_server'"):
        load_child_config(env)


def test_config_file_is_preferred_over_the_dict(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(to_yaml(TWO_SERVERS))
    env = {
        "GYMFLEET_CONFIG_FILE": str(path),
        "NEMO_GYM_CONFIG_DICT": TUTORIAL_DOCKER_DICT,
        "NEMO_GYM_CONFIG_PATH": "a_server",
    }
    cfg, name = load_child_config(env)
    assert name == "a_server"
    assert "example_resources" not in cfg


def test_missing_head_server_and_partial_blocks_get_defaults() -> None:
    text = "only:\n  responses_api_agents:\n    a: {entrypoint: app.py}\n"
    cfg, name = load_child_config({"NEMO_GYM_CONFIG_DICT": text})
    assert name == "only"
    assert OmegaConf.to_container(cfg.head_server) == {"host": "127.0.0.1", "port": 11000}
    assert get_instance(cfg, "only").host == "127.0.0.1"
    partial = "head_server: {host: 10.0.0.1}\n" + text
    cfg, _ = load_child_config({"NEMO_GYM_CONFIG_DICT": partial})
    assert OmegaConf.to_container(cfg.head_server) == {"host": "10.0.0.1", "port": 11000}


def test_child_resolves_its_block_against_the_whole_config(monkeypatch) -> None:
    monkeypatch.setenv("GF_TEST_CHILD_PORT", "9100")
    text = (
        "policy_base_url: http://10.0.0.2:8000/v1\n"
        "m:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        "      openai_base_url: ${policy_base_url}\n      port: ${oc.env:GF_TEST_CHILD_PORT}\n"
    )
    cfg, name = load_child_config({"NEMO_GYM_CONFIG_DICT": text})
    inst = get_instance(cfg, name)
    assert inst.block["openai_base_url"] == "http://10.0.0.2:8000/v1"
    assert inst.port == 9100


def test_launcher_round_trip_in_a_real_subprocess(tmp_path: Path, data_dir: Path) -> None:
    """load_config in the parent -> file -> a real child process that calls load_child_config."""
    cfg = load_config(["+config_paths=[example_single_tool_call.yaml,openai_model.yaml]"], roots=[data_dir])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    script = (
        "import json\n"
        "from gymfleet.config import get_instance, load_child_config\n"
        "cfg, name = load_child_config()\n"
        "inst = get_instance(cfg, name)\n"
        "print(json.dumps({'name': name, 'impl': inst.impl, 'block': inst.block}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEMO_GYM_", "GYMFLEET_"))}
    env.update({"GYMFLEET_CONFIG_FILE": str(path), "NEMO_GYM_CONFIG_PATH": "policy_model"})
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["name"] == "policy_model" and out["impl"] == "openai_model"
    assert out["block"]["openai_api_key"] == "sk-test-0123456789"  # pragma: allowlist secret
    assert out["block"]["host"] == "127.0.0.1"
