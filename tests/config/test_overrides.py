"""CLI overrides: Hydra's grammar, applied as a separate dict merged over the files."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gymfleet.config import load_config
from gymfleet.config._overrides import parse_overrides
from gymfleet.errors import OverrideError


def load(overrides: list[str], tmp_path: Path, **kw: object):
    return load_config(overrides, roots=[tmp_path], load_env_yaml=False, **kw)  # type: ignore[arg-type]


def test_add_nests_dotted_keys_and_types_values(tmp_path: Path) -> None:
    cfg = load(
        [
            "+a.b.c=3",
            "+flag=true",
            "+nothing=null",
            "+ratio=1e-3",
            "+names=[x,y]",
            "+mapping={k: 1, l: [1, 2]}",
            '+quoted="hello world"',
            "+port_str='8080'",
        ],
        tmp_path,
    )
    assert cfg.a.b.c == 3
    assert cfg.flag is True
    assert cfg.nothing is None
    assert cfg.ratio == pytest.approx(0.001)
    assert list(cfg.names) == ["x", "y"]
    assert OmegaConf.to_container(cfg.mapping) == {"k": 1, "l": [1, 2]}
    assert cfg.quoted == "hello world"
    assert cfg.port_str == "8080"


def test_force_add_replaces_and_plain_set_works_on_empty_config(tmp_path: Path) -> None:
    cfg = load(["+x=1", "++x=2", "y.z=5"], tmp_path)
    assert cfg.x == 2
    assert cfg.y.z == 5


def test_dict_values_merge_with_dotted_overrides(tmp_path: Path) -> None:
    cfg = load(["++a.y=2", "++a={x: 1}"], tmp_path)
    assert OmegaConf.to_container(cfg.a) == {"y": 2, "x": 1}


def test_interpolations_are_kept_verbatim_and_resolved_later(tmp_path: Path) -> None:
    cfg = load(
        ["+base=http://h:1", "+url=${base}/v1", "+env_or_default=${oc.env:GYMFLEET_TEST_UNSET,7}"], tmp_path
    )
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["url"] == "${base}/v1"
    assert cfg.url == "http://h:1/v1"
    assert cfg.env_or_default == "7"


def test_add_twice_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        load(["+a.b=1", "+a.b=2"], tmp_path)
    assert "'a.b'" in str(err.value) and "++a.b=" in str(err.value)


def test_delete_removes_a_key_from_the_merged_config(tmp_path: Path, write) -> None:
    write("f.yaml", "keep: 1\ndrop_me: {x: 1}\nnested: {a: 1, b: 2}\n")
    cfg = load(["+config_paths=[f.yaml]", "~drop_me", "~nested.b"], tmp_path)
    assert "drop_me" not in cfg
    assert OmegaConf.to_container(cfg.nested) == {"a": 1}
    assert cfg.keep == 1


def test_delete_of_absent_key_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        load(["~not_there"], tmp_path)
    assert "'not_there'" in str(err.value)


def test_config_paths_accepts_list_comma_string_and_repeats(tmp_path: Path, write) -> None:
    for name in ("a", "b", "c"):
        write(f"{name}.yaml", f"{name}: 1\n")
    as_sweep = load(["+config_paths=a.yaml,b.yaml"], tmp_path)
    as_quoted = load(['+config_paths="a.yaml,b.yaml"'], tmp_path)
    repeated = load(["+config_paths=[a.yaml]", "+config_paths=[b.yaml,c.yaml]"], tmp_path)
    assert list(as_sweep.config_paths) == ["a.yaml", "b.yaml"]
    assert list(as_quoted.config_paths) == ["a.yaml", "b.yaml"]
    assert list(repeated.config_paths) == ["a.yaml", "b.yaml", "c.yaml"]
    assert repeated.a == repeated.b == repeated.c == 1


def test_parse_error_quotes_token_and_expected_form() -> None:
    with pytest.raises(OverrideError) as err:
        parse_overrides(["+ok=1", "a=[unclosed"])
    message = str(err.value)
    assert "'a=[unclosed'" in message
    assert "+key=value" in message


def test_flag_style_token_is_rejected_with_expected_form() -> None:
    with pytest.raises(OverrideError) as err:
        parse_overrides(["--config"])
    assert "'--config'" in str(err.value) and "+key=value" in str(err.value)


def test_sweep_on_other_keys_is_rejected_with_list_hint() -> None:
    with pytest.raises(OverrideError) as err:
        parse_overrides(["+x=1,2"])
    assert "+x=[a,b]" in str(err.value)


def test_package_syntax_is_rejected() -> None:
    with pytest.raises(OverrideError, match="@package"):
        parse_overrides(["+a@b=1"])


def test_a_single_string_is_not_taken_as_tokens() -> None:
    with pytest.raises(OverrideError, match="list of tokens"):
        parse_overrides("+a=1")  # type: ignore[arg-type]


def test_no_hydra_output_dirs_are_written(tmp_path: Path, clean_env: Path) -> None:
    load(["+a=1", "++b=2"], tmp_path)
    assert list(clean_env.iterdir()) == []


def test_head_server_port_override_keeps_default_host(tmp_path: Path) -> None:
    cfg = load(["++head_server.port=11001"], tmp_path)
    assert OmegaConf.to_container(cfg.head_server) == {"port": 11001, "host": "127.0.0.1"}
