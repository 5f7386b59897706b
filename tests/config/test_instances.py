"""Server instances: finding and typing them, defaults, directives and {type, name} refs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gymfleet.config import (
    ServerInstance,
    ServerInstanceConfig,
    ServerRef,
    find_server_dir,
    find_server_refs,
    get_instance,
    iter_instances,
    load_config,
    unresolved_refs,
)
from gymfleet.errors import ServerRefNotFoundError


def load_data(data_dir: Path, *files: str, **kw) -> object:
    return load_config([f"+config_paths=[{','.join(files)}]"], roots=[data_dir], **kw)


def test_instances_in_config_order_with_resolved_blocks(data_dir: Path) -> None:
    cfg = load_data(data_dir, "example_single_tool_call.yaml", "openai_model.yaml")
    instances = iter_instances(cfg)
    assert [(i.name, i.server_type, i.impl) for i in instances] == [
        ("example_single_tool_call", "resources_servers", "example_single_tool_call"),
        ("example_single_tool_call_simple_agent", "responses_api_agents", "simple_agent"),
        ("policy_model", "responses_api_models", "openai_model"),
    ]
    model = instances[2]
    assert model.block["openai_base_url"] == "http://127.0.0.1:8000/v1"  # from env.yaml, resolved
    assert model.block["openai_model"] == "test-model"
    assert model.entrypoint == "app.py"
    assert model.host == "127.0.0.1"
    assert model.port is None  # no port is ever picked here
    assert isinstance(model.config, ServerInstanceConfig)
    # the returned config itself keeps interpolations for children to resolve
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert (
        raw["policy_model"]["responses_api_models"]["openai_model"]["openai_api_key"] == "${policy_api_key}"
    )


def test_reserved_scalar_and_plain_mapping_keys_are_not_servers() -> None:
    cfg = {
        "head_server": {"host": "h", "port": 1},
        "config_paths": ["a.yaml"],
        "default_host": "0.0.0.0",
        "dry_run": False,
        "my_knob": 3,
        "responses_create_params": {"temperature": 0.5, "extra": {"x": 1}},
        "srv": {
            "responses_api_models": {"m": {"entrypoint": "app.py", "port": "${oc.env:GF_TEST_PORT,9001}"}}
        },
    }
    (inst,) = iter_instances(cfg)
    assert inst == ServerInstance(
        "srv", "responses_api_models", "m", {"entrypoint": "app.py", "port": "9001"}
    )
    assert inst.port == 9001
    assert inst.key_path == "srv.responses_api_models.m"


def test_defaults_are_written_and_no_port_is_chosen(tmp_path: Path, write) -> None:
    write(
        "a.yaml",
        "m:\n  responses_api_models:\n    impl: {entrypoint: app.py}\n"
        "n:\n  responses_api_models:\n    impl: {entrypoint: app.py, host: 10.1.2.3, port: 0}\n",
    )
    cfg = load_config(["+config_paths=[a.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert OmegaConf.to_container(cfg.head_server) == {"host": "127.0.0.1", "port": 11000}
    assert cfg.dry_run is False
    m, n = iter_instances(cfg)
    assert m.block == {"entrypoint": "app.py", "host": "127.0.0.1"}
    assert (n.host, n.port) == ("10.1.2.3", 0)
    assert set(cfg) == {"m", "n", "config_paths", "head_server", "dry_run"}


def test_default_host_fills_server_hosts_and_head_server(tmp_path: Path) -> None:
    cfg = load_config(
        [
            "+default_host=10.0.0.5",
            "+m.responses_api_models.impl.entrypoint=app.py",
            "++m.responses_api_models.impl.host=",
        ],
        roots=[tmp_path],
        load_env_yaml=False,
    )
    assert iter_instances(cfg)[0].host == "10.0.0.5"
    assert cfg.head_server.host == "10.0.0.5"


def test_partial_head_server_gets_the_missing_field(tmp_path: Path) -> None:
    only_host = load_config(["++head_server.host=10.0.0.9"], roots=[tmp_path], load_env_yaml=False)
    only_port = load_config(["++head_server.port=12000"], roots=[tmp_path], load_env_yaml=False)
    assert OmegaConf.to_container(only_host.head_server) == {"host": "10.0.0.9", "port": 11000}
    assert OmegaConf.to_container(only_port.head_server) == {"port": 12000, "host": "127.0.0.1"}


def test_explicit_dry_run_is_kept(tmp_path: Path) -> None:
    assert load_config(["+dry_run=true"], roots=[tmp_path], load_env_yaml=False).dry_run is True


def test_find_server_refs_recurses_into_dicts_and_lists() -> None:
    block = {
        "resources_server": {"type": "resources_servers", "name": "r"},
        "judges": [
            {"type": "responses_api_models", "name": "j1"},
            {"cfg": {"type": "responses_api_models", "name": "j2"}},
        ],
        "not_a_ref": {"type": "resources_servers", "name": "r", "extra": 1},
        "dataset": {"type": "train", "name": "d"},
    }
    assert find_server_refs(block) == [
        ServerRef(type="resources_servers", name="r"),
        ServerRef(type="responses_api_models", name="j1"),
        ServerRef(type="responses_api_models", name="j2"),
    ]


def test_tutorial_coordinator_config_loads_with_a_warning(data_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gymfleet.config"):
        cfg = load_data(data_dir, "coordinator-config.yaml", load_env_yaml=False)
    assert unresolved_refs(cfg) == [
        ("example_agent", ServerRef(type="responses_api_models", name="policy_model"))
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "'policy_model'" in w and "example_agent.responses_api_agents.simple_agent.model_server" in w
        for w in warnings
    )
    assert OmegaConf.to_container(cfg.head_server) == {"host": "192.168.1.100", "port": 11000}
    agent = get_instance(cfg, "example_agent")
    assert (agent.host, agent.port) == ("192.168.1.100", 8081)
    assert agent.config.datasets is not None and agent.config.datasets[0].type == "train"


def test_tutorial_coordinator_config_fails_in_strict_mode(data_dir: Path) -> None:
    with pytest.raises(ServerRefNotFoundError, match="'policy_model'"):
        load_data(data_dir, "coordinator-config.yaml", load_env_yaml=False, strict_refs=True)


def test_coordinator_plus_worker_resolves_every_ref(data_dir: Path) -> None:
    cfg = load_data(
        data_dir, "coordinator-config.yaml", "worker-config.yaml", load_env_yaml=False, strict_refs=True
    )
    assert unresolved_refs(cfg) == []
    assert [i.name for i in iter_instances(cfg)] == ["example_resources", "example_agent", "policy_model"]


def test_lenient_warning_suggests_close_names(tmp_path: Path, write, caplog) -> None:
    write(
        "a.yaml",
        "policy_model:\n  responses_api_models:\n    m: {entrypoint: app.py}\n"
        "agent:\n  responses_api_agents:\n    a:\n      entrypoint: app.py\n"
        "      model_server: {type: responses_api_models, name: policy_modle}\n",
    )
    with caplog.at_level(logging.WARNING, logger="gymfleet.config"):
        load_config(["+config_paths=[a.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert any("Did you mean 'policy_model'?" in r.getMessage() for r in caplog.records)


def test_directives_inherit_copy_and_delete(tmp_path: Path, write) -> None:
    write(
        "a.yaml",
        """
        base_model:
          responses_api_models:
            openai_model: {entrypoint: app.py, openai_model: base, temperature: 1.0}
        shared_params: {top_p: 0.9, seed: 1}
        policy_model: ${inherit_from:base_model}
        judge_model:
          _copy: policy_model
          _delete_key: "unused"
          unused: 1
        params_a: ${copy:shared_params}
        params_b:
          _inherit_from: shared_params
          seed: 2
          _delete_key: top_p
        """,
    )
    cfg = load_config(["+config_paths=[a.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert "base_model" not in cfg and "shared_params" not in cfg
    assert OmegaConf.to_container(cfg.params_a) == {"top_p": 0.9, "seed": 1}
    assert OmegaConf.to_container(cfg.params_b) == {"seed": 2}
    names = [(i.name, i.block["openai_model"]) for i in iter_instances(cfg)]
    assert names == [("policy_model", "base"), ("judge_model", "base")]


def test_find_server_dir_first_root_wins(tmp_path: Path) -> None:
    for root in ("r1", "r2"):
        (tmp_path / root / "resources_servers" / "impl").mkdir(parents=True)
    (tmp_path / "r2" / "resources_servers" / "only2").mkdir(parents=True)
    roots = [tmp_path / "r1", tmp_path / "r2"]
    assert (
        find_server_dir("resources_servers", "impl", roots) == tmp_path / "r1" / "resources_servers" / "impl"
    )
    assert (
        find_server_dir("resources_servers", "only2", roots)
        == tmp_path / "r2" / "resources_servers" / "only2"
    )


def test_find_server_dir_default_roots_use_cwd(clean_env: Path) -> None:
    (clean_env / "responses_api_agents" / "simple_agent").mkdir(parents=True)
    assert (
        find_server_dir("responses_api_agents", "simple_agent")
        == clean_env / "responses_api_agents" / "simple_agent"
    )
