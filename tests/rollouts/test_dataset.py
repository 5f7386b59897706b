"""Input rows: indices, repeats, defaults, limit, overrides, broken lines, lazy reading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gymfleet.errors import ConfigError, ConfigFileNotFoundError, DatasetError
from gymfleet.rollouts import DatasetReader, scan_dataset

from .helpers import make_config, make_rows, write_jsonl


def test_rows_get_task_and_rollout_indices_in_aabbcc_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "input.jsonl", make_rows(3))
    items = list(DatasetReader(path, make_config(tmp_path, num_repeats=2)))
    assert [i.key for i in items] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(i.row["agent_ref"] == {"name": "agent"} for i in items)
    assert items[3].row["expected"] == 1 and items[3].row["_ng_rollout_index"] == 1


def test_empty_lines_do_not_count_and_explicit_indices_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text(
        '{"responses_create_params": {"input": "a"}}\n'
        "\n"
        '{"responses_create_params": {"input": "b"}, "_ng_task_index": 40}\n'
        '{"responses_create_params": {"input": "c"}}\n'
    )
    items = list(DatasetReader(path, make_config(tmp_path)))
    assert [i.key for i in items] == [(0, 0), (40, 0), (2, 0)]
    assert [i.line for i in items] == [1, 3, 4]


def test_agent_ref_in_the_row_wins_and_dict_repeats_use_it(tmp_path: Path) -> None:
    rows = make_rows(2)
    rows[1]["agent_ref"] = {"name": "other"}
    path = write_jsonl(tmp_path / "input.jsonl", rows)
    config = make_config(tmp_path, num_repeats={"other": 3, "_default": 1})
    items = list(DatasetReader(path, config))
    assert [(i.key, i.row["agent_ref"]["name"]) for i in items] == [
        ((0, 0), "agent"),
        ((1, 0), "other"),
        ((1, 1), "other"),
        ((1, 2), "other"),
    ]
    assert scan_dataset(path, config).expected == 4


def test_dict_repeats_without_entry_or_default_is_a_config_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "input.jsonl", make_rows(1))
    with pytest.raises(ConfigError, match="_default"):
        scan_dataset(path, make_config(tmp_path, num_repeats={"someone": 2}))


def test_limit_and_shallow_overrides(tmp_path: Path) -> None:
    rows = make_rows(5)
    rows[0]["responses_create_params"]["temperature"] = 0.1
    rows[0]["responses_create_params"]["metadata"] = {"keep": "me"}
    path = write_jsonl(tmp_path / "input.jsonl", rows)
    config = make_config(
        tmp_path, limit=2, responses_create_params={"temperature": 0.7, "max_output_tokens": 9}
    )
    items = list(DatasetReader(path, config))
    assert [i.key for i in items] == [(0, 0), (1, 0)]
    assert items[0].row["responses_create_params"] == {
        "input": "question 0",
        "temperature": 0.7,
        "metadata": {"keep": "me"},
        "max_output_tokens": 9,
    }
    scan = scan_dataset(path, config)
    assert scan.expected == 2
    # The identity covers the whole file even though limit stopped parsing early.
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"x": 1}', "no 'responses_create_params'"),
        ('{"responses_create_params": {}, "_ng_task_index": -1}', "_ng_task_index"),
        ('{"responses_create_params": {}, "agent_ref": {"nom": "x"}}', "agent_ref"),
    ],
)
def test_broken_line_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"responses_create_params": {"input": "ok"}}\n\n' + line + "\n")
    with pytest.raises(DatasetError, match=why) as info:
        scan_dataset(path, make_config(tmp_path))
    assert info.value.line == 3 and info.value.path == str(path)
    assert f"{path}:3" in str(info.value) and "skip_invalid_rows" in str(info.value)


def test_row_without_agent_is_invalid_when_no_agent_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "input.jsonl", make_rows(1))
    with pytest.raises(DatasetError, match="no 'agent_ref'"):
        scan_dataset(path, make_config(tmp_path, agent_name=None))


def test_skip_invalid_rows_yields_them_as_invalid_items(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"responses_create_params": {}}\nnope\n{"responses_create_params": {}}\n')
    config = make_config(tmp_path, skip_invalid_rows=True, num_repeats=2)
    items = list(DatasetReader(path, config))
    assert [(i.key, i.invalid is not None) for i in items] == [
        ((0, 0), False),
        ((0, 1), False),
        ((1, 0), True),
        ((2, 0), False),
        ((2, 1), False),
    ]
    scan = scan_dataset(path, config)
    assert (scan.expected, scan.invalid_rows, scan.tasks) == (5, 1, 3)


def test_duplicate_task_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"responses_create_params": {}}\n{"responses_create_params": {}, "_ng_task_index": 0}\n')
    with pytest.raises(DatasetError, match="distinct task index") as info:
        scan_dataset(path, make_config(tmp_path))
    assert info.value.line == 2


def test_shards_partition_the_tasks(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "input.jsonl", make_rows(10))
    seen = []
    for shard in range(3):
        config = make_config(tmp_path, num_shards=3, shard_index=shard, num_repeats=2)
        items = list(DatasetReader(path, config))
        assert all(i.key[0] % 3 == shard for i in items)
        assert scan_dataset(path, config).expected == len(items)
        seen.extend(i.key for i in items)
    assert sorted(seen) == [(t, r) for t in range(10) for r in range(2)]


def test_reader_reads_lazily(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "input.jsonl", make_rows(1000))
    reader = DatasetReader(path, make_config(tmp_path))
    iterator = iter(reader)
    for _ in range(5):
        next(iterator)
    assert reader.lines_read == 5


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFoundError, match="input_jsonl_fpath"):
        scan_dataset(tmp_path / "nope.jsonl", make_config(tmp_path))
