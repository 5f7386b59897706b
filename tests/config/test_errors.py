"""Every error path of the config package: the right type, and a message naming where and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gymfleet.config import (
    DirectivePathNotFoundError,
    ServerRefTypeMismatchError,
    find_server_dir,
    get_instance,
    load_child_config,
    load_config,
)
from gymfleet.errors import (
    ConfigError,
    ConfigFileNotFoundError,
    ConfigInterpolationError,
    ConfigMissingValuesError,
    InvalidServerConfigError,
    MalformedConfigError,
    NoServerInstancesError,
    OverrideError,
    ServerRefNotFoundError,
)

RES = "x:\n  resources_servers:\n    impl:\n      entrypoint: app.py\n      domain: agent\n"


def load(tmp_path: Path, *files: str, extra: tuple[str, ...] = (), **kw):
    return load_config(
        [f"+config_paths=[{','.join(files)}]", *extra] if files else list(extra),
        roots=[tmp_path],
        load_env_yaml=False,
        **kw,
    )


# ------------------------------------------------------------------------------------- overrides
def test_unparsable_override(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        load(tmp_path, extra=("+a=[1,",))
    assert "'+a=[1,'" in str(err.value) and "+key=value" in str(err.value)


def test_override_adding_a_key_twice(tmp_path: Path) -> None:
    with pytest.raises(OverrideError, match=r"'x'.*\+\+x="):
        load(tmp_path, extra=("+x=1", "+x=2"))


def test_deleting_an_absent_key(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        load(tmp_path, extra=("+a.b=1", "~a.c"))
    assert "'a.c'" in str(err.value) and err.value.key == "a.c"


# ------------------------------------------------------------------------------------- files
def test_missing_config_file_lists_every_location(tmp_path: Path) -> None:
    roots = [tmp_path / "r1", tmp_path / "r2"]
    with pytest.raises(ConfigFileNotFoundError) as err:
        load_config(["+config_paths=[nope.yaml]"], roots=roots, load_env_yaml=False)
    message = str(err.value)
    assert str(tmp_path / "r1" / "nope.yaml") in message
    assert str(tmp_path / "r2" / "nope.yaml") in message
    assert "GYMFLEET_EXTRA_ROOTS" in message


def test_missing_nested_include_names_the_including_file(tmp_path: Path, write) -> None:
    write("a.yaml", "config_paths: [gone.yaml]\n")
    with pytest.raises(ConfigFileNotFoundError, match=r"'gone.yaml' \(included by 'a.yaml'\)"):
        load(tmp_path, "a.yaml")


def test_missing_explicit_env_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFoundError, match="env_yaml_path"):
        load_config([], roots=[tmp_path], env_yaml_path=tmp_path / "missing.yaml")


def test_malformed_yaml_in_config_file_gives_line_and_column(tmp_path: Path, write) -> None:
    path = write("bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(MalformedConfigError) as err:
        load(tmp_path, "bad.yaml")
    assert str(err.value).startswith(f"Malformed YAML in '{path}' at line ")
    assert "column" in str(err.value)


def test_malformed_yaml_in_env_yaml(tmp_path: Path, write) -> None:
    path = write("env.yaml", "policy_api_key: 'unterminated\n")
    with pytest.raises(MalformedConfigError, match=rf"Malformed YAML in '{path}' at line \d+, column \d+"):
        load_config([], roots=[tmp_path])


def test_malformed_yaml_in_config_dict_env_var() -> None:
    env = {"NEMO_GYM_CONFIG_DICT": "a: [1\n"}
    with pytest.raises(MalformedConfigError, match=r"Malformed YAML in '\$NEMO_GYM_CONFIG_DICT' at line"):
        load_child_config(env)


def test_duplicate_yaml_key(tmp_path: Path, write) -> None:
    write("dup.yaml", "a: 1\na: 2\n")
    with pytest.raises(MalformedConfigError, match="duplicate key 'a'"):
        load(tmp_path, "dup.yaml")


def test_top_level_not_a_mapping(tmp_path: Path, write) -> None:
    path = write("list.yaml", "- a\n- b\n")
    with pytest.raises(MalformedConfigError) as err:
        load(tmp_path, "list.yaml")
    assert str(path) in str(err.value) and "mapping" in str(err.value)


def test_config_paths_of_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(MalformedConfigError, match=r"config_paths must be a list.*\+config_paths=\[a.yaml"):
        load(tmp_path, extra=("+config_paths={a: 1}",))


def test_nested_config_paths_of_wrong_shape(tmp_path: Path, write) -> None:
    path = write("a.yaml", "config_paths: {x: 1}\n")
    with pytest.raises(MalformedConfigError) as err:
        load(tmp_path, "a.yaml")
    assert str(path) in str(err.value)


def test_unresolvable_config_paths_interpolation(tmp_path: Path) -> None:
    with pytest.raises(ConfigInterpolationError, match="config_paths"):
        load(tmp_path, extra=("+config_paths=${not_defined}",))


# ------------------------------------------------------------------------------------- directives
def test_inherit_from_unknown_path(tmp_path: Path, write) -> None:
    write("a.yaml", "base: {x: 1}\nchild: ${inherit_from:base.y}\n")
    with pytest.raises(DirectivePathNotFoundError) as err:
        load(tmp_path, "a.yaml")
    assert isinstance(err.value, ConfigInterpolationError)
    assert "'child'" in str(err.value) and "'base.y'" in str(err.value)


def test_property_form_source_must_be_a_mapping(tmp_path: Path, write) -> None:
    write("a.yaml", "base: 3\nchild: {_copy: base, extra: 1}\n")
    with pytest.raises(MalformedConfigError, match=r"\$\{copy:base\}"):
        load(tmp_path, "a.yaml")


def test_directive_inside_a_longer_string(tmp_path: Path, write) -> None:
    write("a.yaml", "base: 3\nchild: 'x ${copy:base}'\n")
    with pytest.raises(MalformedConfigError, match="'child'.*whole value"):
        load(tmp_path, "a.yaml")


def test_directive_cycle(tmp_path: Path, write) -> None:
    write("a.yaml", "a: ${copy:b}\nb: ${copy:a}\n")
    with pytest.raises(MalformedConfigError, match="cycle"):
        load(tmp_path, "a.yaml")


def test_bad_delete_key_spec(tmp_path: Path, write) -> None:
    write("a.yaml", "a: {x: 1, _delete_key: {y: 1}}\n")
    with pytest.raises(MalformedConfigError, match=r"a\._delete_key.*comma-separated"):
        load(tmp_path, "a.yaml")


# ------------------------------------------------------------------------------------- values
def test_all_missing_values_reported_at_once(tmp_path: Path, write) -> None:
    write("a.yaml", "a: ???\nb:\n  c: ???\n  d:\n  - 1\n  - ???\nok: 1\n")
    with pytest.raises(ConfigMissingValuesError) as err:
        load(tmp_path, "a.yaml")
    assert err.value.keys == ["a", "b.c", "b.d[1]"]
    message = str(err.value)
    assert "++a=<value>" in message and "++b.c=<value>" in message


def test_interpolation_to_unset_key_names_key_and_reference(tmp_path: Path, write) -> None:
    write("a.yaml", "m:\n  url: ${policy_base_url}\n  other: ${also_missing}/v1\n")
    with pytest.raises(ConfigInterpolationError) as err:
        load(tmp_path, "a.yaml")
    message = str(err.value)
    assert "'m.url': references 'policy_base_url'" in message
    assert "'m.other': references 'also_missing'" in message
    assert "env.yaml" in message


def test_interpolation_to_unset_environment_variable(tmp_path: Path, write, monkeypatch) -> None:
    monkeypatch.delenv("GYMFLEET_TEST_NOT_SET", raising=False)
    write("a.yaml", "key: ${oc.env:GYMFLEET_TEST_NOT_SET}\n")
    with pytest.raises(
        ConfigInterpolationError, match=r"'key': environment variable 'GYMFLEET_TEST_NOT_SET'"
    ):
        load(tmp_path, "a.yaml")


# ------------------------------------------------------------------------------------- servers
def test_almost_server_with_misspelled_type(tmp_path: Path, write) -> None:
    write("a.yaml", "x:\n  resource_servers:\n    impl:\n      entrypoint: app.py\n")
    with pytest.raises(InvalidServerConfigError) as err:
        load(tmp_path, "a.yaml")
    assert "Did you mean 'resources_servers'?" in str(err.value)
    assert err.value.server_name == "x" and err.value.key == "x.resource_servers.impl"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("x:\n  simple_agent:\n    entrypoint: app.py\n", "x.simple_agent.entrypoint"),
        ("x:\n  entrypoint: app.py\n", "x.entrypoint"),
    ],
)
def test_almost_server_missing_levels(tmp_path: Path, write, text: str, where: str) -> None:
    write("a.yaml", text)
    with pytest.raises(InvalidServerConfigError) as err:
        load(tmp_path, "a.yaml")
    assert f"'{where}'" in str(err.value) and "<name>: <server_type>: <impl>:" in str(err.value)


def test_almost_server_with_two_impls(tmp_path: Path, write) -> None:
    write(
        "a.yaml",
        "x:\n  resources_servers:\n    one: {entrypoint: a.py, domain: agent}\n"
        "    two: {entrypoint: b.py, domain: agent}\n",
    )
    with pytest.raises(InvalidServerConfigError, match=r"'x\.resources_servers' must hold exactly one impl"):
        load(tmp_path, "a.yaml")


def test_almost_server_without_entrypoint(tmp_path: Path, write) -> None:
    write("a.yaml", "x:\n  responses_api_agents:\n    simple_agent:\n      port: 1\n")
    with pytest.raises(
        InvalidServerConfigError, match=r"'entrypoint'.*x\.responses_api_agents\.simple_agent"
    ):
        load(tmp_path, "a.yaml")


def test_almost_server_with_extra_top_level_keys(tmp_path: Path, write) -> None:
    write("a.yaml", RES.replace("x:\n", "x:\n  stray: 1\n", 1))
    with pytest.raises(InvalidServerConfigError, match="exactly one server-type key"):
        load(tmp_path, "a.yaml")


def test_resources_server_needs_domain(tmp_path: Path, write) -> None:
    write("a.yaml", RES.replace("      domain: agent\n", ""))
    with pytest.raises(InvalidServerConfigError) as err:
        load(tmp_path, "a.yaml")
    message = str(err.value)
    assert "resources server 'x' needs a 'domain' (one of: math, coding, agent" in message
    assert err.value.key == "x.resources_servers.impl.domain"


def test_bad_field_values_all_reported(tmp_path: Path, write) -> None:
    write(
        "a.yaml",
        "x:\n  resources_servers:\n    impl:\n      entrypoint: /abs/app.py\n      domain: cooking\n"
        "      port: 70000\n      datasets:\n"
        "      - {name: d, type: train, jsonl_fpath: d.jsonl, num_repeats: 0}\n",
    )
    with pytest.raises(InvalidServerConfigError) as err:
        load(tmp_path, "a.yaml")
    message = str(err.value)
    assert "x.resources_servers.impl.port" in message and "0-65535" in message
    assert "x.resources_servers.impl.domain" in message and "cooking" in message
    assert "x.resources_servers.impl.datasets[0].num_repeats" in message
    assert "absolute path '/abs/app.py'" in message


def test_invalid_head_server(tmp_path: Path) -> None:
    with pytest.raises(MalformedConfigError, match=r"head_server\.port.*'abc'"):
        load(tmp_path, extra=("++head_server.port=abc",))


def test_unknown_ref_in_strict_mode_suggests_names(tmp_path: Path, write) -> None:
    write(
        "a.yaml",
        RES + "agent:\n  responses_api_agents:\n    simple_agent:\n      entrypoint: app.py\n"
        "      resources_server: {type: resources_servers, name: y}\n"
        "      model_server: {type: responses_api_models, name: policy_model}\n"
        "policy_modl:\n  responses_api_models:\n    openai_model: {entrypoint: app.py}\n",
    )
    with pytest.raises(ServerRefNotFoundError) as err:
        load(
            tmp_path,
            "a.yaml",
            extra=("++agent.responses_api_agents.simple_agent.resources_server.name=x",),
            strict_refs=True,
        )
    message = str(err.value)
    assert "'agent'" in message and "agent.responses_api_agents.simple_agent.model_server" in message
    assert "Did you mean 'policy_modl'?" in message
    assert err.value.suggestions == ["policy_modl"] and err.value.server_name == "policy_model"


@pytest.mark.parametrize("strict", [False, True])
def test_ref_with_wrong_type_is_an_error_in_both_modes(tmp_path: Path, write, strict: bool) -> None:
    write(
        "a.yaml",
        RES + "agent:\n  responses_api_agents:\n    simple_agent:\n      entrypoint: app.py\n"
        "      model_server: {type: responses_api_models, name: x}\n",
    )
    with pytest.raises(ServerRefTypeMismatchError, match="'x' is a resources_servers instance"):
        load(tmp_path, "a.yaml", strict_refs=strict)


def test_get_instance_unknown_name_suggests(tmp_path: Path, write) -> None:
    write("a.yaml", RES)
    cfg = load(tmp_path, "a.yaml")
    with pytest.raises(ServerRefNotFoundError, match="Did you mean 'x'"):
        get_instance(cfg, "x_")


def test_find_server_dir_missing_lists_locations(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFoundError) as err:
        find_server_dir("resources_servers", "nope", roots=[tmp_path / "a", tmp_path / "b"])
    assert str(tmp_path / "a" / "resources_servers" / "nope") in str(err.value)
    assert str(tmp_path / "b" / "resources_servers" / "nope") in str(err.value)


def test_find_server_dir_unknown_type() -> None:
    with pytest.raises(InvalidServerConfigError, match="resources_servers, responses_api_agents"):
        find_server_dir("resource_servers", "x", roots=[])


# ------------------------------------------------------------------------------------- child
def test_child_without_any_config() -> None:
    with pytest.raises(ConfigError, match="GYMFLEET_CONFIG_FILE.*NEMO_GYM_CONFIG_DICT"):
        load_child_config({})


def test_child_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFoundError, match="GYMFLEET_CONFIG_FILE"):
        load_child_config({"GYMFLEET_CONFIG_FILE": str(tmp_path / "gone.yaml")})


def test_child_config_without_servers() -> None:
    with pytest.raises(NoServerInstancesError, match="NEMO_GYM_CONFIG_PATH"):
        load_child_config({"NEMO_GYM_CONFIG_DICT": "head_server: {host: 127.0.0.1, port: 11000}\n"})


def test_child_config_not_a_mapping() -> None:
    with pytest.raises(MalformedConfigError, match=r"NEMO_GYM_CONFIG_DICT.*mapping"):
        load_child_config({"NEMO_GYM_CONFIG_DICT": "[1, 2]"})
