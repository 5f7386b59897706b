"""Precedence, written once in gymfleet/config/_loader.py and proved here.

config files (post-order of the include tree) < env.yaml < initial < CLI overrides
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from gymfleet.config import load_config, search_roots


def test_files_lose_to_env_yaml_which_loses_to_cli(tmp_path: Path, write) -> None:
    write("f.yaml", "from_file: f\nfile_env: f\nfile_cli: f\nall_three: f\n")
    write("env.yaml", "file_env: e\nall_three: e\nenv_cli: e\n")
    cfg = load_config(
        ["+config_paths=[f.yaml]", "++file_cli=c", "++all_three=c", "++env_cli=c"], roots=[tmp_path]
    )
    assert cfg.from_file == "f"
    assert cfg.file_env == "e"
    assert cfg.file_cli == "c"
    assert cfg.env_cli == "c"
    assert cfg.all_three == "c"


def test_initial_loses_to_cli_and_beats_env_yaml_and_files(tmp_path: Path, write) -> None:
    write("f.yaml", "a: file\nb: file\nc: file\n")
    write("env.yaml", "a: env\nb: env\n")
    initial = {"a": "initial", "b": "initial", "c": "initial", "d": "initial"}
    cfg = load_config(["+config_paths=[f.yaml]", "++a=cli"], initial=initial, roots=[tmp_path])
    assert (cfg.a, cfg.b, cfg.c, cfg.d) == ("cli", "initial", "initial", "initial")


def test_a_file_merges_after_the_files_it_includes_at_any_depth(tmp_path: Path, write) -> None:
    write("outer.yaml", "config_paths: [mid.yaml]\nv: outer\n")
    write("mid.yaml", "config_paths: [inner.yaml]\nv: mid\nw: mid\n")
    write("inner.yaml", "v: inner\nw: inner\nonly_inner: yes\n")
    cfg = load_config(["+config_paths=[outer.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert cfg.v == "outer"
    assert cfg.w == "mid"
    assert cfg.only_inner is True


def test_later_sibling_and_its_whole_subtree_beat_earlier_siblings(tmp_path: Path, write) -> None:
    write("a.yaml", "config_paths: [a1.yaml]\nv: a\nx: a\n")
    write("a1.yaml", "y: a1\n")
    write("b.yaml", "config_paths: [b1.yaml]\nx: b\n")
    write("b1.yaml", "v: b1\ny: b1\n")
    cfg = load_config(["+config_paths=[a.yaml,b.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert cfg.x == "b"  # later sibling
    assert cfg.v == "b1"  # a file included by the later sibling beats the earlier sibling itself
    assert cfg.y == "b1"
    # config_paths is the full expanded list, breadth first, as written.
    assert list(cfg.config_paths) == ["a.yaml", "b.yaml", "a1.yaml", "b1.yaml"]


def test_duplicate_include_is_skipped_with_a_warning(tmp_path: Path, write, caplog) -> None:
    write("a.yaml", "config_paths: [common.yaml]\nv: a\n")
    write("b.yaml", "config_paths: [common.yaml]\n")
    write("common.yaml", "v: common\nc: 1\n")
    with caplog.at_level(logging.WARNING, logger="gymfleet.config"):
        cfg = load_config(["+config_paths=[a.yaml,b.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert list(cfg.config_paths) == ["a.yaml", "b.yaml", "common.yaml"]
    assert cfg.v == "a"  # common merged once, under a, so a beats it
    assert any("common.yaml" in r.getMessage() and "inherit_from" in r.getMessage() for r in caplog.records)


def test_lists_are_replaced_not_appended(tmp_path: Path, write) -> None:
    write("a.yaml", "items: [1, 2, 3]\n")
    cfg = load_config(["+config_paths=[a.yaml]", "++items=[9]"], roots=[tmp_path], load_env_yaml=False)
    assert list(cfg["items"]) == [9]


def test_required_value_in_later_file_does_not_erase_earlier_value(tmp_path: Path, write) -> None:
    write("a.yaml", "name: given\n")
    write("b.yaml", "name: ???\n")
    cfg = load_config(["+config_paths=[a.yaml,b.yaml]"], roots=[tmp_path], load_env_yaml=False)
    assert cfg.name == "given"


def test_required_value_filled_from_cli(tmp_path: Path, write) -> None:
    write("a.yaml", "agent:\n  resources_server:\n    name: ???\n")
    cfg = load_config(
        ["+config_paths=[a.yaml]", "++agent.resources_server.name=x"], roots=[tmp_path], load_env_yaml=False
    )
    assert cfg.agent.resources_server.name == "x"


def test_relative_paths_try_roots_in_order(tmp_path: Path, write) -> None:
    write("first/shared.yaml", "who: first\n")
    write("second/shared.yaml", "who: second\n")
    write("second/only_second.yaml", "second_only: 1\n")
    roots = [tmp_path / "first", tmp_path / "second"]
    cfg = load_config(["+config_paths=[shared.yaml,only_second.yaml]"], roots=roots, load_env_yaml=False)
    assert cfg.who == "first"
    assert cfg.second_only == 1


def test_absolute_paths_are_used_as_is(tmp_path: Path, write) -> None:
    path = write("elsewhere/abs.yaml", "abs: 1\n")
    cfg = load_config([f"+config_paths=[{path}]"], roots=[tmp_path / "nothing"], load_env_yaml=False)
    assert cfg.abs == 1


def test_config_paths_may_come_from_env_yaml(tmp_path: Path, write) -> None:
    write("a.yaml", "a: 1\n")
    write("env.yaml", "config_paths: [a.yaml]\n")
    cfg = load_config([], roots=[tmp_path])
    assert cfg.a == 1


def test_config_paths_may_interpolate_an_env_yaml_list(tmp_path: Path, write) -> None:
    write("a.yaml", "a: 1\n")
    write("b.yaml", "b: 2\n")
    write("env.yaml", "my_config_paths: [a.yaml, b.yaml]\n")
    cfg = load_config(["+config_paths=${my_config_paths}"], roots=[tmp_path])
    assert (cfg.a, cfg.b) == (1, 2)
    assert list(cfg.config_paths) == ["a.yaml", "b.yaml"]


def test_env_yaml_first_root_wins_and_explicit_path_beats_roots(tmp_path: Path, write) -> None:
    write("r1/env.yaml", "who: r1\n")
    write("r2/env.yaml", "who: r2\n")
    explicit = write("custom/env.yaml", "who: explicit\n")
    roots = [tmp_path / "r1", tmp_path / "r2"]
    assert load_config([], roots=roots).who == "r1"
    assert load_config([], roots=roots, env_yaml_path=explicit).who == "explicit"
    assert "who" not in load_config([], roots=roots, load_env_yaml=False)


def test_default_roots_are_extra_roots_then_cwd_then_repo(tmp_path: Path, monkeypatch, clean_env) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").mkdir()
    monkeypatch.setenv("GYMFLEET_EXTRA_ROOTS", str(tmp_path / "g"))
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", os.pathsep.join([str(tmp_path / "n1"), str(tmp_path / "n2")]))
    roots = search_roots()
    repo = Path(__file__).resolve().parents[2]
    expected = [tmp_path / "g", tmp_path / "n1", tmp_path / "n2", clean_env, repo]
    assert roots == [p.resolve() for p in expected]


def test_default_roots_find_files_in_cwd(write, clean_env) -> None:
    (clean_env / "here.yaml").write_text("here: 1\n")
    cfg = load_config(["+config_paths=[here.yaml]"], load_env_yaml=False)
    assert cfg.here == 1


def test_loading_the_example_configs_is_fast(data_dir: Path) -> None:
    args = ["+config_paths=[example_single_tool_call.yaml,openai_model.yaml]"]
    load_config(args, roots=[data_dir])  # warm up imports and the override parser
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        load_config(args, roots=[data_dir])
        best = min(best, time.perf_counter() - start)
    assert best < 0.1, f"loading took {best * 1000:.1f} ms"


@pytest.mark.parametrize("token", ["+config_paths=[a.yaml]", "+config_paths=a.yaml"])
def test_single_config_path_forms(tmp_path: Path, write, token: str) -> None:
    write("a.yaml", "a: 1\n")
    assert load_config([token], roots=[tmp_path], load_env_yaml=False).a == 1
